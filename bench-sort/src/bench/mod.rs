//! `millrace bench sort`: measures the TeraSort job against this machine's floor and against
//! GNU sort, and writes a report that can be compared across commits.
//! (`millrace bench jobs`, the batch jobs beside DuckDB, Polars, DataFusion and Spark, is
//! [`jobs`]; it shares the work folder, the children and the peers' scripts.)
//!
//! For every size and format (binary always, ASCII with [`BenchConfig::ascii`]) a case runs:
//!
//! 1. Generate the input with [`gensort::generate_to_file`] and keep its checksum, then read
//!    the input once so that every tool starts from the page cache.
//! 2. `runs` times, interleaved so that noise hits both:
//!    - the **floor**: [`floor::copy_file`] copies the input through the sort's own
//!      I/O path (direct I/O where possible, one writer per core, 8 MiB chunks, fsync);
//!    - the **sort**: `millrace sort INPUT OUTPUT --json --timeline FILE` as a child process;
//!      its JSON gives the job's wall time, phases and peak RSS.
//!      The output is validated with [`valsort::validate_path`] and must hold exactly the
//!      generated records (count and checksum), or the bench fails.
//! 3. ASCII only, once: `LC_ALL=C sort --parallel=CORES -S 50% -o OUT INPUT`, then an fsync of
//!    OUT, validated the same way (on gensort ASCII lines the whole-line order is key order).
//!    Skipped with a reason when `sort` is missing or is not GNU sort.
//!    (With `gnu-sort` among the peers it runs as a peer instead, `runs` times.)
//! 4. With [`BenchConfig::peers`], in each run after the sorts: every installed peer of the
//!    case's format ([`Peer::format`]), spawned through `scripts/peers/run.sh`, timed to a
//!    durable output, CPU seconds and peak RSS from `wait4`, validated (see `peers.rs`); a line
//!    peer makes the ASCII cases run without `--ascii` too. The peers are set up once before the
//!    first case; one that cannot be installed is reported as skipped with the install step.
//!
//! With [`BenchConfig::extra_modes`] (`--modes`), every run sorts once more per mode
//! (`--mode staged`, …) right after the pipelined sort, validated the same way.
//!
//! Every output is deleted right after it is measured, and each input after its case unless
//! [`BenchConfig::keep`].
//! Medians are reported along with every raw run, and the sort's peak RSS is the largest seen.
//! Each sort's timeline gives its map–reduce overlap (the share of the reduce side's time
//! that ran while maps ran, `docs/formats.md`).
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
//!    - the **two-pass floor**: [`floor::two_pass_floor`] writes the input to segment
//!      files and reads them back into the output with the variant's spill engine and
//!      compression (write + read + write + read of the same bytes, durable);
//!    - the **sort**: `millrace sort INPUT OUTPUT --json --memory B --spill-dir DIR
//!      --spill-io E --compress C`, with its spill folder inside the bench's work folder;
//!      the output is validated as above and both outputs are deleted before the next step.
//!    - with the [`OOC_MODES_VARIANT`] (default) variant only, the sort once more per extra mode
//!      (`--mode staged`, …), so that a mode adds one sort per run and not one per variant.
//! 3. Per variant: sort/floor (target ≤ [`OOC_TARGET_RATIO`]), bytes read and written per
//!    phase as the job counts them, peak RSS against the budget; then io_uring against pwrite,
//!    lz4 on against off, and each extra mode against pipelined.
//!
//! # Files
//!
//! ```text
//! <dir>/bench-report.json                    the JSON report of the last successful bench:
//!                                            machine, commit, medians and every raw run
//! <dir>/bench-report.md                      the same as Markdown (what stdout shows): a summary
//!                                            row per case × tool/mode, then details
//! <dir>/bench-timeline-<size>-<format>.json  its last pipelined sort run's --timeline, per case
//! <dir>/bench-timeline-<size>-<format>-<mode>.json   the same per extra mode (--modes)
//! <dir>/bench-timeline-<size>-ooc-<variant>.json     the same for out-of-core variants
//! <dir>/bench-timeline-<size>-ooc-default-<mode>.json  and the out-of-core extra modes
//! <dir>/bench-timeline-….svg                 each timeline drawn: a lane per subtask (maps, then
//!                                            reducers) and one for the job, colored by phase
//! <dir>/bench-times-<size>-<format>.svg      wall time per tool and mode of one case, and its floor
//! <dir>/bench-times-<size>-ooc.svg           the same per out-of-core variant and mode
//! <dir>/millrace-job-PID-…/                inputs and outputs of one bench (a WorkDir)
//! <dir>/millrace-job-PID-…/spill/          spill folder of the out-of-core sorts and floors
//! <dir>/millrace-job-PID-…/millrace        the binary every sort runs, copied at the start
//! <dir>/peers/                               the peers' venv, compiled classes and scripts
//!                                            (MILLRACE_PEERS_DIR instead when set); kept
//! ```
//!
//! Timelines and pictures are written inside `millrace-job-PID-…/` and moved out only when the
//! whole bench succeeds; then the bench removes the `bench-timeline-*` and `bench-times-*`
//! files (`.json`, `.svg`) that earlier benches left and this one did not write, so the folder
//! describes one bench. The pictures are drawn by `svg.rs` (plotters, SVG backend only).
//!
//! The `millrace-job-PID-…` folder is private to one bench, so concurrent benches in the same `--dir`
//! do not collide; dropping its [`WorkDir`] removes what it holds (except kept inputs) also when
//! the bench fails half way, and it is registered with [`engine::cleanup`] for interruptions.
//!
//! [`gensort::generate_to_file`]: crate::gensort::generate_to_file
//! [`valsort::validate_path`]: crate::valsort::validate_path

