//! What a bench reports: [`BenchReport`] with its cases and out-of-core variants, the medians
//! and comparisons they hold, and the report as Markdown and JSON.

use std::path::PathBuf;

use serde::Serialize;

use super::config::{OocVariant, BASE_MODE, OOC_MODES_VARIANT, OOC_TARGET_RATIO, RSS_TOLERANCE};
use super::peers::{self, PeerReport};
use super::{ChildIo, ChildPhase, Machine};

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
    /// The SVG pictures written next to the report.
    pub pictures: Vec<Picture>,
}

/// One SVG picture of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Picture {
    /// What it shows: `timeline 10M binary pipelined`, `times 10M binary`.
    pub what: String,
    pub path: PathBuf,
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
    /// In [`OOC_VARIANTS`](super::OOC_VARIANTS) order.
    pub variants: Vec<OocVariantReport>,
    /// io_uring against pwrite, lz4 on against off.
    pub comparisons: Vec<Comparison>,
    /// The other execution modes (`--modes`) with the default variant, each against its
    /// floor and pipelined sort.
    pub modes: Vec<ModeReport>,
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
    /// Median first pass of the sort (see [`SortRun::first_pass_s`]).
    pub first_pass_s: Option<f64>,
    /// `first_pass_s / floor_pass1_s` (target ≤ 1.3).
    pub first_pass_floor_ratio: Option<f64>,
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
    /// Median map–reduce overlap of the sort runs (see `docs/formats.md`).
    pub map_reduce_overlap: Option<f64>,
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
    /// Median share of the reduce side's time that ran while maps ran (see
    /// `docs/formats.md`).
    pub map_reduce_overlap: Option<f64>,
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
    /// The other execution modes (`--modes`), each over the same runs.
    pub modes: Vec<ModeReport>,
    /// The asked `--peers` that sort this case's format.
    pub peers: Vec<PeerReport>,
}

/// One execution mode besides `pipelined` in one case (medians over the runs).
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    /// `--mode` of these sorts.
    pub mode: String,
    pub sort_s: f64,
    /// `sort_s / floor_s`, the case's floor.
    pub sort_floor_ratio: f64,
    pub mb_per_s: f64,
    pub cpu_s_per_gb: Option<f64>,
    /// Largest peak RSS over the runs.
    pub peak_rss_bytes: Option<u64>,
    pub overlap_ratio: f64,
    /// Median map–reduce overlap (see `docs/formats.md`).
    pub map_reduce_overlap: Option<f64>,
    /// `sort_s` ÷ the pipelined sort's: how much longer this mode takes.
    pub vs_pipelined: f64,
    pub runs: Vec<SortRun>,
    /// The last run's `--timeline` file.
    pub timeline: PathBuf,
}

