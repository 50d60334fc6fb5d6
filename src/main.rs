//! `millrace`: the command line. Parses flags into validated configs, checks every path a
//! command writes against every path it reads (and against each other) before any work, calls
//! the libraries, commits all outputs together, prints; the only place that uses `anyhow`.
//!
//! Exit codes: 0 success, 1 validation found records out of order, 2 error (bad input, flags,
//! I/O, internal), 128 + N when stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP).

mod progress;

/// `println!` that returns an error instead of panicking when standard output is closed or
/// full (a broken pipe then ends the command quietly, see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).context("cannot write to standard output")
    };
}

mod cluster_cli;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use bench_sort::gensort::{self, Format, GenSpec};
use bench_sort::valsort;
use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::output::{IoMode, PendingFile};
use engine::paths::{self, is_std_stream, OutputKind, Read};
use engine::terasort::{self, ExecutionMode, Progress, SortConfig, SortReport};
use engine::timeline::PhaseKind;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "millrace",
    version,
    about = "A pipelined sort/shuffle engine: gensort-exact data, TeraSort, valsort-compatible validation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate Sort Benchmark records, byte-identical to gensort 1.5 (alias: teragen).
    #[command(alias = "teragen")]
    Gen(GenArgs),
    /// Check that records are sorted by key (valsort-compatible) and print their checksum
    /// (alias: teravalidate).
    #[command(alias = "teravalidate")]
    Validate(ValidateArgs),
    /// Sort 100-byte records by their 10-byte key (TeraSort) through the engine.
    #[command(alias = "terasort")]
    Sort(SortArgs),
    /// Measure sorts against this machine's floor and other sort tools (bench sort, the
    /// default), or batch jobs beside DuckDB, Polars, DataFusion and Spark (bench jobs).
    Bench(BenchArgs),
    /// Run a batch job from a TOML spec (word count, group-by; see examples/).
    Run(RunArgs),
    /// Print the job graph a spec runs as: vertices, exchange, partition types, regions.
    Explain(ExplainArgs),
    /// Run a coordinator: the REST API jobs are submitted to, the job history, and the
    /// workers' control connections (JobManager role).
    Coordinator(cluster_cli::CoordinatorArgs),
    /// Run a worker: registers with a coordinator and runs the job attempts it places here
    /// (TaskManager role).
    Worker(cluster_cli::WorkerArgs),
    /// A local cluster of processes: up, status, down.
    Cluster(cluster_cli::ClusterArgs),
    /// Submit a job spec to the cluster (like `flink run`); --wait follows it to its end.
    Submit(cluster_cli::SubmitArgs),
    /// List the cluster's jobs, newest first: every job and what became of it.
    Jobs(cluster_cli::JobsArgs),
    /// Show one job: state, graph, per-vertex figures, attempts, events.
    Status(cluster_cli::StatusArgs),
    /// Cancel a queued or running job.
    Cancel(cluster_cli::CancelArgs),
    /// Drain a worker: it takes no new work; returns once its attempts ended.
    Drain(cluster_cli::DrainArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The job spec (TOML); relative paths in it are relative to its folder.
    #[arg(value_parser = PathArg)]
    spec: PathBuf,
    /// Execution style (overrides the spec's `mode`).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Memory budget (overrides the spec's `memory`; default half the RAM).
    #[arg(long, value_parser = engine::memory::parse_size)]
    memory: Option<u64>,
    /// Subtasks per vertex (overrides the spec's `parallelism`; default the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallelism: Option<u32>,
    /// Replace the output folder if it exists.
    #[arg(long, short = 'f')]
    force: bool,
    /// Folder for blocking exchanges' files (staged, mapreduce). Default: the system temp
    /// folder.
    #[arg(long, value_parser = PathArg)]
    spill_dir: Option<PathBuf>,
    /// Attempts per subtask (retries after a failure).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    max_attempts: u32,
    /// Write the job timeline (every subtask attempt's interval, volumes and spans),
    /// published with the output.
    #[arg(long, value_parser = PathArg)]
    timeline: Option<PathBuf>,
    /// Format of --timeline.
    #[arg(long, value_enum, default_value = "json", requires = "timeline")]
    timeline_format: TimelineFormat,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExplainArgs {
    /// The job spec (TOML).
    #[arg(value_parser = PathArg)]
    spec: PathBuf,
    /// Execution style to explain (overrides the spec's `mode`).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Subtasks per vertex (overrides the spec's `parallelism`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallelism: Option<u32>,
}

impl From<ModeArg> for engine::batch::spec::Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Pipelined => Self::Pipelined,
            ModeArg::Staged => Self::Staged,
            ModeArg::MapReduce => Self::MapReduce,
        }
    }
}

