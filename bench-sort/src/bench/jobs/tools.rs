//! The child processes of `millrace bench jobs`: `jobs.sh setup|gen|run|compare` and
//! `millrace run`, each measured from spawn to exit (plus an fsync of its output) with the
//! CPU seconds and peak RSS of its process tree from `wait4`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::{InputFormat, Job, JobPeer};
use super::spec::DataSet;
use crate::bench::child::{die_with_parent, output_with_usage, tail, Usage};
use crate::bench::peers::run_setup;
pub use crate::bench::peers::Setup;
use crate::bench::{BenchError, PEERS_DIR_ENV};

/// Characters of an error message kept in the report.
const ERROR_CHARS: usize = 400;

/// How one run of one tool ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Finished; its output is compared with the others.
    Ok,
    /// The engine refused to go past its memory limit (`jobs.py` status `out_of_memory`).
    OutOfMemory,
    /// Failed otherwise.
    Failed,
    /// Not run: the tool cannot run this case (millrace refused the spec, e.g. a Parquet
    /// source this build lacks; Polars has no memory limit).
    Unsupported,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::OutOfMemory => "out of memory",
            RunStatus::Failed => "failed",
            RunStatus::Unsupported => "unsupported",
        }
    }
}

/// One measured run of one tool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolRun {
    pub status: RunStatus,
    /// Spawn to exit, plus the fsync of the output (Python import and JVM start included).
    pub wall_s: f64,
    /// The tool's own time: millrace's `wall_ms` (the job), a peer's `wall_s` − `startup_s`
    /// (the query after the engine's import and session start).
    pub job_s: Option<f64>,
    /// User + system CPU seconds of the process tree (`wait4`).
    pub cpu_s: f64,
    /// Peak RSS of the tree's largest process (`wait4`'s `ru_maxrss`).
    pub peak_rss_bytes: u64,
    /// Bytes millrace spilled (`spilled_bytes` of `run --json`); peers do not say.
    pub spilled_bytes: Option<u64>,
    /// Rows of the result, as the tool reports them.
    pub rows_out: Option<u64>,
    /// Why it did not finish: the tool's error line.
    pub error: Option<String>,
}

impl ToolRun {
    /// A run that failed until its output says otherwise, with its process tree's usage.
    fn failed(usage: &Usage) -> Self {
        Self {
            status: RunStatus::Failed,
            wall_s: 0.0,
            job_s: None,
            cpu_s: usage.cpu_s,
            peak_rss_bytes: usage.peak_rss_bytes,
            spilled_bytes: None,
            rows_out: None,
            error: None,
        }
    }

    /// A case the tool cannot run, with the reason.
    pub(super) fn unsupported(reason: String) -> Self {
        Self {
            status: RunStatus::Unsupported,
            wall_s: 0.0,
            job_s: None,
            cpu_s: 0.0,
            peak_rss_bytes: 0,
            spilled_bytes: None,
            rows_out: None,
            error: Some(reason),
        }
    }
}

/// `scripts/peers/jobs.sh` in the peers folder, and that folder.
#[derive(Clone, Debug)]
pub(super) struct Script {
    pub(super) path: PathBuf,
    pub(super) peers_dir: PathBuf,
}

impl Script {
    fn command(&self) -> Command {
        let mut command = Command::new("bash");
        die_with_parent(&mut command)
            .arg(&self.path)
            .env(PEERS_DIR_ENV, &self.peers_dir)
            .stdin(Stdio::null());
        command
    }

    /// `jobs.sh setup NAME` (a peer, or `gen`): ready with its version, skipped with the
    /// install step, or an error for any other failure.
    pub(super) fn setup(&self, name: &'static str) -> Result<Setup, BenchError> {
        let mut command = self.command();
        command.arg("setup").arg(name);
        run_setup(command, name)
    }

