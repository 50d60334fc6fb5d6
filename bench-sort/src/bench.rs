//! `millrace bench sort`: measures the TeraSort job against this machine's floor and against
//! GNU sort, and writes a report that can be compared across commits.
//!
//! For every size and format (binary always, ASCII with [`BenchConfig::ascii`]) a case runs:
//!
//! 1. Generate the input with [`gensort::generate_to_file`] and keep its checksum, then read
//!    the input once so that every tool starts from the page cache.
//! 2. `runs` times, interleaved so that noise hits both:
//!    - the **floor**: [`engine::floor::copy_file`] copies the input through the sort's own
//!      I/O path (direct I/O where possible, one writer per core, 8 MiB chunks, fsync);
//!    - the **sort**: `millrace sort INPUT OUTPUT --json --timeline FILE` as a child process;
//!      its JSON gives the job's wall time, phases and peak RSS.
//!      The output is validated with [`valsort::validate_path`] and must hold exactly the
//!      generated records (count and checksum), or the bench fails.
//! 3. ASCII only, once: `LC_ALL=C sort --parallel=CORES -S 50% -o OUT INPUT`, then an fsync of
//!    OUT, validated the same way (on gensort ASCII lines the whole-line order is key order).
//!    Skipped with a reason when `sort` is missing or is not GNU sort.
//!
//! Every output is deleted right after it is measured, and each input after its case unless
//! [`BenchConfig::keep`].
//! Medians are reported, and the sort's peak RSS is the largest seen.
//!
//! # The out-of-core case
//!
//! With [`BenchConfig::out_of_core`], one more case runs after the others: a binary input far
//! larger than the memory budget (160M records = 16 GB under 2 GiB by default), sorted with
//! `--memory`, so that the sort spills runs and merges them.
//!
//! 1. Check that the bench folder's file system has room for input, spill and output
//!    (3× the input + 10%, from `df`), before anything else runs and again before generating;
//!    fail if not. Generate the input and fsync it (it is not warmed: it may not fit the
//!    page cache, and what the previous step left cached of it is not controlled).
//! 2. `runs` times, and in each run every [`OOC_VARIANTS`] entry in turn (default, pwrite
//!    spills, no compression, lz4 always; run `r` starts with variant `r`, so with 4 runs
//!    each variant goes first once, right after the generation's writes):
//!    - the **two-pass floor**: [`engine::floor::two_pass_floor`] writes the input to segment
//!      files and reads them back into the output with the variant's spill engine and
//!      compression (write + read + write + read of the same bytes, durable);
//!    - the **sort**: `millrace sort INPUT OUTPUT --json --memory B --spill-dir DIR
//!      --spill-io E --compress C`, with its spill folder inside the bench's work folder;
//!      the output is validated as above and both outputs are deleted before the next step.
//! 3. Per variant: sort/floor (target ≤ [`OOC_TARGET_RATIO`]), bytes read and written per
//!    phase as the job counts them, peak RSS against the budget; then io_uring against pwrite
//!    and lz4 on against off.
//!
//! # Files
//!
//! ```text
//! <dir>/bench-report.json                    the JSON report of the last successful bench
//! <dir>/bench-timeline-<size>-<format>.json  its last sort run's --timeline, per case
//! <dir>/bench-timeline-<size>-ooc-<variant>.json  the same for out-of-core variants
//! <dir>/run-<pid>/                           inputs and outputs of one bench (a WorkDir)
//! <dir>/run-<pid>/spill/                     spill folder of the out-of-core sorts and floors
//! <dir>/run-<pid>/millrace                   the binary every sort runs, copied at the start
//! ```
//!
//! Timelines are written inside `run-<pid>/` and moved out only when the whole bench succeeds.
//!
//! The `run-<pid>` folder is private to one bench, so concurrent benches in the same `--dir`
//! do not collide; dropping its [`WorkDir`] removes what it holds (except kept inputs) also when
//! the bench fails half way, and it is registered with [`engine::cleanup`] for interruptions.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::output::IoMode;
use engine::paths;
use engine::record::{Checksum, RECORD_LEN};
use engine::spill::{Compression, IoEngine};
use engine::EngineError;
use serde::{Deserialize, Serialize};

use crate::gensort::{self, Format, GenError, GenSpec};
use crate::valsort::{self, ValidateError};

/// Bytes per write of the floor copy; the sort's default `write_chunk_bytes` is the same.
const FLOOR_CHUNK_BYTES: usize = 8 << 20;

/// Bytes per read when warming the page cache.
const WARM_READ_BYTES: usize = 8 << 20;

/// Lines of a failed child's stderr kept in the error.
const STDERR_TAIL_LINES: usize = 20;

/// The out-of-core target: sort time at most this many times the two-pass floor.
pub const OOC_TARGET_RATIO: f64 = 1.25;

/// Peak RSS above the budget by more than this share is flagged.
const RSS_TOLERANCE: f64 = 0.15;

/// One way of running the out-of-core case: the spill engine and compression given to both
/// the floor and the sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OocVariant {
    /// Short name in the report.
    pub name: &'static str,
    pub spill_io: IoEngine,
    pub compression: Compression,
}

impl OocVariant {
    /// The `--spill-io` and `--compress` flags of the sort.
    pub fn sort_flags(&self) -> [&'static str; 4] {
        let io = match self.spill_io {
            IoEngine::Auto => "auto",
            IoEngine::Uring => "uring",
            IoEngine::Pwrite => "pwrite",
        };
        let compress = match self.compression {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        };
        ["--spill-io", io, "--compress", compress]
    }
}

/// The out-of-core variants, in the order they run: the default (io_uring where available,
/// lz4 where it saves 10%), then one change each.
pub const OOC_VARIANTS: [OocVariant; 4] = [
    OocVariant {
        name: "default",
        spill_io: IoEngine::Auto,
        compression: Compression::Auto,
    },
    OocVariant {
        name: "pwrite",
        spill_io: IoEngine::Pwrite,
        compression: Compression::Auto,
    },
    OocVariant {
        name: "no-lz4",
        spill_io: IoEngine::Auto,
        compression: Compression::None,
    },
    OocVariant {
        name: "lz4",
        spill_io: IoEngine::Auto,
        compression: Compression::Lz4,
    },
];

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `--records` value is not a record count.
    #[error("invalid --records value {input:?}")]
    RecordCount {
        /// The text as given.
        input: String,
        /// Why it is not a count.
        source: GenError,
    },
    /// A `--records` value is zero.
    #[error("invalid --records value {input:?}: a benchmark needs at least 1 record")]
    NoRecords {
        /// The text as given.
        input: String,
    },
    /// Nothing to measure, or zero runs.
    #[error("invalid bench config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A file system operation on the bench's own files failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Generating an input failed.
    #[error("cannot generate the bench input {}", path.display())]
    Generate {
        /// The input being generated.
        path: PathBuf,
        /// Why.
        source: GenError,
    },
    /// The bench folder's file system has too little free space for a case.
    #[error(
        "not enough free space in {} for {what}: it needs {:.1} GB, {:.1} GB are free; \
         free space, choose another --dir or use fewer records",
        dir.display(),
        *needed_bytes as f64 / 1e9,
        *available_bytes as f64 / 1e9
    )]
    NoSpace {
        /// The bench folder.
        dir: PathBuf,
        /// What needs the space.
        what: String,
        needed_bytes: u64,
        available_bytes: u64,
    },
    /// `df` could not tell the free space of the bench folder.
    #[error("cannot find the free space of {} with df: {reason}", dir.display())]
    FreeSpace {
        /// The bench folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The out-of-core case did not run out of core.
    #[error("the out-of-core sort of {} ran with the {plan} plan; lower --memory or raise --ooc-records", input.display())]
    WrongPlan {
        /// The input it sorted.
        input: PathBuf,
        /// The plan the job reported.
        plan: String,
    },
    /// A report or timeline cannot be written where the bench puts it.
    #[error(transparent)]
    Output {
        source: Box<engine::paths::PathError>,
    },
    /// Writing the report failed.
    #[error("cannot write the report {}", path.display())]
    Report { path: PathBuf, source: EngineError },
    /// The floor copy failed.
    #[error("the floor copy of {} failed", input.display())]
    Floor {
        /// The input copied.
        input: PathBuf,
        /// Why.
        source: EngineError,
    },
    /// A child process (millrace sort or GNU sort) could not be started.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A child process ended with a failure.
    #[error("{tool} on {} failed ({status}); its stderr ends with:\n{stderr_tail}", input.display())]
    ChildFailed {
        /// `millrace sort` or `GNU sort`.
        tool: &'static str,
        /// The input it sorted.
        input: PathBuf,
        /// How it ended.
        status: String,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// `millrace sort --json` printed something that is not its report.
    #[error(
        "cannot read the JSON report of millrace sort on {}; it printed {stdout_head:?}",
        input.display()
    )]
    ChildReport {
        /// The input it sorted.
        input: PathBuf,
        /// The start of what it printed.
        stdout_head: String,
        /// Why parsing failed.
        source: serde_json::Error,
    },
    /// Reading a sorted output for validation failed.
    #[error("cannot validate the output of {tool}")]
    Validate {
        /// Who wrote the output.
        tool: &'static str,
        /// Why.
        source: ValidateError,
    },
    /// A sorted output is not the input in key order; the numbers of this case are void.
    #[error(
        "the output of {tool} ({}) is not the generated input in key order: {what}",
        path.display()
    )]
    WrongOutput {
        /// Who wrote the output.
        tool: &'static str,
        /// The output.
        path: PathBuf,
        /// What differs.
        what: String,
    },
}

/// What to measure; built and validated by the CLI.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Input sizes in records; one case per size and format, in this order.
    pub records: Vec<u64>,
    /// Also run ASCII inputs (and GNU sort on them); binary inputs always run.
    pub ascii: bool,
    /// Folder for inputs, outputs and the report; created if missing.
    pub dir: PathBuf,
    /// Keep the generated inputs (in `<dir>/run-<pid>/`).
    pub keep: bool,
    /// Floor and sort runs per case; medians are reported. At least 1.
    pub runs: usize,
    /// The `millrace` binary that runs the sorts (the CLI passes `current_exe()`).
    pub millrace_exe: PathBuf,
    /// The out-of-core case, run after the others; `None` to skip it.
    pub out_of_core: Option<OutOfCoreConfig>,
}

