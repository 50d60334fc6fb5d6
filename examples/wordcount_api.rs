//! Word count with the Rust API: the same job as `wordcount.toml`, its tokenizer a closure.
//!
//!     cargo run --release --example wordcount_api     # → examples/wordcount_api.out/part-*

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray};
use engine::batch::{AggCall, BatchJobConfig, JobBuilder, SinkSpec, SourceSpec};

/// Lines of `data/words.txt` → lower-case words (runs of letters and digits) → count per
/// word → `out`.
pub fn job(data: &Path, out: &Path) -> JobBuilder {
    JobBuilder::new("wordcount_api")
        .source("lines", SourceSpec::text(data.join("words.txt")))
        .map_batches("words", |batch: RecordBatch| {
            let lines = (batch.column(0).as_any().downcast_ref::<StringArray>())
                .ok_or("the input is not text")?;
            let words: StringArray = (0..lines.len())
                .filter(|&i| lines.is_valid(i))
                .flat_map(|i| {
                    lines
                        .value(i)
                        .split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                        .map(str::to_lowercase)
                        .collect::<Vec<_>>()
                })
                .map(Some)
                .collect();
            RecordBatch::try_from_iter([("word", Arc::new(words) as _)]).map_err(|e| e.to_string())
        })
        .key_by(["word"])
        .aggregate("counts", [AggCall::count("count")])
        .sink("out", SinkSpec::csv(out))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = BatchJobConfig {
        force: true,
        ..BatchJobConfig::default()
    };
    let result = job(&examples.join("data"), &examples.join("wordcount_api.out")).run(&config)?;
    println!(
        "{}: {} lines in, {} words out to {}",
        result.name,
        result.rows_in,
        result.rows_out,
        result.output.display()
    );
    Ok(())
}
