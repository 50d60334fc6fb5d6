//! Millrace shuffle: how buffers of records travel from producer subtasks to consumer subtasks.
//!
//! A producer subtask writes into a [`ResultPartition`], which has one [`ResultSubpartition`]
//! per consumer subtask; a consumer reads all of its producers through one [`InputGate`], which
//! has one input channel per producer.
//! Flow control is credit based, as in Flink: every channel starts with a fixed number of
//! credits, a producer spends one per buffer and waits (asynchronously) when it has none, and
//! the consumer returns the credit when it takes the buffer off the channel.
//! Memory in flight is therefore bounded by `producers × consumers × credits` buffers, however
//! slow a consumer is.
//!
//! **Invariant:** this crate knows bytes and buffers, never record formats or the engine.
#![deny(unsafe_code)]
//!
//! **Invariant:** only `mmap.rs` contains `unsafe`.

mod buffer;
mod error;
mod exchange;
mod mmap;

pub use buffer::{Buffer, BufferPool};
pub use error::ShuffleError;
pub use exchange::{
    pipelined, ChannelIndex, Event, ExchangeMetrics, InputGate, ResultPartition,
    ResultPartitionType, ResultSubpartition,
};
pub use mmap::MappedFile;
