//! The hash join: inner, left outer, semi and anti, on equal keys (SQL semantics: a null key
//! matches nothing).
//!
//! The right input is the build side. It is held in memory while the budget allows; when the
//! budget refuses, the join turns into a grace hash join: build rows are hash-partitioned into
//! [`PARTITIONS`] spill-file partitions, then the probe (left) rows too, and each partition is
//! joined on its own. A partition that still does not fit (one giant key) is joined in
//! chunks of build rows that fit, the probe partition read once per chunk, with a bitmap of
//! matched probe rows for the left, semi and anti joins.
//!
//! [`Join`] is the join a stage runs: this hash join, or the sort-merge join of
//! [`merge_join`](super::merge_join) (`strategy = "sort_merge"`); both build their output
//! rows with [`JoinOutput`].

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use super::merge_join::SortMergeJoin;
use super::source::BATCH_ROWS;
use super::spill::{batches, BatchFile, SpillDir, SpillStats};
use super::BatchError;
use crate::memory::{MemoryBudget, Reservation};
use crate::EngineError;

/// Spill partitions of a grace hash join.
pub const PARTITIONS: u32 = 32;

/// Which rows a join returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// Pairs of matching rows.
    #[default]
    Inner,
    /// Every left row: with each matching right row, or once with nulls.
    Left,
    /// Left rows that have a match, once each.
    Semi,
    /// Left rows that have no match.
    Anti,
}

/// How a join finds the matching rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStrategy {
    /// A hash table of the right side (grace partitions when memory is refused).
    #[default]
    Hash,
    /// Both sides sorted on the keys, then merged (Spark's sort-merge join).
    SortMerge,
}

impl JoinStrategy {
    /// The strategy in words, as `explain` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::SortMerge => "sort-merge",
        }
    }
}

/// A `join` step: the step's input (left) joined with the step named `right`, on equal
/// `on` columns (`right_on` when the right side's names differ), by `strategy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub right: String,
    pub on: Vec<String>,
    #[serde(default)]
    pub right_on: Option<Vec<String>>,
    #[serde(rename = "type", default)]
    pub kind: JoinKind,
    #[serde(default)]
    pub strategy: JoinStrategy,
}

impl JoinSpec {
    /// The right side's key columns.
    pub fn right_keys(&self) -> &[String] {
        self.right_on.as_deref().unwrap_or(&self.on)
    }

