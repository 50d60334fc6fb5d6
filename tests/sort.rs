//! `millrace sort` end to end: gensort data and arbitrary records through the real binary,
//! checked with `millrace validate`, against known SHA-256 sums and against an in-test oracle
//! (a stable sort by the 10-byte key).
//!
//! ```text
//!  gen --checksum ──► in ──► sort [flags] ──► out ──► validate ──► Records / Checksum = gen's
//!                                                 └─► sha256 = the reference sorted file
//! ```

mod util;

use std::process::Stdio;
use std::time::{Duration, Instant};

use util::{
    assert_entries, entries, run_with_timeout, sha256, stable_sort_by_key, Fixture, SplitMix, KEY,
    RECORD,
};

// SHA-256 of the sorted 1,000,000-record gensort files (shared/testdata/gensort/SHA256SUMS.md).
const SORTED_1M_BINARY: &str = "e3a83e3f15d2cb3fd414046d6c10d3f525921150c4f824dac25556e466b099d3";
const SORTED_1M_ASCII: &str = "b249eafb367b87aa35fdf55526302a72a5481d9d73376af44343d6187d56ca16";
const SORTED_1M_SKEW: &str = "90551da5f92b2a9f672a2019a3065f68697db647b92da719a9d35820a396ba27";
const SORTED_1M_ASCII_SKEW: &str =
    "ce78e28dbae6be665b3e5ebb69b9706372e78ffaa75286b24f9c694460b77613";

/// The round-trip boundary: `gen [gen_flags] 1M in`, `sort in out [sort_flags]`, then
/// `validate out` must succeed with gen's record count and checksum, and `out` must be the
/// reference sorted file byte for byte. Nothing else may be left in the folder.
fn check_round_trip(gen_flags: &[&str], sort_flags: &[&str], expected_sha256: &str) {
    let f = Fixture::new();
    let (records, checksum) = f.gen(gen_flags, "1M", "in");
    assert_eq!(records, "1000000");

    let mut args = vec!["sort", "in", "out"];
    args.extend_from_slice(sort_flags);
    let sorted = f.ok(&args);
    assert!(
        sorted.stdout.contains(&format!("checksum {checksum}")),
        "the sort summary reports the input checksum:\n{sorted}"
    );

    let valid = f.ok(["validate", "out"]);
    assert_eq!(
        valid.field("Records").as_deref(),
        Some("1000000"),
        "{valid}"
    );
    assert_eq!(valid.field("Checksum"), Some(checksum), "{valid}");
    assert!(
        valid.stdout.contains("SUCCESS - all records are in order"),
        "{valid}"
    );
    assert_eq!(f.sha256("out"), expected_sha256, "sorted output bytes");
    assert_entries(&f.dir, &["in", "out"]);
}

#[test]
fn sorts_1m_binary_records() {
    check_round_trip(&[], &[], SORTED_1M_BINARY);
}

#[test]
fn sorts_1m_ascii_records() {
    check_round_trip(&["--ascii"], &[], SORTED_1M_ASCII);
}

#[test]
fn sorts_1m_skewed_records() {
    check_round_trip(&["--skew"], &[], SORTED_1M_SKEW);
}

/// Keys repeat (35 duplicates): a stable sort by key keeps ties in input order, which is what
/// the reference file holds.
#[test]
fn sorts_1m_ascii_skewed_records_with_duplicate_keys() {
    check_round_trip(&["--ascii", "--skew"], &[], SORTED_1M_ASCII_SKEW);
}

#[test]
fn sorts_with_one_reducer() {
    check_round_trip(&[], &["--reducers", "1"], SORTED_1M_BINARY);
}

#[test]
fn sorts_with_seven_reducers_and_three_maps() {
    check_round_trip(&[], &["--reducers", "7", "--maps", "3"], SORTED_1M_BINARY);
}

#[test]
fn sorts_with_buffered_io() {
    check_round_trip(&[], &["--io", "buffered"], SORTED_1M_BINARY);
}

/// `--parts` writes `OUTPUT/part-00000 ..`; the folder validates as the concatenation of its
/// parts, which equals the single-file output.
#[test]
fn parts_folder_validates_and_concatenates_to_the_single_file() {
    let f = Fixture::new();
    let (_, checksum) = f.gen(&[], "1M", "in");
    f.ok(["sort", "in", "single", "--reducers", "5"]);
    f.ok(["sort", "in", "parts", "--parts", "--reducers", "5"]);
    assert_entries(&f.dir, &["in", "parts", "single"]);

    let names = entries(&f.path("parts"));
    let expected: Vec<String> = (0..5).map(|i| format!("part-{i:05}")).collect();
    assert_eq!(names, expected, "one part per reducer");

    let valid = f.ok(["validate", "parts"]);
    assert_eq!(
        valid.field("Records").as_deref(),
        Some("1000000"),
        "{valid}"
    );
    assert_eq!(valid.field("Checksum"), Some(checksum), "{valid}");

    let mut joined = Vec::new();
    for name in &names {
        joined.extend(f.read(&format!("parts/{name}")));
    }
    assert_eq!(sha256(&joined), SORTED_1M_BINARY, "concatenated parts");
    assert_eq!(f.sha256("single"), SORTED_1M_BINARY);
}

