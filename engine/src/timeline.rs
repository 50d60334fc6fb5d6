//! The job timeline: every subtask's interval, volumes and spans, and the phases derived from
//! them, with how much they overlapped.
//!
//! Every time is in microseconds (fields end in `_us`) since the job started; the timeline
//! carries that start as `started_at_unix_us` (microseconds since the Unix epoch) and
//! `started_at` (RFC 3339, UTC), and says `time_unit: "us"`.
//!
//! A phase is the interval from the first start to the last end of one kind of work:
//! `sample` (reading sample keys), `map` (map subtasks), `shuffle` (reducers receiving and
//! bucketing: they run while maps do), `sort+write` (reducers sorting and writing), `commit`
//! (fsync and rename). Out of core, two nested phases show the passes over the disk: `spill`
//! (runs spilled by reducers, inside shuffle and sort+write) and `merge` (runs merged into the
//! output, inside sort+write); they exist only when the job spilled.
//! The overlap ratio is Σ lengths of the phases that are not nested ÷ wall time: 1.0 when
//! phases run one after the other, higher the more they run at once.
//!
//! [`Timeline::to_chrome_trace`] gives the same timeline in the Trace Event Format that
//! Perfetto (ui.perfetto.dev) and `chrome://tracing` open.

use std::cmp::Reverse;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::graph::VertexId;
use crate::task::{Span, SpanKind, SubtaskReport};

/// The kinds of phase a job's timeline shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PhaseKind {
    #[serde(rename = "sample")]
    Sample,
    #[serde(rename = "map")]
    Map,
    #[serde(rename = "shuffle")]
    Shuffle,
    #[serde(rename = "spill")]
    Spill,
    #[serde(rename = "sort+write")]
    SortWrite,
    #[serde(rename = "merge")]
    Merge,
    #[serde(rename = "commit")]
    Commit,
}

impl PhaseKind {
    /// The name timelines and summaries show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Map => "map",
            Self::Shuffle => "shuffle",
            Self::Spill => "spill",
            Self::SortWrite => "sort+write",
            Self::Merge => "merge",
            Self::Commit => "commit",
        }
    }

    /// The phase a job-level span makes, if any.
    fn of_job_span(kind: SpanKind) -> Option<Self> {
        match kind {
            SpanKind::Sample => Some(Self::Sample),
            SpanKind::Commit => Some(Self::Commit),
            _ => None,
        }
    }
}

/// One phase of the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Phase {
    pub name: PhaseKind,
    pub start_us: u64,
    pub end_us: u64,
    /// A detail inside other phases (`spill`, `merge`), not counted in the overlap ratio.
    pub nested: bool,
}

impl Phase {
    /// Length in microseconds.
    pub fn micros(&self) -> u64 {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// Where phases come from: each rule is (phase name, vertex or span name), and a rule that
/// matches nothing gives no phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseRules<'a> {
    /// (phase, vertex): from the first start to the last end of the vertex's subtasks.
    pub vertices: &'a [(PhaseKind, VertexId)],
    /// (phase, span): from the first start to the last end of subtask spans of that kind.
    pub spans: &'a [(PhaseKind, SpanKind)],
    /// Like `spans`, for phases inside others: marked `nested`, left out of the overlap ratio.
    pub nested_spans: &'a [(PhaseKind, SpanKind)],
}

/// Everything the `--timeline` file holds.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    pub job: String,
    pub mode: &'static str,
    /// The unit of every `*_us` field: always `"us"` (microseconds).
    pub time_unit: &'static str,
    /// When the job started, RFC 3339 in UTC with microseconds (`2026-11-29T13:05:01.123456Z`).
    pub started_at: String,
    /// When the job started, in microseconds since the Unix epoch; every other time counts
    /// from here.
    pub started_at_unix_us: u64,
    pub wall_us: u64,
    pub phases: Vec<Phase>,
    pub overlap_ratio: f64,
    /// Job-level spans (`sample`, `commit`), outside any subtask.
    pub job_spans: Vec<Span>,
    pub subtasks: Vec<SubtaskReport>,
}

