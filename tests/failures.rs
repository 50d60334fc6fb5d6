//! Failure behaviour of the binary (DESIGN.md "Failure behaviour"): each bad input or
//! environment gives exit code 2, exactly one line on stderr naming the file or folder and the
//! problem, and leaves no output and no hidden temp file behind.
//!
//! ```text
//!  fixture dir: in (+ ro/ or full/ tmpfs mounts as root) ──► millrace … ──► exit 2
//!                                                                 ├─ stderr: "error: <path>: <problem>"
//!                                                                 └─ dir listing: only what the test made
//! ```
//!
//! Cases that need a read-only or full file system mount a tmpfs when the tests run as root
//! (chmod does not stop root), use chmod otherwise, and are skipped with a message when
//! neither works.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use util::{assert_entries, assert_error, is_root, Fixture};

/// A small valid input (1000 gensort records) named `in`.
fn with_input() -> Fixture {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    f
}

#[test]
fn sort_missing_input() {
    let f = Fixture::new();
    let run = f.millrace(["sort", "missing.dat", "out"]);
    assert_error(&run, &["missing.dat", "no such file"]);
    assert_entries(&f.dir, &[]);
}

#[test]
fn sort_unreadable_input() {
    if is_root() {
        util::skip(format_args!(
            "sort_unreadable_input: running as root, chmod 000 does not stop reads"
        ));
        return;
    }
    let f = with_input();
    fs::set_permissions(f.path("in"), fs::Permissions::from_mode(0o000)).unwrap();
    let run = f.millrace(["sort", "in", "out"]);
    assert_error(&run, &["in", "permission denied"]);
    assert_entries(&f.dir, &["in"]);
}

#[test]
fn sort_input_is_a_folder() {
    let f = Fixture::new();
    fs::create_dir(f.path("data")).unwrap();
    let run = f.millrace(["sort", "data", "out"]);
    assert_error(&run, &["data", "folder"]);
    assert_entries(&f.dir, &["data"]);
    assert_entries(&f.path("data"), &[]);
}

/// 1050 bytes: ten whole records and half of one, which starts at byte offset 1000.
#[test]
fn sort_input_with_a_partial_record() {
    let f = Fixture::new();
    f.write("in", &vec![7u8; 1050]);
    let run = f.millrace(["sort", "in", "out"]);
    assert_error(&run, &["input in", "1050", "offset 1000"]);
    assert_entries(&f.dir, &["in"]);
}

/// A failed sort leaves an existing output as it was.
#[test]
fn failed_sort_keeps_the_existing_output() {
    let f = Fixture::new();
    f.write("in", &vec![7u8; 1050]);
    f.write("out", b"previous result");
    let run = f.millrace(["sort", "--force", "in", "out"]);
    assert_error(&run, &["offset 1000"]);
    assert_eq!(f.read("out"), b"previous result");
    assert_entries(&f.dir, &["in", "out"]);
}

#[test]
fn sort_output_folder_missing() {
    let f = with_input();
    for flags in [&[][..], &["--parts"][..]] {
        let mut args = vec!["sort", "in", "nodir/out"];
        args.extend_from_slice(flags);
        let run = f.millrace(&args);
        assert_error(&run, &["nodir", "does not exist"]);
        assert_entries(&f.dir, &["in"]);
    }
}

#[test]
fn sort_output_is_an_existing_folder_without_parts() {
    let f = with_input();
    fs::create_dir(f.path("sorted")).unwrap();
    let run = f.millrace(["sort", "in", "sorted"]);
    assert_error(&run, &["sorted", "folder"]);
    assert_entries(&f.dir, &["in", "sorted"]);
    assert_entries(&f.path("sorted"), &[]);
}

