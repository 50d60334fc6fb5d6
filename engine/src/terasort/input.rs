//! Opening the sort input (files in place, streams spooled) and mapping it: the one place in
//! the TeraSort job with `unsafe`.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shuffle::MappedFile;

use crate::record::RECORD_LEN;
use crate::tempdir::JobTempDir;
use crate::EngineError;

/// An opened input: a regular file read in place, or a stream spooled to the spill folder.
#[derive(Debug)]
pub struct OpenInput {
    pub file: File,
    pub size: u64,
    /// Where a stream was spooled to (an unlinked file in this job folder); `None` when the
    /// input is a regular file read in place.
    pub spool: Option<JobTempDir>,
}

/// How an input path is named in messages: `-` is standard input.
pub fn shown(path: &Path) -> PathBuf {
    if crate::paths::is_std_stream(path) {
        PathBuf::from("standard input")
    } else {
        path.to_path_buf()
    }
}

/// Opens the input (`-` is standard input) and checks it holds whole records. A regular file
/// is read in place; anything else that can be read (a pipe, a FIFO, a device, a `/proc` file
/// whose size says 0) is streamed into an unlinked file in a job folder of `spill_dir`, counted
/// in `spooled_bytes`, and sorted from there.
pub fn open_input(
    path: &Path,
    spill_dir: &Path,
    spooled_bytes: &AtomicU64,
) -> Result<OpenInput, EngineError> {
    let unreadable = |source| EngineError::InputUnreadable {
        path: shown(path),
        source,
    };
    let file = if crate::paths::is_std_stream(path) {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(unreadable)?
    } else {
        File::open(path).map_err(unreadable)?
    };
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a folder, expected a file of records",
        )));
    }
    // Files in /proc and /sys say 0 bytes and still have content: look before trusting it.
    // Standard input redirected from a file is read from where its position stands, as a
    // stream (GNU sort does the same).
    let at_start = !crate::paths::is_std_stream(path)
        || rustix::fs::seek(&file, rustix::fs::SeekFrom::Current(0)).is_ok_and(|at| at == 0);
    let in_place = meta.is_file()
        && at_start
        && (meta.len() > 0 || file.read_at(&mut [0u8; 1], 0).map_err(unreadable)? == 0);
    let (file, size, spool) = if in_place {
        (file, meta.len(), None)
    } else {
        let (spooled, size, dir) = spool(file, path, spill_dir, spooled_bytes)?;
        (spooled, size, Some(dir))
    };
    if size % RECORD_LEN as u64 != 0 {
        return Err(EngineError::PartialRecord {
            path: shown(path),
            size_bytes: size,
            record_bytes: RECORD_LEN,
            offset: size - size % RECORD_LEN as u64,
        });
    }
    Ok(OpenInput { file, size, spool })
}

/// Copies a stream into an unlinked file in a new job folder of `spill_dir`.
fn spool(
    mut stream: File,
    path: &Path,
    spill_dir: &Path,
    spooled_bytes: &AtomicU64,
) -> Result<(File, u64, JobTempDir), EngineError> {
    let dir = JobTempDir::create(spill_dir)?;
    let spool_path = dir.path().join("input.spool");
    let spool = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&spool_path)
        .map_err(|e| EngineError::io("create the input spool in", spill_dir, 0, e))?;
    std::fs::remove_file(&spool_path)
        .map_err(|e| EngineError::io("unlink the input spool in", spill_dir, 0, e))?;
    let mut buffer = vec![0u8; SPOOL_CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(EngineError::InputUnreadable {
                    path: shown(path),
                    source,
                })
            }
        };
        spool
            .write_all_at(&buffer[..n], size)
            .map_err(|e| EngineError::io("spool the input into", spill_dir, size + n as u64, e))?;
        size += n as u64;
        spooled_bytes.store(size, Ordering::Relaxed);
    }
    tracing::info!(bytes = size, dir = %dir.path().display(), "spooled a streamed input");
    Ok((spool, size, dir))
}

/// Bytes read from a stream per call while spooling.
const SPOOL_CHUNK_BYTES: usize = 4 << 20;

/// Maps the first `size` bytes of the input read-only.
#[allow(unsafe_code)]
pub fn map_input(file: &File, size: u64, path: &Path) -> Result<MappedFile, EngineError> {
    // SAFETY: the input was opened read-only and its size checked; Millrace never writes it
    // (the output may not be the input), and the job re-checks the size before it commits.
    // Truncating the input from another process while a sort runs is documented as
    // unsupported (README: a truncated mapped file raises SIGBUS).
    let map =
        unsafe { MappedFile::map(file, size) }.map_err(|source| EngineError::InputUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    map.advise_sequential();
    Ok(map)
}
