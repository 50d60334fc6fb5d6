//! Sources: text lines, CSV records and Parquet row groups, read from byte-range splits of a
//! file, or of every data file of a folder (a job's folder of parts is the next job's input).
//!
//! A text or CSV split `[start, end)` owns the lines that *start* inside it (Hadoop's `TextInputFormat`
//! rule): it skips the partial line at its start (the previous split reads it to its end) and
//! reads its last line past `end`. So splits can be cut anywhere and every line is read
//! exactly once. CSV records must not contain line breaks inside quotes. A Parquet split owns
//! the row groups whose middle byte is inside it (Spark's rule), so every row group is read
//! once however the splits are cut. Sources read only the columns the job uses (the planner
//! passes a projection): CSV parses and Parquet decodes no other column.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::RowGroupMetaData;
use serde::{Deserialize, Serialize};

use super::BatchError;
use crate::record::{KEY_LEN, RECORD_LEN};
use crate::source::FileSplit;

/// One file of a source, and its length when the job was planned: the splits cover that much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: PathBuf,
    pub len: u64,
}

/// The files a source path names: the file itself, or the data files of a folder — its
/// regular files by name, without those named `.*` or `_*` (Hadoop's and Spark's marker and
/// checksum files: `_SUCCESS`, `.part-00000.crc`) and without subfolders.
pub fn files(path: &Path) -> Result<Vec<SourceFile>, BatchError> {
    let of = |path: PathBuf| -> Result<SourceFile, BatchError> {
        let len = (open(&path)?.metadata())
            .map_err(|e| bad(&path, format!("cannot read: {e}")))?
            .len();
        Ok(SourceFile { path, len })
    };
    if !std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Ok(vec![of(path.to_path_buf())?]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| bad(path, format!("cannot list: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| bad(path, format!("cannot list: {e}")))?;
        let name = entry.file_name();
        let hidden = name
            .as_encoded_bytes()
            .first()
            .is_some_and(|b| matches!(b, b'.' | b'_'));
        if !hidden && !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            names.push(entry.path());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(bad(path, "is a folder without data files".into()));
    }
    names.into_iter().map(of).collect()
}

/// Rows per batch a source produces.
pub const BATCH_ROWS: usize = 8192;

/// What a source reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// One `line` column (UTF-8, the line break removed).
    Text { path: PathBuf },
    /// Records with a schema inferred from the first lines (Int64, Float64, Boolean, Utf8),
    /// or given: `schema = ["id Int64", "name Utf8", "day Date32"]` (a name and an Arrow type
    /// per column, in file order; a header line is then skipped, not read).
    Csv {
        path: PathBuf,
        #[serde(default = "yes")]
        header: bool,
        #[serde(default = "comma")]
        delimiter: char,
        #[serde(default)]
        on_error: OnError,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Vec<String>>,
    },
    /// Parquet: the file's schema, strings and binaries as `Utf8` and `Binary` (also when
    /// written as views, large or dictionary-encoded); row groups are the splits.
    Parquet { path: PathBuf },
    /// Sort Benchmark records (gensort's binary format): `key` (10 bytes) and `value` (90
    /// bytes), both `FixedSizeBinary`.
    Records { path: PathBuf },
}

fn yes() -> bool {
    true
}

fn comma() -> char {
    ','
}

impl SourceSpec {
    pub fn path(&self) -> &Path {
        match self {
            Self::Text { path }
            | Self::Csv { path, .. }
            | Self::Parquet { path }
            | Self::Records { path } => path,
        }
    }

    /// The format's name, for `explain`.
    pub fn format(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Csv { .. } => "csv",
            Self::Parquet { .. } => "parquet",
            Self::Records { .. } => "records",
        }
    }

    pub(crate) fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            Self::Text { path }
            | Self::Csv { path, .. }
            | Self::Parquet { path }
            | Self::Records { path } => path,
        }
    }

    /// The source's files and their rows' schema: `line` for text, inferred from the first
    /// 1000 records for CSV (over a folder's files in order), the footer's for Parquet (every
    /// file of a folder must have the first one's).
    pub fn plan(&self) -> Result<(Vec<SourceFile>, SchemaRef), BatchError> {
        let files = files(self.path())?;
        let schema = match self {
            Self::Csv { schema: None, .. } if files.len() > 1 => self.csv_schema(&files)?,
            _ => self.schema_of(&files[0].path)?,
        };
        if matches!(self, Self::Parquet { .. } | Self::Records { .. }) {
            for file in &files[1..] {
                let other = self.schema_of(&file.path)?;
                if other != schema {
                    return Err(bad(
                        &file.path,
                        format!(
                            "has columns [{}], the folder's first file [{}]",
                            super::plan::describe(&other),
                            super::plan::describe(&schema)
                        ),
                    ));
                }
            }
        }
        Ok((files, schema))
    }

    /// The schema of one CSV folder: each file's inferred from its records until 1000 are
    /// read, widened where files differ (Int64 and Float64 to Float64, others to Utf8; a file
    /// with no records, such as a part whose subtask got no rows, has no say in the types);
    /// every file's header must name the same columns. Empty files are skipped.
    fn csv_schema(&self, files: &[SourceFile]) -> Result<SchemaRef, BatchError> {
        let Self::Csv {
            header, delimiter, ..
        } = self
        else {
            unreachable!("a CSV source")
        };
        let mut left = 1000;
        let mut merged: Option<(PathBuf, Vec<Field>)> = None;
        let names = |f: &[Field]| f.iter().map(|f| f.name().clone()).collect::<Vec<_>>();
        for file in files.iter().filter(|f| f.len > 0) {
            // Past the first 1000 records only the header is read (its names checked).
            let (schema, read) = format(*header, *delimiter)?
                .infer_schema(BufReader::new(open(&file.path)?), Some(left))
                .map_err(|e| bad(&file.path, format!("cannot read a CSV schema: {e}")))?;
            let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            let Some((first, known)) = &mut merged else {
                merged = Some((file.path.clone(), fields));
                left -= read;
                continue;
            };
            if names(known) != names(&fields) {
                return Err(bad(
                    &file.path,
                    format!(
                        "has CSV columns {:?}, the folder's first file {} has {:?}",
                        names(&fields),
                        first.display(),
                        names(known)
                    ),
                ));
            }
            if read > 0 {
                for (k, f) in known.iter_mut().zip(&fields) {
                    let wider = match (k.data_type(), f.data_type()) {
                        (DataType::Null, t) | (t, DataType::Null) => t.clone(),
                        (a, b) if a == b => a.clone(),
                        (DataType::Int64, DataType::Float64)
                        | (DataType::Float64, DataType::Int64) => DataType::Float64,
                        _ => DataType::Utf8,
                    };
                    *k = k.clone().with_data_type(wider).with_nullable(true);
                }
            }
            left -= read;
        }
        let Some((path, fields)) = merged else {
            return Err(bad(self.path(), "holds only empty files".into()));
        };
        if fields.is_empty() {
            return Err(bad(&path, "no CSV columns (is the file empty?)".into()));
        }
        // A column no file had a value in: text.
        let fields = fields.into_iter().map(|f| match f.data_type() {
            DataType::Null => f.with_data_type(DataType::Utf8).with_nullable(true),
            _ => f,
        });
        Ok(Arc::new(Schema::new(fields.collect::<Vec<_>>())))
    }

    /// The schema of one file of the source.
    fn schema_of(&self, path: &Path) -> Result<SchemaRef, BatchError> {
        match self {
            Self::Text { .. } => {
                open(path)?;
                Ok(Arc::new(Schema::new(vec![Field::new(
                    "line",
                    DataType::Utf8,
                    false,
                )])))
            }
            Self::Csv {
                schema: Some(columns),
                ..
            } => {
                open(path)?;
                given_schema(columns)
            }
            Self::Csv {
                header, delimiter, ..
            } => {
                let file = open(path)?;
                let (schema, _) = format(*header, *delimiter)?
                    .infer_schema(BufReader::new(file), Some(1000))
                    .map_err(|e| bad(path, format!("cannot read a CSV schema: {e}")))?;
                if schema.fields().is_empty() {
                    return Err(bad(path, "no CSV columns (is the file empty?)".into()));
                }
                Ok(Arc::new(schema))
            }
            Self::Records { .. } => {
                let len = (open(path)?.metadata())
                    .map_err(|e| bad(path, format!("cannot read: {e}")))?
                    .len();
                if len % RECORD_LEN as u64 != 0 {
                    return Err(bad(
                        path,
                        format!("{len} bytes is not a whole number of {RECORD_LEN}-byte records"),
                    ));
                }
                Ok(records_schema())
            }
            Self::Parquet { .. } => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
                    .map_err(|e| not_parquet(path, e))?;
                let fields = builder
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| Field::new(f.name(), plain_type(f.data_type()), f.is_nullable()));
                Ok(Arc::new(Schema::new(fields.collect::<Vec<_>>())))
            }
        }
    }

    /// Calls `emit` with the rows of `split` of file `path` (one of the source's), in
    /// batches of at most [`BATCH_ROWS`]: the columns of `schema` (from [`plan`](Self::plan))
    /// at `projection`, or all of them.
    pub fn read(
        &self,
        path: &Path,
        schema: &SchemaRef,
        projection: Option<&[usize]>,
        split: FileSplit,
        mut emit: impl FnMut(RecordBatch) -> Result<(), BatchError>,
    ) -> Result<u64, BatchError> {
        match self {
            Self::Parquet { .. } => {
                return read_parquet(path, schema, projection, split, emit).map(|()| 0)
            }
            Self::Records { .. } => return read_records(path, projection, split, emit).map(|()| 0),
            _ => {}
        }
        let mut skipped = 0;
        let mut lines = SplitLines::open(path, split)?;
        match self {
            Self::Text { .. } => {
                let mut batch: Vec<String> = Vec::with_capacity(BATCH_ROWS);
                while let Some(line) = lines.next_line()? {
                    let text = std::str::from_utf8(line).map(str::to_owned);
                    let Ok(text) = text else {
                        let number = line_number(path, lines.line_start)?;
                        return Err(bad(path, format!("line {number} is not UTF-8")));
                    };
                    batch.push(text);
                    if batch.len() == BATCH_ROWS {
                        emit(text_batch(schema, std::mem::take(&mut batch))?)?;
                    }
                }
                if !batch.is_empty() {
                    emit(text_batch(schema, batch)?)?;
                }
            }
            Self::Csv {
                header,
                delimiter,
                on_error,
                ..
            } => {
                if *header && split.start == 0 {
                    lines.next_line()?;
                }
                let csv = Csv {
                    path,
                    schema,
                    projection,
                    delimiter: delimiter_byte(*delimiter)?,
                };
                // Whole lines of up to ~4 MiB at a time through the Arrow CSV parser.
                let mut chunk = Vec::with_capacity(CSV_CHUNK_BYTES);
                loop {
                    chunk.clear();
                    let Some(start) = lines.next_lines(&mut chunk, CSV_CHUNK_BYTES)? else {
                        break;
                    };
                    let batches = match csv.parse(&chunk) {
                        Ok(batches) => batches,
                        Err(_) => csv.parse_good_lines(&chunk, start, *on_error, &mut skipped)?,
                    };
                    for batch in batches {
                        emit(batch)?;
                    }
                }
            }
            Self::Parquet { .. } | Self::Records { .. } => unreachable!("read above"),
        }
        Ok(skipped)
    }
}

