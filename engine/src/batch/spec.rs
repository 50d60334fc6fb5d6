//! The declarative job spec (TOML): named steps in order, each one kind of operator.
//!
//! ```toml
//! name = "wordcount"
//! mode = "pipelined"          # or "staged", "mapreduce"; `--mode` overrides
//! parallelism = 2             # `--parallelism` overrides
//! memory = "256MiB"           # `--memory` overrides
//!
//! [[step]]
//! name = "lines"
//! source = { text = { path = "words.txt" } }
//! [[step]]
//! name = "words"
//! tokenize = { column = "line", as = "word" }
//! [[step]]
//! name = "counts"
//! aggregate = { keys = ["word"], aggregates = [{ fn = "count", as = "n" }] }
//! [[step]]
//! name = "out"
//! sink = { csv = { path = "counts" } }
//! ```
//!
//! Unknown fields are errors; relative paths are relative to the spec's folder. Every error
//! names the step and what is wrong with it.

use std::path::{Path, PathBuf};

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::aggregate::{AggregateSpec, Phase};
use super::filter::Predicate;
use super::source::SourceSpec;
use super::BatchError;

/// Execution style: which partition type the exchange gets and how consumers are scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Consumers run while producers run (Flink).
    #[default]
    Pipelined,
    /// Consumers start after the last producer finished (Spark, Tez).
    Staged,
    /// Blocking, consumers start copying when 5% of the producers finished (Hadoop).
    MapReduce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipelined => "pipelined",
            Self::Staged => "staged",
            Self::MapReduce => "mapreduce",
        }
    }
}

/// A job spec as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: Option<String>,
    pub mode: Option<Mode>,
    pub parallelism: Option<usize>,
    pub memory: Option<String>,
    #[serde(rename = "step", default)]
    pub steps: Vec<Step>,
}

/// One step: a name and exactly one operator.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub source: Option<SourceSpec>,
    pub tokenize: Option<TokenizeSpec>,
    pub aggregate: Option<AggregateSpec>,
    pub sink: Option<SinkSpec>,
    pub filter: Option<Predicate>,
    pub project: Option<ProjectSpec>,
    // Operators of the spec schema that this build does not run yet: named in the error.
    pub join: Option<toml::Value>,
    pub sort: Option<toml::Value>,
    pub limit: Option<toml::Value>,
}

/// Split a text column into lower-case words (runs of letters and digits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeSpec {
    pub column: String,
    #[serde(rename = "as", default = "word")]
    pub name: String,
}

fn word() -> String {
    "word".into()
}

/// Keep these columns, in this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub columns: Vec<String>,
}

/// Where the result goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkSpec {
    /// A folder of CSV part files (`part-00000`, …), one per reducer, each with a header.
    Csv { path: PathBuf },
}

impl SinkSpec {
    pub fn path(&self) -> &Path {
        match self {
            Self::Csv { path } => path,
        }
    }
}

/// A row operator of the map side, applied to each batch in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowOp {
    Tokenize { column: usize, name: String },
    Filter(Predicate),
    Project { columns: Vec<String> },
}

/// A spec checked against its data: what the job graph is planned from.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub mode: Mode,
    pub parallelism: Option<usize>,
    pub memory_bytes: Option<u64>,
    pub source_step: String,
    pub source: SourceSpec,
    pub source_schema: SchemaRef,
    pub ops: Vec<(String, RowOp)>,
    pub aggregate_step: String,
    pub aggregate: AggregateSpec,
    /// The aggregate's input schema (after the row operators).
    pub aggregate_input: SchemaRef,
    pub output_schema: SchemaRef,
    pub sink_step: String,
    pub sink: SinkSpec,
}

