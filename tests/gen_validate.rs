//! `millrace gen` and `millrace validate` against the gensort/valsort 1.5 reference vectors
//! (shared/testdata/gensort; tests that need the files skip with a message when it is absent).
//!
//! ```text
//!  gen [flags] N f ──sha256──► reference table
//!  validate f ──► valsort's lines and exit code (0 ordered, 1 unordered, 2 error)
//!  validate f --summary-out s ──► 280-byte summary ──► validate --summaries s
//! ```

mod util;

use util::{assert_entries, assert_error, gensort_testdata, sha256, Fixture};

/// The gen boundary: `gen [flags] RECORDS out` must give exactly the file gensort 1.5 gave.
fn check_gen(flags: &[&str], records: &str, expected_sha256: &str) {
    let f = Fixture::new();
    let mut args = vec!["gen"];
    args.extend_from_slice(flags);
    args.extend([records, "out"]);
    f.ok(&args);
    assert_eq!(
        f.sha256("out"),
        expected_sha256,
        "gen {flags:?} {records} is not byte-identical to gensort"
    );
    assert_entries(&f.dir, &["out"]);
}

#[test]
fn gen_binary_is_byte_identical_to_gensort() {
    check_gen(
        &[],
        "1000",
        "f524474116510d1debac6d38152e793a7e3cb71b1dd2bb45b6610e3c17698177",
    );
    check_gen(
        &["--start", "123456789"],
        "100",
        "92f9a7374fa36b857477ca18b1c382f99eada53168ef0eee72ebadfa70cb5083",
    );
}

#[test]
fn gen_ascii_is_byte_identical_to_gensort() {
    check_gen(
        &["--ascii"],
        "1000",
        "6c26b26a61464dd78038f9c60907c851ac043c07584b12835fe065cbca31aad2",
    );
    // Row ids that cross into the high 64 bits.
    check_gen(
        &["--ascii", "--start", "18446744073709551610"],
        "12",
        "0d52d94c286d306c5cb73b5c805da5a09250f1cebcd375204faba84c2a7e3052",
    );
}

#[test]
fn gen_skew_is_byte_identical_to_gensort() {
    check_gen(
        &["--skew"],
        "1000",
        "e29ce5d551d332a974d978a4a4b3535efcd5df559328fe4ee11bf7f481269444",
    );
    check_gen(
        &["--ascii", "--skew"],
        "1000",
        "33dc462ab1da5ddedecf127d65c8856b59baec45a15b91f79aafd116514ac65e",
    );
    check_gen(
        &["--skew", "--start", "1152921504606846970"],
        "12",
        "7131a71bf0aba5d54fcffbe1e80a6b1130d0e5aee7b89cc90a125bcb5e454203",
    );
}

#[test]
fn gen_checksum_to_dev_null() {
    let f = Fixture::new();
    let run = f.millrace(["gen", "--checksum", "1000", "/dev/null"]);
    assert_eq!(run.code, Some(0), "{run}");
    // gensort -c prints the checksum alone on stderr.
    assert_eq!(run.stderr, "1ea6370b955\n", "{run}");
    assert!(
        run.stdout.starts_with("generated 1000 records (0.1 MB)")
            && run.stdout.contains("checksum 1ea6370b955"),
        "{run}"
    );
    assert_entries(&f.dir, &[]);
}

#[test]
fn gen_record_count_suffixes() {
    let f = Fixture::new();
    for (count, bytes) in [("10k", 1_000_000), ("3K", 300_000), ("0", 0)] {
        f.ok(["gen", "--force", count, "out"]);
        assert_eq!(f.read("out").len(), bytes, "gen {count}");
    }
    assert_entries(&f.dir, &["out"]);
}

/// gen 0 records makes an empty file (as gensort does).
#[test]
fn gen_zero_records_makes_an_empty_file() {
    let f = Fixture::new();
    let (records, checksum) = f.gen(&[], "0", "empty");
    assert_eq!((records.as_str(), checksum.as_str()), ("0", "0"));
    assert_eq!(f.read("empty").len(), 0);
    assert_entries(&f.dir, &["empty"]);
}

/// Pieces made with --start concatenate to the whole file.
#[test]
fn gen_pieces_concatenate_to_the_whole() {
    let f = Fixture::new();
    f.ok(["gen", "1000", "whole"]);
    f.ok(["gen", "333", "a"]);
    f.ok(["gen", "--start", "333", "667", "b"]);
    let mut joined = f.read("a");
    joined.extend(f.read("b"));
    assert_eq!(sha256(&joined), f.sha256("whole"));
}

