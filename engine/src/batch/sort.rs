//! Sorting batches: by several keys, each ascending or descending with nulls first or last.
//!
//! Keys are normalized to comparable bytes (`arrow-row`), so one byte comparison orders rows
//! by every key at once, whatever the types. [`Sorter`] holds batches under a memory budget;
//! when the budget refuses more, it sorts what it holds into a run on disk (a spill file) and
//! starts again; at the end it merges the runs. A limit (top-N) keeps only the first rows.

use std::fmt;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{SchemaRef, SortOptions};
use serde::{Deserialize, Serialize};
use shuffle::spill::SegmentFileReader;

use super::source::BATCH_ROWS;
use super::spill::{batches, SpillDir, SpillStats};
use super::BatchError;
use crate::memory::{MemoryBudget, Reservation};
use crate::EngineError;

/// One sort key: `"column"`, `"column desc"`, `"column asc nulls first"`. Nulls sort last in
/// ascending order and first in descending order unless told (as in Spark and PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SortKey {
    pub column: String,
    pub descending: bool,
    pub nulls_first: bool,
}

impl TryFrom<String> for SortKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let bad = || {
            format!("sort key {text:?}: expected \"COLUMN [asc|desc] [nulls first|nulls last]\"")
        };
        let column = words.first().ok_or_else(bad)?.clone();
        let mut rest: Vec<&str> = lower[1..].iter().map(String::as_str).collect();
        let descending = match rest.first() {
            Some(&"desc") => {
                rest.remove(0);
                true
            }
            Some(&"asc") => {
                rest.remove(0);
                false
            }
            _ => false,
        };
        let nulls_first = match rest.as_slice() {
            [] => descending,
            ["nulls", "first"] => true,
            ["nulls", "last"] => false,
            _ => return Err(bad()),
        };
        Ok(Self {
            column,
            descending,
            nulls_first,
        })
    }
}

impl From<SortKey> for String {
    fn from(key: SortKey) -> String {
        key.to_string()
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} nulls {}",
            self.column,
            if self.descending { "desc" } else { "asc" },
            if self.nulls_first { "first" } else { "last" }
        )
    }
}

/// A `sort` step: `sort = { by = ["n desc", "word"] }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortSpec {
    pub by: Vec<SortKey>,
}

impl SortSpec {
    /// Checks the keys against `schema`.
    pub fn check(&self, schema: &arrow_schema::Schema) -> Result<(), BatchError> {
        if self.by.is_empty() {
            return Err(BatchError::Spec {
                what: "sort needs at least one key in `by`".into(),
            });
        }
        self.key_columns(schema).map(|_| ())
    }

    fn key_columns(&self, schema: &arrow_schema::Schema) -> Result<Vec<usize>, BatchError> {
        self.by
            .iter()
            .map(|k| super::column_index(schema, &k.column))
            .collect()
    }

    /// A converter of this spec's key columns to comparable rows, and the columns' indices.
    pub(crate) fn converter(
        &self,
        schema: &arrow_schema::Schema,
    ) -> Result<(RowConverter, Vec<usize>), BatchError> {
        let columns = self.key_columns(schema)?;
        let fields = self
            .by
            .iter()
            .zip(&columns)
            .map(|(key, &c)| {
                SortField::new_with_options(
                    schema.field(c).data_type().clone(),
                    SortOptions {
                        descending: key.descending,
                        nulls_first: key.nulls_first,
                    },
                )
            })
            .collect();
        let converter = RowConverter::new(fields).map_err(BatchError::arrow("sort keys"))?;
        Ok((converter, columns))
    }
}

/// The comparable rows of `batch`'s key columns.
pub(crate) fn rows_of(
    converter: &RowConverter,
    columns: &[usize],
    batch: &RecordBatch,
) -> Result<Rows, BatchError> {
    let keys: Vec<_> = columns.iter().map(|&c| batch.column(c).clone()).collect();
    converter
        .convert_columns(&keys)
        .map_err(BatchError::arrow("sort keys"))
}

