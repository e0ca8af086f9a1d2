//! pam-auth-update(8) (libpam-runtime 1.5.2): `/etc/pam.d/common-{auth,account,password,
//! session,session-noninteractive}` from the profiles in `/usr/share/pam-configs/`, with its
//! state in `/var/lib/pam/` (`seen` and one file per type), as libpam-runtime's and other
//! packages' postinst scripts run it. Without these files no PAM service (login, sshd, sudo)
//! can authenticate anyone.

use std::collections::{BTreeMap, BTreeSet};

use super::fsops;
use crate::tree::{Time, Tree};

const TYPES: &[&str] = &[
    "auth",
    "account",
    "password",
    "session",
    "session-noninteractive",
];
const PRIMARY_MARK: &str = "# here are the per-package modules (the \"Primary\" block)";
const FALLBACK_MARK: &str = "# here's the fallback if no module succeeds";
const ADDITIONAL_MARK: &str = "# and here are more per-package modules (the \"Additional\" block)";
const END_MARK: &str = "# end of pam-auth-update config";
const PROFILES: &str = "/usr/share/pam-configs";
const STATE: &str = "/var/lib/pam";

/// A profile's fields (`Name`, `Priority`, `Auth-Type`, `Auth`, ...), multi-line values joined
/// with newlines; `Conflicts` kept apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub fields: BTreeMap<String, String>,
    pub conflicts: BTreeSet<String>,
}

impl Profile {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }
    fn priority(&self) -> i64 {
        self.get("Priority")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Reads a profile as pam-auth-update's `parse_pam_profile` does. Pure and total.
pub fn parse_profile(text: &str) -> Profile {
    let mut p = Profile::default();
    let mut field: Option<String> = None;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end_matches('\n');
        let header = line.split_once(':').filter(|(k, v)| {
            !k.is_empty()
                && !k.contains(char::is_whitespace)
                && (v.starts_with(char::is_whitespace) || v.is_empty() && raw.ends_with('\n'))
        });
        if let Some((k, v)) = header {
            let k = k.strip_suffix("-Final").unwrap_or(k).to_owned();
            let v = v.trim_start().to_owned();
            if k == "Conflicts" {
                p.conflicts.extend(v.split(", ").map(str::to_owned));
            } else {
                p.fields.insert(k.clone(), v);
            }
            field = Some(k);
        } else if let Some(f) = &field {
            let t = line.trim();
            let entry = p.fields.entry(f.clone()).or_default();
            if !t.is_empty() {
                entry.push('\n');
                entry.push_str(t);
            }
            let trimmed = entry.trim_start_matches(['\n', ' ', '\t']).to_owned();
            *entry = trimmed;
        }
    }
    if p.get("Session-Interactive-Only").is_none() {
        for (from, to) in [
            ("Session-Type", "Session-noninteractive-Type"),
            ("Session", "Session-noninteractive"),
            ("Session-Initial", "Session-noninteractive-Initial"),
        ] {
            if let Some(v) = p.fields.get(from).cloned() {
                p.fields.insert(to.into(), v);
            }
        }
    }
    p
}

fn uc(t: &str) -> String {
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

fn lines_for<'a>(p: &'a Profile, uctype: &str, pos: usize) -> Option<&'a str> {
    if pos == 0 {
        if let Some(v) = p.get(&format!("{uctype}-Initial")) {
            return Some(v);
        }
    }
    p.get(uctype)
}

/// `merge_one_line` without local modifications: `end` in the control field becomes the
/// number of module lines left to jump over; options keep their order, one space apart.
fn merge_line(line: &str, count: i64) -> Option<String> {
    let (control, rest) = if line.starts_with('[') {
        let close = line.find(']')?;
        (&line[..=close], &line[close + 1..])
    } else {
        let end = line.find(char::is_whitespace)?;
        (&line[..end], &line[end..])
    };
    let ws_end = rest.find(|c: char| !c.is_whitespace())?;
    let after = &rest[ws_end..];
    let module_end = after.find(char::is_whitespace).unwrap_or(after.len());
    let modline = format!("{control}{}{}", &rest[..ws_end], &after[..module_end])
        .replace("end", &count.to_string());
    let opts: Vec<&str> = after[module_end..].split_whitespace().collect();
    Some(format!("{modline} {}\n", opts.join(" ")))
}

/// The template's lines outside the two blocks (what decides whether it is unmodified).
fn skeleton(text: &str) -> Option<String> {
    let mut state = 0;
    let mut out = String::new();
    for l in text.split_inclusive('\n') {
        let t = l.trim_end_matches('\n');
        match state {
            1 if t.starts_with(FALLBACK_MARK) => state = 2,
            1 => continue,
            3 if t.starts_with(END_MARK) => state = 4,
            3 => continue,
            _ => {}
        }
        out.push_str(l);
        if (state == 0 && t.starts_with(PRIMARY_MARK))
            || (state == 2 && t.starts_with(ADDITIONAL_MARK))
        {
            state += 1;
        }
    }
    (state == 4).then_some(out)
}

