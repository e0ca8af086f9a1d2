//! Choosing the packages to install: Depends/Pre-Depends with alternatives and version
//! constraints, Provides (plain and versioned), arch qualifiers, Conflicts and Breaks
//! (Debian Policy §7).
//!
//! The choice is deterministic and greedy, without backtracking: for each unmet dependency the
//! first alternative that can be met wins, and for it the real package of that name at its
//! highest version, else the providers sorted by name. Candidates that are excluded, or that
//! conflict with something already chosen, are skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::error::{PackageError, Result};
use super::index::Package;
use super::version::compare;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

/// One package relation: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rel {
    pub name: String,
    pub constraint: Option<(Op, String)>,
}

impl Rel {
    /// Whether `version` satisfies the constraint (no constraint: any).
    pub fn allows(&self, version: &str) -> bool {
        use std::cmp::Ordering::*;
        match &self.constraint {
            None => true,
            Some((op, v)) => {
                let c = compare(version, v);
                match op {
                    Op::Lt => c == Less,
                    Op::Le => c != Greater,
                    Op::Eq => c == Equal,
                    Op::Ge => c != Less,
                    Op::Gt => c == Greater,
                }
            }
        }
    }
}

impl std::fmt::Display for Rel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some((op, v)) = &self.constraint {
            let op = match op {
                Op::Lt => "<<",
                Op::Le => "<=",
                Op::Eq => "=",
                Op::Ge => ">=",
                Op::Gt => ">>",
            };
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// Parses a relation field into AND-ed groups of OR-ed alternatives. Arch qualifiers (`:any`,
/// `:native`, `:amd64`) are dropped: kiln installs one architecture. Build-profile and arch
/// restrictions (`<...>`, `[...]`) do not occur in binary indexes and are dropped too.
pub fn parse_relations(s: &str) -> Vec<Vec<Rel>> {
    s.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| parse_rel(alt.trim()))
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

fn parse_rel(s: &str) -> Option<Rel> {
    let (name, rest) = match (s.find('('), s.find(')')) {
        (Some(i), Some(j)) if i < j => (&s[..i], Some(&s[i + 1..j])),
        _ => (s, None),
    };
    // Arch restrictions `[...]` and build profiles `<...>` follow the name or the constraint.
    let name = name.split(['[', '<']).next().unwrap_or("").trim();
    let name = name.split(':').next().unwrap_or("").trim();
    if name.is_empty() {
        return None;
    }
    let constraint = rest.and_then(|r| {
        let r = r.trim();
        let (op, v) = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            (">=", Op::Ge),
            (">>", Op::Gt),
            ("=", Op::Eq),
            ("<", Op::Le),
            (">", Op::Ge),
        ]
        .iter()
        .find_map(|(t, op)| r.strip_prefix(t).map(|v| (*op, v.trim())))?;
        Some((op, v.to_owned()))
    });
    Some(Rel {
        name: name.to_owned(),
        constraint,
    })
}

/// What the recipe asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Also every `Priority: required` and `Essential: yes` package.
    pub required: bool,
}

/// Every installable package of one architecture, indexed by name and by what they provide.
pub struct Universe {
    pub packages: Vec<Package>,
    by_name: HashMap<String, Vec<usize>>,
    /// Provided name → (provider, provided version).
    providers: HashMap<String, Vec<(usize, Option<String>)>>,
}

