//! From checked steps to stages: the vertices of the job graph and the exchanges between them.
//!
//! A stage is one vertex: an input (splits of a source, or exchanges from earlier stages), a
//! head operator that needs its whole input (final aggregate, join, sort, limit) or none,
//! row operators chained after it, and a tail: an exchange to the next stage (hash by key,
//! after a partial aggregate; or gathered into one subtask, after a local top-N or limit) or
//! the sink. Steps that need rows with equal keys together (aggregate, join) start a stage
//! behind a hash exchange; steps that need every row in one place (sort, limit) start a
//! single-subtask stage behind a gather.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::aggregate::{AggregateSpec, HashAggregate, Phase};
use super::join::JoinSpec;
use super::sort::SortSpec;
use super::source::{SourceFile, SourceSpec};
use super::spec::{JobSpec, Mode, RowOp, SinkSpec, Step};
use super::BatchError;
use crate::EngineError;

/// A column as descriptors carry it: name and Arrow type (`Int64`, `Float64`, `Utf8`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// The columns of `schema` as descriptors carry them.
pub fn to_defs(schema: &Schema) -> Vec<ColumnDef> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnDef {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// The schema of columns carried by a descriptor.
pub fn from_defs(defs: &[ColumnDef]) -> Result<SchemaRef, EngineError> {
    let fields = defs
        .iter()
        .map(|d| {
            let data_type: DataType = d.data_type.parse().map_err(|e| EngineError::InvalidJob {
                reason: format!("column {:?}: type {:?}: {e}", d.name, d.data_type),
            })?;
            Ok(Field::new(&d.name, data_type, d.nullable))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The schema a scan's rows have: the file's `columns` at `projection`.
pub fn scan_schema(
    columns: &[ColumnDef],
    projection: Option<&[usize]>,
) -> Result<SchemaRef, EngineError> {
    let file = from_defs(columns)?;
    match projection {
        Some(p) => Ok(Arc::new(file.project(p).map_err(|e| {
            EngineError::InvalidJob {
                reason: format!("a scan's projection: {e}"),
            }
        })?)),
        None => Ok(file),
    }
}

/// Where a stage's rows come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StageInput {
    /// Splits of a source file, read by whichever subtask asks next: the file's `columns`,
    /// only those at `projection` when the job uses fewer.
    Scan {
        source: SourceSpec,
        /// The file, or the folder's data files, as listed when the job was planned.
        files: Vec<SourceFile>,
        columns: Vec<ColumnDef>,
        projection: Option<Vec<usize>>,
    },
    /// Exchanges from earlier stages, with the columns each carries and the side of the head
    /// it feeds (0, or 1 for a join's right side; the branches of a union feed one side).
    Exchange {
        from: Vec<usize>,
        columns: Vec<Vec<ColumnDef>>,
        sides: Vec<usize>,
    },
}

/// The operator at the start of a stage, fed by its whole input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Head {
    /// Rows pass through.
    Pass,
    /// Merges partial states; `input` are the columns the partial aggregates read.
    Aggregate {
        spec: AggregateSpec,
        input: Vec<ColumnDef>,
    },
    /// Builds on input 1 (right), probes with input 0 (left).
    Join(JoinSpec),
    /// Sorts every row (the first `limit` only).
    Sort { spec: SortSpec, limit: Option<u64> },
    /// The first `n` rows.
    Limit(u64),
}

/// Where a stage's rows go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Tail {
    /// Aggregated partially, then hashed by the group keys.
    Partial {
        spec: AggregateSpec,
        input: Vec<ColumnDef>,
    },
    /// Hashed by these columns.
    Hash { keys: Vec<String> },
    /// Batches dealt round-robin to the next stage's subtasks (the branches of a union
    /// before a sink).
    Rebalance,
    /// All to the one subtask of the next stage, after a local top-N or limit.
    Gather {
        sort: Option<SortSpec>,
        limit: Option<u64>,
    },
    /// Written to the sink: one part per subtask.
    Sink { sink: SinkSpec },
}

/// One vertex of a batch job; also its operator descriptor (`batch.stage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The vertex name: its first step's name.
    pub name: String,
    /// One subtask (after a gather) instead of the job's parallelism.
    pub single: bool,
    pub input: StageInput,
    pub head: Head,
    pub ops: Vec<RowOp>,
    pub tail: Tail,
    /// The columns the row operators produce (what the tail receives).
    pub columns: Vec<ColumnDef>,
    /// The steps chained in this stage, as `name (kind)`, for `explain`.
    pub steps: Vec<String>,
    /// The execution style of the exchanges into this stage, when not the job's.
    #[serde(default)]
    pub exchange: Option<Mode>,
}

