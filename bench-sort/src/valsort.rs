//! A validator compatible with valsort 1.5: key order, duplicate keys, record count and
//! checksum of a sort output, plus valsort's 280-byte partition summaries (`-o`, `-s`).
//!
//! Why: a sort benchmark result counts only if valsort accepts the output and its checksum
//! equals gensort's checksum of the input. Implementing it here lets Millrace validate
//! multi-part outputs in parallel and report results as JSON. The spec is
//! `shared/spec/gensort.md`, section 8.
//!
//! # What is checked
//!
//! Records are 100 bytes; each record's 10-byte key is compared (unsigned bytes) with the
//! previous record's key. A greater previous key makes the record *unordered*; an equal one
//! counts a *duplicate*. Every record adds its CRC-32 to the checksum. Non-key bytes are not
//! compared.
//!
//! # Parallel validation
//!
//! A [`Summary`] of a piece of the input (counts, checksum, first and last record) is enough to
//! combine it with the summary of the next piece ([`Summary::combine`], valsort `-s`), and
//! combining is associative. [`validate_path`] therefore cuts the input (one file, or a folder
//! of part files treated as their concatenation) into [`CHUNK_BYTES`] chunks, summarizes a wave
//! of chunks in parallel with rayon, each read with one positioned read, and combines the
//! results in input order. Memory is one chunk buffer per chunk of a wave.
//!
//! A stream (a pipe, standard input, a FIFO, a `/proc` file whose size says 0) cannot be cut
//! ahead of time: [`validate_reader`] reads it sequentially in [`CHUNK_BYTES`] chunks and
//! summarizes each chunk on the rayon pool while it reads the next, combining the summaries
//! in order the same way, so the result is identical to [`validate_path`] on the same bytes.
//! [`validate_path`] hands such inputs to [`validate_reader`].
//!
//! # Summary file layout (valsort `-o`, 280 bytes, no header)
//!
//! ```text
//! offset size field
//!      0   16 first_unordered  0-based index of the first unordered record, 0 if none
//!     16   16 unordered        unordered record count
//!     32   16 records          record count
//!     48   16 duplicates       duplicate key count
//!     64   16 checksum         sum of CRC-32s
//!     80  100 first record
//!    180  100 last record
//! ```
//!
//! Each 128-bit field is two 64-bit words, high word first, each little-endian (valsort writes
//! native byte order; the reference files come from x86-64).

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use engine::record::{crc32_record, format_u128_hex, key80, Checksum, RECORD_LEN};
use rayon::prelude::*;
use serde_json::{json, Value};

/// Bytes in one partition summary.
pub const SUMMARY_LEN: usize = 280;

/// Bytes read and summarized as one unit of parallel work: about 8 MiB, a whole number of
/// records so that no record straddles two chunks of the same file.
pub const CHUNK_BYTES: u64 = 83_886 * RECORD_LEN as u64;

/// Chunks per wave per rayon thread.
const WAVE_CHUNKS_PER_THREAD: usize = 2;
/// Upper bound on chunks per wave (and so on chunk buffers alive at once).
const MAX_WAVE_CHUNKS: usize = 64;

/// Errors from validating records or summaries.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The input does not exist or cannot be inspected.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A folder of parts could not be listed.
    #[error("cannot list folder {}", path.display())]
    ListFolder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading failed part way.
    #[error("cannot read {} at byte offset {offset}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Where the failed read started.
        offset: u64,
        /// The OS error.
        source: io::Error,
    },
    /// The file ended earlier than its size said.
    #[error(
        "{} ended at byte offset {offset}, before its recorded size of {len_bytes} bytes; was \
         it still being written?",
        path.display()
    )]
    Shrunk {
        /// The file.
        path: PathBuf,
        /// Where the data ended.
        offset: u64,
        /// The size when validation started.
        len_bytes: u64,
    },
    /// A file's length is not a whole number of records.
    #[error(
        "partial record found at end of {}: it is {len_bytes} bytes, not a multiple of 100, \
         so the record at byte offset {offset} is incomplete",
        path.display()
    )]
    PartialRecord {
        /// The file (or the name given to [`validate_reader`]).
        path: PathBuf,
        /// Byte offset where the partial record starts.
        offset: u64,
        /// The file (or stream) length.
        len_bytes: u64,
    },
    /// No records (or no summaries) at all.
    #[error("there must be at least one record to be validated, but {} holds none", path.display())]
    Empty {
        /// The file or folder.
        path: PathBuf,
    },
    /// A summary file's length is not a whole number of summaries.
    #[error(
        "partial partition summary found at end of {}: the file is {len_bytes} bytes, not a \
         multiple of 280",
        path.display()
    )]
    PartialSummary {
        /// The summary file.
        path: PathBuf,
        /// The file length.
        len_bytes: u64,
    },
    /// [`Summary::from_bytes`] got the wrong number of bytes.
    #[error("a partition summary is exactly 280 bytes, but {len_bytes} bytes were given")]
    SummaryLength {
        /// The length given.
        len_bytes: usize,
    },
}

