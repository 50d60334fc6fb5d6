//! The job history: every job, its spec and graph, state changes, attempts and final report,
//! in one SQLite file (`--state`). The live job list is the history: nothing expires. A
//! coordinator holds an exclusive lock on the file's `.lock` companion while it runs, so two
//! coordinators never share one history; when it starts, the jobs a stopped coordinator left
//! queued or running are marked failed with that reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use engine::timeline::rfc3339_utc;
use rusqlite::{params, Connection, OptionalExtension};

use crate::api::{JobDetail, JobEvent, JobPage, JobState, JobSummary};
use crate::ClusterError;

/// The history, open.
pub struct Store {
    db: Mutex<Connection>,
    path: PathBuf,
    /// Held while the store is open (see the module docs).
    _lock: std::fs::File,
}

/// A job as submitted.
pub struct NewJob {
    pub name: String,
    pub spec: serde_json::Value,
    pub graph: String,
    pub options: serde_json::Value,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_us INTEGER NOT NULL,
    started_us INTEGER,
    finished_us INTEGER,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    spec TEXT NOT NULL,
    graph TEXT NOT NULL,
    options TEXT NOT NULL,
    report TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL REFERENCES jobs(id),
    at_us INTEGER NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job, seq);
";

fn now_us() -> u64 {
    engine::timeline::unix_micros(std::time::SystemTime::now())
}

