//! The account databases (`/etc/passwd`, `group`, `shadow`, `gshadow`: passwd(5), group(5),
//! shadow(5), gshadow(5)) as a normal install leaves them: base-passwd's masters converted to
//! shadow passwords (passwd's `shadowconfig on`, i.e. pwconv/grpconv), then the system accounts
//! that postinst scripts and sysusers.d files add, in the order kiln configures packages.
//!
//! Entries keep file order (new ones are appended, as useradd and systemd-sysusers append).

use super::error::ConfigureError;
use super::fsops;
use crate::tree::{Time, Tree};

mod cmdline;
pub use cmdline::{parse_command, Request};

/// shadow(5) aging fields after the last change: pwconv's `0:99999:7`, or empty (useradd -r,
/// systemd-sysusers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aging {
    Standard,
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// The shadow password field (`*`, `!`, `!*`, a hash).
    pub password: String,
    pub aging: Aging,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
    /// The gshadow password field.
    pub password: String,
}

/// Debian's system id range (adduser.conf FIRST_SYSTEM_UID..LAST_SYSTEM_UID, login.defs
/// SYS_UID_MAX).
pub const FIRST_SYSTEM_ID: u32 = 100;
pub const LAST_SYSTEM_ID: u32 = 999;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    /// Days since the epoch for shadow's last-change field (`source_date_epoch`, as useradd and
    /// systemd-sysusers take it from SOURCE_DATE_EPOCH).
    pub days: i64,
}

impl Accounts {
    /// base-passwd's `passwd.master` and `group.master` after pwconv/grpconv: passwords move to
    /// the shadow files, aged `0:99999:7`.
    pub fn from_masters(passwd: &str, group: &str, days: i64) -> Accounts {
        let mut a = Accounts {
            days,
            ..Accounts::default()
        };
        for l in passwd.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let [name, pw, uid, gid, gecos, home, shell] = f[..] {
                if let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) {
                    a.users.push(User {
                        name: name.into(),
                        uid,
                        gid,
                        gecos: gecos.into(),
                        home: home.into(),
                        shell: shell.into(),
                        password: pw.into(),
                        aging: Aging::Standard,
                    });
                }
            }
        }
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let [name, pw, gid, members] = f[..] {
                if let Ok(gid) = gid.parse() {
                    a.groups.push(Group {
                        name: name.into(),
                        gid,
                        members: split_members(members),
                        password: pw.into(),
                    });
                }
            }
        }
        a
    }

    /// The databases as the tree holds them (after [`Accounts::write`]), or `None` when the
    /// tree has no `/etc/passwd`.
    pub fn read(tree: &Tree, days: i64) -> Option<Accounts> {
        let text = |p: &str| fsops::read_text(tree, p).unwrap_or_default();
        let passwd = fsops::read_text(tree, "/etc/passwd")?;
        let shadow = text("/etc/shadow");
        let group = text("/etc/group");
        let gshadow = text("/etc/gshadow");
        let field = |db: &str, name: &str, i: usize| -> Option<String> {
            db.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.first() == Some(&name))
                .and_then(|f| f.get(i).map(|s| s.to_string()))
        };
        let mut a = Accounts::from_masters(&passwd, &group, days);
        for u in &mut a.users {
            u.password = field(&shadow, &u.name, 1).unwrap_or_else(|| "*".into());
            u.aging = match field(&shadow, &u.name, 4).as_deref() {
                Some("") => Aging::Empty,
                _ => Aging::Standard,
            };
        }
        for g in &mut a.groups {
            g.password = field(&gshadow, &g.name, 1).unwrap_or_else(|| "*".into());
        }
        Some(a)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
    pub fn user_by_id(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }
    pub fn group_by_id(&self, gid: u32) -> Option<&Group> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// `getent passwd NAME|ID` / `getent group NAME|ID`: the entry's line.
    pub fn getent(&self, db: &str, key: &str) -> Option<String> {
        let id: Option<u32> = key.parse().ok();
        match db {
            "passwd" => self
                .users
                .iter()
                .find(|u| u.name == key || Some(u.uid) == id)
                .map(|u| {
                    format!(
                        "{}:x:{}:{}:{}:{}:{}",
                        u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                    )
                }),
            "group" => self
                .groups
                .iter()
                .find(|g| g.name == key || Some(g.gid) == id)
                .map(|g| format!("{}:x:{}:{}", g.name, g.gid, g.members.join(","))),
            "shadow" => self.user(key).map(|u| self.shadow_line(u)),
            _ => None,
        }
    }

    /// The lowest id in `range` that no user has (adduser's first_avail_uid).
    pub fn first_free_uid(&self, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
        range.into_iter().find(|&id| self.user_by_id(id).is_none())
    }
    /// The lowest id in `range` that no group has (adduser's first_avail_gid).
    pub fn first_free_gid(&self, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
        range.into_iter().find(|&id| self.group_by_id(id).is_none())
    }

    pub fn add_group(&mut self, name: &str, gid: u32, password: &str) {
        self.groups.push(Group {
            name: name.into(),
            gid,
            members: Vec::new(),
            password: password.into(),
        });
    }

    pub fn add_member(&mut self, group: &str, user: &str) -> bool {
        match self.groups.iter_mut().find(|g| g.name == group) {
            Some(g) => {
                if !g.members.iter().any(|m| m == user) {
                    g.members.push(user.into());
                }
                true
            }
            None => false,
        }
    }

    fn shadow_line(&self, u: &User) -> String {
        let aging = match u.aging {
            Aging::Standard => "0:99999:7",
            Aging::Empty => "::",
        };
        format!("{}:{}:{}:{aging}:::", u.name, u.password, self.days)
    }

    /// Writes the four files (Debian: shadow files root:shadow 0640).
    pub fn write(&self, tree: &mut Tree, sde: Time) -> Result<(), ConfigureError> {
        let mut passwd = String::new();
        let mut shadow = String::new();
        for u in &self.users {
            passwd.push_str(&format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.gecos, u.home, u.shell
            ));
            shadow.push_str(&self.shadow_line(u));
            shadow.push('\n');
        }
        let mut group = String::new();
        let mut gshadow = String::new();
        for g in &self.groups {
            let m = g.members.join(",");
            group.push_str(&format!("{}:x:{}:{m}\n", g.name, g.gid));
            gshadow.push_str(&format!("{}:{}::{m}\n", g.name, g.password));
        }
        let shadow_gid = self.group("shadow").map_or(0, |g| g.gid);
        fsops::write_file(tree, "/etc/passwd", passwd.into_bytes(), 0o644, 0, 0, sde)?;
        fsops::write_file(tree, "/etc/group", group.into_bytes(), 0o644, 0, 0, sde)?;
        fsops::write_file(
            tree,
            "/etc/shadow",
            shadow.into_bytes(),
            0o640,
            0,
            shadow_gid,
            sde,
        )?;
        fsops::write_file(
            tree,
            "/etc/gshadow",
            gshadow.into_bytes(),
            0o640,
            0,
            shadow_gid,
            sde,
        )?;
        Ok(())
    }
}

