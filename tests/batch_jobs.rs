//! General batch jobs through the binary: `millrace run` and `millrace explain` on TOML specs.
//! Results are compared with an oracle (plain Rust over the same rows) in every execution
//! style, with and without memory pressure; bad specs and inputs fail with one line and leave
//! nothing behind.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use util::{assert_entries, assert_error, Fixture, SplitMix};

/// Text with thousands of distinct words of skewed frequency, some upper-case, punctuation.
fn text(lines: usize, seed: u64) -> String {
    let mut rng = SplitMix(seed);
    let mut out = String::new();
    for _ in 0..lines {
        let words = rng.next_u64() % 14;
        for w in 0..words {
            let r = rng.next_u64();
            // Skew: small ids are far more frequent.
            let id = (r % 20_000) * (r % 20_000) / 20_000;
            let word = if r.is_multiple_of(7) {
                format!("Word{id}")
            } else {
                format!("word{id}")
            };
            out.push_str(&word);
            out.push_str(if w % 5 == 4 { ", " } else { " " });
        }
        out.push('\n');
    }
    out
}

fn word_oracle(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// Every `part-*` of a CSV output folder: header checked, rows as text lines.
fn read_parts(f: &Fixture, folder: &str, header: &str) -> Vec<String> {
    let mut rows = Vec::new();
    let mut parts: Vec<_> = fs::read_dir(f.path(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    for part in parts {
        let text = fs::read_to_string(&part).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(header), "{}", part.display());
        rows.extend(lines.map(str::to_string));
    }
    rows
}

/// The word counts in the `out` folder of a `WORDCOUNT` run.
fn word_counts(f: &Fixture) -> BTreeMap<String, u64> {
    read_parts(f, "out", "word,n")
        .iter()
        .map(|line| {
            let (w, n) = line.split_once(',').unwrap();
            (w.to_string(), n.parse().unwrap())
        })
        .collect()
}

const WORDCOUNT: &str = r#"
name = "wc"
[[step]]
name = "lines"
source = { text = { path = "in.txt" } }
[[step]]
name = "words"
tokenize = { column = "line" }
[[step]]
name = "counts"
aggregate = { keys = ["word"], aggregates = [{ fn = "count", as = "n" }] }
[[step]]
name = "out"
sink = { csv = { path = "out" } }
"#;

#[test]
fn word_count_equals_the_oracle_in_every_mode_and_budget() {
    let f = Fixture::new();
    let input = text(60_000, 1);
    f.write("in.txt", input.as_bytes());
    f.write("wc.toml", WORDCOUNT.as_bytes());
    let expected: BTreeMap<String, u64> = word_oracle(&input);
    for mode in ["pipelined", "staged", "mapreduce"] {
        // 4 MiB with one map: its quarter of the budget (1 MiB) cannot hold the ~15k groups
        // (~2 MB), the reducer's three quarters can, so the map must flush early.
        for (memory, parallelism) in [("1GiB", "2"), ("4MiB", "1"), ("64MiB", "3")] {
            let run = f.ok([
                "run",
                "wc.toml",
                "--force",
                "--json",
                "--mode",
                mode,
                "--memory",
                memory,
                "--parallelism",
                parallelism,
            ]);
            let doc = run.json();
            assert_eq!(doc["status"], "ok");
            assert_eq!(doc["rows_in"], 60_000);
            assert_eq!(doc["rows_out"], expected.len() as u64);
            if memory == "4MiB" {
                assert!(
                    doc["partial_flushes"].as_u64().unwrap() > 0,
                    "4 MiB must force early partial flushes: {doc}"
                );
            }
            let got = word_counts(&f);
            assert_eq!(got, expected, "{mode} with {memory}");
            assert_eq!(
                fs::read_dir(f.path("out")).unwrap().count(),
                parallelism.parse::<usize>().unwrap()
            );
        }
    }
    assert_entries(&f.dir, &["in.txt", "out", "wc.toml"]);
}

/// 50,000 distinct words under a 4 MiB budget: the final aggregate sorts its groups into runs
/// on disk and merges them, in every mode; the counts are the oracle's.
#[test]
fn final_aggregate_spills_sorted_runs_and_merges_them() {
    let f = Fixture::new();
    let mut rng = SplitMix(4);
    let mut input = String::new();
    for _ in 0..120_000 {
        input.push_str(&format!("w{}\n", rng.next_u64() % 50_000));
    }
    f.write("in.txt", input.as_bytes());
    f.write("wc.toml", WORDCOUNT.as_bytes());
    let expected = word_oracle(&input);
    for mode in ["pipelined", "staged", "mapreduce"] {
        let run = f.ok([
            "run",
            "wc.toml",
            "--force",
            "--json",
            "--mode",
            mode,
            "--memory",
            "4MiB",
            "--parallelism",
            "1",
        ]);
        assert!(run.json()["spilled_runs"].as_u64().unwrap() > 1, "{mode}");
        assert_eq!(word_counts(&f), expected, "{mode}");
    }
}

#[test]
fn group_by_over_csv_equals_the_oracle() {
    let f = Fixture::new();
    let mut rng = SplitMix(9);
    let mut csv = String::from("id,region,qty,price\n");
    let mut oracle: BTreeMap<String, (u64, i64, f64, f64)> = BTreeMap::new();
    for i in 0..20_000 {
        let region = ["n", "s", "e", "w", "c"][(rng.next_u64() % 5) as usize];
        let qty = (rng.next_u64() % 50) as i64 - 10;
        let price = (rng.next_u64() % 10_000) as f64 / 4.0;
        csv.push_str(&format!("{i},{region},{qty},{price}\n"));
        let e = oracle
            .entry(region.to_string())
            .or_insert((0, 0, f64::MAX, f64::MIN));
        e.0 += 1;
        e.1 += qty;
        e.2 = e.2.min(price);
        e.3 = e.3.max(price);
    }
    f.write("sales.csv", csv.as_bytes());
    f.write(
        "g.toml",
        br#"
[[step]]
name = "sales"
source = { csv = { path = "sales.csv" } }
[[step]]
name = "agg"
aggregate = { keys = ["region"], aggregates = [
  { fn = "count", as = "n" }, { fn = "sum", column = "qty", as = "qty" },
  { fn = "min", column = "price", as = "lo" }, { fn = "max", column = "price", as = "hi" },
] }
[[step]]
name = "out"
sink = { csv = { path = "out" } }
"#,
    );
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok(["run", "g.toml", "--force", "--mode", mode]);
        let mut got = BTreeMap::new();
        for line in read_parts(&f, "out", "region,n,qty,lo,hi") {
            let v: Vec<&str> = line.split(',').collect();
            got.insert(
                v[0].to_string(),
                (
                    v[1].parse().unwrap(),
                    v[2].parse().unwrap(),
                    v[3].parse().unwrap(),
                    v[4].parse().unwrap(),
                ),
            );
        }
        assert_eq!(got, oracle, "{mode}");
    }
}

/// `count_distinct` of an integer column (with nulls, and a group of nulls only) and of a
/// string column, in every mode, in memory and under a 4 MiB budget that the ~60,000 distinct
/// users of one region far exceed (the final aggregate spills its sets into runs and merges
/// them): equal to an oracle of sets per region.
#[test]
fn count_distinct_equals_the_oracle_in_every_mode_and_budget() {
    let f = Fixture::new();
    let mut rng = SplitMix(12);
    let mut csv = String::from("region,user,page\n");
    let mut oracle: BTreeMap<String, (BTreeSet<u64>, BTreeSet<String>, u64)> = BTreeMap::new();
    for _ in 0..300_000 {
        let r = rng.next_u64();
        let region = ["big", "big", "n", "s", "e", "w", "nulls"][(r % 7) as usize];
        let user = match region {
            "nulls" => None,
            _ if r.is_multiple_of(11) => None,
            "big" => Some(rng.next_u64() % 150_000),
            _ => Some(rng.next_u64() % 500),
        };
        let page = format!(
            "/p/{}",
            rng.next_u64() % if region == "big" { 40_000 } else { 300 }
        );
        let shown = user.map_or(String::new(), |u| u.to_string());
        csv.push_str(&format!("{region},{shown},{page}\n"));
        let e = oracle.entry(region.to_string()).or_default();
        e.0.extend(user);
        e.1.insert(page);
        e.2 += 1;
    }
    f.write("visits.csv", csv.as_bytes());
    f.write(
        "d.toml",
        br#"
[[step]]
name = "visits"
source = { csv = { path = "visits.csv" } }
[[step]]
name = "per_region"
aggregate = { keys = ["region"], aggregates = [
  { fn = "count_distinct", column = "user", as = "users" },
  { fn = "count_distinct", column = "page", as = "pages" },
  { fn = "count", as = "n" },
] }
[[step]]
name = "out"
sink = { csv = { path = "out" } }
"#,
    );
    let expected: BTreeMap<String, (usize, usize, u64)> = oracle
        .into_iter()
        .map(|(region, (users, pages, n))| (region, (users.len(), pages.len(), n)))
        .collect();
    assert_eq!(expected["nulls"].0, 0);
    assert!(expected["big"].0 > 50_000);
    for mode in ["pipelined", "staged", "mapreduce"] {
        for memory in ["1GiB", "4MiB"] {
            let run = f.ok([
                "run", "d.toml", "--force", "--json", "--mode", mode, "--memory", memory,
            ]);
            let mut got = BTreeMap::new();
            for line in read_parts(&f, "out", "region,users,pages,n") {
                let v: Vec<&str> = line.split(',').collect();
                let row = (
                    v[1].parse().unwrap(),
                    v[2].parse().unwrap(),
                    v[3].parse().unwrap(),
                );
                assert!(got.insert(v[0].to_string(), row).is_none(), "{line}");
            }
            assert_eq!(got, expected, "{mode} {memory}");
            let spilled = run.json()["spilled_runs"].as_u64().unwrap();
            assert_eq!(
                spilled > 0,
                memory == "4MiB",
                "{mode} {memory}: {spilled} runs"
            );
        }
    }
}

/// Filter and project before the aggregate: the oracle applies the same predicate by hand.
#[test]
fn filter_and_project_before_the_aggregate_equal_the_oracle() {
    let f = Fixture::new();
    let mut rng = SplitMix(5);
    let mut csv = String::from("id,region,qty,price,note\n");
    let mut oracle: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for i in 0..8_000 {
        let region = ["north", "south", "east", "west"][(rng.next_u64() % 4) as usize];
        let qty = (rng.next_u64() % 30) as i64 - 5;
        let price = (rng.next_u64() % 1000) as f64 / 8.0;
        let note = if rng.next_u64().is_multiple_of(3) {
            ""
        } else {
            "gift wrap"
        };
        csv.push_str(&format!("{i},{region},{qty},{price},{note}\n"));
        // qty > 0 AND region IN (north, south) AND NOT (price < 10) AND note contains "wrap"
        if qty > 0
            && (region == "north" || region == "south")
            && price >= 10.0
            && note.contains("wrap")
        {
            let e = oracle.entry(region.to_string()).or_default();
            e.0 += 1;
            e.1 += qty;
        }
    }
    f.write("sales.csv", csv.as_bytes());
    f.write(
        "f.toml",
        br#"
[[step]]
name = "sales"
source = { csv = { path = "sales.csv" } }
[[step]]
name = "keep"
filter = { and = [
  { gt = { column = "qty", value = 0 } },
  { in = { column = "region", values = ["north", "south"] } },
  { not = { lt = { column = "price", value = 10 } } },
  { contains = { column = "note", substring = "wrap" } },
] }
[[step]]
name = "narrow"
project = { columns = ["region", "qty"] }
[[step]]
name = "agg"
aggregate = { keys = ["region"], aggregates = [{ fn = "count", as = "n" }, { fn = "sum", column = "qty", as = "qty" }] }
[[step]]
name = "out"
sink = { csv = { path = "out" } }
"#,
    );
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok(["run", "f.toml", "--force", "--mode", mode]);
        let got: BTreeMap<String, (u64, i64)> = read_parts(&f, "out", "region,n,qty")
            .iter()
            .map(|line| {
                let v: Vec<&str> = line.split(',').collect();
                (
                    v[0].to_string(),
                    (v[1].parse().unwrap(), v[2].parse().unwrap()),
                )
            })
            .collect();
        assert_eq!(got, oracle, "{mode}");
    }
    let run = f.ok(["explain", "f.toml"]);
    assert!(
        run.stdout
            .contains("keep (filter) → narrow (project) → agg (partial aggregate)"),
        "{}",
        run.stdout
    );
    // A filter comparing a text column with a number.
    let spec = fs::read_to_string(f.path("f.toml")).unwrap();
    let bad = spec.replace(
        "{ gt = { column = \"qty\", value = 0 } }",
        "{ gt = { column = \"region\", value = 0 } }",
    );
    f.write("bad.toml", bad.as_bytes());
    assert_error(
        &f.millrace(["run", "bad.toml"]),
        &["\"keep\"", "\"region\"", "Utf8"],
    );
}