impl ValidateError {
    /// Whether the input itself is at fault (malformed or empty) rather than the I/O.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ValidateError::PartialRecord { .. }
                | ValidateError::Empty { .. }
                | ValidateError::PartialSummary { .. }
                | ValidateError::SummaryLength { .. }
        )
    }
}

/// What valsort knows about a non-empty, contiguous run of records (valsort's partition
/// summary). Indexes count from the run's first record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// 0-based index of the first record whose key is less than its predecessor's; 0 if none
    /// (record 0 can never be unordered, so 0 is free to mean "none").
    pub first_unordered: u128,
    /// Records whose key is less than their predecessor's.
    pub unordered: u128,
    /// Records.
    pub records: u128,
    /// Records whose key equals their predecessor's.
    pub duplicates: u128,
    /// Sum of the records' CRC-32s, modulo 2^128.
    pub checksum: u128,
    /// The first record, all 100 bytes.
    pub first_record: [u8; RECORD_LEN],
    /// The last record, all 100 bytes.
    pub last_record: [u8; RECORD_LEN],
}

impl Summary {
    /// Whether every record is in order.
    pub fn is_ordered(&self) -> bool {
        self.unordered == 0
    }

    /// The record count and checksum as a [`Checksum`], to compare with gensort's. The count
    /// saturates at `u64::MAX`, which no real input reaches.
    pub fn to_checksum(&self) -> Checksum {
        Checksum {
            sum: self.checksum,
            records: u64::try_from(self.records).unwrap_or(u64::MAX),
        }
    }

    /// The 280-byte valsort `-o` encoding (module docs).
    pub fn to_bytes(&self) -> [u8; SUMMARY_LEN] {
        let mut out = [0u8; SUMMARY_LEN];
        let fields = [
            self.first_unordered,
            self.unordered,
            self.records,
            self.duplicates,
            self.checksum,
        ];
        for (slot, value) in out.chunks_exact_mut(16).zip(fields) {
            slot[..8].copy_from_slice(&((value >> 64) as u64).to_le_bytes());
            slot[8..].copy_from_slice(&(value as u64).to_le_bytes());
        }
        out[80..180].copy_from_slice(&self.first_record);
        out[180..].copy_from_slice(&self.last_record);
        out
    }

    /// Decodes the 280-byte valsort `-o` encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Summary, ValidateError> {
        let bytes: &[u8; SUMMARY_LEN] =
            bytes.try_into().map_err(|_| ValidateError::SummaryLength {
                len_bytes: bytes.len(),
            })?;
        let field = |i: usize| {
            let word = |at: usize| {
                u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice")) as u128
            };
            (word(16 * i) << 64) | word(16 * i + 8)
        };
        let record = |at: usize| -> [u8; RECORD_LEN] {
            bytes[at..at + RECORD_LEN]
                .try_into()
                .expect("100-byte slice")
        };
        Ok(Summary {
            first_unordered: field(0),
            unordered: field(1),
            records: field(2),
            duplicates: field(3),
            checksum: field(4),
            first_record: record(80),
            last_record: record(180),
        })
    }

    /// Appends the summary of the records that directly follow these, exactly as `valsort -s`
    /// does: the boundary pair is compared like any adjacent pair, and a first-unordered index
    /// found in `next` is shifted by the records before it.
    pub fn combine(&mut self, next: &Summary) {
        match key80(&self.last_record).cmp(&key80(&next.first_record)) {
            Ordering::Equal => self.duplicates = self.duplicates.wrapping_add(1),
            Ordering::Greater => {
                self.unordered = self.unordered.wrapping_add(1);
                if self.first_unordered == 0 {
                    self.first_unordered = self.records;
                }
            }
            Ordering::Less => {}
        }
        if self.first_unordered == 0 && next.first_unordered != 0 {
            self.first_unordered = self.records.wrapping_add(next.first_unordered);
        }
        self.unordered = self.unordered.wrapping_add(next.unordered);
        self.records = self.records.wrapping_add(next.records);
        self.duplicates = self.duplicates.wrapping_add(next.duplicates);
        self.checksum = self.checksum.wrapping_add(next.checksum);
        self.last_record = next.last_record;
    }

    /// A JSON view for `--json` output. Counts are JSON numbers when they fit in 64 bits and
    /// decimal strings otherwise; the checksum is a hex string as valsort prints it.
    pub fn to_json(&self) -> Value {
        json!({
            "records": json_count(self.records),
            "checksum": format_u128_hex(self.checksum),
            "duplicates": json_count(self.duplicates),
            "unordered": json_count(self.unordered),
            "first_unordered": if self.first_unordered == 0 {
                Value::Null
            } else {
                json_count(self.first_unordered)
            },
            "ordered": self.is_ordered(),
        })
    }
}

