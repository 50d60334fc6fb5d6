//! One authenticated TCP connection between two processes: its reader, its writer, and the
//! logical channels multiplexed over it.
//!
//! Channel numbers are chosen by the consumer side. Frames towards a consumer (buffer, end of
//! partition, error) name a channel this side requested (`inbound`); frames towards a
//! producer (request, credit, close) name a channel the peer requested (`outbound`), so both
//! directions can share a connection without their numbers meeting.
//!
//! | task | per | does |
//! |---|---|---|
//! | reader | connection | decodes frames and hands each to its channel without waiting |
//! | writer | connection | encodes queued frames, several per write |
//! | bridge | consumed channel | turns free slots of the gate into [`Frame::Credit`] |
//! | server | served channel | waits for the registered subpartition, then forwards its events |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use super::frame::{Frame, FrameCodec, PartitionId};
use super::server::Registry;
use crate::exchange::{ChannelIndex, Event, Farewell};
use crate::{Buffer, ShuffleError};

/// Most credits a channel may hold unspent; a peer that grants more breaks the protocol (and
/// would overflow the semaphore).
pub(crate) const MAX_CREDITS: u64 = 1 << 20;

/// Bytes the writer gathers from queued frames before one write.
const WRITE_BATCH: usize = 256 << 10;

/// Longest error message sent to a peer (the rest is cut at a character boundary).
const MAX_MESSAGE: usize = 900;

/// What one connection has moved, and the credits on it right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionMetrics {
    /// The other end (the address dialed, or the address a connection was accepted from).
    pub peer: SocketAddr,
    /// Bytes written to and read from the socket (frames with their headers).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Buffer frames sent and received.
    pub buffers_sent: u64,
    pub buffers_received: u64,
    /// Credits this side granted its peer's producers and they have not used yet.
    pub credits_granted: u64,
    /// Credits the peer granted this side's producers and they have not used yet.
    pub credits_available: u64,
    /// Open channels: consumed (inbound) and served (outbound).
    pub inbound_channels: usize,
    pub outbound_channels: usize,
}

#[derive(Debug, Default)]
struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    buffers_sent: AtomicU64,
    buffers_received: AtomicU64,
}

/// A channel this side consumes: its place in a gate and the credits it announced.
#[derive(Debug)]
struct Inbound {
    index: ChannelIndex,
    gate: mpsc::UnboundedSender<(ChannelIndex, Event)>,
    /// Credits announced minus buffers received: a buffer beyond them is a protocol error.
    outstanding: u64,
    /// Stops the channel's bridge.
    stop: CancellationToken,
}

/// A channel this side serves to the peer.
#[derive(Debug)]
struct Outbound {
    /// The subpartition's credits, once the requested subpartition is attached.
    credits: Option<Arc<Semaphore>>,
    /// Credits granted before the subpartition was attached.
    pending: u64,
    farewell: Option<Arc<Farewell>>,
    /// Stops the channel's server task.
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    next_channel: u32,
    inbound: HashMap<u32, Inbound>,
    outbound: HashMap<u32, Outbound>,
    /// Why the connection was closed, once it was.
    failure: Option<String>,
}

/// One connection, shared by its tasks and by the gates and partitions using it.
#[derive(Debug)]
pub(crate) struct Connection {
    peer: SocketAddr,
    out: mpsc::UnboundedSender<Frame>,
    state: Mutex<State>,
    counters: Counters,
    /// Cancelled when the connection closes; every task of the connection stops on it.
    closed: CancellationToken,
    max_body: usize,
    registry: Arc<Registry>,
}

fn cut(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut at = MAX_MESSAGE;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
    }
    message
}

