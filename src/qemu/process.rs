//! The QEMU child process: started so that it never outlives kiln, stopped on every path.
//!
//! The child is registered as a cleanup action (Ctrl-C and SIGTERM end it through the signal
//! thread) and killed and reaped when the guard drops (timeout, error, panic). Its pid is shared
//! under a lock with that action, and the child is reaped only while the lock is held, so the
//! action can never signal a pid that has already been reaped and reused.

use crate::cleanup::{self, ActionId};
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Qemu {
    child: Child,
    /// The pid while the child is unreaped.
    live: Arc<Mutex<Option<libc::pid_t>>>,
    action: ActionId,
}

/// How the child's stdio is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio3 {
    /// stdin closed; stdout and stderr piped to kiln (a test run).
    Captured,
    /// kiln's own terminal (an interactive console).
    Inherited,
}

impl Qemu {
    /// `tmp`: QEMU's TMPDIR, a directory kiln removes on every path. QEMU makes the image's
    /// `snapshot=on` overlay there; killed before it unlinks that file, it would leave it behind.
    pub fn spawn(program: &str, args: &[OsString], stdio: Stdio3, tmp: &Path) -> io::Result<Qemu> {
        let mut cmd = Command::new(program);
        cmd.args(args).env("TMPDIR", tmp);
        match stdio {
            Stdio3::Captured => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
            Stdio3::Inherited => {
                cmd.stdin(Stdio::inherit())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
            }
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. If kiln dies
        // without running its cleanup (SIGKILL), the kernel sends QEMU SIGTERM, which QEMU
        // handles by shutting down and restoring the terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let live = Arc::new(Mutex::new(None));
        // Hold the lock across spawn and registration: the action cannot run half set up.
        let mut slot = live
            .lock()
            .map_err(|_| io::Error::other("qemu pid lock poisoned"))?;
        if cleanup::interrupted() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        *slot = Some(pid);
        drop(slot);
        let shared = Arc::clone(&live);
        let action = cleanup::register_action(format!("stop {program} (pid {pid})"), move || {
            stop_from_signal_thread(&shared)
        });
        Ok(Qemu {
            child,
            live,
            action,
        })
    }

    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut slot = self
            .live
            .lock()
            .map_err(|_| io::Error::other("qemu pid lock poisoned"))?;
        if slot.is_none() {
            return Err(io::Error::other(
                "qemu was stopped by the interrupt handler",
            ));
        }
        let st = self.child.try_wait()?;
        if st.is_some() {
            *slot = None;
        }
        Ok(st)
    }

    /// Waits for the child to exit on its own. Polls, because a blocking wait would have to
    /// hold the pid lock (see the module comment) and so block the interrupt handler.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` for the child to exit on its own.
    pub fn wait_for(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills (SIGKILL) and reaps the child, if it still runs.
    pub fn kill(&mut self) {
        let Ok(mut slot) = self.live.lock() else {
            return;
        };
        if slot.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            *slot = None;
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        cleanup::unregister_action(self.action);
        self.kill();
    }
}

/// Ctrl-C: SIGTERM first (QEMU then restores the terminal of an interactive console), SIGKILL
/// if it has not exited within two seconds; reaped either way.
fn stop_from_signal_thread(live: &Mutex<Option<libc::pid_t>>) -> Result<String, String> {
    let mut slot = live
        .lock()
        .map_err(|_| "qemu pid lock poisoned".to_string())?;
    let Some(pid) = slot.take() else {
        return Ok("qemu had already exited".into());
    };
    // SAFETY: plain syscalls on a pid that is still our unreaped child (we hold the lock that
    // guards reaping), so it cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(2);
        let mut status = 0;
        loop {
            if libc::waitpid(pid, &mut status, libc::WNOHANG) != 0 {
                return Ok(format!("stopped qemu (pid {pid})"));
            }
            if Instant::now() >= end {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                return Ok(format!("killed qemu (pid {pid})"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: libc::pid_t) -> bool {
        // A zombie still answers kill(0); /proc tells a zombie from a live process.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    #[test]
    fn dropping_the_guard_kills_and_reaps() {
        let mut q = Qemu::spawn(
            "sleep",
            &["30".into()],
            Stdio3::Captured,
            &std::env::temp_dir(),
        )
        .unwrap();
        let pid = q.child.id() as libc::pid_t;
        assert!(alive(pid));
        assert!(q.try_wait().unwrap().is_none());
        drop(q);
        assert!(!alive(pid), "child left running");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child left as a zombie"
        );
    }

    #[test]
    fn the_interrupt_action_stops_the_child() {
        let q = Qemu::spawn(
            "sleep",
            &["30".into()],
            Stdio3::Captured,
            &std::env::temp_dir(),
        )
        .unwrap();
        let pid = q.child.id() as libc::pid_t;
        let got = stop_from_signal_thread(&q.live).unwrap();
        assert!(got.contains("stopped"), "{got}");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        // Dropping afterwards must not signal the (reaped, maybe reused) pid again.
        drop(q);
    }

    #[test]
    fn wait_returns_the_exit_status() {
        let mut q = Qemu::spawn(
            "sh",
            &["-c".into(), "exit 3".into()],
            Stdio3::Captured,
            &std::env::temp_dir(),
        )
        .unwrap();
        assert_eq!(q.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn qemu_gets_kilns_private_tmpdir() {
        let dir = tempfile::tempdir().unwrap();
        let check = format!("test \"$TMPDIR\" = '{}'", dir.path().display());
        let mut q = Qemu::spawn(
            "sh",
            &["-c".into(), check.into()],
            Stdio3::Captured,
            dir.path(),
        )
        .unwrap();
        assert_eq!(q.wait().unwrap().code(), Some(0));
    }
}
