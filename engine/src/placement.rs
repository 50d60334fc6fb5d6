//! Placement of subtasks on task executors, and the pipelined exchanges between executors
//! over TCP (the first step of running one job's subtasks on several workers).
//!
//! A task executor is what a worker process will be: a [`ShuffleServer`] of its own (bound
//! on loopback, authenticated with a secret the job's executors share) and a number of
//! slots. In this step the executors are logical: every subtask still runs on this process's
//! runtime, but a pipelined channel whose producer and consumer sit on different executors
//! goes through the producer executor's server and a TCP connection with credits, exactly
//! as it will between processes; channels between subtasks of one executor stay in-process
//! (one gate can mix both).
//!
//! Placement is deterministic: subtask `s` of every vertex goes to executor `s mod N`, or
//! the next one with a free slot. A slot holds one running subtask. A region is placed all
//! or nothing: when its subtasks do not fit the free slots it waits for running subtasks to
//! finish; when they could never fit (more than `N × slots`), the job fails saying so.
//!
//! Not over the network yet: hybrid exchanges (their spilled buffers are not served by the
//! net layer) keep all their channels in-process, and blocking exchanges keep their
//! in-process [`shuffle::BlockingStore`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use shuffle::net::{Channel, PartitionId, ServerConfig, ShuffleServer, Subpartition};
use shuffle::{InputGate, ResultPartition, ResultPartitionType, ResultSubpartition, ShuffleError};

use crate::graph::{JobGraph, VertexId};
use crate::EngineError;

/// How many task executors a job's subtasks are spread over, and the slots of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Task executors (at least 1).
    pub executors: usize,
    /// Subtasks each executor runs at once (`usize::MAX`: unbounded).
    pub slots: usize,
}

/// `MILLRACE_EXECUTORS=N` (N executors, unbounded slots) or `N:SLOTS` places every job of
/// this process on task executors (see [`Placement`]); jobs put it in
/// [`crate::scheduler::JobEnv::placement`]. Unset or empty: no placement (one process, every
/// channel in-process). A value that does not parse is ignored with a warning.
pub fn placement_from_env() -> Option<Placement> {
    let value = std::env::var("MILLRACE_EXECUTORS").ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let parsed = parse_placement(value);
    if parsed.is_none() {
        tracing::warn!(
            value,
            "MILLRACE_EXECUTORS is not N or N:SLOTS (both at least 1); ignored"
        );
    }
    parsed
}

/// `N` or `N:SLOTS`, both at least 1.
fn parse_placement(value: &str) -> Option<Placement> {
    let (executors, slots) = match value.split_once(':') {
        Some((executors, slots)) => (executors.trim().parse().ok()?, slots.trim().parse().ok()?),
        None => (value.trim().parse().ok()?, usize::MAX),
    };
    (executors > 0 && slots > 0).then_some(Placement { executors, slots })
}

/// What the network exchange of a placed job did (read when its last subtask ended).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkSummary {
    pub executors: usize,
    /// Channels of pipelined exchanges wired across executors (over TCP) and inside one
    /// executor (in-process), summed over every deployment of their regions.
    pub remote_channels: u64,
    pub local_channels: u64,
    /// Connections between executors still open at the end (a connection closes only when
    /// its peer is lost or breaks the protocol), and what was written to their sockets:
    /// frames with their headers, each byte counted once, at the end that wrote it.
    pub connections: usize,
    pub bytes_sent: u64,
    pub buffers_sent: u64,
}

/// The largest frame an executor's connections carry. Exchange buffers are sized by their
/// producers (TeraSort: 1 MiB; batch: one encoded batch), so the cap is generous; it is
/// checked before anything is buffered, so it costs nothing until used.
const MAX_FRAME_BYTES: usize = 256 << 20;

/// Jobs placed by this process, to tell their partitions apart.
static JOBS: AtomicU64 = AtomicU64::new(0);

/// A pipelined edge's partitions (one per producer) and gates (one per consumer).
pub(crate) type Wired = (Vec<ResultPartition>, Vec<InputGate>);

/// The task executors of one job run: their servers, slots and what runs where.
pub(crate) struct Executors {
    servers: Vec<ShuffleServer>,
    slots: usize,
    /// Running subtasks per executor.
    used: Vec<usize>,
    /// The executor of each placed subtask, by vertex and subtask.
    at: Vec<Vec<Option<usize>>>,
    /// Per region, the partitions its last deployment registered (released at a restart).
    registered: Vec<Vec<(usize, PartitionId)>>,
    job: u64,
    remote_channels: u64,
    local_channels: u64,
}

