//! Subtasks: what the scheduler runs, what it hands them, and what they report.
//!
//! A subtask is one parallel instance of a [`crate::graph::JobVertex`].
//! It gets its input gates and result partitions in a [`SubtaskContext`], runs as one task on
//! the job's tokio runtime, and returns a [`SubtaskReport`] for the timeline.
//!
//! **Rule:** a subtask may run CPU work inline for at most one buffer at a time (a few MiB,
//! around a millisecond) between awaits; anything longer (sorting and writing a whole
//! partition) goes to a blocking thread through [`spawn_blocking`], which hands the sorting
//! itself to the rayon pool, so exchanges keep moving.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use serde::Serialize;
use shuffle::{InputGate, ResultPartition};

use crate::EngineError;

/// A boxed, sendable future, as subtasks return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The code of one subtask, created per subtask by its vertex.
pub trait Invokable: Send + 'static {
    /// Runs the subtask to completion.
    fn invoke(
        self: Box<Self>,
        ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>>;
}

/// What the scheduler gives a running subtask.
#[derive(Debug)]
pub struct SubtaskContext {
    /// Name of the vertex this subtask belongs to.
    pub vertex: String,
    /// The vertex's index in the job graph.
    pub vertex_id: crate::graph::VertexId,
    /// Index of this subtask within its vertex, `0..parallelism`.
    pub subtask: usize,
    /// How many subtasks the vertex has.
    pub parallelism: usize,
    /// One gate per input edge, in edge order.
    pub inputs: Vec<InputGate>,
    /// One partition per output edge, in edge order.
    pub outputs: Vec<ResultPartition>,
    /// How each output edge distributes records among its consumers, in edge order.
    pub distributions: Vec<crate::graph::Distribution>,
    /// Which attempt of this subtask runs (0 for the first).
    pub attempt: u32,
    /// The splits of a source vertex, handed out on demand (`None` for other vertices).
    pub splits: Option<std::sync::Arc<crate::source::SplitEnumerator>>,
    /// Per input edge: the producer vertex's summed `partition_records`, once all its
    /// subtasks finished.
    pub input_counts: Vec<tokio::sync::watch::Receiver<Option<std::sync::Arc<Vec<u64>>>>>,
    /// When the job started; timeline times count from here.
    pub job_start: Instant,
    /// What the process gives every subtask of the job: budgets, spill folders, the buffer
    /// pool, progress counters, the opened input and output files.
    pub resources: std::sync::Arc<crate::operator::TaskResources>,
}

impl SubtaskContext {
    /// A report for this subtask that starts now.
    pub fn report(&self) -> SubtaskReport {
        SubtaskReport {
            vertex: self.vertex.clone(),
            vertex_id: self.vertex_id.0,
            subtask: self.subtask,
            attempt: self.attempt,
            start_us: micros_since(self.job_start),
            ..SubtaskReport::default()
        }
    }

    /// Microseconds since the job started.
    pub fn now_us(&self) -> u64 {
        micros_since(self.job_start)
    }

    /// How many records every producer of input edge `input` sent to each consumer, summed
    /// over the producers; waits until every producer subtask has finished. A job-level
    /// aggregate the runtime computes from the producers' reports (how a reducer learns
    /// where its range of the output starts).
    pub async fn input_partition_counts(
        &mut self,
        input: usize,
    ) -> Result<std::sync::Arc<Vec<u64>>, EngineError> {
        let counts = self
            .input_counts
            .get_mut(input)
            .ok_or_else(|| EngineError::Internal {
                what: format!("{} {} has no input edge {input}", self.vertex, self.subtask),
            })?;
        let ready = counts
            .wait_for(Option::is_some)
            .await
            .map_err(|_| EngineError::Internal {
                what: "the producers' record counts never came".into(),
            })?;
        Ok(ready.clone().expect("waited for Some"))
    }
}

/// Microseconds elapsed since `start`.
pub fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// What a span is: the kinds of interval a subtask or the job records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum SpanKind {
    /// Taking buffers off the input gate.
    #[default]
    #[serde(rename = "receive")]
    Receive,
    /// Sorting and writing the output range (in memory), or merging into it (out of core).
    #[serde(rename = "sort+write")]
    SortWrite,
    /// The writer's I/O thread in write calls.
    #[serde(rename = "disk busy")]
    DiskBusy,
    /// Sorting waited for a free write buffer.
    #[serde(rename = "waiting for disk")]
    WaitingForDisk,
    /// One sorted run written to a segment file.
    #[serde(rename = "spill")]
    Spill,
    /// A group of runs merged into a longer run.
    #[serde(rename = "cascade")]
    Cascade,
    /// The final merge of the runs into the output.
    #[serde(rename = "merge")]
    Merge,
    /// Job level: sampling the keys.
    #[serde(rename = "sample")]
    Sample,
    /// Job level: fsync of the outputs.
    #[serde(rename = "commit")]
    Commit,
}

