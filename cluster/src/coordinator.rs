//! `millrace coordinator` (the JobManager role): takes jobs over the REST API, keeps their
//! history in SQLite ([`Store`]), and places each job attempt on a worker with enough free
//! slots; workers connect to the same port over the authenticated control protocol
//! ([`control`]).
//!
//! Placement: jobs wait in submission order, and any job that fits runs (a later, smaller job
//! may pass a larger one). A job without `parallelism` takes one whole idle worker and runs
//! with its slot count; with `parallelism` N it takes N slots of one worker. A job no
//! registered worker could ever hold waits for one to register, with the reason, up to
//! `slot_timeout`, then fails; a job that only waits for busy slots waits as long as it
//! takes. A worker whose connection ends or whose heartbeats stop is lost: its jobs run again
//! elsewhere while they have attempts left (`max_attempts`, counted per job), else fail
//! naming the worker; a report from an attempt the coordinator gave up on is ignored.
//!
//! This step runs a whole job attempt on one worker; subtasks of one job spread over several
//! workers (with the network exchange) are the next.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State as Shared};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::batch::BatchJobConfig;
use engine::paths::{self, OutputKind};
use serde::Deserialize;
use shuffle::net::auth::{self, Secret};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{
    ClusterInfo, ErrorBody, JobPage, JobState, JobSummary, SubmitRequest, WorkerInfo,
};
use crate::confine::DataRoots;
use crate::control::{self, Outcome, RunAttempt, ToCoordinator, ToWorker};
use crate::metrics::{CoordinatorMetrics, StateLabel};
use crate::store::{NewJob, Store};
use crate::ClusterError;

/// The largest request body (a job spec is a few KiB).
pub const MAX_BODY: usize = 1 << 20;

/// How a coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub bind: SocketAddr,
    /// The SQLite job history.
    pub state: PathBuf,
    pub secret: Secret,
    /// Where the secret came from (jobs may not read it).
    pub secret_file: Option<PathBuf>,
    pub data_roots: Vec<PathBuf>,
    /// How long a job waits for a worker that could hold it to register.
    pub slot_timeout: Duration,
    /// A worker silent this long is lost.
    pub heartbeat_timeout: Duration,
    /// Where to write the bound address once listening (`cluster up`).
    pub address_file: Option<PathBuf>,
}

/// Runs a coordinator until SIGTERM or SIGINT.
pub fn run(config: CoordinatorConfig) -> Result<(), ClusterError> {
    let roots = DataRoots::new(&config.data_roots).map_err(ClusterError::Usage)?;
    let (store, failed) = Store::open(&config.state)?;
    if failed > 0 {
        warn!(
            jobs = failed,
            "marked jobs a stopped coordinator left unfinished as failed"
        );
    }
    crate::listener::runtime("millrace-coordinator")?.block_on(async move {
        let listener = crate::listener::bind(config.bind).await?;
        let address = listener.local_addr()?;
        let coordinator = Arc::new(Coordinator {
            token: crate::home::token(&config.secret).into_bytes(),
            secret: config.secret.clone(),
            store,
            roots,
            own_files: ["", "-wal", "-shm", ".lock"]
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", config.state.display())))
                .chain(config.secret_file.clone())
                .collect(),
            metrics: CoordinatorMetrics::new(),
            state: Mutex::new(State::default()),
            slot_timeout: config.slot_timeout,
            heartbeat_timeout: config.heartbeat_timeout,
        });
        let cluster = coordinator.clone();
        crate::listener::serve(
            listener,
            router(coordinator.clone()),
            move |stream, peer| {
                tokio::spawn(cluster.clone().control(stream, peer));
            },
        );
        tokio::spawn(coordinator.clone().ticks());
        if let Some(file) = &config.address_file {
            crate::local::write_atomically(file, format!("{address}\n").as_bytes())?;
        }
        info!(%address, roots = ?coordinator.roots.paths(), "coordinator listening");
        println!("millrace coordinator listening on {address}");
        crate::shutdown_signal().await;
        info!("coordinator stopped");
        Ok(())
    })
}

