//! gensort-identical generation, valsort-compatible validation and the benchmark runner.
#![forbid(unsafe_code)]

pub mod bench;
pub mod gensort;
pub mod valsort;
