//! The peers of `millrace bench sort --peers …`: other sort tools run on the same inputs as the
//! sort, measured by the harness and validated like it.
//!
//! Each peer is installed and run by `scripts/peers/run.sh` (embedded in the binary and written
//! to `<peers dir>/scripts/`, so an installed `millrace` needs no checkout):
//!
//! 1. Before the cases, `run.sh setup PEER` once per peer: a venv with the peer's pip package
//!    (the JVM peers use only the jars of pyspark and apache-flink-libraries) and, for the JVM
//!    peers, its Java TeraSort compiled with `javac`. The venv and classes live in the peers
//!    folder (`MILLRACE_PEERS_DIR`, else `<dir>/peers`), which outlives the bench, so pip runs
//!    once. When something cannot be installed the script exits 3 with one line naming the
//!    install step; the peer is then [`PeerReport::Skipped`] with that reason and the bench
//!    goes on. Any other setup failure fails the bench.
//! 2. In every in-memory case of the peer's input format ([`Peer::format`]: line tools on ASCII,
//!    TeraSorts on binary), `runs` times, right after the sort of the same run:
//!    `run.sh run PEER INPUT OUTPUT`, timed from spawn to exit plus an fsync of everything it
//!    wrote; CPU seconds (user + system) and peak RSS come from `wait4` on the script, so they
//!    cover the whole reaped process tree (the peak is that of its largest process).
//!    The output (a file, or a folder of part files read in name order) must hold exactly the
//!    generated records in key order, or the bench fails: an invalid run is never a figure.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Instant;

use engine::record::Checksum;
use serde::Serialize;

use super::child::{check_summary, output_with_usage, tail};
use super::report::{median, mib};
use super::{BenchError, CaseReport, GnuSort};
use crate::gensort::Format;
use crate::valsort;

/// The folder of the venv and compiled classes when `MILLRACE_PEERS_DIR` is not set:
/// `<dir>/peers`.
pub const PEERS_DIR_ENV: &str = "MILLRACE_PEERS_DIR";

/// Exit code of `run.sh setup` when the peer cannot be installed here.
pub(super) const SKIP_EXIT_CODE: i32 = 3;

/// The scripts `run.sh` (sort peers) and `jobs.sh` (batch-job peers, `bench jobs`) need,
/// written to `<peers dir>/scripts/` before the setup.
const SCRIPTS: [(&str, &str); 11] = [
    ("run.sh", include_str!("../../../scripts/peers/run.sh")),
    ("jobs.sh", include_str!("../../../scripts/peers/jobs.sh")),
    ("jobs.py", include_str!("../../../scripts/peers/jobs.py")),
    (
        "common.sh",
        include_str!("../../../scripts/peers/common.sh"),
    ),
    (
        "duckdb_sort.py",
        include_str!("../../../scripts/peers/duckdb_sort.py"),
    ),
    (
        "polars_sort.py",
        include_str!("../../../scripts/peers/polars_sort.py"),
    ),
    (
        "log4j2.properties",
        include_str!("../../../scripts/peers/log4j2.properties"),
    ),
    (
        "java/Splitters.java",
        include_str!("../../../scripts/peers/java/Splitters.java"),
    ),
    (
        "java/HadoopTeraSort.java",
        include_str!("../../../scripts/peers/java/HadoopTeraSort.java"),
    ),
    (
        "java/SparkTeraSort.java",
        include_str!("../../../scripts/peers/java/SparkTeraSort.java"),
    ),
    (
        "java/FlinkTeraSort.java",
        include_str!("../../../scripts/peers/java/FlinkTeraSort.java"),
    ),
];

/// A tool the bench can compare with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    GnuSort,
    DuckDb,
    Polars,
    Hadoop,
    Spark,
    Flink,
}