impl SpanKind {
    /// The name timelines and traces show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receive => "receive",
            Self::SortWrite => "sort+write",
            Self::DiskBusy => "disk busy",
            Self::WaitingForDisk => "waiting for disk",
            Self::Spill => "spill",
            Self::Cascade => "cascade",
            Self::Merge => "merge",
            Self::Sample => "sample",
            Self::Commit => "commit",
        }
    }
}

/// A typed interval inside a subtask (receive, spill, merge, …) or the job (sample, commit),
/// in microseconds since the job started, with the bytes and records it moved when known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    pub name: SpanKind,
    pub start_us: u64,
    pub end_us: u64,
    /// Bytes the span moved (`null` when not measured).
    pub bytes: Option<u64>,
    /// Records the span moved (`null` when not measured).
    pub records: Option<u64>,
}

impl Span {
    /// A span without volumes.
    pub fn new(name: SpanKind, start_us: u64, end_us: u64) -> Self {
        Self {
            name,
            start_us,
            end_us,
            bytes: None,
            records: None,
        }
    }

    /// The same span with the bytes and records it moved.
    pub fn with_volume(self, bytes: u64, records: u64) -> Self {
        Self {
            bytes: Some(bytes),
            records: Some(records),
            ..self
        }
    }
}

/// What one subtask did: its interval, its volumes and its named spans; every time is in
/// microseconds since the job started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SubtaskReport {
    pub vertex: String,
    /// The vertex's index in the job graph (what jobs select subtasks by).
    pub vertex_id: usize,
    pub subtask: usize,
    /// The attempt that produced this report (0 for the first).
    pub attempt: u32,
    /// When the scheduler deployed the subtask (its inputs were ready).
    pub deployed_us: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub records_in: u64,
    pub records_out: u64,
    /// Input records dropped as malformed (a CSV source's `on_error = "skip"`).
    pub records_skipped: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time spent waiting for credit on output channels.
    pub backpressure_us: u64,
    /// Records this subtask sent to each consumer of its first output edge; the runtime sums
    /// them over the vertex once every subtask finished (see
    /// [`SubtaskContext::input_partition_counts`]).
    pub partition_records: Vec<u64>,
    /// What this attempt read and wrote, as order-independent record checksums: the job
    /// sums them once per finished subtask (no shared counters beside the graph).
    pub checksum_in: Option<crate::record::Checksum>,
    pub checksum_out: Option<crate::record::Checksum>,
    /// Bytes written to spill files (raw, before compression).
    pub spill_written_bytes: u64,
    /// Bytes read back from spill files (raw, after decompression).
    pub spill_read_bytes: u64,
    /// Sorted runs spilled.
    pub spilled_runs: u64,
    pub spans: Vec<Span>,
}

/// Runs a long, mostly memory-bound closure on its own blocking thread (outside both the async
/// runtime and the rayon pool, so it can wait for rayon work) and awaits its result.
pub async fn spawn_blocking<T, F>(work: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_blocking_handle(work)
        .await
        .map_err(|e| EngineError::Internal {
            what: format!("a blocking task failed: {e}"),
        })
}

/// Starts `work` on a blocking thread like [`spawn_blocking`] and returns its handle, for
/// work a subtask awaits later (a spill running while the next arena fills).
pub fn spawn_blocking_handle<T, F>(work: F) -> tokio::task::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // Counted for the job, so a restart can wait until an aborted attempt's blocking work
    // (which an abort cannot stop) has ended and given back its memory.
    let guard = BLOCKING.try_with(|count| InFlight::new(count.clone())).ok();
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        work()
    })
}

tokio::task_local! {
    /// The blocking work in flight of the job a subtask belongs to (set by the scheduler).
    pub static BLOCKING: std::sync::Arc<std::sync::atomic::AtomicUsize>;
}

/// One piece of blocking work in flight; counted until dropped.
struct InFlight(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(count: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