/// A spec checked against its data: the stages the job graph is built from.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub mode: Mode,
    pub parallelism: Option<usize>,
    pub memory_bytes: Option<u64>,
    /// In topological order; the last one writes the sink.
    pub stages: Vec<Stage>,
    pub sink: SinkSpec,
}

impl Plan {
    /// The execution style of the exchanges into `stage`: its own, or the job's.
    pub fn edge_mode(&self, stage: &Stage) -> Mode {
        stage.exchange.unwrap_or(self.mode)
    }

    /// The input and output when the plan is TeraSort: records sorted by key (ascending) into
    /// records, nothing else. Such a job runs as the TeraSort job (`millrace sort`'s fixed-record
    /// operators) rather than as general stages.
    pub fn terasort(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        let [scan, sort] = self.stages.as_slice() else {
            return None;
        };
        let StageInput::Scan {
            source: SourceSpec::Records { path },
            files,
            projection: None,
            ..
        } = &scan.input
        else {
            return None;
        };
        // The TeraSort job has one exchange mode, the job's.
        if sort.exchange.is_some_and(|m| m != self.mode) {
            return None;
        }
        // One file: the TeraSort job reads one (a folder runs as general stages).
        if !matches!(files.as_slice(), [one] if one.path == *path) {
            return None;
        }
        let by_key = |spec: &SortSpec| matches!(spec.by.as_slice(), [k] if k.column == "key" && !k.descending);
        let shape = scan.ops.is_empty()
            && matches!(&scan.tail, Tail::Gather { sort: Some(s), limit: None } if by_key(s))
            && sort.ops.is_empty()
            && matches!(&sort.head, Head::Sort { spec, limit: None } if by_key(spec))
            && matches!(
                &sort.tail,
                Tail::Sink {
                    sink: SinkSpec::Records { .. }
                }
            );
        shape.then_some((path.as_path(), self.sink.path()))
    }

    /// Every path the job reads: each source's path and, for a folder, each of its files
    /// (a file in it may be a link to an output).
    pub fn sources(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for stage in &self.stages {
            if let StageInput::Scan { source, files, .. } = &stage.input {
                paths.push(source.path().to_path_buf());
                paths.extend(files.iter().map(|f| f.path.clone()));
            }
        }
        paths.dedup();
        paths
    }
}

/// A stage being built (one per branch after a union), and the schema of the rows it
/// produces so far.
struct Open {
    stages: Vec<Stage>,
    schema: SchemaRef,
}

impl Open {
    /// Adds a row operator to every branch.
    fn push(&mut self, op: RowOp, step: String) {
        for stage in &mut self.stages {
            stage.ops.push(op.clone());
            stage.steps.push(step.clone());
        }
    }
}

fn at(step: &Step, what: impl std::fmt::Display) -> BatchError {
    BatchError::Spec {
        what: format!("step {:?}: {what}", step.name),
    }
}