fn render(
    template: &str,
    typ: &str,
    profiles: &BTreeMap<String, Profile>,
    enabled: &[String],
) -> Option<String> {
    let uctype = uc(typ);
    let short = typ.trim_end_matches("-noninteractive");
    let mut out = String::new();
    let mut state = 0;
    for l in template.split_inclusive('\n') {
        let t = l.trim_end_matches('\n');
        if state == 1 {
            if t.starts_with(FALLBACK_MARK) {
                out.push_str(l);
                state = 2;
            }
            continue;
        }
        if state == 3 {
            if t.starts_with(END_MARK) {
                out.push_str(l);
                state = 4;
            }
            continue;
        }
        out.push_str(l);
        let val = match state {
            0 if t.starts_with(PRIMARY_MARK) => "Primary",
            2 if t.starts_with(ADDITIONAL_MARK) => "Additional",
            _ => continue,
        };
        let mods: Vec<&Profile> = enabled
            .iter()
            .filter_map(|m| profiles.get(m))
            .filter(|p| p.get(&format!("{uctype}-Type")) == Some(val))
            .collect();
        let blocks: Vec<&str> = mods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| lines_for(p, &uctype, i))
            .collect();
        let mut count: i64 = blocks
            .iter()
            .map(|b| b.split('\n').filter(|x| !x.is_empty()).count() as i64)
            .sum();
        if val == "Additional" {
            count -= 1;
        }
        if val == "Primary" && count == 0 {
            out.push_str(&format!("{short}\t[default=1]\t\t\tpam_permit.so\n"));
        }
        for b in blocks {
            for line in b.split('\n') {
                out.push_str(&format!("{short}\t{}", merge_line(line, count)?));
                count -= 1;
            }
        }
        state += 1;
    }
    (state == 4).then_some(out)
}

/// The state file for one type: each enabled module's lines, Primary then Additional.
fn state_file(typ: &str, profiles: &BTreeMap<String, Profile>, enabled: &[String]) -> String {
    let uctype = uc(typ);
    let mut out = String::new();
    for (kind, skip) in [("Primary", "Additional"), ("Additional", "Primary")] {
        let mut i = 0;
        for m in enabled {
            let Some(p) = profiles.get(m) else { continue };
            match p.get(&format!("{uctype}-Type")) {
                None => continue,
                Some(t) if t == skip => continue,
                _ => {}
            }
            let lines = lines_for(p, &uctype, i);
            i += 1;
            if let Some(l) = lines.filter(|l| !l.is_empty()) {
                out.push_str(&format!("Module: {m}\n{l}\n"));
            }
        }
        if kind == "Primary" && i == 0 {
            out.push_str("Module: null\n[default=1]\t\t\tpam_permit.so\n");
        }
    }
    out
}

fn sort_profiles(names: &mut Vec<String>, profiles: &BTreeMap<String, Profile>) {
    let prio = |n: &String| profiles.get(n).map_or(0, Profile::priority);
    names.sort_by(|a, b| prio(b).cmp(&prio(a)).then(b.cmp(a)));
    names.dedup();
}

