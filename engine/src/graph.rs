//! [`JobGraph`]: the logical dataflow (vertices = operator chains, edges = exchanges), and its
//! pipelined regions.
//!
//! A vertex is expanded into `parallelism` subtasks when the job runs; an edge connects every
//! producer subtask to every consumer subtask (all-to-all; which consumer a record goes to is
//! the producer's partitioner's choice).
//! A *pipelined region* is a set of vertices joined by pipelined edges: the unit that is
//! deployed all or nothing, and later the unit of failover.

use std::fmt;

use shuffle::ResultPartitionType;

use crate::task::Invokable;
use crate::EngineError;

/// Index of a vertex in its [`JobGraph`], in the order vertices were added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VertexId(pub usize);

/// Makes the code of subtask `i` of a vertex.
pub type InvokableFactory = Box<dyn Fn(usize) -> Box<dyn Invokable> + Send + Sync>;

/// One operator chain, run as `parallelism` subtasks.
pub struct JobVertex {
    pub name: String,
    pub parallelism: usize,
    factory: InvokableFactory,
}

impl JobVertex {
    /// The code of subtask `subtask`.
    pub fn instantiate(&self, subtask: usize) -> Box<dyn Invokable> {
        (self.factory)(subtask)
    }
}

impl fmt::Debug for JobVertex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobVertex")
            .field("name", &self.name)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

/// An exchange between two vertices.
#[derive(Clone, Debug)]
pub struct JobEdge {
    pub source: VertexId,
    pub target: VertexId,
    pub partition_type: ResultPartitionType,
    /// Buffers each channel may have in flight.
    pub credits_per_channel: usize,
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

    /// Adds a vertex whose subtask `i` runs `factory(i)`.
    pub fn add_vertex(
        &mut self,
        name: impl Into<String>,
        parallelism: usize,
        factory: impl Fn(usize) -> Box<dyn Invokable> + Send + Sync + 'static,
    ) -> VertexId {
        self.vertices.push(JobVertex {
            name: name.into(),
            parallelism,
            factory: Box::new(factory),
        });
        VertexId(self.vertices.len() - 1)
    }

    /// Connects `source` to `target` with an all-to-all exchange.
    pub fn connect(
        &mut self,
        source: VertexId,
        target: VertexId,
        partition_type: ResultPartitionType,
        credits_per_channel: usize,
    ) {
        self.edges.push(JobEdge {
            source,
            target,
            partition_type,
            credits_per_channel,
        });
    }

    /// Checks what the scheduler relies on: edges point forward (a DAG in insertion order)
    /// and every vertex has at least one subtask.
    pub fn validate(&self) -> Result<(), EngineError> {
        for vertex in &self.vertices {
            if vertex.parallelism == 0 {
                return Err(EngineError::InvalidJob {
                    reason: format!("vertex {} has parallelism 0", vertex.name),
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
            if matches!(
                edge.partition_type,
                ResultPartitionType::Pipelined | ResultPartitionType::Hybrid
            ) {
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
