//! Temp files and folders to delete if the process is interrupted.
//!
//! Normal success and error paths remove temp data through `Drop`; a signal (Ctrl-C, SIGTERM)
//! does not unwind, so whoever creates temp data also registers it here, and the CLI's signal
//! handler calls [`remove_all`] before exiting.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Keeps `path` registered until dropped.
#[derive(Debug)]
pub struct TempGuard {
    path: PathBuf,
}

/// Registers a temp file or folder for removal on interruption.
pub fn register(path: &Path) -> TempGuard {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
    TempGuard {
        path: path.to_path_buf(),
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let mut registered = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = registered.iter().rposition(|p| *p == self.path) {
            registered.swap_remove(i);
        }
    }
}

/// Removes every registered path (files and whole folders); for signal handlers.
pub fn remove_all() {
    let registered = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    for path in registered.iter() {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_removed_and_guards_unregister() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        let removed = dir.path().join("removed");
        std::fs::write(&kept, b"k").unwrap();
        std::fs::create_dir(&removed).unwrap();
        std::fs::write(removed.join("f"), b"f").unwrap();
        drop(register(&kept));
        let _guard = register(&removed);
        remove_all();
        assert!(kept.exists());
        assert!(!removed.exists());
    }
}
