//! Sinks: one part file per subtask of the last stage, in CSV (a header each), Parquet or text
//! (a line per value of the one text column); or one file, written by the one subtask of the
//! last stage: Sort Benchmark records always, the other formats with `one_file`. The part files belong to the job's output
//! target: written under its temp name, published on success, removed on failure.
//!
//! A Parquet part buffers its open row group in memory: the sink grows a reservation with the
//! row group's size and closes the row group when the budget refuses more (or at
//! [`ROW_GROUP_ROWS`] rows), so a sink holds what the budget grants.

use std::sync::{Arc, Mutex};

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::spec::SinkSpec;
use super::BatchError;
use crate::memory::{MemoryBudget, Reservation};
use crate::output::{OutputFile, RangeWriter};
use crate::record::RECORD_LEN;
use crate::EngineError;

/// Rows per Parquet row group at most (Spark and pyarrow write about a million).
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// One part file being written.
pub struct PartWriter {
    format: Format,
    error: SinkError,
    schema: SchemaRef,
    rows: u64,
}

enum Format {
    Csv(arrow_csv::Writer<Output>),
    Parquet {
        writer: ArrowWriter<Output>,
        reservation: Reservation,
    },
    Text(Output),
    Records(Output),
}

impl PartWriter {
    /// Starts `file` (emptied first) as a part of `sink` with rows of `schema`.
    pub fn new(
        sink: &SinkSpec,
        file: &OutputFile,
        schema: SchemaRef,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Self, EngineError> {
        file.truncate()?;
        let error = SinkError::default();
        let output = Output {
            writer: file.writer(1 << 20)?,
            error: error.clone(),
        };
        let format = match sink {
            SinkSpec::Csv { .. } => Format::Csv(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(output),
            ),
            SinkSpec::Parquet { .. } => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                Format::Parquet {
                    writer: ArrowWriter::try_new(output, schema.clone(), Some(properties))
                        .map_err(|e| parquet_error(&error, e))?,
                    reservation: budget
                        .try_reserve(0)
                        .ok_or_else(|| super::too_small(budget, 1 << 20, "a Parquet sink"))?,
                }
            }
            SinkSpec::Text { .. } => Format::Text(output),
            SinkSpec::Records { .. } => Format::Records(output),
        };
        Ok(Self {
            format,
            error,
            schema,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        match &mut self.format {
            Format::Csv(csv) => csv.write(batch).map_err(|e| arrow_error(&self.error, e)),
            Format::Parquet {
                writer,
                reservation,
            } => {
                writer
                    .write(batch)
                    .map_err(|e| parquet_error(&self.error, e))?;
                if !super::grow_to(reservation, writer.memory_size() as u64) {
                    // Out of memory: the row group so far goes to the file.
                    writer.flush().map_err(|e| parquet_error(&self.error, e))?;
                    reservation.shrink_to(0);
                }
                Ok(())
            }
            Format::Text(output) => {
                let column = batch.column(0);
                let text = column
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| BatchError::Spec {
                        what: "a text sink writes one text column".into(),
                    })?;
                let mut lines = Vec::with_capacity(text.value_data().len() + text.len());
                for i in 0..text.len() {
                    if text.is_valid(i) {
                        lines.extend_from_slice(text.value(i).as_bytes());
                    }
                    lines.push(b'\n');
                }
                output.writer.write(&lines)
            }
            Format::Records(output) => {
                let (keys, values) = (batch.column(0), batch.column(1));
                let (Some(keys), Some(values)) = (
                    keys.as_any().downcast_ref::<FixedSizeBinaryArray>(),
                    values.as_any().downcast_ref::<FixedSizeBinaryArray>(),
                ) else {
                    return Err(BatchError::Spec {
                        what: "a records sink writes 10-byte keys and 90-byte values".into(),
                    }
                    .into());
                };
                if keys.null_count() + values.null_count() > 0 {
                    return Err(BatchError::Spec {
                        what: "a records sink cannot write a null key or value".into(),
                    }
                    .into());
                }
                let mut records = Vec::with_capacity(batch.num_rows() * RECORD_LEN);
                for i in 0..batch.num_rows() {
                    records.extend_from_slice(keys.value(i));
                    records.extend_from_slice(values.value(i));
                }
                output.writer.write(&records)
            }
        }
    }

    /// Ends the part (a CSV part without rows still has its header; a Parquet part its
    /// schema); returns the rows written.
    pub fn finish(self) -> Result<u64, EngineError> {
        let output = match self.format {
            Format::Csv(mut csv) => {
                if self.rows == 0 {
                    csv.write(&RecordBatch::new_empty(self.schema))
                        .map_err(|e| arrow_error(&self.error, e))?;
                }
                csv.into_inner()
            }
            Format::Parquet { writer, .. } => writer
                .into_inner()
                .map_err(|e| parquet_error(&self.error, e))?,
            Format::Text(output) | Format::Records(output) => output,
        };
        output.writer.finish()?;
        Ok(self.rows)
    }
}

/// The output's own error kept by the sink (a full disk stays a full disk).
type SinkError = Arc<Mutex<Option<EngineError>>>;

/// The output's own error, else the writer's.
fn arrow_error(error: &SinkError, e: arrow_schema::ArrowError) -> EngineError {
    let kept = error.lock().expect("sink error lock").take();
    kept.unwrap_or_else(|| BatchError::arrow("write CSV")(e).into())
}

fn parquet_error(error: &SinkError, e: parquet::errors::ParquetError) -> EngineError {
    let kept = error.lock().expect("sink error lock").take();
    kept.unwrap_or_else(|| {
        BatchError::Arrow {
            what: "write Parquet",
            reason: e.to_string(),
        }
        .into()
    })
}

/// `io::Write` over an output writer that keeps its error (a full disk stays a full disk).
struct Output {
    writer: RangeWriter,
    error: SinkError,
}

impl std::io::Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.writer.write(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(e) => {
                let message = e.to_string();
                self.error.lock().expect("sink error lock").get_or_insert(e);
                Err(std::io::Error::other(message))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