fn run_job(args: RunArgs) -> anyhow::Result<ExitCode> {
    let envelope = Envelope::new("millrace.run");
    let config = engine::batch::BatchJobConfig {
        spec: args.spec,
        mode: args.mode.map(Into::into),
        memory_bytes: args.memory,
        parallelism: args.parallelism.map(|p| p as usize),
        force: args.force,
        spill_dir: args.spill_dir,
        max_attempts: args.max_attempts,
        placement: None,
    };
    let result = match &args.timeline {
        None => engine::batch::run(&config)?,
        Some(timeline) => {
            // Every path against every other before any work: the timeline too.
            let (plan, parallelism) = engine::batch::plan(&config)?;
            let reads: Vec<Read> = (plan.sources().iter())
                .map(|source| Read::new("input", source))
                .chain(std::iter::once(Read::new("job spec", &config.spec)))
                .collect();
            let kind = match plan.sink.one_file() {
                true => OutputKind::File,
                false => OutputKind::Folder,
            };
            let writes = [
                output("sink", plan.sink.path(), kind),
                output("--timeline", timeline, OutputKind::File),
            ];
            paths::check(&reads, &writes, args.force)?;
            // The plan checked is the plan run (no code in a spec: no functions).
            let finished = engine::batch::run_plan(plan, parallelism, Default::default(), &config)?;
            let bytes = timeline_bytes(&finished.result.timeline, args.timeline_format)?;
            commit_with(timeline, args.force, &bytes, || Ok(finished.publish()?))?
        }
    };
    if args.json {
        let doc = envelope.wrap(
            "ok",
            json!({
                "job": result.name,
                "mode": result.mode.as_str(),
                "parallelism": result.parallelism,
                "output": result.output,
                "parts": result.parts,
                "rows_in": result.rows_in,
                "rows_skipped": result.rows_skipped,
                "rows_out": result.rows_out,
                "partial_flushes": result.partial_flushes,
                "spilled_runs": result.spilled_runs,
                "spilled_bytes": result.spilled_bytes,
                "peak_rss_bytes": engine::process::peak_rss_bytes(),
                "cpu_seconds": engine::process::cpu_seconds(),
                "wall_ms": result.wall.as_secs_f64() * 1e3,
            }),
        );
        println!("{doc}");
    } else {
        println!(
            "{}: {} rows in{}, {} rows out to {} ({} part{}, {} mode) in {:.2} s{}",
            result.name,
            result.rows_in,
            if result.rows_skipped > 0 {
                format!(" ({} malformed skipped)", result.rows_skipped)
            } else {
                String::new()
            },
            result.rows_out,
            result.output.display(),
            result.parts,
            if result.parts == 1 { "" } else { "s" },
            result.mode.as_str(),
            result.wall.as_secs_f64(),
            if result.partial_flushes > 0 {
                format!(
                    ", {} early partial flushes (memory)",
                    result.partial_flushes
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = engine::batch::BatchJobConfig {
        spec: args.spec,
        mode: args.mode.map(Into::into),
        parallelism: args.parallelism.map(|p| p as usize),
        ..Default::default()
    };
    let (plan, parallelism) = engine::batch::plan(&config)?;
    print!("{}", engine::batch::explain(&plan, parallelism));
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
struct GenArgs {
    /// Printable ASCII records with row ids and \r\n line ends (gensort -a).
    #[arg(long, short = 'a')]
    ascii: bool,
    /// Skewed keys (gensort -s).
    #[arg(long, short = 's')]
    skew: bool,
    /// Number of the first record (gensort -b).
    #[arg(long, short = 'b', default_value = "0")]
    start: u128,
    /// Print the checksum on standard error exactly as gensort -c does (hex, then a newline).
    #[arg(long, short = 'c')]
    checksum: bool,
    /// Replace OUTPUT if it exists (atomically, once the records are written).
    #[arg(long, short = 'f')]
    force: bool,
    /// Print a JSON summary on standard output (not with OUTPUT `-`).
    #[arg(long)]
    json: bool,
    /// Records to generate: a count with an optional decimal suffix k, M or G (10M = 10^7).
    records: String,
    /// Output file; `-` writes the records to standard output; /dev/null computes the
    /// checksum without writing.
    #[arg(value_parser = PathArg)]
    output: PathBuf,
}

#[derive(Args)]
struct ValidateArgs {
    /// A file of records, a folder of part files read in name order, or `-` for standard
    /// input.
    #[arg(value_parser = PathArg, required_unless_present = "summaries")]
    path: Option<PathBuf>,
    /// Check a concatenation of 280-byte partition summaries instead.
    #[arg(value_parser = PathArg, long, value_name = "FILE", conflicts_with = "path")]
    summaries: Option<PathBuf>,
    /// PATH is a concatenation of 280-byte partition summaries (valsort -s).
    #[arg(short = 's', conflicts_with = "summaries")]
    summaries_input: bool,
    /// Write the summary in valsort's 280-byte layout (valsort -o).
    #[arg(value_parser = PathArg, long, short = 'o', value_name = "FILE")]
    summary_out: Option<PathBuf>,
    /// Print nothing; the exit code tells the result (valsort -q).
    #[arg(long, short = 'q', conflicts_with = "json")]
    quiet: bool,
    /// Replace an existing --summary-out file.
    #[arg(long, short = 'f')]
    force: bool,
    /// Print a JSON summary instead of valsort's lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Reducers receive and sort while maps still read (Flink).
    Pipelined,
    /// Maps write blocking partitions; reducers start after the last map (Spark/Tez).
    Staged,
    /// One sorting map task per split; reducers copy finished map outputs early and merge
    /// after the last map (Hadoop MapReduce).
    #[value(name = "mapreduce")]
    MapReduce,
}

#[derive(Clone, Copy, ValueEnum)]
enum IoArg {
    Auto,
    Direct,
    Buffered,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpillIoArg {
    Auto,
    Uring,
    Pwrite,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    Auto,
    Lz4,
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TimelineFormat {
    /// Millrace's own JSON (documented in docs/formats.md).
    Json,
    /// Chrome Trace Event JSON, opened by Perfetto and chrome://tracing.
    Chrome,
}

/// A path argument (any bytes, not only UTF-8), without a trailing slash or `.` (see
/// `paths::normalize`).
#[derive(Clone)]
struct PathArg;

impl clap::builder::TypedValueParser for PathArg {
    type Value = PathBuf;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<PathBuf, clap::Error> {
        if value.is_empty() {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                "a path is empty\n",
            ));
        }
        Ok(paths::normalize(Path::new(value)))
    }
}

/// Parses a byte size: a number with an optional unit (k, M, G, T for powers of 1000; KiB,
/// MiB, GiB, TiB for powers of 1024; case-insensitive).
/// A share from 0 to 1 (`0.05`).
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

#[derive(Args)]
struct SortArgs {
    /// File of 100-byte records (gensort binary or ASCII, or any 100-byte records); `-`, a
    /// pipe or a FIFO is read to its end first (spooled to the spill folder).
    #[arg(value_parser = PathArg, required_unless_present = "demo")]
    input: Option<PathBuf>,
    /// Output file (or folder with --parts); must not exist unless --force.
    #[arg(value_parser = PathArg, required_unless_present = "demo")]
    output: Option<PathBuf>,
    /// Replace existing outputs (the output and --timeline), atomically once the sort
    /// succeeded.
    #[arg(long, short = 'f')]
    force: bool,
    /// Generate 10M records (1 GB) in a temp folder, sort, validate, summarize, clean up.
    #[arg(long, conflicts_with_all = ["input", "output", "json"])]
    demo: bool,
    /// Records for --demo.
    #[arg(long, default_value = "10M", requires = "demo", hide = true)]
    demo_records: String,
    /// How map and reduce are connected.
    #[arg(long, value_enum, default_value = "pipelined")]
    mode: ModeArg,
    /// Attempts a subtask gets (in --mode staged and mapreduce a failed map or reducer runs
    /// again alone over the finished blocking partitions; in pipelined mode its region
    /// restarts). 1 turns retries off.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Reduce subtasks (output ranges). Default: the number of cores.
    #[arg(long)]
    reducers: Option<usize>,
    /// Map subtasks (in --mode mapreduce: map tasks running at once; there is one task per
    /// split). Default: the number of cores.
    #[arg(long)]
    maps: Option<usize>,
    /// Bytes of input per split, handed to maps on demand (in --mode mapreduce: one map task
    /// each, like mapreduce.input.fileinputformat.split.maxsize).
    #[arg(long, value_name = "SIZE", default_value = "64MB", value_parser = engine::memory::parse_size)]
    split_bytes: u64,
    /// --mode mapreduce: records each map task sorts in memory before it spills a run (like
    /// mapreduce.task.io.sort.mb). Default: up to 128MiB, as the --memory budget allows.
    #[arg(long, value_name = "SIZE", value_parser = engine::memory::parse_size)]
    map_sort_buffer: Option<u64>,
    /// --mode mapreduce: the share of map tasks that must have finished before reducers start
    /// copying map outputs (like mapreduce.job.reduce.slowstart.completedmaps), 0 to 1.
    /// Default 0.05.
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    slowstart: Option<f64>,
    /// Write one part file per reducer (part-00000, …) into the OUTPUT folder.
    #[arg(long)]
    parts: bool,
    /// How output reaches the disk: direct I/O when possible (auto), always, or never.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoArg,
    /// Memory budget (e.g. 512MiB, 2GiB, 4G; plain numbers are bytes), at most the RAM.
    /// Default: half the RAM. Inputs that do not fit are sorted out of core: sorted runs
    /// spilled, then merged.
    #[arg(long, value_name = "SIZE", value_parser = engine::memory::parse_size)]
    memory: Option<u64>,
    /// Folder for spilled runs and spooled input streams (repeat for several disks, used
    /// round-robin). Default: the system temp folder.
    #[arg(value_parser = PathArg, long = "spill-dir", value_name = "DIR")]
    spill_dirs: Vec<PathBuf>,
    /// How spill files are written.
    #[arg(long, value_enum, default_value = "auto")]
    spill_io: SpillIoArg,
    /// Compression of spilled blocks: lz4 when it saves 10% (auto), always, or never.
    #[arg(long, value_enum, default_value = "auto")]
    compress: CompressArg,
    /// Out of core, how long a map waits for a busy reducer before it spills that buffer to
    /// its own segment file instead (hybrid exchange); 0 turns this off. At most one hour.
    #[arg(long, value_name = "MS", default_value = "50",
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    hybrid_wait_ms: u64,
    /// Write the job timeline (every subtask's interval, volumes and spans).
    #[arg(value_parser = PathArg, long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Format of --timeline.
    #[arg(long, value_enum, default_value = "json", requires = "timeline")]
    timeline_format: TimelineFormat,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
}

/// `millrace bench [sort] …` and `millrace bench jobs …`: without a subcommand the flags are
/// `bench sort`'s, as before `jobs` existed.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchCommand>,
    #[command(flatten)]
    sort: BenchSortArgs,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Sorts against this machine's floor, GNU sort and the peers (the default).
    Sort(BenchSortArgs),
    /// Word count, group-by and join beside DuckDB, Polars, DataFusion and Spark, in memory
    /// and under a budget that forces spilling; every output compared with every other.
    Jobs(BenchJobsArgs),
}

impl BenchArgs {
    fn json(&self) -> bool {
        match &self.what {
            None => self.sort.json,
            Some(BenchCommand::Sort(a)) => a.json,
            Some(BenchCommand::Jobs(a)) => a.json,
        }
    }
}

#[derive(Args)]
struct BenchJobsArgs {
    /// Multiplies the default sizes: text of ~1 GB (17M lines) for the word count, 100M sales
    /// rows (CSV and Parquet) for the group-by, 100M orders × 10M customers for the join.
    #[arg(long, default_value = "1", value_parser = bench_sort::bench::jobs::parse_scale)]
    scale: f64,
    /// The jobs to run.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "JOB,...",
        default_value = "wordcount,groupby,join"
    )]
    jobs: Vec<String>,
    /// The peers to run the same queries on the same files (scripts/peers/jobs.sh, installed on
    /// first use into MILLRACE_PEERS_DIR, default DIR/peers); one that cannot be installed is
    /// reported as skipped with the install step. `none`: millrace alone.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PEER,...",
        default_value = "duckdb,polars,datafusion,spark"
    )]
    peers: Vec<String>,
    /// The memory budget that forces spilling: millrace --memory, the peers' memory limits
    /// (Spark's heap at least 512MiB). Default: 256MiB × --scale, at least 16MiB.
    #[arg(long, value_name = "SIZE", value_parser = engine::memory::parse_size)]
    spill_memory: Option<u64>,
    /// Runs of every tool in every case; medians are reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Folder for inputs, outputs and the report (bench-jobs-report.md and .json).
    #[arg(value_parser = PathArg, long, default_value = "bench-data")]
    dir: PathBuf,
    /// Keep the generated inputs, the job specs and every output.
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON only (it is always written to DIR/bench-jobs-report.json).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchSortArgs {
    /// Records per run (k, M, G suffixes); repeat for several sizes.
    #[arg(long, default_value = "10M")]
    records: Vec<String>,
    /// Run ASCII inputs too (binary always runs).
    #[arg(long)]
    ascii: bool,
    /// Execution modes to sort every case with, any that sort --mode takes (pipelined always
    /// runs; each output validated; out of core with the default variant), side by side.
    #[arg(long, value_delimiter = ',', default_value = "pipelined",
          value_parser = clap::builder::PossibleValuesParser::new(bench_sort::bench::SORT_MODES))]
    modes: Vec<String>,
    /// Other tools to run `--runs` times on the same inputs, measured and validated like the
    /// sort: gnu-sort, duckdb, polars (ASCII lines; their ASCII cases run without --ascii too),
    /// hadoop, spark, flink (binary TeraSorts). Installed on first use into MILLRACE_PEERS_DIR
    /// (default DIR/peers) by scripts/peers/run.sh; a peer that cannot be installed is
    /// reported as skipped with the install step.
    #[arg(long, value_delimiter = ',', value_name = "PEER,...")]
    peers: Vec<String>,
    /// Folder for benchmark data (git-ignored); deleted afterwards unless --keep.
    #[arg(value_parser = PathArg, long, default_value = "bench-data")]
    dir: PathBuf,
    /// Keep the generated data.
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON only (it is always written to DIR/bench-report.json, with
    /// bench-report.md and SVG pictures).
    #[arg(long)]
    json: bool,
    /// Floor and sort runs per case, interleaved; medians are reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Add the out-of-core case: a binary input far larger than --memory, sorted with spills
    /// against the two-pass disk floor; default, pwrite, no-lz4 and lz4 variants. Needs 3.3×
    /// the input in free space, 4.4× with staged or mapreduce in --modes (checked first).
    #[arg(long)]
    out_of_core: bool,
    /// Records of the out-of-core case (160M = 16 GB).
    #[arg(
        long,
        default_value = "160M",
        value_name = "RECORDS",
        requires = "out_of_core"
    )]
    ooc_records: String,
    /// Memory budget of the out-of-core sorts (e.g. 256MiB, 2GiB).
    #[arg(
        long,
        default_value = "2GiB",
        value_name = "SIZE",
        value_parser = engine::memory::parse_size,
        requires = "out_of_core"
    )]
    memory: u64,
}