/// The output folder is read-only: a read-only tmpfs as root (chmod is ignored for root),
/// chmod 555 otherwise.
#[test]
fn sort_output_folder_read_only() {
    let f = with_input();
    let folder = if is_root() {
        match f.tmpfs("ro", "ro,size=1m") {
            Some(dir) => dir,
            None => {
                util::skip(format_args!(
                    "sort_output_folder_read_only: cannot mount a read-only tmpfs"
                ));
                return;
            }
        }
    } else {
        let dir = f.path("ro");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        dir
    };
    for flags in [&[][..], &["--parts"][..]] {
        let mut args = vec!["sort", "in", "ro/out"];
        args.extend_from_slice(flags);
        let run = f.millrace(&args);
        let line = assert_error(&run, &["ro"]);
        let lower = line.to_lowercase();
        assert!(
            ["not writable", "read-only", "permission denied"]
                .iter()
                .any(|p| lower.contains(p)),
            "the error should say the folder is not writable: {line:?}"
        );
        assert_entries(&folder, &[]);
        assert_entries(&f.dir, &["in", "ro"]);
    }
}

/// OUTPUT names INPUT, as given or spelled differently; the input is left intact.
#[test]
fn sort_output_is_the_input() {
    let f = with_input();
    let before = f.sha256("in");
    let absolute_dot = format!("{}/./in", f.dir.display());
    let spellings = ["in", "./in", absolute_dot.as_str()];
    for output in spellings {
        let run = f.millrace(["sort", "in", output]);
        assert_error(&run, &[output, "is the input"]);
        assert_eq!(f.sha256("in"), before, "the input is untouched");
        assert_entries(&f.dir, &["in"]);
    }
    fs::create_dir(f.path("sub")).unwrap();
    let run = f.millrace(["sort", "in", "sub/../in"]);
    assert_error(&run, &["sub/../in", "is the input"]);
    assert_entries(&f.dir, &["in", "sub"]);
    assert_eq!(f.sha256("in"), before);
}

/// Disk full while writing the output: a 2 MiB tmpfs as root, 5 MB of input elsewhere.
/// Three ways to hit it: preallocation (the default), plain writes (no fallocate), and part
/// files that grow as reducers finish.
#[test]
fn sort_disk_full() {
    let f = Fixture::new();
    f.gen(&[], "50k", "in");
    let Some(full) = f.tmpfs("full", "size=2m") else {
        util::skip(format_args!(
            "sort_disk_full: needs root to mount a small tmpfs"
        ));
        return;
    };
    let out = full.join("out");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], bool); 4] = [
        (&[], false),
        (&[], true),
        (&["--io", "buffered"], true),
        (&["--parts", "--reducers", "3"], true),
    ];
    for (flags, no_fallocate) in cases {
        let mut args = vec!["sort", "in", out];
        args.extend_from_slice(flags);
        let (mut cmd, shown) = f.command(&args);
        if no_fallocate {
            cmd.env("MILLRACE_NO_FALLOCATE", "1");
        }
        let run = util::run_with_timeout(cmd, shown, util::DEFAULT_TIMEOUT);
        assert_error(&run, &["disk full", full.to_str().unwrap()]);
        assert_entries(&full, &[]);
        assert_entries(&f.dir, &["full", "in"]);
    }
}

#[test]
fn gen_into_a_missing_folder() {
    let f = Fixture::new();
    let run = f.millrace(["gen", "1000", "nodir/f"]);
    assert_error(&run, &["nodir", "does not exist"]);
    assert_entries(&f.dir, &[]);
}

/// gen on a full file system (1 MiB tmpfs, 5 MB of records) leaves no partial file.
#[test]
fn gen_disk_full_leaves_no_partial_file() {
    let f = Fixture::new();
    let Some(full) = f.tmpfs("full", "size=1m") else {
        util::skip(format_args!(
            "gen_disk_full_leaves_no_partial_file: needs root to mount a small tmpfs"
        ));
        return;
    };
    // Refused before writing: the free space is checked first.
    let run = f.millrace(["gen", "50k", "full/g"]);
    assert_error(&run, &["full/g", "5000000 bytes", "free"]);
    assert_entries(&full, &[]);
}

