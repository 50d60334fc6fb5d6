//! `millrace bench jobs`: the general batch jobs (word count, group-by, join) beside DuckDB,
//! Polars, DataFusion and Spark `local[2]` on the same generated files, in the same run, in
//! memory and under a budget that forces spilling; every output compared with every other.
//!
//! 1. Set up `jobs.sh` (embedded, written to `<peers dir>/scripts/` like `run.sh`): `setup
//!    gen` (numpy and pyarrow, for the generator and the comparison; the bench fails without
//!    it), then `setup PEER` per asked peer; a peer that cannot be installed is skipped with
//!    the install step.
//! 2. Generate the inputs once with `jobs.sh gen` into `<work>/data/` (sizes × `--scale`, see
//!    [`JobSizes`]): text for the word count, sales as CSV and Parquet for the group-by,
//!    orders and customers as CSV and Parquet for the join.
//! 3. Write a millrace job spec per job and format (`<work>/<job>-<format>.toml`, computing
//!    exactly what `jobs.py` computes) and plan it in process: a spec this build refuses (a
//!    Parquet source before it exists) makes that case `unsupported` with the error line.
//! 4. Per job and format, `--runs` times, per memory setting (in memory, then the spill
//!    budget): `millrace run SPEC --json --force --spill-dir <work>/spill [--memory BUDGET]`,
//!    then each peer `jobs.sh run PEER JOB OUT --input … [--memory-limit BUDGET]` (Spark at
//!    least 512 MiB; Polars has no limit and is not run under the budget). Every child is
//!    timed from spawn to exit plus an fsync of its output, with CPU seconds and peak RSS of
//!    its process tree from `wait4`; millrace's JSON adds `spilled_bytes`, a peer's JSON line
//!    its status (`ok`, `out_of_memory`, `error`). A tool that fails is a row with its status
//!    and error line, not a crashed bench.
//! 5. Per job, every finished output (millrace's folder of parts; a peer's CSV file) against
//!    every other with `jobs.sh compare --json` (multisets of rows, floats within 1e-9).
//! 6. Write `<dir>/bench-jobs-report.json` and `bench-jobs-report.md`; remove inputs and
//!    outputs unless `--keep`. The report lists [`JobsReport::failures`]: outputs that
//!    differ (naming the job and both tools) and millrace runs that did not finish; the CLI
//!    exits 1 when there are any.

mod config;
mod report;
mod spec;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};

use engine::paths;

pub use config::{
    default_spill_memory, parse_scale, InputFormat, Job, JobPeer, JobSizes, JobsConfig,
    MemorySetting, FULL_ORDERS, FULL_SALES_ROWS, FULL_SPILL_MEMORY_BYTES, FULL_TEXT_LINES,
    MIN_SPILL_MEMORY_BYTES, SPARK_MIN_HEAP_BYTES,
};
pub use report::{
    FastestTarget, JobsReport, SparkTarget, SpillOutcome, Targets, ToolRow, ToolSetup,
    FASTEST_TARGET, MILLRACE, SPARK_TARGET,
};
pub use spec::DataSet;
pub use tools::{Comparison, Difference, RunStatus, Setup, ToolRun};

use super::machine::{free_bytes, git_commit};
use super::peers::{peers_dir, write_scripts};
use super::work::{remove_leftovers, WorkDir};
use super::{BenchError, Machine};
use tools::Script;

/// The report's names in the bench folder.
pub const REPORT_JSON: &str = "bench-jobs-report.json";
pub const REPORT_MARKDOWN: &str = "bench-jobs-report.md";