/// What to do with a CSV record that does not parse: fail the job (naming the file and the
/// line) or skip it and count it (`on_error = "skip"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Fail,
    Skip,
}

/// How a CSV source's lines are parsed.
struct Csv<'a> {
    path: &'a Path,
    schema: &'a SchemaRef,
    projection: Option<&'a [usize]>,
    delimiter: u8,
}

impl Csv<'_> {
    /// The records of whole lines, or the parser's first error.
    fn parse(&self, lines: &[u8]) -> Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
        let mut reader = arrow_csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(BATCH_ROWS);
        if let Some(p) = self.projection {
            reader = reader.with_projection(p.to_vec());
        }
        reader.build(lines)?.collect()
    }

    /// A chunk with a bad record in it (its first line at byte `start` of the file): the
    /// records of its good lines, each bad one skipped and counted, or the first one's error
    /// with its line number. The lines are halved until the bad ones are alone (a few parses
    /// per bad line, not one per line).
    fn parse_good_lines(
        &self,
        chunk: &[u8],
        start: u64,
        on_error: OnError,
        skipped: &mut u64,
    ) -> Result<Vec<RecordBatch>, BatchError> {
        // Byte offset in `chunk` of each line's start, and the chunk's end (each line of the
        // chunk is one line of the file).
        let mut bounds: Vec<usize> = vec![0];
        bounds.extend(
            (chunk.iter().enumerate())
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let mut batches = Vec::new();
        let mut pending = vec![(0, bounds.len() - 1)]; // Line ranges, the next one last.
        while let Some((from, to)) = pending.pop() {
            let lines = &chunk[bounds[from]..bounds[to]];
            let e = match self.parse(lines) {
                Ok(good) => {
                    batches.extend(good);
                    continue;
                }
                Err(e) if to - from == 1 => e,
                Err(_) => {
                    let middle = from + (to - from) / 2;
                    pending.push((middle, to));
                    pending.push((from, middle));
                    continue;
                }
            };
            let number = || Ok::<_, BatchError>(line_number(self.path, start)? + from as u64);
            if on_error == OnError::Fail {
                let why = without_position(&e);
                return Err(bad(
                    self.path,
                    format!("line {}: bad CSV record: {why}", number()?),
                ));
            }
            if *skipped == 0 {
                tracing::warn!(
                    "{}: line {}: bad CSV record skipped (on_error = \"skip\"; the split's further ones are counted): {}",
                    self.path.display(),
                    number()?,
                    without_position(&e)
                );
            }
            *skipped += 1;
        }
        Ok(batches)
    }
}

