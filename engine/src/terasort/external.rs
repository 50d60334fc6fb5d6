//! The out-of-core reduce subtask: sorted runs spilled to a segment file under the memory
//! budget, then one k-way merge into the output.
//!
//! ```text
//! exchange buffers ──copy──► arena A (filling) ──full──► sort + spill as run k (blocking thread)
//!                            arena B (filling while A spills, then they swap)
//! end of input: nothing spilled → sort the arena, write the output (1 read, 1 write per byte)
//!               else           → spill the last arena too, free the arenas, merge all runs with
//!                                a loser tree into the output (2 reads, 2 writes per byte)
//! ```
//!
//! A run is one segment of this reducer's segment file (one partition, records in key order).
//! Runs are read back through read-only maps, a block at a time, zero-copy unless compressed.
//! More runs than the fan-in are first merged in groups into longer runs (a cascade).
//! The fan-in is [`MAX_FAN_IN`] unless the budget is too small for that many open runs: each
//! holds a block and, through the kernel's fault-around, up to 64 KiB of mapped pages.
//!
//! Besides `receive` and `sort+write`, the report has a span per pass over the disk: `spill`
//! (one per run spilled from an arena), `cascade` (one per group of runs merged into a longer
//! run) and `merge` (all merging into the output, cascades included), each with the bytes and
//! records it wrote. `spill` + `cascade` spans = `spilled_runs`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use shuffle::spill::{PartitionBlocks, SegmentFileReader, SegmentFileWriter, SegmentIndex};
use shuffle::Received;

use super::merge::{merge_key, LoserTree, EXHAUSTED};
use super::operators::ExternalSortConfig;
use super::reduce::output_range;
use super::ProgressStep;
use crate::memory::{MemoryBudget, Reservation};
use crate::output::RangeWriter;
use crate::record::{key80, Checksum, RECORD_LEN};
use crate::task::SpanKind;
use crate::task::{
    micros_since, spawn_blocking, BoxFuture, Invokable, Span, SubtaskContext, SubtaskReport,
};
use crate::EngineError;

/// Most runs merged at once; more are merged in groups first.
pub const MAX_FAN_IN: usize = 64;

/// How many runs a merge may hold open with `memory_bytes` (the arenas' share, free by then):
/// each holds its mapped block, a decompressed copy when the block is compressed, and the
/// fault-around pages.
fn fan_in(memory_bytes: usize, block_bytes: usize) -> usize {
    (memory_bytes / (2 * block_bytes + shuffle::FAULT_AROUND_BYTES)).clamp(2, MAX_FAN_IN)
}

/// Bytes of sort entry per record held in an arena (`key80 << 48 | index`).
const ENTRY_BYTES: u64 = 16;

pub(super) struct ExternalReduceTask {
    pub(super) config: ExternalSortConfig,
}

/// Records received and not yet spilled, with the budget they hold.
pub(super) struct Arena {
    pub(super) bytes: Vec<u8>,
    _reservation: Reservation,
}

impl Arena {
    /// An arena for `capacity_bytes` of records (and their sort entries), or `None` if the
    /// budget refuses.
    pub(super) fn new(budget: &Arc<MemoryBudget>, capacity_bytes: usize) -> Option<Self> {
        let records = capacity_bytes / RECORD_LEN;
        let reservation = budget.try_reserve(records as u64 * (RECORD_LEN as u64 + ENTRY_BYTES))?;
        Some(Self {
            bytes: Vec::with_capacity(records * RECORD_LEN),
            _reservation: reservation,
        })
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.capacity() - self.bytes.len()
    }

    pub(super) fn records(&self) -> u64 {
        (self.bytes.len() / RECORD_LEN) as u64
    }

    /// Calls `emit` with every record in key order (ties in arrival order).
    fn emit_sorted(
        &self,
        mut emit: impl FnMut(&[u8]) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut entries: Vec<u128> = self
            .bytes
            .chunks_exact(RECORD_LEN)
            .enumerate()
            .map(|(i, record)| key80(record) << 48 | i as u128)
            .collect();
        entries.sort_unstable();
        for entry in entries {
            let at = (entry as u64 & ((1 << 48) - 1)) as usize * RECORD_LEN;
            emit(&self.bytes[at..at + RECORD_LEN])?;
        }
        Ok(())
    }
}

