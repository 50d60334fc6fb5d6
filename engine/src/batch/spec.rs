//! The declarative job spec (TOML): named steps, each one kind of operator, each fed by the
//! step before it or by the step its `input` names.
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
//! name = "top"
//! sort = { by = ["n desc", "word"] }
//! [[step]]
//! name = "ten"
//! limit = 10
//! [[step]]
//! name = "out"
//! sink = { csv = { path = "counts" } }
//! ```
//!
//! A join names its right side: `join = { right = "customers", on = ["id"], type = "left" }`
//! in a step whose `input` (or the step before) is the left side.
//!
//! The same schema is read from JSON (`*.json`). Unknown fields are errors; relative paths are
//! relative to the spec's folder (`millrace submit`: the client's working folder). Every error
//! names the step and what is wrong with it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::aggregate::AggregateSpec;
use super::filter::Predicate;
use super::join::JoinSpec;
use super::sort::SortSpec;
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

/// A job spec as written (TOML), or as built with [`JobBuilder`](super::JobBuilder).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: Option<String>,
    pub mode: Option<Mode>,
    pub parallelism: Option<usize>,
    pub memory: Option<String>,
    #[serde(rename = "step", default)]
    pub steps: Vec<Step>,
    /// The user functions `map` steps call (the Rust API only: a spec carries no code).
    #[serde(skip)]
    pub functions: Functions,
}

/// A user function over batches: a batch in, a batch out (any schema, the same for every
/// batch), or an error message.
pub type BatchFn = std::sync::Arc<
    dyn Fn(arrow_array::RecordBatch) -> Result<arrow_array::RecordBatch, String> + Send + Sync,
>;

/// User functions by name; they live in the process that runs the job.
#[derive(Clone, Default)]
pub struct Functions(pub std::collections::BTreeMap<String, BatchFn>);

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// One step: a name and exactly one operator.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// The step whose rows this one takes (default: the step before it).
    pub input: Option<String>,
    pub source: Option<SourceSpec>,
    pub tokenize: Option<TokenizeSpec>,
    pub aggregate: Option<AggregateSpec>,
    pub sink: Option<SinkSpec>,
    pub filter: Option<Predicate>,
    pub project: Option<ProjectSpec>,
    pub join: Option<JoinSpec>,
    pub sort: Option<SortSpec>,
    /// The first N rows (after a `sort`: the top N).
    pub limit: Option<u64>,
    /// The rows of every step named (by column name; Spark's `unionByName`, SQL's UNION ALL).
    pub union: Option<Vec<String>>,
    /// The execution style of the exchange(s) into this step, when it reads through one
    /// (an aggregate's final phase, a join, a sort, a limit, a gathered sink): overrides the
    /// job's `mode` for these edges only.
    pub exchange: Option<Mode>,
    /// A user function (by its name in [`JobSpec::functions`]) applied to every batch: the
    /// Rust API's `map_batches` and `filter_batches`; not in TOML.
    #[serde(skip)]
    pub map: Option<String>,
}

impl Step {
    /// The step's one operator, or why it does not have exactly one.
    pub fn kind(&self) -> Result<&'static str, String> {
        let kinds = [
            ("source", self.source.is_some()),
            ("filter", self.filter.is_some()),
            ("project", self.project.is_some()),
            ("tokenize", self.tokenize.is_some()),
            ("aggregate", self.aggregate.is_some()),
            ("join", self.join.is_some()),
            ("sort", self.sort.is_some()),
            ("limit", self.limit.is_some()),
            ("union", self.union.is_some()),
            ("sink", self.sink.is_some()),
            ("map", self.map.is_some()),
        ];
        let given: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
        match given.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "no operator (give one of {})",
                // `map` is the Rust API's.
                kinds[..kinds.len() - 1]
                    .iter()
                    .map(|k| k.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            many => Err(format!(
                "one operator per step, found {}",
                many.join(" and ")
            )),
        }
    }
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
    /// A folder of CSV part files (`part-00000`, …), one per subtask, each with a header;
    /// with `one_file`, one CSV file written by one subtask.
    Csv {
        path: PathBuf,
        #[serde(default)]
        one_file: bool,
    },
    /// A folder of Parquet part files (snappy; a row group when the budget refuses more), or
    /// one file with `one_file`.
    Parquet {
        path: PathBuf,
        #[serde(default)]
        one_file: bool,
    },
    /// A folder of text part files: the one text column's values, a line each (Spark's
    /// text sink), or one file with `one_file`.
    Text {
        path: PathBuf,
        #[serde(default)]
        one_file: bool,
    },
    /// One file of Sort Benchmark records (`key` and `value`, 10 and 90 bytes), as `sort`
    /// writes (gensort's format; valsort checks it).
    Records { path: PathBuf },
}

