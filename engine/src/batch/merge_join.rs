//! The sort-merge join (`strategy = "sort_merge"`, Spark's sort-merge join): the joins of
//! [`HashJoin`](super::join::HashJoin) — inner, left, semi, anti, a null key matching
//! nothing, the same output — found by sorting both sides on their keys and merging them.
//!
//! Rows with a null key are set aside as they arrive (a right one can match nothing; a left one
//! is unmatched, emitted at once by a left or anti join). The others go into one [`Sorter`]
//! per side (keys ascending, nulls last), both under the join's budget and spilling sorted
//! runs when it refuses. At the end the right side is sorted and kept as a stream the merge
//! pulls: in memory while the budget grants it, else in a spill file. The left sorter then
//! emits its rows in order, and each of its batches is merged with the right stream: the
//! right rows of one key (a group) are kept for every left row of that key; a group the
//! budget refuses (one giant key) goes to a spill file, read again for each left batch of the
//! key.

use std::cell::Cell;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_row::{OwnedRow, Row, RowConverter, Rows};
use arrow_schema::{Schema, SchemaRef};
use shuffle::spill::SegmentFileReader;

use super::join::{key_columns, valid_keys, JoinKind, JoinOutput, JoinSpec};
use super::sort::{rows_of, SortKey, SortSpec, Sorter, MIN_RUN_BYTES};
use super::source::BATCH_ROWS;
use super::spill::{batches, BatchFile, SpillDir, SpillStats};
use super::BatchError;
use crate::memory::{MemoryBudget, Reservation};
use crate::EngineError;

/// A sort-merge join in progress; see the module documentation.
pub(crate) struct SortMergeJoin {
    out: JoinOutput,
    /// Key rows of either side (the key types are equal), in the sorters' order.
    converter: RowConverter,
    left_keys: Vec<usize>,
    right_keys: Vec<usize>,
    left: Sorter,
    right: Sorter,
    /// The sorted right side while it is held in memory.
    reservation: Reservation,
    /// The right rows of one key while they are held in memory.
    group_reservation: Reservation,
    spill: SpillDir,
}

