//! The report of `millrace bench jobs`: [`JobsReport`], one [`ToolRow`] per job × input ×
//! memory setting × tool with medians of its runs, the comparisons of the outputs, the
//! targets, and its Markdown and JSON.

use serde::Serialize;

use super::config::{InputFormat, Job, JobSizes, MemorySetting};
use super::spec::DataSet;
use super::tools::{Comparison, RunStatus, Setup, ToolRun};
use crate::bench::report::{median, mib};
use crate::bench::Machine;

/// Target: millrace at least this many times faster than Spark `local[2]`.
pub const SPARK_TARGET: f64 = 3.0;
/// Target: millrace at most this many times the time of the fastest of DuckDB, Polars and
/// DataFusion, in memory.
pub const FASTEST_TARGET: f64 = 1.5;
/// The tool every row is compared with.
pub const MILLRACE: &str = "millrace";

/// Everything one `millrace bench jobs` measured.
#[derive(Clone, Debug, Serialize)]
pub struct JobsReport {
    pub machine: Machine,
    /// The commit measured (`+dirty` with local changes).
    pub commit: Option<String>,
    /// The command line.
    pub command: String,
    pub unix_time_s: u64,
    pub scale: f64,
    pub sizes: JobSizes,
    /// Runs per tool and case; figures are medians.
    pub runs: usize,
    /// The budget of the spill runs.
    pub spill_memory_bytes: u64,
    /// The generated inputs.
    pub data: Vec<DataSet>,
    /// Every tool asked for: its version, or why it was skipped.
    pub tools: Vec<ToolSetup>,
    pub rows: Vec<ToolRow>,
    /// Per job: every output against every other.
    pub comparisons: Vec<Comparison>,
    pub targets: Targets,
    /// Why the bench failed (outputs that differ, millrace runs that failed); empty when it
    /// passed.
    pub failures: Vec<String>,
}

/// One tool and its setup.
#[derive(Clone, Debug, Serialize)]
pub struct ToolSetup {
    pub tool: &'static str,
    #[serde(flatten)]
    pub setup: Setup,
}

/// One tool in one case (job × input format × memory setting): medians over its finished
/// runs.
#[derive(Clone, Debug, Serialize)]
pub struct ToolRow {
    pub job: Job,
    pub input: InputFormat,
    pub memory: MemorySetting,
    pub tool: &'static str,
    /// The memory limit it ran with; `None`: its default.
    pub memory_limit_bytes: Option<u64>,
    /// `ok` when every run finished, else the first other status.
    pub status: RunStatus,
    /// The first error of a run that did not finish.
    pub error: Option<String>,
    pub wall_s: Option<f64>,
    pub job_s: Option<f64>,
    pub cpu_s: Option<f64>,
    /// The largest over the runs.
    pub peak_rss_bytes: Option<u64>,
    /// The largest over the runs (millrace only).
    pub spilled_bytes: Option<u64>,
    pub rows_out: Option<u64>,
    /// `wall_s` ÷ millrace's `wall_s` in the same case.
    pub vs_millrace: Option<f64>,
    /// `wall_s` ÷ the input's floor (reading its files once).
    pub vs_floor: Option<f64>,
    /// `cpu_s` per GB (10^9 bytes) of input files.
    pub cpu_s_per_gb: Option<f64>,
    pub runs: Vec<ToolRun>,
}