mod cases;
mod child;
mod config;
mod error;
pub mod floor;
pub mod jobs;
mod machine;
mod peers;
mod report;
mod svg;
mod timeline;
mod work;

use std::fs;
use std::path::{Path, PathBuf};

use engine::paths;
use engine::record::RECORD_LEN;

use crate::gensort::Format;

pub use child::{ChildIo, ChildPhase, ChildReport};
pub use config::{
    parse_record_counts, size_label, BenchConfig, OocVariant, OutOfCoreConfig, BASE_MODE,
    OOC_MODES_VARIANT, OOC_TARGET_RATIO, OOC_VARIANTS, SORT_MODES,
};
pub use error::BenchError;
pub use machine::Machine;
pub use peers::{Peer, PeerReport, PeerRun, PEERS_DIR_ENV};
pub use report::{
    median, BenchReport, CaseReport, Comparison, FloorRun, GnuSort, ModeReport, OocVariantReport,
    OutOfCoreReport, Picture, SortRun,
};

use cases::{run_case, run_out_of_core, KeptTimeline};
use child::gnu_sort_version;
use machine::{check_free_space, free_bytes, git_commit};
use peers::Peers;
use work::WorkDir;

/// The report's names in the bench folder.
const REPORT_JSON: &str = "bench-report.json";
const REPORT_MARKDOWN: &str = "bench-report.md";

