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
//! | end-of-partition | producer | [`ResultPartition::finish`]; a subpartition dropped unfinished sends a lost-producer event instead; [`ResultPartition::fail`] sends its reason instead |
//!
//! | spilled notice | producer of a hybrid partition | a buffer waited its patience for credit and was written to a sealed segment instead ([`ResultPartition::emit_within`], [`ResultPartition::emit_spilled`]) |
//!
//! Events (end-of-partition, spilled notices; watermarks and barriers later) travel in order
//! with buffers and need no credit: they hold no consumer memory.
//!
//! A channel may cross processes ([`crate::net`]): the gate keeps its queue and semaphores and
//! the network layer carries buffers, events and credits between them, so neither side can
//! tell.

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
///
/// `Blocking`: can it be consumed while produced? no: its consumers are deployed after every
/// producer finished (the scheduler's business). Does it outlive the consumer? it lives until
/// the job ends. Does it back-pressure the producer? never: every buffer goes to the
/// producer's one segment file (one file per producer, never one per producer × consumer),
/// and the consumer reads its partition of every producer's file, zero-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultPartitionType {
    /// Buffers reach the consumer as soon as they are full; bounded by credits.
    Pipelined,
    /// Pipelined while the consumer keeps up; spilled to segment files otherwise.
    Hybrid,
    /// Written whole to segment files, read after the producers finished.
    Blocking,
}

impl ResultPartitionType {
    /// Whether a consumer can read this partition while its producer still writes it.
    pub fn is_pipelined(self) -> bool {
        matches!(self, Self::Pipelined | Self::Hybrid)
    }

    /// The type's name, for messages and timelines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipelined => "pipelined",
            Self::Hybrid => "hybrid",
            Self::Blocking => "blocking",
        }
    }
}

/// Where a partition that spills (hybrid, blocking) writes its producer's segment file.
#[derive(Clone, Debug)]
pub struct SpillTarget {
    /// The folder of the file (a private job folder; the file is unlinked once created and
    /// read through handles).
    pub dir: std::path::PathBuf,
    pub options: crate::spill::WriterOptions,
    /// Bytes per record in this exchange's buffers (blocks count records).
    pub record_bytes: usize,
    /// Hybrid: how long a buffer waits for credit before it is spilled.
    pub patience: std::time::Duration,
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
    /// The channel failed and says why: a producer that reported its failure
    /// ([`ResultPartition::fail`]), or a remote channel whose producer or connection was lost.
    Failed(ShuffleError),
}

/// A buffer a producer spilled to a sealed segment of its own spill file instead of waiting
/// for credit; the consumer reads it from there (memory-mapped) when it has room.
#[derive(Clone, Debug)]
pub struct SpilledBuffer {
    /// The producer's spill file (named in errors; the name may already be unlinked).
    pub path: std::path::PathBuf,
    /// An open handle on that file, to read it through.
    pub file: Arc<std::fs::File>,
    /// The sealed segment that holds the buffer (shared by the notices of its partitions).
    pub segment: Arc<crate::spill::SegmentIndex>,
    /// The partition (consumer) of the buffer inside the segment.
    pub partition: u32,
    /// Raw bytes spilled.
    pub bytes: u64,
}

