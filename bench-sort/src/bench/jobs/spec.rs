//! The inputs of `millrace bench jobs` ([`DataSet`]: what `jobs.sh gen` makes, and where) and
//! the millrace job specs that compute what `scripts/peers/jobs.py` computes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{InputFormat, Job, JobSizes};

/// The folder of the inputs, inside the bench's work folder.
pub(super) const DATA_DIR: &str = "data";
/// The folder of every tool's outputs, inside the bench's work folder.
pub(super) const OUT_DIR: &str = "out";

/// One generated input of a job in one format.
#[derive(Clone, Debug, Serialize)]
pub struct DataSet {
    /// `text`, `sales` or `join` (`jobs.sh gen KIND`).
    pub kind: &'static str,
    pub format: InputFormat,
    /// Lines (text), rows (sales) or orders (join).
    pub rows: u64,
    /// Customers of the join (a tenth of the orders), else 0.
    pub customers: u64,
    /// The files, in the order the query takes them (orders, then customers).
    pub files: Vec<PathBuf>,
    /// Bytes of all its files.
    pub bytes: u64,
    /// Seconds the generator took.
    pub gen_s: f64,
    /// The floor: seconds to read every file once (the median of one measurement per run,
    /// each before the tools of that run; `bench::floor::read_files`).
    pub floor_s: f64,
    pub floor_runs_s: Vec<f64>,
}

impl DataSet {
    /// The input of `job` in `format` at `sizes`, to be generated under `work` (not yet made:
    /// `bytes` and `gen_s` are 0).
    pub(super) fn planned(job: Job, format: InputFormat, sizes: &JobSizes, work: &Path) -> Self {
        let data = work.join(DATA_DIR);
        let (rows, customers, files) = match (job, format) {
            (Job::WordCount, _) => (sizes.text_lines, 0, vec![data.join("text.txt")]),
            (Job::GroupBy, InputFormat::Parquet) => {
                (sizes.sales_rows, 0, vec![data.join("sales.parquet")])
            }
            (Job::GroupBy, _) => (sizes.sales_rows, 0, vec![data.join("sales.csv")]),
            (Job::Join, _) => {
                let (folder, ext) = join_folder(format);
                let folder = data.join(folder);
                (
                    sizes.orders,
                    sizes.customers(),
                    vec![
                        folder.join(format!("orders.{ext}")),
                        folder.join(format!("customers.{ext}")),
                    ],
                )
            }
        };
        Self {
            kind: job.data_kind(),
            format,
            rows,
            customers,
            files,
            bytes: 0,
            gen_s: 0.0,
            floor_s: 0.0,
            floor_runs_s: Vec::new(),
        }
    }

    /// What `jobs.sh gen KIND OUT` gets as OUT: the file, or the join's folder.
    pub(super) fn gen_target(&self) -> PathBuf {
        if self.kind == "join" {
            self.files[0]
                .parent()
                .expect("a join input lies in its folder")
                .to_path_buf()
        } else {
            self.files[0].clone()
        }
    }

    /// One phrase: `1,000,000 rows, CSV 22.3 MB`.
    pub fn describe(&self) -> String {
        let size = format!("{:.1} MB", self.bytes as f64 / 1e6);
        match self.kind {
            "text" => format!("{} lines, {size}", thousands(self.rows)),
            "join" => format!(
                "{} orders × {} customers, {} {size}",
                thousands(self.rows),
                thousands(self.customers),
                format_label(self.format)
            ),
            _ => format!(
                "{} rows, {} {size}",
                thousands(self.rows),
                format_label(self.format)
            ),
        }
    }
}

fn join_folder(format: InputFormat) -> (&'static str, &'static str) {
    match format {
        InputFormat::Parquet => ("join-parquet", "parquet"),
        _ => ("join-csv", "csv"),
    }
}

fn format_label(format: InputFormat) -> &'static str {
    match format {
        InputFormat::Text => "text",
        InputFormat::Csv => "CSV",
        InputFormat::Parquet => "Parquet",
    }
}

/// `1234567` → `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The spec file of `job` on `data`, in the work folder: `<job>-<format>.toml`.
pub(super) fn spec_path(work: &Path, job: Job, format: InputFormat) -> PathBuf {
    work.join(format!("{}-{}.toml", job.name(), format.name()))
}

/// The sink folder the spec of `job` in `format` writes (relative to the work folder); the
/// bench moves it to a name of its own after each run.
pub(super) fn sink_path(job: Job, format: InputFormat) -> String {
    format!("{OUT_DIR}/{}-{}.millrace", job.name(), format.name())
}

/// A source step for `path` (relative to the work folder) in `format`.
fn source(name: &str, path: &str, format: InputFormat) -> String {
    let source = match format {
        InputFormat::Text => format!("text = {{ path = \"{path}\" }}"),
        InputFormat::Csv => format!("csv = {{ path = \"{path}\", header = true }}"),
        // The Parquet source of the spec (`source = { parquet = { path } }`).
        InputFormat::Parquet => format!("parquet = {{ path = \"{path}\" }}"),
    };
    format!("[[step]]\nname = \"{name}\"\nsource = {{ {source} }}\n")
}