    /// Generates `data` with `jobs.sh gen`; fills in its bytes and seconds.
    pub(super) fn generate(&self, data: &mut DataSet) -> Result<(), BenchError> {
        let target = data.gen_target();
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|source| BenchError::Io {
                op: "create the data folder",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let started = Instant::now();
        let output = self
            .command()
            .arg("gen")
            .arg(data.kind)
            .arg(&target)
            .arg("--rows")
            .arg(data.rows.to_string())
            .arg("--format")
            .arg(match data.format {
                InputFormat::Parquet => "parquet",
                _ => "csv",
            })
            .output()
            .map_err(|source| BenchError::Spawn {
                program: PathBuf::from("bash"),
                source,
            })?;
        if !output.status.success() {
            return Err(BenchError::ChildFailed {
                tool: "jobs.sh gen",
                input: target,
                status: output.status.to_string(),
                stderr_tail: tail(&output.stderr),
            });
        }
        data.gen_s = started.elapsed().as_secs_f64();
        data.bytes = 0;
        for file in &data.files {
            let meta = fs::metadata(file).map_err(|source| BenchError::Io {
                op: "find the generated input",
                path: file.clone(),
                source,
            })?;
            data.bytes += meta.len();
        }
        Ok(())
    }

    /// Runs `peer` on `job` once: `jobs.sh run PEER JOB OUT --input … [--memory-limit N]`.
    pub(super) fn run_peer(
        &self,
        peer: JobPeer,
        job: Job,
        data: &DataSet,
        out: &Path,
        memory_limit: Option<u64>,
    ) -> Result<ToolRun, BenchError> {
        let mut command = self.command();
        command.arg("run").arg(peer.name()).arg(job.name()).arg(out);
        command.arg("--input").args(&data.files);
        if let Some(limit) = memory_limit {
            command.arg("--memory-limit").arg(limit.to_string());
        }
        let started = Instant::now();
        let (output, usage) =
            output_with_usage(&mut command).map_err(|source| BenchError::Spawn {
                program: PathBuf::from("bash"),
                source,
            })?;
        let line = last_json_line::<PeerLine>(&output.stdout);
        let mut run = ToolRun::failed(&usage);
        match line {
            Some(line) if output.status.success() && line.status == "ok" => {
                sync_output(out)?;
                run.wall_s = started.elapsed().as_secs_f64();
                run.status = RunStatus::Ok;
                run.job_s = match (line.wall_s, line.startup_s) {
                    (Some(wall), Some(startup)) => Some((wall - startup).max(0.0)),
                    _ => None,
                };
                run.rows_out = line.rows_out;
            }
            line => {
                run.wall_s = started.elapsed().as_secs_f64();
                let (status, error) = match line {
                    Some(line) => (
                        if line.status == "out_of_memory" {
                            RunStatus::OutOfMemory
                        } else {
                            RunStatus::Failed
                        },
                        line.error,
                    ),
                    None => (RunStatus::Failed, None),
                };
                run.status = status;
                run.error = Some(short(&error.unwrap_or_else(|| {
                    format!("{}: {}", output.status, last_line(&output.stderr))
                })));
            }
        }
        Ok(run)
    }

    /// Compares every output with every other (`jobs.sh compare --json`); `outputs` are
    /// (label, path) pairs, and the differences name the labels.
    pub(super) fn compare(
        &self,
        job: Job,
        outputs: &[(String, PathBuf)],
    ) -> Result<Comparison, BenchError> {
        let mut comparison = Comparison {
            job,
            outputs: outputs.len(),
            pairs: 0,
            rows: None,
            same: true,
            differences: Vec::new(),
        };
        if outputs.len() < 2 {
            comparison.rows = None;
            return Ok(comparison);
        }
        let mut command = self.command();
        command.arg("compare").arg("--json");
        command.args(outputs.iter().map(|(_, path)| path));
        let output = command.output().map_err(|source| BenchError::Spawn {
            program: PathBuf::from("bash"),
            source,
        })?;
        let parsed = last_json_line::<CompareLine>(&output.stdout);
        let Some(parsed) = parsed.filter(|_| matches!(output.status.code(), Some(0 | 1))) else {
            return Err(BenchError::ChildFailed {
                tool: "jobs.sh compare",
                input: outputs[0].1.clone(),
                status: output.status.to_string(),
                stderr_tail: tail(&output.stderr),
            });
        };
        let labels: HashMap<String, &str> = outputs
            .iter()
            .map(|(label, path)| (path.to_string_lossy().into_owned(), label.as_str()))
            .collect();
        let label = |path: &str| labels.get(path).map_or(path, |l| l).to_owned();
        comparison.pairs = parsed.pairs;
        comparison.same = parsed.same;
        comparison.rows = parsed.outputs.iter().find_map(|o| o.rows);
        comparison.differences = parsed
            .differences
            .iter()
            .map(|d| Difference {
                a: label(&d.a),
                b: d.b.as_deref().map(label),
                what: short(&d.what),
            })
            .collect();
        Ok(comparison)
    }
}

/// What all outputs of one job gave, compared each with each.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub job: Job,
    /// Outputs compared (every finished run of every tool, format and memory setting).
    pub outputs: usize,
    /// Pairs compared.
    pub pairs: usize,
    /// Rows of the result (of the first output).
    pub rows: Option<u64>,
    /// Every pair was the same.
    pub same: bool,
    pub differences: Vec<Difference>,
}

/// Two outputs that differ (or one that cannot be read: `b` is `None`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub a: String,
    pub b: Option<String>,
    pub what: String,
}

