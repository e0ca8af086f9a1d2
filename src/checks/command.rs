//! Running a helper program (ssh, ssh-keygen) with a deadline: its output captured, killed when
//! time runs out, and never outliving kiln (parent-death signal, killed on drop).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// None when it was killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// How a command failed to finish.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started (`NotFound`: not installed).
    Spawn(std::io::Error),
    /// Killed at the deadline.
    TimedOut,
}

/// Output kept from each stream.
const KEEP: usize = 1 << 20;

struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` (stdin closed) until it exits or `deadline` passes.
pub fn run(cmd: &mut Command, deadline: Instant) -> Result<Output, RunError> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. Should kiln die
    // without its cleanup, the helper goes too.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = Guard(Some(cmd.spawn().map_err(RunError::Spawn)?));
    let c = child.0.as_mut().expect("just spawned");
    let out = c.stdout.take().map(reader);
    let err = c.stderr.take().map(reader);
    let status = loop {
        match c.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(_) => return Err(RunError::TimedOut),
        }
        if Instant::now() >= deadline {
            return Err(RunError::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.0 = None;
    let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        String::from_utf8_lossy(&h.and_then(|h| h.join().ok()).unwrap_or_default()).into_owned()
    };
    Ok(Output {
        status: status.code(),
        stdout: text(out),
        stderr: text(err),
    })
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if v.len() < KEEP {
                v.extend_from_slice(&buf[..n.min(KEEP - v.len())]);
            }
        }
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_status_and_the_deadline() {
        let far = Instant::now() + Duration::from_secs(30);
        let o = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            far,
        )
        .unwrap();
        assert_eq!(
            o,
            Output {
                status: Some(3),
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
        let t = Instant::now();
        let r = run(
            Command::new("sleep").arg("30"),
            Instant::now() + Duration::from_millis(200),
        );
        assert!(matches!(r, Err(RunError::TimedOut)));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run(&mut Command::new("/nonexistent/prog"), far),
            Err(RunError::Spawn(_))
        ));
    }
}
