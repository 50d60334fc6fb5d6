//! Micro-benchmarks of the TeraSort kernels, per record: the record CRC (against crc32fast),
//! the range partitioner, the reducer's bucket-and-sort, and the loser-tree merge.
//!
//! Run with `cargo bench -p engine --bench kernels`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::record::{crc32_record, key80, RECORD_LEN};
use engine::terasort::merge::{merge_key, LoserTree, EXHAUSTED};
use engine::terasort::partitioner::{boundaries_from_samples, RangePartitioner, KEY_SPACE_END};
use engine::terasort::sorter::{entry, EntrySorter};

const RECORDS: usize = 100_000;

fn records() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..RECORDS * RECORD_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn partitioner(keys: &[u128], ranges: usize) -> RangePartitioner {
    let mut sample: Vec<u128> = keys.iter().step_by(7).copied().collect();
    sample.sort_unstable();
    RangePartitioner::new(0, KEY_SPACE_END, boundaries_from_samples(&sample, ranges))
}

fn kernels(c: &mut Criterion) {
    let data = records();
    let keys: Vec<u128> = data.chunks_exact(RECORD_LEN).map(key80).collect();
    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(RECORDS as u64));

    group.bench_function("crc32_record", |b| {
        b.iter(|| {
            data.chunks_exact(RECORD_LEN)
                .map(|r| crc32_record(r.try_into().unwrap()) as u64)
                .sum::<u64>()
        })
    });
    group.bench_function("crc32fast", |b| {
        b.iter(|| {
            data.chunks_exact(RECORD_LEN)
                .map(|r| crc32fast::hash(r) as u64)
                .sum::<u64>()
        })
    });
    for ranges in [2usize, 256, 4096] {
        let p = partitioner(&keys, ranges);
        group.bench_function(format!("partition_{ranges}_ranges"), |b| {
            b.iter(|| {
                keys.iter()
                    .map(|&k| p.partition(black_box(k)))
                    .sum::<usize>()
            })
        });
    }
    let p = partitioner(&keys, 16);
    group.bench_function("bucket_add_then_sort_16_buckets", |b| {
        b.iter_batched(
            || EntrySorter::new(p.clone()),
            |mut sorter| {
                sorter.add(keys.iter().enumerate().map(|(i, &k)| entry(k, i as u64)));
                let mut n = 0usize;
                sorter
                    .emit_sorted(|run| {
                        n += run.len();
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                n
            },
            BatchSize::LargeInput,
        )
    });
    let runs: Vec<Vec<u128>> = keys
        .chunks(RECORDS / 32)
        .map(|chunk| {
            let mut run = chunk.to_vec();
            run.sort_unstable();
            run
        })
        .collect();
    group.bench_function("loser_tree_merge_32_runs", |b| {
        b.iter(|| {
            let mut at = vec![0usize; runs.len()];
            let mut tree = LoserTree::new(
                runs.iter()
                    .enumerate()
                    .map(|(i, r)| merge_key(r[0], i))
                    .collect(),
            );
            let mut n = 0usize;
            while tree.winner_key() != EXHAUSTED {
                let w = tree.winner();
                at[w] += 1;
                n += 1;
                tree.replace_winner(runs[w].get(at[w]).map_or(EXHAUSTED, |&k| merge_key(k, w)));
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
