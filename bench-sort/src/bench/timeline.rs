//! The `millrace sort --timeline` file as the bench reads it: typed phases and subtask spans
//! (the fields the pictures and the map–reduce overlap need; others are ignored), and the
//! overlap itself.
//!
//! The engine's [`engine::timeline::Timeline`] only serializes; this is its reading side.
//! Names stay strings, compared with the engine's own [`PhaseKind::as_str`] and
//! [`SpanKind::as_str`], so a name a newer engine adds is read, not refused.

use std::fs;
use std::path::Path;

use engine::task::SpanKind;
use engine::timeline::PhaseKind;
use serde::Deserialize;

use super::BenchError;

/// One phase: the hull of one kind of work over all subtasks.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TimelinePhase {
    /// A [`PhaseKind`] name: `map`, `shuffle`, …
    pub name: String,
    pub start_us: u64,
    pub end_us: u64,
    /// Inside other phases (`spill`, `merge`).
    #[serde(default)]
    pub nested: bool,
}

/// One interval inside a subtask or the job.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TimelineSpan {
    /// A [`SpanKind`] name: `receive`, `spill`, …
    pub name: String,
    pub start_us: u64,
    pub end_us: u64,
}

/// One subtask attempt.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TimelineSubtask {
    /// `map`, `sort`, …
    pub vertex: String,
    pub subtask: usize,
    #[serde(default)]
    pub attempt: u32,
    pub start_us: u64,
    pub end_us: u64,
    #[serde(default)]
    pub spans: Vec<TimelineSpan>,
}

/// A `--timeline` JSON file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Timeline {
    /// The sort's `--mode`.
    pub mode: String,
    pub wall_us: u64,
    pub phases: Vec<TimelinePhase>,
    #[serde(default)]
    pub job_spans: Vec<TimelineSpan>,
    pub subtasks: Vec<TimelineSubtask>,
}

