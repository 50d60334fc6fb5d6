//! The one vertex operator of batch jobs, `batch.stage`, and the function that runs a job.
//!
//! ```text
//! input ─► head ─► row operators ─► tail
//! splits of a source        pass            filter, project,      partial aggregate + hash
//! | exchanges (one per      | final agg     tokenize              | hash by key columns
//!   earlier stage)          | join | sort                         | gather (top-N, limit)
//!                           | limit                               | a part file (the sink)
//! ```
//!
//! The operators run on one blocking thread per subtask; async tasks beside it read the
//! input gates (one each, so that a join can read its build side to the end while the probe
//! side waits behind withheld credits) and send the output buffers.
//!
//! Buffers on the exchange carry frames: a little-endian `u32` length, then one batch as an
//! Arrow IPC stream. Blocking partitions store buffers in segment blocks that may cut a frame
//! anywhere, so the consumer reassembles frames from whatever bytes arrive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema};
use shuffle::{Buffer, BufferPool, InputGate, Received, ResultPartitionType};
use tokio::sync::mpsc;

use super::aggregate::{FinalAggregate, HashAggregate, Phase};
use super::join::Join;
use super::plan::{from_defs, scan_schema, Head, Plan, Stage, StageInput, Tail};
use super::sink::PartWriter;
use super::sort::Sorter;
use super::source::{SourceFile, BATCH_ROWS};
use super::spec::{Functions, JobSpec, Mode, RowOp};
use super::spill::{SpillDir, SpillStats};
use super::{codec, consumers_of, BatchError, KEY_GROUPS};
use crate::graph::{Distribution, JobGraph};
use crate::memory::{MemoryBudget, Reservation};
use crate::operator::{OperatorDescriptor, OperatorRegistry, TaskResources};
use crate::output::{IoMode, OutputFile, OutputTarget};
use crate::scheduler::{self, JobEnv};
use crate::source::{FileSplit, SplitEnumerator};
use crate::task::{spawn_blocking_handle, BoxFuture, Invokable, SubtaskContext, SubtaskReport};
use crate::tempdir::JobTempDir;
use crate::EngineError;

/// Memory a partial or final aggregate asks for at a time.
const GROW_BYTES: u64 = 256 << 10;

/// Registers `batch.stage`.
pub fn register_operators(registry: &mut OperatorRegistry) {
    registry.register("batch.stage", |descriptor, _, _| match descriptor {
        OperatorDescriptor::BatchStage(stage) => Ok(Box::new(StageTask(stage.clone()))),
        other => Err(other.mismatch("batch.stage")),
    });
}

/// Applies a row operator to a batch.
fn apply(
    op: &RowOp,
    batch: &RecordBatch,
    functions: &Functions,
) -> Result<RecordBatch, BatchError> {
    match op {
        RowOp::Map { function } => {
            let f = functions.0.get(function).ok_or_else(|| BatchError::Spec {
                what: format!("no function {function:?} in this process"),
            })?;
            f(batch.clone()).map_err(|reason| BatchError::Function {
                name: function.clone(),
                reason,
            })
        }
        RowOp::Filter(predicate) => predicate.filter(batch),
        RowOp::Project { columns } => {
            let schema = batch.schema();
            let indices = columns
                .iter()
                .map(|c| schema.index_of(c).map_err(BatchError::arrow("project")))
                .collect::<Result<Vec<_>, _>>()?;
            batch
                .project(&indices)
                .map_err(BatchError::arrow("project"))
        }
        RowOp::Tokenize { column, name } => {
            let lines = batch
                .column(*column)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| BatchError::Spec {
                    what: format!("tokenize: column {column} is not text"),
                })?;
            // Straight into one string buffer: no allocation per word (ASCII words are
            // lower-cased in place; others through `str::to_lowercase`, final sigma included).
            let mut words = arrow_array::builder::StringBuilder::new();
            let mut lower = String::new();
            for line in lines.iter().flatten() {
                for word in line
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    lower.clear();
                    if word.is_ascii() {
                        lower.push_str(word);
                        lower.make_ascii_lowercase();
                    } else {
                        lower.push_str(&word.to_lowercase());
                    }
                    words.append_value(&lower);
                }
            }
            let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
            RecordBatch::try_new(schema, vec![Arc::new(words.finish()) as ArrayRef])
                .map_err(BatchError::arrow("tokenize"))
        }
    }
}

/// Frames a batch for the exchange: length, then the IPC bytes.
fn frame(batch: &RecordBatch) -> Result<Vec<u8>, BatchError> {
    let ipc = codec::encode(batch)?;
    let mut bytes = Vec::with_capacity(4 + ipc.len());
    bytes.extend_from_slice(&(ipc.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&ipc);
    Ok(bytes)
}

/// Reassembles frames from bytes that arrive in arbitrary pieces.
#[derive(Default)]
struct Frames {
    pending: Vec<u8>,
}

impl Frames {
    /// Adds bytes; calls `batch` for every batch now complete. Whole frames are decoded
    /// straight from `bytes`; only a cut frame's start is kept.
    fn push(
        &mut self,
        bytes: &[u8],
        mut batch: impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let pending = !self.pending.is_empty();
        if pending {
            self.pending.extend_from_slice(bytes);
        }
        let source: &[u8] = if pending { &self.pending } else { bytes };
        let mut at = 0;
        while source.len() - at >= 4 {
            let len = u32::from_le_bytes(source[at..at + 4].try_into().expect("4 bytes")) as usize;
            if source.len() - at - 4 < len {
                break;
            }
            for b in codec::decode(&source[at + 4..at + 4 + len])? {
                batch(b)?;
            }
            at += 4 + len;
        }
        if pending {
            self.pending.drain(..at);
        } else {
            self.pending.extend_from_slice(&bytes[at..]);
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), EngineError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Internal {
                what: format!(
                    "{} bytes of a cut frame at the end of the input",
                    self.pending.len()
                ),
            })
        }
    }
}

