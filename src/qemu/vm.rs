//! A running test machine: QEMU started with the disk overlay, the network, the EC2 identity and
//! a QMP socket; its console read on a thread into a shared [`Console`] (and the log file); the
//! metadata server answering the guest. Everything stops on [`Vm::finish`] or drop, and on
//! Ctrl-C through the cleanup registry.

use super::console::Console;
use super::machine::{self, Machine};
use super::network::{self, Network};
use super::process::{Qemu, Stdio3};
use super::qmp::Qmp;
use super::run::{self, LogFile, Setup};
use super::{overlay, QemuError, VmOptions};
use crate::imds::{self, Identity};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long QEMU may take to open its QMP socket (it does so before the guest runs).
const QMP_CONNECT: Duration = Duration::from_secs(60);
/// EBS volumes are whole GiB: an AMI's volume is at least its snapshot, rounded up.
const GIB: u64 = 1 << 30;

pub struct Vm {
    qemu: Qemu,
    qmp: Qmp,
    console: Arc<Console>,
    reader: Option<std::thread::JoinHandle<Option<LogFile>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    imds: Option<imds::Server>,
    identity: Option<Identity>,
    ports: Vec<(u16, u16)>,
    started: Instant,
    kvm: bool,
    volume_size: u64,
    command_line: String,
}

impl Vm {
    /// Boots `image` with its files in the private directory `dir`, the console captured.
    pub fn start(image: &Path, opts: &VmOptions, dir: &Path) -> Result<Vm, QemuError> {
        Self::start_with(image, opts, dir, Stdio3::Captured)
    }

    /// [`Vm::start`], or with QEMU on this terminal (`Stdio3::Inherited`: no console capture).
    pub(super) fn start_with(
        image: &Path,
        opts: &VmOptions,
        dir: &Path,
        stdio: Stdio3,
    ) -> Result<Vm, QemuError> {
        let setup = Setup::new(image, &opts.machine)?;
        let image_len = std::fs::metadata(image)
            .map_err(|source| QemuError::Image {
                path: image.to_path_buf(),
                source,
            })?
            .len();
        let volume_size = match opts.volume_size {
            Some(v) if v < image_len => {
                return Err(QemuError::VolumeTooSmall {
                    volume: v,
                    image: image_len,
                })
            }
            Some(v) => v,
            None => image_len.div_ceil(GIB).max(1) * GIB,
        };
        let mut log = match stdio {
            Stdio3::Captured => opts.log.as_deref().map(LogFile::create).transpose()?,
            Stdio3::Inherited => None,
        };
        let vars = super::firmware::copy_vars(&setup.firmware.vars, dir)?;
        let overlay_path = dir.join("disk.qcow2");
        let backing = std::fs::canonicalize(image).map_err(|source| QemuError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        overlay::create(&overlay_path, &backing, volume_size).map_err(|source| QemuError::Io {
            what: "create the disk overlay",
            path: overlay_path.clone(),
            source,
        })?;
        let qmp_path = dir.join("qmp.sock");

        let identity = opts.ec2.as_ref().map(|e| {
            let mut seed = [0u8; 16];
            let _ = getrandom::fill(&mut seed);
            let mut id = Identity::new(seed, setup.arch, &e.region, &e.public_key);
            id.root_device_name = e.root_device_name.clone();
            // The identity document's pendingTime: when this instance was launched, a fact of
            // the run (as on EC2), not image content.
            id.launch_time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            id
        });
        let imds_sock = dir.join("imds.sock");
        let imds = match (&opts.ec2, &identity) {
            (Some(e), Some(id)) => {
                let listener =
                    imds::Listener::unix(&imds_sock).map_err(|source| QemuError::Io {
                        what: "listen for the metadata service",
                        path: imds_sock.clone(),
                        source,
                    })?;
                let config = imds::Config {
                    identity: id.clone(),
                    user_data: e.user_data.clone(),
                    require_token: e.require_token,
                };
                Some(
                    imds::Server::start(config, listener).map_err(|source| QemuError::Io {
                        what: "start the metadata service",
                        path: imds_sock.clone(),
                        source,
                    })?,
                )
            }
            _ => None,
        };
        let forward: Vec<u16> = opts
            .ec2
            .as_ref()
            .map(|e| e.forward.clone())
            .unwrap_or_default();
        let smbios_uuid = identity.as_ref().map(Identity::smbios_uuid);
        let args = machine::argv(&Machine {
            arch: setup.arch,
            kvm: setup.kvm,
            memory_mib: opts.machine.memory_mib,
            firmware_code: &setup.firmware.code,
            firmware_vars: &vars,
            overlay: &overlay_path,
            disk: opts.machine.disk,
            network: match (&opts.ec2, &identity) {
                (Some(e), Some(id)) => Some(Network {
                    forward: &forward,
                    imds_relay: Some((&e.relay_program, &imds_sock)),
                    mac: &id.mac,
                }),
                _ => None,
            },
            smbios: match (&smbios_uuid, &identity) {
                (Some(u), Some(id)) => Some((u.as_str(), id.instance_type.as_str())),
                _ => None,
            },
            qmp: Some(&qmp_path),
        });
        let program = machine::program(setup.arch);
        let command_line = machine::display(program, &args);
        tracing::info!("{command_line}");

        let started = Instant::now();
        let mut qemu = setup.spawn(&args, stdio, dir)?;
        let console = Arc::new(Console::new());
        let stderr = qemu.take_stderr().map(run::keep_stderr);
        let reader = qemu.take_stdout().map(|out| {
            let c = Arc::clone(&console);
            let stream = opts.stream;
            let mut log = log.take();
            std::thread::spawn(move || {
                read_console(out, &c, &mut log, stream);
                log
            })
        });
        let mut vm_parts = (qemu, stderr);
        let qmp = match connect_qmp(&qmp_path, &mut vm_parts.0) {
            Ok(q) => q,
            Err(e) => {
                vm_parts.0.kill();
                return Err(match e {
                    Some(status) => QemuError::QemuFailed {
                        program,
                        status,
                        stderr: run::collect(vm_parts.1),
                    },
                    None => QemuError::Io {
                        what: "connect to QEMU's monitor",
                        path: qmp_path,
                        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                    },
                });
            }
        };
        let (qemu, stderr) = vm_parts;
        let mut vm = Vm {
            qemu,
            qmp,
            console,
            reader,
            stderr,
            imds,
            identity,
            ports: Vec::new(),
            started,
            kvm: setup.kvm,
            volume_size,
            command_line,
        };
        if !forward.is_empty() {
            let usernet = vm.usernet().map_err(|source| QemuError::Io {
                what: "read the forwarded ports from QEMU",
                path: qmp_path.clone(),
                source,
            })?;
            vm.ports = network::forwarded_ports(&usernet);
            if let Some(p) = forward.iter().find(|p| vm.host_port(**p).is_none()) {
                return Err(QemuError::Io {
                    what: "forward the guest's TCP port",
                    path: PathBuf::from(format!("port {p}")),
                    source: std::io::Error::other(format!("QEMU reports no forward: {usernet}")),
                });
            }
        }
        Ok(vm)
    }

    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }

