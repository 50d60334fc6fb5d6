//! The index of a segment file: where each sealed segment lies and, inside it, where each
//! partition's blocks lie.
//!
//! The writer builds a [`SegmentIndex`] per sealed segment and hands it out at once (a reader
//! in the same process can use it while later segments are written); [`FileIndex`] collects
//! them and can be stored next to the data file as a sidecar (`NAME.index`) for readers in
//! another process.
//!
//! # Sidecar byte layout (all integers little-endian)
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `b"MLRI"` |
//! | 4 | 1 | version `1` |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | segment count |
//! | 12 | 4 | reserved, zero |
//!
//! then, per segment, 32 bytes followed by its partition entries:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | segment ordinal |
//! | 4 | 4 | partition entries that follow |
//! | 8 | 8 | file offset (a multiple of 4096) |
//! | 16 | 8 | length of its blocks |
//! | 24 | 8 | length padded to 4096 |
//!
//! per partition entry, 40 bytes:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | partition |
//! | 4 | 4 | blocks |
//! | 8 | 8 | file offset of its first block |
//! | 16 | 8 | length of its blocks |
//! | 24 | 8 | records |
//! | 32 | 4 | CRC-32C of the range (block headers and payloads, in file order) |
//! | 36 | 4 | reserved, zero |
//!
//! and last a CRC-32C of every byte before it.
//!
//! The range checksum lets whoever copies or ships a partition's range as is check it without
//! decoding; readers that decode blocks rely on the per-block checksums instead.
//! Decoding checks the trailer first, then every count against the bytes present, then that
//! the entries describe a possible file (see [`SegmentIndex::validate`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SpillError;

/// Segments start at multiples of this many bytes and are padded to it.
pub const SEGMENT_ALIGN: u64 = 4096;

const INDEX_MAGIC: [u8; 4] = *b"MLRI";
const INDEX_VERSION: u8 = 1;
const FILE_HEADER_BYTES: usize = 16;
const SEGMENT_BYTES: usize = 32;
const PARTITION_BYTES: usize = 40;

/// Where one partition's blocks lie within a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionEntry {
    /// The sub-partition.
    pub partition: u32,
    /// File offset of its first block.
    pub offset: u64,
    /// Bytes of its blocks (headers and stored payloads), contiguous.
    pub len: u64,
    /// Records in its blocks.
    pub records: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// CRC-32C of the `len` bytes at `offset`.
    pub crc32c: u32,
}

/// One sealed segment: a 4 KiB-aligned byte range of the file, blocks clustered by partition.
///
/// Partitions appear in ascending order and only when they hold at least one block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Ordinal of the segment in its file (0, 1, ...).
    pub segment: u32,
    /// File offset of the segment (a multiple of [`SEGMENT_ALIGN`]).
    pub offset: u64,
    /// Bytes of blocks, from `offset`.
    pub len: u64,
    /// `len` rounded up to [`SEGMENT_ALIGN`]: the next segment starts at `offset + padded_len`.
    pub padded_len: u64,
    /// Non-empty partitions, ascending.
    pub partitions: Vec<PartitionEntry>,
}

/// The index of a whole segment file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileIndex {
    /// Sealed segments, in file order.
    pub segments: Vec<SegmentIndex>,
}

/// What is wrong with an encoded index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// Too few bytes for what the counts announce.
    #[error("index is cut short: {needed} bytes needed, {available} present")]
    Truncated { needed: u64, available: usize },
    /// The trailer checksum does not match.
    #[error("index checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    /// Not an index file.
    #[error("not a segment index (magic {found:02x?}, expected \"MLRI\")")]
    BadMagic { found: [u8; 4] },
    /// Another format version.
    #[error("segment index version {version} is not supported; this build reads version {INDEX_VERSION}")]
    UnsupportedVersion { version: u8 },
    /// Bytes after the last entry.
    #[error("{extra} unexpected bytes after the last index entry")]
    TrailingBytes { extra: usize },
    /// The entries describe an impossible file.
    #[error("segment {segment}: {what}")]
    Inconsistent { segment: u32, what: String },
}

impl SegmentIndex {
    /// The entry of `partition`, if it holds any blocks in this segment.
    pub fn partition(&self, partition: u32) -> Option<&PartitionEntry> {
        self.partitions
            .binary_search_by_key(&partition, |entry| entry.partition)
            .ok()
            .map(|at| &self.partitions[at])
    }

    /// Records in all partitions.
    pub fn records(&self) -> u64 {
        self.partitions.iter().map(|entry| entry.records).sum()
    }