impl Universe {
    /// Keeps the packages of `arch` (a Debian architecture) and `all`.
    pub fn new(all: Vec<Package>, arch: &str) -> Universe {
        let packages: Vec<Package> = all
            .into_iter()
            .filter(|p| p.architecture == arch || p.architecture == "all")
            .collect();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<String, Vec<(usize, Option<String>)>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(p.name.clone()).or_default().push(i);
            for g in parse_relations(&p.provides) {
                for r in g {
                    let v = r.constraint.map(|(_, v)| v);
                    providers.entry(r.name).or_default().push((i, v));
                }
            }
        }
        Universe {
            packages,
            by_name,
            providers,
        }
    }

    /// Whether package `i` is, or provides, what `rel` names at an allowed version. A versioned
    /// relation is only met by a versioned Provides (Policy §7.5).
    fn meets(&self, i: usize, rel: &Rel) -> bool {
        let p = &self.packages[i];
        if p.name == rel.name && rel.allows(&p.version) {
            return true;
        }
        self.providers.get(&rel.name).is_some_and(|ps| {
            ps.iter().any(|(j, v)| {
                *j == i
                    && match (&rel.constraint, v) {
                        (None, _) => true,
                        (Some(_), Some(v)) => rel.allows(v),
                        (Some(_), None) => false,
                    }
            })
        })
    }

    /// Packages that could meet `rel`, best first: the real package by descending version,
    /// then providers by name and descending version.
    fn candidates(&self, rel: &Rel) -> Vec<usize> {
        let mut real: Vec<usize> = self
            .by_name
            .get(&rel.name)
            .map(|v| v.iter().copied().filter(|&i| self.meets(i, rel)).collect())
            .unwrap_or_default();
        real.sort_by(|&a, &b| self.order(a, b));
        let mut prov: Vec<usize> = self
            .providers
            .get(&rel.name)
            .map(|v| {
                v.iter()
                    .map(|(i, _)| *i)
                    .filter(|&i| !real.contains(&i) && self.meets(i, rel))
                    .collect()
            })
            .unwrap_or_default();
        // Like APT, prefer the provider with the highest Priority (`awk`: mawk, which is
        // required, over gawk), then by name.
        prov.sort_by(|&a, &b| {
            priority_rank(&self.packages[a].priority)
                .cmp(&priority_rank(&self.packages[b].priority))
                .then_with(|| self.order(a, b))
        });
        prov.dedup();
        real.extend(prov);
        real
    }

    /// By name, then highest version first, then repository order.
    fn order(&self, a: usize, b: usize) -> std::cmp::Ordering {
        let (pa, pb) = (&self.packages[a], &self.packages[b]);
        pa.name
            .cmp(&pb.name)
            .then_with(|| compare(&pb.version, &pa.version))
            .then_with(|| pa.repo.cmp(&pb.repo))
    }

    /// The best package with exactly this name and version, for a lock file.
    pub fn find(&self, name: &str, version: &str) -> Option<usize> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&i| self.packages[i].version == version)
    }

    /// If installing `a` beside `b` is forbidden, the relation that forbids it.
    fn clash(&self, a: usize, b: usize) -> Option<(&'static str, Rel)> {
        if a == b || self.packages[a].name == self.packages[b].name {
            return None;
        }
        for (field, what) in [
            (&self.packages[a].conflicts, "conflicts with"),
            (&self.packages[a].breaks, "breaks"),
        ] {
            for g in parse_relations(field) {
                for r in g {
                    if self.meets(b, &r) {
                        return Some((what, r));
                    }
                }
            }
        }
        None
    }

    /// Resolves `req`; returns the chosen packages sorted by name.
    pub fn resolve(&self, req: &Request) -> Result<Vec<usize>> {
        let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
        // Why each package is there: name → (who needed it, the relation).
        let mut why: HashMap<String, (String, String)> = HashMap::new();
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut roots: Vec<Rel> = req
            .include
            .iter()
            .map(|n| {
                parse_rel(n).unwrap_or(Rel {
                    name: n.clone(),
                    constraint: None,
                })
            })
            .collect();
        if req.required {
            let mut names: Vec<&String> = self
                .by_name
                .iter()
                .filter(|(_, v)| {
                    v.iter().any(|&i| {
                        let p = &self.packages[i];
                        p.essential || p.priority == "required"
                    })
                })
                .map(|(n, _)| n)
                .filter(|n| !req.exclude.contains(n))
                .collect();
            names.sort();
            roots.extend(names.into_iter().map(|n| Rel {
                name: n.clone(),
                constraint: None,
            }));
        }
        for r in &roots {
            if req.exclude.contains(&r.name) {
                return Err(PackageError::Unsatisfiable {
                    package: r.name.clone(),
                    problem: "it is both included and excluded".into(),
                    chain: "the recipe's packages.include".into(),
                });
            }
            if chosen.values().any(|&i| self.meets(i, r)) {
                continue;
            }
            let i = self.choose(
                std::slice::from_ref(r),
                &[],
                &chosen,
                req,
                "the recipe",
                &why,
            )?;
            why.insert(
                self.packages[i].name.clone(),
                ("the recipe".into(), r.to_string()),
            );
            chosen.insert(self.packages[i].name.clone(), i);
            queue.push_back(i);
        }
        while let Some(i) = queue.pop_front() {
            let p = &self.packages[i];
            let deps = format!("{}, {}", p.pre_depends, p.depends);
            let groups = parse_relations(&deps);
            // `libfoo (>= 2), libfoo (<< 3)`: a candidate must meet every plain (single
            // alternative) constraint its parent puts on its name, not only the first.
            let also: Vec<Rel> = groups
                .iter()
                .filter(|g| g.len() == 1)
                .map(|g| g[0].clone())
                .collect();
            for group in groups {
                if chosen
                    .values()
                    .any(|&c| group.iter().any(|r| self.meets(c, r)))
                {
                    continue;
                }
                let j = self.choose(&group, &also, &chosen, req, &p.name, &why)?;
                let alt: Vec<String> = group.iter().map(|r| r.to_string()).collect();
                why.insert(
                    self.packages[j].name.clone(),
                    (p.name.clone(), alt.join(" | ")),
                );
                chosen.insert(self.packages[j].name.clone(), j);
                queue.push_back(j);
            }
        }
        Ok(chosen.into_values().collect())
    }

    fn choose(
        &self,
        group: &[Rel],
        also: &[Rel],
        chosen: &BTreeMap<String, usize>,
        req: &Request,
        parent: &str,
        why: &HashMap<String, (String, String)>,
    ) -> Result<usize> {
        let mut reasons = Vec::new();
        for r in group {
            let cands = self.candidates(r);
            if cands.is_empty() {
                reasons.push(if self.by_name.contains_key(&r.name) {
                    format!("no version of {} satisfies {r}", r.name)
                } else {
                    format!("no package is or provides {}", r.name)
                });
                continue;
            }
            for c in cands {
                let name = &self.packages[c].name;
                let version = &self.packages[c].version;
                if let Some(o) = also.iter().find(|o| &o.name == name && !o.allows(version)) {
                    reasons.push(format!("{name} {version} does not satisfy {o}"));
                    continue;
                }
                if req.exclude.contains(name) {
                    reasons.push(format!("{name} is excluded by the recipe"));
                    continue;
                }
                if chosen.contains_key(name) {
                    // Another version is already chosen and does not fit.
                    reasons.push(format!(
                        "{name} {} is already chosen and does not satisfy {r}",
                        self.packages[chosen[name]].version
                    ));
                    continue;
                }
                let clash = chosen.values().find_map(|&o| {
                    self.clash(c, o)
                        .map(|(w, rel)| (c, o, w, rel))
                        .or_else(|| self.clash(o, c).map(|(w, rel)| (o, c, w, rel)))
                });
                if let Some((a, b, w, rel)) = clash {
                    if group.len() == 1 && reasons.is_empty() {
                        return Err(PackageError::Conflict {
                            a: self.packages[a].name.clone(),
                            b: self.packages[b].name.clone(),
                            relation: w,
                            rel_text: rel.to_string(),
                        });
                    }
                    reasons.push(format!("{} {w} {rel}", self.packages[a].name));
                    continue;
                }
                return Ok(c);
            }
        }
        let alt: Vec<String> = group.iter().map(|r| r.to_string()).collect();
        Err(PackageError::Unsatisfiable {
            package: alt.join(" | "),
            problem: reasons.join("; "),
            chain: chain(parent, why),
        })
    }
}

/// Debian Policy §2.5 priorities, most important first.
fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        "extra" => 4,
        _ => 5,
    }
}

/// `parent <- grandparent <- ... <- the recipe`, from the `why` table.
fn chain(start: &str, why: &HashMap<String, (String, String)>) -> String {
    let mut out = vec![start.to_owned()];
    let mut at = start.to_owned();
    while let Some((p, _)) = why.get(&at) {
        if out.contains(p) || out.len() > 64 {
            break;
        }
        out.push(p.clone());
        at = p.clone();
    }
    out.join(" <- ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations() {
        let g = parse_relations("libc6 (>= 2.36), a:any | b (<< 2~), c [amd64], d (= 1:1.0-1)");
        assert_eq!(g.len(), 4);
        assert_eq!(g[0][0].constraint, Some((Op::Ge, "2.36".into())));
        assert_eq!(g[1][0].name, "a");
        assert_eq!(g[1][1].constraint, Some((Op::Lt, "2~".into())));
        assert_eq!(g[2][0].name, "c");
        assert!(g[3][0].allows("1:1.0-1"));
        assert!(!g[3][0].allows("1.0-1"));
    }
}