impl Timeline {
    /// Builds the phases from `subtasks` by `rules`, then one phase per job-level span.
    /// `started_at` is the wall-clock time of the instant all the `*_us` times count from.
    pub fn new(
        job: impl Into<String>,
        mode: &'static str,
        started_at: SystemTime,
        wall_us: u64,
        subtasks: Vec<SubtaskReport>,
        rules: &PhaseRules<'_>,
        job_spans: Vec<Span>,
    ) -> Self {
        let mut phases = Vec::new();
        for &(name, vertex) in rules.vertices {
            let intervals = subtasks
                .iter()
                .filter(|s| s.vertex_id == vertex.0)
                .map(|s| (s.start_us, s.end_us));
            phases.extend(hull(name, false, intervals));
        }
        for &(name, span_name) in rules.spans {
            phases.extend(hull(name, false, span_intervals(&subtasks, span_name)));
        }
        for &(name, span_name) in rules.nested_spans {
            phases.extend(hull(name, true, span_intervals(&subtasks, span_name)));
        }
        phases.extend(job_spans.iter().filter_map(|s| {
            Some(Phase {
                name: PhaseKind::of_job_span(s.name)?,
                start_us: s.start_us,
                end_us: s.end_us,
                nested: false,
            })
        }));
        // In the order they began (stable: equal starts keep the rules' order).
        phases.sort_by_key(|p| p.start_us);
        let total: u64 = phases.iter().filter(|p| !p.nested).map(Phase::micros).sum();
        let overlap_ratio = if wall_us == 0 {
            1.0
        } else {
            total as f64 / wall_us as f64
        };
        let started_at_unix_us = unix_micros(started_at);
        Self {
            job: job.into(),
            mode,
            time_unit: "us",
            started_at: rfc3339_utc(started_at_unix_us),
            started_at_unix_us,
            wall_us,
            phases,
            overlap_ratio,
            job_spans,
            subtasks,
        }
    }

    /// The phase called `name`.
    pub fn phase(&self, name: PhaseKind) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// Microseconds during which both phases ran.
    pub fn overlap_us(&self, a: PhaseKind, b: PhaseKind) -> u64 {
        match (self.phase(a), self.phase(b)) {
            (Some(a), Some(b)) => a
                .end_us
                .min(b.end_us)
                .saturating_sub(a.start_us.max(b.start_us)),
            _ => 0,
        }
    }

