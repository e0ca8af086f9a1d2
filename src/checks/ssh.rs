//! Logging in to the guest with the system's OpenSSH client (see the README for why not a crate),
//! with host keys checked for real.
//!
//! An image carries no SSH host key: the guest makes its keys on first boot. kiln keeps them in
//! a known_hosts file of the run (under the alias `kiln-guest`, so that the forwarded port does
//! not matter), and from then on every login checks them strictly, across the reboot too:
//! - when cloud-init has printed them on the serial console (its `keys_to_console` block, what
//!   EC2's "get console output" shows), kiln takes them from there, before any login;
//! - otherwise the first login records the key it is offered (trust on first use), and when the
//!   console block appears later, the recorded key must be in it.

use super::command::{self, RunError};
use super::keys::KeyPair;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The name the guest's keys are recorded under.
pub const HOST_ALIAS: &str = "kiln-guest";
/// One login attempt's limit (TCG guests can be slow to answer a key exchange).
const ATTEMPT: Duration = Duration::from_secs(120);
const BEGIN_KEYS: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const END_KEYS: &str = "-----END SSH HOST KEY KEYS-----";

/// Where the guest's host keys came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeys {
    /// Not known yet.
    Unknown,
    /// cloud-init's block on the serial console.
    Console,
    /// The first login (trust on first use), not (yet) confirmed by the console.
    FirstLogin,
    /// The first login, then found in cloud-init's console block.
    FirstLoginConfirmed,
}

/// Why a login did not run the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No SSH server answered, or the connection broke (the guest may still be booting).
    Unreachable(String),
    /// The server refused the key (cloud-init may not have installed it yet).
    Refused(String),
    /// The guest's host key is not the one recorded: never retried.
    HostKeyChanged(String),
    TimedOut,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(s) => write!(f, "no SSH login: {s}"),
            Failure::Refused(s) => write!(f, "the guest refused the key pair: {s}"),
            Failure::HostKeyChanged(s) => write!(f, "the guest's SSH host key changed: {s}"),
            Failure::TimedOut => write!(f, "the SSH login did not finish in time"),
        }
    }
}

/// A finished remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct Ssh {
    program: PathBuf,
    key: KeyPair,
    known_hosts: PathBuf,
    port: u16,
    keys: HostKeys,
    /// When a login first succeeded.
    pub first_login: Option<Instant>,
}

impl Ssh {
    /// `dir`: the run's private directory (for known_hosts).
    pub fn new(program: &Path, key: KeyPair, dir: &Path, port: u16) -> Ssh {
        Ssh {
            program: program.to_path_buf(),
            key,
            known_hosts: dir.join("known_hosts"),
            port,
            keys: HostKeys::Unknown,
            first_login: None,
        }
    }

    pub fn host_keys(&self) -> HostKeys {
        self.keys
    }

    /// The console lines since power-on: takes the guest's keys from cloud-init's block before
    /// the first login, or checks the key the first login recorded against it.
    pub fn learn_from_console(&mut self, lines: &[String]) -> Result<(), Failure> {
        let Some(console_keys) = console_host_keys(lines) else {
            return Ok(());
        };
        match self.keys {
            HostKeys::Unknown => {
                let text: String = console_keys
                    .iter()
                    .map(|k| format!("{HOST_ALIAS} {k}\n"))
                    .collect();
                std::fs::write(&self.known_hosts, text)
                    .map_err(|e| Failure::Unreachable(format!("cannot write known_hosts: {e}")))?;
                self.keys = HostKeys::Console;
            }
            HostKeys::FirstLogin => {
                let recorded = std::fs::read_to_string(&self.known_hosts).unwrap_or_default();
                for line in recorded.lines() {
                    let key: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
                    let key = key.join(" ");
                    if !key.is_empty() && !console_keys.iter().any(|c| c.starts_with(&key)) {
                        return Err(Failure::HostKeyChanged(format!(
                            "the first login was offered {key}, which is not among the keys cloud-init printed on the console"
                        )));
                    }
                }
                self.keys = HostKeys::FirstLoginConfirmed;
            }
            HostKeys::Console | HostKeys::FirstLoginConfirmed => {}
        }
        Ok(())
    }

