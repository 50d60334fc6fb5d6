//! The scheduler: expands a [`JobGraph`] into an [`ExecutionGraph`] of subtasks, wires their
//! exchanges and runs them on the job's tokio runtime, region by region.
//!
//! Pipelined regions (vertices joined by pipelined or hybrid edges) are deployed whole: every
//! subtask of a region is created and wired before the first one starts, so a pipelined
//! exchange never waits for a consumer that was not scheduled. A region that consumes a
//! blocking partition is deployed only once every producer of that partition has finished
//! (Spark's stages, Flink's batch scheduling); until then its producers write their
//! partitions to segment files and the notices wait in the consumers' queues. An edge's
//! [`slow_start`](crate::graph::JobEdge::slow_start) below 1 deploys the consumers once that
//! share of the producers finished (Hadoop's slow start): their gates then receive each
//! producer's output as it is committed. A vertex with [`slots`](crate::graph::JobVertex::slots)
//! runs at most that many subtasks at once; the others are deployed as running ones finish.
//! The first subtask that fails cancels all others; the job reports that root cause rather
//! than the "peer went away" errors it causes downstream.
//!
//! With a [`Placement`] ([`JobEnv::placement`]), every subtask is placed on a task executor
//! when its region is deployed (all or nothing; see [`crate::placement`]), and the channels
//! of a pipelined edge between executors go over TCP through the producer executor's
//! shuffle server; without one, every channel is in-process, as before.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use shuffle::spill::WriterOptions;
use shuffle::{BlockingStore, InputGate, ResultPartition, ResultPartitionType, SpillTarget};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::graph::{JobGraph, VertexId};
use crate::operator::{OperatorRegistry, TaskResources};
pub use crate::placement::{placement_from_env, NetworkSummary, Placement};
use crate::placement::{Executors, Wired};
use crate::task::{micros_since, SubtaskContext, SubtaskReport};
use crate::EngineError;

/// What a finished job reports.
#[derive(Clone, Debug, Default)]
pub struct JobResult {
    /// One report per subtask, ordered by vertex then subtask.
    pub subtasks: Vec<SubtaskReport>,
    /// Wall time from deployment to the last subtask's end.
    pub wall: Duration,
    /// With a [`Placement`]: what the exchanges between executors carried.
    pub network: Option<NetworkSummary>,
}

/// What the scheduler needs besides the graph: where exchanges that spill (hybrid, blocking)
/// write (the job's temp folders, one per disk, used round-robin by producers) and how, how
/// many attempts a subtask or region gets, the attempts to fail on purpose (tests), and how
/// subtasks are made: the registry that turns vertex descriptors into code, and the
/// resources this process hands every subtask.
#[derive(Clone, Debug, Default)]
pub struct JobEnv {
    pub spill_dirs: Vec<PathBuf>,
    pub writer_options: WriterOptions,
    /// Hybrid: how long a buffer waits for credit before it is spilled.
    pub hybrid_patience: Duration,
    /// Attempts a retryable subtask gets (at least 1).
    pub max_attempts: u32,
    /// Attempts to fail on purpose (tests; see [`injected_failures`]).
    pub fail_attempts: Vec<(String, usize, u32)>,
    /// Kind → factory of the operators this process can run.
    pub registry: Arc<OperatorRegistry>,
    /// What this process gives every subtask (see [`TaskResources`]).
    pub resources: Arc<TaskResources>,
    /// Task executors to place subtasks on (see [`crate::placement`]; jobs read
    /// [`placement_from_env`]); `None`: every channel in-process.
    pub placement: Option<Placement>,
}

/// Where a subtask is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionState {
    /// Wired, waiting for its region's inputs.
    Created,
    /// Handed to the runtime.
    Deployed,
    Finished,
    Failed,
    Canceled,
}

/// One subtask of the job, as the scheduler tracks it.
#[derive(Clone, Debug)]
pub struct ExecutionVertex {
    pub vertex: VertexId,
    pub subtask: usize,
    pub attempt: u32,
    pub state: ExecutionState,
    /// The pipelined region it belongs to.
    pub region: usize,
}

/// The job expanded into subtasks and regions.
#[derive(Debug)]
pub struct ExecutionGraph {
    /// Every subtask, vertex by vertex, subtasks in order.
    pub vertices: Vec<ExecutionVertex>,
    /// Index in `vertices` of each job vertex's subtask 0.
    first: Vec<usize>,
    /// Vertices of each pipelined region.
    pub regions: Vec<Vec<VertexId>>,
    /// For each region, the regions whose blocking partitions it consumes, with the share
    /// of their subtasks that must have finished first (1.0: all).
    pub depends_on: Vec<Vec<(usize, f64)>>,
}

impl ExecutionGraph {
    /// Expands `graph`: one execution vertex per subtask, regions and their dependencies.
    pub fn new(graph: &JobGraph) -> Result<Self, EngineError> {
        graph.validate()?;
        let regions = graph.pipelined_regions();
        let mut region_of = vec![0; graph.vertices.len()];
        for (r, members) in regions.iter().enumerate() {
            for v in members {
                region_of[v.0] = r;
            }
        }
        let mut depends_on = vec![Vec::new(); regions.len()];
        for edge in &graph.edges {
            let (from, to) = (region_of[edge.source.0], region_of[edge.target.0]);
            if edge.partition_type.is_pipelined() {
                continue;
            }
            if from == to {
                return Err(EngineError::InvalidJob {
                    reason: format!(
                        "blocking edge {} -> {} lies inside a pipelined region; its consumer could never start",
                        graph.vertices[edge.source.0].name, graph.vertices[edge.target.0].name
                    ),
                });
            }
            match depends_on[to].iter_mut().find(|(r, _)| *r == from) {
                Some((_, share)) => *share = f64::max(*share, edge.slow_start),
                None => depends_on[to].push((from, edge.slow_start)),
            }
        }
        let vertices = graph
            .vertices
            .iter()
            .enumerate()
            .flat_map(|(v, vertex)| (0..vertex.parallelism).map(move |subtask| (v, subtask)))
            .map(|(v, subtask)| ExecutionVertex {
                vertex: VertexId(v),
                subtask,
                attempt: 0,
                state: ExecutionState::Created,
                region: region_of[v],
            })
            .collect();
        let first = graph
            .vertices
            .iter()
            .scan(0, |next, vertex| {
                let at = *next;
                *next += vertex.parallelism;
                Some(at)
            })
            .collect();
        Ok(Self {
            vertices,
            first,
            regions,
            depends_on,
        })
    }