/// A count as a JSON number if it fits in `u64`, else as a decimal string.
fn json_count(value: u128) -> Value {
    u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from)
}

/// valsort's report for `s`, one line per element, exactly as valsort prints it to stderr.
pub fn report_lines(s: &Summary) -> Vec<String> {
    let checksum = format_u128_hex(s.checksum);
    if s.is_ordered() {
        vec![
            format!("Records: {}", s.records),
            format!("Checksum: {checksum}"),
            format!("Duplicate keys: {}", s.duplicates),
            "SUCCESS - all records are in order".to_owned(),
        ]
    } else {
        vec![
            format!("First unordered record is record {}", s.first_unordered),
            format!("Records: {}", s.records),
            format!("Checksum: {checksum}"),
            format!("ERROR - there are {} unordered records", s.unordered),
        ]
    }
}

/// The summary of `bytes`, a non-empty run of whole records, computed sequentially.
///
/// # Panics
///
/// If `bytes` is empty or not a multiple of 100 bytes; callers check lengths first (an empty
/// run has no summary in valsort's format).
pub fn summarize(bytes: &[u8]) -> Summary {
    assert!(
        !bytes.is_empty() && bytes.chunks_exact(RECORD_LEN).remainder().is_empty(),
        "summarize needs a non-empty whole number of records, got {} bytes; this is a bug in \
         the caller",
        bytes.len()
    );
    let mut records = bytes.chunks_exact(RECORD_LEN);
    let first = records.next().expect("checked non-empty above");
    let mut previous = key80(first);
    let mut checksum = crc32_record(
        first
            .try_into()
            .expect("chunks_exact yields 100-byte records"),
    ) as u128;
    let (mut unordered, mut duplicates, mut first_unordered) = (0u64, 0u64, 0u64);
    for (i, record) in records.enumerate() {
        let key = key80(record);
        match previous.cmp(&key) {
            Ordering::Less => {}
            Ordering::Equal => duplicates += 1,
            Ordering::Greater => {
                if unordered == 0 {
                    first_unordered = i as u64 + 1;
                }
                unordered += 1;
            }
        }
        previous = key;
        checksum = checksum.wrapping_add(crc32_record(
            record
                .try_into()
                .expect("chunks_exact yields 100-byte records"),
        ) as u128);
    }
    let record_array = |record: &[u8]| -> [u8; RECORD_LEN] {
        record
            .try_into()
            .expect("chunks_exact yields 100-byte records")
    };
    Summary {
        first_unordered: first_unordered as u128,
        unordered: unordered as u128,
        records: (bytes.len() / RECORD_LEN) as u128,
        duplicates: duplicates as u128,
        checksum,
        first_record: record_array(first),
        last_record: record_array(&bytes[bytes.len() - RECORD_LEN..]),
    }
}

/// One input file and its size when validation started.
struct Part {
    path: PathBuf,
    len_bytes: u64,
}

/// A byte range of one part: the unit of parallel work.
#[derive(Clone, Copy)]
struct Chunk {
    part: usize,
    offset: u64,
    len_bytes: u64,
}

