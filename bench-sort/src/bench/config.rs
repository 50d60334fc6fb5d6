//! What a bench measures: [`BenchConfig`] and [`OutOfCoreConfig`] as the CLI builds them, their
//! checks, `--records` parsing and size labels, and the out-of-core variants and targets.

use std::path::PathBuf;

use engine::record::RECORD_LEN;
use engine::spill::{Compression, IoEngine};

use super::{BenchError, Peer};
use crate::gensort;

/// What to measure; built and validated by the CLI.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Input sizes in records; one case per size and format, in this order.
    pub records: Vec<u64>,
    /// Also run ASCII inputs (and GNU sort on them); binary inputs always run.
    pub ascii: bool,
    /// Folder for inputs, outputs and the report; created if missing.
    pub dir: PathBuf,
    /// Keep the generated inputs (in `<dir>/millrace-job-PID-…/`).
    pub keep: bool,
    /// Floor and sort runs per case; medians are reported. At least 1.
    pub runs: usize,
    /// The `millrace` binary that runs the sorts (the CLI passes `current_exe()`).
    pub millrace_exe: PathBuf,
    /// The out-of-core case, run after the others; `None` to skip it.
    pub out_of_core: Option<OutOfCoreConfig>,
    /// Execution modes sorted besides `pipelined` (from [`SORT_MODES`]: `staged`, …), each
    /// run after the pipelined sort of the same run, on the same input: in every in-memory
    /// case, and out of core with the default variant.
    pub extra_modes: Vec<String>,
    /// Other tools to run on the same inputs ([`Peer::ALL`] order); a line peer makes the
    /// ASCII cases run even without [`BenchConfig::ascii`].
    pub peers: Vec<Peer>,
    /// Where the peers' venv and classes live; `None`: `MILLRACE_PEERS_DIR`, else `<dir>/peers`.
    pub peers_dir: Option<PathBuf>,
}

/// The out-of-core case: an input much larger than the sort's memory budget.
#[derive(Clone, Copy, Debug)]
pub struct OutOfCoreConfig {
    /// Binary records to generate (160M = 16 GB by default).
    pub records: u64,
    /// The sort's `--memory`, in bytes (2 GiB by default).
    pub memory_bytes: u64,
}

impl OutOfCoreConfig {
    /// Bytes of the input.
    pub fn bytes(&self) -> u64 {
        self.records.saturating_mul(RECORD_LEN as u64)
    }

    /// Free space the case needs, plus 10%: input, spill and output at once (spills may not
    /// compress); with `blocking_modes` (`staged`, `mapreduce`) also the map outputs, which
    /// stay on disk while the reducers spill their runs.
    pub fn needed_bytes(&self, blocking_modes: bool) -> u64 {
        let copies = if blocking_modes { 4 } else { 3 };
        self.bytes().saturating_mul(copies).saturating_mul(11) / 10
    }
}

impl BenchConfig {
    pub(super) fn check(&self) -> Result<(), BenchError> {
        let invalid = |reason: &str| BenchError::InvalidConfig {
            reason: reason.to_owned(),
        };
        if self.records.is_empty() && self.out_of_core.is_none() {
            return Err(invalid("give at least one --records size"));
        }
        if let Some(ooc) = &self.out_of_core {
            if ooc.records == 0 {
                return Err(invalid("the out-of-core case needs at least 1 record"));
            }
            // The sorts' flags must pass the sort's own checks before anything is generated.
            let mut sort = engine::terasort::SortConfig::new("in", "out");
            sort.memory_bytes = ooc.memory_bytes;
            if let Err(error) = sort.check_limits() {
                return Err(invalid(&format!(
                    "the out-of-core sorts cannot run: {error}"
                )));
            }
            // The sort runs in memory when the input and 16 bytes per record fit the budget.
            if ooc.records.saturating_mul(RECORD_LEN as u64 + 16) <= ooc.memory_bytes {
                return Err(invalid(&format!(
                    "{} out-of-core records ({:.2} GB) fit a --memory of {} bytes; the sort \
                     would not spill: lower --memory or raise --ooc-records",
                    ooc.records,
                    ooc.bytes() as f64 / 1e9,
                    ooc.memory_bytes
                )));
            }
        }
        if self.records.contains(&0) {
            return Err(invalid("a benchmark needs at least 1 record per size"));
        }
        if self.runs == 0 {
            return Err(invalid("--runs must be at least 1"));
        }
        for (i, mode) in self.extra_modes.iter().enumerate() {
            if !SORT_MODES.contains(&mode.as_str()) {
                return Err(invalid(&format!(
                    "unknown mode {mode:?}; millrace sort --mode takes {}",
                    SORT_MODES.join(", ")
                )));
            }
            if mode == BASE_MODE || self.extra_modes[..i].contains(mode) {
                return Err(invalid(&format!(
                    "mode {mode:?} is given twice ({BASE_MODE} always runs)"
                )));
            }
        }
        Ok(())
    }
}

