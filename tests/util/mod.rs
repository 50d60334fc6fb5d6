//! The fixture every integration test of the `millrace` binary uses, in the style of ripgrep's
//! `tests/util.rs`: a fresh temp dir per test, a way to run the real binary in it, and the
//! assertions the tests share.
//!
//! ```text
//!  test ──► Fixture { dir } ──► millrace <args> (cwd = dir, TMPDIR = dir) ──► Run { code, stdout, stderr }
//!                 │                                                               │
//!                 └── entries(), sha256(), tmpfs mounts (root only) ◄── asserts ──┘
//! ```
//!
//! Every run has a time limit: a hung sort kills the child and fails the test instead of
//! hanging the suite.

#![allow(dead_code)]

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long one run of the binary may take before the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The gensort/valsort reference vectors, relative to this package.
pub fn gensort_testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/gensort");
    dir.is_dir().then_some(dir)
}

/// A fresh temp dir for one test; it is removed (after any tmpfs mounts in it are unmounted)
/// when the fixture is dropped.
pub struct Fixture {
    pub dir: PathBuf,
    mounts: RefCell<Vec<PathBuf>>,
    _temp: tempfile::TempDir,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The value after `"{name}: "` on a line of stdout (`Records`, `Checksum`, ...).
    pub fn field(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
    }