/// `--json` summarizes the job; `--timeline` records every subtask, and the volumes add up.
#[test]
fn json_summary_and_timeline_add_up() {
    let f = Fixture::new();
    let (_, checksum) = f.gen(&[], "300k", "in");
    let run = f.ok([
        "sort",
        "in",
        "out",
        "--maps",
        "3",
        "--reducers",
        "4",
        "--json",
        "--timeline",
        "timeline.json",
    ]);
    let json = run.json();
    assert!(json.is_object(), "{run}");
    assert_eq!(json["records"], 300_000, "{json}");
    assert_eq!(json["bytes"], 30_000_000, "{json}");
    assert_eq!(json["checksum"], checksum.as_str(), "{json}");
    assert!(
        json["wall_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{json}"
    );
    assert!(
        json["overlap_ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{json}"
    );
    let phases: Vec<&str> = json["phases"]
        .as_array()
        .expect("phases is an array")
        .iter()
        .map(|p| p["name"].as_str().expect("a phase has a name"))
        .collect();
    for name in ["map", "shuffle", "sort+write"] {
        assert!(phases.contains(&name), "phase {name} in {phases:?}");
    }

    let timeline: serde_json::Value =
        serde_json::from_slice(&f.read("timeline.json")).expect("the timeline is JSON");
    let subtasks = timeline["subtasks"].as_array().expect("subtasks array");
    let field = |s: &serde_json::Value, name: &str| -> u64 {
        s[name]
            .as_u64()
            .unwrap_or_else(|| panic!("subtask field {name} in {s}"))
    };
    for s in subtasks {
        assert!(s["vertex"].is_string(), "{s}");
        field(s, "subtask");
        assert!(field(s, "start_us") <= field(s, "end_us"), "{s}");
        for name in ["records_in", "records_out", "bytes_in", "bytes_out"] {
            field(s, name);
        }
    }
    let of = |vertex: &str| -> Vec<&serde_json::Value> {
        subtasks.iter().filter(|s| s["vertex"] == vertex).collect()
    };
    assert_eq!(of("map").len(), 3, "map subtasks");
    assert_eq!(of("sort").len(), 4, "sort subtasks");
    let sum = |vertex: &str, name: &str| of(vertex).iter().map(|s| field(s, name)).sum::<u64>();
    assert_eq!(sum("map", "records_in"), 300_000);
    assert_eq!(sum("sort", "records_out"), 300_000);
    assert_eq!(sum("sort", "bytes_out"), 30_000_000);
    assert_entries(&f.dir, &["in", "out", "timeline.json"]);
}

/// The arbitrary-records boundary: `input` is not gensort data; sorting it must give exactly
/// the stable sort by key (ties in input order), validate, and keep the checksum.
fn check_sort_bytes(input: &[u8], sort_flags: &[&str]) {
    let f = Fixture::new();
    f.write("in", input);
    let before = f.millrace(["validate", "in"]);
    assert!(matches!(before.code, Some(0 | 1)), "{before}");
    let mut args = vec!["sort", "in", "out"];
    args.extend_from_slice(sort_flags);
    f.ok(&args);
    let output = f.read("out");
    assert_eq!(output.len(), input.len(), "output size");
    assert!(
        output == stable_sort_by_key(input),
        "output differs from a stable sort by key ({} records, flags {sort_flags:?})",
        input.len() / RECORD
    );
    let after = f.ok(["validate", "out"]);
    assert_eq!(after.field("Records"), before.field("Records"), "{after}");
    assert_eq!(after.field("Checksum"), before.field("Checksum"), "{after}");
    assert_entries(&f.dir, &["in", "out"]);
}

fn random_records(records: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; records * RECORD];
    SplitMix(seed).fill(&mut bytes);
    bytes
}

const ARBITRARY_RECORDS: usize = 200_000;
const FLAG_SETS: [&[&str]; 2] = [&[], &["--reducers", "5", "--maps", "3"]];

#[test]
fn sorts_random_bytes() {
    let input = random_records(ARBITRARY_RECORDS, 1);
    for flags in FLAG_SETS {
        check_sort_bytes(&input, flags);
    }
}

/// Every key equal (all 0xff, the top of the key space, and all zero): the output is the input,
/// because ties keep their input order.
#[test]
fn sorts_records_with_all_keys_equal() {
    for key_byte in [0xffu8, 0x00] {
        let mut input = random_records(ARBITRARY_RECORDS, 2);
        for record in input.chunks_exact_mut(RECORD) {
            record[..KEY].fill(key_byte);
        }
        for flags in FLAG_SETS {
            check_sort_bytes(&input, flags);
        }
        assert_eq!(stable_sort_by_key(&input), input);
    }
}

#[test]
fn sorts_already_sorted_input() {
    let input = stable_sort_by_key(&random_records(ARBITRARY_RECORDS, 3));
    for flags in FLAG_SETS {
        check_sort_bytes(&input, flags);
    }
}

#[test]
fn sorts_reverse_sorted_input() {
    let sorted = stable_sort_by_key(&random_records(ARBITRARY_RECORDS, 4));
    let input: Vec<u8> = sorted
        .chunks_exact(RECORD)
        .rev()
        .flatten()
        .copied()
        .collect();
    for flags in FLAG_SETS {
        check_sort_bytes(&input, flags);
    }
}

/// Fewer records than reducers: most ranges are empty.
#[test]
fn sorts_tiny_inputs_with_more_reducers_than_records() {
    for records in [1, 2, 3, 17] {
        let input = random_records(records, 5 + records as u64);
        check_sort_bytes(&input, &["--reducers", "16", "--maps", "4"]);
    }
}

/// An empty input is valid and gives an empty output.
#[test]
fn empty_input_sorts_to_an_empty_output() {
    let f = Fixture::new();
    f.write("in", b"");
    f.ok(["sort", "in", "out"]);
    assert_eq!(f.read("out").len(), 0);
    assert_entries(&f.dir, &["in", "out"]);

    f.ok(["sort", "in", "parts", "--parts", "--reducers", "3"]);
    let parts = entries(&f.path("parts"));
    assert_eq!(parts, ["part-00000", "part-00001", "part-00002"]);
    for part in &parts {
        assert_eq!(f.read(&format!("parts/{part}")).len(), 0, "{part}");
    }
    assert_entries(&f.dir, &["in", "out", "parts"]);
}

/// The hidden demo: generate, sort, validate in a temp folder under TMPDIR, then remove it.
#[test]
fn demo_sorts_validates_and_cleans_up() {
    let f = Fixture::new();
    let run = f.ok(["sort", "--demo", "--demo-records", "200k"]);
    assert!(
        run.stdout.contains("sorted and a permutation"),
        "demo summary:\n{run}"
    );
    assert!(run.stdout.contains("200000 records"), "{run}");
    assert_entries(&f.dir, &[]);
}

/// The pipelined exchange must finish with many more reducers than maps (many channels per
/// map, few credits each) and with a single reducer (every map feeds one gate).
///
/// ```text
///  map 0 ─┬─► sort 0 .. sort 15        map 0 ─┐
///  map 1 ─┘   (32 channels)            map 1 ─┴─► sort 0
/// ```
#[test]
fn pipelined_exchange_never_hangs() {
    let f = Fixture::new();
    let (_, checksum) = f.gen(&[], "300k", "in");
    for (reducers, maps) in [("16", "2"), ("1", "2")] {
        let (cmd, args) = f.command([
            "sort",
            "in",
            "out",
            "--force",
            "--reducers",
            reducers,
            "--maps",
            maps,
        ]);
        let run = run_with_timeout(cmd, args, Duration::from_secs(60));
        assert_eq!(run.code, Some(0), "{run}");
        let valid = f.ok(["validate", "out"]);
        assert_eq!(valid.field("Checksum").as_deref(), Some(checksum.as_str()));
    }
}

/// Ctrl-C while the sort writes: exit code 130 and no output or temp file left behind.
#[test]
fn interrupted_sort_leaves_nothing_behind() {
    let f = Fixture::new();
    f.gen(&[], "5M", "in");
    let (mut cmd, _) = f.command(["sort", "in", "out"]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start millrace");
    let (_, stderr) = util::collect_output(&mut child);
    // Wait until the temp output exists: the job is past its checks and writing.
    let started = Instant::now();
    let mut seen_temp = false;
    while started.elapsed() < Duration::from_secs(60) {
        if entries(&f.dir).iter().any(|n| n.contains(".millrace-tmp-")) {
            seen_temp = true;
            break;
        }
        if child.try_wait().expect("poll millrace").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if seen_temp {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll millrace") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("millrace did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = stderr.join().expect("stderr reader");
    if !seen_temp || status.success() {
        util::skip(format_args!(
            "the sort finished before it could be interrupted ({status})"
        ));
        return;
    }
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    assert_entries(&f.dir, &["in"]);
}