/// The values `millrace sort --mode` takes, which `--modes` accepts. The bench passes them to
/// the sort as they are; add a mode here when the sort gets one (`ExecutionMode::as_str`;
/// a test of the CLI checks that this list and `sort --mode` agree).
pub const SORT_MODES: &[&str] = &["pipelined", "staged", "mapreduce"];

/// The mode every case always sorts with, which the others are compared with.
pub const BASE_MODE: &str = "pipelined";

/// The out-of-core variant the other modes (`--modes`) run with: one variant, so that a mode
/// adds one sort per run, not one per variant.
pub const OOC_MODES_VARIANT: &str = "default";

/// Most records per bench case (10^13 records = 1 PB; sizes stay far from u64 overflow).
const MAX_BENCH_RECORDS: u64 = 10_000_000_000_000;

/// Parses `--records` values (`10M`, `40M`, `1000`, …) into record counts; zero is rejected.
pub fn parse_record_counts(inputs: &[String]) -> Result<Vec<u64>, BenchError> {
    inputs
        .iter()
        .map(|input| match gensort::parse_record_count(input) {
            Ok(0) => Err(BenchError::NoRecords {
                input: input.clone(),
            }),
            // More than 10^15 bytes is no benchmark for one machine (and would overflow sizes).
            Ok(records) if records > MAX_BENCH_RECORDS => Err(BenchError::InvalidConfig {
                reason: format!(
                    "{input} records ({} bytes) is more than a bench can hold; at most {MAX_BENCH_RECORDS} records",
                    records as u128 * RECORD_LEN as u128
                ),
            }),
            Ok(records) => Ok(records),
            Err(source) => Err(BenchError::RecordCount {
                input: input.clone(),
                source,
            }),
        })
        .collect()
}

/// A record count as the CLI spells it: `10M`, `2G`, `1500k`, `1234`.
pub fn size_label(records: u64) -> String {
    for (divisor, suffix) in [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")] {
        // Not `is_multiple_of`: that needs Rust 1.87 and the workspace supports 1.80.
        let remainder = records % divisor;
        if records >= divisor && remainder == 0 {
            return format!("{}{suffix}", records / divisor);
        }
    }
    records.to_string()
}

/// The out-of-core target: sort time at most this many times the two-pass floor.
pub const OOC_TARGET_RATIO: f64 = 1.25;

/// Peak RSS above the budget by more than this share is flagged.
pub(super) const RSS_TOLERANCE: f64 = 0.15;

/// One way of running the out-of-core case: the spill engine and compression given to both
/// the floor and the sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OocVariant {
    /// Short name in the report.
    pub name: &'static str,
    pub spill_io: IoEngine,
    pub compression: Compression,
}

impl OocVariant {
    /// The `--spill-io` and `--compress` flags of the sort.
    pub fn sort_flags(&self) -> [&'static str; 4] {
        let io = match self.spill_io {
            IoEngine::Auto => "auto",
            IoEngine::Uring => "uring",
            IoEngine::Pwrite => "pwrite",
        };
        let compress = match self.compression {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        };
        ["--spill-io", io, "--compress", compress]
    }
}

