//! The vertices of a batch job and the function that runs one.
//!
//! ```text
//! batch.map ×P: splits ─► source ─► row ops ─► partial aggregate ─(hash of keys)─► exchange
//! batch.reduce ×P: exchange ─► final aggregate ─► CSV part file
//! ```
//!
//! Buffers on the exchange carry frames: a little-endian `u32` length, then one batch as an
//! Arrow IPC stream. Blocking partitions store buffers in segment blocks that may cut a frame
//! anywhere, so the consumer reassembles frames from whatever bytes arrive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use shuffle::{Buffer, BufferPool, Received, ResultPartitionType};

use super::aggregate::{AggregateSpec, HashAggregate, Phase};
use super::source::{SourceSpec, BATCH_ROWS};
use super::spec::{JobSpec, Mode, Plan, RowOp};
use super::{codec, consumers_of, BatchError};
use crate::graph::{Distribution, JobGraph};
use crate::memory::MemoryBudget;
use crate::operator::{OperatorDescriptor, OperatorRegistry, TaskResources};
use crate::output::RangeWriter;
use crate::output::{IoMode, OutputTarget};
use crate::scheduler::{self, JobEnv};
use crate::source::SplitEnumerator;
use crate::task::{
    spawn_blocking, spawn_blocking_handle, BoxFuture, Invokable, SubtaskContext, SubtaskReport,
};
use crate::tempdir::JobTempDir;
use crate::EngineError;

/// Key groups of the hash exchange (Flink's default maximum parallelism is 128).
pub const KEY_GROUPS: usize = 128;

/// Memory a map's partial aggregate asks for at a time.
const GROW_BYTES: u64 = 256 << 10;

/// A column as descriptors carry it: name and Arrow type (`Int64`, `Float64`, `Utf8`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

fn to_defs(schema: &Schema) -> Vec<ColumnDef> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnDef {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

fn from_defs(defs: &[ColumnDef]) -> Result<SchemaRef, EngineError> {
    let fields = defs
        .iter()
        .map(|d| {
            let data_type: DataType = d.data_type.parse().map_err(|e| EngineError::InvalidJob {
                reason: format!("column {:?}: type {:?}: {e}", d.name, d.data_type),
            })?;
            Ok(Field::new(&d.name, data_type, d.nullable))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// `batch.map`: reads splits of a source, applies row operators, aggregates partially and
/// hash-partitions the partial states by key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchMapConfig {
    pub source: SourceSpec,
    pub source_columns: Vec<ColumnDef>,
    pub ops: Vec<RowOp>,
    pub aggregate: AggregateSpec,
    /// The aggregate's input columns (after the row operators).
    pub aggregate_columns: Vec<ColumnDef>,
}

/// `batch.reduce`: merges partial states of its key groups and writes its CSV part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReduceConfig {
    pub aggregate: AggregateSpec,
    pub aggregate_columns: Vec<ColumnDef>,
}

/// Registers `batch.map` and `batch.reduce`.
pub fn register_operators(registry: &mut OperatorRegistry) {
    registry
        .register("batch.map", |descriptor, _, _| match descriptor {
            OperatorDescriptor::BatchMap(config) => Ok(Box::new(MapTask(config.clone()))),
            other => Err(other.mismatch("batch.map")),
        })
        .register("batch.reduce", |descriptor, _, _| match descriptor {
            OperatorDescriptor::BatchReduce(config) => Ok(Box::new(ReduceTask(config.clone()))),
            other => Err(other.mismatch("batch.reduce")),
        });
}

/// Applies a row operator to a batch.
fn apply(op: &RowOp, batch: &RecordBatch) -> Result<RecordBatch, BatchError> {
    match op {
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
            let mut words = Vec::new();
            for line in lines.iter().flatten() {
                for word in line
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    words.push(word.to_lowercase());
                }
            }
            let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(words)) as ArrayRef])
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

struct MapTask(BatchMapConfig);

/// What a map's blocking thread hands the async side: a frame for one consumer.
type ToSend = (usize, Vec<u8>);

