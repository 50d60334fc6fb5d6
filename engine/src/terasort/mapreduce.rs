//! The `mapreduce` execution style (Hadoop's): sorting maps and merging reducers over a
//! blocking exchange with slow start.
//!
//! ```text
//! map task (one per split, `--maps` at once):
//!   read the split into the sort buffer ──full──► sort, spill run k (one segment, by partition)
//!   end of split: one run → it is the map output; more → merge them, partition by partition,
//!                 into one more segment: the map output, sorted within each partition
//!   publish: one notice per partition (reducer) of that segment, when the task is committed
//! reduce task (deployed once `--slowstart` of the map tasks finished):
//!   copy: each finished map's segment of its partition, decoded into memory while the budget
//!         allows (Hadoop's in-memory shuffle), else left in the file for the merge to read
//!   after the last map: merge every map's run (ties in map order = input order) into the
//!         output at the range's final offset
//! ```
//!
//! The sort buffer, the runs and the merge are the out-of-core reducer's ([`Arena`],
//! [`Spiller`], [`merge_cursors`]): one external sorter on both sides.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shuffle::spill::SegmentFileReader;
use shuffle::{Received, SpilledBuffer};

use super::external::{merge_cursors, merge_runs, Arena, Cursor, RunCursor, Spiller};
use super::operators::{MergingReduceConfig, SortingMapConfig};
use super::partitioner::RangePartitioner;
use super::reduce::output_range;
use super::ProgressStep;
use crate::memory::{MemoryBudget, Reservation};
use crate::operator::InputData;
use crate::record::{Checksum, RECORD_LEN};
use crate::task::{
    spawn_blocking, BoxFuture, Invokable, Span, SpanKind, SubtaskContext, SubtaskReport,
};
use crate::tempdir::JobTempDir;
use crate::EngineError;

/// Memory and folders of a `mapreduce` sort.
#[derive(Debug)]
pub(super) struct MapReducePlan {
    /// The map slots' sort buffers.
    pub(super) map_budget: Arc<MemoryBudget>,
    /// Everything else: write buffers, reducers' in-memory copies.
    pub(super) budget: Arc<MemoryBudget>,
    /// Bytes of records per map task's sort buffer (`--map-sort-buffer`).
    pub(super) sort_buffer_bytes: usize,
    /// Raw bytes per block of map outputs.
    pub(super) block_bytes: usize,
    /// Where map outputs go, used round-robin by map tasks.
    pub(super) dirs: Vec<JobTempDir>,
    pub(super) writer_options: shuffle::spill::WriterOptions,
    /// The smallest budget the job runs with (for messages).
    pub(super) minimum_bytes: u64,
    /// The fixed share of the budget (write buffers), held for the whole job.
    pub(super) _fixed: Reservation,
}

/// Read-ahead per map output a reducer merges from its file, at most and at least.
const MERGE_READ_AHEAD: u64 = 256 << 10;
const MIN_READ_AHEAD: u64 = 16 << 10;
/// Pages the kernel maps around each fault.
const FAULT_AROUND: u64 = shuffle::FAULT_AROUND_BYTES as u64;

/// One map task: one split, sorted and spilled, its runs merged into one map output.
pub(super) struct SortingMapTask {
    pub(super) config: SortingMapConfig,
}

impl Invokable for SortingMapTask {
    fn invoke(
        self: Box<Self>,
        ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        // Reading, sorting, spilling and merging a split never waits for another subtask:
        // all of it runs on a blocking thread, off the runtime's workers.
        Box::pin(async move { spawn_blocking(move || sort_split(self.config, ctx)).await? })
    }
}