impl JobSpec {
    /// Checks the steps against the data (schemas, columns, types) and plans the stages.
    pub fn plan(&self) -> Result<Plan, BatchError> {
        let mut seen = std::collections::HashSet::new();
        for step in &self.steps {
            if !seen.insert(step.name.as_str()) {
                return Err(at(step, "another step has this name"));
            }
            step.kind().map_err(|e| at(step, e))?;
        }
        if self.steps.is_empty() {
            return Err(BatchError::Spec {
                what: "the job has no steps".into(),
            });
        }
        // Steps whose output no step has used yet: name → open stage.
        let mut open: Vec<(String, Open)> = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut sink = None;
        let take = |open: &mut Vec<(String, Open)>, name: &str, by: &Step| {
            let i = open.iter().position(|(n, _)| n == name).ok_or_else(|| {
                at(
                    by,
                    format!("input {name:?} is not an earlier step, or another step already uses it (a step feeds one step)"),
                )
            })?;
            Ok::<_, BatchError>(open.remove(i).1)
        };
        for (i, step) in self.steps.iter().enumerate() {
            if sink.is_some() {
                return Err(at(step, "steps after the sink"));
            }
            if step.source.is_some() {
                if step.input.is_some() {
                    return Err(at(step, "a source has no input"));
                }
            } else if i == 0 {
                return Err(at(step, "the first step must be a source"));
            }
            let previous = i.checked_sub(1).map(|p| self.steps[p].name.as_str());
            let input_name = step.input.as_deref().or(previous).unwrap_or_default();
            let kind = step.kind().map_err(|e| at(step, e))?;
            let next = match kind {
                "source" => {
                    let source = step.source.clone().expect("kind");
                    let (files, file) = source.plan().map_err(|e| at(step, e))?;
                    let projection = used_columns(&self.steps, i, &file);
                    let schema = match &projection {
                        Some(p) => Arc::new(file.project(p).map_err(|e| at(step, e))?),
                        None => file.clone(),
                    };
                    Open {
                        stages: vec![Stage {
                            name: step.name.clone(),
                            single: false,
                            input: StageInput::Scan {
                                source,
                                files,
                                columns: to_defs(&file),
                                projection,
                            },
                            head: Head::Pass,
                            ops: Vec::new(),
                            tail: Tail::Hash { keys: Vec::new() },
                            columns: Vec::new(),
                            steps: vec![format!("{} (source)", step.name)],
                            exchange: None,
                        }],
                        schema,
                    }
                }
                "filter" | "project" | "tokenize" | "map" => {
                    let mut input = take(&mut open, input_name, step)?;
                    let (op, schema) =
                        row_op(step, &input.schema, &self.functions).map_err(|e| at(step, e))?;
                    input.push(op, format!("{} ({kind})", step.name));
                    input.schema = schema;
                    input
                }
                "aggregate" => {
                    let spec = step.aggregate.clone().expect("kind");
                    let input = take(&mut open, input_name, step)?;
                    let (_, output) = spec.schemas(&input.schema).map_err(|e| at(step, e))?;
                    HashAggregate::new(&spec, &input.schema, Phase::Final)
                        .map_err(|e| at(step, e))?;
                    let columns = to_defs(&input.schema);
                    let partial = spec.schemas(&input.schema).map_err(|e| at(step, e))?.0;
                    let from = close(
                        &mut stages,
                        input,
                        Tail::Partial {
                            spec: spec.clone(),
                            input: columns.clone(),
                        },
                        Some(format!("{} (partial aggregate)", step.name)),
                    );
                    // No keys: one group, finished by one subtask (one row, also for no input).
                    let global = spec.keys.is_empty();
                    exchange_stage(
                        step,
                        vec![(from.0, partial)],
                        Head::Aggregate {
                            spec,
                            input: columns,
                        },
                        "final aggregate",
                        output,
                        global,
                    )
                }
                "join" => {
                    let spec = step.join.clone().expect("kind");
                    let left = take(&mut open, input_name, step)?;
                    let right = take(&mut open, &spec.right, step)?;
                    let output = spec
                        .output_schema(&left.schema, &right.schema)
                        .map_err(|e| at(step, e))?;
                    let l = close(
                        &mut stages,
                        left,
                        Tail::Hash {
                            keys: spec.on.clone(),
                        },
                        None,
                    );
                    let r = close(
                        &mut stages,
                        right,
                        Tail::Hash {
                            keys: spec.right_keys().to_vec(),
                        },
                        None,
                    );
                    let kind = format!("{:?} {} join", spec.kind, spec.strategy.name());
                    let kind = kind.to_lowercase();
                    exchange_stage(step, vec![l, r], Head::Join(spec), &kind, output, false)
                }
                "union" => {
                    let names = step.union.clone().expect("kind");
                    if step.input.is_some() {
                        return Err(at(step, "a union names its inputs in `union`, not `input`"));
                    }
                    if names.len() < 2 {
                        return Err(at(step, "a union needs at least two inputs"));
                    }
                    let mut inputs = Vec::new();
                    for name in &names {
                        inputs.push((name, take(&mut open, name, step)?));
                    }
                    union(inputs).map_err(|e| at(step, e))?
                }
                "sort" => {
                    let spec = step.sort.clone().expect("kind");
                    let input = take(&mut open, input_name, step)?;
                    spec.check(&input.schema).map_err(|e| at(step, e))?;
                    // A limit right after the sort makes it a top-N, on both sides.
                    let limit = self
                        .steps
                        .get(i + 1)
                        .filter(|n| {
                            n.limit.is_some() && n.input.as_deref().is_none_or(|x| x == step.name)
                        })
                        .and_then(|n| n.limit);
                    let schema = input.schema.clone();
                    let from = close(
                        &mut stages,
                        input,
                        Tail::Gather {
                            sort: Some(spec.clone()),
                            limit,
                        },
                        None,
                    );
                    let what = match limit {
                        Some(n) => format!("top {n}"),
                        None => "sort".into(),
                    };
                    exchange_stage(
                        step,
                        vec![from],
                        Head::Sort { spec, limit },
                        &what,
                        schema,
                        true,
                    )
                }
                "limit" => {
                    let n = step.limit.expect("kind");
                    let mut input = take(&mut open, input_name, step)?;
                    if let [sort] = input.stages.as_mut_slice() {
                        if matches!(&sort.head, Head::Sort { limit: Some(l), .. } if *l == n)
                            && sort.ops.is_empty()
                        {
                            // Folded into the sort before it (top-N).
                            sort.steps.push(format!("{} (limit)", step.name));
                            open.push((step.name.clone(), input));
                            continue;
                        }
                    }
                    let schema = input.schema.clone();
                    let from = close(
                        &mut stages,
                        input,
                        Tail::Gather {
                            sort: None,
                            limit: Some(n),
                        },
                        None,
                    );
                    exchange_stage(step, vec![from], Head::Limit(n), "limit", schema, true)
                }
                "sink" => {
                    let spec = step.sink.clone().expect("kind");
                    let mut input = take(&mut open, input_name, step)?;
                    let fields = input.schema.fields();
                    let wants = match spec {
                        SinkSpec::Text { .. } => Some((
                            "one text column",
                            fields.len() == 1 && fields[0].data_type() == &DataType::Utf8,
                        )),
                        SinkSpec::Records { .. } => Some((
                            "key: FixedSizeBinary(10), value: FixedSizeBinary(90)",
                            *input.schema == *super::source::records_schema(),
                        )),
                        _ => None,
                    };
                    if let Some((what, false)) = wants {
                        let has = describe(&input.schema);
                        let sink = spec.format();
                        return Err(at(
                            step,
                            format!("a {sink} sink writes {what}; its input has {has}"),
                        ));
                    }
                    // A one-file sink (records, or `one_file`) writes from one subtask; the branches of a union
                    // meet in one stage that writes the parts.
                    let one_file = spec.one_file();
                    if input.stages.len() > 1 || (one_file && !input.stages[0].single) {
                        let (tail, what) = match one_file {
                            true => (
                                Tail::Gather {
                                    sort: None,
                                    limit: None,
                                },
                                "gather",
                            ),
                            false => (Tail::Rebalance, "union"),
                        };
                        let schema = input.schema.clone();
                        let from = close(&mut stages, input, tail, None);
                        let sides = vec![(from.0, schema)];
                        input = exchange_stage(step, sides, Head::Pass, what, from.1, one_file);
                    }
                    let label = format!("{} ({} sink)", step.name, spec.format());
                    input.stages[0].steps.push(label);
                    sink = Some(spec.clone());
                    close(&mut stages, input, Tail::Sink { sink: spec }, None);
                    continue;
                }
                other => unreachable!("step kind {other}"),
            };
            open.push((step.name.clone(), next));
        }
        let sink = sink.ok_or_else(|| BatchError::Spec {
            what: "the job has no sink step".into(),
        })?;
        if let Some((name, _)) = open.first() {
            return Err(BatchError::Spec {
                what: format!("step {name:?}: its rows go nowhere (no step uses it as input)"),
            });
        }
        for step in self.steps.iter().filter(|s| s.exchange.is_some()) {
            let begins = |s: &Stage| s.name == step.name && s.exchange.is_some();
            if !stages.iter().any(begins) {
                return Err(at(
                    step,
                    "`exchange` is set but this step reads no exchange (an aggregate, join, sort, limit or a gathered sink does; this one runs in its input's stage — a limit right after a sort is part of the sort's stage: set `exchange` on the sort)",
                ));
            }
        }
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
            stages,
            sink,
        })
    }
}

