//! What `millrace bench sort` leaves in `--dir`: the JSON report with every raw run, the
//! Markdown report with one summary row per case and tool or mode, and SVG pictures (a
//! timeline per case and mode with one lane per subtask, a time chart per case), and nothing
//! of earlier benches' timelines and pictures.

mod util;

use std::collections::BTreeSet;

use serde_json::Value;
use util::Fixture;

/// The texts of an SVG file, which must parse as XML with an `<svg>` root.
fn svg_texts(f: &Fixture, name: &str) -> Vec<String> {
    let bytes = f.read(name);
    let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"));
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{name} is not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "{name}");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_owned())
        .collect()
}

/// Rows of the Markdown table whose header line is `header`.
fn table_rows<'a>(markdown: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    let mut lines = markdown.lines().skip_while(|l| *l != header);
    assert_eq!(
        lines.next(),
        Some(header),
        "no table {header:?} in:\n{markdown}"
    );
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

const SUMMARY_HEADER: &str =
    "| case | tool | mode | wall s | ÷ floor | ÷ pipelined | CPU s/GB | peak RSS MiB | overlap |";

#[test]
fn bench_writes_json_markdown_and_svg_pictures() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("b")).unwrap();
    // Left by an earlier bench with other cases: removed. Other files stay.
    f.write("b/bench-timeline-40M-binary.svg", b"<svg/>");
    f.write("b/bench-times-40M-binary.svg", b"<svg/>");
    f.write("b/notes.txt", b"mine");
    let run = f.millrace([
        "bench",
        "sort",
        "--records",
        "20k",
        "--runs",
        "1",
        "--modes",
        "pipelined,staged,mapreduce",
        "--out-of-core",
        "--ooc-records",
        "100k",
        "--memory",
        "4MiB",
        "--dir",
        "b",
    ]);
    assert_eq!(run.code, Some(0), "{run}");

    let timelines = [
        "20k-binary",
        "20k-binary-staged",
        "20k-binary-mapreduce",
        "100k-ooc-default",
        "100k-ooc-pwrite",
        "100k-ooc-no-lz4",
        "100k-ooc-lz4",
        "100k-ooc-default-staged",
        "100k-ooc-default-mapreduce",
    ];
    let mut expected = vec![
        "bench-report.json".to_owned(),
        "bench-report.md".to_owned(),
        "bench-times-20k-binary.svg".to_owned(),
        "bench-times-100k-ooc.svg".to_owned(),
        "notes.txt".to_owned(),
    ];
    for t in timelines {
        expected.push(format!("bench-timeline-{t}.json"));
        expected.push(format!("bench-timeline-{t}.svg"));
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    util::assert_entries(&f.path("b"), &expected);

    // JSON: environment and every raw run, not only medians.
    let report: Value = serde_json::from_slice(&f.read("b/bench-report.json")).unwrap();
    assert!(
        report["machine"]["cores"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let case = &report["cases"][0];
    assert_eq!(case["floor_runs_s"].as_array().unwrap().len(), 1);
    let sort_run = &case["sort_runs"][0];
    assert!(sort_run["wall_s"].as_f64().unwrap() > 0.0, "{sort_run}");
    assert!(sort_run["phases"].as_array().is_some_and(|p| !p.is_empty()));
    let staged = &case["modes"][0];
    assert_eq!(staged["mode"], "staged");
    assert_eq!(staged["runs"].as_array().unwrap().len(), 1);
    // Staged reducers start after the last map: nothing of the reduce side overlaps.
    assert_eq!(staged["runs"][0]["map_reduce_overlap"], 0.0, "{staged}");
    let ooc = &report["out_of_core"];
    for v in ooc["variants"].as_array().unwrap() {
        assert_eq!(v["floor_runs"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["sort_runs"].as_array().unwrap().len(), 1, "{v}");
    }
    for (i, mode) in ["staged", "mapreduce"].into_iter().enumerate() {
        assert_eq!(ooc["modes"][i]["mode"], mode);
        assert_eq!(ooc["modes"][i]["runs"][0]["plan"], "out-of-core", "{mode}");
    }
    assert_eq!(report["pictures"].as_array().unwrap().len(), 11);

    // Markdown: the stdout report, and one summary row per case × tool/mode.
    let markdown = String::from_utf8(f.read("b/bench-report.md")).unwrap();
    assert_eq!(markdown.trim_end(), run.stdout.trim_end());
    let rows = table_rows(&markdown, SUMMARY_HEADER);
    let keys: BTreeSet<(String, &str, &str)> =
        rows.iter().map(|r| (r[0].to_owned(), r[1], r[2])).collect();
    let mut want = BTreeSet::new();
    for mode in ["pipelined", "staged", "mapreduce"] {
        want.insert(("20k binary".to_owned(), "millrace", mode));
        want.insert(("100k ooc default".to_owned(), "millrace", mode));
    }
    for variant in ["pwrite", "no-lz4", "lz4"] {
        want.insert((format!("100k ooc {variant}"), "millrace", "pipelined"));
    }
    assert_eq!(keys, want, "{markdown}");
    assert_eq!(rows.len(), want.len(), "one row each: {markdown}");
    for row in &rows {
        assert_eq!(row.len(), 9, "{row:?}");
        let wall: f64 = row[3].parse().unwrap();
        let vs_floor: f64 = row[4].parse().unwrap();
        assert!(wall >= 0.0 && vs_floor > 0.0, "{row:?}");
        let overlap: f64 = row[8].parse().unwrap();
        assert!((0.0..=1.0).contains(&overlap), "{row:?}");
    }

    // SVG: a lane per subtask of the timeline it was drawn from (and one for the job).
    for t in timelines {
        let timeline: Value =
            serde_json::from_slice(&f.read(&format!("b/bench-timeline-{t}.json"))).unwrap();
        let texts = svg_texts(&f, &format!("b/bench-timeline-{t}.svg"));
        let subtasks = timeline["subtasks"].as_array().unwrap();
        assert!(subtasks.len() >= 2, "{timeline}");
        for s in subtasks {
            let lane = format!("{} {}", s["vertex"].as_str().unwrap(), s["subtask"]);
            assert_eq!(
                texts.iter().filter(|t| **t == lane).count(),
                1,
                "{t}: lane {lane} in {texts:?}"
            );
        }
        assert_eq!(texts.iter().filter(|t| *t == "job").count(), 1, "{t}");
        assert!(texts.iter().any(|t| t == "map"), "{t}: a legend: {texts:?}");
    }
    let texts = svg_texts(&f, "b/bench-times-20k-binary.svg");
    for bar in ["floor", "millrace pipelined", "millrace staged"] {
        assert!(texts.iter().any(|t| t == bar), "{bar}: {texts:?}");
    }
    let texts = svg_texts(&f, "b/bench-times-100k-ooc.svg");
    for bar in [
        "default floor",
        "default pipelined",
        "default staged",
        "lz4 pipelined",
    ] {
        assert!(texts.iter().any(|t| t == bar), "{bar}: {texts:?}");
    }
}

/// `--modes` takes what `sort --mode` takes, and nothing else.
#[test]
fn bench_rejects_unknown_modes() {
    let f = Fixture::new();
    let run = f.millrace(["bench", "--records", "1k", "--modes", "fast", "--dir", "b"]);
    util::assert_error(&run, &["fast"]);
    assert!(!f.path("b").exists());
}
