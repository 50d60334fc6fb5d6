//! [`JobGraph`]: the logical dataflow (vertices = operator chains, edges = exchanges), and its
//! pipelined regions.
//!
//! A vertex is expanded into `parallelism` subtasks when the job runs. An edge says how
//! records are distributed among the consumer subtasks ([`Distribution`]) and what kind of
//! result partition carries them ([`ResultPartitionType`]): pipelined and hybrid partitions
//! are read while they are written, blocking ones after their producers finished.
//! A *pipelined region* is a set of vertices joined by pipelined (or hybrid) edges: the unit
//! that is deployed all or nothing, and later the unit of failover. Regions joined by blocking
//! edges run one after the other.

use std::sync::Arc;

use shuffle::ResultPartitionType;

use crate::operator::OperatorDescriptor;
use crate::EngineError;

/// Index of a vertex in its [`JobGraph`], in the order vertices were added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VertexId(pub usize);

/// One operator chain, run as `parallelism` subtasks, each built from the vertex's
/// descriptor by the process's [`crate::operator::OperatorRegistry`].
#[derive(Debug)]
pub struct JobVertex {
    pub name: String,
    pub parallelism: usize,
    /// A source vertex's splits, handed to its subtasks on demand.
    pub splits: Option<Arc<crate::source::SplitEnumerator>>,
    /// At most this many subtasks run at once (task slots, as Hadoop and Spark schedule
    /// tasks); the rest wait for a running one to finish. Only for vertices whose edges are
    /// all blocking: a pipelined region is deployed whole. `None`: all at once.
    pub slots: Option<usize>,
    /// What its subtasks run: plain, serializable data (no closure, no handle).
    pub operator: OperatorDescriptor,
}

/// Which consumer subtasks a producer's records go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Producer `i` feeds consumer `i` only (equal parallelism).
    Forward,
    /// Key ranges: consumer `i` gets the keys below `boundaries[i]` and at or above
    /// `boundaries[i - 1]` (normalized 128-bit key prefixes; `consumers - 1` boundaries).
    Range(Arc<[u128]>),
    /// Keys hashed into `key_groups` groups, each owned by one consumer (as Flink's key
    /// groups: rescaling moves whole groups).
    Hash { key_groups: usize },
    /// Every record to every consumer.
    Broadcast,
    /// Records dealt round-robin over the consumers, whatever their keys (Flink's rebalance).
    Rebalance,
}

impl Distribution {
    /// The distribution's name, for messages and timelines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Range(_) => "range",
            Self::Hash { .. } => "hash",
            Self::Broadcast => "broadcast",
            Self::Rebalance => "rebalance",
        }
    }
}

/// An exchange between two vertices.
#[derive(Clone, Debug)]
pub struct JobEdge {
    pub source: VertexId,
    pub target: VertexId,
    pub distribution: Distribution,
    pub partition_type: ResultPartitionType,
    /// Buffers each channel may have in flight.
    pub credits_per_channel: usize,
    /// Bytes per record in this edge's buffers (for spilled blocks' record counts).
    pub record_bytes: usize,
    /// Blocking edges: the share of producers that must have finished before the consumers
    /// are deployed (Hadoop's `mapreduce.job.reduce.slowstart.completedmaps`); consumers
    /// deployed early receive each producer's output when it finishes. 1.0 (the default):
    /// after the last producer, as Spark's and Flink's batch stages.
    pub slow_start: f64,
}

/// A logical job: vertices and the exchanges between them.
#[derive(Debug, Default)]
pub struct JobGraph {
    pub name: String,
    pub vertices: Vec<JobVertex>,
    pub edges: Vec<JobEdge>,
}

impl JobGraph {
    /// An empty job.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds a vertex whose subtasks run `operator`.
    pub fn add_vertex(
        &mut self,
        name: impl Into<String>,
        parallelism: usize,
        operator: OperatorDescriptor,
    ) -> VertexId {
        self.vertices.push(JobVertex {
            name: name.into(),
            parallelism,
            splits: None,
            slots: None,
            operator,
        });
        VertexId(self.vertices.len() - 1)
    }