impl Peer {
    /// Every peer, in the order they run.
    pub const ALL: [Peer; 6] = [
        Peer::GnuSort,
        Peer::DuckDb,
        Peer::Polars,
        Peer::Hadoop,
        Peer::Spark,
        Peer::Flink,
    ];

    /// The name `--peers` takes and the report shows.
    pub fn name(self) -> &'static str {
        match self {
            Peer::GnuSort => "gnu-sort",
            Peer::DuckDb => "duckdb",
            Peer::Polars => "polars",
            Peer::Hadoop => "hadoop",
            Peer::Spark => "spark",
            Peer::Flink => "flink",
        }
    }

    /// The input it sorts: gensort ASCII lines for the line tools, binary records for the
    /// TeraSorts.
    pub fn format(self) -> Format {
        match self {
            Peer::GnuSort | Peer::DuckDb | Peer::Polars => Format::Ascii,
            Peer::Hadoop | Peer::Spark | Peer::Flink => Format::Binary,
        }
    }

    /// What it runs, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Peer::GnuSort => "LC_ALL=C sort --parallel=CORES -S 50% -o OUT IN",
            Peer::DuckDb => {
                "COPY (SELECT line FROM read_csv(IN) ORDER BY substr(line, 1, 10)) TO OUT"
            }
            Peer::Polars => "scan_csv(IN).sort(str.slice(0, 10)).sink_csv(OUT), streaming",
            Peer::Hadoop => {
                "Java TeraSort, local job runner: fixed-length input, sampled total order, \
                 identity map/reduce, io.sort.mb 256, 2 reducers, raw part files"
            }
            Peer::Spark => {
                "Java TeraSort, local[2]: binaryRecords(100) → 10-byte key → \
                 repartitionAndSortWithinPartitions(RangePartitioner), Kryo, no shuffle compression"
            }
            Peer::Flink => {
                "Java DataStream TeraSort, BATCH, parallelism 2: sampled partitionCustom → \
                 fullWindowPartition().sortPartition, no shuffle compression"
            }
        }
    }

    /// Parses `--peers` values (each may hold several names separated by commas); repeated
    /// names count once, and the peers keep the order of [`Peer::ALL`].
    pub fn parse_list(values: &[String]) -> Result<Vec<Peer>, BenchError> {
        let mut asked = Vec::new();
        for name in values.iter().flat_map(|v| v.split(',')) {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let peer = name.parse::<Peer>()?;
            if !asked.contains(&peer) {
                asked.push(peer);
            }
        }
        Ok(Peer::ALL
            .into_iter()
            .filter(|p| asked.contains(p))
            .collect())
    }
}

impl FromStr for Peer {
    type Err = BenchError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Peer::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| BenchError::UnknownPeer {
                name: name.to_owned(),
                valid: Peer::ALL.map(Peer::name).join(", "),
            })
    }
}

/// What the setup of one peer gave (`run.sh setup` or `jobs.sh setup`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Setup {
    /// Installed; the version line the script printed.
    Ready { version: String },
    /// Not installable here; the script's one line, without the `PEER: skipped — ` prefix.
    Skipped { reason: String },
}

/// Runs a script's `setup NAME` (`command`): ready with the version it printed last, skipped
/// (exit [`SKIP_EXIT_CODE`]) with its reason, or an error for any other failure.
pub(super) fn run_setup(mut command: Command, name: &'static str) -> Result<Setup, BenchError> {
    let output = match command.output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Setup::Skipped {
                reason: "bash not found: apt-get install bash".to_owned(),
            })
        }
        Err(source) => {
            return Err(BenchError::Spawn {
                program: PathBuf::from("bash"),
                source,
            })
        }
        Ok(output) => output,
    };
    match output.status.code() {
        Some(0) => Ok(Setup::Ready {
            version: String::from_utf8_lossy(&output.stdout)
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("unknown version")
                .trim()
                .to_owned(),
        }),
        Some(SKIP_EXIT_CODE) => Ok(Setup::Skipped {
            reason: skip_reason(name, &String::from_utf8_lossy(&output.stderr)),
        }),
        _ => Err(BenchError::PeerSetup {
            peer: name,
            status: output.status.to_string(),
            stderr_tail: tail(&output.stderr),
        }),
    }
}

