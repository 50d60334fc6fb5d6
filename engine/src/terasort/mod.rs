//! The TeraSort job: sample → map (range-partition) → pipelined exchange → reduce (bucket,
//! sort, write at the final offset) → commit.
//!
//! ```text
//!  input file ──splits──► map 0..P ──Range, pipelined, credits──► sort 0..R ──► output (one file or parts)
//!                          │ read 4 MiB chunks                      │ bucket records as they arrive
//!                          │ partition by sampled key ranges        │ after the last buffer: sort buckets,
//!                          │ fill 1 MiB buffers, emit when full     │ write at the range's final offset
//! ```
//!
//! The job checks itself at the end: records out = records in and the order-independent
//! checksum of the output = that of the input, or it fails loudly and leaves no output.

mod external;
pub mod input;
mod map;
mod mapreduce;
pub mod merge;
mod operators;
pub mod partitioner;
mod reduce;
mod sample;
pub mod sorter;

pub use operators::{
    register_operators, ExternalSortConfig, InMemorySortConfig, MapConfig, MergingReduceConfig,
    Payload, ReducerRange, SortingMapConfig,
};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use shuffle::spill::{Compression, IoEngine, WriterOptions};
use shuffle::{BufferPool, ResultPartitionType};
use tracing::info;

use crate::graph::{Distribution, JobGraph, VertexId};
use crate::memory::{MemoryBudget, Reservation};
use crate::operator::{InputData, JobInput, OperatorDescriptor, OperatorRegistry, TaskResources};
use crate::output::{IoMode, OutputTarget};
use crate::record::{Checksum, RECORD_LEN};
use crate::scheduler;
use crate::task::SpanKind;
use crate::task::{micros_since, Span};
use crate::tempdir::JobTempDir;
use crate::timeline::{PhaseKind, Timeline};
use crate::EngineError;
use partitioner::{boundaries_from_samples, KEY_SPACE_END};

/// How the exchange between map and reduce runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Reducers receive and bucket while maps run (Flink-style pipelined exchange).
    #[default]
    Pipelined,
    /// Maps write blocking partitions (one segment file each); reducers are deployed after
    /// the last map finished and read their range of every map's file (Spark/Tez stages).
    Staged,
    /// One map task per split (`--maps` at once) sorts its split in a sort buffer, spills
    /// and merges it into one sorted output indexed by reducer; reducers copy finished map
    /// outputs from `--slowstart` on and merge them after the last map (Hadoop MapReduce).
    #[serde(rename = "mapreduce")]
    MapReduce,
}

impl ExecutionMode {
    /// The mode's name as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipelined => "pipelined",
            Self::Staged => "staged",
            Self::MapReduce => "mapreduce",
        }
    }
}

/// Everything a sort needs; built and validated by the CLI.
#[derive(Clone, Debug)]
pub struct SortConfig {
    pub input: PathBuf,
    pub output: PathBuf,
    pub mode: ExecutionMode,
    /// Map subtasks. Default: the number of cores.
    pub maps: usize,
    /// Reduce subtasks (output ranges). Default: the number of cores.
    pub reducers: usize,
    /// One part file per reducer in a folder instead of one file.
    pub parts: bool,
    pub io: IoMode,
    /// Bytes per exchange buffer. Default 1 MiB (rounded down to whole records): large enough
    /// that per-buffer overhead is noise, small enough that reducers start early.
    pub buffer_bytes: usize,
    /// Buffers each channel may have in flight. Default 2: one being filled downstream while
    /// the next travels.
    pub credits_per_channel: usize,
    /// Bytes a map reads per call. Default 4 MiB.
    pub read_chunk_bytes: usize,
    /// Bytes of input per split handed to a map. Default 64 MB.
    pub split_bytes: u64,
    /// Bytes per output write. Default 8 MiB.
    pub write_chunk_bytes: usize,
    /// The memory budget in bytes. Default: half of the machine's RAM, leaving the rest to the
    /// page cache that holds the input and the output on their way to and from the disk.
    /// When the input, mapped, plus 16 bytes per record fits, the sort runs in memory (one
    /// read and one write per byte); otherwise it spills sorted runs and merges them (two of
    /// each).
    pub memory_bytes: u64,
    /// Folders for spilled runs, used round-robin by reducers. Default: the system temp folder.
    pub spill_dirs: Vec<PathBuf>,
    /// How spill files are written (io_uring, `pwrite`, or whichever works).
    pub spill_io: IoEngine,
    /// Compression of spilled blocks.
    pub compression: Compression,
    /// Out of core, how long a map waits for credit from one reducer before it spills that
    /// buffer to its own segment file instead (the hybrid exchange); `None` never spills.
    /// Default 50 ms: long enough that ordinary hiccups never spill, short enough that one
    /// slow reducer does not hold up the others for long.
    pub hybrid_wait: Option<std::time::Duration>,
    /// Replace an existing output (atomically, at commit). Without it an existing output is
    /// refused before any work.
    pub force: bool,
    /// Attempts a subtask gets when it can be retried alone (its exchanges are blocking:
    /// `--mode staged`). Default 2.
    pub max_attempts: u32,
    /// `mapreduce`: bytes of records in each map task's sort buffer (Hadoop's
    /// `mapreduce.task.io.sort.mb`); `None`: up to 128 MiB, as the budget allows.
    pub map_sort_buffer_bytes: Option<u64>,
    /// `mapreduce`: the share of map tasks that must have finished before reducers start
    /// copying (Hadoop's `mapreduce.job.reduce.slowstart.completedmaps`). Default 0.05.
    pub slowstart: f64,
    /// Task executors to spread the subtasks over, pipelined exchanges between them over
    /// TCP (see [`crate::placement`]). Default `None`, or `MILLRACE_EXECUTORS` when set.
    pub placement: Option<crate::placement::Placement>,
}

