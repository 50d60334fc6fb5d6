//! `millrace worker` (the TaskManager role): registers its slots, memory and folders with the
//! coordinator, heartbeats, and runs the job attempts the coordinator places on it.
//!
//! An attempt runs as a child `millrace run` (the same binary, the same runtime a local run
//! uses) over the spec the coordinator checked and resolved, in a folder of its own under
//! the first `--data-dir` (also the attempt's spill folder), with the slots and memory it
//! was given; the child dies with the worker (parent-death signal) and cleans up on SIGTERM,
//! which is how an attempt is canceled. When the coordinator goes away the worker cancels
//! its attempts (the coordinator fails them when it comes back) and reconnects.
//!
//! Its one port (`--bind`) serves `GET /healthz`, `GET /metrics`, and with the bearer token
//! `POST /v1/drain` (take no more work) and `GET /v1/status`; cluster connections on it are
//! authenticated (the data exchange between workers will use them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State as Shared;
use axum::http::header;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use shuffle::net::auth::{self, Secret};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::control::{self, Outcome, RunAttempt, ToCoordinator, ToWorker};
use crate::metrics::{StateLabel, WorkerMetrics};
use crate::ClusterError;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's address (`host:port`).
    pub coordinator: String,
    pub bind: SocketAddr,
    /// The address others reach this worker at (default: the bound one).
    pub advertise: Option<String>,
    pub name: String,
    pub slots: usize,
    pub memory_bytes: u64,
    pub data_dirs: Vec<PathBuf>,
    pub secret: Secret,
    /// Where to write the bound address once listening (`cluster up`).
    pub address_file: Option<PathBuf>,
}

/// What the worker's HTTP side and its control session share.
struct Worker {
    token: Vec<u8>,
    metrics: WorkerMetrics,
    draining: watch::Sender<bool>,
    /// Running attempts: (job, attempt) → its child, once spawned.
    running: Mutex<BTreeMap<(u64, u32), Attempt>>,
    /// Attempt reports not yet sent: kept across a lost connection and sent after the next
    /// registration (the coordinator ignores those of attempts it gave up on).
    reports: Mutex<std::collections::VecDeque<ToCoordinator>>,
    report_ready: tokio::sync::Notify,
}

#[derive(Default)]
struct Attempt {
    /// The child as a pidfd: a signal never reaches another process that reused its pid.
    pidfd: Option<Arc<std::os::fd::OwnedFd>>,
    canceled: bool,
}

/// How long a canceled attempt's child has for its cleanup before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

impl Worker {
    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, u32), Attempt>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends SIGTERM to an attempt's child (its cleanup handler removes its temp files), and
    /// SIGKILL if it still runs after [`CANCEL_GRACE`].
    fn cancel(&self, key: (u64, u32)) {
        let mut running = self.running();
        let Some(attempt) = running.get_mut(&key) else {
            return;
        };
        attempt.canceled = true;
        if let Some(pidfd) = attempt.pidfd.clone() {
            let _ = rustix::process::pidfd_send_signal(&*pidfd, rustix::process::Signal::TERM);
            tokio::spawn(async move {
                tokio::time::sleep(CANCEL_GRACE).await;
                // After the child was reaped this fails harmlessly (ESRCH).
                let _ = rustix::process::pidfd_send_signal(&*pidfd, rustix::process::Signal::KILL);
            });
        }
    }

    /// Queues an attempt's report for the coordinator.
    fn report(&self, report: ToCoordinator) {
        (self.reports.lock().unwrap_or_else(|p| p.into_inner())).push_back(report);
        self.report_ready.notify_one();
    }

    fn cancel_all(&self) {
        let keys: Vec<_> = self.running().keys().copied().collect();
        for key in keys {
            self.cancel(key);
        }
    }
}