/// The asked peers, set up.
#[derive(Debug, Default)]
pub(super) struct Peers {
    /// `<peers dir>/scripts/run.sh`.
    script: PathBuf,
    /// The venv and classes folder given to the script.
    dir: PathBuf,
    setups: Vec<(Peer, Setup)>,
}

/// The peers folder: `MILLRACE_PEERS_DIR` when set, else `<bench dir>/peers`.
pub(super) fn peers_dir(bench_dir: &Path) -> PathBuf {
    match std::env::var_os(PEERS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => bench_dir.join("peers"),
    }
}

/// `NAME: skipped — REASON` → `REASON`: the last line of the stderr of the script's setup of
/// `name` (a peer, or `gen` for `jobs.sh`) that says so, else its last line.
fn skip_reason(name: &str, stderr: &str) -> String {
    let prefix = format!("{name}: skipped — ");
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.iter().rev().find_map(|l| l.strip_prefix(&prefix)) {
        Some(reason) => reason.to_owned(),
        None => lines
            .last()
            .map_or("the setup gave no reason".to_owned(), |l| (*l).to_owned()),
    }
}

impl Peers {
    /// Writes the scripts to `dir` and sets up every peer in `asked` (none: nothing is written).
    pub(super) fn prepare(
        asked: &[Peer],
        dir: &Path,
        progress: &dyn Fn(&str),
    ) -> Result<Self, BenchError> {
        let mut peers = Peers {
            script: dir.join("scripts").join("run.sh"),
            dir: dir.to_path_buf(),
            setups: Vec::new(),
        };
        if asked.is_empty() {
            return Ok(peers);
        }
        write_scripts(&dir.join("scripts"))?;
        for &peer in asked {
            progress(&format!(
                "setting up {} in {} (the first time installs it)…",
                peer.name(),
                dir.display()
            ));
            let setup = peers.setup(peer)?;
            match &setup {
                Setup::Ready { version } => progress(&format!("{}: {version}", peer.name())),
                Setup::Skipped { reason } => {
                    progress(&format!("{}: skipped — {reason}", peer.name()))
                }
            }
            peers.setups.push((peer, setup));
        }
        Ok(peers)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("bash");
        super::child::die_with_parent(&mut command)
            .arg(&self.script)
            .env(PEERS_DIR_ENV, &self.dir)
            .stdin(Stdio::null());
        command
    }

    fn setup(&self, peer: Peer) -> Result<Setup, BenchError> {
        let mut command = self.command();
        command.arg("setup").arg(peer.name());
        run_setup(command, peer.name())
    }

    /// Whether `peer` was asked for (installed or skipped).
    pub(super) fn asks(&self, peer: Peer) -> bool {
        self.setups.iter().any(|(p, _)| *p == peer)
    }

    /// Whether some asked peer sorts `format` inputs.
    pub(super) fn want(&self, format: Format) -> bool {
        self.setups.iter().any(|(p, _)| p.format() == format)
    }