#[test]
fn the_examples_run_in_every_mode_with_the_same_result() {
    let f = Fixture::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut join = Vec::new();
    for spec in ["wordcount", "groupby", "join", "topwords", "join_parquet"] {
        let mut results = Vec::new();
        for mode in ["pipelined", "staged", "mapreduce"] {
            // Copy the example next to its data so its output lands in the fixture.
            fs::create_dir_all(f.path("data")).unwrap();
            for data in [
                "words.txt",
                "sales.csv",
                "regions.csv",
                "sales.parquet",
                "regions.parquet",
            ] {
                fs::copy(examples.join("data").join(data), f.path("data").join(data)).unwrap();
            }
            fs::copy(
                examples.join(format!("{spec}.toml")),
                f.path(&format!("{spec}.toml")),
            )
            .unwrap();
            f.ok(["run", &format!("{spec}.toml"), "--force", "--mode", mode]);
            // Unordered outputs sorted; the others are sorted by the job.
            let ordered = matches!(spec, "join" | "topwords" | "join_parquet");
            let rows = util::normalized_rows(&f.path(&format!("{spec}.out")), ordered);
            assert!(!rows.is_empty(), "{spec} {mode}: no rows");
            results.push(rows);
        }
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "{spec}: modes differ"
        );
        // The same data as CSV and as Parquet: the same result.
        match spec {
            "join" => join = results.swap_remove(0),
            "join_parquet" => assert_eq!(results[0], join, "join over Parquet ≠ over CSV"),
            _ => {}
        }
    }
}

#[test]
fn explain_prints_the_graph() {
    let f = Fixture::new();
    f.write("in.txt", b"a b\n");
    f.write("wc.toml", WORDCOUNT.as_bytes());
    let run = f.ok([
        "explain",
        "wc.toml",
        "--mode",
        "staged",
        "--parallelism",
        "3",
    ]);
    let expected = "job wc (mode staged)
vertex 0 lines ×3: lines (source) → words (tokenize) → counts (partial aggregate)
  reads text in.txt in splits [line: Utf8]
edge 0 → 1: hash(word) over 128 key groups, blocking
vertex 1 counts ×3: counts (final aggregate) → out (csv sink)
  writes csv out [word: Utf8, n: Int64]
regions: 2 regions: {lines}, {counts}, each once its blocking inputs are complete
";
    assert_eq!(run.stdout, expected);
}

/// `exchange` on a step sets the execution style of the edges into it alone: a pipelined job
/// with a staged join and a mapreduce sort has the partition types and regions it says, gives
/// the rows every uniform mode gives, and `exchange` on a step that reads no exchange is one
/// line naming it.
#[test]
fn exchange_modes_can_differ_per_edge() {
    let f = Fixture::new();
    let (orders, customers) = orders_and_customers(&f);
    let spec = |extra_join: &str, extra_sort: &str| {
        format!(
            r#"
name = "mixed"
[[step]]
name = "orders"
source = {{ csv = {{ path = "orders.csv" }} }}
[[step]]
name = "customers"
source = {{ csv = {{ path = "customers.csv" }} }}
[[step]]
name = "joined"
input = "orders"
join = {{ right = "customers", on = ["cust"], right_on = ["id"] }}
{extra_join}
[[step]]
name = "per_customer"
aggregate = {{ keys = ["cust"], aggregates = [{{ fn = "count", as = "n" }}, {{ fn = "sum", column = "amount", as = "amount" }}] }}
[[step]]
name = "largest"
sort = {{ by = ["amount desc", "cust"] }}
{extra_sort}
[[step]]
name = "out"
sink = {{ csv = {{ path = "out" }} }}
"#
        )
    };
    f.write("uniform.toml", spec("", "").as_bytes());
    f.write(
        "mixed.toml",
        spec("exchange = \"staged\"", "exchange = \"mapreduce\"").as_bytes(),
    );
    let explain = f.ok(["explain", "mixed.toml"]).stdout;
    for line in [
        "edge 0 → 2: hash(cust) over 128 key groups, blocking (exchange = \"staged\")",
        "edge 1 → 2: hash(id) over 128 key groups, blocking (exchange = \"staged\")",
        "edge 2 → 3: hash(cust) over 128 key groups, pipelined\n",
        "edge 3 → 4: gather to one subtask, blocking, consumers deployed at 5% of producers finished (exchange = \"mapreduce\")",
        "regions: 4 regions: {orders}, {customers}, {joined, per_customer}, {largest}",
    ] {
        assert!(explain.contains(line), "{line:?} in\n{explain}");
    }
    f.ok(["run", "mixed.toml", "--memory", "4MiB"]);
    let mixed = util::normalized_rows(&f.path("out"), true);
    assert!(!mixed.is_empty() && !orders.is_empty() && !customers.is_empty());
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok(["run", "uniform.toml", "--mode", mode, "--force"]);
        assert_eq!(util::normalized_rows(&f.path("out"), true), mixed, "{mode}");
    }
    f.write(
        "bad.toml",
        spec("", "")
            .replace(
                "name = \"out\"\n",
                "name = \"out\"\nexchange = \"staged\"\n",
            )
            .as_bytes(),
    );
    let run = f.millrace(["run", "bad.toml", "--force"]);
    assert_error(&run, &["\"out\"", "`exchange`", "reads no exchange"]);
    f.write("bad2.toml", spec("exchange = \"eager\"", "").as_bytes());
    let run = f.millrace(["run", "bad2.toml", "--force"]);
    assert_error(&run, &["eager", "pipelined"]);
}

