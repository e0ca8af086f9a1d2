//! A real container registry for the push tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1, with or without htpasswd basic auth, and the recording,
//! fault-injecting proxy `scripts/lib/registry-proxy.py` in front of it.

use serde_json::Value;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// The python of the test venv (it has bcrypt), else the system's.
/// An htpasswd line with a bcrypt hash (the only kind docker-registry accepts), made with
/// python's bcrypt from the test venv (scripts/test installs it).
fn htpasswd(user: &str, password: &str) -> String {
    let out = Command::new(super::python())
        .args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(5)).decode())",
            password,
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "bcrypt: {} (scripts/test installs bcrypt into .venv)",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{user}:{}\n", String::from_utf8_lossy(&out.stdout).trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something answers HTTP on the port.
fn wait_http(port: u16) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
            let mut b = [0u8; 12];
            if s.read(&mut b).map(|n| n > 0).unwrap_or(false) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl Registry {
    /// Starts a registry; with `auth`, it takes only that user and password (HTTP Basic).
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            if let Some((u, p)) = auth {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, htpasswd(u, p)).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    file.display()
                ));
            }
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry runs (scripts/test installs it)");
            let mut r = Registry { child, port, dir };
            if wait_http(port) {
                return r;
            }
            let _ = r.child.kill();
        }
        panic!("docker-registry did not start");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct RegistryProxy {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RegistryProxy {
    pub fn start(registry: &Registry, flags: &[&str]) -> RegistryProxy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let upstream = registry.host();
        let mut args: Vec<&OsStr> = vec![
            "--upstream".as_ref(),
            upstream.as_ref(),
            "--log".as_ref(),
            log.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        let (child, port) = super::start_proxy("registry-proxy.py", &args);
        RegistryProxy {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request logged so far (and forgets them).
    pub fn take_requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        std::fs::write(&self.log, "").unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
