//! Out-of-core sorts through the binary: inputs larger than the memory budget are spilled as
//! sorted runs and merged, with memory, disk traffic and temp folders checked.
//!
//! ```text
//! gen ─► input (200 MB) ─► millrace sort --memory 32MiB --spill-dir spill ─► output ─► validate
//!                               │ runs in spill/millrace-job-PID-N/ (removed at the end)
//!                               └ --json: plan, io per phase, peak RSS
//! ```

mod util;

use std::fs;
use std::process::Command;
use std::time::Duration;

use util::{assert_entries, assert_error, Fixture, SplitMix, KEY, RECORD};

/// Resident memory a run may use beyond the budget: 15% of it plus the process itself
/// (binary, threads, runtime: about 5.5 MB measured with a 1000-record sort).
fn rss_limit(budget: u64) -> u64 {
    // The process itself (code, libraries, relocated data): 8.9 MB for a test build since
    // the Parquet codecs were linked in (a `gen` of 1000 records).
    budget + budget * 15 / 100 + (10 << 20)
}

/// Sorts `input` with `budget` bytes of memory and spills in `spill/`; checks the output is
/// valid with the input's checksum, the plan spilled, every byte was read and written exactly
/// twice, RSS stayed within the limit and no temp folder is left. Returns the JSON summary.
fn check_out_of_core(
    f: &Fixture,
    input: &str,
    records: &str,
    checksum: &str,
    budget: &str,
    budget_bytes: u64,
    extra: &[&str],
) -> serde_json::Value {
    fs::create_dir_all(f.path("spill")).unwrap();
    // No hybrid spills here, so the disk traffic is exactly two passes whatever the load.
    let mut args = vec![
        "sort",
        "--force",
        "--hybrid-wait-ms",
        "0",
        input,
        "sorted.dat",
        "--memory",
        budget,
        "--spill-dir",
        "spill",
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = f.ok(&args);
    let json = run.json();
    assert_eq!(json["plan"], "out-of-core", "{run}");
    let io = &json["io"];
    assert_eq!(io["reads_per_byte"].as_f64(), Some(2.0), "{run}");
    assert_eq!(io["writes_per_byte"].as_f64(), Some(2.0), "{run}");
    assert!(io["spilled_runs"].as_u64().unwrap() >= 2, "{run}");
    let rss = json["peak_rss_bytes"]
        .as_u64()
        .expect("peak RSS is reported on Linux");
    assert!(
        rss <= rss_limit(budget_bytes),
        "peak RSS {rss} over {} for a budget of {budget_bytes}",
        rss_limit(budget_bytes)
    );
    assert_entries(&f.path("spill"), &[]);
    let valid = f.ok(["validate", "sorted.dat"]);
    assert_eq!(valid.field("Records").as_deref(), Some(records));
    assert_eq!(valid.field("Checksum").as_deref(), Some(checksum));
    json
}

#[test]
fn sorts_200_mb_in_32_mib() {
    let f = Fixture::new();
    let (records, checksum) = f.gen(&[], "2M", "in.dat");
    check_out_of_core(&f, "in.dat", &records, &checksum, "32MiB", 32 << 20, &[]);
    // The same bytes as an in-memory sort.
    f.ok(["sort", "in.dat", "memory.dat"]);
    assert_eq!(f.sha256("sorted.dat"), f.sha256("memory.dat"));
    assert_entries(&f.dir, &["in.dat", "memory.dat", "sorted.dat", "spill"]);
}

#[test]
fn sorts_skewed_keys_out_of_core() {
    let f = Fixture::new();
    let (records, checksum) = f.gen(&["--skew"], "2M", "in.dat");
    check_out_of_core(&f, "in.dat", &records, &checksum, "32MiB", 32 << 20, &[]);
}

#[test]
fn sorts_all_equal_keys_out_of_core() {
    let f = Fixture::new();
    let mut bytes = vec![0u8; 2_000_000 * RECORD];
    SplitMix(7).fill(&mut bytes);
    for record in bytes.chunks_exact_mut(RECORD) {
        record[..KEY].copy_from_slice(b"SAMEKEY!!!");
    }
    f.write("in.dat", &bytes);
    let checksum = f.ok(["validate", "in.dat"]).field("Checksum").unwrap();
    check_out_of_core(&f, "in.dat", "2000000", &checksum, "32MiB", 32 << 20, &[]);
    let valid = f.ok(["validate", "sorted.dat"]);
    assert_eq!(valid.field("Duplicate keys").as_deref(), Some("1999999"));
}

/// Every spill I/O engine and codec gives the same output.
#[test]
fn engines_and_codecs_agree() {
    let f = Fixture::new();
    let (records, checksum) = f.gen(&["--ascii"], "1M", "in.dat");
    f.ok(["sort", "in.dat", "memory.dat"]);
    for extra in [
        &["--spill-io", "pwrite", "--compress", "none"][..],
        &["--spill-io", "uring", "--compress", "lz4"],
        &["--compress", "auto"],
    ] {
        if extra.contains(&"uring") && shuffle_uring_unavailable(&f) {
            util::skip(format_args!("io_uring: not available here"));
            continue;
        }
        check_out_of_core(&f, "in.dat", &records, &checksum, "64MiB", 64 << 20, extra);
        assert_eq!(f.sha256("sorted.dat"), f.sha256("memory.dat"), "{extra:?}");
    }
}

/// A budget too small to merge every run at once (6 MiB for 100 MB: about 90 runs) merges
/// groups of runs first: more than two passes, memory still within the budget, same output.
#[test]
fn small_budgets_cascade_merges_within_the_budget() {
    let f = Fixture::new();
    f.gen(&[], "1M", "in.dat");
    f.ok(["sort", "in.dat", "memory.dat"]);
    let run = f.ok([
        "sort",
        "in.dat",
        "sorted.dat",
        "--memory",
        "6MiB",
        "--hybrid-wait-ms",
        "0",
        "--json",
    ]);
    let json = run.json();
    assert!(
        json["io"]["reads_per_byte"].as_f64().unwrap() > 2.0,
        "{run}"
    );
    assert!(json["io"]["spilled_runs"].as_u64().unwrap() > 64, "{run}");
    assert!(
        json["peak_rss_bytes"].as_u64().unwrap() <= rss_limit(6 << 20),
        "{run}"
    );
    assert_eq!(f.sha256("sorted.dat"), f.sha256("memory.dat"));
}

/// Whether forcing io_uring fails on this machine (a tiny sort tells).
fn shuffle_uring_unavailable(f: &Fixture) -> bool {
    f.gen(&[], "1000", "probe.dat");
    fs::create_dir_all(f.path("spill")).unwrap();
    let run = f.millrace([
        "sort",
        "probe.dat",
        "probe.out",
        "--memory",
        "1MiB",
        "--spill-io",
        "uring",
        "--spill-dir",
        "spill",
    ]);
    let _ = fs::remove_file(f.path("probe.out"));
    let _ = fs::remove_file(f.path("probe.dat"));
    run.stderr.contains("io_uring")
}

#[test]
fn input_that_fits_is_sorted_in_memory_with_one_pass() {
    let f = Fixture::new();
    f.gen(&[], "100k", "in.dat");
    let json = f
        .ok(["sort", "in.dat", "out.dat", "--memory", "64MiB", "--json"])
        .json();
    assert_eq!(json["plan"], "in-memory");
    assert_eq!(json["io"]["reads_per_byte"].as_f64(), Some(1.0));
    assert_eq!(json["io"]["writes_per_byte"].as_f64(), Some(1.0));
}

#[test]
fn budget_too_small_says_the_minimum() {
    let f = Fixture::new();
    f.gen(&[], "100k", "in.dat");
    let run = f.millrace(["sort", "in.dat", "out.dat", "--memory", "256KiB"]);
    assert_error(&run, &["too small", "at least", "--memory"]);
    assert_entries(&f.dir, &["in.dat"]);
}

#[test]
fn missing_spill_dir_is_named() {
    let f = Fixture::new();
    f.gen(&[], "100k", "in.dat");
    let run = f.millrace([
        "sort",
        "in.dat",
        "out.dat",
        "--memory",
        "2MiB",
        "--spill-dir",
        "nope",
    ]);
    assert_error(&run, &["spill dir", "nope"]);
    assert_entries(&f.dir, &["in.dat"]);
}

#[test]
fn read_only_spill_dir_is_named() {
    let f = Fixture::new();
    f.gen(&[], "100k", "in.dat");
    let Some(spill) = f.tmpfs("ro", "ro,size=1m") else {
        return;
    };
    let run = f.millrace([
        "sort",
        "in.dat",
        "out.dat",
        "--memory",
        "2MiB",
        "--spill-dir",
        spill.to_str().unwrap(),
    ]);
    assert_error(&run, &["spill dir", "ro"]);
    assert_entries(&f.dir, &["in.dat", "ro"]);
}

/// A spill dir on a 20 MB file system cannot take 100 MB of runs: the error names the spill
/// file and the bytes it needed; nothing is left behind.
#[test]
fn disk_full_while_spilling_is_reported() {
    let f = Fixture::new();
    f.gen(&[], "1M", "in.dat");
    let Some(spill) = f.tmpfs("small", "size=20m") else {
        return;
    };
    let run = f.millrace([
        "sort",
        "in.dat",
        "out.dat",
        "--memory",
        "16MiB",
        "--spill-dir",
        spill.to_str().unwrap(),
    ]);
    let line = assert_error(&run, &["small", "bytes"]);
    assert!(
        line.to_lowercase().contains("full") || line.contains("space"),
        "{line}"
    );
    assert_entries(&spill, &[]);
    assert_entries(&f.dir, &["in.dat", "small"]);
}

/// A job folder whose owner died is removed by the next run; the folder of a live job (the
/// running sort's own) is not.
#[test]
fn stale_job_folders_of_dead_processes_are_removed() {
    let f = Fixture::new();
    f.gen(&[], "200k", "in.dat");
    let stale = f.path("spill/millrace-job-999999-3");
    fs::create_dir_all(&stale).unwrap();
    // Millrace's marker: only marked folders are ever removed.
    fs::write(
        stale.join(engine::tempdir::MARKER),
        engine::tempdir::MARKER_TEXT,
    )
    .unwrap();
    fs::write(stale.join("sort-0.runs"), vec![0u8; 4096]).unwrap();
    f.ok([
        "sort",
        "in.dat",
        "out.dat",
        "--memory",
        "4MiB",
        "--spill-dir",
        "spill",
    ]);
    assert_entries(&f.path("spill"), &[]);
}

/// Ctrl-C in the middle of an out-of-core sort removes the spill folder and the temp output.
#[test]
fn interrupt_removes_spill_and_temp_files() {
    let f = Fixture::new();
    f.gen(&[], "2M", "in.dat");
    fs::create_dir_all(f.path("spill")).unwrap();
    let (mut cmd, _) = f.command([
        "sort",
        "in.dat",
        "out.dat",
        "--memory",
        "16MiB",
        "--spill-dir",
        "spill",
    ]);
    let mut child = cmd.spawn().unwrap();
    // Wait until the job has created its spill folder, then interrupt it.
    for _ in 0..500 {
        if fs::read_dir(f.path("spill")).unwrap().next().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    if exit.success() {
        eprintln!("the sort finished before the signal; nothing to check");
        return;
    }
    assert_eq!(exit.code(), Some(130));
    assert_entries(&f.path("spill"), &[]);
    assert_entries(&f.dir, &["in.dat", "spill"]);
}

/// The hybrid exchange: with a 1 ms patience, maps spill buffers for reducers that are busy
/// spilling runs; the output is still right, and the spilled bytes are exactly the extra disk
/// traffic the report shows.
#[test]
fn hybrid_exchange_spills_for_busy_reducers_and_accounts_for_it() {
    let f = Fixture::new();
    let (records, checksum) = f.gen(&[], "2M", "in.dat");
    fs::create_dir_all(f.path("spill")).unwrap();
    let run = f.ok([
        "sort",
        "in.dat",
        "sorted.dat",
        "--memory",
        "16MiB",
        "--spill-dir",
        "spill",
        "--hybrid-wait-ms",
        "1",
        "--json",
    ]);
    let json = run.json();
    let io = &json["io"];
    let size = 2_000_000.0 * RECORD as f64;
    let hybrid = io["hybrid_spilled_bytes"].as_u64().unwrap() as f64;
    let expected = 2.0 + hybrid / size;
    assert!(
        (io["reads_per_byte"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{run}"
    );
    assert!(
        (io["writes_per_byte"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{run}"
    );
    if hybrid == 0.0 {
        eprintln!("no reducer was busy for 1 ms in this run; nothing was spilled by maps");
    }
    assert_entries(&f.path("spill"), &[]);
    let valid = f.ok(["validate", "sorted.dat"]);
    assert_eq!(valid.field("Records"), Some(records));
    assert_eq!(valid.field("Checksum"), Some(checksum));
}
