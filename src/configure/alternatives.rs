//! update-alternatives(1) as dpkg 1.21 does it: the administrative file
//! `/var/lib/dpkg/alternatives/NAME` (status, master link, slaves sorted by name, then each
//! choice sorted by path with its priority and slave paths), the `/etc/alternatives/NAME`
//! symlinks and the generic links to them. In auto mode the highest priority wins; on a tie the
//! choice listed first (the file's order, then the newly installed one) wins, as in dpkg's
//! `alternative_get_best`.

use super::error::ConfigureError;
use super::fsops;
use crate::tree::{Kind, Time, Tree};

pub const ADMIN_DIR: &str = "/var/lib/dpkg/alternatives";
pub const ALT_DIR: &str = "/etc/alternatives";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slave {
    pub name: String,
    pub link: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub path: String,
    pub priority: i32,
    /// (slave name, path) for the slaves this choice provides.
    pub slaves: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub manual: bool,
    pub link: String,
    pub slaves: Vec<Slave>,
    pub choices: Vec<Choice>,
}

/// An update-alternatives command line, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Install {
        link: String,
        name: String,
        path: String,
        priority: i32,
        slaves: Vec<(String, String, String)>,
    },
    Remove {
        name: String,
        path: String,
    },
    RemoveAll {
        name: String,
    },
    Set {
        name: String,
        path: String,
    },
    Auto {
        name: String,
    },
    /// `--display`, `--query`, `--list`, `--get-selections`: no change.
    Query {
        name: String,
    },
}

/// Reads an update-alternatives command line (the arguments after the command name).
pub fn parse_command(args: &[&str]) -> Result<Op, String> {
    let mut i = 0;
    let mut op: Option<Op> = None;
    let mut slaves = Vec::new();
    let take = |i: &mut usize, n: usize| -> Result<Vec<String>, String> {
        let v = args
            .get(*i + 1..*i + 1 + n)
            .ok_or_else(|| format!("{} needs {n} arguments", args[*i]))?;
        *i += n + 1;
        Ok(v.iter().map(|s| (*s).to_owned()).collect())
    };
    while i < args.len() {
        match args[i] {
            "--quiet" | "--verbose" | "--force" | "--debug" | "--skip-auto" => i += 1,
            "--altdir" | "--admindir" | "--instdir" | "--root" | "--log" => {
                return Err(format!("{} is not handled", args[i]))
            }
            "--install" => {
                let v = take(&mut i, 4)?;
                let priority = v[3]
                    .parse()
                    .map_err(|_| format!("priority {:?} is not a number", v[3]))?;
                op = Some(Op::Install {
                    link: v[0].clone(),
                    name: v[1].clone(),
                    path: v[2].clone(),
                    priority,
                    slaves: Vec::new(),
                });
            }
            "--slave" => {
                let v = take(&mut i, 3)?;
                slaves.push((v[0].clone(), v[1].clone(), v[2].clone()));
            }
            "--remove" => {
                let v = take(&mut i, 2)?;
                op = Some(Op::Remove {
                    name: v[0].clone(),
                    path: v[1].clone(),
                });
            }
            "--set" => {
                let v = take(&mut i, 2)?;
                op = Some(Op::Set {
                    name: v[0].clone(),
                    path: v[1].clone(),
                });
            }
            "--remove-all" | "--auto" | "--display" | "--query" | "--list" => {
                let a = args[i];
                let v = take(&mut i, 1)?;
                let name = v[0].clone();
                op = Some(match a {
                    "--remove-all" => Op::RemoveAll { name },
                    "--auto" => Op::Auto { name },
                    _ => Op::Query { name },
                });
            }
            other => return Err(format!("argument {other:?} is not handled")),
        }
    }
    match op {
        Some(Op::Install {
            link,
            name,
            path,
            priority,
            ..
        }) => {
            for (l, n, _) in &slaves {
                if *l == link || *n == name {
                    return Err(format!("slave {n} repeats the master link or name"));
                }
            }
            Ok(Op::Install {
                link,
                name,
                path,
                priority,
                slaves,
            })
        }
        Some(o) if slaves.is_empty() => Ok(o),
        Some(_) => Err("--slave only goes with --install".into()),
        None => Err("no action".into()),
    }
}

/// Reads an administrative file; `None` if it is not in dpkg's format.
pub fn parse_db(name: &str, text: &str) -> Option<Group> {
    let mut lines = text.split('\n');
    let mut next = || lines.next();
    let manual = match next()? {
        "auto" => false,
        "manual" => true,
        _ => return None,
    };
    let link = next()?.to_owned();
    let mut slaves = Vec::new();
    loop {
        let n = next()?;
        if n.is_empty() {
            break;
        }
        slaves.push(Slave {
            name: n.to_owned(),
            link: next()?.to_owned(),
        });
    }
    let mut choices = Vec::new();
    loop {
        let path = next()?;
        if path.is_empty() {
            break;
        }
        let priority = next()?.parse().ok()?;
        let mut ss = Vec::new();
        for s in &slaves {
            let p = next()?;
            if !p.is_empty() {
                ss.push((s.name.clone(), p.to_owned()));
            }
        }
        choices.push(Choice {
            path: path.to_owned(),
            priority,
            slaves: ss,
        });
    }
    Some(Group {
        name: name.to_owned(),
        manual,
        link,
        slaves,
        choices,
    })
}