    /// The output schema, after checking keys and types: the left columns, then (inner and
    /// left joins) the right columns except its keys.
    pub fn output_schema(&self, left: &Schema, right: &Schema) -> Result<SchemaRef, BatchError> {
        if self.on.is_empty() {
            return Err(BatchError::Spec {
                what: "join needs at least one key in `on`".into(),
            });
        }
        if self.right_keys().len() != self.on.len() {
            return Err(BatchError::Spec {
                what: format!(
                    "join: `on` has {} columns but `right_on` has {}",
                    self.on.len(),
                    self.right_keys().len()
                ),
            });
        }
        for (l, r) in self.on.iter().zip(self.right_keys()) {
            let lt = left.field(super::column_index(left, l)?).data_type();
            let rt = right.field(super::column_index(right, r)?).data_type();
            if lt != rt {
                return Err(BatchError::TypeMismatch {
                    column: r.clone(),
                    found: rt.to_string(),
                    expected: format!("{lt} like the left key {l:?}"),
                });
            }
        }
        let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
        if matches!(self.kind, JoinKind::Inner | JoinKind::Left) {
            for c in right_columns(self, right)? {
                let f = right.field(c);
                if left.index_of(f.name()).is_ok() {
                    return Err(BatchError::Spec {
                        what: format!(
                            "join: column {:?} is on both sides (project one of them away or rename it first)",
                            f.name()
                        ),
                    });
                }
                fields.push(
                    f.clone()
                        .with_nullable(f.is_nullable() || self.kind == JoinKind::Left),
                );
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// The right side's columns that the output carries (all but its keys).
fn right_columns(spec: &JoinSpec, right: &Schema) -> Result<Vec<usize>, BatchError> {
    let keys = spec
        .right_keys()
        .iter()
        .map(|k| super::column_index(right, k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..right.fields().len())
        .filter(|c| !keys.contains(c))
        .collect())
}

/// The key columns of both sides: `on` in `left`, the right keys in `right`.
pub(super) fn key_columns(
    spec: &JoinSpec,
    left: &Schema,
    right: &Schema,
) -> Result<(Vec<usize>, Vec<usize>), BatchError> {
    let of = |schema: &Schema, keys: &[String]| {
        keys.iter()
            .map(|k| super::column_index(schema, k))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok((of(left, &spec.on)?, of(right, spec.right_keys())?))
}

/// Which rows of `batch` have no null in `columns`.
pub(super) fn valid_keys(batch: &RecordBatch, columns: &[usize]) -> Vec<bool> {
    let mut valid = vec![true; batch.num_rows()];
    for &c in columns {
        if let Some(nulls) = batch.column(c).logical_nulls() {
            for (v, ok) in valid.iter_mut().zip(nulls.iter()) {
                *v &= ok;
            }
        }
    }
    valid
}

/// Key rows of `columns` of `batch`, and which rows have no null key.
fn key_rows(
    converter: &RowConverter,
    columns: &[usize],
    batch: &RecordBatch,
) -> Result<(Rows, Vec<bool>), BatchError> {
    let keys: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
    let rows = converter
        .convert_columns(&keys)
        .map_err(BatchError::arrow("join keys"))?;
    Ok((rows, valid_keys(batch, columns)))
}

/// The rows a join outputs: the left columns, then (inner and left joins) the right columns
/// but its keys.
pub(crate) struct JoinOutput {
    pub kind: JoinKind,
    right_out: Vec<usize>,
    schema: SchemaRef,
}

impl JoinOutput {
    pub fn new(spec: &JoinSpec, left: &Schema, right: &Schema) -> Result<Self, BatchError> {
        Ok(Self {
            kind: spec.kind,
            schema: spec.output_schema(left, right)?,
            right_out: right_columns(spec, right)?,
        })
    }

    /// Whether the output has right columns (inner and left joins).
    pub fn has_right(&self) -> bool {
        matches!(self.kind, JoinKind::Inner | JoinKind::Left)
    }

    /// Output rows: the rows `left` of `batch`, beside (inner, left) `right(c, type)` for each
    /// right column `c` the output has, as many rows.
    pub fn rows(
        &self,
        batch: &RecordBatch,
        left: &[u32],
        mut right: impl FnMut(usize, &DataType) -> Result<ArrayRef, ArrowError>,
    ) -> Result<RecordBatch, EngineError> {
        // Left rows in a run (each matched once, the usual foreign key): a slice, not a copy.
        // Only when the run is most of the batch: a slice keeps the whole batch alive.
        let run = left.len() * 2 >= batch.num_rows() && left.windows(2).all(|w| w[1] == w[0] + 1);
        let mut columns = if run && !left.is_empty() {
            batch.slice(left[0] as usize, left.len()).columns().to_vec()
        } else {
            let left_idx = UInt32Array::from(left.to_vec());
            batch
                .columns()
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &left_idx, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(BatchError::arrow("join output"))?
        };
        if self.has_right() {
            for (i, &c) in self.right_out.iter().enumerate() {
                let field = self.schema.field(batch.num_columns() + i);
                columns
                    .push(right(c, field.data_type()).map_err(BatchError::arrow("join output"))?);
            }
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(BatchError::arrow("join output"))?)
    }

    /// The rows `left` of `batch` without a right row: nulls in the right columns, if any.
    pub fn unmatched(&self, batch: &RecordBatch, left: &[u32]) -> Result<RecordBatch, EngineError> {
        self.rows(batch, left, |_, t| {
            Ok(arrow_array::new_null_array(t, left.len()))
        })
    }
}

/// The join a stage runs, by its spec's strategy. The right (build) side is added first, then
/// the left (probe) side; `finish` emits what is left and returns the spill totals.
pub(crate) enum Join {
    Hash(Box<HashJoin>),
    SortMerge(Box<SortMergeJoin>),
}

impl Join {
    pub fn new(
        spec: &JoinSpec,
        left: SchemaRef,
        right: SchemaRef,
        budget: &Arc<MemoryBudget>,
        spill: SpillDir,
    ) -> Result<Self, EngineError> {
        Ok(match spec.strategy {
            JoinStrategy::Hash => {
                Self::Hash(Box::new(HashJoin::new(spec, &left, right, budget, spill)?))
            }
            JoinStrategy::SortMerge => Self::SortMerge(Box::new(SortMergeJoin::new(
                spec, left, right, budget, spill,
            )?)),
        })
    }

    /// Adds a batch of the right side.
    pub fn build(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        match self {
            Self::Hash(join) => join.build(batch),
            Self::SortMerge(join) => join.build(batch),
        }
    }

    /// Adds a batch of the left side (every right batch was added); emits what it can now.
    pub fn probe(
        &mut self,
        batch: RecordBatch,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        match self {
            Self::Hash(join) => join.probe(batch, emit),
            Self::SortMerge(join) => join.probe(batch, emit),
        }
    }

    /// Emits the rest; the spill totals.
    pub fn finish(
        self,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<SpillStats, EngineError> {
        match self {
            Self::Hash(join) => join.finish(emit),
            Self::SortMerge(join) => join.finish(emit),
        }
    }
}

fn partition_of(row: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
    hasher.update(row);
    hasher.finalize() % PARTITIONS
}

/// Build rows in memory: one batch, an index from key to its first row and a chain to the
/// next row of the same key (empty when every key is unique: a probe then reads no chain).
struct Table {
    batch: RecordBatch,
    index: Index,
    next: Vec<u32>,
}

/// Key → first build row. The hash tables hold row numbers (and an integer key), never a
/// boxed key: a key behind a pointer made every probe two more cache misses and a `memcmp`.
enum Index {
    /// One integer key column whose values span at most [`DENSE_SPAN`] × the rows: the first
    /// row of each value in an array from the least value on (DuckDB's perfect hash join).
    Dense { min: i64, first: Vec<u32> },
    /// One integer key column, by value: a probe is one slot.
    Int(HashTable<(i64, u32)>),
    /// Any other key: its normalized bytes, all in one buffer.
    Rows { keys: Rows, first: HashTable<u32> },
}

/// The keys of a batch, as an [`Index`] compares them, and which rows have no null key.
enum Keys {
    Int(Vec<i64>),
    Rows(Rows),
}

/// The value of an integer key column as `i64`, when it is one (`None`: use key rows).
fn int_values(array: &dyn Array) -> Option<Vec<i64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType as T;
    fn of<P: arrow_array::ArrowPrimitiveType>(a: &dyn Array) -> Vec<i64>
    where
        P::Native: Into<i64>,
    {
        a.as_primitive::<P>()
            .values()
            .iter()
            .map(|&v| v.into())
            .collect()
    }
    Some(match array.data_type() {
        T::Int8 => of::<Int8Type>(array),
        T::Int16 => of::<Int16Type>(array),
        T::Int32 => of::<Int32Type>(array),
        T::Int64 => of::<Int64Type>(array),
        T::UInt8 => of::<UInt8Type>(array),
        T::UInt16 => of::<UInt16Type>(array),
        T::UInt32 => of::<UInt32Type>(array),
        T::Date32 => of::<Date32Type>(array),
        T::Date64 => of::<Date64Type>(array),
        _ => return None,
    })
}

impl Keys {
    /// The keys of `columns` of `batch` (one integer column: by value) and which rows have
    /// no null key.
    fn of(
        converter: &RowConverter,
        columns: &[usize],
        batch: &RecordBatch,
    ) -> Result<(Self, Vec<bool>), BatchError> {
        if let [c] = columns {
            if let Some(values) = int_values(batch.column(*c).as_ref()) {
                return Ok((Self::Int(values), valid_keys(batch, columns)));
            }
        }
        let (rows, valid) = key_rows(converter, columns, batch)?;
        Ok((Self::Rows(rows), valid))
    }
}

/// A dense index may have this many slots per build row (4 bytes each, where a hash table
/// slot takes 16 and more than one per row).
const DENSE_SPAN: u64 = 4;

fn hash_int(key: i64) -> u64 {
    // foldhash's folded multiply: every bit of the key reaches the tag bits hashbrown reads.
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(key)
}

fn hash_bytes(key: &[u8]) -> u64 {
    foldhash::quality::FixedState::with_seed(0x5eed).hash_one(key)
}

impl Index {
    /// An index of `keys` (rows with `valid` false left out), and the chains of rows that
    /// share a key, each in arrival order.
    fn build(keys: Keys, valid: &[bool]) -> (Self, Vec<u32>) {
        let n = valid.len();
        let mut next = vec![NONE; n];
        // Insert backwards so that each chain lists rows in arrival order.
        let rows = (0..n as u32).rev().filter(|&i| valid[i as usize]);
        let index = match keys {
            Keys::Int(values) if let Some((min, span)) = Self::dense_span(&values, valid) => {
                let mut first = vec![NONE; span];
                for i in rows {
                    let slot = &mut first[(values[i as usize] - min) as usize];
                    next[i as usize] = std::mem::replace(slot, i);
                }
                Self::Dense { min, first }
            }
            Keys::Int(values) => {
                let mut first = HashTable::with_capacity(n);
                for i in rows {
                    let key = values[i as usize];
                    match first.entry(
                        hash_int(key),
                        |e: &(i64, u32)| e.0 == key,
                        |e| hash_int(e.0),
                    ) {
                        Entry::Occupied(mut head) => {
                            next[i as usize] = std::mem::replace(&mut head.get_mut().1, i)
                        }
                        Entry::Vacant(slot) => drop(slot.insert((key, i))),
                    }
                }
                Self::Int(first)
            }
            Keys::Rows(keys) => {
                let mut first = HashTable::with_capacity(n);
                let hash = |i: u32| hash_bytes(keys.row(i as usize).as_ref());
                for i in rows {
                    let key = keys.row(i as usize);
                    match first.entry(hash(i), |&j| keys.row(j as usize) == key, |&j| hash(j)) {
                        Entry::Occupied(mut head) => {
                            next[i as usize] = std::mem::replace(head.get_mut(), i)
                        }
                        Entry::Vacant(slot) => drop(slot.insert(i)),
                    }
                }
                Self::Rows { keys, first }
            }
        };
        if next.iter().all(|&j| j == NONE) {
            next = Vec::new();
        }
        (index, next)
    }

    /// The least key and the span of `values` (rows with a key), when a dense index fits.
    fn dense_span(values: &[i64], valid: &[bool]) -> Option<(i64, usize)> {
        let keys = values
            .iter()
            .zip(valid)
            .filter(|(_, &v)| v)
            .map(|(&k, _)| k);
        let (min, max) = keys.fold(None, |acc: Option<(i64, i64)>, k| match acc {
            None => Some((k, k)),
            Some((lo, hi)) => Some((lo.min(k), hi.max(k))),
        })?;
        let span = (max as i128 - min as i128 + 1) as u128;
        (span <= u128::from(DENSE_SPAN) * values.len() as u128).then_some((min, span as usize))
    }

    /// The first build row of each probe key (`NONE`: no match or a null key).
    fn heads(&self, probe: &Keys, valid: &[bool]) -> Result<Vec<u32>, EngineError> {
        let found =
            |i: usize, head: Option<u32>| if valid[i] { head.unwrap_or(NONE) } else { NONE };
        Ok(match (self, probe) {
            (Self::Dense { min, first }, Keys::Int(values)) => values
                .iter()
                .enumerate()
                .map(|(i, &key)| {
                    let slot = (key as i128 - *min as i128) as u128;
                    let head = (slot < first.len() as u128).then(|| first[slot as usize]);
                    found(i, head)
                })
                .collect(),
            (Self::Int(first), Keys::Int(values)) => values
                .iter()
                .enumerate()
                .map(|(i, &key)| found(i, first.find(hash_int(key), |e| e.0 == key).map(|e| e.1)))
                .collect(),
            (Self::Rows { keys, first }, Keys::Rows(probe)) => (0..probe.num_rows())
                .map(|i| {
                    let key = probe.row(i);
                    let head = first
                        .find(hash_bytes(key.as_ref()), |&j| keys.row(j as usize) == key)
                        .copied();
                    found(i, head)
                })
                .collect(),
            // Both sides' keys have the same types, so they take the same path.
            _ => {
                return Err(EngineError::Internal {
                    what: "join keys of the two sides hashed differently".into(),
                })
            }
        })
    }
}

const NONE: u32 = u32::MAX;

/// Where build rows are kept.
enum Build {
    Memory(Vec<RecordBatch>),
    Spilled(Box<Partitioned>),
}

/// A hash join in progress; see the module documentation.
pub(crate) struct HashJoin {
    out: JoinOutput,
    converter: RowConverter,
    left_keys: Vec<usize>,
    right_keys: Vec<usize>,
    right_schema: SchemaRef,
    build: Build,
    held_bytes: u64,
    reservation: Reservation,
    spill: SpillDir,
    table: Option<Table>,
    probe_file: Option<Partitioned>,
    pub stats: SpillStats,
}

impl HashJoin {
    pub fn new(
        spec: &JoinSpec,
        left: &Schema,
        right: SchemaRef,
        budget: &Arc<MemoryBudget>,
        spill: SpillDir,
    ) -> Result<Self, EngineError> {
        let out = JoinOutput::new(spec, left, &right)?;
        let (left_keys, right_keys) = key_columns(spec, left, &right)?;
        let converter = RowConverter::new(
            left_keys
                .iter()
                .map(|&c| SortField::new(left.field(c).data_type().clone()))
                .collect(),
        )
        .map_err(BatchError::arrow("join keys"))?;
        let reservation = budget
            .try_reserve(0)
            .ok_or_else(|| super::too_small(budget, 0, "a join"))?;
        Ok(Self {
            out,
            converter,
            left_keys,
            right_keys,
            right_schema: right,
            build: Build::Memory(Vec::new()),
            held_bytes: 0,
            reservation,
            spill,
            table: None,
            probe_file: None,
            stats: SpillStats::default(),
        })
    }

    /// Adds a batch of the build (right) side.
    pub fn build(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &mut self.build {
            Build::Spilled(file) => {
                self.stats.written_bytes +=
                    file.push(&self.converter, &self.right_keys, &batch, true)?;
            }
            Build::Memory(held) => {
                self.held_bytes += batch.get_array_memory_size() as u64;
                held.push(batch);
                if !super::grow_to(&mut self.reservation, self.held_bytes) {
                    self.spill_build()?;
                }
            }
        }
        Ok(())
    }

    /// Moves the build rows held in memory to partitioned spill files.
    fn spill_build(&mut self) -> Result<(), EngineError> {
        let mut file = Partitioned::new(self.spill.create("join-build")?);
        if let Build::Memory(held) = &mut self.build {
            for batch in held.drain(..) {
                self.stats.written_bytes +=
                    file.push(&self.converter, &self.right_keys, &batch, true)?;
            }
        }
        self.stats.runs += 1;
        self.build = Build::Spilled(Box::new(file));
        self.held_bytes = 0;
        self.reservation.shrink_to(0);
        Ok(())
    }

    /// Adds a batch of the probe (left) side; emits what it can now. Every build batch must
    /// have been added first.
    pub fn probe(
        &mut self,
        batch: RecordBatch,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if self.table.is_none() {
            if let Build::Memory(held) = &self.build {
                // The table needs a copy of the rows, key rows and an entry per row: ask.
                let table: u64 = held.iter().map(|b| self.table_bytes(b)).sum();
                let more = self.held_bytes + table;
                if !self.reservation.try_grow(more) {
                    self.spill_build()?;
                }
            }
        }
        if let Build::Spilled(_) = self.build {
            let file = match &mut self.probe_file {
                Some(file) => file,
                None => {
                    (self.probe_file).insert(Partitioned::new(self.spill.create("join-probe")?))
                }
            };
            self.stats.written_bytes +=
                file.push(&self.converter, &self.left_keys, &batch, false)?;
            return Ok(());
        }
        if self.table.is_none() {
            let Build::Memory(held) = std::mem::replace(&mut self.build, Build::Memory(Vec::new()))
            else {
                unreachable!("checked above")
            };
            let table = self.table_of(&held)?;
            self.table = Some(table);
        }
        let table = self.table.as_ref().expect("just built");
        probe_batch(&*self, table, &batch, None, true, emit)
    }

    /// Memory a table of `batch`'s rows takes beside the batch itself: its copy (the batches
    /// are concatenated), the key rows (about the key columns' size) and the index and chains
    /// (64 bytes a row covers a dense array, a hash table of row numbers or of (key, row)).
    fn table_bytes(&self, batch: &RecordBatch) -> u64 {
        let keys: usize = (self.right_keys.iter())
            .map(|&k| batch.column(k).get_array_memory_size())
            .sum();
        (batch.get_array_memory_size() + keys + batch.num_rows() * 64) as u64
    }

    /// A table of `batches`, its memory reserved (the caller checked it fits or accepts it).
    fn table_of(&self, batches: &[RecordBatch]) -> Result<Table, EngineError> {
        let batch = arrow_select::concat::concat_batches(&self.right_schema, batches)
            .map_err(BatchError::arrow("join build side"))?;
        let (keys, valid) = Keys::of(&self.converter, &self.right_keys, &batch)?;
        let (index, next) = Index::build(keys, &valid);
        Ok(Table { batch, index, next })
    }

    /// Ends the probe side: joins the spilled partitions, if any.
    pub fn finish(
        mut self,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<SpillStats, EngineError> {
        let build = std::mem::replace(&mut self.build, Build::Memory(Vec::new()));
        // In memory, every probe row was joined as it came (no probe rows: nothing to do).
        let Build::Spilled(file) = build else {
            return Ok(self.stats);
        };
        let Some(probe) = self.probe_file.take() else {
            return Ok(self.stats);
        };
        let (build_reader, build_segments, written) = file.finish()?;
        self.stats.written_bytes += written;
        let (probe_reader, probe_segments, written) = probe.finish()?;
        self.stats.written_bytes += written;
        let read = std::cell::Cell::new(0u64);
        for p in 0..PARTITIONS {
            // Chunks of build rows that fit, read as they are needed; the probe partition
            // once per chunk.
            let mut build = (0..build_segments)
                .map(|segment| batches(&build_reader, segment, p, &read))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .peekable();
            let mut chunks = 0;
            let mut matched: Vec<bool> = Vec::new();
            while build.peek().is_some() {
                let (mut chunk, mut chunk_bytes) = (Vec::new(), 0u64);
                for batch in build.by_ref() {
                    let batch = batch?;
                    chunk_bytes += batch.get_array_memory_size() as u64 + self.table_bytes(&batch);
                    chunk.push(batch);
                    if !super::grow_to(&mut self.reservation, chunk_bytes) {
                        break;
                    }
                }
                let single = chunks == 0 && build.peek().is_none();
                let table = self.table_of(&chunk)?;
                drop(chunk);
                each_probe(
                    &probe_reader,
                    probe_segments,
                    p,
                    &read,
                    &mut matched,
                    |batch, bits| {
                        let bits = (!single).then_some(bits);
                        probe_batch(&self, &table, batch, bits, single, emit)
                    },
                )?;
                chunks += 1;
                drop(table);
                self.reservation.shrink_to(0);
            }
            let owed = match chunks {
                // No build rows here: every probe row is unmatched.
                0 => matches!(self.out.kind, JoinKind::Left | JoinKind::Anti),
                1 => false,
                _ => self.out.kind != JoinKind::Inner,
            };
            if owed {
                each_probe(
                    &probe_reader,
                    probe_segments,
                    p,
                    &read,
                    &mut matched,
                    |batch, bits| emit_unmatched(&self, batch, bits, emit),
                )?;
            }
        }
        self.stats.read_bytes += read.get();
        Ok(self.stats)
    }
}

/// Calls `f` with each batch of probe partition `p` (over every segment) and the matched
/// bits of its rows, grown as the rows are numbered across chunks of the build side.
fn each_probe(
    reader: &shuffle::spill::SegmentFileReader,
    segments: u32,
    p: u32,
    read: &std::cell::Cell<u64>,
    matched: &mut Vec<bool>,
    mut f: impl FnMut(&RecordBatch, &mut [bool]) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let mut offset = 0usize;
    for segment in 0..segments {
        for batch in batches(reader, segment, p, read)? {
            let batch = batch?;
            let rows = batch.num_rows();
            if matched.len() < offset + rows {
                matched.resize(offset + rows, false);
            }
            f(&batch, &mut matched[offset..offset + rows])?;
            offset += rows;
        }
    }
    Ok(())
}

/// Rows of a join side that wait per partition before they go to the spill file, at most.
const PENDING_BYTES: usize = 1 << 20;

/// A join side hash-partitioned into a spill file. Rows wait per partition until
/// [`PENDING_BYTES`] of them are held, then go out as one segment with one block per
/// partition: a segment (a map when read) and 32 tiny blocks per input batch would not scale.
struct Partitioned {
    file: BatchFile,
    pending: Vec<Vec<RecordBatch>>,
    pending_bytes: usize,
}

impl Partitioned {
    fn new(file: BatchFile) -> Self {
        Self {
            file,
            pending: vec![Vec::new(); PARTITIONS as usize],
            pending_bytes: 0,
        }
    }

    /// Adds `batch`'s rows to their partitions (rows with a null key are dropped when
    /// `drop_null_keys`: on the build side they can never match); returns the bytes written.
    fn push(
        &mut self,
        converter: &RowConverter,
        keys: &[usize],
        batch: &RecordBatch,
        drop_null_keys: bool,
    ) -> Result<u64, EngineError> {
        let (rows, valid) = key_rows(converter, keys, batch)?;
        let mut of: Vec<Vec<u32>> = vec![Vec::new(); PARTITIONS as usize];
        for i in 0..rows.num_rows() {
            if drop_null_keys && !valid[i] {
                continue;
            }
            of[partition_of(rows.row(i).as_ref()) as usize].push(i as u32);
        }
        for (p, indices) in of.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let part = arrow_select::take::take_record_batch(batch, &UInt32Array::from(indices))
                .map_err(BatchError::arrow("partition a join side"))?;
            self.pending_bytes += part.get_array_memory_size();
            self.pending[p].push(part);
        }
        if self.pending_bytes < PENDING_BYTES {
            return Ok(0);
        }
        self.flush()
    }

    /// Writes the rows waiting as one segment; returns the bytes written.
    fn flush(&mut self) -> Result<u64, EngineError> {
        let mut written = 0;
        for (p, batches) in self.pending.iter_mut().enumerate() {
            let Some(first) = batches.first() else {
                continue;
            };
            let part = arrow_select::concat::concat_batches(&first.schema(), batches.iter())
                .map_err(BatchError::arrow("partition a join side"))?;
            written += self.file.write(p as u32, &part)?;
            batches.clear();
        }
        if self.pending_bytes > 0 {
            self.file.seal()?;
        }
        self.pending_bytes = 0;
        Ok(written)
    }

    /// The file to read: its reader, its segments and the bytes the last flush wrote.
    fn finish(mut self) -> Result<(shuffle::spill::SegmentFileReader, u32, u64), EngineError> {
        let written = self.flush()?;
        let segments = self.file.segments();
        Ok((self.file.into_reader()?, segments, written))
    }
}

/// Joins one probe batch with `table`. `matched` (when given) records which probe rows found
/// a match; `complete` says the table holds every build row of these keys, so unmatched rows
/// can be emitted now (left, anti) and matched ones too (semi).
fn probe_batch(
    join: &HashJoin,
    table: &Table,
    batch: &RecordBatch,
    mut matched: Option<&mut [bool]>,
    complete: bool,
    emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let (keys, valid) = Keys::of(&join.converter, &join.left_keys, batch)?;
    let heads = table.index.heads(&keys, &valid)?;
    drop(keys);
    let mut left: Vec<u32> = Vec::new();
    let mut right: Vec<Option<u32>> = Vec::new();
    for i in 0..batch.num_rows() {
        let head = heads[i];
        let hit = head != NONE;
        if let Some(m) = matched.as_deref_mut() {
            m[i] |= hit;
        }
        match join.out.kind {
            JoinKind::Inner | JoinKind::Left => {
                let mut j = head;
                while j != NONE {
                    left.push(i as u32);
                    right.push(Some(j));
                    if left.len() == BATCH_ROWS {
                        emit(joined(join, table, batch, &left, &right)?)?;
                        left.clear();
                        right.clear();
                    }
                    j = table.next.get(j as usize).copied().unwrap_or(NONE);
                }
                if !hit && complete && join.out.kind == JoinKind::Left {
                    left.push(i as u32);
                    right.push(None);
                }
            }
            JoinKind::Semi if hit && complete => left.push(i as u32),
            JoinKind::Anti if !hit && complete => left.push(i as u32),
            _ => {}
        }
    }
    if !left.is_empty() {
        emit(joined(join, table, batch, &left, &right)?)?;
    }
    Ok(())
}

/// After every chunk of a partition: the probe rows a left, semi or anti join still owes.
fn emit_unmatched(
    join: &HashJoin,
    batch: &RecordBatch,
    matched: &[bool],
    emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let want_matched = join.out.kind == JoinKind::Semi;
    let left: Vec<u32> = (0..batch.num_rows() as u32)
        .filter(|&i| matched[i as usize] == want_matched)
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    emit(join.out.unmatched(batch, &left)?)
}

/// Output rows: the probe rows `left` with the build rows `right` (null: no match).
fn joined(
    join: &HashJoin,
    table: &Table,
    batch: &RecordBatch,
    left: &[u32],
    right: &[Option<u32>],
) -> Result<RecordBatch, EngineError> {
    let right_idx = UInt32Array::from(right.to_vec());
    join.out.rows(batch, left, |c, t| {
        if table.batch.num_rows() == 0 {
            Ok(arrow_array::new_null_array(t, right.len()))
        } else {
            arrow_select::take::take(table.batch.column(c).as_ref(), &right_idx, None)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use proptest::prelude::*;

    type Row = (Option<i64>, i64);
    /// A row with several key columns.
    type Wide = (Vec<Option<i64>>, i64);

    const KINDS: [JoinKind; 4] = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Semi,
        JoinKind::Anti,
    ];

    fn wide(rows: &[Row]) -> Vec<Wide> {
        rows.iter().map(|r| (vec![r.0], r.1)).collect()
    }

    /// Key columns `k`, `k2`, … (nullable), then the value column `name`.
    fn side(name: &str, keys: usize, rows: &[Wide]) -> RecordBatch {
        side_keyed(name, keys, rows, &DataType::Int64)
    }

    /// [`side`] with key columns of type `key`: Int64, Int32 or the keys' decimal text.
    fn side_keyed(name: &str, keys: usize, rows: &[Wide], key: &DataType) -> RecordBatch {
        let column = |values: Vec<Option<i64>>| Arc::new(Int64Array::from(values)) as ArrayRef;
        let key_column = |values: Vec<Option<i64>>| -> ArrayRef {
            match key {
                DataType::Int64 => column(values),
                DataType::Int32 => Arc::new(arrow_array::Int32Array::from_iter(
                    values.into_iter().map(|k| k.map(|k| k as i32)),
                )),
                _ => Arc::new(arrow_array::StringArray::from_iter(
                    values.into_iter().map(|k| k.map(|k| k.to_string())),
                )),
            }
        };
        let mut columns: Vec<(String, ArrayRef, bool)> = (0..keys)
            .map(|i| {
                let name = if i == 0 {
                    "k".into()
                } else {
                    format!("k{}", i + 1)
                };
                (
                    name,
                    key_column(rows.iter().map(|r| r.0[i]).collect()),
                    true,
                )
            })
            .collect();
        columns.push((
            name.into(),
            column(rows.iter().map(|r| Some(r.1)).collect()),
            false,
        ));
        RecordBatch::try_from_iter_with_nullable(columns).unwrap()
    }

    fn column(batch: &RecordBatch, i: usize) -> Vec<Option<i64>> {
        use arrow_array::cast::AsArray;
        let column = batch.column(i);
        match column.data_type() {
            DataType::Utf8 => {
                return column
                    .as_string::<i32>()
                    .iter()
                    .map(|k| k.map(|k| k.parse().unwrap()))
                    .collect()
            }
            DataType::Int32 => {
                let a = column.as_primitive::<arrow_array::types::Int32Type>();
                return a.iter().map(|k| k.map(i64::from)).collect();
            }
            _ => {}
        }
        let a = batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        (0..a.len())
            .map(|r| a.is_valid(r).then(|| a.value(r)))
            .collect()
    }

    /// The oracle: nested loops over the rows, SQL semantics (a null key matches nothing).
    fn oracle(kind: JoinKind, left: &[Wide], right: &[Wide]) -> Vec<Vec<Option<i64>>> {
        let mut out = Vec::new();
        for l in left {
            let keyed = l.0.iter().all(Option::is_some);
            let matches: Vec<&Wide> = right.iter().filter(|r| keyed && r.0 == l.0).collect();
            let row = |right: Option<Option<i64>>| {
                let mut row = l.0.clone();
                row.push(Some(l.1));
                row.extend(right);
                row
            };
            match kind {
                JoinKind::Inner | JoinKind::Left => {
                    for r in &matches {
                        out.push(row(Some(Some(r.1))));
                    }
                    if matches.is_empty() && kind == JoinKind::Left {
                        out.push(row(Some(None)));
                    }
                }
                JoinKind::Semi if !matches.is_empty() => out.push(row(None)),
                JoinKind::Anti if matches.is_empty() => out.push(row(None)),
                _ => {}
            }
        }
        out.sort();
        out
    }

    /// Runs the join of `strategy` over `left` and `right` (`keys` key columns) in batches of
    /// `batch_rows` under `budget_bytes`; returns the sorted output rows and the spill totals.
    fn join_on(
        keys: usize,
        kind: JoinKind,
        strategy: JoinStrategy,
        left: &[Wide],
        right: &[Wide],
        batch_rows: usize,
        budget_bytes: u64,
    ) -> (Vec<Vec<Option<i64>>>, SpillStats) {
        let plan = (keys, kind, strategy, batch_rows, budget_bytes);
        join_keyed(plan, left, right, &DataType::Int64)
    }

    /// [`join_on`] (its arguments but the sides in `plan`) with keys of type `key` (see
    /// [`side_keyed`]).
    fn join_keyed(
        (keys, kind, strategy, batch_rows, budget_bytes): (
            usize,
            JoinKind,
            JoinStrategy,
            usize,
            u64,
        ),
        left: &[Wide],
        right: &[Wide],
        key: &DataType,
    ) -> (Vec<Vec<Option<i64>>>, SpillStats) {
        let side = |name: &str, keys: usize, rows: &[Wide]| side_keyed(name, keys, rows, key);
        let dir = tempfile::tempdir().unwrap();
        let spec = JoinSpec {
            right: "r".into(),
            on: ["k", "k2", "k3"][..keys]
                .iter()
                .map(|k| k.to_string())
                .collect(),
            right_on: None,
            kind,
            strategy,
        };
        let budget = MemoryBudget::new(budget_bytes);
        let spill = SpillDir {
            dir: dir.path().into(),
            options: Default::default(),
        };
        let (l, r) = (
            side("lv", keys, &[]).schema(),
            side("rv", keys, &[]).schema(),
        );
        let mut join = Join::new(&spec, l, r, &budget, spill).unwrap();
        for chunk in right.chunks(batch_rows) {
            join.build(side("rv", keys, chunk)).unwrap();
        }
        let mut out = Vec::new();
        let mut emit = |b: RecordBatch| {
            assert!(b.num_rows() <= BATCH_ROWS);
            out.push(b);
            Ok(())
        };
        for chunk in left.chunks(batch_rows) {
            join.probe(side("lv", keys, chunk), &mut emit).unwrap();
        }
        let stats = join.finish(&mut emit).unwrap();
        let mut rows = Vec::new();
        for b in &out {
            let columns: Vec<_> = (0..b.num_columns()).map(|i| column(b, i)).collect();
            for r in 0..b.num_rows() {
                rows.push(columns.iter().map(|c| c[r]).collect::<Vec<_>>());
            }
        }
        rows.sort();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (rows, stats)
    }

    /// [`join_on`] the one key `k`.
    fn join(
        kind: JoinKind,
        strategy: JoinStrategy,
        left: &[Row],
        right: &[Row],
        batch_rows: usize,
        budget_bytes: u64,
    ) -> (Vec<Vec<Option<i64>>>, SpillStats) {
        let (left, right) = (wide(left), wide(right));
        join_on(1, kind, strategy, &left, &right, batch_rows, budget_bytes)
    }

    fn rows(keys: impl Strategy<Value = Option<i64>>, n: usize) -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec(keys, 0..n).prop_map(|keys| {
            keys.into_iter()
                .enumerate()
                .map(|(i, k)| (k, i as i64))
                .collect()
        })
    }

    /// Both sides (random keys with heavy duplicates and nulls), a join kind, rows per batch
    /// and a budget (8 KiB and 64 KiB spill, 64 MiB holds everything).
    fn cases() -> impl Strategy<Value = (Vec<Row>, Vec<Row>, JoinKind, usize, u64)> {
        let side = || rows(prop::option::weighted(0.9, 0i64..40), 1500);
        (
            side(),
            side(),
            prop::sample::select(KINDS.to_vec()),
            1usize..400,
            prop::sample::select(vec![8u64 << 10, 64 << 10, 64 << 20]),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Every join kind, budgets that keep the build side in memory or spill it (grace
        /// partitions, chunks): equal to the oracle.
        #[test]
        fn hash_join_equals_the_oracle((left, right, kind, batch_rows, budget) in cases()) {
            let (got, stats) = join(kind, JoinStrategy::Hash, &left, &right, batch_rows, budget);
            prop_assert_eq!(got, oracle(kind, &wide(&left), &wide(&right)));
            if budget == 8 << 10 && right.len() > 1000 {
                prop_assert!(stats.runs > 0, "an 8 KiB budget spills the build side");
            }
        }

        /// The same for the sort-merge join: sorted runs of both sides, the sorted right side
        /// and key groups in spill files under the small budgets.
        #[test]
        fn sort_merge_join_equals_the_oracle((left, right, kind, batch_rows, budget) in cases()) {
            let (got, stats) = join(kind, JoinStrategy::SortMerge, &left, &right, batch_rows, budget);
            prop_assert_eq!(got, oracle(kind, &wide(&left), &wide(&right)));
            if budget == 8 << 10 && right.len() > 1000 {
                prop_assert!(stats.runs > 0 && stats.written_bytes > 0, "an 8 KiB budget spills");
            }
            if budget == 64 << 20 {
                prop_assert_eq!(stats.runs, 0, "64 MiB holds everything");
            }
        }

        /// Key types and spreads that take each index of the hash join: dense integers (an
        /// array), sparse integers (a table of values), the extremes of i64 (a span past
        /// 64 bits), Int32, text (key rows); both strategies equal the oracle.
        #[test]
        fn every_key_index_equals_the_oracle(
            (left, right, kind, batch_rows, budget) in cases(),
            (spread, key) in prop::sample::select(vec![
                (1i64, DataType::Int64),
                (7919, DataType::Int64),
                (i64::MAX / 10, DataType::Int64),
                (1, DataType::Int32),
                (1, DataType::Utf8),
            ]),
            strategy in prop::sample::select(vec![JoinStrategy::Hash, JoinStrategy::SortMerge]),
        ) {
            let spread_out = |rows: Vec<Row>| -> Vec<Wide> {
                let rows: Vec<Row> = rows.into_iter().map(|(k, v)| (k.map(|k| (k - 20).saturating_mul(spread)), v)).collect();
                wide(&rows)
            };
            let (left, right) = (spread_out(left), spread_out(right));
            let (got, _) = join_keyed((1, kind, strategy, batch_rows, budget), &left, &right, &key);
            prop_assert_eq!(got, oracle(kind, &left, &right));
        }

        /// Two key columns, nulls in either (the second one's nulls sort inside the first
        /// one's groups): both strategies equal the oracle, in memory and spilling.
        #[test]
        fn two_key_columns_with_nulls_equal_the_oracle(
            left in prop::collection::vec((prop::option::weighted(0.9, 0i64..6), prop::option::weighted(0.7, 0i64..6)), 0..800),
            right in prop::collection::vec((prop::option::weighted(0.9, 0i64..6), prop::option::weighted(0.7, 0i64..6)), 0..800),
            batch_rows in 1usize..300,
            budget in prop::sample::select(vec![8u64 << 10, 64 << 20]),
        ) {
            let numbered = |rows: Vec<(Option<i64>, Option<i64>)>| -> Vec<Wide> {
                rows.into_iter().enumerate().map(|(i, (a, b))| (vec![a, b], i as i64)).collect()
            };
            let (left, right) = (numbered(left), numbered(right));
            for kind in KINDS {
                let want = oracle(kind, &left, &right);
                for strategy in [JoinStrategy::Hash, JoinStrategy::SortMerge] {
                    let (got, _) = join_on(2, kind, strategy, &left, &right, batch_rows, budget);
                    prop_assert_eq!(&got, &want, "{:?} {:?}", kind, strategy);
                }
            }
        }
    }

    /// One key on every row of both sides (a giant group larger than the budget): every kind
    /// is still exact, joined in chunks of the build side.
    #[test]
    fn one_giant_key_group_is_joined_in_chunks() {
        let left: Vec<Row> = (0..300).map(|i| (Some(7), i)).collect();
        let mut right: Vec<Row> = (0..3000).map(|i| (Some(7), i)).collect();
        right.push((None, -1));
        for kind in KINDS {
            let (got, stats) = join(kind, JoinStrategy::Hash, &left, &right, 256, 16 << 10);
            assert!(stats.runs > 0, "{kind:?} spilled");
            assert_eq!(got, oracle(kind, &wide(&left), &wide(&right)), "{kind:?}");
        }
    }

    /// Sides of several sorted batches each (more than [`BATCH_ROWS`] rows), the right one
    /// streamed from its spill file under a small budget: the sort-merge join gives the rows
    /// of the hash join in memory (itself equal to the oracle above).
    #[test]
    fn sort_merge_join_streams_a_spilled_right_side_of_many_batches() {
        let mut state = 5u64;
        // Keys 0..12000 (about two rows a key on each side), 1 in 20 null.
        let mut side = |n: i64| -> Vec<Row> {
            (0..n)
                .map(|i| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let r = state >> 16;
                    (
                        (!r.is_multiple_of(20)).then_some((r >> 8) as i64 % 12_000),
                        i,
                    )
                })
                .collect()
        };
        let (left, right) = (side(30_000), side(25_000));
        for kind in KINDS {
            let (want, _) = join(kind, JoinStrategy::Hash, &left, &right, 1000, 1 << 30);
            let (got, stats) = join(
                kind,
                JoinStrategy::SortMerge,
                &left,
                &right,
                1000,
                256 << 10,
            );
            assert!(stats.runs > 0, "{kind:?} spilled");
            assert!(
                got == want,
                "{kind:?}: {} rows, not {}",
                got.len(),
                want.len()
            );
        }
    }

    /// The same giant group through the sort-merge join: the group (over several sorted
    /// batches) goes to a spill file, read again for each left batch. Semi and anti joins only
    /// count a group's rows, so the inner and left joins spill exactly one run more than they
    /// do (the group).
    #[test]
    fn sort_merge_join_spills_one_giant_key_group() {
        let left: Vec<Row> = (0..40).map(|i| (Some(7), i)).collect();
        let mut right: Vec<Row> = (0..20_000).map(|i| (Some(7), i)).collect();
        right.push((None, -1));
        let mut runs = Vec::new();
        for kind in KINDS {
            let (got, stats) = join(kind, JoinStrategy::SortMerge, &left, &right, 256, 16 << 10);
            assert!(stats.runs > 0, "{kind:?} spilled");
            assert_eq!(got, oracle(kind, &wide(&left), &wide(&right)), "{kind:?}");
            runs.push(stats.runs);
        }
        assert_eq!(runs[0], runs[2] + 1, "inner: the group spilled ({runs:?})");
        assert_eq!(runs[1], runs[2] + 1, "left: the group spilled ({runs:?})");
        assert_eq!(runs[3], runs[2], "{runs:?}");
    }

    #[test]
    fn key_types_and_names_are_checked() {
        let left = side("lv", 1, &[]).schema();
        let right = Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("lv", DataType::Int64, false),
        ]);
        let spec = JoinSpec {
            right: "r".into(),
            on: vec!["k".into()],
            right_on: None,
            kind: JoinKind::Inner,
            strategy: JoinStrategy::Hash,
        };
        let e = spec.output_schema(&left, &right).unwrap_err().to_string();
        assert!(e.contains("\"k\"") && e.contains("Utf8"), "{e}");
        let right = side("lv", 1, &[]).schema();
        let e = spec.output_schema(&left, &right).unwrap_err().to_string();
        assert!(e.contains("\"lv\"") && e.contains("both sides"), "{e}");
        let semi = JoinSpec {
            kind: JoinKind::Semi,
            ..spec
        };
        assert_eq!(semi.output_schema(&left, &right).unwrap().fields().len(), 2);
    }

    /// `strategy` is `hash` unless told; an unknown one is rejected.
    #[test]
    fn strategies_parse() {
        let parse = |text: &str| toml::from_str::<JoinSpec>(text);
        let spec = parse("right = \"c\"\non = [\"id\"]").unwrap();
        assert_eq!(spec.strategy, JoinStrategy::Hash);
        let spec = parse("right = \"c\"\non = [\"id\"]\nstrategy = \"sort_merge\"").unwrap();
        assert_eq!(spec.strategy, JoinStrategy::SortMerge);
        let e = parse("right = \"c\"\non = [\"id\"]\nstrategy = \"merge\"").unwrap_err();
        assert!(e.to_string().contains("sort_merge"), "{e}");
    }
}
