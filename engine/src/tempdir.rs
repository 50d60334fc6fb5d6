//! Temp data that outlives nothing: private per-job spill folders, hidden temp outputs, and the
//! removal of what dead processes left behind.
//!
//! Every temp entry Millrace creates carries an **owner lock**: an exclusive `flock` on the
//! entry itself (the file, or the folder's own descriptor), held for as long as the owner
//! runs. The kernel drops the lock when the process dies, however it dies (SIGKILL, abort,
//! out-of-memory kill, panic), so a later run that can take the lock knows the owner is gone
//! and removes the entry; an entry whose lock is held is never touched, and PID reuse cannot
//! fool this.
//!
//! An entry becomes visible to a sweep only once its lock is held:
//! - a spill folder is built under a staging name (`.millrace-staging-…`, which sweeps skip
//!   while young), locked, marked with a [`MARKER`] file, then renamed to
//!   `millrace-job-PID-N`; sweeps remove only folders that carry the marker;
//! - a temp output file is created unnamed (`O_TMPFILE`), locked, then linked as
//!   `.NAME.millrace-tmp-PID` (file systems without `O_TMPFILE`: created and locked at once);
//! - a temp output folder (`--parts`) is built and locked under a staging name, then renamed.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};
use tracing::{debug, info};

use crate::cleanup::{self, TempGuard};
use crate::EngineError;

/// Name prefix of spill folders.
const PREFIX: &str = "millrace-job-";
/// The file inside a spill folder that says Millrace made it; sweeps remove nothing else.
pub const MARKER: &str = "millrace-job";
/// What the marker file holds.
pub const MARKER_TEXT: &[u8] =
    b"millrace spill folder: removed by the next run once its owner is gone\n";
/// Infix of hidden temp outputs: `.NAME.millrace-tmp-PID`.
pub const TEMP_INFIX: &str = ".millrace-tmp-";
/// Infix of entries being built; a sweep removes them only when unlocked and older than
/// [`STAGING_GRACE`] (their owner died between creating and locking them).
const STAGING_INFIX: &str = ".millrace-staging-";
const STAGING_GRACE: Duration = Duration::from_secs(600);

static NEXT: AtomicUsize = AtomicUsize::new(0);

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
        let id = format!("{}-{}", std::process::id(), unique());
        let path = spill_dir.join(format!("{PREFIX}{id}"));
        let guard = cleanup::register(&path);
        let lock = create_locked_dir(spill_dir, &format!("{STAGING_INFIX}{id}"), &path, |dir| {
            fs::write(dir.join(MARKER), MARKER_TEXT)
        })
        .map_err(|e| bad(format!("cannot create a temp folder: {e}")))?;
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

fn unique() -> usize {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Builds a folder under `staging` in `parent`, locks it, lets `fill` put files in it, then
/// renames it to `path`; returns the lock. Nothing is left behind on failure.
fn create_locked_dir(
    parent: &Path,
    staging: &str,
    path: &Path,
    fill: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<File> {
    let staging = parent.join(staging);
    DirBuilder::new().mode(0o700).create(&staging)?;
    let built = File::open(&staging)
        .and_then(|dir| lock_exclusive(&dir).map(|()| dir))
        .and_then(|dir| fill(&staging).map(|()| dir))
        .and_then(|dir| rename_new(&staging, path).map(|()| dir));
    if built.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    built
}

/// Renames `from` to `to`, failing if `to` exists.
pub(crate) fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .or_else(|e| match e {
        // File systems without renameat2 flags: the names carry our PID, so a plain rename
        // cannot replace another process's entry.
        rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS => {
            rustix::fs::rename(from, to).map_err(io::Error::from)
        }
        e => Err(e.into()),
    })
}

fn lock_exclusive(file: &File) -> io::Result<()> {
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)
}

/// The hidden temp name under which `output` is written: `.NAME.millrace-tmp-PID`.
pub fn temp_path_for(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}{TEMP_INFIX}{}", std::process::id()))
}

