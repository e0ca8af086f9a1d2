//! Helpers for ext4 integration tests: run e2fsck and debugfs on an image, build images.
#![allow(dead_code)]

use kiln::fs::ext4::{self, Ext4Options, Ext4Report};
use kiln::sink::FileSink;
use kiln::tree::{Time, Tree};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const EPOCH: Time = Time {
    secs: 1_700_000_000,
    nanos: 0,
};

pub fn opts(size: u64) -> Ext4Options {
    Ext4Options {
        size,
        uuid: *b"kiln-test-uuid-1",
        hash_seed: *b"kiln-hash-seed-1",
        label: "kiln-root".into(),
        time: EPOCH,
        placement: ext4::Placement::Stable,
    }
}

/// Writes `tree` into `dir/name` and returns the image path and report.
pub fn build(dir: &Path, name: &str, tree: &Tree, o: &Ext4Options) -> (PathBuf, Ext4Report) {
    let target = dir.join(name);
    let mut sink = FileSink::create(&target, o.size).unwrap();
    let report = ext4::write(tree, o, &mut sink).unwrap();
    (sink.persist().unwrap(), report)
}

/// Runs `e2fsck -fn` and panics with its output unless it is clean.
pub fn fsck(img: &Path) -> String {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .expect("e2fsck runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn failed ({}):\n{text}",
        out.status
    );
    for bad in [
        "Fix?",
        "Clear?",
        "Salvage?",
        "Relocate?",
        "Optimize?",
        "Recreate?",
        "WARNING",
    ] {
        assert!(!text.contains(bad), "e2fsck found problems:\n{text}");
    }
    text
}

/// Runs one debugfs request and returns its stdout.
pub fn debugfs(img: &Path, req: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(img)
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Dumps the whole fs to `dir` with `rdump` (keeps modes; no ownership, as we are not root).
pub fn rdump(img: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let out = debugfs(img, &format!("rdump / {}", dir.display()));
    let _ = out;
}

/// A field from `debugfs stat` output, such as "Links" or "Blockcount": the token after
/// `Field:` at its first occurrence.
pub fn stat_field(stat: &str, field: &str) -> Option<String> {
    let key = format!("{field}:");
    let mut from = 0;
    while let Some(i) = stat[from..].find(&key) {
        let at = from + i;
        let before = stat[..at].chars().last();
        if before.is_none_or(|c| c.is_whitespace()) {
            return stat[at + key.len()..]
                .split_whitespace()
                .next()
                .map(str::to_string);
        }
        from = at + key.len();
    }
    None
}

/// `debugfs stat PATH`, asserting the path exists.
pub fn stat(img: &Path, path: &str) -> String {
    let s = debugfs(img, &format!("stat \"{path}\""));
    assert!(s.contains("Inode:"), "debugfs cannot stat {path}: {s}");
    s
}

/// An xattr value as debugfs reads it back (ACLs come back in the xattr wire format).
pub fn ea_get(img: &Path, path: &str, name: &str, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("ea.bin");
    let _ = std::fs::remove_file(&out);
    debugfs(
        img,
        &format!("ea_get -f {} \"{path}\" {name}", out.display()),
    );
    std::fs::read(&out).unwrap_or_else(|_| panic!("no xattr {name} on {path}"))
}

/// Seconds of a `debugfs stat` time field such as "mtime" (`0xSECS:EXTRA`).
pub fn stat_time(stat: &str, field: &str) -> (u32, u32) {
    let v = stat_field(stat, field).unwrap();
    let (a, b) = v.split_once(':').unwrap();
    let p = |x: &str| u32::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
    (p(a), p(b))
}