    /// The timeline in the Trace Event Format (JSON object form), for Perfetto and
    /// `chrome://tracing`.
    ///
    /// One process (pid 1, named "millrace <job>"); one complete event (`"ph": "X"`, `ts` and
    /// `dur` in microseconds since the job started) per subtask, per subtask span, per
    /// job-level span, per phase and one for the whole job; `"M"` events name the process and
    /// every thread. Thread ids are fixed by the job's shape: 1 is `job` (the whole job and
    /// its `sample`/`commit` spans), then one per subtask (`map 0`, `sort 3`, in vertex then
    /// subtask order), then one per phase (`phase map`). Spans that do not nest inside the
    /// others of their subtask (viewers require nesting on one thread) go to an extra thread
    /// named after it (`sort 3 (2)`), numbered after all the others. `args` hold the volumes
    /// the report has (bytes, records). `otherData` holds the start time and the job's
    /// summary.
    pub fn to_chrome_trace(&self) -> Value {
        const PID: u64 = 1;
        // Tracks in display order: (name, primary tid, events).
        let mut order: Vec<(&str, usize)> = Vec::new();
        for s in &self.subtasks {
            if !order.iter().any(|(v, _)| *v == s.vertex) {
                order.push((&s.vertex, order.len()));
            }
        }
        let vertex_rank = |v: &str| order.iter().find(|(o, _)| *o == v).map_or(0, |o| o.1);
        let mut subtasks: Vec<&SubtaskReport> = self.subtasks.iter().collect();
        subtasks.sort_by_key(|s| (vertex_rank(&s.vertex), s.subtask));

        let mut tracks: Vec<(String, u64, Vec<TraceItem>)> = Vec::new();
        let mut job = vec![TraceItem::new(
            &self.job,
            "job",
            0,
            self.wall_us,
            Map::new(),
        )];
        job.extend(self.job_spans.iter().map(TraceItem::span));
        tracks.push(("job".into(), 1, job));
        for (i, s) in subtasks.iter().enumerate() {
            let name = format!("{} {}", s.vertex, s.subtask);
            let mut args = Map::new();
            for (key, value) in [
                ("records_in", s.records_in),
                ("records_out", s.records_out),
                ("bytes_in", s.bytes_in),
                ("bytes_out", s.bytes_out),
                ("backpressure_us", s.backpressure_us),
                ("spill_written_bytes", s.spill_written_bytes),
                ("spill_read_bytes", s.spill_read_bytes),
                ("spilled_runs", s.spilled_runs),
            ] {
                args.insert(key.into(), value.into());
            }
            let mut items = vec![TraceItem::new(&name, "subtask", s.start_us, s.end_us, args)];
            items.extend(s.spans.iter().map(TraceItem::span));
            tracks.push((name, 2 + i as u64, items));
        }
        let first_phase_tid = 2 + subtasks.len() as u64;
        for (i, p) in self.phases.iter().enumerate() {
            let mut args = Map::new();
            args.insert("nested".into(), p.nested.into());
            let item = TraceItem::new(p.name.as_str(), "phase", p.start_us, p.end_us, args);
            tracks.push((
                format!("phase {}", p.name.as_str()),
                first_phase_tid + i as u64,
                vec![item],
            ));
        }
        // Job, phases, then subtasks, as a reader scans them top-down.
        let display = |tid: u64| {
            if tid >= first_phase_tid || tid == 1 {
                0
            } else {
                1
            }
        };
        tracks.sort_by_key(|t| (display(t.1), t.1));

        let mut events = vec![json!({
            "name": "process_name", "ph": "M", "pid": PID,
            "args": {"name": format!("millrace {}", self.job)},
        })];
        let mut next_tid = first_phase_tid + self.phases.len() as u64;
        let mut sort_index = 0u64;
        for (name, tid, items) in tracks {
            for (lane, items) in nest_in_lanes(items).into_iter().enumerate() {
                let (tid, name) = if lane == 0 {
                    (tid, name.clone())
                } else {
                    next_tid += 1;
                    (next_tid - 1, format!("{name} ({})", lane + 1))
                };
                events.push(json!({
                    "name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
                    "args": {"name": name},
                }));
                events.push(json!({
                    "name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid,
                    "args": {"sort_index": sort_index},
                }));
                sort_index += 1;
                events.extend(items.into_iter().map(|item| {
                    json!({
                        "name": item.name, "cat": item.cat, "ph": "X",
                        "ts": item.start_us, "dur": item.end_us - item.start_us,
                        "pid": PID, "tid": tid, "args": item.args,
                    })
                }));
            }
        }
        json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "job": self.job,
                "mode": self.mode,
                "time_unit": self.time_unit,
                "started_at": self.started_at,
                "started_at_unix_us": self.started_at_unix_us,
                "wall_us": self.wall_us,
                "overlap_ratio": self.overlap_ratio,
            },
        })
    }
}

/// One complete event before it has a thread.
#[derive(Debug)]
struct TraceItem {
    name: String,
    cat: &'static str,
    start_us: u64,
    end_us: u64,
    args: Map<String, Value>,
}

impl TraceItem {
    fn new(
        name: &str,
        cat: &'static str,
        start_us: u64,
        end_us: u64,
        args: Map<String, Value>,
    ) -> Self {
        Self {
            name: name.into(),
            cat,
            start_us,
            end_us: end_us.max(start_us),
            args,
        }
    }

    fn span(span: &Span) -> Self {
        let mut args = Map::new();
        if let Some(bytes) = span.bytes {
            args.insert("bytes".into(), bytes.into());
        }
        if let Some(records) = span.records {
            args.insert("records".into(), records.into());
        }
        Self::new(span.name.as_str(), "span", span.start_us, span.end_us, args)
    }
}

