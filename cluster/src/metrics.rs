//! `/metrics` of the coordinator and the workers: OpenMetrics text (prometheus-client),
//! `millrace_*` names in base units, counters ending in `_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// The coordinator's metrics.
pub struct CoordinatorMetrics {
    registry: Registry,
    pub jobs: Family<StateLabel, Gauge>,
    pub jobs_submitted: Counter,
    pub workers: Gauge,
    pub slots: Family<StateLabel, Gauge>,
    pub worker_losses: Counter,
}

impl CoordinatorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("millrace");
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Jobs in the history, by state", jobs.clone());
        let jobs_submitted = Counter::default();
        registry.register(
            "jobs_submitted",
            "Jobs submitted since the coordinator started",
            jobs_submitted.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers_registered", "Workers registered", workers.clone());
        let slots = Family::<StateLabel, Gauge>::default();
        registry.register(
            "slots",
            "Task slots of registered workers, free or used",
            slots.clone(),
        );
        let worker_losses = Counter::default();
        registry.register(
            "worker_losses",
            "Workers lost (connection closed or heartbeats missed)",
            worker_losses.clone(),
        );
        Self {
            registry,
            jobs,
            jobs_submitted,
            workers,
            slots,
            worker_losses,
        }
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// A subtask of a vertex (the vertex named as in the job graph).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubtaskLabel {
    pub vertex: String,
    pub subtask: u64,
}

/// A worker's metrics. The per-subtask counters grow when an attempt ends, from its timeline
/// (subtasks of finished attempts; a running attempt's are not in them yet).
pub struct WorkerMetrics {
    registry: Registry,
    pub running: Gauge,
    pub attempts: Family<StateLabel, Counter>,
    busy: Family<SubtaskLabel, Counter<f64>>,
    backpressured: Family<SubtaskLabel, Counter<f64>>,
    records_in: Family<SubtaskLabel, Counter>,
    records_out: Family<SubtaskLabel, Counter>,
    bytes_in: Family<SubtaskLabel, Counter>,
    bytes_out: Family<SubtaskLabel, Counter>,
    spilled: Family<SubtaskLabel, Counter>,
}

impl WorkerMetrics {
    pub fn new(slots: usize, memory_bytes: u64) -> Self {
        let mut registry = Registry::with_prefix("millrace_worker");
        let slots_gauge: Gauge = Gauge::default();
        slots_gauge.set(slots as i64);
        registry.register(
            "slots",
            "Task slots this worker offers",
            slots_gauge.clone(),
        );
        let memory: Gauge = Gauge::default();
        memory.set(memory_bytes as i64);
        registry.register_with_unit(
            "memory",
            "Memory this worker offers to jobs",
            Unit::Bytes,
            memory.clone(),
        );
        let running = Gauge::default();
        registry.register("attempts_running", "Job attempts running", running.clone());
        let attempts = Family::<StateLabel, Counter>::default();
        registry.register(
            "attempts",
            "Job attempts ended, by outcome",
            attempts.clone(),
        );
        let seconds = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<SubtaskLabel, Counter<f64>>::default();
            registry.register_with_unit(name, help, Unit::Seconds, family.clone());
            family
        };
        let busy = seconds(
            &mut registry,
            "subtask_busy",
            "Time subtasks worked, not held back by credits",
        );
        let backpressured = seconds(
            &mut registry,
            "subtask_backpressured",
            "Time subtasks waited for credit from their consumers",
        );
        let count = |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let family = Family::<SubtaskLabel, Counter>::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
                None => registry.register(name, help, family.clone()),
            }
            family
        };
        let records_in = count(
            &mut registry,
            "subtask_records_in",
            "Records subtasks read",
            None,
        );
        let records_out = count(
            &mut registry,
            "subtask_records_out",
            "Records subtasks wrote",
            None,
        );
        let bytes_in = count(
            &mut registry,
            "subtask_in",
            "Bytes subtasks read",
            Some(Unit::Bytes),
        );
        let bytes_out = count(
            &mut registry,
            "subtask_out",
            "Bytes subtasks wrote",
            Some(Unit::Bytes),
        );
        let spilled = count(
            &mut registry,
            "subtask_spilled",
            "Bytes subtasks spilled",
            Some(Unit::Bytes),
        );
        Self {
            registry,
            running,
            attempts,
            busy,
            backpressured,
            records_in,
            records_out,
            bytes_in,
            bytes_out,
            spilled,
        }
    }

    /// Adds the subtasks of an ended attempt's timeline (`millrace run --timeline`).
    pub fn add_timeline(&self, timeline: &serde_json::Value) {
        let Some(subtasks) = timeline["subtasks"].as_array() else {
            return;
        };
        for s in subtasks {
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            let label = SubtaskLabel {
                vertex: s["vertex"].as_str().unwrap_or("?").to_string(),
                subtask: n("subtask"),
            };
            let running = n("end_us").saturating_sub(n("start_us"));
            let waited = n("backpressure_us").min(running);
            self.busy
                .get_or_create(&label)
                .inc_by((running - waited) as f64 / 1e6);
            self.backpressured
                .get_or_create(&label)
                .inc_by(waited as f64 / 1e6);
            self.records_in
                .get_or_create(&label)
                .inc_by(n("records_in"));
            self.records_out
                .get_or_create(&label)
                .inc_by(n("records_out"));
            self.bytes_in.get_or_create(&label).inc_by(n("bytes_in"));
            self.bytes_out.get_or_create(&label).inc_by(n("bytes_out"));
            self.spilled
                .get_or_create(&label)
                .inc_by(n("spill_written_bytes"));
        }
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format (0.0.4).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics` as the scraper asks: OpenMetrics when its `Accept` names it (Prometheus does),
/// else the Prometheus text format (curl, `promtool check metrics`), like Prometheus's own
/// client libraries.
pub fn negotiate(
    accept: Option<&str>,
    openmetrics: String,
) -> ([(&'static str, &'static str); 1], String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        return ([("content-type", OPENMETRICS)], openmetrics);
    }
    (
        [("content-type", PROMETHEUS_TEXT)],
        to_prometheus_text(&openmetrics),
    )
}

/// OpenMetrics text as the Prometheus text format: a counter family's HELP and TYPE name its
/// `_total` series, and the `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = (openmetrics.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_total_series_in_the_text_format() {
        let metrics = CoordinatorMetrics::new();
        metrics.jobs_submitted.inc();
        let open = metrics.encode();
        assert!(
            open.contains("# TYPE millrace_jobs_submitted counter"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        let text = to_prometheus_text(&open);
        assert!(
            text.contains("# HELP millrace_jobs_submitted_total "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE millrace_jobs_submitted_total counter"),
            "{text}"
        );
        assert!(text.contains("millrace_jobs_submitted_total 1"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let (headers, body) = negotiate(
            Some("application/openmetrics-text;version=1.0.0"),
            open.clone(),
        );
        assert_eq!((headers[0].1, body), (OPENMETRICS, open));
    }
}