impl SpilledBuffer {
    /// A reader over the segment that holds the buffer; its
    /// [`crate::SegmentFileReader::partition_blocks`] of (`segment.segment`, `partition`) are
    /// the buffer's bytes, zero-copy where a block is stored raw.
    pub fn open(&self) -> Result<crate::SegmentFileReader, crate::SpillError> {
        let file = self
            .file
            .try_clone()
            .map_err(|source| crate::SpillError::Io {
                path: self.path.clone(),
                operation: "duplicate a handle of",
                offset: 0,
                source: Arc::new(source),
            })?;
        crate::SegmentFileReader::from_file(&self.path, file, [(*self.segment).clone()])
    }
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
    /// Hybrid: buffers spilled at once because their consumer was under memory pressure.
    pub pressure_spills: u64,
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
        let (pressure, pressure_rx) = tokio::sync::watch::channel(false);
        senders.push((tx, credits.clone(), pressure_rx));
        gates.push(InputGate {
            consumer,
            queue: rx,
            credits,
            open_channels: producers,
            ended: vec![false; producers],
            metrics: ExchangeMetrics::default(),
            pressure,
        });
    }
    let partitions = (0..producers)
        .map(|producer| ResultPartition {
            producer,
            subpartitions: senders
                .iter()
                .enumerate()
                .map(|(consumer, (tx, credits, pressure))| ResultSubpartition {
                    producer,
                    consumer,
                    credits: credits[producer].clone(),
                    queue: tx.clone(),
                    finished: false,
                    pressure: pressure.clone(),
                    farewell: None,
                })
                .collect(),
            metrics: ExchangeMetrics::default(),
            kind: ResultPartitionType::Pipelined,
            spill: None,
            writer: None,
            consumers,
            blocking: None,
        })
        .collect();
    (partitions, gates)
}

/// What the producers of a blocking exchange wrote: for each producer, the spilled-buffer
/// notices of every attempt that finished (pending) and of the one the runtime accepted
/// (committed), per consumer. Consumers' gates are built from committed notices when they are
/// deployed, so a failed producer attempt leaves no trace and a consumer attempt can be
/// retried over the same data.
#[derive(Debug)]
pub struct BlockingStore {
    producers: usize,
    consumers: usize,
    spill: SpillTarget,
    state: std::sync::Mutex<BlockingState>,
}

#[derive(Debug, Default)]
struct BlockingState {
    pending: std::collections::HashMap<(usize, u32), Vec<Vec<SpilledBuffer>>>,
    committed: Vec<Option<Vec<Vec<SpilledBuffer>>>>,
    /// Gates of consumers deployed before every producer finished (slow start): each gets a
    /// producer's notices when that producer is committed.
    subscribers: Vec<(usize, mpsc::UnboundedSender<(ChannelIndex, Event)>)>,
}

/// Queues `notices` and the end of `producer`'s partition on a consumer's gate; false when
/// the gate is gone.
fn deliver(
    tx: &mpsc::UnboundedSender<(ChannelIndex, Event)>,
    producer: usize,
    notices: &[SpilledBuffer],
) -> bool {
    notices.iter().all(|notice| {
        tx.send((ChannelIndex(producer), Event::Spilled(notice.clone())))
            .is_ok()
    }) && tx
        .send((ChannelIndex(producer), Event::EndOfPartition))
        .is_ok()
}

/// A blocking exchange between `producers` and `consumers` subtasks, spilling into `spill`.
pub fn blocking(producers: usize, consumers: usize, spill: SpillTarget) -> Arc<BlockingStore> {
    Arc::new(BlockingStore {
        producers,
        consumers,
        spill,
        state: std::sync::Mutex::new(BlockingState {
            pending: Default::default(),
            committed: vec![None; producers],
            subscribers: Vec::new(),
        }),
    })
}