/// Runs a worker until SIGTERM or SIGINT (which cancel its running attempts).
pub fn run(config: WorkerConfig) -> Result<(), ClusterError> {
    if config.slots == 0 || config.slots > 1024 {
        return Err(ClusterError::Usage("--slots must be 1 to 1024".into()));
    }
    let data_dir = config
        .data_dirs
        .first()
        .cloned()
        .ok_or_else(|| ClusterError::Usage("a worker needs a --data-dir".into()))?;
    for dir in &config.data_dirs {
        if !dir.is_dir() {
            return Err(ClusterError::file(
                dir,
                "--data-dir must be an existing folder",
            ));
        }
    }
    let exe = std::env::current_exe()?;
    crate::listener::runtime("millrace-worker")?.block_on(async move {
        let listener = crate::listener::bind(config.bind).await?;
        let address = listener.local_addr()?;
        let worker = Arc::new(Worker {
            token: crate::home::token(&config.secret).into_bytes(),
            metrics: WorkerMetrics::new(config.slots, config.memory_bytes),
            draining: watch::channel(false).0,
            running: Mutex::new(BTreeMap::new()),
            reports: Mutex::new(std::collections::VecDeque::new()),
            report_ready: tokio::sync::Notify::new(),
        });
        let secret = config.secret.clone();
        crate::listener::serve(listener, router(worker.clone()), move |mut stream, peer| {
            let secret = secret.clone();
            tokio::spawn(async move {
                match auth::server(&mut stream, &secret, control::HANDSHAKE_TIMEOUT).await {
                    Ok(()) => info!(%peer, "a data connection (not used yet); closed"),
                    Err(e) => warn!(%peer, error = %e, "refused a cluster connection"),
                }
            });
        });
        if let Some(file) = &config.address_file {
            crate::local::write_atomically(file, format!("{address}\n").as_bytes())?;
        }
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| address.to_string());
        info!(%address, %advertise, slots = config.slots, "worker listening");
        let session = Session {
            worker: worker.clone(),
            config: config.clone(),
            advertise,
            data_dir,
            exe,
        };
        tokio::select! {
            () = session.forever() => {}
            () = crate::shutdown_signal() => info!("worker stopping"),
        }
        worker.cancel_all();
        // Give the children their cleanup (they exit within a second of SIGTERM).
        for _ in 0..100 {
            if worker.running().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
}

fn router(worker: Arc<Worker>) -> Router {
    let api = Router::new()
        .route("/v1/drain", post(drain))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(worker.token.clone()),
            crate::listener::require_token,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(
                |Shared(w): Shared<Arc<Worker>>, headers: axum::http::HeaderMap| async move {
                    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
                    crate::metrics::negotiate(accept, w.metrics.encode())
                },
            ),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .with_state(worker)
}

/// What `GET /v1/status` and `POST /v1/drain` answer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WorkerStatus {
    pub draining: bool,
    pub running: usize,
}

async fn drain(Shared(w): Shared<Arc<Worker>>) -> Json<WorkerStatus> {
    w.draining.send_replace(true);
    status(Shared(w)).await
}

async fn status(Shared(w): Shared<Arc<Worker>>) -> Json<WorkerStatus> {
    Json(WorkerStatus {
        draining: *w.draining.borrow(),
        running: w.running().len(),
    })
}

struct Session {
    worker: Arc<Worker>,
    config: WorkerConfig,
    advertise: String,
    data_dir: PathBuf,
    exe: PathBuf,
}

impl Session {
    /// Connects, serves the coordinator until the connection ends, cancels what ran, and
    /// connects again (1 s, growing to 5 s between tries).
    async fn forever(&self) {
        let mut pause = Duration::from_secs(1);
        loop {
            match self.once().await {
                Ok(()) => pause = Duration::from_secs(1),
                Err(e) => {
                    warn!(coordinator = %self.config.coordinator, error = %e, "no coordinator")
                }
            }
            self.worker.cancel_all();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn once(&self) -> Result<(), ClusterError> {
        let unreachable = |reason: String| ClusterError::Unreachable {
            address: self.config.coordinator.clone(),
            reason,
        };
        let mut stream = tokio::net::TcpStream::connect(&self.config.coordinator)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        stream.set_nodelay(true)?;
        auth::client(&mut stream, &self.config.secret, control::HANDSHAKE_TIMEOUT).await?;
        let (mut sink, mut messages) = control::split(stream, self.config.coordinator.clone());
        let register = ToCoordinator::Register {
            name: self.config.name.clone(),
            address: self.advertise.clone(),
            slots: self.config.slots,
            memory_bytes: self.config.memory_bytes,
            data_dirs: self.config.data_dirs.clone(),
            pid: std::process::id(),
        };
        control::send(&mut sink, &register).await?;
        let registered =
            tokio::time::timeout(control::HANDSHAKE_TIMEOUT, messages.recv::<ToWorker>()).await;
        let heartbeat = match registered.ok().flatten() {
            Some(Ok(ToWorker::Registered {
                worker,
                heartbeat_ms,
            })) => {
                info!(worker, coordinator = %self.config.coordinator, "registered");
                Duration::from_millis(heartbeat_ms.max(10))
            }
            Some(Err(e)) => return Err(unreachable(e.to_string())),
            _ => {
                return Err(unreachable(
                    "the coordinator did not accept the registration".into(),
                ))
            }
        };
        let mut beat = tokio::time::interval(heartbeat);
        let mut draining = self.worker.draining.subscribe();
        if *draining.borrow_and_update() {
            control::send(&mut sink, &ToCoordinator::Draining).await?;
        }
        // Before the coordinator's own timeout (four intervals) places these attempts again.
        let deadline = heartbeat * 2;
        loop {
            // Reports first (also those a lost connection left), each removed once sent.
            loop {
                let next = (self
                    .worker
                    .reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()))
                .pop_front();
                let Some(report) = next else { break };
                if let Err(e) = control::send(&mut sink, &report).await {
                    (self
                        .worker
                        .reports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()))
                    .push_front(report);
                    return Err(unreachable(e.to_string()));
                }
            }
            tokio::select! {
                message = tokio::time::timeout(deadline, messages.recv::<ToWorker>()) => match message {
                    Err(_) => return Err(unreachable(format!("no word from it for {deadline:?}"))),
                    Ok(None) => return Ok(()),
                    Ok(Some(Err(e))) => return Err(unreachable(e.to_string())),
                    Ok(Some(Ok(ToWorker::Run(run)))) => self.start(run),
                    Ok(Some(Ok(ToWorker::Cancel { job, attempt }))) => self.worker.cancel((job, attempt)),
                    Ok(Some(Ok(ToWorker::Registered { .. } | ToWorker::Ping))) => {}
                },
                _ = beat.tick() => control::send(&mut sink, &ToCoordinator::Heartbeat).await?,
                () = self.worker.report_ready.notified() => {}
                Ok(()) = draining.changed() => control::send(&mut sink, &ToCoordinator::Draining).await?,
            }
        }
    }

    fn start(&self, run: RunAttempt) {
        let key = (run.job, run.attempt);
        self.worker.running().insert(key, Attempt::default());
        self.worker.metrics.running.inc();
        let (worker, data_dir, exe) =
            (self.worker.clone(), self.data_dir.clone(), self.exe.clone());
        tokio::spawn(async move {
            info!(job = run.job, attempt = run.attempt, name = %run.name, "attempt starting");
            // Its own task: a panic in it is a failed attempt, still reported.
            let work = {
                let (run, worker) = (run.clone(), worker.clone());
                tokio::spawn(async move { run_attempt(&run, &worker, &data_dir, &exe).await })
            };
            let outcome = match work.await {
                Ok(outcome) => outcome,
                Err(e) => Err(format!("the attempt's task failed: {e}")),
            };
            let canceled = worker.running().remove(&key).is_some_and(|a| a.canceled);
            let outcome = match outcome {
                Err(_) | Ok(Outcome::Failed { .. }) if canceled => Outcome::Canceled,
                Err(reason) => Outcome::Failed { reason },
                Ok(outcome) => outcome,
            };
            let label = match &outcome {
                Outcome::Finished { .. } => "finished",
                Outcome::Failed { .. } => "failed",
                Outcome::Canceled => "canceled",
            };
            info!(
                job = run.job,
                attempt = run.attempt,
                outcome = label,
                "attempt ended"
            );
            worker.metrics.running.dec();
            (worker.metrics.attempts)
                .get_or_create(&StateLabel {
                    state: label.into(),
                })
                .inc();
            worker.report(ToCoordinator::Ended {
                job: run.job,
                attempt: run.attempt,
                outcome,
            });
        });
    }
}

/// Runs one attempt as a child `millrace run` in a folder of its own; removes the folder.
async fn run_attempt(
    run: &RunAttempt,
    worker: &Worker,
    data_dir: &Path,
    exe: &Path,
) -> Result<Outcome, String> {
    // A new private folder under a name nobody can guess.
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| e.to_string())?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let folder = data_dir.join(format!(
        "millrace-attempt-{}-{}-{suffix}",
        run.job, run.attempt
    ));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&folder)
        .map_err(|e| format!("{}: {e}", folder.display()))?;
    let result = run_child(run, worker, data_dir, exe, &folder).await;
    let _ = std::fs::remove_dir_all(&folder);
    result
}

