//! The Rust API: a batch job built in code, with closures for user code, run in-process.
//!
//! A [`JobBuilder`] builds the same [`JobSpec`] a TOML file holds — named steps, each fed by
//! the step before it unless named otherwise — plus the user functions of `map_batches` and
//! `filter_batches` steps, which live in this process (a spec file carries no code). It is
//! planned, explained and run exactly as a spec is.
//!
//! ```no_run
//! use engine::batch::{AggCall, BatchJobConfig, JobBuilder, SinkSpec, SourceSpec};
//!
//! let result = JobBuilder::new("wordcount")
//!     .source("lines", SourceSpec::text("words.txt"))
//!     .tokenize("words", "line", "word")
//!     .key_by(["word"])
//!     .aggregate("counts", [AggCall::count("n")])
//!     .sort("top", ["n desc", "word"])
//!     .sink("out", SinkSpec::csv("counts"))
//!     .run(&BatchJobConfig::default())?;
//! println!("{} words", result.rows_out);
//! # Ok::<(), engine::EngineError>(())
//! ```

use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};

use super::aggregate::{AggCall, AggFunc, AggregateSpec};
use super::filter::Predicate;
use super::join::{JoinKind, JoinSpec};
use super::operators::{plan_spec, run_spec, BatchJobConfig, BatchJobResult, FinishedJob};
use super::sort::{SortKey, SortSpec};
use super::source::SourceSpec;
use super::spec::{JobSpec, Mode, ProjectSpec, SinkSpec, Step, TokenizeSpec};
use super::BatchError;
use crate::EngineError;

/// A batch job being built; see the module documentation.
#[derive(Clone, Debug)]
pub struct JobBuilder {
    spec: JobSpec,
    /// Keys set by [`key_by`](Self::key_by) for the next aggregate.
    keys: Option<Vec<String>>,
    /// The first mistake made while building (reported when the job is planned).
    error: Option<String>,
}