#[test]
fn bad_specs_and_inputs_fail_with_one_line_and_leave_nothing() {
    let f = Fixture::new();
    f.write("in.txt", b"a b\n");
    // The schema is inferred from the first 1000 records; the bad value comes later.
    let bad: String = (0..1500).map(|i| format!("k{},{i}\n", i % 7)).collect();
    f.write("bad.csv", format!("k,v\n{bad}c,x\n").as_bytes());
    let cases: [(&str, &str, &[&str]); 10] = [
        ("unknown field", &WORDCOUNT.replace("name = \"wc\"", "name = \"wc\"\nspeed = 3"), &["speed"]),
        ("unknown step field", &WORDCOUNT.replace("tokenize = { column = \"line\" }", "tokenize = { column = \"line\", lower = true }"), &["lower"]),
        ("missing input", &WORDCOUNT.replace("in.txt", "missing.txt"), &["missing.txt", "lines"]),
        ("unknown column", &WORDCOUNT.replace("column = \"line\"", "column = \"text\""), &["\"words\"", "\"text\"", "line"]),
        ("count_distinct without a column", &WORDCOUNT.replace("fn = \"count\"", "fn = \"count_distinct\""), &["\"counts\"", "\"n\"", "needs a column"]),
        ("type mismatch", &WORDCOUNT.replace("keys = [\"word\"], aggregates = [{ fn = \"count\", as = \"n\" }]", "keys = [\"word\"], aggregates = [{ fn = \"sum\", column = \"word\", as = \"n\" }]"), &["\"counts\"", "\"word\"", "Utf8"]),
        ("unknown join input", &WORDCOUNT.replace("tokenize = { column = \"line\" }", "join = { right = \"x\", on = [\"line\"] }"), &["\"words\"", "\"x\"", "not an earlier step"]),
        ("unknown join strategy", &WORDCOUNT.replace("tokenize = { column = \"line\" }", "join = { right = \"lines\", on = [\"line\"], strategy = \"nested_loop\" }"), &["nested_loop", "sort_merge"]),
        ("two operators", &WORDCOUNT.replace("tokenize = { column = \"line\" }", "tokenize = { column = \"line\" }\nsink = { csv = { path = \"o\" } }"), &["\"words\"", "tokenize and sink"]),
        ("bad CSV value", "[[step]]\nname = \"s\"\nsource = { csv = { path = \"bad.csv\" } }\n[[step]]\nname = \"a\"\naggregate = { keys = [\"k\"], aggregates = [{ fn = \"sum\", column = \"v\", as = \"s\" }] }\n[[step]]\nname = \"o\"\nsink = { csv = { path = \"out\" } }\n", &["bad.csv", "line 1502:", "'x'"]),
    ];
    for (what, spec, needles) in cases {
        f.write("job.toml", spec.as_bytes());
        let run = f.millrace(["run", "job.toml"]);
        assert_error(&run, needles);
        assert_entries(&f.dir, &["bad.csv", "in.txt", "job.toml"]);
        let _ = what;
    }
    // `on_error = "skip"`: the bad record is skipped and counted, the rest summed.
    f.write(
        "job.toml",
        b"[[step]]\nname = \"s\"\nsource = { csv = { path = \"bad.csv\", on_error = \"skip\" } }\n[[step]]\nname = \"a\"\naggregate = { keys = [\"k\"], aggregates = [{ fn = \"sum\", column = \"v\", as = \"s\" }] }\n[[step]]\nname = \"o\"\nsink = { csv = { path = \"out\" } }\n",
    );
    let run = f.millrace(["run", "job.toml", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    // One warning for the first skipped record of a split, naming its line.
    assert!(
        run.stderr_lines().len() == 1
            && run
                .stderr
                .contains("bad.csv: line 1502: bad CSV record skipped"),
        "{}",
        run.stderr
    );
    let json = run.json();
    assert_eq!(
        (json["rows_in"].as_u64(), json["rows_skipped"].as_u64()),
        (Some(1500), Some(1))
    );
    let mut sums = read_parts(&f, "out", "k,s");
    sums.sort();
    let expected: Vec<String> = (0..7)
        .map(|k| format!("k{k},{}", (0..1500).filter(|i| i % 7 == k).sum::<i64>()))
        .collect();
    assert_eq!(sums, expected);
    fs::remove_dir_all(f.path("out")).unwrap();
    // An existing output needs --force, and is left as it was.
    f.write("job.toml", WORDCOUNT.as_bytes());
    fs::create_dir(f.path("out")).unwrap();
    f.write("out/mine", b"keep");
    let run = f.millrace(["run", "job.toml"]);
    assert_error(&run, &["out", "--force"]);
    assert_eq!(f.read("out/mine"), b"keep");
    fs::remove_dir_all(f.path("out")).unwrap();
    // A budget below what a job can run in at all.
    let run = f.millrace(["run", "job.toml", "--force", "--memory", "1"]);
    assert_error(&run, &["1 bytes is too small", "--memory"]);
    assert_entries(&f.dir, &["bad.csv", "in.txt", "job.toml"]);
}

/// A map attempt and a reducer attempt that fail once each: the job retries them and the
/// result is still the oracle's, counted once (staged: the subtask alone; pipelined: the
/// region).
#[test]
fn failed_attempts_are_retried_and_counted_once() {
    let f = Fixture::new();
    let input = text(5_000, 3);
    f.write("in.txt", input.as_bytes());
    f.write("wc.toml", WORDCOUNT.as_bytes());
    let expected = word_oracle(&input);
    for mode in ["staged", "pipelined"] {
        let (mut cmd, shown) = f.command([
            "run",
            "wc.toml",
            "--force",
            "--json",
            "--mode",
            mode,
            "--parallelism",
            "2",
        ]);
        cmd.env("MILLRACE_FAIL_ATTEMPTS", "lines/0/0,counts/1/0");
        let run = util::run_with_timeout(cmd, shown, util::DEFAULT_TIMEOUT);
        assert_eq!(run.code, Some(0), "{run}");
        let doc = run.json();
        assert_eq!(doc["rows_in"], 5_000, "{mode}: rows counted once");
        let got = word_counts(&f);
        assert_eq!(got, expected, "{mode}");
        // Attempts past --max-attempts fail the job with the injected cause, and no output.
        let (mut cmd, shown) = f.command(["run", "wc.toml", "--mode", mode, "--max-attempts", "1"]);
        cmd.env("MILLRACE_FAIL_ATTEMPTS", "counts/0/0");
        fs::remove_dir_all(f.path("out")).unwrap();
        let run = util::run_with_timeout(cmd, shown, util::DEFAULT_TIMEOUT);
        assert_error(&run, &["injected", "counts"]);
        assert_entries(&f.dir, &["in.txt", "wc.toml"]);
    }
}

/// Orders (some with no customer id) and customers (ids with duplicates, some never
/// ordered from): CSV files and the rows as the oracle sees them.
#[allow(clippy::type_complexity)]
fn orders_and_customers(f: &Fixture) -> (Vec<(u64, Option<u64>, u64)>, Vec<(u64, String)>) {
    let mut rng = SplitMix(21);
    let mut orders = Vec::new();
    let mut csv = String::from("order_id,cust,amount\n");
    for i in 0..30_000u64 {
        let r = rng.next_u64();
        // Skewed ids over every customer (and some past the last): a few customers have most
        // orders; 1 in 50 has no customer id.
        let cust =
            (!r.is_multiple_of(50)).then(|| (r >> 8) % 210_000 * ((r >> 30) % 210_000) / 210_000);
        let amount = (r >> 32) % 1_000;
        let shown = cust.map_or(String::new(), |c| c.to_string());
        csv.push_str(&format!("{i},{shown},{amount}\n"));
        orders.push((i, cust, amount));
    }
    f.write("orders.csv", csv.as_bytes());
    let mut customers = Vec::new();
    let mut csv = String::from("id,name\n");
    // Enough customers that the build side does not fit a 4 MiB budget.
    for id in (0..200_000u64).step_by(2) {
        // Every tenth customer id twice: a match is with both rows.
        for copy in 0..if id % 10 == 0 { 2 } else { 1 } {
            let name = format!("customer-{id}-copy-{copy}-of-the-build-side");
            csv.push_str(&format!("{id},{name}\n"));
            customers.push((id, name));
        }
    }
    f.write("customers.csv", csv.as_bytes());
    (orders, customers)
}

/// Every join kind and strategy, in every execution style, in memory and with a budget that
/// makes the join spill: equal to a nested-loop oracle.
#[test]
fn joins_equal_the_oracle_in_every_mode_and_budget() {
    let f = Fixture::new();
    let (orders, customers) = orders_and_customers(&f);
    for (kind, strategy) in ["inner", "left", "semi", "anti"]
        .into_iter()
        .flat_map(|kind| [(kind, "hash"), (kind, "sort_merge")])
    {
        let mut expected: Vec<String> = Vec::new();
        let mut by_id: std::collections::HashMap<u64, Vec<&String>> = Default::default();
        for (id, name) in &customers {
            by_id.entry(*id).or_default().push(name);
        }
        for (id, cust, amount) in &orders {
            let matches: &[&String] = cust.and_then(|c| by_id.get(&c)).map_or(&[], |v| v);
            let shown = cust.map_or(String::new(), |c| c.to_string());
            match kind {
                "inner" | "left" => {
                    for name in matches {
                        expected.push(format!("{id},{shown},{amount},{name}"));
                    }
                    if matches.is_empty() && kind == "left" {
                        expected.push(format!("{id},{shown},{amount},"));
                    }
                }
                "semi" if !matches.is_empty() => expected.push(format!("{id},{shown},{amount}")),
                "anti" if matches.is_empty() => expected.push(format!("{id},{shown},{amount}")),
                _ => {}
            }
        }
        expected.sort();
        let spec = format!(
            r#"
[[step]]
name = "orders"
source = {{ csv = {{ path = "orders.csv" }} }}
[[step]]
name = "customers"
source = {{ csv = {{ path = "customers.csv" }} }}
[[step]]
name = "j"
input = "orders"
join = {{ right = "customers", on = ["cust"], right_on = ["id"], type = "{kind}", strategy = "{strategy}" }}
[[step]]
name = "out"
sink = {{ csv = {{ path = "out" }} }}
"#
        );
        f.write("j.toml", spec.as_bytes());
        let explained = f.ok(["explain", "j.toml"]).stdout;
        let named = format!("j ({kind} {} join)", strategy.replace('_', "-"));
        assert!(explained.contains(&named), "{named}: {explained}");
        let header = if matches!(kind, "inner" | "left") {
            "order_id,cust,amount,name"
        } else {
            "order_id,cust,amount"
        };
        for mode in ["pipelined", "staged", "mapreduce"] {
            // One subtask under 4 MiB: its whole build side against a 3 MiB budget (a
            // sort-merge join's sorted right side goes to a file halfway).
            for (memory, parallelism) in [("1GiB", "2"), ("4MiB", "2"), ("4MiB", "1")] {
                let run = f.ok([
                    "run",
                    "j.toml",
                    "--force",
                    "--json",
                    "--mode",
                    mode,
                    "--memory",
                    memory,
                    "--parallelism",
                    parallelism,
                ]);
                let doc = run.json();
                let mut got = read_parts(&f, "out", header);
                got.sort();
                let case = format!("{kind} {strategy} {mode} {memory} ×{parallelism}");
                assert_eq!(got.len(), expected.len(), "{case}");
                assert!(got == expected, "{case}: rows differ");
                assert_eq!(doc["rows_out"], expected.len() as u64);
                let spilled = doc["spilled_runs"].as_u64().unwrap();
                assert_eq!(spilled > 0, memory == "4MiB", "{case}");
                let bytes = doc["spilled_bytes"].as_u64().unwrap();
                assert_eq!(bytes > 0, memory == "4MiB", "{case}");
            }
        }
    }
}

/// Sort by several keys (descending, nulls first), with and without a limit, in memory and
/// spilling runs: the part holds the oracle's rows in the oracle's order.
#[test]
fn sort_and_top_n_equal_the_oracle() {
    let f = Fixture::new();
    let mut rng = SplitMix(33);
    let mut csv = String::from("id,g,v\n");
    let mut rows = Vec::new();
    for id in 0..40_000u64 {
        let r = rng.next_u64();
        let g = (!r.is_multiple_of(30)).then_some((r >> 8) % 7);
        let v = (r >> 16) % 100_000;
        let shown = g.map_or(String::new(), |g| g.to_string());
        csv.push_str(&format!("{id},{shown},{v}\n"));
        rows.push((id, g, v));
    }
    f.write("t.csv", csv.as_bytes());
    // g ascending with nulls first, then v descending, then id (a total order).
    rows.sort_by(|a, b| {
        let g = match (a.1, b.1) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Less,
            (_, None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(&y),
        };
        g.then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0))
    });
    let expected: Vec<String> = rows
        .iter()
        .map(|(id, g, v)| format!("{id},{},{v}", g.map_or(String::new(), |g| g.to_string())))
        .collect();
    for limit in [None, Some(25), Some(0)] {
        let limit_step = limit.map_or(String::new(), |n| {
            format!("[[step]]\nname = \"top\"\nlimit = {n}\n")
        });
        let spec = format!(
            "[[step]]\nname = \"t\"\nsource = {{ csv = {{ path = \"t.csv\" }} }}\n\
             [[step]]\nname = \"s\"\nsort = {{ by = [\"g asc nulls first\", \"v DESC\", \"id\"] }}\n\
             {limit_step}[[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"out\" }} }}\n"
        );
        f.write("s.toml", spec.as_bytes());
        let want = &expected[..limit.map_or(expected.len(), |n| n as usize)];
        for mode in ["pipelined", "staged", "mapreduce"] {
            for memory in ["1GiB", "4MiB"] {
                let run = f.ok([
                    "run", "s.toml", "--force", "--json", "--mode", mode, "--memory", memory,
                ]);
                let got = read_parts(&f, "out", "id,g,v");
                assert!(got == want, "{mode} {memory} {limit:?}: order differs");
                assert_eq!(run.json()["parts"], 1, "a sort writes one part");
                let spilled = run.json()["spilled_runs"].as_u64().unwrap();
                assert_eq!(
                    spilled > 0,
                    memory == "4MiB" && limit.is_none(),
                    "{mode} {memory} {limit:?}"
                );
            }
        }
    }
}

