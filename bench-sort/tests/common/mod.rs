//! Fixtures shared by the integration tests: the reference vectors folder, hashing, and
//! whole-run generation.
//!
//! The reference vectors (`shared/testdata/gensort`, made by the real gensort/valsort 1.5) live
//! outside this repository. Tests that need the files skip with a message when the folder is
//! missing; every fact about them (hashes, checksums, valsort numbers) is written in the tests.
#![allow(dead_code)] // Each test crate uses a different subset of these helpers.

use std::path::{Path, PathBuf};

use bench_sort::gensort::{self, Format, GenSpec};
use engine::record::RECORD_LEN;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// The reference vectors folder, or `None` (after saying so) when it is not there.
pub fn testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/gensort");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: reference vectors not found at {}", dir.display());
        None
    }
}

/// Reads a reference file that the table in the test says exists.
pub fn read(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The run a reference file name describes: `<mode>_b<start>_n<count>[.sorted].dat` with mode
/// `bin`, `ascii`, `skew` or `skewascii`.
pub fn spec_from_name(name: &str) -> Option<GenSpec> {
    let stem = name.strip_suffix(".dat")?;
    let stem = stem.strip_suffix(".sorted").unwrap_or(stem);
    let mut fields = stem.split('_');
    let (format, skew) = match fields.next()? {
        "bin" => (Format::Binary, false),
        "ascii" => (Format::Ascii, false),
        "skew" => (Format::Binary, true),
        "skewascii" => (Format::Ascii, true),
        _ => return None,
    };
    let start = fields.next()?.strip_prefix('b')?.parse().ok()?;
    let records = fields.next()?.strip_prefix('n')?.parse().ok()?;
    fields.next().is_none().then_some(GenSpec {
        format,
        skew,
        start,
        records,
    })
}

/// Every record of `spec` in one buffer, generated in parallel blocks.
pub fn generate_all(spec: &GenSpec) -> Vec<u8> {
    const BLOCK: usize = 100_000;
    let mut out = vec![0u8; spec.records as usize * RECORD_LEN];
    out.par_chunks_mut(BLOCK * RECORD_LEN)
        .enumerate()
        .for_each(|(i, block)| {
            gensort::generate_block(spec, (i * BLOCK) as u64, block.len() / RECORD_LEN, block)
        });
    out
}

/// The records of `bytes` in ascending order of all 100 bytes.
pub fn sorted_by_full_record(bytes: &[u8]) -> Vec<u8> {
    let mut records: Vec<&[u8]> = bytes.chunks_exact(RECORD_LEN).collect();
    records.par_sort_unstable();
    records.concat()
}
