//! The machine the numbers come from: [`Machine`] (cores, CPU, memory, kernel, the bench
//! folder's file system), the git commit being measured, and free space from `df`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

use super::{BenchError, OutOfCoreConfig};

/// What the report says about the machine.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `available_parallelism`.
    pub cores: usize,
    /// `/proc/cpuinfo` "model name".
    pub cpu: Option<String>,
    /// `/proc/meminfo` MemTotal.
    pub mem_total_bytes: Option<u64>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// File system type of the bench folder, from `/proc/self/mountinfo`.
    pub dir_fs: Option<String>,
}

impl Machine {
    /// Looks at this machine; every source is optional (non-Linux systems lack `/proc`).
    pub fn detect(dir: &Path) -> Self {
        let read = |path: &str| fs::read_to_string(path).ok();
        Self {
            cores: cores(),
            cpu: read("/proc/cpuinfo").and_then(|s| cpu_model(&s)),
            mem_total_bytes: engine::memory::total_ram_bytes(),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            dir_fs: fs::canonicalize(dir)
                .ok()
                .and_then(|dir| fs_type(&read("/proc/self/mountinfo")?, &dir)),
        }
    }

    /// One line: `2 cores (AMD EPYC 7B13), 23.4 GiB RAM, Linux 6.1.0, bench folder on ext4`.
    pub fn describe(&self) -> String {
        let mut line = format!("{} cores", self.cores);
        if let Some(cpu) = &self.cpu {
            line += &format!(" ({cpu})");
        }
        if let Some(bytes) = self.mem_total_bytes {
            line += &format!(", {:.1} GiB RAM", bytes as f64 / (1u64 << 30) as f64);
        }
        if let Some(kernel) = &self.kernel {
            line += &format!(", Linux {kernel}");
        }
        if let Some(fs) = &self.dir_fs {
            line += &format!(", bench folder on {fs}");
        }
        line
    }
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The first "model name" of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The file system type of the mount holding `path` (absolute, canonical), from the text of
/// `/proc/self/mountinfo`: the longest mount point that is a prefix of `path`, the last one
/// when mounts are stacked.
fn fs_type(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // "36 35 98:0 /root /mount/point opts [optional fields...] - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount_point), Some(fs)) = (left.split(' ').nth(4), right.split(' ').next())
        else {
            continue;
        };
        let mount_point = unescape_mountinfo(mount_point);
        let depth = Path::new(&mount_point).components().count();
        if !path.starts_with(&mount_point) {
            continue;
        }
        // `>=`: a later mount on the same point hides the earlier one.
        match &best {
            Some((best_depth, _)) if depth < *best_depth => {}
            _ => best = Some((depth, fs.to_owned())),
        }
    }
    best.map(|(_, fs)| fs)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that the file system of `dir` has room for the out-of-core case; returns the free
/// bytes.
pub(super) fn check_free_space(
    dir: &Path,
    ooc: &OutOfCoreConfig,
    blocking_modes: bool,
) -> Result<u64, BenchError> {
    let available_bytes = free_bytes(dir)?;
    let needed_bytes = ooc.needed_bytes(blocking_modes);
    if available_bytes < needed_bytes {
        return Err(BenchError::NoSpace {
            dir: dir.to_path_buf(),
            what: format!(
                "the out-of-core case ({:.1} GB of input, {}spill and output at once, plus 10%)",
                ooc.bytes() as f64 / 1e9,
                if blocking_modes { "map outputs, " } else { "" }
            ),
            needed_bytes,
            available_bytes,
        });
    }
    Ok(available_bytes)
}

/// Bytes available to this user on the file system of `dir`.
pub(super) fn free_bytes(dir: &Path) -> Result<u64, BenchError> {
    engine::paths::available_bytes(dir).map_err(|e| BenchError::FreeSpace {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The working directory's commit, `+dirty` if tracked files changed; `None` outside git.
pub(super) fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { commit + "+dirty" } else { commit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        let mountinfo = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /work rw shared:2 - xfs /dev/vdb rw
31 30 0:27 / /work/my\\040data rw - tmpfs tmpfs rw
";
        assert_eq!(
            fs_type(mountinfo, Path::new("/work/main")).as_deref(),
            Some("xfs")
        );
        assert_eq!(
            fs_type(mountinfo, Path::new("/workshop")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            fs_type(mountinfo, Path::new("/work/my data/x")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(fs_type("garbage", Path::new("/")), None);
    }

    #[test]
    fn too_little_space_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let huge = OutOfCoreConfig {
            records: 1 << 50,
            memory_bytes: 2 << 30,
        };
        let error = check_free_space(dir.path(), &huge, true).unwrap_err();
        assert!(matches!(error, BenchError::NoSpace { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("not enough free space") && text.contains("GB"),
            "{text}"
        );
    }
}
