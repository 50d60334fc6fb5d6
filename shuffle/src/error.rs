//! Errors of the exchange.

/// What can go wrong while moving buffers between subtasks.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// The consumer is gone (failed or cancelled); the producer should stop.
    #[error(
        "consumer subtask {consumer} of the exchange is gone; the job is failing or cancelled"
    )]
    ConsumerGone { consumer: usize },
    /// A producer stopped without sending end-of-partition: it failed or was cancelled.
    #[error("producer subtask {producer} ended without finishing its partition; the job is failing or cancelled")]
    ProducerLost { producer: usize },
    /// A spilled buffer reached a consumer that reads only in-memory buffers.
    #[error("producer subtask {producer} spilled a buffer to a consumer that cannot read spills; this is a bug, please report it")]
    UnexpectedSpill { producer: usize },
    /// A partition that must spill (blocking, or hybrid with a busy consumer) has nowhere to.
    #[error("a {kind} partition needs a spill target; this is a bug, please report it")]
    NoSpillTarget { kind: &'static str },
    /// A producer gave up its partition and said why ([`crate::ResultPartition::fail`]).
    #[error("producer subtask {producer} failed: {reason}")]
    ProducerFailed { producer: usize, reason: String },
    /// A producer in another process gave up its partition and said why.
    #[error("producer subtask {producer} at {peer} failed: {reason}")]
    RemoteProducerFailed {
        producer: usize,
        peer: std::net::SocketAddr,
        reason: String,
    },
    /// The connection to a producer in another process failed or broke the protocol.
    #[error("lost producer subtask {producer} at {peer}: {reason}")]
    RemoteProducerLost {
        producer: usize,
        peer: std::net::SocketAddr,
        reason: String,
    },
    /// A consumer in another process is gone (its gate was dropped or its connection lost).
    #[error("consumer subtask {consumer} at {peer} is gone: {reason}")]
    RemoteConsumerGone {
        consumer: usize,
        peer: std::net::SocketAddr,
        reason: String,
    },
    /// Setting up the network exchange failed (listen, connect, handshake).
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// Writing or reading a spilled buffer failed.
    #[error(transparent)]
    Spill(#[from] crate::spill::SpillError),
}
