//! `uri = "host"`: the first source in this machine's APT configuration that serves the suite.
//!
//! APT reads `sources.list.d/*.sources` (deb822, `sources.list(5)` "DEB822-STYLE FORMAT") and
//! `sources.list` plus `sources.list.d/*.list` (one-line style). Files APT itself ignores (other
//! extensions, such as `*.disabled-*`) are ignored here too. Files are read in sorted order.

use std::path::{Path, PathBuf};

use super::error::{PackageError, Result};
use super::index::{field, paragraphs};

/// One `deb` source: a base URI and the suites it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub file: PathBuf,
}

/// Every `deb` source under `apt_dir` (normally `/etc/apt`), in APT's reading order.
pub fn host_sources(apt_dir: &Path) -> Vec<Source> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        files.extend(names);
    }
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822(&text, &f)),
            Some("list") => out.extend(parse_one_line(&text, &f)),
            _ => {}
        }
    }
    out
}

/// The base URI of the first source serving `suite`.
pub fn host_uri(apt_dir: &Path, suite: &str) -> Result<String> {
    host_sources(apt_dir)
        .into_iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .map(|s| s.uri)
        .ok_or_else(|| PackageError::NoHostSource {
            suite: suite.to_owned(),
            looked: format!(
                "{0}/sources.list and {0}/sources.list.d/",
                apt_dir.display()
            ),
        })
}

/// The `deb` sources of one deb822 `.sources` file.
pub fn parse_deb822(text: &str, file: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let words = |n: &str| -> Vec<String> {
            field(&p, n)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        if !words("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if field(&p, "Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        for uri in words("URIs") {
            out.push(Source {
                uri,
                suites: words("Suites"),
                components: words("Components"),
                file: file.to_owned(),
            });
        }
    }
    out
}

/// The `deb` sources of one one-line-style `.list` file.
pub fn parse_one_line(text: &str, file: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        {
            Some(r) => r.trim_start(),
            None => continue,
        };
        // Options: `deb [arch=amd64 signed-by=...] uri suite comps`.
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(i) => rest = rest[i + 1..].trim_start(),
                None => continue,
            }
        }
        let mut w = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (w.next(), w.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.to_owned(),
            suites: vec![suite.to_owned()],
            components: w.map(str::to_owned).collect(),
            file: file.to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_one_line_and_ignored_files() {
        let d = tempfile::tempdir().unwrap();
        let sl = d.path().join("sources.list.d");
        std::fs::create_dir(&sl).unwrap();
        std::fs::write(
            d.path().join("sources.list"),
            "# x\ndeb-src http://a/src bookworm main\ndeb [arch=amd64] http://one/debian trixie main\n",
        )
        .unwrap();
        std::fs::write(
            sl.join("b.sources"),
            "Types: deb deb-src\nURIs: http://two/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://three/debian\nSuites: sid\nEnabled: no\n",
        )
        .unwrap();
        std::fs::write(sl.join("c.list.disabled-by-x"), "deb http://bad sid main\n").unwrap();
        assert_eq!(host_uri(d.path(), "trixie").unwrap(), "http://one/debian");
        assert_eq!(host_uri(d.path(), "bookworm").unwrap(), "http://two/debian");
        let e = host_uri(d.path(), "sid").unwrap_err().to_string();
        assert!(e.contains("\"sid\""), "{e}");
    }
}
