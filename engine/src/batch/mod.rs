//! General batch jobs: Arrow record batches moving through the same runtime as TeraSort —
//! the same job graph, scheduler, exchanges (pipelined, blocking), memory budget and output
//! commit.
//!
//! - `codec`: a batch ↔ the bytes of one exchange buffer (Arrow IPC stream).
//! - `spec`: the TOML job spec (named steps, each one operator, each fed by one step).
//! - `builder`: [`JobBuilder`], the same spec built in Rust, with closures for user code.
//! - `plan`: checked steps → stages (the vertices) and exchanges; `explain`.
//! - `operators`: the one vertex operator, `batch.stage` (input → head → row operators →
//!   tail), and [`run`].
//! - `source`: text lines and CSV records from byte-range splits aligned to line ends,
//!   Parquet row groups, Sort Benchmark records; of a file or a folder's files; only the
//!   columns the job uses.
//! - `sink`: a part file per subtask of the last stage (CSV, Parquet or text), or one file
//!   from one subtask (records, or `one_file`).
//! - `filter`, `aggregate`, `join` (hash), `merge_join` (sort-merge), `sort`: the operators;
//!   `spill`: batches in spill files.
//!
//! Group keys are hashed (CRC-32 of their normalized `arrow-row` bytes) into key groups, each
//! owned by one consumer, as Flink does; equal keys always meet in one consumer.

pub mod aggregate;
mod builder;
mod codec;
pub mod filter;
pub mod join;
mod merge_join;
mod operators;
pub mod plan;
mod sink;
pub mod sort;
mod source;
pub mod spec;
mod spill;

pub use aggregate::{AggCall, AggFunc};
pub use builder::JobBuilder;
pub use codec::{decode, encode};
pub use join::{JoinKind, JoinStrategy};
pub use operators::{
    plan, plan_spec, register_operators, run, run_plan, run_spec, run_uncommitted, BatchJobConfig,
    BatchJobResult, FinishedJob,
};
pub use plan::{explain, Plan, Stage};
pub use source::SourceSpec;
pub use spec::JobSpec;
pub use spec::{Mode, SinkSpec};

/// Key groups of hash exchanges (Flink's default maximum parallelism is 128).
pub const KEY_GROUPS: usize = 128;

/// The index of `column` in `schema`, or an error listing the columns there are.
pub(crate) fn column_index(
    schema: &arrow_schema::Schema,
    column: &str,
) -> Result<usize, BatchError> {
    schema
        .index_of(column)
        .map_err(|_| BatchError::UnknownColumn {
            column: column.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
}

/// Grows `reservation` to cover `bytes` (in steps of at least 256 KiB, or exactly what is
/// missing when less is left); false when the budget refuses.
pub(crate) fn grow_to(reservation: &mut crate::memory::Reservation, bytes: u64) -> bool {
    let Some(missing) = bytes.checked_sub(reservation.bytes()).filter(|&m| m > 0) else {
        return true;
    };
    reservation.try_grow(missing.next_multiple_of(256 << 10)) || reservation.try_grow(missing)
}

/// The error of an operator that needs `more` bytes than `budget` has left.
pub(crate) fn too_small(
    budget: &crate::memory::MemoryBudget,
    more: u64,
    what: &str,
) -> crate::EngineError {
    crate::EngineError::BudgetTooSmall {
        budget_bytes: budget.limit_bytes(),
        minimum_bytes: budget.used_bytes() + more.max(1 << 20),
        what: what.into(),
    }
}

/// What can go wrong in a batch job before or while it runs; each names the step, column or
/// file concerned.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("job spec {path}: {reason}")]
    BadSpec { path: String, reason: String },
    #[error("{what}")]
    Spec { what: String },
    #[error("column {column:?} does not exist (the step's input has {})", available.join(", "))]
    UnknownColumn {
        column: String,
        available: Vec<String>,
    },
    #[error("column {column:?} is {found}; expected {expected}")]
    TypeMismatch {
        column: String,
        found: String,
        expected: String,
    },
    #[error("the sum {column:?} does not fit a 64-bit integer")]
    Overflow { column: String },
    #[error("{file}: {what}")]
    BadInput { file: String, what: String },
    #[error("{what}: {reason}")]
    Arrow { what: &'static str, reason: String },
    #[error("function {name:?}: {reason}")]
    Function { name: String, reason: String },
}

impl BatchError {
    /// Maps an Arrow error while doing `what`.
    pub(crate) fn arrow(what: &'static str) -> impl Fn(arrow_schema::ArrowError) -> Self {
        move |e| Self::Arrow {
            what,
            reason: e.to_string(),
        }
    }
}

/// The consumer of each row: its key hashed into one of `key_groups` groups, each owned by
/// one of `consumers` (Flink's `keyGroup * consumers / keyGroups`).
pub(crate) fn consumers_of(
    rows: &arrow_row::Rows,
    key_groups: usize,
    consumers: usize,
) -> Vec<u32> {
    let key_groups = key_groups.max(1);
    rows.iter()
        .map(|row| {
            let group = crc32fast::hash(row.as_ref()) as usize % key_groups;
            (group * consumers / key_groups) as u32
        })
        .collect()
}
