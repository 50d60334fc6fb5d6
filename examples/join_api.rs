//! A join with the Rust API: the same job as `join.toml` (revenue per regional manager,
//! largest first), over the Parquet copies of its data.
//!
//!     cargo run --release --example join_api          # → examples/join_api.out/part-00000

use std::path::Path;

use engine::batch::{AggCall, AggFunc, BatchJobConfig, JobBuilder, JoinKind, SinkSpec, SourceSpec};

/// Sales ⋈ regions on `region` → per (manager, country): orders and revenue → largest
/// revenue first → `out`.
pub fn job(data: &Path, out: &Path) -> JobBuilder {
    JobBuilder::new("join_api")
        .source("sales", SourceSpec::parquet(data.join("sales.parquet")))
        .source("regions", SourceSpec::parquet(data.join("regions.parquet")))
        .join(
            "with_manager",
            "sales",
            "regions",
            ["region"],
            JoinKind::Inner,
        )
        .key_by(["manager", "country"])
        .aggregate(
            "per_manager",
            [
                AggCall::count("orders"),
                AggCall::of(AggFunc::Sum, "price", "revenue"),
            ],
        )
        .sort("largest_first", ["revenue desc", "manager"])
        .sink("out", SinkSpec::csv(out))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = BatchJobConfig {
        force: true,
        ..BatchJobConfig::default()
    };
    let job = job(&examples.join("data"), &examples.join("join_api.out"));
    print!("{}", job.explain(&config)?);
    let result = job.run(&config)?;
    println!(
        "{}: {} rows in, {} rows out to {}",
        result.name,
        result.rows_in,
        result.rows_out,
        result.output.display()
    );
    Ok(())
}