impl JobSpec {
    /// Reads and parses a spec file; errors name the file (and, from the TOML parser, the
    /// line and the unknown or missing field).
    pub fn from_file(path: &Path) -> Result<Self, BatchError> {
        let bad = |reason: String| BatchError::BadSpec {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut spec: JobSpec = toml::from_str(&text).map_err(|e| bad(one_line(&e.to_string())))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        for step in &mut spec.steps {
            if let Some(source) = &mut step.source {
                let p = source.path_mut();
                *p = folder.join(&*p);
            }
            if let Some(SinkSpec::Csv { path }) = &mut step.sink {
                *path = folder.join(&*path);
            }
        }
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    /// Checks the steps against the data (schemas, columns, types) and plans the job:
    /// `source → row operators → aggregate → sink`.
    pub fn plan(&self) -> Result<Plan, BatchError> {
        let at = |step: &Step, what: String| BatchError::Spec {
            what: format!("step {:?}: {what}", step.name),
        };
        let mut seen = std::collections::HashSet::new();
        for step in &self.steps {
            if !seen.insert(step.name.as_str()) {
                return Err(at(step, "another step has this name".into()));
            }
            let kinds = [
                ("source", step.source.is_some()),
                ("tokenize", step.tokenize.is_some()),
                ("aggregate", step.aggregate.is_some()),
                ("sink", step.sink.is_some()),
                ("filter", step.filter.is_some()),
                ("project", step.project.is_some()),
                ("join", step.join.is_some()),
                ("sort", step.sort.is_some()),
                ("limit", step.limit.is_some()),
            ];
            let given: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
            match given.as_slice() {
                [_] => {}
                [] => return Err(at(
                    step,
                    "no operator (give one of source, filter, project, tokenize, aggregate, sink)"
                        .into(),
                )),
                many => {
                    return Err(at(
                        step,
                        format!("one operator per step, found {}", many.join(" and ")),
                    ))
                }
            }
            if let Some(kind) = ["join", "sort", "limit"]
                .into_iter()
                .find(|k| given.contains(k))
            {
                return Err(at(step, format!("{kind} steps are not supported by this build yet (source, filter, project, tokenize, aggregate and sink are)")));
            }
        }
        let mut steps = self.steps.iter();
        let first = steps.next().ok_or_else(|| BatchError::Spec {
            what: "the job has no steps".into(),
        })?;
        let source = first
            .source
            .clone()
            .ok_or_else(|| at(first, "the first step must be a source".into()))?;
        let source_schema = source.schema().map_err(|e| at(first, e.to_string()))?;
        let mut schema = source_schema.clone();
        let mut ops = Vec::new();
        let mut aggregate = None;
        let mut sink = None;
        for step in steps {
            if sink.is_some() {
                return Err(at(step, "steps after the sink".into()));
            }
            let row_op = step.tokenize.is_some() || step.filter.is_some() || step.project.is_some();
            if row_op && aggregate.is_some() {
                return Err(at(
                    step,
                    "row operators after the aggregate are not supported yet".into(),
                ));
            }
            if let Some(p) = &step.filter {
                p.check(&schema).map_err(|e| at(step, e.to_string()))?;
                ops.push((step.name.clone(), RowOp::Filter(p.clone())));
            } else if let Some(p) = &step.project {
                let indices = p
                    .columns
                    .iter()
                    .map(|c| {
                        schema.index_of(c).map_err(|_| {
                            at(
                                step,
                                BatchError::UnknownColumn {
                                    column: c.clone(),
                                    available: schema
                                        .fields()
                                        .iter()
                                        .map(|f| f.name().clone())
                                        .collect(),
                                }
                                .to_string(),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                schema = std::sync::Arc::new(
                    schema
                        .project(&indices)
                        .map_err(|e| at(step, e.to_string()))?,
                );
                ops.push((
                    step.name.clone(),
                    RowOp::Project {
                        columns: p.columns.clone(),
                    },
                ));
            } else if let Some(t) = &step.tokenize {
                if aggregate.is_some() {
                    return Err(at(
                        step,
                        "row operators after the aggregate are not supported yet".into(),
                    ));
                }
                let column = schema.index_of(&t.column).map_err(|_| {
                    at(
                        step,
                        BatchError::UnknownColumn {
                            column: t.column.clone(),
                            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                        }
                        .to_string(),
                    )
                })?;
                if schema.field(column).data_type() != &DataType::Utf8 {
                    return Err(at(
                        step,
                        BatchError::TypeMismatch {
                            column: t.column.clone(),
                            found: schema.field(column).data_type().to_string(),
                            expected: "Utf8 (text) to tokenize".into(),
                        }
                        .to_string(),
                    ));
                }
                schema = std::sync::Arc::new(Schema::new(vec![Field::new(
                    &t.name,
                    DataType::Utf8,
                    false,
                )]));
                ops.push((
                    step.name.clone(),
                    RowOp::Tokenize {
                        column,
                        name: t.name.clone(),
                    },
                ));
            } else if let Some(a) = &step.aggregate {
                if aggregate.is_some() {
                    return Err(at(step, "a second aggregate is not supported yet".into()));
                }
                let (_, output) = a.schemas(&schema).map_err(|e| at(step, e.to_string()))?;
                // Resolve once more as the final phase would, so that every error shows here.
                super::aggregate::HashAggregate::new(a, &schema, Phase::Final)
                    .map_err(|e| at(step, e.to_string()))?;
                aggregate = Some((step.name.clone(), a.clone(), schema.clone(), output.clone()));
                schema = output;
            } else if let Some(s) = &step.sink {
                sink = Some((step.name.clone(), s.clone()));
            } else {
                return Err(at(
                    step,
                    "a second source is not supported yet (joins are not)".into(),
                ));
            }
        }
        let (sink_step, sink) = sink.ok_or_else(|| BatchError::Spec {
            what: "the job has no sink step".into(),
        })?;
        let (aggregate_step, aggregate, aggregate_input, output_schema) =
            aggregate.ok_or_else(|| BatchError::Spec {
                what: "the job has no aggregate step (map-only jobs are not supported yet)".into(),
            })?;
        let memory_bytes = self
            .memory
            .as_deref()
            .map(|m| {
                crate::memory::parse_size(m).map_err(|e| BatchError::Spec {
                    what: format!("memory: {e}"),
                })
            })
            .transpose()?;
        if self.parallelism == Some(0) {
            return Err(BatchError::Spec {
                what: "parallelism must be at least 1".into(),
            });
        }
        Ok(Plan {
            name: self.name.clone().unwrap_or_else(|| "job".into()),
            mode: self.mode.unwrap_or_default(),
            parallelism: self.parallelism,
            memory_bytes,
            source_step: first.name.clone(),
            source,
            source_schema,
            ops,
            aggregate_step,
            aggregate,
            aggregate_input,
            output_schema,
            sink_step,
            sink,
        })
    }
}

/// The first line of a parser message, with the rest joined (TOML errors span lines).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '|' || c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The job graph a plan runs as, in words: vertices with their chained steps and parallelism,
/// the exchange with its distribution and partition type, and the pipelined regions.
pub fn explain(plan: &Plan, parallelism: usize) -> String {
    let partition = match plan.mode {
        Mode::Pipelined => "pipelined",
        Mode::Staged => "blocking",
        Mode::MapReduce => "blocking, consumers deployed at 5% of producers finished",
    };
    let regions = match plan.mode {
        Mode::Pipelined => "1 pipelined region: {map, reduce} deployed together",
        _ => "2 regions: {map}, then {reduce} once its input is ready",
    };
    let chain: Vec<String> = std::iter::once(format!("{} (source)", plan.source_step))
        .chain(plan.ops.iter().map(|(name, op)| match op {
            RowOp::Tokenize { .. } => format!("{name} (tokenize)"),
            RowOp::Filter(_) => format!("{name} (filter)"),
            RowOp::Project { .. } => format!("{name} (project)"),
        }))
        .chain([format!("{} (partial aggregate)", plan.aggregate_step)])
        .collect();
    let columns = |schema: &Schema| {
        schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "job {name} (mode {mode})\n\
         vertex 0 map ×{parallelism}: {chain}\n\
         \x20 reads {source} in splits [{source_columns}]\n\
         edge 0 → 1: hash({keys}) over {groups} key groups, {partition}\n\
         vertex 1 reduce ×{parallelism}: {agg} (final aggregate) → {sink} (csv sink)\n\
         \x20 writes {out} [{out_columns}]\n\
         regions: {regions}\n",
        name = plan.name,
        mode = plan.mode.as_str(),
        chain = chain.join(" → "),
        source = plan.source.path().display(),
        source_columns = columns(&plan.source_schema),
        keys = plan.aggregate.keys.join(", "),
        groups = super::operators::KEY_GROUPS,
        agg = plan.aggregate_step,
        sink = plan.sink_step,
        out = plan.sink.path().display(),
        out_columns = columns(&plan.output_schema),
    )
}
