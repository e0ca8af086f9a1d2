//! Each kind of check against the running machine, and the reboot.
//!
//! A check retries until it passes or its timeout runs out; the reason it reports is the last
//! attempt's. Waits between attempts end early when the console shows the boot failing for good
//! or the machine stopping, and then every check fails with that reason.

use super::probe::{self, Port};
use super::report::CheckResult;
use super::ssh::{Failure, Remote, Ssh};
use crate::qemu::{FailReason, Vm, Wait, TAIL_LINES};
use crate::recipe::{HttpTest, Pattern, SshTest, SystemdTest, Test, TestKind};
use std::time::{Duration, Instant};

/// After a kernel panic the call trace follows; wait this long for it before taking the tail.
const PANIC_GRACE: Duration = Duration::from_secs(2);
/// Between two attempts of a check.
const INTERVAL: Duration = Duration::from_secs(2);
/// What a failure shows of a command's output.
const SHOW: usize = 300;

/// One attempt's outcome.
enum Attempt {
    Pass,
    /// Failed, and retrying cannot help.
    Fail(String),
    /// Not yet; the reason if time runs out.
    Again(String),
    /// Ended by the check's deadline before it learnt anything: an earlier attempt's reason
    /// says more (a refused port, a command that exited 1), and is kept.
    CutShort(String),
}

pub struct Session {
    vm: Vm,
    ssh: Option<Ssh>,
    /// Console checks look from this line on (0, or the first line after the reboot).
    since: usize,
    panic_grace_done: bool,
}

impl Session {
    pub fn new(vm: Vm, ssh: Option<Ssh>) -> Session {
        Session {
            vm,
            ssh,
            since: 0,
            panic_grace_done: false,
        }
    }

    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    pub fn into_parts(self) -> (Vm, Option<Ssh>) {
        (self.vm, self.ssh)
    }

    /// Runs one (non-reboot) check.
    pub fn check(&mut self, test: &Test, after_reboot: bool) -> CheckResult {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(test.timeout);
        let outcome = match &test.kind {
            TestKind::Console(text) => self.console(text, deadline, test.timeout),
            TestKind::Tcp { port } => {
                let port = *port;
                self.retry(deadline, test.timeout, &mut |s| s.tcp(port, deadline))
            }
            TestKind::Http(h) => self.retry(deadline, test.timeout, &mut |s| s.http(h, deadline)),
            TestKind::Ssh(c) => self.retry(deadline, test.timeout, &mut |s| s.ssh(c, deadline)),
            TestKind::Systemd(c) => {
                self.retry(deadline, test.timeout, &mut |s| s.systemd(c, deadline))
            }
            TestKind::Reboot { .. } => Err("a reboot test runs on its own".into()),
        };
        self.result(test, after_reboot, start, outcome)
    }

    fn result(
        &mut self,
        test: &Test,
        after_reboot: bool,
        start: Instant,
        outcome: Result<(), String>,
    ) -> CheckResult {
        let seconds = super::secs(start.elapsed());
        let (passed, reason, console_tail) = match outcome {
            Ok(()) => (true, None, Vec::new()),
            Err(r) => {
                if matches!(
                    self.vm.console().fatal(),
                    Some(FailReason::KernelPanic { .. })
                ) && !self.panic_grace_done
                {
                    self.panic_grace_done = true;
                    std::thread::sleep(PANIC_GRACE);
                }
                (false, Some(r), self.vm.console().tail(TAIL_LINES))
            }
        };
        CheckResult {
            name: test.name.clone(),
            kind: test.kind.key(),
            after_reboot,
            passed,
            seconds,
            reason,
            console_tail,
        }
    }

    /// Why the machine can no longer pass anything, if so.
    fn machine_down(&mut self) -> Option<String> {
        let c = self.vm.console();
        if let Some(f) = c.fatal() {
            return Some(f.to_string());
        }
        if c.ended() {
            let status = self.vm.exit_status();
            return Some(FailReason::Exited { status }.to_string());
        }
        None
    }

    /// Sleeps until `until`, waking early if the machine goes down.
    fn pause(&self, until: Instant) {
        let _ = self.vm.console().wait_fatal(until);
    }