/// A sort of 1.2 million rows under the smallest budget: many runs, merged in groups; the
/// process stays within a bound (each written run used to keep its 8 MiB of write buffers).
#[test]
fn a_spilling_sort_stays_within_its_memory() {
    let f = Fixture::new();
    let mut rng = SplitMix(12);
    let mut csv = String::from("k,v\n");
    for i in 0..1_200_000u64 {
        csv.push_str(&format!("{},{i}\n", rng.next_u64() % 1_000_000));
    }
    f.write("t.csv", csv.as_bytes());
    f.write(
        "s.toml",
        b"[[step]]\nname = \"t\"\nsource = { csv = { path = \"t.csv\" } }\n\
          [[step]]\nname = \"s\"\nsort = { by = [\"k\", \"v\"] }\n\
          [[step]]\nname = \"out\"\nsink = { csv = { path = \"out\" } }\n",
    );
    let run = f.ok(["run", "s.toml", "--json", "--memory", "4MiB"]);
    let doc = run.json();
    assert!(doc["spilled_runs"].as_u64().unwrap() > 8);
    let rss = doc["peak_rss_bytes"].as_u64().unwrap();
    // 39 MB measured (the old merge of every run at once, 8192-row batches: 64 MB).
    assert!(rss < 48 << 20, "peak RSS {rss} with --memory 4MiB");
    let rows = read_parts(&f, "out", "k,v");
    assert_eq!(rows.len(), 1_200_000);
    let keys: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            let (k, v) = r.split_once(',').unwrap();
            (k.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted");
}

/// A job without an aggregate (source → filter → sink: one part per scan subtask) and row
/// operators after an aggregate (a filter on the counts).
#[test]
fn map_only_jobs_and_row_operators_after_an_aggregate() {
    let f = Fixture::new();
    let input = text(20_000, 8);
    f.write("in.txt", input.as_bytes());
    f.write(
        "m.toml",
        br#"
[[step]]
name = "lines"
source = { text = { path = "in.txt" } }
[[step]]
name = "long"
filter = { contains = { column = "line", substring = "word1" } }
[[step]]
name = "out"
sink = { csv = { path = "out" } }
"#,
    );
    let mut expected: Vec<String> = input
        .lines()
        .filter(|l| l.contains("word1"))
        .map(|l| {
            if l.contains(',') {
                format!("\"{l}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    expected.sort();
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok([
            "run",
            "m.toml",
            "--force",
            "--mode",
            mode,
            "--parallelism",
            "3",
        ]);
        assert_eq!(fs::read_dir(f.path("out")).unwrap().count(), 3);
        let mut got = read_parts(&f, "out", "line");
        got.sort();
        assert!(got == expected, "{mode}: map-only rows differ");
    }
    let frequent: BTreeMap<String, u64> = word_oracle(&input)
        .into_iter()
        .filter(|(_, n)| *n >= 20)
        .collect();
    assert!(!frequent.is_empty() && frequent.len() < word_oracle(&input).len());
    let spec = WORDCOUNT.replace(
        "name = \"out\"\n",
        "name = \"frequent\"\nfilter = { ge = { column = \"n\", value = 20 } }\n[[step]]\nname = \"out\"\n",
    );
    f.write("wc.toml", spec.as_bytes());
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok(["run", "wc.toml", "--force", "--mode", mode]);
        assert_eq!(word_counts(&f), frequent, "{mode}");
    }
}

/// Every row of a folder of Parquet parts, as `id,region,qty` text (nulls empty), and the
/// number of row groups in the parts.
fn parquet_rows(f: &Fixture, folder: &str) -> (Vec<String>, usize) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::Array;
    let (mut rows, mut groups) = (Vec::new(), 0);
    for part in fs::read_dir(f.path(folder)).unwrap() {
        let file = fs::File::open(part.unwrap().path()).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        groups += reader.metadata().num_row_groups();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let names: Vec<&str> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            assert_eq!(names, ["id", "region", "qty"]);
            let id = batch.column(0).as_primitive::<Int64Type>();
            let region = batch.column(1).as_string::<i32>();
            let qty = batch.column(2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let cell = |valid: bool, v: String| if valid { v } else { String::new() };
                rows.push(format!(
                    "{},{},{}",
                    id.value(i),
                    cell(region.is_valid(i), region.value(i).to_string()),
                    cell(qty.is_valid(i), qty.value(i).to_string()),
                ));
            }
        }
    }
    rows.sort();
    (rows, groups)
}

/// CSV → Parquet (the job's sink) → checked here with the parquet crate; then the Parquet
/// parts, read by a group-by in every mode and budget, equal the oracle; only the columns the
/// job uses are read (explain shows it); a Parquet file written elsewhere (large strings, row
/// groups of 1000 rows, an unused column) reads the same.
#[test]
fn parquet_sources_and_sinks_equal_the_oracle() {
    let f = Fixture::new();
    let mut rng = SplitMix(21);
    let mut csv = String::from("id,region,qty,note\n");
    let mut rows = Vec::new();
    let mut oracle: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for id in 0..150_000 {
        let region = ["north", "south", "east", "west", ""][(rng.next_u64() % 5) as usize];
        let qty = (!rng.next_u64().is_multiple_of(9)).then(|| (rng.next_u64() % 100) as i64);
        let q = qty.map(|q| q.to_string()).unwrap_or_default();
        csv.push_str(&format!("{id},{region},{q},note {}\n", rng.next_u64()));
        rows.push(format!("{id},{region},{q}"));
        if !region.is_empty() {
            let e = oracle.entry(region.to_string()).or_default();
            e.0 += 1;
            e.1 += qty.unwrap_or(0);
        }
    }
    rows.sort();
    f.write("sales.csv", csv.as_bytes());
    f.write(
        "to_parquet.toml",
        br#"
[[step]]
name = "sales"
source = { csv = { path = "sales.csv" } }
[[step]]
name = "columns"
project = { columns = ["id", "region", "qty"] }
[[step]]
name = "out"
sink = { parquet = { path = "sales.parquet" } }
"#,
    );
    // A map-only job: the sink has the scan's quarter of the budget; 4 MiB cuts row groups.
    for (memory, many_groups) in [("1GiB", false), ("4MiB", true)] {
        f.ok([
            "run",
            "to_parquet.toml",
            "--force",
            "--parallelism",
            "2",
            "--memory",
            memory,
        ]);
        let (got, groups) = parquet_rows(&f, "sales.parquet");
        assert!(
            got == rows,
            "{memory}: the Parquet parts differ from the CSV rows"
        );
        assert_eq!(groups > 2, many_groups, "{memory}: {groups} row groups");
    }
    let run = f.ok(["explain", "to_parquet.toml"]);
    assert!(
        run.stdout.contains(
            "reads csv sales.csv in splits [id: Int64, region: Utf8, qty: Int64] (3 of 4 columns)"
        ) && run
            .stdout
            .contains("writes parquet sales.parquet [id: Int64, region: Utf8, qty: Int64]"),
        "{}",
        run.stdout
    );
    let group_by = |path: &str| {
        format!(
            r#"
[[step]]
name = "sales"
source = {{ parquet = {{ path = "{path}" }} }}
[[step]]
name = "known"
filter = {{ is_not_null = {{ column = "region" }} }}
[[step]]
name = "agg"
aggregate = {{ keys = ["region"], aggregates = [{{ fn = "count", as = "n" }}, {{ fn = "sum", column = "qty", as = "qty" }}] }}
[[step]]
name = "out"
sink = {{ csv = {{ path = "out" }} }}
"#
        )
    };
    f.write("g.toml", group_by("sales.parquet/part-00001").as_bytes());
    let run = f.ok(["explain", "g.toml"]);
    assert!(
        run.stdout.contains("reads parquet sales.parquet/part-00001 in splits [region: Utf8, qty: Int64] (2 of 3 columns)"),
        "{}",
        run.stdout
    );
    // One file holding every row: written here with row groups of 1000 rows and large
    // strings, as pyarrow and Polars do.
    {
        use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch};
        use std::sync::Arc;
        let mut ids = Vec::new();
        let mut regions = Vec::new();
        let mut qtys = Vec::new();
        for row in csv.lines().skip(1) {
            let v: Vec<&str> = row.split(',').collect();
            ids.push(v[0].parse::<i64>().unwrap());
            regions.push((!v[1].is_empty()).then(|| v[1].to_string()));
            qtys.push(v[2].parse::<i64>().ok());
        }
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            (
                "unused",
                Arc::new(Int64Array::from(vec![7; 150_000])) as ArrayRef,
            ),
            (
                "region",
                Arc::new(regions.into_iter().collect::<LargeStringArray>()) as ArrayRef,
            ),
            ("qty", Arc::new(Int64Array::from(qtys)) as ArrayRef),
        ])
        .unwrap();
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let file = fs::File::create(f.path("all.parquet")).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    f.write("g.toml", group_by("all.parquet").as_bytes());
    for mode in ["pipelined", "staged", "mapreduce"] {
        for memory in ["1GiB", "4MiB"] {
            f.ok([
                "run",
                "g.toml",
                "--force",
                "--mode",
                mode,
                "--memory",
                memory,
                "--parallelism",
                "3",
            ]);
            let mut got = BTreeMap::new();
            for line in read_parts(&f, "out", "region,n,qty") {
                let v: Vec<&str> = line.split(',').collect();
                got.insert(
                    v[0].to_string(),
                    (v[1].parse().unwrap(), v[2].parse().unwrap()),
                );
            }
            assert_eq!(got, oracle, "{mode} {memory}");
        }
    }
    // A damaged file: one line naming it, no output.
    let bytes = fs::read(f.path("all.parquet")).unwrap();
    f.write("all.parquet", &bytes[..bytes.len() / 2]);
    fs::remove_dir_all(f.path("out")).unwrap();
    let run = f.millrace(["run", "g.toml"]);
    assert_error(&run, &["all.parquet", "not a readable Parquet file"]);
    assert!(!f.path("out").exists());
}

