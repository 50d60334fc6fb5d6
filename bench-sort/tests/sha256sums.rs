//! The generator and validator against `shared/testdata/gensort/SHA256SUMS.md`: 1,000,000
//! records in all four modes and 10,000,000 binary records, made by the real gensort 1.5 and
//! then deleted. Only their hashes, checksums and valsort reports are known; they are written
//! here, so these tests need no files.
//!
//! Each run is generated in memory (100 MB, or 1 GB for the 10M run) and checked for:
//! the SHA-256 of the bytes, the checksum, valsort's report on the unsorted records, the SHA-256
//! of the sorted records and valsort's report on them, and that three-piece partitioned
//! generation (333333 + 1 + 666666) gives the same bytes.

mod common;

use bench_sort::gensort::{self, Format, GenSpec};
use bench_sort::valsort::{self, Summary};
use common::{generate_all, sha256_hex, sorted_by_full_record, testdata};
use engine::record::{key80, RECORD_LEN};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// One line of SHA256SUMS.md (all three tables).
struct Large {
    format: Format,
    skew: bool,
    records: u64,
    sha256: &'static str,
    checksum: &'static str,
    sorted_sha256: &'static str,
    sorted_duplicates: u128,
    unordered: u128,
}

/// Every unsorted run has its first unordered record at index 2.
const FIRST_UNORDERED: u128 = 2;

fn spec(large: &Large) -> GenSpec {
    GenSpec {
        format: large.format,
        skew: large.skew,
        start: 0,
        records: large.records,
    }
}

fn expected_unsorted_report(large: &Large) -> Vec<String> {
    vec![
        format!("First unordered record is record {FIRST_UNORDERED}"),
        format!("Records: {}", large.records),
        format!("Checksum: {}", large.checksum),
        format!("ERROR - there are {} unordered records", large.unordered),
    ]
}

fn expected_sorted_report(large: &Large) -> Vec<String> {
    vec![
        format!("Records: {}", large.records),
        format!("Checksum: {}", large.checksum),
        format!("Duplicate keys: {}", large.sorted_duplicates),
        "SUCCESS - all records are in order".to_owned(),
    ]
}

/// Checks one 1M-record run; returns the sorted records for further checks.
fn check_million(large: &Large) -> Vec<u8> {
    let spec = spec(large);
    let bytes = generate_all(&spec);
    assert_eq!(sha256_hex(&bytes), large.sha256, "{spec:?}: sha256");
    assert_eq!(
        gensort::checksum_of(&spec).sum_hex(),
        large.checksum,
        "{spec:?}: checksum"
    );
    assert_eq!(
        valsort::report_lines(&valsort::summarize(&bytes)),
        expected_unsorted_report(large),
        "{spec:?}: valsort report"
    );

    // Partitioned generation, as `gensort -b0 333333; -b333333 1; -b333334 666666`.
    let mut hasher = Sha256::new();
    for (start, records) in [(0, 333_333), (333_333, 1), (333_334, 666_666)] {
        hasher.update(generate_all(&GenSpec {
            start,
            records,
            ..spec
        }));
    }
    assert_eq!(
        common::hex(&hasher.finalize()),
        large.sha256,
        "{spec:?}: three pieces"
    );

    let sorted = sorted_by_full_record(&bytes);
    assert_eq!(
        sha256_hex(&sorted),
        large.sorted_sha256,
        "{spec:?}: sorted sha256"
    );
    assert_eq!(
        valsort::report_lines(&valsort::summarize(&sorted)),
        expected_sorted_report(large),
        "{spec:?}: valsort report of the sorted records"
    );
    sorted
}

#[test]
fn binary_million() {
    check_million(&Large {
        format: Format::Binary,
        skew: false,
        records: 1_000_000,
        sha256: "515ea89a091c2a746500f46edd54dc5626878b4e9308d00ecf91656e8e3c3028",
        checksum: "7a0e0d4868cd4",
        sorted_sha256: "e3a83e3f15d2cb3fd414046d6c10d3f525921150c4f824dac25556e466b099d3",
        sorted_duplicates: 0,
        unordered: 499_452,
    });
}

#[test]
fn ascii_million() {
    check_million(&Large {
        format: Format::Ascii,
        skew: false,
        records: 1_000_000,
        sha256: "f0521447a8c0928e6591308bbb3198e1d844a105f31ebe823f6ed80c743aef68",
        checksum: "7a19cff467438",
        sorted_sha256: "b249eafb367b87aa35fdf55526302a72a5481d9d73376af44343d6187d56ca16",
        sorted_duplicates: 0,
        unordered: 500_117,
    });
}