    /// The installed peers of `format`, in order.
    pub(super) fn ready(&self, format: Format) -> Vec<Peer> {
        self.setups
            .iter()
            .filter(|(p, s)| p.format() == format && matches!(s, Setup::Ready { .. }))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Runs `peer` once on `input` into `out` (removed afterwards), measured and validated.
    pub(super) fn run_once(
        &self,
        peer: Peer,
        input: &Path,
        out: &Path,
        log: &Path,
        generated: &Checksum,
    ) -> Result<PeerRun, BenchError> {
        let result = self.measure(peer, input, out, log, generated);
        let removed = remove_output(out);
        let _ = fs::remove_file(log);
        let run = result?;
        removed?;
        Ok(run)
    }

    fn measure(
        &self,
        peer: Peer,
        input: &Path,
        out: &Path,
        log: &Path,
        generated: &Checksum,
    ) -> Result<PeerRun, BenchError> {
        let io_error = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| BenchError::Io { op, path, source }
        };
        let log_file = File::create(log).map_err(io_error("create", log))?;
        let log_err = log_file.try_clone().map_err(io_error("open", log))?;
        let mut command = self.command();
        command
            .arg("run")
            .arg(peer.name())
            .arg(input)
            .arg(out)
            .stdout(log_file)
            .stderr(log_err);
        let started = Instant::now();
        let (output, usage) =
            output_with_usage(&mut command).map_err(|source| BenchError::Spawn {
                program: PathBuf::from("bash"),
                source,
            })?;
        if !output.status.success() {
            let logged = fs::read(log).unwrap_or_default();
            return Err(BenchError::ChildFailed {
                tool: peer.name(),
                input: input.to_path_buf(),
                status: output.status.to_string(),
                stderr_tail: tail(&logged),
            });
        }
        let parts = output_files(out).map_err(io_error("list the output", out))?;
        for part in &parts {
            File::open(part)
                .and_then(|f| f.sync_all())
                .map_err(io_error("fsync", part))?;
        }
        if out.is_dir() {
            File::open(out)
                .and_then(|f| f.sync_all())
                .map_err(io_error("fsync", out))?;
        }
        let wall_s = started.elapsed().as_secs_f64();
        let summary = if out.is_dir() {
            let mut chained: Box<dyn Read> = Box::new(io::empty());
            for part in &parts {
                let file = File::open(part).map_err(io_error("open", part))?;
                chained = Box::new(chained.chain(io::BufReader::with_capacity(8 << 20, file)));
            }
            valsort::validate_reader(chained, out, &|_| {})
        } else {
            valsort::validate_path(out, &|_| {})
        }
        .map_err(|source| BenchError::Validate {
            tool: peer.name(),
            source,
        })?;
        check_summary(peer.name(), out, &summary, generated)?;
        Ok(PeerRun {
            wall_s,
            cpu_s: usage.cpu_s,
            peak_rss_bytes: usage.peak_rss_bytes,
            output_files: parts.len(),
        })
    }

    /// The report rows of `format`'s asked peers: medians of `runs` (in [`Peers::ready`]
    /// order), skipped ones with their reason.
    pub(super) fn reports(
        &self,
        format: Format,
        mut runs: Vec<Vec<PeerRun>>,
        floor_s: f64,
        sort_process_s: f64,
        bytes: u64,
    ) -> Vec<PeerReport> {
        runs.reverse();
        self.setups
            .iter()
            .filter(|(p, _)| p.format() == format)
            .map(|(peer, setup)| match setup {
                Setup::Skipped { reason } => PeerReport::Skipped {
                    peer: peer.name(),
                    reason: reason.clone(),
                },
                Setup::Ready { version } => PeerReport::measured(
                    *peer,
                    version.clone(),
                    runs.pop().unwrap_or_default(),
                    floor_s,
                    sort_process_s,
                    bytes,
                ),
            })
            .collect()
    }
}

