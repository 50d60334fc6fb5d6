//! Segment files end to end: what a writer stores, a reader returns, for every I/O engine and
//! with direct I/O on and off; and every failure (truncation, corruption, full disk,
//! unwritable folder) is a clear error, never a crash.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use proptest::prelude::*;
use shuffle::spill::{
    collect_payloads, uring_available, BlockError, Compression, FileIndex, IoEngine,
    SegmentFileReader, SegmentFileWriter, SegmentIndex, SpillError, WriterOptions,
    BLOCK_HEADER_BYTES, BLOCK_RAW_BYTES,
};

/// One append: `len` bytes made from `seed`, compressible or not.
#[derive(Clone, Debug)]
struct Append {
    partition: u32,
    len: usize,
    seed: u64,
    text: bool,
}

/// A segment is a list of appends with ascending partitions.
type Layout = Vec<Vec<Append>>;

/// What each (segment, partition) must read back as: bytes and records.
type Expected = BTreeMap<(u32, u32), (Vec<u8>, u64)>;

/// Bytes of one append: xorshift noise, or gensort-ASCII-like lines that lz4 shrinks.
fn bytes(append: &Append) -> Vec<u8> {
    let mut state = append.seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    if append.text {
        let mut out = Vec::with_capacity(append.len + 100);
        while out.len() < append.len {
            let n = next();
            out.extend_from_slice(
                format!(
                    "{:010X}  {n:032X}  88889999AAAABBBBCCCCDDDDEEEEFFFF00001111\r\n",
                    n >> 24
                )
                .as_bytes(),
            );
        }
        out.truncate(append.len);
        out
    } else {
        (0..append.len).map(|_| next() as u8).collect()
    }
}

/// A fresh private folder per test.
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("millrace-spill-test")
        .tempdir()
        .unwrap()
}

/// `Uring` when this machine has it, else `Pwrite` with a message (so the test still runs).
fn uring_or_skip(engine: IoEngine) -> IoEngine {
    if engine == IoEngine::Uring {
        if let Err(reason) = uring_available() {
            eprintln!("io_uring unavailable ({reason}); testing pwrite instead");
            return IoEngine::Pwrite;
        }
    }
    engine
}

/// Writes `layout` (one sealed segment per entry) and returns the index and the expectation.
fn write_layout(path: &Path, layout: &Layout, options: WriterOptions) -> (FileIndex, Expected) {
    let mut writer = SegmentFileWriter::create(path, options).unwrap();
    let mut expected = Expected::new();
    for (segment, appends) in layout.iter().enumerate() {
        for append in appends {
            let raw = bytes(append);
            let records = append.len as u32 / 10;
            writer.append(append.partition, records, &raw).unwrap();
            if !raw.is_empty() || records > 0 {
                let entry = expected
                    .entry((segment as u32, append.partition))
                    .or_default();
                entry.0.extend_from_slice(&raw);
                entry.1 += u64::from(records);
            }
        }
        let index = writer.seal_segment().unwrap();
        assert_eq!(index.segment, segment as u32);
        assert_eq!(index.offset % 4096, 0);
        assert_eq!(index.padded_len % 4096, 0);
    }
    let index = writer.finish().unwrap();
    let file_len = fs::metadata(path).unwrap().len();
    let end = index.segments.last().map_or(0, |s| s.offset + s.padded_len);
    assert_eq!(
        file_len, end,
        "the file ends with the last segment's padding"
    );
    (index, expected)
}

/// The one check of this boundary: every partition of every segment reads back as written,
/// through blocks and through its checksummed byte range.
fn check(reader: &SegmentFileReader, expected: &Expected) {
    let segments: Vec<SegmentIndex> = reader.segments().cloned().collect();
    for segment in &segments {
        for entry in &segment.partitions {
            assert!(
                expected.contains_key(&(segment.segment, entry.partition)),
                "segment {} has unexpected partition {}",
                segment.segment,
                entry.partition
            );
        }
    }
    for (&(segment, partition), (want, records)) in expected {
        let blocks = reader.partition_blocks(segment, partition).unwrap();
        let got = collect_payloads(blocks).unwrap();
        assert!(
            got == *want,
            "segment {segment} partition {partition}: {} bytes read, {} written",
            got.len(),
            want.len()
        );
        let entry = reader
            .segment(segment)
            .unwrap()
            .partition(partition)
            .unwrap();
        assert_eq!(entry.records, *records);
        let range = reader.partition_bytes(segment, partition).unwrap();
        assert_eq!(range.len() as u64, entry.len);
    }
    // A partition that was never written reads as nothing.
    for segment in &segments {
        let absent = segment.partitions.last().map_or(0, |e| e.partition + 1);
        assert_eq!(
            reader
                .partition_blocks(segment.segment, absent)
                .unwrap()
                .count(),
            0
        );
    }
}