impl JobBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: JobSpec {
                name: Some(name.into()),
                ..JobSpec::default()
            },
            keys: None,
            error: None,
        }
    }

    /// The execution style (default pipelined); `BatchJobConfig::mode` overrides it.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.spec.mode = Some(mode);
        self
    }

    /// Subtasks per vertex; `BatchJobConfig::parallelism` overrides it.
    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.spec.parallelism = Some(parallelism);
        self
    }

    /// The step added next takes the rows of `step` instead of the step before it.
    pub fn input(mut self, step: impl Into<String>) -> Self {
        self.spec.steps.push(Step {
            input: Some(step.into()),
            ..Step::default()
        });
        self
    }

    /// Adds a step with `set` applied to it (taking an `input` left by [`input`](Self::input)).
    fn step(mut self, name: impl Into<String>, set: impl FnOnce(&mut Step)) -> Self {
        let mut step = match self.spec.steps.last() {
            Some(last) if last.name.is_empty() => self.spec.steps.pop().expect("just seen"),
            _ => Step::default(),
        };
        step.name = name.into();
        set(&mut step);
        self.spec.steps.push(step);
        self
    }

    pub fn source(self, name: impl Into<String>, source: SourceSpec) -> Self {
        self.step(name, |s| s.source = Some(source))
    }

    /// A user function applied to every batch: a batch in, a batch out (its schema is what
    /// the function returns for an empty batch of the input's schema).
    pub fn map_batches(
        mut self,
        name: impl Into<String>,
        function: impl Fn(RecordBatch) -> Result<RecordBatch, String> + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        (self.spec.functions.0).insert(name.clone(), Arc::new(function));
        let function = name.clone();
        self.step(name, |s| s.map = Some(function))
    }

    /// Keeps the rows for which a user function returns true (null and false drop the row).
    pub fn filter_batches(
        self,
        name: impl Into<String>,
        predicate: impl Fn(&RecordBatch) -> Result<BooleanArray, String> + Send + Sync + 'static,
    ) -> Self {
        self.map_batches(name, move |batch| {
            let keep = predicate(&batch)?;
            arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| e.to_string())
        })
    }

    /// Keeps the rows a built-in predicate accepts (SQL null semantics).
    pub fn filter(self, name: impl Into<String>, predicate: Predicate) -> Self {
        self.step(name, |s| s.filter = Some(predicate))
    }

    pub fn project<S: Into<String>>(
        self,
        name: impl Into<String>,
        columns: impl IntoIterator<Item = S>,
    ) -> Self {
        let columns = columns.into_iter().map(Into::into).collect();
        self.step(name, |s| s.project = Some(ProjectSpec { columns }))
    }

    /// Splits text column `column` into lower-case words, a row each, in column `as_name`.
    pub fn tokenize(
        self,
        name: impl Into<String>,
        column: impl Into<String>,
        as_name: impl Into<String>,
    ) -> Self {
        let spec = TokenizeSpec {
            column: column.into(),
            name: as_name.into(),
        };
        self.step(name, |s| s.tokenize = Some(spec))
    }

    /// The group keys of the next [`aggregate`](Self::aggregate).
    pub fn key_by<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Groups by the keys of [`key_by`](Self::key_by) (none: one group of every row).
    pub fn aggregate(
        mut self,
        name: impl Into<String>,
        aggregates: impl IntoIterator<Item = AggCall>,
    ) -> Self {
        let spec = AggregateSpec {
            keys: self.keys.take().unwrap_or_default(),
            aggregates: aggregates.into_iter().collect(),
        };
        self.step(name, |s| s.aggregate = Some(spec))
    }

    /// Joins step `left` with step `right` on equal `on` columns.
    pub fn join<S: Into<String>>(
        self,
        name: impl Into<String>,
        left: impl Into<String>,
        right: impl Into<String>,
        on: impl IntoIterator<Item = S>,
        kind: JoinKind,
    ) -> Self {
        let spec = JoinSpec {
            right: right.into(),
            on: on.into_iter().map(Into::into).collect(),
            right_on: None,
            kind,
            strategy: Default::default(),
        };
        self.input(left).step(name, |s| s.join = Some(spec))
    }

    /// Sorts every row by keys written as in specs: `"col"`, `"col desc"`,
    /// `"col asc nulls first"`.
    pub fn sort<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        by: impl IntoIterator<Item = S>,
    ) -> Self {
        let by: Result<Vec<SortKey>, String> = by
            .into_iter()
            .map(|k| SortKey::try_from(k.into()))
            .collect();
        match by {
            Ok(by) => self.step(name, |s| s.sort = Some(SortSpec { by })),
            Err(e) => {
                self.error.get_or_insert(e);
                self
            }
        }
    }

    /// The first `n` rows (after a sort: the top `n`).
    pub fn limit(self, name: impl Into<String>, n: u64) -> Self {
        self.step(name, |s| s.limit = Some(n))
    }

    /// The rows of every step named, matched by column name.
    pub fn union<S: Into<String>>(
        self,
        name: impl Into<String>,
        inputs: impl IntoIterator<Item = S>,
    ) -> Self {
        let inputs = inputs.into_iter().map(Into::into).collect();
        self.step(name, |s| s.union = Some(inputs))
    }

    pub fn sink(self, name: impl Into<String>, sink: SinkSpec) -> Self {
        self.step(name, |s| s.sink = Some(sink))
    }

    /// The spec built, or the first mistake made building it.
    pub fn spec(&self) -> Result<&JobSpec, EngineError> {
        match &self.error {
            Some(e) => Err(BatchError::Spec { what: e.clone() }.into()),
            None => Ok(&self.spec),
        }
    }

    /// The job graph, as `millrace explain` prints it.
    pub fn explain(&self, config: &BatchJobConfig) -> Result<String, EngineError> {
        let (plan, parallelism) = plan_spec(self.spec()?, config)?;
        Ok(super::explain(&plan, parallelism))
    }

    /// Runs the job in this process and publishes its output.
    pub fn run(self, config: &BatchJobConfig) -> Result<BatchJobResult, EngineError> {
        self.run_uncommitted(config)?.publish()
    }

    /// Runs the job up to, not including, the rename of its output.
    pub fn run_uncommitted(self, config: &BatchJobConfig) -> Result<FinishedJob, EngineError> {
        self.spec()?;
        run_spec(self.spec, config)
    }
}

impl AggCall {
    /// `count(*) AS name`: the rows of each group.
    pub fn count(name: impl Into<String>) -> Self {
        Self {
            func: AggFunc::Count,
            column: None,
            name: name.into(),
        }
    }

    /// `func(column) AS name`.
    pub fn of(func: AggFunc, column: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            func,
            column: Some(column.into()),
            name: name.into(),
        }
    }
}

impl SourceSpec {
    /// Text lines, as a `line` column.
    pub fn text(path: impl Into<std::path::PathBuf>) -> Self {
        Self::Text { path: path.into() }
    }

    /// CSV with a header, comma-separated, a bad record failing the job.
    pub fn csv(path: impl Into<std::path::PathBuf>) -> Self {
        Self::Csv {
            path: path.into(),
            header: true,
            delimiter: ',',
            on_error: Default::default(),
            schema: None,
        }
    }

    pub fn parquet(path: impl Into<std::path::PathBuf>) -> Self {
        Self::Parquet { path: path.into() }
    }
}