struct Coordinator {
    store: Store,
    secret: Secret,
    token: Vec<u8>,
    roots: DataRoots,
    /// The job history's files and the secret (never a job's input or output).
    own_files: Vec<PathBuf>,
    metrics: CoordinatorMetrics,
    state: Mutex<State>,
    slot_timeout: Duration,
    heartbeat_timeout: Duration,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<u64, Worker>,
    next_worker: u64,
    queue: Vec<Queued>,
    running: BTreeMap<u64, Running>,
}

struct Worker {
    name: String,
    address: String,
    slots: usize,
    free: usize,
    memory_bytes: u64,
    data_dirs: Vec<PathBuf>,
    registered_at: String,
    last_heartbeat: Instant,
    send: mpsc::UnboundedSender<ToWorker>,
    jobs: BTreeSet<u64>,
    draining: bool,
}

/// What a job asks for, kept while it is queued or running.
#[derive(Clone)]
struct JobRequest {
    name: String,
    spec: String,
    mode: Option<String>,
    parallelism: Option<usize>,
    memory_bytes: Option<u64>,
    force: bool,
    max_attempts: u32,
}

struct Queued {
    job: u64,
    request: JobRequest,
    since: Instant,
    /// The reason last recorded for its wait.
    reason: Option<String>,
}

struct Running {
    worker: u64,
    attempt: u32,
    slots: usize,
    request: JobRequest,
    canceling: bool,
}

/// An error answer of the REST API.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn bad_request(reason: impl ToString) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, reason.to_string())
}

fn router(coordinator: Arc<Coordinator>) -> Router {
    let api = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/cluster", get(cluster))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(coordinator.token.clone()),
            crate::listener::require_token,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(coordinator)
}

async fn submit(Shared(c): Shared<Arc<Coordinator>>, body: Bytes) -> Result<Response, ApiError> {
    let request: SubmitRequest =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("bad job request: {e}")))?;
    // Planning reads the inputs (schemas); SQLite writes are synchronous.
    let summary = tokio::task::spawn_blocking(move || c.submit(request))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    page: Option<u64>,
    per_page: Option<u64>,
}

async fn list(
    Shared(c): Shared<Arc<Coordinator>>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    Ok(Json(c.store.page(
        query.page.unwrap_or(1),
        query.per_page.unwrap_or(50),
    )?))
}

fn job_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no job {id}")))
}

async fn show(
    Shared(c): Shared<Arc<Coordinator>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    match c.store.detail(id)? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}"))),
    }
}

