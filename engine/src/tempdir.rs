//! Temp data that outlives nothing: private per-job folders for spilled runs and for outputs
//! being written, and the removal of what dead processes left behind.
//!
//! All temp data lives in **job folders**, never loose:
//! - `millrace-job-PID-N` in a spill dir (spilled runs, a spooled input stream);
//! - `.millrace-tmp-PID-N` next to an output (the output under its own name until it is
//!   renamed into place, so the rename never leaves the file system).
//!
//! A job folder carries an **owner lock**, an exclusive `flock` on the folder's own descriptor
//! held for as long as the owner runs, and a **marker** file that says Millrace made it. The
//! kernel drops the lock when the process dies, however it dies (SIGKILL, abort, out-of-memory
//! kill, panic), so a later run that can take the lock knows the owner is gone. A sweep
//! removes only folders named like job folders that carry the marker and whose lock is free:
//! a user's file or folder that merely looks alike is never touched, and PID reuse cannot fool
//! this.
//!
//! A job folder becomes visible under its name only once it is locked and marked: it is built
//! under a staging name (`.millrace-staging-PID-N-R`), locked, marked, then renamed. A staging
//! folder that holds nothing but the marker and whose lock is free lost its owner between
//! marking and renaming it; one that is still empty lost it between `mkdir` and the lock, and
//! is removed (`rmdir`, so only while empty) when its name is exactly ours and the PID in it
//! is no live process, or when it is older than [`STAGING_GRACE`].
//! Every name is registered for removal on a signal before it exists.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation, OFlags};
use tracing::{debug, info};

use crate::cleanup::{self, TempGuard};
use crate::EngineError;

/// Name prefix of spill job folders.
const SPILL_PREFIX: &str = "millrace-job-";
/// Name prefix of output job folders (hidden: they sit next to the user's outputs).
const OUTPUT_PREFIX: &str = ".millrace-tmp-";
/// Name prefix of job folders being built.
const STAGING_PREFIX: &str = ".millrace-staging-";
/// The file inside a job folder that says Millrace made it; sweeps remove nothing else.
pub const MARKER: &str = ".millrace-job";
/// What the marker file holds.
pub const MARKER_TEXT: &[u8] =
    b"millrace job folder: removed by the next run once its owner is gone\n";
/// How old an unlocked staging folder must be before a sweep removes it.
const STAGING_GRACE: Duration = Duration::from_secs(600);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One job folder; removed (with everything in it) on drop.
#[derive(Debug)]
pub struct JobTempDir {
    path: PathBuf,
    /// The folder itself, opened: its owner lock, and the handle every file inside is created,
    /// opened and renamed through, so nobody who can rename entries in the parent folder can
    /// redirect them (see [`JobTempDir::open_file`], [`JobTempDir::rename_out`]).
    dir: File,
    /// The folder holding this one, opened when it was created.
    parent: File,
    /// Left in place by [`JobTempDir::into_kept`].
    kept: bool,
    _interrupt_guard: TempGuard,
}

