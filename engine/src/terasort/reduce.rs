//! The reduce subtask: buckets records as they arrive, then sorts and writes its key range at
//! its final offset of the output.
//!
//! The offset of range `r` is the number of records in ranges `0..r`, known once those
//! reducers have received everything; each reducer publishes its count when its input ends and
//! waits only for its predecessors' counts (part files need no wait: each starts at 0).

use super::map::ENTRY_BYTES;
use super::partitioner::RangePartitioner;
use super::sorter::{position, Entry, EntrySorter};
use super::ProgressStep;
use crate::output::WriteStats;
use crate::record::{prefetch_record, Checksum, RECORD_LEN};
use crate::task::SpanKind;
use crate::task::{spawn_blocking, BoxFuture, Invokable, Span, SubtaskContext, SubtaskReport};
use crate::EngineError;
use shuffle::Received;

/// How many records ahead the writer prefetches (about the memory latency ÷ time per record).
const PREFETCH_AHEAD: usize = 16;

pub(super) struct ReduceTask {
    /// This reducer's range, split into sort buckets.
    pub(super) buckets: RangePartitioner,
    pub(super) write_chunk_bytes: usize,
    /// Whether this reducer writes its own part file.
    pub(super) parts: bool,
}

impl Invokable for ReduceTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let ReduceTask {
                buckets,
                write_chunk_bytes,
                parts,
            } = *self;
            let resources = ctx.resources.clone();
            let mut report = ctx.report();
            let mut sorter = EntrySorter::new(buckets);
            let gate = &mut ctx.inputs[0];
            let add = |sorter: &mut EntrySorter, bytes: &[u8]| {
                sorter.add(bytes.chunks_exact(ENTRY_BYTES).map(|bytes| {
                    Entry::from_le_bytes(
                        bytes.try_into().expect("chunks_exact gives whole entries"),
                    )
                }))
            };
            let mut spilled_read_bytes = 0;
            while let Some((_, received)) = gate.next_received().await? {
                match received {
                    Received::Buffer(buffer) => {
                        add(&mut sorter, buffer.as_bytes());
                        resources.pool.recycle(buffer);
                    }
                    // A buffer its map wrote to a segment file (blocking or hybrid exchange):
                    // read from the mapped file.
                    Received::Spilled(spilled) => {
                        let reader = spilled.open()?;
                        for block in
                            reader.partition_blocks(spilled.segment.segment, spilled.partition)?
                        {
                            let block = block?;
                            spilled_read_bytes += block.payload.len() as u64;
                            add(&mut sorter, &block.payload);
                        }
                    }
                }
            }
            report.spill_read_bytes = spilled_read_bytes;
            let received = gate.metrics();
            let records = sorter.entries();
            report.records_in = records;
            report.bytes_in = received.bytes;
            report.spans.push(
                Span::new(SpanKind::Receive, report.start_us, ctx.now_us())
                    .with_volume(received.bytes, records),
            );

            let (file, start, len) = output_range(parts, &mut ctx, records).await?;

            let sort_start = ctx.now_us();
            let (checksum, write_stats) =
                spawn_blocking(move || -> Result<(Checksum, WriteStats), EngineError> {
                    let mut writer = file.range_writer(start, len, write_chunk_bytes)?;
                    let mut checksum = Checksum::default();
                    let mut written = ProgressStep::new(&resources.progress.written_bytes);
                    let input = resources.input("terasort.sort")?.mapped()?;
                    let record_at = |entry: Entry| {
                        let at = position(entry) as usize * RECORD_LEN;
                        &input[at..at + RECORD_LEN]
                    };
                    sorter.emit_sorted(|run| {
                        for (i, &entry) in run.iter().enumerate() {
                            // The records are scattered over the input: start loading a few ahead.
                            if let Some(&ahead) = run.get(i + PREFETCH_AHEAD) {
                                prefetch_record(record_at(ahead));
                            }
                            let record = record_at(entry);
                            checksum.add_record(record);
                            writer.write(record)?;
                        }
                        written.add((run.len() * RECORD_LEN) as u64);
                        Ok::<(), EngineError>(())
                    })?;
                    let stats = writer.finish()?;
                    Ok((checksum, stats))
                })
                .await??;
            let end = ctx.now_us();
            report.spans.push(
                Span::new(SpanKind::SortWrite, sort_start, end)
                    .with_volume(checksum.records * RECORD_LEN as u64, checksum.records),
            );
            // Totals inside sort+write, drawn as spans that end with it.
            report.spans.push(Span::new(
                SpanKind::DiskBusy,
                end.saturating_sub(write_stats.io_busy_us),
                end,
            ));
            report.spans.push(Span::new(
                SpanKind::WaitingForDisk,
                end.saturating_sub(write_stats.wait_for_io_us),
                end,
            ));
            report.records_out = checksum.records;
            report.bytes_out = checksum.records * RECORD_LEN as u64;
            report.checksum_out = Some(checksum);
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// Publishes this reducer's record count and returns where its range goes: the file, the
/// byte offset (after the ranges before it, or 0 in a part file) and the length.
pub(super) async fn output_range(
    parts: bool,
    ctx: &mut SubtaskContext,
    records: u64,
) -> Result<(crate::output::OutputFile, u64, u64), EngineError> {
    let me = ctx.subtask;
    let file = ctx.resources.output(me, &ctx.vertex)?.clone();
    let len = records * RECORD_LEN as u64;
    // What the maps sent to every reducer, summed by the runtime once they all finished.
    let counts = ctx.input_partition_counts(0).await?;
    if counts.get(me) != Some(&records) {
        return Err(EngineError::Integrity {
            what: format!(
                "reducer {me} received {records} records, the maps sent it {:?}",
                counts.get(me)
            ),
        });
    }
    let start = if parts {
        if len > 0 {
            file.preallocate(len)?;
        }
        0
    } else {
        counts[..me].iter().sum::<u64>() * RECORD_LEN as u64
    };
    Ok((file, start, len))
}
