//! [`EngineError`]: what can make a job fail, classified for the scheduler and the CLI.

use std::io;
use std::path::PathBuf;

use shuffle::ShuffleError;

/// Who has to act on an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorDomain {
    /// Bad input, flags or environment: the user fixes it; retrying does not help.
    User,
    /// Disk, network or machine trouble; a retry may succeed.
    Io,
    /// A broken invariant inside Millrace: a bug to report.
    Internal,
}

/// Errors of the runtime and its jobs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("input {path}")]
    InputUnreadable { path: PathBuf, source: io::Error },
    #[error("input {path}: size {size_bytes} is not a multiple of {record_bytes} bytes; the partial record starts at byte offset {offset}")]
    PartialRecord {
        path: PathBuf,
        size_bytes: u64,
        record_bytes: usize,
        offset: u64,
    },
    #[error("output {path}: {reason}")]
    BadOutput { path: PathBuf, reason: String },
    #[error("spill dir {path}: {reason}")]
    BadSpillDir { path: PathBuf, reason: String },
    #[error("memory budget of {budget_bytes} bytes is too small: {what} needs at least {minimum_bytes} bytes; raise --memory")]
    BudgetTooSmall {
        budget_bytes: u64,
        minimum_bytes: u64,
        what: String,
    },
    /// Boxed: the paths and roles of two files would make every `Result` large.
    #[error(transparent)]
    Path(Box<crate::paths::PathError>),
    #[error("disk full: writing {path} needs {needed_bytes} bytes; free space or choose another output folder")]
    DiskFull { path: PathBuf, needed_bytes: u64 },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{flag} {value} is more than {limit} allows; at most {max} fit")]
    TooMany {
        flag: &'static str,
        value: usize,
        limit: String,
        max: usize,
    },
    #[error("invalid job: {reason}")]
    InvalidJob { reason: String },
    #[error(transparent)]
    Shuffle(ShuffleError),
    #[error(transparent)]
    Spill(#[from] shuffle::spill::SpillError),
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
    #[error("integrity check failed: {what}; this is a bug, please report it")]
    Integrity { what: String },
    /// A failure injected by the test hook `MILLRACE_FAIL_ATTEMPTS`.
    #[error("injected failure of {what}")]
    Injected { what: String },
    #[error("internal error: {what}; this is a bug, please report it")]
    Internal { what: String },
}

impl From<ShuffleError> for EngineError {
    fn from(error: ShuffleError) -> Self {
        match error {
            // A spill write or read failed: the disk's error, not a peer's.
            ShuffleError::Spill(error) => Self::Spill(error),
            error => Self::Shuffle(error),
        }
    }
}

impl From<crate::paths::PathError> for EngineError {
    fn from(error: crate::paths::PathError) -> Self {
        Self::Path(Box::new(error))
    }
}

impl EngineError {
    /// Who has to act on this error.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::InputUnreadable { .. }
            | Self::PartialRecord { .. }
            | Self::BadOutput { .. }
            | Self::Path(_)
            | Self::BadSpillDir { .. }
            | Self::BudgetTooSmall { .. }
            | Self::DiskFull { .. }
            | Self::TooMany { .. }
            | Self::InvalidJob { .. }
            | Self::Batch(_) => ErrorDomain::User,
            // A full disk stays full for the next attempt: the user's to fix, not retried.
            Self::Spill(error) if error.is_disk_full() => ErrorDomain::User,
            Self::Io { .. } | Self::Shuffle(_) | Self::Spill(_) | Self::Injected { .. } => {
                ErrorDomain::Io
            }
            Self::Integrity { .. } | Self::Internal { .. } => ErrorDomain::Internal,
        }
    }

    /// Errors that only echo another subtask's failure (a peer went away, in this process
    /// or across the network: a consumer gone, a producer lost or failed on another
    /// executor); the scheduler reports the root cause instead when it has one.
    pub fn is_secondary(&self) -> bool {
        matches!(
            self,
            Self::Shuffle(
                ShuffleError::ConsumerGone { .. }
                    | ShuffleError::ProducerLost { .. }
                    | ShuffleError::ProducerFailed { .. }
                    | ShuffleError::RemoteConsumerGone { .. }
                    | ShuffleError::RemoteProducerLost { .. }
                    | ShuffleError::RemoteProducerFailed { .. }
            )
        )
    }

    /// Wraps an I/O error on `path`, turning "no space left" into [`EngineError::DiskFull`].
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        needed_bytes: u64,
        source: io::Error,
    ) -> Self {
        if source.kind() == io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(libc::ENOSPC)
        {
            Self::DiskFull {
                path: path.into(),
                needed_bytes,
            }
        } else {
            Self::Io {
                op,
                path: path.into(),
                source,
            }
        }
    }
}