impl JobTempDir {
    /// Creates this job's spill folder in `spill_dir`, after removing stale ones of dead jobs.
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
        Self::create_in(spill_dir, SPILL_PREFIX)
            .map_err(|e| bad(format!("cannot create a temp folder: {e}")))
    }

    /// Creates a hidden job folder next to `output` (in the same folder, so a rename moves the
    /// finished output into place), after removing stale ones of dead jobs.
    pub fn for_output(output: &Path) -> io::Result<Self> {
        Self::create_in(&parent_of(output), OUTPUT_PREFIX)
    }

    fn create_in(folder: &Path, prefix: &str) -> io::Result<Self> {
        remove_stale(folder);
        // The PID says whose it is; the random part keeps processes with the same PID (in
        // other PID namespaces sharing this folder) apart.
        let id = format!(
            "{}-{}-{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            random_u32()
        );
        let path = folder.join(format!("{prefix}{id}"));
        let staging = folder.join(format!("{STAGING_PREFIX}{id}"));
        // Registered before they exist: a signal at any point removes what was made.
        let guard = cleanup::register(&path);
        let staging_guard = cleanup::register(&staging);
        let parent = File::open(folder)?;
        DirBuilder::new().mode(0o700).create(&staging)?;
        let built = File::open(&staging)
            .and_then(|dir| lock_exclusive(&dir).map(|()| dir))
            .and_then(|dir| fs::write(staging.join(MARKER), MARKER_TEXT).map(|()| dir))
            .and_then(|dir| rename_new(&staging, &path).map(|()| dir));
        let lock = match built {
            Ok(lock) => lock,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        drop(staging_guard);
        debug!(path = %path.display(), "created job temp folder");
        Ok(Self {
            path,
            dir: lock,
            parent,
            kept: false,
            _interrupt_guard: guard,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the folder and what is in it (a bench's kept inputs): removes the marker, so no
    /// sweep will ever touch it, and returns its path instead of removing it.
    pub fn into_kept(mut self) -> PathBuf {
        let _ = fs::remove_file(self.path.join(MARKER));
        self.kept = true;
        self.path.clone()
    }

    /// Creates (`create`) or opens the file `name` inside the folder, through its handle;
    /// never follows a link.
    pub fn open_file(&self, name: &OsStr, create: bool) -> io::Result<File> {
        open_in(&self.dir, name, create)
    }

    /// Creates the folder `name` inside this one and opens it.
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        rustix::fs::mkdirat(&self.dir, name, rustix::fs::Mode::from_raw_mode(mode))?;
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Renames `name` inside this folder to `target` in the parent folder, through both
    /// handles, with `flags` (`NOREPLACE`, `EXCHANGE`, or none to replace).
    pub fn rename_out(
        &self,
        name: &OsStr,
        target: &OsStr,
        flags: rustix::fs::RenameFlags,
    ) -> io::Result<()> {
        rustix::fs::renameat_with(&self.dir, name, &self.parent, target, flags)
            .map_err(io::Error::from)
    }

    /// Device and inode of `target` in the parent folder (not following a link).
    pub fn identity_in_parent(&self, target: &OsStr) -> Option<(u64, u64)> {
        let stat =
            rustix::fs::statat(&self.parent, target, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some((stat.st_dev, stat.st_ino))
    }

    /// Removes `target` from the parent folder.
    pub fn unlink_in_parent(&self, target: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.parent, target, rustix::fs::AtFlags::empty())
            .map_err(io::Error::from)
    }
}

/// Creates or opens `name` in the folder `dir` (read-write, mode 0644 when created), never
/// following a link.
pub fn open_in(dir: &File, name: &OsStr, create: bool) -> io::Result<File> {
    let mut flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE | OFlags::EXCL;
    }
    let fd = rustix::fs::openat(dir, name, flags, rustix::fs::Mode::from_raw_mode(0o644))?;
    Ok(File::from(fd))
}

impl Drop for JobTempDir {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove job temp folder");
            }
        }
    }
}

/// A random number from the standard library's per-process hash keys (no extra crate).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(NEXT.load(Ordering::Relaxed));
    hasher.finish() as u32
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
pub(crate) fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .or_else(|e| match e {
        // File systems without renameat2 flags: a hard link fails if `to` exists, for files.
        rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS if from.is_file() => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        // Folders: the names carry our PID, or the caller checked `to` is absent.
        rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS => fs::rename(from, to),
        e => Err(e.into()),
    })
}

fn lock_exclusive(file: &File) -> io::Result<()> {
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)
}

/// The folder `path` is in (`.` for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether the owner of the job folder `path` is gone: its lock can be taken. The lock taken
/// here is released when the returned handle drops.
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

/// Whether `path` holds Millrace's marker: a regular file (not a link, FIFO or device; opened
/// without following links or waiting) with exactly the marker's text.
fn has_marker(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path.join(MARKER))
    else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut text = Vec::with_capacity(MARKER_TEXT.len() + 1);
    file.take(MARKER_TEXT.len() as u64 + 1)
        .read_to_end(&mut text)
        .is_ok()
        && text == MARKER_TEXT
}