/// Splits `items` (the first one the enclosing event) into lanes in which events nest: each
/// event lies inside or after every event before it in its lane. Events go to the first lane
/// they nest in; the first lane holds the first item.
fn nest_in_lanes(mut items: Vec<TraceItem>) -> Vec<Vec<TraceItem>> {
    // Stable: on equal intervals the enclosing event stays first.
    items.sort_by_key(|i| (i.start_us, Reverse(i.end_us)));
    // Per lane: ends of the events still open at the current start, and the events.
    let mut lanes: Vec<(Vec<u64>, Vec<TraceItem>)> = Vec::new();
    'items: for item in items {
        for (open, placed) in &mut lanes {
            while open.last().is_some_and(|&end| end <= item.start_us) {
                open.pop();
            }
            if open.last().is_none_or(|&end| end >= item.end_us) {
                open.push(item.end_us);
                placed.push(item);
                continue 'items;
            }
        }
        lanes.push((vec![item.end_us], vec![item]));
    }
    lanes.into_iter().map(|(_, placed)| placed).collect()
}

/// (start, end) of every subtask span called `name`.
fn span_intervals(
    subtasks: &[SubtaskReport],
    name: SpanKind,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    subtasks
        .iter()
        .flat_map(|s| s.spans.iter())
        .filter(move |s| s.name == name)
        .map(|s| (s.start_us, s.end_us))
}

fn hull(
    name: PhaseKind,
    nested: bool,
    intervals: impl Iterator<Item = (u64, u64)>,
) -> Option<Phase> {
    intervals.fold(None, |acc: Option<Phase>, (start, end)| {
        Some(match acc {
            None => Phase {
                name,
                start_us: start,
                end_us: end,
                nested,
            },
            Some(p) => Phase {
                name,
                start_us: p.start_us.min(start),
                end_us: p.end_us.max(end),
                nested,
            },
        })
    })
}

/// Microseconds from the Unix epoch to `time` (0 before the epoch).
pub fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `unix_us` (microseconds since the Unix epoch) as RFC 3339 in UTC with microseconds, e.g.
/// `2026-11-29T13:05:01.123456Z`.
pub fn rfc3339_utc(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        unix_us % 1_000_000
    )
}

