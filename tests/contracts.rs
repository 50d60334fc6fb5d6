//! The CLI's contracts, tried as a careless user and as an adversary would: no command ever
//! destroys a file it was not asked to write, every path is checked against every other
//! before any work, non-regular files are refused as outputs and streamed as inputs, dead
//! processes' temp files are removed by the next run, absurd flags fail cleanly, and `--json`
//! is a document a program can trust.

mod util;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{assert_entries, assert_error, entries, is_root, Fixture};

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Starts the binary with standard input, output and error piped.
fn spawn_piped(f: &Fixture, args: &[&str]) -> std::process::Child {
    let (mut cmd, _) = f.command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `sort o.dat g.dat` with both present: the swapped arguments do not overwrite g.dat.
#[test]
fn swapped_arguments_never_overwrite_an_input() {
    let f = Fixture::new();
    f.gen(&[], "1000", "g.dat");
    f.gen(&["--start", "5000"], "1000", "o.dat");
    let (g, o) = (f.sha256("g.dat"), f.sha256("o.dat"));
    let run = f.millrace(["sort", "o.dat", "g.dat"]);
    assert_error(&run, &["output g.dat exists", "--force"]);
    let run = f.millrace(["gen", "10", "g.dat"]);
    assert_error(&run, &["output g.dat exists", "--force"]);
    assert_eq!((f.sha256("g.dat"), f.sha256("o.dat")), (g, o.clone()));
    assert_entries(&f.dir, &["g.dat", "o.dat"]);
    // With --force the output is replaced, and it is the sorted input.
    f.ok(["sort", "--force", "o.dat", "g.dat"]);
    let valid = f.ok(["validate", "g.dat"]);
    assert!(valid.stdout.contains("Records: 1000"), "{valid}");
    assert_eq!(f.sha256("o.dat"), o);
}

/// `--timeline` and `--summary-out` naming the input or the output, directly, through a
/// symlink or through a hard link, are refused before any work, and nothing changes.
#[test]
fn timeline_and_summary_cannot_alias_inputs_or_outputs() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    std::os::unix::fs::symlink("in", f.path("sym")).unwrap();
    fs::hard_link(f.path("in"), f.path("hard")).unwrap();
    let before = f.sha256("in");
    for alias in ["in", "./in", "sym", "hard"] {
        let run = f.millrace(["sort", "in", "out", "--timeline", alias]);
        assert_error(&run, &["--timeline", alias, "input"]);
        let run = f.millrace(["sort", "in", "out", "--timeline", alias, "--force"]);
        assert_error(&run, &["--timeline", alias, "input"]);
        let run = f.millrace(["validate", "in", "--summary-out", alias, "--force"]);
        assert_error(&run, &["--summary-out", alias, "input"]);
        let run = f.millrace(["validate", "in", "-o", alias]);
        assert_error(&run, &["--summary-out", alias]);
    }
    // The timeline naming the output, which does not exist yet.
    let run = f.millrace(["sort", "in", "out", "--timeline", "./out"]);
    assert_error(&run, &["--timeline", "output"]);
    assert_eq!(f.sha256("in"), before);
    assert_entries(&f.dir, &["hard", "in", "sym"]);
}