impl Connection {
    /// Starts the reader and writer of an authenticated `stream`; `closed` ends them.
    pub(crate) fn start(
        stream: TcpStream,
        peer: SocketAddr,
        registry: Arc<Registry>,
        max_body: usize,
        closed: CancellationToken,
    ) -> Arc<Self> {
        // Credits and control frames are small and latency bound.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (out, frames) = mpsc::unbounded_channel();
        let connection = Arc::new(Self {
            peer,
            out,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            closed,
            max_body,
            registry,
        });
        tokio::spawn(connection.clone().read_loop(read));
        tokio::spawn(connection.clone().write_loop(write, frames));
        connection
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the connection was closed (it is then never used again).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub(crate) fn metrics(&self) -> ConnectionMetrics {
        let state = self.lock();
        let credits_granted = state.inbound.values().map(|c| c.outstanding).sum();
        let credits_available = state
            .outbound
            .values()
            .map(|c| {
                c.pending
                    + c.credits
                        .as_ref()
                        .map_or(0, |s| s.available_permits() as u64)
            })
            .sum();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ConnectionMetrics {
            peer: self.peer,
            bytes_sent: load(&self.counters.bytes_sent),
            bytes_received: load(&self.counters.bytes_received),
            buffers_sent: load(&self.counters.buffers_sent),
            buffers_received: load(&self.counters.buffers_received),
            credits_granted,
            credits_available,
            inbound_channels: state.inbound.len(),
            outbound_channels: state.outbound.len(),
        }
    }

    /// Closes the connection because of `reason`: every channel on it fails, naming the peer.
    pub(crate) fn shut(&self, reason: &str) {
        let (inbound, outbound) = {
            let mut state = self.lock();
            if state.failure.is_some() {
                return;
            }
            state.failure = Some(reason.to_string());
            (
                std::mem::take(&mut state.inbound),
                std::mem::take(&mut state.outbound),
            )
        };
        self.closed.cancel();
        tracing::debug!(peer = %self.peer, reason, "shuffle connection closed");
        for (_, channel) in inbound {
            channel.stop.cancel();
            let error = ShuffleError::RemoteProducerLost {
                producer: channel.index.0,
                peer: self.peer,
                reason: reason.to_string(),
            };
            let _ = channel.gate.send((channel.index, Event::Failed(error)));
        }
        for (_, channel) in outbound {
            channel.stop.cancel();
            if let Some(farewell) = &channel.farewell {
                farewell.set(self.peer, reason);
            }
            if let Some(credits) = &channel.credits {
                credits.close();
            }
        }
    }

    /// Consumes `subpartition` of `partition` as channel `index` of the gate whose queue is
    /// `gate` and whose credits for the channel are `credits`; `initial` credits were taken
    /// from that semaphore already and are granted with the request.
    pub(crate) fn request(
        self: &Arc<Self>,
        index: ChannelIndex,
        gate: mpsc::UnboundedSender<(ChannelIndex, Event)>,
        credits: Arc<Semaphore>,
        partition: PartitionId,
        subpartition: u32,
        initial: u32,
    ) {
        let stop = self.closed.child_token();
        let channel = {
            let mut state = self.lock();
            let refused = match (&state.failure, state.next_channel.checked_add(1)) {
                (Some(reason), _) => Some(reason.clone()),
                (None, None) => Some("no channel numbers left on the connection".to_string()),
                (None, Some(_)) => None,
            };
            if let Some(reason) = refused {
                let error = ShuffleError::RemoteProducerLost {
                    producer: index.0,
                    peer: self.peer,
                    reason,
                };
                let _ = gate.send((index, Event::Failed(error)));
                return;
            }
            let channel = state.next_channel;
            state.next_channel += 1;
            state.inbound.insert(
                channel,
                Inbound {
                    index,
                    gate,
                    outstanding: u64::from(initial),
                    stop: stop.clone(),
                },
            );
            // Under the lock: the request goes out before any credit of its channel.
            let _ = self.out.send(Frame::Request {
                channel,
                partition,
                subpartition,
                credits: initial,
            });
            channel
        };
        tokio::spawn(self.clone().bridge(channel, credits, stop));
    }

    /// Announces the gate's free slots of `channel` to the producer as they appear; closes
    /// the channel when the gate is dropped.
    async fn bridge(
        self: Arc<Self>,
        channel: u32,
        credits: Arc<Semaphore>,
        stop: CancellationToken,
    ) {
        loop {
            let permit = tokio::select! {
                permit = credits.acquire() => permit,
                _ = stop.cancelled() => return,
            };
            let mut state = self.lock();
            let Ok(permit) = permit else {
                // The gate was dropped: the producer stops sending on this channel.
                if state.inbound.remove(&channel).is_some() {
                    let _ = self.out.send(Frame::Close { channel });
                }
                return;
            };
            permit.forget();
            let mut granted = 1u32;
            while let Ok(permit) = credits.try_acquire() {
                permit.forget();
                granted += 1;
            }
            let Some(inbound) = state.inbound.get_mut(&channel) else {
                return;
            };
            inbound.outstanding += u64::from(granted);
            let _ = self.out.send(Frame::Credit {
                channel,
                credits: granted,
            });
        }
    }

    async fn read_loop(self: Arc<Self>, mut read: OwnedReadHalf) {
        let mut codec = FrameCodec::new(self.max_body);
        let mut buffer = BytesMut::with_capacity(64 << 10);
        let reason = loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => match self.on_frame(frame) {
                    Ok(()) => continue,
                    Err(reason) => break format!("protocol error: {reason}"),
                },
                Ok(None) => {}
                Err(error) => break format!("a bad frame: {error}"),
            }
            if buffer.capacity() - buffer.len() < 8 << 10 {
                buffer.reserve(64 << 10);
            }
            let read = tokio::select! {
                read = read.read_buf(&mut buffer) => read,
                // Closed by `shut` (then this does nothing) or by the server shutting down.
                _ = self.closed.cancelled() => break "this process's shuffle server shut down".to_string(),
            };
            match read {
                Ok(0) if buffer.is_empty() => break "the peer closed the connection".to_string(),
                Ok(0) => {
                    break "the peer closed the connection in the middle of a frame".to_string()
                }
                Ok(bytes) => {
                    self.counters
                        .bytes_received
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                }
                Err(error) => break format!("reading from the connection failed: {error}"),
            }
        };
        self.shut(&reason);
    }

    async fn write_loop(
        self: Arc<Self>,
        mut write: OwnedWriteHalf,
        mut frames: mpsc::UnboundedReceiver<Frame>,
    ) {
        let mut codec = FrameCodec::new(self.max_body);
        let mut buffer = BytesMut::new();
        loop {
            let frame = tokio::select! {
                frame = frames.recv() => frame,
                _ = self.closed.cancelled() => return,
            };
            let mut next = frame;
            while let Some(frame) = next.take() {
                if matches!(frame, Frame::Buffer { .. }) {
                    self.counters.buffers_sent.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(error) = codec.encode(frame, &mut buffer) {
                    self.shut(&format!("cannot send a frame: {error}"));
                    return;
                }
                if buffer.len() < WRITE_BATCH {
                    next = frames.try_recv().ok();
                }
            }
            let written = tokio::select! {
                written = write.write_all(&buffer) => written,
                _ = self.closed.cancelled() => return,
            };
            if let Err(error) = written {
                self.shut(&format!("writing to the connection failed: {error}"));
                return;
            }
            self.counters
                .bytes_sent
                .fetch_add(buffer.len() as u64, Ordering::Relaxed);
            buffer.clear();
        }
    }

    /// Hands one frame to its channel, never waiting; `Err` is a protocol error.
    fn on_frame(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Buffer { channel, payload } => {
                // The copy out of the read buffer happens outside the lock.
                let buffer = Buffer::from(Vec::from(payload));
                let mut state = self.lock();
                let known = channel < state.next_channel;
                match state.inbound.get_mut(&channel) {
                    // A channel this side closed: buffers already on their way are dropped.
                    None if known => Ok(()),
                    None => Err(format!("a buffer on channel {channel}, never requested")),
                    Some(inbound) if inbound.outstanding == 0 => {
                        Err(format!("a buffer on channel {channel} without credit"))
                    }
                    Some(inbound) => {
                        inbound.outstanding -= 1;
                        self.counters
                            .buffers_received
                            .fetch_add(1, Ordering::Relaxed);
                        // Never waits: the queue is unbounded and credit bounds what is in it.
                        let _ = inbound.gate.send((inbound.index, Event::Buffer(buffer)));
                        Ok(())
                    }
                }
            }
            Frame::EndOfPartition { channel } => {
                self.end_inbound(channel, |_| Event::EndOfPartition)
            }
            Frame::Error { channel, message } => self.end_inbound(channel, |index| {
                Event::Failed(ShuffleError::RemoteProducerFailed {
                    producer: index.0,
                    peer: self.peer,
                    reason: message,
                })
            }),
            Frame::Request {
                channel,
                partition,
                subpartition,
                credits,
            } => {
                let mut state = self.lock();
                if state.outbound.contains_key(&channel) {
                    return Err(format!("channel {channel} requested while open"));
                }
                if u64::from(credits) > MAX_CREDITS {
                    return Err(format!("{credits} credits granted on channel {channel}"));
                }
                let stop = self.closed.child_token();
                state.outbound.insert(
                    channel,
                    Outbound {
                        credits: None,
                        pending: u64::from(credits),
                        farewell: None,
                        stop: stop.clone(),
                    },
                );
                drop(state);
                tokio::spawn(self.clone().serve(channel, partition, subpartition, stop));
                Ok(())
            }
            Frame::Credit { channel, credits } => {
                let mut state = self.lock();
                // A channel that ended meanwhile: its late credits are void.
                let Some(outbound) = state.outbound.get_mut(&channel) else {
                    return Ok(());
                };
                let held = outbound.pending
                    + outbound
                        .credits
                        .as_ref()
                        .map_or(0, |s| s.available_permits() as u64);
                if held + u64::from(credits) > MAX_CREDITS {
                    return Err(format!(
                        "{credits} more credits on channel {channel}, which holds {held}"
                    ));
                }
                match &outbound.credits {
                    Some(semaphore) => semaphore.add_permits(credits as usize),
                    None => outbound.pending += u64::from(credits),
                }
                Ok(())
            }
            Frame::Close { channel } => {
                let removed = self.lock().outbound.remove(&channel);
                if let Some(outbound) = removed {
                    outbound.stop.cancel();
                    if let Some(farewell) = &outbound.farewell {
                        farewell.set(self.peer, "the consumer closed the channel");
                    }
                    if let Some(credits) = &outbound.credits {
                        credits.close();
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends inbound `channel` with the event `last` makes.
    fn end_inbound(
        &self,
        channel: u32,
        last: impl FnOnce(ChannelIndex) -> Event,
    ) -> Result<(), String> {
        let mut state = self.lock();
        match state.inbound.remove(&channel) {
            Some(inbound) => {
                inbound.stop.cancel();
                let _ = inbound.gate.send((inbound.index, last(inbound.index)));
                Ok(())
            }
            None if channel < state.next_channel => Ok(()),
            None => Err(format!("channel {channel} ended, never requested")),
        }
    }

    /// Serves outbound `channel`: waits for the requested subpartition, attaches its credits
    /// and forwards its events until the channel ends.
    async fn serve(
        self: Arc<Self>,
        channel: u32,
        partition: PartitionId,
        subpartition: u32,
        stop: CancellationToken,
    ) {
        let found = self.registry.take(partition, subpartition, &stop).await;
        let mut registered = match found {
            Ok(registered) => registered,
            Err(reason) => {
                if self.lock().outbound.remove(&channel).is_some() {
                    let message = cut(reason);
                    let _ = self.out.send(Frame::Error { channel, message });
                }
                return;
            }
        };
        {
            let mut state = self.lock();
            let failure = state.failure.clone();
            match state.outbound.get_mut(&channel) {
                Some(outbound) => {
                    registered.credits.add_permits(outbound.pending as usize);
                    outbound.pending = 0;
                    outbound.credits = Some(registered.credits.clone());
                    outbound.farewell = Some(registered.farewell.clone());
                }
                None => {
                    // The consumer closed the channel, or the connection, meanwhile.
                    let reason =
                        failure.unwrap_or_else(|| "the consumer closed the channel".into());
                    registered.farewell.set(self.peer, reason);
                    registered.credits.close();
                    return;
                }
            }
        }
        tracing::debug!(peer = %self.peer, channel, %partition, subpartition, "serving a subpartition");
        loop {
            let event = tokio::select! {
                event = registered.events.recv() => event,
                _ = stop.cancelled() => return,
            };
            let (frame, last) = match event {
                Some((_, Event::Buffer(buffer))) if buffer.len() > self.max_body => (
                    Frame::Error {
                        channel,
                        message: format!(
                            "a buffer of {} bytes, more than the connection's cap of {}",
                            buffer.len(),
                            self.max_body
                        ),
                    },
                    true,
                ),
                Some((_, Event::Buffer(buffer))) => (
                    Frame::Buffer {
                        channel,
                        payload: Bytes::from(buffer.into_vec()),
                    },
                    false,
                ),
                Some((_, Event::EndOfPartition)) => (Frame::EndOfPartition { channel }, true),
                Some((_, Event::Failed(ShuffleError::ProducerFailed { reason, .. }))) => (
                    Frame::Error {
                        channel,
                        message: cut(reason),
                    },
                    true,
                ),
                Some((_, Event::Failed(error))) => (
                    Frame::Error {
                        channel,
                        message: cut(error.to_string()),
                    },
                    true,
                ),
                Some((_, Event::Spilled(_))) => (
                    Frame::Error {
                        channel,
                        message: "a spilled buffer, which is not served over the network yet"
                            .into(),
                    },
                    true,
                ),
                Some((_, Event::ProducerLost)) | None => (
                    Frame::Error {
                        channel,
                        message: format!(
                            "producer subtask {} ended without finishing its partition",
                            registered.producer
                        ),
                    },
                    true,
                ),
            };
            if last {
                let removed = self.lock().outbound.remove(&channel);
                if removed.is_some() {
                    let _ = self.out.send(frame);
                }
                // Sends after the end (none from a well-behaved producer) fail.
                registered.farewell.set(self.peer, "the channel has ended");
                registered.credits.close();
                return;
            }
            let _ = self.out.send(frame);
        }
    }
}
