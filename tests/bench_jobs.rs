//! `millrace bench jobs`: word count, group-by and join through the real binary beside DuckDB
//! (scripts/peers/jobs.sh, installed in the venv CI prepares), in memory and under the spill
//! budget, every output compared with every other, the report in `--dir`.

mod util;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use util::{assert_error, run_with_timeout, skip, Fixture};

/// The first run installs numpy, pyarrow and DuckDB into a venv (pip); later runs reuse it.
const PEER_TIMEOUT: Duration = Duration::from_secs(900);

/// `MILLRACE_PEERS_DIR` as CI exports it (.ci/run prepares it), else a folder under
/// `target/tmp` that outlives the test, so pip runs once.
fn peers_dir() -> PathBuf {
    match std::env::var_os("MILLRACE_PEERS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers"),
    }
}

/// The rows of one job, input and memory setting.
fn rows<'a>(report: &'a Value, job: &str, input: &str, memory: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["job"] == job && r["input"] == input && r["memory"] == memory)
        .collect()
}

#[test]
fn bench_jobs_runs_every_job_beside_duckdb_and_compares_the_outputs() {
    let f = Fixture::new();
    let (mut cmd, shown) = f.command([
        "bench", "jobs", "--scale", "0.0001", "--peers", "duckdb", "--dir", "b",
    ]);
    cmd.env("MILLRACE_PEERS_DIR", peers_dir());
    let run = run_with_timeout(cmd, shown, PEER_TIMEOUT);
    if run.code == Some(2) && run.stderr.contains("cannot generate its inputs") {
        // No python3, venv or PyPI here: the line names the install step.
        skip(format_args!(
            "bench_jobs_runs_every_job_beside_duckdb_and_compares_the_outputs: {}",
            run.stderr.lines().last().unwrap_or_default()
        ));
        return;
    }
    assert_eq!(run.code, Some(0), "{run}");
    let report: Value = serde_json::from_slice(&f.read("b/bench-jobs-report.json")).unwrap();
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    assert_eq!(report["spill_memory_bytes"], 16u64 << 20);
    let duckdb = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "duckdb")
        .unwrap();
    let duckdb_ready = duckdb["status"] == "ready";
    if !duckdb_ready {
        skip(format_args!(
            "bench_jobs_runs_every_job_beside_duckdb_and_compares_the_outputs: duckdb: {}",
            duckdb["reason"]
        ));
    }
    for (job, inputs) in [
        ("wordcount", &["text"][..]),
        ("groupby", &["csv", "parquet"]),
        ("join", &["csv", "parquet"]),
    ] {
        for input in inputs {
            for memory in ["in-memory", "spill"] {
                let case = rows(&report, job, input, memory);
                let tools: Vec<&str> = case.iter().map(|r| r["tool"].as_str().unwrap()).collect();
                let expected: &[&str] = if duckdb_ready {
                    &["millrace", "duckdb"]
                } else {
                    &["millrace"]
                };
                assert_eq!(tools, expected, "{job} {input} {memory}: {report}");
                for row in case {
                    let status = row["status"].as_str().unwrap();
                    // A build without the Parquet source says so instead of running.
                    if row["tool"] == "millrace" && *input == "parquet" && status == "unsupported" {
                        assert!(row["error"].as_str().unwrap().contains("parquet"), "{row}");
                        continue;
                    }
                    assert_eq!(status, "ok", "{row}");
                    assert!(row["wall_s"].as_f64().unwrap() > 0.0, "{row}");
                    assert!(row["peak_rss_bytes"].as_u64().unwrap() > 0, "{row}");
                    assert!(row["cpu_s"].as_f64().unwrap() >= 0.0, "{row}");
                    if row["tool"] == "millrace" {
                        assert!(row["spilled_bytes"].as_u64().is_some(), "{row}");
                        assert_eq!(row["vs_millrace"], 1.0, "{row}");
                    }
                    // Figures against the input: its floor (read once) and its size.
                    assert!(row["vs_floor"].as_f64().unwrap() > 0.0, "{row}");
                    assert!(row["cpu_s_per_gb"].as_f64().unwrap() >= 0.0, "{row}");
                }
            }
        }
        let comparison = report["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["job"] == job)
            .unwrap();
        assert_eq!(comparison["same"], true, "{comparison}");
        // millrace in memory and under the budget at least, and DuckDB's.
        let least = if duckdb_ready { 4 } else { 2 };
        assert!(
            comparison["outputs"].as_u64().unwrap() >= least,
            "{comparison}"
        );
        assert!(comparison["rows"].as_u64().unwrap() > 0, "{comparison}");
    }
    for data in report["data"].as_array().unwrap() {
        assert!(data["floor_s"].as_f64().unwrap() > 0.0, "{data}");
        assert_eq!(data["floor_runs_s"].as_array().unwrap().len(), 1, "{data}");
    }
    // The Markdown report is stdout and the file.
    let markdown = String::from_utf8(f.read("b/bench-jobs-report.md")).unwrap();
    assert_eq!(markdown.trim_end(), run.stdout.trim_end());
    for needle in [
        "command: `millrace bench jobs --scale 0.0001 --peers duckdb --dir b`",
        "| wordcount | text | in memory | **millrace** | ok |",
        "| join | csv | budget 16 MiB | **millrace** | ok |",
        "## Results compared",
        "| groupby | ",
        "### within 1.5× of the fastest of DuckDB, Polars and DataFusion, in memory",
        "Result: every output agreed and every millrace run finished.",
    ] {
        assert!(markdown.contains(needle), "{needle:?} not in:\n{markdown}");
    }
    if duckdb_ready {
        assert!(
            markdown.contains("| wordcount | text | in memory | duckdb | ok |"),
            "{markdown}"
        );
    }
    // Inputs and outputs are gone; the report stays.
    let left: Vec<_> = std::fs::read_dir(f.path("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("millrace-job-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `--keep` keeps the inputs, the specs (runnable with `millrace run`) and every output.
#[test]
fn bench_jobs_keep_leaves_the_specs_and_their_data() {
    let f = Fixture::new();
    let (mut cmd, shown) = f.command([
        "bench", "jobs", "--scale", "0.0001", "--jobs", "groupby", "--peers", "none", "--keep",
        "--json", "--dir", "b",
    ]);
    cmd.env("MILLRACE_PEERS_DIR", peers_dir());
    let run = run_with_timeout(cmd, shown, PEER_TIMEOUT);
    if run.code == Some(2) && run.stderr.contains("cannot generate its inputs") {
        skip(format_args!(
            "bench_jobs_keep_leaves_the_specs_and_their_data: {}",
            run.stderr.lines().last().unwrap_or_default()
        ));
        return;
    }
    assert_eq!(run.code, Some(0), "{run}");
    let doc = run.json();
    assert_eq!(doc["schema"], "millrace.bench.jobs");
    assert_eq!(doc["status"], "ok");
    let report = &doc["report"];
    let tools: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["millrace"; 4], "{report}");
    let work: Vec<_> = std::fs::read_dir(f.path("b"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("millrace-job-")
        })
        .collect();
    assert_eq!(work.len(), 1, "{work:?}");
    let work = &work[0];
    assert!(work.join("data/sales.csv").is_file());
    assert!(work.join("data/sales.parquet").is_file());
    assert!(work.join("out/groupby-csv-in-memory-1-millrace").is_dir());
    // The kept spec runs again by hand.
    let spec = work.join("groupby-csv.toml");
    let again = f.millrace([
        "run".as_ref(),
        spec.as_os_str(),
        "--force".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(again.code, Some(0), "{again}");
    assert_eq!(again.json()["rows_out"], 20);
}

/// Unknown jobs and peers fail before anything runs, naming the valid ones.
#[test]
fn bench_jobs_refuses_unknown_names_and_bad_scales() {
    let f = Fixture::new();
    for (args, needles) in [
        (
            &["--jobs", "wordcount,sort"][..],
            &["unknown job \"sort\"", "wordcount, groupby, join"][..],
        ),
        (
            &["--peers", "duckdb,flink"],
            &[
                "unknown peer \"flink\"",
                "duckdb, polars, datafusion, spark",
            ],
        ),
        (&["--scale", "0"], &["is not a scale"]),
        (&["--spill-memory", "1MiB"], &["below the 4 MiB"]),
    ] {
        let run = f.millrace(
            ["bench", "jobs", "--dir", "b"]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>(),
        );
        assert_error(&run, needles);
        assert!(!f.path("b").exists());
    }
}

/// `jobs.py compare` reads only digits as numbers: the words "nan" and "inf" (a word count
/// has them) are text, so outputs listing them in another order are the same; a real
/// difference is still one.
#[test]
fn compare_takes_nan_and_inf_words_as_text() {
    let f = Fixture::new();
    f.write("a.csv", b"word,n\nnan,4\ninf,4\nx,1.5\n");
    f.write("b.csv", b"word,n\ninf,4\nx,1.5000000000001\nnan,4\n");
    f.write("c.csv", b"word,n\ninf,4\nx,1.5\nnan,5\n");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/jobs.py");
    let compare = |a: &str, b: &str| {
        std::process::Command::new("python3")
            .arg(script)
            .args(["compare", a, b])
            .current_dir(f.path(""))
            .output()
    };
    let Ok(same) = compare("a.csv", "b.csv") else {
        skip(format_args!(
            "compare_takes_nan_and_inf_words_as_text: no python3"
        ));
        return;
    };
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let differ = compare("a.csv", "c.csv").unwrap();
    assert_eq!(differ.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&differ.stderr).contains("nan"));
}