#[test]
fn gen_rejects_bad_record_counts() {
    let f = Fixture::new();
    for count in ["12x", "k", "1.5M", "99999999999999999999", ""] {
        let run = f.millrace(["gen", "--", count, "out"]);
        let quoted = format!("{count:?}");
        assert_error(&run, &["invalid record count", &quoted]);
        assert_entries(&f.dir, &[]);
    }
}

/// `validate` on unsorted gensort data: valsort's four lines and exit code 1.
#[test]
fn validate_unsorted_gensort_records() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    let run = f.millrace(["validate", "in"]);
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        run.valsort_lines(),
        [
            "First unordered record is record 2",
            "Records: 1000",
            "Checksum: 1ea6370b955",
            "ERROR - there are 483 unordered records",
        ],
        "{run}"
    );
    assert!(run.stderr.trim().is_empty(), "{run}");
}

#[test]
fn validate_sorted_records_and_json() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    f.ok(["sort", "in", "sorted"]);
    let run = f.ok(["validate", "sorted"]);
    assert_eq!(
        run.valsort_lines(),
        [
            "Records: 1000",
            "Checksum: 1ea6370b955",
            "Duplicate keys: 0",
            "SUCCESS - all records are in order",
        ]
    );
    if let Some(data) = gensort_testdata() {
        assert_eq!(
            f.read("sorted"),
            std::fs::read(data.join("bin_b0_n1000.sorted.dat")).unwrap()
        );
    }
    let json = f.ok(["validate", "sorted", "--json"]).json();
    assert_eq!(json["records"], 1000, "{json}");
    assert_eq!(json["checksum"], "1ea6370b955", "{json}");
    assert_eq!(json["ordered"], true, "{json}");
}

#[test]
fn validate_reference_summaries() {
    let Some(data) = gensort_testdata() else {
        util::skip(format_args!(
            "validate_reference_summaries: ../shared/testdata/gensort is absent"
        ));
        return;
    };
    let f = Fixture::new();
    let all = f.ok([
        "validate".as_ref(),
        "--summaries".as_ref(),
        data.join("all.sum").as_os_str(),
    ]);
    assert_eq!(all.field("Records").as_deref(), Some("1000"), "{all}");
    assert_eq!(
        all.field("Checksum").as_deref(),
        Some("1ea6370b955"),
        "{all}"
    );
    assert!(all.stdout.contains("SUCCESS"), "{all}");

    let swapped = f.millrace([
        "validate".as_ref(),
        "--summaries".as_ref(),
        data.join("swapped.sum").as_os_str(),
    ]);
    assert_eq!(swapped.code, Some(1), "{swapped}");
    assert_eq!(
        swapped.valsort_lines(),
        [
            "First unordered record is record 300",
            "Records: 1000",
            "Checksum: 1ea6370b955",
            "ERROR - there are 1 unordered records",
        ],
        "{swapped}"
    );
}

/// `--summary-out` then `--summaries` reports what validating the records reported; the
/// summaries of record slices are byte-identical to valsort's `-o` files.
#[test]
fn summary_out_round_trips_through_summaries() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    f.ok(["sort", "in", "sorted"]);
    let direct = f.ok(["validate", "sorted", "--summary-out", "s.sum"]);
    assert_eq!(f.read("s.sum").len(), 280);
    let combined = f.ok(["validate", "--summaries", "s.sum"]);
    assert_eq!(combined.valsort_lines(), direct.valsort_lines());

    // Unordered input: the summary carries the unordered counts (exit 1 both ways).
    let unsorted = f.millrace(["validate", "in", "--summary-out", "u.sum"]);
    assert_eq!(unsorted.code, Some(1), "{unsorted}");
    let from_summary = f.millrace(["validate", "--summaries", "u.sum"]);
    assert_eq!(from_summary.code, Some(1), "{from_summary}");
    assert_eq!(from_summary.valsort_lines(), unsorted.valsort_lines());

    let Some(data) = gensort_testdata() else {
        util::skip(format_args!(
            "the valsort -o comparison: ../shared/testdata/gensort is absent"
        ));
        return;
    };
    let sorted = f.read("sorted");
    let mut concatenated = Vec::new();
    for (name, from, to) in [("part0", 0, 300), ("part1", 300, 600), ("part2", 600, 1000)] {
        f.write(name, &sorted[from * 100..to * 100]);
        let sum = format!("{name}.sum");
        f.ok(["validate", name, "--summary-out", &sum]);
        let expected = std::fs::read(data.join(&sum)).unwrap();
        assert_eq!(f.read(&sum), expected, "{sum} differs from valsort -o");
        concatenated.extend(expected);
    }
    f.write("all.sum", &concatenated);
    let all = f.ok(["validate", "--summaries", "all.sum"]);
    assert_eq!(all.valsort_lines(), direct.valsort_lines());
}