async fn cancel(
    Shared(c): Shared<Arc<Coordinator>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<JobSummary>, ApiError> {
    let id = job_id(&id)?;
    c.cancel(id).map(Json)
}

async fn cluster(Shared(c): Shared<Arc<Coordinator>>) -> Result<Json<ClusterInfo>, ApiError> {
    let state = c.state.lock().unwrap_or_else(|p| p.into_inner());
    let workers = (state.workers.iter())
        .map(|(&id, w)| WorkerInfo {
            id,
            name: w.name.clone(),
            address: w.address.clone(),
            slots: w.slots,
            free_slots: w.free,
            memory_bytes: w.memory_bytes,
            data_dirs: w.data_dirs.clone(),
            registered_at: w.registered_at.clone(),
            last_heartbeat_ms: w.last_heartbeat.elapsed().as_millis() as u64,
            jobs: w.jobs.iter().copied().collect(),
            draining: w.draining,
        })
        .collect();
    drop(state);
    Ok(Json(ClusterInfo {
        workers,
        jobs: c.store.counts()?,
        data_roots: c.roots.paths().to_vec(),
    }))
}

async fn metrics(Shared(c): Shared<Arc<Coordinator>>, headers: axum::http::HeaderMap) -> Response {
    if let Ok(counts) = c.store.counts() {
        for (state, n) in counts {
            let label = StateLabel { state };
            c.metrics.jobs.get_or_create(&label).set(n as i64);
        }
    }
    {
        let state = c.state.lock().unwrap_or_else(|p| p.into_inner());
        c.metrics.workers.set(state.workers.len() as i64);
        let free: usize = state.workers.values().map(|w| w.free).sum();
        let total: usize = state.workers.values().map(|w| w.slots).sum();
        let slots = |s: &str| StateLabel { state: s.into() };
        c.metrics
            .slots
            .get_or_create(&slots("free"))
            .set(free as i64);
        c.metrics
            .slots
            .get_or_create(&slots("used"))
            .set((total - free) as i64);
    }
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    crate::metrics::negotiate(accept, c.metrics.encode()).into_response()
}

impl Coordinator {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks, plans and records a submitted job, then queues it.
    fn submit(&self, request: SubmitRequest) -> Result<JobSummary, ApiError> {
        let SubmitRequest {
            mut spec,
            cwd,
            mode,
            parallelism,
            memory,
            force,
            max_attempts,
        } = request;
        // The coordinator's files and the workers' data folders are the cluster's own.
        let mut own: Vec<PathBuf> = self
            .state()
            .workers
            .values()
            .flat_map(|w| w.data_dirs.clone())
            .collect();
        own.extend(self.own_files.iter().cloned());
        let own: Vec<PathBuf> = own
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        self.roots
            .confine(&mut spec, &cwd, &own)
            .map_err(bad_request)?;
        let memory_bytes = (memory.as_deref())
            .map(engine::memory::parse_size)
            .transpose()
            .map_err(|e| bad_request(format!("memory: {e}")))?;
        if parallelism == Some(0) || parallelism.is_some_and(|p| p > 1024) {
            return Err(bad_request("parallelism must be 1 to 1024"));
        }
        let max_attempts = max_attempts.unwrap_or(2);
        if !(1..=100).contains(&max_attempts) {
            return Err(bad_request("max_attempts must be 1 to 100"));
        }
        let largest = self.state().workers.values().map(|w| w.slots).max();
        let config = BatchJobConfig {
            mode,
            memory_bytes,
            parallelism: parallelism.or(largest),
            force,
            max_attempts,
            ..Default::default()
        };
        let (plan, planned_parallelism) =
            engine::batch::plan_spec(&spec, &config).map_err(bad_request)?;
        // The same path checks `millrace run` makes, now: an existing output without
        // `force`, an output that is an input.
        let reads: Vec<paths::Read> = (plan.sources().iter())
            .map(|s| paths::Read::new("input", s))
            .collect();
        let kind = match plan.sink.one_file() {
            true => OutputKind::File,
            false => OutputKind::Folder,
        };
        let writes = [paths::Write::new("sink", plan.sink.path(), kind)];
        paths::check(&reads, &writes, force).map_err(bad_request)?;
        let graph = engine::batch::explain(&plan, planned_parallelism);
        let name = spec.name.clone().unwrap_or_else(|| "job".into());
        let spec_json = serde_json::to_value(&spec).map_err(bad_request)?;
        let options = serde_json::json!({
            "cwd": cwd, "mode": mode.map(|m| m.as_str()), "parallelism": parallelism,
            "memory_bytes": memory_bytes, "force": force, "max_attempts": max_attempts,
        });
        let id = self.store.insert(&NewJob {
            name: name.clone(),
            spec: spec_json.clone(),
            graph,
            options,
        })?;
        self.metrics.jobs_submitted.inc();
        info!(job = id, name = %name, "job submitted");
        self.state().queue.push(Queued {
            job: id,
            request: JobRequest {
                name,
                spec: spec_json.to_string(),
                mode: mode.map(|m| m.as_str().to_string()),
                parallelism,
                memory_bytes,
                force,
                max_attempts,
            },
            since: Instant::now(),
            reason: None,
        });
        self.schedule();
        self.store
            .summary(id)?
            .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "job vanished".into()))
    }

    /// Places every queued job that fits on a worker now.
    fn schedule(&self) {
        let mut state = self.state();
        let mut i = 0;
        while i < state.queue.len() {
            let need = state.queue[i].request.parallelism;
            let pick = (state.workers.iter())
                .filter(|(_, w)| !w.draining)
                .filter(|(_, w)| match need {
                    Some(n) => w.free >= n,
                    None => w.free == w.slots,
                })
                .max_by_key(|(_, w)| w.free)
                .map(|(&id, _)| id);
            let Some(worker) = pick else {
                i += 1;
                continue;
            };
            let queued = state.queue.remove(i);
            if !self.start(&mut state, worker, queued) {
                break;
            }
        }
    }

    /// Starts an attempt of `queued` on `worker`.
    /// Starts an attempt of `queued` on `worker`; false (and the job first in the queue again)
    /// when it could not be recorded.
    fn start(&self, state: &mut State, worker_id: u64, queued: Queued) -> bool {
        let State {
            workers,
            running,
            queue,
            ..
        } = state;
        let Some(worker) = workers.get_mut(&worker_id) else {
            queue.insert(0, queued);
            return false;
        };
        let slots = queued.request.parallelism.unwrap_or(worker.slots);
        let attempt = match self.store.start(queued.job, &worker.name) {
            Ok(attempt) => attempt,
            Err(e) => {
                // Not placed: it stays first in the queue for the next round.
                warn!(job = queued.job, error = %e, "cannot record the job's start");
                queue.insert(0, queued);
                return false;
            }
        };
        worker.free -= slots;
        worker.jobs.insert(queued.job);
        let share = worker.memory_bytes / worker.slots.max(1) as u64 * slots as u64;
        let request = queued.request;
        let run = RunAttempt {
            job: queued.job,
            attempt,
            name: request.name.clone(),
            spec: request.spec.clone(),
            mode: request.mode.clone(),
            parallelism: slots,
            memory_bytes: request.memory_bytes.unwrap_or(share),
            // A retry follows a lost worker, whose attempt may still have published the output
            // (a worker cut off, or stopped, cannot be stopped from here): the retry replaces
            // it. Without `force` the output did not exist when the job was submitted.
            force: request.force || attempt > 1,
            max_attempts: request.max_attempts,
        };
        info!(job = queued.job, attempt, worker = %worker.name, slots, "job attempt placed");
        // A worker gone meanwhile is lost by its connection's task, which requeues this.
        let _ = worker.send.send(ToWorker::Run(run));
        running.insert(
            queued.job,
            Running {
                worker: worker_id,
                attempt,
                slots,
                request,
                canceling: false,
            },
        );
        true
    }

    fn cancel(&self, id: u64) -> Result<JobSummary, ApiError> {
        let mut state = self.state();
        if let Some(i) = state.queue.iter().position(|q| q.job == id) {
            state.queue.remove(i);
            drop(state);
            (self.store).finish(id, JobState::Canceled, "canceled before it started", None)?;
        } else if let Some(running) = state.running.get_mut(&id) {
            running.canceling = true;
            let (worker, attempt) = (running.worker, running.attempt);
            if let Some(w) = state.workers.get(&worker) {
                let _ = w.send.send(ToWorker::Cancel { job: id, attempt });
            }
            drop(state);
            self.store.note(id, JobState::Running, "cancel requested")?;
        } else {
            drop(state);
            let summary = (self.store.summary(id)?)
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id}")))?;
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("job {id} already ended: {}", summary.state.as_str()),
            ));
        }
        (self.store.summary(id)?)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id}")))
    }

    /// A worker's control connection: handshake, registration, then its messages until it
    /// ends; the worker is lost when it does.
    async fn control(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = auth::server(&mut stream, &self.secret, control::HANDSHAKE_TIMEOUT).await {
            warn!(%peer, error = %e, "refused a cluster connection");
            return;
        }
        let (mut sink, mut messages) = control::split(stream, peer.to_string());
        let first = tokio::time::timeout(control::HANDSHAKE_TIMEOUT, messages.recv()).await;
        let Ok(Some(Ok(ToCoordinator::Register {
            name,
            address,
            slots,
            memory_bytes,
            data_dirs,
            pid,
        }))) = first
        else {
            warn!(%peer, "a cluster connection that did not register as a worker; closed");
            return;
        };
        if !(1..=1024).contains(&slots) || data_dirs.len() > 64 {
            warn!(%peer, slots, "a worker registered with out-of-range slots or folders; closed");
            return;
        }
        let (send, mut outbox) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.state();
            state.next_worker += 1;
            let id = state.next_worker;
            let name = format!("{name}#{id}");
            info!(worker = %name, %address, slots, memory_bytes, pid, "worker registered");
            state.workers.insert(
                id,
                Worker {
                    name,
                    address,
                    slots,
                    free: slots,
                    memory_bytes,
                    data_dirs,
                    registered_at: engine::timeline::rfc3339_utc(engine::timeline::unix_micros(
                        std::time::SystemTime::now(),
                    )),
                    last_heartbeat: Instant::now(),
                    send: send.clone(),
                    jobs: BTreeSet::new(),
                    draining: false,
                },
            );
            id
        };
        // Workers give up on a silent coordinator after two intervals, half the coordinator's
        // timeout: a cut-off worker cancels its attempts before they are placed again.
        let heartbeat_ms = (self.heartbeat_timeout.as_millis() as u64 / 4).max(50);
        let _ = send.send(ToWorker::Registered {
            worker: id,
            heartbeat_ms,
        });
        drop(send);
        // The writer ends when the worker is dropped from the state (its sender with it).
        let writer = async move {
            let mut ping = tokio::time::interval(Duration::from_millis(heartbeat_ms));
            loop {
                let message = tokio::select! {
                    message = outbox.recv() => match message {
                        Some(message) => message,
                        None => break,
                    },
                    _ = ping.tick() => ToWorker::Ping,
                };
                if control::send(&mut sink, &message).await.is_err() {
                    break;
                }
            }
        };
        self.schedule();
        let reader = async {
            loop {
                match messages.recv::<ToCoordinator>().await {
                    None => break "its connection closed".to_string(),
                    Some(Err(e)) => break format!("its connection failed: {e}"),
                    Some(Ok(message)) => self.on_message(id, message),
                }
            }
        };
        let why = tokio::select! {
            why = reader => why,
            () = writer => "it was dropped".to_string(),
        };
        self.lose_worker(id, &why);
    }

    fn on_message(&self, worker: u64, message: ToCoordinator) {
        match message {
            ToCoordinator::Heartbeat => {
                if let Some(w) = self.state().workers.get_mut(&worker) {
                    w.last_heartbeat = Instant::now();
                }
            }
            ToCoordinator::Draining => {
                if let Some(w) = self.state().workers.get_mut(&worker) {
                    info!(worker = %w.name, "worker draining");
                    w.draining = true;
                }
            }
            ToCoordinator::Register { .. } => warn!(worker, "a worker registered twice; ignored"),
            ToCoordinator::Ended {
                job,
                attempt,
                outcome,
            } => self.ended(worker, job, attempt, outcome),
        }
    }

    /// An attempt ended; a report of an attempt that is not the job's current one is
    /// ignored (fenced off by its attempt number).
    fn ended(&self, worker: u64, job: u64, attempt: u32, outcome: Outcome) {
        let mut state = self.state();
        let current =
            (state.running.get(&job)).is_some_and(|r| r.worker == worker && r.attempt == attempt);
        if !current {
            warn!(
                job,
                attempt, worker, "a report from a stale attempt; ignored"
            );
            return;
        }
        let running = state.running.remove(&job).expect("checked above");
        if let Some(w) = state.workers.get_mut(&worker) {
            w.free += running.slots;
            w.jobs.remove(&job);
        }
        drop(state);
        let recorded = match outcome {
            Outcome::Finished { report } => {
                let mut report: serde_json::Value =
                    serde_json::from_str(&report).unwrap_or(serde_json::Value::Null);
                // Submission to the first subtask running (one clock: one machine, or NTP).
                let first = report["first_subtask_unix_us"].as_u64();
                if let (Some(first), Ok(Some(submitted))) = (first, self.store.submitted_us(job)) {
                    report["submit_to_first_subtask_ms"] =
                        serde_json::json!(first.saturating_sub(submitted) as f64 / 1e3);
                }
                info!(job, attempt, "job finished");
                (self.store).finish(job, JobState::Finished, "finished", Some(&report))
            }
            Outcome::Failed { reason } => {
                info!(job, attempt, %reason, "job failed");
                self.store.finish(job, JobState::Failed, &reason, None)
            }
            Outcome::Canceled => (self.store).finish(job, JobState::Canceled, "canceled", None),
        };
        if let Err(e) = recorded {
            warn!(job, error = %e, "cannot record the job's end");
        }
        self.schedule();
    }

    /// Drops a worker; its jobs run again elsewhere while they have attempts left.
    fn lose_worker(&self, id: u64, why: &str) {
        let mut state = self.state();
        let Some(worker) = state.workers.remove(&id) else {
            return;
        };
        self.metrics.worker_losses.inc();
        warn!(worker = %worker.name, reason = why, "worker lost");
        for job in worker.jobs {
            let Some(running) = state.running.remove(&job) else {
                continue;
            };
            let lost = format!("worker {} lost ({why})", worker.name);
            let result = if running.canceling {
                (self.store).finish(job, JobState::Canceled, &format!("canceled; {lost}"), None)
            } else if running.attempt < running.request.max_attempts {
                let reason = format!(
                    "{lost} during attempt {} of {}; queued again",
                    running.attempt, running.request.max_attempts
                );
                state.queue.insert(
                    0,
                    Queued {
                        job,
                        request: running.request,
                        since: Instant::now(),
                        reason: Some(reason.clone()),
                    },
                );
                self.store.requeue(job, &reason)
            } else {
                let reason = format!(
                    "{lost} during attempt {} of {}",
                    running.attempt, running.request.max_attempts
                );
                self.store.finish(job, JobState::Failed, &reason, None)
            };
            if let Err(e) = result {
                warn!(job, error = %e, "cannot record the lost attempt");
            }
        }
        drop(state);
        self.schedule();
    }

    /// Every 200 ms: drops silent workers, says why queued jobs wait and fails those no
    /// worker could hold within the slot timeout.
    async fn ticks(self: Arc<Self>) {
        let period = Duration::from_millis(200);
        let mut tick = tokio::time::interval(period);
        let mut last = Instant::now();
        loop {
            tick.tick().await;
            // A late tick means this process stalled (a slow disk under SQLite, no CPU): the
            // workers' heartbeats may be waiting to be read; judge them next time.
            let late = last.elapsed() > 5 * period;
            last = Instant::now();
            if late {
                continue;
            }
            let silent: Vec<u64> = (self.state().workers.iter())
                .filter(|(_, w)| w.last_heartbeat.elapsed() > self.heartbeat_timeout)
                .map(|(&id, _)| id)
                .collect();
            for id in silent {
                let why = format!("no heartbeat for {:?}", self.heartbeat_timeout);
                self.lose_worker(id, &why);
            }
            self.explain_waits();
        }
    }

    fn explain_waits(&self) {
        let mut state = self.state();
        let largest = (state.workers.values())
            .filter(|w| !w.draining)
            .map(|w| w.slots)
            .max();
        let count = state.workers.len();
        let mut expired = Vec::new();
        let mut notes = Vec::new();
        for queued in &mut state.queue {
            let need = queued.request.parallelism;
            let fits_some = match (need, largest) {
                (_, None) => false,
                (Some(n), Some(l)) => n <= l,
                (None, Some(_)) => true,
            };
            let reason = if fits_some {
                match need {
                    Some(n) => format!("waiting for {n} free slots on one worker (all busy)"),
                    None => "waiting for an idle worker (all busy)".to_string(),
                }
            } else {
                let want = need.map_or("any".to_string(), |n| format!("{n} slots"));
                let have = match largest {
                    None => format!("{count} workers registered"),
                    Some(l) => format!("the largest of {count} workers has {l} slots"),
                };
                if queued.since.elapsed() > self.slot_timeout {
                    expired.push((
                        queued.job,
                        format!(
                            "no worker that could run it ({want}) registered within {:?}; {have}",
                            self.slot_timeout
                        ),
                    ));
                    continue;
                }
                format!("waiting for a worker with {want} to register ({have})")
            };
            if queued.reason.as_ref() != Some(&reason) {
                queued.reason = Some(reason.clone());
                notes.push((queued.job, reason));
            }
        }
        state
            .queue
            .retain(|q| !expired.iter().any(|(job, _)| *job == q.job));
        drop(state);
        for (job, reason) in notes {
            let _ = self.store.note(job, JobState::Queued, &reason);
        }
        for (job, reason) in expired {
            warn!(job, %reason, "job failed before it started");
            let _ = self.store.finish(job, JobState::Failed, &reason, None);
        }
    }
}
