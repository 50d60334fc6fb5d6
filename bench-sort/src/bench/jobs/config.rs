//! What `millrace bench jobs` measures: [`JobsConfig`] as the CLI builds it, the jobs and
//! peers by name, the sizes at a `--scale`, and the spill budget.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use crate::bench::BenchError;

/// Lines of generated text at scale 1: ~59 bytes a line, so ~1.0 GB.
pub const FULL_TEXT_LINES: u64 = 17_000_000;
/// Sales rows at scale 1 (100M).
pub const FULL_SALES_ROWS: u64 = 100_000_000;
/// Orders at scale 1 (100M), joined with a tenth as many customers (10M).
pub const FULL_ORDERS: u64 = 100_000_000;
/// The spill budget at scale 1; it scales with `--scale`, down to [`MIN_SPILL_MEMORY_BYTES`].
pub const FULL_SPILL_MEMORY_BYTES: u64 = 256 << 20;
/// The smallest default spill budget (millrace refuses less than 4 MiB).
pub const MIN_SPILL_MEMORY_BYTES: u64 = 16 << 20;
/// The smallest `--spill-memory`: what a millrace job needs at least.
pub const MIN_JOB_MEMORY_BYTES: u64 = 4 << 20;
/// The largest `--scale` (100 × the default sizes is 100 GB of text).
pub const MAX_SCALE: f64 = 100.0;

/// What to measure; built and validated by the CLI.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Folder for inputs, outputs and the report; created if missing.
    pub dir: PathBuf,
    /// Multiplies the default sizes ([`JobSizes::scaled`]).
    pub scale: f64,
    /// The jobs to run, in [`Job::ALL`] order.
    pub jobs: Vec<Job>,
    /// The peers asked for, in [`JobPeer::ALL`] order; one that cannot be set up is skipped.
    pub peers: Vec<JobPeer>,
    /// The budget that forces spilling; `None`: [`default_spill_memory`] of `scale`.
    pub spill_memory_bytes: Option<u64>,
    /// Runs of every tool in every case; medians are reported. At least 1.
    pub runs: usize,
    /// Keep the generated inputs, the specs and the outputs.
    pub keep: bool,
    /// The `millrace` binary that runs the jobs (the CLI passes `current_exe()`).
    pub millrace_exe: PathBuf,
    /// Where the peers' venv lives; `None`: `MILLRACE_PEERS_DIR`, else `<dir>/peers`.
    pub peers_dir: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
}

impl JobsConfig {
    /// The spill budget in force.
    pub fn spill_memory_bytes(&self) -> u64 {
        self.spill_memory_bytes
            .unwrap_or_else(|| default_spill_memory(self.scale))
    }

    pub(crate) fn check(&self) -> Result<(), BenchError> {
        let invalid = |reason: String| BenchError::InvalidConfig { reason };
        if !(self.scale > 0.0 && self.scale <= MAX_SCALE) {
            return Err(invalid(format!(
                "--scale {} is out of range; give a number above 0 and at most {MAX_SCALE}",
                self.scale
            )));
        }
        if self.jobs.is_empty() {
            return Err(invalid("give at least one job in --jobs".to_owned()));
        }
        if self.runs == 0 {
            return Err(invalid("--runs must be at least 1".to_owned()));
        }
        let budget = self.spill_memory_bytes();
        if budget < MIN_JOB_MEMORY_BYTES {
            return Err(invalid(format!(
                "--spill-memory {budget} bytes is below the 4 MiB a millrace job needs"
            )));
        }
        if let Some(ram) = engine::memory::total_ram_bytes() {
            if budget > ram {
                return Err(invalid(format!(
                    "--spill-memory {budget} bytes is more than this machine's RAM ({ram} bytes)"
                )));
            }
        }
        Ok(())
    }
}