/// Runs `pam-auth-update ARGS...`.
pub fn run(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(), String> {
    let mut force = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--force" => force = true,
            "--package" => {}
            "--root" => match it.next() {
                Some(&"") | Some(&"/") => {}
                _ => return Err("pam-auth-update --root other than / is not handled".into()),
            },
            o => return Err(format!("pam-auth-update {o} is not handled")),
        }
    }
    let mut profiles = BTreeMap::new();
    if let Some(id) = fsops::lookup(tree, PROFILES, true) {
        let names: Vec<String> = tree
            .children(id)
            .map(|e| {
                e.keys()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for n in names {
            if n.ends_with('~') || (n.starts_with('#') && n.ends_with('#') && n.len() > 1) {
                continue;
            }
            let text = fsops::read_text(tree, &format!("{PROFILES}/{n}")).unwrap_or_default();
            let p = parse_profile(&text);
            // Profiles naming pam_tally are disabled (it is gone from PAM).
            if p.fields.values().any(|v| v.contains("pam_tally")) {
                continue;
            }
            profiles.insert(n, p);
        }
    }
    let mut sorted: Vec<String> = profiles.keys().cloned().collect();
    sort_profiles(&mut sorted, &profiles);
    // The modules the current files were made with, when kiln made them (no local changes).
    let saved: Option<Vec<String>> = TYPES
        .iter()
        .map(|t| {
            let s = fsops::read_text(tree, &format!("{STATE}/{t}"))?;
            fsops::read_text(tree, &format!("/etc/pam.d/common-{t}"))?;
            Some(
                s.lines()
                    .filter_map(|l| l.strip_prefix("Module: ").map(str::to_owned))
                    .collect::<Vec<_>>(),
            )
        })
        .collect::<Option<Vec<_>>>()
        .map(|v| v.into_iter().flatten().filter(|m| m != "null").collect());
    let seen: BTreeSet<String> = fsops::read_text(tree, &format!("{STATE}/seen"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut enabled: Vec<String> = saved.clone().unwrap_or_default();
    enabled.retain(|m| profiles.contains_key(m));
    let seen = if enabled.is_empty() {
        BTreeSet::new()
    } else {
        seen
    };
    enabled.extend(
        sorted
            .iter()
            .filter(|n| profiles[*n].get("Default") == Some("yes") && !seen.contains(*n))
            .cloned(),
    );
    sort_profiles(&mut enabled, &profiles);
    if saved.is_none() && !force {
        // pam-auth-update would ask whether to override local changes; the noninteractive
        // answer is no, and nothing is written.
        return Ok(());
    }
    let snapshot = enabled.clone();
    for elem in &snapshot {
        if let Some(p) = profiles.get(elem) {
            enabled.retain(|m| !p.conflicts.contains(m));
        }
    }
    let err = |e: super::error::ConfigureError| e.to_string();
    let mut seen_text = String::new();
    for n in &sorted {
        seen_text.push_str(n);
        seen_text.push('\n');
    }
    fsops::write_file(
        tree,
        &format!("{STATE}/seen"),
        seen_text.into_bytes(),
        0o644,
        0,
        0,
        sde,
    )
    .map_err(err)?;
    for t in TYPES {
        let target = format!("/etc/pam.d/common-{t}");
        let shipped = fsops::read_text(tree, &format!("/usr/share/pam/common-{t}"));
        let current = fsops::read_text(tree, &target);
        let unmodified = match (&current, &shipped) {
            (Some(c), Some(s)) => skeleton(c).is_some() && skeleton(c) == skeleton(s),
            _ => false,
        };
        let template = if unmodified {
            shipped.clone()
        } else {
            current.clone()
        };
        let out = match template
            .as_deref()
            .and_then(|tpl| render(tpl, t, &profiles, &enabled))
        {
            Some(o) => o,
            None if force => shipped
                .as_deref()
                .and_then(|tpl| render(tpl, t, &profiles, &enabled))
                .ok_or_else(|| {
                    format!("/usr/share/pam/common-{t} is missing or has no pam-auth-update blocks")
                })?,
            None => return Ok(()),
        };
        if current.is_some() && force {
            super::ucf::copy_preserving(tree, &target, &format!("{target}.pam-old"), sde)?;
        }
        fsops::write_file(tree, &target, out.into_bytes(), 0o644, 0, 0, sde).map_err(err)?;
        let state = state_file(t, &profiles, &enabled);
        fsops::write_file(
            tree,
            &format!("{STATE}/{t}"),
            state.into_bytes(),
            0o644,
            0,
            0,
            sde,
        )
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_lines() {
        let p = parse_profile("Name: Unix authentication\nDefault: yes\nPriority: 256\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass\nAuth-Initial:\n\t[success=end default=ignore]\tpam_unix.so nullok\nSession-Type: Additional\nSession:\n\trequired\tpam_unix.so\n");
        assert_eq!(p.priority(), 256);
        assert_eq!(
            p.get("Auth-Initial").unwrap(),
            "[success=end default=ignore]\tpam_unix.so nullok"
        );
        assert_eq!(
            p.get("Session-noninteractive").unwrap(),
            "required\tpam_unix.so"
        );
        assert_eq!(
            merge_line("[success=end default=ignore]\tpam_unix.so nullok", 1).unwrap(),
            "[success=1 default=ignore]\tpam_unix.so nullok\n"
        );
        assert_eq!(
            merge_line("required\tpam_unix.so", 0).unwrap(),
            "required\tpam_unix.so \n"
        );
        let tpl = format!("# head\n{PRIMARY_MARK}\nold\n{FALLBACK_MARK}\nauth\trequisite\t\t\tpam_deny.so\n{ADDITIONAL_MARK}\nold\n{END_MARK}\n");
        let mut profiles = BTreeMap::new();
        profiles.insert("unix".to_owned(), p);
        let out = render(&tpl, "auth", &profiles, &["unix".into()]).unwrap();
        assert_eq!(out, format!("# head\n{PRIMARY_MARK}\nauth\t[success=1 default=ignore]\tpam_unix.so nullok\n{FALLBACK_MARK}\nauth\trequisite\t\t\tpam_deny.so\n{ADDITIONAL_MARK}\n{END_MARK}\n"));
        assert_eq!(
            state_file("session", &profiles, &["unix".into()]),
            "Module: null\n[default=1]\t\t\tpam_permit.so\nModule: unix\nrequired\tpam_unix.so\n"
        );
        assert!(skeleton("no markers\n").is_none());
    }
}
