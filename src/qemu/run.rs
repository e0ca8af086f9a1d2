//! Before a QEMU run (image, architecture, firmware, acceleration), and what every run shares:
//! the spawn, QEMU's error output, the console log file.

use super::firmware;
use super::image_file::{self, ImageInfo};
use super::machine::{self, Accel};
use super::process::{Qemu, Stdio3};
use super::rundir::RunDir;
use super::vm::Vm;
use super::{arch, Arch, MachineOptions, QemuError, VmOptions};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// What QEMU's own error output keeps for an error message.
const STDERR_KEEP: usize = 4096;

/// Told the command line and the forwarded (guest, host) ports once QEMU runs.
pub type OnStart<'a> = &'a dyn Fn(&str, &[(u16, u16)]);

/// Boots `image` with the serial console on this terminal (Ctrl-A X quits QEMU); returns
/// QEMU's exit status.
pub fn boot_interactive(
    image: &Path,
    opts: &VmOptions,
    on_start: OnStart,
) -> Result<ExitStatus, QemuError> {
    let dir = RunDir::new()?;
    let mut vm = Vm::start_with(image, opts, dir.path(), Stdio3::Inherited)?;
    on_start(vm.command_line(), vm.ports());
    let status = vm.wait().map_err(|source| QemuError::Io {
        what: "wait for QEMU",
        path: image.to_path_buf(),
        source,
    })?;
    drop(vm);
    drop(dir);
    Ok(status)
}

/// Everything decided before QEMU starts.
pub(super) struct Setup {
    pub arch: Arch,
    /// The image's format (the overlay's backing format) and the size of the disk it holds.
    pub image: ImageInfo,
    pub firmware: firmware::FirmwarePaths,
    pub kvm: bool,
}

impl Setup {
    pub fn new(image: &Path, opts: &MachineOptions) -> Result<Setup, QemuError> {
        let info = check_image(image)?;
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
            image: info,
            firmware,
            kvm,
        })
    }

    pub fn spawn(&self, args: &[OsString], stdio: Stdio3, tmp: &Path) -> Result<Qemu, QemuError> {
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
/// clear, and comes only after the firmware is set up); its format comes from its own markers.
fn check_image(image: &Path) -> Result<ImageInfo, QemuError> {
    let err = |source| QemuError::Image {
        path: image.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(image).map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    image_file::probe(&f, meta.len()).map_err(err)
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

/// A thread keeping the end of QEMU's error output, for error messages.
pub(super) fn keep_stderr(mut e: std::process::ChildStderr) -> std::thread::JoinHandle<Vec<u8>> {
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
}

pub(super) fn collect(stderr: Option<std::thread::JoinHandle<Vec<u8>>>) -> String {
    let bytes = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let s = String::from_utf8_lossy(&bytes);
    let s = s.trim();
    if s.is_empty() {
        "it printed nothing".into()
    } else {
        s.lines().collect::<Vec<_>>().join("; ")
    }
}

pub(super) fn describe(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// The console log: written as it streams to a temp file beside its destination, renamed into
/// place when the run ends (removed on error or Ctrl-C).
pub(super) struct LogFile {
    /// None once persisted.
    tmp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl LogFile {
    pub fn create(dest: &Path) -> Result<LogFile, QemuError> {
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

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), QemuError> {
        let Some(tmp) = self.tmp.as_mut() else {
            return Ok(());
        };
        tmp.write_all(chunk).map_err(|source| QemuError::Io {
            what: "write the console log",
            path: self.dest.clone(),
            source,
        })
    }

    pub fn persist(mut self) -> Result<PathBuf, QemuError> {
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