impl SortMergeJoin {
    pub fn new(
        spec: &JoinSpec,
        left: SchemaRef,
        right: SchemaRef,
        budget: &Arc<MemoryBudget>,
        spill: SpillDir,
    ) -> Result<Self, EngineError> {
        let out = JoinOutput::new(spec, &left, &right)?;
        let (left_keys, right_keys) = key_columns(spec, &left, &right)?;
        let ascending = |keys: &[String]| SortSpec {
            by: keys
                .iter()
                .map(|k| SortKey {
                    column: k.clone(),
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        };
        let (left_order, right_order) = (ascending(&spec.on), ascending(spec.right_keys()));
        let (converter, _) = left_order.converter(&left)?;
        let reserve = || {
            budget
                .try_reserve(0)
                .ok_or_else(|| super::too_small(budget, 0, "a join"))
        };
        Ok(Self {
            out,
            converter,
            left_keys,
            right_keys,
            left: Sorter::new(&left_order, left, None, budget, spill.clone())?,
            right: Sorter::new(&right_order, right, None, budget, spill.clone())?,
            reservation: reserve()?,
            group_reservation: reserve()?,
            spill,
        })
    }

    /// Adds a batch of the right side (rows with a null key are dropped: they match nothing).
    pub fn build(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        let (keyed, _) = split_null_keys(batch, &self.right_keys)?;
        self.right.push(keyed)
    }

    /// Adds a batch of the left side; emits its rows with a null key now when the join owes
    /// them (left, anti).
    pub fn probe(
        &mut self,
        batch: RecordBatch,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let (keyed, null_keys) = split_null_keys(batch, &self.left_keys)?;
        self.left.push(keyed)?;
        match null_keys {
            Some(rows) if matches!(self.out.kind, JoinKind::Left | JoinKind::Anti) => {
                let all: Vec<u32> = (0..rows.num_rows() as u32).collect();
                emit(self.out.unmatched(&rows, &all)?)
            }
            _ => Ok(()),
        }
    }

    /// Sorts both sides and merges them, emitting every output row.
    pub fn finish(
        self,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<SpillStats, EngineError> {
        let Self {
            out,
            converter,
            left_keys,
            right_keys,
            left,
            right,
            mut reservation,
            group_reservation,
            spill,
        } = self;
        let mut stats = SpillStats::default();
        let sorted = sorted_right(right, &mut reservation, &spill, &mut stats)?;
        let read = Cell::new(0);
        let reader;
        type Source<'a> = Box<dyn Iterator<Item = Result<RecordBatch, EngineError>> + 'a>;
        let (source, from_file): (Source, bool) = match sorted {
            Sorted::Memory(held) => (Box::new(held.into_iter().map(Ok)), false),
            Sorted::File(file) => {
                reader = file;
                (Box::new(batches(&reader, 0, 0, &read)?.fuse()), true)
            }
        };
        let mut merge = Merge {
            out: &out,
            converter: &converter,
            right_keys: &right_keys,
            right: Cursor {
                source,
                batch: RecordBatch::new_empty(Arc::new(Schema::empty())),
                rows: converter.empty_rows(0, 0),
                at: 0,
            },
            group: Group::default(),
            from_file,
            reservation: group_reservation,
            spill: &spill,
            read: &read,
            stats: SpillStats::default(),
        };
        let left_stats = left.finish(|batch| {
            let rows = rows_of(&converter, &left_keys, &batch)?;
            merge.left_batch(&batch, &rows, &mut *emit)
        })?;
        stats.add(left_stats);
        stats.add(merge.stats);
        drop(merge);
        stats.read_bytes += read.get();
        Ok(stats)
    }
}

/// `batch` split into its rows with every key set and (when there are any) the others.
fn split_null_keys(
    batch: RecordBatch,
    keys: &[usize],
) -> Result<(RecordBatch, Option<RecordBatch>), EngineError> {
    let valid = valid_keys(&batch, keys);
    if valid.iter().all(|&v| v) {
        return Ok((batch, None));
    }
    let filter = |keep: BooleanArray| {
        arrow_select::filter::filter_record_batch(&batch, &keep)
            .map_err(BatchError::arrow("join null keys"))
    };
    let null_keys = filter(valid.iter().map(|&v| !v).collect::<Vec<_>>().into())?;
    Ok((filter(valid.into())?, Some(null_keys)))
}

/// The sorted right side.
enum Sorted {
    Memory(Vec<RecordBatch>),
    File(SegmentFileReader),
}

/// Sorts the right side and keeps it: in memory while `reservation` grows, else in a spill
/// file (what was held goes first).
fn sorted_right(
    right: Sorter,
    reservation: &mut Reservation,
    spill: &SpillDir,
    stats: &mut SpillStats,
) -> Result<Sorted, EngineError> {
    let (mut held, mut held_bytes, mut written) = (Vec::new(), 0, 0);
    let mut file: Option<BatchFile> = None;
    let sorter_stats = right.finish(|batch| {
        if let Some(file) = &mut file {
            written += file.write(0, &batch)?;
            return Ok(());
        }
        held_bytes += batch.get_array_memory_size() as u64;
        held.push(batch);
        if super::grow_to(reservation, held_bytes) {
            return Ok(());
        }
        reservation.shrink_to(0);
        let file = file.insert(spill.create("join-right")?);
        for batch in held.drain(..) {
            written += file.write(0, &batch)?;
        }
        Ok(())
    })?;
    stats.add(sorter_stats);
    stats.written_bytes += written;
    let Some(mut file) = file else {
        return Ok(Sorted::Memory(held));
    };
    file.seal()?;
    stats.runs += 1;
    Ok(Sorted::File(file.into_reader()?))
}

/// A sorted stream of batches, the current one and its key rows, and the next row.
struct Cursor<'a> {
    source: Box<dyn Iterator<Item = Result<RecordBatch, EngineError>> + 'a>,
    batch: RecordBatch,
    rows: Rows,
    at: usize,
}

/// The right rows of one key.
#[derive(Default)]
struct Group {
    key: Option<OwnedRow>,
    rows: usize,
    /// The rows in memory (slices of the right side's batches)…
    held: Vec<RecordBatch>,
    held_bytes: u64,
    /// …or in a spill file: being written, then read back.
    writing: Option<BatchFile>,
    spilled: Option<SegmentFileReader>,
}

/// The merge of sorted left batches with the sorted right side.
struct Merge<'a> {
    out: &'a JoinOutput,
    converter: &'a RowConverter,
    right_keys: &'a [usize],
    right: Cursor<'a>,
    group: Group,
    /// Whether the right side comes from a file: a group held then takes memory of its own.
    from_file: bool,
    reservation: Reservation,
    spill: &'a SpillDir,
    read: &'a Cell<u64>,
    stats: SpillStats,
}

impl Merge<'_> {
    /// Joins a sorted left batch (`rows`: its key rows) with the right rows of its keys.
    fn left_batch(
        &mut self,
        batch: &RecordBatch,
        rows: &Rows,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let out = self.out;
        let mut pending = Pending::new(out, batch);
        let n = batch.num_rows();
        let mut i = 0;
        while i < n {
            let key = rows.row(i);
            let mut j = i + 1;
            while j < n && rows.row(j) == key {
                j += 1;
            }
            if self.group.key.as_ref().is_none_or(|k| k.row() != key) {
                self.seek(key)?;
            }
            let matched = self.group.rows > 0;
            // Whether each left row is output once, without a right row.
            let once = match out.kind {
                JoinKind::Inner | JoinKind::Left if matched => {
                    for piece in &self.group.held {
                        pending.pairs(piece, i..j, emit)?;
                    }
                    if let Some(reader) = &self.group.spilled {
                        for piece in batches(reader, 0, 0, self.read)? {
                            pending.pairs(&piece?, i..j, emit)?;
                        }
                    }
                    false
                }
                JoinKind::Inner => false,
                JoinKind::Left | JoinKind::Anti => !matched,
                JoinKind::Semi => matched,
            };
            if once {
                for l in i..j {
                    pending.push(l, None, emit)?;
                }
            }
            i = j;
        }
        pending.flush(emit)
    }