struct StageTask(Box<Stage>);

/// What the blocking thread hands the async side: a frame for one consumer.
type ToSend = (usize, Vec<u8>);

/// Batches from one input gate, or the gate's error.
type FromGate = mpsc::Receiver<Result<RecordBatch, EngineError>>;

impl Invokable for StageTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let mut report = ctx.report();
            let stage = self.0;
            let resources = &ctx.resources;
            let budget = match stage.input {
                StageInput::Scan { .. } => resources.map_memory.clone(),
                StageInput::Exchange { .. } => resources.memory.clone(),
            }
            .ok_or_else(|| EngineError::Internal {
                what: "batch.stage runs without a memory budget".into(),
            })?;
            let spill = SpillDir::new(resources.spill_dirs.first().cloned().ok_or_else(|| {
                EngineError::Internal {
                    what: "batch.stage runs without a spill folder".into(),
                }
            })?);
            // One reader task per gate; dropped with this future, they stop.
            let mut readers = tokio::task::JoinSet::new();
            let input = match &stage.input {
                StageInput::Scan { .. } => {
                    Input::Splits(ctx.splits.clone().ok_or_else(|| EngineError::Internal {
                        what: "a scan stage runs without splits".into(),
                    })?)
                }
                StageInput::Exchange { sides, .. } => {
                    // One channel per side of the head; every gate of a side feeds its channel.
                    let count = sides.iter().max().map_or(0, |&s| s + 1);
                    let (txs, rxs): (Vec<_>, Vec<_>) = (0..count).map(|_| mpsc::channel(2)).unzip();
                    for (gate, &side) in ctx.inputs.drain(..).zip(sides) {
                        readers.spawn(read_gate(gate, txs[side].clone()));
                    }
                    Input::Gates(rxs)
                }
            };
            let (tx, mut rx) = mpsc::channel::<ToSend>(4);
            let out = match &stage.tail {
                Tail::Sink { .. } => {
                    Out::Sink(resources.output(ctx.subtask, "batch.stage")?.clone())
                }
                _ => Out::Exchange(Exchange {
                    tx,
                    consumers: ctx.outputs[0].num_subpartitions(),
                    rows: 0,
                }),
            };
            let subtask = ctx.subtask;
            let functions = resources.functions.clone();
            let work = spawn_blocking_handle(move || {
                run_stage(&stage, input, out, subtask, &budget, spill, &functions)
            });
            if let Some(out) = ctx.outputs.first_mut() {
                while let Some((consumer, bytes)) = rx.recv().await {
                    report.bytes_out += bytes.len() as u64;
                    out.send(consumer, Buffer::from(bytes)).await?;
                }
            }
            let stats = work.await.map_err(|e| EngineError::Internal {
                what: format!("a stage's blocking work failed: {e}"),
            })??;
            while let Some(read) = readers.join_next().await {
                let (bytes, spill_read) = read.map_err(|e| EngineError::Internal {
                    what: format!("an input reader failed: {e}"),
                })?;
                report.bytes_in += bytes;
                report.spill_read_bytes += spill_read;
            }
            if let Some(out) = ctx.outputs.first_mut() {
                out.finish()?;
            }
            report.records_in = stats.rows_in;
            report.records_skipped = stats.skipped;
            report.records_out = stats.rows_out;
            report.spilled_runs = stats.flushes + stats.spill.runs;
            report.spill_written_bytes = stats.spill.written_bytes;
            report.spill_read_bytes += stats.spill.read_bytes;
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// Reads one input gate to its end, reassembling batches for the stage's blocking thread;
/// an error is handed on as the gate's last item. Returns the bytes read (exchange, spill).
async fn read_gate(
    mut gate: InputGate,
    tx: mpsc::Sender<Result<RecordBatch, EngineError>>,
) -> (u64, u64) {
    let mut frames = Frames::default();
    let mut spill_read = 0;
    let result = async {
        while let Some((_, received)) = gate.next_received().await? {
            let mut batches = Vec::new();
            let mut collect = |b| {
                batches.push(b);
                Ok(())
            };
            match received {
                Received::Buffer(buffer) => frames.push(buffer.as_bytes(), &mut collect)?,
                Received::Spilled(spilled) => {
                    let reader = spilled.open()?;
                    let blocks =
                        reader.partition_blocks(spilled.segment.segment, spilled.partition)?;
                    for block in blocks.releasing() {
                        let block = block?;
                        spill_read += block.payload.len() as u64;
                        frames.push(&block.payload, &mut collect)?;
                    }
                }
            }
            for batch in batches {
                if tx.send(Ok(batch)).await.is_err() {
                    return Ok(()); // The stage stopped (it failed on its own).
                }
            }
        }
        frames.finish()
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
    (gate.metrics().bytes, spill_read)
}

/// A stage's input on its blocking thread.
enum Input {
    Splits(Arc<SplitEnumerator>),
    Gates(Vec<FromGate>),
}

/// A stage's output on its blocking thread.
enum Out {
    Exchange(Exchange),
    Sink(OutputFile),
}

#[derive(Default)]
struct StageStats {
    rows_in: u64,
    rows_out: u64,
    /// Malformed input records skipped (`on_error = "skip"`).
    skipped: u64,
    /// Partial aggregates emitted early because memory ran out.
    flushes: u64,
    spill: SpillStats,
}

/// A stage's input on its blocking thread, and the rows read from it.
struct Reader<'a> {
    stage: &'a Stage,
    input: Input,
    subtask: usize,
    rows_in: u64,
    /// Malformed source records skipped.
    skipped: u64,
}

