//! Bounded sources: their input cut into splits, handed to source subtasks on demand.
//!
//! Like Flink's split enumerator: a subtask asks for its next split when it is done with one,
//! so fast subtasks take more and the number of subtasks never multiplies memory. The
//! enumerator remembers which subtask holds which split; when an attempt fails, the runtime
//! gives its splits back and the next attempt (or another subtask) reads them again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A byte range `[start, end)` of a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSplit {
    pub start: u64,
    pub end: u64,
}

/// Hands out splits on demand and takes back those of failed attempts.
#[derive(Debug, Default)]
pub struct SplitEnumerator {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<FileSplit>,
    /// Splits handed to each subtask's current attempt.
    assigned: HashMap<usize, Vec<FileSplit>>,
}

impl SplitEnumerator {
    /// An enumerator over `splits`, handed out in order.
    pub fn new(splits: impl IntoIterator<Item = FileSplit>) -> Self {
        Self {
            state: Mutex::new(State {
                pending: splits.into_iter().collect(),
                assigned: HashMap::new(),
            }),
        }
    }

    /// `len` bytes cut into splits of `split_bytes` (the last one shorter).
    pub fn for_range(len: u64, split_bytes: u64) -> Self {
        Self::for_ranges([len], split_bytes)
    }

    /// Ranges of `lens` bytes laid end to end in one range of offsets (range `i` from the
    /// sum of the lengths before it), each cut into splits of `split_bytes` (its last one
    /// shorter): no split spans two ranges (a folder source's files).
    pub fn for_ranges(lens: impl IntoIterator<Item = u64>, split_bytes: u64) -> Self {
        let step = split_bytes.max(1);
        let mut base = 0;
        let mut splits = Vec::new();
        for len in lens {
            splits.extend((0..len.div_ceil(step)).map(|i| FileSplit {
                start: base + i * step,
                end: base + ((i + 1) * step).min(len),
            }));
            base += len;
        }
        Self::new(splits)
    }

    /// Splits not handed out yet.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .len()
    }

    /// Whether every split is handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next split for `subtask`, or `None` when every split is handed out.
    pub fn next(&self, subtask: usize) -> Option<FileSplit> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let split = state.pending.pop_front()?;
        state.assigned.entry(subtask).or_default().push(split);
        Some(split)
    }

    /// Takes back the splits `subtask`'s failed attempt held, to be handed out again first.
    pub fn give_back(&self, subtask: usize) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let returned = state.assigned.remove(&subtask).unwrap_or_default();
        let count = returned.len();
        for split in returned.into_iter().rev() {
            state.pending.push_front(split);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_once_and_come_back_after_a_failure() {
        let splits = SplitEnumerator::for_range(1050, 300);
        let a = splits.next(0).unwrap();
        let b = splits.next(1).unwrap();
        assert_eq!((a.start, a.end, b.start, b.end), (0, 300, 300, 600));
        assert_eq!(splits.give_back(0), 1);
        assert_eq!(splits.give_back(0), 0);
        let mut seen = vec![b];
        while let Some(split) = splits.next(2) {
            seen.push(split);
        }
        seen.sort_by_key(|s| s.start);
        let covered: Vec<_> = seen.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(covered, [(0, 300), (300, 600), (600, 900), (900, 1050)]);
    }

    #[test]
    fn ranges_are_split_apart() {
        let splits = SplitEnumerator::for_ranges([250, 0, 100], 200);
        let mut got = Vec::new();
        while let Some(split) = splits.next(0) {
            got.push((split.start, split.end));
        }
        assert_eq!(got, [(0, 200), (200, 250), (250, 350)]);
    }
}