    /// Connects `source` to `target`: records distributed by `distribution`, carried by
    /// result partitions of `partition_type`.
    pub fn connect(
        &mut self,
        source: VertexId,
        target: VertexId,
        distribution: Distribution,
        partition_type: ResultPartitionType,
    ) -> &mut JobEdge {
        self.edges.push(JobEdge {
            source,
            target,
            distribution,
            partition_type,
            credits_per_channel: 2,
            record_bytes: 1,
            slow_start: 1.0,
        });
        self.edges.last_mut().expect("just pushed")
    }

    /// Checks what the scheduler relies on: edges point forward (a DAG in insertion order)
    /// and every vertex has at least one subtask.
    pub fn validate(&self) -> Result<(), EngineError> {
        for (v, vertex) in self.vertices.iter().enumerate() {
            if vertex.parallelism == 0 {
                return Err(EngineError::InvalidJob {
                    reason: format!("vertex {} has parallelism 0", vertex.name),
                });
            }
            if vertex.slots == Some(0) {
                return Err(EngineError::InvalidJob {
                    reason: format!("vertex {} has 0 slots", vertex.name),
                });
            }
            let pipelined = self
                .edges
                .iter()
                .any(|e| (e.source.0 == v || e.target.0 == v) && e.partition_type.is_pipelined());
            if vertex.slots.is_some() && pipelined {
                return Err(EngineError::InvalidJob {
                    reason: format!(
                        "vertex {} has slots but a pipelined edge: a pipelined region is deployed whole",
                        vertex.name
                    ),
                });
            }
        }
        for edge in &self.edges {
            if edge.source >= edge.target || edge.target.0 >= self.vertices.len() {
                return Err(EngineError::InvalidJob {
                    reason: format!(
                        "edge {:?} -> {:?} does not point forward",
                        edge.source, edge.target
                    ),
                });
            }
            let (producers, consumers) = (
                self.vertices[edge.source.0].parallelism,
                self.vertices[edge.target.0].parallelism,
            );
            let invalid = |what: String| {
                Err(EngineError::InvalidJob {
                    reason: format!(
                        "{} edge {} -> {}: {what}",
                        edge.distribution.as_str(),
                        self.vertices[edge.source.0].name,
                        self.vertices[edge.target.0].name
                    ),
                })
            };
            match &edge.distribution {
                Distribution::Forward if producers != consumers => {
                    return invalid(format!("{producers} producers but {consumers} consumers"))
                }
                Distribution::Range(b) if b.len() + 1 != consumers => {
                    return invalid(format!("{} ranges for {consumers} consumers", b.len() + 1))
                }
                Distribution::Hash { key_groups } if *key_groups < consumers => {
                    return invalid(format!("{key_groups} key groups for {consumers} consumers"))
                }
                _ => {}
            }
            if !(0.0..=1.0).contains(&edge.slow_start) {
                return invalid(format!("slow start {} is not in 0..=1", edge.slow_start));
            }
            if edge.slow_start < 1.0 && edge.partition_type.is_pipelined() {
                return invalid("slow start applies to blocking edges only".into());
            }
        }
        Ok(())
    }

    /// The pipelined regions: vertices joined by pipelined edges, each region sorted, regions
    /// ordered by their first vertex.
    pub fn pipelined_regions(&self) -> Vec<Vec<VertexId>> {
        let mut region: Vec<usize> = (0..self.vertices.len()).collect();
        fn root(region: &mut [usize], mut v: usize) -> usize {
            while region[v] != v {
                region[v] = region[region[v]];
                v = region[v];
            }
            v
        }
        for edge in &self.edges {
            if edge.partition_type.is_pipelined() {
                let (a, b) = (
                    root(&mut region, edge.source.0),
                    root(&mut region, edge.target.0),
                );
                region[a.max(b)] = a.min(b);
            }
        }
        let mut regions: Vec<Vec<VertexId>> = Vec::new();
        let mut index_of_root = vec![usize::MAX; self.vertices.len()];
        for v in 0..self.vertices.len() {
            let r = root(&mut region, v);
            if index_of_root[r] == usize::MAX {
                index_of_root[r] = regions.len();
                regions.push(Vec::new());
            }
            regions[index_of_root[r]].push(VertexId(v));
        }
        regions
    }
}
