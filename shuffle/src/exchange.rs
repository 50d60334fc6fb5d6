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
//! | spilled notice | producer of a hybrid partition | a buffer waited its patience for credit and was written to a sealed segment instead ([`ResultPartition::emit_within`], [`ResultPartition::emit_spilled`]) |
//!
//! Events (end-of-partition, spilled notices; watermarks and barriers later) travel in order
//! with buffers and need no credit: they hold no consumer memory.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Semaphore};

use crate::{Buffer, ShuffleError};

/// How a result partition hands data to its consumers.
///
/// `Pipelined`: can it be consumed while produced? yes. Does it outlive the consumer? no.
/// Does it back-pressure the producer? yes, through credits.
///
/// `Hybrid`: can it be consumed while produced? yes. Does it outlive the consumer? its spilled
/// segments live until the job ends. Does it back-pressure the producer? only until a buffer
/// has waited its patience for credit; then the producer spills the buffer to its own
/// segment file and sends a [`SpilledBuffer`] notice, so one slow consumer does not stall
/// the producer's other consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultPartitionType {
    /// Buffers reach the consumer as soon as they are full; bounded by credits.
    Pipelined,
    /// Pipelined while the consumer keeps up; spilled to segment files otherwise.
    Hybrid,
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
    /// The producer wrote a buffer to a spill segment instead of sending it (hybrid).
    Spilled(SpilledBuffer),
    /// The producer's subpartition was dropped before it finished.
    ProducerLost,
}

/// A buffer a producer spilled to a sealed segment of its own spill file instead of waiting
/// for credit; the consumer reads it from there (memory-mapped) when it has room.
#[derive(Clone, Debug)]
pub struct SpilledBuffer {
    /// The producer's spill file (named in errors; the name may already be unlinked).
    pub path: std::path::PathBuf,
    /// An open handle on that file, to read it through.
    pub file: Arc<std::fs::File>,
    /// The sealed segment that holds the buffer.
    pub segment: crate::spill::SegmentIndex,
    /// The partition (consumer) of the buffer inside the segment.
    pub partition: u32,
    /// Raw bytes spilled.
    pub bytes: u64,
}

impl PartialEq for SpilledBuffer {
    fn eq(&self, other: &Self) -> bool {
        (&self.path, &self.segment, self.partition, self.bytes)
            == (&other.path, &other.segment, other.partition, other.bytes)
    }
}

impl Eq for SpilledBuffer {}

/// What a consumer takes off its gate.
#[derive(Debug)]
pub enum Received {
    /// A buffer sent through memory.
    Buffer(Buffer),
    /// A buffer its producer spilled; read it from the segment.
    Spilled(SpilledBuffer),
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
    /// Buffers spilled instead of sent (hybrid), and their bytes.
    pub spilled_buffers: u64,
    pub spilled_bytes: u64,
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

    /// Sends a buffer to one consumer if a credit arrives within `patience`; otherwise gives
    /// the buffer back (`Ok(Some(buffer))`), so the producer can spill it instead of stalling
    /// on this one consumer (the hybrid partition type).
    pub async fn emit_within(
        &mut self,
        subpartition: usize,
        buffer: Buffer,
        patience: std::time::Duration,
    ) -> Result<Option<Buffer>, ShuffleError> {
        let sub = &mut self.subpartitions[subpartition];
        match sub.credits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                let waited = Instant::now();
                let acquired = tokio::time::timeout(patience, sub.credits.acquire()).await;
                self.metrics.backpressure_ns += waited.elapsed().as_nanos() as u64;
                match acquired {
                    Err(_) => return Ok(Some(buffer)),
                    Ok(Err(_)) => {
                        return Err(ShuffleError::ConsumerGone {
                            consumer: sub.consumer,
                        })
                    }
                    Ok(Ok(permit)) => permit.forget(),
                }
            }
        }
        self.send_buffer(subpartition, buffer).map(|()| None)
    }

    /// Tells a consumer that a buffer for it was spilled; needs no credit (the bytes are on
    /// disk, not in the consumer's memory).
    pub fn emit_spilled(
        &mut self,
        subpartition: usize,
        spilled: SpilledBuffer,
    ) -> Result<(), ShuffleError> {
        let sub = &mut self.subpartitions[subpartition];
        self.metrics.spilled_buffers += 1;
        self.metrics.spilled_bytes += spilled.bytes;
        sub.queue
            .send((ChannelIndex(sub.producer), Event::Spilled(spilled)))
            .map_err(|_| ShuffleError::ConsumerGone {
                consumer: sub.consumer,
            })
    }

    fn send_buffer(&mut self, subpartition: usize, buffer: Buffer) -> Result<(), ShuffleError> {
        let sub = &mut self.subpartitions[subpartition];
        self.metrics.buffers += 1;
        self.metrics.bytes += buffer.len() as u64;
        sub.queue
            .send((ChannelIndex(sub.producer), Event::Buffer(buffer)))
            .map_err(|_| ShuffleError::ConsumerGone {
                consumer: sub.consumer,
            })
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
        self.send_buffer(subpartition, buffer)
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
        match self.next_received().await? {
            None => Ok(None),
            Some((channel, Received::Buffer(buffer))) => Ok(Some((channel, buffer))),
            Some((channel, Received::Spilled(_))) => Err(ShuffleError::UnexpectedSpill {
                producer: channel.0,
            }),
        }
    }

    /// The next buffer or spilled-buffer notice from any channel, or `None` once every channel
    /// has ended (for consumers of hybrid partitions).
    pub async fn next_received(
        &mut self,
    ) -> Result<Option<(ChannelIndex, Received)>, ShuffleError> {
        while self.open_channels > 0 {
            let Some((channel, event)) = self.queue.recv().await else {
                let producer = self.ended.iter().position(|ended| !ended).unwrap_or(0);
                return Err(ShuffleError::ProducerLost { producer });
            };
            if let Event::Spilled(spilled) = event {
                self.metrics.spilled_buffers += 1;
                self.metrics.spilled_bytes += spilled.bytes;
                return Ok(Some((channel, Received::Spilled(spilled))));
            }
            if let Some(buffer) = self.on_event(channel, event)? {
                return Ok(Some((channel, Received::Buffer(buffer))));
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
            Event::Spilled(_) => Err(ShuffleError::UnexpectedSpill {
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