/// The out-of-core case: an input much larger than the sort's memory budget.
#[derive(Clone, Copy, Debug)]
pub struct OutOfCoreConfig {
    /// Binary records to generate (160M = 16 GB by default).
    pub records: u64,
    /// The sort's `--memory`, in bytes (2 GiB by default).
    pub memory_bytes: u64,
}

impl OutOfCoreConfig {
    /// Bytes of the input.
    pub fn bytes(&self) -> u64 {
        self.records.saturating_mul(RECORD_LEN as u64)
    }

    /// Free space the case needs: input, spill and output at once (spills may not compress),
    /// plus 10%.
    pub fn needed_bytes(&self) -> u64 {
        self.bytes().saturating_mul(3).saturating_mul(11) / 10
    }
}

impl BenchConfig {
    fn check(&self) -> Result<(), BenchError> {
        let invalid = |reason: &str| BenchError::InvalidConfig {
            reason: reason.to_owned(),
        };
        if self.records.is_empty() && self.out_of_core.is_none() {
            return Err(invalid("give at least one --records size"));
        }
        if let Some(ooc) = &self.out_of_core {
            if ooc.records == 0 {
                return Err(invalid("the out-of-core case needs at least 1 record"));
            }
            // The sorts' flags must pass the sort's own checks before anything is generated.
            let mut sort = engine::terasort::SortConfig::new("in", "out");
            sort.memory_bytes = ooc.memory_bytes;
            if let Err(error) = sort.check_limits() {
                return Err(invalid(&format!(
                    "the out-of-core sorts cannot run: {error}"
                )));
            }
            // The sort runs in memory when the input and 16 bytes per record fit the budget.
            if ooc.records.saturating_mul(RECORD_LEN as u64 + 16) <= ooc.memory_bytes {
                return Err(invalid(&format!(
                    "{} out-of-core records ({:.2} GB) fit a --memory of {} bytes; the sort \
                     would not spill: lower --memory or raise --ooc-records",
                    ooc.records,
                    ooc.bytes() as f64 / 1e9,
                    ooc.memory_bytes
                )));
            }
        }
        if self.records.contains(&0) {
            return Err(invalid("a benchmark needs at least 1 record per size"));
        }
        if self.runs == 0 {
            return Err(invalid("--runs must be at least 1"));
        }
        Ok(())
    }
}

/// Most records per bench case (10^13 records = 1 PB; sizes stay far from u64 overflow).
const MAX_BENCH_RECORDS: u64 = 10_000_000_000_000;

/// Parses `--records` values (`10M`, `40M`, `1000`, …) into record counts; zero is rejected.
pub fn parse_record_counts(inputs: &[String]) -> Result<Vec<u64>, BenchError> {
    inputs
        .iter()
        .map(|input| match gensort::parse_record_count(input) {
            Ok(0) => Err(BenchError::NoRecords {
                input: input.clone(),
            }),
            // More than 10^15 bytes is no benchmark for one machine (and would overflow sizes).
            Ok(records) if records > MAX_BENCH_RECORDS => Err(BenchError::InvalidConfig {
                reason: format!(
                    "{input} records ({} bytes) is more than a bench can hold; at most {MAX_BENCH_RECORDS} records",
                    records as u128 * RECORD_LEN as u128
                ),
            }),
            Ok(records) => Ok(records),
            Err(source) => Err(BenchError::RecordCount {
                input: input.clone(),
                source,
            }),
        })
        .collect()
}

/// The whole report: machine, cases, and where it was written.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The machine the numbers come from.
    pub machine: Machine,
    /// `git describe`-style commit of the working directory when the bench started, `+dirty`
    /// when it had changes.
    pub commit: Option<String>,
    /// Seconds since the Unix epoch when the bench ended.
    pub unix_time_s: u64,
    /// Floor and sort runs per case.
    pub runs: usize,
    /// One entry per size and format.
    pub cases: Vec<CaseReport>,
    /// The out-of-core case, when it ran.
    pub out_of_core: Option<OutOfCoreReport>,
}

/// The out-of-core case: every variant against its own two-pass floor.
#[derive(Clone, Debug, Serialize)]
pub struct OutOfCoreReport {
    /// The size as a short label, `160M`.
    pub size: String,
    pub records: u64,
    pub bytes: u64,
    /// The generator's checksum, which every output matched.
    pub checksum: String,
    /// The sort's `--memory`.
    pub memory_budget_bytes: u64,
    /// Free space of the bench folder's file system before the input was generated.
    pub free_bytes_before: u64,
    /// Floor and sort runs per variant.
    pub runs: usize,
    /// In [`OOC_VARIANTS`] order.
    pub variants: Vec<OocVariantReport>,
    /// io_uring against pwrite, lz4 on against off.
    pub comparisons: Vec<Comparison>,
}

/// One out-of-core variant (medians over the runs).
#[derive(Clone, Debug, Serialize)]
pub struct OocVariantReport {
    /// [`OocVariant::name`].
    pub variant: &'static str,
    /// The sort's flags beyond input, output and `--json`.
    pub sort_flags: String,
    /// The spill engine the floor's writers resolved (`uring` or `pwrite`); the sort resolves
    /// the same way.
    pub io_engine: &'static str,
    /// Median sort time as the job reports it (`wall_ms`).
    pub sort_s: f64,
    /// Median wall time of the `millrace sort` process.
    pub sort_process_s: f64,
    /// Median two-pass floor time.
    pub floor_s: f64,
    pub floor_pass1_s: f64,
    pub floor_pass2_s: f64,
    /// `sort_s / floor_s`.
    pub sort_floor_ratio: f64,
    /// `sort_floor_ratio <= OOC_TARGET_RATIO`.
    pub meets_target: bool,
    /// `bytes / sort_s`, in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Median CPU seconds per GB of the sort.
    pub cpu_s_per_gb: Option<f64>,
    /// Largest peak RSS of the sort process over the runs.
    pub peak_rss_bytes: Option<u64>,
    /// `peak_rss_bytes / memory budget`.
    pub rss_budget_ratio: Option<f64>,
    /// The job's bytes per phase, of the last run.
    pub io: ChildIo,
    /// Median length of each of the job's phases, in seconds, in the job's order.
    pub phases_s: Vec<(String, f64)>,
    /// Every floor run, in order.
    pub floor_runs: Vec<FloorRun>,
    /// Every sort run, in order.
    pub sort_runs: Vec<SortRun>,
    /// The last sort run's `--timeline` file.
    pub timeline: PathBuf,
}

/// One two-pass floor run.
#[derive(Clone, Debug, Serialize)]
pub struct FloorRun {
    pub wall_s: f64,
    /// Input → segment files.
    pub pass1_s: f64,
    /// Segment files → output, fsync and rename included.
    pub pass2_s: f64,
    /// Segments sealed (about `memory / 2` bytes each over all streams).
    pub segments: u64,
    /// Raw bytes written to and read from the segment files.
    pub spill_written_bytes: u64,
    pub spill_read_bytes: u64,
    /// What the segment files took on disk (after lz4, with headers and padding).
    pub spill_file_bytes: u64,
    /// `uring` or `pwrite`.
    pub io_engine: &'static str,
    /// Whether the segment files were written with `O_DIRECT`.
    pub direct: bool,
}

/// Variant `a` against variant `b` (medians).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// What is compared, `io_uring vs pwrite`.
    pub what: String,
    pub a: &'static str,
    pub b: &'static str,
    pub sort_a_s: f64,
    pub sort_b_s: f64,
    /// `(sort_a_s - sort_b_s) / sort_b_s`, in percent.
    pub sort_change_pct: f64,
    pub floor_a_s: f64,
    pub floor_b_s: f64,
    pub floor_change_pct: f64,
    /// Why the comparison means less than it says, if it does.
    pub note: Option<String>,
}

/// One size and format.
#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    /// The size as a short label, `10M`.
    pub size: String,
    /// `binary` or `ascii`.
    pub format: &'static str,
    pub records: u64,
    pub bytes: u64,
    /// The generator's checksum, which every output matched.
    pub checksum: String,
    /// Median floor copy time.
    pub floor_s: f64,
    /// Median sort time as the job reports it (`wall_ms`: open to committed output).
    pub sort_s: f64,
    /// Median wall time of the `millrace sort` process, start to exit.
    pub sort_process_s: f64,
    /// `sort_s / floor_s`.
    pub sort_floor_ratio: f64,
    /// `bytes / sort_s`, in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Median CPU seconds per GB of the sort (instance-independent, unlike wall time).
    pub cpu_s_per_gb: Option<f64>,
    /// Largest peak RSS of the sort process over the runs (mapped input pages included).
    pub peak_rss_bytes: Option<u64>,
    /// Median of Σ phase lengths ÷ wall.
    pub overlap_ratio: f64,
    /// Median time reducers received while maps ran.
    pub map_shuffle_overlap_ms: f64,
    /// Every floor run, in order.
    pub floor_runs_s: Vec<f64>,
    /// Every sort run, in order.
    pub sort_runs: Vec<SortRun>,
    /// GNU sort on the same input: ASCII cases only.
    pub gnu_sort: Option<GnuSort>,
    /// The last sort run's `--timeline` file.
    pub timeline: PathBuf,
}

/// One `millrace sort` run.
#[derive(Clone, Debug, Serialize)]
pub struct SortRun {
    /// The job's own wall time.
    pub wall_s: f64,
    /// The process's wall time, start to exit.
    pub process_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub overlap_ratio: f64,
    pub map_shuffle_overlap_ms: f64,
    pub phases: Vec<ChildPhase>,
    /// `in-memory` or `out-of-core`, when the job reports it.
    pub plan: Option<String>,
    /// Bytes per phase, when the job reports them.
    pub io: Option<ChildIo>,
    /// CPU seconds (user + system) per GB of input, when the job reports it.
    pub cpu_s_per_gb: Option<f64>,
}

