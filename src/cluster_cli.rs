//! The cluster's commands: `coordinator`, `worker`, `cluster up|status|down`, `submit`,
//! `jobs`, `status`, `cancel`, `drain` (flags here, the work in the `cluster` crate).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cluster::api::{JobDetail, JobState, JobSummary, SubmitRequest};
use cluster::client::Client;
use serde::Deserialize;

use crate::ModeArg;

/// Where a command finds the coordinator and the secret.
#[derive(Args, Clone)]
pub struct Connect {
    /// The coordinator's address, HOST:PORT (default: $MILLRACE_COORDINATOR, else the local
    /// cluster's).
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// The cluster's secret (default: $MILLRACE_HOME/secret).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

impl Connect {
    fn client(&self) -> Result<Client> {
        Ok(Client::from_flags(
            self.coordinator.clone(),
            self.secret_file.clone(),
        )?)
    }
}

#[derive(Args)]
pub struct CoordinatorArgs {
    /// Address of the REST API and of workers' control connections.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// A TOML file with any of: bind, state, secret_file, data_roots, slot_timeout_s,
    /// heartbeat_timeout_s (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The job history, a SQLite file (default: $MILLRACE_HOME/millrace.db).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// The cluster's secret (default: $MILLRACE_HOME/secret).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// A folder jobs may read and write under (repeatable; default: the working folder).
    #[arg(long = "data-root", value_name = "DIR")]
    data_roots: Vec<PathBuf>,
    /// Seconds a job waits for a worker that could run it to register, then fails.
    #[arg(long, value_name = "SECONDS")]
    slot_timeout: Option<f64>,
    /// Seconds without a heartbeat after which a worker is lost.
    #[arg(long, value_name = "SECONDS")]
    heartbeat_timeout: Option<f64>,
    /// Write the bound address to FILE once listening.
    #[arg(long, value_name = "FILE", hide = true)]
    address_file: Option<PathBuf>,
    /// Log lines as text or JSON (on standard error).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordinatorFile {
    bind: Option<SocketAddr>,
    state: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    data_roots: Option<Vec<PathBuf>>,
    slot_timeout_s: Option<f64>,
    heartbeat_timeout_s: Option<f64>,
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    if !(0.05..=86_400.0).contains(&value) {
        bail!("{flag} must be 0.05 to 86400 seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn secret_or_default(file: Option<PathBuf>) -> Result<PathBuf> {
    Ok(match file {
        Some(file) => file,
        None => cluster::home::secret_file()?,
    })
}

pub fn coordinator(args: CoordinatorArgs) -> Result<ExitCode> {
    let file: CoordinatorFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{}: {}", path.display(), e.message().replace('\n', " "))
            })?
        }
        None => CoordinatorFile::default(),
    };
    let secret_file = secret_or_default(args.secret_file.or(file.secret_file))?;
    let state = match args.state.or(file.state) {
        Some(state) => state,
        None => cluster::home::dir()?.join("millrace.db"),
    };
    let mut data_roots = args.data_roots;
    if data_roots.is_empty() {
        data_roots = file.data_roots.unwrap_or_default();
    }
    if data_roots.is_empty() {
        data_roots.push(std::env::current_dir()?);
    }
    let config = cluster::coordinator::CoordinatorConfig {
        bind: (args.bind.or(file.bind)).unwrap_or_else(|| "127.0.0.1:7070".parse().unwrap()),
        state,
        secret: cluster::home::read_secret(&secret_file)?,
        secret_file: Some(secret_file),
        data_roots,
        slot_timeout: seconds(
            args.slot_timeout.or(file.slot_timeout_s).unwrap_or(60.0),
            "--slot-timeout",
        )?,
        heartbeat_timeout: seconds(
            (args.heartbeat_timeout.or(file.heartbeat_timeout_s)).unwrap_or(10.0),
            "--heartbeat-timeout",
        )?,
        address_file: args.address_file,
    };
    cluster::coordinator::run(config)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The coordinator's address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: String,
    /// Address of this worker's port (data connections, /healthz, /metrics, drain).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// The address others reach this worker at (default: the bound address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Its name in the coordinator's lists (default: worker-PID).
    #[arg(long)]
    name: Option<String>,
    /// Task slots: subtasks it runs at once (default: the number of cores).
    #[arg(long)]
    slots: Option<usize>,
    /// Memory it gives jobs (default: half the RAM).
    #[arg(long, value_parser = engine::memory::parse_size)]
    memory: Option<u64>,
    /// Folder for its attempts' files and spills (repeatable; default: a private folder in the
    /// temp folder, removed when the worker stops). Jobs may not read or write in it.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dirs: Vec<PathBuf>,
    /// The cluster's secret (default: $MILLRACE_HOME/secret).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", hide = true)]
    address_file: Option<PathBuf>,
    /// Log lines as text or JSON (on standard error).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub fn worker(args: WorkerArgs) -> Result<ExitCode> {
    let secret = cluster::home::read_secret(&secret_or_default(args.secret_file)?)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let memory = args
        .memory
        .unwrap_or_else(|| engine::memory::total_ram_bytes().map_or(1 << 30, |ram| ram / 2));
    let (data_dirs, own) = match args.data_dirs.is_empty() {
        false => (args.data_dirs, None),
        true => {
            let own = std::env::temp_dir().join(format!("millrace-worker-{}", std::process::id()));
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&own)
                .with_context(|| format!("{}: cannot create the worker's folder", own.display()))?;
            (vec![own.clone()], Some(own))
        }
    };
    let result = cluster::worker::run(cluster::worker::WorkerConfig {
        coordinator: args.coordinator,
        bind: args.bind,
        advertise: args.advertise,
        name: (args.name).unwrap_or_else(|| format!("worker-{}", std::process::id())),
        slots: args.slots.unwrap_or(cores),
        memory_bytes: memory,
        data_dirs,
        secret,
        address_file: args.address_file,
    });
    if let Some(own) = own {
        let _ = std::fs::remove_dir_all(own);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a coordinator and workers on this machine, in the background.
    Up {
        /// Worker processes.
        #[arg(long, default_value = "2")]
        workers: usize,
        /// Slots per worker (default: the number of cores).
        #[arg(long)]
        slots: Option<usize>,
        /// Memory per worker (default: half the RAM, shared by the workers).
        #[arg(long, value_parser = engine::memory::parse_size)]
        memory: Option<u64>,
        /// Seconds without a heartbeat after which the coordinator loses a worker.
        #[arg(long, value_name = "SECONDS", default_value = "10")]
        heartbeat_timeout: f64,
    },
    /// Show the local cluster's processes and the coordinator's view.
    Status,
    /// Stop every process `cluster up` started and remove their temp files.
    Down,
    /// Print the REST API's bearer token (for curl: `Authorization: Bearer TOKEN`).
    Token {
        /// The cluster's secret (default: $MILLRACE_HOME/secret).
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
}

pub fn cluster(args: ClusterArgs) -> Result<ExitCode> {
    match args.command {
        ClusterCommand::Up {
            workers,
            slots,
            memory,
            heartbeat_timeout,
        } => {
            let up = cluster::local::up(&cluster::local::UpConfig {
                workers,
                slots,
                memory_bytes: memory,
                heartbeat_timeout: seconds(heartbeat_timeout, "--heartbeat-timeout")?,
                timeout: Duration::from_secs(30),
            })?;
            let home = cluster::home::dir()?;
            outln!("coordinator http://{} (REST API)", up.coordinator)?;
            outln!(
                "{workers} workers; logs in {}; secret in {}",
                home.join("logs").display(),
                home.join("secret").display()
            )?;
            let roots: Vec<String> = up
                .data_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            outln!("data roots: {}", roots.join(", "))?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Status => {
            let Some(local) = cluster::local::LocalCluster::load()? else {
                bail!("no local cluster is up (`millrace cluster up` starts one)");
            };
            outln!(
                "coordinator http://{} (started {})",
                local.coordinator,
                local.started_at
            )?;
            for p in &local.processes {
                let state = if p.alive() { "running" } else { "stopped" };
                outln!(
                    "  {:<12} pid {:<8} {state:<8} log {}",
                    p.name,
                    p.pid,
                    p.log.display()
                )?;
            }
            let client = Client::from_flags(Some(local.coordinator.clone()), None)?;
            match client.cluster() {
                Ok(info) => {
                    for w in &info.workers {
                        outln!(
                            "  registered {:<16} {:<21} {}/{} slots free, {} MiB{}",
                            w.name,
                            w.address,
                            w.free_slots,
                            w.slots,
                            w.memory_bytes >> 20,
                            if w.draining { ", draining" } else { "" }
                        )?;
                    }
                    let jobs: Vec<String> =
                        info.jobs.iter().map(|(s, n)| format!("{n} {s}")).collect();
                    outln!("jobs: {}", jobs.join(", "))?;
                }
                Err(e) => outln!("  the coordinator does not answer: {e}")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Token { secret_file } => {
            let secret = cluster::home::read_secret(&secret_or_default(secret_file)?)?;
            outln!("{}", cluster::home::token(&secret))?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Down => {
            match cluster::local::down()? {
                Some(down) => outln!(
                    "stopped {} processes of the cluster at {}; temp files removed",
                    down.stopped,
                    down.coordinator
                )?,
                None => outln!("no local cluster is up")?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Args)]
pub struct SubmitArgs {
    /// The job spec (TOML, or JSON named *.json); relative paths in it are relative to the
    /// working folder.
    job: PathBuf,
    /// Wait for the job to end, showing its progress; exit 2 unless it finished.
    #[arg(long)]
    wait: bool,
    /// Execution style (overrides the spec's `mode`).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Subtasks per vertex (default: the slots of the worker it runs on).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Memory budget (default: the worker's memory for the slots it takes).
    #[arg(long)]
    memory: Option<String>,
    /// Replace the job's output if it exists.
    #[arg(long)]
    force: bool,
    /// Attempts of the job and of each subtask.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Print the job (and with --wait its final state) as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn submit(args: SubmitArgs) -> Result<ExitCode> {
    // Paths as written: relative ones are relative to the working folder (`cwd` below),
    // which the coordinator resolves them against.
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("{}: cannot read the job spec", args.job.display()))?;
    let json = args.job.extension().is_some_and(|e| e == "json");
    let origin = args.job.display().to_string();
    let mut spec = engine::batch::JobSpec::parse(&text, json, std::path::Path::new(""), &origin)?;
    if spec.name.is_none() {
        spec.name = args
            .job
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
    }
    // The coordinator checks every path against every other, but it does not know the spec
    // file: a sink that is the spec (a link, a hard link) is refused here, as `run` does.
    let cwd = std::env::current_dir()?;
    let spec_file = std::fs::metadata(&args.job)?;
    for sink in spec.steps.iter().filter_map(|s| s.sink.as_ref()) {
        let same = std::fs::metadata(cwd.join(sink.path()))
            .is_ok_and(|m| (m.dev(), m.ino()) == (spec_file.dev(), spec_file.ino()));
        if same {
            bail!(
                "sink {} is the job spec {}; write the output elsewhere",
                sink.path().display(),
                args.job.display()
            );
        }
    }
    let client = args.connect.client()?;
    let request = SubmitRequest {
        spec,
        cwd,
        mode: args.mode.map(Into::into),
        parallelism: args.parallelism,
        memory: args.memory,
        force: args.force,
        max_attempts: args.max_attempts,
    };
    let job = client.submit(&request)?;
    if !args.wait {
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&job)?)?;
        } else {
            outln!(
                "job {} ({}) submitted: {}",
                job.id,
                job.name,
                job.state.as_str()
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "job {} ({}) submitted to {}",
        job.id,
        job.name,
        client.address()
    );
    let detail = wait_for(&client, job.id)?;
    let summary = &detail.summary;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&detail)?)?;
    } else if summary.state == JobState::Finished {
        outln!("{}", finished_line(&detail))?;
    }
    if summary.state != JobState::Finished {
        bail!(
            "job {} {}: {}",
            summary.id,
            summary.state.as_str(),
            summary.reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls a job until it ends, printing each state change on standard error.
fn wait_for(client: &Client, id: u64) -> Result<JobDetail> {
    let mut seen = 0;
    let start = Instant::now();
    loop {
        let detail = client.job(id)?;
        for event in &detail.events[seen.min(detail.events.len())..] {
            eprintln!(
                "  {:>7.1} s  {:<9} {}",
                start.elapsed().as_secs_f64(),
                event.state.as_str(),
                event.message
            );
        }
        seen = detail.events.len();
        if detail.summary.state.is_final() {
            return Ok(detail);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finished_line(detail: &JobDetail) -> String {
    let s = &detail.summary;
    let report = detail.report.as_ref();
    let field = |k: &str| report.and_then(|r| r["summary"].get(k)).cloned();
    format!(
        "job {} ({}) finished on {} in {:.2} s: {} rows in, {} rows out to {}",
        s.id,
        s.name,
        s.worker.as_deref().unwrap_or("?"),
        s.duration_ms.unwrap_or(0) as f64 / 1e3,
        field("rows_in").unwrap_or_default(),
        field("rows_out").unwrap_or_default(),
        field("output")
            .and_then(|o| o.as_str().map(str::to_string))
            .unwrap_or_default(),
    )
}

#[derive(Args)]
pub struct JobsArgs {
    /// Page of the list (newest first).
    #[arg(long, default_value = "1")]
    page: u64,
    /// Jobs per page.
    #[arg(long, default_value = "50")]
    per_page: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn jobs(args: JobsArgs) -> Result<ExitCode> {
    let page = args.connect.client()?.jobs(args.page, args.per_page)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&page)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:>5}  {:<16} {:<9} {:<20} {:>9}  {:<14} reason",
        "id",
        "name",
        "state",
        "submitted (UTC)",
        "duration",
        "worker"
    )?;
    for job in &page.jobs {
        outln!("{}", job_line(job))?;
    }
    let shown = (page.page - 1) * page.per_page + page.jobs.len() as u64;
    if shown < page.total {
        outln!(
            "({} of {} jobs; --page {} for more)",
            shown,
            page.total,
            page.page + 1
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn job_line(job: &JobSummary) -> String {
    format!(
        "{:>5}  {:<16} {:<9} {:<20} {:>9}  {:<14} {}",
        job.id,
        job.name,
        job.state.as_str(),
        job.submitted_at
            .get(..19)
            .unwrap_or(&job.submitted_at)
            .replace('T', " "),
        job.duration_ms
            .map(|ms| format!("{:.2} s", ms as f64 / 1e3))
            .unwrap_or_default(),
        job.worker.as_deref().unwrap_or("-"),
        job.reason.as_deref().unwrap_or("")
    )
}

#[derive(Args)]
pub struct StatusArgs {
    /// The job's id.
    job: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let detail = args.connect.client()?.job(args.job)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&detail)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = &detail.summary;
    outln!("job {} ({}): {}", s.id, s.name, s.state.as_str())?;
    if let Some(reason) = &s.reason {
        outln!("  reason: {reason}")?;
    }
    outln!(
        "  submitted {}, attempts {}, worker {}",
        s.submitted_at,
        s.attempts,
        s.worker.as_deref().unwrap_or("-")
    )?;
    if let Some(ms) =
        (detail.report.as_ref()).and_then(|r| r["submit_to_first_subtask_ms"].as_f64())
    {
        outln!("  submission to first subtask running: {ms:.1} ms")?;
    }
    outln!("graph:")?;
    for line in detail.graph.lines() {
        outln!("  {line}")?;
    }
    if let Some(vertices) = detail
        .report
        .as_ref()
        .and_then(|r| r["vertices"].as_array())
    {
        outln!("vertices (over subtasks: sum / min / median / max):")?;
        for v in vertices {
            outln!(
                "  {} — {} subtasks, {} attempts",
                v["vertex"].as_str().unwrap_or("?"),
                v["subtasks"],
                v["attempts"]
            )?;
            for figure in [
                "records_in",
                "records_out",
                "bytes_in",
                "bytes_out",
                "duration_us",
            ] {
                let f = &v["figures"][figure];
                outln!(
                    "    {figure:<12} {} / {} / {} / {}",
                    f["sum"],
                    f["min"],
                    f["median"],
                    f["max"]
                )?;
            }
        }
    }
    outln!("events:")?;
    for e in &detail.events {
        outln!("  {}  {:<9} {}", e.at, e.state.as_str(), e.message)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct CancelArgs {
    /// The job's id.
    job: u64,
    #[command(flatten)]
    connect: Connect,
}

pub fn cancel(args: CancelArgs) -> Result<ExitCode> {
    let job = args.connect.client()?.cancel(args.job)?;
    outln!(
        "job {} ({}): {}",
        job.id,
        job.name,
        match job.state {
            JobState::Canceled => "canceled",
            _ => "cancel requested",
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DrainArgs {
    /// The worker's address (its --bind), HOST:PORT.
    worker: String,
    /// The cluster's secret (default: $MILLRACE_HOME/secret).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Seconds to wait for its running attempts to end.
    #[arg(long, default_value = "540")]
    timeout: f64,
}

pub fn drain(args: DrainArgs) -> Result<ExitCode> {
    let timeout = seconds(args.timeout, "--timeout")?;
    let secret = cluster::home::read_secret(&secret_or_default(args.secret_file)?)?;
    let client = Client::new(&args.worker, &secret);
    let deadline = Instant::now() + timeout;
    let mut status: cluster::worker::WorkerStatus = client.post::<(), _>("/v1/drain", None)?;
    while status.running > 0 {
        if Instant::now() > deadline {
            bail!(
                "worker {} still runs {} attempts after {timeout:?}",
                args.worker,
                status.running
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        status = client.get("/v1/status")?;
    }
    outln!("worker {} drained", args.worker)?;
    Ok(ExitCode::SUCCESS)
}
