//! Registry credentials and the distribution spec's authentication: credentials come from
//! `--username`/`--password-stdin` or from the Docker config file (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`: `auths` entries, `credHelpers` and `credsStore` through the
//! `docker-credential-*` helper protocol); a registry's `WWW-Authenticate` challenge says whether
//! to send them as HTTP Basic or to trade them for a Bearer token at its token service.

use base64::Engine;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The Docker config file kiln reads: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

#[derive(Debug, Default, serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// `https://host/v1/` and `host` name the same registry in `auths`.
fn normalize(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials for `registry` (a `Reference::config_key`) in the Docker config at `path`;
/// `Ok(None)` when the file or an entry for the registry is absent.
pub fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Credentials>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let cfg: DockerConfig =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let want = normalize(registry);
    if let Some(helper) = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize(k) == want)
        .map(|(_, v)| v)
    {
        return credential_helper(helper, registry).map(Some);
    }
    let entry = cfg.auths.iter().find(|(k, _)| normalize(k) == want);
    match entry {
        Some((_, e)) => {
            if e.identitytoken.is_some() {
                return Err(format!(
                    "{}: the entry for {registry} holds an identity token, which kiln does not \
                     support; use --username and --password-stdin",
                    path.display()
                ));
            }
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Some(Credentials {
                    username: u.clone(),
                    password: p.clone(),
                }));
            }
            let Some(auth) = &e.auth else { return Ok(None) };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| {
                    format!(
                        "{}: the auth for {registry} is not base64: {e}",
                        path.display()
                    )
                })?;
            let raw = String::from_utf8(raw)
                .map_err(|_| format!("{}: the auth for {registry} is not UTF-8", path.display()))?;
            let (u, p) = raw.split_once(':').ok_or_else(|| {
                format!(
                    "{}: the auth for {registry} is not base64 of user:password",
                    path.display()
                )
            })?;
            Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }))
        }
        None => match &cfg.creds_store {
            Some(store) => credential_helper(store, registry).map(Some),
            None => Ok(None),
        },
    }
}

/// `docker-credential-<helper> get`, with the server on stdin and `{"Username", "Secret"}` on
/// stdout (the docker-credential-helpers protocol).
fn credential_helper(helper: &str, registry: &str) -> Result<Credentials, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program} (the Docker config names it): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} get {registry}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{program} answered: {e}"))?;
    Ok(Credentials {
        username: a.username,
        password: a.secret,
    })
}

/// A `WWW-Authenticate` challenge (RFC 7235), as registries send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, params) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut map = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        let (v, after) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (q[..end].to_string(), &q[end + 1..])
            }
            None => match after.find(',') {
                Some(i) => (after[..i].trim().to_string(), &after[i..]),
                None => (after.trim().to_string(), ""),
            },
        };
        map.insert(k, v);
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: map.remove("realm")?,
        service: map.remove("service"),
        scope: map.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("registry.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Digest x=1"), None);
    }

    #[test]
    fn docker_config_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://127.0.0.1:5000/v1/":{{"auth":"{auth}"}},"other.io":{{"username":"a","password":"b"}}}}}}"#),
        )
        .unwrap();
        let c = from_docker_config(&p, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let c = from_docker_config(&p, "other.io").unwrap().unwrap();
        assert_eq!(c.username, "a");
        assert_eq!(from_docker_config(&p, "none.io").unwrap(), None);
        assert_eq!(
            from_docker_config(&dir.path().join("absent"), "x").unwrap(),
            None
        );
        assert!(format!("{c:?}").contains("hidden"));
    }
}