    /// File offset just past the segment's blocks: the file must be at least this long.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Checks that the entry describes a possible segment: aligned, padded as the writer pads,
    /// partitions ascending, and their ranges tiling `[offset, offset + len)` in order.
    pub fn validate(&self) -> Result<(), IndexError> {
        let bad = |what: String| IndexError::Inconsistent {
            segment: self.segment,
            what,
        };
        if !self.offset.is_multiple_of(SEGMENT_ALIGN) {
            return Err(bad(format!("offset {} is not 4096-aligned", self.offset)));
        }
        let padded = self.len.checked_next_multiple_of(SEGMENT_ALIGN);
        if padded != Some(self.padded_len) || self.offset.checked_add(self.padded_len).is_none() {
            return Err(bad(format!(
                "length {} does not pad to {}",
                self.len, self.padded_len
            )));
        }
        let mut next = self.offset;
        let mut previous: Option<u32> = None;
        for entry in &self.partitions {
            if previous.is_some_and(|p| p >= entry.partition) {
                return Err(bad(format!(
                    "partition {} listed after partition {}",
                    entry.partition,
                    previous.unwrap_or_default()
                )));
            }
            if entry.offset != next || entry.blocks == 0 || entry.len == 0 {
                return Err(bad(format!(
                    "partition {} range {}+{} ({} blocks) does not follow the previous one at {next}",
                    entry.partition, entry.offset, entry.len, entry.blocks
                )));
            }
            next = match entry.offset.checked_add(entry.len) {
                Some(end) if end <= self.end() => end,
                _ => {
                    return Err(bad(format!(
                        "partition {} range {}+{} runs past the segment end {}",
                        entry.partition,
                        entry.offset,
                        entry.len,
                        self.end()
                    )))
                }
            };
            previous = Some(entry.partition);
        }
        if next != self.end() {
            return Err(bad(format!(
                "partitions end at {next} but the segment ends at {}",
                self.end()
            )));
        }
        Ok(())
    }
}