/// A text sink writes the one text column's values, a line each; another schema is refused
/// before anything runs.
#[test]
fn text_sinks_write_lines() {
    let f = Fixture::new();
    let input = text(5_000, 3);
    f.write("in.txt", input.as_bytes());
    f.write(
        "t.toml",
        br#"
[[step]]
name = "lines"
source = { text = { path = "in.txt" } }
[[step]]
name = "some"
filter = { starts_with = { column = "line", prefix = "word1" } }
[[step]]
name = "out"
sink = { text = { path = "out" } }
"#,
    );
    f.ok(["run", "t.toml", "--parallelism", "3"]);
    let mut got: Vec<String> = fs::read_dir(f.path("out"))
        .unwrap()
        .flat_map(|p| {
            let text = fs::read_to_string(p.unwrap().path()).unwrap();
            text.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    let mut expected: Vec<String> = input
        .lines()
        .filter(|l| l.starts_with("word1"))
        .map(str::to_string)
        .collect();
    got.sort();
    expected.sort();
    assert!(!expected.is_empty() && got == expected);
    f.write(
        "bad.toml",
        WORDCOUNT
            .replace("csv = { path = \"out\" }", "text = { path = \"out2\" }")
            .as_bytes(),
    );
    let run = f.millrace(["run", "bad.toml"]);
    assert_error(
        &run,
        &[
            "\"out\"",
            "a text sink writes one text column",
            "word: Utf8, n: Int64",
        ],
    );
    assert!(!f.path("out2").exists());
}

/// `one_file = true`: CSV, Parquet and text sinks write one file (one header), gathered to
/// one subtask, equal to the counts the folder of parts holds, in every mode; an existing file
/// needs `--force`, a folder in its place is refused.
#[test]
fn one_file_sinks_write_one_file() {
    let f = Fixture::new();
    let input = text(20_000, 4);
    f.write("in.txt", input.as_bytes());
    let expected = word_oracle(&input);
    for mode in ["pipelined", "staged", "mapreduce"] {
        let spec = WORDCOUNT.replace(
            "csv = { path = \"out\" }",
            "csv = { path = \"out.csv\", one_file = true }",
        );
        f.write("one.toml", spec.as_bytes());
        f.ok(["run", "one.toml", "--mode", mode, "--force"]);
        let text = fs::read_to_string(f.path("out.csv")).expect("one CSV file");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("word,n"), "{mode}");
        let got: BTreeMap<String, u64> = lines
            .map(|line| {
                let (w, n) = line.split_once(',').unwrap();
                (w.to_string(), n.parse().unwrap())
            })
            .collect();
        assert_eq!(got, expected, "{mode}");
    }
    // Parquet: one file, every word once.
    let spec = WORDCOUNT.replace(
        "csv = { path = \"out\" }",
        "parquet = { path = \"out.parquet\", one_file = true }",
    );
    f.write("pq.toml", spec.as_bytes());
    f.ok(["run", "pq.toml", "--parallelism", "3"]);
    let file = fs::File::open(f.path("out.parquet")).expect("one Parquet file");
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, expected.len());
    // Text: the lines of the filter's output, one file.
    let spec = WORDCOUNT
        .replace(
            "[[step]]\nname = \"words\"\ntokenize = { column = \"line\" }\n[[step]]\nname = \"counts\"\naggregate = { keys = [\"word\"], aggregates = [{ fn = \"count\", as = \"n\" }] }\n",
            "",
        )
        .replace(
            "csv = { path = \"out\" }",
            "text = { path = \"lines.txt\", one_file = true }",
        );
    f.write("text.toml", spec.as_bytes());
    f.ok(["run", "text.toml"]);
    let mut got: Vec<&str> = Vec::new();
    let written = fs::read_to_string(f.path("lines.txt")).expect("one text file");
    got.extend(written.lines());
    let mut want: Vec<&str> = input.lines().collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    // Existing outputs: a file needs --force; a folder where the file would go is refused.
    let run = f.millrace(["run", "text.toml"]);
    assert_error(&run, &["lines.txt", "--force"]);
    fs::create_dir(f.path("dir.csv")).unwrap();
    f.write(
        "dir.toml",
        spec.replace(
            "text = { path = \"lines.txt\"",
            "text = { path = \"dir.csv\"",
        )
        .as_bytes(),
    );
    let run = f.millrace(["run", "dir.toml", "--force"]);
    assert_error(&run, &["dir.csv"]);
    assert!(f.path("dir.csv").is_dir());
}