/// Runs the bench (see [the steps](self)) and writes its report; `progress` gets one short
/// line per step. Tool failures and differing outputs are in the report
/// ([`JobsReport::failures`]), not errors; errors are the bench's own (no generator, no
/// space, an I/O error on its files).
pub fn run(config: &JobsConfig, progress: &dyn Fn(&str)) -> Result<JobsReport, BenchError> {
    config.check()?;
    let report_paths = [
        config.dir.join(REPORT_JSON),
        config.dir.join(REPORT_MARKDOWN),
    ];
    check_report_paths(config, &report_paths)?;
    let commit = git_commit();
    let sizes = JobSizes::scaled(config.scale);
    let budget = config.spill_memory_bytes();
    let mut work = WorkDir::create(&config.dir)?;
    // Every run uses this copy, so a rebuild while the bench runs cannot mix two versions.
    let exe = work.file("millrace");
    fs::copy(&config.millrace_exe, &exe).map_err(|source| BenchError::Io {
        op: "copy the millrace binary to",
        path: exe.clone(),
        source,
    })?;
    // Inputs, and as much again for spills and outputs.
    let needed_bytes = sizes.input_bytes_estimate(&config.jobs).saturating_mul(2);
    let available_bytes = free_bytes(&work.path)?;
    if available_bytes < needed_bytes {
        return Err(BenchError::NoSpace {
            dir: work.path.clone(),
            what: format!(
                "the inputs of scale {} (and as much for spills and outputs)",
                config.scale
            ),
            needed_bytes,
            available_bytes,
        });
    }
    let dir = config
        .peers_dir
        .clone()
        .unwrap_or_else(|| peers_dir(&config.dir));
    write_scripts(&dir.join("scripts"))?;
    let script = Script {
        path: dir.join("scripts").join("jobs.sh"),
        peers_dir: dir.clone(),
    };
    progress(&format!(
        "setting up the data generator in {} (the first time installs numpy and pyarrow)…",
        dir.display()
    ));
    if let Setup::Skipped { reason } = script.setup("gen")? {
        return Err(BenchError::NoGenerator { reason });
    }
    let mut tools = vec![ToolSetup {
        tool: MILLRACE,
        setup: Setup::Ready {
            version: match &commit {
                Some(commit) => format!("millrace {} (commit {commit})", env!("CARGO_PKG_VERSION")),
                None => format!("millrace {}", env!("CARGO_PKG_VERSION")),
            },
        },
    }];
    let mut peers = Vec::new();
    for &peer in &config.peers {
        progress(&format!("setting up {peer} (the first time installs it)…"));
        // Any failure of a peer's setup skips it (with the script's last line): the bench
        // measures the peers that run here.
        let setup = match script.setup(peer.name()) {
            Err(BenchError::PeerSetup {
                status,
                stderr_tail,
                ..
            }) => Setup::Skipped {
                reason: format!(
                    "jobs.sh setup {peer} failed ({status}): {}",
                    stderr_tail.lines().last().unwrap_or("no output")
                ),
            },
            setup => setup?,
        };
        match &setup {
            Setup::Ready { version } => {
                progress(&format!("{peer}: {version}"));
                peers.push(peer);
            }
            Setup::Skipped { reason } => progress(&format!("{peer}: skipped — {reason}")),
        }
        tools.push(ToolSetup {
            tool: peer.name(),
            setup,
        });
    }

    let spill_dir = work.file("spill");
    let out_dir = work.file(spec::OUT_DIR);
    for folder in [&spill_dir, &out_dir] {
        fs::create_dir_all(folder).map_err(|source| BenchError::Io {
            op: "create the bench folder",
            path: folder.clone(),
            source,
        })?;
    }
    let mut data_sets: Vec<DataSet> = Vec::new();
    let mut rows = Vec::new();
    let mut comparisons = Vec::new();
    for &job in &config.jobs {
        let mut outputs: Vec<Output> = Vec::new();
        for &format in job.formats() {
            let mut data = DataSet::planned(job, format, &sizes, &work.path);
            progress(&format!(
                "generating {} {} ({} rows)…",
                data.kind,
                format.name(),
                data.rows
            ));
            script.generate(&mut data)?;
            progress(&format!("  {}", data.describe()));
            let case = Case {
                config,
                exe: &exe,
                script: &script,
                peers: &peers,
                job,
                data: &data,
                work: &work.path,
                spill_dir: &spill_dir,
                budget,
            };
            let result = case.run(progress)?;
            data.floor_s = crate::bench::report::median(&result.floor_runs_s).unwrap_or(0.0);
            data.floor_runs_s = result.floor_runs_s;
            rows.extend(result.rows);
            outputs.extend(result.outputs);
            if !config.keep {
                remove_path(&data.gen_target())?;
            }
            data_sets.push(data);
        }
        progress(&format!(
            "comparing the {} outputs of {job}…",
            outputs.len()
        ));
        let comparison = script.compare(job, &outputs)?;
        progress(&format!(
            "  {job}: {}",
            if comparison.same {
                format!("{} outputs, all the same", comparison.outputs)
            } else {
                format!("{} differences", comparison.differences.len())
            }
        ));
        comparisons.push(comparison);
        if !config.keep {
            for (_, path) in &outputs {
                remove_path(path)?;
            }
        }
    }
    if config.keep {
        for name in [spec::DATA_DIR, spec::OUT_DIR] {
            let path = work.file(name);
            work.keep(&path);
        }
        for job in &config.jobs {
            for format in job.formats() {
                work.keep(&spec::spec_path(&work.path, *job, *format));
            }
        }
    }
    report::relate_to_millrace(&mut rows);
    report::relate_to_floor(&mut rows, &data_sets);
    let report = JobsReport {
        machine: Machine::detect(&config.dir),
        commit,
        command: config.command.clone(),
        unix_time_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        scale: config.scale,
        sizes,
        runs: config.runs,
        spill_memory_bytes: budget,
        data: data_sets,
        tools,
        targets: Targets::from_rows(&rows),
        failures: report::failures(&rows, &comparisons),
        rows,
        comparisons,
    };
    check_report_paths(config, &report_paths)?;
    super::write_report(&report_paths[0], report.to_json())?;
    super::write_report(&report_paths[1], report.to_markdown())?;
    progress(&format!(
        "report written to {} and {}",
        report_paths[0].display(),
        report_paths[1].display()
    ));
    if config.keep {
        progress(&format!(
            "inputs, specs and outputs kept in {}",
            work.path.display()
        ));
    }
    Ok(report)
}

