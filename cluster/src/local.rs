//! `millrace cluster up|status|down`: a coordinator and N workers as background processes of
//! this machine, on loopback. Their state is `$MILLRACE_HOME/cluster.json` (addresses, and
//! each process's pid with its start time, so `down` never signals a stranger that reused a
//! pid), their logs `$MILLRACE_HOME/logs/`, the job history `$MILLRACE_HOME/millrace.db`
//! (kept across clusters), and their temp files (address files, each worker's data folder)
//! one folder in the system temp folder, which `down` removes. `up` and `down` hold
//! `$MILLRACE_HOME/cluster.lock`, so two of them never interleave.
//!
//! Data roots: the folder `up` ran in and the system temp folder.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// What `cluster up` started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalCluster {
    /// The coordinator's REST address (`host:port`).
    pub coordinator: String,
    pub processes: Vec<Process>,
    /// Temp files of this cluster (removed by `down`).
    pub temp_dir: PathBuf,
    pub data_roots: Vec<PathBuf>,
    pub started_at: String,
}

/// A process `cluster up` started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat`), to tell it from a later
    /// process with the same pid.
    pub start_ticks: u64,
    pub log: PathBuf,
}

impl Process {
    /// Whether this very process still runs (not a zombie, not another one with its pid).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid).is_some_and(|t| t == self.start_ticks)
    }

    /// Signals its process group (it leads one; a worker's attempts are in it too).
    fn signal(&self, signal: rustix::process::Signal) {
        if let (true, Some(pid)) = (
            self.alive(),
            rustix::process::Pid::from_raw(self.pid as i32),
        ) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }
}

/// How `cluster up` starts a cluster.
#[derive(Clone, Debug)]
pub struct UpConfig {
    pub workers: usize,
    /// Slots per worker (default: the machine's cores).
    pub slots: Option<usize>,
    /// Memory per worker (default: half the RAM shared by the workers).
    pub memory_bytes: Option<u64>,
    /// The coordinator's `--heartbeat-timeout`.
    pub heartbeat_timeout: Duration,
    /// How long to wait for every worker to register.
    pub timeout: Duration,
}

fn state_file() -> Result<PathBuf, ClusterError> {
    Ok(crate::home::dir()?.join("cluster.json"))
}

/// `$MILLRACE_HOME/cluster.lock`, locked while the file is open.
fn lock_home() -> Result<std::fs::File, ClusterError> {
    let home = crate::home::dir()?;
    crate::home::ensure_dir(&home)?;
    let path = home.join("cluster.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ClusterError::file(&path, e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| ClusterError::file(&path, "another `millrace cluster up` or `down` is running"),
    )?;
    Ok(file)
}

