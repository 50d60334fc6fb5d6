//! [`SegmentFileReader`]: maps sealed segments of a segment file read-only and hands out
//! their blocks without copying.
//!
//! A reader knows only the segments it was given (from the writer's
//! [`seal_segment`](super::SegmentFileWriter::seal_segment) in the same process, or from the
//! sidecar index), so it can read a file while the writer still appends later segments.
//! Each segment is mapped on first use, after checking that the file is long enough for it:
//! a truncated file is a [`SpillError::Truncated`], not a SIGBUS.
//!
//! Mapping relies on the spill contract in `crate::mmap`: the file was created by a
//! [`SegmentFileWriter`](super::SegmentFileWriter) in a folder private to the job, sealed
//! bytes are never written again, and nothing truncates the file while a reader lives.
//! Open only such files.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::block::{decode_block, BlockError, DecodedBlock};
use super::index::{check_follows, FileIndex, PartitionEntry, SegmentIndex};
use super::SpillError;
use crate::mmap::{map_spill_segment, MappedFile};

/// Reads sealed segments of one segment file.
#[derive(Debug)]
pub struct SegmentFileReader {
    path: PathBuf,
    file: File,
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct Segment {
    index: SegmentIndex,
    map: OnceLock<MappedFile>,
}

impl SegmentFileReader {
    /// Opens a finished file through its sidecar index (see [`FileIndex::write_sidecar`]).
    pub fn open(path: &Path) -> Result<Self, SpillError> {
        let index = FileIndex::read_sidecar(path)?;
        Self::with_segments(path, index.segments)
    }

    /// Opens a file whose segments are known from the writer (it may still be writing).
    pub fn with_segments(
        path: &Path,
        segments: impl IntoIterator<Item = SegmentIndex>,
    ) -> Result<Self, SpillError> {
        let file = File::open(path).map_err(|e| SpillError::Io {
            path: path.to_path_buf(),
            operation: "open",
            offset: 0,
            source: Arc::new(e),
        })?;
        Self::from_file(path, file, segments)
    }

    /// Reads `segments` through an open handle (the file may have no name any more); `path`
    /// only names it in errors.
    pub fn from_file(
        path: &Path,
        file: File,
        segments: impl IntoIterator<Item = SegmentIndex>,
    ) -> Result<Self, SpillError> {
        let mut reader = Self {
            path: path.to_path_buf(),
            file,
            segments: Vec::new(),
        };
        for index in segments {
            reader.add_segment(index)?;
        }
        Ok(reader)
    }

    /// Makes a newly sealed segment readable; segments are added in file order.
    pub fn add_segment(&mut self, index: SegmentIndex) -> Result<(), SpillError> {
        let checked = index.validate().and_then(|()| match self.segments.last() {
            Some(previous) => check_follows(&previous.index, &index),
            None => Ok(()),
        });
        checked.map_err(|reason| SpillError::BadIndex {
            path: self.path.clone(),
            reason,
        })?;
        self.segments.push(Segment {
            index,
            map: OnceLock::new(),
        });
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The segments known to the reader, in file order.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentIndex> + '_ {
        self.segments.iter().map(|s| &s.index)
    }

    /// The index of segment `segment`.
    pub fn segment(&self, segment: u32) -> Option<&SegmentIndex> {
        self.find(segment).ok().map(|s| &s.index)
    }

    /// The blocks of `partition` in `segment`, in order, checked as they are read.
    ///
    /// Uncompressed blocks borrow from the map; an absent partition yields nothing.
    /// After the first error the iterator ends.
    pub fn partition_blocks(
        &self,
        segment: u32,
        partition: u32,
    ) -> Result<PartitionBlocks<'_>, SpillError> {
        let (seg, map) = self.mapped(segment)?;
        let (bytes, entry) = match seg.index.partition(partition) {
            Some(entry) => (range(&seg.index, map, entry), Some(entry.clone())),
            None => (&[][..], None),
        };
        Ok(PartitionBlocks {
            path: &self.path,
            segment,
            partition,
            base: entry.as_ref().map_or(0, |e| e.offset),
            map,
            map_start: entry
                .as_ref()
                .map_or(0, |e| (e.offset - seg.index.offset) as usize),
            release: false,
            released: 0,
            bytes,
            at: 0,
            records: 0,
            blocks: 0,
            entry,
            done: false,
        })
    }

