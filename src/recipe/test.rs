//! `[[test]]`: the checks `kiln test` runs against the booted image (EC2 Image Builder's test
//! stage), each with a `name`, exactly one kind and an optional `timeout` (default "300s").
//!
//! ```toml
//! [[test]]
//! name = "web answers"
//! http = { port = 80, path = "/", status = 200, body = "Welcome" }   # body: a regex
//! [[test]]
//! name = "nginx active"
//! ssh = { user = "admin", command = "systemctl is-active nginx", status = 0, output = "^active" }
//! [[test]]
//! name = "no failed unit"
//! systemd = { state = "running", active = ["nginx.service", "ssh.service"] }
//! [[test]]
//! name = "sshd listens"
//! tcp = { port = 22 }
//! [[test]]
//! name = "kernel up"
//! console = "Linux version"
//! [[test]]
//! name = "survives a reboot"
//! reboot = true            # or { user = "..." }
//! ```
//! The validated [`Test`]s are recorded in the manifest (serde), so that `kiln test IMAGE` runs
//! the tests of the recipe that built the image.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::S;

/// The default `timeout`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The default login: the default user of Debian's EC2 images and of kiln's server recipes.
pub const DEFAULT_USER: &str = "admin";
/// What `systemctl is-system-running` can answer (systemctl(1)).
const SYSTEM_STATES: &[&str] = &[
    "initializing",
    "starting",
    "running",
    "degraded",
    "maintenance",
    "stopping",
    "offline",
];
/// Longest allowed timeout: a day.
const MAX_TIMEOUT_SECS: u64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    pub name: S,
    pub timeout: Option<Spanned<super::raw::Scalar>>,
    pub http: Option<Spanned<RawHttp>>,
    pub ssh: Option<Spanned<RawSsh>>,
    pub systemd: Option<Spanned<RawSystemd>>,
    pub tcp: Option<Spanned<RawTcp>>,
    pub console: Option<S>,
    pub reboot: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub port: Spanned<i64>,
    pub path: Option<S>,
    pub status: Option<Spanned<i64>>,
    pub body: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<S>,
    pub command: S,
    pub status: Option<Spanned<i64>>,
    pub output: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystemd {
    pub user: Option<S>,
    pub state: Option<S>,
    #[serde(default)]
    pub active: Vec<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub port: Spanned<i64>,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Test {
    pub name: String,
    /// Seconds the check waits for the guest before it fails.
    pub timeout: u64,
    #[serde(flatten)]
    pub kind: TestKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    Http(HttpTest),
    Ssh(SshTest),
    Systemd(SystemdTest),
    Tcp {
        port: u16,
    },
    /// Text that must appear on the serial console (since power-on, or since the reboot).
    Console(String),
    /// Reboot the guest, then run every other check again.
    Reboot {
        user: String,
    },
}

impl TestKind {
    /// The kind's key in the recipe.
    pub fn key(&self) -> &'static str {
        match self {
            TestKind::Http(_) => "http",
            TestKind::Ssh(_) => "ssh",
            TestKind::Systemd(_) => "systemd",
            TestKind::Tcp { .. } => "tcp",
            TestKind::Console(_) => "console",
            TestKind::Reboot { .. } => "reboot",
        }
    }

    /// Whether the check logs in over SSH.
    pub fn uses_ssh(&self) -> bool {
        matches!(
            self,
            TestKind::Ssh(_) | TestKind::Systemd(_) | TestKind::Reboot { .. }
        )
    }

    /// The guest TCP port the check reaches, if any.
    pub fn port(&self) -> Option<u16> {
        match self {
            TestKind::Http(h) => Some(h.port),
            TestKind::Tcp { port } => Some(*port),
            k if k.uses_ssh() => Some(22),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTest {
    pub port: u16,
    pub path: String,
    pub status: u16,
    /// A regex the body must match.
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshTest {
    pub user: String,
    pub command: String,
    pub status: u8,
    /// A regex the command's standard output must match.
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdTest {
    pub user: String,
    /// What `systemctl is-system-running` must say.
    pub state: String,
    /// Units that must be active.
    pub active: Vec<String>,
}

/// A compiled `body`/`output` regex: regex-automata's dense DFA (the regex crate's syntax, no
/// look-around; already in kiln's dependency tree through tracing-subscriber), searched anywhere
/// in the text unless anchored with `^`/`$` (`(?m)` makes them match at line ends). The checks
/// match it against the text without its final line ends, as a shell's `$(…)` gives it.
pub struct Pattern(regex_automata::dfa::regex::Regex);

/// A DFA bigger than this is refused (a pattern that would take seconds to build).
const MAX_DFA_BYTES: usize = 16 << 20;

impl Pattern {
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        use regex_automata::dfa::{dense, regex::Regex};
        let dfa = dense::Config::new()
            .dfa_size_limit(Some(MAX_DFA_BYTES))
            .determinize_size_limit(Some(MAX_DFA_BYTES))
            // Unicode \b: searches quit on non-ASCII text near one, reported as no match.
            .unicode_word_boundary(true);
        Regex::builder()
            .dense(dfa)
            .build(pattern)
            .map(Pattern)
            .map_err(|e| e.to_string().replace('\n', " "))
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0
            .try_search(&regex_automata::Input::new(text))
            .is_ok_and(|m| m.is_some())
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pattern")
    }
}

/// A unit name systemctl takes (`nginx.service`, `getty@tty1.service`, `nginx`), and nothing a
/// shell would treat specially.
fn unit_ok(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 256
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
        && !u.starts_with('-')
}

/// A login name as useradd accepts it (Debian's default NAME_REGEX, plus upper case).
fn user_ok(u: &str) -> bool {
    let b = u.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-' || *c == b'.')
}

impl Ctx<'_> {
    pub(super) fn tests(&self, raw: &[Spanned<RawTest>]) -> Result<Vec<Test>, RecipeError> {
        let mut tests: Vec<Test> = Vec::new();
        let mut reboot_seen = false;
        for t in raw {
            let r = t.get_ref();
            let name = self.s(&r.name)?;
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err(self.err(
                    &r.name,
                    K::Value,
                    format!("test name {name:?} is not allowed"),
                    "a non-empty name on one line",
                ));
            }
            if tests.iter().any(|x| x.name == name) {
                return Err(self.err(
                    &r.name,
                    K::Value,
                    format!("two tests are named {name:?}"),
                    "a name of its own for every [[test]]",
                ));
            }
            let kinds = [
                r.http.is_some(),
                r.ssh.is_some(),
                r.systemd.is_some(),
                r.tcp.is_some(),
                r.console.is_some(),
                r.reboot.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let one_kind = "exactly one of http, ssh, systemd, tcp, console, reboot";
            if kinds != 1 {
                return Err(self.err(
                    t,
                    K::Schema,
                    format!(
                        "test {name:?} has {}",
                        if kinds == 0 {
                            "no kind".to_string()
                        } else {
                            format!("{kinds} kinds")
                        }
                    ),
                    one_kind,
                ));
            }
            let timeout = match &r.timeout {
                None => DEFAULT_TIMEOUT_SECS,
                Some(v) => self.timeout(v)?,
            };
            let kind = if let Some(h) = &r.http {
                TestKind::Http(self.http(h)?)
            } else if let Some(s) = &r.ssh {
                TestKind::Ssh(self.ssh(s)?)
            } else if let Some(s) = &r.systemd {
                TestKind::Systemd(self.systemd(s)?)
            } else if let Some(p) = &r.tcp {
                TestKind::Tcp {
                    port: self.port(&p.get_ref().port)?,
                }
            } else if let Some(c) = &r.console {
                let text = self.s(c)?;
                if text.is_empty() || text.contains(['\n', '\r']) {
                    return Err(self.err(
                        c,
                        K::Value,
                        "console text must be one non-empty line",
                        "text that appears on one line of the serial console",
                    ));
                }
                TestKind::Console(text)
            } else {
                let v = r.reboot.as_ref().expect("one kind is present");
                if reboot_seen {
                    return Err(self.err(
                        v,
                        K::Value,
                        "a second reboot test",
                        "at most one [[test]] with reboot (it reboots, then runs every other test again)",
                    ));
                }
                reboot_seen = true;
                self.reboot(v)?
            };
            tests.push(Test {
                name,
                timeout,
                kind,
            });
        }
        Ok(tests)
    }

    fn timeout(&self, v: &Spanned<super::raw::Scalar>) -> Result<u64, RecipeError> {
        use super::raw::Scalar;
        let expected =
            "a duration such as \"300s\", \"5m\" or \"1h\" (or whole seconds), at most a day";
        let secs = match v.get_ref() {
            Scalar::Int(n) if *n > 0 => Some(*n as u64),
            Scalar::Int(_) => None,
            Scalar::Str(s) => {
                let s = s.trim();
                let (num, mult) = match s.chars().last() {
                    Some('s') => (&s[..s.len() - 1], 1),
                    Some('m') => (&s[..s.len() - 1], 60),
                    Some('h') => (&s[..s.len() - 1], 3600),
                    _ => (s, 1),
                };
                num.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .and_then(|n| n.checked_mul(mult))
            }
        };
        match secs {
            Some(s) if s <= MAX_TIMEOUT_SECS => Ok(s),
            _ => Err(self.err(
                v,
                K::Value,
                "the timeout is not a positive duration",
                expected,
            )),
        }
    }

    fn port(&self, v: &Spanned<i64>) -> Result<u16, RecipeError> {
        u16::try_from(*v.get_ref())
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                self.err(
                    v,
                    K::Value,
                    format!("port {} is out of range", v.get_ref()),
                    "a TCP port from 1 to 65535",
                )
            })
    }

    fn pattern(&self, v: &Option<S>, what: &str) -> Result<Option<String>, RecipeError> {
        let Some(v) = v else { return Ok(None) };
        let p = self.s(v)?;
        Pattern::new(&p).map_err(|e| {
            self.err(
                v,
                K::Value,
                format!("{what} is not a usable regex: {e}"),
                "a regex in the regex crate's syntax (no look-around), such as \"^active\"",
            )
        })?;
        Ok(Some(p))
    }

    fn user(&self, v: &Option<S>) -> Result<String, RecipeError> {
        let Some(v) = v else {
            return Ok(DEFAULT_USER.into());
        };
        let u = self.s(v)?;
        if !user_ok(&u) {
            return Err(self.err(
                v,
                K::Value,
                format!("user {u:?} is not a login name"),
                "a login name such as \"admin\"",
            ));
        }
        Ok(u)
    }

    fn http(&self, raw: &Spanned<RawHttp>) -> Result<HttpTest, RecipeError> {
        let r = raw.get_ref();
        let path = match &r.path {
            None => "/".to_string(),
            Some(p) => {
                let s = self.s(p)?;
                if !s.starts_with('/') || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(self.err(
                        p,
                        K::Value,
                        format!("http path {s:?} is not allowed"),
                        "a path starting with '/', without spaces (percent-encode them)",
                    ));
                }
                s
            }
        };
        let status = match &r.status {
            None => 200,
            Some(s) => u16::try_from(*s.get_ref())
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    self.err(
                        s,
                        K::Value,
                        format!("HTTP status {} is out of range", s.get_ref()),
                        "a status code from 100 to 599",
                    )
                })?,
        };
        Ok(HttpTest {
            port: self.port(&r.port)?,
            path,
            status,
            body: self.pattern(&r.body, "body")?,
        })
    }

    fn ssh(&self, raw: &Spanned<RawSsh>) -> Result<SshTest, RecipeError> {
        let r = raw.get_ref();
        let command = self.s(&r.command)?;
        if command.trim().is_empty() {
            return Err(self.err(
                &r.command,
                K::Value,
                "the ssh command is empty",
                "a shell command to run in the guest",
            ));
        }
        let status = match &r.status {
            None => 0,
            Some(s) => u8::try_from(*s.get_ref()).map_err(|_| {
                self.err(
                    s,
                    K::Value,
                    format!("exit status {} is out of range", s.get_ref()),
                    "an exit status from 0 to 255",
                )
            })?,
        };
        Ok(SshTest {
            user: self.user(&r.user)?,
            command,
            status,
            output: self.pattern(&r.output, "output")?,
        })
    }

    fn systemd(&self, raw: &Spanned<RawSystemd>) -> Result<SystemdTest, RecipeError> {
        let r = raw.get_ref();
        let state = match &r.state {
            None => "running".to_string(),
            Some(s) => {
                let v = self.s(s)?;
                if !SYSTEM_STATES.contains(&v.as_str()) {
                    return Err(self.err(
                        s,
                        K::Value,
                        format!("unknown system state {v:?}"),
                        format!("one of {}", SYSTEM_STATES.join(", ")),
                    ));
                }
                v
            }
        };
        let mut active = Vec::new();
        for u in &r.active {
            let name = self.s(u)?;
            if !unit_ok(&name) {
                return Err(self.err(
                    u,
                    K::Value,
                    format!("{name:?} is not a unit name"),
                    "a systemd unit name such as \"nginx.service\"",
                ));
            }
            active.push(name);
        }
        Ok(SystemdTest {
            user: self.user(&r.user)?,
            state,
            active,
        })
    }

    fn reboot(&self, v: &Spanned<toml::Value>) -> Result<TestKind, RecipeError> {
        let expected = "reboot = true, or reboot = { user = \"...\" }";
        match v.get_ref() {
            toml::Value::Boolean(true) => Ok(TestKind::Reboot {
                user: DEFAULT_USER.into(),
            }),
            toml::Value::Table(t) if t.keys().all(|k| k == "user") => {
                let user = match t.get("user") {
                    None => DEFAULT_USER.to_string(),
                    Some(toml::Value::String(u)) => {
                        let u = self.expand_at(u, v.span())?;
                        if !user_ok(&u) {
                            return Err(self.err(
                                v,
                                K::Value,
                                format!("user {u:?} is not a login name"),
                                expected,
                            ));
                        }
                        u
                    }
                    Some(_) => {
                        return Err(self.err(v, K::Schema, "user is not a string", expected))
                    }
                };
                Ok(TestKind::Reboot { user })
            }
            toml::Value::Boolean(false) => Err(self.err(
                v,
                K::Value,
                "reboot = false is not a test",
                "reboot = true (or remove the [[test]])",
            )),
            _ => Err(self.err(v, K::Schema, "reboot has an unknown form", expected)),
        }
    }
}