impl ModeReport {
    fn summary_row(&self, case: String, floor_s: f64) -> SummaryRow<'_> {
        SummaryRow {
            case,
            tool: "millrace",
            mode: &self.mode,
            wall_s: self.sort_s,
            floor_s,
            vs_pipelined: Some(self.vs_pipelined),
            cpu_s_per_gb: self.cpu_s_per_gb,
            peak_rss_bytes: self.peak_rss_bytes,
            map_reduce_overlap: self.map_reduce_overlap,
        }
    }

    /// Medians of `runs` against the case's floor and pipelined sort times.
    pub fn new(
        mode: &str,
        runs: &[SortRun],
        (floor_s, pipelined_s): (f64, f64),
        bytes: u64,
        timeline: PathBuf,
    ) -> Self {
        let of = |f: fn(&SortRun) -> f64| {
            median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let sort_s = of(|r| r.wall_s);
        Self {
            mode: mode.to_string(),
            sort_s,
            sort_floor_ratio: sort_s / floor_s,
            mb_per_s: bytes as f64 / sort_s / 1e6,
            cpu_s_per_gb: median_of(runs, |r| r.cpu_s_per_gb),
            peak_rss_bytes: peak_rss(runs),
            overlap_ratio: of(|r| r.overlap_ratio),
            map_reduce_overlap: map_reduce_overlap(runs),
            vs_pipelined: sort_s / pipelined_s,
            runs: runs.to_vec(),
            timeline,
        }
    }
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
    /// Share of the reduce side's time that ran while maps ran, from the run's timeline.
    pub map_reduce_overlap: Option<f64>,
    /// Seconds until the last reducer started sorting/merging into the output (the first
    /// pass out of core), from the run's timeline.
    pub first_pass_s: Option<f64>,
    pub map_shuffle_overlap_ms: f64,
    pub phases: Vec<ChildPhase>,
    /// `in-memory` or `out-of-core`, when the job reports it.
    pub plan: Option<String>,
    /// Bytes per phase, when the job reports them.
    pub io: Option<ChildIo>,
    /// CPU seconds (user + system) per GB of input, when the job reports it.
    pub cpu_s_per_gb: Option<f64>,
    /// CPU seconds (user + system) of the process as the bench measured it (`wait4`).
    pub harness_cpu_s: Option<f64>,
    /// Peak RSS of the process as the bench measured it (`wait4`), beside the job's own.
    pub harness_peak_rss_bytes: Option<u64>,
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

/// A CPU s/GB or overlap cell: two decimals, or a dash when there is no figure.
fn cpu(value: Option<f64>) -> String {
    value.map_or("—".to_owned(), |v| format!("{v:.2}"))
}

/// A peak RSS cell: MiB, or a dash.
fn rss(bytes: Option<u64>) -> String {
    bytes.map_or("—".to_owned(), mib)
}

/// The median of `figure` over the runs that have it.
pub(super) fn median_of(runs: &[SortRun], figure: fn(&SortRun) -> Option<f64>) -> Option<f64> {
    median(&runs.iter().filter_map(figure).collect::<Vec<_>>())
}

/// The largest peak RSS over the runs.
pub(super) fn peak_rss(runs: &[SortRun]) -> Option<u64> {
    runs.iter().filter_map(|r| r.peak_rss_bytes).max()
}

/// The median map–reduce overlap of the runs that have one.
pub(super) fn map_reduce_overlap(runs: &[SortRun]) -> Option<f64> {
    median_of(runs, |r| r.map_reduce_overlap)
}

/// One row of the summary table: one case with one tool and mode.
struct SummaryRow<'a> {
    case: String,
    tool: &'a str,
    mode: &'a str,
    wall_s: f64,
    floor_s: f64,
    /// ÷ the pipelined sort of the same case, when it means something.
    vs_pipelined: Option<f64>,
    cpu_s_per_gb: Option<f64>,
    peak_rss_bytes: Option<u64>,
    map_reduce_overlap: Option<f64>,
}

