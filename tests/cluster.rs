//! A local cluster of real processes on loopback (`millrace cluster up`): jobs submitted over
//! the REST API, their results against the single-process run, the history across a
//! coordinator crash, a worker killed mid-job, strangers and bad requests refused, and
//! `cluster down` leaving nothing behind.

mod util;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Fixture, Run};

/// A fixture with its own `$MILLRACE_HOME`; the cluster is stopped when it is dropped.
struct Cluster {
    f: Fixture,
    home: PathBuf,
}

impl Cluster {
    fn up(args: &[&str]) -> Self {
        let f = Fixture::new();
        let home = f.path("home");
        let cluster = Self { f, home };
        let mut up = vec!["cluster", "up"];
        up.extend_from_slice(args);
        let run = cluster.run(&up);
        assert_eq!(run.code, Some(0), "{run}");
        assert!(
            run.stdout.contains("coordinator http://127.0.0.1:"),
            "{run}"
        );
        cluster
    }

    fn command(&self, args: &[&str]) -> (Command, Vec<String>) {
        let (mut cmd, shown) = self.f.command(args);
        cmd.env("MILLRACE_HOME", &self.home)
            .env_remove("MILLRACE_COORDINATOR");
        (cmd, shown)
    }

    fn run(&self, args: &[&str]) -> Run {
        let (cmd, shown) = self.command(args);
        util::run_with_timeout(cmd, shown, Duration::from_secs(180))
    }

    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, Some(0), "expected success:\n{run}");
        run
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.home.join("cluster.json")).unwrap()).unwrap()
    }

    fn address(&self) -> String {
        self.state()["coordinator"].as_str().unwrap().to_string()
    }

    fn pid_of(&self, name: &str) -> u32 {
        let state = self.state();
        let process = state["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no process {name}"))
            .clone();
        process["pid"].as_u64().unwrap() as u32
    }

    fn pids(&self) -> Vec<u32> {
        (self.state()["processes"].as_array().unwrap().iter())
            .map(|p| p["pid"].as_u64().unwrap() as u32)
            .collect()
    }

    fn job(&self, id: u64) -> Value {
        self.ok(&["status", &id.to_string(), "--json"]).json()
    }

    /// Polls job `id` until `done` says so (at most 2 minutes).
    fn until(&self, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id);
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "job {id} never {what}: {job:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The REST API's bearer token (derived from the secret).
    /// Waits until job `id` runs; the name and pid of the worker it runs on.
    fn running_on(&self, id: u64) -> (String, u32) {
        let running = self.until(id, "ran", |j| j["state"] == "running");
        let placed = running["worker"].as_str().unwrap();
        let name = placed.split('#').next().unwrap().to_string();
        let pid = self.pid_of(&name);
        (name, pid)
    }

    fn secret(&self) -> String {
        cluster::home::token(&cluster::home::read_secret(&self.home.join("secret")).unwrap())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.home.join("cluster.json").exists() {
            let _ = self.run(&["cluster", "down"]);
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// One raw HTTP/1.1 exchange: the status code and body of the answer.
fn http(address: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may answer (and close) before the whole request is written.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn post_json(address: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http(address, request.as_bytes())
}

/// `millrace gen` then its checksum.
fn gen(c: &Cluster, records: &str, path: &str) -> String {
    let (_, checksum) = c.f.gen(&[], records, path);
    checksum
}

fn validate_checksum(c: &Cluster, path: &str) -> String {
    let run = c.ok(&["validate", "--json", path]);
    let doc = run.json();
    assert_eq!(doc["ordered"], true, "{run}");
    doc["checksum"].as_str().unwrap().to_string()
}

fn copy_examples(f: &Fixture) -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::create_dir_all(f.path("data")).unwrap();
    for entry in std::fs::read_dir(examples.join("data")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, f.path("data").join(path.file_name().unwrap())).unwrap();
    }
    examples
}

#[test]
fn a_local_cluster_runs_terasort_in_every_style_and_the_examples_as_one_process_does() {
    let c = Cluster::up(&["--workers", "3", "--slots", "2"]);
    let examples = copy_examples(&c.f);
    // TeraSort, 1 GB, in every style: sorted and the same checksum as the input.
    let checksum = gen(&c, "10M", "data/in.dat");
    for mode in ["pipelined", "staged", "mapreduce"] {
        let run = c.ok(&[
            "submit",
            examples.join("terasort.toml").to_str().unwrap(),
            "--wait",
            "--force",
            "--mode",
            mode,
        ]);
        assert!(run.stdout.contains("10000000 rows out"), "{run}");
        assert_eq!(validate_checksum(&c, "data/sorted.dat"), checksum, "{mode}");
    }
    // Every example job: the rows `millrace run` writes in one process.
    for spec in ["wordcount", "groupby", "join", "join_parquet", "topwords"] {
        let path = c.f.path(&format!("{spec}.toml"));
        std::fs::copy(examples.join(format!("{spec}.toml")), &path).unwrap();
        let out = format!("{spec}.out");
        c.ok(&["run", path.to_str().unwrap()]);
        let local = util::normalized_rows(&c.f.path(&out), false);
        assert!(!local.is_empty(), "{spec}");
        let run = c.ok(&["submit", path.to_str().unwrap(), "--wait", "--force"]);
        assert!(run.stdout.contains("finished on worker-"), "{run}");
        assert_eq!(
            util::normalized_rows(&c.f.path(&out), false),
            local,
            "{spec}"
        );
    }
    // The history and one job in full.
    let jobs = c.ok(&["jobs", "--json"]).json();
    assert_eq!(jobs["total"], 8);
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["state"] == "finished"));
    let first = c.job(1);
    assert!(
        first["graph"]
            .as_str()
            .unwrap()
            .contains("runs as TeraSort"),
        "{first:#}"
    );
    let vertices = first["report"]["vertices"].as_array().unwrap();
    let records: u64 = vertices
        .iter()
        .filter(|v| v["vertex"] == "map")
        .map(|v| v["figures"]["records_in"]["sum"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 10_000_000, "{first:#}");
    let text = c.ok(&["jobs"]).stdout;
    assert!(
        text.contains("terasort") && text.contains("wordcount"),
        "{text}"
    );
    let status = c.ok(&["cluster", "status"]).stdout;
    assert_eq!(status.matches("registered worker-").count(), 3, "{status}");
    // Metrics of the coordinator and a worker: OpenMetrics for Prometheus, the text format
    // otherwise, and promtool's verdict on them when it is installed.
    let get = |address: &str, path: &str, headers: &str| {
        http(
            address,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let (code, metrics) = get(&c.address(), "/metrics", "");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("millrace_jobs{state=\"finished\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("millrace_workers_registered 3"),
        "{metrics}"
    );
    let (_, open) = get(
        &c.address(),
        "/metrics",
        "Accept: application/openmetrics-text\r\n",
    );
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    let token = format!("Authorization: Bearer {}\r\n", c.secret());
    let (_, info) = get(&c.address(), "/v1/cluster", &token);
    let info: Value = serde_json::from_str(&info).unwrap();
    let mut texts = vec![metrics];
    for worker in info["workers"].as_array().unwrap() {
        let (code, text) = get(worker["address"].as_str().unwrap(), "/metrics", "");
        assert_eq!(code, 200);
        assert!(text.contains("millrace_worker_slots 2"), "{text}");
        texts.push(text);
    }
    // The workers' per-subtask counters add up to every job's records: the map subtasks of
    // the three sorts read 3 × 10M records.
    let map_records: u64 = (texts.iter())
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with("millrace_worker_subtask_records_in_total{vertex=\"map\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(map_records, 30_000_000, "{texts:#?}");
    for text in &texts {
        match Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(mut promtool) => {
                promtool
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                let out = promtool.wait_with_output().unwrap();
                let said = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "promtool: {said}\n{text}");
            }
            Err(_) => util::skip("cluster: promtool not installed (apt-get install prometheus)"),
        }
    }
    // Down: no process and no temp file left.
    let pids = c.pids();
    let down = c.ok(&["cluster", "down"]);
    assert!(down.stdout.contains("stopped 4 processes"), "{down}");
    assert!(pids.iter().all(|&p| !alive(p)), "processes left: {pids:?}");
    let left: Vec<String> = util::entries(&c.f.dir)
        .into_iter()
        .filter(|e| e.starts_with("millrace-cluster-") || e.starts_with(".millrace"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!c.home.join("cluster.json").exists());
    let again = c.ok(&["cluster", "down"]);
    assert!(again.stdout.contains("no local cluster"), "{again}");
}

#[test]
fn strangers_and_bad_jobs_are_refused_with_one_clear_line() {
    let c = Cluster::up(&["--workers", "1", "--slots", "1"]);
    let address = c.address();
    std::fs::create_dir_all(c.f.path("data")).unwrap();
    c.f.write("data/in.txt", b"a b\nb\n");
    c.f.write(
        "job.toml",
        b"[[step]]\nname = \"in\"\nsource = { text = { path = \"data/in.txt\" } }\n\
          [[step]]\nname = \"words\"\ntokenize = { column = \"line\", as = \"word\" }\n\
          [[step]]\nname = \"n\"\naggregate = { keys = [\"word\"], aggregates = [{ fn = \"count\", as = \"n\" }] }\n\
          [[step]]\nname = \"out\"\nsink = { csv = { path = \"out\" } }\n",
    );
    // A second cluster in the same home.
    let twice = c.run(&["cluster", "up"]);
    assert_eq!(twice.code, Some(2), "{twice}");
    assert!(twice.stderr.contains("already up"), "{twice}");
    // Another secret: refused by the REST API, nothing happens.
    c.f.write("other.secret", b"0123456789abcdef0123456789abcdef\n");
    let other = c.f.path("other.secret");
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = c.run(&[
        "submit",
        "job.toml",
        "--secret-file",
        other.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("401") && run.stderr.contains("wrong bearer token"),
        "{run}"
    );
    // No token; a garbage request; a 100 MB body (refused from its length, not read).
    let (code, body) = post_json(&address, None, "{}");
    assert_eq!(
        (code, body.contains("missing bearer token")),
        (401, true),
        "{body}"
    );
    let (code, _) = http(&address, b"\x00\x01garbage\r\n\r\n");
    assert!(code == 400 || code == 0, "{code}");
    // A client that never finishes its headers is cut off (10 s), not kept forever.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(25),
        "a slow client held its connection {waited:?}"
    );
    let secret = c.secret();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{{"
    );
    let (code, _) = http(&address, head.as_bytes());
    assert_eq!(code, 413);
    // A cluster connection with the wrong secret is refused at the handshake: the
    // coordinator closes it without answering past its nonce.
    let mut stranger = TcpStream::connect(&address).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = b"MLRC\x01".to_vec();
    hello.extend([7u8; 32]);
    stranger.write_all(&hello).unwrap();
    let mut reply = [0u8; 64];
    stranger.read_exact(&mut reply).unwrap();
    stranger.write_all(&[0u8; 32]).unwrap();
    let mut rest = Vec::new();
    let _ = stranger.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a wrong proof got an answer: {rest:?}");
    // Specs: unknown fields, paths out of the roots, a relative working folder.
    let spec = r#"{"step": [{"name": "in", "source": {"text": {"path": "data/in.txt"}}}, {"name": "out", "sink": {"csv": {"path": "out"}}}]}"#;
    let cwd = c.f.dir.to_str().unwrap();
    let unknown = format!(r#"{{"spec": {spec}, "cwd": "{cwd}", "bogus": true}}"#);
    let (code, body) = post_json(&address, Some(&secret), &unknown);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown field `bogus`"), "{body}");
    let inner = spec.replace(r#""step": ["#, r#""bogus": 1, "step": ["#);
    let (code, body) = post_json(
        &address,
        Some(&secret),
        &format!(r#"{{"spec": {inner}, "cwd": "{cwd}"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    let relative = format!(r#"{{"spec": {spec}, "cwd": "relative"}}"#);
    let (code, body) = post_json(&address, Some(&secret), &relative);
    assert_eq!(code, 400, "{body}");
    c.f.write(
        "escape.toml",
        b"[[step]]\nname = \"in\"\nsource = { text = { path = \"../../../../../../../../etc/passwd\" } }\n\
          [[step]]\nname = \"out\"\nsink = { csv = { path = \"out\" } }\n",
    );
    let run = c.run(&["submit", "escape.toml"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("outside the cluster's data roots"),
        "{run}"
    );
    assert_eq!(run.stderr_lines().len(), 1, "{run}");
    let into = c.f.path("into.toml");
    std::fs::write(
        &into,
        "[[step]]\nname = \"in\"\nsource = { text = { path = \"data/in.txt\" } }\n\
         [[step]]\nname = \"out\"\nsink = { text = { path = \"/etc/millrace-out\" } }\n",
    )
    .unwrap();
    let run = c.run(&["submit", into.to_str().unwrap()]);
    assert!(
        run.stderr.contains("output /etc/millrace-out is outside"),
        "{run}"
    );
    // The output is an input: refused at submission, as `run` refuses it.
    let onto = c.f.path("onto.toml");
    std::fs::write(
        &onto,
        "[[step]]\nname = \"in\"\nsource = { text = { path = \"data/in.txt\" } }\n\
         [[step]]\nname = \"out\"\nsink = { text = { path = \"data/in.txt\", one_file = true } }\n",
    )
    .unwrap();
    let run = c.run(&["submit", onto.to_str().unwrap(), "--force"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(c.f.read("data/in.txt"), b"a b\nb\n");
    // A sink that is the spec file itself, even with --force: refused, the spec intact.
    let own = "[[step]]\nname = \"in\"\nsource = { text = { path = \"data/in.txt\" } }\n\
               [[step]]\nname = \"out\"\nsink = { text = { path = \"self.toml\", one_file = true } }\n";
    c.f.write("self.toml", own.as_bytes());
    let run = c.run(&["submit", "self.toml", "--force", "--wait"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("is the job spec"), "{run}");
    assert_eq!(c.f.read("self.toml"), own.as_bytes());
    // None of that reached the history; a good job still runs.
    let ok = c.ok(&["submit", "job.toml", "--wait"]);
    assert!(ok.stdout.contains("job 1 (job) finished"), "{ok}");
    assert_eq!(
        util::normalized_rows(&c.f.path("out"), false),
        vec!["a,1", "b,2"]
    );
    // An existing output without --force fails at submission.
    let run = c.run(&["submit", "job.toml"]);
    assert!(run.stderr.contains("--force"), "{run}");
    // A job no worker can hold waits with its reason and can be canceled.
    let queued = c
        .ok(&[
            "submit",
            "job.toml",
            "--force",
            "--parallelism",
            "8",
            "--json",
        ])
        .json();
    let id = queued["id"].as_u64().unwrap();
    let waiting = c.until(id, "said why it waits", |j| {
        j["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for a worker with 8 slots"))
    });
    assert_eq!(waiting["state"], "queued");
    let canceled = c.ok(&["cancel", &id.to_string()]);
    assert!(canceled.stdout.contains("canceled"), "{canceled}");
    let again = c.run(&["cancel", &id.to_string()]);
    assert!(again.stderr.contains("already ended: canceled"), "{again}");
    let missing = c.run(&["status", "999"]);
    assert!(
        missing.stderr.contains("404") && missing.stderr.contains("no job 999"),
        "{missing}"
    );
    let (code, _) = http(
        &address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    // Drain: only with the secret; then the worker takes no new job, which waits, saying why.
    let status = c.ok(&["cluster", "status"]).stdout;
    let worker = status
        .lines()
        .find(|l| l.contains("registered worker-1"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    let refused = c.run(&["drain", &worker, "--secret-file", other.to_str().unwrap()]);
    assert!(refused.stderr.contains("401"), "{refused}");
    let drained = c.ok(&["drain", &worker]);
    assert!(drained.stdout.contains("drained"), "{drained}");
    assert!(c.ok(&["cluster", "status"]).stdout.contains("draining"));
    let queued = c.ok(&["submit", "job.toml", "--force", "--json"]).json();
    let id = queued["id"].as_u64().unwrap();
    let waiting = c.until(id, "said why it waits", |j| {
        j["reason"]
            .as_str()
            .is_some_and(|r| r.contains("to register"))
    });
    assert_eq!(waiting["state"], "queued", "{waiting:#}");
    c.ok(&["cancel", &id.to_string()]);
}

/// Starts a coordinator on `address` over the local cluster's history (as a restart would).
fn restart_coordinator(c: &Cluster, address: &str) -> Child {
    let home = c.home.to_str().unwrap().to_string();
    let (mut cmd, _) = c.command(&[
        "coordinator",
        "--bind",
        address,
        "--state",
        &format!("{home}/millrace.db"),
        "--secret-file",
        &format!("{home}/secret"),
        "--data-root",
        c.f.dir.to_str().unwrap(),
    ]);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_worker_fails_over_and_a_killed_coordinator_reports_its_running_job_failed() {
    let c = Cluster::up(&["--workers", "2", "--slots", "1", "--memory", "128MiB"]);
    let examples = copy_examples(&c.f);
    let terasort = examples.join("terasort.toml");
    let terasort = terasort.to_str().unwrap();
    let checksum = gen(&c, "5M", "data/in.dat");
    // Out of core on one slot: long enough to kill its worker mid-job.
    let job = c.ok(&["submit", terasort, "--json"]).json();
    let id = job["id"].as_u64().unwrap();
    let (worker, pid) = c.running_on(id);
    kill9(pid);
    let done = c.until(id, "ended", |j| {
        ["finished", "failed"].contains(&j["state"].as_str().unwrap())
    });
    assert_eq!(done["state"], "finished", "{done:#}");
    assert_eq!(done["attempts"], 2, "{done:#}");
    let events = serde_json::to_string(&done["events"]).unwrap();
    assert!(
        events.contains(&format!("worker {worker}")) && events.contains("lost"),
        "{events}"
    );
    assert_ne!(
        done["worker"].as_str().unwrap().split('#').next().unwrap(),
        worker
    );
    assert_eq!(validate_checksum(&c, "data/sorted.dat"), checksum);
    // The coordinator killed while a job runs: a restart over the same history lists the
    // job as failed, with the reason; the worker's attempt was canceled, its output absent.
    let address = c.address();
    let job = c.ok(&["submit", terasort, "--json", "--force"]).json();
    let id = job["id"].as_u64().unwrap();
    c.until(id, "ran", |j| j["state"] == "running");
    kill9(c.pid_of("coordinator"));
    std::thread::sleep(Duration::from_millis(500));
    let coordinator = KillOnDrop(restart_coordinator(&c, &address));
    // The attempt the dead coordinator had placed was canceled: no `millrace run` left, no
    // temp folder next to the output.
    let start = Instant::now();
    no_attempt_left(&c, start, "an attempt outlived its coordinator");
    let start = Instant::now();
    let listed = loop {
        let run = c.run(&["jobs", "--json"]);
        if run.code == Some(0) {
            break run.json();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{run}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let job = &listed["jobs"][0];
    assert_eq!(job["id"].as_u64(), Some(id));
    assert_eq!(job["state"], "failed");
    assert_eq!(
        job["reason"],
        "the coordinator stopped while the job was running"
    );
    assert_eq!(listed["jobs"][1]["state"], "finished");
    // The surviving worker reconnects, and jobs run again.
    let start = Instant::now();
    while c
        .ok(&["cluster", "status"])
        .stdout
        .matches("registered worker-")
        .count()
        < 1
    {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ok(&["submit", terasort, "--wait", "--force"]);
    assert_eq!(validate_checksum(&c, "data/sorted.dat"), checksum);
    drop(coordinator);
}

/// A child killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pids of processes running `millrace <command>`.
fn children_named(command: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"millrace"))
            && args.get(1) == Some(&command.as_bytes())
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (up to 20 s from `start`) until no worker of `c` has a `millrace run` child, then
/// checks that no temp folder is left next to the outputs.
fn no_attempt_left(c: &Cluster, start: Instant, what: &str) {
    while (children_named("run").into_iter()).any(|p| c.pids().contains(&parent_of(p))) {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let temp: Vec<String> = (util::entries(&c.f.path("data")).into_iter())
        .filter(|e| e.starts_with(".millrace"))
        .collect();
    assert!(temp.is_empty(), "{temp:?}");
}

fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    (stat.rsplit(')').next().unwrap_or(""))
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_silent_worker_is_lost_and_a_running_job_can_be_canceled() {
    let c = Cluster::up(&[
        "--workers",
        "2",
        "--slots",
        "1",
        "--memory",
        "128MiB",
        "--heartbeat-timeout",
        "3",
    ]);
    let examples = copy_examples(&c.f);
    let terasort = examples.join("terasort.toml");
    let terasort = terasort.to_str().unwrap();
    let checksum = gen(&c, "5M", "data/in.dat");
    // A stopped worker (SIGSTOP: its connection stays open) stops heartbeating: lost, and
    // its job runs again on the other worker.
    let id = c.ok(&["submit", terasort, "--json"]).json()["id"]
        .as_u64()
        .unwrap();
    let (_, stopped) = c.running_on(id);
    assert!(Command::new("kill")
        .args(["-STOP", &stopped.to_string()])
        .status()
        .unwrap()
        .success());
    let done = c.until(id, "ended", |j| {
        j["state"] == "finished" || j["state"] == "failed"
    });
    assert_eq!(done["state"], "finished", "{done:#}");
    let events = serde_json::to_string(&done["events"]).unwrap();
    assert!(events.contains("no heartbeat"), "{events}");
    assert_eq!(validate_checksum(&c, "data/sorted.dat"), checksum);
    assert!(Command::new("kill")
        .args(["-CONT", &stopped.to_string()])
        .status()
        .unwrap()
        .success());
    // Cancel while it runs: the attempt's child ends, the slot is free again, no temp files.
    let id = c.ok(&["submit", terasort, "--json", "--force"]).json()["id"]
        .as_u64()
        .unwrap();
    c.until(id, "ran", |j| j["state"] == "running");
    let canceled = c.ok(&["cancel", &id.to_string()]);
    assert!(canceled.stdout.contains("cancel requested"), "{canceled}");
    let done = c.until(id, "ended", |j| j["state"] != "running");
    assert_eq!(done["state"], "canceled", "{done:#}");
    let start = Instant::now();
    no_attempt_left(&c, start, "a canceled attempt still runs");
    // The previous output is untouched by the canceled run.
    assert_eq!(validate_checksum(&c, "data/sorted.dat"), checksum);
    let info = c.ok(&["cluster", "status"]).stdout;
    assert!(!info.contains("0/1 slots free"), "{info}");
}

/// `kill -9 PID`.
fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Network namespaces joined by a bridge: "hosts" of one machine, torn down when dropped.
struct Hosts {
    names: Vec<String>,
    processes: Vec<Child>,
}

impl Hosts {
    /// `n` namespaces; the first holds the bridge at 10.77.X.1, the others are .2, .3, …
    fn new(n: usize) -> Result<Self, String> {
        let tag = std::process::id() % 10_000;
        let subnet = 100 + std::process::id() % 100;
        // Names a crashed earlier run may have left.
        for i in 0..n {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("mr{tag}h{i}")])
                .output();
        }
        let hosts = Self {
            names: (0..n).map(|i| format!("mr{tag}h{i}")).collect(),
            processes: Vec::new(),
        };
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| e.to_string())?;
            match out.status.success() {
                true => Ok(()),
                false => Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        };
        let first = hosts.names[0].clone();
        ip(&["netns", "add", &first])?;
        let x = |args: &str| {
            let mut all = vec!["-n", first.as_str()];
            all.extend(args.split(' '));
            ip(&all)
        };
        x("link set lo up")?;
        x("link add br0 type bridge")?;
        x(&format!("addr add 10.77.{subnet}.1/24 dev br0"))?;
        x("link set br0 up")?;
        for i in 1..n {
            let name = hosts.names[i].clone();
            ip(&["netns", "add", &name])?;
            let (here, there) = (format!("v{i}a"), format!("v{i}b"));
            x(&format!("link add {here} type veth peer name {there}"))?;
            x(&format!("link set {there} netns {name}"))?;
            x(&format!("link set {here} master br0"))?;
            x(&format!("link set {here} up"))?;
            let y = |args: &str| {
                let mut all = vec!["-n", name.as_str()];
                all.extend(args.split(' '));
                ip(&all)
            };
            y("link set lo up")?;
            y(&format!("addr add 10.77.{subnet}.{}/24 dev {there}", i + 1))?;
            y(&format!("link set {there} up"))?;
        }
        Ok(hosts)
    }

    fn address(&self, host: usize) -> String {
        format!("10.77.{}.{}", 100 + std::process::id() % 100, host + 1)
    }

    /// The binary's command inside namespace `host`.
    fn command(&self, c: &Cluster, host: usize, args: &[&str]) -> (Command, Vec<String>) {
        let (inner, shown) = c.command(args);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[host]])
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(&c.f.dir)
            .env("MILLRACE_HOME", &c.home)
            .env("TMPDIR", &c.f.dir)
            .stdin(Stdio::null());
        (cmd, shown)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

#[test]
fn a_cluster_across_network_namespaces_runs_jobs_over_real_interfaces() {
    // Not a local cluster: the coordinator and each worker in a namespace of its own.
    let f = Fixture::new();
    let c = Cluster {
        home: f.path("home"),
        f,
    };
    let mut hosts = match Hosts::new(3) {
        Ok(hosts) => hosts,
        Err(e) => {
            util::skip(format!(
                "cluster across namespaces: no network namespaces here ({e})"
            ));
            return;
        }
    };
    std::fs::create_dir_all(&c.home).unwrap();
    let secret = c.home.join("secret");
    std::fs::write(&secret, "namespaces-secret-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let coordinator = format!("{}:7070", hosts.address(0));
    let dir = c.f.dir.to_str().unwrap().to_string();
    let (mut cmd, _) = hosts.command(
        &c,
        0,
        &[
            "coordinator",
            "--bind",
            &coordinator,
            "--data-root",
            &dir,
            "--state",
            &format!("{dir}/home/history.db"),
        ],
    );
    hosts.processes.push(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for host in 1..3 {
        let bind = format!("{}:7071", hosts.address(host));
        let name = format!("host{host}");
        let (mut cmd, _) = hosts.command(
            &c,
            host,
            &[
                "worker",
                "--coordinator",
                &coordinator,
                "--bind",
                &bind,
                "--name",
                &name,
                "--slots",
                "1",
                "--memory",
                "256MiB",
            ],
        );
        hosts.processes.push(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let run_in = |host: usize, args: &[&str]| {
        let (cmd, shown) = hosts.command(&c, host, args);
        util::run_with_timeout(cmd, shown, Duration::from_secs(120))
    };
    // Both workers registered with their own addresses.
    let start = Instant::now();
    while cluster_in(&hosts, 0, &coordinator, &c.secret())
        .matches("\"address\":\"10.77.")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "workers never registered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let examples = copy_examples(&c.f);
    let checksum = gen(&c, "1M", "data/in.dat");
    for job in ["terasort", "wordcount"] {
        let spec = examples.join(format!("{job}.toml"));
        let run = run_in(
            1,
            &[
                "submit",
                spec.to_str().unwrap(),
                "--wait",
                "--coordinator",
                &coordinator,
            ],
        );
        assert_eq!(run.code, Some(0), "{run}");
        assert!(run.stdout.contains("finished on host"), "{run}");
    }
    assert_eq!(validate_checksum(&c, "data/sorted.dat"), checksum);
    // A client in the root namespace cannot reach the coordinator's address.
    let outside = c.run(&["jobs", "--coordinator", &coordinator]);
    assert_eq!(outside.code, Some(2), "{outside}");
}

/// `GET /v1/cluster` from inside namespace `host` (python3's HTTP client: no millrace
/// command lists another cluster's workers).
fn cluster_in(hosts: &Hosts, host: usize, address: &str, token: &str) -> String {
    let script = format!(
        "import urllib.request as u; r=u.Request('http://{address}/v1/cluster', headers={{'Authorization': 'Bearer {token}'}}); print(u.urlopen(r, timeout=5).read().decode())"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &hosts.names[host],
            "python3",
            "-c",
            &script,
        ])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn a_crashed_local_cluster_is_cleaned_up_by_the_next_up_and_a_coordinator_config_is_checked() {
    let c = Cluster::up(&["--workers", "1", "--slots", "1"]);
    let old_temp = c.state()["temp_dir"].as_str().unwrap().to_string();
    let pids = c.pids();
    for &pid in &pids {
        kill9(pid);
    }
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = c.ok(&["cluster", "status"]).stdout;
    assert_eq!(status.matches("stopped").count(), 2, "{status}");
    // `up` again: the dead cluster's temp files go, a new one starts.
    let again = c.ok(&["cluster", "up", "--workers", "1", "--slots", "1"]);
    assert!(again.stdout.contains("coordinator http://"), "{again}");
    assert!(!Path::new(&old_temp).exists(), "{old_temp} left behind");
    assert_ne!(c.pids(), pids);
    // A coordinator's config file: unknown keys and bad values are one line, exit 2.
    c.f.write("bad.toml", b"bind = \"127.0.0.1:0\"\nbogus = 1\n");
    let run = c.run(&["coordinator", "--config", "bad.toml"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("unknown field `bogus`"), "{run}");
    assert_eq!(run.stderr_lines().len(), 1, "{run}");
    c.f.write("slow.toml", b"slot_timeout_s = -1\n");
    let run = c.run(&["coordinator", "--config", "slow.toml"]);
    assert!(run.stderr.contains("--slot-timeout must be"), "{run}");
    let run = c.run(&[
        "coordinator",
        "--data-root",
        "no-such-folder",
        "--bind",
        "127.0.0.1:0",
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("data root no-such-folder"), "{run}");
    // Its history is locked by the running coordinator.
    let db = c.home.join("millrace.db");
    let run = c.run(&[
        "coordinator",
        "--bind",
        "127.0.0.1:0",
        "--state",
        db.to_str().unwrap(),
    ]);
    assert!(run.stderr.contains("another coordinator"), "{run}");
}

/// Subtasks placed on task executors (`MILLRACE_EXECUTORS`): pipelined channels between
/// executors cross TCP; the outputs are those of one process, also after a region restart.
#[test]
fn the_binary_places_subtasks_on_executors_with_the_same_outputs() {
    let f = Fixture::new();
    let (_, checksum) = f.gen(&[], "500k", "in.dat");
    f.ok([
        "sort",
        "in.dat",
        "plain.out",
        "--maps",
        "3",
        "--reducers",
        "3",
    ]);
    let placed = |out: &str, fail: &str| {
        let (mut cmd, shown) = f.command([
            "sort",
            "in.dat",
            out,
            "--maps",
            "3",
            "--reducers",
            "3",
            "--json",
        ]);
        cmd.env("MILLRACE_EXECUTORS", "3")
            .env("MILLRACE_FAIL_ATTEMPTS", fail);
        let run = util::run_with_timeout(cmd, shown, Duration::from_secs(120));
        assert_eq!(run.code, Some(0), "{run}");
        run.json()
    };
    let doc = placed("placed.out", "");
    let network = &doc["network"];
    assert_eq!(network["executors"], 3, "{doc:#}");
    assert_eq!(network["remote_channels"], 6, "{doc:#}");
    assert!(network["bytes_sent"].as_u64().unwrap() > 0, "{doc:#}");
    assert_eq!(f.sha256("placed.out"), f.sha256("plain.out"));
    // A reducer's first attempt fails: its region restarts with fresh channels.
    let doc = placed("restarted.out", "sort/1/0");
    assert_eq!(doc["network"]["remote_channels"], 12, "{doc:#}");
    assert_eq!(f.sha256("restarted.out"), f.sha256("plain.out"));
    let validated = f.ok(["validate", "--json", "restarted.out"]).json();
    assert_eq!(validated["checksum"].as_str(), Some(checksum.as_str()));
    // A batch job: the same rows.
    let examples = copy_examples(&f);
    std::fs::copy(examples.join("wordcount.toml"), f.path("wordcount.toml")).unwrap();
    f.ok(["run", "wordcount.toml"]);
    let plain = util::normalized_rows(&f.path("wordcount.out"), false);
    let (mut cmd, shown) = f.command(["run", "wordcount.toml", "--force"]);
    cmd.env("MILLRACE_EXECUTORS", "3");
    let run = util::run_with_timeout(cmd, shown, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        util::normalized_rows(&f.path("wordcount.out"), false),
        plain
    );
}