impl Reader<'_> {
    /// Calls `f` with every batch of input side `i`.
    fn each(
        &mut self,
        i: usize,
        mut f: impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let (stage, subtask) = (self.stage, self.subtask);
        let (rows_in, skipped) = (&mut self.rows_in, &mut self.skipped);
        match (&mut self.input, &stage.input) {
            (
                Input::Splits(splits),
                StageInput::Scan {
                    source,
                    files,
                    columns,
                    projection,
                },
            ) => {
                let schema = from_defs(columns)?;
                while let Some(split) = splits.next(subtask) {
                    let (file, split) = file_split(files, split)?;
                    let mut failed = None;
                    *skipped += source
                        .read(file, &schema, projection.as_deref(), split, |batch| {
                            *rows_in += batch.num_rows() as u64;
                            f(batch).map_err(|e| {
                                failed = Some(e);
                                BatchError::Spec {
                                    what: "stopped".into(),
                                }
                            })
                        })
                        .map_err(|e| failed.take().unwrap_or(EngineError::Batch(e)))?;
                }
                Ok(())
            }
            (Input::Gates(gates), _) => {
                let gate = gates.get_mut(i).ok_or_else(|| EngineError::Internal {
                    what: format!("stage {} has no input {i}", stage.name),
                })?;
                while let Some(batch) = gate.blocking_recv() {
                    let batch = batch?;
                    *rows_in += batch.num_rows() as u64;
                    f(batch)?;
                }
                Ok(())
            }
            _ => Err(EngineError::Internal {
                what: format!("stage {} got the wrong kind of input", stage.name),
            }),
        }
    }
}

/// The file a split of a scan (`SplitEnumerator::for_ranges` over its files) lies in, and the split in that file's offsets.
fn file_split(files: &[SourceFile], split: FileSplit) -> Result<(&Path, FileSplit), EngineError> {
    let mut base = 0;
    for file in files {
        if split.start < base + file.len {
            let local = FileSplit {
                start: split.start - base,
                end: split.end - base,
            };
            return Ok((&file.path, local));
        }
        base += file.len;
    }
    Err(EngineError::Internal {
        what: format!("split {split:?} lies past the source's files"),
    })
}

/// Runs a stage on its blocking thread: input → head → row operators → tail.
fn run_stage(
    stage: &Stage,
    input: Input,
    out: Out,
    subtask: usize,
    budget: &Arc<MemoryBudget>,
    spill: SpillDir,
    functions: &Functions,
) -> Result<StageStats, EngineError> {
    let mut stats = StageStats::default();
    let mut tail = TailOp::new(stage, out, budget, &spill)?;
    let mut reader = Reader {
        stage,
        input,
        subtask,
        rows_in: 0,
        skipped: 0,
    };
    let mut downstream = |batch: RecordBatch| -> Result<(), EngineError> {
        let mut batch = batch;
        for op in &stage.ops {
            batch = apply(op, &batch, functions)?;
        }
        tail.push(batch)
    };
    let input_schema = |i: usize| match &stage.input {
        StageInput::Scan {
            columns,
            projection,
            ..
        } => scan_schema(columns, projection.as_deref()),
        // The columns of side `i` (every edge of a side carries the same).
        StageInput::Exchange { columns, sides, .. } => {
            let edge = sides.iter().position(|&s| s == i).unwrap_or(i);
            from_defs(columns.get(edge).map_or(&[][..], Vec::as_slice))
        }
    };
    match &stage.head {
        Head::Pass => {
            reader.each(0, downstream)?;
        }
        Head::Limit(n) => {
            let mut left = *n;
            reader.each(0, |batch| {
                let take = left.min(batch.num_rows() as u64);
                left -= take;
                if take > 0 {
                    downstream(batch.slice(0, take as usize))?;
                }
                Ok(())
            })?;
        }
        Head::Sort { spec, limit } => {
            let mut sorter = Sorter::new(spec, input_schema(0)?, *limit, budget, spill)?;
            reader.each(0, |b| sorter.push(b))?;
            stats.spill.add(sorter.finish(&mut downstream)?);
        }
        Head::Join(spec) => {
            let mut join = Join::new(spec, input_schema(0)?, input_schema(1)?, budget, spill)?;
            reader.each(1, |b| join.build(b))?;
            reader.each(0, |b| join.probe(b, &mut downstream))?;
            stats.spill.add(join.finish(&mut downstream)?);
        }
        Head::Aggregate {
            spec,
            input: columns,
        } => {
            let mut aggregate = FinalAggregate::new(spec, from_defs(columns)?, budget, spill)?;
            reader.each(0, |b| aggregate.push(&b))?;
            stats.spill.add(aggregate.finish(&mut downstream)?);
        }
    }
    (stats.rows_in, stats.skipped) = (reader.rows_in, reader.skipped);
    let (rows_out, flushes) = tail.finish()?;
    stats.rows_out = rows_out;
    stats.flushes = flushes;
    Ok(stats)
}

