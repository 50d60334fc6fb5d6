//! The REST API's documents (JSON). Every request but `GET /healthz` and `GET /metrics`
//! carries `Authorization: Bearer <secret>`; errors are `{"error": "<one line>"}`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/jobs` [`SubmitRequest`] | 201 [`JobSummary`] |
//! | `GET /v1/jobs?page=P&per_page=N` | [`JobPage`], newest first |
//! | `GET /v1/jobs/{id}` | [`JobDetail`] |
//! | `POST /v1/jobs/{id}/cancel` | [`JobSummary`] |
//! | `GET /v1/cluster` | [`ClusterInfo`] |

use std::path::PathBuf;

use engine::batch::{JobSpec, Mode};
use serde::{Deserialize, Serialize};

/// A job to run: the spec (the schema `millrace run` reads, as JSON) and the options
/// `millrace run` takes as flags. Relative paths in the spec are relative to `cwd`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub spec: JobSpec,
    /// The submitting client's working folder (absolute).
    pub cwd: PathBuf,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// A memory budget such as "512MiB" (default: the worker's share).
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for free slots.
    Queued,
    Running,
    Finished,
    Failed,
    Canceled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Finished,
            Self::Failed,
            Self::Canceled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Canceled)
    }

    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Finished,
        Self::Failed,
        Self::Canceled,
    ];
}

/// One job in a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: u64,
    pub name: String,
    pub state: JobState,
    /// RFC 3339, UTC.
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// From the first start to the end (or to now, while running).
    pub duration_ms: Option<u64>,
    /// The worker running (or that ran) the last attempt.
    pub worker: Option<String>,
    /// Attempts started (a job whose worker was lost runs again, up to its max attempts).
    pub attempts: u32,
    /// Why it failed, or why it waits.
    pub reason: Option<String>,
}

/// One job in full.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The spec with its paths resolved.
    pub spec: serde_json::Value,
    /// The job graph (`millrace explain`'s text): vertices, exchanges, regions.
    pub graph: String,
    /// The options it was submitted with.
    pub options: serde_json::Value,
    /// Every state change, in order.
    pub events: Vec<JobEvent>,
    /// What the finished job did (`millrace run --json`'s summary) and, per vertex, its
    /// subtask attempts with their records and bytes in and out.
    pub report: Option<serde_json::Value>,
}

/// A state change of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobEvent {
    pub at: String,
    pub state: JobState,
    pub message: String,
}

/// A page of jobs, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

/// A registered worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: u64,
    pub name: String,
    /// Where other workers reach it (data connections).
    pub address: String,
    pub slots: usize,
    pub free_slots: usize,
    pub memory_bytes: u64,
    pub data_dirs: Vec<PathBuf>,
    pub registered_at: String,
    pub last_heartbeat_ms: u64,
    pub jobs: Vec<u64>,
    pub draining: bool,
}

/// The cluster as the coordinator sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub workers: Vec<WorkerInfo>,
    /// Jobs per state, every state named.
    pub jobs: std::collections::BTreeMap<String, u64>,
    pub data_roots: Vec<PathBuf>,
}

/// An error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
