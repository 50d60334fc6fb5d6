//! [`SegmentFileWriter`]: appends segments (blocks clustered by partition) to one file, with
//! large aligned writes on a dedicated I/O thread.
//!
//! # How a segment is written
//!
//! 1. [`SegmentFileWriter::append`] encodes the caller's bytes as one block (compressing into
//!    a reused buffer when it pays) and copies header and payload into the current aligned
//!    buffer (4 MiB by default).
//!    Uncompressed payloads are copied once, from the caller straight into that buffer.
//! 2. A full buffer goes to the I/O thread (io_uring or `pwrite`), and filling continues in
//!    the next free one: at most `queue_depth` buffers are being written while one is filled,
//!    so memory is `(queue_depth + 1) × buffer_bytes` and the caller waits only when the disk
//!    is slower than it.
//! 3. [`SegmentFileWriter::seal_segment`] zero-pads the buffer to 4 KiB, writes it, waits
//!    until every write of the segment is done (written, not fsynced: spill files need not
//!    survive a crash, the job would be rerun), and returns the [`SegmentIndex`].
//!    From then on a reader may map the segment, so its bytes are never written again: the
//!    next segment starts in a fresh buffer at the next 4 KiB boundary.
//!
//! Every write is therefore at a 4 KiB-aligned offset, of a multiple of 4 KiB, from 4 KiB-
//! aligned memory, which is what `O_DIRECT` needs.
//!
//! # Who splits records
//!
//! The crate knows no record format, so the caller passes whole records.
//! [`SegmentFileWriter::append`] stores what it is given as exactly one block (at most
//! [`MAX_BLOCK_BYTES`] raw); [`SegmentFileWriter::append_records`] splits fixed-size records
//! into blocks of at most [`BLOCK_RAW_BYTES`] without cutting a record.
//!
//! # Failures
//!
//! The first I/O error poisons the writer: it and every later call return that error (a
//! full disk stays [`SpillError::DiskFull`]), and nothing panics.
//! Breaking the rules (partitions out of order, oversized blocks) returns
//! [`SpillError::Misuse`] and leaves the writer usable.
//! Dropping the writer waits for the writes in flight; the file stays for the caller to
//! delete with its folder.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::debug;

use super::block::{BlockEncoder, Compression, BLOCK_HEADER_BYTES, MAX_BLOCK_BYTES};
use super::direct::{DirectFile, DirectWriter, IoEngine};
use super::index::{FileIndex, PartitionEntry, SegmentIndex};
use super::SpillError;

/// Raw bytes per block that [`SegmentFileWriter::append_records`] aims for (1 MiB): large
/// enough that the 32-byte header and the per-block checksum cost nothing, small enough that
/// a reader decompresses into a modest buffer.
pub const BLOCK_RAW_BYTES: usize = 1 << 20;

/// How a [`SegmentFileWriter`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// System interface; default [`IoEngine::Auto`].
    pub io: IoEngine,
    /// Use `O_DIRECT` where the file system accepts it, else the page cache, silently;
    /// default `true`, because spilled data is read once, later, and caching it only evicts
    /// data that is still needed.
    pub direct: bool,
    /// Payload compression; default [`Compression::Auto`] (lz4 when it saves 10%).
    pub compression: Compression,
    /// Size of each write buffer, rounded up to 4 KiB; default 4 MiB, large enough that
    /// writes run at disk speed.
    pub buffer_bytes: usize,
    /// Writes in flight at once (1–4); default 2, enough to keep one disk busy.
    pub queue_depth: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            io: IoEngine::Auto,
            direct: true,
            compression: Compression::Auto,
            buffer_bytes: 4 << 20,
            queue_depth: 2,
        }
    }
}

/// Totals of one writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Raw payload bytes appended.
    pub raw_bytes: u64,
    /// Bytes of blocks (headers and stored payloads).
    pub block_bytes: u64,
    /// Bytes in the file, padding included.
    pub file_bytes: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Time the caller waited for a free buffer or for a seal (the disk was the bottleneck).
    pub wait_for_io_us: u64,
}

/// The segment being appended to.
struct OpenSegment {
    segment: u32,
    offset: u64,
    partitions: Vec<PartitionEntry>,
}

/// Appends segments to one file; see the module documentation.
pub struct SegmentFileWriter {
    // Configuration.
    path: PathBuf,
    compression: Compression,
    // Buffers.
    encoder: BlockEncoder,
    sink: DirectWriter,
    // State.
    open: Option<OpenSegment>,
    sealed: Vec<SegmentIndex>,
    stats: WriterStats,
    poisoned: Option<SpillError>,
    /// A read handle on the file, for readers once the name is gone (see [`Self::unlink`]).
    read_handle: std::fs::File,
}

