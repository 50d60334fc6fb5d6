//! The machine's floor for a sort: copy the input to a new output through the very I/O path a
//! sort uses (mapped input, chunked direct writes at final offsets, fsync, rename), so a sort's
//! time can be reported as a ratio to it.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use engine::output::{IoMode, OutputTarget, RangeWriter};
use engine::record::RECORD_LEN;
use engine::spill::{
    Compression, FileIndex, IoEngine, SegmentFileReader, SegmentFileWriter, SegmentIndex,
    WriterOptions,
};
use engine::tempdir::JobTempDir;
use engine::terasort::input::{map_input, open_input};
use engine::EngineError;

/// Reads every byte of `files` once (1 MiB `pread`s, `threads` threads over byte ranges of
/// each file) and returns the wall time: the least any job over these inputs must do, its
/// floor. The files are in whatever cache state the bench left them (just generated: mostly
/// in the page cache, as they are for the tools measured after).
pub fn read_files(files: &[std::path::PathBuf], threads: usize) -> std::io::Result<Duration> {
    let started = Instant::now();
    for path in files {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let per = size.div_ceil(threads.max(1) as u64).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..size.div_ceil(per))
                .map(|t| {
                    let file = &file;
                    scope.spawn(move || -> std::io::Result<()> {
                        let (mut at, end) = (t * per, ((t + 1) * per).min(size));
                        let mut buffer = vec![0u8; 1 << 20];
                        while at < end {
                            let want = ((end - at) as usize).min(buffer.len());
                            let n = file.read_at(&mut buffer[..want], at)?;
                            if n == 0 {
                                break;
                            }
                            at += n as u64;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a read thread panicked")))
            })
        })?;
    }
    Ok(started.elapsed())
}

/// What copying took.
#[derive(Clone, Copy, Debug)]
pub struct CopyReport {
    pub bytes: u64,
    pub wall: Duration,
}

/// Copies `input` to `output` with `writers` parallel range writers (like `writers`
/// reducers), `chunk_bytes` per write; the output is durable when this returns.
pub fn copy_file(
    input: &Path,
    output: &Path,
    io: IoMode,
    writers: usize,
    chunk_bytes: usize,
) -> Result<CopyReport, EngineError> {
    let started = Instant::now();
    let opened = open_input(input, &std::env::temp_dir(), &Default::default())?;
    let (file, size) = (opened.file, opened.size);
    let target = OutputTarget::create(output, &[input], size, None, io, true)?;
    let map = map_input(&file, size, input)?;
    let writers = writers.max(1) as u64;
    let per_writer = size.div_ceil(writers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (start, end) = ((w * per_writer).min(size), ((w + 1) * per_writer).min(size));
                let file = target.file(0).clone();
                let map = &map;
                scope.spawn(move || -> Result<(), EngineError> {
                    let mut writer = file.range_writer(start, end - start, chunk_bytes)?;
                    for piece in map[start as usize..end as usize].chunks(1 << 20) {
                        writer.write(piece)?;
                    }
                    writer.finish().map(|_| ())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(EngineError::Internal {
                    what: "a copy thread panicked".into(),
                })
            })
        })
    })?;
    target.commit()?;
    Ok(CopyReport {
        bytes: size,
        wall: started.elapsed(),
    })
}

/// What the two-pass floor took and moved.
#[derive(Clone, Copy, Debug)]
pub struct TwoPassReport {
    /// Input bytes (= output bytes).
    pub bytes: u64,
    /// Parallel streams (one segment file and one output range each).
    pub streams: usize,
    /// Segments sealed over all streams (the floor's "runs").
    pub segments: u64,
    /// Pass 1: input read with `pread` and written to the segment files.
    pub pass1: Duration,
    /// Pass 2: segment files read through their maps and written to the output, fsync and
    /// rename included.
    pub pass2: Duration,
    /// `pass1 + pass2` (the temp folder's removal is not included).
    pub wall: Duration,
    /// Raw bytes appended to the segment files (the sort's `spill_written_bytes`).
    pub spill_written_bytes: u64,
    /// Bytes the segment files took on disk: block headers, lz4 and padding included.
    pub spill_file_bytes: u64,
    /// Raw bytes read back (the sort's `spill_read_bytes`).
    pub spill_read_bytes: u64,
    /// The engine the writers used ([`IoEngine::Uring`] or [`IoEngine::Pwrite`]).
    pub io_engine: IoEngine,
    /// Whether the segment files were opened with `O_DIRECT`.
    pub direct: bool,
}