    /// Regions not yet deployed whose every input region has finished (or the share of it
    /// its slow start asks for, rounded up to whole subtasks: 0.05 of 16 needs one).
    fn ready_regions(&self, deployed: &[bool]) -> Vec<usize> {
        (0..self.regions.len())
            .filter(|&r| {
                !deployed[r]
                    && self.depends_on[r].iter().all(|&(d, share)| {
                        let (finished, total) = self.finished_count(d);
                        finished == total || finished as f64 >= (share * total as f64).ceil()
                    })
            })
            .collect()
    }

    /// Finished subtasks of `region`, and all of them.
    fn finished_count(&self, region: usize) -> (usize, usize) {
        let members = self.vertices.iter().filter(|v| v.region == region);
        let finished = members
            .clone()
            .filter(|v| v.state == ExecutionState::Finished)
            .count();
        (finished, members.count())
    }

    fn finished(&self, region: usize) -> bool {
        let (finished, total) = self.finished_count(region);
        finished == total
    }

    /// Subtask `subtask` of job vertex `vertex`.
    fn subtask_mut(&mut self, vertex: usize, subtask: usize) -> &mut ExecutionVertex {
        &mut self.vertices[self.first[vertex] + subtask]
    }

    fn set_attempt(&mut self, vertex: usize, subtask: usize, attempt: u32) {
        let v = self.subtask_mut(vertex, subtask);
        v.attempt = attempt;
        v.state = ExecutionState::Deployed;
    }

    fn set_state(&mut self, vertex: usize, subtask: usize, state: ExecutionState) {
        self.subtask_mut(vertex, subtask).state = state;
    }
}

/// How a subtask's input or output edge is wired.
enum Slot<T> {
    /// A pipelined (or hybrid) channel end, used by the one attempt of the region.
    Pipelined(Option<T>),
    /// A blocking exchange: each attempt gets a fresh partition, each consumer attempt a gate
    /// over the committed outputs.
    Blocking(Arc<BlockingStore>),
}

