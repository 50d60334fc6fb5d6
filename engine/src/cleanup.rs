//! Temp files and folders to delete if the process is interrupted.
//!
//! Normal success and error paths remove temp data through `Drop`; a signal (Ctrl-C, SIGTERM,
//! SIGHUP) does not unwind, so whoever creates temp data also registers it here (before it
//! exists), and the CLI's signal handler calls [`remove_all`] before exiting.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Paths to remove on a signal. The process has one ([`register`], [`remove_all`]); tests
/// make their own, so one test never removes another's files.
#[derive(Debug, Default)]
pub struct Registry {
    paths: Mutex<Vec<PathBuf>>,
}

static GLOBAL: Registry = Registry::new();

/// Keeps `path` registered until dropped.
#[derive(Debug)]
pub struct TempGuard {
    path: PathBuf,
    registry: &'static Registry,
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Self {
        Self {
            paths: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a temp file or folder for removal on interruption.
    pub fn register(&'static self, path: &Path) -> TempGuard {
        self.lock().push(path.to_path_buf());
        TempGuard {
            path: path.to_path_buf(),
            registry: self,
        }
    }

    /// Removes every registered path (files and whole folders).
    pub fn remove_all(&self) {
        for path in self.lock().iter() {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
    }
}

/// Registers a temp file or folder with the process's registry.
pub fn register(path: &Path) -> TempGuard {
    GLOBAL.register(path)
}

/// Removes every path registered with the process's registry; for signal handlers.
pub fn remove_all() {
    GLOBAL.remove_all();
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let mut registered = self.registry.lock();
        if let Some(i) = registered.iter().rposition(|p| *p == self.path) {
            registered.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_removed_and_guards_unregister() {
        static REGISTRY: Registry = Registry::new();
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        let removed = dir.path().join("removed");
        std::fs::write(&kept, b"k").unwrap();
        std::fs::create_dir(&removed).unwrap();
        std::fs::write(removed.join("f"), b"f").unwrap();
        drop(REGISTRY.register(&kept));
        let _guard = REGISTRY.register(&removed);
        REGISTRY.remove_all();
        assert!(kept.exists());
        assert!(!removed.exists());
    }
}