/// Rows taken from `batches` at `(batch, row)` positions, in that order, as batches of at most
/// `batch_rows` rows.
pub(crate) fn gather(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    order: &[(u32, u32)],
    batch_rows: usize,
    mut emit: impl FnMut(RecordBatch) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    for chunk in order.chunks(batch_rows) {
        let indices: Vec<(usize, usize)> = chunk
            .iter()
            .map(|&(b, r)| (b as usize, r as usize))
            .collect();
        let batch = if refs.is_empty() {
            RecordBatch::new_empty(schema.clone())
        } else {
            arrow_select::interleave::interleave_record_batch(&refs, &indices)
                .map_err(BatchError::arrow("gather sorted rows"))?
        };
        emit(batch)?;
    }
    Ok(())
}

/// Sorts the rows of `batches` in memory: their `(batch, row)` positions in key order
/// (stable: equal keys keep their arrival order).
pub(crate) fn sorted_order(rows: &[Rows]) -> Vec<(u32, u32)> {
    let mut order: Vec<(u32, u32)> = rows
        .iter()
        .enumerate()
        .flat_map(|(b, r)| (0..r.num_rows() as u32).map(move |i| (b as u32, i)))
        .collect();
    order.sort_by(|&(ab, ar), &(bb, br)| {
        rows[ab as usize]
            .row(ar as usize)
            .cmp(&rows[bb as usize].row(br as usize))
    });
    order
}

/// An external sort of batches under a memory budget; see the module documentation.
pub(crate) struct Sorter {
    schema: SchemaRef,
    converter: RowConverter,
    columns: Vec<usize>,
    limit: Option<u64>,
    batches: Vec<RecordBatch>,
    rows: Vec<Rows>,
    held: usize,
    held_bytes: u64,
    reservation: Reservation,
    runs: Runs,
}

impl Sorter {
    pub fn new(
        spec: &SortSpec,
        schema: SchemaRef,
        limit: Option<u64>,
        budget: &Arc<MemoryBudget>,
        spill: SpillDir,
    ) -> Result<Self, EngineError> {
        let (converter, columns) = spec.converter(&schema)?;
        let reservation = budget
            .try_reserve(0)
            .ok_or_else(|| super::too_small(budget, 0, "a sort"))?;
        Ok(Self {
            schema,
            converter,
            columns,
            limit,
            batches: Vec::new(),
            rows: Vec::new(),
            held: 0,
            held_bytes: 0,
            reservation,
            runs: Runs::new(spill),
        })
    }

    /// Adds a batch; may sort what is held into a run on disk when memory runs out.
    pub fn push(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let rows = rows_of(&self.converter, &self.columns, &batch)?;
        self.held_bytes += (batch.get_array_memory_size() + rows.size()) as u64;
        self.held += batch.num_rows();
        self.batches.push(batch);
        self.rows.push(rows);
        if let Some(limit) = self.limit {
            // Top-N: never more than twice the limit held; cut back to the limit.
            if self.held as u64 > limit.saturating_mul(2) {
                self.truncate_to(limit)?;
            }
        }
        if !super::grow_to(&mut self.reservation, self.held_bytes)
            && self.held_bytes >= MIN_RUN_BYTES
        {
            self.spill_run()?;
        }
        Ok(())
    }

    /// Keeps only the first `limit` rows held, in order.
    fn truncate_to(&mut self, limit: u64) -> Result<(), EngineError> {
        let mut order = sorted_order(&self.rows);
        order.truncate(limit as usize);
        let mut kept = Vec::new();
        gather(&self.schema, &self.batches, &order, BATCH_ROWS, |b| {
            kept.push(b);
            Ok(())
        })?;
        self.batches.clear();
        self.rows.clear();
        self.held = 0;
        self.held_bytes = 0;
        for batch in kept {
            let rows = rows_of(&self.converter, &self.columns, &batch)?;
            self.held_bytes += (batch.get_array_memory_size() + rows.size()) as u64;
            self.held += batch.num_rows();
            self.batches.push(batch);
            self.rows.push(rows);
        }
        Ok(())
    }

    /// Sorts what is held into a new run on disk.
    fn spill_run(&mut self) -> Result<(), EngineError> {
        let mut order = sorted_order(&self.rows);
        if let Some(limit) = self.limit {
            order.truncate(limit as usize);
        }
        self.runs.write(&self.schema, &self.batches, &order)?;
        self.batches.clear();
        self.rows.clear();
        self.held = 0;
        self.held_bytes = 0;
        self.reservation.shrink_to(0);
        Ok(())
    }