/// Writes the embedded scripts under `dir`, replacing what differs.
pub(super) fn write_scripts(dir: &Path) -> Result<(), BenchError> {
    for (name, text) in SCRIPTS {
        let path = dir.join(name);
        if fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|source| BenchError::Io {
                op: "create the peers' script folder",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        fs::write(&path, text).map_err(|source| BenchError::Io {
            op: "write the peer script",
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The files a peer wrote: `out` itself, or the part files in the folder `out` in name order
/// (not those whose names start with `.` or `_`: checksums and markers).
fn output_files(out: &Path) -> io::Result<Vec<PathBuf>> {
    if !out.is_dir() {
        return Ok(vec![out.to_path_buf()]);
    }
    let mut parts = Vec::new();
    for entry in fs::read_dir(out)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && !name.starts_with('_') && entry.file_type()?.is_file() {
            parts.push(entry.path());
        }
    }
    parts.sort();
    Ok(parts)
}

fn remove_output(out: &Path) -> Result<(), BenchError> {
    let removed = if out.is_dir() {
        fs::remove_dir_all(out)
    } else {
        fs::remove_file(out)
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BenchError::Io {
            op: "remove",
            path: out.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// One measured, validated peer run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerRun {
    /// Spawn to exit, plus the fsync of every output file.
    pub wall_s: f64,
    /// User + system CPU seconds of the whole process tree (`wait4`).
    pub cpu_s: f64,
    /// Peak RSS of the tree's largest process (`wait4`'s `ru_maxrss`).
    pub peak_rss_bytes: u64,
    /// Files the output was made of (part files of the JVM peers).
    pub output_files: usize,
}

/// One peer in one case.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PeerReport {
    /// It ran `runs` times and every output was valid.
    Measured {
        peer: &'static str,
        /// The setup's version line.
        version: String,
        /// What it runs.
        command: &'static str,
        /// Median wall time (spawn to exit + fsync).
        wall_s: f64,
        /// `wall_s` ÷ the case's floor.
        floor_ratio: f64,
        /// `wall_s` ÷ the median `millrace sort` process time (both from spawn, durable).
        vs_millrace: f64,
        /// Median CPU seconds per GB of input.
        cpu_s_per_gb: f64,
        /// Largest peak RSS over the runs.
        peak_rss_bytes: u64,
        /// Every run's output was the generated records in key order.
        validated: bool,
        runs: Vec<PeerRun>,
    },
    /// It could not be installed here.
    Skipped { peer: &'static str, reason: String },
}

impl PeerReport {
    fn measured(
        peer: Peer,
        version: String,
        runs: Vec<PeerRun>,
        floor_s: f64,
        sort_process_s: f64,
        bytes: u64,
    ) -> Self {
        let med = |f: fn(&PeerRun) -> f64| {
            median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let wall_s = med(|r| r.wall_s);
        PeerReport::Measured {
            peer: peer.name(),
            version,
            command: peer.describe(),
            wall_s,
            floor_ratio: wall_s / floor_s,
            vs_millrace: wall_s / sort_process_s,
            cpu_s_per_gb: med(|r| r.cpu_s) / (bytes as f64 / 1e9),
            peak_rss_bytes: runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
            validated: !runs.is_empty(),
            runs,
        }
    }

    pub fn peer(&self) -> &'static str {
        match self {
            PeerReport::Measured { peer, .. } | PeerReport::Skipped { peer, .. } => peer,
        }
    }

    /// The legacy `gnu_sort` entry of a case, from the `gnu-sort` peer's row.
    pub(super) fn to_gnu_sort(&self) -> GnuSort {
        match self {
            PeerReport::Measured {
                version,
                wall_s,
                vs_millrace,
                ..
            } => GnuSort::Measured {
                version: version.clone(),
                command: Peer::GnuSort.describe().to_owned(),
                wall_s: *wall_s,
                speedup: *vs_millrace,
            },
            PeerReport::Skipped { reason, .. } => GnuSort::Skipped {
                reason: reason.clone(),
            },
        }
    }
}

/// The peers table of the Markdown report (empty when no case has peers): per case the
/// millrace sort as the harness measured it, then each peer.
pub(super) fn markdown(cases: &[CaseReport]) -> String {
    if cases.iter().all(|c| c.peers.is_empty()) {
        return String::new();
    }
    let mut out = String::from(
        "\n| case | tool | wall s | ÷ floor | ÷ millrace | CPU s/GB | peak RSS MiB |\n\
         |---|---|--:|--:|--:|--:|--:|\n",
    );
    let mut skipped = Vec::new();
    for case in cases.iter().filter(|c| !c.peers.is_empty()) {
        let label = format!("{} {}", case.size, case.format);
        let gb = case.bytes as f64 / 1e9;
        let cpu = median(
            &case
                .sort_runs
                .iter()
                .filter_map(|r| r.harness_cpu_s)
                .collect::<Vec<_>>(),
        )
        .map_or("—".to_owned(), |s| format!("{:.2}", s / gb));
        let rss = case
            .sort_runs
            .iter()
            .filter_map(|r| r.harness_peak_rss_bytes)
            .max()
            .map_or("—".to_owned(), mib);
        out += &format!(
            "| {label} | millrace sort | {:.2} | {:.2} | 1.00 | {cpu} | {rss} |\n",
            case.sort_process_s,
            case.sort_process_s / case.floor_s,
        );
        for peer in &case.peers {
            match peer {
                PeerReport::Measured {
                    peer,
                    wall_s,
                    floor_ratio,
                    vs_millrace,
                    cpu_s_per_gb,
                    peak_rss_bytes,
                    ..
                } => {
                    out += &format!(
                        "| {label} | {peer} | {wall_s:.2} | {floor_ratio:.2} | {vs_millrace:.2} | \
                         {cpu_s_per_gb:.2} | {} |\n",
                        mib(*peak_rss_bytes)
                    )
                }
                PeerReport::Skipped { peer, reason } => {
                    out += &format!("| {label} | {peer} | skipped | — | — | — | — |\n");
                    let line = format!("{peer} skipped: {reason}\n");
                    if !skipped.contains(&line) {
                        skipped.push(line);
                    }
                }
            }
        }
    }
    out += "\npeers: wall = spawn to exit + fsync of the output, every output validated; \
            millrace sort = its process time; CPU (user + system) and peak RSS of the whole \
            process tree from wait4 (RSS: its largest process); ÷ millrace = wall ÷ millrace \
            sort process s\n";
    out += &skipped.concat();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_in_canonical_order_without_repeats() {
        let parsed =
            Peer::parse_list(&["flink,gnu-sort".into(), "duckdb, gnu-sort".into()]).unwrap();
        assert_eq!(parsed, [Peer::GnuSort, Peer::DuckDb, Peer::Flink]);
        assert!(Peer::parse_list(&[]).unwrap().is_empty());
        assert_eq!(
            Peer::ALL.map(Peer::name),
            ["gnu-sort", "duckdb", "polars", "hadoop", "spark", "flink"]
        );
        for peer in Peer::ALL {
            assert_eq!(peer.name().parse::<Peer>().unwrap(), peer);
        }
    }

    #[test]
    fn unknown_peer_names_the_valid_ones() {
        let error = Peer::parse_list(&["duckdb,sparkk".into()]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("\"sparkk\"")
                && text.contains("gnu-sort, duckdb, polars, hadoop, spark, flink"),
            "{text}"
        );
    }

    #[test]
    fn line_peers_sort_ascii_and_terasorts_binary() {
        let ascii: Vec<_> = Peer::ALL
            .into_iter()
            .filter(|p| p.format() == Format::Ascii)
            .collect();
        assert_eq!(ascii, [Peer::GnuSort, Peer::DuckDb, Peer::Polars]);
    }

    #[test]
    fn skip_reason_is_the_scripts_line() {
        let stderr = "Collecting apache-flink\nflink: skipped — java not found: apt-get install \
                      openjdk-17-jdk-headless\n";
        assert_eq!(
            skip_reason(Peer::Flink.name(), stderr),
            "java not found: apt-get install openjdk-17-jdk-headless"
        );
        assert_eq!(skip_reason(Peer::Flink.name(), "oops\n\n"), "oops");
        assert_eq!(
            skip_reason(Peer::Flink.name(), ""),
            "the setup gave no reason"
        );
    }

    /// A stand-in run.sh: `setup` skips one peer the way the real script does, `run` copies
    /// (wrong order) or sorts with GNU sort; the harness keeps the reason and rejects the
    /// unsorted output.
    #[test]
    fn setup_skips_with_the_reason_and_invalid_output_fails() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("peers");
        let mut peers = Peers {
            script: root.path().join("fake.sh"),
            dir: dir.clone(),
            setups: Vec::new(),
        };
        fs::write(
            &peers.script,
            "set -e\ncase $1 in\n\
             setup) [ \"$2\" = polars ] && { echo 'polars: skipped — pip install polars failed: \
             fix and rerun' >&2; exit 3; }; [ \"$2\" = spark ] && exit 7; echo \"$2 1.0\";;\n\
             run) if [ \"$2\" = duckdb ]; then cp \"$3\" \"$4\"; else LC_ALL=C sort -o \"$4\" \"$3\"; fi;;\n\
             esac\n",
        )
        .unwrap();
        assert_eq!(
            peers.setup(Peer::DuckDb).unwrap(),
            Setup::Ready {
                version: "duckdb 1.0".into()
            }
        );
        assert_eq!(
            peers.setup(Peer::Polars).unwrap(),
            Setup::Skipped {
                reason: "pip install polars failed: fix and rerun".into()
            }
        );
        assert!(matches!(
            peers.setup(Peer::Spark),
            Err(BenchError::PeerSetup { peer: "spark", .. })
        ));
        peers.setups = vec![
            (
                Peer::GnuSort,
                Setup::Ready {
                    version: "sort 9".into(),
                },
            ),
            (
                Peer::Polars,
                Setup::Skipped {
                    reason: "no pip".into(),
                },
            ),
        ];
        assert_eq!(peers.ready(Format::Ascii), [Peer::GnuSort]);
        assert!(peers.want(Format::Ascii) && !peers.want(Format::Binary));

        let input = root.path().join("in");
        let spec = crate::gensort::GenSpec {
            format: Format::Ascii,
            skew: false,
            start: 0,
            records: 1000,
        };
        let generated = crate::gensort::generate_to_file(&spec, &input, &|_| {}).unwrap();
        let out = root.path().join("out");
        let log = root.path().join("log");
        let run = peers
            .run_once(Peer::GnuSort, &input, &out, &log, &generated)
            .unwrap();
        assert_eq!(run.output_files, 1);
        assert!(run.wall_s > 0.0 && run.peak_rss_bytes > 0);
        assert!(!out.exists() && !log.exists(), "outputs are removed");
        let invalid = peers.run_once(Peer::DuckDb, &input, &out, &log, &generated);
        assert!(
            matches!(invalid, Err(BenchError::WrongOutput { tool: "duckdb", .. })),
            "{invalid:?}"
        );
        assert!(!out.exists());

        let reports = peers.reports(
            Format::Ascii,
            vec![vec![run.clone(), run]],
            0.5,
            1.0,
            100_000,
        );
        assert_eq!(reports.len(), 2);
        let json = serde_json::to_value(&reports).unwrap();
        assert_eq!(json[0]["status"], "measured");
        assert_eq!(json[0]["validated"], true);
        assert_eq!(json[1]["status"], "skipped");
        assert_eq!(json[1]["reason"], "no pip");
        assert!(matches!(
            reports[1].to_gnu_sort(),
            GnuSort::Skipped { reason } if reason == "no pip"
        ));
    }

    /// A folder output is validated as its part files concatenated in name order.
    #[test]
    fn part_files_are_read_in_name_order() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        fs::create_dir(&out).unwrap();
        for name in ["part-00001", "part-00000", "_SUCCESS", ".part-00000.crc"] {
            fs::write(out.join(name), b"").unwrap();
        }
        let names: Vec<_> = output_files(&out)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["part-00000", "part-00001"]);
    }
}