/// What every `--json` document starts with.
struct Envelope {
    schema: &'static str,
    started: SystemTime,
}

impl Envelope {
    fn new(schema: &'static str) -> Self {
        Self {
            schema,
            started: SystemTime::now(),
        }
    }

    /// The document: the envelope's fields, then `body`'s.
    fn wrap(&self, status: &str, body: Value) -> Value {
        let mut doc = json!({
            "schema": self.schema,
            "schema_version": 1,
            "tool": "millrace",
            "version": env!("CARGO_PKG_VERSION"),
            "status": status,
            "started_at": engine::timeline::rfc3339_utc(engine::timeline::unix_micros(self.started)),
            "host": hostname(),
        });
        if let (Some(doc), Value::Object(body)) = (doc.as_object_mut(), body) {
            doc.extend(body);
        }
        doc
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether the running command was given `--json` (the signal handler reads it too).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints the JSON error document on standard output (best effort: a closed standard output
/// cannot take it, and the stderr line has been printed already).
fn print_error_json(command: &str, message: &str, kind: &str, exit_code: u8) {
    let doc = Envelope::new("millrace.error").wrap(
        "error",
        json!({
            "command": command,
            "error": { "message": message, "kind": kind },
            "exit_code": exit_code,
        }),
    );
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Servers log what they do (info); commands only warnings, unless RUST_LOG says more.
    let server = matches!(
        args.get(1).and_then(|a| a.to_str()),
        Some("coordinator" | "worker")
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| if server { "info" } else { "warn" }.into());
    let json_logs = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match json_logs {
        true => logs.json().init(),
        false => logs.init(),
    }
    engine::memory::cap_allocator_arenas(2);
    // A worker's attempt (`MILLRACE_DIE_WITH_PARENT=<the worker's pid>`): die with the
    // worker (SIGTERM runs the cleanup below), also when it died before this line.
    if let Some(worker) = std::env::var_os("MILLRACE_DIE_WITH_PARENT") {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
        let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get().to_string());
        if parent.as_deref() != worker.to_str() {
            return ExitCode::from(143);
        }
    }
    let wants_json = args.iter().any(|a| a == "--json");
    let command = args
        .get(1)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = error.print();
                    return ExitCode::SUCCESS;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = error.print();
                    return ExitCode::from(2);
                }
                _ => {}
            }
            // One line, like every other error; `--help` has the rest.
            // Clap's message without its usage block, on one line (it names missing
            // arguments on the lines after the first).
            let text = error.render().to_string();
            let line = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            eprintln!("error: {line} (see millrace --help)");
            if wants_json {
                print_error_json(&command, &line, "user", 2);
            }
            return ExitCode::from(2);
        }
    };
    let (name, json) = match &cli.command {
        Command::Gen(a) => ("gen", a.json),
        Command::Validate(a) => ("validate", a.json),
        Command::Sort(a) => ("sort", a.json),
        Command::Bench(a) => ("bench", a.json()),
        Command::Run(a) => ("run", a.json),
        Command::Explain(_) => ("explain", false),
        Command::Coordinator(_) => ("coordinator", false),
        Command::Worker(_) => ("worker", false),
        Command::Cluster(_) => ("cluster", false),
        Command::Submit(_) => ("submit", false),
        Command::Jobs(_) => ("jobs", false),
        Command::Status(_) => ("status", false),
        Command::Cancel(_) => ("cancel", false),
        Command::Drain(_) => ("drain", false),
    };
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    // Servers stop on SIGTERM and SIGINT themselves (their attempts canceled first).
    if !server {
        remove_temp_files_on_signal(name);
    }
    let result = match cli.command {
        Command::Gen(args) => gen(args),
        Command::Validate(args) => validate(args),
        Command::Sort(args) => sort(args),
        Command::Bench(args) => bench(args),
        Command::Run(args) => run_job(args),
        Command::Explain(args) => explain(args),
        Command::Coordinator(args) => cluster_cli::coordinator(args),
        Command::Worker(args) => cluster_cli::worker(args),
        Command::Cluster(args) => cluster_cli::cluster(args),
        Command::Submit(args) => cluster_cli::submit(args),
        Command::Jobs(args) => cluster_cli::jobs(args),
        Command::Status(args) => cluster_cli::status(args),
        Command::Cancel(args) => cluster_cli::cancel(args),
        Command::Drain(args) => cluster_cli::drain(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {error:#}");
            if json {
                print_error_json(name, &format!("{error:#}"), error_kind(&error), 2);
            }
            ExitCode::from(2)
        }
    }
}

