//! sysusers.d(5) and systemd-sysusers(8) (systemd 252): the whole file format (`u`, `g`, `m`,
//! `r` lines; ids as numbers, `uid:gid`, `uid:groupname` or a path whose owner gives the id;
//! quoted fields, `-` for unset) and its allocation rules: groups are processed before users, a
//! user's group reuses the user's id where it is free (and the other way round), and new ids are
//! taken downwards from the top of the system range, skipping ids that any user *or* group
//! has.

use std::collections::BTreeMap;

use super::accounts::{Accounts, Aging, User};
use super::fsops;
use crate::tree::Tree;

/// Where sysusers.d files are read from, in priority order (a file name in an earlier
/// directory hides the same name in a later one).
pub const DIRS: &[&str] = &[
    "/etc/sysusers.d",
    "/run/sysusers.d",
    "/usr/local/lib/sysusers.d",
    "/usr/lib/sysusers.d",
    "/lib/sysusers.d",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Unset,
    Num(u32),
    /// The owner (uid or gid) of this path in the tree.
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    User {
        name: String,
        uid: Id,
        /// From `uid:gid` or `uid:group`.
        gid: Option<Id>,
        group_name: Option<String>,
        gecos: Option<String>,
        home: Option<String>,
        shell: Option<String>,
    },
    Group {
        name: String,
        gid: Id,
    },
    Member {
        user: String,
        group: String,
    },
    Range {
        from: u32,
        to: u32,
    },
}

/// Reads a sysusers.d file: one item or one error (with its 1-based line) per line. Pure and
/// total.
pub fn parse(text: &str) -> Vec<Result<Item, (usize, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        out.push(parse_line(l).map_err(|e| (n + 1, e)));
    }
    out
}