/// The files that make up `path`, whose metadata is `metadata`: the file itself, or a
/// folder's regular, non-hidden files in file-name order.
fn list_parts(path: &Path, metadata: &fs::Metadata) -> Result<Vec<Part>, ValidateError> {
    let open_error = |path: &Path, source| ValidateError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut parts = Vec::new();
    if metadata.is_dir() {
        let list_error = |source| ValidateError::ListFolder {
            path: path.to_path_buf(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            let part_path = path.join(name);
            // `fs::metadata` follows symlinks, so a link to a regular file counts as a part.
            let metadata =
                fs::metadata(&part_path).map_err(|source| open_error(&part_path, source))?;
            if metadata.is_file() {
                parts.push(Part {
                    path: part_path,
                    len_bytes: metadata.len(),
                });
            }
        }
    } else {
        parts.push(Part {
            path: path.to_path_buf(),
            len_bytes: metadata.len(),
        });
    }
    for part in &parts {
        let whole = part.len_bytes - part.len_bytes % RECORD_LEN as u64;
        if whole != part.len_bytes {
            return Err(ValidateError::PartialRecord {
                path: part.path.clone(),
                offset: whole,
                len_bytes: part.len_bytes,
            });
        }
    }
    Ok(parts)
}

/// Reads `chunk` into `buffer` and summarizes it.
fn summarize_chunk(
    parts: &[Part],
    files: &[Option<File>],
    chunk: Chunk,
    buffer: &mut Vec<u8>,
) -> Result<Summary, ValidateError> {
    let part = &parts[chunk.part];
    let file = files[chunk.part]
        .as_ref()
        .expect("every part of a wave is opened before the wave runs");
    buffer.resize(chunk.len_bytes as usize, 0);
    file.read_exact_at(buffer, chunk.offset)
        .map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => ValidateError::Shrunk {
                path: part.path.clone(),
                offset: chunk.offset,
                len_bytes: part.len_bytes,
            },
            _ => ValidateError::Read {
                path: part.path.clone(),
                offset: chunk.offset,
                source,
            },
        })?;
    Ok(summarize(buffer))
}

/// Validates `path`, one file or a folder of part files read in file-name order as their
/// concatenation (regular files only; names starting with `.` are skipped).
///
/// Chunks are summarized in parallel on the rayon pool; `progress` gets the total bytes
/// validated so far after each wave, from the calling thread.
///
/// Anything else that can be opened, and a regular file whose size says 0, is read as a stream
/// with [`validate_reader`]: a FIFO, `/dev/stdin` on a pipe or terminal, a `/proc` file (whose
/// size is 0 although it has bytes). A really empty file gives the same
/// [`ValidateError::Empty`] either way.
pub fn validate_path(
    path: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary, ValidateError> {
    let open_error = |source| ValidateError::Open {
        path: path.to_path_buf(),
        source,
    };
    let metadata = fs::metadata(path).map_err(open_error)?;
    // Folders and non-empty regular files have sizes to cut into chunks; anything else is a
    // stream.
    let sized = metadata.is_dir() || (metadata.is_file() && metadata.len() > 0);
    if !sized {
        let file = File::open(path).map_err(open_error)?;
        return validate_reader(file, path, progress);
    }
    let parts = list_parts(path, &metadata)?;
    let chunks: Vec<Chunk> = parts
        .iter()
        .enumerate()
        .flat_map(|(part, p)| {
            (0..p.len_bytes.div_ceil(CHUNK_BYTES)).map(move |i| {
                let offset = i * CHUNK_BYTES;
                Chunk {
                    part,
                    offset,
                    len_bytes: (p.len_bytes - offset).min(CHUNK_BYTES),
                }
            })
        })
        .collect();

    let wave_chunks =
        (rayon::current_num_threads() * WAVE_CHUNKS_PER_THREAD).clamp(2, MAX_WAVE_CHUNKS);
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); wave_chunks.min(chunks.len())];
    // Parts are opened per wave (and closed after it), so a folder of thousands of parts never
    // holds more than `wave_chunks` descriptors.
    let mut files: Vec<Option<File>> = (0..parts.len()).map(|_| None).collect();
    let mut total: Option<Summary> = None;
    let mut done_bytes = 0u64;
    for wave in chunks.chunks(wave_chunks) {
        for chunk in wave {
            if files[chunk.part].is_none() {
                let part = &parts[chunk.part];
                let file = File::open(&part.path).map_err(|source| ValidateError::Open {
                    path: part.path.clone(),
                    source,
                })?;
                files[chunk.part] = Some(file);
            }
        }
        let summaries: Vec<Summary> = wave
            .par_iter()
            .zip(buffers.par_iter_mut())
            .map(|(&chunk, buffer)| summarize_chunk(&parts, &files, chunk, buffer))
            .collect::<Result<_, _>>()?;
        for summary in summaries {
            match &mut total {
                None => total = Some(summary),
                Some(total) => total.combine(&summary),
            }
        }
        for chunk in wave {
            files[chunk.part] = None;
        }
        done_bytes += wave.iter().map(|chunk| chunk.len_bytes).sum::<u64>();
        progress(done_bytes);
    }
    total.ok_or_else(|| ValidateError::Empty {
        path: path.to_path_buf(),
    })
}