/// Who has to act: "user" (input, flags, paths), "io" (disk, machine) or "internal" (a bug).
fn error_kind(error: &anyhow::Error) -> &'static str {
    use engine::ErrorDomain;
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<engine::EngineError>() {
            return match e.domain() {
                ErrorDomain::User => "user",
                ErrorDomain::Io => "io",
                ErrorDomain::Internal => "internal",
            };
        }
        if cause.downcast_ref::<paths::PathError>().is_some() {
            return "user";
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return "io";
        }
    }
    "user"
}

/// On SIGINT, SIGTERM or SIGHUP (a closed terminal): delete every registered temp file and
/// folder, then exit with 128 + the signal number, as shells report a death by that signal
/// (with `--json`, after an error document saying so).
fn remove_temp_files_on_signal(command: &'static str) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        tracing::warn!("cannot install signal handlers; an interrupted run may leave temp files");
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            engine::cleanup::remove_all();
            let message = format!("interrupted (signal {signal}); temp files removed");
            eprintln!("{message}");
            let code = 128 + signal;
            if JSON.load(std::sync::atomic::Ordering::Relaxed) {
                print_error_json(command, &message, "interrupted", code as u8);
            }
            std::process::exit(code);
        }
    });
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A path a command writes, as `paths::check` wants it.
fn output(role: &str, path: &Path, kind: OutputKind) -> paths::Write {
    paths::Write::new(role, path, kind)
}