/// (year, month, day) of the proleptic Gregorian calendar, `days` after 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the 400-year era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year from March 1
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use super::*;

    fn sub(vertex: &str, subtask: usize, s: u64, e: u64, spans: Vec<Span>) -> SubtaskReport {
        SubtaskReport {
            vertex: vertex.into(),
            vertex_id: usize::from(vertex != "map"),
            subtask,
            start_us: s,
            end_us: e,
            records_in: 10,
            bytes_in: 1000,
            spans,
            ..Default::default()
        }
    }

    const RULES: PhaseRules<'static> = PhaseRules {
        vertices: &[(PhaseKind::Map, VertexId(0))],
        spans: &[
            (PhaseKind::Shuffle, SpanKind::Receive),
            (PhaseKind::SortWrite, SpanKind::SortWrite),
        ],
        nested_spans: &[
            (PhaseKind::Spill, SpanKind::Spill),
            (PhaseKind::Merge, SpanKind::Merge),
        ],
    };

    /// 2026-11-29T13:05:01.123456Z
    fn started_at() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_795_957_501_123_456)
    }

    /// An out-of-core job: two maps, two reducers that spilled and merged.
    fn out_of_core() -> Timeline {
        let reducer = |subtask, spill_end| {
            sub(
                "sort",
                subtask,
                0,
                150,
                vec![
                    Span::new(SpanKind::Receive, 0, 100).with_volume(2000, 20),
                    Span::new(SpanKind::Spill, 30, spill_end).with_volume(700, 7),
                    Span::new(SpanKind::Spill, 100, 105).with_volume(1300, 13),
                    Span::new(SpanKind::SortWrite, 100, 150).with_volume(2000, 20),
                    Span::new(SpanKind::Merge, 105, 150).with_volume(2000, 20),
                ],
            )
        };
        let mut odd = reducer(1, 60);
        // Does not nest with receive/sort+write: must go to a lane of its own.
        odd.spans.push(Span::new(SpanKind::DiskBusy, 90, 120));
        Timeline::new(
            "terasort",
            "pipelined",
            started_at(),
            160,
            vec![
                sub("map", 0, 0, 80, vec![]),
                sub("map", 1, 5, 100, vec![]),
                reducer(0, 50),
                odd,
            ],
            &RULES,
            vec![
                Span::new(SpanKind::Sample, 0, 3),
                Span::new(SpanKind::Commit, 150, 160),
            ],
        )
    }

    #[test]
    fn phases_and_overlap() {
        let t = Timeline::new(
            "t",
            "pipelined",
            started_at(),
            160,
            vec![
                sub("map", 0, 0, 80, vec![]),
                sub("map", 1, 5, 100, vec![]),
                sub(
                    "sort",
                    0,
                    0,
                    150,
                    vec![Span::new(SpanKind::Receive, 0, 100)],
                ),
            ],
            &RULES,
            vec![Span::new(SpanKind::Commit, 150, 160)],
        );
        assert_eq!(t.phase(PhaseKind::Map).unwrap().micros(), 100);
        assert_eq!(t.overlap_us(PhaseKind::Map, PhaseKind::Shuffle), 100);
        assert!((t.overlap_ratio - 210.0 / 160.0).abs() < 1e-9);
        // Nothing spilled: no spill or merge phase.
        assert!(t.phase(PhaseKind::Spill).is_none() && t.phase(PhaseKind::Merge).is_none());
    }

    /// Out of core, spill and merge are phases of their own, nested: the overlap ratio still
    /// sums only the top-level phases.
    #[test]
    fn spill_and_merge_phases_are_nested() {
        let t = out_of_core();
        let names: Vec<_> = t.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            // In the order they began.
            [
                "map",
                "shuffle",
                "sample",
                "spill",
                "sort+write",
                "merge",
                "commit"
            ]
        );
        let spill = t.phase(PhaseKind::Spill).unwrap();
        assert_eq!(
            (spill.start_us, spill.end_us, spill.nested),
            (30, 105, true)
        );
        let merge = t.phase(PhaseKind::Merge).unwrap();
        assert_eq!(
            (merge.start_us, merge.end_us, merge.nested),
            (105, 150, true)
        );
        assert!(!t.phase(PhaseKind::Shuffle).unwrap().nested);
        // map 100 + shuffle 100 + sort+write 50 + sample 3 + commit 10.
        assert!((t.overlap_ratio - 263.0 / 160.0).abs() < 1e-9);
    }

    #[test]
    fn rfc3339_from_civil_days() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(1_700_000_000_000_001),
            "2023-11-14T22:13:20.000001Z"
        );
        // A leap day, the last second of a day, the end of a century leap year.
        assert_eq!(
            rfc3339_utc(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_utc(951_868_799_999_999),
            "2000-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_utc(978_220_800_000_000),
            "2000-12-31T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_utc(4_107_542_400_000_000),
            "2100-03-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_utc(1_795_957_501_123_456),
            "2026-11-29T13:05:01.123456Z"
        );
    }

    /// The file states its unit and start, and no field counts in anything but microseconds.
    #[test]
    fn json_has_one_time_unit_and_an_absolute_start() {
        let json = serde_json::to_value(out_of_core()).unwrap();
        assert_eq!(json["time_unit"], "us");
        assert_eq!(json["started_at"], "2026-11-29T13:05:01.123456Z");
        assert_eq!(json["started_at_unix_us"], 1_795_957_501_123_456u64);
        assert_eq!(json["job_spans"][1]["name"], "commit");
        let spill = &json["subtasks"][2]["spans"][1];
        assert_eq!(
            (spill["name"].as_str(), spill["bytes"].as_u64()),
            (Some("spill"), Some(700))
        );
        assert!(json["subtasks"][0]["spans"].as_array().unwrap().is_empty());

        fn keys(value: &Value, out: &mut BTreeSet<String>) {
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        out.insert(k.clone());
                        keys(v, out);
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut all = BTreeSet::new();
        keys(&json, &mut all);
        for key in &all {
            let other_unit = ["_ms", "_s", "_secs", "_seconds", "_ns", "_millis"]
                .iter()
                .any(|unit| key.ends_with(unit));
            assert!(!other_unit, "{key} is not in microseconds");
        }
        assert!(all.contains("start_us") && all.contains("backpressure_us"));
    }

    /// The Chrome trace: every complete event is well formed, on a named thread, nested
    /// properly within its thread, and matches the timeline.
    #[test]
    fn chrome_trace_is_well_formed() {
        let t = out_of_core();
        let trace = t.to_chrome_trace();
        assert_eq!(trace["displayTimeUnit"], "ms");
        assert_eq!(
            trace["otherData"]["started_at"],
            "2026-11-29T13:05:01.123456Z"
        );
        assert_eq!(trace["otherData"]["time_unit"], "us");
        let events = trace["traceEvents"].as_array().expect("traceEvents");
        let metadata = |name: &str| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e["ph"] == "M" && e["name"] == name)
                .collect()
        };
        let process = metadata("process_name");
        assert_eq!(process.len(), 1);
        assert_eq!(process[0]["args"]["name"], "millrace terasort");
        let threads: BTreeMap<u64, &str> = metadata("thread_name")
            .iter()
            .map(|e| {
                (
                    e["tid"].as_u64().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            threads.len(),
            metadata("thread_name").len(),
            "one name per thread"
        );

        let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        let spans: usize = t.subtasks.iter().map(|s| s.spans.len()).sum();
        // The job, its two spans, 4 subtasks, their spans, 7 phases.
        assert_eq!(complete.len(), 1 + 2 + 4 + spans + 7);
        let mut by_tid: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for e in &complete {
            assert!(e["name"].as_str().is_some_and(|n| !n.is_empty()), "{e}");
            assert_eq!(e["pid"], 1, "{e}");
            let ts = e["ts"].as_u64().unwrap_or_else(|| panic!("ts in {e}"));
            let dur = e["dur"]
                .as_u64()
                .unwrap_or_else(|| panic!("non-negative dur in {e}"));
            let tid = e["tid"].as_u64().unwrap_or_else(|| panic!("tid in {e}"));
            assert!(threads.contains_key(&tid), "thread {tid} has no name: {e}");
            assert!(ts + dur <= t.wall_us, "{e}");
            by_tid.entry(tid).or_default().push((ts, ts + dur));
        }
        for (tid, mut intervals) in by_tid {
            intervals.sort_by_key(|&(s, e)| (s, Reverse(e)));
            let mut open: Vec<u64> = Vec::new();
            for (s, e) in intervals {
                while open.last().is_some_and(|&end| end <= s) {
                    open.pop();
                }
                assert!(
                    open.last().is_none_or(|&end| e <= end),
                    "({s}, {e}) crosses an event on thread {} ({tid})",
                    threads[&tid]
                );
                open.push(e);
            }
        }

        let thread = |name: &str| -> u64 {
            *threads
                .iter()
                .find(|(_, n)| **n == name)
                .unwrap_or_else(|| panic!("thread {name} in {threads:?}"))
                .0
        };
        assert_eq!(thread("job"), 1);
        assert_eq!(
            [
                thread("map 0"),
                thread("map 1"),
                thread("sort 0"),
                thread("sort 1")
            ],
            [2, 3, 4, 5],
            "thread ids follow the job's shape"
        );
        let on = |tid: u64, name: &str| -> Vec<&Value> {
            complete
                .iter()
                .copied()
                .filter(|e| e["tid"] == tid && e["name"] == name)
                .collect()
        };
        assert_eq!(on(1, "sample").len(), 1);
        assert_eq!(on(1, "commit").len(), 1);
        let sort0 = on(4, "sort 0");
        assert_eq!(sort0.len(), 1);
        assert_eq!(sort0[0]["args"]["bytes_in"], 1000);
        let spills = on(4, "spill");
        assert_eq!(spills.len(), 2);
        assert_eq!(
            (spills[0]["ts"].as_u64(), spills[0]["dur"].as_u64()),
            (Some(30), Some(20))
        );
        assert_eq!(spills[0]["args"]["bytes"], 700);
        assert_eq!(spills[0]["args"]["records"], 7);
        assert_eq!(on(4, "merge")[0]["args"]["bytes"], 2000);
        // The span that crosses receive and sort+write has a thread of its own.
        assert!(on(5, "disk busy").is_empty());
        assert_eq!(on(thread("sort 1 (2)"), "disk busy").len(), 1);
        assert_eq!(
            on(thread("phase spill"), "spill")[0]["args"]["nested"],
            true
        );
    }
}
