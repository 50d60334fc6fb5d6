//! The control connection between a worker and its coordinator: after the handshake
//! ([`shuffle::net::auth`]), postcard messages in length-delimited frames (at most
//! [`MAX_MESSAGE`] bytes; a longer or undecodable one ends the connection).
//!
//! The worker registers ([`ToCoordinator::Register`]), heartbeats, and reports each job
//! attempt's end; the coordinator answers the registration and sends attempts to run and to
//! cancel. Every report names the attempt, so the coordinator ignores what a stale attempt
//! (one it gave up on) says.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The largest control message (a spec with its resolved paths is a few KiB).
pub const MAX_MESSAGE: usize = 4 << 20;
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker → coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToCoordinator {
    Register {
        name: String,
        /// Where other workers and `millrace drain` reach it.
        address: String,
        slots: usize,
        memory_bytes: u64,
        data_dirs: Vec<PathBuf>,
        pid: u32,
    },
    Heartbeat,
    /// An attempt ended.
    Ended {
        job: u64,
        attempt: u32,
        outcome: Outcome,
    },
    /// Place nothing more here (the worker is being drained).
    Draining,
}

/// How an attempt ended.
#[derive(Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// The report as JSON text (`millrace run --json`'s summary and the vertices).
    Finished {
        report: String,
    },
    Failed {
        reason: String,
    },
    Canceled,
}

/// Coordinator → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Registered {
        worker: u64,
        heartbeat_ms: u64,
    },
    Run(RunAttempt),
    Cancel {
        job: u64,
        attempt: u32,
    },
    /// Every heartbeat interval: a worker that hears nothing for two of them has lost its
    /// coordinator (a silent network, not only a closed connection) and cancels its attempts,
    /// before the coordinator (after four) places them elsewhere.
    Ping,
}

/// How long one control message may take to write before its peer counts as gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// An attempt of a job to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunAttempt {
    pub job: u64,
    pub attempt: u32,
    pub name: String,
    /// The spec as JSON, every path canonical and inside the data roots.
    pub spec: String,
    pub mode: Option<String>,
    pub parallelism: usize,
    pub memory_bytes: u64,
    pub force: bool,
    pub max_attempts: u32,
}

/// The sending half of a control connection.
pub type Sender = futures_util::stream::SplitSink<Framed<TcpStream, LengthDelimitedCodec>, Bytes>;

/// A control connection's two halves (after the handshake).
pub fn split(stream: TcpStream, peer: String) -> (Sender, Receiver) {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_MESSAGE)
        .new_codec();
    let (sink, stream) = Framed::new(stream, codec).split();
    (sink, Receiver { stream, peer })
}

/// Sends one message (within [`SEND_TIMEOUT`]).
pub async fn send<T: Serialize>(sender: &mut Sender, message: &T) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(message).map_err(std::io::Error::other)?;
    tokio::time::timeout(SEND_TIMEOUT, sender.send(Bytes::from(bytes)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer does not read"))?
}

/// The receiving half of a control connection.
pub struct Receiver {
    stream: futures_util::stream::SplitStream<Framed<TcpStream, LengthDelimitedCodec>>,
    pub peer: String,
}

impl Receiver {
    /// The next message; `None` when the peer closed the connection.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Option<std::io::Result<T>> {
        let frame = match self.stream.next().await? {
            Ok(frame) => frame,
            Err(e) => return Some(Err(e)),
        };
        Some(postcard::from_bytes(&frame).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("undecodable control message from {}: {e}", self.peer),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_decodes_into_a_panic() {
        // Every prefix of a real message and some random bytes: errors, no panics.
        let message = ToWorker::Run(RunAttempt {
            job: 7,
            attempt: 1,
            name: "n".into(),
            spec: "{}".into(),
            mode: None,
            parallelism: 2,
            memory_bytes: 1 << 20,
            force: false,
            max_attempts: 2,
        });
        let bytes = postcard::to_allocvec(&message).unwrap();
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<ToWorker>(&bytes[..cut]).is_err());
        }
        let mut seed = 1u64;
        for _ in 0..10_000 {
            let len = (seed % 64) as usize;
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            let _ = postcard::from_bytes::<ToWorker>(&noise);
            let _ = postcard::from_bytes::<ToCoordinator>(&noise);
        }
    }
}