/// Writes sorted runs into one segment file (a reducer's, or a map's in `mapreduce` mode).
pub(super) struct Spiller {
    pub(super) writer: SegmentFileWriter,
    pub(super) runs: Vec<SegmentIndex>,
    block_bytes: usize,
    pub(super) written_bytes: u64,
    /// Runs written, cascaded ones included.
    pub(super) runs_written: u64,
    /// When the job started: spans count from here.
    job_start: Instant,
    /// `spill`, `cascade` and `merge` spans, in the order they ended.
    pub(super) spans: Vec<Span>,
}

impl Spiller {
    /// Appends records to the open run (partition 0) through a staging block.
    pub(super) fn run_writer(&mut self) -> RunWriter<'_> {
        let block_bytes = self.block_bytes;
        RunWriter {
            spiller: self,
            staging: Vec::with_capacity(block_bytes),
            partition: 0,
        }
    }

    /// Writes runs into `writer`; spans count from `job_start`.
    pub(super) fn new(writer: SegmentFileWriter, block_bytes: usize, job_start: Instant) -> Self {
        Self {
            writer,
            runs: Vec::new(),
            block_bytes,
            written_bytes: 0,
            runs_written: 0,
            job_start,
            spans: Vec::new(),
        }
    }

    /// Microseconds since the job started.
    pub(super) fn now_us(&self) -> u64 {
        micros_since(self.job_start)
    }

    /// Records a span from `start_us` to now that wrote `bytes` of records.
    pub(super) fn record_span(&mut self, name: SpanKind, start_us: u64, bytes: u64) {
        let span =
            Span::new(name, start_us, self.now_us()).with_volume(bytes, bytes / RECORD_LEN as u64);
        self.spans.push(span);
    }

    /// Spills the arena as one sorted run.
    fn spill(&mut self, arena: &Arena) -> Result<(), EngineError> {
        self.spill_partitioned(arena, |_| 0)
    }

    /// Spills the arena as one sorted run, each record in partition `partition_of(key)`;
    /// partitions must not decrease with the key (range partitions).
    pub(super) fn spill_partitioned(
        &mut self,
        arena: &Arena,
        mut partition_of: impl FnMut(u128) -> u32,
    ) -> Result<(), EngineError> {
        let (start_us, written_before) = (self.now_us(), self.written_bytes);
        let mut run = self.run_writer();
        arena.emit_sorted(|record| {
            run.set_partition(partition_of(key80(record)))?;
            run.push(record)
        })?;
        run.seal()?;
        self.record_span(
            SpanKind::Spill,
            start_us,
            self.written_bytes - written_before,
        );
        Ok(())
    }
}

/// One run being written.
///
/// Records gather in a staging block (at most `block_bytes`, so it stays in the L2 cache) that
/// the segment writer copies into its aligned write buffer in one sequential copy. Copying
/// each record straight into the 4 MiB write buffer instead was measured slower (4 GB out of
/// core with `--memory 1GiB`, `perf record`: +0.3 CPU-s in the spill, about +20%): the
/// sorted emit reads the arena in random order, and scattered 100-byte stores into a buffer
/// that is not in cache pay a read-for-ownership miss each, where the one large copy
/// streams.
pub(super) struct RunWriter<'a> {
    spiller: &'a mut Spiller,
    staging: Vec<u8>,
    /// The partition records are appended to; it may only grow.
    partition: u32,
}

