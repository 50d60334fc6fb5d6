//! The network exchange between worker processes: what travels on one TCP connection.
//!
//! Many logical channels (a producer subpartition → a consumer's input channel) share one
//! connection per pair of workers. Every message is a [`Frame`] — length-prefixed, capped in
//! size, checked with CRC-32C — naming its channel. Flow control is per channel and credit
//! based, as inside a process: the receiver announces credits ([`Frame::Credit`]) and the
//! sender never sends a channel more buffers than it was granted, so a slow consumer holds
//! back its own channel by withholding credit and never stalls the connection the other
//! channels share (no head-of-line blocking). End of partition travels in band, after the
//! channel's last buffer. Before any frame, both ends prove they hold the cluster's secret
//! ([`auth`]).

pub mod auth;
mod frame;

pub use frame::{Frame, FrameCodec, FrameError, PartitionId, FRAME_HEADER_BYTES, MIN_BODY_CAP};