/// A test hook: `MILLRACE_FAIL_ATTEMPTS="map/1/0,sort/0/0"` lists attempts
/// (vertex/subtask/attempt) to fail after they did their work, as a crash before reporting
/// would; jobs put it in [`JobEnv::fail_attempts`].
pub fn injected_failures() -> Vec<(String, usize, u32)> {
    std::env::var("MILLRACE_FAIL_ATTEMPTS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|item| {
            let mut parts = item.trim().split('/');
            Some((
                parts.next()?.to_string(),
                parts.next()?.parse().ok()?,
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Runs `graph` on a runtime of its own (a worker thread per core) and returns when every
/// subtask ended; the runtime is shut down before this returns.
pub fn run_job(
    graph: JobGraph,
    job_start: Instant,
    env: &JobEnv,
) -> Result<JobResult, EngineError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("millrace-task")
        .enable_all()
        .build()
        .map_err(|e| EngineError::Internal {
            what: format!("cannot start the runtime: {e}"),
        })?;
    execute(graph, &runtime, job_start, env)
}

/// Runs `graph` to completion on `runtime`, region by region (see the module docs).
///
/// A failed subtask whose edges are all blocking (its region is itself alone) is retried,
/// up to `env.max_attempts` attempts, reusing the finished blocking partitions it reads; its
/// failed attempt's outputs are discarded and its source splits given back. A failed subtask
/// of a pipelined region restarts the whole region (fresh channels, the region's finished
/// subtasks forgotten and their splits given back), when it is the only region running. A
/// failure that is the user's to fix, or one past the attempts, fails the job.
pub fn execute(
    graph: JobGraph,
    runtime: &tokio::runtime::Runtime,
    job_start: Instant,
    env: &JobEnv,
) -> Result<JobResult, EngineError> {
    let mut execution = ExecutionGraph::new(&graph)?;
    info!(
        job = %graph.name,
        vertices = graph.vertices.len(),
        regions = execution.regions.len(),
        "deploying job"
    );
    let spill_dir = |i: usize| env.spill_dirs.get(i % env.spill_dirs.len().max(1)).cloned();

    // Wire every edge first: pipelined channels now, blocking stores whose gates are built
    // when their consumers are deployed.
    fn slots<T>(graph: &JobGraph) -> Vec<Vec<Vec<Slot<T>>>> {
        graph
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect()
    }
    let mut inputs: Vec<Vec<Vec<Slot<InputGate>>>> = slots(&graph);
    let mut outputs: Vec<Vec<Vec<Slot<ResultPartition>>>> = slots(&graph);
    let mut retryable = vec![true; graph.vertices.len()];
    // Per vertex, the source vertex of each input edge, in edge order.
    let mut input_sources: Vec<Vec<usize>> = vec![Vec::new(); graph.vertices.len()];
    for edge in &graph.edges {
        input_sources[edge.target.0].push(edge.source.0);
    }
    // Per vertex, its subtasks' summed partition counts, published when all finished.
    let count_senders: Vec<tokio::sync::watch::Sender<Option<Arc<Vec<u64>>>>> = graph
        .vertices
        .iter()
        .map(|_| tokio::sync::watch::channel(None).0)
        .collect();
    let mut count_sums: Vec<(usize, Vec<u64>)> = vec![(0, Vec::new()); graph.vertices.len()];
    // Pipelined edges: (edge, slot in the producers' outputs, slot in the consumers' inputs).
    let mut pipelined_edges = Vec::new();
    for (e, edge) in graph.edges.iter().enumerate() {
        let producers = graph.vertices[edge.source.0].parallelism;
        let consumers = graph.vertices[edge.target.0].parallelism;
        let spill = spill_dir(e).map(|dir| SpillTarget {
            dir,
            options: env.writer_options,
            record_bytes: edge.record_bytes,
            patience: env.hybrid_patience,
        });
        if edge.partition_type == ResultPartitionType::Blocking {
            let spill = spill.ok_or(shuffle::ShuffleError::NoSpillTarget { kind: "blocking" })?;
            let store = shuffle::blocking(producers, consumers, spill);
            for slots in &mut outputs[edge.source.0] {
                slots.push(Slot::Blocking(store.clone()));
            }
            for slots in &mut inputs[edge.target.0] {
                slots.push(Slot::Blocking(store.clone()));
            }
            continue;
        }
        // Pipelined edges lie inside a region: their channels are made when the region is
        // deployed (again when it restarts); here they get their places.
        retryable[edge.source.0] = false;
        retryable[edge.target.0] = false;
        let (out_slot, in_slot) = (
            outputs[edge.source.0][0].len(),
            inputs[edge.target.0][0].len(),
        );
        for slots in &mut outputs[edge.source.0] {
            slots.push(Slot::Pipelined(None));
        }
        for slots in &mut inputs[edge.target.0] {
            slots.push(Slot::Pipelined(None));
        }
        pipelined_edges.push((e, out_slot, in_slot));
    }
    let distributions: Vec<Vec<crate::graph::Distribution>> = (0..graph.vertices.len())
        .map(|v| {
            graph
                .edges
                .iter()
                .filter(|e| e.source.0 == v)
                .map(|e| e.distribution.clone())
                .collect()
        })
        .collect();
    let faults = &env.fail_attempts;
    let max_attempts = env.max_attempts.max(1);

    let stores_of =
        |slots: &Vec<Vec<Slot<ResultPartition>>>, subtask: usize| -> Vec<Arc<BlockingStore>> {
            slots[subtask]
                .iter()
                .filter_map(|slot| match slot {
                    Slot::Blocking(store) => Some(store.clone()),
                    Slot::Pipelined(_) => None,
                })
                .collect()
        };
    let blocking_outputs: Vec<Vec<Vec<Arc<BlockingStore>>>> = outputs
        .iter()
        .map(|per_vertex| {
            (0..per_vertex.len())
                .map(|s| stores_of(per_vertex, s))
                .collect()
        })
        .collect();

    let inputs = std::cell::RefCell::new(inputs);
    let outputs = std::cell::RefCell::new(outputs);
    // Makes the channels of the pipelined edges that start in `region` (fresh ones when the
    // region restarts), in-process unless `placed` has them (made by the executors).
    let wire_region =
        |region: &[VertexId], mut placed: HashMap<usize, Wired>| -> Result<(), EngineError> {
            for &(e, out_slot, in_slot) in &pipelined_edges {
                let edge = &graph.edges[e];
                if !region.contains(&edge.source) {
                    continue;
                }
                let (partitions, gates) = match placed.remove(&e) {
                    Some(wired) => wired,
                    None => {
                        let spill = spill_dir(e).map(|dir| SpillTarget {
                            dir,
                            options: env.writer_options,
                            record_bytes: edge.record_bytes,
                            patience: env.hybrid_patience,
                        });
                        shuffle::exchange(
                            edge.partition_type,
                            graph.vertices[edge.source.0].parallelism,
                            graph.vertices[edge.target.0].parallelism,
                            edge.credits_per_channel,
                            spill,
                        )?
                    }
                };
                let (mut outputs, mut inputs) = (outputs.borrow_mut(), inputs.borrow_mut());
                for (subtask, mut partition) in partitions.into_iter().enumerate() {
                    // Producers spread their segment files over the spill dirs.
                    if let Some(dir) = spill_dir(e + subtask) {
                        partition.set_spill_dir(dir);
                    }
                    outputs[edge.source.0][subtask][out_slot] = Slot::Pipelined(Some(partition));
                }
                for (subtask, gate) in gates.into_iter().enumerate() {
                    inputs[edge.target.0][subtask][in_slot] = Slot::Pipelined(Some(gate));
                }
            }
            Ok(())
        };
    // A context for attempt `attempt` of subtask `subtask` of vertex `v`.
    let context = |v: usize, subtask: usize, attempt: u32| -> Result<SubtaskContext, EngineError> {
        let vertex = &graph.vertices[v];
        let (mut inputs, mut outputs) = (inputs.borrow_mut(), outputs.borrow_mut());
        let mut gates = Vec::new();
        for slot in &mut inputs[v][subtask] {
            gates.push(match slot {
                Slot::Pipelined(gate) => gate.take().ok_or_else(|| EngineError::Internal {
                    what: format!("{} {subtask}: a pipelined gate used twice", vertex.name),
                })?,
                Slot::Blocking(store) => store.gate(subtask)?,
            });
        }
        let mut partitions = Vec::new();
        for (o, slot) in outputs[v][subtask].iter_mut().enumerate() {
            partitions.push(match slot {
                Slot::Pipelined(partition) => {
                    partition.take().ok_or_else(|| EngineError::Internal {
                        what: format!(
                            "{} {subtask}: a pipelined partition used twice",
                            vertex.name
                        ),
                    })?
                }
                Slot::Blocking(store) => store.partition(subtask, attempt, spill_dir(o + subtask)),
            });
        }
        Ok(SubtaskContext {
            vertex: vertex.name.clone(),
            vertex_id: VertexId(v),
            subtask,
            parallelism: vertex.parallelism,
            inputs: gates,
            outputs: partitions,
            distributions: distributions[v].clone(),
            attempt,
            splits: vertex.splits.clone(),
            input_counts: input_sources[v]
                .iter()
                .map(|&source| count_senders[source].subscribe())
                .collect(),
            job_start,
            resources: env.resources.clone(),
        })
    };
    // The code of subtask `subtask` of vertex `v`, from its descriptor.
    let instantiate = |v: usize, subtask: usize| {
        env.registry
            .instantiate(&graph.vertices[v].operator, &env.resources, subtask)
    };
    runtime.block_on(async {
        let mut running = JoinSet::new();
        // Blocking work of this job's subtasks in flight (see `task::spawn_blocking`).
        let blocking = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut deployed = vec![false; execution.regions.len()];
        let mut reports = Vec::new();
        let mut failure: Option<EngineError> = None;
        let spawn = |running: &mut JoinSet<_>,
                         v: usize,
                         ctx: SubtaskContext,
                         invokable: Box<dyn crate::task::Invokable>| {
            let (subtask, attempt) = (ctx.subtask, ctx.attempt);
            let deployed_us = micros_since(job_start);
            let fail = faults
                .iter()
                .any(|(name, s, a)| *name == ctx.vertex && *s == subtask && *a == attempt);
            let blocking = blocking.clone();
            running.spawn(crate::task::BLOCKING.scope(blocking, async move {
                let result = invokable.invoke(ctx).await.and_then(|mut report| {
                    if fail {
                        return Err(EngineError::Injected {
                            what: format!("{} {subtask} attempt {attempt}", report.vertex),
                        });
                    }
                    report.deployed_us = deployed_us;
                    Ok(report)
                });
                ((v, subtask, attempt), result)
            }));
        };
        // Wires a region and starts every subtask of it (a pipelined region starts whole; a
        // vertex with slots starts that many, the rest wait in `queued`).
        let deploy_region = |running: &mut JoinSet<_>,
                             execution: &mut ExecutionGraph,
                             queued: &mut Vec<std::collections::VecDeque<usize>>,
                             region: usize,
                             attempt: u32,
                             placed: HashMap<usize, Wired>|
         -> Result<(), EngineError> {
            let members = execution.regions[region].clone();
            wire_region(&members, placed)?;
            let mut ready = Vec::new();
            for &VertexId(v) in &members {
                let vertex = &graph.vertices[v];
                let now = vertex.slots.unwrap_or(usize::MAX).min(vertex.parallelism);
                queued[v].extend(now..vertex.parallelism);
                for subtask in 0..now {
                    // Every subtask is made before the first starts: a kind this process
                    // cannot run fails the region before any of it runs.
                    ready.push((v, instantiate(v, subtask)?, context(v, subtask, attempt)?));
                }
            }
            for (v, invokable, ctx) in ready {
                execution.set_attempt(v, ctx.subtask, attempt);
                spawn(running, v, ctx, invokable);
            }
            Ok(())
        };
        let mut region_attempts = vec![0u32; execution.regions.len()];
        let mut queued = vec![std::collections::VecDeque::new(); graph.vertices.len()];
        let mut executors = match env.placement {
            Some(placement) => {
                Some(Executors::start(placement, &graph, execution.regions.len()).await?)
            }
            None => None,
        };
        loop {
            if failure.is_none() {
                for region in execution.ready_regions(&deployed) {
                    let members = execution.regions[region].clone();
                    let placed = place_and_wire(
                        &mut executors,
                        &graph,
                        &pipelined_edges,
                        &members,
                        region,
                        0,
                    )
                    .await;
                    let started = match placed {
                        Ok(None) => {
                            debug!(region, "region waits for free executor slots");
                            continue;
                        }
                        Ok(Some(placed)) => {
                            deployed[region] = true;
                            debug!(region, "deploying region");
                            deploy_region(
                                &mut running,
                                &mut execution,
                                &mut queued,
                                region,
                                0,
                                placed,
                            )
                        }
                        Err(error) => Err(error),
                    };
                    if let Err(error) = started {
                        failure = Some(error);
                        running.abort_all();
                        break;
                    }
                }
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let ((v, subtask, attempt), result) = match joined {
                Ok(done) => done,
                Err(join_error) if join_error.is_cancelled() => continue,
                Err(join_error) => (
                    (usize::MAX, 0, 0),
                    Err(EngineError::Internal {
                        what: format!("a subtask panicked: {join_error}"),
                    }),
                ),
            };
            match result {
                Ok(report) => {
                    debug!(vertex = %report.vertex, subtask, attempt, "subtask finished");
                    for store in &blocking_outputs[v][subtask] {
                        store.commit(subtask, attempt);
                    }
                    execution.set_state(v, subtask, ExecutionState::Finished);
                    if let Some(executors) = &mut executors {
                        executors.free(v, subtask);
                    }
                    let (finished, sums) = &mut count_sums[v];
                    *finished += 1;
                    if sums.len() < report.partition_records.len() {
                        sums.resize(report.partition_records.len(), 0);
                    }
                    for (sum, records) in sums.iter_mut().zip(&report.partition_records) {
                        *sum += records;
                    }
                    if *finished == graph.vertices[v].parallelism {
                        count_senders[v].send_replace(Some(Arc::new(std::mem::take(sums))));
                    }
                    reports.push(((v, subtask), report));
                    // Its slot is free: the next waiting subtask of the vertex takes it.
                    let next = if failure.is_none() {
                        queued[v].pop_front()
                    } else {
                        None
                    };
                    if let Some(next) = next {
                        let placed = executors
                            .as_mut()
                            .map_or(Ok(()), |executors| executors.place_one(v, next));
                        match placed
                            .and_then(|()| context(v, next, 0))
                            .and_then(|ctx| Ok((instantiate(v, next)?, ctx)))
                        {
                            Ok((invokable, ctx)) => {
                                execution.set_attempt(v, next, 0);
                                spawn(&mut running, v, ctx, invokable);
                            }
                            Err(error) => {
                                failure = Some(error);
                                running.abort_all();
                            }
                        }
                    }
                }
                Err(error) => {
                    if v != usize::MAX {
                        if let Some(executors) = &mut executors {
                            executors.free(v, subtask);
                        }
                        for store in &blocking_outputs[v][subtask] {
                            store.discard(subtask, attempt);
                        }
                        if let Some(splits) = &graph.vertices[v].splits {
                            splits.give_back(subtask);
                        }
                    }
                    let retry = failure.is_none()
                        && v != usize::MAX
                        && retryable[v]
                        && error.domain() != crate::ErrorDomain::User
                        && attempt + 1 < max_attempts;
                    if retry {
                        info!(vertex = %graph.vertices[v].name, subtask, attempt, %error, "subtask attempt failed; retrying");
                        let placed = executors
                            .as_mut()
                            .map_or(Ok(()), |executors| executors.place_one(v, subtask));
                        match placed
                            .and_then(|()| context(v, subtask, attempt + 1))
                            .and_then(|ctx| Ok((instantiate(v, subtask)?, ctx)))
                        {
                            Ok((invokable, ctx)) => {
                                execution.set_attempt(v, subtask, attempt + 1);
                                spawn(&mut running, v, ctx, invokable);
                                continue;
                            }
                            Err(context_error) => failure = Some(context_error),
                        }
                    }
                    // A pipelined subtask: restart its whole region, if it is the only one
                    // running (its channels cannot be rejoined by one new attempt).
                    let region = (v != usize::MAX).then(|| {
                        execution
                            .regions
                            .iter()
                            .position(|r| r.contains(&VertexId(v)))
                            .expect("every vertex is in a region")
                    });
                    let restart = match region {
                        Some(r) => {
                            failure.is_none()
                                && !retryable[v]
                                && error.domain() != crate::ErrorDomain::User
                                && region_attempts[r] + 1 < max_attempts
                                && (0..execution.regions.len())
                                    .all(|o| o == r || !deployed[o] || execution.finished(o))
                        }
                        None => false,
                    };
                    if let (true, Some(r)) = (restart, region) {
                        info!(vertex = %graph.vertices[v].name, subtask, attempt, %error, "subtask attempt failed; restarting its pipelined region");
                        running.abort_all();
                        while running.join_next().await.is_some() {}
                        // Aborting stops the subtasks, not blocking work they started: wait for
                        // it, so the new attempt has the memory and the output to itself.
                        while blocking.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        // Forget what the region's finished subtasks did: they run again.
                        for &VertexId(u) in &execution.regions[r] {
                            reports.retain(|((ru, _), _)| *ru != u);
                            count_sums[u] = (0, Vec::new());
                            count_senders[u].send_replace(None);
                            for (s, stores) in blocking_outputs[u].iter().enumerate() {
                                if let Some(splits) = &graph.vertices[u].splits {
                                    splits.give_back(s);
                                }
                                for store in stores {
                                    store.discard(s, region_attempts[r]);
                                }
                            }
                        }
                        region_attempts[r] += 1;
                        // Fresh placement and channels: the old attempt's partitions are
                        // released, the new ones registered under the new attempt number.
                        let members = execution.regions[r].clone();
                        if let Some(executors) = &mut executors {
                            executors.reset_region(r, &members);
                        }
                        let placed = place_and_wire(
                            &mut executors,
                            &graph,
                            &pipelined_edges,
                            &members,
                            r,
                            region_attempts[r],
                        )
                        .await;
                        let redeployed = match placed {
                            Ok(Some(placed)) => deploy_region(
                                &mut running,
                                &mut execution,
                                &mut queued,
                                r,
                                region_attempts[r],
                                placed,
                            ),
                            Ok(None) => Err(EngineError::Internal {
                                what: format!("region {r} does not fit the free slots it left"),
                            }),
                            Err(error) => Err(error),
                        };
                        match redeployed {
                            Ok(()) => continue,
                            Err(deploy_error) => failure = Some(deploy_error),
                        }
                    }
                    if v != usize::MAX {
                        execution.set_state(v, subtask, ExecutionState::Failed);
                    }
                    running.abort_all();
                    let replace = match &failure {
                        None => true,
                        Some(current) => current.is_secondary() && !error.is_secondary(),
                    };
                    if replace {
                        failure = Some(error);
                    }
                }
            }
        }
        if let Some(error) = failure {
            for v in &mut execution.vertices {
                if matches!(v.state, ExecutionState::Created | ExecutionState::Deployed) {
                    v.state = ExecutionState::Canceled;
                }
            }
            return Err(error);
        }
        if let Some(v) = queued.iter().position(|q| !q.is_empty()) {
            return Err(EngineError::Internal {
                what: format!("{} subtasks of vertex {v} never ran", queued[v].len()),
            });
        }
        if let Some(r) = deployed.iter().position(|d| !d) {
            return Err(EngineError::Internal {
                what: format!("region {r} was never deployed: its inputs never finished"),
            });
        }
        reports.sort_by_key(|(key, _)| *key);
        let network = executors.as_ref().map(Executors::summary);
        if let Some(network) = &network {
            info!(?network, "the exchanges between executors");
        }
        Ok(JobResult {
            subtasks: reports.into_iter().map(|(_, report)| report).collect(),
            wall: job_start.elapsed(),
            network,
        })
    })
}

/// Places the subtasks of region `region` (`members`) that start now on the executors and
/// makes the channels of its pipelined edges that go through them, for deployment `attempt`.
/// `None` when the region does not fit the free slots yet; without executors, nothing to
/// make (every channel in-process).
async fn place_and_wire(
    executors: &mut Option<Executors>,
    graph: &JobGraph,
    pipelined_edges: &[(usize, usize, usize)],
    members: &[VertexId],
    region: usize,
    attempt: u32,
) -> Result<Option<HashMap<usize, Wired>>, EngineError> {
    let mut placed = HashMap::new();
    let Some(executors) = executors else {
        return Ok(Some(placed));
    };
    if !executors.place_region(graph, members)? {
        return Ok(None);
    }
    for &(e, _, _) in pipelined_edges {
        if !members.contains(&graph.edges[e].source) {
            continue;
        }
        if let Some(wired) = executors.wire(graph, e, region, attempt).await? {
            placed.insert(e, wired);
        }
    }
    Ok(Some(placed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Distribution;
    use crate::operator::OperatorDescriptor;
    use crate::task::{BoxFuture, Invokable};
    use shuffle::{Buffer, ResultPartitionType};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// The test operators: `test.numbers` (subtask `i` sends byte `i`), `test.slow-numbers`
    /// (the same after a pause, counted in [`RUNNING`] and [`MOST`]) and `test.count` (counts
    /// the bytes it receives; fails in the subtasks its arguments list).
    fn registry() -> Arc<OperatorRegistry> {
        let mut registry = OperatorRegistry::new();
        registry
            .register("test.numbers", |_, _, subtask| {
                Ok(Box::new(Numbers(subtask as u8)))
            })
            .register("test.slow-numbers", |_, _, subtask| {
                Ok(Box::new(SlowNumbers {
                    value: subtask as u8,
                }))
            })
            .register("test.count", |descriptor, _, subtask| {
                let OperatorDescriptor::Generic { args, .. } = descriptor else {
                    return Err(descriptor.mismatch("test.count"));
                };
                Ok(Box::new(Count {
                    fail: args.contains(&(subtask as u64)),
                    flaky: false,
                }))
            })
            .register("test.flaky-count", |descriptor, _, subtask| {
                let OperatorDescriptor::Generic { args, .. } = descriptor else {
                    return Err(descriptor.mismatch("test.flaky-count"));
                };
                Ok(Box::new(Count {
                    fail: false,
                    flaky: args.contains(&(subtask as u64)),
                }))
            });
        Arc::new(registry)
    }

    fn numbers() -> OperatorDescriptor {
        OperatorDescriptor::generic("test.numbers", [])
    }

    /// Counts; fails in subtasks `fail`.
    fn count(fail: &[u64]) -> OperatorDescriptor {
        OperatorDescriptor::generic("test.count", fail)
    }

    /// A job environment with the test operators.
    fn test_env() -> JobEnv {
        JobEnv {
            registry: registry(),
            ..JobEnv::default()
        }
    }

    struct Numbers(u8);
    impl Invokable for Numbers {
        fn invoke(
            self: Box<Self>,
            mut ctx: SubtaskContext,
        ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
            Box::pin(async move {
                let mut report = ctx.report();
                let out = &mut ctx.outputs[0];
                // More buffers than credits: a consumer that is not running would hold a
                // pipelined producer back, never a blocking one.
                for _ in 0..5 {
                    for i in 0..out.num_subpartitions() {
                        out.send(i, Buffer::from(vec![self.0; 4])).await?;
                        report.bytes_out += 4;
                    }
                }
                out.finish()?;
                report.end_us = ctx.now_us();
                Ok(report)
            })
        }
    }

    /// `test.slow-numbers` subtasks running now, and the most that ran at once (one test
    /// uses them).
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// Like [`Numbers`], after a pause, counting how many run at once.
    struct SlowNumbers {
        value: u8,
    }
    impl Invokable for SlowNumbers {
        fn invoke(
            self: Box<Self>,
            ctx: SubtaskContext,
        ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
            Box::pin(async move {
                let now = RUNNING.fetch_add(1, SeqCst) + 1;
                MOST.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
                RUNNING.fetch_sub(1, SeqCst);
                Box::new(Numbers(self.value)).invoke(ctx).await
            })
        }
    }

    /// Counts what it receives; `fail`: fails at once (the user's error, not retried);
    /// `flaky`: attempt 0 fails at once, before reading anything (retried).
    struct Count {
        fail: bool,
        flaky: bool,
    }
    impl Invokable for Count {
        fn invoke(
            self: Box<Self>,
            mut ctx: SubtaskContext,
        ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
            Box::pin(async move {
                let mut report = ctx.report();
                if self.fail {
                    return Err(EngineError::InvalidJob {
                        reason: "boom".into(),
                    });
                }
                if self.flaky && ctx.attempt == 0 {
                    return Err(EngineError::Injected {
                        what: format!("count {} before reading", ctx.subtask),
                    });
                }
                while let Some((_, received)) = ctx.inputs[0].next_received().await? {
                    match received {
                        shuffle::Received::Buffer(buffer) => {
                            report.bytes_in += buffer.len() as u64;
                        }
                        shuffle::Received::Spilled(spilled) => {
                            let reader = spilled.open()?;
                            for block in reader
                                .partition_blocks(spilled.segment.segment, spilled.partition)?
                            {
                                report.bytes_in += block?.payload.len() as u64;
                            }
                        }
                    }
                }
                Ok(report)
            })
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// ```text
    /// numbers (3) ──pipelined, all-to-all──► count (2)
    /// ```
    #[test]
    fn runs_all_subtasks_and_reports_them_in_order() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 3, numbers());
        let b = graph.add_vertex("count", 2, count(&[]));
        graph.connect(
            a,
            b,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        assert_eq!(graph.pipelined_regions(), vec![vec![a, b]]);
        let result = execute(graph, &runtime(), Instant::now(), &test_env()).unwrap();
        let names: Vec<_> = result
            .subtasks
            .iter()
            .map(|r| (r.vertex.as_str(), r.subtask))
            .collect();
        assert_eq!(
            names,
            [
                ("numbers", 0),
                ("numbers", 1),
                ("numbers", 2),
                ("count", 0),
                ("count", 1)
            ]
        );
        assert_eq!(
            result.subtasks[3].bytes_in + result.subtasks[4].bytes_in,
            5 * 3 * 2 * 4
        );
    }

    /// A failing consumer fails the job with its own error, not with the producers'
    /// "consumer gone" errors, and nothing hangs.
    #[test]
    fn first_root_cause_wins() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 2, numbers());
        let b = graph.add_vertex("count", 2, count(&[1]));
        graph.connect(
            a,
            b,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        let error = execute(graph, &runtime(), Instant::now(), &test_env()).unwrap_err();
        assert!(matches!(error, EngineError::InvalidJob { .. }), "{error}");
    }

    #[test]
    fn rejects_zero_parallelism_and_backward_edges() {
        let mut graph = JobGraph::new("bad");
        let a = graph.add_vertex("a", 0, count(&[]));
        assert!(graph.validate().is_err());
        graph.vertices[0].parallelism = 1;
        let b = graph.add_vertex("b", 1, count(&[]));
        graph.connect(
            b,
            a,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        assert!(graph.validate().is_err());
    }

    /// ```text
    /// numbers (3) ──blocking──► count (2)
    /// ```
    /// The producers write everything to segment files and finish without any consumer
    /// running; the consumers are deployed after the last producer ended and read it all.
    #[test]
    fn blocking_edge_runs_its_consumers_after_every_producer() {
        let dir = tempfile::tempdir().unwrap();
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 3, numbers());
        let b = graph.add_vertex("count", 2, count(&[]));
        graph.connect(a, b, Distribution::Broadcast, ResultPartitionType::Blocking);
        assert_eq!(graph.pipelined_regions(), vec![vec![a], vec![b]]);
        let env = JobEnv {
            spill_dirs: vec![dir.path().to_path_buf()],
            ..test_env()
        };
        let result = execute(graph, &runtime(), Instant::now(), &env).unwrap();
        let last_producer_end = result.subtasks[..3].iter().map(|r| r.end_us).max().unwrap();
        for consumer in &result.subtasks[3..] {
            assert!(
                consumer.deployed_us >= last_producer_end,
                "{consumer:?} deployed before the producers ended at {last_producer_end}"
            );
        }
        assert_eq!(
            result.subtasks[3].bytes_in + result.subtasks[4].bytes_in,
            5 * 3 * 2 * 4
        );
        assert!(result.subtasks[..3]
            .iter()
            .all(|p| p.bytes_out == 5 * 2 * 4));
        // Producers' files are unlinked: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// ```text
    /// numbers (6, 2 slots) ──blocking, slow start 0.25──► count (2)
    /// ```
    /// At most two producers run at once; the consumers are deployed once two producers
    /// finished, before the last one did, and still read every producer's output once.
    #[test]
    fn slots_limit_producers_and_slow_start_deploys_consumers_early() {
        let dir = tempfile::tempdir().unwrap();
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex(
            "numbers",
            6,
            OperatorDescriptor::generic("test.slow-numbers", []),
        );
        graph.vertices[a.0].slots = Some(2);
        let b = graph.add_vertex("count", 2, count(&[]));
        graph
            .connect(a, b, Distribution::Broadcast, ResultPartitionType::Blocking)
            .slow_start = 0.25;
        let env = JobEnv {
            spill_dirs: vec![dir.path().to_path_buf()],
            ..test_env()
        };
        let result = execute(graph, &runtime(), Instant::now(), &env).unwrap();
        assert_eq!(MOST.load(SeqCst), 2);
        let mut ends: Vec<u64> = result.subtasks[..6].iter().map(|r| r.end_us).collect();
        ends.sort_unstable();
        for consumer in &result.subtasks[6..] {
            assert!(
                consumer.deployed_us >= ends[1] && consumer.deployed_us < ends[5],
                "consumer deployed at {} µs; producers ended at {ends:?}",
                consumer.deployed_us
            );
        }
        assert_eq!(
            result.subtasks[6].bytes_in + result.subtasks[7].bytes_in,
            5 * 6 * 2 * 4
        );

        // Slots on a vertex of a pipelined region are refused.
        let mut graph = JobGraph::new("slots");
        let a = graph.add_vertex("a", 2, numbers());
        graph.vertices[a.0].slots = Some(1);
        let b = graph.add_vertex("b", 2, count(&[]));
        graph.connect(
            a,
            b,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        assert!(graph.validate().is_err());
    }

    /// A vertex whose kind the registry does not know fails the job before any subtask
    /// runs, with an error that names the kind.
    #[test]
    fn an_unknown_operator_kind_is_a_clear_error() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 2, numbers());
        let b = graph.add_vertex(
            "mystery",
            2,
            OperatorDescriptor::generic("test.mystery", []),
        );
        graph.connect(
            a,
            b,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        let error = execute(graph, &runtime(), Instant::now(), &test_env()).unwrap_err();
        assert!(matches!(error, EngineError::InvalidJob { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("\"test.mystery\""), "{text}");
        assert!(
            text.contains("test.numbers"),
            "names the known kinds: {text}"
        );
    }

    /// A blocking edge needs somewhere to write, and may not close a pipelined cycle.
    #[test]
    fn blocking_edges_are_checked() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 1, numbers());
        let b = graph.add_vertex("count", 1, count(&[]));
        graph.connect(a, b, Distribution::Forward, ResultPartitionType::Blocking);
        let error = execute(graph, &runtime(), Instant::now(), &test_env());
        assert!(error.is_err());

        let mut graph = JobGraph::new("cycle");
        let a = graph.add_vertex("a", 1, numbers());
        let b = graph.add_vertex("b", 1, count(&[]));
        graph.connect(a, b, Distribution::Forward, ResultPartitionType::Pipelined);
        graph.connect(a, b, Distribution::Forward, ResultPartitionType::Blocking);
        let error = ExecutionGraph::new(&graph).unwrap_err();
        assert!(
            error.to_string().contains("inside a pipelined region"),
            "{error}"
        );

        let mut graph = JobGraph::new("forward");
        let a = graph.add_vertex("a", 2, numbers());
        let b = graph.add_vertex("b", 3, count(&[]));
        graph.connect(a, b, Distribution::Forward, ResultPartitionType::Pipelined);
        assert!(graph.validate().is_err());
    }

    /// A producer and a consumer of a blocking exchange fail once each: both run again, the
    /// job succeeds and counts every byte once; a subtask that keeps failing fails the job
    /// after its attempts.
    #[test]
    fn blocking_subtasks_are_retried_alone() {
        let dir = tempfile::tempdir().unwrap();
        let graph = || {
            let mut graph = JobGraph::new("test");
            let a = graph.add_vertex("numbers", 3, numbers());
            let b = graph.add_vertex("count", 2, count(&[]));
            graph.connect(a, b, Distribution::Broadcast, ResultPartitionType::Blocking);
            graph
        };
        let env = |fail: &[(&str, usize, u32)]| JobEnv {
            spill_dirs: vec![dir.path().to_path_buf()],
            max_attempts: 2,
            fail_attempts: fail
                .iter()
                .map(|(v, s, a)| (v.to_string(), *s, *a))
                .collect(),
            ..test_env()
        };
        let result = execute(
            graph(),
            &runtime(),
            Instant::now(),
            &env(&[("numbers", 1, 0), ("count", 0, 0)]),
        )
        .unwrap();
        let attempts: Vec<_> = result.subtasks.iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [0, 1, 0, 1, 0]);
        assert_eq!(
            result.subtasks[3].bytes_in + result.subtasks[4].bytes_in,
            5 * 3 * 2 * 4
        );
        let error = execute(
            graph(),
            &runtime(),
            Instant::now(),
            &env(&[("count", 1, 0), ("count", 1, 1)]),
        )
        .unwrap_err();
        assert!(matches!(error, EngineError::Injected { .. }), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A failed subtask of a pipelined region restarts the whole region (fresh channels,
    /// every subtask a new attempt); a region that keeps failing fails the job.
    #[test]
    fn pipelined_regions_restart_whole() {
        let graph = || {
            let mut graph = JobGraph::new("test");
            let a = graph.add_vertex("numbers", 2, numbers());
            let b = graph.add_vertex("count", 2, count(&[]));
            graph.connect(
                a,
                b,
                Distribution::Broadcast,
                ResultPartitionType::Pipelined,
            );
            graph
        };
        let env = |fail: &[(&str, usize, u32)]| JobEnv {
            max_attempts: 2,
            fail_attempts: fail
                .iter()
                .map(|(v, s, a)| (v.to_string(), *s, *a))
                .collect(),
            ..test_env()
        };
        let result = execute(
            graph(),
            &runtime(),
            Instant::now(),
            &env(&[("count", 0, 0)]),
        )
        .unwrap();
        let attempts: Vec<_> = result.subtasks.iter().map(|r| r.attempt).collect();
        assert_eq!(
            attempts,
            [1, 1, 1, 1],
            "every subtask of the region ran again"
        );
        assert_eq!(
            result.subtasks[2].bytes_in + result.subtasks[3].bytes_in,
            5 * 2 * 2 * 4,
            "counted once"
        );
        let error = execute(
            graph(),
            &runtime(),
            Instant::now(),
            &env(&[("count", 0, 0), ("numbers", 1, 1)]),
        )
        .unwrap_err();
        assert!(matches!(error, EngineError::Injected { .. }), "{error}");
    }

    /// Runs `run` on a thread of its own and fails the test if it takes more than `secs`
    /// seconds (a hung exchange would otherwise hang the test run).
    fn within<T: Send + 'static>(secs: u64, run: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(run());
        });
        result
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("the job did not end within {secs} s"))
    }

    fn placed(executors: usize, slots: usize) -> Option<Placement> {
        Some(Placement { executors, slots })
    }

    /// ```text
    /// numbers (3) ──pipelined, all-to-all──► count (2)     on 3 executors
    /// ```
    /// Subtask `s` sits on executor `s mod 3`: of the 6 channels, 2 stay in-process and 4 go
    /// over TCP through the producers' executors; every byte arrives once, and the
    /// connections carried them.
    #[test]
    fn placed_pipelined_channels_cross_tcp_between_executors() {
        let graph = || {
            let mut graph = JobGraph::new("test");
            let a = graph.add_vertex("numbers", 3, numbers());
            let b = graph.add_vertex("count", 2, count(&[]));
            graph.connect(
                a,
                b,
                Distribution::Broadcast,
                ResultPartitionType::Pipelined,
            );
            graph
        };
        let env = JobEnv {
            placement: placed(3, 2),
            ..test_env()
        };
        let result = within(30, move || {
            execute(graph(), &runtime(), Instant::now(), &env).unwrap()
        });
        assert_eq!(
            result.subtasks[3].bytes_in + result.subtasks[4].bytes_in,
            5 * 3 * 2 * 4
        );
        let network = result.network.expect("a placed job reports its network");
        assert_eq!(network.executors, 3);
        assert_eq!((network.local_channels, network.remote_channels), (2, 4));
        // Two consumer executors each dialed the two producer executors they do not share.
        assert_eq!(network.connections, 4);
        assert_eq!(
            network.buffers_sent,
            4 * 5,
            "every remote buffer crossed TCP"
        );
        assert!(network.bytes_sent > 4 * 5 * 4, "{network:?}");

        // Without a placement: nothing about a network, the same bytes.
        let result = execute(graph(), &runtime(), Instant::now(), &test_env()).unwrap();
        assert!(result.network.is_none());
        assert_eq!(
            result.subtasks[3].bytes_in + result.subtasks[4].bytes_in,
            5 * 3 * 2 * 4
        );
    }

    /// A consumer on executor 1 fails before reading, while producers on the other
    /// executors wait for its credits over TCP: the region restarts with fresh partitions
    /// (the attempt is in their ids) and channels, counts every byte once, and nothing
    /// hangs. A second failure past the attempts fails the job with the injected cause.
    #[test]
    fn placed_pipelined_regions_restart_whole() {
        let graph = || {
            let mut graph = JobGraph::new("test");
            let a = graph.add_vertex("numbers", 3, numbers());
            let b = graph.add_vertex(
                "count",
                3,
                OperatorDescriptor::generic("test.flaky-count", [1]),
            );
            graph.connect(
                a,
                b,
                Distribution::Broadcast,
                ResultPartitionType::Pipelined,
            );
            graph
        };
        let env = |fail: &[(&str, usize, u32)]| JobEnv {
            max_attempts: 2,
            fail_attempts: fail
                .iter()
                .map(|(v, s, a)| (v.to_string(), *s, *a))
                .collect(),
            placement: placed(3, 2),
            ..test_env()
        };
        let ok = env(&[]);
        let result = within(30, move || {
            execute(graph(), &runtime(), Instant::now(), &ok).unwrap()
        });
        let attempts: Vec<_> = result.subtasks.iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [1; 6], "every subtask of the region ran again");
        assert_eq!(
            result.subtasks[3..].iter().map(|r| r.bytes_in).sum::<u64>(),
            5 * 3 * 3 * 4,
            "counted once"
        );
        let network = result.network.unwrap();
        assert_eq!(
            network.remote_channels,
            2 * 6,
            "fresh channels at the restart"
        );
        assert!(network.bytes_sent > 0);

        // The restarted attempt fails too (a producer on executor 2, after its work): the
        // job fails with that cause, not with an echo of a peer that went away.
        let failing = env(&[("numbers", 2, 1)]);
        let error = within(30, move || {
            execute(graph(), &runtime(), Instant::now(), &failing).unwrap_err()
        });
        assert!(matches!(error, EngineError::Injected { .. }), "{error}");
    }

    /// A consumer that fails for good (the user's error) while producers on other executors
    /// still send to it: the job reports its error, not the producers' "remote consumer
    /// gone", and nothing hangs.
    #[test]
    fn placed_jobs_report_the_root_cause() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 3, numbers());
        let b = graph.add_vertex("count", 3, count(&[1]));
        graph.connect(
            a,
            b,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        let env = JobEnv {
            placement: placed(3, 2),
            ..test_env()
        };
        let error = within(30, move || {
            execute(graph, &runtime(), Instant::now(), &env).unwrap_err()
        });
        assert!(matches!(error, EngineError::InvalidJob { .. }), "{error}");
        assert!(error.to_string().contains("boom"), "{error}");
    }

    /// Slots: a pipelined region larger than all slots is refused up front, naming them; a
    /// blocking consumer region waits for free slots (producers with vertex slots keep
    /// theirs busy) instead of deploying partly, and the job still ends.
    #[test]
    fn placement_respects_slots() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 3, numbers());
        let b = graph.add_vertex("count", 2, count(&[]));
        graph.connect(
            a,
            b,
            Distribution::Broadcast,
            ResultPartitionType::Pipelined,
        );
        let env = JobEnv {
            placement: placed(2, 2),
            ..test_env()
        };
        let error = execute(graph, &runtime(), Instant::now(), &env).unwrap_err();
        assert!(error.to_string().contains("4 slots"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 6, numbers());
        graph.vertices[a.0].slots = Some(2);
        let b = graph.add_vertex("count", 2, count(&[]));
        graph
            .connect(a, b, Distribution::Broadcast, ResultPartitionType::Blocking)
            .slow_start = 0.25;
        let env = JobEnv {
            spill_dirs: vec![dir.path().to_path_buf()],
            placement: placed(2, 1),
            ..test_env()
        };
        let result = within(30, move || {
            execute(graph, &runtime(), Instant::now(), &env).unwrap()
        });
        let last_producer_end = result.subtasks[..6].iter().map(|r| r.end_us).max().unwrap();
        for consumer in &result.subtasks[6..] {
            assert!(
                consumer.deployed_us >= last_producer_end,
                "{consumer:?} deployed while the producers held both slots"
            );
        }
        assert_eq!(
            result.subtasks[6].bytes_in + result.subtasks[7].bytes_in,
            5 * 6 * 2 * 4
        );
    }

    /// The network's "peer went away" errors echo another failure.
    #[test]
    fn remote_peer_errors_are_secondary() {
        let peer: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let reason = String::from("gone");
        for error in [
            shuffle::ShuffleError::RemoteConsumerGone {
                consumer: 0,
                peer,
                reason: reason.clone(),
            },
            shuffle::ShuffleError::RemoteProducerLost {
                producer: 0,
                peer,
                reason: reason.clone(),
            },
            shuffle::ShuffleError::RemoteProducerFailed {
                producer: 0,
                peer,
                reason: reason.clone(),
            },
            // The local echo of a producer's failure too.
            shuffle::ShuffleError::ProducerFailed {
                producer: 0,
                reason: reason.clone(),
            },
        ] {
            assert!(EngineError::from(error).is_secondary());
        }
    }
}