/// The default spill budget at `scale`: 256 MiB × scale, at least 16 MiB, whole MiB.
pub fn default_spill_memory(scale: f64) -> u64 {
    let bytes = (FULL_SPILL_MEMORY_BYTES as f64 * scale / (1u64 << 20) as f64).round() as u64;
    (bytes << 20).max(MIN_SPILL_MEMORY_BYTES)
}

/// Parses `--scale`: a positive number, at most [`MAX_SCALE`].
pub fn parse_scale(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale <= MAX_SCALE => Ok(scale),
        _ => Err(format!(
            "{text:?} is not a scale; give a number above 0 and at most {MAX_SCALE} (1 = ~1 GB of text, 100M rows)"
        )),
    }
}

/// The generated data at one scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct JobSizes {
    /// Lines of text (word count).
    pub text_lines: u64,
    /// Rows of sales (group-by).
    pub sales_rows: u64,
    /// Orders (join); the customers are a tenth ([`JobSizes::customers`]).
    pub orders: u64,
}

impl JobSizes {
    /// The default sizes × `scale`, each at least 1.
    pub fn scaled(scale: f64) -> Self {
        let times = |full: u64| ((full as f64 * scale).round() as u64).max(1);
        Self {
            text_lines: times(FULL_TEXT_LINES),
            sales_rows: times(FULL_SALES_ROWS),
            orders: times(FULL_ORDERS),
        }
    }

    /// Customers of the join (the generator's `max(1, orders / 10)`).
    pub fn customers(&self) -> u64 {
        (self.orders / 10).max(1)
    }

    /// Bytes the inputs of `jobs` take, estimated high: text 60 bytes a line, sales 25 (CSV)
    /// and 12 (Parquet) a row, orders with their customers 32 (CSV) and 20 (Parquet) an
    /// order.
    pub fn input_bytes_estimate(&self, jobs: &[Job]) -> u64 {
        jobs.iter()
            .map(|job| match job {
                Job::WordCount => self.text_lines.saturating_mul(60),
                Job::GroupBy => self.sales_rows.saturating_mul(25 + 12),
                Job::Join => self.orders.saturating_mul(32 + 20),
            })
            .fold(0, u64::saturating_add)
    }
}

/// One of the batch jobs, the same query in millrace and in every peer (`jobs.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Job {
    /// Words (runs of letters and digits, lower-cased) counted over ~1 GB of text.
    WordCount,
    /// Per region: count, sum(qty), avg, min and max of price over 100M sales rows.
    GroupBy,
    /// 100M orders ⋈ 10M customers on customer_id, then per segment count and sum(amount).
    Join,
}

impl Job {
    /// Every job, in the order they run.
    pub const ALL: [Job; 3] = [Job::WordCount, Job::GroupBy, Job::Join];

    /// The name `--jobs` takes, the report shows and `jobs.py run` knows as QUERY.
    pub fn name(self) -> &'static str {
        match self {
            Job::WordCount => "wordcount",
            Job::GroupBy => "groupby",
            Job::Join => "join",
        }
    }

    /// The kind of input it reads (`jobs.sh gen KIND`; a [`DataSet`](super::spec::DataSet)'s
    /// `kind`).
    pub fn data_kind(self) -> &'static str {
        match self {
            Job::WordCount => "text",
            Job::GroupBy => "sales",
            Job::Join => "join",
        }
    }

    /// The input formats it runs on, in order.
    pub fn formats(self) -> &'static [InputFormat] {
        match self {
            Job::WordCount => &[InputFormat::Text],
            Job::GroupBy | Job::Join => &[InputFormat::Csv, InputFormat::Parquet],
        }
    }

    /// What it computes, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Job::WordCount => "count per word; words are runs of letters and digits, lower-cased",
            Job::GroupBy => "per region: count(*), sum(qty), avg(price), min(price), max(price)",
            Job::Join => "orders ⋈ customers on customer_id, per segment: count(*), sum(amount)",
        }
    }

    /// Parses `--jobs` values (each may hold several names separated by commas); repeated
    /// names count once, and the jobs keep the order of [`Job::ALL`].
    pub fn parse_list(values: &[String]) -> Result<Vec<Job>, BenchError> {
        parse_names(values, &Job::ALL)
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Job {
    type Err = BenchError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        find(name, &Job::ALL, "job", "--jobs")
    }
}