#[test]
fn validate_missing_path() {
    let f = Fixture::new();
    let run = f.millrace(["validate", "missing.dat", "--summary-out", "s.sum"]);
    assert_error(&run, &["missing.dat", "no such file"]);
    assert_entries(&f.dir, &[]);
}

#[test]
fn validate_partial_record() {
    let f = Fixture::new();
    f.write("p.dat", &vec![0u8; 1050]);
    let run = f.millrace(["validate", "p.dat", "--summary-out", "s.sum"]);
    assert_error(&run, &["p.dat", "offset 1000"]);
    assert!(run.stdout.is_empty(), "{run}");
    assert_entries(&f.dir, &["p.dat"]);
}

#[test]
fn validate_empty_file() {
    let f = Fixture::new();
    f.write("empty.dat", b"");
    let run = f.millrace(["validate", "empty.dat", "--summary-out", "s.sum"]);
    assert_error(&run, &["empty.dat", "at least one record"]);
    assert!(run.stdout.is_empty(), "{run}");
    assert_entries(&f.dir, &["empty.dat"]);
}

/// An error line states each cause once. Today `main` prints `{error:#}`, which appends the
/// source chain, and the errors whose message already embeds `{source}` print the OS error
/// twice: `input x: No such file or directory (os error 2): No such file or directory (os error 2)`.
#[test]
fn errors_state_the_os_error_once() {
    let f = Fixture::new();
    fs::create_dir(f.path("data")).unwrap();
    let mut runs = vec![
        f.millrace(["sort", "missing.dat", "out"]),
        f.millrace(["sort", "data", "out"]),
        f.millrace(["gen", "10", "nodir/f"]),
        f.millrace(["validate", "missing.dat"]),
    ];
    if f.tmpfs("full", "size=1m").is_some() {
        runs.push(f.millrace(["gen", "50k", "full/g"]));
    } else {
        util::skip(format_args!(
            "the gen disk-full case of errors_state_the_os_error_once"
        ));
    }
    let mut repeated = Vec::new();
    for run in &runs {
        let line = assert_error(run, &[]);
        if repeats_a_cause(line) {
            repeated.push(format!("millrace {}: {line}", run.args.join(" ")));
        }
    }
    assert!(
        repeated.is_empty(),
        "errors repeat their cause:\n{}",
        repeated.join("\n")
    );
}

/// Whether a `: `-separated clause after the first already appears earlier in the line.
fn repeats_a_cause(line: &str) -> bool {
    let clauses: Vec<&str> = line.split(": ").collect();
    (2..clauses.len()).any(|i| {
        let clause = clauses[i].trim();
        clause.len() >= 8 && clauses[..i].join(": ").contains(clause)
    })
}

/// An error names the path the user gave, not the hidden `.NAME.millrace-tmp-PID` file that
/// was removed before the message was printed.
#[test]
fn errors_name_the_output_not_the_temp_file() {
    let f = Fixture::new();
    let mut wrong = Vec::new();
    let mut check = |run: &util::Run, output: &str| {
        let line = assert_error(run, &[]);
        if !line.contains(output) || line.contains(".millrace-tmp-") {
            wrong.push(format!("millrace {}: {line}", run.args.join(" ")));
        }
    };
    check(&f.millrace(["gen", "10", "nodir/f"]), "nodir/f");
    if let Some(full) = f.tmpfs("full", "size=1m") {
        let output = full.join("out");
        let output = output.to_str().unwrap();
        f.gen(&[], "50k", "in");
        check(&f.millrace(["sort", "in", output]), output);
        check(&f.millrace(["gen", "50k", output]), output);
    } else {
        util::skip(format_args!(
            "the disk-full half of errors_name_the_output_not_the_temp_file"
        ));
    }
    assert!(
        wrong.is_empty(),
        "errors that do not name the output as given:\n{}",
        wrong.join("\n")
    );
}