/// Validates the records read from `reader` until its end, like valsort on a pipe; `shown`
/// names the input in errors (a path, or e.g. `standard input`).
///
/// The stream is read sequentially in [`CHUNK_BYTES`] chunks (each read until full or end of
/// stream, so short reads from pipes do not matter); each chunk is summarized with
/// [`summarize`] on the rayon pool while the next is read, and the summaries are combined in
/// order with [`Summary::combine`], so the result equals [`validate_path`] on the same bytes.
/// Memory is two chunk buffers. `progress` gets the total bytes validated so far after each
/// chunk, from the calling thread.
///
/// # Errors
///
/// [`ValidateError::Read`] (with the byte offset where the failed read started) if reading
/// fails, [`ValidateError::PartialRecord`] if the stream's length is not a multiple of 100
/// (after all whole records were read), [`ValidateError::Empty`] if it has no bytes.
pub fn validate_reader<R: Read>(
    reader: R,
    shown: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary, ValidateError> {
    validate_reader_chunked(reader, shown, progress, CHUNK_BYTES as usize)
}

/// [`validate_reader`] with chunks of `chunk_bytes`, a positive multiple of 100 (tests use small
/// chunks to cross many chunk boundaries cheaply).
fn validate_reader_chunked<R: Read>(
    mut reader: R,
    shown: &Path,
    progress: &(dyn Fn(u64) + Sync),
    chunk_bytes: usize,
) -> Result<Summary, ValidateError> {
    assert!(
        chunk_bytes > 0 && chunk_bytes.is_multiple_of(RECORD_LEN),
        "chunk size {chunk_bytes} is not a positive multiple of 100; this is a bug"
    );
    let mut current = vec![0u8; chunk_bytes];
    let mut next = Vec::new();
    let mut len = read_chunk(&mut reader, &mut current, shown, 0)?;
    let mut done_bytes = 0u64;
    let mut total: Option<Summary> = None;
    let mut add = |summary: Summary| match &mut total {
        None => total = Some(summary),
        Some(total) => total.combine(&summary),
    };
    // A full chunk may be followed by more: summarize it on the pool while reading the next.
    while len == chunk_bytes {
        next.resize(chunk_bytes, 0);
        let offset = done_bytes + len as u64;
        let mut summary = None;
        let next_len = rayon::in_place_scope(|scope| {
            scope.spawn(|_| summary = Some(summarize(&current)));
            read_chunk(&mut reader, &mut next, shown, offset)
        })?;
        add(summary.expect("the scope ran the summary"));
        done_bytes = offset;
        progress(done_bytes);
        std::mem::swap(&mut current, &mut next);
        len = next_len;
    }
    // The last chunk: shorter than a full one, possibly empty.
    let whole = len - len % RECORD_LEN;
    if whole != len {
        return Err(ValidateError::PartialRecord {
            path: shown.to_path_buf(),
            offset: done_bytes + whole as u64,
            len_bytes: done_bytes + len as u64,
        });
    }
    if len > 0 {
        add(summarize(&current[..len]));
        progress(done_bytes + len as u64);
    }
    total.ok_or_else(|| ValidateError::Empty {
        path: shown.to_path_buf(),
    })
}

/// Reads from `reader` until `buffer` is full or the stream ends, and returns the bytes read.
/// `offset` is the stream position of `buffer[0]`, for errors.
fn read_chunk(
    reader: &mut impl Read,
    buffer: &mut [u8],
    shown: &Path,
    offset: u64,
) -> Result<usize, ValidateError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ValidateError::Read {
                    path: shown.to_path_buf(),
                    offset: offset + filled as u64,
                    source,
                })
            }
        }
    }
    Ok(filled)
}

