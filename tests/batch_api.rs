//! The Rust API (`JobBuilder`): the three example jobs written with it (`examples/*_api.rs`,
//! compiled into this test) give the same rows as their TOML twins run by the binary, in
//! every execution style; a user function's error fails the job with its message and leaves
//! no output.

mod util;

#[path = "../examples/groupby_api.rs"]
#[allow(dead_code)]
mod groupby_api;
#[path = "../examples/join_api.rs"]
#[allow(dead_code)]
mod join_api;
#[path = "../examples/wordcount_api.rs"]
#[allow(dead_code)]
mod wordcount_api;

use std::fs;
use std::path::Path;

use engine::batch::{BatchJobConfig, JobBuilder, Mode, SinkSpec, SourceSpec};
use util::{normalized_rows as rows, Fixture};

#[test]
fn api_jobs_equal_their_specs_in_every_mode() {
    let f = Fixture::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let data = examples.join("data");
    fs::create_dir(f.path("data")).unwrap();
    for file in [
        "words.txt",
        "sales.csv",
        "regions.csv",
        "sales.parquet",
        "regions.parquet",
    ] {
        fs::copy(data.join(file), f.path("data").join(file)).unwrap();
    }
    type Job = fn(&Path, &Path) -> JobBuilder;
    let jobs: [(&str, Job, bool); 3] = [
        ("wordcount", wordcount_api::job, false),
        ("groupby", groupby_api::job, false),
        ("join", join_api::job, true),
    ];
    for (spec, job, ordered) in jobs {
        fs::copy(
            examples.join(format!("{spec}.toml")),
            f.path(&format!("{spec}.toml")),
        )
        .unwrap();
        for (mode, arg) in [
            (Mode::Pipelined, "pipelined"),
            (Mode::Staged, "staged"),
            (Mode::MapReduce, "mapreduce"),
        ] {
            f.ok(["run", &format!("{spec}.toml"), "--force", "--mode", arg]);
            let expected = rows(&f.path(&format!("{spec}.out")), ordered);
            let config = BatchJobConfig {
                mode: Some(mode),
                force: true,
                ..BatchJobConfig::default()
            };
            let out = f.path(&format!("{spec}-api.out"));
            let result = job(&f.path("data"), &out).run(&config).unwrap();
            assert_eq!(result.mode, mode);
            let got = rows(&out, ordered);
            assert!(
                !got.is_empty() && got == expected,
                "{spec} {arg}: the API job differs from the spec"
            );
        }
    }
}

#[test]
fn a_user_function_error_fails_the_job_and_leaves_nothing() {
    let f = Fixture::new();
    f.write("in.txt", b"a\nb\nboom\nc\n");
    let config = BatchJobConfig::default();
    let job = || {
        JobBuilder::new("fails")
            .source("lines", SourceSpec::text(f.path("in.txt")))
            .map_batches("check", |batch| {
                let lines = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap();
                if lines.iter().flatten().any(|l| l == "boom") {
                    return Err("a line says boom".to_string());
                }
                Ok(batch)
            })
            .sink("out", SinkSpec::csv(f.path("out")))
    };
    let error = job().run(&config).unwrap_err().to_string();
    assert!(
        error.contains("function \"check\": a line says boom"),
        "{error}"
    );
    assert!(!f.path("out").exists());
    assert_eq!(f.entries(), ["in.txt"]);
    // A bad sort key is reported when the job is planned.
    let error = job()
        .sort("s", ["line sideways"])
        .run(&config)
        .unwrap_err()
        .to_string();
    assert!(error.contains("sideways"), "{error}");
    // The explain of an API job names its function step.
    let explain = job().explain(&config).unwrap();
    assert!(
        explain.contains("lines (source) → check (map)"),
        "{explain}"
    );
}
