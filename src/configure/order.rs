//! The installed packages (from the tree's `/var/lib/dpkg/status`) in the order dpkg configures
//! them: the `Essential: yes` packages and what they depend on first (as debootstrap and
//! mmdebstrap configure the essential set before the rest), then the others; within each, a
//! package after what it `Depends`/`Pre-Depends` on, ties and dependency cycles broken by name. The order depends on nothing but the package set, so account ids allocated along
//! it are the same on every build of the same packages.

use std::collections::{BTreeMap, BTreeSet};

use crate::packages::index::{field, paragraphs};

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The prefix of its files under `/var/lib/dpkg/info/` (`name`, or `name:arch` for
    /// `Multi-Arch: same`).
    pub key: String,
    /// Each dependency as its alternatives' package names.
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
    pub essential: bool,
}

fn names(rel: &str) -> Vec<Vec<String>> {
    rel.split(',')
        .map(|alt| {
            alt.split('|')
                .filter_map(|a| {
                    let n = a.trim().split([' ', '(', '[', '<']).next()?.trim();
                    let n = n.split(':').next().unwrap_or(n);
                    (!n.is_empty()).then(|| n.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// Reads dpkg's status file.
pub fn parse_status(text: &str) -> Vec<Installed> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let Some(name) = field(&p, "Package") else {
            continue;
        };
        let arch = field(&p, "Architecture").unwrap_or("all").to_owned();
        let key = match field(&p, "Multi-Arch") {
            Some("same") => format!("{name}:{arch}"),
            _ => name.to_owned(),
        };
        let mut depends = names(field(&p, "Pre-Depends").unwrap_or(""));
        depends.extend(names(field(&p, "Depends").unwrap_or("")));
        out.push(Installed {
            name: name.to_owned(),
            version: field(&p, "Version").unwrap_or("").to_owned(),
            arch,
            key,
            depends,
            provides: names(field(&p, "Provides").unwrap_or(""))
                .into_iter()
                .flatten()
                .collect(),
            essential: field(&p, "Essential") == Some("yes"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Indexes into `pkgs` in configure order.
pub fn configure_order(pkgs: &[Installed]) -> Vec<usize> {
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        by_name.entry(&p.name).or_default().push(i);
        for v in &p.provides {
            by_name.entry(v).or_default().push(i);
        }
    }
    // deps[i]: the packages i waits for (the first installed alternative of each dependency).
    let deps: Vec<BTreeSet<usize>> = pkgs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.depends
                .iter()
                .filter_map(|alts| {
                    alts.iter()
                        .find_map(|a| by_name.get(a.as_str())?.first().copied())
                })
                .filter(|&d| d != i)
                .collect()
        })
        .collect();
    // The essential set: Essential packages and everything they depend on.
    let mut first = vec![false; pkgs.len()];
    let mut todo: Vec<usize> = (0..pkgs.len()).filter(|&i| pkgs[i].essential).collect();
    while let Some(i) = todo.pop() {
        if !std::mem::replace(&mut first[i], true) {
            todo.extend(deps[i].iter().copied());
        }
    }
    let mut done = vec![false; pkgs.len()];
    let mut out = Vec::with_capacity(pkgs.len());
    for phase in [true, false] {
        let member = |i: usize| first[i] == phase;
        let total = (0..pkgs.len()).filter(|&i| member(i)).count();
        let start = out.len();
        // pkgs is sorted by name, so the lowest index ready is the first by name.
        while out.len() - start < total {
            let ready = (0..pkgs.len())
                .find(|&i| member(i) && !done[i] && deps[i].iter().all(|&d| done[d]));
            // A cycle: configure the first remaining package by name.
            let Some(next) = ready.or_else(|| (0..pkgs.len()).find(|&i| member(i) && !done[i]))
            else {
                break;
            };
            done[next] = true;
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first_then_by_name() {
        let status = "Package: openssh-server\nVersion: 1\nArchitecture: amd64\nDepends: libc6 (>= 2.36), ucf, adduser | passwd\n\nPackage: ucf\nVersion: 1\nArchitecture: all\nDepends: debconf\n\nPackage: libc6\nVersion: 2.36\nArchitecture: amd64\nMulti-Arch: same\nDepends: libgcc-s1\n\nPackage: libgcc-s1\nVersion: 1\nArchitecture: amd64\nMulti-Arch: same\nDepends: libc6\n\nPackage: adduser\nVersion: 1\nArchitecture: all\nPre-Depends: passwd\n\nPackage: passwd\nVersion: 1\nArchitecture: amd64\nEssential: yes\n\nPackage: debconf\nVersion: 1\nArchitecture: all\n";
        let p = parse_status(status);
        assert_eq!(
            p.iter().find(|x| x.name == "libc6").unwrap().key,
            "libc6:amd64"
        );
        let order: Vec<&str> = configure_order(&p)
            .into_iter()
            .map(|i| p[i].name.as_str())
            .collect();
        assert_eq!(
            order,
            // passwd is Essential: first. libc6 and libgcc-s1 depend on each other: the cycle
            // is broken by name once nothing else is ready.
            [
                "passwd",
                "adduser",
                "debconf",
                "ucf",
                "libc6",
                "libgcc-s1",
                "openssh-server"
            ]
        );
    }
}
