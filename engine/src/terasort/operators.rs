//! TeraSort's operators as descriptors: the serializable configuration of each vertex kind,
//! and the factories that the registry builds their subtasks with.
//!
//! What a subtask needs besides its configuration (the opened input, the output files, the
//! budgets, the spill folders, the buffer pool, the progress counters) comes from the
//! process's [`TaskResources`], through its context.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shuffle::spill::WriterOptions;

use super::external::ExternalReduceTask;
use super::map::MapTask;
use super::mapreduce::{MergingReduceTask, SortingMapTask};
use super::partitioner::{Key, RangePartitioner};
use super::reduce::ReduceTask;
use crate::operator::{OperatorDescriptor, OperatorRegistry, TaskResources, WriterOptionsDef};
use crate::task::Invokable;
use crate::EngineError;

/// What a map puts in the exchange for each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// A 16-byte `(key, position)` entry into the mapped input (in-memory plan).
    Entries,
    /// The 100-byte record (out-of-core plan).
    Records,
}

/// `terasort.map`: reads splits and range-partitions them by the output edge's boundaries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapConfig {
    /// Bytes read per call.
    pub read_chunk_bytes: usize,
    pub payload: Payload,
}

/// One reducer's key range `[lo, hi)` and the sampled bucket boundaries inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReducerRange {
    pub lo: Key,
    pub hi: Key,
    pub buckets: Vec<Key>,
}

impl ReducerRange {
    /// The bucket partitioner of this range.
    pub fn partitioner(&self) -> RangePartitioner {
        RangePartitioner::new(self.lo, self.hi, self.buckets.clone())
    }
}

/// `terasort.sort`: the in-memory reducer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InMemorySortConfig {
    /// Per subtask (reducer), its range and buckets.
    pub ranges: Vec<ReducerRange>,
    /// Bytes per output write.
    pub write_chunk_bytes: usize,
    /// Whether each reducer writes its own part file (from offset 0).
    pub parts: bool,
}

/// `terasort.external-sort`: the out-of-core reducer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalSortConfig {
    /// Bytes of records per arena (each reducer fills one while the other spills).
    pub arena_bytes: usize,
    /// The smallest budget the job could run with (for messages).
    pub minimum_bytes: u64,
    /// Raw bytes per spilled block.
    pub block_bytes: usize,
    #[serde(with = "WriterOptionsDef")]
    pub writer_options: WriterOptions,
    pub write_chunk_bytes: usize,
    pub parts: bool,
}

/// `terasort.sorting-map`: a `mapreduce` map task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortingMapConfig {
    pub read_chunk_bytes: usize,
    /// Bytes of records in the task's sort buffer (`--map-sort-buffer`).
    pub sort_buffer_bytes: usize,
    /// Raw bytes per block of map outputs.
    pub block_bytes: usize,
    #[serde(with = "WriterOptionsDef")]
    pub writer_options: WriterOptions,
    /// The smallest budget the job runs with (for messages).
    pub minimum_bytes: u64,
}

/// `terasort.merging-reduce`: a `mapreduce` reduce task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergingReduceConfig {
    pub write_chunk_bytes: usize,
    pub parts: bool,
    /// Raw bytes per block of the map outputs (what a merge cursor decodes at a time).
    pub block_bytes: usize,
    /// This reducer's share of the budget for its merge, and as much for its in-memory
    /// copies: 3/8 of what the write buffers leave, divided among the reducers.
    pub share_bytes: u64,
}

/// Registers TeraSort's operators.
pub fn register_operators(registry: &mut OperatorRegistry) {
    registry
        .register("terasort.map", map)
        .register("terasort.sort", sort)
        .register("terasort.external-sort", external_sort)
        .register("terasort.sorting-map", sorting_map)
        .register("terasort.merging-reduce", merging_reduce);
}

type Made = Result<Box<dyn Invokable>, EngineError>;

fn map(descriptor: &OperatorDescriptor, resources: &Arc<TaskResources>, _: usize) -> Made {
    let OperatorDescriptor::TeraSortMap(config) = descriptor else {
        return Err(descriptor.mismatch("terasort.map"));
    };
    if config.payload == Payload::Entries {
        resources.input("terasort.map")?.mapped()?;
    }
    Ok(Box::new(MapTask {
        config: config.clone(),
    }))
}