/// `name: type, …` of a schema's columns.
pub(super) fn describe(schema: &Schema) -> String {
    let columns: Vec<String> = (schema.fields().iter())
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    columns.join(", ")
}

/// The columns of source step `source` (its file's `schema`) that the steps after it read,
/// as indices in file order; `None` when they may read all of them. Follows the chain of
/// steps fed by the source until a step replaces its columns (project, tokenize, aggregate)
/// or the sink writes them; a step it does not understand keeps every column. Over-counting
/// is harmless (a column read for nothing); the planner checks every step afterwards.
fn used_columns(steps: &[Step], source: usize, schema: &Schema) -> Option<Vec<usize>> {
    let mut used: std::collections::BTreeSet<&str> = Default::default();
    let mut at = source;
    loop {
        let name = steps[at].name.as_str();
        let next = (at + 1..steps.len()).find(|&j| {
            let s = &steps[j];
            let input =
                (s.input.as_deref()).or((j == at + 1 && s.source.is_none()).then_some(name));
            input == Some(name)
                || s.join.as_ref().is_some_and(|j| j.right == name)
                || s.union
                    .as_ref()
                    .is_some_and(|u| u.iter().any(|n| n == name))
        })?;
        let step = &steps[next];
        if let Some(p) = &step.filter {
            used.extend(p.columns());
        } else if let Some(p) = &step.project {
            used.extend(p.columns.iter().map(String::as_str));
            break;
        } else if let Some(t) = &step.tokenize {
            used.insert(&t.column);
            break;
        } else if let Some(a) = &step.aggregate {
            used.extend(a.keys.iter().map(String::as_str));
            used.extend(a.aggregates.iter().filter_map(|c| c.column.as_deref()));
            break;
        } else if let Some(j) = &step.join {
            let left =
                step.input.as_deref() == Some(name) || (step.input.is_none() && next == at + 1);
            let keys = if left { &j.on } else { j.right_keys() };
            used.extend(keys.iter().map(String::as_str));
        } else if let Some(s) = &step.sort {
            used.extend(s.by.iter().map(|k| k.column.as_str()));
        } else if step.limit.is_none() && step.union.is_none() {
            return None; // A sink (every column) or something new.
        }
        at = next;
    }
    let mut read: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| used.contains(schema.field(i).name().as_str()))
        .collect();
    if read.len() == schema.fields().len() {
        return None;
    }
    if read.is_empty() {
        read.push(0); // Rows without columns: the first one keeps their count.
    }
    Some(read)
}

