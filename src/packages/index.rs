//! `Packages` indexes: deb822 paragraphs (Debian Policy §5.1, §5.3) parsed into [`Package`]s.

use std::collections::BTreeMap;

/// One control paragraph: field names as written (case kept), values with continuation lines
/// joined by `\n`, in file order.
pub type Paragraph = Vec<(String, String)>;

/// Splits deb822 text into paragraphs. Comment lines (`#`) are skipped.
pub fn paragraphs(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut cur: Paragraph = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A field's value, by case-insensitive name.
pub fn field<'a>(p: &'a Paragraph, name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One binary package in an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
    pub conflicts: String,
    pub breaks: String,
    pub essential: bool,
    pub priority: String,
    pub multi_arch: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    /// The source package name (without a version); the binary's name when absent.
    pub source: String,
    /// Index of the repository (in recipe order) that lists it.
    pub repo: usize,
}

/// Parses a `Packages` index; paragraphs without a name, version, filename or sha256 are errors.
pub fn parse_packages(text: &str, repo: usize) -> Result<Vec<Package>, String> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let get = |n: &str| field(&p, n).unwrap_or("").to_owned();
        let name = get("Package");
        let need = |n: &str| {
            field(&p, n)
                .map(str::to_owned)
                .ok_or_else(|| format!("package {name:?} has no {n} field"))
        };
        if name.is_empty() {
            return Err("a paragraph has no Package field".into());
        }
        let source = match field(&p, "Source") {
            Some(s) => s.split_whitespace().next().unwrap_or(&name).to_owned(),
            None => name.clone(),
        };
        let filename = need("Filename")?;
        let sha256 = need("SHA256")?.to_ascii_lowercase();
        super::names::check_sha256(&sha256)
            .and_then(|()| super::names::check_repo_path(&filename))
            .map_err(|e| format!("package {name:?}: {e}"))?;
        out.push(Package {
            version: need("Version")?,
            architecture: need("Architecture")?,
            filename,
            sha256,
            size: need("Size")?
                .parse()
                .map_err(|_| format!("package {name:?} has a Size that is not a number"))?,
            depends: get("Depends"),
            pre_depends: get("Pre-Depends"),
            provides: get("Provides"),
            conflicts: get("Conflicts"),
            breaks: get("Breaks"),
            essential: get("Essential").eq_ignore_ascii_case("yes"),
            priority: get("Priority"),
            multi_arch: get("Multi-Arch"),
            source,
            name,
            repo,
        });
    }
    Ok(out)
}

/// Fields of a paragraph as a map (for lookups that do not care about order).
pub fn to_map(p: &Paragraph) -> BTreeMap<String, String> {
    p.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paragraphs_and_continuations() {
        let (a, b) = ("AB".repeat(32), "cd".repeat(32));
        let t = format!(
            "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a.deb\nSHA256: {a}\nSize: 3\n\
             Description: x\n more\n .\n end\nSource: s (1.0)\n\n# c\nPackage: b\nVersion: 2\n\
             Architecture: amd64\nFilename: b.deb\nSHA256: {b}\nSize: 4\nEssential: yes\n"
        );
        let ps = parse_packages(&t, 0).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].source, "s");
        assert_eq!(ps[0].sha256, "ab".repeat(32));
        assert!(ps[1].essential);
        assert_eq!(ps[1].source, "b");
        let p = &paragraphs(&t)[0];
        assert_eq!(field(p, "description"), Some("x\n more\n .\n end"));
        assert!(parse_packages("Package: c\n", 0).is_err());
    }

    #[test]
    fn digests_and_file_names_that_name_paths_are_refused() {
        let ok = "ab".repeat(32);
        let stanza = |file: &str, sha: &str| {
            format!(
                "Package: a\nVersion: 1\nArchitecture: all\nFilename: {file}\nSHA256: {sha}\nSize: 3\n"
            )
        };
        assert!(parse_packages(&stanza("pool/a.deb", &ok), 0).is_ok());
        let e = parse_packages(&stanza("pool/a.deb", "../../x"), 0).unwrap_err();
        assert!(
            e.contains("package \"a\"") && e.contains("64 lower-case hex"),
            "{e}"
        );
        let e = parse_packages(&stanza("pool/../../a.deb", &ok), 0).unwrap_err();
        assert!(e.contains("\"..\" component"), "{e}");
    }
}
