//! The reducer's incremental sort: records are radix-partitioned into key-range buckets as
//! they arrive, and each bucket is sorted and emitted once everything has arrived.
//!
//! 1. [`BucketSorter::add`] (while maps still run): each record goes to the bucket of its key
//!    range (a [`RangePartitioner`] over this reducer's range, from the sample) and is copied
//!    into that bucket's 64 KB blocks.
//!    This is the most-significant-digit pass of a radix sort, done incrementally, and it frees
//!    the exchange buffer at once.
//! 2. [`BucketSorter::emit_sorted`] (after the last buffer): buckets in key order; each bucket's
//!    `(key, location)` entries are sorted (cache-resident: a bucket is about 1–2 MB), equal keys
//!    are ordered by the rest of the record, and every record is moved once, to the output.
//!    Windows of buckets are sorted on the rayon pool while the previous window is emitted.
//!
//! The order is the order of the full 100 bytes, so the output is deterministic and
//! byte-identical to gensort data sorted by `sort`.

use rayon::prelude::*;

use super::partitioner::RangePartitioner;
use crate::record::{key80, RECORD_LEN};

/// Records per bucket block; ≤ 65535 so a location fits 16 bits.
const BLOCK_RECORDS: usize = 655;
const BLOCK_BYTES: usize = BLOCK_RECORDS * RECORD_LEN;
/// Buckets sorted ahead of the one being emitted.
const WINDOW_BUCKETS: usize = 16;

/// A sort entry: `key80 << 48 | block << 16 | record-in-block`, so that integer order is key
/// order (ties broken later by the record's other bytes).
type Entry = u128;

/// Receives records in any order; emits them sorted.
#[derive(Debug)]
pub struct BucketSorter {
    partitioner: RangePartitioner,
    /// Per bucket, its blocks of whole records; only the last block of a bucket is partly full.
    buckets: Vec<Vec<Vec<u8>>>,
    records: u64,
}

impl BucketSorter {
    /// A sorter whose buckets are the ranges of `partitioner`.
    pub fn new(partitioner: RangePartitioner) -> Self {
        let buckets = (0..partitioner.ranges()).map(|_| Vec::new()).collect();
        Self {
            partitioner,
            buckets,
            records: 0,
        }
    }

    /// Records added so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Adds whole records (a multiple of [`RECORD_LEN`] bytes).
    pub fn add(&mut self, records: &[u8]) {
        debug_assert_eq!(records.len() % RECORD_LEN, 0);
        for record in records.chunks_exact(RECORD_LEN) {
            let bucket = &mut self.buckets[self.partitioner.partition(key80(record))];
            match bucket.last_mut() {
                Some(block) if block.len() < BLOCK_BYTES => block.extend_from_slice(record),
                _ => {
                    let mut block = Vec::with_capacity(BLOCK_BYTES);
                    block.extend_from_slice(record);
                    bucket.push(block);
                }
            }
        }
        self.records += (records.len() / RECORD_LEN) as u64;
    }

    /// Calls `emit` with every record in sorted order, consuming the sorter.
    pub fn emit_sorted<E: Send>(
        self,
        mut emit: impl FnMut(&[u8]) -> Result<(), E> + Send,
    ) -> Result<(), E> {
        let buckets = &self.buckets;
        let sort_window = |window: usize| -> Vec<Vec<Entry>> {
            let from = (window * WINDOW_BUCKETS).min(buckets.len());
            let to = (from + WINDOW_BUCKETS).min(buckets.len());
            buckets[from..to]
                .par_iter()
                .map(|blocks| sorted_entries(blocks))
                .collect()
        };
        let mut emit_window = |window: usize, sorted: Vec<Vec<Entry>>| -> Result<(), E> {
            for (offset, entries) in sorted.iter().enumerate() {
                let blocks = &buckets[window * WINDOW_BUCKETS + offset];
                for &entry in entries {
                    emit(record_at(blocks, entry))?;
                }
            }
            Ok(())
        };
        let windows = buckets.len().div_ceil(WINDOW_BUCKETS);
        let mut current = sort_window(0);
        for window in 1..windows {
            let (next, emitted) =
                rayon::join(|| sort_window(window), || emit_window(window - 1, current));
            emitted?;
            current = next;
        }
        emit_window(windows.saturating_sub(1), current)
    }
}