impl ToolRow {
    pub(super) fn new(
        job: Job,
        input: InputFormat,
        memory: MemorySetting,
        tool: &'static str,
        memory_limit_bytes: Option<u64>,
        runs: Vec<ToolRun>,
    ) -> Self {
        let first_bad = runs.iter().find(|r| r.status != RunStatus::Ok);
        let ok: Vec<&ToolRun> = runs.iter().filter(|r| r.status == RunStatus::Ok).collect();
        let med = |figure: fn(&ToolRun) -> Option<f64>| {
            median(&ok.iter().filter_map(|r| figure(r)).collect::<Vec<_>>())
        };
        Self {
            job,
            input,
            memory,
            tool,
            memory_limit_bytes,
            status: first_bad.map_or(RunStatus::Ok, |r| r.status),
            error: first_bad.and_then(|r| r.error.clone()),
            wall_s: med(|r| Some(r.wall_s)),
            job_s: med(|r| r.job_s),
            cpu_s: med(|r| Some(r.cpu_s)),
            peak_rss_bytes: ok.iter().map(|r| r.peak_rss_bytes).max(),
            spilled_bytes: ok.iter().filter_map(|r| r.spilled_bytes).max(),
            rows_out: ok.iter().find_map(|r| r.rows_out),
            vs_millrace: None,
            vs_floor: None,
            cpu_s_per_gb: None,
            runs,
        }
    }

    fn is_case(&self, job: Job, input: InputFormat, memory: MemorySetting) -> bool {
        self.job == job && self.input == input && self.memory == memory
    }

    /// Its wall time when it finished every run.
    fn finished_s(&self) -> Option<f64> {
        self.wall_s.filter(|_| self.status == RunStatus::Ok)
    }
}

/// Fills in every row's `vs_millrace`.
pub(super) fn relate_to_millrace(rows: &mut [ToolRow]) {
    let millrace: Vec<(Job, InputFormat, MemorySetting, Option<f64>)> = rows
        .iter()
        .filter(|r| r.tool == MILLRACE)
        .map(|r| (r.job, r.input, r.memory, r.finished_s()))
        .collect();
    for row in rows.iter_mut() {
        let base = millrace
            .iter()
            .find(|(j, i, m, _)| row.is_case(*j, *i, *m))
            .and_then(|m| m.3);
        row.vs_millrace = match (row.finished_s(), base) {
            (Some(wall), Some(base)) if base > 0.0 => Some(wall / base),
            _ => None,
        };
    }
}

/// Fills in every row's `vs_floor` and `cpu_s_per_gb` from its input.
pub(super) fn relate_to_floor(rows: &mut [ToolRow], data: &[DataSet]) {
    for row in rows.iter_mut() {
        let Some(input) = data
            .iter()
            .find(|d| d.kind == row.job.data_kind() && d.format == row.input)
        else {
            continue;
        };
        row.vs_floor = row
            .finished_s()
            .filter(|_| input.floor_s > 0.0)
            .map(|wall| wall / input.floor_s);
        row.cpu_s_per_gb = row
            .cpu_s
            .filter(|_| row.status == RunStatus::Ok && input.bytes > 0)
            .map(|cpu| cpu / (input.bytes as f64 / 1e9));
    }
}