impl Invokable for MapTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let mut report = ctx.report();
            let config = self.0;
            let splits = ctx.splits.clone().ok_or_else(|| EngineError::Internal {
                what: "batch.map runs without splits".into(),
            })?;
            let budget = ctx
                .resources
                .map_memory
                .clone()
                .ok_or_else(|| EngineError::Internal {
                    what: "batch.map needs a map memory budget".into(),
                })?;
            let consumers = ctx.outputs[0].num_subpartitions();
            let subtask = ctx.subtask;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<ToSend>(4);
            let work = spawn_blocking_handle(move || {
                map_splits(&config, &splits, subtask, consumers, &budget, tx)
            });
            let out = &mut ctx.outputs[0];
            while let Some((consumer, bytes)) = rx.recv().await {
                report.bytes_out += bytes.len() as u64;
                out.send(consumer, Buffer::from(bytes)).await?;
            }
            let stats = work.await.map_err(|e| EngineError::Internal {
                what: format!("a map's blocking work failed: {e}"),
            })??;
            out.finish()?;
            report.records_in = stats.rows_in;
            report.records_out = stats.rows_out;
            report.spilled_runs = stats.flushes;
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

#[derive(Default)]
struct MapStats {
    rows_in: u64,
    rows_out: u64,
    /// Partial aggregates emitted early because memory ran out.
    flushes: u64,
}

fn map_splits(
    config: &BatchMapConfig,
    splits: &SplitEnumerator,
    subtask: usize,
    consumers: usize,
    budget: &Arc<MemoryBudget>,
    tx: tokio::sync::mpsc::Sender<ToSend>,
) -> Result<MapStats, EngineError> {
    let source_schema = from_defs(&config.source_columns)?;
    let aggregate_input = from_defs(&config.aggregate_columns)?;
    let mut aggregate = HashAggregate::new(&config.aggregate, &aggregate_input, Phase::Partial)?;
    let keys = config.aggregate.keys.len();
    let partial_schema = aggregate.output_schema();
    let converter = RowConverter::new(
        partial_schema.fields()[..keys]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )
    .map_err(BatchError::arrow("key rows"))?;
    let mut reservation = budget
        .try_reserve(0)
        .ok_or_else(|| too_small(budget, "a map's partial aggregate"))?;
    let mut stats = MapStats::default();
    let flush = |aggregate: &mut HashAggregate, stats: &mut MapStats| -> Result<(), EngineError> {
        for batch in aggregate.emit(BATCH_ROWS)? {
            stats.rows_out += batch.num_rows() as u64;
            let rows = converter
                .convert_columns(&batch.columns()[..keys])
                .map_err(BatchError::arrow("key rows"))?;
            // Row indices per consumer, in one pass over the rows.
            let mut rows_of = vec![Vec::new(); consumers];
            for (row, owner) in consumers_of(&rows, KEY_GROUPS, consumers)
                .into_iter()
                .enumerate()
            {
                rows_of[owner as usize].push(row as u32);
            }
            for (consumer, indices) in rows_of.into_iter().enumerate() {
                if indices.is_empty() {
                    continue;
                }
                let indices = UInt32Array::from(indices);
                let part = arrow_select::take::take_record_batch(&batch, &indices)
                    .map_err(BatchError::arrow("partition a batch"))?;
                if tx.blocking_send((consumer, frame(&part)?)).is_err() {
                    return Err(EngineError::Internal {
                        what: "the map's sender stopped".into(),
                    });
                }
            }
        }
        Ok(())
    };
    while let Some(split) = splits.next(subtask) {
        let mut failed = None;
        config
            .source
            .read(&source_schema, split, |batch| {
                stats.rows_in += batch.num_rows() as u64;
                let mut batch = batch;
                for op in &config.ops {
                    batch = apply(op, &batch)?;
                }
                aggregate.push(&batch)?;
                while aggregate.bytes() as u64 > reservation.bytes() {
                    if !reservation.try_grow(GROW_BYTES) {
                        // Out of memory: send what we have (the reducers merge it) and start again.
                        stats.flushes += 1;
                        if let Err(e) = flush(&mut aggregate, &mut stats) {
                            failed = Some(e);
                            return Err(BatchError::Spec {
                                what: "stopped".into(),
                            });
                        }
                        reservation.shrink_to(0);
                        break;
                    }
                }
                Ok(())
            })
            .map_err(|e| failed.take().unwrap_or(EngineError::Batch(e)))?;
    }
    flush(&mut aggregate, &mut stats)?;
    Ok(stats)
}

fn too_small(budget: &MemoryBudget, what: &str) -> EngineError {
    EngineError::BudgetTooSmall {
        budget_bytes: budget.limit_bytes(),
        minimum_bytes: budget.used_bytes() + GROW_BYTES,
        what: what.into(),
    }
}

struct ReduceTask(BatchReduceConfig);

