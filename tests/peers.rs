//! `millrace bench sort --peers`: the peers run on the same inputs as the sort, through the
//! real binary and scripts/peers/run.sh, and land validated in the report.

mod util;

use std::path::PathBuf;
use std::time::Duration;

use util::{assert_error, run_with_timeout, skip, Fixture};

/// The first run installs DuckDB into a venv (pip); later runs reuse it.
const PEER_TIMEOUT: Duration = Duration::from_secs(900);

/// `MILLRACE_PEERS_DIR` as CI exports it (.ci/run prepares it), else a folder under
/// `target/tmp` that outlives the test, so pip runs once.
fn peers_dir() -> PathBuf {
    match std::env::var_os("MILLRACE_PEERS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers"),
    }
}

/// GNU sort and DuckDB sort the ASCII case (generated although `--ascii` is not given), once
/// each, and their rows are measured and validated; the binary case has no line peers.
#[test]
fn bench_runs_gnu_sort_and_duckdb_as_peers() {
    let f = Fixture::new();
    let (mut cmd, shown) = f.command([
        "bench",
        "sort",
        "--records",
        "20k",
        "--runs",
        "1",
        "--peers",
        "gnu-sort,duckdb",
        "--dir",
        "b",
    ]);
    cmd.env("MILLRACE_PEERS_DIR", peers_dir());
    let run = run_with_timeout(cmd, shown, PEER_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run}");
    let report: serde_json::Value = serde_json::from_slice(&f.read("b/bench-report.json")).unwrap();
    let cases = report["cases"].as_array().unwrap();
    let case = |format: &str| {
        cases
            .iter()
            .find(|c| c["format"] == format)
            .unwrap_or_else(|| panic!("no {format} case: {report}"))
    };
    assert_eq!(case("binary")["peers"], serde_json::json!([]));
    let ascii = case("ascii");
    let peers = ascii["peers"].as_array().unwrap();
    let names: Vec<_> = peers.iter().map(|p| p["peer"].as_str().unwrap()).collect();
    assert_eq!(names, ["gnu-sort", "duckdb"], "{report}");
    for peer in peers {
        if peer["status"] == "skipped" {
            let reason = peer["reason"].as_str().unwrap_or_default();
            assert_eq!(
                peer["peer"], "duckdb",
                "only DuckDB may be skipped (no python or pip here): {peer}"
            );
            skip(format_args!(
                "bench_runs_gnu_sort_and_duckdb_as_peers: duckdb: {reason}"
            ));
            continue;
        }
        assert_eq!(peer["status"], "measured", "{peer}");
        assert_eq!(peer["validated"], true, "{peer}");
        let runs = peer["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{peer}");
        assert!(peer["wall_s"].as_f64().unwrap() > 0.0, "{peer}");
        assert!(peer["peak_rss_bytes"].as_u64().unwrap() > 0, "{peer}");
        assert!(peer["cpu_s_per_gb"].as_f64().unwrap() >= 0.0, "{peer}");
        assert!(peer["floor_ratio"].as_f64().unwrap() > 0.0, "{peer}");
        let name = peer["peer"].as_str().unwrap();
        assert!(
            run.stdout.contains(&format!("| 20k ascii | {name} |")),
            "{run}"
        );
    }
    // GNU sort as a peer also fills the case's GNU sort column.
    assert_eq!(ascii["gnu_sort"]["status"], "measured", "{ascii}");
    // The harness measures the sorts with wait4 too.
    let sort_run = &ascii["sort_runs"][0];
    assert!(sort_run["harness_peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(sort_run["harness_cpu_s"].as_f64().unwrap() >= 0.0);
    assert!(
        run.stdout.contains("| 20k ascii | millrace sort |"),
        "{run}"
    );
    // Outputs and inputs are gone; the report stays.
    assert!(f.path("b/bench-report.json").is_file());
    let left: Vec<_> = std::fs::read_dir(f.path("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("millrace-job-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// An unknown peer fails before anything runs, naming the valid peers.
#[test]
fn unknown_peer_is_refused_with_the_valid_names() {
    let f = Fixture::new();
    let run = f.millrace([
        "bench",
        "--records",
        "1k",
        "--peers",
        "duckdb,dataflow",
        "--dir",
        "b",
    ]);
    assert_error(
        &run,
        &[
            "unknown peer \"dataflow\"",
            "gnu-sort, duckdb, polars, hadoop, spark, flink",
        ],
    );
    assert!(!f.path("b").exists());
}