/// Runs the bench and writes `<dir>/bench-report.json`, `bench-report.md`, the timelines and
/// the pictures (see [Files](self#files)); `progress` gets one short line per step.
pub fn run(config: &BenchConfig, progress: &dyn Fn(&str)) -> Result<BenchReport, BenchError> {
    config.check()?;
    // The report's names must be usable before minutes are spent (checked again at the end).
    if config.dir.is_dir() {
        let reports: Vec<paths::Write> = [REPORT_JSON, REPORT_MARKDOWN]
            .iter()
            .map(|name| {
                paths::Write::new(
                    "bench report",
                    config.dir.join(name),
                    paths::OutputKind::File,
                )
            })
            .collect();
        paths::check(&[], &reports, true).map_err(|source| BenchError::Output {
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
        check_free_space(&work.path, ooc, !config.extra_modes.is_empty())?;
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
    let peers_dir = config
        .peers_dir
        .clone()
        .unwrap_or_else(|| peers::peers_dir(&config.dir));
    let peers = Peers::prepare(&config.peers, &peers_dir, progress)?;
    // GNU sort runs once per ASCII case as before, unless it is a peer (then `runs` times).
    let gnu = (config.ascii && !peers.asks(Peer::GnuSort)).then(gnu_sort_version);
    let mut cases = Vec::new();
    let mut timelines: Vec<KeptTimeline> = Vec::new();
    for &records in &config.records {
        let formats: &[Format] = if config.ascii || peers.want(Format::Ascii) {
            &[Format::Binary, Format::Ascii]
        } else {
            &[Format::Binary]
        };
        for &format in formats {
            let (case, kept) = run_case(
                config,
                &mut work,
                records,
                format,
                gnu.as_ref(),
                &peers,
                progress,
            )?;
            timelines.extend(kept);
            cases.push(case);
        }
    }
    let out_of_core = match &config.out_of_core {
        None => None,
        Some(ooc) => {
            let (report, kept) = run_out_of_core(config, ooc, &mut work, progress)?;
            timelines.extend(kept);
            Some(report)
        }
    };
    let mut report = BenchReport {
        machine: Machine::detect(&config.dir),
        commit,
        unix_time_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        runs: config.runs,
        cases,
        out_of_core,
        pictures: Vec::new(),
    };
    // Files moved from the work folder next to the report: timelines and pictures.
    let moves = draw_pictures(config, &work, &timelines, &mut report)?;
    // The bench replaces its own earlier reports in its folder, but never writes through a
    // link or into a device or FIFO that stands under one of their names.
    let path = config.dir.join(REPORT_JSON);
    let markdown_path = config.dir.join(REPORT_MARKDOWN);
    let mut outputs: Vec<paths::Write> = moves
        .iter()
        .map(|(_, to)| paths::Write::new("bench file", to, paths::OutputKind::File))
        .collect();
    for report_path in [&path, &markdown_path] {
        outputs.push(paths::Write::new(
            "bench report",
            report_path,
            paths::OutputKind::File,
        ));
    }
    paths::check(&[], &outputs, true).map_err(|source| BenchError::Output {
        source: Box::new(source),
    })?;
    for (from, to) in &moves {
        fs::rename(from, to).map_err(|source| BenchError::Io {
            op: "move the bench file to",
            path: to.clone(),
            source,
        })?;
    }
    write_report(&path, report.to_json())?;
    write_report(&markdown_path, report.to_markdown())?;
    let kept: Vec<&Path> = moves.iter().map(|(_, to)| to.as_path()).collect();
    remove_stale_files(&config.dir, &kept, progress);
    progress(&format!(
        "report written to {} and {}, with {} pictures",
        path.display(),
        markdown_path.display(),
        report.pictures.len()
    ));
    if config.keep {
        progress(&format!("inputs kept in {}", work.path.display()));
    }
    Ok(report)
}

/// Draws a timeline picture per kept timeline and a times picture per case into the work
/// folder, lists them in `report.pictures`, and returns every (work file, final name) to move
/// next to the report, timelines included.
fn draw_pictures(
    config: &BenchConfig,
    work: &WorkDir,
    timelines: &[KeptTimeline],
    report: &mut BenchReport,
) -> Result<Vec<(PathBuf, PathBuf)>, BenchError> {
    let mut moves = Vec::new();
    let mut pictures = Vec::new();
    let mut write = |what: String, svg: Result<String, String>, work_file: PathBuf, to: PathBuf| {
        let svg = svg.map_err(|reason| BenchError::Picture {
            what: what.clone(),
            reason,
        })?;
        fs::write(&work_file, svg).map_err(|source| BenchError::Io {
            op: "write the picture",
            path: work_file.clone(),
            source,
        })?;
        moves.push((work_file, to.clone()));
        pictures.push(Picture { what, path: to });
        Ok::<(), BenchError>(())
    };
    for case in &report.cases {
        let name = format!("{} {}", case.size, case.format);
        let stem = format!("{}-{}", case.size, case.format);
        write(
            format!("times {name}"),
            svg::times_svg(
                &format!(
                    "{name}: wall time per tool and mode (median of {})",
                    config.runs
                ),
                &svg::case_bars(case),
                Some(case.floor_s),
            ),
            work.file(&format!("{stem}.times.svg")),
            config.dir.join(format!("bench-times-{stem}.svg")),
        )?;
    }
    if let Some(ooc) = &report.out_of_core {
        write(
            format!("times {} ooc", ooc.size),
            svg::times_svg(
                &format!(
                    "{} out of core: wall time per variant and mode (median of {}), each against its two-pass floor",
                    ooc.size, config.runs
                ),
                &svg::ooc_bars(ooc),
                None,
            ),
            work.file(&format!("{}-ooc.times.svg", ooc.size)),
            config.dir.join(format!("bench-times-{}-ooc.svg", ooc.size)),
        )?;
    }
    for kept in timelines {
        let timeline = timeline::Timeline::read(&kept.work)?;
        let title = format!(
            "{}: millrace sort timeline, {:.2} s",
            kept.what,
            timeline.wall_us as f64 / 1e6
        );
        write(
            format!("timeline {}", kept.what),
            svg::timeline_svg(&timeline, &title),
            kept.work.with_extension("svg"),
            kept.to.with_extension("svg"),
        )?;
    }
    moves.extend(timelines.iter().map(|k| (k.work.clone(), k.to.clone())));
    report.pictures = pictures;
    Ok(moves)
}

/// Removes timelines and pictures of earlier benches from `dir` (regular files named
/// `bench-timeline-*` or `bench-times-*`, `.json` or `.svg`, that this bench did not write),
/// so that the folder holds one bench. Failures are reported, not fatal.
fn remove_stale_files(dir: &Path, kept: &[&Path], progress: &dyn Fn(&str)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = (name.starts_with("bench-timeline-") || name.starts_with("bench-times-"))
            && (name.ends_with(".json") || name.ends_with(".svg"));
        let path = entry.path();
        if !ours || kept.contains(&path.as_path()) {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Err(error) = fs::remove_file(&path) {
            progress(&format!(
                "  note: cannot remove {} of an earlier bench: {error}",
                path.display()
            ));
        }
    }
}

/// Writes one report file (`text` and a line break) under a temp name, then renames it into
/// place: a reader never sees half a report.
pub(crate) fn write_report(path: &Path, text: String) -> Result<(), BenchError> {
    engine::output::PendingFile::with_bytes(path, "bench report", true, (text + "\n").as_bytes())
        .and_then(engine::output::PendingFile::publish)
        .map(drop)
        .map_err(|source| BenchError::Report {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

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
                extra_modes: Vec::new(),
                peers: Vec::new(),
                peers_dir: None,
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
            extra_modes: Vec::new(),
            peers: Vec::new(),
            peers_dir: None,
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