fn sort(descriptor: &OperatorDescriptor, resources: &Arc<TaskResources>, subtask: usize) -> Made {
    let OperatorDescriptor::TeraSortSort(config) = descriptor else {
        return Err(descriptor.mismatch("terasort.sort"));
    };
    resources.input("terasort.sort")?.mapped()?;
    let range = config
        .ranges
        .get(subtask)
        .ok_or_else(|| EngineError::Internal {
            what: format!(
                "terasort.sort subtask {subtask} has no range (the descriptor has {})",
                config.ranges.len()
            ),
        })?;
    Ok(Box::new(ReduceTask {
        buckets: range.partitioner(),
        write_chunk_bytes: config.write_chunk_bytes,
        parts: config.parts,
    }))
}

fn external_sort(
    descriptor: &OperatorDescriptor,
    resources: &Arc<TaskResources>,
    _: usize,
) -> Made {
    let OperatorDescriptor::TeraSortExternalSort(config) = descriptor else {
        return Err(descriptor.mismatch("terasort.external-sort"));
    };
    resources.memory("terasort.external-sort")?;
    Ok(Box::new(ExternalReduceTask {
        config: config.clone(),
    }))
}

fn sorting_map(descriptor: &OperatorDescriptor, resources: &Arc<TaskResources>, _: usize) -> Made {
    let OperatorDescriptor::TeraSortSortingMap(config) = descriptor else {
        return Err(descriptor.mismatch("terasort.sorting-map"));
    };
    resources.input("terasort.sorting-map")?;
    if resources.map_memory.is_none() {
        return Err(EngineError::Internal {
            what: "terasort.sorting-map needs the map slots' budget and the job has none".into(),
        });
    }
    Ok(Box::new(SortingMapTask {
        config: config.clone(),
    }))
}

