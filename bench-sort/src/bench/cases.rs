//! The cases a bench runs: one in-memory case per size and format (floor, sorts, GNU sort),
//! and the out-of-core case with its variants.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use engine::output::IoMode;
use engine::record::{Checksum, RECORD_LEN};
use engine::spill::IoEngine;

use super::child::{gnu_sort_once, sort_once};
use super::config::RSS_TOLERANCE;
use super::config::{BASE_MODE, OOC_MODES_VARIANT};
use super::floor;
use super::machine::{check_free_space, cores};
use super::peers::Peers;
use super::report::{
    comparisons, gb, map_reduce_overlap, median_of, mib, peak_rss, variant_report,
};
use super::work::{remove, remove_leftovers, WorkDir};
use super::{
    median, size_label, BenchConfig, BenchError, CaseReport, FloorRun, GnuSort, ModeReport,
    OocVariantReport, OutOfCoreConfig, OutOfCoreReport, Peer, PeerReport, PeerRun, SortRun,
    OOC_VARIANTS,
};
use crate::gensort::{self, Format, GenSpec};

/// Bytes per write of the floor copy; the sort's default `write_chunk_bytes` is the same.
const FLOOR_CHUNK_BYTES: usize = 8 << 20;

/// Bytes per read when warming the page cache.
const WARM_READ_BYTES: usize = 8 << 20;

/// The last run's `--timeline` of one case and mode: written in the work folder, moved next
/// to the report (and drawn) when the whole bench succeeds.
pub(super) struct KeptTimeline {
    pub(super) work: PathBuf,
    pub(super) to: PathBuf,
    /// What ran: `10M binary pipelined`, `160M ooc default staged`.
    pub(super) what: String,
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Binary => "binary",
        Format::Ascii => "ascii",
    }
}

