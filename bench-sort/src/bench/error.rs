//! [`BenchError`]: everything a bench can fail with.

use std::io;
use std::path::PathBuf;

use engine::EngineError;

use crate::gensort::GenError;
use crate::valsort::ValidateError;

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The bench's work folder cannot be made in `--dir`.
    #[error("cannot create the bench work folder in {}", path.display())]
    WorkDir {
        path: std::path::PathBuf,
        source: engine::EngineError,
    },
    /// A `--records` value is not a record count.
    #[error("invalid --records value {input:?}")]
    RecordCount {
        /// The text as given.
        input: String,
        /// Why it is not a count.
        source: GenError,
    },
    /// A `--records` value is zero.
    #[error("invalid --records value {input:?}: a benchmark needs at least 1 record")]
    NoRecords {
        /// The text as given.
        input: String,
    },
    /// Nothing to measure, or zero runs.
    #[error("invalid bench config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A file system operation on the bench's own files failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Generating an input failed.
    #[error("cannot generate the bench input {}", path.display())]
    Generate {
        /// The input being generated.
        path: PathBuf,
        /// Why.
        source: GenError,
    },
    /// The bench folder's file system has too little free space for a case.
    #[error(
        "not enough free space in {} for {what}: it needs {:.1} GB, {:.1} GB are free; \
         free space, choose another --dir or use fewer records",
        dir.display(),
        *needed_bytes as f64 / 1e9,
        *available_bytes as f64 / 1e9
    )]
    NoSpace {
        /// The bench folder.
        dir: PathBuf,
        /// What needs the space.
        what: String,
        needed_bytes: u64,
        available_bytes: u64,
    },
    /// The free space of the bench folder could not be read.
    #[error("cannot find the free space of {}: {reason}", dir.display())]
    FreeSpace {
        /// The bench folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The out-of-core case did not run out of core.
    #[error("the out-of-core sort of {} ran with the {plan} plan; lower --memory or raise --ooc-records", input.display())]
    WrongPlan {
        /// The input it sorted.
        input: PathBuf,
        /// The plan the job reported.
        plan: String,
    },
    /// A report or timeline cannot be written where the bench puts it.
    #[error(transparent)]
    Output {
        source: Box<engine::paths::PathError>,
    },
    /// Writing the report failed.
    #[error("cannot write the report {}", path.display())]
    Report { path: PathBuf, source: EngineError },
    /// The floor copy failed.
    #[error("the floor copy of {} failed", input.display())]
    Floor {
        /// The input copied.
        input: PathBuf,
        /// Why.
        source: EngineError,
    },
    /// A child process (millrace sort or GNU sort) could not be started.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A child process ended with a failure.
    #[error("{tool} on {} failed ({status}); its stderr ends with:\n{stderr_tail}", input.display())]
    ChildFailed {
        /// `millrace sort` or `GNU sort`.
        tool: &'static str,
        /// The input it sorted.
        input: PathBuf,
        /// How it ended.
        status: String,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// `millrace sort --json` printed something that is not its report.
    #[error(
        "cannot read the JSON report of millrace sort on {}; it printed {stdout_head:?}",
        input.display()
    )]
    ChildReport {
        /// The input it sorted.
        input: PathBuf,
        /// The start of what it printed.
        stdout_head: String,
        /// Why parsing failed.
        source: serde_json::Error,
    },
    /// A sort's `--timeline` file is not the JSON timeline the bench reads.
    #[error("cannot read the sort timeline {}", path.display())]
    Timeline {
        /// The timeline file.
        path: PathBuf,
        /// Why parsing failed.
        source: serde_json::Error,
    },
    /// A picture could not be drawn.
    #[error("cannot draw the picture {what}: {reason}")]
    Picture {
        /// Which picture.
        what: String,
        /// Why.
        reason: String,
    },
    /// Reading a sorted output for validation failed.
    #[error("cannot validate the output of {tool}")]
    Validate {
        /// Who wrote the output.
        tool: &'static str,
        /// Why.
        source: ValidateError,
    },
    /// A `--jobs` or `bench jobs --peers` name is not one.
    #[error("unknown {what} {name:?} in {flag}; the {what}s are: {valid}")]
    UnknownName {
        /// `job` or `peer`.
        what: &'static str,
        /// The flag it was given to.
        flag: &'static str,
        /// The name as given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// `bench jobs` cannot generate its inputs: `jobs.sh setup gen` could not install numpy
    /// and pyarrow.
    #[error("bench jobs cannot generate its inputs: {reason}")]
    NoGenerator {
        /// The script's reason, with the install step.
        reason: String,
    },
    /// A `--peers` name is not a peer.
    #[error("unknown peer {name:?} in --peers; the peers are: {valid}")]
    UnknownPeer {
        /// The name as given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// `scripts/peers/run.sh setup PEER` failed for another reason than a missing install.
    #[error("the setup of peer {peer} failed ({status}); its stderr ends with:\n{stderr_tail}")]
    PeerSetup {
        peer: &'static str,
        status: String,
        stderr_tail: String,
    },
    /// A sorted output is not the input in key order; the numbers of this case are void.
    #[error(
        "the output of {tool} ({}) is not the generated input in key order: {what}",
        path.display()
    )]
    WrongOutput {
        /// Who wrote the output.
        tool: &'static str,
        /// The output.
        path: PathBuf,
        /// What differs.
        what: String,
    },
}