    /// The stdout lines, trimmed.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().map(str::trim_end).collect()
    }

    /// The stdout lines valsort would print: all but `validate`'s closing summary line.
    pub fn valsort_lines(&self) -> Vec<&str> {
        let lines = self.stdout_lines();
        match lines.split_last() {
            Some((last, rest)) if last.starts_with("validated ") => rest.to_vec(),
            _ => lines,
        }
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "millrace {}", self.args.join(" "))?;
        writeln!(f, "exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl Fixture {
    pub fn new() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("millrace-test-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create a temp dir for the test");
        Self {
            dir: temp.path().to_path_buf(),
            mounts: RefCell::new(Vec::new()),
            _temp: temp,
        }
    }

    /// `name` inside the fixture dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A command for the binary, run in the fixture dir, with TMPDIR pointing there too.
    pub fn command<I, S>(&self, args: I) -> (Command, Vec<String>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_millrace"));
        let mut shown = Vec::new();
        for arg in args {
            shown.push(arg.as_ref().to_string_lossy().into_owned());
            cmd.arg(arg.as_ref());
        }
        cmd.current_dir(&self.dir)
            .env("TMPDIR", &self.dir)
            .env_remove("RUST_LOG")
            .env_remove("MILLRACE_NO_FALLOCATE")
            .stdin(Stdio::null());
        (cmd, shown)
    }

    /// Runs the binary with `args` (relative paths are inside the fixture dir).
    pub fn millrace<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (cmd, shown) = self.command(args);
        run_with_timeout(cmd, shown, DEFAULT_TIMEOUT)
    }

    /// Runs the binary and asserts exit code 0 and a quiet stderr.
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let run = self.millrace(args);
        assert_eq!(run.code, Some(0), "expected success:\n{run}");
        assert!(
            run.stderr.trim().is_empty(),
            "expected nothing on stderr:\n{run}"
        );
        run
    }

    /// `millrace gen --checksum [flags] RECORDS OUTPUT`; returns (records, checksum).
    pub fn gen(&self, flags: &[&str], records: &str, output: &str) -> (String, String) {
        let mut args = vec!["gen", "--json", "--force"];
        args.extend_from_slice(flags);
        args.extend([records, output]);
        let json = self.ok(&args).json();
        (
            json["records"].to_string(),
            json["checksum"]
                .as_str()
                .expect("gen --json prints the checksum")
                .to_string(),
        )
    }

    /// Writes `bytes` to `name` in the fixture dir.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).expect("write a fixture file");
        path
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn sha256(&self, name: &str) -> String {
        sha256_file(&self.path(name))
    }

    /// The sorted names in the fixture dir.
    pub fn entries(&self) -> Vec<String> {
        entries(&self.dir)
    }

    /// Mounts a tmpfs with `options` (e.g. `size=2m` or `ro,size=1m`) on a new folder `name`;
    /// `None` (with a message) unless the tests run as root and mount works. Unmounted when
    /// the fixture is dropped.
    pub fn tmpfs(&self, name: &str, options: &str) -> Option<PathBuf> {
        if !is_root() {
            skip(format_args!(
                "tmpfs {options}: not running as root, cannot mount"
            ));
            return None;
        }
        let dir = self.path(name);
        fs::create_dir(&dir).expect("create a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match status {
            Ok(out) if out.status.success() => {
                self.mounts.borrow_mut().push(dir.clone());
                Some(dir)
            }
            Ok(out) => {
                skip(format_args!(
                    "tmpfs {options}: mount failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                let _ = fs::remove_dir(&dir);
                None
            }
            Err(e) => {
                skip(format_args!("tmpfs {options}: cannot run mount: {e}"));
                let _ = fs::remove_dir(&dir);
                None
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for dir in self.mounts.borrow().iter().rev() {
            let _ = Command::new("umount")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Let TempDir remove the tree even if a test made parts of it read-only.
        make_writable(&self.dir);
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(meta) = fs::symlink_metadata(&path) {
                if meta.is_dir() {
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
                    make_writable(&path);
                } else if meta.is_file() {
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
                }
            }
        }
    }
}

/// Spawns `cmd`, collects its output, and kills it (failing the test) after `timeout`.
pub fn run_with_timeout(mut cmd: Command, args: Vec<String>, timeout: Duration) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the millrace binary");
    let (stdout, stderr) = collect_output(&mut child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for millrace") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "millrace {} did not finish within {timeout:?}; killed it (hang?)",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        args,
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

type Reader = thread::JoinHandle<String>;

/// Reads the child's stdout and stderr on threads, so a full pipe never blocks it.
pub fn collect_output(child: &mut Child) -> (Reader, Reader) {
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    (
        read(Box::new(child.stdout.take().expect("piped stdout"))),
        read(Box::new(child.stderr.take().expect("piped stderr"))),
    )
}

/// The sorted names in `dir`.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("read a folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("hash a file");
    format!("{:x}", hasher.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Reports a skipped test case: on stderr (shown with `--nocapture`) and in
/// `target/tmp/skipped.txt`, which `.ci/run` prints after the tests so CI logs show every skip.
pub fn skip(message: impl std::fmt::Display) {
    use std::io::Write;
    let line = format!("SKIP {message}");
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// Whether the tests run with an effective uid of 0 (then permission bits do not stop
/// reads or writes).
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Asserts the shape of every failure (DESIGN.md "Failure behaviour"): exit code 2, exactly
/// one non-empty line on stderr, starting `error: `, containing every one of `needles`
/// (case-insensitive). Returns the line.
pub fn assert_error<'a>(run: &'a Run, needles: &[&str]) -> &'a str {
    assert_ne!(run.code, Some(0), "expected a failure:\n{run}");
    assert_eq!(run.code, Some(2), "errors exit with code 2:\n{run}");
    let lines = run.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got {}:\n{run}",
        lines.len()
    );
    let line = lines[0];
    assert!(line.starts_with("error: "), "stderr: {line:?}");
    let lower = line.to_lowercase();
    for needle in needles {
        assert!(
            lower.contains(&needle.to_lowercase()),
            "the error should mention {needle:?}: {line:?}"
        );
    }
    line
}

/// Asserts that `dir` holds exactly `expected` (sorted names): no output, no hidden temp
/// files or folders.
pub fn assert_entries(dir: &Path, expected: &[&str]) {
    let names = entries(dir);
    let hidden: Vec<&String> = names.iter().filter(|n| n.starts_with('.')).collect();
    assert!(
        hidden.is_empty(),
        "temp files left in {}: {hidden:?}",
        dir.display()
    );
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "entries of {}", dir.display());
}

/// A fast deterministic generator for test data (SplitMix64).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Record length of the Sort Benchmark format.
pub const RECORD: usize = 100;
/// Key length.
pub const KEY: usize = 10;

/// The records of `bytes` sorted stably by their 10-byte key: what `sort` must produce.
pub fn stable_sort_by_key(bytes: &[u8]) -> Vec<u8> {
    let mut records: Vec<&[u8]> = bytes.chunks_exact(RECORD).collect();
    records.sort_by(|a, b| a[..KEY].cmp(&b[..KEY]));
    records.concat()
}

/// The rows of a folder of CSV part files in name order (each part's header dropped), floats
/// to 6 decimals (sums may differ in their last bits with the order rows arrive in); sorted
/// unless `ordered`.
#[allow(dead_code)]
pub fn normalized_rows(folder: &Path, ordered: bool) -> Vec<String> {
    let mut parts: Vec<_> = fs::read_dir(folder)
        .expect("an output folder")
        .map(|e| e.expect("a part").path())
        .collect();
    parts.sort();
    let mut rows: Vec<String> = parts
        .iter()
        .flat_map(|p| {
            let text = fs::read_to_string(p).expect("a CSV part");
            text.lines().skip(1).map(str::to_string).collect::<Vec<_>>()
        })
        .map(|row| {
            row.split(',')
                .map(|v| match v.parse::<f64>() {
                    Ok(x) if v.contains('.') => format!("{x:.6}"),
                    _ => v.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    if !ordered {
        rows.sort();
    }
    rows
}
