//! The validator against valsort 1.5's verdicts on the stored files of
//! `shared/testdata/gensort` (README.md): every `.dat` file, every `.sum` file (`valsort -s`),
//! and the byte-exact `-o` summaries of slices of the stored files.
//! These tests skip when the folder is missing.

mod common;

use std::path::Path;

use bench_sort::valsort::{self, Summary, SUMMARY_LEN};
use common::{read, spec_from_name, testdata};

/// What valsort prints for one input.
enum Verdict {
    Success {
        records: &'static str,
        checksum: &'static str,
        duplicates: u128,
    },
    Unordered {
        first: u128,
        records: &'static str,
        checksum: &'static str,
        unordered: u128,
    },
}

impl Verdict {
    fn lines(&self) -> Vec<String> {
        match self {
            Verdict::Success {
                records,
                checksum,
                duplicates,
            } => vec![
                format!("Records: {records}"),
                format!("Checksum: {checksum}"),
                format!("Duplicate keys: {duplicates}"),
                "SUCCESS - all records are in order".to_owned(),
            ],
            Verdict::Unordered {
                first,
                records,
                checksum,
                unordered,
            } => vec![
                format!("First unordered record is record {first}"),
                format!("Records: {records}"),
                format!("Checksum: {checksum}"),
                format!("ERROR - there are {unordered} unordered records"),
            ],
        }
    }
}

/// Checks valsort's report for `summary`.
fn check(what: &str, summary: &Summary, expected: &Verdict) {
    assert_eq!(valsort::report_lines(summary), expected.lines(), "{what}");
    assert_eq!(
        summary.is_ordered(),
        matches!(expected, Verdict::Success { .. }),
        "{what}"
    );
}

/// The unsorted files: (name, records, checksum, F, U).
const UNSORTED: [(&str, &str, &str, u128, u128); 9] = [
    ("bin_b0_n1000.dat", "1000", "1ea6370b955", 2, 483),
    ("bin_b123456789_n100.dat", "100", "2df2359d4d", 1, 52),
    ("ascii_b0_n1000.dat", "1000", "1f5dfb3631a", 2, 497),
    ("skew_b0_n1000.dat", "1000", "1e96301166b", 2, 499),
    ("skewascii_b0_n1000.dat", "1000", "1eef17d1cac", 2, 498),
    (
        "ascii_b18446744073709551610_n12.dat",
        "12",
        "4837220a0",
        1,
        5,
    ),
    (
        "skew_b18446744073709551610_n12.dat",
        "12",
        "6c4bc6750",
        1,
        5,
    ),
    ("skew_b1152921504606846970_n12.dat", "12", "530e1b16e", 1, 6),
    (
        "skewascii_b1152921504606846970_n12.dat",
        "12",
        "69f9b3b59",
        2,
        4,
    ),
];

#[test]
fn stored_dat_files_get_valsorts_verdicts() {
    let Some(dir) = testdata() else { return };
    for (name, records, checksum, first, unordered) in UNSORTED {
        let summary = valsort::validate_path(&dir.join(name), &|_| {}).expect(name);
        check(
            name,
            &summary,
            &Verdict::Unordered {
                first,
                records,
                checksum,
                unordered,
            },
        );
        let sorted = name.replace(".dat", ".sorted.dat");
        let summary = valsort::validate_path(&dir.join(&sorted), &|_| {}).expect(&sorted);
        let expected = Verdict::Success {
            records,
            checksum,
            duplicates: 0,
        };
        check(&sorted, &summary, &expected);
    }
    // No stored .dat file is left unchecked.
    for entry in std::fs::read_dir(&dir).expect("list testdata") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".dat") {
            let unsorted = name.replace(".sorted.dat", ".dat");
            assert!(
                UNSORTED.iter().any(|u| u.0 == unsorted),
                "{name} is not in the table"
            );
            assert!(spec_from_name(&name).is_some(), "{name}");
        }
    }
}

#[test]
fn single_record_succeeds() {
    let Some(dir) = testdata() else { return };
    let bytes = read(&dir, "bin_b0_n1000.dat");
    let expected = Verdict::Success {
        records: "1",
        checksum: "9ea593a0",
        duplicates: 0,
    };
    check("record 0", &valsort::summarize(&bytes[..100]), &expected);
}