impl RunWriter<'_> {
    /// Appends the following records to `partition` (not below the current one).
    #[inline]
    pub(super) fn set_partition(&mut self, partition: u32) -> Result<(), EngineError> {
        if partition != self.partition {
            self.flush()?;
            self.partition = partition;
        }
        Ok(())
    }

    pub(super) fn push(&mut self, record: &[u8]) -> Result<(), EngineError> {
        self.staging.extend_from_slice(record);
        if self.staging.len() + RECORD_LEN > self.staging.capacity() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        self.spiller
            .writer
            .append_records(self.partition, RECORD_LEN, &self.staging)?;
        self.spiller.written_bytes += self.staging.len() as u64;
        self.staging.clear();
        Ok(())
    }

    pub(super) fn seal(mut self) -> Result<(), EngineError> {
        self.flush()?;
        let index = self.spiller.writer.seal_segment()?;
        self.spiller.runs.push(index);
        self.spiller.runs_written += 1;
        Ok(())
    }
}

/// Reads one run, a block at a time, asking the kernel to read ahead and dropping what it
/// has passed from memory.
pub(super) struct RunCursor<'a> {
    reader: &'a SegmentFileReader,
    segment: u32,
    blocks: PartitionBlocks<'a>,
    block: Cow<'a, [u8]>,
    at: usize,
    /// File offsets: everything before `released_until` (page-aligned) was dropped from
    /// memory; start of the current block; how far read-ahead was requested.
    released_until: u64,
    block_start: u64,
    next_block_start: u64,
    ahead_until: u64,
    read_ahead_bytes: u64,
}

impl<'a> RunCursor<'a> {
    /// A cursor over `partition` of the run `run` (a segment of `reader`'s file).
    pub(super) fn open(
        reader: &'a SegmentFileReader,
        run: &SegmentIndex,
        partition: u32,
        read_ahead_bytes: u64,
    ) -> Result<Self, EngineError> {
        let start = run.partition(partition).map_or(run.offset, |p| p.offset);
        let mut cursor = Self {
            reader,
            segment: run.segment,
            blocks: reader.partition_blocks(run.segment, partition)?,
            block: Cow::Borrowed(&[]),
            at: 0,
            released_until: start,
            block_start: start,
            next_block_start: start,
            ahead_until: start,
            read_ahead_bytes,
        };
        cursor.next_block()?;
        Ok(cursor)
    }

    fn next_block(&mut self) -> Result<(), EngineError> {
        self.at = 0;
        // Everything before the next block is not needed again; release whole pages only, and
        // contiguously, so the page a block boundary falls in goes with the next release.
        let done = self.next_block_start / 4096 * 4096;
        if done > self.released_until {
            self.reader.release(
                self.segment,
                self.released_until,
                done - self.released_until,
            )?;
            self.released_until = done;
        }
        self.block_start = self.next_block_start;
        if self.ahead_until < self.block_start + self.read_ahead_bytes / 2 {
            self.reader
                .will_need(self.segment, self.block_start, self.read_ahead_bytes)?;
            self.ahead_until = self.block_start + self.read_ahead_bytes;
        }
        self.block = match self.blocks.next() {
            Some(block) => {
                let block = block?;
                self.next_block_start += block.encoded_len() as u64;
                block.payload
            }
            None => Cow::Borrowed(&[]),
        };
        if !self.block.len().is_multiple_of(RECORD_LEN) {
            return Err(EngineError::Internal {
                what: format!(
                    "a spilled block holds {} bytes, not whole records",
                    self.block.len()
                ),
            });
        }
        Ok(())
    }

    fn record(&self) -> Option<&[u8]> {
        self.block.get(self.at..self.at + RECORD_LEN)
    }

    fn advance(&mut self) -> Result<(), EngineError> {
        self.at += RECORD_LEN;
        if self.at >= self.block.len() {
            self.next_block()?;
        }
        Ok(())
    }
}

/// Where a merge reads one sorted run from. (A merge holds at most `MAX_FAN_IN` cursors in a
/// `Vec`; boxing the larger variant would cost an indirection per record read.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Cursor<'a> {
    /// A run in a segment file, a block at a time.
    Run(RunCursor<'a>),
    /// A run held in memory (whole records).
    Memory { records: &'a [u8], at: usize },
}

impl Cursor<'_> {
    #[inline]
    fn record(&self) -> Option<&[u8]> {
        match self {
            Self::Run(run) => run.record(),
            Self::Memory { records, at } => records.get(*at..*at + RECORD_LEN),
        }
    }

    #[inline]
    fn advance(&mut self) -> Result<(), EngineError> {
        match self {
            Self::Run(run) => run.advance(),
            Self::Memory { at, .. } => {
                *at += RECORD_LEN;
                Ok(())
            }
        }
    }
}

