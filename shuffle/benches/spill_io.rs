//! Segment file micro benchmarks: the block codec, and writing and reading one 32 MiB
//! segment of 100-byte records through each I/O engine.
//!
//! The write figures include the wait for the data to reach the file system (sealing), not an
//! fsync; reads run from the page cache, so they measure decoding, not the disk.
//! Whole-disk figures (2 GB, caches dropped) come from a larger run, see the spill module.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shuffle::spill::{
    decode_block, encode_block, uring_available, Compression, IoEngine, SegmentFileReader,
    SegmentFileWriter, WriterOptions,
};

const SEGMENT_BYTES: usize = 32 << 20;
const PARTITIONS: usize = 16;

/// `len` bytes of 100-byte records: random (like gensort binary keys) or ASCII lines that
/// lz4 shrinks.
fn records(len: usize, ascii: bool) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(len + 100);
    while out.len() < len {
        if ascii {
            let n = next();
            out.extend_from_slice(
                format!(
                    "{:010X}  {n:032X}  0000111122223333444455556666777788889999AAAABBBB\r\n",
                    n >> 24
                )
                .as_bytes(),
            );
        } else {
            (0..100).for_each(|_| out.push(next() as u8));
        }
    }
    out.truncate(len / 100 * 100);
    out
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("block");
    for (name, ascii) in [("random", false), ("ascii", true)] {
        let raw = records(1 << 20, ascii);
        group.throughput(Throughput::Bytes(raw.len() as u64));
        for compression in [Compression::None, Compression::Auto] {
            let id = format!("{name}/{compression:?}");
            let mut encoded = Vec::new();
            group.bench_function(BenchmarkId::new("encode", &id), |b| {
                b.iter(|| {
                    encoded.clear();
                    encode_block(&raw, 10_000, 0, compression, &mut encoded).unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("decode", &id), |b| {
                b.iter(|| black_box(decode_block(&encoded).unwrap().payload.len()))
            });
        }
    }
    group.finish();
}

fn segments(c: &mut Criterion) {
    let raw = records(SEGMENT_BYTES, false);
    let per_partition = raw.len() / PARTITIONS / 100 * 100;
    let dir = tempfile::tempdir().unwrap();
    let mut engines = vec![("pwrite", IoEngine::Pwrite)];
    match uring_available() {
        Ok(()) => engines.push(("uring", IoEngine::Uring)),
        Err(reason) => eprintln!("io_uring unavailable ({reason}); benchmarking pwrite only"),
    }
    let mut group = c.benchmark_group("segment");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((per_partition * PARTITIONS) as u64));
    let write = |io, direct, name: &str| {
        let path = dir.path().join(name.replace('/', "-"));
        let _ = std::fs::remove_file(&path);
        let options = WriterOptions {
            io,
            direct,
            compression: Compression::None,
            ..WriterOptions::default()
        };
        let mut writer = SegmentFileWriter::create(&path, options).unwrap();
        for (partition, chunk) in raw.chunks_exact(per_partition).enumerate() {
            writer.append_records(partition as u32, 100, chunk).unwrap();
        }
        writer.seal_segment().unwrap();
        (path, writer.finish().unwrap())
    };
    for &(name, io) in &engines {
        for direct in [true, false] {
            let id = format!("{name}/{}", if direct { "direct" } else { "buffered" });
            group.bench_function(BenchmarkId::new("write", &id), |b| {
                b.iter(|| write(io, direct, &id))
            });
        }
    }
    let (path, index) = write(IoEngine::Pwrite, false, "read");
    group.bench_function("read/page-cache", |b| {
        b.iter(|| {
            let reader = SegmentFileReader::with_segments(&path, index.segments.clone()).unwrap();
            let mut bytes = 0;
            for partition in 0..PARTITIONS as u32 {
                for block in reader.partition_blocks(0, partition).unwrap() {
                    bytes += block.unwrap().payload.len();
                }
            }
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, codec, segments);
criterion_main!(benches);