#[inline]
fn record_at(blocks: &[Vec<u8>], entry: Entry) -> &[u8] {
    let block = (entry >> 16) as u32 as usize;
    let index = (entry & 0xffff) as usize * RECORD_LEN;
    &blocks[block][index..index + RECORD_LEN]
}

/// The bucket's entries in the order of the full records.
fn sorted_entries(blocks: &[Vec<u8>]) -> Vec<Entry> {
    let count: usize = blocks.iter().map(|b| b.len() / RECORD_LEN).sum();
    let mut entries = Vec::with_capacity(count);
    for (b, block) in blocks.iter().enumerate() {
        for (i, record) in block.chunks_exact(RECORD_LEN).enumerate() {
            entries.push(key80(record) << 48 | (b as u128) << 16 | i as u128);
        }
    }
    entries.sort_unstable();
    // Equal keys: order by the rest of the record (rare except for skewed or constant keys).
    let mut start = 0;
    while start < entries.len() {
        let key = entries[start] >> 48;
        let mut end = start + 1;
        while end < entries.len() && entries[end] >> 48 == key {
            end += 1;
        }
        if end - start > 1 {
            entries[start..end]
                .sort_unstable_by(|&a, &b| record_at(blocks, a).cmp(record_at(blocks, b)));
        }
        start = end;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Checksum;
    use crate::terasort::partitioner::{boundaries_from_samples, KEY_SPACE_END};
    use proptest::prelude::*;

    fn sort_with(buckets: usize, records: &[u8], pieces: usize) -> Vec<u8> {
        let mut keys: Vec<u128> = records.chunks_exact(RECORD_LEN).map(key80).collect();
        keys.sort_unstable();
        let p = RangePartitioner::new(0, KEY_SPACE_END, boundaries_from_samples(&keys, buckets));
        let mut sorter = BucketSorter::new(p);
        let n = records.len() / RECORD_LEN;
        let step = n.div_ceil(pieces.max(1)).max(1) * RECORD_LEN;
        for piece in records.chunks(step) {
            sorter.add(piece);
        }
        assert_eq!(sorter.records(), n as u64);
        let mut out = Vec::with_capacity(records.len());
        sorter
            .emit_sorted(|r| {
                out.extend_from_slice(r);
                Ok::<(), ()>(())
            })
            .unwrap();
        out
    }

    fn reference(records: &[u8]) -> Vec<u8> {
        let mut recs: Vec<&[u8]> = records.chunks_exact(RECORD_LEN).collect();
        recs.sort_unstable();
        recs.concat()
    }

    proptest! {
        /// The output is the input records ordered by their full bytes: an ordered permutation
        /// with the same checksum, for any bucket count and arrival pieces, with few distinct
        /// keys (many duplicates) or random keys.
        #[test]
        fn output_is_the_sorted_permutation(
            seeds in proptest::collection::vec(any::<u64>(), 0..3000),
            buckets in 1usize..70,
            pieces in 1usize..9,
            few_keys in any::<bool>(),
        ) {
            let mut records = Vec::with_capacity(seeds.len() * RECORD_LEN);
            for (i, &s) in seeds.iter().enumerate() {
                let mut r = [0u8; RECORD_LEN];
                let key_seed = if few_keys { s % 3 } else { s };
                r[..8].copy_from_slice(&key_seed.to_be_bytes());
                r[8] = (s >> 3) as u8 & if few_keys { 0 } else { 0xff };
                r[10..18].copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                records.extend_from_slice(&r);
            }
            let sorted = sort_with(buckets, &records, pieces);
            prop_assert_eq!(Checksum::of_records(&sorted), Checksum::of_records(&records));
            prop_assert_eq!(sorted, reference(&records));
        }
    }

    #[test]
    fn many_blocks_per_bucket() {
        // 5000 records in one bucket: several blocks, locations beyond the first block.
        let records: Vec<u8> = (0..5000u32)
            .flat_map(|i| {
                let mut r = [7u8; RECORD_LEN];
                r[..4].copy_from_slice(&(4999 - i).to_be_bytes());
                r
            })
            .collect();
        assert_eq!(sort_with(1, &records, 3), reference(&records));
    }
}
