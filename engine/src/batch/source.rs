//! Sources: text lines and CSV records read from byte-range splits of a file.
//!
//! A split `[start, end)` owns the lines that *start* inside it (Hadoop's `TextInputFormat`
//! rule): it skips the partial line at its start (the previous split reads it to its end) and
//! reads its last line past `end`. So splits can be cut anywhere and every line is read
//! exactly once. CSV records must not contain line breaks inside quotes.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::BatchError;
use crate::source::FileSplit;

/// Rows per batch a source produces.
pub const BATCH_ROWS: usize = 8192;

/// What a source reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// One `line` column (UTF-8, the line break removed).
    Text { path: PathBuf },
    /// Records with a schema inferred from the first lines (Int64, Float64, Boolean, Utf8).
    Csv {
        path: PathBuf,
        #[serde(default = "yes")]
        header: bool,
        #[serde(default = "comma")]
        delimiter: char,
    },
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
            Self::Text { path } | Self::Csv { path, .. } => path,
        }
    }

    pub(crate) fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            Self::Text { path } | Self::Csv { path, .. } => path,
        }
    }

    /// The rows' schema: `line` for text, inferred from up to 1000 records for CSV.
    pub fn schema(&self) -> Result<SchemaRef, BatchError> {
        match self {
            Self::Text { path } => {
                open(path)?;
                Ok(Arc::new(Schema::new(vec![Field::new(
                    "line",
                    DataType::Utf8,
                    false,
                )])))
            }
            Self::Csv {
                path,
                header,
                delimiter,
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
        }
    }

    /// Calls `emit` with the rows of `split`, in batches of at most [`BATCH_ROWS`].
    pub fn read(
        &self,
        schema: &SchemaRef,
        split: FileSplit,
        mut emit: impl FnMut(RecordBatch) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let path = self.path();
        let mut lines = SplitLines::open(path, split)?;
        match self {
            Self::Text { .. } => {
                let mut batch: Vec<String> = Vec::with_capacity(BATCH_ROWS);
                while let Some(line) = lines.next_line()? {
                    let text = std::str::from_utf8(line).map(str::to_owned);
                    let text = text.map_err(|_| {
                        bad(
                            path,
                            format!("line at byte {} is not UTF-8", lines.line_start),
                        )
                    })?;
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
                header, delimiter, ..
            } => {
                if *header && split.start == 0 {
                    lines.next_line()?;
                }
                // Whole lines of up to ~4 MiB at a time through the Arrow CSV parser.
                let mut chunk = Vec::with_capacity(4 << 20);
                loop {
                    let chunk_start = lines.position();
                    chunk.clear();
                    while chunk.len() < 4 << 20 {
                        match lines.next_line()? {
                            Some(line) => {
                                chunk.extend_from_slice(line);
                                chunk.push(b'\n');
                            }
                            None => break,
                        }
                    }
                    if chunk.is_empty() {
                        break;
                    }
                    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                        .with_header(false)
                        .with_delimiter(delimiter_byte(*delimiter)?)
                        .with_batch_size(BATCH_ROWS)
                        .build(chunk.as_slice())
                        .map_err(|e| bad(path, e.to_string()))?;
                    for batch in reader {
                        let batch = batch.map_err(|e| {
                            bad(
                                path,
                                format!("bad CSV record in the lines from byte {chunk_start}: {e}"),
                            )
                        })?;
                        emit(batch)?;
                    }
                }
            }
        }
        Ok(())
    }
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
            reader: BufReader::with_capacity(1 << 20, file),
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

    fn position(&self) -> u64 {
        self.at
    }

    fn read_line(&mut self) -> std::io::Result<usize> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        self.at += n as u64;
        Ok(n)
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
            let schema = spec.schema().unwrap();
            let mut read = Vec::new();
            for w in bounds.windows(2) {
                spec.read(&schema, FileSplit { start: w[0], end: w[1] }, |batch| {
                    let column = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                    read.extend(column.iter().map(|s| s.unwrap().to_string()));
                    Ok(())
                }).unwrap();
            }
            prop_assert_eq!(read, lines);
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
        };
        let schema = spec.schema().unwrap();
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, [DataType::Utf8, DataType::Int64, DataType::Float64]);
        let mut rows = 0;
        spec.read(&schema, FileSplit { start: 0, end: 22 }, |b| {
            rows += b.num_rows();
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, 2);
        std::fs::write(&path, "k,v,x\na,1,0.5\nb,oops,1.5\n").unwrap();
        let error = spec
            .read(&schema, FileSplit { start: 0, end: 25 }, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("t.csv") && error.contains("oops"), "{error}");
    }
}
