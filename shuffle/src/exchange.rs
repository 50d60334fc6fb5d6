//! The local pipelined exchange: result partitions, input gates and credits.
//!
//! ```text
//!  producer 0: ResultPartition ─┬─ subpartition 0 ──credit──► InputGate 0 (channel 0) ─► consumer 0
//!                               └─ subpartition 1 ──credit──► InputGate 1 (channel 0) ─► consumer 1
//!  producer 1: ResultPartition ─┬─ subpartition 0 ──credit──► InputGate 0 (channel 1)
//!                               └─ subpartition 1 ──credit──► InputGate 1 (channel 1)
//! ```
//!
//! Each (producer, consumer) pair is one logical channel with its own credit counter (a
//! semaphore).
//! All channels of one consumer share one queue, so a consumer waits on one thing and takes
//! buffers in arrival order; a channel without credit holds back only its own producer, never
//! the shared queue (no head-of-line blocking).
//!
//! | state | who changes it | when |
//! |---|---|---|
//! | channel credits | producer takes one | before it enqueues a buffer |
//! | channel credits | consumer returns one | when it takes that buffer off the queue |
//! | channel credits closed | consumer | when its gate is dropped (failure or cancel): waiting producers get [`ShuffleError::ConsumerGone`] |
//! | end-of-partition | producer | [`ResultPartition::finish`]; a subpartition dropped unfinished sends a lost-producer event instead |
//!
//! Events (end-of-partition now; watermarks and barriers later) travel in order with buffers
//! and need no credit: a channel carries at most one end-of-partition.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Semaphore};

use crate::{Buffer, ShuffleError};

/// How a result partition hands data to its consumers.
///
/// `Pipelined`: can it be consumed while produced? yes. Does it outlive the consumer? no.
/// Does it back-pressure the producer? yes, through credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultPartitionType {
    /// Buffers reach the consumer as soon as they are full; bounded by credits.
    Pipelined,
}

/// Index of a channel within an [`InputGate`], equal to the producer subtask's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelIndex(pub usize);

/// What travels on a channel, in order.
#[derive(Debug)]
pub enum Event {
    /// A full (or final, partly full) buffer of records.
    Buffer(Buffer),
    /// The producer has sent everything for this channel.
    EndOfPartition,
    /// The producer's subpartition was dropped before it finished.
    ProducerLost,
}

/// Counters one side of an exchange keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeMetrics {
    /// Buffers moved.
    pub buffers: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Time a producer waited for credit (back-pressure), in nanoseconds.
    pub backpressure_ns: u64,
}

/// Builds a pipelined all-to-all exchange between `producers` and `consumers` subtasks, where
/// every channel starts with `credits_per_channel` credits (at least 1).
pub fn pipelined(
    producers: usize,
    consumers: usize,
    credits_per_channel: usize,
) -> (Vec<ResultPartition>, Vec<InputGate>) {
    let credits_per_channel = credits_per_channel.max(1);
    let mut gates = Vec::with_capacity(consumers);
    let mut senders = Vec::with_capacity(consumers);
    for consumer in 0..consumers {
        let (tx, rx) = mpsc::unbounded_channel();
        let credits: Vec<_> = (0..producers)
            .map(|_| Arc::new(Semaphore::new(credits_per_channel)))
            .collect();
        senders.push((tx, credits.clone()));
        gates.push(InputGate {
            consumer,
            queue: rx,
            credits,
            open_channels: producers,
            ended: vec![false; producers],
            metrics: ExchangeMetrics::default(),
        });
    }
    let partitions = (0..producers)
        .map(|producer| ResultPartition {
            producer,
            subpartitions: senders
                .iter()
                .enumerate()
                .map(|(consumer, (tx, credits))| ResultSubpartition {
                    producer,
                    consumer,
                    credits: credits[producer].clone(),
                    queue: tx.clone(),
                    finished: false,
                })
                .collect(),
            metrics: ExchangeMetrics::default(),
        })
        .collect();
    (partitions, gates)
}

/// One producer subtask's output: one subpartition per consumer subtask.
#[derive(Debug)]
pub struct ResultPartition {
    producer: usize,
    subpartitions: Vec<ResultSubpartition>,
    metrics: ExchangeMetrics,
}

/// The slice of a [`ResultPartition`] that goes to one consumer.
#[derive(Debug)]
pub struct ResultSubpartition {
    producer: usize,
    consumer: usize,
    credits: Arc<Semaphore>,
    queue: mpsc::UnboundedSender<(ChannelIndex, Event)>,
    finished: bool,
}

impl ResultPartition {
    /// The producer subtask this partition belongs to.
    pub fn producer(&self) -> usize {
        self.producer
    }