/// Whitespace-separated fields with "..." / '...' quoting and backslash escapes.
fn fields(l: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quote: Option<char> = None;
    let mut cs = l.chars();
    while let Some(c) = cs.next() {
        match (quote, c) {
            (_, '\\') => {
                cur.push(cs.next().ok_or("a line ends in a backslash")?);
                have = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                have = true;
            }
            (None, c) if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

fn opt(f: Option<&String>) -> Option<String> {
    f.filter(|s| s.as_str() != "-").cloned()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 31
        && !n.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn id_field(s: &str) -> Result<Id, String> {
    if s == "-" {
        Ok(Id::Unset)
    } else if s.starts_with('/') {
        Ok(Id::Path(s.to_owned()))
    } else {
        s.parse::<u32>()
            .ok()
            .filter(|&n| n != u32::MAX && n != 65535)
            .map(Id::Num)
            .ok_or_else(|| format!("{s:?} is not a valid ID"))
    }
}

fn parse_line(l: &str) -> Result<Item, String> {
    let f = fields(l)?;
    let kind = f.first().ok_or("an empty line")?;
    let name = f.get(1).ok_or("no name")?.clone();
    let id = f.get(2).map_or("-", String::as_str);
    match kind.trim_end_matches('!') {
        "u" => {
            if !valid_name(&name) {
                return Err(format!("{name:?} is not a valid user name"));
            }
            let (uid, gid, group_name) = match id.split_once(':') {
                Some((u, g)) => {
                    let gid = g.parse::<u32>().ok().map(Id::Num);
                    let gname = gid.is_none().then(|| g.to_owned());
                    if let Some(gn) = &gname {
                        if !valid_name(gn) {
                            return Err(format!("{gn:?} is not a valid group name"));
                        }
                    }
                    (id_field(u)?, gid, gname)
                }
                None => (id_field(id)?, None, None),
            };
            Ok(Item::User {
                name,
                uid,
                gid,
                group_name,
                gecos: opt(f.get(3)),
                home: opt(f.get(4)),
                shell: opt(f.get(5)),
            })
        }
        "g" => {
            if !valid_name(&name) {
                return Err(format!("{name:?} is not a valid group name"));
            }
            if f.len() > 3 && f[3..].iter().any(|x| x != "-") {
                return Err("g lines take no GECOS, home or shell".into());
            }
            Ok(Item::Group {
                name,
                gid: id_field(id)?,
            })
        }
        "m" => {
            if !valid_name(&name) || !valid_name(id) {
                return Err("m lines need a user and a group name".into());
            }
            Ok(Item::Member {
                user: name,
                group: id.to_owned(),
            })
        }
        "r" => {
            let (a, b) = id.split_once('-').unwrap_or((id, id));
            let (from, to) = (
                a.parse().map_err(|_| format!("{id:?} is not a range"))?,
                b.parse().map_err(|_| format!("{id:?} is not a range"))?,
            );
            if from > to || name != "-" {
                return Err(format!("{id:?} is not a valid range"));
            }
            Ok(Item::Range { from, to })
        }
        k => Err(format!("unknown line type {k:?}")),
    }
}

/// The sysusers.d files of the tree by name, each from the first directory that has it,
/// sorted by file name.
pub fn files(tree: &Tree) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for dir in DIRS {
        let Some(id) = fsops::lookup(tree, dir, true) else {
            continue;
        };
        let Some(entries) = tree.children(id) else {
            continue;
        };
        for n in entries.keys() {
            let n = String::from_utf8_lossy(n).into_owned();
            if n.ends_with(".conf") && !by_name.contains_key(&n) {
                by_name.insert(n.clone(), format!("{dir}/{n}"));
            }
        }
    }
    by_name.into_iter().collect()
}

/// The path of a file named on systemd-sysusers' command line.
pub fn find(tree: &Tree, name: &str) -> Option<String> {
    if name.contains('/') {
        return fsops::is_file(tree, name).then(|| name.to_owned());
    }
    DIRS.iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| fsops::is_file(tree, p))
}

struct Pending {
    name: String,
    uid: Option<u32>,
    gid: Option<u32>,
    group_name: Option<String>,
    gecos: String,
    home: String,
    shell: String,
    strict_gid: bool,
}

/// One systemd-sysusers run over `texts` (its files, in order). Problems are returned as
/// messages (systemd-sysusers logs them and goes on).
pub fn apply(a: &mut Accounts, tree: &Tree, texts: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut groups: Vec<(String, Option<u32>)> = Vec::new();
    let mut users: Vec<Pending> = Vec::new();
    let mut members: Vec<(String, String)> = Vec::new();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let owner = |p: &str, user: bool| -> Option<u32> {
        let id = fsops::lookup(tree, p, true)?;
        let m = &tree.node(id).meta;
        Some(if user { m.uid } else { m.gid })
    };
    for (file, text) in texts {
        for item in parse(text) {
            let item = match item {
                Ok(i) => i,
                Err((line, e)) => {
                    problems.push(format!("{file}:{line}: {e}"));
                    continue;
                }
            };
            match item {
                Item::Group { name, gid } => {
                    if groups.iter().any(|(n, _)| *n == name) {
                        continue;
                    }
                    let gid = match gid {
                        Id::Num(n) => Some(n),
                        Id::Path(p) => owner(&p, false),
                        Id::Unset => None,
                    };
                    groups.push((name, gid));
                }
                Item::User {
                    name,
                    uid,
                    gid,
                    group_name,
                    gecos,
                    home,
                    shell,
                } => {
                    if users.iter().any(|u| u.name == name) {
                        continue;
                    }
                    let uid = match uid {
                        Id::Num(n) => Some(n),
                        Id::Path(p) => owner(&p, true),
                        Id::Unset => None,
                    };
                    let gid_val = match gid {
                        Some(Id::Num(n)) => Some(n),
                        Some(Id::Path(p)) => owner(&p, false),
                        _ => None,
                    };
                    let root = uid == Some(0);
                    users.push(Pending {
                        name,
                        uid,
                        gid: gid_val,
                        strict_gid: gid_val.is_some(),
                        group_name,
                        gecos: gecos.unwrap_or_default(),
                        home: home.unwrap_or_else(|| "/".into()),
                        shell: shell.unwrap_or_else(|| {
                            if root { "/bin/sh" } else { "/usr/sbin/nologin" }.into()
                        }),
                    });
                }
                Item::Member { user, group } => members.push((user, group)),
                Item::Range { from, to } => ranges.push((from, to)),
            }
        }
    }
    // m lines create the users and groups they name when nothing else does.
    for (user, group) in &members {
        if !users.iter().any(|u| u.name == *user) && a.user(user).is_none() {
            users.push(Pending {
                name: user.clone(),
                uid: None,
                gid: None,
                strict_gid: false,
                group_name: None,
                gecos: String::new(),
                home: "/".into(),
                shell: "/usr/sbin/nologin".into(),
            });
        }
        if !groups.iter().any(|(n, _)| n == group) && a.group(group).is_none() {
            groups.push((group.clone(), None));
        }
    }
    if ranges.is_empty() {
        ranges.push(login_defs_range(tree));
    }
    let mut alloc = Alloc {
        ranges,
        search: None,
        new_uids: Vec::new(),
        new_gids: Vec::new(),
    };
    for (name, gid) in &groups {
        if let Err(e) = alloc.group(a, name, *gid, None, false) {
            problems.push(e);
        }
    }
    for u in &mut users {
        if a.user(&u.name).is_some() {
            continue;
        }
        let gid = if let Some(g) = u.gid {
            Some(g)
        } else if let Some(gn) = &u.group_name {
            match a.group(gn) {
                Some(g) => Some(g.gid),
                None => {
                    problems.push(format!("user {}: group {gn} does not exist", u.name));
                    continue;
                }
            }
        } else {
            match alloc.group(a, &u.name.clone(), None, u.uid, u.strict_gid) {
                Ok(g) => Some(g),
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            }
        };
        u.gid = gid;
        match alloc.user(a, &u.name, u.uid, gid) {
            Ok(uid) => {
                a.users.push(User {
                    name: u.name.clone(),
                    uid,
                    gid: gid.unwrap_or(uid),
                    gecos: u.gecos.clone(),
                    home: u.home.clone(),
                    shell: u.shell.clone(),
                    password: "!*".into(),
                    aging: Aging::Empty,
                });
            }
            Err(e) => problems.push(e),
        }
    }
    for (user, group) in &members {
        if let Some(g) = a.groups.iter_mut().find(|g| g.name == *group) {
            if !g.members.contains(user) {
                g.members.push(user.clone());
                // systemd-sysusers rewrites a group it adds members to with them sorted.
                g.members.sort();
                g.members.dedup();
            }
        }
    }
    problems
}

/// `SYS_UID_MIN`..`SYS_UID_MAX` from the tree's login.defs (systemd's defaults: 100..999 as
/// Debian builds it).
fn login_defs_range(tree: &Tree) -> (u32, u32) {
    let text = fsops::read_text(tree, "/etc/login.defs").unwrap_or_default();
    let get = |k: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(k))
                .then(|| w.next()?.parse::<u32>().ok())
                .flatten()
        })
    };
    (
        get("SYS_UID_MIN").unwrap_or(100),
        get("SYS_UID_MAX").unwrap_or(999),
    )
}