/// Creates the temp file for `output` (read-write, mode 0644) and holds its owner lock through
/// the returned handle; returns the temp path and the handle. The caller registers the path
/// for removal on a signal and removes it when the output is not committed.
pub fn create_temp_file(output: &Path) -> io::Result<(PathBuf, File)> {
    let temp = temp_path_for(output);
    let folder = parent_of(output);
    remove_stale_outputs(&folder);
    match create_unnamed(&folder) {
        Ok(file) => {
            lock_exclusive(&file)?;
            link_unnamed(&file, &temp)?;
            Ok((temp, file))
        }
        Err(_) => {
            // No O_TMPFILE here: create the name and lock it at once.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp)?;
            if let Err(e) = lock_exclusive(&file) {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            Ok((temp, file))
        }
    }
}

fn create_unnamed(folder: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(folder)
}

/// Gives an `O_TMPFILE` file its name (through `/proc/self/fd`, which needs no privilege).
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Creates the temp folder for `output` (`--parts`), locked; returns its path and the lock.
pub fn create_temp_dir(output: &Path) -> io::Result<(PathBuf, File)> {
    let temp = temp_path_for(output);
    let folder = parent_of(output);
    remove_stale_outputs(&folder);
    let name = output.file_name().unwrap_or(OsStr::new("out"));
    let staging = format!(
        ".{}{STAGING_INFIX}{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        unique()
    );
    let lock = create_locked_dir(&folder, &staging, &temp, |_| Ok(()))?;
    fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok((temp, lock))
}

/// The folder `path` is in (`.` for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether the owner of `path` (a file or folder carrying an owner lock) is gone: the lock can
/// be taken. The lock taken here is released when the returned handle drops.
fn owner_gone(path: &Path) -> Option<File> {
    let file = File::open(path).ok()?;
    flock(&file, FlockOperation::NonBlockingLockExclusive)
        .ok()
        .map(|()| file)
}

fn is_old(meta: &fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STAGING_GRACE)
}

/// Removes spill folders in `spill_dir` whose owner has died; returns how many. Only folders
/// named like Millrace's that carry its marker file are considered.
pub fn remove_stale(spill_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(spill_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let staging = name.starts_with(STAGING_INFIX);
        if !name.starts_with(PREFIX) && !staging {
            continue;
        }
        let path = entry.path();
        // Never follow a link out of the spill dir.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || (staging && !is_old(&meta)) {
            continue;
        }
        if !staging && fs::read(path.join(MARKER)).ok().as_deref() != Some(MARKER_TEXT) {
            continue;
        }
        if let Some(_lock) = owner_gone(&path) {
            if fs::remove_dir_all(&path).is_ok() {
                info!(path = %path.display(), "removed the temp folder of a job that is gone");
                removed += 1;
            }
        }
    }
    removed
}

/// Removes hidden temp outputs (`.NAME.millrace-tmp-PID`, files or folders) in `folder` whose
/// owner has died; returns how many.
pub fn remove_stale_outputs(folder: &Path) -> usize {
    let Ok(entries) = fs::read_dir(folder) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') {
            continue;
        }
        let staging = name.contains(STAGING_INFIX);
        let temp = name
            .rsplit_once(TEMP_INFIX)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if !staging && !temp {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !(meta.is_dir() || meta.is_file()) || (staging && !is_old(&meta)) {
            continue;
        }
        if let Some(_lock) = owner_gone(&path) {
            let result = if meta.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if result.is_ok() {
                info!(path = %path.display(), "removed the temp output of a process that is gone");
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_job_folder(spill: &Path, name: &str, marker: bool) -> PathBuf {
        let dead = spill.join(name);
        fs::create_dir(&dead).unwrap();
        if marker {
            fs::write(dead.join(MARKER), MARKER_TEXT).unwrap();
        }
        fs::write(dead.join("run-0.seg"), b"data").unwrap();
        dead
    }

    #[test]
    fn live_folders_stay_dead_ones_go_unmarked_ones_stay() {
        let spill = tempfile::tempdir().unwrap();
        let live = JobTempDir::create(spill.path()).unwrap();
        assert!(live.path().join(MARKER).exists());
        let dead = dead_job_folder(spill.path(), &format!("{PREFIX}999999-0"), true);
        let users = dead_job_folder(spill.path(), &format!("{PREFIX}999999-1"), false);
        let unrelated = spill.path().join("keep-me");
        fs::create_dir(&unrelated).unwrap();
        assert_eq!(remove_stale(spill.path()), 1);
        assert!(live.path().exists() && !dead.exists() && unrelated.exists() && users.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn spill_dir_must_exist() {
        let error = JobTempDir::create(Path::new("/nonexistent/spill")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/spill"), "{error}");
    }

    /// A temp output whose handle is open is kept; once the handle (the owner) is gone, the
    /// next sweep removes it. Names that merely look alike are kept.
    #[test]
    fn temp_outputs_of_dead_owners_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.dat");
        let (temp, file) = create_temp_file(&output).unwrap();
        assert_eq!(temp, temp_path_for(&output));
        let (temp_dir, dir_lock) = create_temp_dir(&dir.path().join("parts")).unwrap();
        let lookalike = dir.path().join(".x.millrace-tmp-12a");
        fs::write(&lookalike, b"user data").unwrap();
        assert_eq!(remove_stale_outputs(dir.path()), 0);
        assert!(temp.exists() && temp_dir.is_dir());
        drop(file);
        drop(dir_lock);
        assert_eq!(remove_stale_outputs(dir.path()), 2);
        assert!(!temp.exists() && !temp_dir.exists() && lookalike.exists());
    }
}