/// Merges sorted runs (ties go to the earlier cursor) and hands each record to `emit`;
/// returns the bytes merged.
pub(super) fn merge_cursors(
    mut cursors: Vec<Cursor<'_>>,
    mut emit: impl FnMut(&[u8]) -> Result<(), EngineError>,
) -> Result<u64, EngineError> {
    let keys = cursors
        .iter()
        .enumerate()
        .map(|(i, c)| c.record().map_or(EXHAUSTED, |r| merge_key(key80(r), i)))
        .collect();
    let mut tree = LoserTree::new(keys);
    let mut read_bytes = 0u64;
    while tree.winner_key() != EXHAUSTED {
        let w = tree.winner();
        let cursor = &mut cursors[w];
        emit(cursor.record().expect("a source with a key has a record"))?;
        read_bytes += RECORD_LEN as u64;
        cursor.advance()?;
        tree.replace_winner(
            cursor
                .record()
                .map_or(EXHAUSTED, |r| merge_key(key80(r), w)),
        );
    }
    Ok(read_bytes)
}

/// Merges `partition` of `runs` (segments of `reader`'s file, in order; ties go to the
/// earlier run) and hands each record to `emit`.
pub(super) fn merge_runs(
    reader: &SegmentFileReader,
    runs: &[SegmentIndex],
    partition: u32,
    read_ahead_bytes: u64,
    emit: impl FnMut(&[u8]) -> Result<(), EngineError>,
) -> Result<u64, EngineError> {
    let cursors = runs
        .iter()
        .map(|run| RunCursor::open(reader, run, partition, read_ahead_bytes).map(Cursor::Run))
        .collect::<Result<Vec<_>, _>>()?;
    merge_cursors(cursors, emit)
}