fn appends() -> impl Strategy<Value = Vec<Append>> {
    proptest::collection::vec(
        (0u32..12, 0usize..200_000, any::<u64>(), any::<bool>()),
        0..8,
    )
    .prop_map(|mut appends| {
        appends.sort_by_key(|a| a.0);
        appends
            .into_iter()
            .map(|(partition, len, seed, text)| Append {
                partition,
                len,
                seed,
                text,
            })
            .collect()
    })
}

fn options() -> impl Strategy<Value = WriterOptions> {
    (
        prop_oneof![Just(IoEngine::Uring), Just(IoEngine::Pwrite)],
        any::<bool>(),
        prop_oneof![
            Just(Compression::Auto),
            Just(Compression::None),
            Just(Compression::Lz4)
        ],
        prop_oneof![Just(4096usize), Just(64 << 10), Just(1 << 20)],
        1usize..=4,
    )
        .prop_map(
            |(io, direct, compression, buffer_bytes, queue_depth)| WriterOptions {
                io: uring_or_skip(io),
                direct,
                compression,
                buffer_bytes,
                queue_depth,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random partition layouts round-trip with io_uring and pwrite, direct on and off,
    /// through the writer's index and through the sidecar.
    #[test]
    fn segments_round_trip(layout in proptest::collection::vec(appends(), 0..4), options in options()) {
        let dir = temp_dir();
        let path = dir.path().join("run.seg");
        let (index, expected) = write_layout(&path, &layout, options);
        check(&SegmentFileReader::with_segments(&path, index.segments.clone()).unwrap(), &expected);
        index.write_sidecar(&path).unwrap();
        let reader = SegmentFileReader::open(&path).unwrap();
        prop_assert_eq!(reader.segments().cloned().collect::<Vec<_>>(), index.segments);
        check(&reader, &expected);
    }
}

/// Forced io_uring is really io_uring; `Auto` picks io_uring for direct files only.
#[test]
fn engines_are_what_was_asked_for() {
    let dir = temp_dir();
    let pwrite = SegmentFileWriter::create(
        &dir.path().join("a"),
        WriterOptions {
            io: IoEngine::Pwrite,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    assert_eq!(pwrite.io_engine(), IoEngine::Pwrite);
    match uring_available() {
        Ok(()) => {
            let uring = SegmentFileWriter::create(
                &dir.path().join("b"),
                WriterOptions {
                    io: IoEngine::Uring,
                    ..WriterOptions::default()
                },
            )
            .unwrap();
            assert_eq!(uring.io_engine(), IoEngine::Uring);
            let auto =
                SegmentFileWriter::create(&dir.path().join("c"), WriterOptions::default()).unwrap();
            let expected = if auto.is_direct() {
                IoEngine::Uring
            } else {
                IoEngine::Pwrite
            };
            assert_eq!(
                auto.io_engine(),
                expected,
                "auto uses io_uring for direct I/O only"
            );
            let buffered = SegmentFileWriter::create(
                &dir.path().join("d"),
                WriterOptions {
                    direct: false,
                    ..WriterOptions::default()
                },
            )
            .unwrap();
            assert_eq!(buffered.io_engine(), IoEngine::Pwrite);
        }
        Err(reason) => {
            eprintln!("io_uring unavailable ({reason}); checking that forcing it fails clearly");
            let error = SegmentFileWriter::create(
                &dir.path().join("b"),
                WriterOptions {
                    io: IoEngine::Uring,
                    ..WriterOptions::default()
                },
            )
            .err()
            .unwrap();
            assert!(
                matches!(error, SpillError::UringUnavailable { .. }),
                "{error}"
            );
        }
    }
}

/// A reader maps and reads sealed segment 0 while the writer appends segment 1 of the same
/// file, and picks up segment 1 once it is sealed.
///
/// ```text
/// writer: [seg 0 sealed]──► append seg 1 … … … ──► seal 1 ─┐
/// reader:        └─► read seg 0, again, again …              └─► read seg 1
/// ```
#[test]
fn reads_sealed_segments_while_the_writer_appends() {
    for io in [IoEngine::Uring, IoEngine::Pwrite] {
        let io = uring_or_skip(io);
        let dir = temp_dir();
        let path = dir.path().join("hybrid.seg");
        let options = WriterOptions {
            io,
            buffer_bytes: 256 << 10,
            ..WriterOptions::default()
        };
        let mut writer = SegmentFileWriter::create(&path, options).unwrap();
        let segment0: Vec<Append> = (0..4)
            .map(|p| Append {
                partition: p,
                len: 700_000,
                seed: u64::from(p) + 1,
                text: p % 2 == 0,
            })
            .collect();
        let mut expected0 = Expected::new();
        for append in &segment0 {
            let raw = bytes(append);
            writer
                .append_records(append.partition, 100, &raw[..raw.len() / 100 * 100])
                .unwrap();
            expected0.insert(
                (0, append.partition),
                (
                    raw[..raw.len() / 100 * 100].to_vec(),
                    raw.len() as u64 / 100,
                ),
            );
        }
        let index0 = writer.seal_segment().unwrap();

        // Segment 1 is opened (and partly written to the file) before the reader starts, and
        // the writer goes on only after the reader's first full read, so reads and appends
        // overlap on every run.
        let mut expected = expected0.clone();
        let mut append_rounds = |writer: &mut SegmentFileWriter, partition: u32| {
            for round in 0..40u64 {
                let append = Append {
                    partition,
                    len: 50_000,
                    seed: round * 31 + u64::from(partition),
                    text: round % 3 == 0,
                };
                let raw = bytes(&append);
                writer.append(partition, 500, &raw).unwrap();
                let entry = expected.entry((1, partition)).or_default();
                entry.0.extend_from_slice(&raw);
                entry.1 += 500;
            }
        };
        append_rounds(&mut writer, 1);
        let writing = Arc::new(AtomicBool::new(true));
        let (to_reader, sealed) = mpsc::channel::<SegmentIndex>();
        let (first_read_done, first_read) = mpsc::channel::<()>();
        let reader_thread = {
            let (path, writing) = (path.clone(), writing.clone());
            let expected0 = expected0.clone();
            std::thread::spawn(move || {
                let mut reader = SegmentFileReader::with_segments(&path, [index0]).unwrap();
                assert!(
                    matches!(
                        reader.partition_blocks(1, 1),
                        Err(SpillError::Misuse { .. })
                    ),
                    "an unsealed segment is not readable"
                );
                let mut reads_during_append = 0;
                while writing.load(Ordering::Acquire) {
                    check(&reader, &expected0);
                    reads_during_append += 1;
                    let _ = first_read_done.send(());
                }
                let index1 = sealed.recv().unwrap();
                reader.add_segment(index1).unwrap();
                (reader, reads_during_append)
            })
        };
        first_read.recv().unwrap();
        append_rounds(&mut writer, 5);
        append_rounds(&mut writer, 9);
        writing.store(false, Ordering::Release);
        let index1 = writer.seal_segment().unwrap();
        to_reader.send(index1).unwrap();
        let (reader, reads_during_append) = reader_thread.join().unwrap();
        assert!(reads_during_append > 0);
        check(&reader, &expected);
        writer.finish().unwrap();
    }
}

/// A file shorter than its index is a `Truncated` error naming both sizes; the intact
/// segment before the cut still reads.
#[test]
fn truncated_file_is_an_error_not_a_crash() {
    let dir = temp_dir();
    let path = dir.path().join("cut.seg");
    let layout: Layout = vec![
        vec![Append {
            partition: 0,
            len: 10_000,
            seed: 1,
            text: false,
        }],
        vec![Append {
            partition: 2,
            len: 300_000,
            seed: 2,
            text: false,
        }],
    ];
    let (index, mut expected) = write_layout(&path, &layout, WriterOptions::default());
    index.write_sidecar(&path).unwrap();
    let cut = index.segments[1].offset + 1000;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let reader = SegmentFileReader::open(&path).unwrap();
    let error = reader.partition_blocks(1, 2).err().unwrap();
    match &error {
        SpillError::Truncated {
            path: p,
            expected_bytes,
            actual_bytes,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*expected_bytes, index.segments[1].end());
            assert_eq!(*actual_bytes, cut);
        }
        other => panic!("expected Truncated, got {other}"),
    }
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    expected.retain(|&(segment, _), _| segment == 0);
    check(
        &SegmentFileReader::with_segments(&path, index.segments[..1].to_vec()).unwrap(),
        &expected,
    );
}

/// A damaged byte in a stored block is a `Corrupt` error naming the file, the offset of the
/// damaged block and its partition; blocks before it still read.
#[test]
fn corrupt_byte_names_offset_and_partition() {
    let dir = temp_dir();
    let path = dir.path().join("bad.seg");
    let options = WriterOptions {
        compression: Compression::None,
        ..WriterOptions::default()
    };
    let mut writer = SegmentFileWriter::create(&path, options).unwrap();
    writer.append(0, 1, &[1u8; 5000]).unwrap();
    writer.append(3, 1, &[2u8; 1000]).unwrap();
    writer.append(3, 1, &[3u8; 1000]).unwrap();
    writer.append(4, 1, &[4u8; 1000]).unwrap();
    let index = writer.seal_segment().unwrap();
    writer.finish().unwrap();
    let entry = index.partition(3).unwrap().clone();
    let second_block = entry.offset + (BLOCK_HEADER_BYTES + 1000) as u64;
    let damaged = second_block + BLOCK_HEADER_BYTES as u64 + 500;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, damaged).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], damaged).unwrap();
    drop(file);

    let reader = SegmentFileReader::with_segments(&path, [index]).unwrap();
    let mut blocks = reader.partition_blocks(0, 3).unwrap();
    assert_eq!(
        &blocks.next().unwrap().unwrap().payload[..],
        &[2u8; 1000][..]
    );
    let error = blocks.next().unwrap().err().unwrap();
    match &error {
        SpillError::Corrupt {
            path: p,
            offset,
            partition,
            segment,
            reason,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*offset, second_block);
            assert_eq!((*partition, *segment), (3, 0));
            assert!(
                matches!(reason, BlockError::PayloadChecksum { .. }),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&second_block.to_string()),
        "{message}"
    );
    assert!(blocks.next().is_none(), "the iterator ends after an error");
    assert!(matches!(
        reader.partition_bytes(0, 3),
        Err(SpillError::Corrupt { partition: 3, .. })
    ));
    // Other partitions are intact.
    assert_eq!(
        collect_payloads(reader.partition_blocks(0, 4).unwrap()).unwrap(),
        vec![4u8; 1000]
    );
}