impl SegmentFileWriter {
    /// Creates `path` (which must not exist) inside a folder private to the job.
    pub fn create(path: &Path, options: WriterOptions) -> Result<Self, SpillError> {
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                // Creating the file needs a block of its own on some file systems; the first
                // write would need a buffer's worth.
                Some(libc::ENOSPC | libc::EDQUOT) => SpillError::DiskFull {
                    path: path.to_path_buf(),
                    needed_bytes: options.buffer_bytes as u64,
                },
                _ => SpillError::Create {
                    path: path.to_path_buf(),
                    source: Arc::new(e),
                },
            })?;
        let read_handle = buffered.try_clone().map_err(|e| SpillError::Create {
            path: path.to_path_buf(),
            source: Arc::new(e),
        })?;
        let (file, _) = DirectFile::new(path, Arc::new(buffered), options.direct);
        let sink = DirectWriter::new(
            file,
            0,
            options.io,
            options.buffer_bytes,
            options.queue_depth,
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            compression: options.compression,
            encoder: BlockEncoder::new(),
            sink,
            open: None,
            sealed: Vec::new(),
            stats: WriterStats::default(),
            poisoned: None,
            read_handle,
        })
    }

    /// Creates a spill file in `dir` named after `stem` and unique in the process, and removes
    /// its name at once (see [`Self::unlink`]): the file lives on through this writer's handles
    /// and readers, nothing else can open, truncate or rewrite it while it is mapped (no
    /// SIGBUS), and it disappears with the process however the process ends.
    pub fn create_unlinked(
        dir: &Path,
        stem: &str,
        options: WriterOptions,
    ) -> Result<Self, SpillError> {
        static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let writer = Self::create(&dir.join(format!("{stem}-{n}.spill")), options)?;
        writer.unlink()?;
        Ok(writer)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file's name from its folder; the file lives on through this writer's handles
    /// and readers made by [`Self::reader`], and vanishes when the last one closes.
    ///
    /// No other process can then open, truncate or rewrite it — which is what keeps its maps
    /// safe (no SIGBUS from a file cut short under a mapping) — and a crash leaves nothing.
    pub fn unlink(&self) -> Result<(), SpillError> {
        std::fs::remove_file(&self.path).map_err(|e| SpillError::Io {
            path: self.path.clone(),
            operation: "unlink",
            offset: 0,
            source: Arc::new(e),
        })
    }

    /// A reader of `segments` of this file through the writer's own handle (works after
    /// [`Self::unlink`]).
    pub fn reader(
        &self,
        segments: impl IntoIterator<Item = SegmentIndex>,
    ) -> Result<super::SegmentFileReader, SpillError> {
        super::SegmentFileReader::from_file(&self.path, self.read_handle()?, segments)
    }

    /// A new read handle on this file (works after [`Self::unlink`]), e.g. to hand to a
    /// consumer in the same process.
    pub fn read_handle(&self) -> Result<std::fs::File, SpillError> {
        self.read_handle.try_clone().map_err(|e| SpillError::Io {
            path: self.path.clone(),
            operation: "duplicate handle",
            offset: 0,
            source: Arc::new(e),
        })
    }

    /// The engine in use ([`IoEngine::Uring`] or [`IoEngine::Pwrite`], never `Auto`).
    pub fn io_engine(&self) -> IoEngine {
        self.sink.io_engine()
    }

    /// Whether the file was opened for direct I/O (a later write may still fall back).
    pub fn is_direct(&self) -> bool {
        self.sink.is_direct()
    }

    /// The segments sealed so far, in file order.
    pub fn sealed_segments(&self) -> &[SegmentIndex] {
        &self.sealed
    }

    /// Totals so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            file_bytes: self.sink.position(),
            wait_for_io_us: self.sink.waited().as_micros() as u64,
            ..self.stats
        }
    }

    /// Appends `raw`, holding `records` whole records of `partition`, as one block of the
    /// open segment (opening one if none is).
    ///
    /// Partitions must not decrease within a segment; a partition may be appended to many
    /// times in a row.
    /// `raw` may be at most [`MAX_BLOCK_BYTES`]; empty appends of zero records are ignored.
    pub fn append(&mut self, partition: u32, records: u32, raw: &[u8]) -> Result<(), SpillError> {
        self.check_poisoned()?;
        if raw.is_empty() && records == 0 {
            return Ok(());
        }
        if raw.len() > MAX_BLOCK_BYTES {
            return Err(self.misuse(format!(
                "one append of {} bytes exceeds the {MAX_BLOCK_BYTES}-byte block cap; split it or use append_records",
                raw.len()
            )));
        }
        self.check_order(partition)?;
        let result = self.put_block(partition, records, raw);
        self.poison_on_error(result)
    }

    /// Appends fixed-size records of `partition`, `record_bytes` each, as blocks of at most
    /// [`BLOCK_RAW_BYTES`] (one record per block if a record is larger).
    pub fn append_records(
        &mut self,
        partition: u32,
        record_bytes: usize,
        raw: &[u8],
    ) -> Result<(), SpillError> {
        self.check_poisoned()?;
        if record_bytes == 0
            || record_bytes > MAX_BLOCK_BYTES
            || !raw.len().is_multiple_of(record_bytes)
        {
            return Err(self.misuse(format!(
                "{} bytes are not whole records of {record_bytes} bytes (at most {MAX_BLOCK_BYTES})",
                raw.len()
            )));
        }
        if raw.is_empty() {
            return Ok(());
        }
        self.check_order(partition)?;
        let per_block = (BLOCK_RAW_BYTES / record_bytes).clamp(1, u32::MAX as usize);
        for block in raw.chunks(per_block * record_bytes) {
            let result = self.put_block(partition, (block.len() / record_bytes) as u32, block);
            self.poison_on_error(result)?;
        }
        Ok(())
    }

    /// Ends the open segment (an empty one if none is open): pads it to 4 KiB, waits until
    /// all of it is written, and returns its index.
    ///
    /// Once this returns, readers may map the segment.
    pub fn seal_segment(&mut self) -> Result<SegmentIndex, SpillError> {
        self.check_poisoned()?;
        let position = self.sink.position();
        let segment = self.open.take().unwrap_or_else(|| OpenSegment {
            segment: self.sealed.len() as u32,
            offset: position,
            partitions: Vec::new(),
        });
        let result = self.sink.flush_padded();
        self.poison_on_error(result)?;
        let index = SegmentIndex {
            segment: segment.segment,
            offset: segment.offset,
            len: position - segment.offset,
            padded_len: self.sink.position() - segment.offset,
            partitions: segment.partitions,
        };
        debug!(
            path = %self.path.display(),
            segment = index.segment,
            offset = index.offset,
            bytes = index.len,
            partitions = index.partitions.len(),
            "spill segment sealed"
        );
        self.sealed.push(index.clone());
        Ok(index)
    }

    /// Seals the open segment, if any, waits for the I/O thread and returns the whole-file
    /// index (see [`FileIndex::write_sidecar`] to store it).
    pub fn finish(mut self) -> Result<FileIndex, SpillError> {
        if self.open.is_some() {
            self.seal_segment()?;
        }
        self.check_poisoned()?;
        Ok(FileIndex {
            segments: std::mem::take(&mut self.sealed),
        })
    }

    fn put_block(&mut self, partition: u32, records: u32, raw: &[u8]) -> Result<(), SpillError> {
        let offset = self.sink.position();
        let block = self
            .encoder
            .encode(raw, records, partition, self.compression)
            .map_err(|reason| SpillError::Internal {
                path: self.path.clone(),
                what: format!("encoding a checked block failed: {reason}"),
            })?;
        let (header, payload_len) = (block.header, block.payload.len());
        self.sink.write(&header)?;
        self.sink.write(block.payload)?;
        self.index_block(partition, offset, &header, payload_len, records, raw.len());
        Ok(())
    }

    /// Adds the block at `offset` to the open segment's index and the totals.
    fn index_block(
        &mut self,
        partition: u32,
        offset: u64,
        header: &[u8; BLOCK_HEADER_BYTES],
        payload_len: usize,
        records: u32,
        raw_len: usize,
    ) {
        let header_crc = crc32c::crc32c(header);
        let payload_crc = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
        let len = (BLOCK_HEADER_BYTES + payload_len) as u64;
        let segment = self.open.get_or_insert_with(|| OpenSegment {
            segment: self.sealed.len() as u32,
            offset,
            partitions: Vec::new(),
        });
        let entry = match segment.partitions.last_mut() {
            Some(entry) if entry.partition == partition => entry,
            _ => {
                segment.partitions.push(PartitionEntry {
                    partition,
                    offset,
                    len: 0,
                    records: 0,
                    blocks: 0,
                    crc32c: 0,
                });
                segment.partitions.last_mut().expect("just pushed")
            }
        };
        entry.crc32c = crc32c::crc32c_combine(entry.crc32c, header_crc, BLOCK_HEADER_BYTES);
        entry.crc32c = crc32c::crc32c_combine(entry.crc32c, payload_crc, payload_len);
        entry.len += len;
        entry.records += u64::from(records);
        entry.blocks += 1;
        self.stats.raw_bytes += raw_len as u64;
        self.stats.block_bytes += len;
        self.stats.blocks += 1;
    }

    fn check_order(&self, partition: u32) -> Result<(), SpillError> {
        if let Some(segment) = &self.open {
            if let Some(last) = segment.partitions.last() {
                if partition < last.partition {
                    return Err(self.misuse(format!(
                        "partition {partition} appended after partition {} in segment {}; appends must ascend by partition within a segment",
                        last.partition, segment.segment
                    )));
                }
            }
        }
        Ok(())
    }

    fn misuse(&self, what: String) -> SpillError {
        SpillError::Misuse {
            path: self.path.clone(),
            what,
        }
    }

    fn check_poisoned(&self) -> Result<(), SpillError> {
        match &self.poisoned {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T, SpillError>) -> Result<T, SpillError> {
        if let Err(error) = &result {
            if self.poisoned.is_none() {
                debug!(path = %self.path.display(), %error, "spill writer failed");
                self.poisoned = Some(error.clone());
            }
        }
        result
    }
}
