//! Range partitioning on the 80-bit key: sampled boundaries and a fast lookup.
//!
//! A [`RangePartitioner`] splits the key space `[lo, hi)` into `boundaries.len() + 1` ranges;
//! key `k` goes to range `i` = the number of boundaries `≤ k`, so every key lands in exactly
//! one range and equal keys always land together.
//! The same type splits the whole key space among reducers (map side) and one reducer's range
//! into sort buckets (reduce side).
//!
//! Lookup: a table indexed by the high bits of `k − lo` gives the first candidate range; a
//! short scan (or a binary search when many boundaries share one slot, as with skewed keys)
//! finishes the job, so uniform keys cost one table load and at most a comparison or two.

/// Keys are the 10 key bytes read as a big-endian integer ([`crate::record::key80`]).
pub type Key = u128;

/// One past the largest 80-bit key.
pub const KEY_SPACE_END: u128 = 1 << 80;

/// Scans longer than this use a binary search.
const SCAN_LIMIT: u32 = 8;

/// Maps keys in `[lo, hi)` to range indexes.
#[derive(Clone, Debug)]
pub struct RangePartitioner {
    lo: Key,
    shift: u32,
    boundaries: Vec<Key>,
    /// `slots[t]` = number of boundaries ≤ the first key of slot `t`; one extra entry at the end.
    slots: Vec<u32>,
}

impl RangePartitioner {
    /// The ranges of a map's first output edge (`distributions` of its context), which must
    /// be range-partitioned.
    pub(crate) fn of_output(
        distributions: &[crate::graph::Distribution],
    ) -> Result<Self, crate::EngineError> {
        match distributions.first() {
            Some(crate::graph::Distribution::Range(boundaries)) => {
                Ok(Self::new(0, KEY_SPACE_END, boundaries.to_vec()))
            }
            other => Err(crate::EngineError::Internal {
                what: format!("the map's output edge is not range-partitioned: {other:?}"),
            }),
        }
    }

    /// A partitioner for keys in `[lo, hi)` with the given sorted boundaries (duplicates
    /// allowed; they make empty ranges).
    pub fn new(lo: Key, hi: Key, boundaries: Vec<Key>) -> Self {
        debug_assert!(
            boundaries.windows(2).all(|w| w[0] <= w[1]),
            "boundaries are sorted"
        );
        let span = hi.saturating_sub(lo).max(1);
        let slot_count = (boundaries.len() * 4)
            .next_power_of_two()
            .clamp(256, 1 << 16) as u128;
        // Smallest shift such that (span - 1) >> shift < slot_count.
        let bits = 128 - (span - 1).leading_zeros();
        let shift = bits.saturating_sub(slot_count.trailing_zeros());
        let used_slots = (((span - 1) >> shift) + 1) as usize;
        let mut slots = Vec::with_capacity(used_slots + 1);
        let mut count = 0usize;
        for t in 0..used_slots {
            let first_key = lo + ((t as u128) << shift);
            while count < boundaries.len() && boundaries[count] <= first_key {
                count += 1;
            }
            slots.push(count as u32);
        }
        slots.push(boundaries.len() as u32);
        Self {
            lo,
            shift,
            boundaries,
            slots,
        }
    }

    /// Number of ranges (`boundaries + 1`).
    pub fn ranges(&self) -> usize {
        self.boundaries.len() + 1
    }

    /// The boundaries, sorted.
    pub fn boundaries(&self) -> &[Key] {
        &self.boundaries
    }

    /// The range of `key`; keys below `lo` go to range 0 and keys past `hi` to the last one.
    #[inline]
    pub fn partition(&self, key: Key) -> usize {
        let t = ((key.saturating_sub(self.lo)) >> self.shift) as usize;
        let t = t.min(self.slots.len() - 2);
        let mut i = self.slots[t];
        let end = self.slots[t + 1];
        if end - i > SCAN_LIMIT {
            let window = &self.boundaries[i as usize..end as usize];
            return i as usize + window.partition_point(|&b| b <= key);
        }
        while i < end && self.boundaries[i as usize] <= key {
            i += 1;
        }
        i as usize
    }
}