impl SinkSpec {
    /// A folder of CSV part files.
    pub fn csv(path: impl Into<PathBuf>) -> Self {
        Self::Csv {
            path: path.into(),
            one_file: false,
        }
    }

    /// A folder of Parquet part files.
    pub fn parquet(path: impl Into<PathBuf>) -> Self {
        Self::Parquet {
            path: path.into(),
            one_file: false,
        }
    }

    /// A folder of text part files.
    pub fn text(path: impl Into<PathBuf>) -> Self {
        Self::Text {
            path: path.into(),
            one_file: false,
        }
    }

    /// The same sink writing one file instead of a folder of parts.
    pub fn into_one_file(mut self) -> Self {
        match &mut self {
            Self::Csv { one_file, .. }
            | Self::Parquet { one_file, .. }
            | Self::Text { one_file, .. } => *one_file = true,
            Self::Records { .. } => {}
        }
        self
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Csv { path, .. }
            | Self::Parquet { path, .. }
            | Self::Text { path, .. }
            | Self::Records { path } => path,
        }
    }

    pub fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            Self::Csv { path, .. }
            | Self::Parquet { path, .. }
            | Self::Text { path, .. }
            | Self::Records { path } => path,
        }
    }

    /// Whether the sink writes one file (records always, as `sort` does; the others with
    /// `one_file`) rather than a folder of part files.
    pub fn one_file(&self) -> bool {
        match self {
            Self::Csv { one_file, .. }
            | Self::Parquet { one_file, .. }
            | Self::Text { one_file, .. } => *one_file,
            Self::Records { .. } => true,
        }
    }

    /// The format's name, for `explain`.
    pub fn format(&self) -> &'static str {
        match self {
            Self::Csv { .. } => "csv",
            Self::Parquet { .. } => "parquet",
            Self::Text { .. } => "text",
            Self::Records { .. } => "records",
        }
    }
}

/// A row operator of the map side, applied to each batch in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowOp {
    Tokenize {
        column: usize,
        name: String,
    },
    Filter(Predicate),
    Project {
        columns: Vec<String>,
    },
    /// A user function, by name (it lives in the process: `TaskResources::functions`).
    Map {
        function: String,
    },
}

impl JobSpec {
    /// Reads and parses a spec file, TOML or (named `*.json`) JSON; relative paths in it are
    /// relative to its folder. Errors name the file (and, from the parser, the line and the
    /// unknown or missing field).
    pub fn from_file(path: &Path) -> Result<Self, BatchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BatchError::BadSpec {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let json = path.extension().is_some_and(|e| e == "json");
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut spec = Self::parse(&text, json, folder, &path.display().to_string())?;
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    /// Parses a spec's text (TOML, or JSON when `json`) and makes its relative paths
    /// relative to `base`; errors name `origin`.
    pub fn parse(text: &str, json: bool, base: &Path, origin: &str) -> Result<Self, BatchError> {
        let parsed = match json {
            true => serde_json::from_str(text).map_err(|e| e.to_string()),
            false => toml::from_str(text).map_err(|e| one_line(&e.to_string())),
        };
        let mut spec: JobSpec = parsed.map_err(|reason| BatchError::BadSpec {
            path: origin.to_string(),
            reason,
        })?;
        spec.resolve_paths(base);
        Ok(spec)
    }

    /// Makes every relative source and sink path relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in self.paths_mut() {
            *path = base.join(&*path);
        }
    }

    /// Every source and sink path of the spec, sources first (to check or confine them).
    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let (mut sources, mut sinks) = (Vec::new(), Vec::new());
        for Step { source, sink, .. } in &mut self.steps {
            sources.extend(source.as_mut().map(SourceSpec::path_mut));
            sinks.extend(sink.as_mut().map(SinkSpec::path_mut));
        }
        sources.append(&mut sinks);
        sources
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example spec survives TOML → JSON → spec unchanged (a cluster ships specs as
    /// JSON), and the JSON form is read by `from_file` like the TOML one.
    #[test]
    fn examples_round_trip_through_json() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let spec = JobSpec::from_file(&path).unwrap();
            let json = serde_json::to_string(&spec).unwrap();
            let back = JobSpec::parse(&json, true, Path::new("/elsewhere"), "json").unwrap();
            let value = |s: &JobSpec| serde_json::to_value(s).unwrap();
            assert_eq!(value(&back), value(&spec), "{}", path.display());
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("job.json");
            std::fs::write(&file, &json).unwrap();
            assert_eq!(value(&JobSpec::from_file(&file).unwrap()), value(&spec));
            seen += 1;
        }
        assert!(seen >= 5, "{seen} examples");
        let error = JobSpec::parse(r#"{"bogus": 1}"#, true, Path::new(""), "x.json")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `bogus`"), "{error}");
    }
}