/// The recipe's `[[group]]` and `[[user]]` entries over the databases: each replaces an entry
/// of the same name; a user without `gid` gets a same-named group.
pub fn apply_recipe(a: &mut Accounts, recipe: &crate::recipe::Recipe) -> Result<(), String> {
    for g in &recipe.groups {
        a.groups.retain(|o| o.name != g.name);
        a.groups.push(Group {
            name: g.name.clone(),
            gid: g.gid,
            members: Vec::new(),
            password: "*".into(),
        });
    }
    for u in &recipe.users {
        if u.own_group && a.group(&u.name).is_none() {
            a.groups.push(Group {
                name: u.name.clone(),
                gid: u.gid,
                members: Vec::new(),
                password: "*".into(),
            });
        }
        for g in &u.groups {
            if !a.add_member(g, &u.name) {
                return Err(format!(
                    "{}: user {:?} is in group {g:?}, which neither the packages nor a [[group]] define; expected a [[group]] named {g:?}",
                    u.pos, u.name
                ));
            }
        }
        a.users.retain(|o| o.name != u.name);
        a.users.push(User {
            name: u.name.clone(),
            uid: u.uid,
            gid: u.gid,
            gecos: String::new(),
            home: u.home.clone(),
            shell: u.shell.clone(),
            password: u.password.clone().unwrap_or_else(|| "!".into()),
            aging: Aging::Standard,
        });
    }
    // Duplicate ids would make ownership ambiguous; say which entries collide.
    let mut seen = std::collections::BTreeMap::new();
    for u in &a.users {
        if let Some(other) = seen.insert(u.uid, u.name.clone()) {
            return Err(format!(
                "users {other:?} and {:?} both have uid {}; expected distinct uids",
                u.name, u.uid
            ));
        }
    }
    Ok(())
}