impl Store {
    /// Opens (or creates) the history at `path`, locks it and fails the jobs a stopped
    /// coordinator left unfinished; returns the store and how many jobs it failed.
    pub fn open(path: &Path) -> Result<(Self, usize), ClusterError> {
        let bad = |reason: String| ClusterError::Store {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| bad(e.to_string()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| bad("another coordinator is using this job history (its lock is held)".into()),
        )?;
        let db = Connection::open(path).map_err(|e| bad(e.to_string()))?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .and_then(|()| db.execute_batch(SCHEMA))
            .map_err(|e| bad(e.to_string()))?;
        let store = Self {
            db: Mutex::new(db),
            path: path.to_path_buf(),
            _lock: lock,
        };
        let failed = store.fail_unfinished()?;
        Ok((store, failed))
    }

    fn error(&self, e: rusqlite::Error) -> ClusterError {
        ClusterError::Store {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ClusterError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut db).map_err(|e| self.error(e))
    }

    fn fail_unfinished(&self) -> Result<usize, ClusterError> {
        let ids: Vec<(u64, String)> = self.with(|db| {
            let mut query =
                db.prepare("SELECT id, state FROM jobs WHERE state IN ('queued', 'running')")?;
            let rows = query.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
        for (id, state) in &ids {
            let reason = format!("the coordinator stopped while the job was {state}");
            self.finish(*id, JobState::Failed, &reason, None)?;
        }
        Ok(ids.len())
    }

    /// Records a submitted job, queued; returns its id.
    pub fn insert(&self, job: &NewJob) -> Result<u64, ClusterError> {
        let now = now_us();
        self.with(|db| {
            let tx = db.transaction()?;
            tx.execute(
                "INSERT INTO jobs (name, state, submitted_us, spec, graph, options) VALUES (?1, 'queued', ?2, ?3, ?4, ?5)",
                params![job.name, now, job.spec.to_string(), job.graph, job.options.to_string()],
            )?;
            let id = tx.last_insert_rowid() as u64;
            tx.execute(
                "INSERT INTO events (job, at_us, state, message) VALUES (?1, ?2, 'queued', 'submitted')",
                params![id, now],
            )?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Records an event without changing state (why a job waits, a lost worker).
    pub fn note(&self, id: u64, state: JobState, message: &str) -> Result<(), ClusterError> {
        let now = now_us();
        self.with(|db| {
            let changed = db.execute(
                "UPDATE jobs SET reason = ?2 WHERE id = ?1 AND state = ?3",
                params![id, message, state.as_str()],
            )?;
            if changed == 0 {
                return Ok(());
            }
            db.execute(
                "INSERT INTO events (job, at_us, state, message) VALUES (?1, ?2, ?3, ?4)",
                params![id, now, state.as_str(), message],
            )
            .map(drop)
        })
    }

    /// Records the start of an attempt on `worker`; returns the attempt's number (from 1).
    pub fn start(&self, id: u64, worker: &str) -> Result<u32, ClusterError> {
        let now = now_us();
        self.with(|db| {
            let tx = db.transaction()?;
            tx.execute(
                "UPDATE jobs SET state = 'running', worker = ?2, attempts = attempts + 1, reason = NULL, started_us = COALESCE(started_us, ?3) WHERE id = ?1",
                params![id, worker, now],
            )?;
            let attempt: u32 = tx.query_row("SELECT attempts FROM jobs WHERE id = ?1", [id], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO events (job, at_us, state, message) VALUES (?1, ?2, 'running', ?3)",
                params![id, now, format!("attempt {attempt} on {worker}")],
            )?;
            tx.commit()?;
            Ok(attempt)
        })
    }

    /// Puts a running job back in the queue (its worker was lost; it has attempts left).
    pub fn requeue(&self, id: u64, reason: &str) -> Result<(), ClusterError> {
        let now = now_us();
        self.with(|db| {
            db.execute(
                "UPDATE jobs SET state = 'queued', reason = ?2 WHERE id = ?1",
                params![id, reason],
            )?;
            db.execute(
                "INSERT INTO events (job, at_us, state, message) VALUES (?1, ?2, 'queued', ?3)",
                params![id, now, reason],
            )
            .map(drop)
        })
    }

    /// Records a job's end: its final state, why (for failed and canceled jobs) and report.
    pub fn finish(
        &self,
        id: u64,
        state: JobState,
        reason: &str,
        report: Option<&serde_json::Value>,
    ) -> Result<(), ClusterError> {
        let now = now_us();
        let report = report.map(|r| r.to_string());
        let stored_reason = (state != JobState::Finished).then_some(reason);
        self.with(|db| {
            let tx = db.transaction()?;
            tx.execute(
                "UPDATE jobs SET state = ?2, finished_us = ?3, reason = ?4, report = COALESCE(?5, report) WHERE id = ?1 AND state IN ('queued', 'running')",
                params![id, state.as_str(), now, stored_reason, report],
            )?;
            // A job ends once.
            if tx.changes() == 0 {
                return Ok(());
            }
            tx.execute(
                "INSERT INTO events (job, at_us, state, message) VALUES (?1, ?2, ?3, ?4)",
                params![id, now, state.as_str(), reason],
            )?;
            tx.commit()
        })
    }

    /// One job's summary.
    pub fn summary(&self, id: u64) -> Result<Option<JobSummary>, ClusterError> {
        self.with(|db| {
            db.query_row(&format!("{SUMMARY} WHERE id = ?1"), [id], summary_of)
                .optional()
        })
    }

    /// When a job was submitted (µs since the Unix epoch).
    pub fn submitted_us(&self, id: u64) -> Result<Option<u64>, ClusterError> {
        self.with(|db| {
            db.query_row("SELECT submitted_us FROM jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// One job in full.
    pub fn detail(&self, id: u64) -> Result<Option<JobDetail>, ClusterError> {
        let Some(summary) = self.summary(id)? else {
            return Ok(None);
        };
        self.with(|db| {
            let (spec, graph, options, report): (String, String, String, Option<String>) = db
                .query_row(
                    "SELECT spec, graph, options, report FROM jobs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?;
            let mut query =
                db.prepare("SELECT at_us, state, message FROM events WHERE job = ?1 ORDER BY seq")?;
            let events = query
                .query_map([id], |r| {
                    let state: String = r.get(1)?;
                    Ok(JobEvent {
                        at: rfc3339_utc(r.get(0)?),
                        state: JobState::parse(&state).unwrap_or(JobState::Failed),
                        message: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let json = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
            Ok(Some(JobDetail {
                summary,
                spec: json(&spec),
                graph,
                options: json(&options),
                events,
                report: report.as_deref().map(json),
            }))
        })
    }

    /// Page `page` (from 1) of `per_page` jobs, newest first.
    pub fn page(&self, page: u64, per_page: u64) -> Result<JobPage, ClusterError> {
        let (page, per_page) = (page.clamp(1, 1 << 40), per_page.clamp(1, 1000));
        self.with(|db| {
            let total: u64 = db.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))?;
            let mut query =
                db.prepare(&format!("{SUMMARY} ORDER BY id DESC LIMIT ?1 OFFSET ?2"))?;
            let jobs = query
                .query_map(params![per_page, (page - 1) * per_page], summary_of)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(JobPage {
                jobs,
                page,
                per_page,
                total,
            })
        })
    }

    /// Jobs per state, every state named.
    pub fn counts(&self) -> Result<BTreeMap<String, u64>, ClusterError> {
        let mut counts: BTreeMap<String, u64> = (JobState::ALL.iter())
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        let rows: Vec<(String, u64)> = self.with(|db| {
            let mut query = db.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
            let rows = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        counts.extend(rows);
        Ok(counts)
    }
}

const SUMMARY: &str = "SELECT id, name, state, submitted_us, started_us, finished_us, worker, attempts, reason FROM jobs";

fn summary_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobSummary> {
    let state: String = row.get(2)?;
    let state = JobState::parse(&state).unwrap_or(JobState::Failed);
    let started: Option<u64> = row.get(4)?;
    let finished: Option<u64> = row.get(5)?;
    let end = finished.or_else(|| (state == JobState::Running).then(now_us));
    Ok(JobSummary {
        id: row.get(0)?,
        name: row.get(1)?,
        state,
        submitted_at: rfc3339_utc(row.get(3)?),
        started_at: started.map(rfc3339_utc),
        finished_at: finished.map(rfc3339_utc),
        duration_ms: started.zip(end).map(|(s, e)| e.saturating_sub(s) / 1000),
        worker: row.get(6)?,
        attempts: row.get(7)?,
        reason: row.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> NewJob {
        NewJob {
            name: name.into(),
            spec: serde_json::json!({"name": name}),
            graph: "graph".into(),
            options: serde_json::json!({}),
        }
    }

    #[test]
    fn jobs_and_their_ends_survive_a_restart_and_unfinished_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/millrace.db");
        let (done, running, queued);
        {
            let (store, failed) = Store::open(&path).unwrap();
            assert_eq!(failed, 0);
            done = store.insert(&job("done")).unwrap();
            running = store.insert(&job("running")).unwrap();
            queued = store.insert(&job("queued")).unwrap();
            assert_eq!(store.start(done, "w1").unwrap(), 1);
            let report = serde_json::json!({"rows_out": 3});
            store
                .finish(done, JobState::Finished, "finished", Some(&report))
                .unwrap();
            store.start(running, "w2").unwrap();
            // A second coordinator on the same history is refused while this one runs.
            let error = Store::open(&path).err().unwrap().to_string();
            assert!(error.contains("another coordinator"), "{error}");
        }
        let (store, failed) = Store::open(&path).unwrap();
        assert_eq!(failed, 2);
        let page = store.page(1, 10).unwrap();
        assert_eq!(page.total, 3);
        let ids: Vec<u64> = page.jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![queued, running, done]);
        let done = store.detail(done).unwrap().unwrap();
        assert_eq!(done.summary.state, JobState::Finished);
        assert_eq!(done.summary.reason, None);
        assert_eq!(done.report.unwrap()["rows_out"], 3);
        assert_eq!(done.events.len(), 3);
        let running = store.summary(running).unwrap().unwrap();
        assert_eq!(running.state, JobState::Failed);
        assert_eq!(
            running.reason.as_deref(),
            Some("the coordinator stopped while the job was running")
        );
        let counts = store.counts().unwrap();
        assert_eq!(
            (counts["failed"], counts["finished"], counts["running"]),
            (2, 1, 0)
        );
        assert!(store.summary(99).unwrap().is_none());
        // Pages.
        let second = store.page(2, 2).unwrap();
        assert_eq!(second.jobs.len(), 1);
    }
}