impl Invokable for ExternalReduceTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let plan = self.config;
            let resources = ctx.resources.clone();
            let me = ctx.subtask;
            let mut report = ctx.report();
            let budget = resources.memory("terasort.external-sort")?.clone();
            let arena_bytes = plan.arena_bytes;
            let too_small = || EngineError::BudgetTooSmall {
                budget_bytes: budget.limit_bytes(),
                minimum_bytes: plan.minimum_bytes,
                what: "a reducer's sort arena".into(),
            };
            let spill_dir = resources.spill_dir(me, "terasort.external-sort")?;
            let spiller = Some(Spiller::new(
                SegmentFileWriter::create_unlinked(
                    spill_dir,
                    &format!("sort-{me}.runs"),
                    plan.writer_options,
                )?,
                plan.block_bytes,
                ctx.job_start,
            ));
            let mut intake = Intake {
                filling: Arena::new(&budget, arena_bytes).ok_or_else(too_small)?,
                spare: None,
                spilling: None,
                spiller,
                budget: budget.clone(),
                arena_bytes,
                minimum_bytes: plan.minimum_bytes,
            };
            let gate = &mut ctx.inputs[0];
            let mut hybrid_read_bytes = 0;
            while let Some((_, received)) = gate.next_received().await? {
                match received {
                    Received::Buffer(buffer) => {
                        intake.absorb(buffer.as_bytes()).await?;
                        resources.pool.recycle(buffer);
                    }
                    Received::Spilled(spilled) => {
                        // A map spilled this buffer (we were busy, or the exchange is
                        // blocking): read it back, zero-copy.
                        let reader = spilled.open()?;
                        for block in
                            reader.partition_blocks(spilled.segment.segment, spilled.partition)?
                        {
                            let block = block?;
                            hybrid_read_bytes += block.payload.len() as u64;
                            intake.absorb(&block.payload).await?;
                        }
                    }
                }
            }
            let (filling, mut spiller) = intake.finish().await?;
            let spilled_records: u64 = spiller.runs.iter().map(SegmentIndex::records).sum();
            let records = spilled_records + filling.records();
            report.records_in = records;
            report.bytes_in = gate.metrics().bytes;
            report.spans.push(
                Span::new(SpanKind::Receive, report.start_us, ctx.now_us())
                    .with_volume(report.bytes_in, records),
            );

            let (file, start, len) = output_range(plan.parts, &mut ctx, records).await?;
            let write_chunk_bytes = plan.write_chunk_bytes;
            // Read-ahead per run: the arenas' share of the budget, spread over the runs.
            let runs = spiller.runs.len() as u64 + 1;
            let read_ahead_bytes =
                (2 * arena_bytes as u64 / runs.min(MAX_FAN_IN as u64)).clamp(256 << 10, 16 << 20);
            let merge_start = ctx.now_us();
            let progress = resources.progress.clone();
            let (checksum, spiller, read_bytes) =
                spawn_blocking(move || -> Result<(Checksum, Spiller, u64), EngineError> {
                    let mut writer: RangeWriter =
                        file.range_writer(start, len, write_chunk_bytes)?;
                    let mut written = ProgressStep::new(&progress.written_bytes);
                    let mut checksum = Checksum::default();
                    let mut read_bytes = 0;
                    if spiller.runs.is_empty() {
                        filling.emit_sorted(|record| {
                            checksum.add_record(record);
                            written.add(RECORD_LEN as u64);
                            writer.write(record)
                        })?;
                    } else {
                        if filling.records() > 0 {
                            spiller.spill(&filling)?;
                        }
                        drop(filling);
                        let fan_in = fan_in(2 * arena_bytes, spiller.block_bytes);
                        read_bytes = merge_all(&mut spiller, fan_in, read_ahead_bytes, |record| {
                            checksum.add_record(record);
                            written.add(RECORD_LEN as u64);
                            writer.write(record)
                        })?;
                    }
                    writer.finish()?;
                    Ok((checksum, spiller, read_bytes))
                })
                .await??;
            report.spans.push(
                Span::new(SpanKind::SortWrite, merge_start, ctx.now_us())
                    .with_volume(checksum.records * RECORD_LEN as u64, checksum.records),
            );
            report.spans.extend(spiller.spans.iter().cloned());
            // Chronological, enclosing spans before the spans they hold.
            report
                .spans
                .sort_by_key(|s| (s.start_us, std::cmp::Reverse(s.end_us)));
            report.spilled_runs = spiller.runs_written;
            report.spill_written_bytes = spiller.written_bytes;
            report.spill_read_bytes = read_bytes + hybrid_read_bytes;
            report.records_out = checksum.records;
            report.bytes_out = checksum.records * RECORD_LEN as u64;
            report.checksum_out = Some(checksum);
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// Receives records into arenas: one fills while the other spills in the background.
struct Intake {
    filling: Arena,
    spare: Option<Arena>,
    spilling: Option<tokio::task::JoinHandle<Result<(Arena, Spiller), EngineError>>>,
    /// Here whenever no spill runs.
    spiller: Option<Spiller>,
    budget: Arc<MemoryBudget>,
    arena_bytes: usize,
    minimum_bytes: u64,
}