/// The parser's message without its own line count (it saw one line).
fn without_position(e: &arrow_schema::ArrowError) -> String {
    let message = e.to_string();
    match message.find(" at line ") {
        Some(at) => {
            let rest = &message[at + " at line ".len()..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            format!("{}{}", &message[..at], &rest[digits..])
        }
        None => message,
    }
}

/// The 1-based number of the line that starts at byte `offset` (counted on the error path
/// only: splits know byte offsets, not line numbers).
fn line_number(path: &Path, offset: u64) -> Result<u64, BatchError> {
    let file = open(path)?;
    let mut reader = BufReader::with_capacity(1 << 20, std::io::Read::take(file, offset));
    let mut newlines = 1;
    loop {
        let buffer = reader
            .fill_buf()
            .map_err(|e| bad(path, format!("cannot read: {e}")))?;
        if buffer.is_empty() {
            return Ok(newlines);
        }
        newlines += buffer.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buffer.len();
        reader.consume(n);
    }
}

/// A schema given as `"name Type"` entries; errors name the entry.
fn given_schema(columns: &[String]) -> Result<SchemaRef, BatchError> {
    let field = |column: &String| {
        let bad = |why: String| BatchError::Spec {
            what: format!("CSV schema entry {column:?}: {why}"),
        };
        let (name, data_type) = (column.trim().split_once(char::is_whitespace))
            .ok_or_else(|| bad("write a name and a type, as \"price Float64\"".into()))?;
        let data_type: DataType = (data_type.trim().parse()).map_err(|e| {
            bad(format!(
                "{e} (Arrow types: Int64, Float64, Utf8, Boolean, Date32, …)"
            ))
        })?;
        Ok(Field::new(name, data_type, true))
    };
    let fields = columns
        .iter()
        .map(field)
        .collect::<Result<Vec<_>, BatchError>>()?;
    if fields.is_empty() {
        return Err(BatchError::Spec {
            what: "a CSV schema needs at least one column".into(),
        });
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The schema of Sort Benchmark records.
pub fn records_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::FixedSizeBinary(KEY_LEN as i32), false),
        Field::new(
            "value",
            DataType::FixedSizeBinary((RECORD_LEN - KEY_LEN) as i32),
            false,
        ),
    ]))
}