/// Ends an open stage (every branch) with `tail`; returns the stages' indices and the schema
/// they send.
fn close(
    stages: &mut Vec<Stage>,
    open: Open,
    tail: Tail,
    step: Option<String>,
) -> (Vec<usize>, SchemaRef) {
    let mut from = Vec::new();
    for mut stage in open.stages {
        stage.tail = tail.clone();
        stage.columns = to_defs(&open.schema);
        stage.steps.extend(step.clone());
        stages.push(stage);
        from.push(stages.len() - 1);
    }
    (from, open.schema)
}

/// A new stage behind exchanges, one input side per entry: the stages that feed it and the
/// schema they send.
fn exchange_stage(
    step: &Step,
    sides: Vec<(Vec<usize>, SchemaRef)>,
    head: Head,
    what: &str,
    schema: SchemaRef,
    single: bool,
) -> Open {
    let (mut from, mut columns, mut side_of) = (Vec::new(), Vec::new(), Vec::new());
    for (side, (stages, schema)) in sides.into_iter().enumerate() {
        for stage in stages {
            from.push(stage);
            columns.push(to_defs(&schema));
            side_of.push(side);
        }
    }
    Open {
        stages: vec![Stage {
            name: step.name.clone(),
            single,
            input: StageInput::Exchange {
                from,
                columns,
                sides: side_of,
            },
            head,
            ops: Vec::new(),
            tail: Tail::Hash { keys: Vec::new() },
            columns: Vec::new(),
            steps: vec![format!("{} ({what})", step.name)],
            exchange: step.exchange,
        }],
        schema,
    }
}

