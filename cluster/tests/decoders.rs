//! What a stranger can send the coordinator and the workers, fuzzed: bytes as a job spec
//! (TOML and JSON), as a submit request, as control messages; and valid specs mutated byte by
//! byte, then planned. Every outcome is a value or an error, never a panic.

use std::path::Path;

use cluster::api::SubmitRequest;
use cluster::control::{ToCoordinator, ToWorker};
use engine::batch::{BatchJobConfig, JobSpec};
use proptest::prelude::*;

const SPEC: &str = r#"name = "fuzz"
[[step]]
name = "sales"
source = { csv = { path = "sales.csv", header = true } }
[[step]]
name = "big"
filter = { ge = { column = "quantity", value = 2 } }
[[step]]
name = "per_region"
aggregate = { keys = ["region"], aggregates = [{ fn = "count", as = "n" }, { fn = "sum", column = "price", as = "revenue" }] }
[[step]]
name = "top"
sort = { by = ["revenue desc"] }
[[step]]
name = "out"
sink = { csv = { path = "out" } }
"#;

fn decode_everything(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let _ = JobSpec::parse(&text, false, Path::new(""), "fuzz");
    let _ = JobSpec::parse(&text, true, Path::new(""), "fuzz");
    let _ = serde_json::from_slice::<SubmitRequest>(bytes);
    let _ = postcard::from_bytes::<ToWorker>(bytes);
    let _ = postcard::from_bytes::<ToCoordinator>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_decode_to_a_value_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A valid spec with bytes replaced, inserted or removed: parsed, and when it parses,
    /// planned against a real file, without a panic.
    #[test]
    fn mutated_specs_parse_and_plan_or_fail_cleanly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6)
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sales.csv"),
            "region,quantity,price\neast,2,1.5\nwest,1,2.0\neast,3,0.5\n",
        )
        .unwrap();
        let mut bytes = SPEC.as_bytes().to_vec();
        for (at, kind, byte) in edits {
            let i = at.index(bytes.len().max(1));
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        decode_everything(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(spec) = JobSpec::parse(&text, false, dir.path(), "fuzz") {
            let config = BatchJobConfig { parallelism: Some(2), ..Default::default() };
            if let Ok((plan, p)) = engine::batch::plan_spec(&spec, &config) {
                let _ = engine::batch::explain(&plan, p);
            }
        }
    }
}

#[test]
fn the_unmutated_spec_plans() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sales.csv"),
        "region,quantity,price\neast,2,1.5\n",
    )
    .unwrap();
    let spec = JobSpec::parse(SPEC, false, dir.path(), "fuzz").unwrap();
    let config = BatchJobConfig {
        parallelism: Some(2),
        ..Default::default()
    };
    let (plan, p) = engine::batch::plan_spec(&spec, &config).unwrap();
    assert!(engine::batch::explain(&plan, p).contains("per_region"));
}