/// GNU sort on one ASCII case.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum GnuSort {
    /// It ran and its output was valid.
    Measured {
        /// `sort --version`'s first line.
        version: String,
        /// The command as run.
        command: String,
        /// Process start to exit plus the fsync of its output.
        wall_s: f64,
        /// `wall_s` ÷ the median `millrace sort` process time: both include process start,
        /// exit and a durable output.
        speedup: f64,
    },
    /// It did not run.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One phase of a sort, as `millrace sort --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildPhase {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// The fields of `millrace sort --json` that the bench uses; other fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChildReport {
    pub records: u64,
    pub checksum: String,
    pub wall_ms: f64,
    pub mb_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub phases: Vec<ChildPhase>,
    pub overlap_ratio: f64,
    pub map_shuffle_overlap_ms: f64,
    /// `in-memory` or `out-of-core` (absent in reports of older builds).
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub memory_budget_bytes: Option<u64>,
    #[serde(default)]
    pub io: Option<ChildIo>,
    /// CPU seconds per GB of input (absent in reports of older builds).
    #[serde(default)]
    pub cpu_s_per_gb: Option<f64>,
}

/// `io` of `millrace sort --json`: bytes each phase read and wrote.
pub type ChildIo = engine::terasort::IoSummary;

impl ChildReport {
    /// Parses the JSON printed by `millrace sort --json`.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// What the report says about the machine.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `available_parallelism`.
    pub cores: usize,
    /// `/proc/cpuinfo` "model name".
    pub cpu: Option<String>,
    /// `/proc/meminfo` MemTotal.
    pub mem_total_bytes: Option<u64>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// File system type of the bench folder, from `/proc/self/mountinfo`.
    pub dir_fs: Option<String>,
}

impl Machine {
    /// Looks at this machine; every source is optional (non-Linux systems lack `/proc`).
    pub fn detect(dir: &Path) -> Self {
        let read = |path: &str| fs::read_to_string(path).ok();
        Self {
            cores: cores(),
            cpu: read("/proc/cpuinfo").and_then(|s| cpu_model(&s)),
            mem_total_bytes: read("/proc/meminfo").and_then(|s| mem_total_bytes(&s)),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            dir_fs: fs::canonicalize(dir)
                .ok()
                .and_then(|dir| fs_type(&read("/proc/self/mountinfo")?, &dir)),
        }
    }

    /// One line: `2 cores (AMD EPYC 7B13), 23.4 GiB RAM, Linux 6.1.0, bench folder on ext4`.
    pub fn describe(&self) -> String {
        let mut line = format!("{} cores", self.cores);
        if let Some(cpu) = &self.cpu {
            line += &format!(" ({cpu})");
        }
        if let Some(bytes) = self.mem_total_bytes {
            line += &format!(", {:.1} GiB RAM", bytes as f64 / (1u64 << 30) as f64);
        }
        if let Some(kernel) = &self.kernel {
            line += &format!(", Linux {kernel}");
        }
        if let Some(fs) = &self.dir_fs {
            line += &format!(", bench folder on {fs}");
        }
        line
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The first "model name" of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// MemTotal of `/proc/meminfo`, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The file system type of the mount holding `path` (absolute, canonical), from the text of
/// `/proc/self/mountinfo`: the longest mount point that is a prefix of `path`, the last one
/// when mounts are stacked.
fn fs_type(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // "36 35 98:0 /root /mount/point opts [optional fields...] - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount_point), Some(fs)) = (left.split(' ').nth(4), right.split(' ').next())
        else {
            continue;
        };
        let mount_point = unescape_mountinfo(mount_point);
        let depth = Path::new(&mount_point).components().count();
        if !path.starts_with(&mount_point) {
            continue;
        }
        // `>=`: a later mount on the same point hides the earlier one.
        match &best {
            Some((best_depth, _)) if depth < *best_depth => {}
            _ => best = Some((depth, fs.to_owned())),
        }
    }
    best.map(|(_, fs)| fs)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CPU s/GB cell: two decimals, or a dash when the sort did not report it.
fn cpu(value: Option<f64>) -> String {
    value.map_or("—".to_owned(), |v| format!("{v:.2}"))
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A record count as the CLI spells it: `10M`, `2G`, `1500k`, `1234`.
pub fn size_label(records: u64) -> String {
    for (divisor, suffix) in [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")] {
        // Not `is_multiple_of`: that needs Rust 1.87 and the workspace supports 1.80.
        let remainder = records % divisor;
        if records >= divisor && remainder == 0 {
            return format!("{}{suffix}", records / divisor);
        }
    }
    records.to_string()
}

/// `12345678` → `12,345,678`.
fn thousands(n: u64) -> String {
    let mut groups = vec![n % 1000];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(rest % 1000);
        rest /= 1000;
    }
    let mut out = groups.pop().map_or(String::new(), |g| g.to_string());
    for group in groups.iter().rev() {
        out += &format!(",{group:03}");
    }
    out
}

impl BenchReport {
    /// The report as Markdown: the machine line, the table, and what the columns mean.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("machine: {}\n", self.machine.describe());
        if let Some(commit) = &self.commit {
            out += &format!("commit: {commit}\n");
        }
        out += &format!("runs per case: {} (medians; GNU sort once)\n\n", self.runs);
        out += "| case | records | floor s | sort s | sort/floor | MB/s | CPU s/GB | peak RSS MiB | overlap | sort process s | GNU sort s | GNU/millrace |\n";
        out += "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        for case in &self.cases {
            let (gnu_s, speedup) = match &case.gnu_sort {
                None => ("—".to_owned(), "—".to_owned()),
                Some(GnuSort::Measured {
                    wall_s, speedup, ..
                }) => (format!("{wall_s:.2}"), format!("{speedup:.1}×")),
                Some(GnuSort::Skipped { .. }) => ("skipped".to_owned(), "—".to_owned()),
            };
            let rss = case.peak_rss_bytes.map_or("—".to_owned(), |b| {
                format!("{:.0}", b as f64 / (1u64 << 20) as f64)
            });
            out += &format!(
                "| {} {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {rss} | {:.2} | {:.2} | {gnu_s} | {speedup} |\n",
                case.size,
                case.format,
                thousands(case.records),
                case.floor_s,
                case.sort_s,
                case.sort_floor_ratio,
                case.mb_per_s,
                cpu(case.cpu_s_per_gb),
                case.overlap_ratio,
                case.sort_process_s,
            );
        }
        out +=
            "\nfloor = copy through the sort's I/O path (durable); sort s = the job's wall time; \
                peak RSS includes mapped input pages; overlap = Σ phase lengths ÷ wall; \
                GNU/millrace = GNU sort (process + fsync) ÷ millrace sort process s\n";
        for case in &self.cases {
            if let Some(GnuSort::Skipped { reason }) = &case.gnu_sort {
                out += &format!(
                    "GNU sort skipped for {} {}: {reason}\n",
                    case.size, case.format
                );
            }
        }
        if let Some(ooc) = &self.out_of_core {
            out += "\n";
            out += &ooc.to_markdown();
        }
        out
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("the report holds only strings, numbers and paths, which always serialize")
    }
}

/// `bytes` in GB (10^9), two decimals.
fn gb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e9)
}

/// `bytes` in MiB, no decimals.
fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1u64 << 20) as f64)
}

/// `(a - b) / b` in percent, signed.
fn change_pct(a: f64, b: f64) -> f64 {
    (a - b) / b * 100.0
}

impl OutOfCoreReport {
    /// The out-of-core section of the Markdown report: one table of results, one of where
    /// the time and the bytes went, and the comparisons.
    pub fn to_markdown(&self) -> String {
        let budget_mib = mib(self.memory_budget_bytes);
        let mut out = format!(
            "out-of-core: {} records ({:.1} GB) under --memory {budget_mib} MiB; runs per variant: {} \
             (medians); target sort/floor ≤ {OOC_TARGET_RATIO:.2}×\n\n",
            thousands(self.records),
            self.bytes as f64 / 1e9,
            self.runs,
        );
        out += &format!(
            "| variant | sort flags | spill io | sort s | floor s | sort/floor | MB/s | CPU s/GB | peak RSS MiB (budget {budget_mib}) | reads/byte | writes/byte | spill written / read GB | runs |\n"
        );
        out += "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        for v in &self.variants {
            let target = if v.meets_target { "✓" } else { "✗" };
            let rss = match (v.peak_rss_bytes, v.rss_budget_ratio) {
                (Some(bytes), Some(ratio)) => {
                    let flag = if ratio > 1.0 + RSS_TOLERANCE {
                        " ⚠"
                    } else {
                        ""
                    };
                    format!("{} ({:.0}%){flag}", mib(bytes), ratio * 100.0)
                }
                _ => "—".to_owned(),
            };
            out += &format!(
                "| {} | `{}` | {} | {:.2} | {:.2} | {:.2} {target} | {:.0} | {} | {rss} | {:.2} | {:.2} | {} / {} | {} |\n",
                v.variant,
                v.sort_flags,
                v.io_engine,
                v.sort_s,
                v.floor_s,
                v.sort_floor_ratio,
                v.mb_per_s,
                cpu(v.cpu_s_per_gb),
                v.io.reads_per_byte,
                v.io.writes_per_byte,
                gb(v.io.spill_written_bytes),
                gb(v.io.spill_read_bytes),
                v.io.spilled_runs,
            );
        }
        out += "\n| variant | sample s | map s | shuffle s | sort+write s | commit s | floor pass 1 s | floor pass 2 s | input read GB | map-spilled GB | output written GB | floor spill on disk GB |\n";
        out += "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        for v in &self.variants {
            let phase = |name: &str| {
                v.phases_s
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("—".to_owned(), |(_, s)| format!("{s:.2}"))
            };
            let on_disk = v
                .floor_runs
                .last()
                .map_or("—".to_owned(), |f| gb(f.spill_file_bytes));
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {on_disk} |\n",
                v.variant,
                phase("sample"),
                phase("map"),
                phase("shuffle"),
                phase("sort+write"),
                phase("commit"),
                v.floor_pass1_s,
                v.floor_pass2_s,
                gb(v.io.input_read_bytes),
                gb(v.io.hybrid_spilled_bytes),
                gb(v.io.output_written_bytes),
            );
        }
        out += "\n";
        for c in &self.comparisons {
            out += &format!(
                "{} ({} vs {}): sort {:.2} s vs {:.2} s ({:+.1}%), floor {:.2} s vs {:.2} s ({:+.1}%)",
                c.what,
                c.a,
                c.b,
                c.sort_a_s,
                c.sort_b_s,
                c.sort_change_pct,
                c.floor_a_s,
                c.floor_b_s,
                c.floor_change_pct
            );
            if let Some(note) = &c.note {
                out += &format!("; {note}");
            }
            out += "\n";
        }
        out += "\nfloor = the input written to segment files and read back into the output with \
                the variant's spill engine and compression (write + read + write + read, durable); \
                sort s = the job's wall time; phases overlap (map and shuffle run together); \
                reads/writes per byte, spill bytes (raw) and runs as the job counts them; \
                map-spilled = buffers maps spilled for busy reducers (hybrid exchange, part of \
                spill written); \
                ⚠ = peak RSS more than 15% above the budget\n";
        out
    }
}

