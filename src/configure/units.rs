//! Enabling systemd units the way `systemctl --root=/ enable|disable|mask|preset` (systemd 252,
//! src/shared/install.c) does: the unit file is found on the system search path, and its
//! `[Install]` section (systemd.unit(5): `WantedBy=`, `RequiredBy=`, `UpheldBy=`, `Alias=`,
//! `Also=`, `DefaultInstance=`) becomes symlinks under `/etc/systemd/system`.

use std::collections::BTreeSet;

use super::fsops;
use crate::tree::{Kind, Time, Tree};

/// The system unit search path below `/etc`, as systemd 252 on Debian bookworm has it
/// (`/lib/systemd/system` before `/usr/lib/systemd/system`: bookworm installs units under
/// `/lib`, and the links name that path).
pub const SYSTEM_PATH: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

pub const USER_PATH: &[&str] = &[
    "/etc/systemd/user",
    "/usr/local/lib/systemd/user",
    "/usr/lib/systemd/user",
];

pub const PRESET_DIRS: &[&str] = &[
    "/etc/systemd/system-preset",
    "/run/systemd/system-preset",
    "/usr/local/lib/systemd/system-preset",
    "/lib/systemd/system-preset",
    "/usr/lib/systemd/system-preset",
];

/// The `[Install]` section of a unit file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    pub fn is_empty(&self) -> bool {
        *self == Install::default()
    }
}

/// Reads a unit file's `[Install]` section (systemd.syntax(7): sections, `Key=Value`, `#`/`;`
/// comments, backslash continuations; list values are split on whitespace, with quotes).
/// Pure and total: unknown keys and malformed lines are skipped, as systemd skips them with a
/// warning.
pub fn parse(text: &str) -> Install {
    let mut out = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    let mut lines: Vec<String> = Vec::new();
    for raw in text.lines() {
        let l = raw.trim_end_matches('\r');
        if logical.is_empty() {
            let t = l.trim_start();
            if t.starts_with('#') || t.starts_with(';') {
                continue;
            }
        }
        if let Some(stripped) = l.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(l);
        lines.push(std::mem::take(&mut logical));
    }
    if !logical.is_empty() {
        lines.push(logical);
    }
    for l in lines {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('[') {
            in_install = t == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let words = split_words(v);
        // An empty assignment resets the list (systemd.unit(5)).
        let list = match k {
            "WantedBy" => &mut out.wanted_by,
            "RequiredBy" => &mut out.required_by,
            "UpheldBy" => &mut out.upheld_by,
            "Alias" => &mut out.alias,
            "Also" => &mut out.also,
            "DefaultInstance" => {
                out.default_instance = (!v.is_empty()).then(|| v.to_owned());
                continue;
            }
            _ => continue,
        };
        if v.is_empty() {
            list.clear();
        }
        list.extend(words);
    }
    out
}

/// Whitespace-separated words, with '…' and "…" quoting.
fn split_words(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in v.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                has = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A unit name's parts: `prefix@instance.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName {
    pub prefix: String,
    /// `None` for a plain unit, `Some("")` for a template.
    pub instance: Option<String>,
    pub suffix: String,
}

impl UnitName {
    pub fn parse(name: &str) -> Option<UnitName> {
        let dot = name.rfind('.')?;
        let (stem, suffix) = (&name[..dot], &name[dot + 1..]);
        if !crate::recipe::UNIT_TYPES.contains(&suffix) || stem.is_empty() || name.contains('/') {
            return None;
        }
        let (prefix, instance) = match stem.split_once('@') {
            Some((p, i)) => (p.to_owned(), Some(i.to_owned())),
            None => (stem.to_owned(), None),
        };
        Some(UnitName {
            prefix,
            instance,
            suffix: suffix.to_owned(),
        })
    }

    pub fn template(&self) -> Option<String> {
        self.instance
            .as_ref()
            .map(|_| format!("{}@.{}", self.prefix, self.suffix))
    }

    pub fn with_instance(&self, i: &str) -> String {
        format!("{}@{}.{}", self.prefix, i, self.suffix)
    }

    pub fn full(&self) -> String {
        match &self.instance {
            Some(i) => self.with_instance(i),
            None => format!("{}.{}", self.prefix, self.suffix),
        }
    }
}

/// Specifiers in `[Install]` values (systemd.unit(5) "Specifiers"): the ones that depend only
/// on the unit's name.
fn expand(value: &str, unit: &UnitName) -> String {
    let mut out = String::new();
    let mut cs = value.chars();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match cs.next() {
            Some('n') => out.push_str(&unit.full()),
            Some('N') => out.push_str(unit.full().rsplit_once('.').map_or("", |x| x.0)),
            Some('p') => out.push_str(&unit.prefix),
            Some('i') => out.push_str(unit.instance.as_deref().unwrap_or("")),
            Some('j') => out.push_str(unit.prefix.rsplit('-').next().unwrap_or("")),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Which unit files a scope searches and where its links go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    /// `--user` / `--global`: `/etc/systemd/user`.
    Global,
}

impl Scope {
    pub fn config_dir(self) -> &'static str {
        match self {
            Scope::System => "/etc/systemd/system",
            Scope::Global => "/etc/systemd/user",
        }
    }
    fn path(self) -> &'static [&'static str] {
        match self {
            Scope::System => SYSTEM_PATH,
            Scope::Global => USER_PATH,
        }
    }
}