#[test]
fn skew_million() {
    check_million(&Large {
        format: Format::Binary,
        skew: true,
        records: 1_000_000,
        sha256: "26c04b085341da0e8315cf26ba9347c08a1b143974831cde20704348a6417f08",
        checksum: "79f9a7e6de673",
        sorted_sha256: "90551da5f92b2a9f672a2019a3065f68697db647b92da719a9d35820a396ba27",
        sorted_duplicates: 0,
        unordered: 500_445,
    });
}

/// Also reproduces `sa_partA.sum` / `sa_partB.sum`: valsort `-o` of records 0..140979 and
/// 140979.. of the sorted run, split at its first duplicate key.
#[test]
fn skew_ascii_million() {
    let sorted = check_million(&Large {
        format: Format::Ascii,
        skew: true,
        records: 1_000_000,
        sha256: "6412ad20e9729e0cc711c3ab0cb1cdab195be80737df7f8d96279a54964d51f7",
        checksum: "7a135fbce6df2",
        sorted_sha256: "ce78e28dbae6be665b3e5ebb69b9706372e78ffaa75286b24f9c694460b77613",
        sorted_duplicates: 35,
        unordered: 500_453,
    });
    let split = 140_979 * RECORD_LEN;
    let part_a = valsort::summarize(&sorted[..split]);
    let part_b = valsort::summarize(&sorted[split..]);
    assert_eq!((part_a.duplicates, part_b.duplicates), (0, 34));
    let mut combined = part_a.clone();
    combined.combine(&part_b);
    assert_eq!(
        combined,
        valsort::summarize(&sorted),
        "the boundary duplicate is counted"
    );

    let Some(dir) = testdata() else { return };
    assert!(
        part_a.to_bytes()[..] == common::read(&dir, "sa_partA.sum")[..],
        "sa_partA.sum"
    );
    assert!(
        part_b.to_bytes()[..] == common::read(&dir, "sa_partB.sum")[..],
        "sa_partB.sum"
    );
}

/// 10M binary records (1 GB). Sorting uses `key80 << 32 | index`, which is a stable sort by
/// key; SHA256SUMS.md says that equals the full-record order for this run. The sorted records
/// are validated in 100,000-record pieces combined with [`Summary::combine`].
#[test]
fn binary_ten_million() {
    let large = Large {
        format: Format::Binary,
        skew: false,
        records: 10_000_000,
        sha256: "294e33bbc2fd1adc88710c33a0007d573766668929ff8f1e1e72d5d1b031de6d",
        checksum: "4c4e32cca7d315",
        sorted_sha256: "fff7026cf4d536675fe4168e34b35626b9a715a27a555288811c6b5c2cc064e7",
        sorted_duplicates: 0,
        unordered: 5_000_358,
    };
    let spec = spec(&large);
    let bytes = generate_all(&spec);
    assert_eq!(sha256_hex(&bytes), large.sha256, "sha256");
    assert_eq!(
        gensort::checksum_of(&spec).sum_hex(),
        large.checksum,
        "checksum"
    );
    // The parallel-chunk path of the validator, over the in-memory bytes.
    let summary = bytes
        .par_chunks(1_000_000 * RECORD_LEN)
        .map(valsort::summarize)
        .reduce_with(|mut a, b| {
            a.combine(&b);
            a
        })
        .expect("non-empty");
    assert_eq!(
        summary,
        valsort::summarize(&bytes),
        "parallel summary equals sequential"
    );
    assert_eq!(
        valsort::report_lines(&summary),
        expected_unsorted_report(&large)
    );

    let mut order: Vec<u128> = bytes
        .par_chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(i, record)| (key80(record) << 32) | i as u128)
        .collect();
    order.par_sort_unstable();
    let mut hasher = Sha256::new();
    let mut piece = Vec::with_capacity(100_000 * RECORD_LEN);
    let mut sorted_summary: Option<Summary> = None;
    for indexes in order.chunks(100_000) {
        piece.clear();
        for &entry in indexes {
            let at = (entry as u32) as usize * RECORD_LEN;
            piece.extend_from_slice(&bytes[at..at + RECORD_LEN]);
        }
        hasher.update(&piece);
        let s = valsort::summarize(&piece);
        match &mut sorted_summary {
            None => sorted_summary = Some(s),
            Some(total) => total.combine(&s),
        }
    }
    assert_eq!(
        common::hex(&hasher.finalize()),
        large.sorted_sha256,
        "sorted sha256"
    );
    let sorted_summary = sorted_summary.expect("non-empty");
    assert_eq!(
        valsort::report_lines(&sorted_summary),
        expected_sorted_report(&large)
    );
}