/// io_uring against pwrite and lz4 on against off, from the variants that ran.
fn comparisons(variants: &[OocVariantReport]) -> Vec<Comparison> {
    let find = |name: &str| variants.iter().find(|v| v.variant == name);
    let mut out = Vec::new();
    let mut compare = |what: &str, a: &OocVariantReport, b: &OocVariantReport, note| {
        out.push(Comparison {
            what: what.to_owned(),
            a: a.variant,
            b: b.variant,
            sort_a_s: a.sort_s,
            sort_b_s: b.sort_s,
            sort_change_pct: change_pct(a.sort_s, b.sort_s),
            floor_a_s: a.floor_s,
            floor_b_s: b.floor_s,
            floor_change_pct: change_pct(a.floor_s, b.floor_s),
            note,
        })
    };
    if let (Some(a), Some(b)) = (find("default"), find("pwrite")) {
        let note = (a.io_engine != "uring").then(|| {
            format!(
                "the default resolved to {} (io_uring is not available here), so this compares \
                 pwrite with itself",
                a.io_engine
            )
        });
        compare("io_uring vs pwrite", a, b, note);
    }
    if let (Some(a), Some(b)) = (find("lz4"), find("no-lz4")) {
        compare("lz4 on vs off", a, b, None);
    }
    out
}

/// The bench's private folder `<dir>/run-<pid>`: dropping it deletes everything in it except
/// the inputs marked kept, then the folder itself if empty.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    kept: Vec<PathBuf>,
    /// `--dir` when this bench created it: removed too if it ends up empty.
    created_dir: Option<PathBuf>,
    _interrupt_guard: engine::cleanup::TempGuard,
}