/// The report's names must be usable before minutes are spent, and again at the end.
fn check_report_paths(config: &JobsConfig, report_paths: &[PathBuf]) -> Result<(), BenchError> {
    if !config.dir.is_dir() {
        return Ok(());
    }
    let writes: Vec<paths::Write> = report_paths
        .iter()
        .map(|path| paths::Write::new("bench report", path, paths::OutputKind::File))
        .collect();
    paths::check(&[], &writes, true).map_err(|source| BenchError::Output {
        source: Box::new(source),
    })
}

/// A finished output: its label in the report (tool, format, memory, run) and its path.
type Output = (String, PathBuf);

/// What a [`Case`] measured.
struct CaseResult {
    rows: Vec<ToolRow>,
    /// The (label, path) of every finished output.
    outputs: Vec<Output>,
    /// The floor of each run.
    floor_runs_s: Vec<f64>,
}

/// One job on one input: every run of every tool in both memory settings.
struct Case<'a> {
    config: &'a JobsConfig,
    exe: &'a Path,
    script: &'a Script,
    peers: &'a [JobPeer],
    job: Job,
    data: &'a DataSet,
    work: &'a Path,
    spill_dir: &'a Path,
    budget: u64,
}

impl Case<'_> {
    /// Every run of every tool, and the floor before each run.
    fn run(&self, progress: &dyn Fn(&str)) -> Result<CaseResult, BenchError> {
        let (job, format) = (self.job, self.data.format);
        let spec_path = spec::spec_path(self.work, job, format);
        fs::write(&spec_path, spec::spec_text(job, self.data, self.work)).map_err(|source| {
            BenchError::Io {
                op: "write the job spec",
                path: spec_path.clone(),
                source,
            }
        })?;
        // A spec this build refuses is not run; only a Parquet one may be (its source is
        // newer than the others), any other is a failure of millrace.
        let refused = match engine::batch::plan(&engine::batch::BatchJobConfig {
            spec: spec_path.clone(),
            ..Default::default()
        }) {
            Ok(_) => None,
            Err(error) => {
                // Paths relative to the work folder: the error names the spec (twice).
                let work = format!("{}/", self.work.display());
                let reason = tools::short(&error.to_string().replace(&work, ""));
                progress(&format!(
                    "  millrace refuses {}: {reason}",
                    spec_path.display()
                ));
                Some(ToolRun {
                    status: if format == InputFormat::Parquet {
                        RunStatus::Unsupported
                    } else {
                        RunStatus::Failed
                    },
                    ..ToolRun::unsupported(reason)
                })
            }
        };
        let sink = self.work.join(spec::sink_path(job, format));
        // (memory setting, tool) → runs, in the order they ran.
        let mut runs: Vec<((MemorySetting, &'static str), Vec<ToolRun>)> = Vec::new();
        let mut record = |key: (MemorySetting, &'static str), run: ToolRun| match runs
            .iter_mut()
            .find(|(k, _)| *k == key)
        {
            Some((_, list)) => list.push(run),
            None => runs.push((key, vec![run])),
        };
        let mut outputs = Vec::new();
        let mut floor_runs_s = Vec::new();
        for index in 1..=self.config.runs {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let floor =
                crate::bench::floor::read_files(&self.data.files, threads).map_err(|source| {
                    BenchError::Io {
                        op: "read the inputs (the floor)",
                        path: self.data.files[0].clone(),
                        source,
                    }
                })?;
            progress(&format!(
                "{job} {} floor run {index}: {:.2} s to read {}",
                format.name(),
                floor.as_secs_f64(),
                self.data.describe()
            ));
            floor_runs_s.push(floor.as_secs_f64());
            // Run r starts with the other memory setting than run r - 1, so that neither
            // always comes first (after the generator, or the other format).
            let mut order = MemorySetting::ALL;
            order.rotate_left((index - 1) % MemorySetting::ALL.len());
            for memory in order {
                let what = format!(
                    "{job} {} {} run {index}/{}",
                    format.name(),
                    memory.name(),
                    self.config.runs
                );
                let label = |tool: &str| {
                    let mut label = format!("{tool} {} {}", format.name(), memory.name());
                    if self.config.runs > 1 {
                        label += &format!(" run {index}");
                    }
                    label
                };
                let stem = format!("{job}-{}-{}-{index}", format.name(), memory.name());
                // millrace
                let run = match &refused {
                    Some(run) => run.clone(),
                    None => {
                        let keep_as = self
                            .work
                            .join(spec::OUT_DIR)
                            .join(format!("{stem}-{MILLRACE}"));
                        let limit = (memory == MemorySetting::Spill).then_some(self.budget);
                        let run = tools::run_millrace(
                            self.exe,
                            &spec_path,
                            limit,
                            self.spill_dir,
                            &sink,
                            &keep_as,
                        )?;
                        remove_leftovers(self.spill_dir, progress)?;
                        if run.status == RunStatus::Ok {
                            outputs.push((label(MILLRACE), keep_as));
                        }
                        run
                    }
                };
                progress(&format!("{what}: {}", describe_run(MILLRACE, &run)));
                record((memory, MILLRACE), run);
                for &peer in self.peers {
                    let limit = match memory {
                        MemorySetting::InMemory => None,
                        MemorySetting::Spill if !peer.has_memory_limit() => {
                            let run = ToolRun::unsupported(format!(
                                "{peer} has no memory limit; not run under the budget"
                            ));
                            record((memory, peer.name()), run);
                            continue;
                        }
                        MemorySetting::Spill => Some(peer.memory_limit(self.budget)),
                    };
                    let out = self
                        .work
                        .join(spec::OUT_DIR)
                        .join(format!("{stem}-{peer}.csv"));
                    let run = self.script.run_peer(peer, job, self.data, &out, limit)?;
                    progress(&format!("{what}: {}", describe_run(peer.name(), &run)));
                    if run.status == RunStatus::Ok {
                        outputs.push((label(peer.name()), out));
                    } else {
                        remove_path(&out)?;
                    }
                    record((memory, peer.name()), run);
                }
            }
        }
        let rows = runs
            .into_iter()
            .map(|((memory, tool), runs)| {
                let limit = match (memory, JobPeer::ALL.iter().find(|p| p.name() == tool)) {
                    (MemorySetting::InMemory, _) => None,
                    (MemorySetting::Spill, Some(peer)) if !peer.has_memory_limit() => None,
                    (MemorySetting::Spill, Some(peer)) => Some(peer.memory_limit(self.budget)),
                    (MemorySetting::Spill, None) => Some(self.budget),
                };
                ToolRow::new(job, format, memory, tool, limit, runs)
            })
            .collect::<Vec<_>>();
        // In the report: per memory setting, millrace first, then the peers in order.
        let mut ordered = Vec::with_capacity(rows.len());
        for memory in MemorySetting::ALL {
            ordered.extend(rows.iter().filter(|r| r.memory == memory).cloned());
        }
        Ok(CaseResult {
            rows: ordered,
            outputs,
            floor_runs_s,
        })
    }
}

/// `duckdb 1.23 s, 0.80 CPU s, 150 MiB` or `duckdb: out of memory — …`.
fn describe_run(tool: &str, run: &ToolRun) -> String {
    match run.status {
        RunStatus::Ok => {
            let spilled = match run.spilled_bytes {
                Some(bytes) if bytes > 0 => {
                    format!(", spilled {:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
                }
                _ => String::new(),
            };
            format!(
                "{tool} {:.2} s, {:.2} CPU s, {} MiB{spilled}",
                run.wall_s,
                run.cpu_s,
                run.peak_rss_bytes >> 20
            )
        }
        status => format!(
            "{tool}: {} — {}",
            status.name(),
            run.error.as_deref().unwrap_or("")
        ),
    }
}

/// Removes a file or folder the bench made, ignoring one that is gone.
fn remove_path(path: &Path) -> Result<(), BenchError> {
    let removed = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(BenchError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}
