//! Hash aggregation of Arrow batches, in two phases: a *partial* aggregate before the
//! exchange (one per map subtask; it emits its groups' states when memory runs out and starts
//! again, so map memory stays bounded) and a *final* aggregate after it (one per key group
//! owner; merges the states of every partial aggregate of its keys).
//!
//! Group keys are normalized to comparable bytes with `arrow-row` (any key types, nulls
//! included), so a group is a byte string in a hash map, as the sorter's keys are. So are the
//! values of `count_distinct`: one hash set per call holds every group's distinct values, and
//! its partial state is the list of a group's values (a group with more than
//! [`PIECE_BYTES`] of them is sent as several rows, which merge like any others).
//!
//! ```text
//! rows ──update──► partial states ──(exchange by key hash)──merge──► final states ──► rows
//!                  keys + per call: count | sum | min | max | avg as (sum, count)
//!                                   | count_distinct as a list of value rows
//! ```

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::sort::{rows_of, sorted_order, Runs, MIN_RUN_BYTES};
use super::source::BATCH_ROWS;
use super::spill::{SpillDir, SpillStats};
use super::BatchError;
use crate::memory::{MemoryBudget, Reservation};
use crate::EngineError;

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    /// Rows (no column) or non-null values of a column.
    Count,
    Sum,
    Min,
    Max,
    /// Mean of the non-null values, as a float.
    Avg,
    /// Distinct non-null values of a column of any type `arrow-row` encodes (SQL's
    /// `COUNT(DISTINCT column)`); values are equal when their row bytes are.
    CountDistinct,
}

/// One aggregate of a step: `func(column) AS name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggCall {
    #[serde(rename = "fn")]
    pub func: AggFunc,
    /// The column aggregated; `None` only for `count` (rows).
    #[serde(default)]
    pub column: Option<String>,
    /// The output column's name.
    #[serde(rename = "as")]
    pub name: String,
}

/// Group by `keys`, computing `aggregates`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    pub keys: Vec<String>,
    pub aggregates: Vec<AggCall>,
}

/// The numeric kind of an aggregated column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Int,
    Float,
}

/// A call resolved against the input schema.
#[derive(Clone, Debug)]
struct Call {
    func: AggFunc,
    column: Option<usize>,
    num: Num,
    name: String,
}

/// One group's state for one call.
#[derive(Clone, Copy, Debug)]
enum Acc {
    Count(i64),
    /// Min or max of integers.
    Int(Option<i64>),
    /// Sum of integers, wide so that no sum of i64 values can overflow it.
    IntSum(Option<i128>),
    Float(Option<f64>),
    Avg(f64, i64),
}

impl AggregateSpec {
    /// The schema of the partial states for an input of `input` schema, and the final
    /// output's schema; errors name the column that is missing or has the wrong type.
    pub fn schemas(&self, input: &Schema) -> Result<(SchemaRef, SchemaRef), BatchError> {
        let (keys, calls) = self.resolve(input)?;
        let key_fields: Vec<Field> = keys
            .iter()
            .map(|&k| input.field(k).clone().with_nullable(true))
            .collect();
        let mut partial = key_fields.clone();
        let mut output = key_fields;
        for call in &calls {
            let value = match call.num {
                Num::Int => DataType::Int64,
                Num::Float => DataType::Float64,
            };
            match call.func {
                AggFunc::Count => {
                    partial.push(Field::new(&call.name, DataType::Int64, false));
                    output.push(Field::new(&call.name, DataType::Int64, false));
                }
                AggFunc::CountDistinct => {
                    partial.push(Field::new(&call.name, distinct_state(), false));
                    output.push(Field::new(&call.name, DataType::Int64, false));
                }
                AggFunc::Sum | AggFunc::Min | AggFunc::Max => {
                    partial.push(Field::new(&call.name, value.clone(), true));
                    output.push(Field::new(&call.name, value, true));
                }
                AggFunc::Avg => {
                    partial.push(Field::new(
                        format!("{}.sum", call.name),
                        DataType::Float64,
                        false,
                    ));
                    partial.push(Field::new(
                        format!("{}.count", call.name),
                        DataType::Int64,
                        false,
                    ));
                    output.push(Field::new(&call.name, DataType::Float64, true));
                }
            }
        }
        Ok((
            Arc::new(Schema::new(partial)),
            Arc::new(Schema::new(output)),
        ))
    }

