//! Opening and mapping the sort input: the one place in the TeraSort job with `unsafe`.

use std::fs::File;
use std::path::Path;

use shuffle::MappedFile;

use crate::record::RECORD_LEN;
use crate::EngineError;

/// Opens the input and checks it holds whole records; returns the file and its size.
pub fn open_input(path: &Path) -> Result<(File, u64), EngineError> {
    let unreadable = |source| EngineError::InputUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a folder, expected a file of records",
        )));
    }
    let size = meta.len();
    if size % RECORD_LEN as u64 != 0 {
        return Err(EngineError::PartialRecord {
            path: path.to_path_buf(),
            size_bytes: size,
            record_bytes: RECORD_LEN,
            offset: size - size % RECORD_LEN as u64,
        });
    }
    Ok((file, size))
}

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