impl Executors {
    /// Binds one shuffle server per executor on loopback, all sharing a fresh secret.
    pub(crate) async fn start(
        placement: Placement,
        graph: &JobGraph,
        regions: usize,
    ) -> Result<Self, EngineError> {
        if placement.executors == 0 || placement.slots == 0 {
            return Err(EngineError::InvalidJob {
                reason: format!(
                    "a placement needs at least one executor with one slot, not {} with {}",
                    placement.executors, placement.slots
                ),
            });
        }
        let secret = shuffle::net::auth::Secret::generate().map_err(|e| EngineError::Internal {
            what: format!("cannot make the executors' secret: {e}"),
        })?;
        let config = ServerConfig {
            max_buffer_bytes: MAX_FRAME_BYTES,
            ..ServerConfig::default()
        };
        let mut servers = Vec::with_capacity(placement.executors);
        for _ in 0..placement.executors {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let server = ShuffleServer::bind_with(addr, secret.clone(), config)
                .await
                .map_err(ShuffleError::from)?;
            servers.push(server);
        }
        tracing::info!(
            executors = placement.executors,
            slots = placement.slots,
            addrs = ?servers.iter().map(ShuffleServer::local_addr).collect::<Vec<_>>(),
            "task executors started"
        );
        Ok(Self {
            servers,
            slots: placement.slots,
            used: vec![0; placement.executors],
            at: graph
                .vertices
                .iter()
                .map(|v| vec![None; v.parallelism])
                .collect(),
            registered: vec![Vec::new(); regions],
            job: JOBS.fetch_add(1, Ordering::Relaxed),
            remote_channels: 0,
            local_channels: 0,
        })
    }

    /// The executor with a free slot where subtask `subtask` goes: `subtask mod N`, or the
    /// next one with room.
    fn pick(&self, subtask: usize, used: &[usize]) -> Option<usize> {
        let n = self.servers.len();
        (0..n)
            .map(|i| (subtask + i) % n)
            .find(|&e| used[e] < self.slots)
    }

    /// Places the subtasks of `members` that start now (all of them, or the first `slots`
    /// of a vertex with slots), all or nothing: `Ok(false)` when they do not fit the free
    /// slots now (the region waits), an error when they never could.
    pub(crate) fn place_region(
        &mut self,
        graph: &JobGraph,
        members: &[VertexId],
    ) -> Result<bool, EngineError> {
        let starting = |v: usize| {
            let vertex = &graph.vertices[v];
            vertex.slots.unwrap_or(usize::MAX).min(vertex.parallelism)
        };
        let needed: usize = members.iter().map(|&VertexId(v)| starting(v)).sum();
        let capacity = self.slots.saturating_mul(self.servers.len());
        if needed > capacity {
            let names: Vec<_> = members
                .iter()
                .map(|&VertexId(v)| graph.vertices[v].name.as_str())
                .collect();
            return Err(EngineError::InvalidJob {
                reason: format!(
                    "the pipelined region of {} runs {needed} subtasks at once, more than the {} executors' {capacity} slots",
                    names.join(", "),
                    self.servers.len()
                ),
            });
        }
        let mut used = self.used.clone();
        let mut placed = Vec::with_capacity(needed);
        for &VertexId(v) in members {
            for subtask in 0..starting(v) {
                let Some(executor) = self.pick(subtask, &used) else {
                    return Ok(false);
                };
                used[executor] += 1;
                placed.push((v, subtask, executor));
            }
        }
        self.used = used;
        for (v, subtask, executor) in placed {
            self.at[v][subtask] = Some(executor);
        }
        Ok(true)
    }

    /// Places one more subtask (a retry, or a vertex's next subtask taking a freed slot).
    pub(crate) fn place_one(&mut self, v: usize, subtask: usize) -> Result<(), EngineError> {
        let executor = self
            .pick(subtask, &self.used)
            .ok_or_else(|| EngineError::Internal {
                what: format!("no free slot for subtask {subtask} of vertex {v}"),
            })?;
        self.used[executor] += 1;
        self.at[v][subtask] = Some(executor);
        Ok(())
    }

    /// Gives back the slot of a subtask that ended.
    pub(crate) fn free(&mut self, v: usize, subtask: usize) {
        if let Some(executor) = self.at[v][subtask].take() {
            self.used[executor] -= 1;
        }
    }

    /// Before region `region` restarts: gives back its subtasks' slots and forgets its
    /// partitions (the old attempt's unrequested subpartitions fail their producers).
    pub(crate) fn reset_region(&mut self, region: usize, members: &[VertexId]) {
        for &VertexId(v) in members {
            for subtask in 0..self.at[v].len() {
                self.free(v, subtask);
            }
        }
        for (executor, partition) in std::mem::take(&mut self.registered[region]) {
            self.servers[executor].release(partition);
        }
    }