impl SummaryRow<'_> {
    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |\n",
            self.case,
            self.tool,
            self.mode,
            self.wall_s,
            self.wall_s / self.floor_s,
            cpu(self.vs_pipelined),
            cpu(self.cpu_s_per_gb),
            rss(self.peak_rss_bytes),
            cpu(self.map_reduce_overlap),
        )
    }
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
        let gnu_peer = self.cases.iter().flat_map(|c| &c.peers).any(|p| {
            matches!(
                p,
                PeerReport::Measured {
                    peer: "gnu-sort",
                    ..
                }
            )
        });
        out += &format!(
            "runs per case: {} (medians; GNU sort {})\n\n",
            self.runs,
            if gnu_peer {
                "as a peer, every run"
            } else {
                "once"
            }
        );
        out += &self.summary_markdown();
        out += "\n| case | records | floor s | sort s | sort/floor | MB/s | CPU s/GB | peak RSS MiB | Σ phases/wall | sort process s | GNU sort s | GNU/millrace |\n";
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
                peak RSS includes mapped input pages; Σ phases/wall = Σ phase lengths ÷ wall; \
                GNU/millrace = GNU sort (process + fsync) ÷ millrace sort process s\n";
        out += &peers::markdown(&self.cases);
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
        if !self.pictures.is_empty() {
            out += "\npictures (SVG, next to this report):\n\n";
            for p in &self.pictures {
                let name = p.path.file_name().map_or_else(
                    || p.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                out += &format!("- {}: ![{}]({name})\n", p.what, p.what);
            }
        }
        out
    }

    /// The summary table: one row per case and tool or mode, with what the columns mean.
    pub fn summary_markdown(&self) -> String {
        let mut out = String::from(
            "| case | tool | mode | wall s | ÷ floor | ÷ pipelined | CPU s/GB | peak RSS MiB | overlap |\n\
             |---|---|---|--:|--:|--:|--:|--:|--:|\n",
        );
        for row in self.summary_rows() {
            out += &row.markdown();
        }
        out += "\nwall s = median of the runs (millrace: the job's wall time; GNU sort: process \
                and fsync, once); ÷ floor = wall ÷ the case's floor (out of core: the variant's \
                two-pass floor); ÷ pipelined = wall ÷ the pipelined sort's; overlap = share of \
                the reduce side's time (shuffle ∪ sort+write) that ran while maps ran, from the \
                timeline (0 when reducers start after the last map)\n";
        out
    }

    fn summary_rows(&self) -> Vec<SummaryRow<'_>> {
        let mut rows = Vec::new();
        for case in &self.cases {
            let name = format!("{} {}", case.size, case.format);
            rows.push(SummaryRow {
                case: name.clone(),
                tool: "millrace",
                mode: BASE_MODE,
                wall_s: case.sort_s,
                floor_s: case.floor_s,
                vs_pipelined: Some(1.0),
                cpu_s_per_gb: case.cpu_s_per_gb,
                peak_rss_bytes: case.peak_rss_bytes,
                map_reduce_overlap: case.map_reduce_overlap,
            });
            rows.extend(
                case.modes
                    .iter()
                    .map(|m| m.summary_row(name.clone(), case.floor_s)),
            );
            for peer in &case.peers {
                if let PeerReport::Measured {
                    peer,
                    wall_s,
                    cpu_s_per_gb,
                    peak_rss_bytes,
                    ..
                } = peer
                {
                    rows.push(SummaryRow {
                        case: name.clone(),
                        tool: peer,
                        mode: "—",
                        wall_s: *wall_s,
                        floor_s: case.floor_s,
                        vs_pipelined: Some(*wall_s / case.sort_s.max(1e-9)),
                        cpu_s_per_gb: Some(*cpu_s_per_gb),
                        peak_rss_bytes: Some(*peak_rss_bytes),
                        map_reduce_overlap: None,
                    });
                }
            }
            let gnu_peer = case.peers.iter().any(|p| {
                matches!(
                    p,
                    PeerReport::Measured {
                        peer: "gnu-sort",
                        ..
                    }
                )
            });
            // GNU sort as a peer has its own row above.
            if let (Some(GnuSort::Measured { wall_s, .. }), false) = (&case.gnu_sort, gnu_peer) {
                rows.push(SummaryRow {
                    case: name.clone(),
                    tool: "GNU sort",
                    mode: "—",
                    wall_s: *wall_s,
                    floor_s: case.floor_s,
                    vs_pipelined: None,
                    cpu_s_per_gb: None,
                    peak_rss_bytes: None,
                    map_reduce_overlap: None,
                });
            }
        }
        if let Some(ooc) = &self.out_of_core {
            for v in &ooc.variants {
                let name = format!("{} ooc {}", ooc.size, v.variant);
                rows.push(SummaryRow {
                    case: name.clone(),
                    tool: "millrace",
                    mode: BASE_MODE,
                    wall_s: v.sort_s,
                    floor_s: v.floor_s,
                    vs_pipelined: Some(1.0),
                    cpu_s_per_gb: v.cpu_s_per_gb,
                    peak_rss_bytes: v.peak_rss_bytes,
                    map_reduce_overlap: v.map_reduce_overlap,
                });
                if v.variant == OOC_MODES_VARIANT {
                    rows.extend(
                        ooc.modes
                            .iter()
                            .map(|m| m.summary_row(name.clone(), v.floor_s)),
                    );
                }
            }
        }
        rows
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("the report holds only strings, numbers and paths, which always serialize")
    }
}