/// Whether a staging folder holds the marker and nothing else.
fn only_marker(path: &Path) -> bool {
    has_marker(path)
        && fs::read_dir(path)
            .is_ok_and(|entries| entries.flatten().all(|e| e.file_name() == MARKER))
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// The owner's PID in a staging folder's name when the name is exactly `PID-N-RANDOM` as
/// [`JobTempDir`] makes it.
fn staging_owner(name: &str) -> Option<rustix::process::Pid> {
    let id = name.strip_prefix(STAGING_PREFIX)?;
    let parts: Vec<&str> = id.split('-').collect();
    let [pid, n, random] = parts[..] else {
        return None;
    };
    let ours = !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    ours.then(|| rustix::process::Pid::from_raw(pid.parse().ok()?))
        .flatten()
}

/// Whether an empty staging folder lost its owner: its name is ours and the PID in it is no
/// live process here, or it is older than [`STAGING_GRACE`] (another PID namespace sharing
/// the folder may reuse the PID).
fn empty_staging_abandoned(name: &str, meta: &fs::Metadata) -> bool {
    let Some(pid) = staging_owner(name) else {
        return false;
    };
    if pid.as_raw_nonzero().get() as u32 == std::process::id() {
        return false;
    }
    // Signal 0 sends nothing; ESRCH says no such process.
    is_old(meta)
        || matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
}

/// Removes the job folders in `folder` (spill or output job folders) whose owner has died;
/// returns how many. Only folders named like Millrace's that carry its marker are considered.
pub fn remove_stale(folder: &Path) -> usize {
    let Ok(entries) = fs::read_dir(folder) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let staging = name.starts_with(STAGING_PREFIX);
        if !staging && !name.starts_with(SPILL_PREFIX) && !name.starts_with(OUTPUT_PREFIX) {
            continue;
        }
        let path = entry.path();
        // Never follow a link out of the folder.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let eligible = if staging {
            if is_empty_dir(&path) {
                if empty_staging_abandoned(&name, &meta) && fs::remove_dir(&path).is_ok() {
                    info!(path = %path.display(), "removed the empty staging folder of a job that is gone");
                    removed += 1;
                }
                continue;
            }
            only_marker(&path)
        } else {
            has_marker(&path)
        };
        if !eligible {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_job_folder(folder: &Path, name: &str, marker: bool) -> PathBuf {
        let dead = folder.join(name);
        fs::create_dir(&dead).unwrap();
        if marker {
            fs::write(dead.join(MARKER), MARKER_TEXT).unwrap();
        }
        fs::write(dead.join("run-0.seg"), b"data").unwrap();
        dead
    }

    /// Live job folders stay, dead marked ones go, and anything that merely looks alike (no
    /// marker, a file, a link) stays.
    #[test]
    fn live_folders_stay_dead_ones_go_lookalikes_stay() {
        let spill = tempfile::tempdir().unwrap();
        let live = JobTempDir::create(spill.path()).unwrap();
        assert!(has_marker(live.path()));
        let output = JobTempDir::for_output(&spill.path().join("out")).unwrap();
        let dead = dead_job_folder(spill.path(), &format!("{SPILL_PREFIX}999999-0"), true);
        let dead_output = dead_job_folder(spill.path(), &format!("{OUTPUT_PREFIX}999999-0"), true);
        let users = dead_job_folder(spill.path(), &format!("{SPILL_PREFIX}999999-1"), false);
        let user_file = spill.path().join(format!("{OUTPUT_PREFIX}7"));
        fs::write(&user_file, b"mine").unwrap();
        // Staging folders: marked and unlocked (owner died before the rename) goes; empty
        // with a dead PID (owner died before the lock) goes; empty with a live PID stays.
        let marked_staging =
            dead_job_folder(spill.path(), &format!("{STAGING_PREFIX}1-1-0000abcd"), true);
        fs::remove_file(marked_staging.join("run-0.seg")).unwrap();
        let dead_staging = spill
            .path()
            .join(format!("{STAGING_PREFIX}{}-3-0000abcd", i32::MAX));
        fs::create_dir(&dead_staging).unwrap();
        let young_staging = spill.path().join(format!("{STAGING_PREFIX}1-2-0000abcd"));
        fs::create_dir(&young_staging).unwrap();
        let unrelated = spill.path().join("keep-me");
        fs::create_dir(&unrelated).unwrap();
        assert_eq!(remove_stale(spill.path()), 4);
        assert!(!dead.exists() && !dead_output.exists());
        assert!(!marked_staging.exists() && !dead_staging.exists());
        for kept in [
            live.path(),
            output.path(),
            &users,
            &user_file,
            &young_staging,
            &unrelated,
        ] {
            assert!(kept.exists(), "{kept:?}");
        }
        let paths = [live.path().to_path_buf(), output.path().to_path_buf()];
        drop((live, output));
        assert!(paths.iter().all(|p| !p.exists()));
    }

    #[test]
    fn spill_dir_must_exist() {
        let error = JobTempDir::create(Path::new("/nonexistent/spill")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/spill"), "{error}");
    }

    /// A marker that is a FIFO, a device or a link is no marker, and reading it never hangs
    /// or reads without end; an empty staging folder is not ours either.
    #[test]
    fn hostile_markers_neither_hang_nor_count() {
        let folder = tempfile::tempdir().unwrap();
        let fifo = folder.path().join(format!("{SPILL_PREFIX}1-0"));
        fs::create_dir(&fifo).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(fifo.join(MARKER))
            .status()
            .unwrap()
            .success());
        let zero = folder.path().join(format!("{OUTPUT_PREFIX}1-1"));
        fs::create_dir(&zero).unwrap();
        std::os::unix::fs::symlink("/dev/zero", zero.join(MARKER)).unwrap();
        let linked = folder.path().join(format!("{OUTPUT_PREFIX}1-2"));
        fs::create_dir(&linked).unwrap();
        let real = folder.path().join("real-marker");
        fs::write(&real, MARKER_TEXT).unwrap();
        std::os::unix::fs::symlink(&real, linked.join(MARKER)).unwrap();
        fs::write(linked.join("mine"), b"mine").unwrap();
        let staging = folder.path().join(format!("{STAGING_PREFIX}mine"));
        fs::create_dir(&staging).unwrap();
        assert!(std::process::Command::new("touch")
            .args(["-d", "20 minutes ago"])
            .arg(&staging)
            .status()
            .unwrap()
            .success());
        let started = std::time::Instant::now();
        assert_eq!(remove_stale(folder.path()), 0);
        assert!(started.elapsed() < Duration::from_secs(5));
        for kept in [&fifo, &zero, &linked, &staging] {
            assert!(kept.exists(), "{kept:?}");
        }
    }
}