/// The unit file for `name` on the search path (a regular file, or a symlink to one that is
/// not `/dev/null`), as the path systemctl records in its links; for an instance, its template.
pub fn find_unit(tree: &Tree, scope: Scope, name: &str) -> Option<String> {
    let n = UnitName::parse(name)?;
    let mut candidates = vec![name.to_owned()];
    if let Some(t) = n.template().filter(|t| t != name) {
        candidates.push(t);
    }
    for c in candidates {
        for dir in scope.path() {
            let p = format!("{dir}/{c}");
            if fsops::is_file(tree, &p) {
                return Some(p);
            }
        }
    }
    None
}

/// Whether `name` is masked (a link to /dev/null in the config dir).
pub fn is_masked(tree: &Tree, scope: Scope, name: &str) -> bool {
    let p = format!("{}/{name}", scope.config_dir());
    match fsops::lookup(tree, &p, false).map(|id| &tree.node(id).kind) {
        Some(Kind::Symlink(t)) => t == b"/dev/null",
        _ => false,
    }
}

/// (link path, target) pairs, and the `Also=` units.
pub type Links = (Vec<(String, String)>, Vec<String>);

/// The links enabling `name` would make: (link path, target), in systemctl's order (aliases,
/// then WantedBy, RequiredBy, UpheldBy), and the `Also=` units. `Err` names what is missing.
pub fn links_for(tree: &Tree, scope: Scope, name: &str) -> Result<Links, String> {
    let unit = UnitName::parse(name).ok_or_else(|| format!("{name:?} is not a unit name"))?;
    let path = find_unit(tree, scope, name).ok_or_else(|| format!("unit {name} does not exist"))?;
    let text = fsops::read_text(tree, &path).unwrap_or_default();
    let install = parse(&text);
    // A template enabled without an instance uses DefaultInstance=.
    let effective = match (&unit.instance, &install.default_instance) {
        (Some(i), Some(d)) if i.is_empty() => UnitName {
            instance: Some(d.clone()),
            ..unit.clone()
        },
        _ => unit.clone(),
    };
    let link_name = effective.full();
    let dir = scope.config_dir();
    let mut links = Vec::new();
    for a in &install.alias {
        let a = expand(a, &effective);
        if a != link_name {
            links.push((format!("{dir}/{a}"), path.clone()));
        }
    }
    let is_bare_template = effective.instance.as_deref() == Some("");
    for (list, ext) in [
        (&install.wanted_by, "wants"),
        (&install.required_by, "requires"),
        (&install.upheld_by, "upholds"),
    ] {
        if is_bare_template {
            break;
        }
        for t in list {
            let t = expand(t, &effective);
            links.push((format!("{dir}/{t}.{ext}/{link_name}"), path.clone()));
        }
    }
    let also = install.also.iter().map(|a| expand(a, &effective)).collect();
    Ok((links, also))
}

/// `systemctl enable NAME...`: every link of each unit and its `Also=` units. Returns the
/// links made (existing ones are kept as they are).
pub fn enable(
    tree: &mut Tree,
    scope: Scope,
    names: &[&str],
    sde: Time,
) -> Result<Vec<String>, String> {
    let mut todo: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut seen = BTreeSet::new();
    let mut made = Vec::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if is_masked(tree, scope, &n) {
            return Err(format!("unit {n} is masked"));
        }
        let (links, also) = links_for(tree, scope, &n)?;
        for (link, target) in links {
            if fsops::lookup(tree, &link, false).is_none() {
                fsops::symlink(tree, &link, &target, sde).map_err(|e| e.to_string())?;
                made.push(link);
            }
        }
        todo.extend(also.into_iter().rev());
    }
    Ok(made)
}

/// Whether `name`, where the search path first has it, is a link to a unit file of another
/// name (an alias, such as systemd's `autovt@.service` -> `getty@.service`).
pub fn is_alias(tree: &Tree, scope: Scope, name: &str) -> bool {
    for dir in scope.path() {
        let p = format!("{dir}/{name}");
        let Some(id) = fsops::lookup(tree, &p, false) else {
            continue;
        };
        return match &tree.node(id).kind {
            Kind::Symlink(t) if t != b"/dev/null" => fsops::find(tree, &p, true)
                .is_some_and(|f| f.path().rsplit('/').next() != Some(name)),
            _ => false,
        };
    }
    false
}

/// `systemctl preset --preset-mode=enable-only NAME...` (systemd 252, install.c's
/// preset_prepare_one): each unit the preset files enable is enabled as [`enable`] does; an
/// alias is passed over ("Skipping … because it is an alias"), so that its target's
/// `[Install]` links are not made a second time under the alias's name. Returns the links made.
pub fn preset(
    tree: &mut Tree,
    scope: Scope,
    names: &[&str],
    sde: Time,
) -> Result<Vec<String>, String> {
    let mut made = Vec::new();
    for &n in names {
        if !is_alias(tree, scope, n) && preset_enables(tree, n) {
            made.extend(enable(tree, scope, &[n], sde)?);
        }
    }
    Ok(made)
}