/// The TOML of the millrace job that computes what `jobs.py run PEER JOB` computes, on the
/// files of `data` (which lie under `work`), writing [`sink_path`].
pub(super) fn spec_text(job: Job, data: &DataSet, work: &Path) -> String {
    let rel = |path: &Path| {
        path.strip_prefix(work)
            .expect("the inputs lie in the work folder")
            .to_string_lossy()
            .into_owned()
    };
    let format = data.format;
    let mut text = format!(
        "# millrace bench jobs: {} on {} ({}); the same result as\n\
         # `scripts/peers/jobs.py run PEER {}` on the same files. Paths are relative to this file.\n\
         name = \"{}-{}\"\n\n",
        job.name(),
        format.name(),
        job.describe(),
        job.name(),
        job.name(),
        format.name()
    );
    match job {
        Job::WordCount => {
            text += &source("lines", &rel(&data.files[0]), format);
            text +=
                "\n[[step]]\nname = \"words\"\ntokenize = { column = \"line\", as = \"word\" }\n";
            text += "\n[[step]]\nname = \"counts\"\n\
                     aggregate = { keys = [\"word\"], aggregates = [{ fn = \"count\", as = \"n\" }] }\n";
        }
        Job::GroupBy => {
            text += &source("sales", &rel(&data.files[0]), format);
            text += "\n[[step]]\nname = \"per_region\"\naggregate = { keys = [\"region\"], aggregates = [\n\
                     \x20   { fn = \"count\", as = \"n\" },\n\
                     \x20   { fn = \"sum\", column = \"qty\", as = \"qty\" },\n\
                     \x20   { fn = \"avg\", column = \"price\", as = \"avg_price\" },\n\
                     \x20   { fn = \"min\", column = \"price\", as = \"min_price\" },\n\
                     \x20   { fn = \"max\", column = \"price\", as = \"max_price\" },\n\
                     ] }\n";
        }
        Job::Join => {
            // Only the columns the query uses are read: the planner pushes the projection into
            // the sources, as the SQL engines do.
            text += &source("orders", &rel(&data.files[0]), format);
            text += "\n";
            text += &source("customers", &rel(&data.files[1]), format);
            text += "\n[[step]]\nname = \"joined\"\ninput = \"orders\"\n\
                     join = { right = \"customers\", on = [\"customer_id\"], type = \"inner\" }\n";
            text += "\n[[step]]\nname = \"per_segment\"\naggregate = { keys = [\"segment\"], aggregates = [\n\
                     \x20   { fn = \"count\", as = \"n\" },\n\
                     \x20   { fn = \"sum\", column = \"amount\", as = \"amount\" },\n\
                     ] }\n";
        }
    }
    text += &format!(
        "\n[[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"{}\" }} }}\n",
        sink_path(job, format)
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(job: Job, format: InputFormat, work: &Path) -> DataSet {
        DataSet::planned(job, format, &JobSizes::scaled(0.001), work)
    }

    #[test]
    fn inputs_lie_in_the_data_folder() {
        let work = Path::new("/w");
        let text = data(Job::WordCount, InputFormat::Text, work);
        assert_eq!(text.files, [PathBuf::from("/w/data/text.txt")]);
        assert_eq!(text.gen_target(), PathBuf::from("/w/data/text.txt"));
        assert_eq!(text.rows, 17_000);
        let join = data(Job::Join, InputFormat::Parquet, work);
        assert_eq!(
            join.files,
            [
                PathBuf::from("/w/data/join-parquet/orders.parquet"),
                PathBuf::from("/w/data/join-parquet/customers.parquet")
            ]
        );
        assert_eq!(join.gen_target(), PathBuf::from("/w/data/join-parquet"));
        assert_eq!((join.rows, join.customers), (100_000, 10_000));
        let mut sales = data(Job::GroupBy, InputFormat::Csv, work);
        sales.bytes = 2_225_693;
        assert_eq!(sales.describe(), "100,000 rows, CSV 2.2 MB");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    /// Every spec parses and plans with the engine on files of the right columns, and its
    /// output columns are the peers' header.
    #[test]
    fn specs_plan_with_the_engine() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path();
        std::fs::create_dir_all(work.join("data/join-csv")).unwrap();
        std::fs::create_dir_all(work.join(OUT_DIR)).unwrap();
        std::fs::write(work.join("data/text.txt"), "Hello, world!\n").unwrap();
        std::fs::write(
            work.join("data/sales.csv"),
            "region,product,qty,price\nlima,7,2,1.50\n",
        )
        .unwrap();
        std::fs::write(
            work.join("data/join-csv/orders.csv"),
            "order_id,customer_id,amount\n1,1,2.50\n",
        )
        .unwrap();
        std::fs::write(
            work.join("data/join-csv/customers.csv"),
            "customer_id,name,segment\n1,customer-1,consumer\n",
        )
        .unwrap();
        for (job, format, header) in [
            (Job::WordCount, InputFormat::Text, "word,n"),
            (
                Job::GroupBy,
                InputFormat::Csv,
                "region,n,qty,avg_price,min_price,max_price",
            ),
            (Job::Join, InputFormat::Csv, "segment,n,amount"),
        ] {
            let spec = spec_path(work, job, format);
            std::fs::write(&spec, spec_text(job, &data(job, format, work), work)).unwrap();
            let config = engine::batch::BatchJobConfig {
                spec: spec.clone(),
                parallelism: Some(1),
                force: true,
                spill_dir: Some(work.to_path_buf()),
                max_attempts: 1,
                ..Default::default()
            };
            let result = engine::batch::run(&config).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}\n{}",
                    spec.display(),
                    std::fs::read_to_string(&spec).unwrap()
                )
            });
            assert_eq!(result.output, work.join(sink_path(job, format)));
            let part = std::fs::read_to_string(result.output.join("part-00000")).unwrap();
            assert_eq!(part.lines().next(), Some(header), "{job}: {part}");
        }
        let parquet = spec_text(
            Job::GroupBy,
            &data(Job::GroupBy, InputFormat::Parquet, work),
            work,
        );
        assert!(
            parquet.contains("source = { parquet = { path = \"data/sales.parquet\" } }"),
            "{parquet}"
        );
    }
}