/// A map task's whole work: its split read into the sort buffer, sorted and spilled by
/// partition, the runs merged into one map output, published.
fn sort_split(
    plan: SortingMapConfig,
    mut ctx: SubtaskContext,
) -> Result<SubtaskReport, EngineError> {
    let resources = ctx.resources.clone();
    let input = resources.input("terasort.sorting-map")?;
    let map_budget = resources
        .map_memory
        .as_ref()
        .ok_or_else(|| EngineError::Internal {
            what: "a map task without the map slots' budget".into(),
        })?;
    let mut report = ctx.report();
    let ranges = RangePartitioner::of_output(&ctx.distributions)?;
    let reducers = ctx.outputs[0].num_subpartitions();
    let splits = ctx.splits.clone().ok_or_else(|| EngineError::Internal {
        what: "the map vertex has no splits".into(),
    })?;
    // A map task is one split, as in Hadoop.
    let split = splits.next(ctx.subtask);
    let mut arena = Arena::new(map_budget, plan.sort_buffer_bytes).ok_or_else(|| {
        EngineError::BudgetTooSmall {
            budget_bytes: map_budget.limit_bytes()
                + resources.memory.as_ref().map_or(0, |b| b.limit_bytes()),
            minimum_bytes: plan.minimum_bytes,
            what: "a map task's sort buffer (--map-sort-buffer)".into(),
        }
    })?;
    let dir = resources.spill_dir(ctx.subtask, "terasort.sorting-map")?;
    let mut spiller = Spiller::new(
        shuffle::spill::SegmentFileWriter::create_unlinked(
            dir,
            &format!("map-{}-{}.out", ctx.subtask, ctx.attempt),
            plan.writer_options,
        )?,
        plan.block_bytes,
        ctx.job_start,
    );
    let mut counts = vec![0u64; reducers];
    let mut checksum = Checksum::default();
    let chunk_bytes = plan.read_chunk_bytes as u64;
    if let Some(crate::source::FileSplit { start, end }) = split {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(chunk_bytes).min(arena.remaining() as u64) as usize;
            let at = arena.bytes.len();
            match &input.data {
                InputData::Mapped(map) => arena
                    .bytes
                    .extend_from_slice(&map[pos as usize..pos as usize + n]),
                InputData::Read(file) => {
                    arena.bytes.resize(at + n, 0);
                    file.read_exact_at(&mut arena.bytes[at..], pos)
                        .map_err(|source| EngineError::InputUnreadable {
                            path: input.path.clone(),
                            source,
                        })?;
                }
            }
            checksum.add_records(&arena.bytes[at..]);
            pos += n as u64;
            resources
                .progress
                .read_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            if arena.remaining() < RECORD_LEN {
                spill(&mut spiller, &mut arena, &ranges, &mut counts)?;
            }
        }
    }
    if arena.records() > 0 || spiller.runs.is_empty() {
        spill(&mut spiller, &mut arena, &ranges, &mut counts)?;
    }
    drop(arena);
    if spiller.runs.len() > 1 {
        // Hadoop's merge of a map's spills: partition by partition into one segment.
        let merge_start = spiller.now_us();
        let runs = spiller.runs.clone();
        let reader = spiller.writer.reader(runs.clone())?;
        let mut run = spiller.run_writer();
        let mut merged = 0;
        for partition in 0..reducers as u32 {
            run.set_partition(partition)?;
            merged += merge_runs(&reader, &runs, partition, 1 << 20, |record| {
                run.push(record)
            })?;
        }
        run.seal()?;
        spiller.record_span(SpanKind::Merge, merge_start, merged);
        report.spill_read_bytes = merged;
    }
    let output = spiller
        .runs
        .last()
        .cloned()
        .expect("a map task spills at least one run");
    let out = &mut ctx.outputs[0];
    out.publish_segment(
        spiller.writer.path(),
        Arc::new(spiller.writer.read_handle()?),
        &output,
    )?;
    out.finish()?;
    report.records_in = checksum.records;
    report.bytes_in = checksum.records * RECORD_LEN as u64;
    report.records_out = checksum.records;
    report.bytes_out = checksum.records * RECORD_LEN as u64;
    report.checksum_in = Some(checksum);
    report.partition_records = counts;
    report.spill_written_bytes = spiller.written_bytes;
    report.spilled_runs = spiller.runs_written;
    report.spans = std::mem::take(&mut spiller.spans);
    report.end_us = ctx.now_us();
    Ok(report)
}

/// Sorts the sort buffer, spills it as one run partitioned by range and empties it.
fn spill(
    spiller: &mut Spiller,
    arena: &mut Arena,
    ranges: &RangePartitioner,
    counts: &mut [u64],
) -> Result<(), EngineError> {
    spiller.spill_partitioned(arena, |key| {
        let partition = ranges.partition(key);
        counts[partition] += 1;
        partition as u32
    })?;
    arena.bytes.clear();
    Ok(())
}

/// One reduce task: copies the map outputs of its partition as they finish, merges them once
/// the last one has.
pub(super) struct MergingReduceTask {
    pub(super) config: MergingReduceConfig,
}

/// One map's run of this reducer's partition.
enum Copied {
    /// Decoded into memory, holding its share of the budget.
    Memory {
        records: Vec<u8>,
        _held: Reservation,
    },
    /// Left in the map's file, read by the merge.
    File(SpilledBuffer),
}

