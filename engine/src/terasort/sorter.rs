//! The reducer's incremental sort over `(key, position)` entries: entries are
//! radix-partitioned into key-range buckets as they arrive, and each bucket is sorted and
//! emitted once everything has arrived.
//!
//! An [`Entry`] is `key80 << 48 | position`: the 10-byte key and the record's index in the
//! input, in one `u128` whose integer order is key order, ties by input position (a stable
//! sort by key).
//!
//! 1. [`EntrySorter::add`] (while maps still run): each entry goes to the bucket of its key
//!    range (a [`RangePartitioner`] over this reducer's range, from the sample) and is appended
//!    to that bucket's 64 KB blocks — the most-significant-digit pass of a radix sort, done
//!    incrementally.
//! 2. [`EntrySorter::emit_sorted`] (after the last buffer): buckets in key order; each bucket
//!    is sorted while cache-resident, and every position is emitted once, so the caller moves
//!    every record once.
//!    Windows of buckets are sorted on the rayon pool while the previous window is emitted.

use rayon::prelude::*;

use super::partitioner::RangePartitioner;

/// `key80 << 48 | position`.
pub type Entry = u128;

/// Bits of an entry that hold the record's position.
pub const POSITION_BITS: u32 = 48;

/// Entries per bucket block (64 KB).
const BLOCK_ENTRIES: usize = 4096;
/// Buckets sorted ahead of the one being emitted.
const WINDOW_BUCKETS: usize = 16;

/// Builds an entry.
#[inline]
pub fn entry(key: u128, position: u64) -> Entry {
    debug_assert!(position < 1 << POSITION_BITS);
    key << POSITION_BITS | position as u128
}

/// The position of an entry.
#[inline]
pub fn position(entry: Entry) -> u64 {
    (entry & ((1 << POSITION_BITS) - 1)) as u64
}

/// Receives entries in any order; emits their positions in entry order.
#[derive(Debug)]
pub struct EntrySorter {
    partitioner: RangePartitioner,
    /// Per bucket, its blocks; only the last block of a bucket is partly full.
    buckets: Vec<Vec<Vec<Entry>>>,
    entries: u64,
}

impl EntrySorter {
    /// A sorter whose buckets are the ranges of `partitioner`.
    pub fn new(partitioner: RangePartitioner) -> Self {
        let buckets = (0..partitioner.ranges()).map(|_| Vec::new()).collect();
        Self {
            partitioner,
            buckets,
            entries: 0,
        }
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds entries.
    pub fn add(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            let bucket = &mut self.buckets[self.partitioner.partition(e >> POSITION_BITS)];
            match bucket.last_mut() {
                Some(block) if block.len() < BLOCK_ENTRIES => block.push(e),
                _ => {
                    let mut block = Vec::with_capacity(BLOCK_ENTRIES);
                    block.push(e);
                    bucket.push(block);
                }
            }
            self.entries += 1;
        }
    }

    /// Calls `emit` with runs of entries (whole buckets) in order, consuming the sorter.
    ///
    /// Windows of buckets are sorted on the rayon pool, [`WINDOWS_AHEAD`] ahead of the one being
    /// emitted, while the calling thread emits.
    /// Call this from a thread outside the rayon pool: it blocks waiting for sorted windows, and
    /// emitting (memory-bound copies) would otherwise hold a pool thread that sorting needs.
    pub fn emit_sorted<E>(self, mut emit: impl FnMut(&[Entry]) -> Result<(), E>) -> Result<(), E> {
        let mut windows = Vec::new();
        let mut buckets = self.buckets.into_iter().peekable();
        while buckets.peek().is_some() {
            windows.push(buckets.by_ref().take(WINDOW_BUCKETS).collect::<Vec<_>>());
        }
        let mut pending = std::collections::VecDeque::new();
        let mut windows = windows.into_iter();
        loop {
            while pending.len() < WINDOWS_AHEAD {
                let Some(window) = windows.next() else { break };
                pending.push_back(sort_in_background(window));
            }
            let Some(sorted) = pending.pop_front() else {
                return Ok(());
            };
            let sorted = sorted
                .recv()
                .expect("the sort task sends its result unless it panicked");
            for entries in &sorted {
                emit(entries)?;
            }
        }
    }
}

/// Windows being sorted ahead of the one being emitted.
const WINDOWS_AHEAD: usize = 2;

/// Sorts each bucket of `window` on the rayon pool; the result arrives on the returned channel.
fn sort_in_background(window: Vec<Vec<Vec<Entry>>>) -> std::sync::mpsc::Receiver<Vec<Vec<Entry>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rayon::spawn(move || {
        let sorted = window
            .into_par_iter()
            .map(|blocks| {
                let mut entries = if blocks.len() == 1 {
                    blocks.into_iter().next().expect("one block")
                } else {
                    blocks.concat()
                };
                entries.sort_unstable();
                entries
            })
            .collect();
        let _ = tx.send(sorted);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terasort::partitioner::{boundaries_from_samples, KEY_SPACE_END};
    use proptest::prelude::*;

    fn sort_with(buckets: usize, entries: &[Entry], pieces: usize) -> Vec<Entry> {
        let mut keys: Vec<u128> = entries.iter().map(|e| e >> POSITION_BITS).collect();
        keys.sort_unstable();
        let p = RangePartitioner::new(0, KEY_SPACE_END, boundaries_from_samples(&keys, buckets));
        let mut sorter = EntrySorter::new(p);
        let step = entries.len().div_ceil(pieces.max(1)).max(1);
        for piece in entries.chunks(step) {
            sorter.add(piece.iter().copied());
        }
        assert_eq!(sorter.entries(), entries.len() as u64);
        let mut out = Vec::with_capacity(entries.len());
        sorter
            .emit_sorted(|run| {
                out.extend_from_slice(run);
                Ok::<(), ()>(())
            })
            .unwrap();
        out
    }

    proptest! {
        /// The output is the input entries in order — an ordered permutation — for any bucket
        /// count and arrival pieces, with few distinct keys (many duplicates) or random keys.
        #[test]
        fn output_is_the_sorted_permutation(
            keys in proptest::collection::vec(any::<u128>(), 0..5000),
            buckets in 1usize..70,
            pieces in 1usize..9,
            few_keys in any::<bool>(),
        ) {
            let entries: Vec<Entry> = keys
                .iter()
                .enumerate()
                .map(|(i, &k)| entry(if few_keys { k % 3 } else { k % KEY_SPACE_END }, i as u64))
                .collect();
            let mut expected = entries.clone();
            expected.sort_unstable();
            prop_assert_eq!(sort_with(buckets, &entries, pieces), expected);
        }
    }

    #[test]
    fn many_blocks_per_bucket_and_stable_ties() {
        let entries: Vec<Entry> = (0..20_000u64).map(|i| entry(7, 19_999 - i)).collect();
        let sorted = sort_with(1, &entries, 3);
        assert!(sorted
            .iter()
            .enumerate()
            .all(|(i, &e)| position(e) == i as u64));
    }
}
