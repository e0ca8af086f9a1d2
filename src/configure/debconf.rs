//! debconf as a noninteractive first install sees it: every question has its template's
//! `Default:` (debconf-devel(7)), `db_set` changes the answer, `db_subst` fills a template's
//! `${variables}` (which `db_metaget` shows), and `db_input`/`db_go` ask nothing. The debconf
//! database itself (`/var/cache/debconf`) is not written.

use std::collections::BTreeMap;

use super::fsops;
use crate::tree::Tree;

#[derive(Debug, Default)]
pub struct Debconf {
    answers: BTreeMap<String, String>,
    /// Each template's fields by lower-case name (`type`, `choices`, `default`, ...).
    fields: BTreeMap<String, BTreeMap<String, String>>,
    substs: BTreeMap<String, BTreeMap<String, String>>,
    loaded: std::collections::BTreeSet<String>,
}

/// Each template's name and fields (deb822 paragraphs; continuation lines joined).
pub fn parse_templates(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut last: Option<String> = None;
        for l in para.lines() {
            if l.starts_with(' ') || l.starts_with('\t') {
                if let Some(k) = &last {
                    if let Some(v) = fields.get_mut(k) {
                        v.push('\n');
                        v.push_str(l.trim());
                    }
                }
                continue;
            }
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                fields.insert(k.clone(), v.trim().to_owned());
                last = Some(k);
            }
        }
        if let Some(n) = fields.get("template").cloned() {
            out.push((n, fields));
        }
    }
    out
}

impl Debconf {
    fn load(&mut self, tree: &Tree, package: &str) {
        if !self.loaded.insert(package.to_owned()) {
            return;
        }
        let path = format!("/var/lib/dpkg/info/{package}.templates");
        if let Some(t) = fsops::read_text(tree, &path) {
            for (q, f) in parse_templates(&t) {
                let d = f.get("default").cloned().unwrap_or_default();
                self.answers.entry(q.clone()).or_insert(d);
                self.fields.entry(q).or_insert(f);
            }
        }
    }

    /// Loads every installed package's templates (questions may be shared).
    pub fn load_all(&mut self, tree: &Tree, packages: &[String]) {
        for p in packages {
            self.load(tree, p);
        }
    }

    fn substituted(&self, q: &str, v: &str) -> String {
        let mut out = v.to_owned();
        if let Some(s) = self.substs.get(q) {
            for (k, val) in s {
                out = out.replace(&format!("${{{k}}}"), val);
            }
        }
        out
    }

    /// Runs a `db_*` command: (status, the value of `$RET`).
    pub fn run(&mut self, cmd: &str, args: &[&str]) -> (i32, String) {
        match cmd {
            "db_get" => match args.first().and_then(|q| self.answers.get(*q)) {
                Some(v) => (0, v.clone()),
                None => (10, format!("{} doesn't exist", args.first().unwrap_or(&""))),
            },
            "db_set" => {
                if let [q, v @ ..] = args {
                    self.answers.insert((*q).to_owned(), v.join(" "));
                }
                (0, "value set".into())
            }
            "db_subst" => {
                if let [q, k, v @ ..] = args {
                    self.substs
                        .entry((*q).to_owned())
                        .or_default()
                        .insert((*k).to_owned(), v.join(" "));
                }
                (0, String::new())
            }
            "db_metaget" => match args {
                [q, f] => match self
                    .fields
                    .get(*q)
                    .and_then(|m| m.get(&f.to_ascii_lowercase()))
                {
                    Some(v) => (0, self.substituted(q, v)),
                    None => (10, format!("{f} does not exist")),
                },
                _ => (20, "Incorrect usage".into()),
            },
            "db_fget" => (0, "false".into()),
            // Noninteractive: the question is not shown (debconf's status 30).
            "db_input" => (30, "question skipped".into()),
            _ => (0, String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn template_defaults_and_substitutions() {
        let t = "Template: a/b\nType: boolean\nDefault: true\nDescription: x\n\nTemplate: a/c\nType: multiselect\nChoices: ${list}\nDescription: y\n more\n";
        let ts = super::parse_templates(t);
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[1].1["description"], "y\nmore");
        let mut d = super::Debconf::default();
        for (q, f) in ts {
            d.answers
                .insert(q.clone(), f.get("default").cloned().unwrap_or_default());
            d.fields.insert(q, f);
        }
        assert_eq!(d.run("db_get", &["a/b"]), (0, "true".into()));
        assert_eq!(d.run("db_get", &["a/x"]).0, 10);
        d.run("db_set", &["a/b", "false"]);
        assert_eq!(d.run("db_get", &["a/b"]).1, "false");
        d.run("db_subst", &["a/c", "list", "x, y"]);
        assert_eq!(d.run("db_metaget", &["a/c", "choices"]).1, "x, y");
    }
}