impl Invokable for ReduceTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let mut report = ctx.report();
            let config = self.0;
            let input = from_defs(&config.aggregate_columns)?;
            let mut aggregate = HashAggregate::new(&config.aggregate, &input, Phase::Final)?;
            let budget = ctx.resources.memory("batch.reduce")?.clone();
            let mut reservation = budget
                .try_reserve(0)
                .ok_or_else(|| too_small(&budget, "a reducer's final aggregate"))?;
            let mut gate = ctx.inputs.remove(0);
            let mut frames = Frames::default();
            let mut rows_in = 0u64;
            let mut push = |batch: RecordBatch| -> Result<(), EngineError> {
                rows_in += batch.num_rows() as u64;
                aggregate.push(&batch)?;
                while aggregate.bytes() as u64 > reservation.bytes() {
                    if !reservation.try_grow(GROW_BYTES) {
                        return Err(EngineError::BudgetTooSmall {
                            budget_bytes: budget.limit_bytes(),
                            minimum_bytes: budget.used_bytes() + GROW_BYTES,
                            what: format!(
                                "the final aggregate of {} groups (it does not spill yet)",
                                aggregate.groups()
                            ),
                        });
                    }
                }
                Ok(())
            };
            while let Some((_, received)) = gate.next_received().await? {
                match received {
                    Received::Buffer(buffer) => frames.push(buffer.as_bytes(), &mut push)?,
                    Received::Spilled(spilled) => {
                        let reader = spilled.open()?;
                        for block in
                            reader.partition_blocks(spilled.segment.segment, spilled.partition)?
                        {
                            let block = block?;
                            report.spill_read_bytes += block.payload.len() as u64;
                            frames.push(&block.payload, &mut push)?;
                        }
                    }
                }
            }
            frames.finish()?;
            report.records_in = rows_in;
            report.bytes_in = gate.metrics().bytes;
            let file = ctx.resources.output(ctx.subtask, "batch.reduce")?.clone();
            let rows_out = spawn_blocking(move || -> Result<u64, EngineError> {
                file.truncate()?;
                let batches = aggregate.emit(BATCH_ROWS)?;
                drop(reservation);
                let mut csv = arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Sink {
                        writer: file.writer(1 << 20)?,
                        error: None,
                    });
                let mut rows = 0;
                let written = if batches.is_empty() {
                    csv.write(&RecordBatch::new_empty(aggregate.output_schema()))
                } else {
                    batches.iter().try_for_each(|batch| {
                        rows += batch.num_rows() as u64;
                        csv.write(batch)
                    })
                };
                let mut sink = csv.into_inner();
                if let Some(error) = sink.error.take() {
                    return Err(error);
                }
                written.map_err(BatchError::arrow("write CSV"))?;
                sink.writer.finish()?;
                Ok(rows)
            })
            .await??;
            report.records_out = rows_out;
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// `io::Write` over an output writer that keeps its error (a full disk stays a full disk).
struct Sink {
    writer: RangeWriter,
    error: Option<EngineError>,
}

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.writer.write(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(e) => {
                let message = e.to_string();
                self.error.get_or_insert(e);
                Err(std::io::Error::other(message))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    /// Where blocking exchanges write (default: the system temp folder).
    pub spill_dir: Option<PathBuf>,
    pub max_attempts: u32,
}

/// What a finished job did.
#[derive(Debug)]
pub struct BatchJobResult {
    pub name: String,
    pub mode: Mode,
    pub parallelism: usize,
    pub output: PathBuf,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Partial aggregates maps emitted early because their memory ran out.
    pub partial_flushes: u64,
    pub wall: std::time::Duration,
    pub subtasks: Vec<SubtaskReport>,
}

/// Checks a spec against its data and plans it with `config`'s overrides.
pub fn plan(config: &BatchJobConfig) -> Result<(Plan, usize), EngineError> {
    let mut plan = JobSpec::from_file(&config.spec)?.plan()?;
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

/// Runs a job spec: plans it, builds the job graph (map vertex, hash exchange of the mode's
/// partition type, reduce vertex), runs it on the runtime, and publishes the output folder
/// only when every subtask succeeded.
pub fn run(config: &BatchJobConfig) -> Result<BatchJobResult, EngineError> {
    let job_start = Instant::now();
    let (plan, parallelism) = plan(config)?;
    let memory = config
        .memory_bytes
        .or(plan.memory_bytes)
        .or_else(|| crate::memory::total_ram_bytes().map(|b| b / 2))
        .unwrap_or(1 << 30);
    let input = plan.source.path().to_path_buf();
    let target = OutputTarget::create(
        plan.sink.path(),
        &input,
        0,
        Some(parallelism),
        IoMode::Buffered,
        config.force,
    )?;
    let input_bytes = super::source::open(&input)?
        .metadata()
        .map_err(|e| EngineError::io("read", &input, 0, e))?
        .len();
    let split_bytes = (input_bytes / (4 * parallelism as u64)).clamp(1 << 20, 64 << 20);
    let map = BatchMapConfig {
        source: plan.source.clone(),
        source_columns: to_defs(&plan.source_schema),
        ops: plan.ops.iter().map(|(_, op)| op.clone()).collect(),
        aggregate: plan.aggregate.clone(),
        aggregate_columns: to_defs(&plan.aggregate_input),
    };
    let reduce = BatchReduceConfig {
        aggregate: plan.aggregate.clone(),
        aggregate_columns: to_defs(&plan.aggregate_input),
    };
    let mut graph = JobGraph::new(plan.name.clone());
    let map_vertex = graph.add_vertex("map", parallelism, OperatorDescriptor::BatchMap(map));
    graph.vertices[map_vertex.0].splits = Some(Arc::new(SplitEnumerator::for_range(
        input_bytes,
        split_bytes,
    )));
    let reduce_vertex = graph.add_vertex(
        "reduce",
        parallelism,
        OperatorDescriptor::BatchReduce(reduce),
    );
    let partition_type = match plan.mode {
        Mode::Pipelined => ResultPartitionType::Pipelined,
        Mode::Staged | Mode::MapReduce => ResultPartitionType::Blocking,
    };
    let edge = graph.connect(
        map_vertex,
        reduce_vertex,
        Distribution::Hash {
            key_groups: KEY_GROUPS,
        },
        partition_type,
    );
    if plan.mode == Mode::MapReduce {
        edge.slow_start = 0.05;
    }
    let spill_root = config.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let job_dir = JobTempDir::create(&spill_root)?;
    // Maps get a quarter of the budget, reducers the rest: a map only emits its partial
    // state early when its share runs out (it loses nothing but some pre-aggregation), while
    // a reducer's final aggregate holds every group of its keys (and does not spill yet).
    let resources = Arc::new(TaskResources {
        memory: Some(MemoryBudget::new(memory - memory / 4)),
        map_memory: Some(MemoryBudget::new(memory / 4)),
        spill_dirs: vec![job_dir.path().to_path_buf()],
        pool: BufferPool::new(1 << 16, 0),
        outputs: (0..parallelism).map(|r| target.file(r).clone()).collect(),
        ..TaskResources::default()
    });
    let env = JobEnv {
        spill_dirs: vec![job_dir.path().to_path_buf()],
        max_attempts: config.max_attempts.max(1),
        fail_attempts: scheduler::injected_failures(),
        registry: Arc::new(OperatorRegistry::with_builtins()),
        resources,
        ..JobEnv::default()
    };
    let result = scheduler::run_job(graph, job_start, &env)?;
    drop(job_dir);
    let of = |v: usize| result.subtasks.iter().filter(move |s| s.vertex_id == v);
    let rows_in = of(map_vertex.0).map(|s| s.records_in).sum();
    let rows_out = of(reduce_vertex.0).map(|s| s.records_out).sum();
    let partial_flushes = of(map_vertex.0).map(|s| s.spilled_runs).sum();
    target.sync()?;
    let output = target.publish()?;
    Ok(BatchJobResult {
        name: plan.name,
        mode: plan.mode,
        parallelism,
        output,
        rows_in,
        rows_out,
        partial_flushes,
        wall: job_start.elapsed(),
        subtasks: result.subtasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch descriptors round-trip through JSON and postcard, as every descriptor must for a
    /// worker process to build the subtask.
    #[test]
    fn descriptors_round_trip() {
        use crate::batch::aggregate::{AggCall, AggFunc};
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
        for descriptor in [
            OperatorDescriptor::BatchMap(BatchMapConfig {
                source: SourceSpec::Csv {
                    path: "in.csv".into(),
                    header: true,
                    delimiter: ';',
                },
                source_columns: columns.clone(),
                ops: vec![RowOp::Tokenize {
                    column: 0,
                    name: "word".into(),
                }],
                aggregate: aggregate.clone(),
                aggregate_columns: columns.clone(),
            }),
            OperatorDescriptor::BatchReduce(BatchReduceConfig {
                aggregate,
                aggregate_columns: columns.clone(),
            }),
        ] {
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