/// The records that start in `split`, [`BATCH_ROWS`] at a time.
fn read_records(
    path: &Path,
    projection: Option<&[usize]>,
    split: FileSplit,
    mut emit: impl FnMut(RecordBatch) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    use arrow_array::FixedSizeBinaryArray;
    let file = open(path)?;
    let record = RECORD_LEN as u64;
    let start = split.start.next_multiple_of(record);
    let end = split.end.next_multiple_of(record);
    let schema = records_schema();
    let columns = projection.map_or(vec![0, 1], <[usize]>::to_vec);
    let schema = Arc::new(
        schema
            .project(&columns)
            .map_err(BatchError::arrow("project"))?,
    );
    let mut buffer = vec![0u8; BATCH_ROWS * RECORD_LEN];
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(buffer.len());
        let got = read_full(&file, &mut buffer[..want], at)
            .map_err(|e| bad(path, format!("read failed at byte {at}: {e}")))?;
        let got = got - got % RECORD_LEN;
        if got == 0 {
            break; // The file ends inside the split.
        }
        let records = buffer[..got].chunks_exact(RECORD_LEN);
        // Each column's bytes in one buffer: no allocation per record.
        let arrays = columns.iter().map(|&c| {
            let (range, width) = match c {
                0 => (0..KEY_LEN, KEY_LEN),
                _ => (KEY_LEN..RECORD_LEN, RECORD_LEN - KEY_LEN),
            };
            let mut bytes = Vec::with_capacity(got / RECORD_LEN * width);
            records
                .clone()
                .for_each(|r| bytes.extend_from_slice(&r[range.clone()]));
            FixedSizeBinaryArray::try_new(width as i32, bytes.into(), None)
                .map(|a| Arc::new(a) as arrow_array::ArrayRef)
        });
        let arrays = arrays
            .collect::<Result<Vec<_>, _>>()
            .map_err(BatchError::arrow("records"))?;
        emit(RecordBatch::try_new(schema.clone(), arrays).map_err(BatchError::arrow("records"))?)?;
        at += got as u64;
    }
    Ok(())
}

