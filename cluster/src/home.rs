//! `$MILLRACE_HOME` (default `~/.millrace`, mode 0700): the cluster's secret, a 0600 file
//! made by `millrace cluster up` (or by hand), which every `millrace` command that talks to
//! a cluster reads; the job history of a local cluster (`millrace.db`); and while a local
//! cluster is up, `cluster.json` (its processes) and `logs/`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shuffle::net::auth::Secret;

use crate::ClusterError;

/// `$MILLRACE_HOME`, else `~/.millrace`.
pub fn dir() -> Result<PathBuf, ClusterError> {
    if let Some(home) = std::env::var_os("MILLRACE_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".millrace")),
        None => Err(ClusterError::Usage(
            "neither MILLRACE_HOME nor HOME is set: cannot find the cluster's secret".into(),
        )),
    }
}

/// Creates `dir` (mode 0700) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<(), ClusterError> {
    std::fs::create_dir_all(dir).map_err(|e| ClusterError::file(dir, e))?;
    let mode = std::fs::metadata(dir).map_err(|e| ClusterError::file(dir, e))?;
    if mode.uid() == rustix::process::getuid().as_raw() && mode.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ClusterError::file(dir, e))?;
    }
    Ok(())
}

/// The default secret file: `$MILLRACE_HOME/secret`.
pub fn secret_file() -> Result<PathBuf, ClusterError> {
    Ok(dir()?.join("secret"))
}

/// Reads a secret file: its text without surrounding white space is the secret (at least 16
/// bytes; the REST API's bearer token is the same text). A file others can read is refused.
pub fn read_secret(path: &Path) -> Result<Secret, ClusterError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ClusterError::file(
            path,
            "no secret: start a cluster with `millrace cluster up`, or pass --secret-file",
        ),
        _ => ClusterError::file(path, e),
    })?;
    if !meta.is_file() {
        return Err(ClusterError::file(
            path,
            "the secret must be a regular file",
        ));
    }
    if meta.mode() & 0o004 != 0 {
        return Err(ClusterError::file(
            path,
            format!(
                "the secret is readable by every user (mode {:o}); chmod 600 it",
                meta.mode() & 0o777
            ),
        ));
    }
    let text = std::fs::read(path).map_err(|e| ClusterError::file(path, e))?;
    let trimmed = text.trim_ascii().to_vec();
    Secret::new(trimmed).map_err(|e| ClusterError::file(path, e))
}

/// Reads the secret at `path`, or makes one there (32 random bytes as hex, mode 0600, never
/// replacing a file that appeared meanwhile).
pub fn read_or_create_secret(path: &Path) -> Result<Secret, ClusterError> {
    if path.exists() {
        return read_secret(path);
    }
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    let random = Secret::generate()?;
    let hex: String = random.bytes().iter().map(|b| format!("{b:02x}")).collect();
    // Written whole under a temp name, then linked to its name (which never replaces a file
    // another command made meanwhile): the secret file is never seen empty or partial.
    let temp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| ClusterError::file(&temp, e))?;
    let written = (file.write_all(format!("{hex}\n").as_bytes()))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match written {
        Ok(()) => Ok(Secret::new(hex.into_bytes())?),
        // Another command made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret(path),
        Err(e) => Err(ClusterError::file(path, e)),
    }
}

/// The bearer token of REST requests: HMAC-SHA256 of the secret over a fixed label, in hex.
/// REST is plain HTTP: a token seen on the wire opens the REST API, never the HMAC key every
/// cluster connection proves (so it cannot register a worker or pose as a coordinator).
pub fn token(secret: &Secret) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.bytes()).expect("any key length");
    mac.update(b"millrace-rest-v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_secret_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/secret");
        let made = read_or_create_secret(&path).unwrap();
        assert_eq!(made.bytes().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = read_or_create_secret(&path).unwrap();
        assert_eq!(again.bytes(), made.bytes());
    }

    #[test]
    fn weak_public_or_missing_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = read_secret(&short).unwrap_err().to_string();
        assert!(error.contains("at least 16 bytes"), "{error}");
        let public = dir.path().join("public");
        std::fs::write(&public, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_secret(&public).unwrap_err().to_string();
        assert!(error.contains("readable by every user"), "{error}");
        let error = read_secret(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cluster up"), "{error}");
    }

    #[test]
    fn equal_strings_compare_equal_only() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
