//! The network exchange between worker processes, behind the same [`crate::ResultPartition`]
//! and [`crate::InputGate`] the engine uses inside one process: an operator cannot tell a
//! remote channel from a local one.
//!
//! ```text
//!  producer process                                         consumer process
//!  ResultPartition ─ subpartition (credits ◄── Credit) ─┐    ┌─ bridge: free gate slot ─► Credit
//!                                        forwarder ─────┤    │
//!  ShuffleServer: registry (PartitionId, index)         └─TCP┴─ reader ─► InputGate's queue
//!                 accept loop, auth::server             one connection per (consumer process,
//!                                                       producer process), many channels
//! ```
//!
//! [`ShuffleServer`] is a process's end of the exchange: it listens (every accepted
//! connection passes [`auth::server`] before a frame is read), keeps the registry of result
//! subpartitions this process serves, and dials other processes' servers for its own gates
//! (one connection per peer address, passing [`auth::client`], reused by every gate).
//!
//! Consumer driven, like Flink's partition requests: a producer registers its partition
//! under a [`PartitionId`] ([`ShuffleServer::partition`]); a consumer's gate
//! ([`ShuffleServer::gate`]) sends [`Frame::Request`] (partition, subpartition, initial
//! credits) on a channel number it picks on that connection. A request that arrives before
//! the producer registered waits for it (up to [`ServerConfig::request_timeout`], then an
//! [`Frame::Error`]).
//!
//! Credits: each remote channel of a gate keeps the gate's semaphore; a bridge task takes
//! every free slot, forgets the permit and announces it ([`Frame::Credit`], batched). The
//! producer's subpartition semaphore is fed only by those frames, so a producer never sends
//! more than was granted; the receiving reader checks it anyway (a buffer without credit is a
//! protocol error that closes the connection). Received buffers go into the gate's queue
//! without waiting (there is always room: credit was granted for it), so the connection's
//! reader never blocks and a channel without credit is held back only at its producer (no
//! head-of-line blocking). End of partition travels in band after the channel's last buffer.
//!
//! Failures: a dropped gate sends [`Frame::Close`], and its producer's next send fails with
//! [`crate::ShuffleError::RemoteConsumerGone`]; a failed producer
//! ([`crate::ResultPartition::fail`], or dropped unfinished) sends [`Frame::Error`] and the
//! consumer gets [`crate::ShuffleError::RemoteProducerFailed`]; a lost connection, a bad frame
//! or a protocol error closes the connection and fails every channel on it, each side naming
//! the peer's address ([`crate::ShuffleError::RemoteProducerLost`] /
//! [`crate::ShuffleError::RemoteConsumerGone`]). Nothing waits forever.
//!
//! Pipelined partitions only, so far: hybrid partitions' spilled buffers and blocking
//! partitions are not served over the network yet.

pub mod auth;
mod conn;
mod frame;
mod server;

use std::net::SocketAddr;

pub use conn::ConnectionMetrics;
pub use frame::{Frame, FrameCodec, FrameError, PartitionId, FRAME_HEADER_BYTES, MIN_BODY_CAP};
pub use server::{Channel, ServerConfig, ShuffleServer, Subpartition};

/// Why the network exchange could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen for shuffle connections on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to the shuffle server at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the shuffle server at {addr} did not complete the handshake: {source}")]
    Handshake {
        addr: SocketAddr,
        source: auth::AuthError,
    },
    #[error("{partition} is already registered at this shuffle server")]
    AlreadyRegistered { partition: PartitionId },
    #[error("the shuffle server at {addr} is shut down")]
    ShutDown { addr: SocketAddr },
}