    /// Makes the group the right rows of `key`: skips the right rows before it, takes those
    /// equal to it.
    fn seek(&mut self, key: Row<'_>) -> Result<(), EngineError> {
        self.group = Group {
            key: Some(key.owned()),
            ..Group::default()
        };
        self.reservation.shrink_to(0);
        loop {
            let right = &mut self.right;
            if right.at == right.batch.num_rows() {
                let Some(batch) = right.source.next() else {
                    break;
                };
                let batch = batch?;
                right.rows = rows_of(self.converter, self.right_keys, &batch)?;
                (right.batch, right.at) = (batch, 0);
                continue;
            }
            let (rows, n) = (&right.rows, right.batch.num_rows());
            let start = first_not(right.at, n, |r| rows.row(r) < key);
            let end = first_not(start, n, |r| rows.row(r) == key);
            let piece = right.batch.slice(start, end - start);
            right.at = end;
            if end > start {
                self.add(piece)?;
            }
            if end < n {
                break;
            }
        }
        if let Some(mut file) = self.group.writing.take() {
            file.seal()?;
            self.group.spilled = Some(file.into_reader()?);
        }
        Ok(())
    }

    /// Adds right rows of the key to the group: in memory while the budget grants them (a
    /// group smaller than a sort run is held regardless, as a sort holds a run), else in a
    /// spill file. Semi and anti joins only count them.
    fn add(&mut self, piece: RecordBatch) -> Result<(), EngineError> {
        let group = &mut self.group;
        group.rows += piece.num_rows();
        if !self.out.has_right() {
            return Ok(());
        }
        if let Some(file) = &mut group.writing {
            self.stats.written_bytes += file.write(0, &piece)?;
            return Ok(());
        }
        if self.from_file {
            // The slice's share of its batch's memory.
            let of = self.right.batch.num_rows().max(1);
            group.held_bytes +=
                (self.right.batch.get_array_memory_size() * piece.num_rows() / of) as u64;
        }
        group.held.push(piece);
        if group.held_bytes < MIN_RUN_BYTES
            || super::grow_to(&mut self.reservation, group.held_bytes)
        {
            return Ok(());
        }
        let mut file = self.spill.create("join-group")?;
        for piece in group.held.drain(..) {
            self.stats.written_bytes += file.write(0, &piece)?;
        }
        self.stats.runs += 1;
        group.held_bytes = 0;
        group.writing = Some(file);
        self.reservation.shrink_to(0);
        Ok(())
    }
}