/// `bytes` in GB (10^9), two decimals.
pub(super) fn gb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e9)
}

/// `bytes` in MiB, no decimals.
pub(super) fn mib(bytes: u64) -> String {
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
        out += "\n| variant | sample s | map s | shuffle s | sort+write s | commit s | floor pass 1 s | floor pass 2 s | sort 1st pass s | ÷ floor pass 1 | input read GB | map-spilled GB | output written GB | floor spill on disk GB |\n";
        out += "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
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
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {on_disk} |\n",
                v.variant,
                phase("sample"),
                phase("map"),
                phase("shuffle"),
                phase("sort+write"),
                phase("commit"),
                v.floor_pass1_s,
                v.floor_pass2_s,
                cpu(v.first_pass_s),
                cpu(v.first_pass_floor_ratio),
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
        if let Some(default) = self
            .variants
            .iter()
            .find(|v| v.variant == OOC_MODES_VARIANT)
        {
            for m in &self.modes {
                out += &format!(
                    "{} vs {BASE_MODE} ({OOC_MODES_VARIANT} variant): sort {:.2} s vs {:.2} s \
                     ({:.2}× {BASE_MODE}), sort/floor {:.2} vs {:.2}\n",
                    m.mode,
                    m.sort_s,
                    default.sort_s,
                    m.vs_pipelined,
                    m.sort_floor_ratio,
                    default.sort_floor_ratio,
                );
            }
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
pub(super) fn comparisons(variants: &[OocVariantReport]) -> Vec<Comparison> {
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

/// Medians and maxima of one variant's runs (at least one of each).
pub(super) fn variant_report(
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
    let peak_rss_bytes = peak_rss(&sort_runs);
    let first_pass_s = median_of(&sort_runs, |r| r.first_pass_s);
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
        first_pass_s,
        first_pass_floor_ratio: first_pass_s
            .map(|s| s / med(floor_runs.iter().map(|f| f.pass1_s).collect())),
        sort_floor_ratio,
        meets_target: sort_floor_ratio <= OOC_TARGET_RATIO,
        mb_per_s: bytes as f64 / sort_s / 1e6,
        cpu_s_per_gb: median_of(&sort_runs, |r| r.cpu_s_per_gb),
        peak_rss_bytes,
        rss_budget_ratio: peak_rss_bytes.map(|b| b as f64 / memory_bytes as f64),
        map_reduce_overlap: map_reduce_overlap(&sort_runs),
        io: sort_runs.last().and_then(|r| r.io).unwrap_or_default(),
        phases_s,
        floor_runs,
        sort_runs,
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::OOC_VARIANTS;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0]), Some(2.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 1.0, 100.0]), Some(5.0));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(40_000_000), "40,000,000");
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
            map_reduce_overlap: Some(0.35),
            map_shuffle_overlap_ms: 300.0,
            floor_runs_s: vec![0.5],
            sort_runs: Vec::new(),
            gnu_sort,
            timeline: PathBuf::from("bench-data/bench-timeline-10M-binary.json"),
            modes: Vec::new(),
            peers: Vec::new(),
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
            pictures: Vec::new(),
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
        // The summary, then the cases table.
        assert!(
            lines[4].starts_with("| case | tool | mode | wall s |"),
            "{text}"
        );
        let details = &text[text.find("| case | records |").expect("the cases table")..];
        let rows: Vec<&str> = details.lines().filter(|l| l.starts_with('|')).collect();
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
            map_reduce_overlap: Some(0.5),
            first_pass_s: Some(wall_s / 2.0),
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
            harness_cpu_s: Some(wall_s * 2.0),
            harness_peak_rss_bytes: Some(rss + (1 << 20)),
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
        assert_eq!(v.first_pass_s, Some(45.0));
        assert!((v.first_pass_floor_ratio.unwrap() - 45.0 / 28.0).abs() < 1e-12);
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
            modes: Vec::new(),
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
                "| default | — | 45.00 | — | 45.00 | — | 32.00 | 48.00 | 45.00 | 1.41 | 16.00 | 0.25 | 16.00 | 9.00 |"
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

    /// The summary has one row per case and tool or mode, with ratios to the floor and to
    /// pipelined; out of core, per variant, and the modes after the default variant.
    #[test]
    fn summary_has_one_row_per_case_and_tool_or_mode() {
        let mut report = sample_report();
        let case = &mut report.cases[0];
        case.modes = vec![ModeReport {
            mode: "staged".into(),
            sort_s: 1.5,
            sort_floor_ratio: 3.0,
            mb_per_s: 666.7,
            cpu_s_per_gb: Some(1.8),
            peak_rss_bytes: Some(1024 << 20),
            overlap_ratio: 1.0,
            map_reduce_overlap: Some(0.0),
            vs_pipelined: 1.2,
            runs: Vec::new(),
            timeline: PathBuf::from("bench-timeline-10M-binary-staged.json"),
        }];
        let mut ooc = ooc_report("uring");
        ooc.modes = vec![ModeReport {
            sort_s: 99.0,
            sort_floor_ratio: 99.0 / 80.0,
            vs_pipelined: 1.1,
            ..report.cases[0].modes[0].clone()
        }];
        report.out_of_core = Some(ooc);
        report.pictures = vec![Picture {
            what: "timeline 10M binary pipelined".into(),
            path: PathBuf::from("dir/bench-timeline-10M-binary.svg"),
        }];
        let summary = report.summary_markdown();
        let rows: Vec<&str> = summary.lines().filter(|l| l.starts_with('|')).collect();
        // Header and rule; 10M binary pipelined, staged; 10M ascii pipelined, GNU sort;
        // 10M ascii (skipped GNU sort) pipelined; 4 variants + staged after default.
        assert_eq!(
            rows.len(),
            2 + 2 + 2 + 1 + OOC_VARIANTS.len() + 1,
            "{summary}"
        );
        assert_eq!(
            rows[0],
            "| case | tool | mode | wall s | ÷ floor | ÷ pipelined | CPU s/GB | peak RSS MiB | overlap |"
        );
        assert_eq!(
            &rows[2..4],
            [
                "| 10M binary | millrace | pipelined | 1.25 | 2.50 | 1.00 | 1.50 | 1536 | 0.35 |",
                "| 10M binary | millrace | staged | 1.50 | 3.00 | 1.20 | 1.80 | 1024 | 0.00 |",
            ]
        );
        assert_eq!(
            rows[5],
            "| 10M ascii | GNU sort | — | 9.00 | 18.00 | — | — | — | — |"
        );
        assert_eq!(
            &rows[7..9],
            [
                "| 160M ooc default | millrace | pipelined | 90.00 | 1.12 | 1.00 | 2.50 | 2048 | 0.50 |",
                "| 160M ooc default | millrace | staged | 99.00 | 1.24 | 1.10 | 1.80 | 1024 | 0.00 |",
            ]
        );
        assert!(rows[9].starts_with("| 160M ooc pwrite | millrace | pipelined |"));
        let markdown = report.to_markdown();
        assert!(
            markdown.contains(&summary),
            "the summary is part of the report"
        );
        assert!(markdown.contains(
            "staged vs pipelined (default variant): sort 99.00 s vs 90.00 s (1.10× pipelined)"
        ));
        assert!(markdown.contains(
            "- timeline 10M binary pipelined: ![timeline 10M binary pipelined](bench-timeline-10M-binary.svg)"
        ));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["cases"][0]["modes"][0]["mode"], "staged");
        assert_eq!(json["out_of_core"]["modes"][0]["sort_s"], 99.0);
        assert_eq!(json["cases"][0]["map_reduce_overlap"], 0.35);
        assert_eq!(json["pictures"][0]["what"], "timeline 10M binary pipelined");
    }
}
