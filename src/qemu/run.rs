//! One QEMU run: set up (image, architecture, firmware, acceleration), start, watch, stop.

use super::console::{FailReason, Verdict, Watcher};
use super::firmware::{self, VarsCopy};
use super::machine::{self, Accel, Machine};
use super::process::{Qemu, Stdio3};
use super::{arch, Arch, MachineOptions, Outcome, QemuError, TestOptions};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// After a kernel panic the call trace follows; keep reading this long for it.
const PANIC_GRACE: Duration = Duration::from_secs(2);
/// What QEMU's own error output keeps for an error message.
const STDERR_KEEP: usize = 4096;

/// Boots `image` and waits for `opts.expect` on the serial console.
///
/// `Ok` is a verdict (pass or fail); `Err` means the test could not run (no QEMU, no firmware,
/// unreadable image, QEMU refusing its arguments).
pub fn test_image(image: &Path, opts: &TestOptions) -> Result<Outcome, QemuError> {
    if opts.expect.is_empty() || opts.expect.contains(['\n', '\r']) {
        return Err(QemuError::BadExpect(opts.expect.clone()));
    }
    let setup = Setup::new(image, &opts.machine)?;
    let mut log = opts.log.as_deref().map(LogFile::create).transpose()?;
    let vars = VarsCopy::new(&setup.firmware.vars)?;
    let args = setup.argv(image, vars.path(), &opts.machine);
    tracing::info!("{}", machine::display(machine::program(setup.arch), &args));

    let start = Instant::now();
    let mut qemu = setup.spawn(&args, Stdio3::Captured, vars.dir())?;
    let (chunks, stderr) = read_output(&mut qemu);
    let mut watcher = Watcher::new(&opts.expect);
    let deadline = start + opts.timeout;
    let console = |chunk: &[u8], log: &mut Option<LogFile>| -> Result<(), QemuError> {
        if let Some(l) = log.as_mut() {
            l.write(chunk)?;
        }
        if opts.stream {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(chunk);
            let _ = e.flush();
        }
        Ok(())
    };

    let verdict = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match chunks.recv_timeout(left) {
            Ok(chunk) => {
                console(&chunk, &mut log)?;
                if let Some(v) = watcher.feed(&chunk) {
                    break v;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Verdict::Fail(FailReason::Timeout {
                    secs: opts.timeout.as_secs(),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: QEMU is exiting.
                let status = qemu
                    .wait_for(Duration::from_secs(5))
                    .ok()
                    .flatten()
                    .map(|s| describe(&s))
                    .unwrap_or_else(|| "closed its console".into());
                if let Some(v) = watcher.finish() {
                    break v;
                }
                if !watcher.seen_any() {
                    qemu.kill();
                    return Err(QemuError::QemuFailed {
                        program: machine::program(setup.arch),
                        status,
                        stderr: collect(stderr),
                    });
                }
                break Verdict::Fail(FailReason::Exited { status });
            }
        }
    };
    let elapsed = start.elapsed();
    if let Verdict::Fail(FailReason::KernelPanic { .. }) = verdict {
        let end = Instant::now() + PANIC_GRACE;
        while let Ok(chunk) = chunks.recv_timeout(end.saturating_duration_since(Instant::now())) {
            console(&chunk, &mut log)?;
            watcher.feed(&chunk);
        }
        watcher.finish();
    }
    qemu.kill();
    drop(qemu);
    drop(vars);
    let log = log.map(LogFile::persist).transpose()?;
    Ok(match verdict {
        Verdict::Pass => Outcome::Pass { elapsed, log },
        Verdict::Fail(reason) => Outcome::Fail {
            reason,
            tail_lines: watcher.tail(),
            elapsed,
            log,
        },
    })
}

/// Boots `image` with the serial console on this terminal (Ctrl-A X quits QEMU); returns
/// QEMU's exit status. `on_start` gets the command line once everything is set up, just before
/// QEMU takes the terminal.
pub fn boot_interactive(
    image: &Path,
    opts: &MachineOptions,
    on_start: &dyn Fn(&str),
) -> Result<ExitStatus, QemuError> {
    let setup = Setup::new(image, opts)?;
    let vars = VarsCopy::new(&setup.firmware.vars)?;
    let args = setup.argv(image, vars.path(), opts);
    on_start(&machine::display(machine::program(setup.arch), &args));
    let mut qemu = setup.spawn(&args, Stdio3::Inherited, vars.dir())?;
    let status = qemu.wait().map_err(|source| QemuError::Io {
        what: "wait for QEMU",
        path: image.to_path_buf(),
        source,
    })?;
    drop(vars);
    Ok(status)
}

/// Everything decided before QEMU starts.
struct Setup {
    arch: Arch,
    format: machine::ImageFormat,
    firmware: firmware::FirmwarePaths,
    kvm: bool,
    memory_mib: u32,
}

impl Setup {
    fn new(image: &Path, opts: &MachineOptions) -> Result<Setup, QemuError> {
        let format = check_image(image)?;
        let arch = match opts.arch {
            Some(a) => a,
            None => arch::detect(image)?,
        };
        let program = machine::program(arch);
        if find_in_path(program).is_none() {
            return Err(QemuError::QemuMissing {
                program,
                package: machine::debian_package(arch),
            });
        }
        let firmware = firmware::locate(arch, opts.firmware.as_ref())?;
        let kvm = use_kvm(arch, opts.accel)?;
        tracing::info!(
            "booting a {} machine under {}",
            arch.as_str(),
            if kvm { "KVM" } else { "TCG" }
        );
        Ok(Setup {
            arch,
            format,
            firmware,
            kvm,
            memory_mib: opts.memory_mib,
        })
    }

    fn argv(&self, image: &Path, vars: &Path, opts: &MachineOptions) -> Vec<OsString> {
        machine::argv(&Machine {
            arch: self.arch,
            kvm: self.kvm,
            memory_mib: self.memory_mib,
            firmware_code: &self.firmware.code,
            firmware_vars: vars,
            image,
            format: self.format,
            disk: opts.disk,
        })
    }

    fn spawn(&self, args: &[OsString], stdio: Stdio3, tmp: &Path) -> Result<Qemu, QemuError> {
        let program = machine::program(self.arch);
        Qemu::spawn(program, args, stdio, tmp).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => QemuError::QemuMissing {
                program,
                package: machine::debian_package(self.arch),
            },
            _ => QemuError::Spawn { program, source },
        })
    }
}

