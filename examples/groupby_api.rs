//! A group-by with the Rust API: the same job as `groupby.toml`, its filter a closure.
//!
//!     cargo run --release --example groupby_api       # → examples/groupby_api.out/part-*

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{BooleanArray, RecordBatch};
use engine::batch::{AggCall, AggFunc, BatchJobConfig, JobBuilder, SinkSpec, SourceSpec};

/// Sales of at least two units outside the `test` region → per (region, product): orders,
/// units, revenue, cheapest, dearest, average units → `out`.
pub fn job(data: &Path, out: &Path) -> JobBuilder {
    JobBuilder::new("groupby_api")
        .source("sales", SourceSpec::csv(data.join("sales.csv")))
        .filter_batches("real_orders", |batch: &RecordBatch| {
            let column = |name: &str| batch.column_by_name(name).ok_or(format!("no {name}"));
            let quantity = column("quantity")?.as_primitive::<Int64Type>();
            let region = column("region")?.as_string::<i32>();
            Ok((0..batch.num_rows())
                .map(|i| Some(quantity.value(i) >= 2 && region.value(i) != "test"))
                .collect::<BooleanArray>())
        })
        .key_by(["region", "product"])
        .aggregate(
            "per_region",
            [
                AggCall::count("orders"),
                AggCall::of(AggFunc::Sum, "quantity", "units"),
                AggCall::of(AggFunc::Sum, "price", "revenue"),
                AggCall::of(AggFunc::Min, "price", "cheapest"),
                AggCall::of(AggFunc::Max, "price", "dearest"),
                AggCall::of(AggFunc::Avg, "quantity", "avg_units"),
            ],
        )
        .sink("out", SinkSpec::csv(out))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = BatchJobConfig {
        force: true,
        ..BatchJobConfig::default()
    };
    let result = job(&examples.join("data"), &examples.join("groupby_api.out")).run(&config)?;
    println!(
        "{}: {} rows in, {} groups out to {}",
        result.name,
        result.rows_in,
        result.rows_out,
        result.output.display()
    );
    Ok(())
}