/// Half of the machine's RAM (from `/proc/meminfo`), or 4 GiB when unknown.
pub fn default_memory_bytes() -> u64 {
    crate::memory::total_ram_bytes().map_or(4 << 30, |bytes| bytes / 2)
}

impl SortConfig {
    /// The defaults for sorting `input` into `output` on this machine.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            input: input.into(),
            output: output.into(),
            mode: ExecutionMode::Pipelined,
            maps: cores,
            reducers: cores,
            parts: false,
            io: IoMode::Auto,
            buffer_bytes: 1 << 20,
            credits_per_channel: 2,
            read_chunk_bytes: 4 << 20,
            split_bytes: 64_000_000,
            write_chunk_bytes: 8 << 20,
            memory_bytes: default_memory_bytes(),
            spill_dirs: Vec::new(),
            spill_io: IoEngine::Auto,
            compression: Compression::Auto,
            hybrid_wait: Some(std::time::Duration::from_millis(50)),
            force: false,
            max_attempts: 2,
            map_sort_buffer_bytes: None,
            slowstart: 0.05,
            placement: None,
        }
    }

    /// Checks the flags that size the job against what this machine allows, before any file
    /// is created or read: maps and reducers against [`MAX_SUBTASKS`], the memory budget (the
    /// fixed exchange, read and write buffers at their smallest) and the open-file limit.
    /// Errors say which limit and the largest value that fits.
    pub fn check_limits(&self) -> Result<(), EngineError> {
        for (flag, value) in [("--maps", self.maps), ("--reducers", self.reducers)] {
            if value == 0 {
                return Err(EngineError::InvalidJob {
                    reason: format!("{flag} must be at least 1"),
                });
            }
            if value > MAX_SUBTASKS {
                return Err(EngineError::TooMany {
                    flag,
                    value,
                    limit: format!("the largest parallelism ({MAX_SUBTASKS} subtasks per vertex)"),
                    max: MAX_SUBTASKS,
                });
            }
        }
        if self.memory_bytes == 0 {
            return Err(EngineError::InvalidJob {
                reason: "--memory must be more than 0 bytes".into(),
            });
        }
        let fits = |reducers: usize| {
            let config = SortConfig {
                reducers,
                ..self.clone()
            };
            MemoryPlan::for_budget(self.memory_bytes, &config).fixed_bytes <= self.memory_bytes
        };
        if !fits(self.reducers) {
            return Err(EngineError::BudgetTooSmall {
                budget_bytes: self.memory_bytes,
                // With no budget to share, every buffer is at its smallest.
                minimum_bytes: MemoryPlan::for_budget(0, self).fixed_bytes,
                what: match largest(self.reducers, fits) {
                    0 => format!("the exchange of {} maps x {} reducers", self.maps, self.reducers),
                    max => format!(
                        "the exchange of {} maps x {} reducers (at most {max} reducers fit this budget)",
                        self.maps, self.reducers
                    ),
                },
            });
        }
        let limit = open_file_limit();
        if self.open_files(1) > limit {
            let maps_fit = |maps| {
                SortConfig {
                    maps,
                    ..self.clone()
                }
                .open_files(1)
                    <= limit
            };
            return Err(EngineError::TooMany {
                flag: "--maps",
                value: self.maps,
                limit: format!("the open-file limit (ulimit -n = {limit})"),
                max: largest(self.maps, maps_fit),
            });
        }
        let needed = self.open_files(self.reducers);
        if needed > limit {
            return Err(EngineError::TooMany {
                flag: "--reducers",
                value: self.reducers,
                limit: format!(
                    "the open-file limit (ulimit -n = {limit}; this job needs about {needed} open files)"
                ),
                max: largest(self.reducers, |r| self.open_files(r) <= limit),
            });
        }
        Ok(())
    }

    /// Open files the job may hold with `reducers` reducers: the input, the output (two
    /// handles: buffered and direct), per part file two more, per reducer and map a spill
    /// writer (two handles) and the runs a merge holds open.
    fn open_files(&self, reducers: usize) -> u64 {
        let (m, r) = (self.maps as u64, reducers as u64);
        let parts = if self.parts { 2 * r } else { 2 };
        64 + parts + 2 * m + r * (2 + external::MAX_FAN_IN as u64 / 8)
    }
}

/// The soft limit on open files, raised to the hard limit first (as the JVM and Go do), so a
/// job gets what the administrator allows rather than the shell's conservative default.
pub fn open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

impl MemoryPlan {
    /// Each reducer needs two arenas of at least a few exchange buffers each.
    fn min_arena_bytes(&self) -> u64 {
        4 * self.buffer_bytes as u64 * (RECORD_LEN as u64 + 16) / RECORD_LEN as u64
    }
}

impl SortConfig {
    /// The smallest budget an out-of-core sort with these maps and reducers runs in: the
    /// fixed buffers plus two minimal arenas per reducer.
    fn out_of_core_minimum_bytes(&self) -> u64 {
        let sizes = MemoryPlan::for_budget(self.memory_bytes, self);
        sizes.fixed_bytes + 2 * self.reducers as u64 * sizes.min_arena_bytes()
    }