impl Invokable for MergingReduceTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let config = self.config;
            let resources = ctx.resources.clone();
            let budget = resources.memory("terasort.merging-reduce")?;
            let mut report = ctx.report();
            // Each reducer gets its share for its merge and as much for its in-memory copies
            // (together 3/4 of what the write buffers leave), so no reducer's copies can take
            // another's merge memory. The merge's: for each map's run read from its file, the read-ahead, the
            // kernel's fault-around and a decoded block.
            let maps = ctx.inputs[0].num_channels() as u64;
            let block = config.block_bytes as u64;
            let share = config.share_bytes;
            let per_map = share / maps.max(1);
            let read_ahead = per_map
                .saturating_sub(FAULT_AROUND + block)
                .clamp(MIN_READ_AHEAD, MERGE_READ_AHEAD);
            let merge_bytes = maps * (read_ahead + FAULT_AROUND + block);
            let merge_memory =
                budget
                    .try_reserve(merge_bytes)
                    .ok_or_else(|| EngineError::BudgetTooSmall {
                        budget_bytes: budget.limit_bytes(),
                        minimum_bytes: ctx.parallelism as u64
                            * maps
                            * (MIN_READ_AHEAD + FAULT_AROUND + block)
                            * 8
                            / 3,
                        what: format!("{} reducers' merges of {maps} map outputs", ctx.parallelism),
                    })?;
            // The copy phase: map outputs arrive as their tasks are committed.
            let mut copied: Vec<(usize, Copied)> = Vec::new();
            let (mut records, mut copied_bytes) = (0u64, 0u64);
            let gate = &mut ctx.inputs[0];
            while let Some((channel, received)) = gate.next_received().await? {
                let Received::Spilled(spilled) = received else {
                    return Err(EngineError::Internal {
                        what: "a mapreduce reducer received a buffer, not a map output".into(),
                    });
                };
                records += spilled.bytes / RECORD_LEN as u64;
                let copy = (copied_bytes + spilled.bytes <= share)
                    .then(|| budget.try_reserve(spilled.bytes))
                    .flatten();
                let run = match copy {
                    Some(reservation) => {
                        let bytes = tokio::task::block_in_place(|| -> Result<_, EngineError> {
                            let reader = spilled.open()?;
                            let segment = spilled.segment.segment;
                            let mut bytes = Vec::with_capacity(spilled.bytes as usize);
                            // The file's pages are dropped from this process as they are
                            // copied, so a copy holds its bytes once, not twice.
                            let mut at = spilled
                                .segment
                                .partition(spilled.partition)
                                .map_or(0, |p| p.offset);
                            let mut released = at / 4096 * 4096;
                            for block in reader.partition_blocks(segment, spilled.partition)? {
                                let block = block?;
                                bytes.extend_from_slice(&block.payload);
                                at += block.encoded_len() as u64;
                                let done = at / 4096 * 4096;
                                if done >= released + (4 << 20) {
                                    reader.release(segment, released, done - released)?;
                                    released = done;
                                }
                            }
                            Ok(bytes)
                        })?;
                        copied_bytes += bytes.len() as u64;
                        Copied::Memory {
                            records: bytes,
                            _held: reservation,
                        }
                    }
                    None => Copied::File(spilled),
                };
                copied.push((channel.0, run));
            }
            report.records_in = records;
            report.bytes_in = records * RECORD_LEN as u64;
            report.spans.push(
                Span::new(SpanKind::Receive, report.start_us, ctx.now_us())
                    .with_volume(copied_bytes, copied_bytes / RECORD_LEN as u64),
            );
            let (file, start, len) = output_range(config.parts, &mut ctx, records).await?;
            // Ties in map order: input order, as the other styles give.
            copied.sort_by_key(|(map, _)| *map);
            let write_chunk_bytes = config.write_chunk_bytes;
            let progress = resources.progress.clone();
            let merge_start = ctx.now_us();
            let (checksum, read_bytes) =
                spawn_blocking(move || -> Result<(Checksum, u64), EngineError> {
                    let readers = copied
                        .iter()
                        .map(|(_, run)| match run {
                            Copied::File(spilled) => spilled.open().map(Some),
                            Copied::Memory { .. } => Ok(None),
                        })
                        .collect::<Result<Vec<Option<SegmentFileReader>>, _>>()?;
                    let cursors = copied
                        .iter()
                        .zip(&readers)
                        .map(|((_, run), reader)| match (run, reader) {
                            (Copied::Memory { records, .. }, _) => {
                                Ok(Cursor::Memory { records, at: 0 })
                            }
                            (Copied::File(spilled), Some(reader)) => RunCursor::open(
                                reader,
                                &spilled.segment,
                                spilled.partition,
                                read_ahead,
                            )
                            .map(Cursor::Run),
                            (Copied::File(_), None) => unreachable!("every file run has a reader"),
                        })
                        .collect::<Result<Vec<_>, EngineError>>()?;
                    let mut writer = file.range_writer(start, len, write_chunk_bytes)?;
                    let mut written = ProgressStep::new(&progress.written_bytes);
                    let mut checksum = Checksum::default();
                    let read_bytes = merge_cursors(cursors, |record| {
                        checksum.add_record(record);
                        written.add(RECORD_LEN as u64);
                        writer.write(record)
                    })?;
                    writer.finish()?;
                    drop(merge_memory);
                    Ok((checksum, read_bytes))
                })
                .await??;
            let end = ctx.now_us();
            report.spans.push(
                Span::new(SpanKind::SortWrite, merge_start, end)
                    .with_volume(checksum.records * RECORD_LEN as u64, checksum.records),
            );
            report.spans.push(
                Span::new(SpanKind::Merge, merge_start, end)
                    .with_volume(read_bytes, read_bytes / RECORD_LEN as u64),
            );
            report.spill_read_bytes = copied_bytes + read_bytes;
            report.records_out = checksum.records;
            report.bytes_out = checksum.records * RECORD_LEN as u64;
            report.checksum_out = Some(checksum);
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}