/// Read-ahead per segment in pass 2: the largest the out-of-core merge asks for.
const TWO_PASS_READ_AHEAD_BYTES: u64 = 16 << 20;

/// The machine's floor for an out-of-core sort: the input's bytes written and read twice
/// through the I/O path the spilling sort uses, with no sorting.
///
/// One stream per core (like one reducer per core) takes a contiguous range of the input:
/// - pass 1 reads its range with `pread` in 4 MB chunks (like the out-of-core maps) and
///   appends it to its own [`SegmentFileWriter`] (the sort's options: direct, `io_engine`,
///   `compression`, 4 MiB buffers, queue depth 2), sealing a segment every
///   `memory_bytes / 2` bytes over all streams (like runs);
/// - pass 2, once every stream has finished pass 1, reads the segments back through
///   [`SegmentFileReader::partition_blocks`] (mapped, zero-copy unless compressed), asking for
///   read-ahead and releasing what it passed like the merge's cursors, and writes them at
///   the range's offset of `output` with a [`RangeWriter`] (8 MiB chunks); then the output is
///   committed (fsync, rename).
///
/// The segment files live in a private [`JobTempDir`] in `spill_dir`, removed before this
/// returns; `output` is a durable copy of `input` when it returns `Ok`.
pub fn two_pass_floor(
    input: &Path,
    spill_dir: &Path,
    output: &Path,
    memory_bytes: u64,
    io_engine: IoEngine,
    compression: Compression,
) -> Result<TwoPassReport, EngineError> {
    const RECORD: u64 = RECORD_LEN as u64;
    let streams = std::thread::available_parallelism().map_or(1, |n| n.get());
    let temp = JobTempDir::create(spill_dir)?;
    let started = Instant::now();
    let opened = open_input(input, spill_dir, &Default::default())?;
    let (file, size) = (opened.file, opened.size);
    let target = OutputTarget::create(output, &[input], size, None, IoMode::Auto, true)?;
    let per_stream = (size / RECORD).div_ceil(streams as u64) * RECORD;
    let ranges: Vec<(u64, u64)> = (0..streams as u64)
        .map(|s| ((s * per_stream).min(size), ((s + 1) * per_stream).min(size)))
        .collect();
    let segment_bytes = (memory_bytes / 2 / streams as u64 / RECORD).max(1) * RECORD;
    let options = WriterOptions {
        io: io_engine,
        direct: true,
        compression,
        buffer_bytes: 4 << 20,
        queue_depth: 2,
    };
    let chunk_bytes = (4 << 20) / RECORD_LEN * RECORD_LEN;

    // Pass 1: input → segment files.
    let spilled = in_parallel(&ranges, |stream, &(start, end)| {
        let path = temp.path().join(format!("floor-{stream}.runs"));
        let mut writer = SegmentFileWriter::create(&path, options)?;
        let mut buffer = vec![0u8; chunk_bytes];
        let (mut pos, mut in_segment) = (start, 0u64);
        while pos < end {
            let n = (end - pos)
                .min(chunk_bytes as u64)
                .min(segment_bytes - in_segment) as usize;
            file.read_exact_at(&mut buffer[..n], pos)
                .map_err(|source| EngineError::InputUnreadable {
                    path: input.to_path_buf(),
                    source,
                })?;
            writer.append_records(0, RECORD_LEN, &buffer[..n])?;
            (pos, in_segment) = (pos + n as u64, in_segment + n as u64);
            if in_segment >= segment_bytes {
                writer.seal_segment()?;
                in_segment = 0;
            }
        }
        if in_segment > 0 {
            writer.seal_segment()?;
        }
        let (stats, engine, direct) = (writer.stats(), writer.io_engine(), writer.is_direct());
        let index: FileIndex = writer.finish()?;
        Ok((path, index.segments, stats, engine, direct))
    })?;
    let pass1 = started.elapsed();

    // Pass 2: segment files → output.
    let work: Vec<_> = ranges.iter().zip(&spilled).collect();
    let read = in_parallel(&work, |_, (&(start, end), (path, segments, ..))| {
        let reader = SegmentFileReader::with_segments(path, segments.iter().cloned())?;
        let mut writer = target.file(0).range_writer(start, end - start, 8 << 20)?;
        let mut read = 0;
        for segment in segments {
            read += copy_segment(&reader, segment, &mut writer)?;
        }
        writer.finish()?;
        Ok(read)
    })?;
    target.commit()?;
    let wall = started.elapsed();
    drop(temp);
    Ok(TwoPassReport {
        bytes: size,
        streams,
        segments: spilled.iter().map(|s| s.1.len() as u64).sum(),
        pass1,
        pass2: wall - pass1,
        wall,
        spill_written_bytes: spilled.iter().map(|s| s.2.raw_bytes).sum(),
        spill_file_bytes: spilled.iter().map(|s| s.2.file_bytes).sum(),
        spill_read_bytes: read.iter().sum(),
        io_engine: spilled.first().map_or(IoEngine::Pwrite, |s| s.3),
        direct: spilled.iter().all(|s| s.4),
    })
}