/// Combines a file of concatenated 280-byte partition summaries in order, like `valsort -s`.
pub fn validate_summaries(path: &Path) -> Result<Summary, ValidateError> {
    let file = File::open(path).map_err(|source| ValidateError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len_bytes = file
        .metadata()
        .map_err(|source| ValidateError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    // Not `is_multiple_of`: that needs Rust 1.87 and the workspace supports 1.80.
    let partial_bytes = len_bytes % SUMMARY_LEN as u64;
    if partial_bytes != 0 {
        return Err(ValidateError::PartialSummary {
            path: path.to_path_buf(),
            len_bytes,
        });
    }
    let mut reader = BufReader::new(file);
    let mut bytes = [0u8; SUMMARY_LEN];
    let mut total: Option<Summary> = None;
    for i in 0..len_bytes / SUMMARY_LEN as u64 {
        let offset = i * SUMMARY_LEN as u64;
        reader
            .read_exact(&mut bytes)
            .map_err(|source| match source.kind() {
                io::ErrorKind::UnexpectedEof => ValidateError::Shrunk {
                    path: path.to_path_buf(),
                    offset,
                    len_bytes,
                },
                _ => ValidateError::Read {
                    path: path.to_path_buf(),
                    offset,
                    source,
                },
            })?;
        let summary = Summary::from_bytes(&bytes)?;
        match &mut total {
            None => total = Some(summary),
            Some(total) => total.combine(&summary),
        }
    }
    total.ok_or_else(|| ValidateError::Empty {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose key is `key` (big-endian in bytes 0..10) and whose payload is `tag`.
    fn record(key: u128, tag: u8) -> [u8; RECORD_LEN] {
        let mut rec = [tag; RECORD_LEN];
        rec[..10].copy_from_slice(&(key << 48).to_be_bytes()[..10]);
        rec
    }

    fn records(keys: &[u128]) -> Vec<u8> {
        keys.iter()
            .enumerate()
            .flat_map(|(i, &k)| record(k, i as u8))
            .collect()
    }

    #[test]
    fn counts_unordered_and_duplicates() {
        let s = summarize(&records(&[1, 2, 2, 2, 1, 5, 3, 3]));
        assert_eq!(s.records, 8);
        assert_eq!(s.duplicates, 3);
        assert_eq!(s.unordered, 2);
        assert_eq!(s.first_unordered, 4);
        assert!(!s.is_ordered());
        assert_eq!(s.first_record, record(1, 0));
        assert_eq!(s.last_record, record(3, 7));
    }

    #[test]
    fn single_record_is_ordered() {
        let s = summarize(&records(&[7]));
        assert!(s.is_ordered());
        assert_eq!((s.records, s.duplicates, s.first_unordered), (1, 0, 0));
        assert_eq!(s.first_record, s.last_record);
    }

    #[test]
    fn combine_counts_the_boundary() {
        let whole = records(&[1, 2, 2, 0, 4, 4]);
        for split in 1..6 {
            let mut left = summarize(&whole[..split * RECORD_LEN]);
            left.combine(&summarize(&whole[split * RECORD_LEN..]));
            assert_eq!(left, summarize(&whole), "split at {split}");
        }
    }

    #[test]
    fn bytes_round_trip_with_high_words() {
        let mut s = summarize(&records(&[3, 1]));
        s.records = (1 << 64) + 5;
        s.checksum = (1 << 64) + 0xabc;
        let bytes = s.to_bytes();
        assert_eq!(
            &bytes[32..48],
            &[1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Summary::from_bytes(&bytes).expect("280 bytes"), s);
        let err = Summary::from_bytes(&bytes[..279]).expect_err("short");
        assert!(matches!(
            err,
            ValidateError::SummaryLength { len_bytes: 279 }
        ));
    }

    #[test]
    fn report_lines_match_valsort() {
        let ok = summarize(&records(&[1, 1, 2]));
        assert_eq!(
            report_lines(&ok),
            [
                "Records: 3".to_owned(),
                "Checksum: ".to_owned() + &format_u128_hex(ok.checksum),
                "Duplicate keys: 1".to_owned(),
                "SUCCESS - all records are in order".to_owned(),
            ]
        );
        let bad = summarize(&records(&[2, 1]));
        let lines = report_lines(&bad);
        assert_eq!(lines[0], "First unordered record is record 1");
        assert_eq!(lines[3], "ERROR - there are 1 unordered records");
    }

    /// `count` binary gensort records from `start`.
    fn generated(start: u128, count: usize) -> Vec<u8> {
        let spec = crate::gensort::GenSpec {
            format: crate::gensort::Format::Binary,
            skew: false,
            start,
            records: count as u64,
        };
        let mut bytes = vec![0u8; count * RECORD_LEN];
        crate::gensort::generate_block(&spec, 0, count, &mut bytes);
        bytes
    }

    /// A reader that returns at most `step` bytes per call and is interrupted before every
    /// other read, like a slow pipe.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn stream(bytes: &[u8], chunk_bytes: usize) -> Result<Summary, ValidateError> {
        validate_reader_chunked(bytes, Path::new("stream"), &|_| {}, chunk_bytes)
    }

    /// Sizes below, at and across chunk boundaries, sorted and unsorted, read whole or in
    /// 7-byte pieces, give the summary of the whole run.
    #[test]
    fn reader_chunks_combine_to_the_whole() {
        let unsorted = generated(3, 23);
        let mut sorted: Vec<&[u8]> = unsorted.chunks_exact(RECORD_LEN).collect();
        sorted.sort_unstable();
        let sorted = sorted.concat();
        // Ordered up to record 18, which is smaller than record 17.
        let mut late = sorted.clone();
        late[17 * RECORD_LEN..19 * RECORD_LEN].rotate_left(RECORD_LEN);
        // Runs of three equal keys.
        let duplicates = records(&(0..23).map(|i| i / 3).collect::<Vec<u128>>());
        for bytes in [&unsorted, &sorted, &late, &duplicates] {
            for records in [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 23] {
                let bytes = &bytes[..records * RECORD_LEN];
                let expected = summarize(bytes);
                for chunk_records in [1, 2, 3, 5, 11, 100] {
                    let chunk_bytes = chunk_records * RECORD_LEN;
                    let what = format!("{records} records, chunks of {chunk_records}");
                    assert_eq!(stream(bytes, chunk_bytes).expect(&what), expected, "{what}");
                    let trickle = Trickle {
                        bytes,
                        step: 7,
                        interrupt: false,
                    };
                    let progress = std::sync::Mutex::new(Vec::new());
                    let summary = validate_reader_chunked(
                        trickle,
                        Path::new("stream"),
                        &|done| progress.lock().expect("lock").push(done),
                        chunk_bytes,
                    )
                    .expect(&what);
                    assert_eq!(summary, expected, "{what}, 7-byte reads");
                    let progress = progress.into_inner().expect("lock");
                    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
                    assert_eq!(progress.last(), Some(&(bytes.len() as u64)), "{what}");
                }
            }
        }
    }

    #[test]
    fn reader_partial_record_and_empty_stream() {
        let bytes = generated(0, 7);
        for chunk_records in [1, 2, 3, 100] {
            for len in [1, 99, 101, 250, 699] {
                let err = stream(&bytes[..len], chunk_records * RECORD_LEN).expect_err("partial");
                let whole = (len - len % RECORD_LEN) as u64;
                assert!(
                    matches!(
                        &err,
                        ValidateError::PartialRecord { path, offset, len_bytes }
                            if path == Path::new("stream")
                                && *offset == whole
                                && *len_bytes == len as u64
                    ),
                    "{len} bytes, chunks of {chunk_records}: {err:?}"
                );
            }
            let err = stream(&[], chunk_records * RECORD_LEN).expect_err("empty");
            assert!(
                matches!(&err, ValidateError::Empty { path } if path == Path::new("stream")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn reader_error_names_the_offset() {
        /// Yields `good` bytes, then fails.
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("device gone"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let bytes = generated(0, 5);
        let err = validate_reader_chunked(Failing(&bytes[..350]), Path::new("s"), &|_| {}, 200)
            .expect_err("read error");
        assert!(
            matches!(&err, ValidateError::Read { offset: 350, .. }),
            "{err:?}"
        );
        assert!(!err.is_bad_input());
    }

    #[test]
    fn json_view() {
        let bad = summarize(&records(&[2, 1]));
        let json = bad.to_json();
        assert_eq!(json["records"], 2);
        assert_eq!(json["first_unordered"], 1);
        assert_eq!(json["ordered"], false);
        assert_eq!(json["checksum"], format_u128_hex(bad.checksum));
        let mut ok = summarize(&records(&[1]));
        ok.records = 1 << 70;
        let json = ok.to_json();
        assert_eq!(json["first_unordered"], Value::Null);
        assert_eq!(json["records"], (1u128 << 70).to_string());
        assert_eq!(json["unordered"], 0);
    }
}