/// `append_records` never cuts a record and keeps blocks at most `BLOCK_RAW_BYTES`.
#[test]
fn append_records_splits_on_record_boundaries() {
    let dir = temp_dir();
    let path = dir.path().join("records.seg");
    let mut writer = SegmentFileWriter::create(&path, WriterOptions::default()).unwrap();
    let raw = bytes(&Append {
        partition: 0,
        len: 2_600_000,
        seed: 9,
        text: true,
    });
    writer.append_records(7, 100, &raw).unwrap();
    assert!(matches!(
        writer.append_records(8, 100, &raw[..150]),
        Err(SpillError::Misuse { .. })
    ));
    let index = writer.seal_segment().unwrap();
    let reader = SegmentFileReader::with_segments(&path, [index]).unwrap();
    let mut total = Vec::new();
    let mut records = 0;
    for block in reader.partition_blocks(0, 7).unwrap() {
        let block = block.unwrap();
        assert!(block.payload.len() <= BLOCK_RAW_BYTES);
        assert_eq!(block.payload.len() % 100, 0);
        assert_eq!(block.payload.len() as u32 / 100, block.records());
        records += block.records();
        total.extend_from_slice(&block.payload);
    }
    assert_eq!((total, records), (raw, 26_000));
}

/// Caller mistakes are `Misuse` errors that leave the writer usable; an empty segment is
/// fine.
#[test]
fn misuse_is_reported_and_does_not_poison() {
    let dir = temp_dir();
    let path = dir.path().join("m.seg");
    let mut writer = SegmentFileWriter::create(&path, WriterOptions::default()).unwrap();
    let empty = writer.seal_segment().unwrap();
    assert_eq!(
        (empty.len, empty.padded_len, empty.partitions.len()),
        (0, 0, 0)
    );
    writer.append(5, 1, b"x").unwrap();
    let error = writer.append(4, 1, b"y").unwrap_err();
    assert!(matches!(error, SpillError::Misuse { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("partition 4 appended after partition 5"),
        "{error}"
    );
    writer.append(5, 1, b"z").unwrap();
    let index = writer.seal_segment().unwrap();
    assert_eq!(index.segment, 1);
    assert_eq!(index.partition(5).unwrap().blocks, 2);
    let error = SegmentFileWriter::create(&path, WriterOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(error, SpillError::Create { .. }),
        "an existing file is never overwritten: {error}"
    );
}

/// A tmpfs mounted for one test and unmounted when the guard drops.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs with `options` at `dir`, or says why not (not root, no mount).
    fn tmpfs(dir: &Path, options: &str) -> Result<Mount, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Writing 4 MB into a 1 MiB tmpfs is `DiskFull` naming the file and the bytes needed, with
/// either engine and with direct I/O asked for (tmpfs may refuse it; the writer falls back);
/// the writer stays poisoned with the same error.
#[test]
fn disk_full_names_the_file() {
    let dir = temp_dir();
    for (n, io) in [IoEngine::Uring, IoEngine::Pwrite].into_iter().enumerate() {
        let io = uring_or_skip(io);
        let mount = match Mount::tmpfs(&dir.path().join(format!("small-{n}")), "size=1m") {
            Ok(mount) => mount,
            Err(reason) => {
                eprintln!("skipping disk_full_names_the_file: {reason}");
                return;
            }
        };
        let path = mount.dir.join("full.seg");
        let options = WriterOptions {
            io,
            direct: true,
            buffer_bytes: 256 << 10,
            ..WriterOptions::default()
        };
        let mut writer = SegmentFileWriter::create(&path, options).unwrap();
        let raw = bytes(&Append {
            partition: 0,
            len: 64 << 10,
            seed: 3,
            text: false,
        });
        let mut first_error = None;
        for _ in 0..64 {
            if let Err(e) = writer.append(0, 1, &raw) {
                first_error = Some(e);
                break;
            }
        }
        let error = match first_error {
            Some(e) => e,
            None => writer.seal_segment().expect_err("4 MB cannot fit in 1 MiB"),
        };
        match &error {
            SpillError::DiskFull {
                path: p,
                needed_bytes,
            } => {
                assert_eq!(p, &path);
                assert!(*needed_bytes > 0);
            }
            other => panic!("{io:?}: expected DiskFull, got {other}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("disk full"),
            "{message}"
        );
        assert!(
            matches!(writer.append(0, 1, &raw), Err(SpillError::DiskFull { .. })),
            "poisoned"
        );
        assert!(
            matches!(writer.seal_segment(), Err(SpillError::DiskFull { .. })),
            "poisoned"
        );
        drop(writer);
        drop(mount);
    }
}

/// A folder the writer cannot write to gives a `Create` error naming the file.
#[test]
fn unwritable_folder_is_a_clear_error() {
    let dir = temp_dir();
    let folder = dir.path().join("locked");
    let _mount = if is_root() {
        match Mount::tmpfs(&folder, "ro,size=1m") {
            Ok(mount) => Some(mount),
            Err(reason) => {
                eprintln!("skipping unwritable_folder_is_a_clear_error: {reason}");
                return;
            }
        }
    } else {
        fs::create_dir(&folder).unwrap();
        fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
        None
    };
    let path = folder.join("x.seg");
    let error = SegmentFileWriter::create(&path, WriterOptions::default())
        .err()
        .unwrap();
    assert!(matches!(error, SpillError::Create { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("writable"),
        "{message}"
    );
    if !is_root() {
        fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
}