impl WorkDir {
    fn create(dir: &Path) -> Result<Self, BenchError> {
        let created_dir = (!dir.exists()).then(|| dir.to_path_buf());
        fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            op: "create the bench folder",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("run-{}", std::process::id()));
        fs::create_dir(&path).map_err(|source| BenchError::Io {
            op: "create the bench work folder",
            path: path.clone(),
            source,
        })?;
        let guard = engine::cleanup::register(&path);
        Ok(Self {
            path,
            kept: Vec::new(),
            created_dir,
            _interrupt_guard: guard,
        })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn keep(&mut self, path: &Path) {
        self.kept.push(path.to_path_buf());
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if self.kept.contains(&path) {
                continue;
            }
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            if let Err(error) = removed {
                tracing::warn!(path = %path.display(), %error, "cannot remove bench data");
            }
        }
        // Both fail, as they should, when something is still inside (kept inputs, a report).
        let _ = fs::remove_dir(&self.path);
        if let Some(dir) = &self.created_dir {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Removes a file the bench created, ignoring one that is already gone.
fn remove(path: &Path) -> Result<(), BenchError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(BenchError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

/// Runs the bench and writes `<dir>/bench-report.json`; `progress` gets one short line per
/// step.
pub fn run(config: &BenchConfig, progress: &dyn Fn(&str)) -> Result<BenchReport, BenchError> {
    config.check()?;
    // The report's name must be usable before minutes are spent (checked again at the end).
    let report_path = config.dir.join("bench-report.json");
    if config.dir.is_dir() {
        let report = paths::Write::new("bench report", &report_path, paths::OutputKind::File);
        paths::check(&[], &[report], true).map_err(|source| BenchError::Output {
            source: Box::new(source),
        })?;
    }
    // Now, with the binary: a long bench may outlive the commit it measures.
    let commit = git_commit();
    let mut work = WorkDir::create(&config.dir)?;
    // Every sort runs this copy: a build that replaces the binary while the bench runs (a
    // shared target folder) would otherwise mix two versions in one report.
    let exe = work.file("millrace");
    fs::copy(&config.millrace_exe, &exe).map_err(|source| BenchError::Io {
        op: "copy the millrace binary to",
        path: exe.clone(),
        source,
    })?;
    let config = &BenchConfig {
        millrace_exe: exe,
        ..config.clone()
    };
    if let Some(ooc) = &config.out_of_core {
        // Fail before spending minutes on the other cases.
        check_free_space(&work.path, ooc)?;
    }
    // In memory, one case at a time holds its input, the floor's copy and the sort's output.
    if let Some(&largest) = config.records.iter().max() {
        let needed_bytes = largest.saturating_mul(3 * RECORD_LEN as u64);
        let available_bytes = free_bytes(&work.path)?;
        if available_bytes < needed_bytes {
            return Err(BenchError::NoSpace {
                dir: work.path.clone(),
                what: format!(
                    "the {largest}-record case (input, floor copy and sort output at once)"
                ),
                needed_bytes,
                available_bytes,
            });
        }
    }
    let gnu = if config.ascii {
        gnu_sort_version()
    } else {
        Err("no ASCII cases".to_owned())
    };
    let mut cases = Vec::new();
    let mut timelines = Vec::new();
    for &records in &config.records {
        let formats: &[Format] = if config.ascii {
            &[Format::Binary, Format::Ascii]
        } else {
            &[Format::Binary]
        };
        for &format in formats {
            let (case, timeline) = run_case(config, &mut work, records, format, &gnu, progress)?;
            timelines.push((timeline, case.timeline.clone()));
            cases.push(case);
        }
    }
    let out_of_core = match &config.out_of_core {
        None => None,
        Some(ooc) => {
            let report = run_out_of_core(config, ooc, &mut work, progress)?;
            timelines.extend(report.variants.iter().map(|v| {
                (
                    work.file(&format!("{}-ooc-{}.timeline.json", report.size, v.variant)),
                    v.timeline.clone(),
                )
            }));
            Some(report)
        }
    };
    let report = BenchReport {
        machine: Machine::detect(&config.dir),
        commit,
        unix_time_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        runs: config.runs,
        cases,
        out_of_core,
    };
    // The bench replaces its own earlier reports in its folder, but never writes through a
    // link or into a device or FIFO that stands under one of their names.
    let path = config.dir.join("bench-report.json");
    let mut outputs: Vec<paths::Write> = timelines
        .iter()
        .map(|(_, to)| paths::Write::new("bench timeline", to, paths::OutputKind::File))
        .collect();
    outputs.push(paths::Write::new(
        "bench report",
        &path,
        paths::OutputKind::File,
    ));
    paths::check(&[], &outputs, true).map_err(|source| BenchError::Output {
        source: Box::new(source),
    })?;
    for (from, to) in &timelines {
        fs::rename(from, to).map_err(|source| BenchError::Io {
            op: "move the sort timeline to",
            path: to.clone(),
            source,
        })?;
    }
    engine::output::PendingFile::with_bytes(
        &path,
        "bench report",
        true,
        (report.to_json() + "\n").as_bytes(),
    )
    .and_then(engine::output::PendingFile::publish)
    .map_err(|source| BenchError::Report {
        path: path.clone(),
        source,
    })?;
    progress(&format!("report written to {}", path.display()));
    if config.keep {
        progress(&format!("inputs kept in {}", work.path.display()));
    }
    Ok(report)
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Binary => "binary",
        Format::Ascii => "ascii",
    }
}

fn run_case(
    config: &BenchConfig,
    work: &mut WorkDir,
    records: u64,
    format: Format,
    gnu: &Result<String, String>,
    progress: &dyn Fn(&str),
) -> Result<(CaseReport, PathBuf), BenchError> {
    let size = size_label(records);
    let format_name = format_name(format);
    let case = format!("{size} {format_name}");
    let stem = format!("{size}-{format_name}");
    let input = work.file(&format!("{stem}.in"));
    let bytes = records * RECORD_LEN as u64;

    progress(&format!(
        "generating {case} ({:.1} GB)…",
        bytes as f64 / 1e9
    ));
    let spec = GenSpec {
        format,
        skew: false,
        start: 0,
        records,
    };
    let generated = gensort::generate_to_file(&spec, &input, &|_| {}).map_err(|source| {
        BenchError::Generate {
            path: input.clone(),
            source,
        }
    })?;
    if config.keep {
        work.keep(&input);
    }
    progress(&format!("warming the page cache with {case}…"));
    warm(&input)?;

    // Written in the work folder and moved next to the report when the whole bench succeeds,
    // so a failed bench leaves no timeline that no report describes.
    let work_timeline = work.file(&format!("{stem}.timeline.json"));
    let timeline = config.dir.join(format!("bench-timeline-{stem}.json"));
    let mut floor_runs_s = Vec::with_capacity(config.runs);
    let mut sort_runs = Vec::with_capacity(config.runs);
    for run in 1..=config.runs {
        let out = work.file(&format!("{stem}.floor.out"));
        let copied =
            engine::floor::copy_file(&input, &out, IoMode::Auto, cores(), FLOOR_CHUNK_BYTES)
                .map_err(|source| BenchError::Floor {
                    input: input.clone(),
                    source,
                });
        remove(&out)?;
        let floor_s = copied?.wall.as_secs_f64();
        progress(&format!(
            "floor {run}/{} {case}: {floor_s:.2} s",
            config.runs
        ));
        floor_runs_s.push(floor_s);

        let out = work.file(&format!("{stem}.sort.out"));
        let sorted = sort_once(config, &input, &out, &work_timeline, &[], &generated);
        remove(&out)?;
        let sorted = sorted?;
        progress(&format!(
            "sort {run}/{} {case}: {:.2} s (process {:.2} s), output valid",
            config.runs, sorted.wall_s, sorted.process_s
        ));
        sort_runs.push(sorted);
    }

    let floor_s = median(&floor_runs_s).expect("runs >= 1, checked by BenchConfig::check");
    let of_runs = |f: fn(&SortRun) -> f64| {
        median(&sort_runs.iter().map(f).collect::<Vec<_>>())
            .expect("runs >= 1, checked by BenchConfig::check")
    };
    let sort_s = of_runs(|r| r.wall_s);
    let sort_process_s = of_runs(|r| r.process_s);

    let gnu_sort = match (format, gnu) {
        (Format::Binary, _) => None,
        (Format::Ascii, Err(reason)) => Some(GnuSort::Skipped {
            reason: reason.clone(),
        }),
        (Format::Ascii, Ok(version)) => {
            progress(&format!("GNU sort {case}…"));
            let out = work.file(&format!("{stem}.gnu.out"));
            let measured = gnu_sort_once(&input, &out, &generated);
            remove(&out)?;
            let (command, wall_s) = measured?;
            progress(&format!("GNU sort {case}: {wall_s:.2} s, output valid"));
            Some(GnuSort::Measured {
                version: version.clone(),
                command,
                wall_s,
                speedup: wall_s / sort_process_s,
            })
        }
    };

    if !config.keep {
        remove(&input)?;
    }
    let report = CaseReport {
        size,
        format: format_name,
        records,
        bytes,
        checksum: generated.sum_hex(),
        floor_s,
        sort_s,
        sort_process_s,
        sort_floor_ratio: sort_s / floor_s,
        mb_per_s: bytes as f64 / sort_s / 1e6,
        cpu_s_per_gb: median(
            &sort_runs
                .iter()
                .filter_map(|r| r.cpu_s_per_gb)
                .collect::<Vec<_>>(),
        ),
        peak_rss_bytes: sort_runs.iter().filter_map(|r| r.peak_rss_bytes).max(),
        overlap_ratio: of_runs(|r| r.overlap_ratio),
        map_shuffle_overlap_ms: of_runs(|r| r.map_shuffle_overlap_ms),
        floor_runs_s,
        sort_runs,
        gnu_sort,
        timeline,
    };
    Ok((report, work_timeline))
}

/// The out-of-core case: generate, then per run every variant's two-pass floor and sort.
fn run_out_of_core(
    config: &BenchConfig,
    ooc: &OutOfCoreConfig,
    work: &mut WorkDir,
    progress: &dyn Fn(&str),
) -> Result<OutOfCoreReport, BenchError> {
    let size = size_label(ooc.records);
    let stem = format!("{size}-ooc");
    let input = work.file(&format!("{stem}.in"));
    let spill_dir = work.file("spill");
    let bytes = ooc.bytes();
    let free_bytes_before = check_free_space(&work.path, ooc)?;
    fs::create_dir_all(&spill_dir).map_err(|source| BenchError::Io {
        op: "create the spill folder",
        path: spill_dir.clone(),
        source,
    })?;
    progress(&format!(
        "generating {stem} ({:.1} GB; {:.1} GB free)…",
        bytes as f64 / 1e9,
        free_bytes_before as f64 / 1e9
    ));
    let spec = GenSpec {
        format: Format::Binary,
        skew: false,
        start: 0,
        records: ooc.records,
    };
    let generated = gensort::generate_to_file(&spec, &input, &|_| {}).map_err(|source| {
        BenchError::Generate {
            path: input.clone(),
            source,
        }
    })?;
    if config.keep {
        work.keep(&input);
    }
    // The generator leaves gigabytes of dirty pages; flush them now, or their writeback
    // would slow down whichever variant runs first.
    File::open(&input)
        .and_then(|f| f.sync_all())
        .map_err(|source| BenchError::Io {
            op: "fsync",
            path: input.clone(),
            source,
        })?;
    let memory = ooc.memory_bytes.to_string();
    let spill = spill_dir.to_string_lossy().into_owned();
    let mut floors: Vec<Vec<FloorRun>> = vec![Vec::new(); OOC_VARIANTS.len()];
    let mut sorts: Vec<Vec<SortRun>> = vec![Vec::new(); OOC_VARIANTS.len()];
    for run in 1..=config.runs {
        for i in rotated(OOC_VARIANTS.len(), run - 1) {
            let variant = &OOC_VARIANTS[i];
            let name = variant.name;
            let out = work.file(&format!("{stem}.floor.out"));
            let floor = engine::floor::two_pass_floor(
                &input,
                &spill_dir,
                &out,
                ooc.memory_bytes,
                variant.spill_io,
                variant.compression,
            )
            .map_err(|source| BenchError::Floor {
                input: input.clone(),
                source,
            });
            remove(&out)?;
            let floor = floor?;
            let floor = FloorRun {
                wall_s: floor.wall.as_secs_f64(),
                pass1_s: floor.pass1.as_secs_f64(),
                pass2_s: floor.pass2.as_secs_f64(),
                segments: floor.segments,
                spill_written_bytes: floor.spill_written_bytes,
                spill_read_bytes: floor.spill_read_bytes,
                spill_file_bytes: floor.spill_file_bytes,
                io_engine: match floor.io_engine {
                    IoEngine::Uring => "uring",
                    _ => "pwrite",
                },
                direct: floor.direct,
            };
            progress(&format!(
                "two-pass floor {run}/{} {stem} {name}: {:.2} s (pass 1 {:.2} s, pass 2 {:.2} s; \
                 {}, {} GB on disk for {} GB)",
                config.runs,
                floor.wall_s,
                floor.pass1_s,
                floor.pass2_s,
                floor.io_engine,
                gb(floor.spill_file_bytes),
                gb(floor.spill_written_bytes),
            ));
            floors[i].push(floor);

            let out = work.file(&format!("{stem}.sort.out"));
            let timeline = work.file(&format!("{stem}-{name}.timeline.json"));
            let mut flags = vec!["--memory", memory.as_str(), "--spill-dir", spill.as_str()];
            flags.extend(variant.sort_flags());
            let sorted = sort_once(config, &input, &out, &timeline, &flags, &generated);
            remove(&out)?;
            remove_leftovers(&spill_dir, progress)?;
            let sorted = sorted?;
            if sorted.plan.as_deref() != Some("out-of-core") {
                return Err(BenchError::WrongPlan {
                    input,
                    plan: sorted.plan.unwrap_or_else(|| "unreported".to_owned()),
                });
            }
            let rss = sorted.peak_rss_bytes.map_or("unknown".to_owned(), mib);
            progress(&format!(
                "sort {run}/{} {stem} {name}: {:.2} s (process {:.2} s), peak RSS {rss} MiB, \
                 {} runs, output valid",
                config.runs,
                sorted.wall_s,
                sorted.process_s,
                sorted.io.map_or(0, |io| io.spilled_runs),
            ));
            if let Some(peak) = sorted.peak_rss_bytes {
                if peak as f64 > ooc.memory_bytes as f64 * (1.0 + RSS_TOLERANCE) {
                    progress(&format!(
                        "  note: peak RSS {} MiB is more than {:.0}% above the {} MiB budget",
                        mib(peak),
                        RSS_TOLERANCE * 100.0,
                        mib(ooc.memory_bytes)
                    ));
                }
            }
            sorts[i].push(sorted);
        }
    }
    if !config.keep {
        remove(&input)?;
    }
    let variants: Vec<OocVariantReport> = OOC_VARIANTS
        .iter()
        .zip(floors.into_iter().zip(sorts))
        .map(|(variant, (floor_runs, sort_runs))| {
            let mut flags = vec![
                "--memory".to_owned(),
                ooc.memory_bytes.to_string(),
                "--spill-dir".to_owned(),
                "DIR".to_owned(),
            ];
            flags.extend(variant.sort_flags().map(str::to_owned));
            variant_report(
                variant,
                flags.join(" "),
                bytes,
                ooc.memory_bytes,
                floor_runs,
                sort_runs,
                config
                    .dir
                    .join(format!("bench-timeline-{stem}-{}.json", variant.name)),
            )
        })
        .collect();
    Ok(OutOfCoreReport {
        size,
        records: ooc.records,
        bytes,
        checksum: generated.sum_hex(),
        memory_budget_bytes: ooc.memory_bytes,
        free_bytes_before,
        runs: config.runs,
        comparisons: comparisons(&variants),
        variants,
    })
}

/// `0..n` starting at `by % n`: run `r` starts with variant `r`, so that over `n` runs each
/// variant goes first once (the first after generating measured up to 20% slower).
fn rotated(n: usize, by: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + by) % n)
}

/// Medians and maxima of one variant's runs (at least one of each).
fn variant_report(
    variant: &OocVariant,
    sort_flags: String,
    bytes: u64,
    memory_bytes: u64,
    floor_runs: Vec<FloorRun>,
    sort_runs: Vec<SortRun>,
    timeline: PathBuf,
) -> OocVariantReport {
    let med = |values: Vec<f64>| median(&values).unwrap_or(f64::NAN);
    let floor_s = med(floor_runs.iter().map(|f| f.wall_s).collect());
    let sort_s = med(sort_runs.iter().map(|r| r.wall_s).collect());
    let sort_floor_ratio = sort_s / floor_s;
    let peak_rss_bytes = sort_runs.iter().filter_map(|r| r.peak_rss_bytes).max();
    // Phase names in the job's order, as the first run reports them.
    let phases_s = sort_runs
        .first()
        .map(|r| &r.phases)
        .into_iter()
        .flatten()
        .map(|phase| {
            let lengths = sort_runs
                .iter()
                .flat_map(|r| r.phases.iter().filter(|p| p.name == phase.name))
                .map(|p| (p.end_ms - p.start_ms) / 1e3)
                .collect();
            (phase.name.clone(), med(lengths))
        })
        .collect();
    OocVariantReport {
        variant: variant.name,
        sort_flags,
        io_engine: floor_runs.last().map_or("unknown", |f| f.io_engine),
        sort_s,
        sort_process_s: med(sort_runs.iter().map(|r| r.process_s).collect()),
        floor_s,
        floor_pass1_s: med(floor_runs.iter().map(|f| f.pass1_s).collect()),
        floor_pass2_s: med(floor_runs.iter().map(|f| f.pass2_s).collect()),
        sort_floor_ratio,
        meets_target: sort_floor_ratio <= OOC_TARGET_RATIO,
        mb_per_s: bytes as f64 / sort_s / 1e6,
        cpu_s_per_gb: median(
            &sort_runs
                .iter()
                .filter_map(|r| r.cpu_s_per_gb)
                .collect::<Vec<_>>(),
        ),
        peak_rss_bytes,
        rss_budget_ratio: peak_rss_bytes.map(|b| b as f64 / memory_bytes as f64),
        io: sort_runs.last().and_then(|r| r.io).unwrap_or_default(),
        phases_s,
        floor_runs,
        sort_runs,
        timeline,
    }
}