/// The image must be a readable regular file (QEMU's own message for a missing one is less
/// clear, and comes only after the firmware is set up).
/// Opens the image (an error names it) and tells its format from its first bytes.
fn check_image(image: &Path) -> Result<machine::ImageFormat, QemuError> {
    let err = |source| QemuError::Image {
        path: image.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(image).map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    let mut first = [0u8; 4];
    let n = (&f).read(&mut first).map_err(err)?;
    Ok(machine::ImageFormat::from_magic(&first[..n]))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn use_kvm(arch: Arch, accel: Accel) -> Result<bool, QemuError> {
    static PROBED: std::sync::Mutex<Vec<(&str, bool)>> = std::sync::Mutex::new(Vec::new());
    let usable = || {
        if !machine::kvm_possible(arch) {
            return false;
        }
        let mut cache = PROBED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(_, ok)) = cache.iter().find(|(a, _)| *a == arch.as_str()) {
            return ok;
        }
        let ok = machine::kvm_works(arch);
        cache.push((arch.as_str(), ok));
        ok
    };
    match accel {
        Accel::Tcg => Ok(false),
        Accel::Auto => Ok(usable()),
        Accel::Kvm if usable() => Ok(true),
        Accel::Kvm => Err(QemuError::KvmUnavailable {
            arch: arch.as_str(),
        }),
    }
}

/// Reader threads: stdout as a channel of chunks (closed at EOF); stderr kept (its end) for
/// error messages.
fn read_output(
    qemu: &mut Qemu,
) -> (
    mpsc::Receiver<Vec<u8>>,
    Option<std::thread::JoinHandle<Vec<u8>>>,
) {
    let (tx, rx) = mpsc::channel();
    if let Some(mut out) = qemu.take_stdout() {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
    }
    let err = qemu.take_stderr().map(|mut e| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_KEEP {
                    kept.drain(..kept.len() - STDERR_KEEP);
                }
            }
            kept
        })
    });
    (rx, err)
}

fn collect(stderr: Option<std::thread::JoinHandle<Vec<u8>>>) -> String {
    let bytes = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let s = String::from_utf8_lossy(&bytes);
    let s = s.trim();
    if s.is_empty() {
        "it printed nothing".into()
    } else {
        s.lines().collect::<Vec<_>>().join("; ")
    }
}

fn describe(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// The console log: written as it streams to a temp file beside its destination, renamed into
/// place when the run ends (removed on error or Ctrl-C).
struct LogFile {
    /// None once persisted.
    tmp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl LogFile {
    fn create(dest: &Path) -> Result<LogFile, QemuError> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = crate::cleanup::create_registered(
            || {
                tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .tempfile_in(dir)
            },
            |t| t.path().to_path_buf(),
        )
        .map_err(|source| QemuError::Io {
            what: "create the console log",
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(LogFile {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        })
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), QemuError> {
        let Some(tmp) = self.tmp.as_mut() else {
            return Ok(());
        };
        tmp.write_all(chunk).map_err(|source| QemuError::Io {
            what: "write the console log",
            path: self.dest.clone(),
            source,
        })
    }

    fn persist(mut self) -> Result<PathBuf, QemuError> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(self.dest.clone());
        };
        let tmp_path = tmp.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; a log is as readable as the image beside it.
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
        let done = tmp.persist(&self.dest).map_err(|e| QemuError::Io {
            what: "save the console log",
            path: self.dest.clone(),
            source: e.error,
        });
        crate::cleanup::unregister(&tmp_path);
        done.map(|_| self.dest.clone())
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        // Not persisted (an error path): NamedTempFile's own drop removes the file.
        if let Some(tmp) = self.tmp.take() {
            let p = tmp.path().to_path_buf();
            drop(tmp);
            crate::cleanup::unregister(&p);
        }
    }
}