fn merging_reduce(
    descriptor: &OperatorDescriptor,
    resources: &Arc<TaskResources>,
    _: usize,
) -> Made {
    let OperatorDescriptor::TeraSortMergingReduce(config) = descriptor else {
        return Err(descriptor.mismatch("terasort.merging-reduce"));
    };
    resources.memory("terasort.merging-reduce")?;
    Ok(Box::new(MergingReduceTask {
        config: config.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terasort::partitioner::KEY_SPACE_END;
    use shuffle::spill::{Compression, IoEngine};

    /// One descriptor of every TeraSort vertex kind, with extreme values where they matter.
    fn descriptors() -> Vec<OperatorDescriptor> {
        let writer_options = |io, compression| WriterOptions {
            io,
            direct: false,
            compression,
            buffer_bytes: 3 << 20,
            queue_depth: 3,
        };
        vec![
            OperatorDescriptor::TeraSortMap(MapConfig {
                read_chunk_bytes: 4 << 20,
                payload: Payload::Entries,
            }),
            OperatorDescriptor::TeraSortMap(MapConfig {
                read_chunk_bytes: 64 << 10,
                payload: Payload::Records,
            }),
            OperatorDescriptor::TeraSortSort(InMemorySortConfig {
                ranges: vec![
                    ReducerRange {
                        lo: 0,
                        hi: 1 << 79,
                        buckets: vec![1, 1, 1 << 40, (1 << 79) - 1],
                    },
                    ReducerRange {
                        lo: 1 << 79,
                        hi: KEY_SPACE_END,
                        buckets: Vec::new(),
                    },
                    ReducerRange {
                        lo: KEY_SPACE_END,
                        hi: u128::MAX,
                        buckets: vec![u128::MAX],
                    },
                ],
                write_chunk_bytes: 8 << 20,
                parts: true,
            }),
            OperatorDescriptor::TeraSortExternalSort(ExternalSortConfig {
                arena_bytes: 123_400,
                minimum_bytes: u64::MAX,
                block_bytes: 1 << 20,
                writer_options: writer_options(IoEngine::Uring, Compression::Lz4),
                write_chunk_bytes: 1 << 16,
                parts: false,
            }),
            OperatorDescriptor::TeraSortSortingMap(SortingMapConfig {
                read_chunk_bytes: 4 << 20,
                sort_buffer_bytes: 128 << 20,
                block_bytes: 16 << 10,
                writer_options: writer_options(IoEngine::Pwrite, Compression::None),
                minimum_bytes: 7,
            }),
            OperatorDescriptor::TeraSortSortingMap(SortingMapConfig {
                read_chunk_bytes: 100,
                sort_buffer_bytes: 100,
                block_bytes: 100,
                writer_options: WriterOptions::default(),
                minimum_bytes: 0,
            }),
            OperatorDescriptor::TeraSortMergingReduce(MergingReduceConfig {
                write_chunk_bytes: 4096,
                parts: true,
                block_bytes: 1 << 20,
                share_bytes: u64::MAX,
            }),
            OperatorDescriptor::generic("tool.echo", [0, u64::MAX]),
        ]
    }

    #[test]
    fn descriptors_round_trip_through_json_and_postcard() {
        let registry = OperatorRegistry::with_builtins();
        let mut covered = std::collections::BTreeSet::new();
        for descriptor in descriptors() {
            covered.insert(descriptor.kind().to_owned());
            let json = serde_json::to_string(&descriptor).unwrap();
            let back: OperatorDescriptor = serde_json::from_str(&json).unwrap();
            assert_eq!(back, descriptor, "{json}");
            assert!(
                json.starts_with(&format!("{{\"{}\"", descriptor.kind()))
                    || json.starts_with("{\"generic\""),
                "the kind leads the JSON: {json}"
            );
            let bytes = postcard::to_stdvec(&descriptor).unwrap();
            let back: OperatorDescriptor = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, descriptor);
        }
        // TeraSort's kinds here; `batch.*` in `crate::batch`'s own round-trip test.
        for kind in registry.kinds().filter(|k| k.starts_with("terasort.")) {
            assert!(covered.contains(kind), "no descriptor of {kind} tested");
        }
    }

    /// Readable JSON, as a worker or a person sees it.
    #[test]
    fn json_names_the_kind_and_the_settings() {
        let json = serde_json::to_value(OperatorDescriptor::TeraSortExternalSort(
            ExternalSortConfig {
                arena_bytes: 1000,
                minimum_bytes: 2000,
                block_bytes: 300,
                writer_options: WriterOptions::default(),
                write_chunk_bytes: 4096,
                parts: false,
            },
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"terasort.external-sort": {
                "arena_bytes": 1000,
                "minimum_bytes": 2000,
                "block_bytes": 300,
                "writer_options": {
                    "io": "auto",
                    "direct": true,
                    "compression": "auto",
                    "buffer_bytes": 4 << 20,
                    "queue_depth": 2
                },
                "write_chunk_bytes": 4096,
                "parts": false
            }})
        );
    }

    #[test]
    fn unknown_kinds_are_errors_that_name_them() {
        let resources = Arc::new(TaskResources::default());
        let error = OperatorRegistry::with_builtins()
            .instantiate(&OperatorDescriptor::generic("tool.echo", []), &resources, 0)
            .err()
            .expect("not registered");
        assert!(matches!(error, EngineError::InvalidJob { .. }));
        let text = error.to_string();
        assert!(text.contains("\"tool.echo\""), "{text}");
        assert!(
            text.contains("terasort.map"),
            "names the known kinds: {text}"
        );

        // A process whose registry lacks TeraSort cannot run its vertices.
        let map = &descriptors()[0];
        let error = OperatorRegistry::new()
            .instantiate(map, &resources, 0)
            .err()
            .expect("empty registry");
        assert!(error.to_string().contains("\"terasort.map\""), "{error}");

        // A serialized descriptor of a kind this build does not know is refused by name.
        let error =
            serde_json::from_str::<OperatorDescriptor>(r#"{"terasort.shuffle": {}}"#).unwrap_err();
        assert!(error.to_string().contains("terasort.shuffle"), "{error}");
    }

    /// Factories check the resources their operator needs, so a process that lacks one
    /// fails at deployment with a message, not inside a subtask.
    #[test]
    fn factories_check_their_resources() {
        let registry = OperatorRegistry::with_builtins();
        let bare = Arc::new(TaskResources::default());
        for descriptor in descriptors()
            .iter()
            .filter(|d| d.kind() != "tool.echo" && d.kind() != "terasort.merging-reduce")
        {
            if matches!(
                descriptor,
                OperatorDescriptor::TeraSortMap(MapConfig {
                    payload: Payload::Records,
                    ..
                })
            ) {
                // Reads through `pread` or the map: it needs the input only when it runs.
                continue;
            }
            let error = registry
                .instantiate(descriptor, &bare, 0)
                .err()
                .unwrap_or_else(|| panic!("{} built without resources", descriptor.kind()));
            assert!(error.to_string().contains("needs"), "{error}");
        }
        // The in-memory reducer copies records out of the mapped input: a read one is refused.
        let sort = &descriptors()[2];
        let resources = Arc::new(TaskResources {
            input: Some(crate::operator::JobInput {
                path: "in".into(),
                data: crate::operator::InputData::Read(tempfile::tempfile().unwrap()),
            }),
            ..TaskResources::default()
        });
        let error = registry.instantiate(sort, &resources, 0).err().unwrap();
        assert!(error.to_string().contains("mapped"), "{error}");
    }
}