/// Removes what a finished sort left in the spill folder (nothing, unless it leaked), so the
/// next run has the space; says so when there was something.
fn remove_leftovers(spill_dir: &Path, progress: &dyn Fn(&str)) -> Result<(), BenchError> {
    let io_error = |source| BenchError::Io {
        op: "clean the spill folder",
        path: spill_dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(spill_dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        progress(&format!(
            "  note: the sort left {} in its spill folder; removing it",
            path.display()
        ));
        fs::remove_dir_all(&path)
            .or_else(|_| fs::remove_file(&path))
            .map_err(io_error)?;
    }
    Ok(())
}

/// Checks that the file system of `dir` has room for the out-of-core case; returns the free
/// bytes.
fn check_free_space(dir: &Path, ooc: &OutOfCoreConfig) -> Result<u64, BenchError> {
    let available_bytes = free_bytes(dir)?;
    let needed_bytes = ooc.needed_bytes();
    if available_bytes < needed_bytes {
        return Err(BenchError::NoSpace {
            dir: dir.to_path_buf(),
            what: format!(
                "the out-of-core case ({:.1} GB of input, spill and output at once, plus 10%)",
                ooc.bytes() as f64 / 1e9
            ),
            needed_bytes,
            available_bytes,
        });
    }
    Ok(available_bytes)
}

/// Bytes available to this user on the file system of `dir`, from `df -P -k`.
fn free_bytes(dir: &Path) -> Result<u64, BenchError> {
    let failed = |reason: String| BenchError::FreeSpace {
        dir: dir.to_path_buf(),
        reason,
    };
    let out = Command::new("df")
        .args(["-P", "-k"])
        .arg(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run df: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "df failed ({}): {}",
            out.status,
            tail(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    df_available_bytes(&text).ok_or_else(|| failed(format!("unexpected output {text:?}")))
}

/// The "Available" column of `df -P -k` output (1024-byte blocks), in bytes.
fn df_available_bytes(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    let header = lines.next()?;
    if !header.split_whitespace().any(|h| h.starts_with("Avail")) {
        return None;
    }
    // "Filesystem 1024-blocks Used Available Capacity Mounted on"; the file system name may
    // contain spaces, so count from the end: capacity ends in '%' and precedes the mount point.
    // So: the first "N%" (or "-") preceded by three numbers.
    let line = lines.next()?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let number = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
    let capacity = (3..fields.len()).find(|&i| {
        (fields[i] == "-" || fields[i].strip_suffix('%').is_some_and(number))
            && fields[i - 3..i].iter().all(|f| number(f))
    })?;
    let kib: u64 = fields[capacity - 1].parse().ok()?;
    kib.checked_mul(1024)
}

/// Reads `path` once, so that the runs start with the input in the page cache.
fn warm(path: &Path) -> Result<(), BenchError> {
    let io_error = |source| BenchError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut buffer = vec![0u8; WARM_READ_BYTES];
    while file.read(&mut buffer).map_err(io_error)? > 0 {}
    Ok(())
}

/// Runs `millrace sort` once as a child process, with `flags` after the usual ones, and
/// checks its output.
fn sort_once(
    config: &BenchConfig,
    input: &Path,
    out: &Path,
    timeline: &Path,
    flags: &[&str],
    generated: &Checksum,
) -> Result<SortRun, BenchError> {
    const TOOL: &str = "millrace sort";
    let started = Instant::now();
    let child = Command::new(&config.millrace_exe)
        .arg("sort")
        .arg(input)
        .arg(out)
        .arg("--force")
        .arg("--json")
        .arg("--timeline")
        .arg(timeline)
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            program: config.millrace_exe.clone(),
            source,
        })?;
    let process_s = started.elapsed().as_secs_f64();
    if !child.status.success() {
        return Err(BenchError::ChildFailed {
            tool: TOOL,
            input: input.to_path_buf(),
            status: child.status.to_string(),
            stderr_tail: tail(&child.stderr),
        });
    }
    let report = ChildReport::parse(&child.stdout).map_err(|source| BenchError::ChildReport {
        input: input.to_path_buf(),
        stdout_head: String::from_utf8_lossy(&child.stdout[..child.stdout.len().min(200)])
            .into_owned(),
        source,
    })?;
    if report.records != generated.records || report.checksum != generated.sum_hex() {
        return Err(BenchError::WrongOutput {
            tool: TOOL,
            path: out.to_path_buf(),
            what: format!(
                "the job reports {} records with checksum {}, the generator made {} with {}",
                report.records, report.checksum, generated.records, generated
            ),
        });
    }
    check_output(TOOL, out, generated)?;
    Ok(SortRun {
        wall_s: report.wall_ms / 1e3,
        process_s,
        peak_rss_bytes: report.peak_rss_bytes,
        overlap_ratio: report.overlap_ratio,
        map_shuffle_overlap_ms: report.map_shuffle_overlap_ms,
        phases: report.phases,
        plan: report.plan,
        io: report.io,
        cpu_s_per_gb: report.cpu_s_per_gb,
    })
}

/// The first line of `sort --version` if it is GNU sort, else why GNU sort is skipped.
fn gnu_sort_version() -> Result<String, String> {
    match Command::new("sort")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("sort is not installed".to_owned()),
        Err(e) => Err(format!("cannot run sort --version: {e}")),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next().unwrap_or("").trim().to_owned();
            if out.status.success() && first.contains("GNU coreutils") {
                Ok(first)
            } else {
                Err(format!("sort is not GNU sort ({first:?})"))
            }
        }
    }
}

/// Runs GNU sort once on an ASCII input, makes its output durable, checks it; returns the
/// command and the seconds it took.
fn gnu_sort_once(
    input: &Path,
    out: &Path,
    generated: &Checksum,
) -> Result<(String, f64), BenchError> {
    const TOOL: &str = "GNU sort";
    let parallel = format!("--parallel={}", cores());
    let mut command = Command::new("sort");
    command
        .env("LC_ALL", "C")
        .args([parallel.as_str(), "-S", "50%", "-o"])
        .arg(out)
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let shown = format!(
        "LC_ALL=C sort {parallel} -S 50% -o {} {}",
        out.display(),
        input.display()
    );
    let started = Instant::now();
    let child = command.output().map_err(|source| BenchError::Spawn {
        program: PathBuf::from("sort"),
        source,
    })?;
    if !child.status.success() {
        return Err(BenchError::ChildFailed {
            tool: TOOL,
            input: input.to_path_buf(),
            status: child.status.to_string(),
            stderr_tail: tail(&child.stderr),
        });
    }
    File::open(out)
        .and_then(|f| f.sync_all())
        .map_err(|source| BenchError::Io {
            op: "fsync",
            path: out.to_path_buf(),
            source,
        })?;
    let wall: Duration = started.elapsed();
    check_output(TOOL, out, generated)?;
    Ok((shown, wall.as_secs_f64()))
}

/// Validates `out`: sorted by key, and the generated records (count and checksum).
fn check_output(tool: &'static str, out: &Path, generated: &Checksum) -> Result<(), BenchError> {
    let summary = valsort::validate_path(out, &|_| {})
        .map_err(|source| BenchError::Validate { tool, source })?;
    let wrong = |what: String| BenchError::WrongOutput {
        tool,
        path: out.to_path_buf(),
        what,
    };
    if !summary.is_ordered() {
        return Err(wrong(format!(
            "{} records out of order, the first at index {}",
            summary.unordered, summary.first_unordered
        )));
    }
    let found = summary.to_checksum();
    if found != *generated {
        return Err(wrong(format!(
            "{} records with checksum {found}, the generator made {} with {generated}",
            found.records, generated.records
        )));
    }
    Ok(())
}

/// The last lines of a child's stderr, for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    if tail.is_empty() {
        "(nothing)".to_owned()
    } else {
        tail
    }
}