/// The targets, case by case.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Targets {
    /// Millrace ≥ [`SPARK_TARGET`]× faster than Spark, per case where both finished.
    pub spark: Vec<SparkTarget>,
    /// Millrace ≤ [`FASTEST_TARGET`]× the fastest of DuckDB, Polars, DataFusion, in memory.
    pub fastest: Vec<FastestTarget>,
    /// Under the spill budget: who finished and who did not.
    pub spill: Vec<SpillOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SparkTarget {
    pub job: Job,
    pub input: InputFormat,
    pub memory: MemorySetting,
    pub millrace_s: f64,
    pub spark_s: f64,
    /// Spark's wall ÷ millrace's.
    pub speedup: f64,
    pub meets: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FastestTarget {
    pub job: Job,
    pub input: InputFormat,
    pub millrace_s: f64,
    pub fastest: &'static str,
    pub fastest_s: f64,
    /// Millrace's wall ÷ the fastest's.
    pub ratio: f64,
    pub meets: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpillOutcome {
    pub job: Job,
    pub input: InputFormat,
    pub millrace: RunStatus,
    pub millrace_spilled_bytes: Option<u64>,
    /// Peers that finished under the budget.
    pub finished: Vec<&'static str>,
    /// Peers that ran out of memory or failed, with the status.
    pub failed: Vec<(&'static str, RunStatus)>,
    /// Peers that cannot be held to a budget (Polars).
    pub unsupported: Vec<&'static str>,
}

/// The fast in-memory peers of the second target.
const FAST_PEERS: [&str; 3] = ["duckdb", "polars", "datafusion"];

impl Targets {
    pub(super) fn from_rows(rows: &[ToolRow]) -> Self {
        let mut targets = Targets::default();
        let millrace_rows = rows.iter().filter(|r| r.tool == MILLRACE);
        for m in millrace_rows {
            let case = |tool: &str| {
                rows.iter()
                    .find(|r| r.tool == tool && r.is_case(m.job, m.input, m.memory))
            };
            let Some(millrace_s) = m.finished_s() else {
                if m.memory == MemorySetting::Spill && m.status != RunStatus::Unsupported {
                    targets.spill.push(spill_outcome(m, rows));
                }
                continue;
            };
            if let Some(spark_s) = case("spark").and_then(ToolRow::finished_s) {
                let speedup = spark_s / millrace_s;
                targets.spark.push(SparkTarget {
                    job: m.job,
                    input: m.input,
                    memory: m.memory,
                    millrace_s,
                    spark_s,
                    speedup,
                    meets: speedup >= SPARK_TARGET,
                });
            }
            match m.memory {
                MemorySetting::InMemory => {
                    let fastest = FAST_PEERS
                        .iter()
                        .filter_map(|p| case(p).and_then(|r| Some((r.tool, r.finished_s()?))))
                        .min_by(|a, b| a.1.total_cmp(&b.1));
                    if let Some((fastest, fastest_s)) = fastest {
                        let ratio = millrace_s / fastest_s;
                        targets.fastest.push(FastestTarget {
                            job: m.job,
                            input: m.input,
                            millrace_s,
                            fastest,
                            fastest_s,
                            ratio,
                            meets: ratio <= FASTEST_TARGET,
                        });
                    }
                }
                MemorySetting::Spill => targets.spill.push(spill_outcome(m, rows)),
            }
        }
        targets
    }
}

fn spill_outcome(m: &ToolRow, rows: &[ToolRow]) -> SpillOutcome {
    let mut outcome = SpillOutcome {
        job: m.job,
        input: m.input,
        millrace: m.status,
        millrace_spilled_bytes: m.spilled_bytes,
        finished: Vec::new(),
        failed: Vec::new(),
        unsupported: Vec::new(),
    };
    for r in rows
        .iter()
        .filter(|r| r.tool != MILLRACE && r.is_case(m.job, m.input, MemorySetting::Spill))
    {
        match r.status {
            RunStatus::Ok => outcome.finished.push(r.tool),
            RunStatus::Unsupported => outcome.unsupported.push(r.tool),
            status => outcome.failed.push((r.tool, status)),
        }
    }
    outcome
}

/// Why the bench fails: outputs that differ, and millrace runs that did not finish
/// (a millrace that cannot read Parquet is `unsupported`, not a failure).
pub(super) fn failures(rows: &[ToolRow], comparisons: &[Comparison]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in comparisons {
        for d in &c.differences {
            failures.push(match &d.b {
                Some(b) => format!("{}: {} and {} differ: {}", c.job, d.a, b, d.what),
                None => format!("{}: {}: {}", c.job, d.a, d.what),
            });
        }
    }
    for r in rows.iter().filter(|r| {
        r.tool == MILLRACE && matches!(r.status, RunStatus::Failed | RunStatus::OutOfMemory)
    }) {
        failures.push(format!(
            "millrace {} on {} ({}) did not finish: {}",
            r.job,
            r.input.name(),
            r.memory.name(),
            r.error.as_deref().unwrap_or("no error line")
        ));
    }
    failures
}

/// A note of the report: tool, status and error.
type NoteKey<'a> = (&'a str, &'a str, &'a str);

fn secs(value: Option<f64>) -> String {
    value.map_or("—".to_owned(), |s| format!("{s:.2}"))
}

fn mib_or_dash(value: Option<u64>) -> String {
    value.map_or("—".to_owned(), mib)
}

/// Spilled bytes in MiB with one decimal (small spills are not 0).
fn spilled_mib(value: Option<u64>) -> String {
    value.map_or("—".to_owned(), |b| {
        format!("{:.1}", b as f64 / (1u64 << 20) as f64)
    })
}

fn memory_label(memory: MemorySetting, budget: u64) -> String {
    match memory {
        MemorySetting::InMemory => "in memory".to_owned(),
        MemorySetting::Spill => format!("budget {} MiB", mib(budget)),
    }
}

fn check(meets: bool) -> &'static str {
    if meets {
        "✓"
    } else {
        "✗"
    }
}

impl JobsReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// Whether every output agreed and every millrace run that could run finished.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn to_markdown(&self) -> String {
        let budget = self.spill_memory_bytes;
        let mut out = String::from("# millrace bench jobs\n\n");
        out += &format!("command: `{}`\n", self.command);
        out += &format!("machine: {}\n", self.machine.describe());
        if let Some(commit) = &self.commit {
            out += &format!("commit: {commit}\n");
        }
        out += &format!("scale {}:\n", self.scale);
        for data in &self.data {
            let floor = match data.floor_s {
                s if s > 0.0 => format!(
                    "floor {s:.2} s: {:.2} GB/s read",
                    data.bytes as f64 / 1e9 / s
                ),
                _ => "no floor".to_owned(),
            };
            out += &format!(
                "- {}: {} (generated in {:.1} s; {floor})\n",
                data.kind,
                data.describe(),
                data.gen_s,
            );
        }
        out += &format!(
            "memory: in memory = each tool's default (millrace half the RAM, Spark a heap of \
             PEER_HEAP, 8g); the spill budget = {} MiB (millrace `--memory`, DuckDB \
             `memory_limit`, DataFusion a fair spill pool, Spark the driver heap, at least \
             512 MiB; Polars has no limit)\n",
            mib(budget)
        );
        out += &format!("runs: {} per tool and case (medians)\n", self.runs);
        let tools: Vec<String> = self
            .tools
            .iter()
            .map(|t| match &t.setup {
                Setup::Ready { version } => version.clone(),
                Setup::Skipped { reason } => format!("{}: skipped — {reason}", t.tool),
            })
            .collect();
        out += &format!("tools: {}\n\n", tools.join("; "));

        out += "| job | input | memory | tool | status | wall s | job s | ÷ floor | CPU s | CPU s/GB | peak RSS MiB | spilled MiB | ÷ millrace |\n";
        out += "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        // (tool, status, error) → the cases it happened in.
        let mut notes: Vec<(NoteKey, Vec<String>)> = Vec::new();
        for r in &self.rows {
            let memory = match (r.memory, r.memory_limit_bytes) {
                (MemorySetting::Spill, Some(limit)) if limit != budget => {
                    format!("budget {} MiB (its limit {} MiB)", mib(budget), mib(limit))
                }
                (memory, _) => memory_label(memory, budget),
            };
            let tool = if r.tool == MILLRACE {
                format!("**{MILLRACE}**")
            } else {
                r.tool.to_owned()
            };
            let ratio = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.1}"));
            out += &format!(
                "| {} | {} | {memory} | {tool} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.job,
                r.input.name(),
                r.status.name(),
                secs(r.wall_s),
                secs(r.job_s),
                ratio(r.vs_floor),
                secs(r.cpu_s),
                ratio(r.cpu_s_per_gb),
                mib_or_dash(r.peak_rss_bytes),
                spilled_mib(r.spilled_bytes),
                r.vs_millrace.map_or("—".to_owned(), |v| format!("{v:.2}")),
            );
            if let Some(error) = &r.error {
                // One note per tool, status and error, listing the cases.
                let case = format!(
                    "{} {} {}",
                    r.job,
                    r.input.name(),
                    memory_label(r.memory, budget)
                );
                let key = (r.tool, r.status.name(), error.as_str());
                match notes.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, cases)) => cases.push(case),
                    None => notes.push((key, vec![case])),
                }
            }
        }
        out += "\nwall = spawn to exit + fsync of the output (Python import and JVM start \
                included); job s = the tool's own time (millrace: the job's wall; peers: \
                jobs.py's wall_s − startup_s); CPU (user + system) and peak RSS (its largest \
                process) of the process tree from wait4; spilled = millrace's spilled_bytes \
                (the peers do not report theirs); ÷ floor = wall ÷ the input's floor (reading \
                its files once, measured before the tools in each run; see the inputs above); \
                CPU s/GB = CPU seconds per 10^9 bytes of input files; ÷ millrace = wall ÷ \
                millrace's wall in the same job, input and memory.\n";
        if !notes.is_empty() {
            out += "\n";
            for ((tool, status, error), cases) in &notes {
                out += &format!("- {tool} {status} ({}): {error}\n", cases.join("; "));
            }
        }

        out += "\n## Results compared\n\n| job | outputs | pairs | rows | result |\n|---|--:|--:|--:|---|\n";
        for c in &self.comparisons {
            let result = if c.outputs < 2 {
                "nothing to compare".to_owned()
            } else if c.same {
                "all the same".to_owned()
            } else {
                format!("✗ {} differences", c.differences.len())
            };
            out += &format!(
                "| {} | {} | {} | {} | {result} |\n",
                c.job,
                c.outputs,
                c.pairs,
                c.rows.map_or("—".to_owned(), super::spec::thousands)
            );
        }
        out += "\nEvery finished output of a job (every format, memory setting, tool and run) \
                against every other, as multisets of rows (integers exactly, floats within \
                1e-9 relative).\n";

        out += &format!(
            "\n## Targets\n\n### ≥ {SPARK_TARGET:.0}× faster than Spark local[2]\n\n\
             | job | input | memory | millrace s | Spark s | Spark ÷ millrace | target |\n\
             |---|---|---|--:|--:|--:|:-:|\n"
        );
        for t in &self.targets.spark {
            out += &format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
                t.job,
                t.input.name(),
                memory_label(t.memory, budget),
                t.millrace_s,
                t.spark_s,
                t.speedup,
                check(t.meets)
            );
        }
        if self.targets.spark.is_empty() {
            out += "| — | | | | | | |\n";
        }
        out += &format!(
            "\n### within {FASTEST_TARGET}× of the fastest of DuckDB, Polars and DataFusion, in memory\n\n\
             | job | input | millrace s | fastest | its s | millrace ÷ fastest | target |\n\
             |---|---|--:|---|--:|--:|:-:|\n"
        );
        for t in &self.targets.fastest {
            out += &format!(
                "| {} | {} | {:.2} | {} | {:.2} | {:.2} | {} |\n",
                t.job,
                t.input.name(),
                t.millrace_s,
                t.fastest,
                t.fastest_s,
                t.ratio,
                check(t.meets)
            );
        }
        if self.targets.fastest.is_empty() {
            out += "| — | | | | | | |\n";
        }
        out += &format!(
            "\n### under the spill budget ({} MiB): finishes where they run out of memory\n\n\
             | job | input | millrace | millrace spilled MiB | peers finished | peers failed | no limit |\n\
             |---|---|---|--:|---|---|---|\n",
            mib(budget)
        );
        for s in &self.targets.spill {
            let failed: Vec<String> = s
                .failed
                .iter()
                .map(|(tool, status)| format!("{tool} ({})", status.name()))
                .collect();
            let list = |tools: &[&str]| {
                if tools.is_empty() {
                    "—".to_owned()
                } else {
                    tools.join(", ")
                }
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                s.job,
                s.input.name(),
                s.millrace.name(),
                spilled_mib(s.millrace_spilled_bytes),
                list(&s.finished),
                if failed.is_empty() {
                    "—".to_owned()
                } else {
                    failed.join(", ")
                },
                list(&s.unsupported)
            );
        }
        if self.targets.spill.is_empty() {
            out += "| — | | | | | | |\n";
        }
        out += "\n";
        if self.failures.is_empty() {
            out += "Result: every output agreed and every millrace run finished.\n";
        } else {
            out += "Result: FAILED\n";
            for f in &self.failures {
                out += &format!("- {f}\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::jobs::tools::Difference;

    fn run(status: RunStatus, wall_s: f64) -> ToolRun {
        ToolRun {
            status,
            wall_s,
            job_s: Some(wall_s / 2.0),
            cpu_s: wall_s * 1.5,
            peak_rss_bytes: 100 << 20,
            spilled_bytes: Some(0),
            rows_out: Some(20),
            error: (status != RunStatus::Ok).then(|| "Out of Memory Error".to_owned()),
        }
    }

    fn row(tool: &'static str, memory: MemorySetting, runs: Vec<ToolRun>) -> ToolRow {
        ToolRow::new(Job::GroupBy, InputFormat::Csv, memory, tool, None, runs)
    }

    fn rows() -> Vec<ToolRow> {
        use MemorySetting::*;
        let mut rows = vec![
            row(
                MILLRACE,
                InMemory,
                vec![run(RunStatus::Ok, 1.0), run(RunStatus::Ok, 3.0)],
            ),
            row("duckdb", InMemory, vec![run(RunStatus::Ok, 1.5)]),
            row("polars", InMemory, vec![run(RunStatus::Ok, 0.5)]),
            row("spark", InMemory, vec![run(RunStatus::Ok, 10.0)]),
            row(MILLRACE, Spill, vec![run(RunStatus::Ok, 2.0)]),
            row("duckdb", Spill, vec![run(RunStatus::OutOfMemory, 0.4)]),
            row(
                "polars",
                Spill,
                vec![ToolRun::unsupported("no memory limit".into())],
            ),
            row("spark", Spill, vec![run(RunStatus::Ok, 5.0)]),
        ];
        relate_to_millrace(&mut rows);
        rows
    }

    #[test]
    fn rows_take_medians_and_the_first_bad_status() {
        let r = row(
            MILLRACE,
            MemorySetting::InMemory,
            vec![
                run(RunStatus::Ok, 1.0),
                run(RunStatus::Failed, 9.0),
                run(RunStatus::Ok, 3.0),
            ],
        );
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.wall_s, Some(2.0), "median of the finished runs");
        assert_eq!(r.error.as_deref(), Some("Out of Memory Error"));
        let rows = rows();
        assert_eq!(rows[0].wall_s, Some(2.0));
        assert_eq!(rows[1].vs_millrace, Some(0.75));
        assert_eq!(rows[3].vs_millrace, Some(5.0));
        assert_eq!(rows[5].vs_millrace, None, "out of memory");
    }

    #[test]
    fn targets_compare_spark_the_fastest_and_the_spill_budget() {
        let targets = Targets::from_rows(&rows());
        assert_eq!(targets.spark.len(), 2);
        assert!(targets.spark[0].meets && targets.spark[0].speedup == 5.0);
        assert!(!targets.spark[1].meets && targets.spark[1].speedup == 2.5);
        assert_eq!(targets.fastest.len(), 1);
        let fastest = &targets.fastest[0];
        assert_eq!((fastest.fastest, fastest.ratio), ("polars", 4.0));
        assert!(!fastest.meets);
        assert_eq!(targets.spill.len(), 1);
        let spill = &targets.spill[0];
        assert_eq!(spill.finished, ["spark"]);
        assert_eq!(spill.failed, [("duckdb", RunStatus::OutOfMemory)]);
        assert_eq!(spill.unsupported, ["polars"]);
    }

    #[test]
    fn failures_name_the_job_and_both_tools() {
        let mut rows = rows();
        let comparison = Comparison {
            job: Job::GroupBy,
            outputs: 3,
            pairs: 3,
            rows: Some(20),
            same: false,
            differences: vec![Difference {
                a: "millrace csv in-memory".into(),
                b: Some("duckdb csv in-memory".into()),
                what: "row counts differ".into(),
            }],
        };
        assert_eq!(
            failures(&rows, std::slice::from_ref(&comparison)),
            ["groupby: millrace csv in-memory and duckdb csv in-memory differ: row counts differ"]
        );
        rows[4] = row(
            MILLRACE,
            MemorySetting::Spill,
            vec![run(RunStatus::Failed, 1.0)],
        );
        let found = failures(&rows, &[]);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("millrace groupby on csv (spill) did not finish"));
        // A millrace that cannot read the format is not a failure.
        rows[4] = row(
            MILLRACE,
            MemorySetting::Spill,
            vec![ToolRun::unsupported("unknown variant `parquet`".into())],
        );
        assert!(failures(&rows, &[]).is_empty());
    }

    #[test]
    fn markdown_has_a_row_per_tool_and_the_targets() {
        let mut rows = rows();
        // A gigabyte of CSV read in half a second: ÷ floor = wall ÷ 0.5, CPU s/GB = CPU s.
        let mut data = DataSet::planned(
            Job::GroupBy,
            InputFormat::Csv,
            &JobSizes::scaled(0.01),
            std::path::Path::new("/w"),
        );
        (data.bytes, data.floor_s, data.floor_runs_s) = (1_000_000_000, 0.5, vec![0.5, 0.5]);
        relate_to_floor(&mut rows, std::slice::from_ref(&data));
        let report = JobsReport {
            machine: Machine::detect(std::path::Path::new(".")),
            commit: Some("abc".into()),
            command: "millrace bench jobs --scale 0.01".into(),
            unix_time_s: 0,
            scale: 0.01,
            sizes: JobSizes::scaled(0.01),
            runs: 2,
            spill_memory_bytes: 16 << 20,
            data: vec![data],
            tools: vec![ToolSetup {
                tool: "spark",
                setup: Setup::Skipped {
                    reason: "java not found".into(),
                },
            }],
            targets: Targets::from_rows(&rows),
            failures: failures(&rows, &[]),
            rows,
            comparisons: Vec::new(),
        };
        let md = report.to_markdown();
        assert!(
            md.contains("command: `millrace bench jobs --scale 0.01`"),
            "{md}"
        );
        assert!(md.contains("spark: skipped — java not found"), "{md}");
        assert!(
            md.contains("| groupby | csv | in memory | **millrace** | ok | 2.00 | 1.00 | 4.0 | 3.00 | 3.0 | 100 | 0.0 | 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| groupby | csv | budget 16 MiB | duckdb | out of memory | — |"),
            "{md}"
        );
        assert!(
            md.contains("| groupby | csv | in memory | 2.00 | 10.00 | 5.00 | ✓ |"),
            "{md}"
        );
        assert!(
            md.contains("| groupby | csv | 2.00 | polars | 0.50 | 4.00 | ✗ |"),
            "{md}"
        );
        assert!(
            md.contains("| groupby | csv | ok | 0.0 | spark | duckdb (out of memory) | polars |"),
            "{md}"
        );
        assert!(md.contains("Result: every output agreed"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["rows"][5]["status"], "out_of_memory");
        assert_eq!(json["rows"][0]["memory"], "in-memory");
        assert_eq!(json["tools"][0]["status"], "skipped");
    }
}