    /// Emits every row in order (at most the limit), in batches of at most [`BATCH_ROWS`].
    pub fn finish(
        mut self,
        mut emit: impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<SpillStats, EngineError> {
        let limit = self.limit.unwrap_or(u64::MAX);
        if self.runs.is_empty() {
            let mut order = sorted_order(&self.rows);
            order.truncate(limit.min(usize::MAX as u64) as usize);
            gather(&self.schema, &self.batches, &order, BATCH_ROWS, &mut emit)?;
            return Ok(self.runs.stats);
        }
        if !self.batches.is_empty() {
            self.spill_run()?;
        }
        self.runs.merge(
            &self.schema,
            &self.converter,
            &self.columns,
            limit,
            &mut self.reservation,
            &mut emit,
        )
    }

    /// Whether runs went to disk.
    #[cfg(test)]
    fn spilled(&self) -> bool {
        !self.runs.is_empty()
    }
}

/// A run is at least this large, even when the budget refuses less (a budget shared by busy
/// operators would otherwise make a run, a file and a merge source, per batch).
pub(crate) const MIN_RUN_BYTES: u64 = 32 << 10;

/// Rows per batch in a run: what each source of a merge holds in memory.
const RUN_BATCH_ROWS: usize = 1024;

/// Most runs merged at once.
const MAX_FAN_IN: usize = 256;

/// Sorted runs on disk (a spill file each, the writer gone once written) and their merge.
pub(crate) struct Runs {
    spill: SpillDir,
    runs: Vec<SegmentFileReader>,
    /// The largest batch of a run in memory: what one source of a merge holds.
    batch_bytes: u64,
    pub stats: SpillStats,
}

impl Runs {
    pub fn new(spill: SpillDir) -> Self {
        Self {
            spill,
            runs: Vec::new(),
            batch_bytes: 0,
            stats: SpillStats::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Writes the rows of `batches` at `order` as a new run.
    pub fn write(
        &mut self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        order: &[(u32, u32)],
    ) -> Result<(), EngineError> {
        let mut run = self.spill.create("run")?;
        gather(schema, batches, order, RUN_BATCH_ROWS, |batch| {
            self.batch_bytes = self.batch_bytes.max(batch.get_array_memory_size() as u64);
            self.stats.written_bytes += run.write(0, &batch)?;
            Ok(())
        })?;
        run.seal()?;
        self.stats.runs += 1;
        self.runs.push(run.into_reader()?);
        Ok(())
    }

    /// Merges every run into one order (at most `limit` rows). `reservation` is grown for the
    /// sources a merge holds (a batch, its key rows and its decoded block each); when it cannot
    /// hold every run, groups of runs are first merged into longer runs (at least two at a
    /// time).
    pub fn merge(
        mut self,
        schema: &SchemaRef,
        converter: &RowConverter,
        columns: &[usize],
        limit: u64,
        reservation: &mut Reservation,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<SpillStats, EngineError> {
        let per_source = 3 * self.batch_bytes.max(1);
        let mut fan_in = self.runs.len().clamp(2, MAX_FAN_IN);
        while fan_in > 2 && !super::grow_to(reservation, fan_in as u64 * per_source) {
            fan_in = (fan_in / 2).max(2);
        }
        while self.runs.len() > fan_in {
            let group: Vec<SegmentFileReader> = self.runs.drain(..fan_in).collect();
            let mut run = self.spill.create("run")?;
            let (mut written, mut batch_bytes) = (0, 0);
            self.stats.read_bytes += merge_readers(
                &group,
                schema,
                converter,
                columns,
                limit,
                RUN_BATCH_ROWS,
                &mut |batch: RecordBatch| {
                    batch_bytes = batch_bytes.max(batch.get_array_memory_size() as u64);
                    written += run.write(0, &batch)?;
                    Ok(())
                },
            )?;
            run.seal()?;
            self.batch_bytes = self.batch_bytes.max(batch_bytes);
            self.stats.written_bytes += written;
            self.stats.runs += 1;
            self.runs.push(run.into_reader()?);
        }
        self.stats.read_bytes += merge_readers(
            &self.runs, schema, converter, columns, limit, BATCH_ROWS, emit,
        )?;
        reservation.shrink_to(0);
        Ok(self.stats)
    }
}

/// Merges the runs of `readers` (partition 0 of their first segment) into one order, in
/// batches of at most `batch_rows`; returns the bytes read.
fn merge_readers(
    readers: &[SegmentFileReader],
    schema: &SchemaRef,
    converter: &RowConverter,
    columns: &[usize],
    limit: u64,
    batch_rows: usize,
    emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
) -> Result<u64, EngineError> {
    let read = std::cell::Cell::new(0);
    let sources = readers
        .iter()
        .map(|reader| batches(reader, 0, 0, &read))
        .collect::<Result<Vec<_>, _>>()?;
    merge(schema, converter, columns, sources, limit, batch_rows, emit)?;
    Ok(read.get())
}

/// The current batch of one sorted source during a merge.
struct Cursor<I> {
    source: I,
    batch: RecordBatch,
    rows: Rows,
    at: usize,
}

/// Merges sorted sources into one order, emitting at most `limit` rows. A binary heap of
/// source indices ordered by each source's current row.
pub(crate) fn merge<I>(
    schema: &SchemaRef,
    converter: &RowConverter,
    columns: &[usize],
    sources: Vec<I>,
    limit: u64,
    batch_rows: usize,
    emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
) -> Result<(), EngineError>
where
    I: Iterator<Item = Result<RecordBatch, EngineError>>,
{
    let advance = |source: &mut I| -> Result<Option<(RecordBatch, Rows)>, EngineError> {
        for batch in source.by_ref() {
            let batch = batch?;
            if batch.num_rows() > 0 {
                let rows = rows_of(converter, columns, &batch)?;
                return Ok(Some((batch, rows)));
            }
        }
        Ok(None)
    };
    let mut cursors: Vec<Cursor<I>> = Vec::new();
    for mut source in sources {
        if let Some((batch, rows)) = advance(&mut source)? {
            cursors.push(Cursor {
                source,
                batch,
                rows,
                at: 0,
            });
        }
    }
    // Out-of-order pieces: the batches the output rows come from, and the rows taken.
    let mut pieces: Vec<RecordBatch> = Vec::new();
    let mut piece_of: Vec<Option<u32>> = vec![None; cursors.len()];
    let mut order: Vec<(u32, u32)> = Vec::with_capacity(batch_rows);
    let less = |cursors: &[Cursor<I>], a: usize, b: usize| {
        let (x, y) = (&cursors[a], &cursors[b]);
        (x.rows.row(x.at), a) < (y.rows.row(y.at), b)
    };
    let mut heap: Vec<usize> = (0..cursors.len()).collect();
    let sift_down = |heap: &mut Vec<usize>, cursors: &[Cursor<I>], mut i: usize| loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut m = i;
        if l < heap.len() && less(cursors, heap[l], heap[m]) {
            m = l;
        }
        if r < heap.len() && less(cursors, heap[r], heap[m]) {
            m = r;
        }
        if m == i {
            break;
        }
        heap.swap(i, m);
        i = m;
    };
    for i in (0..heap.len()).rev() {
        sift_down(&mut heap, &cursors, i);
    }
    let mut emitted = 0u64;
    let flush = |pieces: &mut Vec<RecordBatch>,
                 piece_of: &mut Vec<Option<u32>>,
                 order: &mut Vec<(u32, u32)>,
                 emit: &mut dyn FnMut(RecordBatch) -> Result<(), EngineError>|
     -> Result<(), EngineError> {
        if !order.is_empty() {
            gather(schema, pieces, order, batch_rows, emit)?;
        }
        order.clear();
        pieces.clear();
        piece_of.iter_mut().for_each(|p| *p = None);
        Ok(())
    };
    while let Some(&top) = heap.first() {
        if emitted >= limit {
            break;
        }
        let piece = match piece_of[top] {
            Some(p) => p,
            None => {
                pieces.push(cursors[top].batch.clone());
                piece_of[top] = Some(pieces.len() as u32 - 1);
                pieces.len() as u32 - 1
            }
        };
        order.push((piece, cursors[top].at as u32));
        emitted += 1;
        cursors[top].at += 1;
        if cursors[top].at == cursors[top].batch.num_rows() {
            // The source's next batch becomes a new piece; the old one stays until the flush.
            piece_of[top] = None;
            match advance(&mut cursors[top].source)? {
                Some((batch, rows)) => {
                    let cursor = &mut cursors[top];
                    (cursor.batch, cursor.rows, cursor.at) = (batch, rows, 0);
                }
                None => {
                    let last = heap.len() - 1;
                    heap.swap(0, last);
                    heap.pop();
                }
            }
        }
        if order.len() == batch_rows {
            flush(&mut pieces, &mut piece_of, &mut order, emit)?;
        }
        sift_down(&mut heap, &cursors, 0);
    }
    flush(&mut pieces, &mut piece_of, &mut order, emit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    fn batch(rows: &[(Option<i64>, Option<String>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<(Option<i64>, Option<String>)> {
        let mut out = Vec::new();
        for b in batches {
            let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let s = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                out.push((
                    k.is_valid(i).then(|| k.value(i)),
                    s.is_valid(i).then(|| s.value(i).to_string()),
                ));
            }
        }
        out
    }

    /// The oracle: Rust's sort over the same rows with the same key rules.
    fn oracle(
        mut rows: Vec<(Option<i64>, Option<String>)>,
        keys: &[SortKey],
        limit: Option<u64>,
    ) -> Vec<(Option<i64>, Option<String>)> {
        use std::cmp::Ordering;
        fn cmp_opt<T: Ord>(a: &Option<T>, b: &Option<T>, key: &SortKey) -> Ordering {
            match (a, b) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => {
                    if key.nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (Some(_), None) => {
                    if key.nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (Some(x), Some(y)) => {
                    let o = x.cmp(y);
                    if key.descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
            }
        }
        rows.sort_by(|a, b| {
            keys.iter()
                .map(|k| match k.column.as_str() {
                    "k" => cmp_opt(&a.0, &b.0, k),
                    _ => cmp_opt(&a.1, &b.1, k),
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        if let Some(l) = limit {
            rows.truncate(l as usize);
        }
        rows
    }

    #[test]
    fn sort_keys_parse_and_print() {
        let k = SortKey::try_from("n DESC".to_string()).unwrap();
        assert_eq!((k.descending, k.nulls_first), (true, true));
        let k = SortKey::try_from("n asc nulls first".to_string()).unwrap();
        assert_eq!((k.descending, k.nulls_first), (false, true));
        assert_eq!(k.to_string(), "n asc nulls first");
        assert!(SortKey::try_from("n sideways".to_string()).is_err());
        assert!(SortKey::try_from("".to_string()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any rows, keys and budget (forcing runs on disk or not), with or without a limit:
        /// the sorter gives the oracle's rows in the oracle's key order.
        #[test]
        fn sorter_equals_the_oracle(
            rows in prop::collection::vec(
                (prop::option::weighted(0.8, -5i64..5), prop::option::weighted(0.8, "[a-c]{0,2}")),
                0..3000),
            desc_k in any::<bool>(), nulls_first in any::<bool>(), s_first in any::<bool>(),
            limit in prop::option::of(0u64..50),
            budget_kib in prop::sample::select(vec![64u64, 256, 1 << 20]),
            batch_rows in 1usize..700,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let k = SortKey { column: "k".into(), descending: desc_k, nulls_first };
            let s = SortKey { column: "s".into(), descending: false, nulls_first: false };
            let keys = if s_first { vec![s, k] } else { vec![k, s] };
            let spec = SortSpec { by: keys.clone() };
            let budget = MemoryBudget::new(budget_kib << 10);
            let spill = SpillDir { dir: dir.path().into(), options: Default::default() };
            let mut sorter = Sorter::new(&spec, schema(), limit, &budget, spill).unwrap();
            for chunk in rows.chunks(batch_rows) {
                sorter.push(batch(chunk)).unwrap();
            }
            let spilled = sorter.spilled();
            let mut out = Vec::new();
            sorter.finish(|b| { out.push(b); Ok(()) }).unwrap();
            let got = values(&out);
            let want = oracle(rows.clone(), &keys, limit);
            // Ties may come in any order: compare the keys in order and the rows as multisets
            // when there is no limit (with a limit, ties at the cut may differ).
            let key_of = |r: &(Option<i64>, Option<String>)| (r.0, r.1.clone());
            prop_assert_eq!(got.iter().map(key_of).collect::<Vec<_>>(), want.iter().map(key_of).collect::<Vec<_>>());
            if budget_kib == 64 && rows.len() > 2000 && limit.is_none() {
                prop_assert!(spilled, "a 64 KiB budget spills {} rows", rows.len());
            }
            prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}