/// The administrative file, as dpkg's `alternative_save` writes it.
pub fn format_db(g: &Group) -> String {
    let mut slaves: Vec<&Slave> = g
        .slaves
        .iter()
        .filter(|s| {
            g.choices
                .iter()
                .any(|c| c.slaves.iter().any(|(n, _)| *n == s.name))
        })
        .collect();
    slaves.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut choices: Vec<&Choice> = g.choices.iter().collect();
    choices.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut out = String::new();
    out.push_str(if g.manual { "manual\n" } else { "auto\n" });
    out.push_str(&g.link);
    out.push('\n');
    for s in &slaves {
        out.push_str(&format!("{}\n{}\n", s.name, s.link));
    }
    out.push('\n');
    for c in choices {
        out.push_str(&format!("{}\n{}\n", c.path, c.priority));
        for s in &slaves {
            if let Some((_, p)) = c.slaves.iter().find(|(n, _)| *n == s.name) {
                out.push_str(p);
            }
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

impl Group {
    /// The choice auto mode selects.
    pub fn best(&self) -> Option<&Choice> {
        let mut best: Option<&Choice> = None;
        for c in &self.choices {
            if best.is_none_or(|b| c.priority > b.priority) {
                best = Some(c);
            }
        }
        best
    }
}

fn load(tree: &Tree, name: &str) -> Option<Group> {
    let text = fsops::read_text(tree, &format!("{ADMIN_DIR}/{name}"))?;
    parse_db(name, &text)
}

/// Runs one update-alternatives command on the tree.
pub fn apply(tree: &mut Tree, op: &Op, sde: Time) -> Result<(), String> {
    let name = match op {
        Op::Install { name, .. }
        | Op::Remove { name, .. }
        | Op::RemoveAll { name }
        | Op::Set { name, .. }
        | Op::Auto { name }
        | Op::Query { name } => name.clone(),
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!("alternative name {name:?} is not valid"));
    }
    let mut g = load(tree, &name);
    let current = fsops::find(tree, &format!("{ALT_DIR}/{name}"), false)
        .and_then(|f| f.node)
        .and_then(|id| match &tree.node(id).kind {
            Kind::Symlink(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        });
    match op {
        Op::Query { .. } => return Ok(()),
        Op::Install {
            link,
            path,
            priority,
            slaves,
            ..
        } => {
            if fsops::lookup(tree, path, true).is_none() {
                return Err(format!("alternative path {path} doesn't exist"));
            }
            let gr = g.get_or_insert_with(|| Group {
                name: name.clone(),
                manual: false,
                link: link.clone(),
                slaves: Vec::new(),
                choices: Vec::new(),
            });
            gr.link = link.clone();
            for (l, n, _) in slaves {
                match gr.slaves.iter_mut().find(|s| s.name == *n) {
                    Some(s) => s.link = l.clone(),
                    None => gr.slaves.push(Slave {
                        name: n.clone(),
                        link: l.clone(),
                    }),
                }
            }
            let choice = Choice {
                path: path.clone(),
                priority: *priority,
                slaves: slaves
                    .iter()
                    .map(|(_, n, p)| (n.clone(), p.clone()))
                    .collect(),
            };
            match gr.choices.iter_mut().find(|c| c.path == *path) {
                Some(c) => *c = choice,
                None => gr.choices.push(choice),
            }
        }
        Op::Remove { path, .. } => {
            let Some(gr) = g.as_mut() else { return Ok(()) };
            gr.choices.retain(|c| c.path != *path);
            if gr.manual && current.as_deref() == Some(path) {
                gr.manual = false;
            }
        }
        Op::RemoveAll { .. } => {
            if let Some(gr) = g.as_mut() {
                gr.choices.clear();
            }
        }
        Op::Set { path, .. } => {
            let Some(gr) = g.as_mut() else {
                return Err(format!("no alternatives for {name}"));
            };
            if !gr.choices.iter().any(|c| c.path == *path) {
                return Err(format!("alternative {path} for {name} not registered"));
            }
            gr.manual = true;
        }
        Op::Auto { .. } => {
            if let Some(gr) = g.as_mut() {
                gr.manual = false;
            }
        }
    }
    let Some(g) = g else { return Ok(()) };
    let selected = match (op, g.manual) {
        (Op::Set { path, .. }, _) => g.choices.iter().find(|c| c.path == *path).cloned(),
        (_, true) => current
            .as_deref()
            .and_then(|cur| g.choices.iter().find(|c| c.path == cur))
            .cloned()
            .or_else(|| g.best().cloned()),
        _ => g.best().cloned(),
    };
    write_links(tree, &g, selected.as_ref(), sde).map_err(|e| e.to_string())
}

/// Writes the administrative file and the links for `selected` (or removes everything when
/// no choice is left).
fn write_links(
    tree: &mut Tree,
    g: &Group,
    selected: Option<&Choice>,
    sde: Time,
) -> Result<(), ConfigureError> {
    let admin = format!("{ADMIN_DIR}/{}", g.name);
    let alt = |n: &str| format!("{ALT_DIR}/{n}");
    let Some(sel) = selected else {
        fsops::remove(tree, &admin);
        fsops::remove(tree, &alt(&g.name));
        remove_if_symlink(tree, &g.link);
        for s in &g.slaves {
            fsops::remove(tree, &alt(&s.name));
            remove_if_symlink(tree, &s.link);
        }
        return Ok(());
    };
    fsops::write_file(tree, &admin, format_db(g).into_bytes(), 0o644, 0, 0, sde)?;
    fsops::symlink(tree, &alt(&g.name), &sel.path, sde)?;
    link_generic(tree, &g.link, &alt(&g.name), sde)?;
    for s in &g.slaves {
        let provided = sel
            .slaves
            .iter()
            .find(|(n, _)| *n == s.name)
            .map(|(_, p)| p.clone())
            .filter(|p| fsops::lookup(tree, p, false).is_some());
        match provided {
            Some(p) => {
                fsops::symlink(tree, &alt(&s.name), &p, sde)?;
                link_generic(tree, &s.link, &alt(&s.name), sde)?;
            }
            None => {
                // dpkg: "skip creation of ... because associated file ... doesn't exist".
                fsops::remove(tree, &alt(&s.name));
                remove_if_symlink(tree, &s.link);
            }
        }
    }
    Ok(())
}

/// The generic name (`/usr/bin/awk`) → `/etc/alternatives/awk`, unless a real file is there
/// (dpkg does not replace one without --force).
fn link_generic(tree: &mut Tree, link: &str, to: &str, sde: Time) -> Result<(), ConfigureError> {
    if let Some(id) = fsops::lookup(tree, link, false) {
        if !matches!(tree.node(id).kind, Kind::Symlink(_)) {
            return Ok(());
        }
    }
    fsops::symlink(tree, link, to, sde)
}

fn remove_if_symlink(tree: &mut Tree, link: &str) {
    if let Some(id) = fsops::lookup(tree, link, false) {
        if matches!(tree.node(id).kind, Kind::Symlink(_)) {
            fsops::remove(tree, link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_dpkgs_format() {
        let op = parse_command(&[
            "--quiet",
            "--install",
            "/usr/bin/pager",
            "pager",
            "/usr/bin/less",
            "77",
            "--slave",
            "/usr/share/man/man1/pager.1.gz",
            "pager.1.gz",
            "/usr/share/man/man1/less.1.gz",
        ])
        .unwrap();
        let Op::Install {
            slaves, priority, ..
        } = &op
        else {
            panic!()
        };
        assert_eq!(*priority, 77);
        assert_eq!(slaves.len(), 1);
        let g = Group {
            name: "x".into(),
            manual: false,
            link: "/usr/bin/x".into(),
            slaves: vec![
                Slave {
                    name: "z".into(),
                    link: "/z".into(),
                },
                Slave {
                    name: "a".into(),
                    link: "/a".into(),
                },
                Slave {
                    name: "unused".into(),
                    link: "/u".into(),
                },
            ],
            choices: vec![
                Choice {
                    path: "/usr/bin/x2".into(),
                    priority: 5,
                    slaves: vec![("z".into(), "/z2".into())],
                },
                Choice {
                    path: "/usr/bin/x1".into(),
                    priority: 5,
                    slaves: vec![("a".into(), "/a1".into()), ("z".into(), "/z1".into())],
                },
            ],
        };
        let text = format_db(&g);
        assert_eq!(
            text,
            "auto\n/usr/bin/x\na\n/a\nz\n/z\n\n/usr/bin/x1\n5\n/a1\n/z1\n/usr/bin/x2\n5\n\n/z2\n\n"
        );
        let back = parse_db("x", &text).unwrap();
        assert_eq!(format_db(&back), text);
        // A tie goes to the first in order.
        assert_eq!(g.best().unwrap().path, "/usr/bin/x2");
        assert!(parse_db("x", "bogus\n").is_none());
        assert!(parse_command(&["--install", "/a", "a"]).is_err());
        assert!(parse_command(&["--slave", "/b", "b", "/c"]).is_err());
    }
}