/// A FIFO and a character device as outputs are refused and left as they are, even with
/// --force; so is standard output where it makes no sense.
#[test]
fn non_regular_outputs_are_refused_and_untouched() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    mkfifo(&f.path("fifo"));
    let mut nodes = vec!["fifo"];
    // A device node made in the fixture (root only): the same as /dev/null, never replaced.
    if is_root()
        && Command::new("mknod")
            .arg(f.path("null"))
            .args(["c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success())
    {
        nodes.push("null");
    } else {
        util::skip(format_args!(
            "the character-device case: needs root and mknod"
        ));
    }
    for node in &nodes {
        for force in [&[][..], &["--force"][..]] {
            let mut runs = vec![
                vec!["sort", "in", node],
                vec!["gen", "10", node],
                vec!["validate", "in", "--summary-out", node],
                vec!["sort", "in", "out", "--timeline", node],
            ];
            for args in &mut runs {
                args.extend_from_slice(force);
                let run = f.millrace(&*args);
                assert_error(&run, &[node, "regular file"]);
            }
        }
    }
    assert!(fs::symlink_metadata(f.path("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    if nodes.contains(&"null") {
        assert!(fs::symlink_metadata(f.path("null"))
            .unwrap()
            .file_type()
            .is_char_device());
    }
    let run = f.millrace(["sort", "in", "-"]);
    assert_error(&run, &["standard output"]);
    let mut expected = vec!["fifo", "in"];
    expected.extend(nodes.iter().filter(|n| **n == "null"));
    expected.sort();
    assert_entries(&f.dir, &expected);
}

/// `cat in | millrace sort - out` and a FIFO as input: sorted, valid, same checksum as the
/// input; nothing is silently lost.
#[test]
fn stdin_and_fifo_inputs_are_streamed_in() {
    let f = Fixture::new();
    let (records, checksum) = f.gen(&[], "100k", "in");
    let data = fs::read(f.path("in")).unwrap();

    let mut child = spawn_piped(&f, &["sort", "-", "from-stdin", "--json"]);
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || {
        // Uneven pieces, as a pipe delivers them.
        for piece in feed.chunks(777_777) {
            stdin.write_all(piece).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["records"].to_string(), records);
    assert_eq!(json["checksum"], checksum.as_str());

    mkfifo(&f.path("fifo"));
    let fifo = f.path("fifo");
    let feed = data.clone();
    let writer = std::thread::spawn(move || fs::write(fifo, feed).unwrap());
    let json = f.ok(["sort", "fifo", "from-fifo", "--json"]).json();
    writer.join().unwrap();
    assert_eq!(json["checksum"], checksum.as_str());

    for output in ["from-stdin", "from-fifo"] {
        let valid = f.ok(["validate", output, "--json"]).json();
        assert_eq!(valid["ordered"], true);
        assert_eq!(valid["checksum"], checksum.as_str());
    }
    assert_eq!(f.read("from-stdin"), f.read("from-fifo"));

    // validate reads standard input too.
    let (mut cmd, _) = f.command(["validate", "-", "--json"]);
    let mut child = cmd
        .stdin(fs::File::open(f.path("from-stdin")).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take();
    let out = child.wait_with_output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["checksum"], checksum.as_str());

    // A stream with a partial record is an error naming standard input; no output.
    let mut child = spawn_piped(&f, &["sort", "-", "partial"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&data[..1050])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("standard input") && stderr.contains("offset 1000"),
        "{stderr}"
    );
    assert_entries(&f.dir, &["fifo", "from-fifo", "from-stdin", "in"]);
}

/// `gen … -` streams the records to standard output, byte-identical to the file.
#[test]
fn gen_streams_to_standard_output() {
    let f = Fixture::new();
    f.gen(&["--ascii"], "2000", "file");
    let (mut cmd, _) = f.command(["gen", "--ascii", "2000", "-"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, f.read("file"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("generated 2000 records"), "{stderr}");
    // With -c, standard error holds exactly gensort's checksum line.
    let (mut cmd, _) = f.command(["gen", "-c", "1000", "-"]);
    let out = cmd.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "1ea6370b955\n");
    assert_eq!(out.stdout.len(), 100_000);
}

/// A timeline that cannot be written (its file system is full) fails the command before
/// anything is renamed: no output, no timeline, no temp files.
#[test]
fn failing_timeline_write_commits_nothing() {
    let f = Fixture::new();
    f.gen(&[], "20k", "in");
    let Some(full) = f.tmpfs("full", "size=8k") else {
        return;
    };
    // Fill the tmpfs so the check passes (the folder exists and is writable) but the write
    // fails.
    let _ = fs::write(full.join("filler"), vec![1u8; 64 << 10]);
    let run = f.millrace(["sort", "in", "out", "--timeline", "full/tl.json"]);
    assert_error(&run, &["full/tl.json"]);
    assert_entries(&f.dir, &["full", "in"]);
    assert_entries(&full, &["filler"]);
}

/// Polls until `dir` holds a Millrace temp entry or `child` exits; true if one appeared.
fn wait_for_temp(dir: &Path, child: &mut std::process::Child, infix: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if entries(dir).iter().any(|n| n.contains(infix)) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// kill -9 of a gen and of a sort leaves their temp files; the next run in that folder
/// removes them (their owner locks are free), and a running job's files are never touched.
#[test]
fn temp_files_of_killed_processes_are_removed_by_the_next_run() {
    let f = Fixture::new();
    f.gen(&[], "3M", "in");
    for args in [
        vec!["gen", "20M", "big"],
        vec!["sort", "in", "sorted"],
        vec!["sort", "in", "parts", "--parts"],
    ] {
        let (mut cmd, _) = f.command(&args);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = wait_for_temp(&f.dir, &mut child, ".millrace-tmp-");
        let _ = child.kill();
        let _ = child.wait();
        if !seen {
            util::skip(format_args!("{args:?}: finished before it could be killed"));
            continue;
        }
        assert!(
            entries(&f.dir).iter().any(|n| n.contains(".millrace-tmp-")),
            "kill -9 leaves the temp entry"
        );
        f.ok(["gen", "--force", "10", "small"]);
        let left: Vec<_> = entries(&f.dir)
            .into_iter()
            .filter(|n| n.contains(".millrace-"))
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    assert!(!f.path("big").exists() && !f.path("sorted").exists());

    // An out-of-core sort killed while it spills leaves its job folder; the next sort that
    // uses the spill folder removes it.
    fs::create_dir(f.path("spill")).unwrap();
    let ooc = [
        "sort",
        "in",
        "ooc",
        "--memory",
        "16MiB",
        "--spill-dir",
        "spill",
    ];
    let (mut cmd, _) = f.command(ooc);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = wait_for_temp(&f.path("spill"), &mut child, "millrace-job-");
    let _ = child.kill();
    let _ = child.wait();
    if seen {
        assert!(!entries(&f.path("spill")).is_empty());
        f.ok(["sort", "small", "small-sorted", "--spill-dir", "spill"]);
        assert_entries(&f.path("spill"), &[]);
        let left: Vec<_> = entries(&f.dir)
            .into_iter()
            .filter(|n| n.contains(".millrace-"))
            .collect();
        assert!(left.is_empty(), "the killed sort left {left:?}");
    } else {
        util::skip(format_args!(
            "the out-of-core kill: the sort finished first"
        ));
    }
}

/// SIGHUP (a closed terminal) and SIGTERM remove temp files like SIGINT, with the usual
/// exit codes 129 and 143.
#[test]
fn hangup_and_term_remove_temp_files_with_signal_exit_codes() {
    let f = Fixture::new();
    for (signal, code) in [("HUP", 129), ("TERM", 143)] {
        let (mut cmd, _) = f.command(["gen", "--force", "30M", "big"]);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if !wait_for_temp(&f.dir, &mut child, ".millrace-tmp-") {
            util::skip(format_args!("SIG{signal}: gen finished first"));
            continue;
        }
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "SIG{signal}");
        assert_entries(&f.dir, &[]);
    }
}

/// 40 rounds of 6 concurrent out-of-core sorts sharing one spill folder: every one succeeds
/// (no sort sweeps another's live folder), and the spill folder ends empty. A user's folder
/// named like a job folder, without Millrace's marker, survives.
#[test]
fn concurrent_out_of_core_sorts_share_a_spill_folder() {
    let f = Fixture::new();
    f.gen(&[], "30k", "in");
    fs::create_dir(f.path("spill")).unwrap();
    let users = f.path("spill/millrace-job-1-0");
    fs::create_dir(&users).unwrap();
    fs::write(users.join("notes.txt"), b"mine").unwrap();
    let rounds = 40;
    for round in 0..rounds {
        let children: Vec<_> = (0..6)
            .map(|i| {
                let out = format!("out-{i}");
                let (mut cmd, args) = f.command([
                    "sort",
                    "in",
                    &out,
                    "--force",
                    "--memory",
                    "2MiB",
                    "--reducers",
                    "2",
                    "--maps",
                    "2",
                    "--spill-dir",
                    "spill",
                    "--json",
                ]);
                let child = cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (args, child)
            })
            .collect();
        for (args, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: millrace {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(json["plan"], "out-of-core");
        }
    }
    assert_entries(&f.path("spill"), &["millrace-job-1-0"]);
    assert_eq!(fs::read(users.join("notes.txt")).unwrap(), b"mine");
}

/// Absurd flag values fail with one line, exit 2, no panic, and no file created.
#[test]
fn absurd_flags_fail_cleanly_before_any_file_is_created() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    let huge = [
        "0",
        "-1",
        "100000",
        "10000000",
        "4294967296",
        "18446744073709551615",
        "99999999999999999999999",
    ];
    for value in huge {
        for flag in ["--reducers", "--maps"] {
            let run = f.millrace(["sort", "in", "out", flag, value]);
            assert_eq!(run.code, Some(2), "{run}");
            assert!(!run.stderr.contains("panicked"), "{run}");
            // Our checks print one line; clap's parse errors add a usage hint.
            assert!(run.stderr.starts_with("error: "), "{run}");
        }
    }
    let run = f.millrace(["sort", "in", "out", "--reducers", "100000"]);
    assert_error(&run, &["--reducers 100000", "at most"]);
    let run = f.millrace([
        "sort",
        "in",
        "out",
        "--reducers",
        "30000",
        "--maps",
        "30000",
    ]);
    assert_error(
        &run,
        &[
            "too small",
            "30000 reducers",
            "at most 3 reducers",
            "--memory",
        ],
    );
    for memory in ["0", "-5", "1000T", "1e30", "nonsense"] {
        let run = f.millrace(["sort", "in", "out", "--memory", memory]);
        assert_eq!(run.code, Some(2), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
    for wait in ["-1", "99999999999999999999"] {
        let run = f.millrace(["sort", "in", "out", "--hybrid-wait-ms", wait]);
        assert_eq!(run.code, Some(2), "{run}");
    }
    // Mapreduce's flags: out of range, or a plan no map task could run, is one line and
    // nothing written.
    let mapreduce = |extra: &[&str]| {
        let mut args = vec!["sort", "in", "out", "--mode", "mapreduce"];
        args.extend_from_slice(extra);
        f.millrace(args)
    };
    for extra in [
        &["--slowstart", "2"][..],
        &["--slowstart", "-1"],
        &["--slowstart", "NaN"],
        &["--map-sort-buffer", "0"],
        &["--split-bytes", "1"],
    ] {
        let run = mapreduce(extra);
        assert_eq!(run.code, Some(2), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
    assert_error(
        &mapreduce(&["--map-sort-buffer", "100"]),
        &["--map-sort-buffer 100", "runs", "use at least"],
    );
    f.gen(&[], "40k", "in40k");
    assert_error(
        &f.millrace([
            "sort",
            "in40k",
            "out",
            "--mode",
            "mapreduce",
            "--split-bytes",
            "100",
        ]),
        &["--split-bytes 100", "40000 map tasks", "at most 32768"],
    );
    assert_error(
        &f.millrace(["sort", "in", "out", "--slowstart", "0.5"]),
        &["--mode mapreduce only"],
    );
    for count in ["1000000000000000000000G", "-5", "1e6"] {
        let run = f.millrace(["gen", count, "g"]);
        assert_eq!(run.code, Some(2), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
    assert_entries(&f.dir, &["in", "in40k"]);
}

/// `gen` larger than the free space is refused before a byte is written.
#[test]
fn gen_checks_free_space_first() {
    let f = Fixture::new();
    let Some(small) = f.tmpfs("small", "size=1m") else {
        return;
    };
    let run = f.millrace(["gen", "1G", "small/huge"]);
    assert_error(&run, &["small/huge", "100000000000 bytes", "free"]);
    assert_entries(&small, &[]);
}

/// Hadoop's and valsort's spellings.
#[test]
fn teragen_teravalidate_and_valsort_flags() {
    let f = Fixture::new();
    f.ok(["teragen", "1000", "in"]);
    f.ok(["terasort", "in", "sorted"]);
    let run = f.ok(["teravalidate", "sorted", "-o", "s.sum"]);
    assert!(run.stdout.contains("SUCCESS"), "{run}");
    assert_eq!(f.read("s.sum").len(), 280);
    let run = f.ok(["validate", "-s", "s.sum"]);
    assert!(run.stdout.contains("Records: 1000"), "{run}");
    let quiet = f.ok(["validate", "-q", "sorted"]);
    assert_eq!(quiet.stdout, "");
    let quiet = f.millrace(["validate", "-q", "in"]);
    assert_eq!((quiet.code, quiet.stdout.as_str()), (Some(1), ""));
}

/// `--json` of every command carries the envelope; errors print a JSON error object too.
#[test]
fn json_documents_carry_schema_version_and_status() {
    let f = Fixture::new();
    let gen = f.ok(["gen", "--json", "1000", "in"]).json();
    let sort = f
        .ok([
            "sort",
            "in",
            "out",
            "--json",
            "--timeline",
            "tl.json",
            "--timeline-format",
            "chrome",
        ])
        .json();
    let validate = f.ok(["validate", "out", "--json"]).json();
    for (doc, schema) in [
        (&gen, "millrace.gen"),
        (&sort, "millrace.sort"),
        (&validate, "millrace.validate"),
    ] {
        assert_eq!(doc["schema"], schema, "{doc}");
        assert_eq!(doc["schema_version"], 1, "{doc}");
        assert_eq!(doc["status"], "ok", "{doc}");
        assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"), "{doc}");
        assert!(doc["started_at"].as_str().unwrap().ends_with('Z'), "{doc}");
        assert!(doc["host"].is_string(), "{doc}");
    }
    assert_eq!(gen["checksum"], validate["checksum"]);
    let trace: serde_json::Value = serde_json::from_slice(&f.read("tl.json")).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["ph"] == "X" && e["name"] == "map"),
        "{trace}"
    );

    let error = f.millrace(["sort", "in", "out", "--json"]);
    assert_eq!(error.code, Some(2));
    assert_eq!(error.stderr.lines().count(), 1, "{error}");
    let doc = error.json();
    assert_eq!(doc["schema"], "millrace.error");
    assert_eq!(doc["status"], "error");
    assert_eq!(doc["error"]["kind"], "user");
    assert!(doc["error"]["message"].as_str().unwrap().contains("exists"));
}

/// --parts into a folder that has parts already: refused, or replaced whole with --force.
#[test]
fn parts_folder_is_replaced_only_with_force() {
    let f = Fixture::new();
    f.gen(&[], "10k", "in");
    f.ok(["sort", "in", "out", "--parts", "--reducers", "3"]);
    let run = f.millrace(["sort", "in", "out", "--parts", "--reducers", "2"]);
    assert_error(&run, &["out", "not empty", "--force"]);
    f.ok(["sort", "in", "out", "--parts", "--reducers", "2", "--force"]);
    assert_entries(&f.path("out"), &["part-00000", "part-00001"]);
    assert_entries(&f.dir, &["in", "out"]);
}

/// `--parts --force` replaces a folder of part files, never a folder that holds the input,
/// the timeline, a spill dir or anything that is not a part file.
#[test]
fn force_never_replaces_a_folder_that_holds_other_things() {
    let f = Fixture::new();
    fs::create_dir_all(f.path("proj/data/raw")).unwrap();
    fs::create_dir_all(f.path("proj/src")).unwrap();
    f.gen(&[], "1000", "proj/data/raw/in.bin");
    f.write("proj/src/main.c", b"code");
    let run = f.millrace(["sort", "proj/data/raw/in.bin", "proj", "--parts", "--force"]);
    assert_error(&run, &["output proj holds input proj/data/raw/in.bin"]);
    assert_eq!(f.read("proj/src/main.c"), b"code");
    assert!(f.path("proj/data/raw/in.bin").exists());

    f.gen(&[], "1000", "in");
    f.ok(["sort", "in", "out", "--parts", "--reducers", "2"]);
    f.write("out/notes", b"mine");
    let run = f.millrace(["sort", "in", "out", "--parts", "--force"]);
    assert_error(&run, &["out", "notes", "not a part file"]);
    assert_eq!(f.read("out/notes"), b"mine");

    fs::create_dir(f.path("empty")).unwrap();
    let run = f.millrace([
        "sort",
        "in",
        "empty",
        "--parts",
        "--timeline",
        "empty/tl.json",
    ]);
    assert_error(&run, &["output empty holds --timeline empty/tl.json"]);
    let run = f.millrace(["sort", "in", "empty", "--parts", "--spill-dir", "empty"]);
    assert_error(&run, &["output empty", "--spill-dir"]);
    assert_entries(&f.path("empty"), &[]);
}

/// Files and folders that merely look like Millrace's temp entries are never removed; only
/// marked job folders whose owner is gone are.
#[test]
fn lookalike_user_entries_are_never_swept() {
    let f = Fixture::new();
    f.gen(&[], "1000", ".data.millrace-tmp-1");
    f.write(".notes.millrace-tmp-2024", b"n");
    f.write(".millrace-tmp-7", b"file");
    fs::create_dir_all(f.path(".photos.millrace-tmp-1/sub")).unwrap();
    fs::create_dir_all(f.path(".millrace-tmp-5-0")).unwrap();
    f.write(".millrace-tmp-5-0/holiday.jpg", b"jpg");
    fs::create_dir_all(f.path(".millrace-staging-1-1")).unwrap();
    f.write(".millrace-staging-1-1/letter.txt", b"txt");
    let old = Command::new("touch")
        .args(["-d", "20 minutes ago"])
        .arg(f.path(".millrace-staging-1-1"))
        .status();
    assert!(old.is_ok_and(|s| s.success()));
    f.ok(["sort", ".data.millrace-tmp-1", "sorted.bin"]);
    f.ok(["gen", "10", "x.bin"]);
    f.ok(["validate", "sorted.bin", "-o", "s.sum"]);
    for kept in [
        ".data.millrace-tmp-1",
        ".notes.millrace-tmp-2024",
        ".millrace-tmp-7",
        ".photos.millrace-tmp-1/sub",
        ".millrace-tmp-5-0/holiday.jpg",
        ".millrace-staging-1-1/letter.txt",
    ] {
        assert!(f.path(kept).exists(), "{kept} was removed");
    }
}

/// Symbolic links as outputs are refused, with or without --force (a rename would replace the
/// link, `/dev/stdout` included), and nothing changes.
#[test]
fn symlinked_outputs_are_refused() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    f.write("victim", b"precious");
    std::os::unix::fs::symlink("victim", f.path("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", f.path("dangling")).unwrap();
    fs::create_dir(f.path("dir")).unwrap();
    std::os::unix::fs::symlink("dir", f.path("dirlink")).unwrap();
    for force in [&[][..], &["--force"][..]] {
        for output in ["link", "dangling"] {
            for mut args in [
                vec!["gen", "10", output],
                vec!["sort", "in", output],
                vec!["validate", "in", "-o", output],
                vec!["sort", "in", "out", "--timeline", output],
            ] {
                args.extend_from_slice(force);
                let run = f.millrace(&args);
                assert_error(&run, &[output, "symbolic link"]);
            }
        }
        let mut args = vec!["sort", "in", "dirlink/", "--parts"];
        args.extend_from_slice(force);
        assert_error(&f.millrace(&args), &["dirlink", "symbolic link"]);
    }
    assert_eq!(f.read("victim"), b"precious");
    assert_eq!(fs::read_link(f.path("link")).unwrap(), Path::new("victim"));
    assert_entries(
        &f.dir,
        &["dangling", "dir", "dirlink", "in", "link", "victim"],
    );
}

/// The bench never writes its report through a link, and says so before it runs anything.
#[test]
fn bench_report_is_never_written_through_a_link() {
    let f = Fixture::new();
    fs::create_dir(f.path("d")).unwrap();
    f.write("victim", b"precious");
    std::os::unix::fs::symlink("../victim", f.path("d/bench-report.json")).unwrap();
    let run = f.millrace(["bench", "--records", "1k", "--dir", "d"]);
    assert_error(&run, &["bench-report.json", "symbolic link"]);
    assert_eq!(f.read("victim"), b"precious");
    assert_entries(&f.path("d"), &["bench-report.json"]);
}

/// `sort - out < file`: standard input that is a regular file is sorted in place.
#[test]
fn stdin_redirected_from_a_file_is_sorted() {
    let f = Fixture::new();
    let (_, checksum) = f.gen(&[], "10k", "in");
    let (mut cmd, _) = f.command(["sort", "-", "out", "--json"]);
    let out = cmd
        .stdin(fs::File::open(f.path("in")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["checksum"], checksum.as_str());
}

/// A closed or full standard output ends a command quietly or with one error line, never
/// with a panic.
#[test]
fn closed_or_full_stdout_never_panics() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    let exe = env!("CARGO_BIN_EXE_millrace");
    for script in [
        format!("set -o pipefail; {exe} gen 10 g1 | true"),
        format!("set -o pipefail; {exe} sort in o1 | true"),
        format!("set -o pipefail; {exe} gen -c 10 /dev/null | true"),
        format!("{exe} gen 10 g2 > /dev/full"),
        format!("{exe} validate in --json > /dev/full"),
        format!("{exe} sort in o2 --json > /dev/full"),
        format!("{exe} gen 10 - >&-"),
    ] {
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(&f.dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{script}: {stderr}");
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "{script}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.lines().count() <= 1, "{script}: {stderr}");
    }
}

/// Argument errors are one line (and a JSON document with --json), like every other error.
#[test]
fn parse_errors_are_one_line_and_json() {
    let f = Fixture::new();
    let run = f.millrace(["sort", "a", "b", "--reducers", "-1"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(run.stderr.starts_with("error: "), "{run}");
    let run = f.millrace(["sort", "a", "b", "--json", "--reducers", "x"]);
    assert_eq!(run.code, Some(2));
    let doc = run.json();
    assert_eq!(doc["schema"], "millrace.error");
    assert_eq!(doc["command"], "sort");
    let help = f.millrace(["sort", "--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("--force"));
}

/// The input given as `-` counts as read: a `--parts --force` folder that holds the file
/// standard input comes from is refused, and so is a parts folder that holds the temp folder.
#[test]
fn stdin_and_the_temp_folder_count_as_used_paths() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    f.ok(["sort", "in", "out", "--parts", "--reducers", "1"]);
    let before = f.sha256("out/part-00000");
    let (mut cmd, _) = f.command(["sort", "-", "out", "--parts", "--force"]);
    let run = cmd
        .stdin(fs::File::open(f.path("out/part-00000")).unwrap())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("holds input -"), "{stderr}");
    assert_eq!(f.sha256("out/part-00000"), before);

    fs::create_dir_all(f.path("parts/tmp")).unwrap();
    let (mut cmd, _) = f.command(["sort", "in", "parts", "--parts"]);
    let run = cmd.env("TMPDIR", f.path("parts/tmp")).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("temp folder"), "{stderr}");
}

/// `sort -` reads standard input from where its position stands, like GNU sort.
#[test]
fn stdin_is_read_from_its_position() {
    let f = Fixture::new();
    f.gen(&[], "1000", "in");
    let exe = env!("CARGO_BIN_EXE_millrace");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "(dd bs=50000 skip=1 count=0 status=none; {exe} sort - half --json) < in"
        ))
        .current_dir(&f.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["records"], 500);
}

/// Argument errors name what is missing; paths need not be UTF-8.
#[test]
fn argument_errors_name_the_argument_and_paths_are_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let run = f.millrace(["sort", "in"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("<OUTPUT>"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.dat");
    let run = f.millrace([
        std::ffi::OsStr::new("gen"),
        std::ffi::OsStr::new("10"),
        name,
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(fs::read(f.dir.join(name)).unwrap().len(), 1000);
}