    /// The encoded bytes of `partition` in `segment` (block headers and payloads, as stored),
    /// after checking them against the range checksum of the index; empty if absent.
    ///
    /// For shipping or copying a range as is; [`Self::partition_blocks`] decodes instead.
    pub fn partition_bytes(&self, segment: u32, partition: u32) -> Result<&[u8], SpillError> {
        let (seg, map) = self.mapped(segment)?;
        let Some(entry) = seg.index.partition(partition) else {
            return Ok(&[]);
        };
        let bytes = range(&seg.index, map, entry);
        let computed = crc32c::crc32c(bytes);
        if computed != entry.crc32c {
            return Err(SpillError::Corrupt {
                path: self.path.clone(),
                offset: entry.offset,
                segment,
                partition,
                reason: BlockError::IndexMismatch {
                    what: format!(
                        "range checksum is {computed:#010x}, the index says {:#010x}",
                        entry.crc32c
                    ),
                },
            });
        }
        Ok(bytes)
    }

    /// Asks the kernel to read `partition` of `segment` (or the whole segment) ahead, in
    /// order; a hint, so failures are ignored.
    pub fn advise_willneed(&self, segment: u32, partition: Option<u32>) -> Result<(), SpillError> {
        let (seg, map) = self.mapped(segment)?;
        let (start, len) = match partition.and_then(|p| seg.index.partition(p)) {
            Some(entry) => (
                (entry.offset - seg.index.offset) as usize,
                entry.len as usize,
            ),
            None if partition.is_some() => return Ok(()),
            None => (0, map.len()),
        };
        map.advise_willneed(start, len);
        map.advise_sequential();
        Ok(())
    }

    /// Asks the kernel to read bytes `file_offset..file_offset + len` of `segment` ahead (a
    /// hint; ranges outside the segment are clipped).
    pub fn will_need(&self, segment: u32, file_offset: u64, len: u64) -> Result<(), SpillError> {
        let (seg, map) = self.mapped(segment)?;
        if let Some((start, len)) = clip(&seg.index, file_offset, len) {
            map.advise_willneed(start, len);
        }
        Ok(())
    }

    /// Drops bytes `file_offset..file_offset + len` of `segment` from this process's memory
    /// (whole pages); reading them again is still correct. Merges call this behind their
    /// cursors so the resident set stays small however large the runs are.
    pub fn release(&self, segment: u32, file_offset: u64, len: u64) -> Result<(), SpillError> {
        let (seg, map) = self.mapped(segment)?;
        if let Some((start, len)) = clip(&seg.index, file_offset, len) {
            map.release(start, len);
        }
        Ok(())
    }

    /// Unmaps `segment` (it is mapped again if read again).
    pub fn release_segment(&mut self, segment: u32) {
        if let Ok(at) = self
            .segments
            .binary_search_by_key(&segment, |s| s.index.segment)
        {
            self.segments[at].map = OnceLock::new();
        }
    }

    fn find(&self, segment: u32) -> Result<&Segment, SpillError> {
        self.segments
            .binary_search_by_key(&segment, |s| s.index.segment)
            .map(|at| &self.segments[at])
            .map_err(|_| SpillError::Misuse {
                path: self.path.clone(),
                what: format!(
                    "segment {segment} is not sealed or not known to this reader ({} segments are)",
                    self.segments.len()
                ),
            })
    }

    /// The segment and its map, mapping it on first use after checking the file's size.
    fn mapped(&self, segment: u32) -> Result<(&Segment, &MappedFile), SpillError> {
        let seg = self.find(segment)?;
        if let Some(map) = seg.map.get() {
            return Ok((seg, map));
        }
        let io_error = |operation, e| SpillError::Io {
            path: self.path.clone(),
            operation,
            offset: seg.index.offset,
            source: Arc::new(e),
        };
        let actual = self.file.metadata().map_err(|e| io_error("stat", e))?.len();
        if actual < seg.index.end() {
            return Err(SpillError::Truncated {
                path: self.path.clone(),
                expected_bytes: seg.index.end(),
                actual_bytes: actual,
            });
        }
        let map = map_spill_segment(&self.file, seg.index.offset, seg.index.len)
            .map_err(|e| io_error("map", e))?;
        // Another thread may have mapped it meanwhile; either map is fine.
        let _ = seg.map.set(map);
        Ok((seg, seg.map.get().expect("set just above")))
    }
}