/// A folder of parts is a source: a word count's CSV parts (and Parquet parts) read by a
/// second job equal the oracle; marker files (`_SUCCESS`, `.crc`) are skipped; an empty
/// folder, parts with other columns, a FIFO among the parts and an output inside the folder
/// read are one line each.
#[test]
fn a_folder_of_parts_is_a_source() {
    let f = Fixture::new();
    let input = text(20_000, 5);
    f.write("in.txt", input.as_bytes());
    f.write("wc.toml", WORDCOUNT.as_bytes());
    f.ok(["run", "wc.toml", "--parallelism", "3"]);
    f.write("out/_SUCCESS", b"");
    f.write("out/.part-00000.crc", b"not csv");
    let expected = word_oracle(&input);
    let frequent: BTreeMap<String, u64> = expected.into_iter().filter(|&(_, n)| n > 3).collect();
    let read_total = |f: &Fixture| -> BTreeMap<String, u64> {
        let text = fs::read_to_string(f.path("total.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("word,n"));
        lines
            .map(|l| {
                let (w, n) = l.split_once(',').unwrap();
                (w.to_string(), n.parse().unwrap())
            })
            .collect()
    };
    let second = |source: &str| {
        format!(
            r#"
[[step]]
name = "counts"
source = {{ {source} }}
[[step]]
name = "frequent"
filter = {{ gt = {{ column = "n", value = 3 }} }}
[[step]]
name = "sum"
sink = {{ csv = {{ path = "total.csv", one_file = true }} }}
"#
        )
    };
    f.write("csv.toml", second("csv = { path = \"out\" }").as_bytes());
    let explain = f.ok(["explain", "csv.toml"]).stdout;
    assert!(
        explain.contains("reads csv out (3 files) in splits"),
        "{explain}"
    );
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok(["run", "csv.toml", "--mode", mode, "--force"]);
        assert_eq!(read_total(&f), frequent, "{mode}");
    }
    // Parquet parts, read back as a folder.
    f.write(
        "pq.toml",
        WORDCOUNT
            .replace("csv = { path = \"out\" }", "parquet = { path = \"pq\" }")
            .as_bytes(),
    );
    f.ok(["run", "pq.toml", "--parallelism", "3"]);
    f.write(
        "pqsum.toml",
        second("parquet = { path = \"pq\" }").as_bytes(),
    );
    f.ok(["run", "pqsum.toml", "--force"]);
    assert_eq!(read_total(&f), frequent);
    // A first part with no rows (a subtask that got none) and an empty file have no say in
    // the types: `n` stays an integer (a sort by it is numeric).
    fs::create_dir(f.path("sparse")).unwrap();
    f.write("sparse/part-00000", b"word,n\n");
    f.write("sparse/part-00001", b"");
    f.write("sparse/part-00002", b"word,n\nb,10\na,9\n");
    f.write(
        "sparse.toml",
        second("csv = { path = \"sparse\" }")
            .replace(
                "name = \"sum\"",
                "name = \"top\"\nsort = { by = [\"n desc\"] }\n[[step]]\nname = \"sum\"",
            )
            .as_bytes(),
    );
    f.ok(["run", "sparse.toml", "--force"]);
    assert_eq!(
        fs::read_to_string(f.path("total.csv")).unwrap(),
        "word,n\nb,10\na,9\n"
    );
    // Errors.
    fs::create_dir(f.path("empty")).unwrap();
    f.write("empty/_SUCCESS", b"");
    f.write("e.toml", second("csv = { path = \"empty\" }").as_bytes());
    assert_error(
        &f.millrace(["run", "e.toml", "--force"]),
        &["empty", "without data files"],
    );
    fs::create_dir(f.path("mixed")).unwrap();
    f.write("mixed/part-00000", b"word,n\na,5\n");
    f.write("mixed/part-00001", b"word,count\nb,6\n");
    f.write("m.toml", second("csv = { path = \"mixed\" }").as_bytes());
    assert_error(
        &f.millrace(["run", "m.toml", "--force"]),
        &["mixed/part-00001", "count", "part-00000"],
    );
    let fifo = f.path("out/part-00009");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert_error(
        &f.millrace(["run", "csv.toml", "--force"]),
        &["part-00009", "not a regular file"],
    );
    fs::remove_file(&fifo).unwrap();
    f.write(
        "inside.toml",
        second("csv = { path = \"out\" }")
            .replace("total.csv", "out/total.csv")
            .as_bytes(),
    );
    assert_error(
        &f.millrace(["run", "inside.toml"]),
        &["out/total.csv", "inside"],
    );
    assert!(!f.path("out/total.csv").exists());
}

/// An aggregate without keys (SQL's `SELECT count(*), … FROM t`): one row, finished by one
/// subtask, in every mode and budget; with no input rows still one row (counts 0).
#[test]
fn global_aggregates_give_one_row() {
    let f = Fixture::new();
    let input = text(20_000, 6);
    f.write("in.txt", input.as_bytes());
    let oracle = word_oracle(&input);
    let words: u64 = oracle.values().sum();
    let spec = |filter: &str| {
        format!(
            r#"
[[step]]
name = "lines"
source = {{ text = {{ path = "in.txt" }} }}
[[step]]
name = "words"
tokenize = {{ column = "line" }}
{filter}
[[step]]
name = "all"
aggregate = {{ keys = [], aggregates = [{{ fn = "count", as = "n" }}, {{ fn = "count_distinct", column = "word", as = "distinct" }}] }}
[[step]]
name = "out"
sink = {{ csv = {{ path = "all.csv", one_file = true }} }}
"#
        )
    };
    f.write("all.toml", spec("").as_bytes());
    for mode in ["pipelined", "staged", "mapreduce"] {
        for memory in ["1GiB", "4MiB"] {
            f.ok([
                "run", "all.toml", "--mode", mode, "--memory", memory, "--force",
            ]);
            let got = fs::read_to_string(f.path("all.csv")).unwrap();
            let want = format!("n,distinct\n{words},{}\n", oracle.len());
            assert_eq!(got, want, "{mode} {memory}");
        }
    }
    f.write(
        "none.toml",
        spec("[[step]]\nname = \"none\"\nfilter = { eq = { column = \"word\", value = \"no such word\" } }\n")
            .as_bytes(),
    );
    f.ok(["run", "none.toml", "--force", "--parallelism", "3"]);
    assert_eq!(
        fs::read_to_string(f.path("all.csv")).unwrap(),
        "n,distinct\n0,0\n"
    );
    f.write(
        "nothing.toml",
        spec("").replace("aggregates = [{ fn = \"count\", as = \"n\" }, { fn = \"count_distinct\", column = \"word\", as = \"distinct\" }]", "aggregates = []").as_bytes(),
    );
    assert_error(
        &f.millrace(["run", "nothing.toml", "--force"]),
        &["\"all\"", "keys or aggregates"],
    );
}

/// `union` (by column name): its branches closed by a partial aggregate, a round-robin
/// exchange into the sink, a local top-N and a join's hash exchange, in every mode, equal the
/// oracle; bad unions fail with one line naming the step.
#[test]
fn unions_equal_the_oracle() {
    let f = Fixture::new();
    let mut rng = SplitMix(33);
    // a and c are `k,v`, b is `v,k`; c has empty (null) values.
    let mut all: Vec<(String, Option<i64>)> = Vec::new();
    let mut files = [
        String::from("k,v\n"),
        String::from("v,k\n"),
        String::from("k,v\n"),
    ];
    for (i, file) in files.iter_mut().enumerate() {
        for _ in 0..20_000 {
            let k = format!("k{}", rng.next_u64() % 300);
            let v = (i != 2 || !rng.next_u64().is_multiple_of(4))
                .then(|| (rng.next_u64() % 1000) as i64);
            let text = v.map(|v| v.to_string()).unwrap_or_default();
            file.push_str(&if i == 1 {
                format!("{text},{k}\n")
            } else {
                format!("{k},{text}\n")
            });
            all.push((k, v));
        }
    }
    for (name, text) in ["a.csv", "b.csv", "c.csv"].iter().zip(&files) {
        f.write(name, text.as_bytes());
    }
    let head = r#"
[[step]]
name = "a"
source = { csv = { path = "a.csv" } }
[[step]]
name = "b"
source = { csv = { path = "b.csv" } }
[[step]]
name = "c"
source = { csv = { path = "c.csv" } }
[[step]]
name = "all"
union = ["a", "b", "c"]
"#;
    let job = |tail: &str| {
        format!("{head}{tail}\n[[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"out\" }} }}\n")
    };
    let cell = |v: &Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    // Aggregate after the union.
    let mut sums: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for (k, v) in &all {
        let e = sums.entry(k.clone()).or_default();
        e.0 += 1;
        e.1 += v.unwrap_or(0);
    }
    let sums: Vec<String> = sums
        .iter()
        .map(|(k, (n, s))| format!("{k},{n},{s}"))
        .collect();
    // Straight into the sink.
    let mut rows: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{k},{}", cell(v)))
        .collect();
    rows.sort();
    // The top 5 by v descending (nulls first, as descending sorts put them), then k.
    let mut top_oracle: Vec<(String, Option<i64>)> = all.clone();
    top_oracle.sort_by(|x, y| match (x.1, y.1) {
        (None, None) => x.0.cmp(&y.0),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a).then(x.0.cmp(&y.0)),
    });
    let top5: Vec<String> = top_oracle[..5]
        .iter()
        .map(|(k, v)| format!("{k},{}", cell(v)))
        .collect();
    // As a join's left side: the rows of a, b and c whose key is among the first 100.
    let mut semi: Vec<String> = all
        .iter()
        .filter(|(k, _)| k[1..].parse::<u64>().unwrap() < 100)
        .map(|(k, v)| format!("{k},{}", cell(v)))
        .collect();
    semi.sort();
    let keys: String = (0..100).map(|k| format!("k{k}\n")).collect();
    f.write("keys.csv", format!("k\n{keys}").as_bytes());
    let cases = [
        ("aggregate", job("[[step]]\nname = \"agg\"\naggregate = { keys = [\"k\"], aggregates = [{ fn = \"count\", as = \"n\" }, { fn = \"sum\", column = \"v\", as = \"s\" }] }"), "k,n,s", sums, true),
        ("sink", job(""), "k,v", rows, true),
        ("top", job("[[step]]\nname = \"sorted\"\nsort = { by = [\"v desc\", \"k\"] }\n[[step]]\nname = \"five\"\nlimit = 5"), "k,v", top5, false),
        ("join", job("[[step]]\nname = \"keys\"\nsource = { csv = { path = \"keys.csv\" } }\n[[step]]\nname = \"known\"\ninput = \"all\"\njoin = { right = \"keys\", on = [\"k\"], type = \"semi\" }"), "k,v", semi, true),
    ];
    for (what, spec, header, expected, unordered) in cases {
        f.write("u.toml", spec.as_bytes());
        for mode in ["pipelined", "staged", "mapreduce"] {
            f.ok([
                "run",
                "u.toml",
                "--force",
                "--mode",
                mode,
                "--parallelism",
                "3",
                "--memory",
                "8MiB",
            ]);
            let mut got = read_parts(&f, "out", header);
            if unordered {
                got.sort();
            }
            assert!(
                got == expected,
                "{what} {mode}: {} rows, expected {}",
                got.len(),
                expected.len()
            );
            if what == "sink" {
                assert_eq!(fs::read_dir(f.path("out")).unwrap().count(), 3);
            }
        }
    }
    let run = f.ok(["explain", "u.toml"]);
    assert!(
        run.stdout.contains("b (source) → (b in union order)"),
        "{}",
        run.stdout
    );
    f.write("u.toml", job("").as_bytes());
    let run = f.ok(["explain", "u.toml"]);
    assert!(
        run.stdout.contains("edge 2 → 3: rebalance (round-robin)"),
        "{}",
        run.stdout
    );
    fs::remove_dir_all(f.path("out")).unwrap();
    // Bad unions.
    f.write("t.txt", b"x\n");
    let bad = [
        (
            head.replace("path = \"c.csv\"", "path = \"keys.csv\""),
            &["\"all\"", "\"c\" has no column \"v\""][..],
        ),
        (
            head.replace("csv = { path = \"c.csv\" }", "text = { path = \"t.txt\" }"),
            &[
                "\"all\"",
                "column \"line\" of \"c\" is not in the first input (k, v)",
            ][..],
        ),
        (
            head.replace("union = [\"a\", \"b\", \"c\"]", "union = [\"a\"]"),
            &["\"all\"", "at least two inputs"][..],
        ),
        (
            head.replace(
                "union = [\"a\", \"b\", \"c\"]",
                "union = [\"a\", \"a\", \"c\"]",
            ),
            &[
                "\"all\"",
                "\"a\" is not an earlier step, or another step already uses it",
            ][..],
        ),
    ];
    for (spec, needles) in bad {
        let spec =
            format!("{spec}[[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"out\" }} }}\n");
        f.write("u.toml", spec.as_bytes());
        assert_error(&f.millrace(["run", "u.toml"]), needles);
        assert!(!f.path("out").exists());
    }
    // Types differ: v is text in one input.
    f.write("d.csv", b"k,v\nx,abc\n");
    let spec = head.replace("path = \"c.csv\"", "path = \"d.csv\"");
    f.write(
        "u.toml",
        format!("{spec}[[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"out\" }} }}\n")
            .as_bytes(),
    );
    assert_error(
        &f.millrace(["run", "u.toml"]),
        &[
            "\"all\"",
            "column \"v\" is Int64 in one input and Utf8 in \"c\"",
        ],
    );
}

