//! Paths to remove if the process is interrupted.
//!
//! Temporary outputs register here while they exist. On Ctrl-C (SIGINT) or SIGTERM, the binary's
//! signal thread calls [`remove_all`] before exiting, so an interrupted build leaves no partial
//! image and no scratch directory behind. Normal drops still clean up on every other path.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remembers `path` (a file or a directory) for removal on interruption.
pub fn register(path: &Path) {
    if let Ok(mut v) = PATHS.lock() {
        v.push(path.to_path_buf());
    }
}

/// Forgets `path`: it was persisted or already removed.
pub fn unregister(path: &Path) {
    if let Ok(mut v) = PATHS.lock() {
        if let Some(i) = v.iter().rposition(|p| p == path) {
            v.remove(i);
        }
    }
}

/// Removes every registered path; returns those that were removed.
pub fn remove_all() -> Vec<PathBuf> {
    let paths = match PATHS.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return Vec::new(),
    };
    let mut removed = Vec::new();
    for p in paths {
        let ok = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if ok.is_ok() {
            removed.push(p);
        }
    }
    removed
}