/// Reads up to `buffer.len()` bytes at `offset`; fewer only at the end of the file.
fn read_full(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The row groups of `split` (those whose middle byte is in it), the projected columns only.
fn read_parquet(
    path: &Path,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
    split: FileSplit,
    mut emit: impl FnMut(RecordBatch) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    // Strings and binaries decoded as the planned (plain) types, whatever the writer's hint.
    let options = ArrowReaderOptions::new().with_schema(schema.clone());
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(open(path)?, options)
        .map_err(|e| not_parquet(path, e))?;
    let groups: Vec<usize> = (builder.metadata().row_groups().iter().enumerate())
        .filter(|(_, g)| (split.start..split.end).contains(&middle(g)))
        .map(|(i, _)| i)
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let mask = match projection {
        Some(p) => ProjectionMask::roots(builder.parquet_schema(), p.iter().copied()),
        None => ProjectionMask::all(),
    };
    let planned = match projection {
        Some(p) => Arc::new(schema.project(p).map_err(BatchError::arrow("project"))?),
        None => schema.clone(),
    };
    let reader = builder
        .with_row_groups(groups)
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(path, e.to_string()))?;
    // The reader returns the projected columns in file order; `order` puts them in the
    // projection's.
    let mut sorted = projection.map(<[usize]>::to_vec).unwrap_or_default();
    sorted.sort_unstable();
    let order: Option<Vec<usize>> = projection.map(|p| {
        p.iter()
            .map(|i| sorted.binary_search(i).unwrap_or_default())
            .collect()
    });
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, format!("corrupt Parquet data: {e}")))?;
        let columns = match &order {
            Some(order) => order.iter().map(|&i| batch.column(i).clone()).collect(),
            None => batch.columns().to_vec(),
        };
        // The planned schema (no writer metadata), so that batches of all files concatenate.
        let batch = RecordBatch::try_new(planned.clone(), columns)
            .map_err(|e| bad(path, format!("Parquet column of an unexpected type: {e}")))?;
        emit(batch)?;
    }
    Ok(())
}

/// The middle byte of a row group's column chunks.
fn middle(group: &RowGroupMetaData) -> u64 {
    let ranges = group.columns().iter().map(|c| c.byte_range());
    let start = ranges.clone().map(|(s, _)| s).min().unwrap_or(0);
    let end = ranges.map(|(s, len)| s + len).max().unwrap_or(0);
    start + end.saturating_sub(start) / 2
}

/// The type a Parquet column is read as: views, large and dictionary-encoded strings and
/// binaries as plain ones (what the operators take), anything else as written.
fn plain_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, value) => plain_type(value),
        other => other.clone(),
    }
}

fn not_parquet(path: &Path, e: parquet::errors::ParquetError) -> BatchError {
    bad(path, format!("not a readable Parquet file: {e}"))
}

fn text_batch(schema: &SchemaRef, lines: Vec<String>) -> Result<RecordBatch, BatchError> {
    RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(lines))])
        .map_err(BatchError::arrow("text lines"))
}

fn format(header: bool, delimiter: char) -> Result<arrow_csv::reader::Format, BatchError> {
    Ok(arrow_csv::reader::Format::default()
        .with_header(header)
        .with_delimiter(delimiter_byte(delimiter)?))
}