/// The end of a stage (one per subtask: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum TailOp {
    Partial {
        aggregate: HashAggregate,
        reservation: Reservation,
        converter: RowConverter,
        keys: usize,
        out: Exchange,
        flushes: u64,
    },
    Hash {
        columns: Vec<usize>,
        converter: RowConverter,
        out: Exchange,
    },
    Gather {
        sorter: Option<Box<Sorter>>,
        limit: u64,
        out: Exchange,
    },
    Rebalance {
        out: Exchange,
        next: usize,
    },
    Sink(PartWriter),
}

/// The exchange a tail sends frames into.
struct Exchange {
    tx: mpsc::Sender<ToSend>,
    consumers: usize,
    rows: u64,
}

impl Exchange {
    fn send(&mut self, consumer: usize, batch: &RecordBatch) -> Result<(), EngineError> {
        self.rows += batch.num_rows() as u64;
        self.tx
            .blocking_send((consumer, frame(batch)?))
            .map_err(|_| EngineError::Internal {
                what: "the stage's sender stopped".into(),
            })
    }

    /// Sends each row of `batch` to the consumer that owns its key.
    fn send_by_key(
        &mut self,
        batch: &RecordBatch,
        converter: &RowConverter,
        columns: &[usize],
    ) -> Result<(), EngineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // One consumer, or no key (a global aggregate's one group): all to the first.
        if self.consumers == 1 || columns.is_empty() {
            return self.send(0, batch);
        }
        let keys: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
        let rows = converter
            .convert_columns(&keys)
            .map_err(BatchError::arrow("key rows"))?;
        let mut rows_of = vec![Vec::new(); self.consumers];
        for (row, owner) in consumers_of(&rows, KEY_GROUPS, self.consumers)
            .into_iter()
            .enumerate()
        {
            rows_of[owner as usize].push(row as u32);
        }
        for (consumer, indices) in rows_of.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let part = arrow_select::take::take_record_batch(batch, &UInt32Array::from(indices))
                .map_err(BatchError::arrow("partition a batch"))?;
            self.send(consumer, &part)?;
        }
        Ok(())
    }
}

fn key_converter(schema: &Schema, columns: &[usize]) -> Result<RowConverter, BatchError> {
    RowConverter::new(
        columns
            .iter()
            .map(|&c| SortField::new(schema.field(c).data_type().clone()))
            .collect(),
    )
    .map_err(BatchError::arrow("key rows"))
}

impl TailOp {
    fn new(
        stage: &Stage,
        out: Out,
        budget: &Arc<MemoryBudget>,
        spill: &SpillDir,
    ) -> Result<Self, EngineError> {
        let schema = from_defs(&stage.columns)?;
        let exchange = |out: Out| match out {
            Out::Exchange(exchange) => Ok(exchange),
            Out::Sink(_) => Err(EngineError::Internal {
                what: format!("stage {} sends to a sink file", stage.name),
            }),
        };
        Ok(match &stage.tail {
            Tail::Partial { spec, input } => {
                let aggregate = HashAggregate::new(spec, &*from_defs(input)?, Phase::Partial)?;
                let keys = spec.keys.len();
                let partial = aggregate.output_schema();
                Self::Partial {
                    converter: key_converter(&partial, &(0..keys).collect::<Vec<_>>())?,
                    aggregate,
                    reservation: budget.try_reserve(0).ok_or_else(|| {
                        super::too_small(budget, GROW_BYTES, "a partial aggregate")
                    })?,
                    keys,
                    out: exchange(out)?,
                    flushes: 0,
                }
            }
            Tail::Hash { keys } => {
                let columns = keys
                    .iter()
                    .map(|k| super::column_index(&schema, k))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::Hash {
                    converter: key_converter(&schema, &columns)?,
                    columns,
                    out: exchange(out)?,
                }
            }
            Tail::Gather { sort, limit } => Self::Gather {
                sorter: match sort {
                    // A local top-N: the first `limit` rows of this subtask.
                    Some(spec) if limit.is_some() => Some(Box::new(Sorter::new(
                        spec,
                        schema.clone(),
                        *limit,
                        budget,
                        spill.clone(),
                    )?)),
                    _ => None,
                },
                limit: limit.unwrap_or(u64::MAX),
                out: exchange(out)?,
            },
            Tail::Rebalance => Self::Rebalance {
                out: exchange(out)?,
                next: 0,
            },
            Tail::Sink { sink } => {
                let Out::Sink(file) = out else {
                    return Err(EngineError::Internal {
                        what: format!("stage {} has a sink but no output file", stage.name),
                    });
                };
                Self::Sink(PartWriter::new(sink, &file, schema, budget)?)
            }
        })
    }

