//! Batches spilled to segment files: the sort's runs, the join's partitions, the aggregate's
//! sorted partial state. Each batch is one block (an Arrow IPC stream, lz4 when it pays,
//! crc32c), the same format as blocking exchanges; a file has no name once created (nothing
//! is left after a crash) and is read back through the writer's handle.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use shuffle::spill::{SegmentFileReader, SegmentFileWriter, SegmentIndex, WriterOptions};

use super::codec;
use crate::EngineError;

/// Where an operator's spill files go, and how they are written.
#[derive(Clone, Debug)]
pub(crate) struct SpillDir {
    pub dir: PathBuf,
    pub options: WriterOptions,
}

impl SpillStats {
    pub fn add(&mut self, other: SpillStats) {
        self.written_bytes += other.written_bytes;
        self.read_bytes += other.read_bytes;
        self.runs += other.runs;
    }
}

impl SpillDir {
    /// Spill files in `dir`, written through 1 MiB buffers: a spilling operator has one file
    /// open for writing at a time (a join two), outside its budget.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            options: WriterOptions {
                buffer_bytes: 1 << 20,
                ..WriterOptions::default()
            },
        }
    }
}

/// Spill totals of one operator.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpillStats {
    pub written_bytes: u64,
    pub read_bytes: u64,
    pub runs: u64,
}

impl SpillDir {
    /// A new, already unlinked spill file.
    pub fn create(&self, what: &str) -> Result<BatchFile, EngineError> {
        let writer = SegmentFileWriter::create_unlinked(&self.dir, what, self.options)?;
        Ok(BatchFile {
            writer,
            segments: Vec::new(),
        })
    }
}

/// A spill file being written: batches appended to partitions of the open segment.
pub(crate) struct BatchFile {
    writer: SegmentFileWriter,
    segments: Vec<SegmentIndex>,
}

impl BatchFile {
    /// Appends `batch` to `partition` (partitions must not decrease within a segment).
    pub fn write(&mut self, partition: u32, batch: &RecordBatch) -> Result<u64, EngineError> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let bytes = codec::encode(batch)?;
        if bytes.len() > shuffle::spill::MAX_BLOCK_BYTES / 2 && batch.num_rows() > 1 {
            let half = batch.num_rows() / 2;
            let a = self.write(partition, &batch.slice(0, half))?;
            let b = self.write(partition, &batch.slice(half, batch.num_rows() - half))?;
            return Ok(a + b);
        }
        self.writer
            .append(partition, batch.num_rows() as u32, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Ends the open segment; its batches become readable.
    pub fn seal(&mut self) -> Result<u32, EngineError> {
        let index = self.writer.seal_segment()?;
        let segment = index.segment;
        self.segments.push(index);
        Ok(segment)
    }

    /// A reader of the sealed segments; the writer and its buffers are gone (a sort may hold
    /// hundreds of runs).
    pub fn into_reader(self) -> Result<SegmentFileReader, EngineError> {
        Ok(self.writer.reader(self.segments)?)
    }

    /// The sealed segments.
    pub fn segments(&self) -> u32 {
        self.segments.len() as u32
    }
}

/// The batches of `partition` in `segment`, decoded as they are read; `read` counts their
/// stored bytes (shared by the readers of one operator).
pub(crate) fn batches<'a>(
    reader: &'a SegmentFileReader,
    segment: u32,
    partition: u32,
    read: &'a std::cell::Cell<u64>,
) -> Result<impl Iterator<Item = Result<RecordBatch, EngineError>> + 'a, EngineError> {
    let blocks = reader.partition_blocks(segment, partition)?.releasing();
    Ok(blocks.flat_map(move |block| {
        let decoded = block.map_err(EngineError::from).and_then(|block| {
            read.set(read.get() + block.payload.len() as u64);
            Ok(codec::decode(&block.payload)?)
        });
        match decoded {
            Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }
    }))
}
