//! debconf as a noninteractive first install sees it: every question has its template's
//! `Default:` (debconf-devel(7)), `db_set` changes the answer, and `db_input`/`db_go` ask
//! nothing. The debconf database itself (`/var/cache/debconf`) is not written.

use std::collections::BTreeMap;

use super::fsops;
use crate::tree::Tree;

#[derive(Debug, Default)]
pub struct Debconf {
    answers: BTreeMap<String, String>,
    loaded: std::collections::BTreeSet<String>,
}

/// `(question, default)` pairs of a templates file (deb822 paragraphs).
pub fn parse_templates(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut default = String::new();
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("Template:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = l.strip_prefix("Default:") {
                default = v.trim().to_owned();
            }
        }
        if let Some(n) = name {
            out.push((n, default));
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
            for (q, d) in parse_templates(&t) {
                self.answers.entry(q).or_insert(d);
            }
        }
    }

    /// Loads every installed package's templates (questions may be shared).
    pub fn load_all(&mut self, tree: &Tree, packages: &[String]) {
        for p in packages {
            self.load(tree, p);
        }
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
    fn template_defaults() {
        let t = "Template: a/b\nType: boolean\nDefault: true\nDescription: x\n\nTemplate: a/c\nType: string\nDescription: y\n";
        assert_eq!(
            super::parse_templates(t),
            [
                ("a/b".to_owned(), "true".to_owned()),
                ("a/c".to_owned(), String::new())
            ]
        );
        let mut d = super::Debconf::default();
        d.answers.insert("a/b".into(), "true".into());
        assert_eq!(d.run("db_get", &["a/b"]), (0, "true".into()));
        assert_eq!(d.run("db_get", &["a/x"]).0, 10);
        d.run("db_set", &["a/b", "false"]);
        assert_eq!(d.run("db_get", &["a/b"]).1, "false");
    }
}
