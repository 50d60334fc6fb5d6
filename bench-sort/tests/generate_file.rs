//! `generate_to_file`: bytes and checksum on disk, progress reports, `/dev/null`, and errors.

mod common;

use std::path::Path;
use std::sync::Mutex;

use bench_sort::gensort::{self, Format, GenError, GenSpec};
use bench_sort::valsort;
use common::sha256_hex;

const MILLION_BINARY_SHA256: &str =
    "515ea89a091c2a746500f46edd54dc5626878b4e9308d00ecf91656e8e3c3028";
const MILLION_BINARY_CHECKSUM: &str = "7a0e0d4868cd4";

fn binary(records: u64) -> GenSpec {
    GenSpec {
        format: Format::Binary,
        skew: false,
        start: 0,
        records,
    }
}

/// Generates `spec` into `path`, returning the result and every progress value reported.
fn generate(spec: &GenSpec, path: &Path) -> (Result<engine::record::Checksum, GenError>, Vec<u64>) {
    let reported = Mutex::new(Vec::new());
    let result = gensort::generate_to_file(spec, path, &|bytes| {
        reported.lock().expect("no panics while locked").push(bytes)
    });
    (
        result,
        reported.into_inner().expect("no panics while locked"),
    )
}

#[test]
fn million_records_on_disk_match_gensort_and_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("input.dat");
    // Start from a longer file to prove the output is truncated.
    std::fs::write(&path, vec![7u8; 100_000_123]).expect("pre-fill");
    let spec = binary(1_000_000);
    let (result, progress) = generate(&spec, &path);
    let checksum = result.expect("generate");
    assert_eq!(checksum.sum_hex(), MILLION_BINARY_CHECKSUM);
    assert_eq!(checksum.records, 1_000_000);
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress increases"
    );
    assert_eq!(progress.last(), Some(&100_000_000));
    assert_eq!(
        sha256_hex(&std::fs::read(&path).expect("read back")),
        MILLION_BINARY_SHA256
    );

    let validated = Mutex::new(Vec::new());
    let summary =
        valsort::validate_path(&path, &|bytes| validated.lock().expect("lock").push(bytes))
            .expect("validate");
    assert_eq!(
        valsort::report_lines(&summary),
        [
            "First unordered record is record 2",
            "Records: 1000000",
            "Checksum: 7a0e0d4868cd4",
            "ERROR - there are 499452 unordered records",
        ]
    );
    let validated = validated.into_inner().expect("lock");
    assert!(
        validated.len() > 1,
        "a 100 MB file is read in several waves"
    );
    assert_eq!(validated.last(), Some(&100_000_000));
}

#[test]
fn dev_null_writes_nothing_but_checksums() {
    let spec = binary(1_000_000);
    let (result, progress) = generate(&spec, Path::new("/dev/null"));
    assert_eq!(result.expect("generate").sum_hex(), MILLION_BINARY_CHECKSUM);
    assert_eq!(progress.last(), Some(&100_000_000));
    assert_eq!(
        gensort::checksum_of(&spec).sum_hex(),
        MILLION_BINARY_CHECKSUM
    );
}

#[test]
fn every_mode_writes_what_generate_block_makes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("small.dat");
    for (format, skew) in [
        (Format::Binary, false),
        (Format::Ascii, false),
        (Format::Binary, true),
        (Format::Ascii, true),
    ] {
        // Not a multiple of the block or wave size, and starting near 2^64.
        let spec = GenSpec {
            format,
            skew,
            start: (1 << 64) - 12_345,
            records: 123_457,
        };
        let (result, _) = generate(&spec, &path);
        let checksum = result.expect("generate");
        let written = std::fs::read(&path).expect("read back");
        assert!(written == common::generate_all(&spec), "{spec:?}");
        assert_eq!(
            checksum,
            engine::record::Checksum::of_records(&written),
            "{spec:?}"
        );
    }
}

#[test]
fn zero_records_make_an_empty_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.dat");
    let (result, progress) = generate(&binary(0), &path);
    assert_eq!(result.expect("generate").sum_hex(), "0");
    assert!(progress.is_empty());
    assert_eq!(std::fs::metadata(&path).expect("created").len(), 0);
}

#[test]
fn missing_folder_is_a_create_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-such-folder").join("out.dat");
    let (result, _) = generate(&binary(10), &path);
    let err = result.expect_err("cannot create");
    assert!(matches!(err, GenError::Create { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.starts_with("cannot create"), "{message}");
}

/// `/dev/full` fails every write with ENOSPC, like a full disk.
#[test]
fn full_disk_is_reported_as_such() {
    let path = Path::new("/dev/full");
    if !path.exists() {
        eprintln!("skipping: /dev/full not available");
        return;
    }
    let (result, progress) = generate(&binary(1_000_000), path);
    let err = result.expect_err("ENOSPC");
    assert!(
        matches!(
            err,
            GenError::DiskFull {
                written_bytes: 0,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("/dev/full") && message.contains("disk is full"),
        "{message}"
    );
    assert!(progress.is_empty());
}
