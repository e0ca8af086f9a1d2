//! Helpers shared by the integration tests: running the real tools that serve as oracles.
#![allow(dead_code)]

pub mod boot;
pub mod debrepo;
pub mod ext4_check;
pub mod incremental;
pub mod moto;
pub mod pkgtree;
pub mod recipe;
pub mod registry;
pub mod report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Runs a command and returns its output; panics with the command line if it cannot start
/// (the tools are installed by `scripts/test`).
pub fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd:?}: {e} (scripts/test installs the tools)"),
    }
}

/// Runs a command that must succeed; returns stdout as a string.
pub fn run_ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    ok_or(&o, &format!("{cmd:?}"))
}

/// The stdout of a command's output that must show success.
pub fn ok(o: &Output) -> String {
    ok_or(o, "the command")
}

fn ok_or(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Copies `len` bytes at `offset` of `image` into a new file (to give a partition to fsck tools).
pub fn extract(image: &Path, offset: u64, len: u64, out: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = std::fs::File::open(image).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut dst = std::fs::File::create(out).unwrap();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            dst.write_all(&buf[..n]).unwrap();
        }
        left -= n as u64;
    }
    dst.set_len(len).unwrap();
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    kiln::util::hex(&h.finalize())
}

/// The Python that runs the test proxies: moto's virtualenv (it has the proxies' modules), or
/// the system's.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("KILN_MOTO_SERVER")
        .map(PathBuf::from)
        .and_then(|s| s.parent().map(|d| d.join("python3")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3"));
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Starts `scripts/lib/SCRIPT` (a recording proxy) with `args` and returns it with the port it
/// announced on its first stdout line, `PORT <n>`.
pub fn start_proxy(script: &str, args: &[&std::ffi::OsStr]) -> (Child, u16) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/lib")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{script} does not start: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} said {line:?}"));
    (child, port)
}

/// The directory of a fixture that a test binary keeps in a `static` for its whole run. Rust
/// never drops a `static`, so a plain temporary directory would stay behind in /tmp after every
/// run; this one lives under the target's tmp directory, and a later run of the same binary
/// removes the earlier run's `NAME-*` directories before making its own (cargo runs one test
/// binary of a target directory at a time).
pub fn fixture_dir(name: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = format!("{name}-");
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(base)
        .unwrap()
}