    fn command(&self, user: &str, remote: &str, connect_timeout: u64) -> Command {
        let mut c = Command::new(&self.program);
        let strict = if self.keys == HostKeys::Unknown {
            "accept-new"
        } else {
            "yes"
        };
        c.args(["-F", "/dev/null", "-T", "-p"])
            .arg(self.port.to_string())
            .arg("-i")
            .arg(&self.key.identity)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                &format!("HostKeyAlias={HOST_ALIAS}"),
                "-o",
                &format!("StrictHostKeyChecking={strict}"),
                "-o",
                "CheckHostIP=no",
                "-o",
                "UpdateHostKeys=no",
                "-o",
                &format!("ConnectTimeout={connect_timeout}"),
                "-o",
                "ServerAliveInterval=10",
                "-o",
                "ServerAliveCountMax=6",
                "-o",
                "LogLevel=ERROR",
            ]);
        if !self.key.agent {
            c.args(["-o", "IdentityAgent=none"]);
        }
        c.arg(format!("{user}@127.0.0.1")).arg("--").arg(remote);
        c
    }

    /// Runs `remote` as `user`, giving up at `deadline`.
    pub fn run(&mut self, user: &str, remote: &str, deadline: Instant) -> Result<Remote, Failure> {
        let end = deadline.min(Instant::now() + ATTEMPT);
        let left = end
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let out = match command::run(&mut self.command(user, remote, left.min(60)), end) {
            Ok(o) => o,
            Err(RunError::TimedOut) => return Err(Failure::TimedOut),
            Err(RunError::Spawn(e)) => {
                return Err(Failure::Unreachable(format!(
                    "cannot run {}: {e}",
                    self.program.display()
                )))
            }
        };
        let status = out.status.unwrap_or(255);
        if status == 255 {
            if let Some(f) = classify(&out.stderr) {
                return Err(f);
            }
        }
        if self.first_login.is_none() {
            self.first_login = Some(Instant::now());
        }
        if self.keys == HostKeys::Unknown {
            self.keys = HostKeys::FirstLogin;
        }
        Ok(Remote {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// An ssh exit 255 is ssh's own failure when it said so; otherwise the remote command's status.
fn classify(stderr: &str) -> Option<Failure> {
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key verification failed")
        || stderr.contains("No matching host key")
    {
        let why = if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            "it is not the key recorded earlier in this run".to_string()
        } else {
            last
        };
        return Some(Failure::HostKeyChanged(why));
    }
    if stderr.contains("Permission denied") || stderr.contains("Too many authentication failures") {
        return Some(Failure::Refused(last));
    }
    let ssh_said = [
        "ssh: ",
        "kex_exchange_identification",
        "Connection closed",
        "Connection reset",
        "Connection refused",
        "Connection timed out",
        "banner exchange",
        "Broken pipe",
        "timed out",
        "port 22",
        "127.0.0.1 port",
        "Bad owner or permissions",
        "Load key",
        "Warning: Identity file",
    ];
    ssh_said
        .iter()
        .any(|s| stderr.contains(s))
        .then_some(Failure::Unreachable(last))
}

/// The public keys in cloud-init's `keys_to_console` block (`type base64 [comment]`), if the
/// console has shown a complete one.
pub fn console_host_keys(lines: &[String]) -> Option<Vec<String>> {
    let start = lines.iter().rposition(|l| l.contains(BEGIN_KEYS))?;
    let end = start + lines[start..].iter().position(|l| l.contains(END_KEYS))?;
    let keys: Vec<String> = lines[start + 1..end]
        .iter()
        .filter_map(|l| {
            // The kernel may prefix console lines; the key starts at its type.
            let at = ["ssh-", "ecdsa-", "sk-"]
                .iter()
                .filter_map(|t| l.find(t))
                .min()?;
            let f: Vec<&str> = l[at..].split_whitespace().take(2).collect();
            (f.len() == 2).then(|| f.join(" "))
        })
        .collect();
    (!keys.is_empty()).then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_failures_are_told_apart_from_a_remote_exit_255() {
        assert!(matches!(
            classify("kex_exchange_identification: read: Connection reset by peer\r\nConnection reset by 127.0.0.1 port 40000\r\n"),
            Some(Failure::Unreachable(l)) if l == "Connection reset by 127.0.0.1 port 40000"
        ));
        assert!(matches!(
            classify("admin@127.0.0.1: Permission denied (publickey).\n"),
            Some(Failure::Refused(_))
        ));
        assert!(matches!(
            classify("@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed.\n"),
            Some(Failure::HostKeyChanged(_))
        ));
        assert_eq!(classify(""), None, "exit 255 from the command itself");
        assert_eq!(classify("my script failed\n"), None);
    }

    #[test]
    fn cloud_inits_console_block_gives_the_keys() {
        let lines: Vec<String> = [
            "[   40.1] cloud-init[612]: Cloud-init v. 22.4.2 finished",
            "-----BEGIN SSH HOST KEY KEYS-----",
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= root@ip-169-254-0-15",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB root@ip-169-254-0-15",
            "-----END SSH HOST KEY KEYS-----",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            console_host_keys(&lines).unwrap(),
            vec![
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"
            ]
        );
        assert_eq!(console_host_keys(&lines[..4]), None, "an unfinished block");
    }

    #[test]
    fn a_first_login_key_missing_from_the_console_is_a_changed_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair {
            public: "ssh-ed25519 AAAA x".into(),
            identity: dir.path().join("id"),
            agent: false,
        };
        let mut s = Ssh::new(Path::new("ssh"), key, dir.path(), 2222);
        std::fs::write(
            dir.path().join("known_hosts"),
            "kiln-guest ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n",
        )
        .unwrap();
        s.keys = HostKeys::FirstLogin;
        let console: Vec<String> = [
            BEGIN_KEYS,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB r",
            END_KEYS,
        ]
        .map(String::from)
        .to_vec();
        assert!(matches!(
            s.learn_from_console(&console),
            Err(Failure::HostKeyChanged(_))
        ));
        let console: Vec<String> = [
            BEGIN_KEYS,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA r",
            END_KEYS,
        ]
        .map(String::from)
        .to_vec();
        s.learn_from_console(&console).unwrap();
        assert_eq!(s.host_keys(), HostKeys::FirstLoginConfirmed);

        // Before any login, the console's keys become the known hosts.
        let mut s = Ssh::new(
            Path::new("ssh"),
            KeyPair {
                public: String::new(),
                identity: dir.path().join("id"),
                agent: false,
            },
            dir.path(),
            2222,
        );
        s.learn_from_console(&console).unwrap();
        assert_eq!(s.host_keys(), HostKeys::Console);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("known_hosts")).unwrap(),
            "kiln-guest ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n"
        );
        let args: Vec<String> = s
            .command("admin", "true", 10)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.contains(&"StrictHostKeyChecking=yes".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"IdentityAgent=none".to_string()));
        assert_eq!(args[args.len() - 3..], ["admin@127.0.0.1", "--", "true"]);
    }
}