/// The fields of `jobs.py run`'s JSON line the bench uses.
#[derive(Debug, Deserialize)]
struct PeerLine {
    status: String,
    #[serde(default)]
    wall_s: Option<f64>,
    #[serde(default)]
    startup_s: Option<f64>,
    #[serde(default)]
    rows_out: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

/// `jobs.py compare --json`'s line.
#[derive(Debug, Deserialize)]
struct CompareLine {
    same: bool,
    outputs: Vec<CompareOutput>,
    pairs: usize,
    differences: Vec<CompareDifference>,
}

#[derive(Debug, Deserialize)]
struct CompareOutput {
    #[serde(default)]
    rows: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CompareDifference {
    a: String,
    b: Option<String>,
    what: String,
}

/// The fields of `millrace run --json` the bench uses (the ok document, or the error one).
#[derive(Debug, Deserialize)]
pub(super) struct MillraceLine {
    status: String,
    #[serde(default)]
    rows_out: Option<u64>,
    #[serde(default)]
    spilled_bytes: Option<u64>,
    #[serde(default)]
    wall_ms: Option<f64>,
    #[serde(default)]
    error: Option<MillraceError>,
}

#[derive(Debug, Deserialize)]
struct MillraceError {
    message: String,
}

/// Runs `millrace run SPEC --json --force --spill-dir SPILL [--memory M]` once; when it
/// finished, its sink folder `sink` is moved to `keep_as`.
pub(super) fn run_millrace(
    exe: &Path,
    spec: &Path,
    memory: Option<u64>,
    spill_dir: &Path,
    sink: &Path,
    keep_as: &Path,
) -> Result<ToolRun, BenchError> {
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(spec)
        .arg("--json")
        .arg("--force")
        .arg("--spill-dir")
        .arg(spill_dir);
    if let Some(bytes) = memory {
        command.arg("--memory").arg(bytes.to_string());
    }
    let started = Instant::now();
    let (output, usage) = output_with_usage(&mut command).map_err(|source| BenchError::Spawn {
        program: exe.to_path_buf(),
        source,
    })?;
    let line = parse_millrace(&output.stdout);
    let mut run = ToolRun::failed(&usage);
    match line {
        Some(line) if output.status.success() && line.status == "ok" => {
            sync_output(sink)?;
            run.wall_s = started.elapsed().as_secs_f64();
            run.status = RunStatus::Ok;
            run.job_s = line.wall_ms.map(|ms| ms / 1e3);
            run.spilled_bytes = line.spilled_bytes;
            run.rows_out = line.rows_out;
            fs::rename(sink, keep_as).map_err(|source| BenchError::Io {
                op: "move the millrace output to",
                path: keep_as.to_path_buf(),
                source,
            })?;
        }
        line => {
            run.wall_s = started.elapsed().as_secs_f64();
            let message = line.and_then(|l| l.error).map(|e| e.message);
            run.error = Some(short(&message.unwrap_or_else(|| {
                format!("{}: {}", output.status, last_line(&output.stderr))
            })));
        }
    }
    Ok(run)
}

/// `millrace run --json`'s document (compact on one line when it succeeded, pretty-printed
/// when it failed).
pub(super) fn parse_millrace(stdout: &[u8]) -> Option<MillraceLine> {
    serde_json::from_slice(stdout)
        .ok()
        .or_else(|| last_json_line(stdout))
}

/// The last line of `stdout` that parses as `T`.
fn last_json_line<T: for<'de> Deserialize<'de>>(stdout: &[u8]) -> Option<T> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line.trim()).ok())
}

/// The last non-empty line of a child's stderr.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("(nothing on stderr)")
        .to_owned()
}

