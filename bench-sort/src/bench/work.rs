//! The bench's own files: its private work folder ([`WorkDir`]) and the removal of what it
//! measured.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use engine::tempdir::JobTempDir;

use super::BenchError;

/// The bench's private folder, an owner-locked engine job folder in `<dir>`
/// (`millrace-job-PID-…`): dropping it deletes everything in it except the inputs marked
/// kept (then the folder stays, unmarked); a bench killed outright leaves it marked and
/// unlocked, and the next bench in `<dir>` removes it.
#[derive(Debug)]
pub(super) struct WorkDir {
    pub(super) path: PathBuf,
    job: Option<JobTempDir>,
    kept: Vec<PathBuf>,
    /// `--dir` when this bench created it: removed too if it ends up empty.
    created_dir: Option<PathBuf>,
}

impl WorkDir {
    pub(super) fn create(dir: &Path) -> Result<Self, BenchError> {
        let created_dir = (!dir.exists()).then(|| dir.to_path_buf());
        fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            op: "create the bench folder",
            path: dir.to_path_buf(),
            source,
        })?;
        let job = JobTempDir::create(dir).map_err(|source| BenchError::WorkDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: job.path().to_path_buf(),
            job: Some(job),
            kept: Vec::new(),
            created_dir,
        })
    }

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub(super) fn keep(&mut self, path: &Path) {
        self.kept.push(path.to_path_buf());
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        if self.kept.is_empty() {
            drop(job);
        } else {
            if let Ok(entries) = fs::read_dir(&self.path) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if self.kept.contains(&path) || entry.file_name() == engine::tempdir::MARKER {
                        continue;
                    }
                    let removed = match entry.file_type() {
                        Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                        _ => fs::remove_file(&path),
                    };
                    if let Err(error) = removed {
                        tracing::warn!(path = %path.display(), %error, "cannot remove bench data");
                    }
                }
            }
            job.into_kept();
        }
        if let Some(dir) = &self.created_dir {
            // Fails, as it should, when something is still inside (kept inputs, a report).
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Removes a file the bench created, ignoring one that is already gone.
pub(super) fn remove(path: &Path) -> Result<(), BenchError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(BenchError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

/// Removes what a finished sort left in the spill folder (nothing, unless it leaked), so the
/// next run has the space; says so when there was something.
pub(super) fn remove_leftovers(
    spill_dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<(), BenchError> {
    let io_error = |source| BenchError::Io {
        op: "clean the spill folder",
        path: spill_dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(spill_dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        progress(&format!(
            "  note: the sort left {} in its spill folder; removing it",
            path.display()
        ));
        fs::remove_dir_all(&path)
            .or_else(|_| fs::remove_file(&path))
            .map_err(io_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_removes_all_but_kept_inputs() {
        let root = tempfile::tempdir().unwrap();
        let (kept, scratch) = {
            let mut work = WorkDir::create(root.path()).unwrap();
            let kept = work.file("10M-binary.in");
            let scratch = work.file("10M-binary.sort.out");
            fs::write(&kept, b"in").unwrap();
            fs::write(&scratch, b"out").unwrap();
            work.keep(&kept);
            (kept, scratch)
        };
        assert!(kept.exists());
        assert!(!scratch.exists());
        let path = {
            let work =
                WorkDir::create(&root.path().join("again")).unwrap_or_else(|e| panic!("{e}"));
            fs::write(work.file("x"), b"x").unwrap();
            work.path.clone()
        };
        assert!(!path.exists());
        // A bench that died leaves its folder marked and unlocked: the next one removes it.
        let dead = root.path().join("again").join("millrace-job-999999-0-0");
        fs::create_dir_all(&dead).unwrap();
        fs::write(
            dead.join(engine::tempdir::MARKER),
            engine::tempdir::MARKER_TEXT,
        )
        .unwrap();
        fs::write(dead.join("10M-binary.in"), b"in").unwrap();
        drop(WorkDir::create(&root.path().join("again")).unwrap());
        assert!(!dead.exists());
    }
}