    /// Lowers the maps and reducers that were not given (`*_default`: the number of cores)
    /// until even an out-of-core sort fits the budget, so a small `--memory` works on a
    /// machine with many cores; given values are left for [`Self::check_limits`] to judge.
    pub fn fit_default_parallelism(&mut self, maps_default: bool, reducers_default: bool) {
        let bounded = |n: usize| (1..=MAX_SUBTASKS).contains(&n);
        if !bounded(self.maps) || !bounded(self.reducers) {
            return;
        }
        while self.out_of_core_minimum_bytes() > self.memory_bytes {
            if reducers_default
                && self.reducers > 1
                && (!maps_default || self.reducers >= self.maps)
            {
                self.reducers = self.reducers.div_ceil(2);
            } else if maps_default && self.maps > 1 {
                self.maps = self.maps.div_ceil(2);
            } else {
                break;
            }
        }
    }
}

/// Most subtasks per vertex (Flink's upper bound for max parallelism, 2^15).
pub const MAX_SUBTASKS: usize = 1 << 15;

/// The largest `n` in `0..=upper` with `fits(n)`, for a `fits` that holds up to some point.
fn largest(upper: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, upper);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// What the job is doing ([`Stage`] as a number).
    stage: std::sync::atomic::AtomicU8,
    /// Bytes of a streamed input copied to the spill folder so far.
    pub spooled_bytes: AtomicU64,
    /// Input bytes (known once the input is open or spooled).
    pub input_bytes: AtomicU64,
    /// Whether the job runs out of core (set with [`Stage::Run`]).
    pub out_of_core: std::sync::atomic::AtomicBool,
    /// Input bytes read by maps.
    pub read_bytes: AtomicU64,
    /// Output bytes handed to the disk.
    pub written_bytes: AtomicU64,
}

/// Adds bytes to a progress counter in steps of 4 MiB (and the rest when dropped), so hot
/// loops do not touch a shared cache line per record.
pub(crate) struct ProgressStep<'a> {
    counter: &'a AtomicU64,
    pending: u64,
}

impl<'a> ProgressStep<'a> {
    pub(crate) fn new(counter: &'a AtomicU64) -> Self {
        Self {
            counter,
            pending: 0,
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, bytes: u64) {
        self.pending += bytes;
        if self.pending >= 4 << 20 {
            self.counter.fetch_add(self.pending, Ordering::Relaxed);
            self.pending = 0;
        }
    }
}

impl Drop for ProgressStep<'_> {
    fn drop(&mut self) {
        self.counter.fetch_add(self.pending, Ordering::Relaxed);
    }
}

/// Where a sort is, for a progress display. Within [`Stage::Run`], maps read until
/// `read_bytes` reaches `input_bytes` (map+shuffle, spilling runs out of core); then reducers
/// sort and write (in memory) or merge and write (out of core) until `written_bytes` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Open = 0,
    /// Copying a streamed input to the spill folder.
    Spool,
    Sample,
    Run,
    /// fsync of the output, then rename.
    Commit,
}

impl Progress {
    /// The current stage.
    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Relaxed) {
            1 => Stage::Spool,
            2 => Stage::Sample,
            3 => Stage::Run,
            4 => Stage::Commit,
            _ => Stage::Open,
        }
    }

    /// Moves to `stage` (the job does this as it goes).
    pub fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }
}

/// What a finished sort reports.
#[derive(Clone, Debug, Serialize)]
pub struct SortReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub records: u64,
    pub bytes: u64,
    /// Checksum of the input, equal to the output's (the job checked).
    pub checksum: String,
    pub maps: usize,
    pub reducers: usize,
    pub wall_us: u64,
    pub sample_us: u64,
    /// Peak resident memory of the process when the job ended (Linux `VmHWM`), mapped input
    /// pages included.
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds (user + system, all threads) the job used, spooling included.
    pub cpu_s: f64,
    /// `in-memory` or `out-of-core`.
    pub plan: &'static str,
    pub memory_budget_bytes: u64,
    /// Bytes moved to and from the disk, per phase.
    pub io: IoSummary,
    pub timeline: Timeline,
    /// With a placement: what the pipelined exchanges between executors carried over TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::placement::NetworkSummary>,
}

/// Bytes each phase read and wrote, and what that makes per input byte (also read back from
/// `millrace sort --json` by the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct IoSummary {
    /// Map phase: input read.
    pub input_read_bytes: u64,
    /// Map/shuffle phase: sorted runs spilled by reducers plus buffers spilled by maps for
    /// busy reducers (raw bytes).
    pub spill_written_bytes: u64,
    /// The part of `spill_written_bytes` that maps wrote (hybrid spills, blocking
    /// partitions, `mapreduce` map outputs); these bytes are written and read once more than
    /// the others.
    #[serde(default)]
    pub hybrid_spilled_bytes: u64,
    /// Merge phase: runs read back (raw bytes).
    pub spill_read_bytes: u64,
    /// Sink: output written.
    pub output_written_bytes: u64,
    pub spilled_runs: u64,
    /// (input read + spill read) ÷ input bytes: 1 in memory, 2 out of core.
    pub reads_per_byte: f64,
    /// (spill written + output written) ÷ input bytes.
    pub writes_per_byte: f64,
}