/// One line of at most [`ERROR_CHARS`] characters.
pub(super) fn short(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Makes what a tool wrote durable (a file, or a folder's files and the folder), so that
/// every tool's wall time ends with its output on disk.
fn sync_output(out: &Path) -> Result<(), BenchError> {
    let fsync = |path: &Path| {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|source| BenchError::Io {
                op: "fsync",
                path: path.to_path_buf(),
                source,
            })
    };
    if out.is_dir() {
        let entries = fs::read_dir(out).map_err(|source| BenchError::Io {
            op: "list the output",
            path: out.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                fsync(&entry.path())?;
            }
        }
    }
    fsync(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millrace_documents_parse() {
        let ok = br#"{"schema":"millrace.run","status":"ok","rows_out":20,"spilled_runs":0,"spilled_bytes":123,"peak_rss_bytes":1,"wall_ms":86.5}"#;
        let line = parse_millrace(ok).unwrap();
        assert_eq!(
            (line.status.as_str(), line.rows_out, line.spilled_bytes),
            ("ok", Some(20), Some(123))
        );
        assert_eq!(line.wall_ms, Some(86.5));
        let error = b"{\n  \"schema\": \"millrace.error\",\n  \"status\": \"error\",\n  \"error\": {\n    \"message\": \"job spec gp.toml: unknown variant `parquet`\",\n    \"kind\": \"user\"\n  },\n  \"exit_code\": 2\n}\n";
        let line = parse_millrace(error).unwrap();
        assert_eq!(line.status, "error");
        assert_eq!(
            line.error.unwrap().message,
            "job spec gp.toml: unknown variant `parquet`"
        );
        assert!(parse_millrace(b"garbage").is_none());
    }

    #[test]
    fn peer_lines_parse_from_the_last_json_line() {
        let stdout = b"noise\n{\"peer\": \"duckdb\", \"status\": \"out_of_memory\", \"error\": \"Out of Memory Error: x\", \"wall_s\": 1.5, \"memory_limit\": 1}\n";
        let line: PeerLine = last_json_line(stdout).unwrap();
        assert_eq!(line.status, "out_of_memory");
        assert_eq!(line.error.as_deref(), Some("Out of Memory Error: x"));
        assert_eq!(line.startup_s, None);
        assert!(last_json_line::<PeerLine>(b"").is_none());
    }

    /// `jobs.py compare` through a stand-in `jobs.sh` (the comparison needs only python3's
    /// standard library): a folder of parts equals a sorted file, a changed count is a
    /// difference named by the labels, an empty folder is one that cannot be read.
    #[test]
    fn compare_names_the_tools_whose_outputs_differ() {
        let python = Command::new("python3").arg("-c").arg("").status();
        if !python.is_ok_and(|s| s.success()) {
            eprintln!("SKIP compare_names_the_tools_whose_outputs_differ: no python3");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let jobs_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/jobs.py");
        let script = Script {
            path: dir.join("jobs.sh"),
            peers_dir: dir.to_path_buf(),
        };
        fs::write(
            &script.path,
            format!("exec python3 {} \"$@\"\n", jobs_py.display()),
        )
        .unwrap();
        let parts = dir.join("millrace");
        fs::create_dir(&parts).unwrap();
        fs::write(parts.join("part-00000"), "segment,n,amount\nhome,2,3.5\n").unwrap();
        fs::write(parts.join("part-00001"), "segment,n,amount\n").unwrap();
        fs::write(
            parts.join("part-00002"),
            "segment,n,amount\nconsumer,1,0.30000000000000004\n",
        )
        .unwrap();
        let same = dir.join("duckdb.csv");
        fs::write(&same, "segment,n,amount\nconsumer,1,0.3\nhome,2,3.50\n").unwrap();
        let other = dir.join("spark.csv");
        fs::write(&other, "segment,n,amount\nconsumer,1,0.3\nhome,3,3.5\n").unwrap();
        let outputs = |list: &[(&str, &PathBuf)]| -> Vec<(String, PathBuf)> {
            list.iter()
                .map(|(l, p)| (l.to_string(), p.to_path_buf()))
                .collect()
        };
        let agreed = script
            .compare(
                Job::Join,
                &outputs(&[("millrace", &parts), ("duckdb", &same)]),
            )
            .unwrap();
        assert!(agreed.same, "{agreed:?}");
        assert_eq!((agreed.outputs, agreed.pairs, agreed.rows), (2, 1, Some(2)));
        let differ = script
            .compare(
                Job::Join,
                &outputs(&[("millrace", &parts), ("duckdb", &same), ("spark", &other)]),
            )
            .unwrap();
        assert!(!differ.same);
        assert_eq!(differ.pairs, 3);
        let named: Vec<(&str, Option<&str>)> = differ
            .differences
            .iter()
            .map(|d| (d.a.as_str(), d.b.as_deref()))
            .collect();
        assert_eq!(
            named,
            [("millrace", Some("spark")), ("duckdb", Some("spark"))]
        );
        assert!(
            differ.differences[0].what.contains("first difference"),
            "{differ:?}"
        );
        let empty = dir.join("empty");
        fs::create_dir(&empty).unwrap();
        let unreadable = script
            .compare(
                Job::Join,
                &outputs(&[("millrace", &empty), ("duckdb", &same)]),
            )
            .unwrap();
        assert!(!unreadable.same);
        assert_eq!(unreadable.differences[0].b, None);
        assert!(unreadable.differences[0].what.contains("no part files"));
        // One output: nothing to compare, and no child.
        let alone = script
            .compare(Job::Join, &outputs(&[("millrace", &parts)]))
            .unwrap();
        assert!(alone.same && alone.pairs == 0);
    }

    #[test]
    fn errors_are_one_short_line() {
        assert_eq!(short("a\n  b\tc"), "a b c");
        let long = "x".repeat(1000);
        assert_eq!(short(&long).chars().count(), ERROR_CHARS + 1);
        assert_eq!(last_line(b"first\nlast\n\n"), "last");
        assert_eq!(last_line(b""), "(nothing on stderr)");
    }
}