fn delimiter_byte(delimiter: char) -> Result<u8, BatchError> {
    u8::try_from(delimiter)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| BatchError::Spec {
            what: format!("CSV delimiter {delimiter:?} is not one ASCII character"),
        })
}

fn bad(path: &Path, what: String) -> BatchError {
    BatchError::BadInput {
        file: path.display().to_string(),
        what,
    }
}

/// Opens an input, with an error that names it.
///
/// Only regular files: they are read by splits at any offset. The type is checked before
/// opening, because opening a FIFO for reading waits for a writer.
pub(crate) fn open(path: &Path) -> Result<File, BatchError> {
    let not_regular = || {
        bad(path, "is not a regular file (pipes, FIFOs and devices cannot be split; write the data to a file first)".into())
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    // Replaced by something else between the two calls: checked again on the handle.
    let meta = file
        .metadata()
        .map_err(|e| bad(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// A split's read buffer; tiny in tests, so that lines and chunks straddle its refills.
const READ_BUFFER_BYTES: usize = if cfg!(test) { 61 } else { 1 << 20 };

/// Bytes of whole CSV lines parsed at a time; small in tests for the same reason.
const CSV_CHUNK_BYTES: usize = if cfg!(test) { 200 } else { 4 << 20 };

/// The lines that start inside a split.
struct SplitLines {
    path: PathBuf,
    reader: BufReader<File>,
    /// File offset of the next byte read.
    at: u64,
    /// File offset of the line last returned.
    line_start: u64,
    end: u64,
    line: Vec<u8>,
}

impl SplitLines {
    fn open(path: &Path, split: FileSplit) -> Result<Self, BatchError> {
        let mut file = open(path)?;
        let from = split.start.saturating_sub(1);
        file.seek(SeekFrom::Start(from))
            .map_err(|e| bad(path, format!("cannot seek to byte {from}: {e}")))?;
        let mut lines = Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            at: from,
            line_start: from,
            end: split.end,
            line: Vec::new(),
        };
        if split.start > 0 {
            // The rest of the line that byte `start - 1` is in belongs to the previous split.
            lines.read_line().map_err(|e| bad(path, e.to_string()))?;
        }
        Ok(lines)
    }

    fn read_line(&mut self) -> std::io::Result<usize> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        self.at += n as u64;
        Ok(n)
    }

    /// Appends whole lines of the split to `chunk`, line breaks kept (a `\n` added to a last
    /// line without one), until it holds `max` bytes or the split ends: straight from the
    /// read buffer, a block at a time. Returns the file offset of the first line appended,
    /// or `None` when the split has no more lines.
    fn next_lines(&mut self, chunk: &mut Vec<u8>, max: usize) -> Result<Option<u64>, BatchError> {
        let first = self.at;
        let failed =
            |at: u64, e: std::io::Error| bad(&self.path, format!("read failed at byte {at}: {e}"));
        // Inside a line: it is finished whatever `max` says.
        let mut open = false;
        while open || (chunk.len() < max && self.at < self.end) {
            let buffer = self.reader.fill_buf().map_err(|e| failed(self.at, e))?;
            if buffer.is_empty() {
                if open {
                    chunk.push(b'\n');
                }
                break;
            }
            // The last line of the split is the one holding byte `end - 1`: up to its break.
            let last_line = self.end.saturating_sub(1).saturating_sub(self.at) as usize;
            let take = if last_line < buffer.len() {
                match memchr::memchr(b'\n', &buffer[last_line..]) {
                    Some(i) => last_line + i + 1,
                    None => buffer.len(),
                }
            } else {
                match memchr::memrchr(b'\n', buffer) {
                    Some(i) => i + 1,
                    None => buffer.len(),
                }
            };
            chunk.extend_from_slice(&buffer[..take]);
            open = buffer[take - 1] != b'\n';
            self.reader.consume(take);
            self.at += take as u64;
            if !open && self.at > self.end {
                break;
            }
        }
        Ok((self.at > first).then_some(first))
    }

    /// The next line of the split without its line break, or `None` at the split's end.
    fn next_line(&mut self) -> Result<Option<&[u8]>, BatchError> {
        if self.at >= self.end {
            return Ok(None);
        }
        self.line_start = self.at;
        let n = self.read_line().map_err(|e| {
            bad(
                &self.path,
                format!("read failed at byte {}: {e}", self.line_start),
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        let mut line = self.line.as_slice();
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// However the file is cut into splits, every line is read exactly once, in order.
        #[test]
        fn splits_read_every_line_once(
            lines in prop::collection::vec("[a-z ]{0,12}", 0..60),
            cuts in prop::collection::btree_set(1u64..400, 0..8),
            crlf: bool,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.txt");
            let sep = if crlf { "\r\n" } else { "\n" };
            let text: String = lines.iter().map(|l| format!("{l}{sep}")).collect();
            std::fs::write(&path, &text).unwrap();
            let len = text.len() as u64;
            let mut bounds = vec![0];
            bounds.extend(cuts.into_iter().filter(|&c| c < len));
            bounds.push(len);
            let spec = SourceSpec::Text { path: path.clone() };
            let schema = spec.plan().unwrap().1;
            let mut read = Vec::new();
            for w in bounds.windows(2) {
                spec.read(spec.path(), &schema, None, FileSplit { start: w[0], end: w[1] }, |batch| {
                    let column = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                    read.extend(column.iter().map(|s| s.unwrap().to_string()));
                    Ok(())
                }).unwrap();
            }
            prop_assert_eq!(read, lines);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A CSV file (header, CRLF or not, the last line with or without its break) cut into
        /// splits anywhere: every record read once, in order, however the blocks fall.
        #[test]
        fn csv_splits_read_every_record_once(
            values in prop::collection::vec((0i64..1_000_000, "[a-z]{0,30}"), 0..300),
            cuts in prop::collection::btree_set(1u64..8000, 0..10),
            crlf: bool,
            last_break: bool,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.csv");
            let sep = if crlf { "\r\n" } else { "\n" };
            let mut text = format!("n,s{sep}");
            for (n, w) in &values {
                text.push_str(&format!("{n},x{w}{sep}"));
            }
            if !last_break && !values.is_empty() {
                text.truncate(text.len() - sep.len());
            }
            std::fs::write(&path, &text).unwrap();
            let len = text.len() as u64;
            let mut bounds = vec![0];
            bounds.extend(cuts.into_iter().filter(|&c| c < len));
            bounds.push(len);
            let spec = SourceSpec::Csv { path: path.clone(), header: true, delimiter: ',', on_error: OnError::Fail, schema: Some(vec!["n Int64".into(), "s Utf8".into()]) };
            let schema = spec.plan().unwrap().1;
            let mut read = Vec::new();
            for w in bounds.windows(2) {
                spec.read(spec.path(), &schema, None, FileSplit { start: w[0], end: w[1] }, |batch| {
                    let n = batch.column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
                    let s = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                    read.extend((0..batch.num_rows()).map(|i| (n.value(i), s.value(i)[1..].to_string())));
                    Ok(())
                }).unwrap();
            }
            prop_assert_eq!(read, values);
        }
    }

    /// A Parquet file of `rows` rows in row groups of `group_rows`: `id` Int64, `name` as a
    /// large string (read as Utf8), `unused` Float64; every seventh name null.
    fn parquet_file(path: &Path, rows: i64, group_rows: usize) {
        use arrow_array::{Float64Array, Int64Array, LargeStringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::LargeUtf8, true),
            Field::new("unused", DataType::Float64, false),
        ]));
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group_rows))
            .build();
        let file = File::create(path).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(properties)).unwrap();
        let ids: Vec<i64> = (0..rows).collect();
        let names = ids.iter().map(|i| (i % 7 != 0).then(|| format!("n{i}")));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(names.collect::<LargeStringArray>()),
                Arc::new(Float64Array::from(vec![0.5; rows as usize])),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// However a Parquet file is cut into splits, every row group is read exactly once,
        /// with only the projected columns, strings as Utf8.
        #[test]
        fn parquet_splits_read_every_row_group_once(
            rows in 0i64..3000,
            group_rows in 1usize..700,
            cuts in prop::collection::btree_set(1u64..40_000, 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.parquet");
            parquet_file(&path, rows, group_rows);
            let len = std::fs::metadata(&path).unwrap().len();
            let spec = SourceSpec::Parquet { path: path.clone() };
            let schema = spec.plan().unwrap().1;
            prop_assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
            let mut bounds = vec![0];
            bounds.extend(cuts.into_iter().filter(|&c| c < len));
            bounds.push(len);
            let (mut ids, mut names) = (Vec::new(), Vec::new());
            for w in bounds.windows(2) {
                let split = FileSplit { start: w[0], end: w[1] };
                spec.read(spec.path(), &schema, Some(&[1, 0]), split, |batch| {
                    assert_eq!(batch.num_columns(), 2);
                    assert_eq!(batch.schema().field(0).name(), "name");
                    let id = batch.column(1).as_any().downcast_ref::<arrow_array::Int64Array>();
                    ids.extend(id.unwrap().values().iter().copied());
                    let name = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                    names.extend(name.iter().map(|n| n.map(str::to_string)));
                    Ok(())
                }).unwrap();
            }
            prop_assert_eq!(ids, (0..rows).collect::<Vec<_>>());
            let expected: Vec<_> = (0..rows).map(|i| (i % 7 != 0).then(|| format!("n{i}"))).collect();
            prop_assert_eq!(names, expected);
        }
    }

    #[test]
    fn a_file_that_is_not_parquet_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        parquet_file(&path, 1000, 100);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let spec = SourceSpec::Parquet { path: path.clone() };
        let error = spec.plan().unwrap_err().to_string();
        assert!(
            error.contains("t.parquet") && error.contains("not a readable Parquet file"),
            "{error}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Bad records anywhere (a wrong type, a missing field, one more field): `fail` names
        /// the first one's line, `skip` drops exactly them and keeps every other record.
        #[test]
        fn bad_csv_records_are_named_or_skipped(
            lines in prop::collection::vec((0u8..12, 0i64..1000), 1..400),
            crlf: bool,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.csv");
            let sep = if crlf { "\r\n" } else { "\n" };
            // The schema comes from the first 1000 records: all good here.
            let mut text = format!("k,v{sep}");
            text.push_str(&(0..1000).map(|i| format!("a,{i}{sep}")).collect::<String>());
            let mut good = (0..1000).collect::<Vec<i64>>();
            let mut first_bad = None;
            for (i, (kind, v)) in lines.iter().enumerate() {
                let line = match kind {
                    0 => format!("a,x{v}"),
                    1 => "a".to_string(),
                    2 => format!("a,{v},{v}"),
                    _ => {
                        good.push(*v);
                        format!("a,{v}")
                    }
                };
                if *kind < 3 && first_bad.is_none() {
                    first_bad = Some(i + 1002);
                }
                text.push_str(&line);
                text.push_str(sep);
            }
            std::fs::write(&path, &text).unwrap();
            let all = FileSplit { start: 0, end: text.len() as u64 };
            let spec = |on_error| SourceSpec::Csv { path: path.clone(), header: true, delimiter: ',', on_error, schema: None };
            let schema = spec(OnError::Fail).plan().unwrap().1;
            let mut read = Vec::new();
            let skipped = spec(OnError::Skip).read(&path, &schema, Some(&[1]), all, |batch| {
                let v = batch.column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
                read.extend(v.values().iter().copied());
                Ok(())
            }).unwrap();
            prop_assert_eq!(skipped as usize, 1000 + lines.len() - good.len());
            prop_assert_eq!(read, good);
            let failed = spec(OnError::Fail).read(&path, &schema, None, all, |_| Ok(()));
            match first_bad {
                Some(line) => {
                    let e = failed.unwrap_err().to_string();
                    prop_assert!(e.contains(&format!("t.csv: line {line}: bad CSV record")), "{}", e);
                }
                None => prop_assert_eq!(failed.unwrap(), 0),
            }
        }
    }

    #[test]
    fn csv_schema_is_inferred_and_bad_records_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "k,v,x\na,1,0.5\nb,2,1.5\n").unwrap();
        let spec = SourceSpec::Csv {
            path: path.clone(),
            header: true,
            delimiter: ',',
            on_error: OnError::Fail,
            schema: None,
        };
        let schema = spec.plan().unwrap().1;
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, [DataType::Utf8, DataType::Int64, DataType::Float64]);
        let mut rows = 0;
        spec.read(
            spec.path(),
            &schema,
            None,
            FileSplit { start: 0, end: 22 },
            |b| {
                rows += b.num_rows();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(rows, 2);
        std::fs::write(&path, "k,v,x\na,1,0.5\nb,oops,1.5\n").unwrap();
        let error = spec
            .read(
                &path,
                &schema,
                None,
                FileSplit { start: 0, end: 25 },
                |_| Ok(()),
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("t.csv") && error.contains("oops"), "{error}");
    }
}
