//! Image references as `docker push` reads them: `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`. The first
//! component is a registry host when it has a `.` or a `:`, or is `localhost`; otherwise the image
//! is on Docker Hub (`registry-1.docker.io`, with `library/` before a one-component path).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (Docker Hub's API host for Hub images).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

pub const DOCKER_HUB: &str = "registry-1.docker.io";

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("image reference {s:?}: {why}");
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest is not sha256:<hex>"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad(
                        "the digest is not sha256: and 64 lower-case hex digits",
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        // A tag follows the last ':' after the last '/'.
        let last = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last..].rfind(':') {
            Some(i) => (
                path[..last + i].to_string(),
                Some(path[last + i + 1..].to_string()),
            ),
            None => (path, None),
        };
        if let Some(t) = &tag {
            if !crate::recipe::valid_tag(t) {
                return Err(bad(
                    "the tag may hold letters, digits, '_', '.' and '-' (at most 128)",
                ));
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if repository.is_empty() || !repository.split('/').all(component_ok) {
            return Err(bad("the repository must be lower-case letters, digits, '.', '_' and '-', in '/'-separated parts"));
        }
        let repository = match (host.as_str(), repository.contains('/')) {
            (DOCKER_HUB, false) => format!("library/{repository}"),
            _ => repository,
        };
        Ok(Reference {
            registry: host,
            repository,
            tag,
            digest,
        })
    }

    /// Plain HTTP is used for loopback registries (as Docker does), HTTPS everywhere else.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }

    /// The key of this registry in a Docker config file's `auths`.
    pub fn config_key(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB => "https://index.docker.io/v1/",
            r => r,
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_docker() {
        let r = Reference::parse("127.0.0.1:5000/kiln/web:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "kiln/web", Some("1.0"))
        );
        assert!(r.is_loopback());
        let r = Reference::parse("debian").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            (DOCKER_HUB, "library/debian")
        );
        assert_eq!(r.config_key(), "https://index.docker.io/v1/");
        let r = Reference::parse("localhost/a/b").unwrap();
        assert_eq!((r.registry.as_str(), r.tag), ("localhost", None));
        let s = format!("ghcr.io/o/i:v1@sha256:{}", "a".repeat(64));
        let r = Reference::parse(&s).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(!r.is_loopback());
        assert!(Reference::parse("Host.io/UPPER").is_err());
        assert!(Reference::parse("h.io/x:bad+tag").is_err());
        assert!(Reference::parse("h.io/x@sha256:abc").is_err());
    }
}
