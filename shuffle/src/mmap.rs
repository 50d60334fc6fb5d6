//! Read-only memory maps of files: the one place in this crate that contains `unsafe`.
//!
//! Contract (the caller's, hence [`MappedFile::map`] is an `unsafe fn`): while a map exists,
//! nobody truncates or rewrites the mapped range of the file.
//! Millrace keeps it for its own files by creating them in private folders and never
//! truncating them while mapped; for user input it opens the file read-only and checks its
//! size before mapping and after the job, and documents that truncating an input while a job
//! reads it is not supported (reading a page past the new end raises SIGBUS, as with every
//! mmap reader).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fs::File;
use std::io;
use std::ops::Deref;

/// A read-only map of a whole file.
#[derive(Debug)]
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps `file` read-only, `len` bytes (its size when it was checked).
    ///
    /// # Safety
    /// The first `len` bytes of the file must not be truncated or modified while the map (or
    /// any slice of it) is alive.
    pub unsafe fn map(file: &File, len: u64) -> io::Result<Self> {
        if len == 0 {
            // mmap of zero bytes fails; an empty map is an empty slice.
            return Ok(Self { map: None });
        }
        let actual = file.metadata()?.len();
        if actual < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank from {len} to {actual} bytes before it was mapped"),
            ));
        }
        // SAFETY: the caller keeps the file's first `len` bytes unchanged while the map lives,
        // and we just checked that they exist.
        let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(file)? };
        Ok(Self { map: Some(map) })
    }

    /// Tells the kernel the range will be read soon and in order.
    pub fn advise_sequential(&self) {
        if let Some(map) = &self.map {
            let _ = map.advise(memmap2::Advice::Sequential);
        }
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
