//! `millrace`: the command line. Parses flags into validated configs, calls the libraries and
//! prints; the only place that uses `anyhow`.
//!
//! Exit codes: 0 success, 1 validation found records out of order, 2 error (bad input, I/O,
//! internal), 130 interrupted.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench_sort::gensort::{self, Format, GenSpec};
use bench_sort::valsort;
use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::output::IoMode;
use engine::terasort::{self, ExecutionMode, Progress, SortConfig, SortReport};
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Generate Sort Benchmark records, byte-identical to gensort 1.5.
    Gen(GenArgs),
    /// Check that records are sorted by key (valsort-compatible) and print their checksum.
    Validate(ValidateArgs),
    /// Sort 100-byte records by their 10-byte key (TeraSort) through the engine.
    #[command(alias = "terasort")]
    Sort(SortArgs),
    /// Measure sorts against this machine's floor and against GNU sort.
    Bench(BenchArgs),
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
    /// Print the record count and checksum (gensort -c).
    #[arg(long, short = 'c')]
    checksum: bool,
    /// Records to generate: a count with an optional decimal suffix k, M or G (10M = 10^7).
    records: String,
    /// Output file; /dev/null computes the checksum without writing.
    output: PathBuf,
}

#[derive(Args)]
struct ValidateArgs {
    /// A file of records, or a folder of part files read in name order.
    #[arg(required_unless_present = "summaries")]
    path: Option<PathBuf>,
    /// Check a concatenation of 280-byte partition summaries instead (valsort -s).
    #[arg(long, value_name = "FILE", conflicts_with = "path")]
    summaries: Option<PathBuf>,
    /// Write the summary in valsort's 280-byte layout (valsort -o).
    #[arg(long, value_name = "FILE")]
    summary_out: Option<PathBuf>,
    /// Print a JSON summary instead of valsort's lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Pipelined,
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

/// Parses a byte size: a number with an optional unit (k, M, G, T for powers of 1000; KiB,
/// MiB, GiB, TiB for powers of 1024; case-insensitive).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512MiB or 2GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use k, M, G, KiB, MiB or GiB"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[derive(Args)]
struct SortArgs {
    /// File of 100-byte records (gensort binary or ASCII, or any 100-byte records).
    #[arg(required_unless_present = "demo")]
    input: Option<PathBuf>,
    /// Output file (or folder with --parts); replaced atomically when the sort succeeds.
    #[arg(required_unless_present = "demo")]
    output: Option<PathBuf>,
    /// Generate 10M records (1 GB) in a temp folder, sort, validate, summarize, clean up.
    #[arg(long, conflicts_with_all = ["input", "output"])]
    demo: bool,
    /// Records for --demo.
    #[arg(long, default_value = "10M", requires = "demo", hide = true)]
    demo_records: String,
    /// How map and reduce are connected.
    #[arg(long, value_enum, default_value = "pipelined")]
    mode: ModeArg,
    /// Reduce subtasks (output ranges). Default: the number of cores.
    #[arg(long)]
    reducers: Option<usize>,
    /// Map subtasks. Default: the number of cores.
    #[arg(long)]
    maps: Option<usize>,
    /// Write one part file per reducer (part-00000, …) into the OUTPUT folder.
    #[arg(long)]
    parts: bool,
    /// How output reaches the disk: direct I/O when possible (auto), always, or never.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoArg,
    /// Memory budget (e.g. 512MiB, 2GiB, 4G; plain numbers are bytes). Default: half the RAM.
    /// Inputs that do not fit are sorted out of core: sorted runs spilled, then merged.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// Folder for spilled runs (repeat for several disks, used round-robin). Default: the
    /// system temp folder.
    #[arg(long = "spill-dir", value_name = "DIR")]
    spill_dirs: Vec<PathBuf>,
    /// How spill files are written.
    #[arg(long, value_enum, default_value = "auto")]
    spill_io: SpillIoArg,
    /// Compression of spilled blocks: lz4 when it saves 10% (auto), always, or never.
    #[arg(long, value_enum, default_value = "auto")]
    compress: CompressArg,
    /// Out of core, how long a map waits for a busy reducer before it spills that buffer to
    /// its own segment file instead (hybrid exchange); 0 turns this off.
    #[arg(long, value_name = "MS", default_value = "50")]
    hybrid_wait_ms: u64,
    /// Write the job timeline (every subtask's start/end, bytes, records) as JSON.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// What to benchmark.
    #[arg(value_parser = ["sort"], default_value = "sort")]
    what: String,
    /// Records per run (k, M, G suffixes); repeat for several sizes.
    #[arg(long, default_value = "10M")]
    records: Vec<String>,
    /// Run ASCII inputs too (binary always runs).
    #[arg(long)]
    ascii: bool,
    /// Folder for benchmark data (git-ignored); deleted afterwards unless --keep.
    #[arg(long, default_value = "bench-data")]
    dir: PathBuf,
    /// Keep the generated data.
    #[arg(long)]
    keep: bool,
    /// Also print the report as JSON (it is always written to DIR/bench-report.json).
    #[arg(long)]
    json: bool,
    /// Floor and sort runs per case, interleaved; medians are reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Add the out-of-core case: a binary input far larger than --memory, sorted with spills
    /// against the two-pass disk floor; default, pwrite, no-lz4 and lz4 variants. Needs 3.3×
    /// the input in free space (checked first).
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
        value_parser = parse_size,
        requires = "out_of_core"
    )]
    memory: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    engine::memory::cap_allocator_arenas(2);
    let cli = Cli::parse();
    remove_temp_files_on_interrupt();
    let result = match cli.command {
        Command::Gen(args) => gen(args),
        Command::Validate(args) => validate(args),
        Command::Sort(args) => sort(args),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// On Ctrl-C or SIGTERM: delete every registered temp file and folder, then exit with 130.
fn remove_temp_files_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        tracing::warn!("cannot install signal handlers; an interrupted run may leave temp files");
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            engine::cleanup::remove_all();
            eprintln!("interrupted (signal {signal}); temp files removed");
            std::process::exit(130);
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

fn interactive() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A byte-count progress bar on a terminal, hidden otherwise.
fn progress_bar(total_bytes: u64, what: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Where a file is written before it is renamed into place.
fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.millrace-tmp-{}", std::process::id()))
}

fn gen(args: GenArgs) -> Result<ExitCode> {
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
    let checksum = generate(&spec, &args.output)?;
    if args.checksum {
        println!("Records: {}", checksum.records);
        println!("Checksum: {checksum}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Generates into a temp file and renames it into place, so a failed run leaves nothing.
fn generate(spec: &GenSpec, output: &Path) -> Result<engine::record::Checksum> {
    let bar = progress_bar(spec.records * 100, "gen");
    if output == Path::new("/dev/null") {
        return Ok(gensort::generate_to_file(spec, output, &|b| {
            bar.set_position(b)
        })?);
    }
    if output.is_dir() {
        bail!("output {} is a folder; give a file path", output.display());
    }
    let temp = temp_path_for(output);
    let _guard = engine::cleanup::register(&temp);
    let result = gensort::generate_to_file(spec, &temp, &|b| bar.set_position(b));
    bar.finish_and_clear();
    match result {
        Ok(checksum) => {
            std::fs::rename(&temp, output).with_context(|| {
                format!("cannot rename {} to {}", temp.display(), output.display())
            })?;
            Ok(checksum)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error.for_path(output).into())
        }
    }
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let summary = match (&args.summaries, &args.path) {
        (Some(summaries), _) => valsort::validate_summaries(summaries)?,
        (None, Some(path)) => {
            let total = total_bytes(path);
            let bar = progress_bar(total, "validate");
            let summary = valsort::validate_path(path, &|b| bar.set_position(b));
            bar.finish_and_clear();
            summary?
        }
        (None, None) => bail!("give a PATH to validate or --summaries FILE"),
    };
    if let Some(out) = &args.summary_out {
        std::fs::write(out, summary.to_bytes())
            .with_context(|| format!("cannot write summary {}", out.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&summary.to_json())?
        )?;
    } else {
        for line in valsort::report_lines(&summary) {
            writeln!(stdout, "{line}")?;
        }
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
    };
    if let Some(reducers) = args.reducers {
        if reducers == 0 {
            bail!("--reducers must be at least 1");
        }
        config.reducers = reducers;
    }
    if let Some(maps) = args.maps {
        if maps == 0 {
            bail!("--maps must be at least 1");
        }
        config.maps = maps;
    }
    config.parts = args.parts;
    if let Some(memory) = args.memory {
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
    Ok(config)
}

/// Runs a sort with a progress bar; returns its report.
fn run_sort(config: &SortConfig) -> Result<SortReport> {
    let progress = Arc::new(Progress::default());
    let total = std::fs::metadata(&config.input)
        .map(|m| m.len())
        .unwrap_or(0);
    let bar = progress_bar(total * 2, "sort");
    // Only a visible bar needs polling; otherwise the job runs alone.
    let watcher = (!bar.is_hidden()).then(|| {
        let progress = progress.clone();
        let bar = bar.clone();
        std::thread::spawn(move || {
            while !bar.is_finished() {
                let done = progress.read_bytes.load(Ordering::Relaxed)
                    + progress.written_bytes.load(Ordering::Relaxed);
                bar.set_position(done);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let report = terasort::run(config, progress);
    bar.finish_and_clear();
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    Ok(report?)
}

fn sort(args: SortArgs) -> Result<ExitCode> {
    if args.demo {
        return demo(&args);
    }
    let (Some(input), Some(output)) = (args.input.clone(), args.output.clone()) else {
        bail!("give INPUT and OUTPUT, or --demo");
    };
    let config = sort_config(&args, input, output)?;
    let report = run_sort(&config)?;
    if let Some(path) = &args.timeline {
        write_timeline(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sort_json(&report))?);
    } else {
        print_sort_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn write_timeline(path: &Path, report: &SortReport) -> Result<()> {
    let json = serde_json::to_string_pretty(&report.timeline)?;
    std::fs::write(path, json).with_context(|| format!("cannot write timeline {}", path.display()))
}

/// The `--json` summary: the report without per-subtask detail.
fn sort_json(report: &SortReport) -> serde_json::Value {
    let t = &report.timeline;
    serde_json::json!({
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
        "peak_rss_bytes": report.peak_rss_bytes,
        "plan": report.plan,
        "memory_budget_bytes": report.memory_budget_bytes,
        "io": report.io,
        "phases": t.phases.iter().map(|p| serde_json::json!({
            "name": p.name, "start_ms": p.start_us as f64 / 1000.0, "end_ms": p.end_us as f64 / 1000.0,
        })).collect::<Vec<_>>(),
        "overlap_ratio": t.overlap_ratio,
        "map_shuffle_overlap_ms": t.overlap_us("map", "shuffle") as f64 / 1000.0,
        "backpressure_ms": t.subtasks.iter().map(|s| s.backpressure_us).sum::<u64>() as f64 / 1000.0,
    })
}

fn print_sort_summary(report: &SortReport) {
    let t = &report.timeline;
    println!(
        "sorted {} records ({:.1} MB) in {:.2} s, {:.0} MB/s, {} maps x {} reducers ({} mode)",
        report.records,
        report.bytes as f64 / 1e6,
        report.wall_us as f64 / 1e6,
        report.mb_per_s(),
        report.maps,
        report.reducers,
        t.mode
    );
    for phase in &t.phases {
        println!(
            "  {:<11} {:>8.3} s .. {:>8.3} s  ({:.3} s)",
            phase.name,
            phase.start_us as f64 / 1e6,
            phase.end_us as f64 / 1e6,
            phase.micros() as f64 / 1e6
        );
    }
    println!(
        "  overlap: reducers received while maps ran for {:.3} s; sum of phases / wall = {:.2}",
        t.overlap_us("map", "shuffle") as f64 / 1e6,
        t.overlap_ratio
    );
    let io = &report.io;
    println!(
        "  {} plan: read {:.2} and wrote {:.2} bytes per input byte ({} spilled runs)",
        report.plan, io.reads_per_byte, io.writes_per_byte, io.spilled_runs
    );
    println!(
        "  checksum {} (input = output), output {}",
        report.checksum,
        report.output.display()
    );
}

fn demo(args: &SortArgs) -> Result<ExitCode> {
    let records = gensort::parse_record_count(&args.demo_records)?;
    let dir = tempfile::Builder::new()
        .prefix("millrace-demo-")
        .tempdir()
        .context("cannot create a temp folder")?;
    let _guard = engine::cleanup::register(dir.path());
    let input = dir.path().join("input.dat");
    let output = dir.path().join("sorted.dat");
    let spec = GenSpec {
        format: Format::Binary,
        skew: false,
        start: 0,
        records,
    };
    println!(
        "demo: generating {records} gensort records ({:.1} MB) in {}",
        records as f64 * 100.0 / 1e6,
        dir.path().display()
    );
    let started = Instant::now();
    let generated = generate(&spec, &input)?;
    println!(
        "  generated in {:.2} s, checksum {generated}",
        started.elapsed().as_secs_f64()
    );
    let config = sort_config(args, input, output.clone())?;
    let report = run_sort(&config)?;
    print_sort_summary(&report);
    let started = Instant::now();
    let summary = valsort::validate_path(&output, &|_| {})?;
    let valid = summary.is_ordered() && summary.to_checksum() == generated;
    println!(
        "  validated in {:.2} s: {} records, checksum {}, {}",
        started.elapsed().as_secs_f64(),
        summary.records,
        summary.to_checksum(),
        if valid {
            "sorted and a permutation of the input"
        } else {
            "INVALID"
        }
    );
    if let Some(path) = &args.timeline {
        write_timeline(path, &report)?;
    }
    drop(dir);
    if !valid {
        bail!("the demo output is not valid; this is a bug, please report it");
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    use bench_sort::bench::{self, BenchConfig, OutOfCoreConfig};
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
    };
    let report = bench::run(&config, &|line| eprintln!("{line}")).context("bench sort failed")?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", report.to_markdown())?;
    if args.json {
        writeln!(stdout, "{}", report.to_json())?;
    }
    Ok(ExitCode::SUCCESS)
}