    fn executor_of(
        &self,
        graph: &JobGraph,
        v: usize,
        subtask: usize,
    ) -> Result<usize, EngineError> {
        self.at[v][subtask].ok_or_else(|| EngineError::Internal {
            what: format!(
                "{} {subtask} has a pipelined channel but no executor",
                graph.vertices[v].name
            ),
        })
    }

    /// Makes the channels of pipelined edge `edge`, starting in region `region`, for its
    /// deployment `attempt`: a producer's partition is registered at its executor's server
    /// as (job, edge, producer, attempt); a consumer's gate reads the producers of its own
    /// executor in-process and the others over TCP. `None` for an edge that stays
    /// in-process (hybrid: spilled buffers are not served over the network yet).
    pub(crate) async fn wire(
        &mut self,
        graph: &JobGraph,
        edge: usize,
        region: usize,
        attempt: u32,
    ) -> Result<Option<Wired>, EngineError> {
        let job_edge = &graph.edges[edge];
        if job_edge.partition_type != ResultPartitionType::Pipelined {
            return Ok(None);
        }
        let (source, target) = (job_edge.source.0, job_edge.target.0);
        let producers = graph.vertices[source].parallelism;
        let consumers = graph.vertices[target].parallelism;
        let partition_id = |producer: usize| PartitionId {
            job: self.job,
            exchange: edge as u32,
            producer: producer as u32,
            attempt,
        };
        let producer_at = (0..producers)
            .map(|p| self.executor_of(graph, source, p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut local: Vec<Vec<Option<ResultSubpartition>>> = (0..producers)
            .map(|_| (0..consumers).map(|_| None).collect())
            .collect();
        let mut gates = Vec::with_capacity(consumers);
        // Per consumer, the senders of its in-process channels.
        let mut made = Vec::with_capacity(consumers);
        for consumer in 0..consumers {
            let executor = self.executor_of(graph, target, consumer)?;
            let channels: Vec<Channel> = producer_at
                .iter()
                .enumerate()
                .map(|(producer, &at)| {
                    if at == executor {
                        Channel::Local
                    } else {
                        Channel::Remote {
                            addr: self.servers[at].local_addr(),
                            partition: partition_id(producer),
                            subpartition: consumer as u32,
                        }
                    }
                })
                .collect();
            let (gate, senders) = self.servers[executor]
                .gate(consumer, &channels, job_edge.credits_per_channel)
                .await
                .map_err(ShuffleError::from)?;
            self.local_channels += senders.len() as u64;
            self.remote_channels += (producers - senders.len()) as u64;
            gates.push(gate);
            made.push((consumer, senders));
        }
        for (consumer, senders) in made {
            for (channel, sender) in senders {
                local[channel.0][consumer] = Some(sender);
            }
        }
        let mut partitions = Vec::with_capacity(producers);
        for (producer, senders) in local.into_iter().enumerate() {
            let subpartitions = senders
                .into_iter()
                .map(|s| s.map_or(Subpartition::Remote, Subpartition::Local))
                .collect();
            let at = producer_at[producer];
            let id = partition_id(producer);
            let partition = self.servers[at]
                .partition(id, producer, subpartitions)
                .map_err(ShuffleError::from)?;
            self.registered[region].push((at, id));
            partitions.push(partition);
        }
        Ok(Some((partitions, gates)))
    }

    /// What the executors' connections carried so far.
    pub(crate) fn summary(&self) -> NetworkSummary {
        let mut summary = NetworkSummary {
            executors: self.servers.len(),
            remote_channels: self.remote_channels,
            local_channels: self.local_channels,
            ..NetworkSummary::default()
        };
        for server in &self.servers {
            for connection in server.connection_metrics() {
                summary.connections += 1;
                summary.bytes_sent += connection.bytes_sent;
                summary.buffers_sent += connection.buffers_sent;
            }
        }
        // Each connection is listed by both of its ends.
        summary.connections /= 2;
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_parse_from_executors_and_slots() {
        let placement = |executors, slots| Some(Placement { executors, slots });
        assert_eq!(parse_placement("3"), placement(3, usize::MAX));
        assert_eq!(parse_placement(" 2 : 4 "), placement(2, 4));
        for bad in ["0", "3:0", "x", "3:", ":2", "-1", "2:3:4"] {
            assert_eq!(parse_placement(bad), None, "{bad}");
        }
    }
}