fn split_members(m: &str) -> Vec<String> {
    m.split(',')
        .filter(|x| !x.is_empty())
        .map(Into::into)
        .collect()
}

/// What applying a request did, for the report.
pub type Applied = Result<(), String>;

/// Applies a request the way adduser 3.134 / shadow 4.13 would on Debian bookworm. Homes that
/// adduser or `useradd -m` would create are returned as (path, uid, gid).
pub fn apply(a: &mut Accounts, r: &Request) -> Result<Option<(String, u32, u32)>, String> {
    let system = FIRST_SYSTEM_ID..=LAST_SYSTEM_ID;
    match r {
        Request::SystemGroup {
            name,
            gid,
            from_top,
        } => {
            if let Some(g) = a.group(name) {
                // adduser: "already exists as a system group" is fine; groupadd -f likewise.
                if gid.is_some_and(|id| id != g.gid) && !*from_top {
                    return Err(format!(
                        "group {name} exists with GID {}, not {gid:?}",
                        g.gid
                    ));
                }
                return Ok(None);
            }
            let gid = match gid {
                Some(id) if a.group_by_id(*id).is_some() => {
                    return Err(format!("GID {id} is already in use"))
                }
                Some(id) => *id,
                // shadow's groupadd -r: the highest free id in SYS_GID_MIN (101)..SYS_GID_MAX.
                None if *from_top => (101..=LAST_SYSTEM_ID)
                    .rev()
                    .find(|&id| a.group_by_id(id).is_none())
                    .ok_or("no free system GID")?,
                None => a.first_free_gid(system).ok_or("no free system GID")?,
            };
            a.add_group(name, gid, "!");
            Ok(None)
        }
        Request::Member { user, group } => {
            if a.user(user).is_none() {
                return Err(format!("user {user} does not exist"));
            }
            if !a.add_member(group, user) {
                return Err(format!("group {group} does not exist"));
            }
            Ok(None)
        }
        Request::SystemUser {
            name,
            uid,
            gid,
            group,
            own_group,
            home,
            shell,
            gecos,
            no_create_home,
        } => {
            if let Some(u) = a.user(name) {
                if system.contains(&u.uid) || uid.is_none() || *uid == Some(u.uid) {
                    return Ok(None);
                }
                return Err(format!("user {name} exists with UID {}", u.uid));
            }
            if let Some(id) = uid {
                if a.user_by_id(*id).is_some() {
                    return Err(format!("UID {id} is already in use"));
                }
            }
            let (new_uid, primary_gid) = if *own_group {
                let new_uid = match uid {
                    Some(id) => *id,
                    None => a
                        .first_free_uid(system.clone())
                        .ok_or("no free system UID")?,
                };
                let gid = match a.group(name) {
                    Some(g) => g.gid,
                    None => {
                        let g = if uid.is_some() {
                            new_uid
                        } else {
                            a.first_free_gid(system).ok_or("no free system GID")?
                        };
                        a.add_group(name, g, "!");
                        g
                    }
                };
                (new_uid, gid)
            } else {
                let gid = match (gid, group) {
                    (Some(id), _) => {
                        a.group_by_id(*id)
                            .ok_or_else(|| format!("GID {id} does not exist"))?
                            .gid
                    }
                    (None, Some(g)) => {
                        a.group(g)
                            .ok_or_else(|| format!("group {g} does not exist"))?
                            .gid
                    }
                    // adduser --system without a group: nogroup.
                    (None, None) => a.group("nogroup").map_or(65534, |g| g.gid),
                };
                let new_uid = match uid {
                    Some(id) => *id,
                    None => a.first_free_uid(system).ok_or("no free system UID")?,
                };
                (new_uid, gid)
            };
            let home = home.clone().unwrap_or_else(|| "/nonexistent".into());
            a.users.push(User {
                name: name.clone(),
                uid: new_uid,
                gid: primary_gid,
                gecos: gecos.clone().unwrap_or_default(),
                home: home.clone(),
                shell: shell.clone().unwrap_or_else(|| "/usr/sbin/nologin".into()),
                password: "!".into(),
                aging: Aging::Empty,
            });
            let nonexistent = home.trim_start_matches('/').starts_with("nonexistent");
            Ok((!nonexistent && !no_create_home).then_some((home, new_uid, primary_gid)))
        }
        Request::UserAdd {
            name,
            system: sys,
            uid,
            group,
            groups,
            home,
            create_home,
            shell,
            gecos,
            user_group,
        } => {
            if a.user(name).is_some() {
                return Err(format!("user {name} already exists"));
            }
            let sys_range = 101..=LAST_SYSTEM_ID;
            let new_uid = match uid {
                Some(id) if a.user_by_id(*id).is_some() => {
                    return Err(format!("UID {id} is already in use"))
                }
                Some(id) => *id,
                // shadow's useradd -r: the highest free UID in SYS_UID_MIN..SYS_UID_MAX.
                None => sys_range
                    .clone()
                    .rev()
                    .find(|&id| a.user_by_id(id).is_none())
                    .ok_or("no free system UID")?,
            };
            let gid = match (group, user_group) {
                (Some(g), _) => match g.parse::<u32>() {
                    Ok(id) => id,
                    Err(_) => {
                        a.group(g)
                            .ok_or_else(|| format!("group {g} does not exist"))?
                            .gid
                    }
                },
                (None, true) => match a.group(name) {
                    Some(g) => g.gid,
                    None => {
                        let id = if a.group_by_id(new_uid).is_none() {
                            new_uid
                        } else {
                            sys_range
                                .rev()
                                .find(|&id| a.group_by_id(id).is_none())
                                .ok_or("no free system GID")?
                        };
                        a.add_group(name, id, "!");
                        id
                    }
                },
                (None, false) => 100,
            };
            for g in groups {
                if !a.add_member(g, name) {
                    return Err(format!("group {g} does not exist"));
                }
            }
            let home_dir = home.clone().unwrap_or_else(|| format!("/home/{name}"));
            a.users.push(User {
                name: name.clone(),
                uid: new_uid,
                gid,
                gecos: gecos.clone().unwrap_or_default(),
                home: home_dir.clone(),
                shell: shell.clone().unwrap_or_else(|| "/bin/sh".into()),
                password: "!".into(),
                aging: if *sys { Aging::Empty } else { Aging::Standard },
            });
            // Members named before the user existed (useradd -G) are listed in order.
            Ok(create_home.then_some((home_dir, new_uid, gid)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Accounts {
        Accounts::from_masters(
            "root:*:0:0:root:/root:/bin/bash\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            "root:*:0:\nshadow:*:42:\nusers:*:100:\nnogroup:*:65534:\n",
            19675,
        )
    }

    fn run(a: &mut Accounts, line: &str) -> Option<(String, u32, u32)> {
        let argv: Vec<&str> = line.split(' ').collect();
        apply(a, &parse_command(&argv).unwrap()).unwrap()
    }

    #[test]
    fn adduser_system_forms() {
        let mut a = base();
        run(&mut a, "addgroup --quiet --system netdev");
        assert_eq!(a.group("netdev").unwrap().gid, 101);
        let home = run(
            &mut a,
            "adduser --quiet --system --no-create-home --home /run/sshd --shell /usr/sbin/nologin sshd",
        );
        assert_eq!(home, None);
        assert_eq!(
            a.getent("passwd", "sshd").unwrap(),
            "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin"
        );
        run(
            &mut a,
            "adduser --system --home /nonexistent --no-create-home --group messagebus",
        );
        assert_eq!(
            a.getent("passwd", "messagebus").unwrap(),
            "messagebus:x:101:102::/nonexistent:/usr/sbin/nologin"
        );
        let home = run(
            &mut a,
            "adduser --system --home /var/lib/x --ingroup users --gecos X x",
        );
        assert_eq!(home, Some(("/var/lib/x".into(), 102, 100)));
        // Already there: nothing changes.
        let before = a.clone();
        run(&mut a, "adduser --system sshd");
        run(&mut a, "addgroup --system netdev");
        assert_eq!(a, before);
        run(&mut a, "adduser x netdev");
        assert_eq!(a.group("netdev").unwrap().members, ["x"]);
        run(&mut a, "groupadd -r rgroup");
        assert_eq!(a.group("rgroup").unwrap().gid, 999);
        run(&mut a, "useradd -r -s /bin/false ruser");
        assert_eq!(
            a.getent("passwd", "ruser").unwrap(),
            "ruser:x:999:998::/home/ruser:/bin/false"
        );
        assert!(parse_command(&["adduser", "--quiet", "alice"]).is_err());
        assert!(apply(
            &mut a,
            &parse_command(&["groupadd", "-g", "42", "other"]).unwrap()
        )
        .is_err());
    }
}