/// Every `.sum` file and its `valsort -s` result from README.md.
const SUMS: [(&str, Verdict); 13] = [
    (
        "part0.sum",
        Verdict::Success {
            records: "300",
            checksum: "89d5eba611",
            duplicates: 0,
        },
    ),
    (
        "part1.sum",
        Verdict::Success {
            records: "300",
            checksum: "9a0a73c0bf",
            duplicates: 0,
        },
    ),
    (
        "part2.sum",
        Verdict::Success {
            records: "400",
            checksum: "c683115285",
            duplicates: 0,
        },
    ),
    (
        "all.sum",
        Verdict::Success {
            records: "1000",
            checksum: "1ea6370b955",
            duplicates: 0,
        },
    ),
    (
        "swapped.sum",
        Verdict::Unordered {
            first: 300,
            records: "1000",
            checksum: "1ea6370b955",
            unordered: 1,
        },
    ),
    (
        "u0.sum",
        Verdict::Unordered {
            first: 2,
            records: "500",
            checksum: "f63842aeda",
            unordered: 240,
        },
    ),
    (
        "u1.sum",
        Verdict::Unordered {
            first: 1,
            records: "500",
            checksum: "f42b2e0a7b",
            unordered: 243,
        },
    ),
    (
        "u_all.sum",
        Verdict::Unordered {
            first: 2,
            records: "1000",
            checksum: "1ea6370b955",
            unordered: 483,
        },
    ),
    (
        "mix.sum",
        Verdict::Unordered {
            first: 301,
            records: "800",
            checksum: "17e0119b08c",
            unordered: 243,
        },
    ),
    (
        "sa_partA.sum",
        Verdict::Success {
            records: "140979",
            checksum: "11374ae265680",
            duplicates: 0,
        },
    ),
    (
        "sa_partB.sum",
        Verdict::Success {
            records: "859021",
            checksum: "68dc14da81772",
            duplicates: 34,
        },
    ),
    (
        "sa_all.sum",
        Verdict::Success {
            records: "1000000",
            checksum: "7a135fbce6df2",
            duplicates: 35,
        },
    ),
    (
        "crafted.sum",
        Verdict::Success {
            records: "18446744073709551621",
            checksum: "10000000000000abc",
            duplicates: 7,
        },
    ),
];

#[test]
fn stored_sum_files_get_valsort_s_verdicts() {
    let Some(dir) = testdata() else { return };
    for (name, expected) in &SUMS {
        let summary = valsort::validate_summaries(&dir.join(name)).expect(name);
        check(name, &summary, expected);
    }
    for entry in std::fs::read_dir(&dir).expect("list testdata") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".sum") {
            assert!(
                SUMS.iter().any(|s| s.0 == name),
                "{name} is not in the table"
            );
        }
    }
}

#[test]
fn summaries_round_trip_through_bytes() {
    let Some(dir) = testdata() else { return };
    for (name, _) in &SUMS {
        let bytes = read(&dir, name);
        for (i, one) in bytes.chunks_exact(SUMMARY_LEN).enumerate() {
            let summary = Summary::from_bytes(one).expect(name);
            assert!(summary.to_bytes()[..] == *one, "{name} summary {i}");
        }
    }
}

/// valsort `-o` of slices of the stored files, byte for byte.
#[test]
fn summaries_of_slices_are_byte_identical_to_valsort_o() {
    let Some(dir) = testdata() else { return };
    let sorted = read(&dir, "bin_b0_n1000.sorted.dat");
    let unsorted = read(&dir, "bin_b0_n1000.dat");
    let cases: [(&str, &[u8]); 5] = [
        ("part0.sum", &sorted[..30_000]),
        ("part1.sum", &sorted[30_000..60_000]),
        ("part2.sum", &sorted[60_000..]),
        ("u0.sum", &unsorted[..50_000]),
        ("u1.sum", &unsorted[50_000..]),
    ];
    for (name, records) in cases {
        let summary = valsort::summarize(records);
        assert!(summary.to_bytes()[..] == read(&dir, name)[..], "{name}");
    }
    // Combining the parts (valsort -s -o) gives the summary of the whole sorted file.
    let combined = valsort::validate_summaries(&dir.join("all.sum")).expect("all.sum");
    assert_eq!(combined.to_bytes(), valsort::summarize(&sorted).to_bytes());
    // The concatenated summary files are the concatenations of their parts.
    let concat = |names: &[&str]| {
        names
            .iter()
            .flat_map(|n| read(&dir, n))
            .collect::<Vec<u8>>()
    };
    assert!(read(&dir, "all.sum") == concat(&["part0.sum", "part1.sum", "part2.sum"]));
    assert!(read(&dir, "u_all.sum") == concat(&["u0.sum", "u1.sum"]));
}

#[test]
fn crafted_summary_fields_decode_as_128_bit() {
    let Some(dir) = testdata() else { return };
    let summary = valsort::validate_summaries(&dir.join("crafted.sum")).expect("crafted.sum");
    assert_eq!(summary.records, (1 << 64) + 5);
    assert_eq!(summary.checksum, (1 << 64) + 0xabc);
    assert_eq!(summary.duplicates, 7);
    let json = summary.to_json();
    assert_eq!(json["records"], "18446744073709551621");
    assert_eq!(json["checksum"], "10000000000000abc");
    assert_eq!(json["duplicates"], 7);
    assert_eq!(json["first_unordered"], serde_json::Value::Null);
    assert_eq!(json["ordered"], true);
}

#[test]
fn a_folder_of_the_stored_parts_validates_like_the_whole() {
    let Some(dir) = testdata() else { return };
    let sorted = read(&dir, "bin_b0_n1000.sorted.dat");
    let parts = tempfile::tempdir().expect("temp dir");
    for (name, range) in [
        ("p1", 30_000..60_000),
        ("p0", 0..30_000),
        ("p2", 60_000..100_000),
    ] {
        std::fs::write(parts.path().join(name), &sorted[range]).expect("write part");
    }
    let from_folder = valsort::validate_path(parts.path(), &|_| {}).expect("folder");
    let whole = valsort::validate_path(Path::new(&dir.join("bin_b0_n1000.sorted.dat")), &|_| {})
        .expect("whole");
    assert_eq!(from_folder, whole);
}