/// The part of file range `offset..offset + len` inside `segment`, as (map offset, length).
fn clip(segment: &SegmentIndex, offset: u64, len: u64) -> Option<(usize, usize)> {
    let start = offset.max(segment.offset);
    let end = offset.saturating_add(len).min(segment.offset + segment.len);
    (start < end).then(|| ((start - segment.offset) as usize, (end - start) as usize))
}

/// The bytes of `entry` inside its segment's map (ranges were validated with the index).
fn range<'a>(segment: &SegmentIndex, map: &'a MappedFile, entry: &PartitionEntry) -> &'a [u8] {
    let start = (entry.offset - segment.offset) as usize;
    &map[start..start + entry.len as usize]
}

/// The blocks of one partition of one segment; see [`SegmentFileReader::partition_blocks`].
#[derive(Debug)]
pub struct PartitionBlocks<'a> {
    path: &'a Path,
    segment: u32,
    partition: u32,
    /// File offset of `bytes[0]`.
    base: u64,
    /// The segment's map, and the offset of `bytes[0]` in it.
    map: &'a MappedFile,
    map_start: usize,
    /// Whether the bytes of blocks already handed out are dropped from memory; up to where.
    release: bool,
    released: usize,
    bytes: &'a [u8],
    at: usize,
    records: u64,
    blocks: u32,
    entry: Option<PartitionEntry>,
    done: bool,
}

impl<'a> PartitionBlocks<'a> {
    /// Drops the pages of each block handed out once the next one is asked for (the caller
    /// is done with its payload by then), so that reading a large partition through the map
    /// does not grow the resident set. A payload still held stays valid: its pages are read
    /// again from the page cache or the file if touched.
    pub fn releasing(mut self) -> Self {
        self.release = true;
        self
    }

    fn corrupt(&mut self, at: usize, reason: BlockError) -> SpillError {
        self.done = true;
        SpillError::Corrupt {
            path: self.path.to_path_buf(),
            offset: self.base + at as u64,
            segment: self.segment,
            partition: self.partition,
            reason,
        }
    }

    fn next_block(&mut self) -> Option<Result<DecodedBlock<'a>, SpillError>> {
        if self.release && self.at > self.released {
            // Whole pages, those shared with the neighbours' bytes included (read again if
            // touched). A read fault maps the aligned fault-around window of pages around it,
            // so: the first time from the segment's start (what reads of earlier partitions
            // left), then from a window behind the last release.
            const PAGE: usize = 4096;
            let from = match self.released {
                0 => 0,
                r => (self.map_start + r).saturating_sub(crate::mmap::FAULT_AROUND_BYTES),
            };
            let to = (self.map_start + self.at).next_multiple_of(PAGE);
            self.map
                .release(from / PAGE * PAGE, to - from / PAGE * PAGE);
            self.released = self.at;
        }
        if self.done {
            return None;
        }
        if self.at == self.bytes.len() {
            self.done = true;
            let entry = self.entry.as_ref()?;
            if entry.records != self.records || entry.blocks != self.blocks {
                let what = format!(
                    "{} blocks with {} records, the index says {} blocks with {} records",
                    self.blocks, self.records, entry.blocks, entry.records
                );
                return Some(Err(
                    self.corrupt(self.at, BlockError::IndexMismatch { what })
                ));
            }
            return None;
        }
        let at = self.at;
        let block = match decode_block(&self.bytes[at..]) {
            Ok(block) => block,
            Err(reason) => return Some(Err(self.corrupt(at, reason))),
        };
        if block.partition() != self.partition {
            let reason = BlockError::WrongPartition {
                expected: self.partition,
                found: block.partition(),
            };
            return Some(Err(self.corrupt(at, reason)));
        }
        self.at += block.encoded_len();
        self.records += u64::from(block.records());
        self.blocks += 1;
        Some(Ok(block))
    }
}

impl<'a> Iterator for PartitionBlocks<'a> {
    type Item = Result<DecodedBlock<'a>, SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block()
    }
}

/// Concatenates the payloads of `blocks` (a convenience for tests and small partitions).
pub fn collect_payloads<'a>(
    blocks: impl Iterator<Item = Result<DecodedBlock<'a>, SpillError>>,
) -> Result<Vec<u8>, SpillError> {
    let mut out = Vec::new();
    for block in blocks {
        match block?.payload {
            Cow::Borrowed(bytes) => out.extend_from_slice(bytes),
            Cow::Owned(bytes) => out.extend_from_slice(&bytes),
        }
    }
    Ok(out)
}