impl Timeline {
    /// Parses a `--timeline` file (JSON format).
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Reads and parses the timeline `path`.
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let bytes = fs::read(path).map_err(|source| BenchError::Io {
            op: "read the sort timeline",
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes).map_err(|source| BenchError::Timeline {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The first phase of kind `kind`.
    pub fn phase(&self, kind: PhaseKind) -> Option<&TimelinePhase> {
        self.phases.iter().find(|p| p.name == kind.as_str())
    }

    /// The map–reduce overlap: the share of the reduce side's time that ran while maps ran.
    ///
    /// The reduce side is the union of the top-level `shuffle` and `sort+write` phases (the
    /// reducers receiving, then sorting and writing); the share is the length of its
    /// intersection with the `map` phase (first map start to last map end) divided by its
    /// length. 0 when reducers start after the last map (`--mode staged`), towards 1 the more
    /// of the reduce work is hidden behind the maps. `None` without a map phase or a reduce
    /// side of positive length.
    pub fn map_reduce_overlap(&self) -> Option<f64> {
        let map = self.phase(PhaseKind::Map)?;
        let reduce = union(
            self.phases
                .iter()
                .filter(|p| {
                    !p.nested
                        && (p.name == PhaseKind::Shuffle.as_str()
                            || p.name == PhaseKind::SortWrite.as_str())
                })
                .map(|p| (p.start_us, p.end_us)),
        );
        let total: u64 = reduce.iter().map(|(s, e)| e - s).sum();
        if total == 0 {
            return None;
        }
        let during_maps: u64 = reduce
            .iter()
            .map(|&(s, e)| e.min(map.end_us).saturating_sub(s.max(map.start_us)))
            .sum();
        Some(during_maps as f64 / total as f64)
    }

    /// The sort's first pass, in seconds from the job's start: until the last reducer began
    /// sorting and writing (in memory) or merging into the output (out of core), i.e. until
    /// every record was read, shuffled and, out of core, spilled in a run. `None` without a
    /// `sort+write` span.
    pub fn first_pass_s(&self) -> Option<f64> {
        self.subtasks
            .iter()
            .flat_map(|s| &s.spans)
            .filter(|span| span.is(SpanKind::SortWrite))
            .map(|span| span.start_us)
            .max()
            .map(|us| us as f64 / 1e6)
    }

    /// The subtasks in lane order: vertices in the order they first appear (maps, then
    /// reducers), then by subtask and attempt.
    pub fn lanes(&self) -> Vec<&TimelineSubtask> {
        let mut vertices: Vec<&str> = Vec::new();
        for s in &self.subtasks {
            if !vertices.contains(&s.vertex.as_str()) {
                vertices.push(&s.vertex);
            }
        }
        let rank = |v: &str| vertices.iter().position(|o| *o == v).unwrap_or(0);
        let mut lanes: Vec<&TimelineSubtask> = self.subtasks.iter().collect();
        lanes.sort_by_key(|s| (rank(&s.vertex), s.subtask, s.attempt));
        lanes
    }
}

impl TimelineSpan {
    /// Whether the span is of kind `kind`.
    pub fn is(&self, kind: SpanKind) -> bool {
        self.name == kind.as_str()
    }
}

impl TimelineSubtask {
    /// The lane's name: `map 0`, `sort 1`, `sort 1 (attempt 2)` for a retry.
    pub fn label(&self) -> String {
        if self.attempt == 0 {
            format!("{} {}", self.vertex, self.subtask)
        } else {
            format!(
                "{} {} (attempt {})",
                self.vertex,
                self.subtask,
                self.attempt + 1
            )
        }
    }
}

/// The union of intervals, as sorted disjoint intervals (empty ones dropped).
fn union(intervals: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = intervals.filter(|(s, e)| e > s).collect();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Trimmed from a real `millrace sort --timeline` (pipelined, 200k records).
#[cfg(test)]
pub(super) const PIPELINED: &str = r#"{
    "job": "terasort", "mode": "pipelined", "time_unit": "us",
    "started_at": "2026-11-29T13:17:54.483695Z", "started_at_unix_us": 1795958274483695,
    "wall_us": 425667,
    "phases": [
        {"name": "sample", "start_us": 0, "end_us": 1365, "nested": false},
        {"name": "map", "start_us": 4573, "end_us": 152495, "nested": false},
        {"name": "shuffle", "start_us": 8544, "end_us": 162773, "nested": false},
        {"name": "sort+write", "start_us": 154888, "end_us": 424887, "nested": false},
        {"name": "commit", "start_us": 425193, "end_us": 425667, "nested": false}
    ],
    "overlap_ratio": 1.3,
    "job_spans": [
        {"name": "sample", "start_us": 0, "end_us": 1365, "bytes": null, "records": null},
        {"name": "commit", "start_us": 425193, "end_us": 425667, "bytes": null, "records": null}
    ],
    "subtasks": [
        {"vertex": "sort", "vertex_id": 1, "subtask": 0, "attempt": 0, "deployed_us": 1801,
         "start_us": 8673, "end_us": 421550, "records_in": 1, "spans": [
            {"name": "receive", "start_us": 8673, "end_us": 162773, "bytes": 1, "records": 1},
            {"name": "sort+write", "start_us": 162784, "end_us": 421549, "bytes": null, "records": null},
            {"name": "disk busy", "start_us": 397075, "end_us": 421549, "bytes": null, "records": null},
            {"name": "something new", "start_us": 0, "end_us": 1, "bytes": null, "records": null}
         ]},
        {"vertex": "map", "vertex_id": 0, "subtask": 1, "attempt": 0, "deployed_us": 1797,
         "start_us": 8589, "end_us": 8627, "spans": []},
        {"vertex": "map", "vertex_id": 0, "subtask": 0, "attempt": 0, "deployed_us": 1775,
         "start_us": 4573, "end_us": 152495, "spans": []}
    ]
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_timeline_and_orders_lanes() {
        let t = Timeline::parse(PIPELINED.as_bytes()).unwrap();
        assert_eq!(t.mode, "pipelined");
        assert_eq!(t.phases.len(), 5);
        assert!(t.job_spans[1].is(SpanKind::Commit));
        let labels: Vec<String> = t.lanes().iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            ["sort 0", "map 0", "map 1"],
            "first vertex seen first"
        );
        assert_eq!(t.subtasks[0].spans[3].name, "something new");
    }

    #[test]
    fn overlap_is_the_share_of_reduce_time_during_maps() {
        let t = Timeline::parse(PIPELINED.as_bytes()).unwrap();
        // Reduce side 8544..424887; maps until 152495.
        let expected = (152_495 - 8544) as f64 / (424_887 - 8544) as f64;
        assert!((t.map_reduce_overlap().unwrap() - expected).abs() < 1e-12);

        let phase = |kind: PhaseKind, start_us, end_us| TimelinePhase {
            name: kind.as_str().to_owned(),
            start_us,
            end_us,
            nested: false,
        };
        let staged = Timeline {
            mode: "staged".into(),
            wall_us: 100,
            phases: vec![
                phase(PhaseKind::Map, 0, 40),
                phase(PhaseKind::Shuffle, 41, 60),
                phase(PhaseKind::SortWrite, 55, 100),
            ],
            job_spans: Vec::new(),
            subtasks: Vec::new(),
        };
        assert_eq!(staged.map_reduce_overlap(), Some(0.0));
        // Two reduce phases with a gap: the gap is not reduce time.
        let gap = Timeline {
            phases: vec![
                phase(PhaseKind::Map, 0, 50),
                phase(PhaseKind::Shuffle, 10, 30),
                phase(PhaseKind::SortWrite, 40, 80),
                TimelinePhase {
                    nested: true,
                    ..phase(PhaseKind::Spill, 0, 100)
                },
            ],
            ..staged.clone()
        };
        assert_eq!(gap.map_reduce_overlap(), Some(30.0 / 60.0));
        let no_map = Timeline {
            phases: vec![phase(PhaseKind::Shuffle, 0, 10)],
            ..staged
        };
        assert_eq!(no_map.map_reduce_overlap(), None);
    }

    #[test]
    fn union_merges_overlapping_and_touching_intervals() {
        let u = union([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)].into_iter());
        assert_eq!(u, [(0, 4), (5, 12)]);
    }
}
