//! Paths to remove if the process is interrupted.
//!
//! Temporary outputs register here while they exist. On Ctrl-C (SIGINT) or SIGTERM, the binary's
//! signal thread calls [`remove_all`] before exiting, so an interrupted build leaves no partial
//! image and no scratch directory behind. Normal drops still clean up on every other path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static DONE: AtomicBool = AtomicBool::new(false);

/// Creates something on disk with `create` and registers the path `path_of` gives, atomically
/// with respect to an interruption: either the interruption sees the path and removes it, or
/// the creation is refused because the process is already being interrupted.
pub fn create_registered<T>(
    create: impl FnOnce() -> std::io::Result<T>,
    path_of: impl FnOnce(&T) -> PathBuf,
) -> std::io::Result<T> {
    let mut paths = PATHS
        .lock()
        .map_err(|_| std::io::Error::other("cleanup registry poisoned"))?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        ));
    }
    let t = create()?;
    paths.push(path_of(&t));
    Ok(t)
}

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

/// Marks the process as interrupted, then removes every registered path; returns those removed.
///
/// Work still running on other threads fails once its files vanish; [`wait_if_interrupted`]
/// lets the main thread tell that failure apart from a real error.
pub fn interrupt_and_remove_all() -> Vec<PathBuf> {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let removed = remove_all();
    DONE.store(true, Ordering::SeqCst);
    removed
}

/// If an interruption is under way, waits (up to 30 s) for its cleanup to finish and returns
/// true: the caller should then exit as interrupted rather than report an error.
pub fn wait_if_interrupted() -> bool {
    if !INTERRUPTED.load(Ordering::SeqCst) {
        return false;
    }
    for _ in 0..3000 {
        if DONE.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
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