impl LocalCluster {
    /// The local cluster's state, if one was started (its processes may have died since).
    pub fn load() -> Result<Option<Self>, ClusterError> {
        let path = state_file()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ClusterError::file(&path, format!("not a cluster state: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClusterError::file(&path, e)),
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after 10 s) and removes the temp files.
    fn stop(&self) -> Result<(), ClusterError> {
        // Workers first: they cancel their attempts, whose children clean up.
        for process in self.processes.iter().rev() {
            process.signal(rustix::process::Signal::TERM);
        }
        let wait = |seconds| {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while self.processes.iter().any(Process::alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait(10);
        for process in &self.processes {
            process.signal(rustix::process::Signal::KILL);
        }
        wait(5);
        if self.temp_dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.temp_dir);
        }
        Ok(())
    }
}

/// Starts a coordinator and `config.workers` workers and waits until every worker
/// registered; on any failure stops what it started.
pub fn up(config: &UpConfig) -> Result<LocalCluster, ClusterError> {
    if config.workers == 0 || config.workers > 64 {
        return Err(ClusterError::Usage("--workers must be 1 to 64".into()));
    }
    let _lock = lock_home()?;
    if let Some(existing) = LocalCluster::load()? {
        if existing.processes.iter().any(Process::alive) {
            return Err(ClusterError::Usage(format!(
                "a local cluster is already up (coordinator {}); `millrace cluster down` first",
                existing.coordinator
            )));
        }
        // What a crashed cluster left.
        existing.stop()?;
        let _ = std::fs::remove_file(state_file()?);
    }
    let home = crate::home::dir()?;
    let secret_file = home.join("secret");
    let secret = crate::home::read_or_create_secret(&secret_file)?;
    let logs = home.join("logs");
    crate::home::ensure_dir(&logs)?;
    let temp_dir = make_temp_dir()?;
    let cwd = std::env::current_dir()?;
    let data_roots = vec![cwd, std::env::temp_dir()];
    let exe = std::env::current_exe()?;
    let mut cluster = LocalCluster {
        coordinator: String::new(),
        processes: Vec::new(),
        temp_dir: temp_dir.clone(),
        data_roots: data_roots.clone(),
        started_at: engine::timeline::rfc3339_utc(engine::timeline::unix_micros(
            std::time::SystemTime::now(),
        )),
    };
    let result = (|| {
        let address_file = temp_dir.join("coordinator.addr");
        let mut command = Command::new(&exe);
        command
            .arg("coordinator")
            .args(["--bind", "127.0.0.1:0"])
            .arg("--state")
            .arg(home.join("millrace.db"))
            .arg("--secret-file")
            .arg(&secret_file)
            .arg("--address-file")
            .arg(&address_file)
            .arg("--heartbeat-timeout")
            .arg(config.heartbeat_timeout.as_secs_f64().to_string());
        for root in &data_roots {
            command.arg("--data-root").arg(root);
        }
        // The state is written after each start, so that `down` finds every process even
        // when this command is interrupted.
        let save = |cluster: &LocalCluster| {
            write_atomically(
                &state_file()?,
                &serde_json::to_vec_pretty(cluster).map_err(std::io::Error::other)?,
            )
        };
        let coordinator = spawn(command, "coordinator", &logs)?;
        cluster.processes.push(coordinator.clone());
        save(&cluster)?;
        cluster.coordinator = wait_for_address(&address_file, &coordinator)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let slots = config.slots.unwrap_or(cores);
        let memory = config.memory_bytes.unwrap_or_else(|| {
            let ram = engine::memory::total_ram_bytes().unwrap_or(4 << 30);
            (ram / 2 / config.workers as u64).max(64 << 20)
        });
        for i in 1..=config.workers {
            let name = format!("worker-{i}");
            let data_dir = temp_dir.join(&name);
            std::fs::create_dir(&data_dir).map_err(|e| ClusterError::file(&data_dir, e))?;
            let mut command = Command::new(&exe);
            command
                .arg("worker")
                .args(["--coordinator", &cluster.coordinator])
                .args(["--bind", "127.0.0.1:0"])
                .args(["--name", &name])
                .args(["--slots", &slots.to_string()])
                .args(["--memory", &memory.to_string()])
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--secret-file")
                .arg(&secret_file);
            cluster.processes.push(spawn(command, &name, &logs)?);
            save(&cluster)?;
        }
        let client = crate::client::Client::new(&cluster.coordinator, &secret);
        let deadline = Instant::now() + config.timeout;
        loop {
            let registered = client.cluster().map(|c| c.workers.len()).unwrap_or(0);
            if registered == config.workers {
                return Ok(());
            }
            if let Some(dead) = cluster.processes.iter().find(|p| !p.alive()) {
                return Err(died(dead));
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Usage(format!(
                    "{registered} of {} workers registered within {:?}; see {}",
                    config.workers,
                    config.timeout,
                    logs.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    match result {
        Ok(()) => Ok(cluster),
        Err(e) => {
            let _ = cluster.stop();
            let _ = std::fs::remove_file(state_file()?);
            Err(e)
        }
    }
}

/// What `cluster down` stopped.
pub struct Down {
    pub stopped: usize,
    pub coordinator: String,
}

/// Stops the local cluster's processes and removes their temp files and its state.
pub fn down() -> Result<Option<Down>, ClusterError> {
    let _lock = lock_home()?;
    let Some(cluster) = LocalCluster::load()? else {
        return Ok(None);
    };
    let stopped = cluster.processes.iter().filter(|p| p.alive()).count();
    cluster.stop()?;
    let path = state_file()?;
    std::fs::remove_file(&path).map_err(|e| ClusterError::file(&path, e))?;
    Ok(Some(Down {
        stopped,
        coordinator: cluster.coordinator,
    }))
}

fn make_temp_dir() -> Result<PathBuf, ClusterError> {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(|e| ClusterError::Usage(e.to_string()))?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("millrace-cluster-{suffix}"));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .map_err(|e| ClusterError::file(&dir, e))?;
    Ok(dir)
}

/// Starts a background process in its own process group (a Ctrl-C in the terminal does not
/// reach it), its output appended to `logs/NAME.log`.
fn spawn(mut command: Command, name: &str, logs: &Path) -> Result<Process, ClusterError> {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| ClusterError::file(&log, e))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .map_err(|e| ClusterError::Usage(format!("cannot start the {name}: {e}")))?;
    let pid = child.id();
    // The child is not waited for: it outlives this command.
    drop(child);
    Ok(Process {
        name: name.to_string(),
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
        log,
    })
}

fn died(process: &Process) -> ClusterError {
    let last = std::fs::read_to_string(&process.log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default();
    ClusterError::Usage(format!(
        "the {} exited at start: {last} (log: {})",
        process.name,
        process.log.display()
    ))
}

fn wait_for_address(file: &Path, process: &Process) -> Result<String, ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Some(address) = text.lines().next().filter(|a| !a.is_empty()) {
                return Ok(address.to_string());
            }
        }
        if !process.alive() {
            return Err(died(process));
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Usage(format!(
                "the {} did not start listening within 15 s (log: {})",
                process.name,
                process.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's start time in clock ticks since boot, `None` when it does not exist or is a
/// zombie.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    // starttime is field 22 of the whole line, 20 after the command.
    fields.get(19)?.parse().ok()
}

/// Writes `bytes` to `path` whole, replacing what was there (the engine's `PendingFile`:
/// a synced temp file in a job folder next to it, renamed over it).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    engine::output::PendingFile::with_bytes(path, "cluster state", true, bytes)?.publish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = std::process::id();
        let ticks = start_ticks(me).unwrap();
        let process = |start_ticks| Process {
            name: "me".into(),
            pid: me,
            start_ticks,
            log: PathBuf::new(),
        };
        assert!(process(ticks).alive());
        assert!(!process(ticks + 1).alive());
        assert!(start_ticks(u32::MAX).is_none());
    }
}
