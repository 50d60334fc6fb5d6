//! Operators: what a vertex runs, as plain data ([`OperatorDescriptor`]), turned into subtask
//! code by an [`OperatorRegistry`] with what the process holds for the job ([`TaskResources`]).
//!
//! ```text
//! JobVertex { operator: OperatorDescriptor }   serializable: kind + config (sizes, ranges…)
//!        │ OperatorRegistry: kind → fn(&descriptor, &resources, subtask)
//!        ▼
//! Box<dyn Invokable>   ── runs with SubtaskContext { resources: Arc<TaskResources>, … }
//! ```
//!
//! A descriptor holds no handles and no closures, so the same vertex can be instantiated in
//! another process: that process builds its own [`TaskResources`] (opens the input by path,
//! the output files by their temp paths, creates its budgets and pool from the job's sizes)
//! and its own registry. Factories are plain `fn`s: they cannot capture job state.
//!
//! Descriptors round-trip through JSON and postcard. They are an externally tagged enum (the
//! variant is the kind, `{"terasort.map": {…}}` in JSON): postcard is not self-describing,
//! so internally or adjacently tagged enums (`{"kind": …, "config": …}`) cannot be read back
//! from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shuffle::spill::{Compression, IoEngine, WriterOptions};
use shuffle::BufferPool;

use crate::memory::MemoryBudget;
use crate::output::OutputFile;
use crate::task::Invokable;
use crate::terasort;
use crate::EngineError;

/// What a vertex runs: its operator's kind and configuration, as plain serializable data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OperatorDescriptor {
    /// TeraSort map: reads splits, range-partitions entries (in memory) or records.
    #[serde(rename = "terasort.map")]
    TeraSortMap(terasort::MapConfig),
    /// TeraSort in-memory reducer: buckets entries, sorts, copies records from the mapped input.
    #[serde(rename = "terasort.sort")]
    TeraSortSort(terasort::InMemorySortConfig),
    /// TeraSort out-of-core reducer: arenas, spilled runs, merge.
    #[serde(rename = "terasort.external-sort")]
    TeraSortExternalSort(terasort::ExternalSortConfig),
    /// `mapreduce` map task: sorts its split, spills, merges into one indexed map output.
    #[serde(rename = "terasort.sorting-map")]
    TeraSortSortingMap(terasort::SortingMapConfig),
    /// `mapreduce` reduce task: copies map outputs, merges them into its range.
    #[serde(rename = "terasort.merging-reduce")]
    TeraSortMergingReduce(terasort::MergingReduceConfig),
    /// A stage of a general batch job: input (splits or exchanges), head operator (final
    /// aggregate, join, sort, limit), row operators, tail (exchange or sink).
    #[serde(rename = "batch.stage")]
    BatchStage(Box<crate::batch::Stage>),
    /// An operator defined outside this enum (tests, tools): its kind and integer arguments
    /// that its factory reads.
    #[serde(rename = "generic")]
    Generic { kind: String, args: Vec<u64> },
}

impl OperatorDescriptor {
    /// The kind the registry looks the factory up by.
    pub fn kind(&self) -> &str {
        match self {
            Self::TeraSortMap(_) => "terasort.map",
            Self::TeraSortSort(_) => "terasort.sort",
            Self::TeraSortExternalSort(_) => "terasort.external-sort",
            Self::TeraSortSortingMap(_) => "terasort.sorting-map",
            Self::TeraSortMergingReduce(_) => "terasort.merging-reduce",
            Self::BatchStage(_) => "batch.stage",
            Self::Generic { kind, .. } => kind,
        }
    }

    /// An operator of `kind` with integer arguments (see [`Self::Generic`]).
    pub fn generic(kind: impl Into<String>, args: impl Into<Vec<u64>>) -> Self {
        Self::Generic {
            kind: kind.into(),
            args: args.into(),
        }
    }

    /// The error for a factory handed a descriptor of another kind (a registry mix-up).
    pub fn mismatch(&self, expected: &str) -> EngineError {
        EngineError::Internal {
            what: format!(
                "the factory of {expected} was handed a {} descriptor",
                self.kind()
            ),
        }
    }
}

/// Makes the code of subtask `subtask` from a vertex's descriptor and the process's
/// resources. A plain `fn`: it cannot capture job state.
pub type OperatorFactory =
    fn(&OperatorDescriptor, &Arc<TaskResources>, usize) -> Result<Box<dyn Invokable>, EngineError>;

/// Kind → factory: how a process turns descriptors into subtasks.
#[derive(Clone, Default)]
pub struct OperatorRegistry {
    factories: BTreeMap<String, OperatorFactory>,
}

impl std::fmt::Debug for OperatorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl OperatorRegistry {
    /// A registry with no operators.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the operators this crate defines (TeraSort's).
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        terasort::register_operators(&mut registry);
        crate::batch::register_operators(&mut registry);
        registry
    }

    /// Registers (or replaces) the factory of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, factory: OperatorFactory) -> &mut Self {
        self.factories.insert(kind.into(), factory);
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// The code of subtask `subtask` of a vertex running `descriptor`; an unknown kind is an
    /// error that names it.
    pub fn instantiate(
        &self,
        descriptor: &OperatorDescriptor,
        resources: &Arc<TaskResources>,
        subtask: usize,
    ) -> Result<Box<dyn Invokable>, EngineError> {
        let kind = descriptor.kind();
        let factory = self
            .factories
            .get(kind)
            .ok_or_else(|| EngineError::InvalidJob {
                reason: format!(
                    "no operator of kind {kind:?} is registered (known: {})",
                    self.kinds().collect::<Vec<_>>().join(", ")
                ),
            })?;
        factory(descriptor, resources, subtask)
    }
}

