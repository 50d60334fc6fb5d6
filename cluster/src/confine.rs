//! A submitted spec's paths: made absolute against the submitting client's working folder,
//! canonicalized (links and `..` resolved) and confined to the cluster's data roots. Inputs
//! must exist; an output's folder must exist (the output itself is the job's to create).
//! The spec a worker receives holds only the canonical paths checked here.

use std::path::{Component, Path, PathBuf};

use engine::batch::JobSpec;

/// The folders jobs may read and write under, canonical.
#[derive(Clone, Debug)]
pub struct DataRoots(Vec<PathBuf>);

impl DataRoots {
    /// Canonicalizes `roots`; each must be an existing folder.
    pub fn new(roots: &[PathBuf]) -> Result<Self, String> {
        if roots.is_empty() {
            return Err("a coordinator needs at least one data root (--data-root)".into());
        }
        let mut canonical = Vec::new();
        for root in roots {
            let path = std::fs::canonicalize(root)
                .map_err(|e| format!("data root {}: {e}", root.display()))?;
            if !path.is_dir() {
                return Err(format!("data root {}: not a folder", root.display()));
            }
            canonical.push(path);
        }
        Ok(Self(canonical))
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.0
    }

    /// Resolves every path of `spec` against `cwd` and replaces it with its canonical form,
    /// or says which path is missing, outside the roots (strictly below one), inside one of
    /// the cluster's own folders (`excluded`: its state, its workers' data folders), or an
    /// input that is neither a regular file nor a folder (one line).
    pub fn confine(
        &self,
        spec: &mut JobSpec,
        cwd: &Path,
        excluded: &[PathBuf],
    ) -> Result<(), String> {
        if !cwd.is_absolute() {
            return Err(format!(
                "the client's working folder must be absolute, not {}",
                cwd.display()
            ));
        }
        let inputs = spec.steps.iter().filter(|s| s.source.is_some()).count();
        for (i, path) in spec.paths_mut().into_iter().enumerate() {
            let what = if i < inputs { "input" } else { "output" };
            let joined = cwd.join(&*path);
            let outside = || {
                format!(
                    "{what} {} is outside the cluster's data roots ({})",
                    joined.display(),
                    self.list()
                )
            };
            // A path that cannot be resolved is named as outside when it is, so that a
            // client learns nothing of what exists beyond the roots.
            let resolved = match i < inputs {
                true => std::fs::canonicalize(&joined).map_err(|e| e.to_string()),
                false => canonical_output(&joined),
            };
            let canonical = match resolved {
                Ok(canonical) => canonical,
                Err(_) if !self.inside(&lexical(&joined)) => return Err(outside()),
                Err(e) => return Err(format!("{what} {}: {e}", joined.display())),
            };
            if !self.inside(&canonical) {
                return Err(outside());
            }
            // Inside one of them, or (a folder input) holding one.
            let holds = |e: &&PathBuf| {
                canonical.starts_with(e) || (i < inputs && e.starts_with(&canonical))
            };
            if let Some(own) = excluded.iter().find(holds) {
                return Err(format!(
                    "{what} {} is inside the cluster's own files ({})",
                    joined.display(),
                    own.display()
                ));
            }
            if i < inputs {
                let meta = std::fs::metadata(&canonical)
                    .map_err(|e| format!("{what} {}: {e}", joined.display()))?;
                if !meta.is_file() && !meta.is_dir() {
                    return Err(format!(
                        "{what} {} is not a regular file or a folder",
                        joined.display()
                    ));
                }
            }
            *path = canonical;
        }
        Ok(())
    }

    /// Whether `path` lies strictly below a root.
    fn inside(&self, path: &Path) -> bool {
        self.0
            .iter()
            .any(|root| path.starts_with(root) && path != root)
    }

    fn list(&self) -> String {
        let roots: Vec<String> = self.0.iter().map(|r| r.display().to_string()).collect();
        roots.join(", ")
    }
}

/// Checks, just before a job runs, that every path of a confined spec still resolves to
/// itself: a folder replaced by a link since submission is refused (the window left is
/// between this check and the job's opening of its files).
pub fn unchanged(spec: &mut JobSpec) -> Result<(), String> {
    let inputs = spec.steps.iter().filter(|s| s.source.is_some()).count();
    for (i, path) in spec.paths_mut().into_iter().enumerate() {
        let now = match i < inputs {
            true => std::fs::canonicalize(&*path).map_err(|e| e.to_string()),
            false => canonical_output(path),
        };
        if now.as_deref() != Ok(path.as_path()) {
            return Err(format!(
                "{} changed since the job was submitted (a link?); refused",
                path.display()
            ));
        }
    }
    Ok(())
}

