//! The job timeline: every subtask's interval, volumes and spans, and the phases derived from
//! them, with how much they overlapped.
//!
//! A phase is the interval from the first start to the last end of one kind of work:
//! `map` (map subtasks), `shuffle` (reducers receiving and bucketing: they run while maps do),
//! `sort+write` (reducers sorting buckets and writing them), `commit` (fsync and rename).
//! The overlap ratio is Σ phase lengths ÷ wall time: 1.0 when phases run one after the other,
//! higher the more they run at once.

use serde::Serialize;

use crate::task::{Span, SubtaskReport};

/// One phase of the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub start_us: u64,
    pub end_us: u64,
}

impl Phase {
    /// Length in microseconds.
    pub fn micros(&self) -> u64 {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// Everything the `--timeline` file holds.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    pub job: String,
    pub mode: &'static str,
    pub wall_us: u64,
    pub phases: Vec<Phase>,
    pub overlap_ratio: f64,
    pub subtasks: Vec<SubtaskReport>,
}

impl Timeline {
    /// Builds the phases from subtask spans named in `phase_spans` (phase name, span name)
    /// plus whole vertices in `phase_vertices` (phase name, vertex name) and extra job-level
    /// spans.
    pub fn new(
        job: impl Into<String>,
        mode: &'static str,
        wall_us: u64,
        subtasks: Vec<SubtaskReport>,
        phase_vertices: &[(&'static str, &str)],
        phase_spans: &[(&'static str, &str)],
        job_spans: &[Span],
    ) -> Self {
        let mut phases = Vec::new();
        for &(name, vertex) in phase_vertices {
            let intervals = subtasks
                .iter()
                .filter(|s| s.vertex == vertex)
                .map(|s| (s.start_us, s.end_us));
            phases.extend(hull(name, intervals));
        }
        for &(name, span_name) in phase_spans {
            let intervals = subtasks
                .iter()
                .flat_map(|s| s.spans.iter())
                .filter(|s| s.name == span_name)
                .map(|s| (s.start_us, s.end_us));
            phases.extend(hull(name, intervals));
        }
        phases.extend(job_spans.iter().map(|s| Phase {
            name: s.name,
            start_us: s.start_us,
            end_us: s.end_us,
        }));
        let total: u64 = phases.iter().map(Phase::micros).sum();
        let overlap_ratio = if wall_us == 0 {
            1.0
        } else {
            total as f64 / wall_us as f64
        };
        Self {
            job: job.into(),
            mode,
            wall_us,
            phases,
            overlap_ratio,
            subtasks,
        }
    }

    /// The phase called `name`.
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// Microseconds during which both phases ran.
    pub fn overlap_us(&self, a: &str, b: &str) -> u64 {
        match (self.phase(a), self.phase(b)) {
            (Some(a), Some(b)) => a
                .end_us
                .min(b.end_us)
                .saturating_sub(a.start_us.max(b.start_us)),
            _ => 0,
        }
    }
}

fn hull(name: &'static str, intervals: impl Iterator<Item = (u64, u64)>) -> Option<Phase> {
    intervals.fold(None, |acc: Option<Phase>, (start, end)| {
        Some(match acc {
            None => Phase {
                name,
                start_us: start,
                end_us: end,
            },
            Some(p) => Phase {
                name,
                start_us: p.start_us.min(start),
                end_us: p.end_us.max(end),
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_overlap() {
        let sub = |vertex: &str, s, e, spans: Vec<Span>| SubtaskReport {
            vertex: vertex.into(),
            start_us: s,
            end_us: e,
            spans,
            ..Default::default()
        };
        let subtasks = vec![
            sub("map", 0, 80, vec![]),
            sub("map", 5, 100, vec![]),
            sub(
                "sort",
                0,
                150,
                vec![Span {
                    name: "receive",
                    start_us: 0,
                    end_us: 100,
                }],
            ),
        ];
        let t = Timeline::new(
            "t",
            "pipelined",
            160,
            subtasks,
            &[("map", "map")],
            &[("shuffle", "receive")],
            &[Span {
                name: "commit",
                start_us: 150,
                end_us: 160,
            }],
        );
        assert_eq!(t.phase("map").unwrap().micros(), 100);
        assert_eq!(t.overlap_us("map", "shuffle"), 100);
        assert!((t.overlap_ratio - 210.0 / 160.0).abs() < 1e-9);
    }
}
