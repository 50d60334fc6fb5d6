//! Errors of segment files.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::block::BlockError;
use super::index::IndexError;

/// What can go wrong while writing or reading a segment file.
///
/// Every variant names the file; I/O errors also name the operation and the byte offset.
/// The type is `Clone` (I/O errors are shared behind an `Arc`) so that a poisoned writer can
/// return its first error again on every later call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SpillError {
    /// The file system ran out of space (or quota).
    #[error("disk full while writing spill file {}: {needed_bytes} more bytes were needed; free space in the spill folder or point spilling at a larger disk", path.display())]
    DiskFull { path: PathBuf, needed_bytes: u64 },
    /// The file could not be created (missing or read-only folder, no permission, name taken).
    #[error("cannot create spill file {}: {source}; the spill folder must exist, be writable and not already hold this file", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// Any other I/O failure.
    #[error("spill file {}: {operation} at offset {offset} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        operation: &'static str,
        offset: u64,
        #[source]
        source: Arc<io::Error>,
    },
    /// `IoEngine::Uring` was asked for and the kernel (or a sandbox) refuses io_uring.
    #[error("io_uring is not available here ({reason}); use the auto or pwrite I/O engine")]
    UringUnavailable { reason: String },
    /// The file is shorter than its index says.
    #[error("spill file {} is {actual_bytes} bytes long but its index needs {expected_bytes}; the file was truncated; rerun the producer", path.display())]
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    /// A block failed its checks.
    #[error("spill file {}: corrupt block at offset {offset} (segment {segment}, partition {partition}): {reason}; the file was damaged or overwritten; rerun the producer", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        segment: u32,
        partition: u32,
        #[source]
        reason: BlockError,
    },
    /// A sidecar index failed its checks.
    #[error("spill index {}: {reason}; the index was damaged; rerun the producer", path.display())]
    BadIndex {
        path: PathBuf,
        #[source]
        reason: IndexError,
    },
    /// The caller broke the writer's or reader's rules (this is a bug in the caller).
    #[error("spill file {}: {what} (this is a bug in the caller, please report it)", path.display())]
    Misuse { path: PathBuf, what: String },
    /// An internal invariant failed.
    #[error("spill file {}: {what}; this is a bug, please report it", path.display())]
    Internal { path: PathBuf, what: String },
}

impl SpillError {
    /// Maps a failed write of `len` bytes at `offset`: a full disk (or quota) becomes
    /// [`SpillError::DiskFull`], anything else [`SpillError::Io`].
    pub(crate) fn write(path: PathBuf, offset: u64, len: usize, error: io::Error) -> Self {
        Self::io(path, "write", offset, len, error)
    }

    /// Like [`SpillError::write`], for any operation that needs `len` more bytes of disk.
    pub(crate) fn io(
        path: PathBuf,
        operation: &'static str,
        offset: u64,
        len: usize,
        error: io::Error,
    ) -> Self {
        if is_disk_full(&error) {
            return SpillError::DiskFull {
                path,
                needed_bytes: len as u64,
            };
        }
        SpillError::Io {
            path,
            operation,
            offset,
            source: Arc::new(error),
        }
    }

    /// Whether the error means the disk (or quota) is full, wherever it happened.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpillError::DiskFull { .. })
    }
}

fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}