/// What `kiln test IMAGE` needs of the recipe that built the image, recorded in its manifest:
/// the tests and the machine an instance of the AMI would be.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TestPlan {
    #[serde(default)]
    pub tests: Vec<Test>,
    /// `[ami] volume_size` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<u64>,
    /// `[ami] imds_support = "v2.0"`: token-less metadata requests are refused.
    #[serde(default)]
    pub imdsv2_required: bool,
    /// The first of `[ami] regions` (where the instance would run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_name: Option<String>,
}

impl super::Recipe {
    /// The tests and the AMI's machine, or None when the recipe has neither `[[test]]` nor
    /// `[ami]`.
    pub fn test_plan(&self) -> Option<TestPlan> {
        if self.tests.is_empty() && self.ami.is_none() {
            return None;
        }
        let ami = self.ami.as_ref();
        Some(TestPlan {
            tests: self.tests.clone(),
            volume_size: ami.map(|a| a.volume_size_gib as u64 * super::GIB),
            imdsv2_required: ami.is_some_and(|a| a.imds_support.as_deref() == Some("v2.0")),
            region: ami.and_then(|a| a.regions.first().cloned()),
            root_device_name: ami.map(|a| a.root_device_name.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_anywhere_unless_anchored() {
        let p = Pattern::new("^active").unwrap();
        assert!(p.is_match("active\n"));
        assert!(!p.is_match("inactive\n"));
        assert!(Pattern::new("Welcome")
            .unwrap()
            .is_match("<h1>Welcome to nginx</h1>"));
        assert!(Pattern::new("(?m)^two$")
            .unwrap()
            .is_match("one\ntwo\nthree"));
        assert!(Pattern::new("(unclosed").is_err());
        assert!(
            Pattern::new("a{100000}").is_err(),
            "too large a DFA is refused"
        );
    }

    #[test]
    fn names() {
        assert!(unit_ok("nginx.service") && unit_ok("getty@tty1.service") && unit_ok("nginx"));
        assert!(!unit_ok("a b") && !unit_ok("x;reboot") && !unit_ok("-f") && !unit_ok(""));
        assert!(user_ok("admin") && user_ok("ec2-user") && user_ok("_x"));
        assert!(!user_ok("1x") && !user_ok("a b") && !user_ok("a;b") && !user_ok(""));
    }

    #[test]
    fn the_manifest_form_is_the_recipe_form() {
        let t = Test {
            name: "web".into(),
            timeout: 300,
            kind: TestKind::Http(HttpTest {
                port: 80,
                path: "/".into(),
                status: 200,
                body: Some("Welcome".into()),
            }),
        };
        let j = serde_json::to_value(&t).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "web", "timeout": 300,
                "http": {"port": 80, "path": "/", "status": 200, "body": "Welcome"}})
        );
        assert_eq!(serde_json::from_value::<Test>(j).unwrap(), t);
        let c = Test {
            name: "k".into(),
            timeout: 5,
            kind: TestKind::Console("Linux version".into()),
        };
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["console"], "Linux version");
        assert_eq!(serde_json::from_value::<Test>(j).unwrap(), c);
    }
}
