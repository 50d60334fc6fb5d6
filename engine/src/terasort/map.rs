//! The map subtask: reads input splits and range-partitions their records into exchange
//! buffers.
//!
//! Splits are handed out on demand (like Flink's source split assignment), so a fast map takes
//! more of them and the number of maps never multiplies memory.
//! Each map owns one buffer per reducer; a full buffer is emitted at once (waiting for credit
//! if the reducer is behind), and the map goes on with a recycled one.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shuffle::Buffer;

use super::partitioner::RangePartitioner;
use super::SortShared;
use crate::record::{key80, Checksum, RECORD_LEN};
use crate::task::{BoxFuture, Invokable, SubtaskContext, SubtaskReport};
use crate::EngineError;

pub(super) struct MapTask {
    pub(super) shared: Arc<SortShared>,
}

impl Invokable for MapTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let shared = self.shared;
            let mut report = ctx.report();
            let out = &mut ctx.outputs[0];
            let mut buffers: Vec<Buffer> = (0..out.num_subpartitions())
                .map(|_| shared.pool.take())
                .collect();
            let mut chunk = vec![0u8; shared.read_chunk_bytes];
            let mut checksum = Checksum::default();
            while let Some((start, end)) = shared.next_split() {
                let mut pos = start;
                while pos < end {
                    let n = (end - pos).min(chunk.len() as u64) as usize;
                    shared
                        .input
                        .read_exact_at(&mut chunk[..n], pos)
                        .map_err(|source| EngineError::InputUnreadable {
                            path: shared.input_path.clone(),
                            source,
                        })?;
                    pos += n as u64;
                    let mut done = 0;
                    while done < n {
                        let (consumed, full) = partition_until_full(
                            &chunk[done..n],
                            &shared.reducer_ranges,
                            &mut buffers,
                            &mut checksum,
                        );
                        done += consumed;
                        if let Some(reducer) = full {
                            let buffer =
                                std::mem::replace(&mut buffers[reducer], shared.pool.take());
                            out.emit(reducer, buffer).await?;
                        }
                    }
                    shared
                        .progress
                        .read_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            for (reducer, buffer) in buffers.into_iter().enumerate() {
                if buffer.is_empty() {
                    shared.pool.recycle(buffer);
                } else {
                    out.emit(reducer, buffer).await?;
                }
            }
            out.finish()?;
            let sent = out.metrics();
            report.records_in = checksum.records;
            report.bytes_in = checksum.records * RECORD_LEN as u64;
            report.records_out = sent.bytes / RECORD_LEN as u64;
            report.bytes_out = sent.bytes;
            report.backpressure_us = sent.backpressure_ns / 1000;
            shared
                .input_checksum
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge(checksum);
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// Appends records of `chunk` to the buffer of their range until one buffer cannot take
/// another record; returns the bytes consumed and that buffer's index.
#[inline]
fn partition_until_full(
    chunk: &[u8],
    ranges: &RangePartitioner,
    buffers: &mut [Buffer],
    checksum: &mut Checksum,
) -> (usize, Option<usize>) {
    for (i, record) in chunk.chunks_exact(RECORD_LEN).enumerate() {
        let reducer = ranges.partition(key80(record));
        let buffer = &mut buffers[reducer];
        buffer.push(record);
        checksum.add_record(record);
        if buffer.remaining() < RECORD_LEN {
            return ((i + 1) * RECORD_LEN, Some(reducer));
        }
    }
    (chunk.len(), None)
}