/// Writes the records of one sealed segment to `writer`, with read-ahead before and
/// release behind the blocks as the merge's run cursors do; returns the raw bytes read.
fn copy_segment(
    reader: &SegmentFileReader,
    segment: &SegmentIndex,
    writer: &mut RangeWriter,
) -> Result<u64, EngineError> {
    let start = segment.partition(0).map_or(segment.offset, |p| p.offset);
    let (mut next, mut released, mut ahead) = (start, start, start);
    let mut blocks = reader.partition_blocks(segment.segment, 0)?;
    let mut read = 0;
    loop {
        let done = next / 4096 * 4096;
        if done > released {
            reader.release(segment.segment, released, done - released)?;
            released = done;
        }
        if ahead < next + TWO_PASS_READ_AHEAD_BYTES / 2 {
            reader.will_need(segment.segment, next, TWO_PASS_READ_AHEAD_BYTES)?;
            ahead = next + TWO_PASS_READ_AHEAD_BYTES;
        }
        let Some(block) = blocks.next() else {
            return Ok(read);
        };
        let block = block?;
        next += block.encoded_len() as u64;
        writer.write(&block.payload)?;
        read += block.payload.len() as u64;
    }
}

/// Runs `f(i, item)` for every item on its own thread; the results in order, or the first
/// error.
fn in_parallel<I: Sync, T: Send>(
    items: &[I],
    f: impl Fn(usize, &I) -> Result<T, EngineError> + Sync,
) -> Result<Vec<T>, EngineError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let f = &f;
                scope.spawn(move || f(i, item))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::Internal {
                        what: "a floor thread panicked".into(),
                    })
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_exact_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let bytes: Vec<u8> = (0..1_234_500u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&input, &bytes).unwrap();
        let output = dir.path().join("out");
        let report = copy_file(&input, &output, IoMode::Auto, 2, 1 << 16).unwrap();
        assert_eq!(report.bytes, bytes.len() as u64);
        assert_eq!(std::fs::read(&output).unwrap(), bytes);
        assert!(engine::process::peak_rss_bytes().unwrap() > 0);
    }

    /// Both passes move every byte, in order, with either engine and codec; the output is
    /// an exact copy and the spill folder is gone afterwards.
    #[test]
    fn two_pass_floor_copies_through_segment_files_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        // 3 MB of records whose tails compress, so lz4 really runs.
        let records = 30_001u32;
        let bytes: Vec<u8> = (0..records)
            .flat_map(|r| {
                let mut record = [b'A' + (r % 26) as u8; RECORD_LEN];
                record[..4].copy_from_slice(&r.wrapping_mul(2_654_435_761).to_be_bytes());
                record
            })
            .collect();
        std::fs::write(&input, &bytes).unwrap();
        let spill = dir.path().join("spill");
        std::fs::create_dir(&spill).unwrap();
        for (io, compression) in [
            (IoEngine::Auto, Compression::Auto),
            (IoEngine::Pwrite, Compression::None),
            (IoEngine::Pwrite, Compression::Lz4),
        ] {
            let output = dir.path().join("out");
            // A 1 MB budget seals a segment every 0.5 MB: several per stream.
            let report =
                two_pass_floor(&input, &spill, &output, 1_000_000, io, compression).unwrap();
            assert_eq!(report.bytes, bytes.len() as u64);
            assert_eq!(report.spill_written_bytes, report.bytes);
            assert_eq!(report.spill_read_bytes, report.bytes);
            assert!(report.segments >= 6, "{report:?}");
            assert_eq!(report.wall, report.pass1 + report.pass2);
            assert_ne!(report.io_engine, IoEngine::Auto);
            if compression == Compression::Lz4 {
                assert!(report.spill_file_bytes < report.bytes / 2, "{report:?}");
            } else if compression == Compression::None {
                assert!(report.spill_file_bytes > report.bytes, "{report:?}");
            }
            assert!(
                std::fs::read(&output).unwrap() == bytes,
                "{io:?} {compression:?}"
            );
            std::fs::remove_file(&output).unwrap();
            assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
        }
    }
}
