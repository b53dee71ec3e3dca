//! SIGINT and SIGTERM remove what the run staged: the temporary files of its outputs and the
//! folders it created for them (see [`crate::output`]), then exit with 128 + the signal.
//!
//! The signals are blocked in every thread (the mask is set before any other thread starts
//! and threads inherit it) and one thread waits for them with `sigwait`: the cleanup then
//! runs as ordinary code, free to lock and to call anything, which a signal handler may not
//! (signal-hook and ctrlc would give a flag or a channel that the compute loops would have to
//! poll; `libc` is already a dependency). SIGKILL cannot be caught: it leaves the staged
//! `.NAME.XXXX.tmp` files and the folders made for the outputs (README, Errors).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Staged files, and folders created for outputs (deepest last registered first removed).
static FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn lock(m: &Mutex<Vec<PathBuf>>) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A staged file to remove on an interrupt.
pub fn register(path: &Path) {
    lock(&FILES).push(path.to_path_buf());
}

/// A staged file that is in place (or removed) now.
pub fn unregister(path: &Path) {
    lock(&FILES).retain(|p| p != path);
}

/// A folder made for the outputs (or a staged folder): removed on an interrupt, after the
/// files, with what it holds only when it is a staged folder (`recursive`).
pub fn register_dir(path: &Path) {
    lock(&DIRS).push(path.to_path_buf());
}

pub fn unregister_dir(path: &Path) {
    lock(&DIRS).retain(|p| p != path);
}

/// Removes every registered file, then the registered folders, newest first (a staged
/// folder with its files, a created one only when empty). Returns how many were removed.
pub fn clean_up() -> usize {
    let mut n = 0;
    for f in lock(&FILES).drain(..) {
        n += std::fs::remove_file(&f).is_ok() as usize;
    }
    for d in lock(&DIRS).drain(..).rev() {
        let staged = d
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".memprune-staged."));
        let r = if staged {
            std::fs::remove_dir_all(&d)
        } else {
            std::fs::remove_dir(&d)
        };
        n += r.is_ok() as usize;
    }
    n
}

/// Blocks SIGINT and SIGTERM and starts the thread that cleans up on them. Call first in
/// `main`, before any other thread starts.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: plain libc calls on a sigset_t owned here; the mask is set before threads.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let waiter = move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: as above.
            if libc::sigwait(&set, &mut sig) == 0 {
                clean_up();
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                eprintln!("error: interrupted ({name}); staged outputs removed");
                libc::_exit(128 + sig);
            }
        };
        let _ = std::thread::Builder::new()
            .name("memprune-signals".into())
            .spawn(waiter);
    }
}

/// A stop asked for by a caller that cannot use signals (the Python module, on Ctrl-C in
/// the interpreter): long loops call [`check`] and end with an error, and the job's staged
/// outputs are removed as for SIGINT.
static CANCELLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks the running job to stop at its next [`check`].
pub fn cancel() {
    CANCELLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Forgets a stop asked for earlier (before the next job starts).
pub fn clear_cancel() {
    CANCELLED.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// An error when a stop was asked for: the loops of long jobs call this once per batch.
pub fn check() -> anyhow::Result<()> {
    if CANCELLED.load(std::sync::atomic::Ordering::Relaxed) {
        let removed = clean_up();
        anyhow::bail!("interrupted; {removed} staged output(s) removed");
    }
    Ok(())
}
