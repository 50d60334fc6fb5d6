//! Sampling the key distribution of the input, to choose range boundaries.
//!
//! Reads `blocks` evenly spaced runs of 40 consecutive records (one 4 KB read each) instead
//! of scattered single records: the same information for skewed and sorted inputs, at one
//! read per 40 samples.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::record::{key80, RECORD_LEN};
use crate::EngineError;

const RUN_RECORDS: u64 = 40;

/// About `count` keys from across the file, sorted.
pub fn sample_keys(
    file: &File,
    path: &Path,
    records: u64,
    count: usize,
) -> Result<Vec<u128>, EngineError> {
    let runs = (count as u64).div_ceil(RUN_RECORDS).max(1);
    let mut keys = Vec::with_capacity(count);
    let mut run = vec![0u8; (RUN_RECORDS as usize) * RECORD_LEN];
    if records <= runs * RUN_RECORDS {
        // Small input: every key.
        let mut offset = 0;
        while offset < records {
            let n = (records - offset).min(RUN_RECORDS);
            read(file, path, &mut run[..n as usize * RECORD_LEN], offset)?;
            keys.extend(
                run[..n as usize * RECORD_LEN]
                    .chunks_exact(RECORD_LEN)
                    .map(key80),
            );
            offset += n;
        }
    } else {
        let stride = records / runs;
        for i in 0..runs {
            let first = i * stride + (stride - RUN_RECORDS.min(stride)) / 2;
            let n = RUN_RECORDS.min(records - first);
            read(file, path, &mut run[..n as usize * RECORD_LEN], first)?;
            keys.extend(
                run[..n as usize * RECORD_LEN]
                    .chunks_exact(RECORD_LEN)
                    .map(key80),
            );
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

fn read(file: &File, path: &Path, buf: &mut [u8], first_record: u64) -> Result<(), EngineError> {
    file.read_exact_at(buf, first_record * RECORD_LEN as u64)
        .map_err(|e| EngineError::InputUnreadable {
            path: path.to_path_buf(),
            source: e,
        })
}
