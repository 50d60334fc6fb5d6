//! `terasort::run` as a library: every mode and plan, with and without part files, gives the
//! stable key order of the input (ties in input order), and nothing is left behind.

use std::path::Path;
use std::sync::Arc;

use engine::terasort::{self, ExecutionMode, Progress, SortConfig};

mod common;
use common::{records, stable_sorted};

fn read_output(path: &Path, parts: bool) -> Vec<u8> {
    if !parts {
        return std::fs::read(path).unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn every_mode_and_plan_sorts_stably() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = records(60_000, 7);
    std::fs::write(&input, &data).unwrap();
    let expected = stable_sorted(&data);
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let mut case = 0;
    for mode in [ExecutionMode::Pipelined, ExecutionMode::Staged] {
        for memory in [1u64 << 30, 6 << 20] {
            for parts in [false, true] {
                case += 1;
                let output = dir.path().join(format!("out-{case}"));
                let mut config = SortConfig::new(&input, &output);
                config.mode = mode;
                config.memory_bytes = memory;
                config.parts = parts;
                config.maps = 2;
                config.reducers = 3;
                config.spill_dirs = vec![spill.clone()];
                let report = terasort::run(&config, Arc::new(Progress::default()))
                    .unwrap_or_else(|e| panic!("{mode:?} {memory} {parts}: {e}"));
                assert_eq!(report.records, 60_000);
                let plan = if memory > 1 << 28 {
                    "in-memory"
                } else {
                    "out-of-core"
                };
                assert_eq!(report.plan, plan);
                assert!(
                    read_output(&output, parts) == expected,
                    "{mode:?} {plan} parts={parts}: not the stable key order"
                );
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "spill folder left behind"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temp entries left: {left:?}");
}