/// What a process gives every subtask of a job: process-local, never serialized. Each field
/// is rebuilt by a worker process from the job's serializable settings (budgets and pool
/// from their sizes, folders and files from their paths); only a spooled standard input
/// exists as nothing but this process's handle (see [`JobInput`]).
#[derive(Debug)]
pub struct TaskResources {
    /// The job's memory budget, which subtasks reserve from as they grow (arenas, copies);
    /// `None` when nothing reserves at run time.
    pub memory: Option<Arc<MemoryBudget>>,
    /// A budget of its own for map slots' sort buffers (`mapreduce`), so reducers copying
    /// early never take what a map task needs.
    pub map_memory: Option<Arc<MemoryBudget>>,
    /// The job's temp folders (one per disk), where subtasks create their spill files;
    /// owned (created, locked, removed) by whoever runs the job.
    pub spill_dirs: Vec<PathBuf>,
    /// Exchange buffers, recycled between producers and consumers.
    pub pool: BufferPool,
    /// Live counters for progress displays and metrics.
    pub progress: Arc<terasort::Progress>,
    /// The job's input, opened (and mapped, when the plan says so) once per process.
    pub input: Option<JobInput>,
    /// The job's output files (one, or one per part), opened by their temp paths.
    pub outputs: Vec<OutputFile>,
    /// User functions of batch jobs built with the Rust API (they live in this process).
    pub functions: crate::batch::spec::Functions,
}

impl Default for TaskResources {
    fn default() -> Self {
        Self {
            memory: None,
            map_memory: None,
            spill_dirs: Vec::new(),
            pool: BufferPool::new(4096, 0),
            progress: Arc::default(),
            input: None,
            outputs: Vec::new(),
            functions: Default::default(),
        }
    }
}

impl TaskResources {
    /// The job's memory budget, or an error naming what needed it.
    pub fn memory(&self, what: &str) -> Result<&Arc<MemoryBudget>, EngineError> {
        self.memory.as_ref().ok_or_else(|| EngineError::Internal {
            what: format!("{what} needs a memory budget and the job has none"),
        })
    }

    /// The job's input, or an error naming what needed it.
    pub fn input(&self, what: &str) -> Result<&JobInput, EngineError> {
        self.input.as_ref().ok_or_else(|| EngineError::Internal {
            what: format!("{what} needs the job's input and the job has none"),
        })
    }

    /// Output file `index`, or an error naming what needed it.
    pub fn output(&self, index: usize, what: &str) -> Result<&OutputFile, EngineError> {
        self.outputs
            .get(index)
            .ok_or_else(|| EngineError::Internal {
                what: format!(
                    "{what} writes output {index} and the job has {}",
                    self.outputs.len()
                ),
            })
    }

    /// Spill folder for `index`, round-robin over the job's folders.
    pub fn spill_dir(&self, index: usize, what: &str) -> Result<&Path, EngineError> {
        if self.spill_dirs.is_empty() {
            return Err(EngineError::Internal {
                what: format!("{what} spills and the job has no spill folder"),
            });
        }
        Ok(&self.spill_dirs[index % self.spill_dirs.len()])
    }
}

/// The job's input as this process opened it.
#[derive(Debug)]
pub struct JobInput {
    /// The path shown in errors (the user's; `-` for standard input). A worker process opens
    /// a regular file input by this path. A stream input was spooled to an unlinked file:
    /// its handle cannot be reopened by path, so a job over a stream runs its maps in the
    /// process that spooled it (the one in-process-only resource).
    pub path: PathBuf,
    /// How subtasks read it.
    pub data: InputData,
}

/// How subtasks read the input.
#[derive(Debug)]
pub enum InputData {
    /// Mapped: maps read keys from it, reducers copy records out of it (in-memory plan).
    Mapped(shuffle::MappedFile),
    /// Read with `pread` in chunks (out-of-core plan).
    Read(std::fs::File),
}

impl JobInput {
    /// The mapped input, for operators that copy records out of it.
    pub fn mapped(&self) -> Result<&[u8], EngineError> {
        match &self.data {
            InputData::Mapped(map) => Ok(map),
            InputData::Read(_) => Err(EngineError::Internal {
                what: "an in-memory operator without a mapped input".into(),
            }),
        }
    }
}

/// Serde for [`WriterOptions`] (a `shuffle` type without serde):
/// `#[serde(with = "crate::operator::WriterOptionsDef")]`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "WriterOptions")]
pub struct WriterOptionsDef {
    #[serde(with = "IoEngineDef")]
    pub io: IoEngine,
    pub direct: bool,
    #[serde(with = "CompressionDef")]
    pub compression: Compression,
    pub buffer_bytes: usize,
    pub queue_depth: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "IoEngine", rename_all = "lowercase")]
enum IoEngineDef {
    Auto,
    Uring,
    Pwrite,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Compression", rename_all = "lowercase")]
enum CompressionDef {
    Auto,
    Lz4,
    None,
}
