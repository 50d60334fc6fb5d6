//! The paths a command reads and writes, checked against each other before any work is done.
//!
//! Every path a command writes (output, part folder, timeline, summary, report) is compared
//! with every path it reads and with every other path it writes, as files: by device and inode
//! when they exist (so symlinks, hard links and `..` spellings are caught), by folder identity
//! and name when they do not yet. An existing output is refused unless the command was given
//! `--force`; an output that exists and is not a regular file (a FIFO, a device, a socket) is
//! always refused, so a rename never replaces such a node. Standard output (`-`) is accepted
//! only where the caller streams to it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::tempdir::parent_of;

/// Why a set of paths cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{role} {path} is the {other_role} file {other}{how}; choose another path")]
    Alias {
        role: String,
        path: PathBuf,
        other_role: String,
        other: PathBuf,
        how: &'static str,
    },
    #[error("{role} {path} is inside {other_role} {other}, which is read; choose another folder")]
    InsideInput {
        role: String,
        path: PathBuf,
        other_role: String,
        other: PathBuf,
    },
    #[error("{role} {path} holds {other_role} {other}; choose another folder")]
    Holds {
        role: String,
        path: PathBuf,
        other_role: String,
        other: PathBuf,
    },
    #[error("{role} {path} exists; use --force to replace it")]
    Exists { role: String, path: PathBuf },
    #[error("{role} {path} {what}")]
    Unusable {
        role: String,
        path: PathBuf,
        what: String,
    },
}

/// What kind of thing an output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A regular file (replaced atomically).
    File,
    /// A folder of part files (created, or an empty one filled).
    Folder,
    /// A regular file, or `-` for standard output.
    FileOrStdout,
}

/// A path a command reads (or a folder it uses as scratch space).
#[derive(Clone, Debug)]
pub struct Read {
    /// How the user named it: "input", "--summaries", "--spill-dir".
    pub role: String,
    pub path: PathBuf,
    /// A folder the command puts its own temp files in (a spill dir): an output may sit
    /// inside it, but may not be it or hold it.
    pub scratch: bool,
}

/// A path a command writes.
#[derive(Clone, Debug)]
pub struct Write {
    /// How the user named it: "output", "--timeline", "--summary-out".
    pub role: String,
    pub path: PathBuf,
    pub kind: OutputKind,
}

impl Read {
    pub fn new(role: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            role: role.into(),
            path: normalize(&path.into()),
            scratch: false,
        }
    }

    /// A scratch folder (see [`Read::scratch`]).
    pub fn scratch(role: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            scratch: true,
            ..Self::new(role, path)
        }
    }
}