/// `path` with `.` and `..` taken away by name alone (no links followed).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The canonical folder of `path` joined with its last name, which must be a plain name.
fn canonical_output(path: &Path) -> Result<PathBuf, String> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => return Err("does not end in a file or folder name".into()),
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let folder = std::fs::canonicalize(parent).map_err(|e| format!("its folder: {e}"))?;
    Ok(folder.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(input: &str, output: &str) -> JobSpec {
        let text = format!(
            "[[step]]\nname = \"in\"\nsource = {{ text = {{ path = \"{input}\" }} }}\n\
             [[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"{output}\" }} }}\n"
        );
        JobSpec::parse(&text, false, Path::new(""), "test").unwrap()
    }

    fn paths(spec: &mut JobSpec) -> Vec<PathBuf> {
        spec.paths_mut().into_iter().map(|p| p.clone()).collect()
    }

    #[test]
    fn relative_paths_resolve_against_the_client_and_stay_inside_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/in.txt"), "a\n").unwrap();
        let roots = DataRoots::new(std::slice::from_ref(&root)).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let mut ok = spec("data/in.txt", "out.csv");
        roots.confine(&mut ok, &root, &[]).unwrap();
        assert_eq!(
            paths(&mut ok),
            vec![root.join("data/in.txt"), root.join("out.csv")]
        );
        // `..` that stays inside is fine; one that leaves is not.
        let mut inside = spec("data/../data/in.txt", "data/../o");
        roots.confine(&mut inside, &root, &[]).unwrap();
        let mut escape = spec("../../../../../../../etc/passwd", "out.csv");
        let error = roots.confine(&mut escape, &root, &[]).unwrap_err();
        assert!(
            error.contains("outside the cluster's data roots"),
            "{error}"
        );
        let mut absolute = spec("/etc/passwd", "out.csv");
        assert!(roots.confine(&mut absolute, &root, &[]).is_err());
        // Whether a file exists outside the roots is not told.
        let mut probe = spec("/etc/no-such-file", "out.csv");
        let error = roots.confine(&mut probe, &root, &[]).unwrap_err();
        assert!(error.contains("outside"), "{error}");
        let mut out_escape = spec("data/in.txt", "../out.csv");
        let error = roots.confine(&mut out_escape, &root, &[]).unwrap_err();
        assert!(error.starts_with("output"), "{error}");
        // A link inside the root that points out is followed, and refused.
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let mut linked = spec("etc/passwd", "out.csv");
        assert!(roots.confine(&mut linked, &root, &[]).is_err());
        let mut linked_out = spec("data/in.txt", "etc/out.csv");
        assert!(roots.confine(&mut linked_out, &root, &[]).is_err());
        // Missing inputs and output folders are named.
        let mut missing = spec("data/none.txt", "out.csv");
        let error = roots.confine(&mut missing, &root, &[]).unwrap_err();
        assert!(error.contains("none.txt"), "{error}");
        let mut no_folder = spec("data/in.txt", "nowhere/out.csv");
        assert!(roots.confine(&mut no_folder, &root, &[]).is_err());
        let mut relative_cwd = spec("data/in.txt", "out.csv");
        assert!(roots
            .confine(&mut relative_cwd, Path::new("rel"), &[])
            .is_err());
        let mut dotdot_name = spec("data/in.txt", "data/..");
        assert!(roots.confine(&mut dotdot_name, &root, &[]).is_err());
        // The root itself is not an output; the cluster's own folders are neither read nor
        // written; a FIFO is not an input.
        let mut onto_root = spec("data/in.txt", ".");
        assert!(roots
            .confine(&mut onto_root, &root.join("data"), &[])
            .is_err());
        let home = root.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("secret"), "x").unwrap();
        let mut secret = spec("home/secret", "out.csv");
        let error = roots
            .confine(&mut secret, &root, std::slice::from_ref(&home))
            .unwrap_err();
        assert!(error.contains("cluster's own files"), "{error}");
        let mut into_home = spec("data/in.txt", "home/out");
        assert!(roots
            .confine(&mut into_home, &root, std::slice::from_ref(&home))
            .is_err());
        let mut holding = spec("home", "out.csv");
        let secret_file = home.join("secret");
        assert!(roots.confine(&mut holding, &root, &[secret_file]).is_err());
        let fifo = root.join("data/fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let mut from_fifo = spec("data/fifo", "out.csv");
        let error = roots.confine(&mut from_fifo, &root, &[]).unwrap_err();
        assert!(error.contains("not a regular file"), "{error}");
        // A confined spec is unchanged until a folder on its path becomes a link.
        let mut confined = spec("data/in.txt", "out/part");
        std::fs::create_dir(root.join("out")).unwrap();
        roots.confine(&mut confined, &root, &[]).unwrap();
        unchanged(&mut confined.clone()).unwrap();
        std::fs::remove_dir(root.join("out")).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
        let error = unchanged(&mut confined).unwrap_err();
        assert!(
            error.contains("changed since the job was submitted"),
            "{error}"
        );
    }

    #[test]
    fn roots_must_be_existing_folders() {
        assert!(DataRoots::new(&[]).is_err());
        assert!(DataRoots::new(&[PathBuf::from("/nonexistent-root")]).is_err());
    }
}