impl IoSummary {
    /// Sums the reports of the map and the sort vertex.
    fn from_subtasks(
        subtasks: &[crate::task::SubtaskReport],
        map: VertexId,
        sort: VertexId,
        input_bytes: u64,
    ) -> Self {
        let sum = |vertex: VertexId, f: fn(&crate::task::SubtaskReport) -> u64| -> u64 {
            subtasks
                .iter()
                .filter(|s| s.vertex_id == vertex.0)
                .map(f)
                .sum()
        };
        let mut io = IoSummary {
            input_read_bytes: sum(map, |s| s.bytes_in),
            spill_written_bytes: sum(sort, |s| s.spill_written_bytes)
                + sum(map, |s| s.spill_written_bytes),
            hybrid_spilled_bytes: sum(map, |s| s.spill_written_bytes),
            spill_read_bytes: sum(sort, |s| s.spill_read_bytes),
            output_written_bytes: sum(sort, |s| s.bytes_out),
            spilled_runs: sum(sort, |s| s.spilled_runs) + sum(map, |s| s.spilled_runs),
            ..Default::default()
        };
        if input_bytes > 0 {
            io.reads_per_byte =
                (io.input_read_bytes + io.spill_read_bytes) as f64 / input_bytes as f64;
            io.writes_per_byte =
                (io.spill_written_bytes + io.output_written_bytes) as f64 / input_bytes as f64;
        }
        io
    }
}

impl SortReport {
    /// CPU seconds per GB (10^9 bytes) of input: comparable across machines whose disks
    /// differ, unlike wall time.
    pub fn cpu_s_per_gb(&self) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            self.cpu_s / (self.bytes as f64 / 1e9)
        }
    }

    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        if self.wall_us == 0 {
            0.0
        } else {
            self.bytes as f64 / self.wall_us as f64
        }
    }
}

/// Memory and spill settings of an out-of-core sort.
#[derive(Debug)]
struct ExternalPlan {
    budget: Arc<MemoryBudget>,
    /// Bytes of records per reducer arena (each reducer fills one while the other spills).
    arena_bytes: usize,
    /// The smallest budget this job could run with.
    minimum_bytes: u64,
    /// Raw bytes per spilled block.
    block_bytes: usize,
    spill_dirs: Vec<JobTempDir>,
    writer_options: WriterOptions,
    /// The fixed buffers' share of the budget, held for the whole job.
    _fixed: Reservation,
}

/// Buffer sizes of one sort, derived from its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MemoryPlan {
    buffer_bytes: usize,
    read_chunk_bytes: usize,
    write_chunk_bytes: usize,
    spill_buffer_bytes: usize,
    block_bytes: usize,
    /// Exchange buffers, read chunks, write chunks, spill buffers and staging blocks together.
    fixed_bytes: u64,
}

impl MemoryPlan {
    /// Sizes every fixed buffer as a small share of `budget`, so the total stays a fixed
    /// fraction of it whatever the number of maps and reducers.
    fn for_budget(budget: u64, config: &SortConfig) -> Self {
        let (m, r, c) = (
            config.maps as u64,
            config.reducers as u64,
            config.credits_per_channel as u64 + 1,
        );
        let share = |parts: u64, lo: usize, hi: usize| -> usize {
            let bytes = (budget / 32 / parts.max(1)) as usize;
            (bytes.clamp(lo, hi) / RECORD_LEN).max(1) * RECORD_LEN
        };
        let buffer_bytes = share(m * r * c + r, 16 << 10, config.buffer_bytes);
        let read_chunk_bytes = share(m, 64 << 10, config.read_chunk_bytes);
        let write_chunk_bytes =
            share(r * 3, 64 << 10, config.write_chunk_bytes).div_ceil(4096) * 4096;
        let spill_buffer_bytes = share((r + m) * 3, 64 << 10, 4 << 20).div_ceil(4096) * 4096;
        let block_bytes = share(r * external::MAX_FAN_IN as u64 / 4, 16 << 10, 1 << 20);
        let fixed_bytes = (m * r * c + r) * buffer_bytes as u64
            + m * read_chunk_bytes as u64
            + r * 3 * write_chunk_bytes as u64
            // Reducers' run writers, and maps' writers for hybrid spills.
            + (r + m) * 3 * spill_buffer_bytes as u64
            + r * 2 * block_bytes as u64;
        Self {
            buffer_bytes,
            read_chunk_bytes,
            write_chunk_bytes,
            spill_buffer_bytes,
            block_bytes,
            fixed_bytes,
        }
    }
}

/// The folders spill files go to: `--spill-dir`s, or the system temp folder.
fn spill_dirs(config: &SortConfig) -> Vec<PathBuf> {
    if config.spill_dirs.is_empty() {
        vec![std::env::temp_dir()]
    } else {
        config.spill_dirs.clone()
    }
}

/// Plans an out-of-core sort: buffer sizes from the budget, the fixed share reserved, arenas
/// sized from what is left, spill folders created.
fn external_plan(
    config: &SortConfig,
    input_bytes: u64,
) -> Result<(ExternalPlan, MemoryPlan), EngineError> {
    let sizes = MemoryPlan::for_budget(config.memory_bytes, config);
    let budget = MemoryBudget::new(config.memory_bytes);
    let min_arena_bytes = sizes.min_arena_bytes();
    let minimum_bytes = config.out_of_core_minimum_bytes();
    let too_small = || EngineError::BudgetTooSmall {
        budget_bytes: config.memory_bytes,
        minimum_bytes,
        what: format!(
            "an out-of-core sort with {} maps and {} reducers",
            config.maps, config.reducers
        ),
    };
    let fixed = budget
        .try_reserve(sizes.fixed_bytes)
        .ok_or_else(too_small)?;
    let per_arena = (config.memory_bytes - sizes.fixed_bytes) / (2 * config.reducers as u64);
    if per_arena < min_arena_bytes {
        return Err(too_small());
    }
    // Arenas never need to be larger than the input.
    let arena_bytes = (per_arena * RECORD_LEN as u64 / (RECORD_LEN as u64 + 16))
        .min(input_bytes.max(RECORD_LEN as u64)) as usize;
    let spill_dirs = spill_dirs(config)
        .iter()
        .map(|d| JobTempDir::create(d))
        .collect::<Result<Vec<_>, _>>()?;
    let writer_options = WriterOptions {
        io: config.spill_io,
        direct: true,
        compression: config.compression,
        buffer_bytes: sizes.spill_buffer_bytes,
        queue_depth: 2,
    };
    let plan = ExternalPlan {
        budget,
        arena_bytes: arena_bytes / RECORD_LEN * RECORD_LEN,
        minimum_bytes,
        block_bytes: sizes.block_bytes,
        spill_dirs,
        writer_options,
        _fixed: fixed,
    };
    Ok((plan, sizes))
}

