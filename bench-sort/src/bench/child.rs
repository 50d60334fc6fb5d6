//! The child processes a bench measures: `millrace sort` (and the [`ChildReport`] it prints
//! with `--json`) and GNU sort, each output validated against the generated records.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use engine::record::Checksum;
use serde::{Deserialize, Serialize};

use super::machine::cores;
use super::timeline::Timeline;
use super::{BenchConfig, BenchError, SortRun};
use crate::valsort;

/// Lines of a failed child's stderr kept in the error.
const STDERR_TAIL_LINES: usize = 20;

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

/// Runs `millrace sort` once as a child process, with `flags` after the usual ones, and
/// checks its output.
pub(super) fn sort_once(
    config: &BenchConfig,
    input: &Path,
    out: &Path,
    timeline: &Path,
    flags: &[&str],
    generated: &Checksum,
) -> Result<SortRun, BenchError> {
    const TOOL: &str = "millrace sort";
    let started = Instant::now();
    let (child, usage) = output_with_usage(
        Command::new(&config.millrace_exe)
            .arg("sort")
            .arg(input)
            .arg(out)
            .arg("--force")
            .arg("--json")
            .arg("--timeline")
            .arg(timeline)
            .args(flags),
    )
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
    let timeline = Timeline::read(timeline)?;
    let (map_reduce_overlap, first_pass_s) =
        (timeline.map_reduce_overlap(), timeline.first_pass_s());
    Ok(SortRun {
        wall_s: report.wall_ms / 1e3,
        process_s,
        peak_rss_bytes: report.peak_rss_bytes,
        overlap_ratio: report.overlap_ratio,
        map_reduce_overlap,
        first_pass_s,
        map_shuffle_overlap_ms: report.map_shuffle_overlap_ms,
        phases: report.phases,
        plan: report.plan,
        io: report.io,
        cpu_s_per_gb: report.cpu_s_per_gb,
        harness_cpu_s: Some(usage.cpu_s),
        harness_peak_rss_bytes: Some(usage.peak_rss_bytes),
    })
}

/// Makes `command`'s child get SIGKILL when the bench dies, however it dies (`kill -9`
/// included), so no sort or peer outlives the bench and writes into a folder the next bench
/// sweeps. (The kernel sends it when the thread that spawned the child exits; the bench
/// spawns from the thread that runs it.)
#[allow(unsafe_code)]
pub(super) fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one `prctl` system call through rustix,
    // allocating nothing and taking no lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(io::Error::from)
        })
    }
}

/// What `wait4` says a reaped child and the descendants it waited for used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Usage {
    /// User + system CPU seconds.
    pub(super) cpu_s: f64,
    /// `ru_maxrss`: the peak RSS of the largest single process of the tree.
    pub(super) peak_rss_bytes: u64,
}

/// Like [`Command::output`] (stdin null; stdout and stderr captured unless the command set
/// them), and the child's resource usage from `wait4`.
pub(super) fn output_with_usage(command: &mut Command) -> io::Result<(Output, Usage)> {
    use wait4::Wait4;
    let mut child = die_with_parent(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // stderr on a thread, so that neither pipe can fill up while the other is read.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    });
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_end(&mut stdout)?;
    }
    let stderr = stderr
        .map(|thread| thread.join().unwrap_or_default())
        .unwrap_or_default();
    let used = child.wait4()?;
    let usage = Usage {
        cpu_s: (used.rusage.utime + used.rusage.stime).as_secs_f64(),
        peak_rss_bytes: used.rusage.maxrss,
    };
    Ok((
        Output {
            status: used.status,
            stdout,
            stderr,
        },
        usage,
    ))
}

/// The first line of `sort --version` if it is GNU sort, else why GNU sort is skipped.
pub(super) fn gnu_sort_version() -> Result<String, String> {
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
pub(super) fn gnu_sort_once(
    input: &Path,
    out: &Path,
    generated: &Checksum,
) -> Result<(String, f64), BenchError> {
    const TOOL: &str = "GNU sort";
    let parallel = format!("--parallel={}", cores());
    let mut command = Command::new("sort");
    die_with_parent(&mut command)
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
    check_summary(tool, out, &summary, generated)
}

/// Checks the validation `summary` of `out`: sorted by key, and the generated records.
pub(super) fn check_summary(
    tool: &'static str,
    out: &Path,
    summary: &valsort::Summary,
    generated: &Checksum,
) -> Result<(), BenchError> {
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
pub(super) fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    if tail.is_empty() {
        "(nothing)".to_owned()
    } else {
        tail
    }
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
}
