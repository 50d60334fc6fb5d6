//! Millrace as a cluster: a coordinator process (the JobManager role) that takes jobs over an
//! authenticated REST API, keeps every job's history in SQLite and places jobs on worker
//! processes (the TaskManager role), which register their slots, memory and folders and
//! heartbeat over an authenticated control connection.
//!
//! - [`home`]: `$MILLRACE_HOME`: the secret (a 0600 file) and a local cluster's state.
//! - [`api`]: the REST API's JSON documents.
//! - [`store`]: the job history (SQLite): what a restarted coordinator knows.
//! - [`confine`]: a submitted spec's paths, resolved and confined to the data roots.
//! - [`control`]: the coordinator ↔ worker messages.
//! - [`coordinator`], [`worker`]: the two processes.
//! - [`report`]: a finished job's figures per vertex, from its timeline.
//! - [`client`]: the REST client the `millrace` commands use.
//! - [`local`]: `millrace cluster up|status|down`: a cluster of local processes.

pub mod api;
pub mod client;
pub mod confine;
pub mod control;
pub mod coordinator;
pub mod home;
mod listener;
pub mod local;
mod metrics;
pub mod report;
pub mod store;
pub mod worker;

use std::path::PathBuf;

/// What can go wrong in the cluster's processes and commands.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the coordinator at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the coordinator refused the request ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("job history ({path}): {reason}")]
    Store { path: String, reason: String },
    #[error(transparent)]
    Auth(#[from] shuffle::net::auth::AuthError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClusterError {
    fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Resolves when the process gets SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