    fn resolve(&self, input: &Schema) -> Result<(Vec<usize>, Vec<Call>), BatchError> {
        let column = |name: &str| {
            input.index_of(name).map_err(|_| BatchError::UnknownColumn {
                column: name.to_string(),
                available: input.fields().iter().map(|f| f.name().clone()).collect(),
            })
        };
        if self.keys.is_empty() && self.aggregates.is_empty() {
            return Err(BatchError::Spec {
                what: "an aggregate needs keys or aggregates (or both)".into(),
            });
        }
        let keys = self
            .keys
            .iter()
            .map(|k| column(k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut calls = Vec::new();
        for call in &self.aggregates {
            let index = match &call.column {
                Some(name) => Some(column(name)?),
                None if call.func == AggFunc::Count => None,
                None => {
                    return Err(BatchError::Spec {
                        what: format!("aggregate {:?} needs a column", call.name),
                    })
                }
            };
            let num = match index.map(|i| input.field(i).data_type()) {
                Some(DataType::Float64) => Num::Float,
                Some(DataType::Int64) | None => Num::Int,
                Some(_) if call.func == AggFunc::Count => Num::Int,
                Some(other) if call.func == AggFunc::CountDistinct => {
                    if !RowConverter::supports_fields(&[SortField::new(other.clone())]) {
                        return Err(BatchError::TypeMismatch {
                            column: call.column.clone().unwrap_or_default(),
                            found: other.to_string(),
                            expected: "a type with a row encoding, for count_distinct".into(),
                        });
                    }
                    Num::Int
                }
                Some(other) => {
                    return Err(BatchError::TypeMismatch {
                        column: call.column.clone().unwrap_or_default(),
                        found: other.to_string(),
                        expected: format!("Int64 or Float64 for {:?}", call.func),
                    })
                }
            };
            calls.push(Call {
                func: call.func,
                column: index,
                num,
                name: call.name.clone(),
            });
        }
        Ok((keys, calls))
    }
}

/// Which side of the exchange an aggregate runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Input rows in, partial states out.
    Partial,
    /// Partial states in, final rows out.
    Final,
}

/// A hash aggregate over batches of one schema.
pub struct HashAggregate {
    phase: Phase,
    keys: Vec<usize>,
    calls: Vec<Call>,
    converter: RowConverter,
    /// Normalized key bytes → group index (groups numbered in first-seen order).
    groups: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    /// Per group, one state per call: group `g`'s are `accs[g * calls..][..calls]` (for
    /// `count_distinct`, the count of its values in `distinct`).
    accs: Vec<Acc>,
    /// Per call, the distinct values of every group (`count_distinct` calls only).
    distinct: Vec<Option<Distinct>>,
    partial_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Bytes the groups hold, estimated (keys, states, map slots).
    bytes: usize,
}

impl HashAggregate {
    /// An aggregate of `spec` whose *original* input has schema `input` (the final phase
    /// reads partial states of that input).
    pub fn new(spec: &AggregateSpec, input: &Schema, phase: Phase) -> Result<Self, BatchError> {
        let (keys, calls) = spec.resolve(input)?;
        let (partial_schema, output_schema) = spec.schemas(input)?;
        let fields = keys
            .iter()
            .map(|&k| SortField::new(input.field(k).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(BatchError::arrow("key rows"))?;
        let keys = match phase {
            Phase::Partial => keys,
            Phase::Final => (0..keys.len()).collect(),
        };
        let distinct = calls
            .iter()
            .map(|call| match (call.func, call.column) {
                (AggFunc::CountDistinct, Some(c)) => {
                    Distinct::new(input.field(c).data_type()).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            phase,
            keys,
            calls,
            converter,
            groups: HashMap::default(),
            accs: Vec::new(),
            distinct,
            partial_schema,
            output_schema,
            bytes: 0,
        })
    }

    /// The schema of what [`Self::emit`] returns.
    pub fn output_schema(&self) -> SchemaRef {
        match self.phase {
            Phase::Partial => self.partial_schema.clone(),
            Phase::Final => self.output_schema.clone(),
        }
    }

    /// Groups held now.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Estimated bytes the groups hold (distinct values included).
    pub fn bytes(&self) -> usize {
        self.bytes
            + self
                .distinct
                .iter()
                .flatten()
                .map(Distinct::bytes)
                .sum::<usize>()
    }

    /// The group of key `bytes`, a new one (its states empty) the first time.
    fn group(&mut self, bytes: &[u8]) -> usize {
        if let Some(&g) = self.groups.get(bytes) {
            return g;
        }
        let g = self.groups.len();
        let per_group = self.calls.len().max(1);
        self.bytes += bytes.len() + 64 + per_group * std::mem::size_of::<Acc>();
        self.groups.insert(bytes.into(), g);
        for call in &self.calls {
            self.accs.push(Acc::empty(call));
        }
        g
    }

    /// The group of each row when the key is one text or integer column: the batch's
    /// distinct values first (a small table over the values in place), then only those
    /// encoded as key rows and looked up — not every row (`None`: another key).
    fn groups_of_one_column(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<Option<Vec<usize>>, BatchError> {
        let [k] = self.keys[..] else {
            return Ok(None);
        };
        let column = batch.column(k);
        let (ids, distinct): (Vec<usize>, ArrayRef) = match column.data_type() {
            DataType::Utf8 if column.null_count() == 0 => {
                // The values' bytes in place (no null to tell apart, no UTF-8 to check).
                let strings = column.as_string::<i32>();
                let (offsets, data) = (strings.value_offsets(), strings.value_data());
                let values = offsets
                    .windows(2)
                    .map(|w| &data[w[0] as usize..w[1] as usize]);
                let (ids, values) = distinct_ids(values);
                let values = values.into_iter().map(|v| Some(String::from_utf8_lossy(v)));
                (ids, Arc::new(values.collect::<arrow_array::StringArray>()))
            }
            DataType::Utf8 => {
                let strings = column.as_string::<i32>();
                let (ids, values) = distinct_ids(strings.iter());
                (ids, Arc::new(arrow_array::StringArray::from(values)))
            }
            DataType::Int64 => {
                let ints = column.as_primitive::<Int64Type>();
                let (ids, values) = distinct_ids(ints.iter());
                (ids, Arc::new(arrow_array::Int64Array::from(values)))
            }
            _ => return Ok(None),
        };
        let rows = self
            .converter
            .convert_columns(&[distinct])
            .map_err(BatchError::arrow("key rows"))?;
        let groups: Vec<usize> = rows.iter().map(|row| self.group(row.as_ref())).collect();
        Ok(Some(ids.into_iter().map(|id| groups[id]).collect()))
    }

    /// A global aggregate (no keys) that saw no rows still has its one group: SQL's one row
    /// of `count(*) = 0` and null sums.
    pub fn ensure_global_group(&mut self) {
        if self.keys.is_empty() && self.groups.is_empty() {
            self.group(&[]);
        }
    }

    /// Adds a batch: input rows (partial phase) or partial states (final phase).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), BatchError> {
        let group_of = if self.keys.is_empty() {
            // A global aggregate: every row is in the one group.
            let g = (batch.num_rows() > 0).then(|| self.group(&[]));
            vec![g.unwrap_or_default(); batch.num_rows()]
        } else if let Some(group_of) = self.groups_of_one_column(batch)? {
            group_of
        } else {
            let key_columns: Vec<ArrayRef> =
                self.keys.iter().map(|&k| batch.column(k).clone()).collect();
            let rows = self
                .converter
                .convert_columns(&key_columns)
                .map_err(BatchError::arrow("key rows"))?;
            rows.iter().map(|row| self.group(row.as_ref())).collect()
        };
        let n = self.calls.len();
        match self.phase {
            Phase::Partial => {
                for (c, call) in self.calls.iter().enumerate() {
                    let column = call.column.map(|i| batch.column(i));
                    if let (Some(distinct), Some(column)) = (&mut self.distinct[c], column) {
                        let values = distinct
                            .converter
                            .convert_columns(std::slice::from_ref(column))
                            .map_err(BatchError::arrow("distinct values"))?;
                        for (row, &g) in group_of.iter().enumerate() {
                            if column.is_valid(row) {
                                distinct.insert(
                                    &mut self.accs[g * n + c],
                                    g,
                                    values.row(row).as_ref(),
                                );
                            }
                        }
                        continue;
                    }
                    update(&mut self.accs, n, c, call, column, &group_of);
                }
            }
            Phase::Final => {
                let mut at = self.keys.len();
                for (c, call) in self.calls.iter().enumerate() {
                    let width = if call.func == AggFunc::Avg { 2 } else { 1 };
                    let states = &batch.columns()[at..at + width];
                    at += width;
                    if let Some(distinct) = &mut self.distinct[c] {
                        let lists = states[0].as_list::<i32>();
                        let values = lists.values().as_binary::<i32>();
                        let offsets = lists.value_offsets();
                        for (row, &g) in group_of.iter().enumerate() {
                            for v in offsets[row] as usize..offsets[row + 1] as usize {
                                distinct.insert(&mut self.accs[g * n + c], g, values.value(v));
                            }
                        }
                        continue;
                    }
                    for (row, &g) in group_of.iter().enumerate() {
                        self.accs[g * n + c].merge(call, states, row);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every group as rows of [`Self::output_schema`] (batches of at most `batch_rows`), and
    /// forgets them.
    pub fn emit(&mut self, batch_rows: usize) -> Result<Vec<RecordBatch>, BatchError> {
        self.emit_as(batch_rows, self.phase)
    }

    /// Every group as partial states (rows of [`Self::partial_schema`], which a final
    /// aggregate merges), and forgets them: how a final aggregate spills.
    pub fn emit_states(&mut self, batch_rows: usize) -> Result<Vec<RecordBatch>, BatchError> {
        self.emit_as(batch_rows, Phase::Partial)
    }

    /// The schema of partial states (keys first).
    pub fn partial_schema(&self) -> SchemaRef {
        self.partial_schema.clone()
    }

    fn emit_as(&mut self, batch_rows: usize, phase: Phase) -> Result<Vec<RecordBatch>, BatchError> {
        let parser = self.converter.parser();
        let n = self.calls.len();
        let mut batches = Vec::new();
        let groups = self.groups.len();
        let mut order: Vec<&[u8]> = vec![&[]; groups];
        for (key, &g) in &self.groups {
            order[g] = key;
        }
        // Partial states of `count_distinct` list each group's values, cut into pieces of at
        // most PIECE_BYTES, a row each. The rows out are (group, whether its first); other
        // calls' states are in a group's first row.
        let sets: Vec<Option<ByGroup>> = self
            .distinct
            .iter()
            .map(|d| {
                d.as_ref()
                    .filter(|_| phase == Phase::Partial)
                    .map(|d| d.by_group(groups))
            })
            .collect();
        let mut rows: Vec<(usize, bool)> = Vec::with_capacity(groups);
        let mut pieces: Vec<Vec<Range<usize>>> = vec![Vec::new(); n];
        let mut at = vec![0; n];
        for g in 0..groups {
            let mut first = true;
            loop {
                let mut more = false;
                for (c, set) in sets.iter().enumerate() {
                    let Some(set) = set else {
                        continue;
                    };
                    if first {
                        at[c] = set.starts[g];
                    }
                    let piece = set.piece(g, at[c]);
                    at[c] = piece.end;
                    more |= piece.end < set.starts[g + 1];
                    pieces[c].push(piece);
                }
                rows.push((g, first));
                first = false;
                if !more {
                    break;
                }
            }
        }
        for start in (0..rows.len()).step_by(batch_rows.max(1)) {
            let end = (start + batch_rows.max(1)).min(rows.len());
            let mut columns = self
                .converter
                .convert_rows(
                    rows[start..end]
                        .iter()
                        .map(|&(g, _)| parser.parse(order[g])),
                )
                .map_err(BatchError::arrow("group keys"))?;
            for (c, call) in self.calls.iter().enumerate() {
                if let Some(set) = &sets[c] {
                    columns.push(distinct_lists(&set.values, &pieces[c][start..end]));
                    continue;
                }
                let accs = rows[start..end].iter().map(|&(g, first)| {
                    if first {
                        self.accs[g * n + c]
                    } else {
                        Acc::empty(call)
                    }
                });
                columns.extend(finish(call, accs, phase)?);
            }
            let schema = match phase {
                Phase::Partial => self.partial_schema.clone(),
                Phase::Final => self.output_schema.clone(),
            };
            let batch = RecordBatch::try_new(schema, columns)
                .map_err(BatchError::arrow("aggregate output"))?;
            batches.push(batch);
        }
        self.groups.clear();
        self.accs.clear();
        self.bytes = 0;
        for distinct in self.distinct.iter_mut().flatten() {
            distinct.clear();
        }
        Ok(batches)
    }
}

/// The most bytes of distinct values in one row of partial state: a group holding more is
/// sent (and spilled) as several rows, so that no row outgrows a spill block and a batch of
/// rows stays far within Arrow's 32-bit offsets. Tiny in unit tests, so that their oracles
/// check the pieces too.
const PIECE_BYTES: usize = if cfg!(test) { 64 } else { 16 << 10 };

/// The type of a `count_distinct` partial state: the row bytes of the group's values.
fn distinct_state() -> DataType {
    DataType::List(distinct_item())
}

fn distinct_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Binary, false))
}

/// The distinct values of one `count_distinct` call in every group: each entry is the group's
/// index (4 bytes) followed by the value's `arrow-row` bytes.
struct Distinct {
    /// Encodes input values (partial phase).
    converter: RowConverter,
    set: HashSet<Box<[u8]>, foldhash::fast::RandomState>,
    /// Bytes the entries allocated, estimated.
    heap: usize,
    entry: Vec<u8>,
}

impl Distinct {
    fn new(data_type: &DataType) -> Result<Self, BatchError> {
        let converter = RowConverter::new(vec![SortField::new(data_type.clone())])
            .map_err(BatchError::arrow("distinct values"))?;
        Ok(Self {
            converter,
            set: HashSet::default(),
            heap: 0,
            entry: Vec::new(),
        })
    }

    /// Adds `value` to group `g`'s values, counting it in `count` if new.
    fn insert(&mut self, count: &mut Acc, g: usize, value: &[u8]) {
        let g = u32::try_from(g).expect("fewer than 2^32 groups");
        self.entry.clear();
        self.entry.extend_from_slice(&g.to_le_bytes());
        self.entry.extend_from_slice(value);
        if self.set.contains(self.entry.as_slice()) {
            return;
        }
        // The allocation, rounded as allocators do, and its header.
        self.heap += self.entry.len().next_multiple_of(16) + 16;
        self.set.insert(self.entry.as_slice().into());
        if let Acc::Count(n) = count {
            *n += 1;
        }
    }

    /// Estimated bytes held: the entries and the table's slots (a boxed slice and a control
    /// byte each; at most 7/8 of the slots are used).
    fn bytes(&self) -> usize {
        self.heap + self.set.capacity() * (size_of::<Box<[u8]>>() + 1) * 8 / 7
    }

    /// Every group's values.
    fn by_group(&self, groups: usize) -> ByGroup<'_> {
        let group = |entry: &[u8]| u32::from_le_bytes(entry[..4].try_into().expect("4")) as usize;
        let mut starts = vec![0; groups + 1];
        for entry in &self.set {
            starts[group(entry) + 1] += 1;
        }
        for g in 0..groups {
            starts[g + 1] += starts[g];
        }
        let mut next = starts.clone();
        let mut values: Vec<&[u8]> = vec![&[]; self.set.len()];
        for entry in &self.set {
            let g = group(entry);
            values[next[g]] = &entry[4..];
            next[g] += 1;
        }
        ByGroup { values, starts }
    }

    /// Forgets every value (and the table's memory).
    fn clear(&mut self) {
        self.set = HashSet::default();
        self.heap = 0;
    }
}

/// One `count_distinct` call's values by group: group `g`'s are
/// `values[starts[g]..starts[g + 1]]`.
struct ByGroup<'a> {
    values: Vec<&'a [u8]>,
    starts: Vec<usize>,
}

impl ByGroup<'_> {
    /// The piece of group `g`'s values that starts at `start`: at most [`PIECE_BYTES`], but
    /// at least one value (if any are left).
    fn piece(&self, g: usize, start: usize) -> Range<usize> {
        let (end, mut i, mut bytes) = (self.starts[g + 1], start, 0);
        while i < end && (i == start || bytes + self.values[i].len() <= PIECE_BYTES) {
            bytes += self.values[i].len();
            i += 1;
        }
        start..i
    }
}

/// A `count_distinct` state column: per row, the values of its piece.
fn distinct_lists(values: &[&[u8]], pieces: &[Range<usize>]) -> ArrayRef {
    let mut lists = ListBuilder::new(BinaryBuilder::new()).with_field(distinct_item());
    for piece in pieces {
        for value in &values[piece.clone()] {
            lists.values().append_value(value);
        }
        lists.append(true);
    }
    Arc::new(lists.finish())
}

/// The final phase under a memory budget: when the budget refuses the groups' growth, their
/// partial states are sorted by key into a run on disk and the aggregate starts again; at the
/// end the runs are merged by key and equal keys merged into final rows (a key has one row per
/// run written, or a few when its distinct values are cut into pieces).
pub(crate) struct FinalAggregate {
    spec: AggregateSpec,
    input: SchemaRef,
    aggregate: HashAggregate,
    reservation: Reservation,
    runs: Runs,
    /// Orders partial states by their key columns (the first ones).
    converter: RowConverter,
    keys: Vec<usize>,
}

impl FinalAggregate {
    pub fn new(
        spec: &AggregateSpec,
        input: SchemaRef,
        budget: &Arc<MemoryBudget>,
        spill: SpillDir,
    ) -> Result<Self, EngineError> {
        let aggregate = HashAggregate::new(spec, &input, Phase::Final)?;
        let keys: Vec<usize> = (0..spec.keys.len()).collect();
        let partial = aggregate.partial_schema();
        let converter = RowConverter::new(
            keys.iter()
                .map(|&k| SortField::new(partial.field(k).data_type().clone()))
                .collect(),
        )
        .map_err(BatchError::arrow("key rows"))?;
        Ok(Self {
            spec: spec.clone(),
            input,
            aggregate,
            reservation: budget
                .try_reserve(0)
                .ok_or_else(|| super::too_small(budget, 0, "a final aggregate"))?,
            runs: Runs::new(spill),
            converter,
            keys,
        })
    }

    /// Merges a batch of partial states.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        self.aggregate.push(batch)?;
        let held = self.aggregate.bytes() as u64;
        // A global aggregate is one group: a run would hold it whole, and the merge would
        // gather it again (like one giant group of a keyed `count_distinct`, it is not bounded).
        let global = self.keys.is_empty();
        if !super::grow_to(&mut self.reservation, held) && held >= MIN_RUN_BYTES && !global {
            self.spill_run()?;
        }
        Ok(())
    }

    fn spill_run(&mut self) -> Result<(), EngineError> {
        let states = self.aggregate.emit_states(BATCH_ROWS)?;
        let rows = states
            .iter()
            .map(|b| rows_of(&self.converter, &self.keys, b))
            .collect::<Result<Vec<_>, _>>()?;
        self.runs.write(
            &self.aggregate.partial_schema(),
            &states,
            &sorted_order(&rows),
        )?;
        self.reservation.shrink_to(0);
        Ok(())
    }

    /// Emits every group's final row.
    pub fn finish(
        mut self,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<SpillStats, EngineError> {
        if self.runs.is_empty() {
            self.aggregate.ensure_global_group();
            for batch in self.aggregate.emit(BATCH_ROWS)? {
                emit(batch)?;
            }
            return Ok(self.runs.stats);
        }
        if self.aggregate.groups() > 0 {
            self.spill_run()?;
        }
        // States in key order; the rows of the last key of a batch may go on in the next.
        let (spec, input, converter, keys) = (&self.spec, &self.input, &self.converter, &self.keys);
        let mut carry: Vec<RecordBatch> = Vec::new();
        let mut complete = |states: &[RecordBatch]| -> Result<(), EngineError> {
            let mut aggregate = HashAggregate::new(spec, input, Phase::Final)?;
            for batch in states {
                aggregate.push(batch)?;
            }
            for batch in aggregate.emit(BATCH_ROWS)? {
                emit(batch)?;
            }
            Ok(())
        };
        let partial = self.aggregate.partial_schema();
        let stats = self.runs.merge(
            &partial,
            converter,
            keys,
            u64::MAX,
            &mut self.reservation,
            &mut |batch: RecordBatch| {
                let rows = rows_of(converter, keys, &batch)?;
                let last = rows.row(batch.num_rows() - 1);
                if let Some(c) = carry.first() {
                    if rows_of(converter, keys, &c.slice(0, 1))?.row(0) == last {
                        // The whole batch has the carried key.
                        carry.push(batch);
                        return Ok(());
                    }
                }
                let mut cut = batch.num_rows() - 1;
                while cut > 0 && rows.row(cut - 1) == last {
                    cut -= 1;
                }
                let mut done = std::mem::take(&mut carry);
                done.push(batch.slice(0, cut));
                complete(&done)?;
                carry.push(batch.slice(cut, batch.num_rows() - cut));
                Ok(())
            },
        )?;
        if !carry.is_empty() {
            complete(&carry)?;
        }

        Ok(stats)
    }
}

/// The columns of one call for a run of groups.
fn finish(
    call: &Call,
    accs: impl Iterator<Item = Acc>,
    phase: Phase,
) -> Result<Vec<ArrayRef>, BatchError> {
    let mut ints = Int64Builder::new();
    let mut floats = Float64Builder::new();
    let mut counts = Int64Builder::new();
    for acc in accs {
        match acc {
            Acc::Count(n) => ints.append_value(n),
            Acc::Int(v) => ints.append_option(v),
            Acc::IntSum(v) => {
                let v = v
                    .map(i64::try_from)
                    .transpose()
                    .map_err(|_| BatchError::Overflow {
                        column: call.name.clone(),
                    })?;
                ints.append_option(v)
            }
            Acc::Float(v) => floats.append_option(v),
            Acc::Avg(sum, n) => match phase {
                Phase::Partial => {
                    floats.append_value(sum);
                    counts.append_value(n);
                }
                Phase::Final => floats.append_option((n > 0).then(|| sum / n as f64)),
            },
        }
    }
    Ok(match (call.func, call.num) {
        (AggFunc::Avg, _) if phase == Phase::Partial => {
            vec![Arc::new(floats.finish()), Arc::new(counts.finish())]
        }
        (AggFunc::Avg, _) | (AggFunc::Sum | AggFunc::Min | AggFunc::Max, Num::Float) => {
            vec![Arc::new(floats.finish())]
        }
        _ => vec![Arc::new(ints.finish())],
    })
}

impl Acc {
    fn empty(call: &Call) -> Self {
        match (call.func, call.num) {
            (AggFunc::Count | AggFunc::CountDistinct, _) => Acc::Count(0),
            (AggFunc::Avg, _) => Acc::Avg(0.0, 0),
            (AggFunc::Sum, Num::Int) => Acc::IntSum(None),
            (_, Num::Int) => Acc::Int(None),
            (_, Num::Float) => Acc::Float(None),
        }
    }

    /// Merges partial state row `row` (`states`: one column, two for avg).
    fn merge(&mut self, call: &Call, states: &[ArrayRef], row: usize) {
        let state = &states[0];
        match self {
            Acc::Count(n) => *n += state.as_primitive::<Int64Type>().value(row),
            Acc::Avg(sum, n) => {
                *sum += state.as_primitive::<Float64Type>().value(row);
                *n += states[1].as_primitive::<Int64Type>().value(row);
            }
            _ if state.is_null(row) => {}
            Acc::Int(v) => {
                let x = state.as_primitive::<Int64Type>().value(row);
                *v = Some(combine(call.func, *v, x));
            }
            Acc::IntSum(v) => {
                *v =
                    Some(v.unwrap_or(0) + i128::from(state.as_primitive::<Int64Type>().value(row)));
            }
            Acc::Float(v) => {
                let x = state.as_primitive::<Float64Type>().value(row);
                *v = Some(combine(call.func, *v, x));
            }
        }
    }
}

/// `func` of an accumulated value and a new one.
/// Numbers the distinct `values` in order of appearance: each value's number, and the
/// distinct values by number.
fn distinct_ids<T: std::hash::Hash + Eq + Copy>(
    values: impl Iterator<Item = T>,
) -> (Vec<usize>, Vec<T>) {
    let mut seen: HashMap<T, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut distinct = Vec::new();
    let ids = values
        .map(|v| {
            *seen.entry(v).or_insert_with(|| {
                distinct.push(v);
                distinct.len() - 1
            })
        })
        .collect();
    (ids, distinct)
}

/// Adds every row of `column` (`None`: count rows) to the state of call `c` (of `calls` per
/// group) of the row's group: one pass per call and batch over the typed values, not a
/// downcast and a virtual null check per row.
fn update(
    accs: &mut [Acc],
    calls: usize,
    c: usize,
    call: &Call,
    column: Option<&ArrayRef>,
    group_of: &[usize],
) {
    let nulls = column.and_then(|a| a.logical_nulls());
    let rows = group_of
        .iter()
        .enumerate()
        .filter(|(row, _)| nulls.as_ref().is_none_or(|n| n.is_valid(*row)))
        .map(|(row, &g)| (row, g * calls + c));
    // The column's values by the type `resolve` checked (none: a count of any type).
    let ints = column
        .filter(|a| a.data_type() == &DataType::Int64)
        .map(|a| a.as_primitive::<Int64Type>().values());
    let floats = column
        .filter(|a| a.data_type() == &DataType::Float64)
        .map(|a| a.as_primitive::<Float64Type>().values());
    match (Acc::empty(call), ints, floats) {
        (Acc::Count(_), _, _) => {
            for (_, at) in rows {
                if let Acc::Count(n) = &mut accs[at] {
                    *n += 1;
                }
            }
        }
        (Acc::Int(_), Some(x), _) => {
            for (row, at) in rows {
                if let Acc::Int(v) = &mut accs[at] {
                    *v = Some(combine(call.func, *v, x[row]));
                }
            }
        }
        (Acc::IntSum(_), Some(x), _) => {
            for (row, at) in rows {
                if let Acc::IntSum(v) = &mut accs[at] {
                    *v = Some(v.unwrap_or(0) + i128::from(x[row]));
                }
            }
        }
        (Acc::Float(_), _, Some(x)) => {
            for (row, at) in rows {
                if let Acc::Float(v) = &mut accs[at] {
                    *v = Some(combine(call.func, *v, x[row]));
                }
            }
        }
        (Acc::Avg(..), Some(x), _) => {
            for (row, at) in rows {
                if let Acc::Avg(sum, n) = &mut accs[at] {
                    *sum += x[row] as f64;
                    *n += 1;
                }
            }
        }
        (Acc::Avg(..), _, Some(x)) => {
            for (row, at) in rows {
                if let Acc::Avg(sum, n) = &mut accs[at] {
                    *sum += x[row];
                    *n += 1;
                }
            }
        }
        // `resolve` gives every call a column of the type its state takes.
        _ => {}
    }
}

fn combine<T: PartialOrd + std::ops::Add<Output = T> + Copy>(
    func: AggFunc,
    acc: Option<T>,
    x: T,
) -> T {
    match acc {
        None => x,
        Some(a) => match func {
            AggFunc::Sum => a + x,
            AggFunc::Min => {
                if x < a {
                    x
                } else {
                    a
                }
            }
            AggFunc::Max => {
                if x > a {
                    x
                } else {
                    a
                }
            }
            AggFunc::Count | AggFunc::Avg | AggFunc::CountDistinct => a,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    type Row = (
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<f64>,
        Option<String>,
    );

    fn spec() -> AggregateSpec {
        let call = |func, column: Option<&str>, name: &str| AggCall {
            func,
            column: column.map(str::to_string),
            name: name.to_string(),
        };
        AggregateSpec {
            keys: vec!["k".into(), "g".into()],
            aggregates: vec![
                call(AggFunc::Count, None, "rows"),
                call(AggFunc::Count, Some("v"), "values"),
                call(AggFunc::Sum, Some("v"), "sum"),
                call(AggFunc::Min, Some("v"), "min"),
                call(AggFunc::Max, Some("f"), "fmax"),
                call(AggFunc::Avg, Some("v"), "avg"),
                call(AggFunc::CountDistinct, Some("v"), "vd"),
                call(AggFunc::CountDistinct, Some("s"), "sd"),
                call(AggFunc::CountDistinct, Some("f"), "fd"),
            ],
        }
    }

    fn batch(rows: &[Row]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "g",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "v",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    /// The oracle: a plain fold over the rows, one output line per group as text.
    fn oracle(rows: &[Row]) -> BTreeMap<String, String> {
        let mut groups: BTreeMap<(Option<String>, Option<i64>), Vec<&Row>> = BTreeMap::new();
        for row in rows {
            groups.entry((row.0.clone(), row.1)).or_default().push(row);
        }
        groups
            .into_iter()
            .map(|((k, g), rows)| {
                let values: Vec<i64> = rows.iter().filter_map(|r| r.2).collect();
                let floats: Vec<f64> = rows.iter().filter_map(|r| r.3).collect();
                let sum = (!values.is_empty()).then(|| values.iter().sum::<i64>());
                let avg = (!values.is_empty())
                    .then(|| values.iter().sum::<i64>() as f64 / values.len() as f64);
                let fmax = floats.iter().copied().reduce(f64::max);
                let vd = values.iter().collect::<BTreeSet<_>>().len();
                let sd = rows.iter().filter_map(|r| r.4.as_ref());
                let sd = sd.collect::<BTreeSet<_>>().len();
                let fd = floats.iter().map(|f| f.to_bits());
                let fd = fd.collect::<BTreeSet<_>>().len();
                (
                    format!("{k:?}|{g:?}"),
                    format!(
                        "{}|{}|{sum:?}|{:?}|{fmax:?}|{avg:?}|{vd}|{sd}|{fd}",
                        rows.len(),
                        values.len(),
                        values.iter().min()
                    ),
                )
            })
            .collect()
    }

    fn lines(batches: &[RecordBatch]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for b in batches {
            let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let g = b.column(1).as_primitive::<Int64Type>();
            let int = |c: usize, i: usize| {
                let a = b.column(c).as_primitive::<Int64Type>();
                (!a.is_null(i)).then(|| a.value(i))
            };
            let float = |c: usize, i: usize| {
                let a = b.column(c).as_primitive::<Float64Type>();
                (!a.is_null(i)).then(|| a.value(i))
            };
            for i in 0..b.num_rows() {
                let key = format!(
                    "{:?}|{:?}",
                    (!k.is_null(i)).then(|| k.value(i).to_string()),
                    (!g.is_null(i)).then(|| g.value(i))
                );
                let value = format!(
                    "{}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}",
                    int(2, i).unwrap(),
                    int(3, i).unwrap(),
                    int(4, i),
                    int(5, i),
                    float(6, i),
                    float(7, i),
                    int(8, i).unwrap(),
                    int(9, i).unwrap(),
                    int(10, i).unwrap()
                );
                assert!(
                    out.insert(key.clone(), value).is_none(),
                    "group {key} emitted twice"
                );
            }
        }
        out
    }

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec(
            (
                prop::option::weighted(0.9, "[a-h]{0,3}"),
                prop::option::weighted(0.9, 0i64..3),
                prop::option::weighted(0.8, -100i64..100),
                prop::option::weighted(0.8, -10.0f64..10.0),
                prop::option::weighted(0.8, "[a-c]{0,2}"),
            ),
            0..1500,
        )
    }

    /// `rows` split over `maps` partial aggregates (every `maps`-th row each, in batches of 7),
    /// each handing its states to `route` every `flush_every` batches (as a map does when
    /// memory runs out) and at the end.
    fn partials(
        spec: &AggregateSpec,
        rows: &[Row],
        maps: usize,
        flush_every: usize,
        mut route: impl FnMut(Vec<RecordBatch>),
    ) {
        let input = batch(&[]).schema();
        for m in 0..maps {
            let mut partial = HashAggregate::new(spec, &input, Phase::Partial).unwrap();
            let mine: Vec<Row> = rows.iter().skip(m).step_by(maps).cloned().collect();
            for (i, chunk) in mine.chunks(7).enumerate() {
                partial.push(&batch(chunk)).unwrap();
                if flush_every > 0 && i % flush_every == 0 {
                    route(partial.emit(5).unwrap());
                }
            }
            route(partial.emit(5).unwrap());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any split of the rows over partial aggregates (emitting early at random points, as
        /// a map does when memory runs out) and any number of final aggregates fed by key hash
        /// give the oracle's groups: heavy duplicates, null keys and null values included
        /// (`count_distinct`'s values cut into many pieces: they are tiny in tests).
        #[test]
        fn two_phases_equal_the_oracle(
            rows in rows(),
            maps in 1usize..4,
            reducers in 1usize..4,
            flush_every in 0usize..50,
            budget in prop::sample::select(vec![1u64 << 10, 16 << 10, 1 << 30]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let spec = spec();
            let input = batch(&[]).schema();
            let budget = MemoryBudget::new(budget);
            let spill = SpillDir { dir: dir.path().into(), options: Default::default() };
            let mut finals: Vec<FinalAggregate> = (0..reducers)
                .map(|_| FinalAggregate::new(&spec, input.clone(), &budget, spill.clone()).unwrap())
                .collect();
            let key_types: Vec<SortField> = input.fields()[..2].iter().map(|f| SortField::new(f.data_type().clone())).collect();
            let converter = RowConverter::new(key_types).unwrap();
            let route = |partials: Vec<RecordBatch>| {
                for p in partials {
                    let keys = converter.convert_columns(&p.columns()[..2]).unwrap();
                    for (i, owner) in crate::batch::consumers_of(&keys, 16, reducers).into_iter().enumerate() {
                        finals[owner as usize].push(&p.slice(i, 1)).unwrap();
                    }
                }
            };
            partials(&spec, &rows, maps, flush_every, route);
            let mut output = Vec::new();
            let mut runs = 0;
            for f in finals {
                runs += f.finish(&mut |b| { output.push(b); Ok(()) }).unwrap().runs;
            }
            prop_assert_eq!(lines(&output), oracle(&rows));
            let groups = oracle(&rows).len();
            if budget.limit_bytes() == 1 << 10 && groups > 600 {
                prop_assert!(runs > 0, "a 1 KiB budget spills {} groups", groups);
            }
            prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Without keys, the same calls over any split of the rows (empty included) give one
        /// row: the oracle's one group of all rows, or zero counts and nulls for no rows.
        #[test]
        fn a_global_aggregate_is_one_group(rows in rows(), maps in 1usize..4, flush_every in 0usize..20) {
            let dir = tempfile::tempdir().unwrap();
            let mut spec = spec();
            spec.keys.clear();
            let input = batch(&[]).schema();
            let budget = MemoryBudget::new(1 << 30);
            let spill = SpillDir { dir: dir.path().into(), options: Default::default() };
            let mut last = FinalAggregate::new(&spec, input.clone(), &budget, spill).unwrap();
            partials(&spec, &rows, maps, flush_every, |states| {
                for p in states { last.push(&p).unwrap(); }
            });
            let mut output = Vec::new();
            last.finish(&mut |b| { output.push(b); Ok(()) }).unwrap();
            // Null key columns in front, as `lines` reads them.
            let output: Vec<RecordBatch> = output.iter().map(|b| {
                let n = b.num_rows();
                let mut columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(vec![None::<&str>; n])),
                    Arc::new(arrow_array::Int64Array::from(vec![None; n])),
                ];
                columns.extend(b.columns().iter().cloned());
                let fields: Vec<arrow_schema::Field> = ["k", "g"].iter().zip([DataType::Utf8, DataType::Int64])
                    .map(|(name, t)| arrow_schema::Field::new(*name, t, true))
                    .chain(b.schema().fields().iter().map(|f| f.as_ref().clone()))
                    .collect();
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
            }).collect();
            let erased: Vec<Row> = rows.iter().map(|r| (None, None, r.2, r.3, r.4.clone())).collect();
            let mut expected = oracle(&erased);
            if rows.is_empty() {
                expected.insert("None|None".into(), "0|0|None|None|None|None|0|0|0".into());
            }
            prop_assert_eq!(lines(&output), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// One key column, text or integer (each batch's distinct values numbered in place,
        /// with and without nulls): the oracle's groups of that key.
        #[test]
        fn one_key_column_equals_the_oracle(rows in rows(), text: bool, chunk in 1usize..300) {
            let mut spec = spec();
            spec.keys = vec![if text { "k" } else { "g" }.into()];
            let input = batch(&[]).schema();
            let mut partial = HashAggregate::new(&spec, &input, Phase::Partial).unwrap();
            let mut last = HashAggregate::new(&spec, &input, Phase::Final).unwrap();
            for part in rows.chunks(chunk) {
                partial.push(&batch(part)).unwrap();
            }
            for p in partial.emit(100).unwrap() {
                last.push(&p).unwrap();
            }
            // The other key as a null column, where `lines` reads it.
            let output: Vec<RecordBatch> = last.emit(100).unwrap().iter().map(|b| {
                let n = b.num_rows();
                let null_text: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; n]));
                let null_int: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![None; n]));
                let mut columns = b.columns().to_vec();
                let mut fields: Vec<arrow_schema::Field> =
                    b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
                if text {
                    columns.insert(1, null_int);
                    fields.insert(1, arrow_schema::Field::new("g", DataType::Int64, true));
                } else {
                    columns.insert(0, null_text);
                    fields.insert(0, arrow_schema::Field::new("k", DataType::Utf8, true));
                }
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
            }).collect();
            let erased: Vec<Row> = rows.iter().map(|r| match text {
                true => (r.0.clone(), None, r.2, r.3, r.4.clone()),
                false => (None, r.1, r.2, r.3, r.4.clone()),
            }).collect();
            prop_assert_eq!(lines(&output), oracle(&erased));
        }
    }

    /// A global `count_distinct` past a tiny budget is not spilled (a run of one group would
    /// be merged whole again): every distinct value is counted, none lost.
    #[test]
    fn a_global_count_distinct_under_a_tiny_budget_counts_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec();
        spec.keys.clear();
        let input = batch(&[]).schema();
        let budget = MemoryBudget::new(1 << 10);
        let spill = SpillDir {
            dir: dir.path().into(),
            options: Default::default(),
        };
        let mut last = FinalAggregate::new(&spec, input.clone(), &budget, spill).unwrap();
        let rows: Vec<Row> = (0..100_000i64)
            .map(|i| (None, None, Some(i), None, None))
            .collect();
        let mut partial = HashAggregate::new(&spec, &input, Phase::Partial).unwrap();
        for chunk in rows.chunks(4096) {
            partial.push(&batch(chunk)).unwrap();
            for p in partial.emit(BATCH_ROWS).unwrap() {
                last.push(&p).unwrap();
            }
        }
        let mut output = Vec::new();
        last.finish(&mut |b| {
            output.push(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(output.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        let vd = output[0]
            .column_by_name("vd")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(vd.value(0), 100_000);
    }

    #[test]
    fn errors_name_the_column() {
        let input = batch(&[]).schema();
        let mut bad = spec();
        bad.keys = vec!["nope".into()];
        let e = HashAggregate::new(&bad, &input, Phase::Partial)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"nope\"") && e.contains("k, g, v, f"), "{e}");
        let mut bad = spec();
        bad.aggregates[2].column = Some("k".into());
        let e = HashAggregate::new(&bad, &input, Phase::Partial)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"k\"") && e.contains("Utf8"), "{e}");
    }

    #[test]
    fn a_sum_past_i64_is_an_error_not_a_wrapped_value() {
        let spec = AggregateSpec {
            keys: vec!["k".into()],
            aggregates: vec![AggCall {
                func: AggFunc::Sum,
                column: Some("v".into()),
                name: "s".into(),
            }],
        };
        let rows: Vec<Row> = vec![(Some("a".into()), None, Some(i64::MAX), None, None); 2];
        let mut agg = HashAggregate::new(&spec, &batch(&[]).schema(), Phase::Partial).unwrap();
        agg.push(&batch(&rows)).unwrap();
        let e = agg.emit(10).unwrap_err().to_string();
        assert!(e.contains("\"s\""), "{e}");
    }

    /// One group with 200,000 distinct values (each twice, in separate partial flushes) and
    /// one with three, under a budget far below their sets: the final aggregate spills runs,
    /// each holding part of the big group's values, and the merge counts each value once.
    #[test]
    fn many_distinct_values_spill_runs_and_count_exactly() {
        let spec = AggregateSpec {
            keys: vec!["k".into()],
            aggregates: vec![
                AggCall {
                    func: AggFunc::CountDistinct,
                    column: Some("v".into()),
                    name: "n".into(),
                },
                AggCall {
                    func: AggFunc::Count,
                    column: None,
                    name: "rows".into(),
                },
            ],
        };
        let input = batch(&[]).schema();
        let distinct = 200_000i64;
        let rows: Vec<Row> = (0..2 * distinct)
            .map(|i| (Some("a".into()), None, Some(i % distinct), None, None))
            .chain((0..1000).map(|i| {
                (
                    Some("b".into()),
                    None,
                    (i % 4 > 0).then_some(i % 4),
                    None,
                    None,
                )
            }))
            .collect();

        // The sets' memory is counted: one partial aggregate holding every value.
        let mut partial = HashAggregate::new(&spec, &input, Phase::Partial).unwrap();
        for chunk in rows.chunks(BATCH_ROWS) {
            partial.push(&batch(chunk)).unwrap();
        }
        assert!(partial.bytes() > 200_000 * 32, "{} bytes", partial.bytes());
        let states = partial.emit(BATCH_ROWS).unwrap();
        let state_rows: usize = states.iter().map(RecordBatch::num_rows).sum();
        assert!(
            state_rows > 1000,
            "the big group is cut into pieces: {state_rows} rows"
        );
        assert_eq!(partial.bytes(), 0);

        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(256 << 10);
        let spill = SpillDir {
            dir: dir.path().into(),
            options: Default::default(),
        };
        let mut last = FinalAggregate::new(&spec, input.clone(), &budget, spill).unwrap();
        let mut partial = HashAggregate::new(&spec, &input, Phase::Partial).unwrap();
        for chunk in rows.chunks(BATCH_ROWS) {
            partial.push(&batch(chunk)).unwrap();
            for states in partial.emit(BATCH_ROWS).unwrap() {
                last.push(&states).unwrap();
            }
        }
        let mut output = Vec::new();
        let stats = last
            .finish(&mut |b| {
                output.push(b);
                Ok(())
            })
            .unwrap();
        assert!(stats.runs > 1, "a 256 KiB budget spills: {stats:?}");
        let mut got = BTreeMap::new();
        for b in &output {
            let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let n = b.column(1).as_primitive::<Int64Type>();
            let r = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                assert!(got
                    .insert(k.value(i).to_string(), (n.value(i), r.value(i)))
                    .is_none());
            }
        }
        let want = BTreeMap::from([
            ("a".into(), (distinct, 2 * distinct)),
            ("b".into(), (3, 1000)),
        ]);
        assert_eq!(got, want);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn count_distinct_is_spelled_so_in_specs_and_needs_a_column() {
        let call: AggCall =
            toml::from_str("fn = \"count_distinct\"\ncolumn = \"v\"\nas = \"n\"").unwrap();
        assert_eq!(call.func, AggFunc::CountDistinct);
        let input = batch(&[]).schema();
        let mut bad = spec();
        bad.aggregates.push(AggCall {
            func: AggFunc::CountDistinct,
            column: None,
            name: "users".into(),
        });
        let e = HashAggregate::new(&bad, &input, Phase::Partial)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("\"users\"") && e.contains("needs a column"),
            "{e}"
        );
        assert!(bad.schemas(&input).is_err());
    }
}