/// Default ceiling of a map task's sort buffer in `mapreduce` mode.
const DEFAULT_MAP_SORT_BUFFER: u64 = 128 << 20;

/// Plans a `mapreduce` sort: the write buffers' fixed share, each map slot's sort buffer (no
/// larger than a split), the rest for reducers' in-memory copies; folders for map outputs.
fn mapreduce_plan(
    config: &SortConfig,
    split_bytes: u64,
) -> Result<mapreduce::MapReducePlan, EngineError> {
    let sizes = MemoryPlan::for_budget(config.memory_bytes, config);
    let (slots, r) = (config.maps as u64, config.reducers as u64);
    let fixed_bytes =
        r * 3 * sizes.write_chunk_bytes as u64 + (slots + r) * 3 * sizes.spill_buffer_bytes as u64;
    let with_entries =
        |records_bytes: u64| records_bytes / RECORD_LEN as u64 * (RECORD_LEN as u64 + 16);
    let free = config.memory_bytes.saturating_sub(fixed_bytes);
    let sort_buffer = match config.map_sort_buffer_bytes {
        Some(bytes) => bytes,
        // Half of what is left to the maps, half to the reducers' copies.
        None => (free / 2 / slots * RECORD_LEN as u64 / (RECORD_LEN as u64 + 16))
            .clamp(1 << 20, DEFAULT_MAP_SORT_BUFFER),
    };
    let sort_buffer = (sort_buffer.min(split_bytes) / RECORD_LEN as u64).max(1) * RECORD_LEN as u64;
    // A map task merges its runs in one pass: at most MAX_FAN_IN of them.
    let smallest = split_bytes
        .div_ceil(external::MAX_FAN_IN as u64)
        .div_ceil(RECORD_LEN as u64)
        * RECORD_LEN as u64;
    if sort_buffer < smallest {
        return Err(EngineError::InvalidJob {
            reason: format!(
                "--map-sort-buffer {} (whole records: {sort_buffer} bytes) would spill more than {} runs per {split_bytes}-byte split; use at least {smallest}",
                config.map_sort_buffer_bytes.unwrap_or(sort_buffer),
                external::MAX_FAN_IN
            ),
        });
    }
    let minimum_bytes = fixed_bytes + slots * with_entries((1 << 20).min(split_bytes));
    let maps_bytes = slots * with_entries(sort_buffer);
    if fixed_bytes + maps_bytes > config.memory_bytes {
        // What this job needs, and the largest sort buffer the budget holds.
        let fits = free / slots / (RECORD_LEN as u64 + 16) * RECORD_LEN as u64;
        return Err(EngineError::BudgetTooSmall {
            budget_bytes: config.memory_bytes,
            minimum_bytes: fixed_bytes + maps_bytes,
            what: format!(
                "{slots} map sort buffers of {sort_buffer} bytes (--map-sort-buffer; at most {fits} fit) and the write buffers"
            ),
        });
    }
    // The maps' sort buffers come from a budget of their own, so reducers copying map
    // outputs early can never take the memory a map task needs.
    let budget = MemoryBudget::new(config.memory_bytes - maps_bytes);
    let fixed = budget
        .try_reserve(fixed_bytes)
        .ok_or(EngineError::BudgetTooSmall {
            budget_bytes: config.memory_bytes,
            minimum_bytes,
            what: "the write buffers".into(),
        })?;
    let dirs = spill_dirs(config)
        .iter()
        .map(|d| JobTempDir::create(d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(mapreduce::MapReducePlan {
        map_budget: MemoryBudget::new(maps_bytes),
        budget,
        sort_buffer_bytes: sort_buffer as usize,
        block_bytes: sizes.block_bytes,
        dirs,
        writer_options: WriterOptions {
            io: config.spill_io,
            direct: true,
            compression: config.compression,
            buffer_bytes: sizes.spill_buffer_bytes,
            queue_depth: 2,
        },
        minimum_bytes,
        _fixed: fixed,
    })
}

/// A sort that finished and passed its integrity check, its output durable under the temp
/// name; [`FinishedSort::publish`] makes it visible. Dropping it removes the output.
#[derive(Debug)]
pub struct FinishedSort {
    pub report: SortReport,
    target: OutputTarget,
}

impl FinishedSort {
    /// Renames the output into place; returns the report.
    pub fn publish(self) -> Result<SortReport, EngineError> {
        self.target.publish()?;
        Ok(self.report)
    }
}

/// Runs a TeraSort as configured and reports it; the output exists only if this returns `Ok`.
pub fn run(config: &SortConfig, progress: Arc<Progress>) -> Result<SortReport, EngineError> {
    run_uncommitted(config, progress)?.publish()
}

/// Runs a TeraSort up to, not including, the rename of its output: the caller can write other
/// outputs (a timeline) and then publish them all.
pub fn run_uncommitted(
    config: &SortConfig,
    progress: Arc<Progress>,
) -> Result<FinishedSort, EngineError> {
    let job_start = Instant::now();
    let started_at = std::time::SystemTime::now();
    let cpu_start = crate::process::cpu_seconds();
    config.check_limits()?;
    // Every path is checked before a stream is spooled or a byte read.
    let kind = if config.parts {
        crate::paths::OutputKind::Folder
    } else {
        crate::paths::OutputKind::File
    };
    let mut reads = vec![crate::paths::Read::new("input", &config.input)];
    reads.extend(
        config
            .spill_dirs
            .iter()
            .map(|dir| crate::paths::Read::scratch("--spill-dir", dir)),
    );
    crate::paths::check(
        &reads,
        &[crate::paths::Write::new("output", &config.output, kind)],
        config.force,
    )?;
    let spill_dir = config
        .spill_dirs
        .first()
        .cloned()
        .unwrap_or_else(std::env::temp_dir);
    // Whatever the plan, the folders of dead jobs go now.
    for dir in config.spill_dirs.iter().chain([&spill_dir]) {
        crate::tempdir::remove_stale(dir);
    }
    if !matches!(std::fs::metadata(&config.input), Ok(m) if m.is_file()) {
        progress.set_stage(Stage::Spool);
    }
    let opened = input::open_input(&config.input, &spill_dir, &progress.spooled_bytes)?;
    let (input, size, spool) = (opened.file, opened.size, opened.spool);
    let shown_input = input::shown(&config.input);
    progress.input_bytes.store(size, Ordering::Relaxed);
    let records = size / RECORD_LEN as u64;

    // In memory when the mapped input plus the sort entries fit the budget; else spill. The
    // plan is checked before the output is created and before sampling.
    let in_memory_bytes = size
        .saturating_add(records.saturating_mul(16))
        .saturating_add(MemoryPlan::for_budget(config.memory_bytes, config).fixed_bytes);
    let fits = in_memory_bytes <= config.memory_bytes;
    let mapreduce_mode = config.mode == ExecutionMode::MapReduce;
    let split_bytes = (config.split_bytes / RECORD_LEN as u64).max(1) * RECORD_LEN as u64;
    if mapreduce_mode && size.div_ceil(split_bytes) > MAX_SUBTASKS as u64 {
        return Err(EngineError::InvalidJob {
            reason: format!(
                "--split-bytes {} makes {} map tasks of this {size}-byte input; at most {MAX_SUBTASKS} (use --split-bytes {} or more)",
                config.split_bytes,
                size.div_ceil(split_bytes),
                size.div_ceil(MAX_SUBTASKS as u64).div_ceil(RECORD_LEN as u64) * RECORD_LEN as u64
            ),
        });
    }
    // `mapreduce` always sorts in map tasks and merges in reducers: a plan of its own.
    let external = if fits || mapreduce_mode {
        None
    } else {
        Some(external_plan(config, size)?)
    };
    let mapreduce = if mapreduce_mode {
        // No map task holds more than its split, nor more than the input.
        Some(mapreduce_plan(
            config,
            split_bytes.min(size.max(RECORD_LEN as u64)),
        )?)
    } else {
        None
    };
    let target = OutputTarget::create(
        &config.output,
        &[&config.input],
        size,
        config.parts.then_some(config.reducers),
        config.io,
        config.force,
    )?;

    // Sample the key distribution: reducer ranges, then buckets inside each range.
    progress.set_stage(Stage::Sample);
    let buckets_per_reducer = ((records / config.reducers as u64) / 16_384)
        .clamp(1, 4096)
        .next_power_of_two() as usize;
    let fine_ranges = config.reducers * buckets_per_reducer;
    let sample_count = (fine_ranges * 16).clamp(1_000, 1 << 20);
    let samples = sample::sample_keys(&input, &shown_input, records, sample_count)?;
    let reducer_bounds = boundaries_from_samples(&samples, config.reducers);
    let ranges: Vec<ReducerRange> = (0..config.reducers)
        .map(|r| {
            let lo = if r == 0 { 0 } else { reducer_bounds[r - 1] };
            let hi = reducer_bounds.get(r).copied().unwrap_or(KEY_SPACE_END);
            let inside: Vec<u128> = samples
                .iter()
                .copied()
                .filter(|&k| k >= lo && k < hi)
                .collect();
            ReducerRange {
                lo,
                hi,
                buckets: boundaries_from_samples(&inside, buckets_per_reducer),
            }
        })
        .collect();
    let sample_us = micros_since(job_start);
    info!(
        records,
        reducers = config.reducers,
        buckets_per_reducer,
        samples = samples.len(),
        "sampled input"
    );

    // Fixed buffers are shares of the budget in both plans, so memory does not grow with the
    // number of maps and reducers.
    let sizes = match &external {
        None => MemoryPlan::for_budget(config.memory_bytes, config),
        Some((_, sizes)) => *sizes,
    };
    let (buffer_bytes, read_chunk_bytes, write_chunk_bytes) = (
        sizes.buffer_bytes,
        sizes.read_chunk_bytes,
        sizes.write_chunk_bytes,
    );
    info!(
        plan = if !fits { "out-of-core" } else { "in-memory" },
        budget = config.memory_bytes,
        "chose plan"
    );
    progress
        .out_of_core
        .store(!fits || mapreduce_mode, Ordering::Relaxed);
    let recheck = match spool {
        None => input.try_clone().ok(),
        Some(_) => None,
    };
    let input = JobInput {
        path: shown_input.clone(),
        data: if fits {
            InputData::Mapped(input::map_input(&input, size, &shown_input)?)
        } else {
            InputData::Read(input)
        },
    };
    let splits = Arc::new(crate::source::SplitEnumerator::for_range(size, split_bytes));
    // `mapreduce`: one map task per split, `--maps` of them at once.
    let map_tasks = if mapreduce_mode {
        splits.len().max(1)
    } else {
        config.maps
    };
    progress.set_stage(Stage::Run);
    let parts = target.has_parts();
    let spill_writer_options = WriterOptions {
        io: config.spill_io,
        direct: true,
        compression: config.compression,
        buffer_bytes: sizes.spill_buffer_bytes,
        queue_depth: 2,
    };
    // What each vertex runs, as plain data: sizes, ranges, options. Everything a subtask
    // needs beside that comes from the process's resources.
    let (map_operator, sort_operator) = match (&mapreduce, &external) {
        (Some(plan), _) => (
            OperatorDescriptor::TeraSortSortingMap(SortingMapConfig {
                read_chunk_bytes,
                sort_buffer_bytes: plan.sort_buffer_bytes,
                block_bytes: plan.block_bytes,
                writer_options: plan.writer_options,
                minimum_bytes: plan.minimum_bytes,
            }),
            OperatorDescriptor::TeraSortMergingReduce(MergingReduceConfig {
                write_chunk_bytes,
                parts,
                block_bytes: plan.block_bytes,
                share_bytes: (plan.budget.limit_bytes() - plan.budget.used_bytes()) / 8 * 3
                    / config.reducers as u64,
            }),
        ),
        (None, Some((plan, _))) => (
            OperatorDescriptor::TeraSortMap(MapConfig {
                read_chunk_bytes,
                payload: Payload::Records,
            }),
            OperatorDescriptor::TeraSortExternalSort(ExternalSortConfig {
                arena_bytes: plan.arena_bytes,
                minimum_bytes: plan.minimum_bytes,
                block_bytes: plan.block_bytes,
                writer_options: plan.writer_options,
                write_chunk_bytes,
                parts,
            }),
        ),
        (None, None) => (
            OperatorDescriptor::TeraSortMap(MapConfig {
                read_chunk_bytes,
                payload: Payload::Entries,
            }),
            OperatorDescriptor::TeraSortSort(InMemorySortConfig {
                ranges,
                write_chunk_bytes,
                parts,
            }),
        ),
    };
    let out_of_core = external.is_some();

    let mut graph = JobGraph::new("terasort");
    let map = graph.add_vertex("map", map_tasks, map_operator);
    graph.vertices[map.0].splits = Some(splits);
    if mapreduce_mode {
        graph.vertices[map.0].slots = Some(config.maps);
    }
    let reduce = graph.add_vertex("sort", config.reducers, sort_operator);
    // The mode is the partition type of the one exchange; the scheduler does the rest.
    let exchange = match (config.mode, out_of_core, config.hybrid_wait) {
        (ExecutionMode::Staged | ExecutionMode::MapReduce, _, _) => ResultPartitionType::Blocking,
        (ExecutionMode::Pipelined, true, Some(_)) => ResultPartitionType::Hybrid,
        (ExecutionMode::Pipelined, _, _) => ResultPartitionType::Pipelined,
    };
    let edge = graph.connect(
        map,
        reduce,
        Distribution::Range(reducer_bounds.into()),
        exchange,
    );
    edge.credits_per_channel = config.credits_per_channel;
    edge.record_bytes = if out_of_core || mapreduce_mode {
        RECORD_LEN
    } else {
        map::ENTRY_BYTES
    };
    if mapreduce_mode {
        edge.slow_start = config.slowstart;
    }
    // Where spilling partitions write: the out-of-core plan's job folders, or (staged, in
    // memory) job folders of their own.
    let staged_dirs = match (&external, exchange) {
        (None, ResultPartitionType::Blocking) if !mapreduce_mode => spill_dirs(config)
            .iter()
            .map(|d| JobTempDir::create(d))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let job_dirs: Vec<PathBuf> = match (&external, &mapreduce) {
        (Some((plan, _)), _) => plan.spill_dirs.iter(),
        (None, Some(plan)) => plan.dirs.iter(),
        (None, None) => staged_dirs.iter(),
    }
    .map(|d| d.path().to_path_buf())
    .collect();
    // What this process gives every subtask: budgets, folders, pool, counters, open files.
    let resources = Arc::new(TaskResources {
        memory: match (&external, &mapreduce) {
            (Some((plan, _)), _) => Some(plan.budget.clone()),
            (None, Some(plan)) => Some(plan.budget.clone()),
            (None, None) => None,
        },
        map_memory: mapreduce.as_ref().map(|plan| plan.map_budget.clone()),
        spill_dirs: job_dirs.clone(),
        pool: BufferPool::new(
            buffer_bytes,
            if mapreduce_mode {
                0
            } else {
                config.maps * config.reducers * (config.credits_per_channel + 1)
            },
        ),
        progress: progress.clone(),
        input: Some(input),
        outputs: (0..config.reducers)
            .map(|r| target.file(r).clone())
            .collect(),
        ..TaskResources::default()
    });
    let env = scheduler::JobEnv {
        spill_dirs: job_dirs,
        writer_options: match &external {
            Some((plan, _)) => plan.writer_options,
            None => spill_writer_options,
        },
        hybrid_patience: config.hybrid_wait.unwrap_or_default(),
        max_attempts: config.max_attempts,
        fail_attempts: scheduler::injected_failures(),
        registry: Arc::new(OperatorRegistry::with_builtins()),
        resources,
        placement: config.placement.or_else(scheduler::placement_from_env),
    };

    let result = scheduler::run_job(graph, job_start, &env)?;
    drop(staged_dirs);
    let network = result.network;

    // The job checks itself before anything becomes visible: what the maps read and what
    // the reducers wrote, summed once per finished subtask from their reports.
    let sum = |vertex: VertexId, of: fn(&crate::task::SubtaskReport) -> Option<Checksum>| {
        result
            .subtasks
            .iter()
            .filter(|s| s.vertex_id == vertex.0)
            .filter_map(of)
            .fold(Checksum::default(), |mut total, c| {
                total.merge(c);
                total
            })
    };
    let input_checksum = sum(map, |s| s.checksum_in);
    let output_checksum = sum(reduce, |s| s.checksum_out);
    if input_checksum.records != records {
        return Err(EngineError::Integrity {
            what: format!("maps read {} records of {records}", input_checksum.records),
        });
    }
    if output_checksum != input_checksum {
        return Err(EngineError::Integrity {
            what: format!(
                "output has {} records with checksum {}, input has {} with checksum {}",
                output_checksum.records, output_checksum, input_checksum.records, input_checksum
            ),
        });
    }
    // Through the open handle: the input may be standard input, and a file truncated under
    // the mapping is what matters, whatever its name now.
    let changed = match &recheck {
        Some(file) => !matches!(file.metadata(), Ok(meta) if meta.len() == size),
        None => false,
    };
    if changed {
        return Err(EngineError::InputUnreadable {
            path: shown_input,
            source: std::io::Error::other("the input changed size while it was being sorted"),
        });
    }
    drop(spool);
    let commit_start = micros_since(job_start);
    progress.set_stage(Stage::Commit);
    target.sync()?;
    let output = target.final_path().to_path_buf();
    let wall_us = micros_since(job_start);
    let timeline = Timeline::new(
        "terasort",
        config.mode.as_str(),
        started_at,
        wall_us,
        result.subtasks,
        &crate::timeline::PhaseRules {
            vertices: &[(PhaseKind::Map, map)],
            spans: &[
                (PhaseKind::Shuffle, SpanKind::Receive),
                (PhaseKind::SortWrite, SpanKind::SortWrite),
            ],
            nested_spans: &[
                (PhaseKind::Spill, SpanKind::Spill),
                (PhaseKind::Merge, SpanKind::Merge),
            ],
        },
        vec![
            Span::new(SpanKind::Sample, 0, sample_us),
            Span::new(SpanKind::Commit, commit_start, wall_us),
        ],
    );
    let report = SortReport {
        input: config.input.clone(),
        output,
        records,
        bytes: size,
        checksum: input_checksum.sum_hex(),
        maps: config.maps,
        reducers: config.reducers,
        wall_us,
        sample_us,
        peak_rss_bytes: crate::process::peak_rss_bytes(),
        cpu_s: crate::process::cpu_seconds() - cpu_start,
        // Mapreduce always spills map outputs; its plan says whether the input fit the budget.
        plan: if out_of_core || !fits {
            "out-of-core"
        } else {
            "in-memory"
        },
        memory_budget_bytes: config.memory_bytes,
        io: IoSummary::from_subtasks(&timeline.subtasks, map, reduce, size),
        timeline,
        network,
    };
    Ok(FinishedSort { report, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No value of maps, reducers and budget panics the check, and whatever it accepts
        /// plans fixed buffers within the budget and within the parallelism bound.
        #[test]
        fn flag_limits_never_panic_and_accepted_plans_fit(
            maps in prop_oneof![0usize..64, any::<usize>()],
            reducers in prop_oneof![0usize..4096, any::<usize>()],
            memory in prop_oneof![0u64..(64 << 20), any::<u64>()],
            parts: bool,
        ) {
            let mut config = SortConfig::new("in", "out");
            config.maps = maps;
            config.reducers = reducers;
            config.memory_bytes = memory;
            config.parts = parts;
            match config.check_limits() {
                Ok(()) => {
                    prop_assert!((1..=MAX_SUBTASKS).contains(&maps));
                    prop_assert!((1..=MAX_SUBTASKS).contains(&reducers));
                    prop_assert!(MemoryPlan::for_budget(memory, &config).fixed_bytes <= memory);
                }
                Err(error) => {
                    let text = error.to_string();
                    prop_assert!(!text.is_empty());
                    if let EngineError::TooMany { flag: "--reducers", max, limit, .. } = error {
                        // The value said to fit clears that limit (another may still bind).
                        let mut fitted = config.clone();
                        fitted.reducers = max;
                        let again = fitted.check_limits();
                        prop_assert!(
                            !matches!(&again, Err(EngineError::TooMany { flag: "--reducers", limit: l, .. }) if *l == limit),
                            "{again:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_largest_value_that_fits_is_found() {
        assert_eq!(largest(100, |n| n <= 37), 37);
        assert_eq!(largest(100, |_| true), 100);
        assert_eq!(largest(100, |n| n == 0), 0);
        assert_eq!(largest(usize::MAX, |n| n <= 5), 5);
    }

    /// Defaults shrink until a small budget fits, given values stay.
    #[test]
    fn default_parallelism_fits_the_budget() {
        let mut config = SortConfig::new("in", "out");
        (config.maps, config.reducers, config.memory_bytes) = (64, 64, 8 << 20);
        config.fit_default_parallelism(true, true);
        assert!(config.out_of_core_minimum_bytes() <= config.memory_bytes);
        assert!(config.maps >= 1 && config.reducers >= 1 && config.maps < 64);
        let mut given = SortConfig::new("in", "out");
        (given.maps, given.reducers, given.memory_bytes) = (64, 64, 8 << 20);
        given.fit_default_parallelism(false, false);
        assert_eq!((given.maps, given.reducers), (64, 64));
    }
}
