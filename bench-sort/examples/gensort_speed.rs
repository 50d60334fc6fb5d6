//! Times the generator and the validator on this machine.
//!
//! `cargo run --release -p bench-sort --example gensort_speed -- [RECORDS] [OUTPUT_FILE]`
//!
//! For each mode it reports: one thread filling a reused block (generation alone), all rayon
//! threads generating plus checksumming without I/O (`checksum_of`, the `/dev/null` path), and,
//! when OUTPUT_FILE is given, `generate_to_file` followed by `validate_path` on that file.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use bench_sort::gensort::{self, Format, GenSpec};
use bench_sort::valsort;

fn rate(bytes: u128, seconds: f64) -> String {
    format!(
        "{:7.3} s  {:6.2} GB/s",
        seconds,
        bytes as f64 / seconds / 1e9
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let records = match args.next() {
        Some(count) => gensort::parse_record_count(&count)?,
        None => 10_000_000,
    };
    let output = args.next().map(PathBuf::from);
    println!(
        "{records} records, {} rayon threads",
        rayon::current_num_threads()
    );
    let modes = [
        ("binary", Format::Binary, false),
        ("ascii", Format::Ascii, false),
        ("skew", Format::Binary, true),
        ("skewascii", Format::Ascii, true),
    ];
    for (name, format, skew) in modes {
        let spec = GenSpec {
            format,
            skew,
            start: 0,
            records,
        };
        let bytes = spec.total_bytes();

        let block = gensort::BLOCK_RECORDS;
        let mut buffer = vec![0u8; block * 100];
        let started = Instant::now();
        let mut offset = 0u64;
        while offset < records {
            let n = (records - offset).min(block as u64) as usize;
            gensort::generate_block(&spec, offset, n, &mut buffer);
            offset += n as u64;
        }
        let one_thread = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let checksum = gensort::checksum_of(&spec);
        let parallel = started.elapsed().as_secs_f64();
        println!("{name:10} gen 1 thread      {}", rate(bytes, one_thread));
        println!(
            "{name:10} gen+crc parallel  {}  checksum {checksum}",
            rate(bytes, parallel)
        );

        if let Some(path) = &output {
            let started = Instant::now();
            gensort::generate_to_file(&spec, path, &|_| {})?;
            let write = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let summary = valsort::validate_path(path, &|_| {})?;
            let validate = started.elapsed().as_secs_f64();
            println!("{name:10} gen to file       {}", rate(bytes, write));
            println!(
                "{name:10} validate file     {}  unordered {}",
                rate(bytes, validate),
                summary.unordered
            );
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}
