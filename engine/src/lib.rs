//! Millrace engine: the runtime that runs dataflow jobs (job graph, scheduler, subtasks) and
//! the TeraSort job built on it.
#![deny(unsafe_code)]
//! **Invariant:** `unsafe` only in `record/crc32.rs` (CPU-feature dispatch, prefetch), `terasort/input.rs` (mapping the input) and `memory::cap_allocator_arenas` (one `mallopt` call).

pub mod batch;
pub mod cleanup;
mod error;
pub mod graph;
pub mod memory;
pub mod operator;
pub mod output;
pub mod paths;
pub mod placement;
pub mod process;
pub mod record;
pub mod scheduler;
pub mod source;
pub mod task;
pub mod tempdir;
pub mod terasort;
pub mod timeline;

pub use error::{EngineError, ErrorDomain};
/// The spill-file settings the engine's configuration refers to.
pub use shuffle::spill;
