//! The scheduler: expands a [`JobGraph`] into subtasks, wires their exchanges and runs them on
//! the job's tokio runtime.
//!
//! Strategy *all-at-once* (streaming and pipelined batch): every pipelined region is deployed
//! whole — every subtask of the job is created and wired before the first one starts, so a
//! pipelined exchange never waits for a consumer that was not scheduled.
//! The first subtask that fails cancels all others; the job reports that root cause rather
//! than the "peer went away" errors it causes downstream.

use std::time::{Duration, Instant};

use shuffle::{InputGate, ResultPartition};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::graph::JobGraph;
use crate::task::{SubtaskContext, SubtaskReport};
use crate::EngineError;

/// What a finished job reports.
#[derive(Clone, Debug, Default)]
pub struct JobResult {
    /// One report per subtask, ordered by vertex then subtask.
    pub subtasks: Vec<SubtaskReport>,
    /// Wall time from deployment to the last subtask's end.
    pub wall: Duration,
}

/// Runs `graph` to completion on `runtime`, every subtask at once.
pub fn execute(
    graph: JobGraph,
    runtime: &tokio::runtime::Runtime,
    job_start: Instant,
) -> Result<JobResult, EngineError> {
    graph.validate()?;
    let regions = graph.pipelined_regions();
    info!(job = %graph.name, vertices = graph.vertices.len(), regions = regions.len(), "deploying job");

    // Wire every edge first: the whole job is one deployment (all-at-once).
    let mut inputs: Vec<Vec<Vec<InputGate>>> = graph
        .vertices
        .iter()
        .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
        .collect();
    let mut outputs: Vec<Vec<Vec<ResultPartition>>> = graph
        .vertices
        .iter()
        .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
        .collect();
    for edge in &graph.edges {
        let producers = graph.vertices[edge.source.0].parallelism;
        let consumers = graph.vertices[edge.target.0].parallelism;
        let (partitions, gates) =
            shuffle::pipelined(producers, consumers, edge.credits_per_channel);
        for (subtask, partition) in partitions.into_iter().enumerate() {
            outputs[edge.source.0][subtask].push(partition);
        }
        for (subtask, gate) in gates.into_iter().enumerate() {
            inputs[edge.target.0][subtask].push(gate);
        }
    }
    let mut deployments = Vec::new();
    for (v, vertex) in graph.vertices.iter().enumerate() {
        for (subtask, (gates, partitions)) in std::mem::take(&mut inputs[v])
            .into_iter()
            .zip(std::mem::take(&mut outputs[v]))
            .enumerate()
        {
            let ctx = SubtaskContext {
                vertex: vertex.name.clone(),
                subtask,
                parallelism: vertex.parallelism,
                inputs: gates,
                outputs: partitions,
                job_start,
            };
            deployments.push((v, ctx, vertex.instantiate(subtask)));
        }
    }

    runtime.block_on(async move {
        let mut running = JoinSet::new();
        for (v, ctx, invokable) in deployments {
            let subtask = ctx.subtask;
            running.spawn(async move { ((v, subtask), invokable.invoke(ctx).await) });
        }
        let mut reports = Vec::new();
        let mut failure: Option<EngineError> = None;
        while let Some(joined) = running.join_next().await {
            let result = match joined {
                Ok(((v, subtask), result)) => result.map(|report| ((v, subtask), report)),
                Err(join_error) if join_error.is_cancelled() => continue,
                Err(join_error) => Err(EngineError::Internal {
                    what: format!("a subtask panicked: {join_error}"),
                }),
            };
            match result {
                Ok((key, report)) => {
                    debug!(vertex = %report.vertex, subtask = report.subtask, "subtask finished");
                    reports.push((key, report));
                }
                Err(error) => {
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
            return Err(error);
        }
        reports.sort_by_key(|(key, _)| *key);
        Ok(JobResult {
            subtasks: reports.into_iter().map(|(_, report)| report).collect(),
            wall: job_start.elapsed(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{BoxFuture, Invokable};
    use shuffle::{Buffer, ResultPartitionType};

    struct Numbers(u8);
    impl Invokable for Numbers {
        fn invoke(
            self: Box<Self>,
            mut ctx: SubtaskContext,
        ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
            Box::pin(async move {
                let mut report = ctx.report();
                let out = &mut ctx.outputs[0];
                for i in 0..out.num_subpartitions() {
                    out.emit(i, Buffer::from(vec![self.0; 4])).await?;
                    report.bytes_out += 4;
                }
                out.finish()?;
                Ok(report)
            })
        }
    }

    struct Count {
        fail: bool,
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
                while let Some((_, buffer)) = ctx.inputs[0].next().await? {
                    report.bytes_in += buffer.len() as u64;
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
        let a = graph.add_vertex("numbers", 3, |i| Box::new(Numbers(i as u8)));
        let b = graph.add_vertex("count", 2, |_| Box::new(Count { fail: false }));
        graph.connect(a, b, ResultPartitionType::Pipelined, 1);
        assert_eq!(graph.pipelined_regions(), vec![vec![a, b]]);
        let result = execute(graph, &runtime(), Instant::now()).unwrap();
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
            3 * 2 * 4
        );
    }

    /// A failing consumer fails the job with its own error, not with the producers'
    /// "consumer gone" errors, and nothing hangs.
    #[test]
    fn first_root_cause_wins() {
        let mut graph = JobGraph::new("test");
        let a = graph.add_vertex("numbers", 2, |i| Box::new(Numbers(i as u8)));
        let b = graph.add_vertex("count", 2, |i| Box::new(Count { fail: i == 1 }));
        graph.connect(a, b, ResultPartitionType::Pipelined, 1);
        let error = execute(graph, &runtime(), Instant::now()).unwrap_err();
        assert!(matches!(error, EngineError::InvalidJob { .. }), "{error}");
    }

    #[test]
    fn rejects_zero_parallelism_and_backward_edges() {
        let mut graph = JobGraph::new("bad");
        let a = graph.add_vertex("a", 0, |_| Box::new(Count { fail: false }));
        assert!(graph.validate().is_err());
        graph.vertices[0].parallelism = 1;
        let b = graph.add_vertex("b", 1, |_| Box::new(Count { fail: false }));
        graph.connect(b, a, ResultPartitionType::Pipelined, 1);
        assert!(graph.validate().is_err());
    }
}