/// The out-of-core variants, in the order they run: the default (io_uring where available,
/// lz4 where it saves 10%), then one change each.
pub const OOC_VARIANTS: [OocVariant; 4] = [
    OocVariant {
        name: "default",
        spill_io: IoEngine::Auto,
        compression: Compression::Auto,
    },
    OocVariant {
        name: "pwrite",
        spill_io: IoEngine::Pwrite,
        compression: Compression::Auto,
    },
    OocVariant {
        name: "no-lz4",
        spill_io: IoEngine::Auto,
        compression: Compression::None,
    },
    OocVariant {
        name: "lz4",
        spill_io: IoEngine::Auto,
        compression: Compression::Lz4,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_label_and_reject_bad_values() {
        let sizes = parse_record_counts(&["10M".into(), "40M".into(), "1500".into()]).unwrap();
        assert_eq!(sizes, [10_000_000, 40_000_000, 1500]);
        assert_eq!(
            sizes.iter().map(|&r| size_label(r)).collect::<Vec<_>>(),
            ["10M", "40M", "1500"]
        );
        assert_eq!(size_label(1_500_000), "1500k");
        assert_eq!(size_label(2_000_000_000), "2G");
        assert!(matches!(
            parse_record_counts(&["10X".into()]),
            Err(BenchError::RecordCount { input, .. }) if input == "10X"
        ));
        assert!(matches!(
            parse_record_counts(&["0".into()]),
            Err(BenchError::NoRecords { input }) if input == "0"
        ));
    }

    #[test]
    fn config_checks_modes() {
        let mut config = BenchConfig {
            records: vec![10],
            ascii: false,
            dir: PathBuf::from("unused"),
            keep: false,
            runs: 1,
            millrace_exe: PathBuf::from("unused"),
            out_of_core: None,
            extra_modes: vec!["staged".into(), "mapreduce".into()],
            peers: Vec::new(),
            peers_dir: None,
        };
        assert!(config.check().is_ok());
        for bad in [&["fast"][..], &["pipelined"], &["staged", "staged"]] {
            config.extra_modes = bad.iter().map(|m| m.to_string()).collect();
            assert!(
                matches!(config.check(), Err(BenchError::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn config_rejects_zero_runs() {
        let config = BenchConfig {
            records: vec![10],
            ascii: false,
            dir: PathBuf::from("unused"),
            keep: false,
            runs: 0,
            millrace_exe: PathBuf::from("unused"),
            out_of_core: None,
            extra_modes: Vec::new(),
            peers: Vec::new(),
            peers_dir: None,
        };
        assert!(matches!(
            config.check(),
            Err(BenchError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn out_of_core_config_is_checked() {
        let mut config = BenchConfig {
            records: Vec::new(),
            ascii: false,
            dir: PathBuf::from("unused"),
            keep: false,
            runs: 1,
            millrace_exe: PathBuf::from("unused"),
            out_of_core: None,
            extra_modes: Vec::new(),
            peers: Vec::new(),
            peers_dir: None,
        };
        assert!(config.check().is_err(), "nothing to measure");
        let ooc = OutOfCoreConfig {
            records: 160_000_000,
            memory_bytes: 2 << 30,
        };
        assert_eq!(ooc.bytes(), 16_000_000_000);
        assert_eq!(ooc.needed_bytes(false), 52_800_000_000);
        assert_eq!(ooc.needed_bytes(true), 70_400_000_000);
        config.out_of_core = Some(ooc);
        assert!(
            config.check().is_ok(),
            "the out-of-core case alone is enough"
        );
        // 10M records + their sort entries fit 2 GiB: the sort would not spill.
        config.out_of_core = Some(OutOfCoreConfig {
            records: 10_000_000,
            memory_bytes: 2 << 30,
        });
        assert!(matches!(
            config.check(),
            Err(BenchError::InvalidConfig { reason }) if reason.contains("would not spill")
        ));
        config.out_of_core = Some(OutOfCoreConfig {
            records: 0,
            memory_bytes: 1,
        });
        assert!(config.check().is_err());
    }

    #[test]
    fn variants_give_the_sort_flags() {
        let flags: Vec<String> = OOC_VARIANTS
            .iter()
            .map(|v| format!("{} {}", v.name, v.sort_flags().join(" ")))
            .collect();
        assert_eq!(
            flags,
            [
                "default --spill-io auto --compress auto",
                "pwrite --spill-io pwrite --compress auto",
                "no-lz4 --spill-io auto --compress none",
                "lz4 --spill-io auto --compress lz4",
            ]
        );
    }
}