/// `path` without trailing slashes or a trailing `/.` (`out/` and `out/.` are `out`), so a
/// link named with a trailing slash is still seen as a link and a folder is renamed by its
/// own name; other spellings are kept as given, for messages.
pub fn normalize(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = path.as_os_str().as_bytes();
    loop {
        if bytes.len() > 1 && bytes.ends_with(b"/") {
            bytes = &bytes[..bytes.len() - 1];
        } else if bytes.len() > 2 && bytes.ends_with(b"/.") {
            bytes = &bytes[..bytes.len() - 2];
        } else {
            break;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

impl Write {
    pub fn new(role: impl Into<String>, path: impl Into<PathBuf>, kind: OutputKind) -> Self {
        Self {
            role: role.into(),
            path: normalize(&path.into()),
            kind,
        }
    }
}

/// Whether `path` names standard input or output.
pub fn is_std_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Bytes an unprivileged user may still write on the file system holding `folder`
/// (`statvfs`: available blocks × fragment size, as `df` reports "Available").
pub fn available_bytes(folder: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(folder)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Identity of a path as a file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    /// An existing file: device and inode.
    Node(u64, u64),
    /// A file still to be created: its folder's device and inode, and its name.
    New(u64, u64, OsString),
}

fn identity(path: &Path) -> Option<Identity> {
    let path = if is_std_stream(path) {
        Path::new("/dev/stdin")
    } else {
        path
    };
    match fs::metadata(path) {
        Ok(meta) => Some(Identity::Node(meta.dev(), meta.ino())),
        Err(_) => {
            let name = path.file_name()?.to_os_string();
            let folder = fs::metadata(parent_of(path)).ok()?;
            Some(Identity::New(folder.dev(), folder.ino(), name))
        }
    }
}

/// Describes a file type for an error message.
fn kind_of(file_type: fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_dir() {
        "a folder"
    } else if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Whether a folder entry is a part file Millrace writes (`part-00000`, a regular file).
pub(crate) fn is_part_file(entry: &fs::DirEntry) -> bool {
    let name = entry.file_name();
    let name = name.to_string_lossy();
    name.strip_prefix("part-")
        .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
        && entry.file_type().is_ok_and(|t| t.is_file())
}

/// Device and inode of `path` and of every folder above it (of its folder and above when it
/// does not exist yet).
fn lineage(path: &Path) -> Vec<(u64, u64)> {
    let start = fs::canonicalize(path).or_else(|_| fs::canonicalize(parent_of(path)));
    let Ok(start) = start else {
        return Vec::new();
    };
    start
        .ancestors()
        .filter_map(|a| fs::metadata(a).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// Whether `path` is the folder `folder` or lies anywhere below it.
fn within(path: &Path, folder: &Path) -> bool {
    let Ok(meta) = fs::metadata(folder) else {
        return false;
    };
    lineage(path).contains(&(meta.dev(), meta.ino()))
}

/// Checks every write against every read and every other write, then each write on its own.
/// Returns the first problem found; does not create or change anything.
pub fn check(reads: &[Read], writes: &[Write], force: bool) -> Result<(), PathError> {
    for (i, write) in writes.iter().enumerate() {
        if is_std_stream(&write.path) {
            check_output(write, force)?;
            continue;
        }
        let id = identity(&write.path);
        let links = fs::symlink_metadata(&write.path).is_ok_and(|m| m.file_type().is_symlink());
        let how = if links { " (through a link)" } else { "" };
        for read in reads {
            if id.is_some() && identity(&read.path) == id {
                return Err(PathError::Alias {
                    role: write.role.clone(),
                    path: write.path.clone(),
                    other_role: read.role.clone(),
                    other: read.path.clone(),
                    how,
                });
            }
            // An output inside a folder that is read would become part of it.
            if !read.scratch
                && fs::metadata(&read.path).is_ok_and(|m| m.is_dir())
                && identity(&parent_of(&write.path)) == identity(&read.path)
            {
                return Err(PathError::InsideInput {
                    role: write.role.clone(),
                    path: write.path.clone(),
                    other_role: read.role.clone(),
                    other: read.path.clone(),
                });
            }
        }
        for other in &writes[..i] {
            if !is_std_stream(&other.path) && id.is_some() && identity(&other.path) == id {
                return Err(PathError::Alias {
                    role: write.role.clone(),
                    path: write.path.clone(),
                    other_role: other.role.clone(),
                    other: other.path.clone(),
                    how,
                });
            }
        }
        // A folder output is filled with parts and, with --force, replaced whole: nothing
        // else the command touches may be in it.
        if write.kind == OutputKind::Folder {
            let others = reads.iter().map(|r| (&r.role, &r.path)).chain(
                writes
                    .iter()
                    .filter(|w| !std::ptr::eq(*w, write))
                    .map(|w| (&w.role, &w.path)),
            );
            for (role, path) in others {
                // `-` is standard input: whatever file it is redirected from.
                let path_or_stdin = if is_std_stream(path) {
                    Path::new("/dev/stdin")
                } else {
                    path.as_path()
                };
                if within(path_or_stdin, &write.path) {
                    return Err(PathError::Holds {
                        role: write.role.clone(),
                        path: write.path.clone(),
                        other_role: role.clone(),
                        other: path.clone(),
                    });
                }
            }
        }
        check_output(write, force)?;
    }
    Ok(())
}

/// One output on its own: a usable folder to create it in, and nothing in the way.
fn check_output(write: &Write, force: bool) -> Result<(), PathError> {
    let unusable = |what: String| PathError::Unusable {
        role: write.role.clone(),
        path: write.path.clone(),
        what,
    };
    if is_std_stream(&write.path) {
        return match write.kind {
            OutputKind::FileOrStdout => Ok(()),
            _ => Err(unusable(
                "is standard output, which this output cannot be; give a file path".into(),
            )),
        };
    }
    write
        .path
        .file_name()
        .ok_or_else(|| unusable("has no file name".into()))?;
    let folder = parent_of(&write.path);
    match fs::metadata(&folder) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(unusable(format!(
                "is in {}, which is not a folder",
                folder.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(unusable(format!(
                "is in folder {}, which does not exist",
                folder.display()
            )))
        }
        Err(e) => return Err(unusable(format!("is in folder {}: {e}", folder.display()))),
    }
    if let Err(e) = rustix::fs::access(&folder, rustix::fs::Access::WRITE_OK) {
        return Err(unusable(format!(
            "cannot be created: folder {} is not writable ({})",
            folder.display(),
            io::Error::from(e)
        )));
    }
    // An output is replaced by a rename, which would replace a link rather than its target
    // (`/dev/stdout` is a link): links are refused, dangling or not.
    if fs::symlink_metadata(&write.path).is_ok_and(|m| m.file_type().is_symlink()) {
        let hint = if write.kind == OutputKind::FileOrStdout {
            " (- is standard output)"
        } else {
            ""
        };
        return Err(unusable(format!(
            "is a symbolic link; give the path of the file or folder itself{hint}"
        )));
    }
    let meta = match fs::metadata(&write.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unusable(format!("cannot be inspected: {e}"))),
    };
    let file_type = meta.file_type();
    match write.kind {
        OutputKind::Folder if file_type.is_dir() => {
            let entries: Vec<_> = fs::read_dir(&write.path)
                .map_err(|e| unusable(format!("cannot be read: {e}")))?
                .flatten()
                .collect();
            if entries.is_empty() {
                return Ok(());
            }
            if !force {
                return Err(unusable(
                    "is a folder that is not empty; use --force to replace it".into(),
                ));
            }
            // --force replaces a folder of part files, nothing else.
            match entries.iter().find(|e| !is_part_file(e)) {
                None => Ok(()),
                Some(other) => Err(unusable(format!(
                    "holds {}, which is not a part file; Millrace replaces only a folder of part files (remove it yourself or choose another folder)",
                    other.file_name().to_string_lossy()
                ))),
            }
        }
        OutputKind::Folder => Err(unusable(format!(
            "exists and is {}; this output is a folder of part files",
            kind_of(file_type)
        ))),
        _ if file_type.is_file() => {
            if force {
                Ok(())
            } else {
                Err(PathError::Exists {
                    role: write.role.clone(),
                    path: write.path.clone(),
                })
            }
        }
        _ if file_type.is_dir() => Err(unusable("is a folder; give a file path".into())),
        _ => Err(unusable(format!(
            "is {}; Millrace writes regular files only and never replaces other nodes",
            kind_of(file_type)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_write(path: &Path) -> Write {
        Write::new("output", path, OutputKind::File)
    }

    #[test]
    fn aliases_through_spellings_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        fs::write(&input, b"x").unwrap();
        let read = [Read::new("input", &input)];
        let symlink = dir.path().join("sym");
        std::os::unix::fs::symlink(&input, &symlink).unwrap();
        let hard = dir.path().join("hard");
        fs::hard_link(&input, &hard).unwrap();
        for alias in [dir.path().join(".").join("in"), symlink, hard] {
            for force in [false, true] {
                let error = check(&read, &[file_write(&alias)], force).unwrap_err();
                assert!(
                    matches!(error, PathError::Alias { .. }),
                    "{alias:?}: {error}"
                );
            }
        }
    }

    #[test]
    fn two_outputs_that_do_not_exist_yet_collide_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("out");
        let b = dir.path().join("sub").join("..").join("out");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let writes = [
            file_write(&a),
            Write::new("--timeline", &b, OutputKind::File),
        ];
        let error = check(&[], &writes, false).unwrap_err().to_string();
        assert!(
            error.contains("--timeline") && error.contains("output"),
            "{error}"
        );
    }

    #[test]
    fn existing_outputs_need_force_and_nodes_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("old");
        fs::write(&existing, b"keep").unwrap();
        assert!(matches!(
            check(&[], &[file_write(&existing)], false),
            Err(PathError::Exists { .. })
        ));
        check(&[], &[file_write(&existing)], true).unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        for force in [false, true] {
            let error = check(&[], &[file_write(&fifo)], force).unwrap_err();
            assert!(error.to_string().contains("FIFO"), "{error}");
            let error = check(&[], &[file_write(Path::new("/dev/null"))], force).unwrap_err();
            assert!(error.to_string().contains("character device"), "{error}");
        }
        assert!(check(&[], &[file_write(Path::new("-"))], false).is_err());
        check(
            &[],
            &[Write::new("output", "-", OutputKind::FileOrStdout)],
            false,
        )
        .unwrap();
    }

    #[test]
    fn missing_folder_and_output_inside_a_read_folder() {
        let dir = tempfile::tempdir().unwrap();
        let error = check(&[], &[file_write(&dir.path().join("no/out"))], false).unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        let parts = dir.path().join("parts");
        fs::create_dir(&parts).unwrap();
        let error = check(
            &[Read::new("input", &parts)],
            &[file_write(&parts.join("sum"))],
            false,
        )
        .unwrap_err();
        assert!(matches!(error, PathError::InsideInput { .. }), "{error}");
    }

    #[test]
    fn a_parts_folder_given_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let write = Write::new("output", dir.path().join("link"), OutputKind::Folder);
        let error = check(&[], &[write], true).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let write = Write::new("output", dir.path().join("real"), OutputKind::Folder);
        check(&[], &[write], false).unwrap();
    }

    #[test]
    fn trailing_slashes_and_dots_go() {
        for (given, normal) in [
            ("out/", "out"),
            ("out/.", "out"),
            ("out//./", "out"),
            ("a/./b", "a/./b"),
            ("/", "/"),
            (".", "."),
            ("-", "-"),
        ] {
            assert_eq!(normalize(Path::new(given)), Path::new(normal), "{given}");
        }
    }
}
