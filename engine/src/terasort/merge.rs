//! K-way merge of sorted runs with a loser tree.
//!
//! Each source is identified by its index; its current key is `key80 << 16 | source`, so
//! integer comparison orders by key and breaks ties by source (runs are numbered in arrival
//! order, which keeps equal keys in a stable order).
//! An exhausted source has key [`EXHAUSTED`], above every real key.
//! Replacing the winner's key replays one leaf-to-root path: ⌈log2 k⌉ comparisons per record.

/// Key of a source with nothing left.
pub const EXHAUSTED: u128 = u128::MAX;

/// The merge key of record key `key80` from source `source`.
#[inline]
pub fn merge_key(key80: u128, source: usize) -> u128 {
    debug_assert!(source < 1 << 16);
    key80 << 16 | source as u128
}

/// A loser tree over `k` sources.
#[derive(Clone, Debug)]
pub struct LoserTree {
    /// `nodes[0]` is the winner; `nodes[1..k]` hold the loser of each internal node.
    nodes: Vec<usize>,
    keys: Vec<u128>,
}

impl LoserTree {
    /// Builds the tree from every source's first key.
    pub fn new(keys: Vec<u128>) -> Self {
        let k = keys.len().max(1);
        let mut tree = Self {
            nodes: vec![usize::MAX; k],
            keys,
        };
        if tree.keys.is_empty() {
            tree.keys.push(EXHAUSTED);
        }
        for leaf in 0..k {
            tree.insert(leaf);
        }
        tree
    }

    fn insert(&mut self, leaf: usize) {
        let k = self.keys.len();
        let mut winner = leaf;
        let mut node = (leaf + k) / 2;
        while node > 0 {
            let other = self.nodes[node];
            if other == usize::MAX {
                // First arrival at this node: park here until the sibling subtree reports.
                self.nodes[node] = winner;
                return;
            }
            if self.keys[other] < self.keys[winner] {
                self.nodes[node] = winner;
                winner = other;
            }
            node /= 2;
        }
        self.nodes[0] = winner;
    }

    /// The source with the smallest key.
    #[inline]
    pub fn winner(&self) -> usize {
        self.nodes[0]
    }

    /// The winner's key ([`EXHAUSTED`] when every source is done).
    #[inline]
    pub fn winner_key(&self) -> u128 {
        self.keys[self.nodes[0]]
    }

    /// Sets the winner's next key and finds the new winner.
    #[inline]
    pub fn replace_winner(&mut self, key: u128) {
        let k = self.keys.len();
        let mut winner = self.nodes[0];
        self.keys[winner] = key;
        let mut node = (winner + k) / 2;
        while node > 0 {
            let other = self.nodes[node];
            if self.keys[other] < self.keys[winner] {
                self.nodes[node] = winner;
                winner = other;
            }
            node /= 2;
        }
        self.nodes[0] = winner;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn merge(runs: &[Vec<u128>]) -> Vec<u128> {
        let mut cursors = vec![0usize; runs.len()];
        let first = runs
            .iter()
            .enumerate()
            .map(|(i, r)| r.first().map_or(EXHAUSTED, |&k| merge_key(k, i)))
            .collect();
        let mut tree = LoserTree::new(first);
        let mut out = Vec::new();
        while tree.winner_key() != EXHAUSTED {
            let w = tree.winner();
            out.push(runs[w][cursors[w]]);
            cursors[w] += 1;
            tree.replace_winner(
                runs[w]
                    .get(cursors[w])
                    .map_or(EXHAUSTED, |&k| merge_key(k, w)),
            );
        }
        out
    }

    proptest! {
        /// Any set of sorted runs merges to the sorted multiset of their keys.
        #[test]
        fn merge_of_sorted_runs_is_sorted_multiset(
            mut runs in proptest::collection::vec(proptest::collection::vec(0u128..1000, 0..50), 0..40),
        ) {
            for run in &mut runs { run.sort_unstable(); }
            let mut expected: Vec<u128> = runs.concat();
            expected.sort_unstable();
            prop_assert_eq!(merge(&runs), expected);
        }
    }

    #[test]
    fn ties_go_to_the_earlier_source() {
        let tree = LoserTree::new(vec![merge_key(5, 0), merge_key(5, 1), merge_key(4, 2)]);
        assert_eq!(tree.winner(), 2);
        let mut tree = tree;
        tree.replace_winner(EXHAUSTED);
        assert_eq!(tree.winner(), 0);
    }
}