pub(super) fn run_case(
    config: &BenchConfig,
    work: &mut WorkDir,
    records: u64,
    format: Format,
    gnu: Option<&Result<String, String>>,
    peers: &Peers,
    progress: &dyn Fn(&str),
) -> Result<(CaseReport, Vec<KeptTimeline>), BenchError> {
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
    let generated = generate(config, work, &input, format, records)?;
    progress(&format!("warming the page cache with {case}…"));
    warm(&input)?;

    // Written in the work folder and moved next to the report when the whole bench succeeds,
    // so a failed bench leaves no timeline that no report describes.
    let work_timeline = work.file(&format!("{stem}.timeline.json"));
    let timeline = config.dir.join(format!("bench-timeline-{stem}.json"));
    let mut floor_runs_s = Vec::with_capacity(config.runs);
    let mut sort_runs = Vec::with_capacity(config.runs);
    let mut mode_runs: Vec<Vec<SortRun>> = Vec::new();
    let ready_peers = peers.ready(format);
    let mut peer_runs: Vec<Vec<PeerRun>> = vec![Vec::new(); ready_peers.len()];
    for run in 1..=config.runs {
        let out = work.file(&format!("{stem}.floor.out"));
        let copied = floor::copy_file(&input, &out, IoMode::Auto, cores(), FLOOR_CHUNK_BYTES)
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

        // The other execution modes, right after, on the same input: same machine state.
        for (m, mode) in config.extra_modes.iter().enumerate() {
            let out = work.file(&format!("{stem}.{mode}.out"));
            let mode_timeline = work.file(&format!("{stem}.{mode}.timeline.json"));
            let sorted = sort_once(
                config,
                &input,
                &out,
                &mode_timeline,
                &["--mode", mode],
                &generated,
            );
            remove(&out)?;
            let sorted = sorted?;
            progress(&format!(
                "sort --mode {mode} {run}/{} {case}: {:.2} s, output valid",
                config.runs, sorted.wall_s
            ));
            if mode_runs.len() <= m {
                mode_runs.push(Vec::new());
            }
            mode_runs[m].push(sorted);
        }

        // The peers, after the sorts of the same run.
        for (p, &peer) in ready_peers.iter().enumerate() {
            let name = peer.name();
            progress(&format!("{name} {run}/{} {case}…", config.runs));
            let out = work.file(&format!("{stem}.{name}.out"));
            let log = work.file(&format!("{stem}.{name}.log"));
            let measured = peers.run_once(peer, &input, &out, &log, &generated)?;
            progress(&format!(
                "{name} {run}/{} {case}: {:.2} s, {:.1} CPU s, peak RSS {} MiB, output valid",
                config.runs,
                measured.wall_s,
                measured.cpu_s,
                mib(measured.peak_rss_bytes)
            ));
            peer_runs[p].push(measured);
        }
    }

    let floor_s = median(&floor_runs_s).expect("runs >= 1, checked by BenchConfig::check");
    let of_runs = |f: fn(&SortRun) -> f64| {
        median(&sort_runs.iter().map(f).collect::<Vec<_>>())
            .expect("runs >= 1, checked by BenchConfig::check")
    };
    let sort_s = of_runs(|r| r.wall_s);
    let sort_process_s = of_runs(|r| r.process_s);

    let peer_reports = peers.reports(format, peer_runs, floor_s, sort_process_s, bytes);
    let gnu_sort = match (format, gnu) {
        (Format::Binary, _) => None,
        (Format::Ascii, None) => peer_reports
            .iter()
            .find(|p| p.peer() == Peer::GnuSort.name())
            .map(PeerReport::to_gnu_sort),
        (Format::Ascii, Some(Err(reason))) => Some(GnuSort::Skipped {
            reason: reason.clone(),
        }),
        (Format::Ascii, Some(Ok(version))) => {
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
        cpu_s_per_gb: median_of(&sort_runs, |r| r.cpu_s_per_gb),
        peak_rss_bytes: peak_rss(&sort_runs),
        overlap_ratio: of_runs(|r| r.overlap_ratio),
        map_reduce_overlap: map_reduce_overlap(&sort_runs),
        map_shuffle_overlap_ms: of_runs(|r| r.map_shuffle_overlap_ms),
        modes: config
            .extra_modes
            .iter()
            .zip(&mode_runs)
            .map(|(mode, runs)| {
                let to = config
                    .dir
                    .join(format!("bench-timeline-{stem}-{mode}.json"));
                ModeReport::new(mode, runs, (floor_s, sort_s), bytes, to)
            })
            .collect(),
        floor_runs_s,
        sort_runs,
        gnu_sort,
        timeline,
        peers: peer_reports,
    };
    let mut timelines = vec![KeptTimeline {
        work: work_timeline,
        to: report.timeline.clone(),
        what: format!("{case} {BASE_MODE}"),
    }];
    timelines.extend(report.modes.iter().map(|m| KeptTimeline {
        work: work.file(&format!("{stem}.{}.timeline.json", m.mode)),
        to: m.timeline.clone(),
        what: format!("{case} {}", m.mode),
    }));
    Ok((report, timelines))
}

/// The out-of-core case: generate, then per run every variant's two-pass floor and sort.
pub(super) fn run_out_of_core(
    config: &BenchConfig,
    ooc: &OutOfCoreConfig,
    work: &mut WorkDir,
    progress: &dyn Fn(&str),
) -> Result<(OutOfCoreReport, Vec<KeptTimeline>), BenchError> {
    let size = size_label(ooc.records);
    let stem = format!("{size}-ooc");
    let input = work.file(&format!("{stem}.in"));
    let spill_dir = work.file("spill");
    let bytes = ooc.bytes();
    let free_bytes_before = check_free_space(&work.path, ooc, !config.extra_modes.is_empty())?;
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
    let generated = generate(config, work, &input, Format::Binary, ooc.records)?;
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
    let mut mode_sorts: Vec<Vec<SortRun>> = vec![Vec::new(); config.extra_modes.len()];
    for run in 1..=config.runs {
        for i in rotated(OOC_VARIANTS.len(), run - 1) {
            let variant = &OOC_VARIANTS[i];
            let name = variant.name;
            let out = work.file(&format!("{stem}.floor.out"));
            let floor = floor::two_pass_floor(
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

            let timeline = work.file(&format!("{stem}-{name}.timeline.json"));
            let mut flags = vec!["--memory", memory.as_str(), "--spill-dir", spill.as_str()];
            flags.extend(variant.sort_flags());
            let sort = OocSort {
                input: &input,
                spill_dir: &spill_dir,
                generated: &generated,
                budget_bytes: ooc.memory_bytes,
            };
            let label = format!("{run}/{} {stem} {name}", config.runs);
            let sorted = sort.run(config, work, &flags, &timeline, &label, progress)?;
            // The other modes right after, with this variant only: same machine state.
            if name == OOC_MODES_VARIANT {
                for (m, mode) in config.extra_modes.iter().enumerate() {
                    let timeline = work.file(&format!("{stem}-{name}-{mode}.timeline.json"));
                    let mut flags = flags.clone();
                    flags.extend(["--mode", mode.as_str()]);
                    let label = format!("--mode {mode} {label}");
                    mode_sorts[m]
                        .push(sort.run(config, work, &flags, &timeline, &label, progress)?);
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
    let base = variants
        .iter()
        .find(|v| v.variant == OOC_MODES_VARIANT)
        .expect("OOC_MODES_VARIANT is one of OOC_VARIANTS");
    let modes: Vec<ModeReport> = config
        .extra_modes
        .iter()
        .zip(&mode_sorts)
        .map(|(mode, runs)| {
            let to = config.dir.join(format!(
                "bench-timeline-{stem}-{OOC_MODES_VARIANT}-{mode}.json"
            ));
            ModeReport::new(mode, runs, (base.floor_s, base.sort_s), bytes, to)
        })
        .collect();
    let mut timelines: Vec<KeptTimeline> = variants
        .iter()
        .map(|v| KeptTimeline {
            work: work.file(&format!("{stem}-{}.timeline.json", v.variant)),
            to: v.timeline.clone(),
            what: format!("{size} ooc {} {BASE_MODE}", v.variant),
        })
        .collect();
    timelines.extend(modes.iter().map(|m| KeptTimeline {
        work: work.file(&format!(
            "{stem}-{OOC_MODES_VARIANT}-{}.timeline.json",
            m.mode
        )),
        to: m.timeline.clone(),
        what: format!("{size} ooc {OOC_MODES_VARIANT} {}", m.mode),
    }));
    let report = OutOfCoreReport {
        size,
        records: ooc.records,
        bytes,
        checksum: generated.sum_hex(),
        memory_budget_bytes: ooc.memory_bytes,
        free_bytes_before,
        runs: config.runs,
        comparisons: comparisons(&variants),
        variants,
        modes,
    };
    Ok((report, timelines))
}

/// One out-of-core sort of the generated input: the flags differ per variant and mode.
struct OocSort<'a> {
    input: &'a Path,
    spill_dir: &'a Path,
    generated: &'a Checksum,
    budget_bytes: u64,
}

impl OocSort<'_> {
    /// Sorts with `flags`, checks the output and the plan, reports it as `sort LABEL: …`.
    fn run(
        &self,
        config: &BenchConfig,
        work: &WorkDir,
        flags: &[&str],
        timeline: &Path,
        label: &str,
        progress: &dyn Fn(&str),
    ) -> Result<SortRun, BenchError> {
        let out = work.file("ooc.sort.out");
        let sorted = sort_once(config, self.input, &out, timeline, flags, self.generated);
        remove(&out)?;
        remove_leftovers(self.spill_dir, progress)?;
        let sorted = sorted?;
        if sorted.plan.as_deref() != Some("out-of-core") {
            return Err(BenchError::WrongPlan {
                input: self.input.to_path_buf(),
                plan: sorted.plan.unwrap_or_else(|| "unreported".to_owned()),
            });
        }
        let rss = sorted.peak_rss_bytes.map_or("unknown".to_owned(), mib);
        progress(&format!(
            "sort {label}: {:.2} s (process {:.2} s), peak RSS {rss} MiB, {} runs, output valid",
            sorted.wall_s,
            sorted.process_s,
            sorted.io.map_or(0, |io| io.spilled_runs),
        ));
        if let Some(peak) = sorted.peak_rss_bytes {
            if peak as f64 > self.budget_bytes as f64 * (1.0 + RSS_TOLERANCE) {
                progress(&format!(
                    "  note: peak RSS {} MiB is more than {:.0}% above the {} MiB budget",
                    mib(peak),
                    RSS_TOLERANCE * 100.0,
                    mib(self.budget_bytes)
                ));
            }
        }
        Ok(sorted)
    }
}

/// `0..n` starting at `by % n`: run `r` starts with variant `r`, so that over `n` runs each
/// variant goes first once (the first after generating measured up to 20% slower).
fn rotated(n: usize, by: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + by) % n)
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

/// Generates `records` gensort records of `format` into `input` (kept with `--keep`); returns
/// their checksum, which every output must match.
fn generate(
    config: &BenchConfig,
    work: &mut WorkDir,
    input: &std::path::Path,
    format: Format,
    records: u64,
) -> Result<Checksum, BenchError> {
    let spec = GenSpec {
        format,
        skew: false,
        start: 0,
        records,
    };
    let generated = gensort::generate_to_file(&spec, input, &|_| {}).map_err(|source| {
        BenchError::Generate {
            path: input.to_path_buf(),
            source,
        }
    })?;
    if config.keep {
        work.keep(input);
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_order_rotates_per_run() {
        let order = |by| rotated(4, by).collect::<Vec<_>>();
        assert_eq!(order(0), [0, 1, 2, 3]);
        assert_eq!(order(1), [1, 2, 3, 0]);
        assert_eq!(order(3), [3, 0, 1, 2]);
        assert_eq!(order(4), order(0));
    }
}