struct Alloc {
    ranges: Vec<(u32, u32)>,
    /// The shared downward cursor (systemd's `search_uid`), `None` before the first search.
    search: Option<u32>,
    new_uids: Vec<(u32, String)>,
    new_gids: Vec<(u32, String)>,
}

impl Alloc {
    /// `uid_range_next_lower`: the next candidate below the cursor.
    fn next_lower(&mut self) -> Option<u32> {
        let candidate = match self.search {
            None => u32::MAX - 1,
            Some(0) => return None,
            Some(s) => s - 1,
        };
        let mut closest: Option<u32> = None;
        for &(b, e) in &self.ranges {
            if (b..=e).contains(&candidate) {
                self.search = Some(candidate);
                return Some(candidate);
            }
            if e < candidate && closest.is_none_or(|c| e > c) {
                closest = Some(e);
            }
        }
        self.search = Some(closest?);
        closest
    }

    fn gid_ok(&self, a: &Accounts, gid: u32, name: &str, with_uid: bool) -> bool {
        if self.new_gids.iter().any(|(g, _)| *g == gid) || a.group_by_id(gid).is_some() {
            return false;
        }
        if with_uid {
            if let Some(u) = a.user_by_id(gid) {
                if u.name != name {
                    return false;
                }
            }
        }
        true
    }