    /// When QEMU was started ("power on").
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn kvm(&self) -> bool {
        self.kvm
    }

    pub fn volume_size(&self) -> u64 {
        self.volume_size
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// (guest port, host port) for each forwarded port.
    pub fn ports(&self) -> &[(u16, u16)] {
        &self.ports
    }

    /// Waits for QEMU to exit on its own (an interactive run).
    pub(super) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.qemu.wait()
    }

    /// The host port (on 127.0.0.1) forwarded to a guest port.
    pub fn host_port(&self, guest: u16) -> Option<u16> {
        self.ports.iter().find(|(g, _)| *g == guest).map(|p| p.1)
    }

    pub fn imds_stats(&self) -> Option<imds::Stats> {
        self.imds.as_ref().map(imds::Server::stats)
    }

    /// slirp's connection table (`info usernet`).
    pub fn usernet(&mut self) -> std::io::Result<String> {
        self.qmp.human("info usernet")
    }

    /// Whether a guest reboot resets the machine (the reboot check) or ends QEMU (otherwise, so
    /// that a guest rebooting by itself, or a `panic=-1` kernel, cannot loop).
    pub fn allow_reboot(&mut self, allow: bool) -> std::io::Result<()> {
        self.qmp.clear_events();
        self.qmp.execute(
            "set-action",
            serde_json::json!({ "reboot": if allow { "reset" } else { "shutdown" } }),
        )?;
        Ok(())
    }

    /// Waits for the guest to reset (a reboot), up to `timeout`.
    pub fn wait_reset(&mut self, timeout: Duration) -> std::io::Result<bool> {
        Ok(self.qmp.wait_event("RESET", timeout)?.is_some())
    }

    /// QEMU's exit status, once its console has ended (waits up to 5 s for it).
    pub fn exit_status(&mut self) -> String {
        self.qemu
            .wait_for(Duration::from_secs(5))
            .ok()
            .flatten()
            .map(|s| run::describe(&s))
            .unwrap_or_else(|| "closed its console".into())
    }

    /// Stops QEMU and the metadata server; saves the console log (when one was asked for).
    pub fn finish(mut self) -> Result<Option<PathBuf>, QemuError> {
        self.qemu.kill();
        let log = self.reader.take().and_then(|r| r.join().ok()).flatten();
        self.imds.take();
        log.map(LogFile::persist).transpose()
    }

    /// QEMU's error output so far (for a machine that stopped).
    pub fn stderr(&mut self) -> String {
        self.qemu.kill();
        run::collect(self.stderr.take())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.qemu.kill();
        if let Some(r) = self.reader.take() {
            // The unsaved log's temp file goes with it.
            let _ = r.join();
        }
    }
}

/// Connects to QMP while QEMU starts; `Err(Some(status))` if QEMU exited first, `Err(None)` on
/// a timeout.
fn connect_qmp(path: &Path, qemu: &mut Qemu) -> Result<Qmp, Option<String>> {
    let end = Instant::now() + QMP_CONNECT;
    loop {
        if let Ok(Some(st)) = qemu.try_wait() {
            return Err(Some(run::describe(&st)));
        }
        if path.exists() {
            if let Ok(q) = Qmp::connect(path, Duration::from_secs(5)) {
                return Ok(q);
            }
        }
        if Instant::now() >= end {
            return Err(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_console(
    mut out: std::process::ChildStdout,
    console: &Console,
    log: &mut Option<LogFile>,
    stream: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        if let Some(l) = log.as_mut() {
            if l.write(chunk).is_err() {
                // A full disk must not stop the test; the log just ends early.
                *log = None;
            }
        }
        if stream {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(chunk);
            let _ = e.flush();
        }
        console.feed(chunk);
    }
    console.end();
}