/// Picks `ranges − 1` boundaries that split the sorted `samples` into equal parts.
pub fn boundaries_from_samples(sorted_samples: &[Key], ranges: usize) -> Vec<Key> {
    debug_assert!(sorted_samples.windows(2).all(|w| w[0] <= w[1]));
    if sorted_samples.is_empty() || ranges <= 1 {
        // No information: split the key space evenly.
        return (1..ranges.max(1))
            .map(|i| (KEY_SPACE_END / ranges as u128) * i as u128)
            .collect();
    }
    (1..ranges)
        .map(|i| sorted_samples[i * sorted_samples.len() / ranges])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(boundaries: &[Key], key: Key) -> usize {
        boundaries.iter().filter(|&&b| b <= key).count()
    }

    #[test]
    fn whole_key_space_two_ranges() {
        let p = RangePartitioner::new(0, KEY_SPACE_END, vec![1 << 79]);
        assert_eq!(p.partition(0), 0);
        assert_eq!(p.partition((1 << 79) - 1), 0);
        assert_eq!(p.partition(1 << 79), 1);
        assert_eq!(p.partition(KEY_SPACE_END - 1), 1);
    }

    #[test]
    fn all_equal_boundaries_send_equal_keys_together() {
        let p = RangePartitioner::new(0, KEY_SPACE_END, vec![42; 100]);
        assert_eq!(p.partition(41), 0);
        assert_eq!(p.partition(42), 100);
        assert_eq!(p.partition(43), 100);
    }

    proptest! {
        /// Every key lands in exactly one range, the one the boundaries define, and ranges are
        /// monotone in the key, for any boundaries (including duplicates and clusters).
        #[test]
        fn partition_matches_reference(
            lo in 0u128..(1 << 60),
            span in 1u128..(1 << 70),
            mut raw in proptest::collection::vec(any::<u64>(), 0..600),
            keys in proptest::collection::vec(any::<u64>(), 1..200),
            cluster in any::<bool>(),
        ) {
            let hi = lo + span;
            let scale = |x: u64| if cluster { lo + (x as u128 % 7) } else { lo + (x as u128 % span) };
            raw.sort_unstable();
            let mut boundaries: Vec<Key> = raw.iter().map(|&x| scale(x)).collect();
            boundaries.sort_unstable();
            let p = RangePartitioner::new(lo, hi, boundaries.clone());
            let mut sorted_keys: Vec<Key> = keys.iter().map(|&x| lo + (x as u128 % span)).collect();
            sorted_keys.sort_unstable();
            let mut last = 0;
            for key in sorted_keys {
                let got = p.partition(key);
                prop_assert_eq!(got, reference(&boundaries, key));
                prop_assert!(got < p.ranges());
                prop_assert!(got >= last);
                last = got;
            }
        }

        /// Sampled boundaries give ranges of nearly equal sample counts.
        #[test]
        fn sampled_boundaries_balance(mut samples in proptest::collection::vec(any::<u64>(), 100..2000), ranges in 2usize..16) {
            let mut keys: Vec<Key> = samples.drain(..).map(|x| x as u128).collect();
            keys.sort_unstable();
            let boundaries = boundaries_from_samples(&keys, ranges);
            prop_assert_eq!(boundaries.len(), ranges - 1);
            let p = RangePartitioner::new(0, KEY_SPACE_END, boundaries);
            let mut counts = vec![0usize; ranges];
            for &k in &keys { counts[p.partition(k)] += 1; }
            let ideal = keys.len() / ranges;
            for c in counts { prop_assert!(c <= ideal * 2 + 2, "range with {} of {}", c, keys.len()); }
        }
    }
}