/// A tool that runs the same queries on the same files (`scripts/peers/jobs.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPeer {
    DuckDb,
    Polars,
    DataFusion,
    Spark,
}

impl JobPeer {
    /// Every peer, in the order they run.
    pub const ALL: [JobPeer; 4] = [
        JobPeer::DuckDb,
        JobPeer::Polars,
        JobPeer::DataFusion,
        JobPeer::Spark,
    ];

    /// The name `--peers` takes, the report shows and `jobs.sh` knows.
    pub fn name(self) -> &'static str {
        match self {
            JobPeer::DuckDb => "duckdb",
            JobPeer::Polars => "polars",
            JobPeer::DataFusion => "datafusion",
            JobPeer::Spark => "spark",
        }
    }

    /// Whether it can be held to a memory budget (`jobs.py run --memory-limit`): Polars has
    /// no such setting.
    pub fn has_memory_limit(self) -> bool {
        self != JobPeer::Polars
    }

    /// The limit it gets under a spill budget of `budget` bytes: the budget, but at least
    /// the 512 MiB heap Spark's driver needs.
    pub fn memory_limit(self, budget: u64) -> u64 {
        match self {
            JobPeer::Spark => budget.max(SPARK_MIN_HEAP_BYTES),
            _ => budget,
        }
    }

    /// Parses `--peers` values like [`Job::parse_list`]; `none` alone asks for no peer.
    pub fn parse_list(values: &[String]) -> Result<Vec<JobPeer>, BenchError> {
        let names: Vec<&str> = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names == ["none"] {
            return Ok(Vec::new());
        }
        parse_names(values, &JobPeer::ALL)
    }
}

/// The smallest heap `jobs.py` gives Spark's driver (it refuses less).
pub const SPARK_MIN_HEAP_BYTES: u64 = 512 << 20;

impl fmt::Display for JobPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JobPeer {
    type Err = BenchError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        find(name, &JobPeer::ALL, "peer", "--peers")
    }
}

/// The format of a job's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Lines of text.
    Text,
    /// CSV with a header.
    Csv,
    /// Parquet (row groups of 1,048,576 rows).
    Parquet,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Text => "text",
            InputFormat::Csv => "csv",
            InputFormat::Parquet => "parquet",
        }
    }
}

/// The memory setting of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemorySetting {
    /// Each tool's default memory (millrace: half the RAM; Spark: `PEER_HEAP`, 8g).
    InMemory,
    /// The spill budget (`--spill-memory`).
    Spill,
}

impl MemorySetting {
    pub const ALL: [MemorySetting; 2] = [MemorySetting::InMemory, MemorySetting::Spill];

    pub fn name(self) -> &'static str {
        match self {
            MemorySetting::InMemory => "in-memory",
            MemorySetting::Spill => "spill",
        }
    }
}

