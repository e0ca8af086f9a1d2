//! Helpers shared by the integration tests: running the real tools that serve as oracles.
#![allow(dead_code)]

pub mod boot;
pub mod debrepo;
pub mod ext4_check;
pub mod moto;
pub mod pkgtree;
pub mod registry;
pub mod report;

use std::path::Path;
use std::process::{Command, Output};

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
