//! Read-only memory maps of files.
//!
//! Contract (the caller's, hence [`MappedFile::map`] is an `unsafe fn`): while a map exists,
//! nobody truncates or rewrites the mapped range of the file.
//! Millrace keeps it for its own files by creating them in private folders and never
//! truncating them while mapped; for user input it opens the file read-only and checks its
//! size before mapping and after the job, and documents that truncating an input while a job
//! reads it is not supported (reading a page past the new end raises SIGBUS, as with every
//! mmap reader).
//!
//! Spill segment files (`crate::spill`) keep the contract by construction, which is why
//! [`map_spill_segment`] is a safe, crate-private function: the writer creates each file with
//! `create_new` and mode 0600 in a folder the caller made private to the job, writes every
//! byte once (a segment's bytes are complete before it is sealed, later segments start past
//! its 4 KiB padding), and nothing in Millrace truncates or rewrites a spill file; the reader
//! maps only sealed segments, after checking the file's size against the index, and the
//! caller deletes the folder only after dropping its readers.
//! The engine goes further: it unlinks each spill file right after creating it
//! ([`crate::spill::SegmentFileWriter::unlink`]) and reads it through the writer's own handle,
//! so no other process can even open the file to truncate it under a map.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fs::File;
use std::io;
use std::ops::Deref;

/// Bytes around a read fault that Linux maps along with the faulting page, when they are in
/// the page cache (`fault_around_bytes`, 64 KiB by default, a window aligned to its size):
/// readers that release pages behind them allow for it, and merges count it per source.
pub const FAULT_AROUND_BYTES: usize = 64 << 10;

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

    /// Maps `len` bytes of `file` read-only, starting at byte `offset` (any offset: the
    /// page alignment is handled here).
    ///
    /// # Safety
    /// Bytes `offset..offset + len` of the file must not be truncated or modified while the
    /// map (or any slice of it) is alive.
    pub unsafe fn map_range(file: &File, offset: u64, len: u64) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self { map: None });
        }
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "mapped range overflows u64")
        })?;
        let actual = file.metadata()?.len();
        if actual < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file is {actual} bytes long, too short to map bytes {offset}..{end}"),
            ));
        }
        let len = usize::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapped range exceeds the address space",
            )
        })?;
        // SAFETY: the caller keeps the range unchanged while the map lives, and we just
        // checked that it exists.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(file)?
        };
        Ok(Self { map: Some(map) })
    }

    /// Tells the kernel that bytes `start..start + len` of the map will be read soon (a hint:
    /// out-of-range requests and failures are ignored).
    pub fn advise_willneed(&self, start: usize, len: usize) {
        if let Some(map) = &self.map {
            if start.checked_add(len).is_some_and(|end| end <= map.len()) && len > 0 {
                let _ = map.advise_range(memmap2::Advice::WillNeed, start, len);
            }
        }
    }

    /// Drops the pages of bytes `start..start + len` (whole pages inside it) from this
    /// process's memory: the map stays valid and reads them again from the file if touched.
    /// Readers call this behind their cursor so that reading a large file through a map does
    /// not grow the resident set.
    pub fn release(&self, start: usize, len: usize) {
        const PAGE: usize = 4096;
        let Some(map) = &self.map else { return };
        let Some(end) = start.checked_add(len) else {
            return;
        };
        let (from, to) = (
            start.div_ceil(PAGE) * PAGE,
            end.min(map.len()) / PAGE * PAGE,
        );
        if from < to {
            // SAFETY: this is a shared, read-only map of a file that nobody modifies (the
            // module contract); MADV_DONTNEED on such a map only drops page-table entries, and
            // the next access reads the same bytes from the page cache or the file, so every
            // slice of the map stays valid and unchanged.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)
            };
        }
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

/// Maps bytes `offset..offset + len` of a sealed spill segment (see the module doc for why
/// this is safe).
pub(crate) fn map_spill_segment(file: &File, offset: u64, len: u64) -> io::Result<MappedFile> {
    // SAFETY: `file` is a spill file and `offset..offset + len` a sealed segment of it, which
    // nothing truncates or rewrites while it is mapped (the spill contract in the module doc).
    unsafe { MappedFile::map_range(file, offset, len) }
}
