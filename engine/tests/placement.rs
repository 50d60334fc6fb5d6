//! Subtasks placed on task executors (`engine::placement`): TeraSort and a batch job give the
//! same output on three executors, where every cross-executor pipelined channel goes over
//! TCP, as on one executor or without a placement.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use engine::batch::{BatchJobConfig, Mode};
use engine::placement::Placement;
use engine::terasort::{self, ExecutionMode, Progress, SortConfig};

mod common;
use common::{records, stable_sorted};

/// `executors` executors with 6 slots between them (a pipelined region of 3 + 3 subtasks
/// fits exactly).
fn placement(executors: usize) -> Option<Placement> {
    Some(Placement {
        executors,
        slots: 6 / executors,
    })
}

/// TeraSort, 3 maps × 3 reducers, on 3 executors and on 1: the same bytes, in the stable key
/// order. Pipelined in memory and out of core, the 6 channels between executors cross TCP
/// (the connections wrote bytes), the 3 inside one stay in-process; a hybrid exchange and a
/// blocking one (staged) stay in-process whole.
#[test]
fn terasort_on_three_executors_gives_the_single_executor_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = records(60_000, 11);
    std::fs::write(&input, &data).unwrap();
    let expected = stable_sorted(&data);
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    // (mode, memory, hybrid wait, channels over TCP)
    let cases = [
        (ExecutionMode::Pipelined, 1u64 << 30, None, 6),
        (ExecutionMode::Pipelined, 6 << 20, None, 6),
        (
            ExecutionMode::Pipelined,
            6 << 20,
            Some(std::time::Duration::from_millis(50)),
            0,
        ),
        (ExecutionMode::Staged, 1 << 30, None, 0),
    ];
    for (case, (mode, memory, hybrid_wait, remote)) in cases.into_iter().enumerate() {
        let mut outputs = Vec::new();
        for executors in [1, 3] {
            let output = dir.path().join(format!("out-{case}-{executors}"));
            let mut config = SortConfig::new(&input, &output);
            config.mode = mode;
            config.memory_bytes = memory;
            config.hybrid_wait = hybrid_wait;
            config.maps = 3;
            config.reducers = 3;
            config.spill_dirs = vec![spill.clone()];
            config.placement = placement(executors);
            let started = std::time::Instant::now();
            let report = terasort::run(&config, Arc::new(Progress::default()))
                .unwrap_or_else(|e| panic!("case {case} on {executors}: {e}"));
            eprintln!(
                "case {case} ({mode:?}, {} plan) on {executors} executors: {:?}, {:?}",
                report.plan,
                started.elapsed(),
                report.network
            );
            assert_eq!(report.records, 60_000);
            let network = report.network.expect("a placed sort reports its network");
            assert_eq!(network.executors, executors);
            if executors == 1 {
                assert_eq!(network.remote_channels, 0);
                assert_eq!(network.bytes_sent, 0);
            } else {
                assert_eq!(network.remote_channels, remote, "case {case}");
                if remote > 0 {
                    assert_eq!(network.local_channels, 3);
                    assert!(network.buffers_sent > 0, "case {case}: {network:?}");
                    // Every map sent to every reducer: at least the entries (16 bytes) or
                    // records (100 bytes) of the two thirds that crossed.
                    assert!(
                        network.bytes_sent > 60_000 * 16 / 2,
                        "case {case}: {network:?}"
                    );
                }
            }
            outputs.push(std::fs::read(&output).unwrap());
        }
        assert!(
            outputs[0] == expected,
            "case {case}: not the stable key order"
        );
        assert!(
            outputs[1] == outputs[0],
            "case {case}: 3 executors differ from 1"
        );
    }
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
}

const WORDS: [&str; 12] = [
    "mill",
    "race",
    "sort",
    "shuffle",
    "credit",
    "region",
    "slot",
    "executor",
    "gate",
    "partition",
    "buffer",
    "channel",
];

/// A word count in every mode, 3 subtasks per stage: on 3 executors the same counts as
/// without a placement; pipelined, its hash exchanges cross TCP.
#[test]
fn word_count_on_executors_gives_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut state = 7u64;
    for line in 0..20_000u64 {
        for word in 0..(line % 7 + 1) {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = WORDS[(state >> 33) as usize % WORDS.len()];
            text.push_str(&format!("{w}{} ", (state >> 40) % 50 + word));
        }
        text.push('\n');
    }
    let input = dir.path().join("in.txt");
    std::fs::write(&input, &text).unwrap();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_string()).or_default() += 1;
    }
    let run = |mode: Mode, placement: Option<Placement>, name: &str| {
        let out = dir.path().join(name);
        let spec = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &spec,
            format!(
                r#"
name = "wc"
[[step]]
name = "lines"
source = {{ text = {{ path = "{}" }} }}
[[step]]
name = "words"
tokenize = {{ column = "line" }}
[[step]]
name = "counts"
aggregate = {{ keys = ["word"], aggregates = [{{ fn = "count", as = "n" }}] }}
[[step]]
name = "out"
sink = {{ csv = {{ path = "{}" }} }}
"#,
                input.display(),
                out.display()
            ),
        )
        .unwrap();
        let config = BatchJobConfig {
            spec,
            mode: Some(mode),
            parallelism: Some(3),
            memory_bytes: Some(64 << 20),
            spill_dir: Some(dir.path().to_path_buf()),
            max_attempts: 2,
            placement,
            ..BatchJobConfig::default()
        };
        let result = engine::batch::run(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
        (counts(&out), result.network)
    };
    for mode in [Mode::Pipelined, Mode::Staged, Mode::MapReduce] {
        let (alone, network) = run(mode, None, &format!("{mode:?}-alone"));
        assert!(network.is_none());
        assert_eq!(alone, expected, "{mode:?} without a placement");
        let (placed, network) = run(mode, placement(3), &format!("{mode:?}-placed"));
        assert_eq!(placed, expected, "{mode:?} on 3 executors");
        let network = network.expect("a placed job reports its network");
        eprintln!("word count {mode:?} on 3 executors: {network:?}");
        if mode == Mode::Pipelined {
            assert!(network.remote_channels > 0, "{network:?}");
            assert!(network.bytes_sent > 0, "{network:?}");
        } else {
            assert_eq!(
                network.remote_channels, 0,
                "blocking exchanges stay in-process"
            );
        }
    }
}

/// The `word,n` rows of a CSV parts folder.
fn counts(folder: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| *l != "word,n") {
            let (word, n) = line.split_once(',').unwrap();
            assert!(counts
                .insert(word.to_string(), n.parse().unwrap())
                .is_none());
        }
    }
    counts
}
