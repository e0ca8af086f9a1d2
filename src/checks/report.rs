//! What a run found, and its three renderings: a table for people, JSON for CI, and JUnit XML
//! (the format GitHub Actions' and GitLab's test reports read).

use super::ssh::HostKeys;
use crate::imds::Stats;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The console lines a table shows under a failure (JSON and JUnit carry all of the tail).
const TABLE_TAIL: usize = 15;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// The check's kind: http, ssh, systemd, tcp, console, reboot.
    pub kind: &'static str,
    /// Run again after the reboot test.
    pub after_reboot: bool,
    pub passed: bool,
    /// How long the check took.
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The console's last lines, on failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub console_tail: Vec<String>,
}

impl CheckResult {
    /// The name as reported: "(after reboot)" marks the second run.
    pub fn display_name(&self) -> String {
        if self.after_reboot {
            format!("{} (after reboot)", self.name)
        } else {
            self.name.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub passed: bool,
    pub results: Vec<CheckResult>,
    /// Seconds from power-on to the first SSH login.
    pub first_ssh_login: Option<f64>,
    /// Seconds from the reboot's reset to the first SSH login after it.
    pub first_ssh_login_after_reboot: Option<f64>,
    /// Seconds from power-on to the end of the last check.
    pub seconds: f64,
    /// What the guest asked of the metadata service.
    pub imds: Option<Stats>,
    pub imdsv2_required: bool,
    /// Where the guest's SSH host keys came from.
    pub host_keys: Option<HostKeys>,
    /// "kvm" or "tcg".
    pub accel: &'static str,
    /// The volume the guest saw, in bytes.
    pub volume_size: u64,
    pub instance_id: Option<String>,
    /// Each forwarded guest port and the host port (on 127.0.0.1) it was reachable at.
    pub ports: Vec<ForwardedPort>,
    pub console_log: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardedPort {
    pub guest: u16,
    pub host: u16,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The summary lines under the table (and for a log).
    pub fn summary(&self) -> Vec<String> {
        let mut v = Vec::new();
        let n = self.results.len();
        v.push(format!(
            "{}: {} of {n} checks passed in {:.1} s ({}, {} GiB volume{})",
            if self.passed { "PASS" } else { "FAIL" },
            n - self.failed(),
            self.seconds,
            self.accel.to_uppercase(),
            self.volume_size as f64 / (1u64 << 30) as f64,
            self.instance_id
                .as_deref()
                .map(|i| format!(", instance {i}"))
                .unwrap_or_default()
        ));
        match self.first_ssh_login {
            Some(s) => {
                let mut l = format!("first SSH login {s:.1} s after power-on");
                if let Some(r) = self.first_ssh_login_after_reboot {
                    let _ = write!(l, ", {r:.1} s after the reboot");
                }
                if let Some(k) = self.host_keys {
                    let _ = write!(
                        l,
                        "; host keys {}",
                        match k {
                            HostKeys::Console => "from the console (cloud-init), checked on every login",
                            HostKeys::FirstLogin => "recorded at the first login, checked on every later one",
                            HostKeys::FirstLoginConfirmed =>
                                "recorded at the first login, confirmed by the console, checked on every later one",
                            HostKeys::Unknown => "unknown",
                        }
                    );
                }
                v.push(l);
            }
            None if self.host_keys.is_some() => v.push("no SSH login succeeded".into()),
            None => {}
        }
        if let Some(s) = &self.imds {
            v.push(format!(
                "metadata service: {} requests, {} without a token{}, {} tokens issued",
                s.requests,
                s.tokenless,
                if self.imdsv2_required {
                    format!(" (refused: IMDSv2 required), {} refused in all", s.refused)
                } else if s.refused > 0 {
                    format!(", {} refused (bad or expired token)", s.refused)
                } else {
                    String::new()
                },
                s.tokens_issued
            ));
        }
        if let Some(l) = &self.console_log {
            v.push(format!("console log: {}", l.display()));
        }
        v
    }

    /// A table: one row per check, then the failures' reasons and console lines, then the
    /// summary.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.display_name(),
                    r.kind.to_string(),
                    if r.passed { "pass" } else { "FAIL" }.to_string(),
                    format!("{:.1} s", r.seconds),
                ]
            })
            .collect();
        let head = ["CHECK", "KIND", "RESULT", "TIME"];
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: [&str; 4], out: &mut String| {
            let _ = writeln!(
                out,
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            );
        };
        line(head, &mut out);
        for r in &rows {
            line([&r[0], &r[1], &r[2], &r[3]], &mut out);
        }
        for r in self.results.iter().filter(|r| !r.passed) {
            let _ = writeln!(
                out,
                "\n{}: {}",
                r.display_name(),
                r.reason.as_deref().unwrap_or("failed")
            );
            let tail = &r.console_tail[r.console_tail.len().saturating_sub(TABLE_TAIL)..];
            if !tail.is_empty() {
                let _ = writeln!(out, "  last {} console lines:", tail.len());
                for l in tail {
                    let _ = writeln!(out, "  | {l}");
                }
            }
        }
        out.push('\n');
        for l in self.summary() {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }

