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
//! Between processes, [`net`] carries the same channels over authenticated TCP connections
//! (many channels per connection, credits announced by the receiver).
//!
//! Data that does not fit in memory goes to [`spill`] segment files: blocks clustered by
//! partition, written with large aligned I/O and read back through read-only maps.
//!
//! **Invariant:** this crate knows bytes and buffers, never record formats or the engine.
//!
//! **Invariant:** only `mmap.rs` (read-only maps) and `spill/uring.rs` (io_uring submissions)
//! contain `unsafe`.
#![deny(unsafe_code)]

mod buffer;
mod error;
mod exchange;
mod mmap;
pub mod net;
pub mod spill;

pub use buffer::{Buffer, BufferPool};
pub use error::ShuffleError;
pub use exchange::{
    blocking, exchange, pipelined, BlockingStore, ChannelIndex, Event, ExchangeMetrics, InputGate,
    Received, ResultPartition, ResultPartitionType, ResultSubpartition, SpillTarget, SpilledBuffer,
};
pub use mmap::{MappedFile, FAULT_AROUND_BYTES};
pub use spill::{
    Compression, FileIndex, IoEngine, PartitionEntry, SegmentFileReader, SegmentFileWriter,
    SegmentIndex, SpillError, WriterOptions,
};