/// The branches of a union, matched by column name (Spark's `unionByName`): every input has
/// the first one's columns, of the same types, in any order (reordered with a projection); a
/// column is nullable when it is in any input.
fn union(inputs: Vec<(&String, Open)>) -> Result<Open, String> {
    let first = inputs[0].1.schema.clone();
    let names: Vec<String> = first.fields().iter().map(|f| f.name().clone()).collect();
    let mut nullable = vec![false; names.len()];
    let mut stages = Vec::new();
    for (name, mut input) in inputs {
        let schema = input.schema.clone();
        let mut extra: Vec<&str> = (schema.fields().iter())
            .map(|f| f.name().as_str())
            .filter(|n| !names.iter().any(|m| m == n))
            .collect();
        if let Some(column) = extra.pop() {
            return Err(format!(
                "column {column:?} of {name:?} is not in the first input ({})",
                names.join(", ")
            ));
        }
        for (i, field) in first.fields().iter().enumerate() {
            let Ok(theirs) = schema.field_with_name(field.name()) else {
                return Err(format!("{name:?} has no column {:?}", field.name()));
            };
            if theirs.data_type() != field.data_type() {
                return Err(format!(
                    "column {:?} is {} in one input and {} in {name:?}",
                    field.name(),
                    field.data_type(),
                    theirs.data_type()
                ));
            }
            nullable[i] |= theirs.is_nullable();
        }
        if schema.fields().iter().map(|f| f.name()).ne(names.iter()) {
            input.push(
                RowOp::Project {
                    columns: names.clone(),
                },
                format!("({name} in union order)"),
            );
        }
        stages.extend(input.stages);
    }
    let fields = (first.fields().iter().zip(nullable))
        .map(|(f, nullable)| f.as_ref().clone().with_nullable(nullable));
    Ok(Open {
        stages,
        schema: Arc::new(Schema::new(fields.collect::<Vec<_>>())),
    })
}

/// A filter, project, tokenize or map step checked against `schema`, and the schema after it
/// (a user function's: what it returns for an empty batch).
fn row_op(
    step: &Step,
    schema: &SchemaRef,
    functions: &super::spec::Functions,
) -> Result<(RowOp, SchemaRef), BatchError> {
    if let Some(name) = &step.map {
        let function = functions.0.get(name).ok_or_else(|| BatchError::Spec {
            what: format!("no function {name:?} (functions come from the Rust API)"),
        })?;
        let empty = arrow_array::RecordBatch::new_empty(schema.clone());
        let out = function(empty).map_err(|reason| BatchError::Function {
            name: name.clone(),
            reason,
        })?;
        let function = name.clone();
        return Ok((RowOp::Map { function }, out.schema()));
    }
    if let Some(p) = &step.filter {
        p.check(schema)?;
        return Ok((RowOp::Filter(p.clone()), schema.clone()));
    }
    if let Some(p) = &step.project {
        let indices = p
            .columns
            .iter()
            .map(|c| super::column_index(schema, c))
            .collect::<Result<Vec<_>, _>>()?;
        let projected = schema
            .project(&indices)
            .map_err(BatchError::arrow("project"))?;
        return Ok((
            RowOp::Project {
                columns: p.columns.clone(),
            },
            Arc::new(projected),
        ));
    }
    let t = step.tokenize.as_ref().expect("a row operator");
    let column = super::column_index(schema, &t.column)?;
    if schema.field(column).data_type() != &DataType::Utf8 {
        return Err(BatchError::TypeMismatch {
            column: t.column.clone(),
            found: schema.field(column).data_type().to_string(),
            expected: "Utf8 (text) to tokenize".into(),
        });
    }
    let schema = Arc::new(Schema::new(vec![Field::new(
        &t.name,
        DataType::Utf8,
        false,
    )]));
    Ok((
        RowOp::Tokenize {
            column,
            name: t.name.clone(),
        },
        schema,
    ))
}