    /// JUnit XML: one testsuite (the image), one testcase per check; a failure's message is its
    /// reason and its text the console's last lines.
    pub fn junit(&self) -> String {
        let name = self.image.display().to_string();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"kiln test\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{:.1}\">",
            self.results.len(),
            self.failed(),
            self.seconds
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{:.1}\">",
            xml(&name),
            self.results.len(),
            self.failed(),
            self.seconds
        );
        out.push_str("    <properties>\n");
        let mut prop = |k: &str, v: String| {
            let _ = writeln!(
                out,
                "      <property name=\"{}\" value=\"{}\"/>",
                xml(k),
                xml(&v)
            );
        };
        prop("accel", self.accel.into());
        if let Some(s) = self.first_ssh_login {
            prop("first_ssh_login_seconds", format!("{s:.1}"));
        }
        if let Some(s) = &self.imds {
            prop("imds_requests", s.requests.to_string());
            prop("imds_tokenless_requests", s.tokenless.to_string());
        }
        out.push_str("    </properties>\n");
        for r in &self.results {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"kiln.{}\" time=\"{:.1}\"",
                xml(&r.display_name()),
                r.kind,
                r.seconds
            );
            if r.passed {
                out.push_str("/>\n");
                continue;
            }
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                xml(r.reason.as_deref().unwrap_or("failed")),
                r.kind,
                xml(&r.console_tail.join("\n"))
            );
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// Text escaped for XML 1.0 attribute and element content; characters XML 1.0 cannot carry
/// at all (most C0 controls) become U+FFFD.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' | '\r' => o.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            image: "out/web<1>.raw".into(),
            passed: false,
            results: vec![
                CheckResult {
                    name: "web answers".into(),
                    kind: "http",
                    after_reboot: false,
                    passed: true,
                    seconds: 80.25,
                    reason: None,
                    console_tail: vec![],
                },
                CheckResult {
                    name: "nginx & co".into(),
                    kind: "systemd",
                    after_reboot: true,
                    passed: false,
                    seconds: 3.0,
                    reason: Some(
                        "the system is degraded, not running; failed units: nginx.service".into(),
                    ),
                    console_tail: vec!["[  OK  ] ok".into(), "bad \u{1} byte".into()],
                },
            ],
            first_ssh_login: Some(71.5),
            first_ssh_login_after_reboot: Some(30.0),
            seconds: 140.0,
            imds: Some(Stats {
                requests: 60,
                tokens_issued: 3,
                tokenless: 1,
                refused: 1,
            }),
            imdsv2_required: true,
            host_keys: Some(HostKeys::Console),
            accel: "tcg",
            volume_size: 4 << 30,
            instance_id: Some("i-0123".into()),
            ports: vec![ForwardedPort {
                guest: 22,
                host: 40000,
            }],
            console_log: Some("out/web.console.log".into()),
        }
    }

    #[test]
    fn the_table_names_each_check_and_the_failures_reason() {
        let t = report().table();
        assert!(t.starts_with("CHECK "), "{t}");
        assert!(
            t.contains("web answers                http     pass    80.2 s\n"),
            "{t}"
        );
        assert!(
            t.contains("nginx & co (after reboot)  systemd  FAIL"),
            "{t}"
        );
        assert!(
            t.contains("\nnginx & co (after reboot): the system is degraded"),
            "{t}"
        );
        assert!(t.contains("  | [  OK  ] ok"), "{t}");
        assert!(
            t.contains(
                "FAIL: 1 of 2 checks passed in 140.0 s (TCG, 4 GiB volume, instance i-0123)"
            ),
            "{t}"
        );
        assert!(
            t.contains("first SSH login 71.5 s after power-on, 30.0 s after the reboot"),
            "{t}"
        );
        assert!(
            t.contains("60 requests, 1 without a token (refused: IMDSv2 required)"),
            "{t}"
        );
    }

    #[test]
    fn junit_is_escaped_and_counts_failures() {
        let x = report().junit();
        assert!(
            x.contains("<testsuite name=\"out/web&lt;1&gt;.raw\" tests=\"2\" failures=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<testcase name=\"web answers\" classname=\"kiln.http\" time=\"80.2\"/>"),
            "{x}"
        );
        assert!(x.contains("name=\"nginx &amp; co (after reboot)\""), "{x}");
        assert!(x.contains("bad \u{fffd} byte"), "{x}");
        assert!(!x.contains('\u{1}'));
    }

    #[test]
    fn json_carries_everything() {
        let v: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(
            v["results"][1]["reason"]
                .as_str()
                .unwrap()
                .split(';')
                .next(),
            Some("the system is degraded, not running")
        );
        assert_eq!(v["results"][0].get("reason"), None);
        assert_eq!(v["imds"]["tokenless"], 1);
        assert_eq!(v["host_keys"], "console");
        assert_eq!(v["first_ssh_login"], 71.5);
    }
}
