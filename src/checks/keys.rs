//! The run's key pair: the one the metadata service serves as `public-keys/0/openssh-key` (so
//! cloud-init installs it for the default user) and the one kiln's SSH logins use. Either the
//! user's (`--ssh-key FILE.pub`, with its private key beside it or in the SSH agent), or a
//! throw-away ed25519 pair made by `ssh-keygen` in the run's private directory, which goes with
//! that directory when the run ends.

use super::command::{self, RunError};
use super::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The public key line (`ssh-ed25519 AAAA… comment`).
    pub public: String,
    /// What `ssh -i` gets: the private key, or the public key when the agent holds the private.
    pub identity: PathBuf,
    /// Whether the SSH agent is to be used (the user's key without its private file).
    pub agent: bool,
}

/// A fresh ed25519 key pair in `dir` (private, 0600 as ssh-keygen writes it).
pub fn throwaway(dir: &Path) -> Result<KeyPair, Error> {
    let private = dir.join("id_ed25519");
    let out = command::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
            .arg(&private),
        Instant::now() + Duration::from_secs(60),
    )
    .map_err(|e| match e {
        RunError::Spawn(source) if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Missing {
                program: "ssh-keygen",
                package: "openssh-client",
            }
        }
        RunError::Spawn(source) => Error::Key {
            path: private.clone(),
            why: source.to_string(),
        },
        RunError::TimedOut => Error::Key {
            path: private.clone(),
            why: "ssh-keygen did not finish within 60 s".into(),
        },
    })?;
    if out.status != Some(0) {
        return Err(Error::Key {
            path: private,
            why: format!("ssh-keygen failed: {}", out.stderr.trim()),
        });
    }
    let public = read_public(&dir.join("id_ed25519.pub"))?;
    Ok(KeyPair {
        public,
        identity: private,
        agent: false,
    })
}

/// The user's key: `FILE.pub`, and `FILE` beside it as the private key when it exists (else the
/// SSH agent must hold it).
pub fn given(public: &Path) -> Result<KeyPair, Error> {
    let line = read_public(public)?;
    let private = public
        .to_str()
        .and_then(|s| s.strip_suffix(".pub"))
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    Ok(match private {
        Some(p) => KeyPair {
            public: line,
            identity: p,
            agent: false,
        },
        None => KeyPair {
            public: line,
            identity: public.to_path_buf(),
            agent: true,
        },
    })
}

/// The first line of an OpenSSH public key file, checked for its shape (`type base64 [comment]`).
fn read_public(path: &Path) -> Result<String, Error> {
    let bad = |why: String| Error::Key {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    let mut f = line.split_whitespace();
    let ok = match (f.next(), f.next()) {
        (Some(t), Some(b)) => {
            (t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-"))
                && b.len() > 16
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
        }
        _ => false,
    };
    if !ok {
        return Err(bad(
            "not an OpenSSH public key (expected a line like \"ssh-ed25519 AAAA… comment\")".into(),
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_pair_and_a_given_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = throwaway(dir.path()).unwrap();
        assert!(k.public.starts_with("ssh-ed25519 AAAA"), "{}", k.public);
        assert!(k.public.ends_with(" kiln-test"));
        assert!(!k.agent);
        use std::os::unix::fs::PermissionsExt;
        let mode = k.identity.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is private");

        let g = given(&dir.path().join("id_ed25519.pub")).unwrap();
        assert_eq!(g.public, k.public);
        assert_eq!(g.identity, k.identity);
        std::fs::remove_file(&k.identity).unwrap();
        let g = given(&dir.path().join("id_ed25519.pub")).unwrap();
        assert!(g.agent, "no private key beside it: the agent's");

        std::fs::write(dir.path().join("bad.pub"), "hello world\n").unwrap();
        let e = given(&dir.path().join("bad.pub")).unwrap_err().to_string();
        assert!(e.contains("not an OpenSSH public key"), "{e}");
        assert!(given(&dir.path().join("missing.pub")).is_err());
    }
}