impl FileIndex {
    /// Appends the encoded index (layout in the module doc) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&[INDEX_VERSION, 0, 0, 0]);
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for segment in &self.segments {
            out.extend_from_slice(&segment.segment.to_le_bytes());
            out.extend_from_slice(&(segment.partitions.len() as u32).to_le_bytes());
            out.extend_from_slice(&segment.offset.to_le_bytes());
            out.extend_from_slice(&segment.len.to_le_bytes());
            out.extend_from_slice(&segment.padded_len.to_le_bytes());
            for entry in &segment.partitions {
                out.extend_from_slice(&entry.partition.to_le_bytes());
                out.extend_from_slice(&entry.blocks.to_le_bytes());
                out.extend_from_slice(&entry.offset.to_le_bytes());
                out.extend_from_slice(&entry.len.to_le_bytes());
                out.extend_from_slice(&entry.records.to_le_bytes());
                out.extend_from_slice(&entry.crc32c.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks an index produced by [`FileIndex::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        let truncated = |needed: u64| IndexError::Truncated {
            needed,
            available: bytes.len(),
        };
        if bytes.len() < FILE_HEADER_BYTES + 4 {
            return Err(truncated((FILE_HEADER_BYTES + 4) as u64));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(IndexError::Checksum { stored, computed });
        }
        let mut r = Cursor { bytes: body, at: 0 };
        let magic = r.array::<4>()?;
        if magic != INDEX_MAGIC {
            return Err(IndexError::BadMagic { found: magic });
        }
        let [version, ..] = r.array::<4>()?;
        if version != INDEX_VERSION {
            return Err(IndexError::UnsupportedVersion { version });
        }
        let count = r.u32()?;
        r.u32()?;
        // Never allocate from a count before the bytes for it are known to be there.
        r.need(count as u64 * SEGMENT_BYTES as u64)?;
        let mut segments = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let segment = r.u32()?;
            let partitions = r.u32()?;
            let offset = r.u64()?;
            let len = r.u64()?;
            let padded_len = r.u64()?;
            r.need(partitions as u64 * PARTITION_BYTES as u64)?;
            let mut entries = Vec::with_capacity(partitions as usize);
            for _ in 0..partitions {
                let partition = r.u32()?;
                let blocks = r.u32()?;
                let offset = r.u64()?;
                let len = r.u64()?;
                let records = r.u64()?;
                let crc32c = r.u32()?;
                r.u32()?;
                entries.push(PartitionEntry {
                    partition,
                    offset,
                    len,
                    records,
                    blocks,
                    crc32c,
                });
            }
            let index = SegmentIndex {
                segment,
                offset,
                len,
                padded_len,
                partitions: entries,
            };
            index.validate()?;
            if let Some(previous) = segments.last() {
                check_follows(previous, &index)?;
            }
            segments.push(index);
        }
        if r.at != body.len() {
            return Err(IndexError::TrailingBytes {
                extra: body.len() - r.at,
            });
        }
        Ok(Self { segments })
    }

    /// Writes the index next to `data_path` (at [`sidecar_path`]); returns where.
    pub fn write_sidecar(&self, data_path: &Path) -> Result<PathBuf, SpillError> {
        let path = sidecar_path(data_path);
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        fs::write(&path, &bytes)
            .map_err(|e| SpillError::io(path.clone(), "write index", 0, bytes.len(), e))?;
        Ok(path)
    }

    /// Reads and checks the sidecar index of `data_path`.
    pub fn read_sidecar(data_path: &Path) -> Result<Self, SpillError> {
        let path = sidecar_path(data_path);
        let bytes = fs::read(&path).map_err(|e| SpillError::Io {
            path: path.clone(),
            operation: "read index",
            offset: 0,
            source: Arc::new(e),
        })?;
        Self::decode(&bytes).map_err(|reason| SpillError::BadIndex { path, reason })
    }
}

/// Whether `next` may follow `previous` in one file: a higher ordinal, starting at or after
/// the end of `previous`'s padding.
pub(crate) fn check_follows(
    previous: &SegmentIndex,
    next: &SegmentIndex,
) -> Result<(), IndexError> {
    if next.segment <= previous.segment || next.offset < previous.offset + previous.padded_len {
        return Err(IndexError::Inconsistent {
            segment: next.segment,
            what: format!(
                "starts at {} but follows segment {} which ends at {}",
                next.offset,
                previous.segment,
                previous.offset + previous.padded_len
            ),
        });
    }
    Ok(())
}

/// Where the sidecar index of a segment file lives: the data path with `.index` appended.
pub fn sidecar_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn need(&self, n: u64) -> Result<(), IndexError> {
        let needed = self.at as u64 + n;
        if needed > self.bytes.len() as u64 {
            return Err(IndexError::Truncated {
                // The 4-byte trailer was split off before parsing.
                needed: needed + 4,
                available: self.bytes.len() + 4,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], IndexError> {
        self.need(N as u64)?;
        let out = self.bytes[self.at..self.at + N]
            .try_into()
            .expect("need() checked the length");
        self.at += N;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, IndexError> {
        self.array::<8>().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Indexes that a writer could have produced.
    fn file_indexes() -> impl Strategy<Value = FileIndex> {
        proptest::collection::vec(
            (
                0u32..3,
                proptest::collection::vec(
                    (0u32..5, 1u64..100_000, 0u64..1000, 1u32..9, any::<u32>()),
                    0..6,
                ),
            ),
            0..5,
        )
        .prop_map(|segments| {
            let mut offset = 0u64;
            let mut ordinal = 0u32;
            let mut out = Vec::new();
            for (skip, parts) in segments {
                ordinal += skip;
                let mut at = offset;
                let mut partition = 0u32;
                let partitions: Vec<PartitionEntry> = parts
                    .into_iter()
                    .map(|(gap, len, records, blocks, crc32c)| {
                        partition += gap;
                        let entry = PartitionEntry {
                            partition,
                            offset: at,
                            len,
                            records,
                            blocks,
                            crc32c,
                        };
                        partition += 1;
                        at += len;
                        entry
                    })
                    .collect();
                let len = at - offset;
                let padded_len = len.next_multiple_of(SEGMENT_ALIGN);
                out.push(SegmentIndex {
                    segment: ordinal,
                    offset,
                    len,
                    padded_len,
                    partitions,
                });
                offset += padded_len;
                ordinal += 1;
            }
            FileIndex { segments: out }
        })
    }

    proptest! {
        #[test]
        fn round_trip(index in file_indexes()) {
            let mut bytes = Vec::new();
            index.encode(&mut bytes);
            prop_assert_eq!(FileIndex::decode(&bytes).unwrap(), index);
        }

        #[test]
        fn any_flipped_byte_is_detected(index in file_indexes(), position: prop::sample::Index, flip in 1u8..=255) {
            let mut bytes = Vec::new();
            index.encode(&mut bytes);
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            prop_assert!(FileIndex::decode(&bytes).is_err());
        }

        #[test]
        fn any_truncation_is_detected(index in file_indexes(), cut: prop::sample::Index) {
            let mut bytes = Vec::new();
            index.encode(&mut bytes);
            let len = cut.index(bytes.len());
            prop_assert!(FileIndex::decode(&bytes[..len]).is_err());
        }
    }

    /// Counts are checked against the bytes before anything is allocated from them.
    #[test]
    fn huge_counts_with_a_valid_checksum_are_rejected() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&INDEX_MAGIC);
        bytes.extend_from_slice(&[INDEX_VERSION, 0, 0, 0]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            FileIndex::decode(&bytes),
            Err(IndexError::Truncated { .. })
        ));
    }

    #[test]
    fn overlapping_partitions_are_rejected() {
        let entry = |partition, offset, len| PartitionEntry {
            partition,
            offset,
            len,
            records: 1,
            blocks: 1,
            crc32c: 0,
        };
        let segment = SegmentIndex {
            segment: 0,
            offset: 0,
            len: 100,
            padded_len: 4096,
            partitions: vec![entry(0, 0, 60), entry(1, 50, 50)],
        };
        assert!(segment.validate().is_err());
    }
}