impl BlockingStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BlockingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The result partition of `producer`'s attempt `attempt`, writing into `dir`.
    pub fn partition(
        self: &Arc<Self>,
        producer: usize,
        attempt: u32,
        dir: Option<std::path::PathBuf>,
    ) -> ResultPartition {
        let mut spill = self.spill.clone();
        if let Some(dir) = dir {
            spill.dir = dir;
        }
        ResultPartition {
            producer,
            subpartitions: Vec::new(),
            metrics: ExchangeMetrics::default(),
            kind: ResultPartitionType::Blocking,
            spill: Some(spill),
            writer: None,
            consumers: self.consumers,
            blocking: Some(BlockingOutput {
                store: self.clone(),
                attempt,
                notices: vec![Vec::new(); self.consumers],
            }),
        }
    }

    /// Accepts `producer`'s attempt `attempt` (it finished and its subtask succeeded); gates
    /// already deployed receive its output now.
    pub fn commit(&self, producer: usize, attempt: u32) {
        let mut state = self.lock();
        if state.committed[producer].is_some() {
            return;
        }
        if let Some(notices) = state.pending.remove(&(producer, attempt)) {
            state
                .subscribers
                .retain(|(consumer, tx)| deliver(tx, producer, &notices[*consumer]));
            state.committed[producer] = Some(notices);
        }
    }

    /// How many producers have been committed.
    pub fn committed_producers(&self) -> usize {
        self.lock().committed.iter().filter(|c| c.is_some()).count()
    }

    /// Forgets `producer`'s attempt `attempt` (its subtask failed); its files go with it.
    pub fn discard(&self, producer: usize, attempt: u32) {
        self.lock().pending.remove(&(producer, attempt));
    }

    /// A gate for `consumer` over every producer's output: the committed ones at once, in
    /// producer order, each other one when it is committed (a consumer deployed before its
    /// producers finished copies their outputs as they appear, like Hadoop's slow start).
    pub fn gate(&self, consumer: usize) -> Result<InputGate, ShuffleError> {
        let mut state = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        for (producer, committed) in state.committed.iter().enumerate() {
            if let Some(notices) = committed {
                deliver(&tx, producer, &notices[consumer]);
            }
        }
        if state.committed.iter().any(Option::is_none) {
            state.subscribers.push((consumer, tx));
        }
        Ok(InputGate {
            consumer,
            queue: rx,
            credits: (0..self.producers)
                .map(|_| Arc::new(Semaphore::new(0)))
                .collect(),
            open_channels: self.producers,
            ended: vec![false; self.producers],
            metrics: ExchangeMetrics::default(),
            pressure: tokio::sync::watch::channel(false).0,
        })
    }
}

/// Builds an all-to-all exchange of `kind` between `producers` and `consumers` subtasks.
/// Pipelined channels start with `credits_per_channel` credits; hybrid and blocking
/// partitions spill into `spill` (required for them).
pub fn exchange(
    kind: ResultPartitionType,
    producers: usize,
    consumers: usize,
    credits_per_channel: usize,
    spill: Option<SpillTarget>,
) -> Result<(Vec<ResultPartition>, Vec<InputGate>), ShuffleError> {
    if kind == ResultPartitionType::Blocking {
        // Blocking exchanges are built with [`blocking`]: their gates come later.
        return Err(ShuffleError::NoSpillTarget {
            kind: "blocking partition built as a channel",
        });
    }
    if kind != ResultPartitionType::Pipelined && spill.is_none() {
        return Err(ShuffleError::NoSpillTarget {
            kind: kind.as_str(),
        });
    }
    let (mut partitions, gates) = pipelined(producers, consumers, credits_per_channel);
    for partition in &mut partitions {
        partition.kind = kind;
        partition.spill = spill.clone();
    }
    Ok((partitions, gates))
}

/// One producer subtask's output: one subpartition per consumer subtask.
pub struct ResultPartition {
    producer: usize,
    subpartitions: Vec<ResultSubpartition>,
    metrics: ExchangeMetrics,
    kind: ResultPartitionType,
    spill: Option<SpillTarget>,
    /// This producer's segment file, created at the first spill.
    writer: Option<crate::spill::SegmentFileWriter>,
    /// Consumers (subpartitions), also when there are no channels (blocking).
    consumers: usize,
    /// Blocking: where this attempt's notices go at `finish`, and what it spilled so far.
    blocking: Option<BlockingOutput>,
}

/// A blocking partition's attempt: its store, attempt number and notices per consumer.
#[derive(Debug)]
struct BlockingOutput {
    store: Arc<BlockingStore>,
    attempt: u32,
    notices: Vec<Vec<SpilledBuffer>>,
}

/// The slice of a [`ResultPartition`] that goes to one consumer.
#[derive(Debug)]
pub struct ResultSubpartition {
    producer: usize,
    consumer: usize,
    credits: Arc<Semaphore>,
    queue: mpsc::UnboundedSender<(ChannelIndex, Event)>,
    finished: bool,
    /// Whether the consumer is under memory pressure (see [`InputGate::set_under_pressure`]).
    pressure: tokio::sync::watch::Receiver<bool>,
    /// A subpartition served to a remote consumer: why and where that consumer went away,
    /// set by the network layer before it closes the credits.
    farewell: Option<Arc<Farewell>>,
}