/// The working directory's commit, `+dirty` if tracked files changed; `None` outside git.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { commit + "+dirty" } else { commit })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `millrace sort --json` on 10k records.
    const CHILD_JSON: &str = r#"{
        "backpressure_ms": 0.0,
        "bytes": 1000000,
        "checksum": "1392d240ca76",
        "input": "in.dat",
        "map_shuffle_overlap_ms": 0.25,
        "maps": 2,
        "mb_per_s": 159.79546180888462,
        "mode": "pipelined",
        "output": "out.dat",
        "overlap_ratio": 0.9240971556407798,
        "peak_rss_bytes": 6897664,
        "phases": [
            {"end_ms": 0.917, "name": "map", "start_ms": 0.555},
            {"end_ms": 6.258, "name": "commit", "start_ms": 4.119}
        ],
        "records": 10000,
        "reducers": 2,
        "wall_ms": 6.258
    }"#;

    #[test]
    fn child_report_parses_and_ignores_other_fields() {
        let report = ChildReport::parse(CHILD_JSON.as_bytes()).unwrap();
        assert_eq!(report.records, 10_000);
        assert_eq!(report.checksum, "1392d240ca76");
        assert_eq!(report.wall_ms, 6.258);
        assert_eq!(report.peak_rss_bytes, Some(6_897_664));
        assert_eq!(report.map_shuffle_overlap_ms, 0.25);
        assert_eq!(report.phases.len(), 2);
        assert_eq!(
            report.phases[1],
            ChildPhase {
                name: "commit".into(),
                start_ms: 4.119,
                end_ms: 6.258
            }
        );
    }

    #[test]
    fn child_report_accepts_null_rss_and_rejects_missing_fields() {
        let json = CHILD_JSON.replace("6897664", "null");
        assert_eq!(
            ChildReport::parse(json.as_bytes()).unwrap().peak_rss_bytes,
            None
        );
        let json = CHILD_JSON.replace("\"wall_ms\"", "\"other\"");
        assert!(ChildReport::parse(json.as_bytes()).is_err());
        assert!(ChildReport::parse(b"sorted 10 records").is_err());
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0]), Some(2.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 1.0, 100.0]), Some(5.0));
    }

    #[test]
    fn sizes_parse_label_and_reject_bad_values() {
        let sizes = parse_record_counts(&["10M".into(), "40M".into(), "1500".into()]).unwrap();
        assert_eq!(sizes, [10_000_000, 40_000_000, 1500]);
        assert_eq!(
            sizes.iter().map(|&r| size_label(r)).collect::<Vec<_>>(),
            ["10M", "40M", "1500"]
        );
        assert_eq!(size_label(1_500_000), "1500k");
        assert_eq!(size_label(2_000_000_000), "2G");
        assert!(matches!(
            parse_record_counts(&["10X".into()]),
            Err(BenchError::RecordCount { input, .. }) if input == "10X"
        ));
        assert!(matches!(
            parse_record_counts(&["0".into()]),
            Err(BenchError::NoRecords { input }) if input == "0"
        ));
    }

    #[test]
    fn config_rejects_zero_runs() {
        let config = BenchConfig {
            records: vec![10],
            ascii: false,
            dir: PathBuf::from("unused"),
            keep: false,
            runs: 0,
            millrace_exe: PathBuf::from("unused"),
            out_of_core: None,
        };
        assert!(matches!(
            config.check(),
            Err(BenchError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(40_000_000), "40,000,000");
    }

    #[test]
    fn proc_files_parse() {
        let meminfo = "MemTotal:       24636392 kB\nMemFree:        21000000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(24_636_392 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        let mountinfo = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /work rw shared:2 - xfs /dev/vdb rw
31 30 0:27 / /work/my\\040data rw - tmpfs tmpfs rw
";
        assert_eq!(
            fs_type(mountinfo, Path::new("/work/main")).as_deref(),
            Some("xfs")
        );
        assert_eq!(
            fs_type(mountinfo, Path::new("/workshop")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            fs_type(mountinfo, Path::new("/work/my data/x")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(fs_type("garbage", Path::new("/")), None);
    }

    fn sample_report() -> BenchReport {
        let case = |format: &'static str, gnu_sort| CaseReport {
            size: "10M".into(),
            format,
            records: 10_000_000,
            bytes: 1_000_000_000,
            checksum: "4c48a881c779d5".into(),
            floor_s: 0.5,
            sort_s: 1.25,
            sort_process_s: 1.5,
            sort_floor_ratio: 2.5,
            mb_per_s: 800.0,
            cpu_s_per_gb: Some(1.5),
            peak_rss_bytes: Some(1536 << 20),
            overlap_ratio: 1.234,
            map_shuffle_overlap_ms: 300.0,
            floor_runs_s: vec![0.5],
            sort_runs: Vec::new(),
            gnu_sort,
            timeline: PathBuf::from("bench-data/bench-timeline-10M-binary.json"),
        };
        BenchReport {
            machine: Machine {
                cores: 2,
                cpu: Some("AMD EPYC".into()),
                mem_total_bytes: Some(24 << 30),
                kernel: Some("6.1.0".into()),
                dir_fs: Some("ext4".into()),
            },
            commit: Some("0b7a9c1".into()),
            unix_time_s: 0,
            runs: 3,
            cases: vec![
                case("binary", None),
                case(
                    "ascii",
                    Some(GnuSort::Measured {
                        version: "sort (GNU coreutils) 9.1".into(),
                        command: "LC_ALL=C sort".into(),
                        wall_s: 9.0,
                        speedup: 6.0,
                    }),
                ),
                case(
                    "ascii",
                    Some(GnuSort::Skipped {
                        reason: "sort is not installed".into(),
                    }),
                ),
            ],
            out_of_core: None,
        }
    }

    #[test]
    fn markdown_table_has_one_row_per_case() {
        let text = sample_report().to_markdown();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "machine: 2 cores (AMD EPYC), 24.0 GiB RAM, Linux 6.1.0, bench folder on ext4"
        );
        assert_eq!(lines[1], "commit: 0b7a9c1");
        assert_eq!(lines[2], "runs per case: 3 (medians; GNU sort once)");
        let rows: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with('|'))
            .collect();
        assert_eq!(rows.len(), 5);
        let columns = rows[0].matches('|').count();
        assert!(rows.iter().all(|r| r.matches('|').count() == columns));
        assert_eq!(
            rows[2],
            "| 10M binary | 10,000,000 | 0.50 | 1.25 | 2.50 | 800 | 1.50 | 1536 | 1.23 | 1.50 | — | — |"
        );
        assert_eq!(
            rows[3],
            "| 10M ascii | 10,000,000 | 0.50 | 1.25 | 2.50 | 800 | 1.50 | 1536 | 1.23 | 1.50 | 9.00 | 6.0× |"
        );
        assert!(rows[4].ends_with("| skipped | — |"));
        assert!(text.contains("GNU sort skipped for 10M ascii: sort is not installed"));
    }

    #[test]
    fn json_report_round_trips_through_serde_json() {
        let value: serde_json::Value = serde_json::from_str(&sample_report().to_json()).unwrap();
        assert_eq!(value["machine"]["cores"], 2);
        assert_eq!(value["cases"][0]["gnu_sort"], serde_json::Value::Null);
        assert_eq!(value["cases"][1]["gnu_sort"]["status"], "measured");
        assert_eq!(value["cases"][1]["gnu_sort"]["speedup"], 6.0);
        assert_eq!(value["cases"][2]["gnu_sort"]["status"], "skipped");
        assert_eq!(value["cases"][0]["sort_floor_ratio"], 2.5);
    }

    /// A failing sort child fails the bench and leaves nothing behind but a kept input; the
    /// `--dir` it created goes too.
    #[test]
    fn failed_sort_fails_the_bench_and_cleans_up() {
        for keep in [false, true] {
            let root = tempfile::tempdir().unwrap();
            let config = BenchConfig {
                records: vec![1000],
                ascii: false,
                dir: root.path().join("bench"),
                keep,
                runs: 1,
                millrace_exe: PathBuf::from("/bin/false"),
                out_of_core: None,
            };
            let result = run(&config, &|_| {});
            assert!(
                matches!(
                    &result,
                    Err(BenchError::ChildFailed {
                        tool: "millrace sort",
                        ..
                    })
                ),
                "{result:?}"
            );
            let left: Vec<_> = fs::read_dir(&config.dir)
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            if keep {
                // Only the kept input, in the run folder.
                assert_eq!(left.len(), 1, "{left:?}");
                let run_dir = config.dir.join(&left[0]);
                let inside: Vec<_> = fs::read_dir(run_dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert_eq!(inside, ["1k-binary.in"]);
            } else {
                assert!(left.is_empty(), "{left:?}");
                assert!(!config.dir.exists());
            }
        }
    }

    #[test]
    fn work_dir_removes_all_but_kept_inputs() {
        let root = tempfile::tempdir().unwrap();
        let (kept, scratch) = {
            let mut work = WorkDir::create(root.path()).unwrap();
            let kept = work.file("10M-binary.in");
            let scratch = work.file("10M-binary.sort.out");
            fs::write(&kept, b"in").unwrap();
            fs::write(&scratch, b"out").unwrap();
            work.keep(&kept);
            (kept, scratch)
        };
        assert!(kept.exists());
        assert!(!scratch.exists());
        let path = {
            let work =
                WorkDir::create(&root.path().join("again")).unwrap_or_else(|e| panic!("{e}"));
            fs::write(work.file("x"), b"x").unwrap();
            work.path.clone()
        };
        assert!(!path.exists());
    }

    #[test]
    fn out_of_core_config_is_checked() {
        let mut config = BenchConfig {
            records: Vec::new(),
            ascii: false,
            dir: PathBuf::from("unused"),
            keep: false,
            runs: 1,
            millrace_exe: PathBuf::from("unused"),
            out_of_core: None,
        };
        assert!(config.check().is_err(), "nothing to measure");
        let ooc = OutOfCoreConfig {
            records: 160_000_000,
            memory_bytes: 2 << 30,
        };
        assert_eq!(ooc.bytes(), 16_000_000_000);
        assert_eq!(ooc.needed_bytes(), 52_800_000_000);
        config.out_of_core = Some(ooc);
        assert!(
            config.check().is_ok(),
            "the out-of-core case alone is enough"
        );
        // 10M records + their sort entries fit 2 GiB: the sort would not spill.
        config.out_of_core = Some(OutOfCoreConfig {
            records: 10_000_000,
            memory_bytes: 2 << 30,
        });
        assert!(matches!(
            config.check(),
            Err(BenchError::InvalidConfig { reason }) if reason.contains("would not spill")
        ));
        config.out_of_core = Some(OutOfCoreConfig {
            records: 0,
            memory_bytes: 1,
        });
        assert!(config.check().is_err());
    }

    #[test]
    fn variant_order_rotates_per_run() {
        let order = |by| rotated(4, by).collect::<Vec<_>>();
        assert_eq!(order(0), [0, 1, 2, 3]);
        assert_eq!(order(1), [1, 2, 3, 0]);
        assert_eq!(order(3), [3, 0, 1, 2]);
        assert_eq!(order(4), order(0));
    }

    #[test]
    fn variants_give_the_sort_flags() {
        let flags: Vec<String> = OOC_VARIANTS
            .iter()
            .map(|v| format!("{} {}", v.name, v.sort_flags().join(" ")))
            .collect();
        assert_eq!(
            flags,
            [
                "default --spill-io auto --compress auto",
                "pwrite --spill-io pwrite --compress auto",
                "no-lz4 --spill-io auto --compress none",
                "lz4 --spill-io auto --compress lz4",
            ]
        );
    }

    #[test]
    fn df_output_parses() {
        let df = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                  /dev/vda         263174212 19395428 243762400       8% /\n";
        assert_eq!(df_available_bytes(df), Some(243_762_400 * 1024));
        // Spaces in the file system name and the mount point.
        let df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                  my disk 100 40 60 40% /mnt/my data\n";
        assert_eq!(df_available_bytes(df), Some(60 * 1024));
        // Some file systems report no capacity.
        let df = "Filesystem 1024-blocks Used Available Capacity Mounted on\nfuse 0 0 0 - /x\n";
        assert_eq!(df_available_bytes(df), Some(0));
        assert_eq!(df_available_bytes(""), None);
        assert_eq!(
            df_available_bytes("df: /nope: No such file or directory\n"),
            None
        );
        assert_eq!(
            df_available_bytes("Filesystem 1024-blocks Used Available Capacity Mounted on\n"),
            None
        );
    }

    #[test]
    fn too_little_space_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let huge = OutOfCoreConfig {
            records: 1 << 50,
            memory_bytes: 2 << 30,
        };
        let error = check_free_space(dir.path(), &huge).unwrap_err();
        assert!(matches!(error, BenchError::NoSpace { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("not enough free space") && text.contains("GB"),
            "{text}"
        );
    }

    #[test]
    fn child_report_reads_plan_and_io() {
        let json = CHILD_JSON.replace(
            "\"records\": 10000,",
            r#""records": 10000, "plan": "out-of-core", "memory_budget_bytes": 67108864,
               "io": {"input_read_bytes": 200, "spill_written_bytes": 200,
                      "spill_read_bytes": 200, "output_written_bytes": 200,
                      "spilled_runs": 17, "reads_per_byte": 2.0, "writes_per_byte": 2.0},"#,
        );
        let report = ChildReport::parse(json.as_bytes()).unwrap();
        assert_eq!(report.plan.as_deref(), Some("out-of-core"));
        assert_eq!(report.memory_budget_bytes, Some(64 << 20));
        let io = report.io.unwrap();
        assert_eq!((io.spilled_runs, io.reads_per_byte), (17, 2.0));
        assert_eq!(io.hybrid_spilled_bytes, 0, "absent in older reports");
        let old = ChildReport::parse(CHILD_JSON.as_bytes()).unwrap();
        assert_eq!((old.plan, old.io), (None, None));
    }

    fn floor_run(wall_s: f64, io_engine: &'static str) -> FloorRun {
        FloorRun {
            wall_s,
            pass1_s: wall_s * 0.4,
            pass2_s: wall_s * 0.6,
            segments: 8,
            spill_written_bytes: 16_000_000_000,
            spill_read_bytes: 16_000_000_000,
            spill_file_bytes: 9_000_000_000,
            io_engine,
            direct: true,
        }
    }

    fn sort_run(wall_s: f64, rss: u64) -> SortRun {
        let phase = |name: &str, start_ms: f64, end_ms: f64| ChildPhase {
            name: name.into(),
            start_ms,
            end_ms,
        };
        SortRun {
            wall_s,
            process_s: wall_s + 0.5,
            peak_rss_bytes: Some(rss),
            overlap_ratio: 1.2,
            map_shuffle_overlap_ms: 0.0,
            phases: vec![
                phase("map", 0.0, wall_s * 500.0),
                phase("sort+write", wall_s * 500.0, wall_s * 1000.0),
            ],
            plan: Some("out-of-core".into()),
            io: Some(ChildIo {
                input_read_bytes: 16_000_000_000,
                spill_written_bytes: 16_000_000_000,
                hybrid_spilled_bytes: 250_000_000,
                spill_read_bytes: 16_000_000_000,
                output_written_bytes: 16_000_000_000,
                spilled_runs: 36,
                reads_per_byte: 2.0,
                writes_per_byte: 2.0,
            }),
            cpu_s_per_gb: Some(2.5),
        }
    }

    fn variant(
        index: usize,
        sorts: &[f64],
        floors: &[f64],
        engine: &'static str,
    ) -> OocVariantReport {
        variant_report(
            &OOC_VARIANTS[index],
            "--memory 2147483648".into(),
            16_000_000_000,
            2 << 30,
            floors.iter().map(|&s| floor_run(s, engine)).collect(),
            sorts
                .iter()
                .enumerate()
                .map(|(i, &s)| sort_run(s, (2 << 30) + (i as u64) * (200 << 20)))
                .collect(),
            PathBuf::from("t.json"),
        )
    }

    #[test]
    fn variant_report_takes_medians_and_flags_the_target() {
        let v = variant(0, &[100.0, 80.0, 90.0], &[70.0, 60.0, 80.0], "uring");
        assert_eq!((v.sort_s, v.floor_s), (90.0, 70.0));
        assert!((v.sort_floor_ratio - 90.0 / 70.0).abs() < 1e-12);
        assert!(!v.meets_target);
        assert!((v.mb_per_s - 16_000.0 / 90.0).abs() < 1e-9);
        assert_eq!(v.peak_rss_bytes, Some((2 << 30) + (400 << 20)));
        assert!((v.rss_budget_ratio.unwrap() - (2048.0 + 400.0) / 2048.0).abs() < 1e-12);
        assert_eq!(v.floor_pass1_s, 28.0);
        assert_eq!(
            v.phases_s,
            [("map".to_owned(), 45.0), ("sort+write".to_owned(), 45.0)]
        );
        assert_eq!(v.io.spilled_runs, 36);
        let v = variant(0, &[80.0], &[70.0], "uring");
        assert!(v.meets_target);
    }

    fn ooc_report(default_engine: &'static str) -> OutOfCoreReport {
        let variants = vec![
            variant(0, &[90.0], &[80.0], default_engine),
            variant(1, &[99.0], &[88.0], "pwrite"),
            variant(2, &[120.0], &[100.0], default_engine),
            variant(3, &[96.0], &[80.0], default_engine),
        ];
        OutOfCoreReport {
            size: "160M".into(),
            records: 160_000_000,
            bytes: 16_000_000_000,
            checksum: "abc".into(),
            memory_budget_bytes: 2 << 30,
            free_bytes_before: 70_000_000_000,
            runs: 1,
            comparisons: comparisons(&variants),
            variants,
        }
    }

    #[test]
    fn comparisons_are_uring_vs_pwrite_and_lz4_on_vs_off() {
        let report = ooc_report("uring");
        let c = &report.comparisons;
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].a, c[0].b), ("default", "pwrite"));
        assert!((c[0].sort_change_pct - (-100.0 / 11.0)).abs() < 1e-9);
        assert!((c[0].floor_change_pct - (-100.0 / 11.0)).abs() < 1e-9);
        assert_eq!(c[0].note, None);
        assert_eq!((c[1].a, c[1].b), ("lz4", "no-lz4"));
        assert!((c[1].sort_change_pct + 20.0).abs() < 1e-9);
        let report = ooc_report("pwrite");
        assert!(report.comparisons[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("io_uring is not available")));
    }

    #[test]
    fn out_of_core_markdown_has_a_row_per_variant_and_the_comparisons() {
        let mut report = sample_report();
        report.out_of_core = Some(ooc_report("uring"));
        let text = report.to_markdown();
        let section = &text[text.find("out-of-core:").expect("an out-of-core section")..];
        assert!(section.starts_with(
            "out-of-core: 160,000,000 records (16.0 GB) under --memory 2048 MiB; runs per variant: 1"
        ));
        let rows: Vec<&str> = section.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 2 * (2 + OOC_VARIANTS.len()));
        for table in rows.chunks(2 + OOC_VARIANTS.len()) {
            let columns = table[0].matches('|').count();
            assert!(
                table.iter().all(|r| r.matches('|').count() == columns),
                "{table:?}"
            );
        }
        assert_eq!(
            rows[2],
            "| default | `--memory 2147483648` | uring | 90.00 | 80.00 | 1.12 ✓ | 178 | 2.50 | 2048 (100%) | 2.00 | 2.00 | 16.00 / 16.00 | 36 |"
        );
        assert!(rows[4].contains("| 1.20 ✓ |"), "{}", rows[4]);
        assert!(
            rows[8].starts_with(
                "| default | — | 45.00 | — | 45.00 | — | 32.00 | 48.00 | 16.00 | 0.25 | 16.00 | 9.00 |"
            ),
            "{}",
            rows[8]
        );
        assert!(section.contains(
            "io_uring vs pwrite (default vs pwrite): sort 90.00 s vs 99.00 s (-9.1%), floor 80.00 s vs 88.00 s (-9.1%)"
        ));
        assert!(
            section.contains("lz4 on vs off (lz4 vs no-lz4): sort 96.00 s vs 120.00 s (-20.0%)")
        );
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["out_of_core"]["variants"][1]["variant"], "pwrite");
        assert_eq!(value["out_of_core"]["comparisons"][1]["a"], "lz4");
        assert_eq!(
            value["out_of_core"]["variants"][0]["io"]["spilled_runs"],
            36
        );
    }

    /// The out-of-core case measures its floor, then a failing sort fails the bench, and
    /// nothing is left: input, floor output, spill folder, work folder.
    #[test]
    fn failed_out_of_core_sort_fails_the_bench_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let config = BenchConfig {
            records: Vec::new(),
            ascii: false,
            dir: root.path().join("bench"),
            keep: false,
            runs: 1,
            millrace_exe: PathBuf::from("/bin/false"),
            out_of_core: Some(OutOfCoreConfig {
                records: 100_000,
                memory_bytes: 4 << 20,
            }),
        };
        let lines = std::sync::Mutex::new(Vec::new());
        let result = run(&config, &|line| lines.lock().unwrap().push(line.to_owned()));
        assert!(
            matches!(
                &result,
                Err(BenchError::ChildFailed {
                    tool: "millrace sort",
                    ..
                })
            ),
            "{result:?}"
        );
        let lines = lines.into_inner().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("two-pass floor 1/1 100k-ooc default:")),
            "{lines:?}"
        );
        assert!(!config.dir.exists());
    }
}