/// The job graph a plan runs as, in words: vertices with their chained steps and parallelism,
/// the exchanges with their distribution and partition type, and the pipelined regions.
pub fn explain(plan: &Plan, parallelism: usize) -> String {
    use std::fmt::Write;
    let partition = |mode| match mode {
        Mode::Pipelined => "pipelined",
        Mode::Staged => "blocking",
        Mode::MapReduce => "blocking, consumers deployed at 5% of producers finished",
    };
    let columns = |defs: &[ColumnDef]| {
        defs.iter()
            .map(|c| format!("{}: {}", c.name, c.data_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("job {} (mode {})\n", plan.name, plan.mode.as_str());
    for (v, stage) in plan.stages.iter().enumerate() {
        if let StageInput::Exchange { from, .. } = &stage.input {
            for &f in from {
                let how = match &plan.stages[f].tail {
                    Tail::Partial { spec, .. } => format!(
                        "hash({}) over {} key groups",
                        spec.keys.join(", "),
                        super::KEY_GROUPS
                    ),
                    Tail::Hash { keys } => format!(
                        "hash({}) over {} key groups",
                        keys.join(", "),
                        super::KEY_GROUPS
                    ),
                    Tail::Gather { .. } => "gather to one subtask".into(),
                    Tail::Rebalance => "rebalance (round-robin)".into(),
                    Tail::Sink { .. } => unreachable!("a sink feeds no stage"),
                };
                let mode = plan.edge_mode(stage);
                let own = match stage.exchange {
                    Some(m) if m != plan.mode => format!(" (exchange = {:?})", m.as_str()),
                    _ => String::new(),
                };
                let _ = writeln!(out, "edge {f} → {v}: {how}, {}{own}", partition(mode));
            }
        }
        let p = if stage.single { 1 } else { parallelism };
        let _ = writeln!(
            out,
            "vertex {v} {} ×{p}: {}",
            stage.name,
            stage.steps.join(" → ")
        );
        if let StageInput::Scan {
            source,
            files,
            columns: c,
            projection,
        } = &stage.input
        {
            let read = match projection {
                Some(p) => p.iter().map(|&i| c[i].clone()).collect(),
                None => c.clone(),
            };
            let of = match projection {
                Some(_) => format!(" ({} of {} columns)", read.len(), c.len()),
                None => String::new(),
            };
            let folder = match files.as_slice() {
                [one] if one.path == source.path() => String::new(),
                [_] => " (1 file)".to_string(),
                _ => format!(" ({} files)", files.len()),
            };
            let _ = writeln!(
                out,
                "  reads {} {}{folder} in splits [{}]{of}",
                source.format(),
                source.path().display(),
                columns(&read)
            );
        }
        if let Tail::Sink { sink } = &stage.tail {
            let _ = writeln!(
                out,
                "  writes {} {} [{}]",
                sink.format(),
                sink.path().display(),
                columns(&stage.columns)
            );
        }
    }
    if plan.terasort().is_some() {
        let _ = writeln!(
            out,
            "runs as TeraSort: the fixed-record operators of `millrace sort` (sample, range exchange, sort, one output file)"
        );
    }
    // The regions the scheduler deploys: stages joined by pipelined edges.
    let regions = super::operators::job_graph(plan, parallelism).pipelined_regions();
    let name = |r: &[crate::graph::VertexId]| {
        let names: Vec<&str> = r.iter().map(|v| plan.stages[v.0].name.as_str()).collect();
        format!("{{{}}}", names.join(", "))
    };
    let _ = match regions.as_slice() {
        [one] => writeln!(
            out,
            "regions: 1 pipelined region: {} deployed together",
            name(one)
        ),
        _ => writeln!(
            out,
            "regions: {} regions: {}, each once its blocking inputs are complete",
            regions.len(),
            regions
                .iter()
                .map(|r| name(r))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    out
}