    fn push(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        match self {
            Self::Partial {
                aggregate,
                reservation,
                converter,
                keys,
                out,
                flushes,
            } => {
                aggregate.push(&batch)?;
                if !super::grow_to(reservation, aggregate.bytes() as u64) {
                    // Out of memory: send what we have (the next stage merges it) and start
                    // again.
                    *flushes += 1;
                    let columns: Vec<usize> = (0..*keys).collect();
                    for batch in aggregate.emit(BATCH_ROWS)? {
                        out.send_by_key(&batch, converter, &columns)?;
                    }
                    reservation.shrink_to(0);
                }
                Ok(())
            }
            Self::Hash {
                columns,
                converter,
                out,
            } => out.send_by_key(&batch, converter, columns),
            Self::Gather { sorter, limit, out } => match sorter {
                Some(sorter) => sorter.push(batch),
                None => {
                    let take = (*limit - out.rows).min(batch.num_rows() as u64);
                    if take > 0 {
                        out.send(0, &batch.slice(0, take as usize))?;
                    }
                    Ok(())
                }
            },
            Self::Rebalance { .. } if batch.num_rows() == 0 => Ok(()),
            Self::Rebalance { out, next } => {
                *next += 1;
                out.send(*next % out.consumers, &batch)
            }
            Self::Sink(part) => part.write(&batch),
        }
    }

    /// Sends or writes what is left; returns the rows sent or written and the early flushes.
    fn finish(self) -> Result<(u64, u64), EngineError> {
        match self {
            Self::Partial {
                mut aggregate,
                converter,
                keys,
                mut out,
                flushes,
                reservation,
            } => {
                let columns: Vec<usize> = (0..keys).collect();
                for batch in aggregate.emit(BATCH_ROWS)? {
                    out.send_by_key(&batch, &converter, &columns)?;
                }
                drop(reservation);
                Ok((out.rows, flushes))
            }
            Self::Hash { out, .. } | Self::Rebalance { out, .. } => Ok((out.rows, 0)),
            Self::Gather {
                sorter, mut out, ..
            } => {
                if let Some(sorter) = sorter {
                    sorter.finish(|batch| out.send(0, &batch))?;
                }
                Ok((out.rows, 0))
            }
            Self::Sink(part) => Ok((part.finish()?, 0)),
        }
    }
}

/// How to run a job spec; flags override the spec.
#[derive(Clone, Debug, Default)]
pub struct BatchJobConfig {
    pub spec: PathBuf,
    pub mode: Option<Mode>,
    pub memory_bytes: Option<u64>,
    pub parallelism: Option<usize>,
    pub force: bool,
    /// Where blocking exchanges and spilling operators write (default: the system temp
    /// folder).
    pub spill_dir: Option<PathBuf>,
    pub max_attempts: u32,
    /// Task executors to spread the subtasks over (see [`crate::placement`]); `None`:
    /// `MILLRACE_EXECUTORS` when set, else one process with every channel in-process.
    pub placement: Option<crate::placement::Placement>,
}

/// What a finished job did.
#[derive(Debug)]
pub struct BatchJobResult {
    pub name: String,
    pub mode: Mode,
    pub parallelism: usize,
    pub output: PathBuf,
    /// Part files in the output (one after a sort or limit).
    pub parts: usize,
    /// Rows read from the sources.
    pub rows_in: u64,
    /// Malformed source records skipped (`on_error = "skip"`), not in `rows_in`.
    pub rows_skipped: u64,
    /// Rows written to the sink.
    pub rows_out: u64,
    /// Partial aggregates emitted early because their memory ran out.
    pub partial_flushes: u64,
    /// Runs and partitions sorts and joins spilled, and their bytes.
    pub spilled_runs: u64,
    pub spilled_bytes: u64,
    pub wall: std::time::Duration,
    /// Every subtask attempt's interval, volumes and spans (`--timeline`).
    pub timeline: crate::timeline::Timeline,
    /// With a placement: what the pipelined exchanges between executors carried over TCP.
    pub network: Option<crate::placement::NetworkSummary>,
}

/// Checks a spec file against its data and plans it with `config`'s overrides.
pub fn plan(config: &BatchJobConfig) -> Result<(Plan, usize), EngineError> {
    plan_spec(&JobSpec::from_file(&config.spec)?, config)
}