impl Intake {
    /// Copies whole records into the filling arena, swapping arenas (and spilling the full
    /// one) as they fill up.
    async fn absorb(&mut self, mut bytes: &[u8]) -> Result<(), EngineError> {
        while !bytes.is_empty() {
            if self.filling.remaining() < RECORD_LEN {
                let (empty, spiller) = match self.spilling.take() {
                    Some(handle) => join(handle).await?,
                    None => {
                        let empty = match self.spare.take() {
                            Some(arena) => arena,
                            None => {
                                Arena::new(&self.budget, self.arena_bytes).ok_or_else(|| {
                                    EngineError::BudgetTooSmall {
                                        budget_bytes: self.budget.limit_bytes(),
                                        minimum_bytes: self.minimum_bytes,
                                        what: "a reducer's second sort arena".into(),
                                    }
                                })?
                            }
                        };
                        (
                            empty,
                            self.spiller
                                .take()
                                .expect("the spiller is here when no spill runs"),
                        )
                    }
                };
                let mut full = std::mem::replace(&mut self.filling, empty);
                let mut spiller = spiller;
                self.spilling = Some(crate::task::spawn_blocking_handle(move || {
                    spiller.spill(&full)?;
                    full.bytes.clear();
                    Ok((full, spiller))
                }));
            }
            let n = (self.filling.remaining() / RECORD_LEN * RECORD_LEN).min(bytes.len());
            self.filling.bytes.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Waits for a running spill; returns the arena still holding records and the spiller.
    async fn finish(mut self) -> Result<(Arena, Spiller), EngineError> {
        if let Some(handle) = self.spilling.take() {
            let (_, spiller) = join(handle).await?;
            self.spiller = Some(spiller);
        }
        Ok((
            self.filling,
            self.spiller
                .expect("the spiller is back once no spill runs"),
        ))
    }
}

async fn join(
    handle: tokio::task::JoinHandle<Result<(Arena, Spiller), EngineError>>,
) -> Result<(Arena, Spiller), EngineError> {
    handle.await.map_err(|e| EngineError::Internal {
        what: format!("a spill task failed: {e}"),
    })?
}

/// Merges every run of `spiller` into `emit`, first merging groups of runs into longer runs
/// while there are more than `fan_in`; returns the bytes read back.
fn merge_all(
    spiller: &mut Spiller,
    fan_in: usize,
    read_ahead_bytes: u64,
    mut emit: impl FnMut(&[u8]) -> Result<(), EngineError>,
) -> Result<u64, EngineError> {
    let merge_start = spiller.now_us();
    let mut read_bytes = 0;
    while spiller.runs.len() > fan_in {
        let cascade_start = spiller.now_us();
        let group: Vec<SegmentIndex> = spiller.runs.drain(..fan_in).collect();
        let reader = spiller.writer.reader(group.clone())?;
        let mut run = spiller.run_writer();
        let bytes = merge_runs(&reader, &group, 0, read_ahead_bytes, |record| {
            run.push(record)
        })?;
        // The merged run goes last, so ties keep arrival order only approximately; keys are
        // still in order, which is all a sort promises.
        run.seal()?;
        read_bytes += bytes;
        spiller.record_span(SpanKind::Cascade, cascade_start, bytes);
    }
    let reader = spiller.writer.reader(spiller.runs.clone())?;
    let merged = merge_runs(&reader, &spiller.runs, 0, read_ahead_bytes, &mut emit)?;
    read_bytes += merged;
    spiller.record_span(SpanKind::Merge, merge_start, merged);
    Ok(read_bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use shuffle::spill::WriterOptions;

    use super::*;

    /// Spills `runs` (each sorted by the arena) into a new segment file in `dir`.
    fn spill(dir: &std::path::Path, runs: &[Vec<u8>], block_bytes: usize) -> Spiller {
        let budget = MemoryBudget::new(1 << 30);
        let mut spiller = Spiller::new(
            SegmentFileWriter::create(&dir.join("runs"), WriterOptions::default()).unwrap(),
            block_bytes,
            Instant::now(),
        );
        for run in runs {
            let mut arena = Arena::new(&budget, run.len()).unwrap();
            arena.bytes.extend_from_slice(run);
            spiller.spill(&arena).unwrap();
        }
        spiller
    }

    fn records(seed: u64, count: usize) -> Vec<u8> {
        let mut x = seed;
        (0..count * RECORD_LEN)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    fn merged(spiller: &mut Spiller) -> Result<Vec<u8>, EngineError> {
        let mut out = Vec::new();
        merge_all(spiller, MAX_FAN_IN, 1 << 20, |r| {
            out.extend_from_slice(r);
            Ok(())
        })?;
        Ok(out)
    }

    /// More runs than the fan-in: the cascade still yields every record in key order.
    #[test]
    fn cascade_merge_is_the_sorted_permutation() {
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<Vec<u8>> = (0..MAX_FAN_IN as u64 + 6).map(|i| records(i, 37)).collect();
        let mut spiller = spill(dir.path(), &runs, 10 * RECORD_LEN);
        let out = merged(&mut spiller).unwrap();
        // A span per pass over the disk: one per spilled run and per cascade, one merge.
        let count = |name: SpanKind| spiller.spans.iter().filter(|s| s.name == name).count();
        assert_eq!(count(SpanKind::Spill), runs.len());
        assert_eq!(count(SpanKind::Cascade), 1);
        assert_eq!(
            (count(SpanKind::Spill) + count(SpanKind::Cascade)) as u64,
            spiller.runs_written
        );
        assert_eq!(count(SpanKind::Merge), 1);
        let merge = spiller.spans.last().unwrap();
        assert_eq!(merge.name, SpanKind::Merge);
        assert_eq!(merge.bytes, Some(out.len() as u64));
        assert_eq!(merge.records, Some((out.len() / RECORD_LEN) as u64));
        let spill = &spiller.spans[0];
        assert_eq!(
            (spill.bytes, spill.records),
            (Some(37 * RECORD_LEN as u64), Some(37))
        );
        for s in &spiller.spans {
            assert!(s.start_us <= s.end_us, "{s:?}");
            if s.name != SpanKind::Merge {
                assert!(s.end_us <= merge.end_us, "{s:?} ends after the merge");
            }
        }
        let mut expected: Vec<&[u8]> = runs
            .iter()
            .flat_map(|r| r.chunks_exact(RECORD_LEN))
            .collect();
        expected.sort_by_key(|r| key80(r));
        let got: Vec<u128> = out.chunks_exact(RECORD_LEN).map(key80).collect();
        assert_eq!(got, expected.iter().map(|r| key80(r)).collect::<Vec<_>>());
        assert_eq!(
            Checksum::of_records(&out),
            Checksum::of_records(&runs.concat())
        );
    }

    /// Spill files have no name while in use (nothing else can cut them short under a map),
    /// yet merge normally through the writer's handle.
    #[test]
    fn unlinked_spill_files_are_invisible_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(1 << 30);
        let mut spiller = Spiller::new(
            SegmentFileWriter::create_unlinked(dir.path(), "runs", WriterOptions::default())
                .unwrap(),
            4000,
            Instant::now(),
        );
        let runs = [records(5, 200), records(6, 300)];
        for run in &runs {
            let mut arena = Arena::new(&budget, run.len()).unwrap();
            arena.bytes.extend_from_slice(run);
            spiller.spill(&arena).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let out = merged(&mut spiller).unwrap();
        assert_eq!(
            Checksum::of_records(&out),
            Checksum::of_records(&runs.concat())
        );
    }

    /// A flipped byte in a spilled run is an error naming the file, offset and partition —
    /// never a wrong output.
    #[test]
    fn corrupt_block_is_reported_with_file_offset_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![records(1, 500), records(2, 500)];
        let mut spiller = spill(dir.path(), &runs, 100 * RECORD_LEN);
        let second = spiller.runs[1].partition(0).unwrap().offset;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("runs"))
            .unwrap();
        let at = second + 3 * 1000; // inside a payload of the second run
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
        let error = merged(&mut spiller).unwrap_err().to_string();
        assert!(
            error.contains("runs") && error.contains("offset") && error.contains("partition 0"),
            "{error}"
        );
    }

    /// A spill file cut short is reported as truncated before anything is mapped.
    #[test]
    fn truncated_run_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![records(3, 300), records(4, 300)];
        let mut spiller = spill(dir.path(), &runs, 50 * RECORD_LEN);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("runs"))
            .unwrap();
        file.set_len(spiller.runs[1].offset + 10).unwrap();
        let error = merged(&mut spiller).unwrap_err().to_string();
        assert!(error.contains("runs") && error.contains("trunc"), "{error}");
    }
}
