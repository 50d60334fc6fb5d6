//! `/metrics` of the coordinator and the workers: OpenMetrics text (prometheus-client),
//! `millrace_*` names in base units, counters ending in `_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// A worker's metrics.
pub struct WorkerMetrics {
    registry: Registry,
    pub running: Gauge,
    pub attempts: Family<StateLabel, Counter>,
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
            prometheus_client::registry::Unit::Bytes,
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
        Self {
            registry,
            running,
            attempts,
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

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