    fn uid_ok(&self, a: &Accounts, uid: u32, name: &str, with_gid: bool) -> bool {
        if self.new_uids.iter().any(|(u, _)| *u == uid) || a.user_by_id(uid).is_some() {
            return false;
        }
        if with_gid {
            if let Some(g) = a.group_by_id(uid) {
                if g.name != name {
                    return false;
                }
            }
        }
        true
    }

    fn group(
        &mut self,
        a: &mut Accounts,
        name: &str,
        gid: Option<u32>,
        uid_hint: Option<u32>,
        strict: bool,
    ) -> Result<u32, String> {
        if let Some(g) = a.group(name) {
            return Ok(g.gid);
        }
        let mut chosen = None;
        if let Some(g) = gid {
            if self.gid_ok(a, g, name, false) {
                chosen = Some(g);
            } else if strict {
                return Err(format!("group {name}: GID {g} is already in use"));
            }
        }
        if chosen.is_none() {
            if let Some(u) = uid_hint {
                if self.gid_ok(a, u, name, true) {
                    chosen = Some(u);
                }
            }
        }
        let gid = match chosen {
            Some(g) => g,
            None => loop {
                let c = self
                    .next_lower()
                    .ok_or_else(|| format!("no free group ID for {name}"))?;
                if self.gid_ok(a, c, name, true) {
                    break c;
                }
            },
        };
        self.new_gids.push((gid, name.to_owned()));
        a.add_group(name, gid, "!*");
        Ok(gid)
    }

    fn user(
        &mut self,
        a: &Accounts,
        name: &str,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<u32, String> {
        if let Some(u) = uid {
            if self.uid_ok(a, u, name, true) {
                self.new_uids.push((u, name.to_owned()));
                return Ok(u);
            }
        }
        if let Some(g) = gid {
            if self.uid_ok(a, g, name, true) {
                self.new_uids.push((g, name.to_owned()));
                return Ok(g);
            }
        }
        loop {
            let c = self
                .next_lower()
                .ok_or_else(|| format!("no free user ID for {name}"))?;
            if self.uid_ok(a, c, name, true) {
                self.new_uids.push((c, name.to_owned()));
                return Ok(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_form() {
        let items = parse(
            "# c\nu root 0 - /root /bin/bash\nu sync 4:65534 - /bin /bin/sync\nu x 5:games \"A B\"\nu y /var/lib/y\ng adm 4 -\nm u g\nr - 500-900\nu 9bad -\nz q\nu a \"open\n",
        );
        assert_eq!(items.len(), 10);
        assert!(
            matches!(&items[2], Ok(Item::User { group_name: Some(g), gecos: Some(d), .. }) if g == "games" && d == "A B")
        );
        assert!(matches!(
            &items[3],
            Ok(Item::User {
                uid: Id::Path(_),
                ..
            })
        ));
        assert_eq!(items[6], Ok(Item::Range { from: 500, to: 900 }));
        assert_eq!(items[7].as_ref().unwrap_err().0, 9);
        assert!(items[8].is_err() && items[9].is_err());
    }
}
