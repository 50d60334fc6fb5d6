//! A record batch as the bytes of one exchange buffer: an Arrow IPC stream (schema, one
//! batch, end). Spilled and blocking partitions store these bytes in the segment-file block
//! format like any other payload (crc32c per block, lz4 when it pays).

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;

use super::BatchError;

/// The IPC bytes of `batch`.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, BatchError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())
        .map_err(BatchError::arrow("encode a batch"))?;
    writer
        .write(batch)
        .map_err(BatchError::arrow("encode a batch"))?;
    writer
        .into_inner()
        .map_err(BatchError::arrow("encode a batch"))
}

/// The batches in `bytes` (as [`encode`] wrote them).
pub fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>, BatchError> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(BatchError::arrow("decode a batch"))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(BatchError::arrow("decode a batch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn batches_round_trip_with_nulls() {
        let batch = RecordBatch::try_from_iter([
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("")])) as _,
            ),
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(1), Some(-2), None])) as _,
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![None, Some(0.5), Some(-1e9)])) as _,
            ),
        ])
        .unwrap();
        let bytes = encode(&batch).unwrap();
        assert_eq!(decode(&bytes).unwrap(), vec![batch]);
        assert!(
            decode(&bytes[..bytes.len() / 2]).is_err(),
            "a cut batch is an error"
        );
    }
}
