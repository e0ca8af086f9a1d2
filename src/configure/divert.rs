//! dpkg-divert(1) (dpkg 1.21): the diversions database `/var/lib/dpkg/diversions` (three lines
//! per diversion: the diverted path, where it goes, the package or `:` for a local one; new
//! entries first, as dpkg's list prepends them) and the queries scripts make of it.

use super::fsops;
use crate::tree::{Time, Tree};

pub const DB: &str = "/var/lib/dpkg/diversions";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diversion {
    pub from: String,
    pub to: String,
    /// `None`: a local diversion (`:` in the file).
    pub package: Option<String>,
}

pub fn parse(text: &str) -> Vec<Diversion> {
    let l: Vec<&str> = text.lines().collect();
    l.chunks_exact(3)
        .map(|c| Diversion {
            from: c[0].to_owned(),
            to: c[1].to_owned(),
            package: (c[2] != ":").then(|| c[2].to_owned()),
        })
        .collect()
}

fn format(v: &[Diversion]) -> String {
    v.iter()
        .map(|d| {
            format!(
                "{}\n{}\n{}\n",
                d.from,
                d.to,
                d.package.as_deref().unwrap_or(":")
            )
        })
        .collect()
}

/// Runs `dpkg-divert ARGS...`: (status, stdout).
pub fn run(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(i32, String), String> {
    let mut all = parse(&fsops::read_text(tree, DB).unwrap_or_default());
    let (mut action, mut package, mut divert_to, mut rename, mut local) =
        (None, None, None, false, false);
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--add" | "--remove" | "--list" | "--listpackage" | "--truename" => action = Some(*a),
            "--package" => package = Some((*it.next().ok_or("--package needs a name")?).to_owned()),
            "--divert" => divert_to = Some((*it.next().ok_or("--divert needs a path")?).to_owned()),
            "--local" => local = true,
            "--rename" => rename = true,
            "--no-rename" | "--quiet" | "--test" => {}
            a if a.starts_with("--") => return Err(format!("dpkg-divert {a} is not handled")),
            a => files.push(a),
        }
    }
    let find = |all: &[Diversion], f: &str| all.iter().position(|d| d.from == f);
    match (action.unwrap_or("--add"), &files[..]) {
        ("--listpackage", [f]) => Ok(match find(&all, f) {
            Some(i) => (
                0,
                format!("{}\n", all[i].package.as_deref().unwrap_or("LOCAL")),
            ),
            None => (0, String::new()),
        }),
        ("--truename", [f]) => Ok(match find(&all, f) {
            Some(i) => (0, format!("{}\n", all[i].to)),
            None => (0, format!("{f}\n")),
        }),
        ("--list", pats) => {
            let out: String = all
                .iter()
                .filter(|d| {
                    pats.is_empty() || pats.iter().any(|p| super::script::glob_match(p, &d.from))
                })
                .map(|d| match &d.package {
                    Some(p) => format!("diversion of {} to {} by {p}\n", d.from, d.to),
                    None => format!("local diversion of {} to {}\n", d.from, d.to),
                })
                .collect();
            Ok((0, out))
        }
        ("--add", [f]) => {
            let to = divert_to.unwrap_or_else(|| format!("{f}.distrib"));
            let pkg = if local { None } else { package };
            if let Some(i) = find(&all, f) {
                if all[i].to == to && all[i].package == pkg {
                    return Ok((0, String::new()));
                }
                return Err(format!(
                    "{f} is already diverted to {} by another package",
                    all[i].to
                ));
            }
            if rename && fsops::lookup(tree, f, false).is_some() {
                super::fileutil::mv(tree, &[f, &to], sde)?;
            }
            all.insert(
                0,
                Diversion {
                    from: (*f).to_owned(),
                    to,
                    package: pkg,
                },
            );
            write(tree, &all, sde)?;
            Ok((0, String::new()))
        }
        ("--remove", [f]) => {
            let Some(i) = find(&all, f) else {
                return Ok((0, String::new()));
            };
            if package.is_some() && all[i].package != package {
                return Err(format!("{f} is diverted by another package"));
            }
            let d = all.remove(i);
            if rename && fsops::lookup(tree, &d.to, false).is_some() {
                super::fileutil::mv(tree, &[&d.to, f], sde)?;
            }
            write(tree, &all, sde)?;
            Ok((0, String::new()))
        }
        _ => Err("this dpkg-divert call is not handled".into()),
    }
}

fn write(tree: &mut Tree, all: &[Diversion], sde: Time) -> Result<(), String> {
    fsops::write_file(tree, DB, format(all).into_bytes(), 0o644, 0, 0, sde)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Meta;

    #[test]
    fn add_query_remove() {
        let sde = Time::from_secs(1);
        let mut t = Tree::new(Meta::new(0o755, 0, 0, sde));
        assert_eq!(
            run(&mut t, &["--listpackage", "/bin/sh"], sde).unwrap(),
            (0, String::new())
        );
        run(
            &mut t,
            &[
                "--package",
                "dash",
                "--no-rename",
                "--divert",
                "/bin/sh.distrib",
                "--add",
                "/bin/sh",
            ],
            sde,
        )
        .unwrap();
        run(
            &mut t,
            &[
                "--package",
                "dash",
                "--no-rename",
                "--divert",
                "/x.distrib",
                "--add",
                "/x",
            ],
            sde,
        )
        .unwrap();
        assert_eq!(
            fsops::read_text(&t, DB).unwrap(),
            "/x\n/x.distrib\ndash\n/bin/sh\n/bin/sh.distrib\ndash\n"
        );
        assert_eq!(
            run(&mut t, &["--listpackage", "/bin/sh"], sde).unwrap().1,
            "dash\n"
        );
        assert_eq!(
            run(&mut t, &["--truename", "/bin/sh"], sde).unwrap().1,
            "/bin/sh.distrib\n"
        );
        run(&mut t, &["--package", "dash", "--remove", "/x"], sde).unwrap();
        assert_eq!(parse(&fsops::read_text(&t, DB).unwrap()).len(), 1);
    }
}
