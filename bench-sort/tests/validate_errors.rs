//! `validate_path`, `validate_reader` and `validate_summaries` on inputs built in a temp
//! folder: malformed and missing inputs, folders of parts, files large enough to be read in
//! several chunks, and streams (readers, FIFOs, pipes, `/proc` files, devices).

mod common;

use std::io::{self, Read};
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

    // The same bytes as a stream, whole or in 7-byte reads, cross the same chunk boundaries.
    assert_eq!(stream(&bytes[..]).expect("stream"), expected);
    assert_eq!(stream(Trickle(&bytes, 7)).expect("7-byte reads"), expected);
}

/// What `validate_reader` says about `reader`, shown as `stream`.
fn stream(reader: impl Read) -> Result<valsort::Summary, ValidateError> {
    valsort::validate_reader(reader, Path::new("stream"), &|_| {})
}

/// A reader that returns at most `.1` bytes per call, like a pipe.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Sorted and unsorted files of several sizes: the stream of a file's bytes validates exactly
/// like the file.
#[test]
fn reader_equals_path_on_the_same_bytes() {
    let fx = Fixture::new();
    for count in [1, 2, 99, 1000] {
        let unsorted = records(11, count);
        let sorted = common::sorted_by_full_record(&unsorted);
        for (name, bytes) in [("unsorted", &unsorted), ("sorted", &sorted)] {
            let path = fx.file(&format!("{name}-{count}.dat"), bytes);
            let expected = validate(&path).expect("file");
            let file = std::fs::File::open(&path).expect("open");
            assert_eq!(stream(file).expect("stream"), expected, "{name} {count}");
            assert_eq!(
                stream(Trickle(bytes, 7)).expect("7-byte reads"),
                expected,
                "{name} {count}"
            );
        }
    }
}

#[test]
fn reader_partial_record_and_empty_stream_errors_match_files() {
    let fx = Fixture::new();
    let bytes = records(0, 3);
    let err = stream(Trickle(&bytes[..250], 7)).expect_err("250 bytes");
    assert!(
        matches!(&err, ValidateError::PartialRecord { offset: 200, len_bytes: 250, path } if path == Path::new("stream")),
        "{err:?}"
    );
    check_message(&err, Path::new("stream"), "byte offset 200");
    assert!(err.is_bad_input());
    let file_err = validate(&fx.file("partial.dat", &bytes[..250])).expect_err("250 bytes");
    assert!(
        matches!(
            &file_err,
            ValidateError::PartialRecord {
                offset: 200,
                len_bytes: 250,
                ..
            }
        ),
        "{file_err:?}"
    );

    let err = stream(io::empty()).expect_err("empty");
    assert!(
        matches!(&err, ValidateError::Empty { path } if path == Path::new("stream")),
        "{err:?}"
    );
    check_message(
        &err,
        Path::new("stream"),
        "there must be at least one record to be validated",
    );
}

/// A FIFO fed by a writer thread validates like the file holding the same bytes.
#[test]
fn fifo_validates_like_the_file() {
    let fx = Fixture::new();
    let bytes = records(5, 3000);
    let file = fx.file("records.dat", &bytes);
    let fifo = fx.path("records.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !matches!(made, Ok(status) if status.success()) {
        eprintln!("skipping: mkfifo failed: {made:?}");
        return;
    }
    let feed = |fifo: PathBuf, bytes: Vec<u8>| {
        std::thread::spawn(move || {
            // Blocks until the validator opens the FIFO for reading.
            let mut writer = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open FIFO for writing");
            io::Write::write_all(&mut writer, &bytes).expect("feed FIFO");
        })
    };
    let expected = validate(&file).expect("file");
    let writer = feed(fifo.clone(), bytes.clone());
    // If validation fails before opening the FIFO, the writer stays blocked; the assertion
    // fails first, so the test reports instead of hanging.
    assert_eq!(validate(&fifo).expect("FIFO"), expected);
    writer.join().expect("writer thread");

    let writer = feed(fifo.clone(), bytes[..150].to_vec());
    let err = validate(&fifo).expect_err("partial record");
    assert!(
        matches!(&err, ValidateError::PartialRecord { offset: 100, len_bytes: 150, path } if *path == fifo),
        "{err:?}"
    );
    writer.join().expect("writer thread");
}

/// `/proc/self/fd/N` of a pipe is what `/dev/stdin` is when standard input is a pipe.
#[test]
fn pipe_through_proc_fd_validates_like_the_file() {
    use std::os::fd::AsRawFd;
    let fx = Fixture::new();
    let bytes = records(9, 2500);
    let expected = validate(&fx.file("records.dat", &bytes)).expect("file");
    let (reader, mut writer) = io::pipe().expect("pipe");
    let shown = PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
    if !shown.exists() {
        eprintln!("skipping: {} not available", shown.display());
        return;
    }
    let feeder = std::thread::spawn(move || {
        io::Write::write_all(&mut writer, &bytes).expect("feed pipe");
        // Dropping `writer` ends the stream.
    });
    assert_eq!(validate(&shown).expect("pipe"), expected);
    feeder.join().expect("feeder thread");
    drop(reader);
}

/// A character device and a `/proc` file report size 0; they are read, not taken as empty.
#[test]
fn zero_size_special_files_are_read() {
    let dev_null = Path::new("/dev/null");
    if dev_null.exists() {
        let err = validate(dev_null).expect_err("no bytes");
        assert!(matches!(&err, ValidateError::Empty { .. }), "{err:?}");
        check_message(&err, dev_null, "at least one record");
    }
    let cpuinfo = Path::new("/proc/cpuinfo");
    if std::fs::read(cpuinfo).map_or(true, |text| text.is_empty()) {
        eprintln!("skipping: {} not readable", cpuinfo.display());
        return;
    }
    assert_eq!(std::fs::metadata(cpuinfo).expect("stat").len(), 0);
    // Its length varies from machine to machine, so either outcome is right; neither is Empty.
    match validate(cpuinfo) {
        Ok(summary) => assert!(summary.records > 0),
        Err(ValidateError::PartialRecord {
            offset, len_bytes, ..
        }) => {
            assert!(len_bytes > 0 && offset == len_bytes - len_bytes % 100);
        }
        Err(other) => panic!("{other:?}"),
    }
}
