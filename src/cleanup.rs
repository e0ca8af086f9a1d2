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

/// Marks the process as interrupted: cleanup is under way and the signal thread will exit.
pub fn set_interrupted() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether cleanup is under way. The main thread must then not exit on its own: the work it was
/// doing fails (its scratch files are gone), and its exit code would race the signal thread's.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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
            remove_dir_racing(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if ok.is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// `remove_dir_all`, while the interrupted main thread may still be writing into the directory
/// (a `kiln test` run directory being filled): a file made after the listing makes the last
/// rmdir fail with "not empty", so the removal is tried again, for up to a second.
fn remove_dir_racing(p: &Path) -> std::io::Result<()> {
    use std::io::ErrorKind::{DirectoryNotEmpty, NotFound};
    let mut last = Ok(());
    for _ in 0..100 {
        last = std::fs::remove_dir_all(p);
        match &last {
            Ok(()) => return Ok(()),
            Err(e) if !matches!(e.kind(), DirectoryNotEmpty | NotFound) => return last,
            Err(_) if !p.exists() => return Ok(()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    last
}

/// Identifies a registered cleanup action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionId(u64);

/// An action to run on interruption: it says what it did, or why it failed.
type Action = Box<dyn FnOnce() -> Result<String, String> + Send>;

static ACTIONS: Mutex<Vec<(u64, String, Action)>> = Mutex::new(Vec::new());
static NEXT_ACTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Registers `action` (described by `what`, e.g. "delete snapshot snap-1 in us-east-1") to run
/// if the process is interrupted. Async work bridges with its runtime's `Handle::block_on` and
/// bounds itself with a timeout: the signal thread waits for it.
pub fn register_action(
    what: String,
    action: impl FnOnce() -> Result<String, String> + Send + 'static,
) -> ActionId {
    let id = NEXT_ACTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut v) = ACTIONS.lock() {
        v.push((id, what, Box::new(action)));
    }
    ActionId(id)
}

/// Forgets an action: its work finished or was undone another way. Once the process is
/// interrupted, actions are the signal thread's: a main thread finishing its work at that
/// moment must not take away the cleanup that is about to run (the run is abandoned, and its
/// result never reported).
pub fn unregister_action(id: ActionId) {
    if interrupted() {
        return;
    }
    if let Ok(mut v) = ACTIONS.lock() {
        v.retain(|(i, _, _)| *i != id.0);
    }
}

/// Runs every registered action, newest first; returns one line per action.
pub fn run_actions() -> Vec<Result<String, String>> {
    let actions = match ACTIONS.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return Vec::new(),
    };
    actions
        .into_iter()
        .rev()
        .map(|(_, what, f)| {
            tracing::info!("cleanup: {what}");
            // The signal thread must reach its exit whatever an action does.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(format!("could not {what}: the cleanup failed")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory still being written to when the signal thread removes it (kiln test's run
    /// directory under Ctrl-C, seen in tests/qemu_test.rs under load) is removed all the same.
    #[test]
    fn a_directory_written_to_while_it_is_removed_is_removed() {
        for _ in 0..20 {
            let d = tempfile::tempdir().unwrap().keep();
            std::fs::write(d.join("first"), b"x").unwrap();
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let writer = {
                let (d, stop) = (d.clone(), stop.clone());
                std::thread::spawn(move || {
                    // Files keep appearing for a while, as a slow main thread makes them.
                    for i in 0..2000 {
                        if stop.load(Ordering::SeqCst)
                            || std::fs::write(d.join(format!("f{i}")), b"x").is_err()
                        {
                            break;
                        }
                    }
                })
            };
            std::thread::sleep(std::time::Duration::from_millis(1));
            let r = remove_dir_racing(&d);
            stop.store(true, Ordering::SeqCst);
            writer.join().unwrap();
            assert!(r.is_ok() && !d.exists(), "{r:?}: {} left", d.display());
        }
    }

    #[test]
    fn actions_run_once_unless_unregistered() {
        let a = register_action("a".into(), || Ok("did a".into()));
        let b = register_action("b".into(), || Err("b failed".into()));
        let c = register_action("c".into(), || Ok("did c".into()));
        unregister_action(b);
        let got = run_actions();
        // Other tests may register actions concurrently; look for ours.
        assert!(got.contains(&Ok("did a".into())));
        assert!(got.contains(&Ok("did c".into())));
        assert!(!got.contains(&Err("b failed".into())));
        let _ = (a, c);
        assert!(!run_actions().contains(&Ok("did a".into())));
    }
}