/// Sort Benchmark records as a source and a sink: `examples/terasort.toml` runs as the TeraSort
/// job in every mode (byte-identical to `millrace sort`, one file that `validate` accepts);
/// other record jobs run as general stages (a descending sort, a top-N), gathered into one
/// file; a sink of other columns and a file that is not whole records are refused.
#[test]
fn record_files_run_as_terasort_or_as_stages() {
    let f = Fixture::new();
    fs::create_dir(f.path("data")).unwrap();
    f.gen(&[], "200000", "data/in.dat");
    f.ok(["sort", "data/in.dat", "sorted-by-sort.dat"]);
    let expected = f.read("sorted-by-sort.dat");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    fs::copy(examples.join("terasort.toml"), f.path("terasort.toml")).unwrap();
    let run = f.ok(["explain", "terasort.toml"]);
    assert!(run.stdout.contains("runs as TeraSort"), "{}", run.stdout);
    for mode in ["pipelined", "staged", "mapreduce"] {
        let run = f.ok(["run", "terasort.toml", "--force", "--mode", mode, "--json"]);
        assert_eq!(run.json()["rows_out"], 200_000);
        assert!(
            f.read("data/sorted.dat") == expected,
            "{mode}: differs from sort"
        );
    }
    f.ok(["validate", "data/sorted.dat"]);
    // An `exchange` of its own on the sort: the TeraSort job has one mode, so general stages
    // run it (the same bytes).
    f.write(
        "mixed.toml",
        fs::read_to_string(f.path("terasort.toml"))
            .unwrap()
            .replace("sort = {", "exchange = \"staged\"\nsort = {")
            .replace("sorted.dat", "mixed.dat")
            .as_bytes(),
    );
    let run = f.ok(["explain", "mixed.toml"]);
    assert!(!run.stdout.contains("runs as TeraSort"), "{}", run.stdout);
    assert!(
        run.stdout.contains("(exchange = \"staged\")"),
        "{}",
        run.stdout
    );
    f.ok(["run", "mixed.toml"]);
    assert!(
        f.read("data/mixed.dat") == expected,
        "exchange = staged: differs from sort"
    );
    let records =
        |name: &str| -> Vec<Vec<u8>> { f.read(name).chunks(100).map(<[u8]>::to_vec).collect() };
    let mut all = records("data/in.dat");
    all.sort_by(|a, b| a[..10].cmp(&b[..10]));
    // Descending: not TeraSort's shape, so general stages (a gather, then the sort).
    let spec = fs::read_to_string(f.path("terasort.toml")).unwrap();
    f.write(
        "desc.toml",
        spec.replace("by = [\"key\"]", "by = [\"key desc\"]")
            .replace("sorted.dat", "desc.dat")
            .as_bytes(),
    );
    let run = f.ok(["explain", "desc.toml"]);
    assert!(!run.stdout.contains("runs as TeraSort"), "{}", run.stdout);
    for mode in ["pipelined", "staged", "mapreduce"] {
        f.ok([
            "run",
            "desc.toml",
            "--force",
            "--mode",
            mode,
            "--memory",
            "8MiB",
        ]);
        let got = records("data/desc.dat");
        assert_eq!(got.len(), all.len());
        // Keys descending; the records themselves the input's.
        assert!(
            got.windows(2).all(|w| w[0][..10] >= w[1][..10]),
            "{mode}: not descending"
        );
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| a[..10].cmp(&b[..10]));
        assert!(
            sorted
                .iter()
                .map(|r| &r[..10])
                .eq(all.iter().map(|r| &r[..10])),
            "{mode}"
        );
    }
    // The ten smallest keys, with a parallel scan: gathered into one file.
    f.write(
        "ten.toml",
        spec.replace(
            "name = \"out\"",
            "name = \"ten\"\nlimit = 10\n[[step]]\nname = \"out\"",
        )
        .replace("sorted.dat", "ten.dat")
        .as_bytes(),
    );
    f.ok(["run", "ten.toml", "--parallelism", "3"]);
    assert!(records("data/ten.dat")
        .iter()
        .map(|r| &r[..10])
        .eq(all[..10].iter().map(|r| &r[..10])));
    // Refused: a sink of other columns, and a file that is not whole records.
    f.write("t.csv", b"a,b\n1,2\n");
    f.write("bad.toml", b"[[step]]\nname = \"s\"\nsource = { csv = { path = \"t.csv\" } }\n[[step]]\nname = \"out\"\nsink = { records = { path = \"r.dat\" } }\n");
    assert_error(
        &f.millrace(["run", "bad.toml"]),
        &[
            "\"out\"",
            "a records sink writes key: FixedSizeBinary(10)",
            "a: Int64, b: Int64",
        ],
    );
    f.write("data/odd.dat", &[7u8; 250]);
    f.write(
        "odd.toml",
        spec.replace("in.dat", "odd.dat")
            .replace("sorted.dat", "odd-out.dat")
            .as_bytes(),
    );
    assert_error(
        &f.millrace(["run", "odd.toml"]),
        &[
            "odd.dat",
            "250 bytes is not a whole number of 100-byte records",
        ],
    );
    assert!(!f.path("r.dat").exists() && !f.path("data/odd-out.dat").exists());
}