    /// Number of subpartitions, i.e. consumer subtasks.
    pub fn num_subpartitions(&self) -> usize {
        self.subpartitions.len()
    }

    /// Sends a buffer to one consumer, waiting for a credit first.
    pub async fn emit(&mut self, subpartition: usize, buffer: Buffer) -> Result<(), ShuffleError> {
        let sub = &mut self.subpartitions[subpartition];
        match sub.credits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                let waited = Instant::now();
                let permit =
                    sub.credits
                        .acquire()
                        .await
                        .map_err(|_| ShuffleError::ConsumerGone {
                            consumer: sub.consumer,
                        })?;
                permit.forget();
                self.metrics.backpressure_ns += waited.elapsed().as_nanos() as u64;
            }
        }
        self.metrics.buffers += 1;
        self.metrics.bytes += buffer.len() as u64;
        sub.queue
            .send((ChannelIndex(sub.producer), Event::Buffer(buffer)))
            .map_err(|_| ShuffleError::ConsumerGone {
                consumer: sub.consumer,
            })
    }

    /// Sends end-of-partition on every subpartition.
    pub fn finish(&mut self) -> Result<(), ShuffleError> {
        for sub in &mut self.subpartitions {
            sub.finished = true;
            // A consumer that is already gone does not need the event; if it failed, the job
            // reports its error, not this one.
            let _ = sub
                .queue
                .send((ChannelIndex(sub.producer), Event::EndOfPartition));
        }
        Ok(())
    }

    /// What this partition has sent so far.
    pub fn metrics(&self) -> ExchangeMetrics {
        self.metrics
    }
}

impl Drop for ResultSubpartition {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .queue
                .send((ChannelIndex(self.producer), Event::ProducerLost));
        }
    }
}

/// A consumer subtask's view of all producers of one exchange.
#[derive(Debug)]
pub struct InputGate {
    consumer: usize,
    queue: mpsc::UnboundedReceiver<(ChannelIndex, Event)>,
    credits: Vec<Arc<Semaphore>>,
    open_channels: usize,
    ended: Vec<bool>,
    metrics: ExchangeMetrics,
}

impl InputGate {
    /// The consumer subtask this gate belongs to.
    pub fn consumer(&self) -> usize {
        self.consumer
    }

    /// Number of channels (producers).
    pub fn num_channels(&self) -> usize {
        self.credits.len()
    }

    /// The next buffer from any channel, or `None` once every channel has ended.
    ///
    /// Taking a buffer returns its credit to the producer at once; what the consumer keeps
    /// afterwards is accounted by the consumer (its memory budget), not by the exchange.
    pub async fn next(&mut self) -> Result<Option<(ChannelIndex, Buffer)>, ShuffleError> {
        while self.open_channels > 0 {
            let Some((channel, event)) = self.queue.recv().await else {
                let producer = self.ended.iter().position(|ended| !ended).unwrap_or(0);
                return Err(ShuffleError::ProducerLost { producer });
            };
            if let Some(buffer) = self.on_event(channel, event)? {
                return Ok(Some((channel, buffer)));
            }
        }
        Ok(None)
    }

    /// Like [`InputGate::next`] but never waits: `Ok(None)` means nothing is queued right now
    /// (or every channel has ended; see [`InputGate::is_finished`]).
    pub fn try_next(&mut self) -> Result<Option<(ChannelIndex, Buffer)>, ShuffleError> {
        while self.open_channels > 0 {
            let Ok((channel, event)) = self.queue.try_recv() else {
                return Ok(None);
            };
            if let Some(buffer) = self.on_event(channel, event)? {
                return Ok(Some((channel, buffer)));
            }
        }
        Ok(None)
    }

    /// Whether every channel has delivered end-of-partition.
    pub fn is_finished(&self) -> bool {
        self.open_channels == 0
    }

    /// What this gate has received so far.
    pub fn metrics(&self) -> ExchangeMetrics {
        self.metrics
    }

    fn on_event(
        &mut self,
        channel: ChannelIndex,
        event: Event,
    ) -> Result<Option<Buffer>, ShuffleError> {
        match event {
            Event::Buffer(buffer) => {
                self.credits[channel.0].add_permits(1);
                self.metrics.buffers += 1;
                self.metrics.bytes += buffer.len() as u64;
                Ok(Some(buffer))
            }
            Event::EndOfPartition => {
                if !std::mem::replace(&mut self.ended[channel.0], true) {
                    self.open_channels -= 1;
                }
                Ok(None)
            }
            Event::ProducerLost => Err(ShuffleError::ProducerLost {
                producer: channel.0,
            }),
        }
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        for credits in &self.credits {
            credits.close();
        }
    }
}