/// The first index in `from..to` where `before` turns false (true, then false over the range).
fn first_not(mut from: usize, mut to: usize, before: impl Fn(usize) -> bool) -> usize {
    while from < to {
        let mid = from + (to - from) / 2;
        if before(mid) {
            from = mid + 1;
        } else {
            to = mid;
        }
    }
    from
}

/// Marks a pending output row without a right row.
const NO_ROW: usize = usize::MAX;

/// Output rows of one left batch not yet emitted: left rows, each beside a row of one of the
/// right `pieces` or none.
struct Pending<'a> {
    out: &'a JoinOutput,
    batch: &'a RecordBatch,
    left: Vec<u32>,
    right: Vec<(usize, usize)>,
    pieces: Vec<RecordBatch>,
}

impl<'a> Pending<'a> {
    fn new(out: &'a JoinOutput, batch: &'a RecordBatch) -> Self {
        Self {
            out,
            batch,
            left: Vec::new(),
            right: Vec::new(),
            pieces: Vec::new(),
        }
    }

    /// Every left row of `left` beside every row of `piece`.
    fn pairs(
        &mut self,
        piece: &RecordBatch,
        left: std::ops::Range<usize>,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        self.pieces.push(piece.clone());
        for l in left {
            for r in 0..piece.num_rows() {
                self.push(l, Some(r), emit)?;
            }
        }
        Ok(())
    }

    /// Left row `l` beside row `r` of the last piece (none: nulls, or no right columns).
    fn push(
        &mut self,
        l: usize,
        r: Option<usize>,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        self.left.push(l as u32);
        self.right
            .push(r.map_or((NO_ROW, 0), |r| (self.pieces.len() - 1, r)));
        if self.left.len() == BATCH_ROWS {
            self.flush(emit)?;
        }
        Ok(())
    }

    /// Emits the rows pending; keeps only the last piece (more of its rows may follow).
    fn flush(
        &mut self,
        emit: &mut impl FnMut(RecordBatch) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if !self.left.is_empty() {
            // A null row after the pieces stands for no match.
            let null = self.pieces.len();
            let indices: Vec<(usize, usize)> = self
                .right
                .iter()
                .map(|&(p, r)| if p == NO_ROW { (null, 0) } else { (p, r) })
                .collect();
            let any_null = self.right.iter().any(|&(p, _)| p == NO_ROW);
            let batch = self.out.rows(self.batch, &self.left, |c, t| {
                let null = any_null.then(|| arrow_array::new_null_array(t, 1));
                let arrays: Vec<&dyn Array> = (self.pieces.iter())
                    .map(|p| p.column(c).as_ref())
                    .chain(null.as_deref())
                    .collect();
                arrow_select::interleave::interleave(&arrays, &indices)
            })?;
            emit(batch)?;
            self.left.clear();
            self.right.clear();
        }
        let keep = self.pieces.len().saturating_sub(1);
        self.pieces.drain(..keep);
        Ok(())
    }
}