/// `run --timeline`: every subtask of every vertex, published with the output (JSON or Chrome
/// trace); a timeline path that is an input, the spec, or inside the output is refused before
/// any work; an existing one needs --force.
#[test]
fn run_writes_a_timeline_with_its_output() {
    let f = Fixture::new();
    f.write("in.txt", text(2_000, 4).as_bytes());
    f.write("wc.toml", WORDCOUNT.as_bytes());
    f.ok([
        "run",
        "wc.toml",
        "--timeline",
        "t.json",
        "--parallelism",
        "3",
    ]);
    let timeline: serde_json::Value = serde_json::from_slice(&f.read("t.json")).unwrap();
    assert_eq!(timeline["job"], "wc");
    let subtasks = timeline["subtasks"].as_array().unwrap();
    let mut vertices: Vec<&str> = subtasks
        .iter()
        .map(|s| s["vertex"].as_str().unwrap())
        .collect();
    vertices.dedup();
    assert_eq!((subtasks.len(), vertices), (6, vec!["lines", "counts"]));
    let words: u64 = word_oracle(&text(2_000, 4)).values().sum();
    let into_counts: u64 = subtasks
        .iter()
        .filter(|s| s["vertex"] == "counts")
        .map(|s| s["records_in"].as_u64().unwrap())
        .sum();
    assert!(into_counts > 0 && into_counts <= words);
    let run = f.millrace([
        "run",
        "wc.toml",
        "--timeline",
        "t.json",
        "--force",
        "--timeline-format",
        "chrome",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let trace: serde_json::Value = serde_json::from_slice(&f.read("t.json")).unwrap();
    assert!(trace["traceEvents"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
    let before = f.sha256("in.txt");
    for (path, needle) in [
        ("in.txt", "is the input file"),
        ("wc.toml", "is the job spec file"),
        ("out/t.json", "holds --timeline"),
    ] {
        assert_error(
            &f.millrace(["run", "wc.toml", "--timeline", path, "--force"]),
            &["--timeline", needle],
        );
    }
    assert_eq!(f.sha256("in.txt"), before);
    fs::remove_dir_all(f.path("out")).unwrap();
    assert_error(
        &f.millrace(["run", "wc.toml", "--timeline", "t.json"]),
        &["t.json", "--force"],
    );
    assert!(
        !f.path("out").exists(),
        "a refused timeline publishes no output"
    );
}

/// A CSV schema given in the spec: names and types as written (zip codes stay text, dates
/// are dates), the header line skipped; a bad entry names itself.
#[test]
fn csv_schemas_can_be_given() {
    let f = Fixture::new();
    f.write(
        "z.csv",
        b"zip,day,n\n00501,2026-11-29,3\n00501,2026-11-30,4\n10001,2026-11-29,5\n",
    );
    let spec = |schema: &str| {
        format!(
            "[[step]]\nname = \"z\"\nsource = {{ csv = {{ path = \"z.csv\", schema = {schema} }} }}\n\
             [[step]]\nname = \"late\"\nfilter = {{ ne = {{ column = \"code\", value = \"x\" }} }}\n\
             [[step]]\nname = \"a\"\naggregate = {{ keys = [\"code\"], aggregates = [{{ fn = \"sum\", column = \"n\", as = \"n\" }}, {{ fn = \"count_distinct\", column = \"day\", as = \"days\" }}] }}\n\
             [[step]]\nname = \"out\"\nsink = {{ csv = {{ path = \"out\" }} }}\n"
        )
    };
    f.write(
        "z.toml",
        spec(r#"["code Utf8", "day Date32", "n Int64"]"#).as_bytes(),
    );
    f.ok(["run", "z.toml"]);
    let mut rows = read_parts(&f, "out", "code,n,days");
    rows.sort();
    assert_eq!(rows, ["00501,7,2", "10001,5,1"]);
    let run = f.ok(["explain", "z.toml"]);
    assert!(
        run.stdout.contains("[code: Utf8, day: Date32, n: Int64]"),
        "{}",
        run.stdout
    );
    for (schema, needle) in [
        (r#"["code"]"#, "write a name and a type"),
        (r#"["code Text"]"#, "CSV schema entry \"code Text\""),
        ("[]", "at least one column"),
    ] {
        f.write("z.toml", spec(schema).as_bytes());
        fs::remove_dir_all(f.path("out")).ok();
        assert_error(&f.millrace(["run", "z.toml"]), &["\"z\"", needle]);
    }
}