/// `systemctl disable NAME`: removes the links its `[Install]` section (and `Also=`) names.
pub fn disable(tree: &mut Tree, scope: Scope, names: &[&str]) -> Result<(), String> {
    let mut todo: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut seen = BTreeSet::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let Ok((links, also)) = links_for(tree, scope, &n) else {
            continue;
        };
        for (link, _) in links {
            if matches!(
                fsops::lookup(tree, &link, false).map(|id| &tree.node(id).kind),
                Some(Kind::Symlink(_))
            ) {
                fsops::remove(tree, &link);
            }
        }
        todo.extend(also);
    }
    Ok(())
}

/// `systemctl mask NAME`.
pub fn mask(tree: &mut Tree, scope: Scope, name: &str, sde: Time) -> Result<(), String> {
    UnitName::parse(name).ok_or_else(|| format!("{name:?} is not a unit name"))?;
    let p = format!("{}/{name}", scope.config_dir());
    if let Some(id) = fsops::lookup(tree, &p, false) {
        if !matches!(tree.node(id).kind, Kind::Symlink(_)) {
            return Err(format!(
                "{p} is a unit file of its own; it cannot be masked"
            ));
        }
    }
    fsops::symlink(tree, &p, "/dev/null", sde).map_err(|e| e.to_string())
}

/// `systemctl unmask NAME`.
pub fn unmask(tree: &mut Tree, scope: Scope, name: &str) {
    if is_masked(tree, scope, name) {
        fsops::remove(tree, &format!("{}/{name}", scope.config_dir()));
    }
}

/// Whether any enabling link of `name` is present (systemctl is-enabled's "enabled").
pub fn is_enabled(tree: &Tree, scope: Scope, name: &str) -> bool {
    match links_for(tree, scope, name) {
        Ok((links, _)) => {
            !links.is_empty()
                && links
                    .iter()
                    .any(|(l, _)| fsops::lookup(tree, l, false).is_some())
        }
        Err(_) => false,
    }
}

/// One rule of a preset file (systemd.preset(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetRule {
    pub enable: bool,
    pub pattern: String,
}

/// Reads a `.preset` file: `enable PATTERN`, `disable PATTERN` (instances after an enable
/// pattern are ignored here), comments with `#` or `;`.
pub fn parse_preset(text: &str) -> Vec<PresetRule> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                return None;
            }
            let mut w = l.split_whitespace();
            let enable = match w.next()? {
                "enable" => true,
                "disable" => false,
                _ => return None,
            };
            Some(PresetRule {
                enable,
                pattern: w.next()?.to_owned(),
            })
        })
        .collect()
}

/// What the preset files say of `name`: the first matching rule across the `*.preset` files
/// (sorted by file name; a file in an earlier directory hides a same-named one later); no rule
/// means enable (systemd.preset(5)).
pub fn preset_enables(tree: &Tree, name: &str) -> bool {
    let mut files: std::collections::BTreeMap<String, String> = Default::default();
    for dir in PRESET_DIRS {
        let Some(id) = fsops::lookup(tree, dir, true) else {
            continue;
        };
        let Some(entries) = tree.children(id) else {
            continue;
        };
        for n in entries.keys() {
            let n = String::from_utf8_lossy(n).into_owned();
            if n.ends_with(".preset") && !files.contains_key(&n) {
                files.insert(n.clone(), format!("{dir}/{n}"));
            }
        }
    }
    for path in files.values() {
        let text = fsops::read_text(tree, path).unwrap_or_default();
        for r in parse_preset(&text) {
            if super::script::glob_match(&r.pattern, name) {
                return r.enable;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sections() {
        let i = parse(
            "[Unit]\nWantedBy=not-this.target\n[Install]\n# c\nWantedBy=multi-user.target \\\n  graphical.target\nAlias=sshd.service\nAlso='a.socket' b.service\nRequiredBy=\nRequiredBy=x.target\n[Service]\nAlias=no\n",
        );
        assert_eq!(i.wanted_by, ["multi-user.target", "graphical.target"]);
        assert_eq!(i.alias, ["sshd.service"]);
        assert_eq!(i.also, ["a.socket", "b.service"]);
        assert_eq!(i.required_by, ["x.target"]);
        assert!(parse("garbage\n[Install\n=\n").is_empty());
        let n = UnitName::parse("getty@tty1.service").unwrap();
        assert_eq!(n.template().unwrap(), "getty@.service");
        assert_eq!(expand("%p-%i.%% %n", &n), "getty-tty1.% getty@tty1.service");
        assert!(UnitName::parse("x.conf").is_none());
        assert_eq!(
            parse_preset("enable a.service\n disable  *\nbogus x\n"),
            [
                PresetRule {
                    enable: true,
                    pattern: "a.service".into()
                },
                PresetRule {
                    enable: false,
                    pattern: "*".into()
                }
            ]
        );
    }
}