/// Why the remote end of a subpartition went away: the peer and the reason, first one wins.
#[derive(Debug, Default)]
pub(crate) struct Farewell(std::sync::Mutex<Option<(std::net::SocketAddr, String)>>);

impl Farewell {
    /// Records why the consumer went away, unless a reason was recorded already.
    pub(crate) fn set(&self, peer: std::net::SocketAddr, reason: impl Into<String>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((peer, reason.into()));
        }
    }

    fn get(&self) -> Option<(std::net::SocketAddr, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResultSubpartition {
    /// A subpartition whose buffers go to `queue` under `credits` (the network layer's
    /// constructor: a remote consumer's channel, or a local channel of a mixed gate).
    pub(crate) fn new(
        producer: usize,
        consumer: usize,
        credits: Arc<Semaphore>,
        queue: mpsc::UnboundedSender<(ChannelIndex, Event)>,
        pressure: tokio::sync::watch::Receiver<bool>,
        farewell: Option<Arc<Farewell>>,
    ) -> Self {
        Self {
            producer,
            consumer,
            credits,
            queue,
            finished: false,
            pressure,
            farewell,
        }
    }

    /// The consumer subtask this subpartition feeds.
    pub fn consumer(&self) -> usize {
        self.consumer
    }

    /// The error a send gets once the consumer is gone: naming the remote peer and its
    /// reason when the consumer was remote.
    fn gone(&self) -> ShuffleError {
        match self.farewell.as_ref().and_then(|f| f.get()) {
            Some((peer, reason)) => ShuffleError::RemoteConsumerGone {
                consumer: self.consumer,
                peer,
                reason,
            },
            None => ShuffleError::ConsumerGone {
                consumer: self.consumer,
            },
        }
    }
}

impl std::fmt::Debug for ResultPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultPartition")
            .field("producer", &self.producer)
            .field("kind", &self.kind)
            .field("subpartitions", &self.subpartitions.len())
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl ResultPartition {
    /// The producer subtask this partition belongs to.
    pub fn producer(&self) -> usize {
        self.producer
    }

    /// Number of subpartitions, i.e. consumer subtasks.
    pub fn num_subpartitions(&self) -> usize {
        self.consumers
    }

    /// The partition's type.
    pub fn kind(&self) -> ResultPartitionType {
        self.kind
    }

    /// Moves this producer's segment file to `dir` (before anything was spilled).
    pub fn set_spill_dir(&mut self, dir: std::path::PathBuf) {
        if let Some(target) = &mut self.spill {
            target.dir = dir;
        }
    }

    /// Hands a full buffer to consumer `subpartition` the way the partition's type says:
    /// pipelined waits for credit; hybrid waits its patience, then spills; blocking spills.
    /// Returns the buffer when its bytes went to the segment file, for the caller to reuse.
    pub async fn send(
        &mut self,
        subpartition: usize,
        buffer: Buffer,
    ) -> Result<Option<Buffer>, ShuffleError> {
        let buffer = match self.kind {
            ResultPartitionType::Pipelined => {
                self.emit(subpartition, buffer).await?;
                return Ok(None);
            }
            ResultPartitionType::Hybrid => {
                // `exchange` gives every hybrid partition a spill target.
                let patience = self.spill.as_ref().map(|s| s.patience).unwrap_or_default();
                match self.emit_within(subpartition, buffer, patience).await? {
                    None => return Ok(None),
                    Some(buffer) => buffer,
                }
            }
            ResultPartitionType::Blocking => buffer,
        };
        // The disk write blocks this worker briefly; tell the runtime so other tasks move on.
        let spilled = tokio::task::block_in_place(|| self.spill_buffer(subpartition, &buffer))?;
        tracing::trace!(
            producer = self.producer,
            consumer = subpartition,
            bytes = spilled.bytes,
            "spilled a buffer"
        );
        match &mut self.blocking {
            // Blocking: the notice waits for `finish`, and for the runtime to accept the
            // attempt.
            Some(output) => {
                self.metrics.spilled_buffers += 1;
                self.metrics.spilled_bytes += spilled.bytes;
                output.notices[subpartition].push(spilled);
            }
            None => self.emit_spilled(subpartition, spilled)?,
        }
        Ok(Some(buffer))
    }

    /// Publishes a sealed segment of a file the producer wrote itself (a map output sorted
    /// and indexed by partition, as Hadoop's map side writes it): each non-empty partition
    /// becomes one spilled-buffer notice for its consumer, read from the file zero-copy.
    /// Blocking partitions only; the notices wait for [`ResultPartition::finish`].
    pub fn publish_segment(
        &mut self,
        path: &std::path::Path,
        file: Arc<std::fs::File>,
        segment: &crate::spill::SegmentIndex,
    ) -> Result<(), ShuffleError> {
        let record_bytes = self.spill.as_ref().map_or(1, |s| s.record_bytes.max(1)) as u64;
        let shared = Arc::new(segment.clone());
        let Some(output) = &mut self.blocking else {
            return Err(ShuffleError::NoSpillTarget {
                kind: "a published segment outside a blocking partition",
            });
        };
        for entry in &segment.partitions {
            let Some(notices) = output.notices.get_mut(entry.partition as usize) else {
                return Err(ShuffleError::NoSpillTarget {
                    kind: "a published segment with a partition past the consumers",
                });
            };
            let bytes = entry.records * record_bytes;
            notices.push(SpilledBuffer {
                path: path.to_path_buf(),
                file: file.clone(),
                segment: shared.clone(),
                partition: entry.partition,
                bytes,
            });
            self.metrics.spilled_buffers += 1;
            self.metrics.spilled_bytes += bytes;
        }
        Ok(())
    }

    /// Appends `buffer` as one sealed segment of this producer's segment file.
    fn spill_buffer(
        &mut self,
        subpartition: usize,
        buffer: &Buffer,
    ) -> Result<SpilledBuffer, ShuffleError> {
        let target = self.spill.as_ref().ok_or(ShuffleError::NoSpillTarget {
            kind: self.kind.as_str(),
        })?;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                // Producers of several edges (a join's two inputs) and attempts of one
                // producer share the folder: the name is made unique.
                let stem = format!("producer-{}.{}", self.producer, self.kind.as_str());
                let writer = crate::spill::SegmentFileWriter::create_unlinked(
                    &target.dir,
                    &stem,
                    target.options,
                )?;
                self.writer.insert(writer)
            }
        };
        writer.append_records(
            subpartition as u32,
            target.record_bytes.max(1),
            buffer.as_bytes(),
        )?;
        let segment = writer.seal_segment()?;
        Ok(SpilledBuffer {
            path: writer.path().to_path_buf(),
            file: Arc::new(writer.read_handle()?),
            segment: Arc::new(segment),
            partition: subpartition as u32,
            bytes: buffer.len() as u64,
        })
    }

    /// Raw bytes this partition wrote to its segment file.
    pub fn spilled_bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.stats().raw_bytes)
    }

    /// Sends a buffer to one consumer if a credit arrives within `patience`; otherwise gives
    /// the buffer back (`Ok(Some(buffer))`), so the producer can spill it instead of stalling
    /// on this one consumer (the hybrid partition type). Two triggers: the time (`patience`
    /// passed without credit) and memory pressure (the consumer said it has no memory to take
    /// buffers for a while: then the buffer comes back at once, without waiting).
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
                if *sub.pressure.borrow() {
                    self.metrics.pressure_spills += 1;
                    return Ok(Some(buffer));
                }
                let waited = Instant::now();
                let pressure = &mut sub.pressure;
                let acquired = tokio::select! {
                    acquired = tokio::time::timeout(patience, sub.credits.acquire()) => acquired,
                    // A closed watch (the gate is gone) is not pressure: the credit wait
                    // reports the consumer gone instead.
                    Ok(_) = pressure.wait_for(|under| *under) => {
                        self.metrics.backpressure_ns += waited.elapsed().as_nanos() as u64;
                        self.metrics.pressure_spills += 1;
                        return Ok(Some(buffer));
                    }
                };
                self.metrics.backpressure_ns += waited.elapsed().as_nanos() as u64;
                match acquired {
                    Err(_) => return Ok(Some(buffer)),
                    Ok(Err(_)) => return Err(sub.gone()),
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
            .map_err(|_| sub.gone())
    }

    fn send_buffer(&mut self, subpartition: usize, buffer: Buffer) -> Result<(), ShuffleError> {
        let sub = &mut self.subpartitions[subpartition];
        self.metrics.buffers += 1;
        self.metrics.bytes += buffer.len() as u64;
        sub.queue
            .send((ChannelIndex(sub.producer), Event::Buffer(buffer)))
            .map_err(|_| sub.gone())
    }

    /// Sends a buffer to one consumer, waiting for a credit first.
    pub async fn emit(&mut self, subpartition: usize, buffer: Buffer) -> Result<(), ShuffleError> {
        let sub = &mut self.subpartitions[subpartition];
        match sub.credits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                let waited = Instant::now();
                let permit = match sub.credits.acquire().await {
                    Ok(permit) => permit,
                    Err(_) => return Err(sub.gone()),
                };
                permit.forget();
                self.metrics.backpressure_ns += waited.elapsed().as_nanos() as u64;
            }
        }
        self.send_buffer(subpartition, buffer)
    }

    /// Sends end-of-partition on every subpartition.
    pub fn finish(&mut self) -> Result<(), ShuffleError> {
        if let Some(output) = self.blocking.take() {
            output
                .store
                .lock()
                .pending
                .insert((self.producer, output.attempt), output.notices);
            return Ok(());
        }
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

    /// Fails every subpartition with `reason` instead of finishing it: each consumer's
    /// `next` returns [`ShuffleError::ProducerFailed`] (a remote consumer
    /// [`ShuffleError::RemoteProducerFailed`], with the reason sent over the connection).
    pub fn fail(&mut self, reason: &str) {
        for sub in &mut self.subpartitions {
            sub.finished = true;
            let error = ShuffleError::ProducerFailed {
                producer: sub.producer,
                reason: reason.to_string(),
            };
            let _ = sub
                .queue
                .send((ChannelIndex(sub.producer), Event::Failed(error)));
        }
    }

    /// What this partition has sent so far.
    pub fn metrics(&self) -> ExchangeMetrics {
        self.metrics
    }

    /// A pipelined partition over subpartitions made elsewhere (the network layer: some
    /// served to remote consumers, some feeding gates of this process).
    pub(crate) fn pipelined_from(producer: usize, subpartitions: Vec<ResultSubpartition>) -> Self {
        Self {
            producer,
            consumers: subpartitions.len(),
            subpartitions,
            metrics: ExchangeMetrics::default(),
            kind: ResultPartitionType::Pipelined,
            spill: None,
            writer: None,
            blocking: None,
        }
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
    /// Tells this consumer's producers whether it is under memory pressure.
    pressure: tokio::sync::watch::Sender<bool>,
}

impl InputGate {
    /// A gate over `queue` whose channel `i` is credited by `credits[i]` (the network
    /// layer's constructor).
    pub(crate) fn from_parts(
        consumer: usize,
        queue: mpsc::UnboundedReceiver<(ChannelIndex, Event)>,
        credits: Vec<Arc<Semaphore>>,
        pressure: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        let channels = credits.len();
        Self {
            consumer,
            queue,
            credits,
            open_channels: channels,
            ended: vec![false; channels],
            metrics: ExchangeMetrics::default(),
            pressure,
        }
    }

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

    /// Says whether this consumer is under memory pressure: it cannot take buffers for a
    /// while (its memory is full and it is spilling). Hybrid producers then spill buffers for
    /// it at once instead of waiting their patience for credit.
    pub fn set_under_pressure(&self, under: bool) {
        self.pressure.send_replace(under);
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
            Event::Failed(error) => Err(error),
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
