//! The map subtask: reads input splits and range-partitions their records into exchange
//! buffers.
//!
//! What travels depends on the job's plan (see [`super::Plan`]):
//! - in memory, a 16-byte `(key, position)` [`Entry`] per record: the records stay in the
//!   memory-mapped input (the page cache) and the reducer moves each record once, from the
//!   input to the output.
//!   Copying the records into reducer memory instead would fault in a fresh gigabyte of memory
//!   per gigabyte sorted, which measured 0.3–1.8 s per GB on this machine kind, more than the
//!   whole copy floor.
//! - out of core, the 100-byte records themselves, read with `pread` into one reused chunk, so
//!   the input never occupies memory beyond that chunk.
//!
//! Splits are handed out on demand (like Flink's source split assignment), so a fast map takes
//! more of them and the number of maps never multiplies memory.
//! Each map owns one buffer per reducer; a full buffer is handed to the result partition at
//! once, which sends it (waiting for credit if the reducer is behind), spills it (hybrid: the
//! reducer stayed busy too long; blocking: always), and the map goes on with a recycled one.
//! Which reducer a record goes to is the output edge's range distribution.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use shuffle::Buffer;

use super::operators::{MapConfig, Payload as PayloadKind};
use super::partitioner::RangePartitioner;
use super::sorter::{entry, Entry};
use crate::operator::InputData;
use crate::record::{key80, Checksum, RECORD_LEN};
use crate::task::{BoxFuture, Invokable, SubtaskContext, SubtaskReport};
use crate::EngineError;

pub(super) struct MapTask {
    pub(super) config: MapConfig,
}

impl Invokable for MapTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let config = self.config;
            let resources = ctx.resources.clone();
            let input = resources.input("terasort.map")?;
            let pool = &resources.pool;
            let mut report = ctx.report();
            let out = &mut ctx.outputs[0];
            let mut buffers: Vec<Buffer> =
                (0..out.num_subpartitions()).map(|_| pool.take()).collect();
            let mut checksum = Checksum::default();
            // Records sent to each reducer: the runtime sums them into output offsets.
            let mut sent = vec![0u64; out.num_subpartitions()];
            let payload_bytes = match config.payload {
                PayloadKind::Entries => Entries::BYTES,
                PayloadKind::Records => Records::BYTES,
            };
            // The edge says where each record goes.
            let ranges = RangePartitioner::of_output(&ctx.distributions)?;
            let chunk_bytes = config.read_chunk_bytes as u64;
            let mut read_buffer = match &input.data {
                InputData::Mapped(_) => Vec::new(),
                InputData::Read(_) => vec![0u8; config.read_chunk_bytes],
            };
            let splits = ctx.splits.clone().ok_or_else(|| EngineError::Internal {
                what: "the map vertex has no splits".into(),
            })?;
            while let Some(crate::source::FileSplit { start, end }) = splits.next(ctx.subtask) {
                let mut pos = start;
                while pos < end {
                    let n = (end - pos).min(chunk_bytes) as usize;
                    let chunk: &[u8] = match &input.data {
                        InputData::Mapped(map) => &map[pos as usize..pos as usize + n],
                        InputData::Read(file) => {
                            file.read_exact_at(&mut read_buffer[..n], pos)
                                .map_err(|source| EngineError::InputUnreadable {
                                    path: input.path.clone(),
                                    source,
                                })?;
                            &read_buffer[..n]
                        }
                    };
                    let mut done = 0;
                    while done < chunk.len() {
                        let first = (pos + done as u64) / RECORD_LEN as u64;
                        let ranges = &ranges;
                        let (consumed, full) = match config.payload {
                            PayloadKind::Entries => partition_until_full::<Entries>(
                                &chunk[done..],
                                first,
                                ranges,
                                &mut buffers,
                                &mut checksum,
                            ),
                            PayloadKind::Records => partition_until_full::<Records>(
                                &chunk[done..],
                                first,
                                ranges,
                                &mut buffers,
                                &mut checksum,
                            ),
                        };
                        done += consumed;
                        if let Some(reducer) = full {
                            let buffer = std::mem::replace(&mut buffers[reducer], pool.take());
                            sent[reducer] += (buffer.len() / payload_bytes) as u64;
                            if let Some(free) = out.send(reducer, buffer).await? {
                                pool.recycle(free);
                            }
                        }
                    }
                    pos += n as u64;
                    resources
                        .progress
                        .read_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            for (reducer, buffer) in buffers.into_iter().enumerate() {
                sent[reducer] += (buffer.len() / payload_bytes) as u64;
                if buffer.is_empty() {
                    pool.recycle(buffer);
                } else if let Some(free) = out.send(reducer, buffer).await? {
                    pool.recycle(free);
                }
            }
            report.spill_written_bytes = out.spilled_bytes();
            report.partition_records = sent;
            out.finish()?;
            let sent = out.metrics();
            report.records_in = checksum.records;
            report.bytes_in = checksum.records * RECORD_LEN as u64;
            report.records_out = checksum.records;
            report.bytes_out = sent.bytes;
            report.backpressure_us = sent.backpressure_ns / 1000;
            report.checksum_in = Some(checksum);
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// What a map puts in exchange buffers for each record.
trait Payload {
    /// Bytes per record in a buffer.
    const BYTES: usize;
    fn push(buffer: &mut Buffer, record: &[u8], key: u128, position: u64);
}

/// A `(key, position)` entry pointing into the mapped input.
pub(super) struct Entries;

impl Payload for Entries {
    const BYTES: usize = std::mem::size_of::<Entry>();

    #[inline]
    fn push(buffer: &mut Buffer, _record: &[u8], key: u128, position: u64) {
        buffer.push(&entry(key, position).to_le_bytes());
    }
}

/// The record itself.
pub(super) struct Records;

impl Payload for Records {
    const BYTES: usize = RECORD_LEN;

    #[inline]
    fn push(buffer: &mut Buffer, record: &[u8], _key: u128, _position: u64) {
        buffer.push(record);
    }
}

/// Bytes of one entry in an exchange buffer.
pub(super) const ENTRY_BYTES: usize = Entries::BYTES;

/// Appends each record of `chunk` (whose first record is input record `first`) to the buffer
/// of its range, until one buffer cannot take another; returns the bytes consumed and that
/// buffer's index.
#[inline]
fn partition_until_full<P: Payload>(
    chunk: &[u8],
    first: u64,
    ranges: &RangePartitioner,
    buffers: &mut [Buffer],
    checksum: &mut Checksum,
) -> (usize, Option<usize>) {
    for (i, record) in chunk.chunks_exact(RECORD_LEN).enumerate() {
        let key = key80(record);
        let reducer = ranges.partition(key);
        let buffer = &mut buffers[reducer];
        P::push(buffer, record, key, first + i as u64);
        checksum.add_record(record);
        if buffer.remaining() < P::BYTES {
            return ((i + 1) * RECORD_LEN, Some(reducer));
        }
    }
    (chunk.len(), None)
}
