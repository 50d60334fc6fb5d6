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

use crate::tempdir::{parent_of, TEMP_INFIX};

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

/// A path a command reads.
#[derive(Clone, Debug)]
pub struct Read {
    /// How the user named it: "input", "--summaries".
    pub role: String,
    pub path: PathBuf,
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
            path: path.into(),
        }
    }
}

impl Write {
    pub fn new(role: impl Into<String>, path: impl Into<PathBuf>, kind: OutputKind) -> Self {
        Self {
            role: role.into(),
            path: path.into(),
            kind,
        }
    }
}

/// Whether `path` names standard input or output.
pub fn is_std_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
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
    } else {
        "not a regular file"
    }
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
            if fs::metadata(&read.path).is_ok_and(|m| m.is_dir())
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
    let name = write
        .path
        .file_name()
        .ok_or_else(|| unusable("has no file name".into()))?;
    if name.to_string_lossy().contains(TEMP_INFIX) {
        return Err(unusable(
            "is named like a Millrace temp file; choose another name".into(),
        ));
    }
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
    let meta = match fs::metadata(&write.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink: the rename would replace the link; refuse like any existing
            // entry so a typo does not silently drop it.
            if fs::symlink_metadata(&write.path).is_ok() && !force {
                return Err(PathError::Exists {
                    role: write.role.clone(),
                    path: write.path.clone(),
                });
            }
            return Ok(());
        }
        Err(e) => return Err(unusable(format!("cannot be inspected: {e}"))),
    };
    let file_type = meta.file_type();
    if write.kind == OutputKind::Folder
        && fs::symlink_metadata(&write.path).is_ok_and(|m| m.file_type().is_symlink())
    {
        // The folder is swapped in by rename, which would replace the link, not fill its
        // target.
        return Err(unusable(
            "is a symbolic link; give the folder it points to".into(),
        ));
    }
    match write.kind {
        OutputKind::Folder if file_type.is_dir() => {
            let empty = fs::read_dir(&write.path)
                .map_err(|e| unusable(format!("cannot be read: {e}")))?
                .next()
                .is_none();
            if empty || force {
                Ok(())
            } else {
                Err(unusable(
                    "is a folder that is not empty; use --force to replace it".into(),
                ))
            }
        }
        OutputKind::Folder => Err(unusable(format!(
            "exists and is {}; --parts writes a folder",
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
}