/// Checks a spec against its data and plans it with `config`'s overrides.
pub fn plan_spec(spec: &JobSpec, config: &BatchJobConfig) -> Result<(Plan, usize), EngineError> {
    let mut plan = spec.plan()?;
    if let Some(mode) = config.mode {
        plan.mode = mode;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallelism = config
        .parallelism
        .or(plan.parallelism)
        .unwrap_or(cores)
        .clamp(1, 1024);
    Ok((plan, parallelism))
}

/// A job that ran; its output waits under its temp name until [`publish`](Self::publish),
/// so that the caller can write other outputs (a timeline) and then publish them all.
pub struct FinishedJob {
    pub result: BatchJobResult,
    output: Pending,
}

enum Pending {
    Stages(OutputTarget),
    TeraSort(Box<crate::terasort::FinishedSort>),
}

impl FinishedJob {
    /// Renames the output into place; returns what the job did.
    pub fn publish(self) -> Result<BatchJobResult, EngineError> {
        match self.output {
            Pending::Stages(target) => drop(target.publish()?),
            Pending::TeraSort(sort) => drop(sort.publish()?),
        }
        Ok(self.result)
    }
}

/// Runs a job spec and publishes its output (only when every subtask succeeded).
pub fn run(config: &BatchJobConfig) -> Result<BatchJobResult, EngineError> {
    run_uncommitted(config)?.publish()
}

/// Runs a job spec up to, not including, the rename of its output: plans it, builds the job
/// graph (a vertex per stage, hash, gather or rebalance exchanges of the mode's partition
/// type) and runs it on the runtime; a TeraSort-shaped plan runs as the TeraSort job.
pub fn run_uncommitted(config: &BatchJobConfig) -> Result<FinishedJob, EngineError> {
    run_spec(JobSpec::from_file(&config.spec)?, config)
}

/// [`run_uncommitted`] for a spec in memory (`config.spec` is not read): what
/// [`JobBuilder`](super::JobBuilder) runs, user functions included.
pub fn run_spec(spec: JobSpec, config: &BatchJobConfig) -> Result<FinishedJob, EngineError> {
    let (plan, parallelism) = plan_spec(&spec, config)?;
    run_plan(plan, parallelism, spec.functions, config)
}

/// [`run_spec`] for a spec already planned (by [`plan`] or [`plan_spec`], with `config`),
/// with the user functions its `map` steps call.
pub fn run_plan(
    plan: Plan,
    parallelism: usize,
    functions: Functions,
    config: &BatchJobConfig,
) -> Result<FinishedJob, EngineError> {
    let job_start = Instant::now();
    let started_at = std::time::SystemTime::now();
    if let Some((input, output)) = plan.terasort() {
        return run_terasort(config, &plan, parallelism, input, output);
    }
    let memory = config
        .memory_bytes
        .or(plan.memory_bytes)
        .or_else(|| crate::memory::total_ram_bytes().map(|b| b / 2))
        .unwrap_or(1 << 30);
    // Room for a few batches per stage; below it every row would be a spill.
    const MINIMUM: u64 = 4 << 20;
    if memory < MINIMUM {
        return Err(EngineError::BudgetTooSmall {
            budget_bytes: memory,
            minimum_bytes: MINIMUM,
            what: "a batch job".into(),
        });
    }
    let sources = plan.sources();
    let sink_stage = plan.stages.last().ok_or_else(|| EngineError::Internal {
        what: "a plan without stages".into(),
    })?;
    let parts = if sink_stage.single { 1 } else { parallelism };
    // A records sink (and any with `one_file`) writes one file, as `sort` does; the others a
    // folder of parts.
    let folder = !plan.sink.one_file();
    let target = OutputTarget::create(
        plan.sink.path(),
        &sources.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        0,
        folder.then_some(parts),
        IoMode::Buffered,
        config.force,
    )?;
    let mut graph = job_graph(&plan, parallelism);
    let mut scans = Vec::new();
    for (v, stage) in plan.stages.iter().enumerate() {
        if let StageInput::Scan { files, .. } = &stage.input {
            let p = graph.vertices[v].parallelism;
            let input_bytes: u64 = files.iter().map(|f| f.len).sum();
            let split_bytes = (input_bytes / (4 * p as u64)).clamp(1 << 20, 64 << 20);
            let lens = files.iter().map(|f| f.len);
            graph.vertices[v].splits =
                Some(Arc::new(SplitEnumerator::for_ranges(lens, split_bytes)));
            scans.push(v);
        }
    }
    let spill_root = config.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let job_dir = JobTempDir::create(&spill_root)?;
    // Scans get a quarter of the budget (a partial aggregate only emits early when its share
    // runs out), the stages after exchanges the rest (final aggregates, joins, sorts).
    let resources = Arc::new(TaskResources {
        memory: Some(MemoryBudget::new(memory - memory / 4)),
        map_memory: Some(MemoryBudget::new(memory / 4)),
        spill_dirs: vec![job_dir.path().to_path_buf()],
        pool: BufferPool::new(1 << 16, 0),
        outputs: (0..parts).map(|r| target.file(r).clone()).collect(),
        functions,
        ..TaskResources::default()
    });
    let env = JobEnv {
        spill_dirs: vec![job_dir.path().to_path_buf()],
        max_attempts: config.max_attempts.max(1),
        fail_attempts: scheduler::injected_failures(),
        registry: Arc::new(OperatorRegistry::with_builtins()),
        resources,
        placement: config.placement.or_else(scheduler::placement_from_env),
        ..JobEnv::default()
    };
    let result = scheduler::run_job(graph, job_start, &env)?;
    let network = result.network;
    drop(job_dir);
    check_delivered(&plan.stages, &result.subtasks)?;
    let sink_vertex = plan.stages.len() - 1;
    let is_scan = |s: &&SubtaskReport| scans.contains(&s.vertex_id);
    let rows_in = result
        .subtasks
        .iter()
        .filter(is_scan)
        .map(|s| s.records_in)
        .sum();
    let rows_out = result
        .subtasks
        .iter()
        .filter(|s| s.vertex_id == sink_vertex)
        .map(|s| s.records_out)
        .sum();
    let rows_skipped = result
        .subtasks
        .iter()
        .filter(is_scan)
        .map(|s| s.records_skipped)
        .sum();
    let partial_flushes = result
        .subtasks
        .iter()
        .filter(is_scan)
        .map(|s| s.spilled_runs)
        .sum();
    let others = || {
        result
            .subtasks
            .iter()
            .filter(|s| !scans.contains(&s.vertex_id))
    };
    let spilled_runs = others().map(|s| s.spilled_runs).sum();
    let spilled_bytes = others().map(|s| s.spill_written_bytes).sum();
    target.sync()?;
    let wall = job_start.elapsed();
    // The runtime's record of every subtask; the phases are TeraSort's, none here.
    let no_phases = crate::timeline::PhaseRules {
        vertices: &[],
        spans: &[],
        nested_spans: &[],
    };
    let timeline = crate::timeline::Timeline::new(
        plan.name.clone(),
        plan.mode.as_str(),
        started_at,
        wall.as_micros() as u64,
        result.subtasks,
        &no_phases,
        Vec::new(),
    );
    Ok(FinishedJob {
        result: BatchJobResult {
            name: plan.name,
            mode: plan.mode,
            parallelism,
            output: plan.sink.path().to_path_buf(),
            parts,
            rows_in,
            rows_skipped,
            rows_out,
            partial_flushes,
            spilled_runs,
            spilled_bytes,
            wall,
            timeline,
            network,
        },
        output: Pending::Stages(target),
    })
}

/// The job graph of `plan`: a vertex per stage (`batch.stage`), an edge per exchange with the
/// distribution its producer's tail asks for and the partition type of the exchange's mode
/// (the stage's `exchange`, or the job's). Scans get their splits when the job runs.
pub(crate) fn job_graph(plan: &Plan, parallelism: usize) -> JobGraph {
    let mut graph = JobGraph::new(plan.name.clone());
    for stage in &plan.stages {
        let p = if stage.single { 1 } else { parallelism };
        let v = graph.add_vertex(
            stage.name.clone(),
            p,
            OperatorDescriptor::BatchStage(Box::new(stage.clone())),
        );
        if let StageInput::Exchange { from, .. } = &stage.input {
            let mode = plan.edge_mode(stage);
            let partition_type = match mode {
                Mode::Pipelined => ResultPartitionType::Pipelined,
                Mode::Staged | Mode::MapReduce => ResultPartitionType::Blocking,
            };
            for &f in from {
                let distribution = match plan.stages[f].tail {
                    Tail::Rebalance => Distribution::Rebalance,
                    _ => Distribution::Hash {
                        key_groups: KEY_GROUPS,
                    },
                };
                let edge =
                    graph.connect(crate::graph::VertexId(f), v, distribution, partition_type);
                if mode == Mode::MapReduce {
                    edge.slow_start = 0.05;
                }
            }
        }
    }
    graph
}

/// Runs a plan that is TeraSort (records sorted by key into records) as the TeraSort job: the
/// fixed-record operators on the same runtime, `millrace sort`'s fast path.
fn run_terasort(
    config: &BatchJobConfig,
    plan: &Plan,
    parallelism: usize,
    input: &std::path::Path,
    output: &std::path::Path,
) -> Result<FinishedJob, EngineError> {
    use crate::terasort::{self, ExecutionMode, SortConfig};
    let mut sort = SortConfig::new(input, output);
    sort.mode = match plan.mode {
        Mode::Pipelined => ExecutionMode::Pipelined,
        Mode::Staged => ExecutionMode::Staged,
        Mode::MapReduce => ExecutionMode::MapReduce,
    };
    (sort.maps, sort.reducers) = (parallelism, parallelism);
    if let Some(memory) = config.memory_bytes.or(plan.memory_bytes) {
        sort.memory_bytes = memory;
    }
    sort.spill_dirs.extend(config.spill_dir.clone());
    sort.force = config.force;
    sort.max_attempts = config.max_attempts.max(1);
    sort.placement = config.placement;
    let given = config.parallelism.or(plan.parallelism).is_some();
    sort.fit_default_parallelism(!given, !given);
    sort.check_limits()?;
    let finished = terasort::run_uncommitted(&sort, Arc::new(terasort::Progress::default()))?;
    let report = &finished.report;
    Ok(FinishedJob {
        result: BatchJobResult {
            name: plan.name.clone(),
            mode: plan.mode,
            parallelism: report.reducers,
            output: report.output.clone(),
            parts: 1,
            rows_in: report.records,
            rows_skipped: 0,
            rows_out: report.records,
            partial_flushes: 0,
            spilled_runs: 0,
            spilled_bytes: report.io.spill_written_bytes,
            wall: std::time::Duration::from_micros(report.wall_us),
            timeline: report.timeline.clone(),
            network: report.network,
        },
        output: Pending::TeraSort(Box::new(finished)),
    })
}

/// Checks that every exchange delivered what was sent into it (the batch counterpart of
/// TeraSort's count and checksum check): a job never succeeds with rows missing.
fn check_delivered(stages: &[Stage], subtasks: &[SubtaskReport]) -> Result<(), EngineError> {
    let rows = |v: usize, of: fn(&SubtaskReport) -> u64| -> u64 {
        subtasks.iter().filter(|s| s.vertex_id == v).map(of).sum()
    };
    for (v, stage) in stages.iter().enumerate() {
        if let StageInput::Exchange { from, .. } = &stage.input {
            let sent: u64 = from.iter().map(|&f| rows(f, |s| s.records_out)).sum();
            let received = rows(v, |s| s.records_in);
            if sent != received {
                return Err(EngineError::Internal {
                    what: format!(
                        "stage {}: {sent} rows were sent to it and {received} arrived",
                        stage.name
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stage descriptors round-trip through JSON and postcard, as every descriptor must for a
    /// worker process to build the subtask.
    #[test]
    fn descriptors_round_trip() {
        use crate::batch::aggregate::{AggCall, AggFunc, AggregateSpec};
        use crate::batch::join::{JoinKind, JoinSpec, JoinStrategy};
        use crate::batch::plan::ColumnDef;
        use crate::batch::sort::{SortKey, SortSpec};
        use crate::batch::source::SourceSpec;
        use crate::batch::spec::SinkSpec;
        let aggregate = AggregateSpec {
            keys: vec!["word".into()],
            aggregates: vec![AggCall {
                func: AggFunc::Avg,
                column: Some("v".into()),
                name: "a".into(),
            }],
        };
        let columns = vec![ColumnDef {
            name: "word".into(),
            data_type: "Utf8".into(),
            nullable: false,
        }];
        let sort = SortSpec {
            by: vec![SortKey::try_from("word desc nulls last".to_string()).unwrap()],
        };
        let stages = [
            Stage {
                name: "scan".into(),
                single: false,
                input: StageInput::Scan {
                    files: Vec::new(),
                    source: SourceSpec::Csv {
                        path: "in.csv".into(),
                        header: true,
                        delimiter: ';',
                        on_error: crate::batch::source::OnError::Skip,
                        schema: Some(vec!["word Utf8".into()]),
                    },
                    columns: columns.clone(),
                    projection: Some(vec![0]),
                },
                head: Head::Pass,
                ops: vec![RowOp::Tokenize {
                    column: 0,
                    name: "word".into(),
                }],
                tail: Tail::Partial {
                    spec: aggregate.clone(),
                    input: columns.clone(),
                },
                columns: columns.clone(),
                steps: vec!["scan (source)".into()],
                exchange: None,
            },
            Stage {
                name: "join".into(),
                single: false,
                input: StageInput::Exchange {
                    from: vec![0, 1],
                    columns: vec![columns.clone(), columns.clone()],
                    sides: vec![0, 1],
                },
                head: Head::Join(JoinSpec {
                    right: "r".into(),
                    on: vec!["word".into()],
                    right_on: None,
                    kind: JoinKind::Anti,
                    strategy: JoinStrategy::SortMerge,
                }),
                ops: Vec::new(),
                tail: Tail::Gather {
                    sort: Some(sort.clone()),
                    limit: Some(3),
                },
                columns: columns.clone(),
                steps: Vec::new(),
                exchange: None,
            },
            Stage {
                name: "top".into(),
                single: true,
                input: StageInput::Exchange {
                    from: vec![2],
                    columns: vec![columns.clone()],
                    sides: vec![0],
                },
                head: Head::Sort {
                    spec: sort,
                    limit: Some(3),
                },
                ops: Vec::new(),
                tail: Tail::Sink {
                    sink: SinkSpec::csv("out"),
                },
                columns: columns.clone(),
                steps: Vec::new(),
                exchange: None,
            },
        ];
        for stage in stages {
            let descriptor = OperatorDescriptor::BatchStage(Box::new(stage));
            let json = serde_json::to_string(&descriptor).unwrap();
            assert_eq!(
                serde_json::from_str::<OperatorDescriptor>(&json).unwrap(),
                descriptor
            );
            let bytes = postcard::to_stdvec(&descriptor).unwrap();
            assert_eq!(
                postcard::from_bytes::<OperatorDescriptor>(&bytes).unwrap(),
                descriptor
            );
        }
        assert_eq!(
            from_defs(&columns).unwrap().field(0).data_type(),
            &DataType::Utf8
        );
    }

    /// A join stage fed by two stages: what its producers sent must be what its subtasks
    /// received, or the job fails.
    #[test]
    fn lost_rows_fail_the_job() {
        let stage = |name: &str, input| Stage {
            name: name.into(),
            single: false,
            input,
            head: Head::Pass,
            ops: Vec::new(),
            tail: Tail::Hash { keys: Vec::new() },
            columns: Vec::new(),
            steps: Vec::new(),
            exchange: None,
        };
        let scan = || StageInput::Scan {
            source: crate::batch::source::SourceSpec::Text { path: "in".into() },
            files: Vec::new(),
            columns: Vec::new(),
            projection: None,
        };
        let stages = [
            stage("a", scan()),
            stage("b", scan()),
            stage(
                "j",
                StageInput::Exchange {
                    from: vec![0, 1],
                    columns: Vec::new(),
                    sides: vec![0, 1],
                },
            ),
        ];
        let report = |vertex_id, records_in, records_out| SubtaskReport {
            vertex_id,
            records_in,
            records_out,
            ..SubtaskReport::default()
        };
        let mut subtasks = vec![
            report(0, 10, 7),
            report(0, 10, 3),
            report(1, 5, 5),
            report(2, 9, 0),
            report(2, 6, 4),
        ];
        check_delivered(&stages, &subtasks).unwrap();
        subtasks[4].records_in = 5;
        let e = check_delivered(&stages, &subtasks).unwrap_err().to_string();
        assert!(
            e.contains("stage j: 15 rows were sent to it and 14 arrived"),
            "{e}"
        );
    }

    #[test]
    fn frames_survive_any_cut() {
        let batch = RecordBatch::try_from_iter([(
            "w",
            Arc::new(StringArray::from(vec!["a", "bb", "ccc"])) as ArrayRef,
        )])
        .unwrap();
        let mut bytes = frame(&batch).unwrap();
        bytes.extend(frame(&batch).unwrap());
        for cut in 0..bytes.len() {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            frames
                .push(&bytes[..cut], |b| {
                    got.push(b);
                    Ok(())
                })
                .unwrap();
            frames
                .push(&bytes[cut..], |b| {
                    got.push(b);
                    Ok(())
                })
                .unwrap();
            frames.finish().unwrap();
            assert_eq!(got, vec![batch.clone(), batch.clone()], "cut at {cut}");
        }
    }
}