/// A name of `all`, or an error naming the valid ones.
fn find<T: Copy + fmt::Display>(
    name: &str,
    all: &[T],
    what: &'static str,
    flag: &'static str,
) -> Result<T, BenchError> {
    all.iter()
        .copied()
        .find(|item| item.to_string() == name)
        .ok_or_else(|| BenchError::UnknownName {
            what,
            flag,
            name: name.to_owned(),
            valid: all
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Comma-separated names of `all`, each once, in `all`'s order.
fn parse_names<T>(values: &[String], all: &[T]) -> Result<Vec<T>, BenchError>
where
    T: Copy + PartialEq + FromStr<Err = BenchError>,
{
    let mut asked = Vec::new();
    for name in values.iter().flat_map(|v| v.split(',')) {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let item = name.parse::<T>()?;
        if !asked.contains(&item) {
            asked.push(item);
        }
    }
    Ok(all.iter().copied().filter(|i| asked.contains(i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn jobs_and_peers_parse_in_canonical_order_without_repeats() {
        assert_eq!(
            Job::parse_list(&strings(&["join,wordcount", " join"])).unwrap(),
            [Job::WordCount, Job::Join]
        );
        assert_eq!(
            JobPeer::parse_list(&strings(&["spark,duckdb,spark"])).unwrap(),
            [JobPeer::DuckDb, JobPeer::Spark]
        );
        assert!(JobPeer::parse_list(&strings(&["none"])).unwrap().is_empty());
        for job in Job::ALL {
            assert_eq!(job.name().parse::<Job>().unwrap(), job);
        }
        for peer in JobPeer::ALL {
            assert_eq!(peer.name().parse::<JobPeer>().unwrap(), peer);
        }
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let text = Job::parse_list(&strings(&["wordcount,sort"]))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("unknown job \"sort\" in --jobs")
                && text.contains("wordcount, groupby, join"),
            "{text}"
        );
        let text = JobPeer::parse_list(&strings(&["duckdb,flink"]))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("\"flink\"") && text.contains("duckdb, polars, datafusion, spark"),
            "{text}"
        );
        // `none` only alone.
        assert!(JobPeer::parse_list(&strings(&["none,duckdb"])).is_err());
    }

    #[test]
    fn sizes_scale_and_stay_positive() {
        assert_eq!(
            JobSizes::scaled(1.0),
            JobSizes {
                text_lines: 17_000_000,
                sales_rows: 100_000_000,
                orders: 100_000_000
            }
        );
        assert_eq!(JobSizes::scaled(1.0).customers(), 10_000_000);
        let small = JobSizes::scaled(0.0001);
        assert_eq!(
            (small.text_lines, small.sales_rows, small.orders),
            (1700, 10_000, 10_000)
        );
        let tiny = JobSizes::scaled(1e-12);
        assert_eq!((tiny.text_lines, tiny.orders, tiny.customers()), (1, 1, 1));
        assert_eq!(
            JobSizes::scaled(1.0).input_bytes_estimate(&Job::ALL),
            17_000_000 * 60 + 100_000_000 * 37 + 100_000_000 * 52
        );
    }

    #[test]
    fn spill_budget_scales_with_a_floor() {
        assert_eq!(default_spill_memory(1.0), 256 << 20);
        assert_eq!(default_spill_memory(0.5), 128 << 20);
        assert_eq!(default_spill_memory(0.01), 16 << 20);
        assert_eq!(default_spill_memory(4.0), 1 << 30);
        assert_eq!(JobPeer::Spark.memory_limit(16 << 20), 512 << 20);
        assert_eq!(JobPeer::Spark.memory_limit(1 << 30), 1 << 30);
        assert_eq!(JobPeer::DuckDb.memory_limit(16 << 20), 16 << 20);
    }

    #[test]
    fn scale_parses_and_config_is_checked() {
        assert_eq!(parse_scale("0.05"), Ok(0.05));
        for bad in ["0", "-1", "x", "1000", "NaN"] {
            assert!(parse_scale(bad).is_err(), "{bad}");
        }
        let mut config = JobsConfig {
            dir: PathBuf::from("unused"),
            scale: 0.01,
            jobs: Job::ALL.to_vec(),
            peers: Vec::new(),
            spill_memory_bytes: None,
            runs: 1,
            keep: false,
            millrace_exe: PathBuf::from("unused"),
            peers_dir: None,
            command: String::new(),
        };
        assert!(config.check().is_ok());
        config.spill_memory_bytes = Some(1 << 20);
        assert!(config.check().is_err());
        config.spill_memory_bytes = None;
        config.runs = 0;
        assert!(config.check().is_err());
        config.runs = 1;
        config.jobs.clear();
        assert!(config.check().is_err());
    }
}
