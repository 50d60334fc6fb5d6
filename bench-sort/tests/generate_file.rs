//! `generate_to_file` and `generate_to_writer`: bytes and checksum on disk and in a stream,
//! progress reports, `/dev/null`, and errors (including a closed pipe).

mod common;

use std::io::{self, Write};
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

        // The same run into a stream writes the same bytes, and reports progress the same way.
        let mut streamed = Vec::new();
        let reported = Mutex::new(Vec::new());
        let stream_checksum = gensort::generate_to_writer(&spec, &mut streamed, &|bytes| {
            reported.lock().expect("lock").push(bytes)
        })
        .expect("generate to a Vec");
        assert!(streamed == written, "{spec:?}: stream differs from file");
        assert_eq!(stream_checksum, checksum, "{spec:?}");
        let reported = reported.into_inner().expect("lock");
        assert!(reported.windows(2).all(|w| w[0] < w[1]), "{reported:?}");
        assert_eq!(reported.last(), Some(&(written.len() as u64)));
    }
}

/// A writer that accepts `limit` bytes, then fails every write with `error`; it counts what it
/// accepted.
struct FailAfter {
    limit: usize,
    accepted: usize,
    error: fn() -> io::Error,
}

impl Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.accepted;
        if room == 0 {
            return Err((self.error)());
        }
        let n = room.min(buf.len());
        self.accepted += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `millrace gen 1G - | head -c 100`: the reader goes away; generation stops with an error
/// whose source is the `BrokenPipe` `io::Error`, without a panic or a hang.
#[test]
fn broken_pipe_stops_generation_with_the_io_error() {
    let reported = Mutex::new(Vec::new());
    let mut writer = FailAfter {
        limit: 12_345,
        accepted: 0,
        error: || io::ErrorKind::BrokenPipe.into(),
    };
    // 100 GB if it ran to the end.
    let err = gensort::generate_to_writer(&binary(1_000_000_000), &mut writer, &|bytes| {
        reported.lock().expect("lock").push(bytes)
    })
    .expect_err("broken pipe");
    assert!(err.is_broken_pipe(), "{err:?}");
    assert!(!err.is_bad_input());
    assert!(matches!(err, GenError::Write { .. }), "{err:?}");
    let mut kinds = Vec::new();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            kinds.push(io.kind());
        }
        source = cause.source();
    }
    assert_eq!(kinds, [io::ErrorKind::BrokenPipe]);
    assert_eq!(writer.accepted, 12_345);
    assert!(reported.into_inner().expect("lock").is_empty());

    // Errors name the stream until the caller names it.
    assert_eq!(err.to_string(), "cannot write the output stream");
    let err = err.for_path(Path::new("standard output"));
    assert_eq!(err.to_string(), "cannot write standard output");
    assert!(err.is_broken_pipe());
}

/// The same through a real pipe whose reader takes 100 bytes and closes, like `head -c 100`
/// (Rust ignores SIGPIPE, so the write fails with EPIPE instead of killing the process).
#[test]
fn closed_pipe_is_a_broken_pipe_error() {
    let (mut reader, writer) = io::pipe().expect("pipe");
    let head = std::thread::spawn(move || {
        let mut first = [0u8; 100];
        io::Read::read_exact(&mut reader, &mut first).expect("first record");
        first
        // Dropping `reader` closes the pipe.
    });
    let spec = binary(1_000_000_000);
    let err = gensort::generate_to_writer(&spec, writer, &|_| {}).expect_err("closed pipe");
    assert!(err.is_broken_pipe(), "{err:?}");
    let first = head.join().expect("reader thread");
    let mut expected = [0u8; 100];
    gensort::generate_block(&spec, 0, 1, &mut expected);
    assert_eq!(first, expected);
}

/// ENOSPC from a writer is still `DiskFull`, with the bytes written before it.
#[test]
fn full_writer_is_disk_full() {
    let mut writer = FailAfter {
        limit: 20_000_000,
        accepted: 0,
        error: || io::Error::from_raw_os_error(libc::ENOSPC),
    };
    let err =
        gensort::generate_to_writer(&binary(1_000_000), &mut writer, &|_| {}).expect_err("ENOSPC");
    let GenError::DiskFull { written_bytes, .. } = &err else {
        panic!("{err:?}");
    };
    // Whole waves were written before the failing one.
    assert!(*written_bytes <= 20_000_000, "{written_bytes}");
    assert_eq!(*written_bytes % 1_000_000, 0, "{written_bytes}");
    assert!(!err.is_broken_pipe());
    let message = err.for_path(Path::new("standard output")).to_string();
    assert!(
        message.starts_with("cannot write standard output: the disk is full"),
        "{message}"
    );
}

/// A failing flush at the end is a write error too.
#[test]
fn flush_error_is_reported() {
    struct FailingFlush(Vec<u8>);
    impl Write for FailingFlush {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    let mut writer = FailingFlush(Vec::new());
    let err = gensort::generate_to_writer(&binary(10), &mut writer, &|_| {}).expect_err("flush");
    assert!(err.is_broken_pipe(), "{err:?}");
    assert_eq!(
        writer.0.len(),
        1000,
        "every record was written before the flush"
    );
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
