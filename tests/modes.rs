//! One runtime, three execution styles: the same TeraSort graph with its exchange as a
//! pipelined (or hybrid) partition, as a blocking one (`--mode staged`), or as a blocking one
//! with sorting map tasks and slow start (`--mode mapreduce`). The output is the same to the
//! byte; only when reducers run differs, and the timeline shows it.

mod util;

use util::Fixture;

/// Sorts `input` in `mode` with a timeline; returns the sort's JSON and the timeline.
fn sort(f: &Fixture, input: &str, output: &str, mode: &str, extra: &[&str]) -> serde_json::Value {
    let timeline = format!("{output}.timeline.json");
    let mut args = vec![
        "sort",
        input,
        output,
        "--mode",
        mode,
        "--json",
        "--timeline",
        &timeline,
    ];
    args.extend_from_slice(extra);
    let json = f.ok(&args).json();
    assert_eq!(json["mode"], mode, "{json}");
    serde_json::from_slice(&f.read(&timeline)).expect("the timeline is JSON")
}

/// (last map end, first reducer deploy, first reducer receive end) in microseconds.
fn map_and_reduce_times(timeline: &serde_json::Value) -> (u64, u64, u64) {
    let subtasks = timeline["subtasks"].as_array().unwrap();
    let of = |vertex: &'static str| subtasks.iter().filter(move |s| s["vertex"] == vertex);
    let last_map_end = of("map")
        .map(|s| s["end_us"].as_u64().unwrap())
        .max()
        .unwrap();
    let first_deploy = of("sort")
        .map(|s| s["deployed_us"].as_u64().unwrap())
        .min()
        .unwrap();
    let first_receive_start = of("sort")
        .flat_map(|s| s["spans"].as_array().unwrap().iter())
        .filter(|span| span["name"] == "receive")
        .map(|span| span["start_us"].as_u64().unwrap())
        .min()
        .unwrap();
    (last_map_end, first_deploy, first_receive_start)
}