/// Refuses a file system with less than `bytes` free for `path` (checked before writing).
fn check_free_space(path: &Path, bytes: u128) -> Result<()> {
    let Ok(free) = paths::available_bytes(&engine::tempdir::parent_of(path)) else {
        return Ok(());
    };
    if bytes > u128::from(free) {
        bail!(
            "output {}: needs {} bytes but its file system has {} bytes free; free space or choose another folder",
            path.display(),
            bytes,
            free
        );
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        mb(bytes) / seconds
    } else {
        0.0
    }
}

fn gen(args: GenArgs) -> Result<ExitCode> {
    let envelope = Envelope::new("millrace.gen");
    let records = gensort::parse_record_count(&args.records)?;
    let spec = GenSpec {
        format: if args.ascii {
            Format::Ascii
        } else {
            Format::Binary
        },
        skew: args.skew,
        start: args.start,
        records,
    };
    let to_stdout = is_std_stream(&args.output);
    if to_stdout && args.json {
        bail!("--json cannot share standard output with the records; give an output file");
    }
    if to_stdout && std::io::stdout().is_terminal() {
        bail!(
            "standard output is a terminal; redirect or pipe the records, or give an output file"
        );
    }
    let started = Instant::now();
    let checksum = if args.output == Path::new("/dev/null") {
        gensort::generate_to_file(&spec, &args.output, &|_| {})?
    } else if to_stdout {
        gensort::generate_to_writer(&spec, std::io::stdout(), &|_| {})
            .map_err(|e| e.for_path(Path::new("standard output")))?
    } else {
        paths::check(
            &[],
            &[output("output", &args.output, OutputKind::FileOrStdout)],
            args.force,
        )?;
        check_free_space(&args.output, spec.records as u128 * 100)?;
        generate(&spec, &args.output, args.force)?
    };
    let seconds = started.elapsed().as_secs_f64();
    if args.checksum {
        // gensort -c: the checksum alone, on standard error.
        eprintln!("{checksum}");
    }
    let bytes = records.saturating_mul(100);
    if args.json {
        let doc = envelope.wrap(
            "ok",
            json!({
                "command": "gen",
                "output": args.output,
                "records": records,
                "bytes": bytes,
                "checksum": checksum.sum_hex(),
                "format": if args.ascii { "ascii" } else { "binary" },
                "skew": args.skew,
                "start": args.start.to_string(),
                "wall_ms": seconds * 1e3,
                "mb_per_s": rate(bytes, seconds),
            }),
        );
        outln!("{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        let line = format!(
            "generated {records} records ({:.1} MB) in {seconds:.2} s, {:.0} MB/s, checksum {checksum}, output {}",
            mb(bytes),
            rate(bytes, seconds),
            args.output.display()
        );
        // With the records on standard output, the summary goes to standard error, unless
        // -c asked for exactly gensort's line there.
        if to_stdout {
            if !args.checksum {
                eprintln!("{line}");
            }
        } else {
            outln!("{line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Generates into a locked temp file, fsyncs and renames it into place, so a failed or killed
/// run leaves nothing under the output name.
fn generate(spec: &GenSpec, output: &Path, force: bool) -> Result<engine::record::Checksum> {
    let bar = progress::records_bar("gen", spec.records.saturating_mul(100));
    let pending = PendingFile::create(output, "output", force)?;
    let result =
        gensort::generate_to_writer(spec, pending.file(), &|b| progress::set_records(&bar, b));
    bar.finish_and_clear();
    let checksum = result.map_err(|e| e.for_path(output))?;
    let spinner = progress::spinner("fsync+commit");
    pending.sync()?;
    pending.publish()?;
    spinner.finish_and_clear();
    Ok(checksum)
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let envelope = Envelope::new("millrace.validate");
    let summaries = match (&args.summaries, args.summaries_input) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => args.path.clone(),
        (None, false) => None,
    };
    let read = summaries.as_ref().or(args.path.as_ref()).cloned();
    let Some(read) = read else {
        bail!("give a PATH to validate or --summaries FILE");
    };
    let writes: Vec<paths::Write> = args
        .summary_out
        .iter()
        .map(|p| output("--summary-out", p, OutputKind::File))
        .collect();
    let role = if summaries.is_some() {
        "--summaries"
    } else {
        "input"
    };
    paths::check(&[Read::new(role, &read)], &writes, args.force)?;
    let started = Instant::now();
    let summary = if summaries.is_some() {
        valsort::validate_summaries(&read)?
    } else if is_std_stream(&read) {
        let bar = progress::records_bar("validate", 0);
        let summary =
            valsort::validate_reader(std::io::stdin().lock(), Path::new("standard input"), &|b| {
                progress::set_records(&bar, b)
            });
        bar.finish_and_clear();
        summary?
    } else {
        let bar = progress::records_bar("validate", total_bytes(&read));
        let summary = valsort::validate_path(&read, &|b| progress::set_records(&bar, b));
        bar.finish_and_clear();
        summary?
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &args.summary_out {
        PendingFile::with_bytes(out, "--summary-out", args.force, &summary.to_bytes())?
            .publish()?;
    }
    let mut stdout = std::io::stdout().lock();
    let records = u64::try_from(summary.records).unwrap_or(u64::MAX);
    let bytes = records.saturating_mul(100);
    if args.json {
        let mut body = summary.to_json();
        if let Some(body) = body.as_object_mut() {
            body.insert("command".into(), json!("validate"));
            body.insert("path".into(), json!(read));
            body.insert("wall_ms".into(), json!(seconds * 1e3));
            body.insert("mb_per_s".into(), json!(rate(bytes, seconds)));
        }
        let doc = envelope.wrap("ok", body);
        writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else if !args.quiet {
        for line in valsort::report_lines(&summary) {
            writeln!(stdout, "{line}")?;
        }
        writeln!(
            stdout,
            "validated {records} records ({:.1} MB) in {seconds:.2} s, {:.0} MB/s: {}",
            mb(bytes),
            rate(bytes, seconds),
            if summary.is_ordered() {
                "sorted"
            } else {
                "NOT sorted"
            }
        )?;
    }
    Ok(if summary.is_ordered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Bytes in a file or in the files of a folder (for the progress bar only).
fn total_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

fn sort_config(args: &SortArgs, input: PathBuf, output: PathBuf) -> Result<SortConfig> {
    let mut config = SortConfig::new(input, output);
    config.mode = match args.mode {
        ModeArg::Pipelined => ExecutionMode::Pipelined,
        ModeArg::Staged => ExecutionMode::Staged,
        ModeArg::MapReduce => ExecutionMode::MapReduce,
    };
    if config.mode != ExecutionMode::MapReduce
        && (args.map_sort_buffer.is_some() || args.slowstart.is_some())
    {
        bail!("--map-sort-buffer and --slowstart apply to --mode mapreduce only");
    }
    if args.map_sort_buffer == Some(0) {
        bail!("--map-sort-buffer must be at least one record (100 bytes)");
    }
    config.map_sort_buffer_bytes = args.map_sort_buffer;
    if args.split_bytes < engine::record::RECORD_LEN as u64 {
        bail!("--split-bytes must be at least one record (100 bytes)");
    }
    config.split_bytes = args.split_bytes;
    if let Some(share) = args.slowstart {
        config.slowstart = share;
    }
    if let Some(reducers) = args.reducers {
        config.reducers = reducers;
    }
    if let Some(maps) = args.maps {
        config.maps = maps;
    }
    config.parts = args.parts;
    config.force = args.force;
    config.max_attempts = args.max_attempts;
    if let Some(memory) = args.memory {
        if let Some(ram) = engine::memory::total_ram_bytes() {
            if memory > ram {
                bail!(
                    "--memory {memory} bytes is more than this machine's RAM ({ram} bytes); at most {ram} fit"
                );
            }
        }
        config.memory_bytes = memory;
    }
    config.spill_dirs = args.spill_dirs.clone();
    config.hybrid_wait =
        (args.hybrid_wait_ms > 0).then(|| Duration::from_millis(args.hybrid_wait_ms));
    config.spill_io = match args.spill_io {
        SpillIoArg::Auto => engine::spill::IoEngine::Auto,
        SpillIoArg::Uring => engine::spill::IoEngine::Uring,
        SpillIoArg::Pwrite => engine::spill::IoEngine::Pwrite,
    };
    config.compression = match args.compress {
        CompressArg::Auto => engine::spill::Compression::Auto,
        CompressArg::Lz4 => engine::spill::Compression::Lz4,
        CompressArg::None => engine::spill::Compression::None,
    };
    config.io = match args.io {
        IoArg::Auto => IoMode::Auto,
        IoArg::Direct => IoMode::Direct,
        IoArg::Buffered => IoMode::Buffered,
    };
    config.fit_default_parallelism(args.maps.is_none(), args.reducers.is_none());
    config.check_limits()?;
    Ok(config)
}

/// Runs a sort with a progress display, up to (not including) the rename of its output.
fn run_sort(config: &SortConfig) -> Result<terasort::FinishedSort> {
    let progress = Arc::new(Progress::default());
    let watch = progress::watch_sort(progress.clone());
    let finished = terasort::run_uncommitted(config, progress);
    drop(watch);
    Ok(finished?)
}

fn sort(args: SortArgs) -> Result<ExitCode> {
    if args.demo {
        return demo(&args);
    }
    let envelope = Envelope::new("millrace.sort");
    let (Some(input), Some(output_path)) = (args.input.clone(), args.output.clone()) else {
        bail!("give INPUT and OUTPUT, or --demo");
    };
    let config = sort_config(&args, input.clone(), output_path.clone())?;
    // Every path against every other before any work.
    let mut writes = vec![output(
        "output",
        &output_path,
        if args.parts {
            OutputKind::Folder
        } else {
            OutputKind::File
        },
    )];
    if let Some(timeline) = &args.timeline {
        writes.push(output("--timeline", timeline, OutputKind::File));
    }
    let mut reads = vec![Read::new("input", &input)];
    if args.spill_dirs.is_empty() {
        reads.push(Read::scratch(
            "the temp folder (TMPDIR)",
            std::env::temp_dir(),
        ));
    }
    reads.extend(
        args.spill_dirs
            .iter()
            .map(|dir| Read::scratch("--spill-dir", dir)),
    );
    paths::check(&reads, &writes, args.force)?;

    let report = sort_and_commit(&args, &config)?;
    if args.json {
        let doc = envelope.wrap("ok", sort_json(&report));
        outln!("{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_sort_summary(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the sort, then commits its outputs together: the timeline is written and synced under
/// its temp name before anything is renamed, and taken back if the output cannot be renamed,
/// so a failure leaves neither.
fn sort_and_commit(args: &SortArgs, config: &SortConfig) -> Result<SortReport> {
    let finished = run_sort(config)?;
    match &args.timeline {
        Some(path) => {
            let bytes = timeline_bytes(&finished.report.timeline, args.timeline_format)?;
            commit_with(path, args.force, &bytes, || Ok(finished.publish()?))
        }
        None => Ok(finished.publish()?),
    }
}

/// Writes and syncs `bytes` as the --timeline file under its temp name, publishes it, then
/// the job's output; if the output cannot be renamed into place (another process created it
/// meanwhile), the timeline is taken back and the command leaves neither.
fn commit_with<T>(
    timeline: &Path,
    force: bool,
    bytes: &[u8],
    publish: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let pending = PendingFile::with_bytes(timeline, "--timeline", force, bytes)?;
    // The small file first.
    let published = pending.publish()?;
    publish().inspect_err(|_| published.retract())
}

fn timeline_bytes(
    timeline: &engine::timeline::Timeline,
    format: TimelineFormat,
) -> Result<Vec<u8>> {
    Ok(match format {
        TimelineFormat::Json => serde_json::to_vec_pretty(timeline)?,
        TimelineFormat::Chrome => serde_json::to_vec(&timeline.to_chrome_trace())?,
    })
}

/// The `--json` summary: the report without per-subtask detail.
fn sort_json(report: &SortReport) -> Value {
    let t = &report.timeline;
    let mut summary = json!({
        "command": "sort",
        "input": report.input,
        "output": report.output,
        "mode": t.mode,
        "records": report.records,
        "bytes": report.bytes,
        "checksum": report.checksum,
        "maps": report.maps,
        "reducers": report.reducers,
        "wall_ms": report.wall_us as f64 / 1000.0,
        "mb_per_s": report.mb_per_s(),
        "cpu_s": report.cpu_s,
        "cpu_s_per_gb": report.cpu_s_per_gb(),
        "peak_rss_bytes": report.peak_rss_bytes,
        "plan": report.plan,
        "memory_budget_bytes": report.memory_budget_bytes,
        "io": report.io,
        "phases": t.phases.iter().map(|p| json!({
            "name": p.name.as_str(), "start_ms": p.start_us as f64 / 1000.0, "end_ms": p.end_us as f64 / 1000.0,
        })).collect::<Vec<_>>(),
        "overlap_ratio": t.overlap_ratio,
        "map_shuffle_overlap_ms": t.overlap_us(PhaseKind::Map, PhaseKind::Shuffle) as f64 / 1000.0,
        "backpressure_ms": t.subtasks.iter().map(|s| s.backpressure_us).sum::<u64>() as f64 / 1000.0,
    });
    // Only when the subtasks were placed on task executors (`MILLRACE_EXECUTORS`).
    if let Some(network) = &report.network {
        summary["network"] = json!(network);
    }
    summary
}

fn print_sort_summary(report: &SortReport) -> Result<()> {
    let t = &report.timeline;
    outln!(
        "sorted {} records ({:.1} MB) in {:.2} s, {:.0} MB/s, {} maps x {} reducers ({} mode)",
        report.records,
        report.bytes as f64 / 1e6,
        report.wall_us as f64 / 1e6,
        report.mb_per_s(),
        report.maps,
        report.reducers,
        t.mode
    )?;
    for phase in &t.phases {
        outln!(
            "  {:<11} {:>8.3} s .. {:>8.3} s  ({:.3} s)",
            phase.name.as_str(),
            phase.start_us as f64 / 1e6,
            phase.end_us as f64 / 1e6,
            phase.micros() as f64 / 1e6
        )?;
    }
    outln!(
        "  overlap: reducers received while maps ran for {:.3} s; sum of phases / wall = {:.2}",
        t.overlap_us(PhaseKind::Map, PhaseKind::Shuffle) as f64 / 1e6,
        t.overlap_ratio
    )?;
    let io = &report.io;
    outln!(
        "  {} plan: read {:.2} and wrote {:.2} bytes per input byte ({} spilled runs)",
        report.plan,
        io.reads_per_byte,
        io.writes_per_byte,
        io.spilled_runs
    )?;
    outln!(
        "  cpu {:.2} s ({:.2} s per GB), peak RSS {} MiB",
        report.cpu_s,
        report.cpu_s_per_gb(),
        report
            .peak_rss_bytes
            .map_or("?".into(), |b| (b >> 20).to_string())
    )?;
    outln!(
        "  checksum {} (input = output), output {}",
        report.checksum,
        report.output.display()
    )?;
    Ok(())
}

fn demo(args: &SortArgs) -> Result<ExitCode> {
    let records = gensort::parse_record_count(&args.demo_records)?;
    if let Some(path) = &args.timeline {
        paths::check(&[], &[output_timeline(path)], args.force)?;
    }
    // An owner-locked job folder: removed at the end, on a signal, or by the next run if this
    // process is killed.
    let spill_dir = args
        .spill_dirs
        .first()
        .cloned()
        .unwrap_or_else(std::env::temp_dir);
    let dir = engine::tempdir::JobTempDir::create(&spill_dir)?;
    let input = dir.path().join("input.dat");
    let output = dir.path().join("sorted.dat");
    let spec = GenSpec {
        format: Format::Binary,
        skew: false,
        start: 0,
        records,
    };
    // Flags first: nothing is generated for a sort that could not run.
    let config = sort_config(args, input.clone(), output.clone())?;
    check_free_space(&input, 2 * records as u128 * 100)?;
    outln!(
        "demo: generating {records} gensort records ({:.1} MB) in {}",
        records as f64 * 100.0 / 1e6,
        dir.path().display()
    )?;
    let started = Instant::now();
    let generated = generate(&spec, &input, false)?;
    outln!(
        "  generated in {:.2} s, checksum {generated}",
        started.elapsed().as_secs_f64()
    )?;
    let report = sort_and_commit(args, &config)?;
    print_sort_summary(&report)?;
    let started = Instant::now();
    let summary = valsort::validate_path(&output, &|_| {})?;
    let valid = summary.is_ordered() && summary.to_checksum() == generated;
    outln!(
        "  validated in {:.2} s: {} records, checksum {}, {}",
        started.elapsed().as_secs_f64(),
        summary.records,
        summary.to_checksum(),
        if valid {
            "sorted and a permutation of the input"
        } else {
            "INVALID"
        }
    )?;
    drop(dir);
    if !valid {
        bail!("the demo output is not valid; this is a bug, please report it");
    }
    Ok(ExitCode::SUCCESS)
}

fn output_timeline(path: &Path) -> paths::Write {
    output("--timeline", path, OutputKind::File)
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    match args.what {
        None => bench_sort(args.sort),
        Some(BenchCommand::Sort(args)) => bench_sort(args),
        Some(BenchCommand::Jobs(args)) => bench_jobs(args),
    }
}

/// The command line as typed, for a report: arguments with spaces or quotes are quoted.
fn command_line() -> String {
    std::env::args_os()
        .enumerate()
        .map(|(i, arg)| {
            let text = if i == 0 {
                Path::new(&arg)
                    .file_name()
                    .map_or("millrace".into(), |n| n.to_string_lossy().into_owned())
            } else {
                arg.to_string_lossy().into_owned()
            };
            if !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c))
            {
                text
            } else {
                format!("'{}'", text.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench_jobs(args: BenchJobsArgs) -> Result<ExitCode> {
    use bench_sort::bench::jobs::{self, Job, JobPeer, JobsConfig};
    let envelope = Envelope::new("millrace.bench.jobs");
    let config = JobsConfig {
        dir: args.dir,
        scale: args.scale,
        jobs: Job::parse_list(&args.jobs)?,
        peers: JobPeer::parse_list(&args.peers)?,
        spill_memory_bytes: args.spill_memory,
        runs: args.runs as usize,
        keep: args.keep,
        millrace_exe: std::env::current_exe()
            .context("cannot find the millrace binary to run the jobs")?,
        peers_dir: None,
        command: command_line(),
    };
    let report = jobs::run(&config, &|line| eprintln!("{line}")).context("bench jobs failed")?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let body: Value = serde_json::from_str(&report.to_json())?;
        let status = if report.passed() { "ok" } else { "failed" };
        let doc = envelope.wrap(status, json!({ "command": "bench jobs", "report": body }));
        writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(stdout, "{}", report.to_markdown())?;
    }
    if report.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &report.failures {
        eprintln!("bench jobs: {failure}");
    }
    Ok(ExitCode::from(1))
}

fn bench_sort(args: BenchSortArgs) -> Result<ExitCode> {
    use bench_sort::bench::{self, BenchConfig, OutOfCoreConfig};
    let envelope = Envelope::new("millrace.bench");
    let out_of_core = if args.out_of_core {
        let records = gensort::parse_record_count(&args.ooc_records)
            .with_context(|| format!("invalid --ooc-records value {:?}", args.ooc_records))?;
        Some(OutOfCoreConfig {
            records,
            memory_bytes: args.memory,
        })
    } else {
        None
    };
    let config = BenchConfig {
        records: bench::parse_record_counts(&args.records)?,
        ascii: args.ascii,
        dir: args.dir,
        keep: args.keep,
        runs: args.runs as usize,
        millrace_exe: std::env::current_exe()
            .context("cannot find the millrace binary to run the sorts")?,
        out_of_core,
        extra_modes: args
            .modes
            .into_iter()
            .filter(|m| m != bench::BASE_MODE)
            .collect(),
        peers: bench::Peer::parse_list(&args.peers)?,
        peers_dir: None,
    };
    let report = bench::run(&config, &|line| eprintln!("{line}")).context("bench sort failed")?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let body: Value = serde_json::from_str(&report.to_json())?;
        let doc = envelope.wrap("ok", json!({ "command": "bench", "report": body }));
        writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(stdout, "{}", report.to_markdown())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bench --modes` takes exactly what `sort --mode` takes: a mode added to `ModeArg` must
    /// be added to `bench::SORT_MODES` too.
    #[test]
    fn bench_modes_are_the_sort_modes() {
        let sort_modes: Vec<String> = ModeArg::value_variants()
            .iter()
            .filter_map(|m| m.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(sort_modes, bench_sort::bench::SORT_MODES);
    }
}
