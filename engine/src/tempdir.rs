//! Private per-job temp folders under the configured spill dirs, and removal of the folders
//! that dead processes left behind.
//!
//! A job creates `millrace-job-PID-N` (mode 0700) in every spill dir and holds an exclusive
//! `flock` on a `lock` file inside it for as long as it runs.
//! A later run that can take that lock knows the owner is gone (the kernel drops locks when a
//! process dies, however it dies), so it deletes the folder; a folder whose lock is held belongs
//! to a running job and is never touched — PID reuse cannot fool this.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{flock, FlockOperation};
use tracing::{debug, info};

use crate::cleanup::{self, TempGuard};
use crate::EngineError;

const PREFIX: &str = "millrace-job-";

/// One job's temp folder in one spill dir; removed on drop.
#[derive(Debug)]
pub struct JobTempDir {
    path: PathBuf,
    _lock: File,
    _interrupt_guard: TempGuard,
}

impl JobTempDir {
    /// Creates this job's folder in `spill_dir`, after removing stale ones of dead jobs.
    pub fn create(spill_dir: &Path) -> Result<Self, EngineError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let bad = |reason: String| EngineError::BadSpillDir {
            path: spill_dir.to_path_buf(),
            reason,
        };
        match fs::metadata(spill_dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(bad("is not a folder".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
        remove_stale(spill_dir);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = spill_dir.join(name);
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| bad(format!("cannot create a temp folder: {e}")))?;
        let guard = cleanup::register(&path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path.join("lock"))
            .and_then(|file| {
                flock(&file, FlockOperation::NonBlockingLockExclusive)
                    .map(|()| file)
                    .map_err(io::Error::from)
            })
            .map_err(|e| {
                let _ = fs::remove_dir_all(&path);
                bad(format!("cannot lock a temp folder: {e}"))
            })?;
        debug!(path = %path.display(), "created job temp folder");
        Ok(Self {
            path,
            _lock: lock,
            _interrupt_guard: guard,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JobTempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove job temp folder");
            }
        }
    }
}

/// Removes job folders in `spill_dir` whose owner has died; returns how many.
pub fn remove_stale(spill_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(spill_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let owner_alive = match File::open(path.join("lock")) {
            Ok(file) => flock(&file, FlockOperation::NonBlockingLockShared).is_err(),
            // No lock file: the owner died between creating the folder and locking it.
            Err(_) => false,
        };
        if !owner_alive && fs::remove_dir_all(&path).is_ok() {
            info!(path = %path.display(), "removed the temp folder of a job that is gone");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_folders_stay_dead_ones_go() {
        let spill = tempfile::tempdir().unwrap();
        let live = JobTempDir::create(spill.path()).unwrap();
        // A folder left by a dead job: same shape, nobody holds its lock.
        let dead = spill.path().join(format!("{PREFIX}999999-0"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("lock"), b"").unwrap();
        fs::write(dead.join("run-0.seg"), b"data").unwrap();
        let unrelated = spill.path().join("keep-me");
        fs::create_dir(&unrelated).unwrap();
        assert_eq!(remove_stale(spill.path()), 1);
        assert!(live.path().exists() && !dead.exists() && unrelated.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn spill_dir_must_exist() {
        let error = JobTempDir::create(Path::new("/nonexistent/spill")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/spill"), "{error}");
    }
}
