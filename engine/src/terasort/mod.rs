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

pub mod input;
mod map;
pub mod merge;
pub mod partitioner;
mod reduce;
mod sample;
pub mod sorter;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use shuffle::{BufferPool, ResultPartitionType};
use tracing::info;

use crate::graph::JobGraph;
use crate::output::{IoMode, OutputTarget};
use crate::record::{Checksum, RECORD_LEN};
use crate::scheduler;
use crate::task::{micros_since, Span};
use crate::timeline::Timeline;
use crate::EngineError;
use partitioner::{boundaries_from_samples, RangePartitioner, KEY_SPACE_END};

/// How the exchange between map and reduce runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Reducers receive and bucket while maps run (Flink-style pipelined exchange).
    #[default]
    Pipelined,
}

impl ExecutionMode {
    /// The mode's name as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipelined => "pipelined",
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
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes read by maps.
    pub read_bytes: AtomicU64,
    /// Output bytes handed to the disk.
    pub written_bytes: AtomicU64,
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
    pub timeline: Timeline,
}

impl SortReport {
    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        if self.wall_us == 0 {
            0.0
        } else {
            self.bytes as f64 / self.wall_us as f64
        }
    }
}

/// State shared by the subtasks of one sort.
#[derive(Debug)]
struct SortShared {
    /// The input, mapped: maps read keys from it and reducers copy records out of it.
    input: shuffle::MappedFile,
    splits: Vec<(u64, u64)>,
    next_split: AtomicUsize,
    reducer_ranges: RangePartitioner,
    buckets: Vec<RangePartitioner>,
    pool: BufferPool,
    output: Vec<crate::output::OutputFile>,
    /// Whether each reducer writes its own part file.
    parts: bool,
    read_chunk_bytes: usize,
    write_chunk_bytes: usize,
    /// Records each reducer received, published when its input has ended.
    reducer_records: tokio::sync::watch::Sender<Vec<Option<u64>>>,
    input_checksum: Mutex<Checksum>,
    output_checksum: Mutex<Checksum>,
    progress: Arc<Progress>,
}

impl SortShared {
    fn next_split(&self) -> Option<(u64, u64)> {
        self.splits
            .get(self.next_split.fetch_add(1, Ordering::Relaxed))
            .copied()
    }
}

/// Runs a TeraSort as configured and reports it; the output exists only if this returns `Ok`.
pub fn run(config: &SortConfig, progress: Arc<Progress>) -> Result<SortReport, EngineError> {
    let job_start = Instant::now();
    if config.maps == 0 || config.reducers == 0 {
        return Err(EngineError::InvalidJob {
            reason: "maps and reducers must be at least 1".into(),
        });
    }
    let (input, size) = input::open_input(&config.input)?;
    let records = size / RECORD_LEN as u64;
    let target = OutputTarget::create(
        &config.output,
        &config.input,
        size,
        config.parts.then_some(config.reducers),
        config.io,
    )?;

    // Sample the key distribution: reducer ranges, then buckets inside each range.
    let buckets_per_reducer = ((records / config.reducers as u64) / 16_384)
        .clamp(1, 4096)
        .next_power_of_two() as usize;
    let fine_ranges = config.reducers * buckets_per_reducer;
    let sample_count = (fine_ranges * 16).clamp(1_000, 1 << 20);
    let samples = sample::sample_keys(&input, &config.input, records, sample_count)?;
    let reducer_bounds = boundaries_from_samples(&samples, config.reducers);
    let buckets = (0..config.reducers)
        .map(|r| {
            let lo = if r == 0 { 0 } else { reducer_bounds[r - 1] };
            let hi = reducer_bounds.get(r).copied().unwrap_or(KEY_SPACE_END);
            let inside: Vec<u128> = samples
                .iter()
                .copied()
                .filter(|&k| k >= lo && k < hi)
                .collect();
            RangePartitioner::new(
                lo,
                hi,
                boundaries_from_samples(&inside, buckets_per_reducer),
            )
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

    let buffer_bytes = (config.buffer_bytes / RECORD_LEN).max(1) * RECORD_LEN;
    let split_bytes = (config.split_bytes / RECORD_LEN as u64).max(1) * RECORD_LEN as u64;
    let splits = (0..size)
        .step_by(split_bytes as usize)
        .map(|start| (start, (start + split_bytes).min(size)))
        .collect();
    let shared = Arc::new(SortShared {
        input: input::map_input(&input, size, &config.input)?,
        splits,
        next_split: AtomicUsize::new(0),
        reducer_ranges: RangePartitioner::new(0, KEY_SPACE_END, reducer_bounds),
        buckets,
        pool: BufferPool::new(
            buffer_bytes,
            config.maps * config.reducers * (config.credits_per_channel + 1),
        ),
        output: (0..config.reducers)
            .map(|r| target.file(r).clone())
            .collect(),
        parts: target.has_parts(),
        read_chunk_bytes: (config.read_chunk_bytes / RECORD_LEN).max(1) * RECORD_LEN,
        write_chunk_bytes: config.write_chunk_bytes,
        reducer_records: tokio::sync::watch::channel(vec![None; config.reducers]).0,
        input_checksum: Mutex::new(Checksum::default()),
        output_checksum: Mutex::new(Checksum::default()),
        progress,
    });

    let mut graph = JobGraph::new("terasort");
    let map_shared = shared.clone();
    let map = graph.add_vertex("map", config.maps, move |_| {
        Box::new(map::MapTask {
            shared: map_shared.clone(),
        })
    });
    let reduce_shared = shared.clone();
    let reduce = graph.add_vertex("sort", config.reducers, move |_| {
        Box::new(reduce::ReduceTask {
            shared: reduce_shared.clone(),
        })
    });
    graph.connect(
        map,
        reduce,
        ResultPartitionType::Pipelined,
        config.credits_per_channel,
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
        .thread_name("millrace-task")
        .enable_all()
        .build()
        .map_err(|e| EngineError::Internal {
            what: format!("cannot start the runtime: {e}"),
        })?;
    let result = scheduler::execute(graph, &runtime, job_start)?;
    drop(runtime);

    // The job checks itself before anything becomes visible.
    let input_checksum = *shared
        .input_checksum
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let output_checksum = *shared
        .output_checksum
        .lock()
        .unwrap_or_else(|p| p.into_inner());
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
    match std::fs::metadata(&config.input) {
        Ok(meta) if meta.len() == size => {}
        _ => {
            return Err(EngineError::InputUnreadable {
                path: config.input.clone(),
                source: std::io::Error::other("the input changed size while it was being sorted"),
            })
        }
    }
    let commit_start = micros_since(job_start);
    let output = target.commit()?;
    let wall_us = micros_since(job_start);
    let timeline = Timeline::new(
        "terasort",
        config.mode.as_str(),
        wall_us,
        result.subtasks,
        &[("map", "map")],
        &[("shuffle", "receive"), ("sort+write", "sort+write")],
        &[
            Span {
                name: "sample",
                start_us: 0,
                end_us: sample_us,
            },
            Span {
                name: "commit",
                start_us: commit_start,
                end_us: wall_us,
            },
        ],
    );
    Ok(SortReport {
        input: config.input.clone(),
        output,
        records,
        bytes: size,
        checksum: input_checksum.sum_hex(),
        maps: config.maps,
        reducers: config.reducers,
        wall_us,
        sample_us,
        peak_rss_bytes: crate::floor::peak_rss_bytes(),
        timeline,
    })
}