/// Every mode gives the pipelined output byte for byte: binary, ASCII and skewed keys, in
/// memory and out of core (mapreduce also with map tasks that spill several runs).
#[test]
fn every_mode_gives_the_pipelined_output() {
    let f = Fixture::new();
    for (name, flags) in [
        ("bin", &[][..]),
        ("ascii", &["--ascii"][..]),
        ("skew", &["--skew"][..]),
    ] {
        let (records, checksum) = f.gen(flags, "200k", name);
        for (plan, extra) in [
            ("in-memory", &[][..]),
            ("out-of-core", &["--memory", "8MiB"][..]),
        ] {
            let pipelined = format!("{name}-{plan}-pipelined");
            sort(&f, name, &pipelined, "pipelined", extra);
            for (mode, more) in [
                ("staged", &[][..]),
                ("mapreduce", &[][..]),
                // Small splits and sort buffers: several map tasks, each spilling runs that
                // it merges into its output.
                (
                    "mapreduce",
                    &["--map-sort-buffer", "300000", "--split-bytes", "1MB"][..],
                ),
            ] {
                let small = if more.is_empty() { "" } else { "-small-splits" };
                let other = format!("{name}-{plan}-{mode}{small}");
                let mut flags = extra.to_vec();
                flags.extend_from_slice(more);
                let json = sort(&f, name, &other, mode, &flags);
                assert_eq!(
                    f.sha256(&other),
                    f.sha256(&pipelined),
                    "{name} {plan} {mode} {more:?}: differs from pipelined"
                );
                let valid = f.ok(["validate", &other, "--json"]).json();
                assert_eq!(valid["ordered"], true);
                assert_eq!(valid["checksum"], checksum.as_str());
                assert_eq!(valid["records"].to_string(), records);
                if !more.is_empty() {
                    let maps = json["subtasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| s["vertex"] == "map")
                        .collect::<Vec<_>>();
                    assert!(maps.len() >= 20, "one map task per 1 MB split");
                    assert!(
                        maps.iter().all(|m| m["spans"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|s| s["name"] == "spill")
                            .count()
                            >= 3),
                        "every map task spilled several runs"
                    );
                }
                std::fs::remove_file(f.path(&other)).unwrap();
                std::fs::remove_file(f.path(&format!("{other}.timeline.json"))).unwrap();
            }
        }
    }
}

/// Staged: no reducer is deployed before the last map finished. Pipelined: reducers receive
/// while maps still run. Mapreduce: reducers copy before and merge after the last map.
#[test]
fn the_timeline_shows_when_reducers_ran() {
    let f = Fixture::new();
    f.gen(&[], "1M", "in");
    for extra in [&[][..], &["--memory", "16MiB"][..]] {
        let staged = sort(&f, "in", "staged", "staged", extra);
        let (last_map_end, first_deploy, first_receive) = map_and_reduce_times(&staged);
        assert!(
            first_deploy >= last_map_end && first_receive >= last_map_end,
            "staged {extra:?}: a reducer ran at {first_deploy}/{first_receive} before the last map ended at {last_map_end}"
        );
        let pipelined = sort(&f, "in", "pipelined", "pipelined", extra);
        let (last_map_end, first_deploy, first_receive) = map_and_reduce_times(&pipelined);
        assert!(
            first_deploy < last_map_end && first_receive < last_map_end,
            "pipelined {extra:?}: reducers started only at {first_deploy}/{first_receive}, after the last map ended at {last_map_end}"
        );
        // Mapreduce: reducers copy map outputs from the first finished map task on, and
        // merge only after the last one.
        let mut args = vec!["--split-bytes", "10MB"];
        args.extend_from_slice(extra);
        let mapreduce = sort(&f, "in", "mapreduce", "mapreduce", &args);
        let (last_map_end, first_deploy, first_receive) = map_and_reduce_times(&mapreduce);
        let first_merge = mapreduce["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["vertex"] == "sort")
            .flat_map(|s| s["spans"].as_array().unwrap().iter())
            .filter(|span| span["name"] == "sort+write")
            .map(|span| span["start_us"].as_u64().unwrap())
            .min()
            .unwrap();
        assert!(
            first_deploy < last_map_end && first_receive < last_map_end,
            "mapreduce {extra:?}: reducers started copying only at {first_deploy}/{first_receive}, after the last map ended at {last_map_end}"
        );
        assert!(
            first_merge >= last_map_end,
            "mapreduce {extra:?}: a reducer merged at {first_merge}, before the last map ended at {last_map_end}"
        );
        for output in ["staged", "pipelined", "mapreduce"] {
            std::fs::remove_file(f.path(output)).unwrap();
            std::fs::remove_file(f.path(&format!("{output}.timeline.json"))).unwrap();
        }
    }
}

/// `--mode staged` retries a failed map and a failed reducer alone, pipelined restarts the
/// whole region (the test hook `MILLRACE_FAIL_ATTEMPTS` fails chosen attempts after their
/// work): same bytes and checksum, counted once, nothing left behind. A subtask that fails
/// every attempt fails the job with one line and no output.
#[test]
fn staged_retries_failed_attempts() {
    let f = Fixture::new();
    let (_, checksum) = f.gen(&[], "200k", "in");
    f.ok(["sort", "in", "expected"]);
    for extra in [&[][..], &["--memory", "8MiB"][..]] {
        let mut args = vec!["sort", "in", "out", "--mode", "staged", "--json", "--force"];
        args.extend_from_slice(extra);
        let (mut cmd, shown) = f.command(&args);
        cmd.env("MILLRACE_FAIL_ATTEMPTS", "map/1/0,sort/0/0");
        let run = util::run_with_timeout(cmd, shown, std::time::Duration::from_secs(120));
        assert_eq!(run.code, Some(0), "{run}");
        let json = run.json();
        assert_eq!(json["checksum"], checksum.as_str());
        assert_eq!(json["records"], 200_000);
        assert_eq!(f.sha256("out"), f.sha256("expected"), "{extra:?}");
        assert_eq!(json["io"]["input_read_bytes"], 20_000_000, "counted once");
    }
    // Pipelined: the whole region restarts (in memory, and out of core with spills).
    for extra in [&[][..], &["--memory", "8MiB"][..]] {
        let mut args = vec!["sort", "in", "restarted", "--json"];
        args.extend_from_slice(extra);
        let (mut cmd, shown) = f.command(&args);
        cmd.env("MILLRACE_FAIL_ATTEMPTS", "sort/0/0,map/1/0");
        let run = util::run_with_timeout(cmd, shown, std::time::Duration::from_secs(120));
        assert_eq!(run.code, Some(0), "{run}");
        let json = run.json();
        assert_eq!(json["checksum"], checksum.as_str());
        assert_eq!(json["io"]["input_read_bytes"], 20_000_000, "counted once");
        assert_eq!(f.sha256("restarted"), f.sha256("expected"), "{extra:?}");
        std::fs::remove_file(f.path("restarted")).unwrap();
    }
    // Mapreduce: a map task and a reducer fail once each and run again alone.
    for extra in [&[][..], &["--memory", "8MiB"][..]] {
        let mut args = vec![
            "sort",
            "in",
            "out-mr",
            "--mode",
            "mapreduce",
            "--split-bytes",
            "5MB",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (mut cmd, shown) = f.command(&args);
        cmd.env("MILLRACE_FAIL_ATTEMPTS", "map/2/0,sort/0/0");
        let run = util::run_with_timeout(cmd, shown, std::time::Duration::from_secs(120));
        assert_eq!(run.code, Some(0), "{run}");
        let json = run.json();
        assert_eq!(json["checksum"], checksum.as_str());
        assert_eq!(json["io"]["input_read_bytes"], 20_000_000, "counted once");
        assert_eq!(f.sha256("out-mr"), f.sha256("expected"), "{extra:?}");
        std::fs::remove_file(f.path("out-mr")).unwrap();
    }
    for (mode, fail) in [
        ("mapreduce", "map/0/0,map/0/1"),
        ("staged", "sort/1/0,sort/1/1"),
        ("pipelined", "sort/0/0,map/1/1"),
    ] {
        let (mut cmd, shown) = f.command(["sort", "in", "failed", "--mode", mode]);
        cmd.env("MILLRACE_FAIL_ATTEMPTS", fail);
        let run = util::run_with_timeout(cmd, shown, std::time::Duration::from_secs(120));
        util::assert_error(&run, &["injected failure"]);
        assert!(!f.path("failed").exists());
    }
    util::assert_entries(&f.dir, &["expected", "in", "out"]);
}

/// `millrace bench --modes pipelined,staged,mapreduce` sorts every case in every mode, validates every
/// output and compares them in one table and in the JSON report.
#[test]
fn bench_compares_modes_in_one_run() {
    let f = Fixture::new();
    let run = f.millrace([
        "bench",
        "--records",
        "20k",
        "--modes",
        "pipelined,staged,mapreduce",
        "--dir",
        "b",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stderr.contains("sort --mode staged"), "{run}");
    assert!(
        run.stdout.contains("| 20k binary | millrace | pipelined |"),
        "{run}"
    );
    assert!(
        run.stdout.contains("| 20k binary | millrace | staged |"),
        "{run}"
    );
    assert!(
        run.stdout.contains("| 20k binary | millrace | mapreduce |"),
        "{run}"
    );
    let report: serde_json::Value = serde_json::from_slice(&f.read("b/bench-report.json")).unwrap();
    assert_eq!(report["cases"][0]["modes"][0]["mode"], "staged");
    assert!(report["cases"][0]["modes"][0]["sort_s"].as_f64().unwrap() > 0.0);
}
