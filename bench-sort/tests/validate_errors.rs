//! `validate_path` and `validate_summaries` on inputs built in a temp folder: malformed and
//! missing inputs, folders of parts, and files large enough to be read in several chunks.

mod common;

use std::path::{Path, PathBuf};

use bench_sort::gensort::{Format, GenSpec};
use bench_sort::valsort::{self, ValidateError, CHUNK_BYTES};
use common::generate_all;
use engine::record::RECORD_LEN;

/// A fresh temp folder; `file` writes a file into it.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, bytes).expect("write file");
        path
    }
}

fn validate(path: &Path) -> Result<valsort::Summary, ValidateError> {
    valsort::validate_path(path, &|_| {})
}

/// `count` binary gensort records from `start`.
fn records(start: u128, count: u64) -> Vec<u8> {
    generate_all(&GenSpec {
        format: Format::Binary,
        skew: false,
        start,
        records: count,
    })
}

/// Checks that the error chain (as the CLI prints it, `{:#}`) names `path` and `needle`, is
/// lowercase-first and has no trailing period.
fn check_message(err: &ValidateError, path: &Path, needle: &str) {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(needle), "{message}");
    assert!(!message.ends_with('.'), "{message}");
    assert!(
        message.starts_with(|c: char| !c.is_uppercase()),
        "{message}"
    );
}

#[test]
fn partial_record_names_file_and_offset() {
    let fx = Fixture::new();
    let path = fx.file("half.dat", &records(0, 2)[..150]);
    let err = validate(&path).expect_err("150 bytes");
    assert!(
        matches!(&err, ValidateError::PartialRecord { offset: 100, len_bytes: 150, path: p } if *p == path),
        "{err:?}"
    );
    check_message(&err, &path, "byte offset 100");
    assert!(err.is_bad_input());
}

#[test]
fn partial_record_in_a_later_part_names_that_part() {
    let fx = Fixture::new();
    let bytes = records(0, 10);
    fx.file("parts/a", &bytes[..500]);
    let bad = fx.file("parts/b", &bytes[500..990]);
    let err = validate(&fx.path("parts")).expect_err("490-byte part");
    assert!(
        matches!(&err, ValidateError::PartialRecord { offset: 400, .. }),
        "{err:?}"
    );
    check_message(&err, &bad, "partial record");
}

#[test]
fn empty_file_and_empty_folder_are_rejected() {
    let fx = Fixture::new();
    let path = fx.file("empty.dat", b"");
    let err = validate(&path).expect_err("empty file");
    assert!(matches!(err, ValidateError::Empty { .. }), "{err:?}");
    check_message(
        &err,
        &path,
        "there must be at least one record to be validated",
    );

    let folder = fx.path("parts");
    fx.file("parts/.hidden", &records(0, 3));
    fx.file("parts/empty-0", b"");
    std::fs::create_dir_all(folder.join("subfolder")).expect("subfolder");
    let err = validate(&folder).expect_err("no records in the folder");
    assert!(matches!(err, ValidateError::Empty { .. }), "{err:?}");
    check_message(&err, &folder, "at least one record");
}

#[test]
fn missing_input_names_path_and_os_reason() {
    let fx = Fixture::new();
    let path = fx.path("no-such.dat");
    let err = validate(&path).expect_err("missing");
    assert!(matches!(err, ValidateError::Open { .. }), "{err:?}");
    check_message(&err, &path, "No such file");
    assert!(!err.is_bad_input());

    let err = valsort::validate_summaries(&path).expect_err("missing");
    check_message(&err, &path, "cannot open");
}

#[test]
fn summary_file_errors() {
    let fx = Fixture::new();
    let empty = fx.file("empty.sum", b"");
    let err = valsort::validate_summaries(&empty).expect_err("empty");
    assert!(matches!(err, ValidateError::Empty { .. }), "{err:?}");
    check_message(&err, &empty, "at least one record");

    let one = valsort::summarize(&records(0, 5)).to_bytes();
    let mut bytes = one.to_vec();
    bytes.extend_from_slice(&one[..100]);
    let partial = fx.file("partial.sum", &bytes);
    let err = valsort::validate_summaries(&partial).expect_err("380 bytes");
    assert!(
        matches!(err, ValidateError::PartialSummary { len_bytes: 380, .. }),
        "{err:?}"
    );
    check_message(&err, &partial, "partial partition summary found at end");
}

/// ```text
/// folder/            read as  part-0 ‖ part-1 ‖ part-2   (file-name order)
///   part-2   records 600..1000 of the sorted run (written first)
///   part-0   records   0..300
///   part-1   records 300..600
///   .part-9  hidden: skipped even though it is not a whole number of records
///   sub/     a folder: skipped
/// ```
#[test]
fn folder_parts_are_read_in_name_order() {
    let fx = Fixture::new();
    let mut sorted: Vec<&[u8]> = Vec::new();
    let bytes = records(0, 1000);
    sorted.extend(bytes.chunks_exact(RECORD_LEN));
    sorted.sort_unstable();
    let sorted = sorted.concat();
    fx.file("folder/part-2", &sorted[60_000..]);
    fx.file("folder/part-0", &sorted[..30_000]);
    fx.file("folder/part-1", &sorted[30_000..60_000]);
    fx.file("folder/.part-9", b"not records");
    fx.file("folder/sub/part-3", &records(5, 1));
    let summary = validate(&fx.path("folder")).expect("folder");
    assert_eq!(summary, valsort::summarize(&sorted));
    assert!(summary.is_ordered());

    // Swap the contents of the first two parts: the boundary into part-1 is out of order,
    // like swapped.sum in the reference vectors.
    fx.file("folder/part-0", &sorted[30_000..60_000]);
    fx.file("folder/part-1", &sorted[..30_000]);
    let summary = validate(&fx.path("folder")).expect("folder");
    assert_eq!(summary.first_unordered, 300);
    assert_eq!(summary.unordered, 1);
    assert_eq!(summary.records, 1000);

    // An unordered record inside part-1 is reported at its global index.
    fx.file("folder/part-0", &sorted[..30_000]);
    let mut middle = sorted[30_000..60_000].to_vec();
    middle[5 * RECORD_LEN..6 * RECORD_LEN].copy_from_slice(&sorted[..RECORD_LEN]);
    fx.file("folder/part-1", &middle);
    let summary = validate(&fx.path("folder")).expect("folder");
    assert_eq!(summary.first_unordered, 305);
    assert_eq!(
        summary.unordered, 1,
        "only the smaller record itself is unordered"
    );
}

/// Files several chunks long, split into parts at odd places, give the same summary as the
/// sequential kernel over the concatenation.
#[test]
fn chunked_parallel_validation_equals_sequential() {
    let fx = Fixture::new();
    let chunk_records = CHUNK_BYTES / RECORD_LEN as u64;
    let bytes = records(7, chunk_records * 2 + 12_345);
    let whole = fx.file("whole.dat", &bytes);
    let expected = valsort::summarize(&bytes);
    assert_eq!(validate(&whole).expect("whole"), expected);

    let cut = (chunk_records as usize + 17) * RECORD_LEN;
    fx.file("parts/0", &bytes[..RECORD_LEN]);
    fx.file("parts/1", &bytes[RECORD_LEN..cut]);
    fx.file("parts/2", &bytes[cut..]);
    let progress = std::sync::Mutex::new(Vec::new());
    let summary = valsort::validate_path(&fx.path("parts"), &|done| {
        progress.lock().expect("lock").push(done)
    })
    .expect("parts");
    assert_eq!(summary, expected);
    let progress = progress.into_inner().expect("lock");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&(bytes.len() as u64)));
}