    fn retry(
        &mut self,
        deadline: Instant,
        timeout: u64,
        attempt: &mut dyn FnMut(&mut Session) -> Attempt,
    ) -> Result<(), String> {
        let mut last: Option<String> = None;
        loop {
            if let Some(down) = self.machine_down() {
                return Err(down);
            }
            match attempt(self) {
                Attempt::Pass => return Ok(()),
                Attempt::Fail(r) => return Err(r),
                Attempt::Again(r) => last = Some(r),
                Attempt::CutShort(r) => {
                    last.get_or_insert(r);
                }
            }
            let why = last.as_deref().unwrap_or("no attempt finished");
            if let Some(down) = self.machine_down() {
                return Err(format!("{down}; before that: {why}"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{why} (still so after {timeout} s)"));
            }
            self.pause(deadline.min(now + INTERVAL));
        }
    }

    fn console(&mut self, text: &str, deadline: Instant, timeout: u64) -> Result<(), String> {
        match self.vm.console().wait_for(text, self.since, deadline) {
            Wait::Got(()) => Ok(()),
            Wait::Fatal(f) => Err(f.to_string()),
            Wait::Ended => {
                let status = self.vm.exit_status();
                Err(format!(
                    "{} before {text:?} appeared",
                    FailReason::Exited { status }
                ))
            }
            Wait::TimedOut => Err(format!(
                "{text:?} did not appear on the console within {timeout} s"
            )),
        }
    }

    /// A hint for a guest that never answers: did it ever reach the metadata service?
    fn network_hint(&self) -> &'static str {
        match self.vm.imds_stats() {
            Some(s) if s.requests == 0 => {
                "; it has not contacted the metadata service either: its network never came up?"
            }
            _ => "",
        }
    }

    fn port(&mut self, port: u16, deadline: Instant) -> Result<(), Attempt> {
        match probe::tcp(&mut self.vm, port, deadline) {
            Ok(Port::Open) => Ok(()),
            Ok(p @ Port::Refused) => Err(Attempt::Again(p.describe(port))),
            Ok(p @ Port::Silent) => Err(Attempt::Again(format!(
                "{}{}",
                p.describe(port),
                self.network_hint()
            ))),
            Ok(p @ Port::CutShort) => Err(Attempt::CutShort(format!(
                "{}{}",
                p.describe(port),
                self.network_hint()
            ))),
            Err(e) => Err(Attempt::Again(format!("cannot reach port {port}: {e}"))),
        }
    }

    fn tcp(&mut self, port: u16, deadline: Instant) -> Attempt {
        match self.port(port, deadline) {
            Ok(()) => Attempt::Pass,
            Err(a) => a,
        }
    }

    fn http(&mut self, h: &HttpTest, deadline: Instant) -> Attempt {
        if let Err(a) = self.port(h.port, deadline) {
            return a;
        }
        let ans = match probe::http_get(&self.vm, h.port, &h.path, deadline) {
            Ok(a) => a,
            Err(e) if Instant::now() >= deadline => return Attempt::CutShort(e),
            Err(e) => return Attempt::Again(e),
        };
        let url = format!("http://…:{}{}", h.port, h.path);
        if ans.status != h.status {
            return Attempt::Again(format!(
                "GET {url} answered {}, expected {}",
                ans.status, h.status
            ));
        }
        if let Some(p) = &h.body {
            if !compile(p).is_match(ends_trimmed(&ans.body)) {
                return Attempt::Again(format!(
                    "GET {url} answered {} but the body does not match /{p}/: {}",
                    ans.status,
                    excerpt(&ans.body)
                ));
            }
        }
        Attempt::Pass
    }

    /// Runs `remote` as `user` once the guest's SSH port answers.
    fn login(&mut self, user: &str, remote: &str, deadline: Instant) -> Result<Remote, Attempt> {
        self.port(22, deadline)?;
        let lines = self.vm.console().lines_since(0);
        let Some(ssh) = self.ssh.as_mut() else {
            return Err(Attempt::Fail("no SSH key pair for this run".into()));
        };
        if let Err(f) = ssh.learn_from_console(&lines) {
            return Err(Attempt::Fail(f.to_string()));
        }
        match ssh.run(user, remote, deadline) {
            Ok(r) => Ok(r),
            Err(f @ Failure::HostKeyChanged(_)) => Err(Attempt::Fail(f.to_string())),
            Err(f @ Failure::TimedOut) if Instant::now() >= deadline => {
                Err(Attempt::CutShort(f.to_string()))
            }
            Err(f) => Err(Attempt::Again(f.to_string())),
        }
    }

    fn ssh(&mut self, c: &SshTest, deadline: Instant) -> Attempt {
        let r = match self.login(&c.user, &c.command, deadline) {
            Ok(r) => r,
            Err(a) => return a,
        };
        let out_ok = c
            .output
            .as_ref()
            .is_none_or(|p| compile(p).is_match(ends_trimmed(&r.stdout)));
        if r.status == i32::from(c.status) && out_ok {
            return Attempt::Pass;
        }
        let mut why = if r.status != i32::from(c.status) {
            format!("`{}` exited {}, expected {}", c.command, r.status, c.status)
        } else {
            format!(
                "the output of `{}` does not match /{}/",
                c.command,
                c.output.as_deref().unwrap_or_default()
            )
        };
        why.push_str(&format!("; stdout: {}", excerpt(&r.stdout)));
        if !r.stderr.trim().is_empty() {
            why.push_str(&format!("; stderr: {}", excerpt(&r.stderr)));
        }
        Attempt::Again(why)
    }

    fn systemd(&mut self, c: &SystemdTest, deadline: Instant) -> Attempt {
        let r = match self.login(&c.user, &systemd_script(&c.active), deadline) {
            Ok(r) => r,
            Err(a) => return a,
        };
        let st = parse_systemd(&r.stdout);
        let failed = if st.failed.is_empty() {
            "none".to_string()
        } else {
            st.failed.join(", ")
        };
        if st.state.is_empty() {
            return Attempt::Again(format!(
                "systemctl gave no system state: {}",
                excerpt(&(r.stdout + &r.stderr))
            ));
        }
        if st.state != c.state {
            if matches!(st.state.as_str(), "initializing" | "starting") {
                return Attempt::Again(format!(
                    "the system is still {} (failed units so far: {failed})",
                    st.state
                ));
            }
            return Attempt::Fail(format!(
                "the system is {}, not {}; failed units: {failed}",
                st.state, c.state
            ));
        }
        let mut waiting = Vec::new();
        for (unit, state) in &st.units {
            match state.as_str() {
                "active" => {}
                "failed" => return Attempt::Fail(format!("{unit} is failed")),
                other => waiting.push(format!("{unit} is {other}")),
            }
        }
        if waiting.is_empty() {
            Attempt::Pass
        } else {
            Attempt::Again(waiting.join(", "))
        }
    }

    /// The reboot test: log in, reboot the guest, see it reset, and log in again with the same
    /// host keys. Returns the result and the time from the reset to that login.
    pub fn reboot(&mut self, test: &Test) -> (CheckResult, Option<Duration>) {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(test.timeout);
        let TestKind::Reboot { user } = &test.kind else {
            unreachable!("reboot() runs reboot tests");
        };
        let mut back = None;
        let outcome = self.do_reboot(user, deadline, test.timeout, &mut back);
        if let Err(e) = self.vm.allow_reboot(false) {
            tracing::warn!("cannot make a guest reboot end QEMU again: {e}");
        }
        (self.result(test, false, start, outcome), back)
    }

    fn do_reboot(
        &mut self,
        user: &str,
        deadline: Instant,
        timeout: u64,
        back: &mut Option<Duration>,
    ) -> Result<(), String> {
        // The guest must be up (and its host keys known) before it is rebooted.
        self.retry(
            deadline,
            timeout,
            &mut |s| match s.login(user, "true", deadline) {
                Ok(_) => Attempt::Pass,
                Err(a) => a,
            },
        )?;
        self.vm
            .allow_reboot(true)
            .map_err(|e| format!("cannot let the guest reboot: {e}"))?;
        let cmd = if user == "root" {
            "systemctl reboot"
        } else {
            "sudo -n systemctl reboot"
        };
        let asked = Instant::now();
        if let Some(ssh) = self.ssh.as_mut() {
            // The connection may drop as the guest goes down: only a clear refusal counts. 255
            // is ssh's own status for a connection that ended under it ("closed by remote
            // host"), which is what a reboot that began before the command returned looks like;
            // whether the guest really rebooted is what wait_reset decides next.
            match ssh.run(user, cmd, deadline.min(asked + Duration::from_secs(60))) {
                Ok(r) if r.status != 0 && r.status != 255 => {
                    return Err(format!(
                        "`{cmd}` exited {}: {}",
                        r.status,
                        excerpt(&r.stderr)
                    ))
                }
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.vm.wait_reset(left) {
            Ok(true) => {}
            Ok(false) => {
                return Err(match self.machine_down() {
                    Some(d) => d,
                    None => format!("the guest did not reboot within {timeout} s of `{cmd}`"),
                })
            }
            Err(e) => {
                return Err(format!(
                    "lost QEMU's monitor while waiting for the reboot: {e}"
                ))
            }
        }
        let reset = Instant::now();
        self.since = self.vm.console().mark();
        if let Err(e) = self.vm.allow_reboot(false) {
            return Err(format!("cannot make a guest reboot end QEMU again: {e}"));
        }
        self.retry(
            deadline,
            timeout,
            &mut |s| match s.login(user, "true", deadline) {
                Ok(_) => Attempt::Pass,
                Err(a) => a,
            },
        )
        .map_err(|e| format!("after the reboot: {e}"))?;
        *back = Some(reset.elapsed());
        Ok(())
    }
}

fn compile(p: &str) -> Pattern {
    // Validated when the recipe was loaded.
    Pattern::new(p).unwrap_or_else(|_| Pattern::new("$^").expect("a valid pattern"))
}

/// The text a pattern is matched against: without its final line ends, as `$(…)` in a shell
/// gives it, so that `^active$` matches `systemctl is-active`'s "active\n".
fn ends_trimmed(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

fn excerpt(s: &str) -> String {
    let t = s.trim();
    let mut out: String = t.chars().take(SHOW).collect();
    if t.chars().count() > SHOW {
        out.push('…');
    }
    format!("{out:?}")
}

/// One login's worth of systemd state: the system's, the failed units, the named units'.
fn systemd_script(units: &[String]) -> String {
    let mut s = String::from(
        "echo \"state=$(systemctl is-system-running 2>/dev/null)\"; \
         systemctl list-units --state=failed --plain --no-legend --no-pager 2>/dev/null \
         | while read -r a b rest; do case $a in *.*) echo \"failed=$a\";; *) echo \"failed=$b\";; esac; done",
    );
    for u in units {
        // Unit names were checked to hold no shell metacharacter.
        s.push_str(&format!(
            "; echo \"unit={u}=$(systemctl is-active {u} 2>/dev/null)\""
        ));
    }
    s
}

#[derive(Debug, Default, PartialEq, Eq)]
struct SystemdState {
    state: String,
    failed: Vec<String>,
    units: Vec<(String, String)>,
}

fn parse_systemd(out: &str) -> SystemdState {
    let mut st = SystemdState::default();
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("state=") {
            st.state = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("failed=") {
            if !v.trim().is_empty() {
                st.failed.push(v.trim().to_string());
            }
        } else if let Some(v) = line.strip_prefix("unit=") {
            if let Some((u, s)) = v.rsplit_once('=') {
                st.units.push((u.to_string(), s.trim().to_string()));
            }
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_state_from_the_script_output() {
        let st = parse_systemd(
            "state=degraded\nfailed=nginx.service\nunit=nginx.service=failed\nunit=ssh.service=active\n",
        );
        assert_eq!(
            st,
            SystemdState {
                state: "degraded".into(),
                failed: vec!["nginx.service".into()],
                units: vec![
                    ("nginx.service".into(), "failed".into()),
                    ("ssh.service".into(), "active".into())
                ],
            }
        );
        let script = systemd_script(&["nginx.service".into()]);
        assert!(script.ends_with(
            "echo \"unit=nginx.service=$(systemctl is-active nginx.service 2>/dev/null)\""
        ));
    }

    /// The script under a real shell, with a stand-in systemctl that prints what systemd 252
    /// prints (`list-units --plain` still shows the "●" marker of failed units).
    #[test]
    fn the_script_runs_under_sh() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("systemctl");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase \"$1\" in\n is-system-running) echo degraded; exit 1;;\n list-units) echo '● nginx.service loaded failed failed A high performance web server';;\n is-active) echo failed; exit 3;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(systemd_script(&["nginx.service".into()]))
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let st = parse_systemd(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(st.state, "degraded");
        assert_eq!(st.failed, vec!["nginx.service".to_string()]);
        assert_eq!(st.units, vec![("nginx.service".into(), "failed".into())]);
    }

    #[test]
    fn excerpts_are_short_and_quoted() {
        assert_eq!(excerpt("  hi\n"), "\"hi\"");
        assert_eq!(excerpt(&"x".repeat(400)).chars().count(), SHOW + 3);
    }
}
