//! gensort-identical generation, valsort-compatible validation and the benchmark runner.
//! **Invariant:** `unsafe` only in `bench::child::die_with_parent` (one `pre_exec` hook).
#![deny(unsafe_code)]

pub mod bench;
pub mod gensort;
pub mod valsort;
