//! [`ShuffleServer`]: a process's end of the network exchange (see [`crate::net`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::auth::{self, Secret};
use super::conn::{Connection, ConnectionMetrics, MAX_CREDITS};
use super::frame::{PartitionId, MIN_BODY_CAP};
use super::NetError;
use crate::exchange::{ChannelIndex, Event, Farewell};
use crate::{InputGate, ResultPartition, ResultSubpartition};

/// How a [`ShuffleServer`] talks to its peers.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// The largest buffer a connection carries (the exchange's buffer size); bigger frames
    /// end the connection. Both ends of a connection must agree.
    pub max_buffer_bytes: usize,
    /// How long a connection may take to connect and pass the handshake.
    pub handshake_timeout: Duration,
    /// How long a request waits for its partition to be registered before it is refused.
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_buffer_bytes: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One input channel of a gate built by [`ShuffleServer::gate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A producer in this process: the gate hands back the subpartition it sends through.
    Local,
    /// `subpartition` of `partition`, served by the process whose server listens at `addr`.
    Remote {
        addr: SocketAddr,
        partition: PartitionId,
        subpartition: u32,
    },
}

/// One subpartition of a partition built by [`ShuffleServer::partition`].
#[derive(Debug)]
pub enum Subpartition {
    /// A channel of a gate in this process (from [`ShuffleServer::gate`]).
    Local(ResultSubpartition),
    /// Served to whichever remote consumer requests it.
    Remote,
}

/// The connection to one address, dialed once and shared.
type Dialed = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// A registered subpartition waiting for (or taken by) its consumer's request.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) producer: usize,
    pub(crate) credits: Arc<Semaphore>,
    pub(crate) events: mpsc::UnboundedReceiver<(ChannelIndex, Event)>,
    pub(crate) farewell: Arc<Farewell>,
}

#[derive(Debug, Default)]
struct RegistryState {
    /// Each registered partition's subpartitions; `None` once requested.
    partitions: HashMap<PartitionId, Vec<Option<Registered>>>,
    shut: bool,
}

/// The subpartitions this process serves, by partition and index.
#[derive(Debug)]
pub(crate) struct Registry {
    addr: SocketAddr,
    request_timeout: Duration,
    state: Mutex<RegistryState>,
    changed: Notify,
}

enum Lookup {
    Found(Registered),
    Refused(String),
    Absent,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, partition: PartitionId, subpartition: u32) -> Lookup {
        let mut state = self.lock();
        if state.shut {
            return Lookup::Refused(format!("the shuffle server at {} shut down", self.addr));
        }
        let Some(subpartitions) = state.partitions.get_mut(&partition) else {
            return Lookup::Absent;
        };
        let count = subpartitions.len();
        match subpartitions.get_mut(subpartition as usize) {
            None => Lookup::Refused(format!(
                "{partition} has {count} subpartitions, not {}",
                u64::from(subpartition) + 1
            )),
            Some(slot) => match slot.take() {
                Some(registered) => Lookup::Found(registered),
                None => Lookup::Refused(format!(
                    "subpartition {subpartition} of {partition} was requested already"
                )),
            },
        }
    }

    /// The registered `subpartition` of `partition`, waiting up to the request timeout for
    /// its producer to register it; `Err` says why not (sent to the consumer).
    pub(crate) async fn take(
        &self,
        partition: PartitionId,
        subpartition: u32,
        stop: &CancellationToken,
    ) -> Result<Registered, String> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.lookup(partition, subpartition) {
                Lookup::Found(registered) => return Ok(registered),
                Lookup::Refused(reason) => return Err(reason),
                Lookup::Absent => {}
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "{partition} is not registered at {} (waited {:?})",
                        self.addr, self.request_timeout
                    ))
                }
                _ = stop.cancelled() => return Err("the request was cancelled".into()),
            }
        }
    }

    fn register(
        &self,
        partition: PartitionId,
        subpartitions: Vec<Option<Registered>>,
    ) -> Result<(), NetError> {
        let mut state = self.lock();
        if state.shut {
            return Err(NetError::ShutDown { addr: self.addr });
        }
        if state.partitions.contains_key(&partition) {
            return Err(NetError::AlreadyRegistered { partition });
        }
        state.partitions.insert(partition, subpartitions);
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Fails the producers of subpartitions nobody requested: their sends end with `reason`.
    fn drop_unrequested(&self, subpartitions: Vec<Option<Registered>>, reason: &str) {
        for registered in subpartitions.into_iter().flatten() {
            registered.farewell.set(self.addr, reason);
            registered.credits.close();
        }
    }

    fn release(&self, partition: PartitionId) {
        let removed = self.lock().partitions.remove(&partition);
        if let Some(subpartitions) = removed {
            self.drop_unrequested(subpartitions, "the partition was released unrequested");
        }
    }

    fn shut(&self) {
        let partitions = {
            let mut state = self.lock();
            state.shut = true;
            std::mem::take(&mut state.partitions)
        };
        for (_, subpartitions) in partitions {
            self.drop_unrequested(subpartitions, "this process's shuffle server shut down");
        }
        self.changed.notify_waiters();
    }
}

/// A process's end of the network exchange: it serves this process's result partitions to
/// remote consumers and connects this process's gates to remote producers.
///
/// Dropping it closes every connection (their channels fail on both sides) and fails the
/// producers of subpartitions nobody requested.
#[derive(Debug)]
pub struct ShuffleServer {
    addr: SocketAddr,
    secret: Secret,
    config: ServerConfig,
    registry: Arc<Registry>,
    /// Connections this process dialed, by the address dialed; reused by every gate. One
    /// lock per address: a slow peer delays only the gates that need it.
    dialed: Mutex<HashMap<SocketAddr, Dialed>>,
    /// Every connection, dialed or accepted, for metrics.
    connections: Arc<Mutex<Vec<Weak<Connection>>>>,
    shutdown: CancellationToken,
}

impl ShuffleServer {
    /// Listens on `addr` (port 0: any free port; see [`ShuffleServer::local_addr`]) with the
    /// default [`ServerConfig`].
    pub async fn bind(addr: SocketAddr, secret: Secret) -> Result<Self, NetError> {
        Self::bind_with(addr, secret, ServerConfig::default()).await
    }

    /// Listens on `addr` with `config`.
    pub async fn bind_with(
        addr: SocketAddr,
        secret: Secret,
        config: ServerConfig,
    ) -> Result<Self, NetError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NetError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| NetError::Bind { addr, source })?;
        let config = ServerConfig {
            max_buffer_bytes: config.max_buffer_bytes.max(MIN_BODY_CAP),
            ..config
        };
        let server = Self {
            addr: local,
            secret,
            config,
            registry: Arc::new(Registry {
                addr: local,
                request_timeout: config.request_timeout,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
            dialed: Mutex::default(),
            connections: Arc::default(),
            shutdown: CancellationToken::new(),
        };
        tokio::spawn(accept_loop(
            listener,
            server.secret.clone(),
            config,
            server.registry.clone(),
            server.connections.clone(),
            server.shutdown.clone(),
        ));
        tracing::debug!(addr = %local, "shuffle server listening");
        Ok(server)
    }

    /// The address this server listens on (what consumers connect to).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A pipelined partition of producer subtask `producer`, registered as `partition`:
    /// each [`Subpartition::Remote`] is served to the remote consumer that requests it (its
    /// index in `subpartitions`), each [`Subpartition::Local`] feeds a gate of this process.
    /// Sends to a remote subpartition wait for credit until its consumer requested it.
    pub fn partition(
        &self,
        partition: PartitionId,
        producer: usize,
        subpartitions: Vec<Subpartition>,
    ) -> Result<ResultPartition, NetError> {
        let mut senders = Vec::with_capacity(subpartitions.len());
        let mut registered = Vec::with_capacity(subpartitions.len());
        for (consumer, subpartition) in subpartitions.into_iter().enumerate() {
            match subpartition {
                Subpartition::Local(sender) => {
                    senders.push(sender);
                    registered.push(None);
                }
                Subpartition::Remote => {
                    let credits = Arc::new(Semaphore::new(0));
                    let (queue, events) = mpsc::unbounded_channel();
                    let farewell = Arc::new(Farewell::default());
                    // No remote memory-pressure signal yet: never under pressure.
                    let pressure = watch::channel(false).1;
                    senders.push(ResultSubpartition::new(
                        producer,
                        consumer,
                        credits.clone(),
                        queue,
                        pressure,
                        Some(farewell.clone()),
                    ));
                    registered.push(Some(Registered {
                        producer,
                        credits,
                        events,
                        farewell,
                    }));
                }
            }
        }
        self.registry.register(partition, registered)?;
        Ok(ResultPartition::pipelined_from(producer, senders))
    }

    /// [`ShuffleServer::partition`] with every one of its `consumers` subpartitions remote.
    pub fn remote_partition(
        &self,
        partition: PartitionId,
        producer: usize,
        consumers: usize,
    ) -> Result<ResultPartition, NetError> {
        let subpartitions = (0..consumers).map(|_| Subpartition::Remote).collect();
        self.partition(partition, producer, subpartitions)
    }

    /// Forgets `partition`: subpartitions nobody requested yet fail their producer's sends.
    /// (Requested ones live as long as their channel.)
    pub fn release(&self, partition: PartitionId) {
        self.registry.release(partition);
    }

    /// The input gate of consumer subtask `consumer` over `channels` (channel `i` is
    /// `channels[i]`), each starting with `credits_per_channel` credits (at least 1). Remote
    /// channels are requested now, over one connection per producer address (dialed and
    /// authenticated once, reused). Returns the gate and, for each [`Channel::Local`], the
    /// subpartition its local producer sends through.
    pub async fn gate(
        &self,
        consumer: usize,
        channels: &[Channel],
        credits_per_channel: usize,
    ) -> Result<(InputGate, Vec<(ChannelIndex, ResultSubpartition)>), NetError> {
        let credits = credits_per_channel.clamp(1, MAX_CREDITS as usize);
        // Connect first: a peer that cannot be reached leaves nothing half built.
        let mut connections = Vec::new();
        for channel in channels {
            if let Channel::Remote { addr, .. } = channel {
                connections.push(self.connection(*addr).await?);
            }
        }
        let (queue, receiver) = mpsc::unbounded_channel();
        let (pressure, pressure_receiver) = watch::channel(false);
        let semaphores: Vec<_> = channels
            .iter()
            .map(|_| Arc::new(Semaphore::new(credits)))
            .collect();
        let gate = InputGate::from_parts(consumer, receiver, semaphores.clone(), pressure);
        let mut local = Vec::new();
        let mut connections = connections.into_iter();
        for (index, channel) in channels.iter().enumerate() {
            match *channel {
                Channel::Local => local.push((
                    ChannelIndex(index),
                    ResultSubpartition::new(
                        index,
                        consumer,
                        semaphores[index].clone(),
                        queue.clone(),
                        pressure_receiver.clone(),
                        None,
                    ),
                )),
                Channel::Remote {
                    partition,
                    subpartition,
                    ..
                } => {
                    let connection = connections.next().expect("one connection per remote");
                    // The initial credits go with the request; the bridge announces the rest.
                    let initial = semaphores[index].forget_permits(credits);
                    connection.request(
                        ChannelIndex(index),
                        queue.clone(),
                        semaphores[index].clone(),
                        partition,
                        subpartition,
                        initial as u32,
                    );
                }
            }
        }
        Ok((gate, local))
    }

    /// Metrics of every open connection, dialed or accepted.
    pub fn connection_metrics(&self) -> Vec<ConnectionMetrics> {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.retain(|c| c.upgrade().is_some_and(|c| !c.is_closed()));
        connections
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.metrics())
            .collect()
    }

    /// The open connection to the server at `addr`, dialed and authenticated if needed.
    async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>, NetError> {
        if self.shutdown.is_cancelled() {
            return Err(NetError::ShutDown { addr: self.addr });
        }
        let slot = self
            .dialed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_default()
            .clone();
        let mut dialed = slot.lock().await;
        if let Some(connection) = dialed.as_ref() {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let timeout = self.config.handshake_timeout;
        let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(connected) => connected.map_err(|source| NetError::Connect { addr, source })?,
            Err(_) => {
                return Err(NetError::Connect {
                    addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {timeout:?}"),
                    ),
                })
            }
        };
        auth::client(&mut stream, &self.secret, timeout)
            .await
            .map_err(|source| NetError::Handshake { addr, source })?;
        let connection = Connection::start(
            stream,
            addr,
            self.registry.clone(),
            self.config.max_buffer_bytes,
            self.shutdown.child_token(),
        );
        track(&self.connections, &connection);
        *dialed = Some(connection.clone());
        Ok(connection)
    }
}

impl Drop for ShuffleServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.registry.shut();
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for connection in connections.iter().filter_map(Weak::upgrade) {
            connection.shut("the shuffle server shut down");
        }
    }
}

fn track(connections: &Mutex<Vec<Weak<Connection>>>, connection: &Arc<Connection>) {
    let mut connections = connections.lock().unwrap_or_else(|p| p.into_inner());
    connections.retain(|c| c.strong_count() > 0);
    connections.push(Arc::downgrade(connection));
}

async fn accept_loop(
    listener: TcpListener,
    secret: Secret,
    config: ServerConfig,
    registry: Arc<Registry>,
    connections: Arc<Mutex<Vec<Weak<Connection>>>>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accepting a shuffle connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (secret, registry, connections, shutdown) = (
            secret.clone(),
            registry.clone(),
            connections.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let handshake = tokio::select! {
                handshake = auth::server(&mut stream, &secret, config.handshake_timeout) => handshake,
                _ = shutdown.cancelled() => return,
            };
            if let Err(error) = handshake {
                tracing::warn!(%peer, %error, "refused a shuffle connection");
                return;
            }
            let connection = Connection::start(
                stream,
                peer,
                registry,
                config.max_buffer_bytes,
                shutdown.child_token(),
            );
            track(&connections, &connection);
        });
    }
}