async fn run_child(
    run: &RunAttempt,
    worker: &Worker,
    data_dir: &Path,
    exe: &Path,
    folder: &Path,
) -> Result<Outcome, String> {
    let mut parsed: engine::batch::JobSpec =
        serde_json::from_str(&run.spec).map_err(|e| format!("the job's spec: {e}"))?;
    crate::confine::unchanged(&mut parsed)?;
    let spec = folder.join("spec.json");
    let timeline = folder.join("timeline.json");
    std::fs::write(&spec, &run.spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("run")
        .arg(&spec)
        .arg("--json")
        .args(["--parallelism", &run.parallelism.to_string()])
        .args(["--memory", &run.memory_bytes.to_string()])
        .args(["--max-attempts", &run.max_attempts.to_string()])
        .arg("--spill-dir")
        .arg(data_dir)
        .arg("--timeline")
        .arg(&timeline)
        .env("MILLRACE_DIE_WITH_PARENT", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(mode) = &run.mode {
        command.args(["--mode", mode]);
    }
    if run.force {
        command.arg("--force");
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // Not reaped before `wait` below, so the pid is still this child's.
    let pidfd = (child.id())
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        .and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
    let canceled = match worker.running().get_mut(&(run.job, run.attempt)) {
        Some(attempt) => {
            attempt.pidfd = pidfd.map(Arc::new);
            attempt.canceled
        }
        None => false,
    };
    if canceled {
        worker.cancel((run.job, run.attempt));
    }
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (String::new(), String::new());
    let read_out = async {
        if let Some(s) = &mut stdout {
            let _ = s.read_to_string(&mut out).await;
        }
    };
    let read_err = async {
        if let Some(s) = &mut stderr {
            let _ = s.read_to_string(&mut err).await;
        }
    };
    let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
    let status = status.map_err(|e| e.to_string())?;
    for line in err.lines().map(str::trim).filter(|l| !l.is_empty()) {
        warn!(job = run.job, attempt = run.attempt, "{line}");
    }
    if !status.success() {
        let line = (err.lines().rev())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string());
        return Ok(Outcome::Failed {
            reason: line.unwrap_or_else(|| format!("millrace run ended with {status}")),
        });
    }
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    let timeline: serde_json::Value = std::fs::read(&timeline)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    // When the first subtask started, on the clock the coordinator's timestamps use.
    let first_start = (timeline["subtasks"].as_array())
        .and_then(|s| s.iter().filter_map(|s| s["start_us"].as_u64()).min());
    let first_subtask_unix_us = (timeline["started_at_unix_us"].as_u64())
        .zip(first_start)
        .map(|(t0, start)| t0.saturating_add(start));
    worker.metrics.add_timeline(&timeline);
    let report = serde_json::json!({
        "summary": summary,
        "vertices": crate::report::vertices(&timeline),
        "wall_us": timeline.get("wall_us"),
        "first_subtask_unix_us": first_subtask_unix_us,
    });
    Ok(Outcome::Finished {
        report: report.to_string(),
    })
}
