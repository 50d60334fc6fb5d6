//! A finished job's report per vertex, from its timeline: every subtask attempt, and over the
//! subtasks' last attempts the sum, minimum, median and maximum of records and bytes in and
//! out and of the run time (Flink's per-vertex subtask metrics).

use std::collections::BTreeMap;

use serde_json::{json, Value};

const FIGURES: [&str; 5] = [
    "records_in",
    "records_out",
    "bytes_in",
    "bytes_out",
    "duration_us",
];

/// The vertices of `timeline` (`millrace run --timeline`'s document), in order of first
/// appearance.
pub fn vertices(timeline: &Value) -> Value {
    let Some(subtasks) = timeline.get("subtasks").and_then(Value::as_array) else {
        return json!([]);
    };
    let mut order: Vec<String> = Vec::new();
    let mut attempts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in subtasks {
        let vertex = s
            .get("vertex")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        if !attempts.contains_key(&vertex) {
            order.push(vertex.clone());
        }
        let number = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        let attempt = json!({
            "subtask": number("subtask"),
            "attempt": number("attempt"),
            "start_us": number("start_us"),
            "end_us": number("end_us"),
            "duration_us": number("end_us").saturating_sub(number("start_us")),
            "records_in": number("records_in"),
            "records_out": number("records_out"),
            "bytes_in": number("bytes_in"),
            "bytes_out": number("bytes_out"),
        });
        attempts.entry(vertex).or_default().push(attempt);
    }
    let vertices: Vec<Value> = order
        .into_iter()
        .map(|vertex| {
            let all = attempts.remove(&vertex).unwrap_or_default();
            // The last attempt of each subtask is the one that counted.
            let mut last: BTreeMap<u64, &Value> = BTreeMap::new();
            for a in &all {
                let subtask = a["subtask"].as_u64().unwrap_or(0);
                let newer = last
                    .get(&subtask)
                    .is_none_or(|b| a["attempt"].as_u64() >= b["attempt"].as_u64());
                if newer {
                    last.insert(subtask, a);
                }
            }
            let mut figures = serde_json::Map::new();
            for figure in FIGURES {
                let mut values: Vec<u64> =
                    last.values().filter_map(|a| a[figure].as_u64()).collect();
                values.sort_unstable();
                let sum: u64 = values.iter().sum();
                let pick = |i: usize| values.get(i).copied().unwrap_or(0);
                figures.insert(
                    figure.to_string(),
                    json!({
                        "sum": sum,
                        "min": pick(0),
                        "median": pick(values.len() / 2),
                        "max": pick(values.len().saturating_sub(1)),
                    }),
                );
            }
            json!({
                "vertex": vertex,
                "subtasks": last.len(),
                "attempts": all.len(),
                "figures": figures,
                "subtask_attempts": all,
            })
        })
        .collect();
    Value::Array(vertices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_attempts_count_and_figures_are_their_spread() {
        let timeline = json!({"subtasks": [
            {"vertex": "map", "subtask": 0, "attempt": 0, "start_us": 0, "end_us": 10, "records_in": 5, "records_out": 5, "bytes_in": 50, "bytes_out": 80},
            {"vertex": "map", "subtask": 1, "attempt": 0, "start_us": 0, "end_us": 4, "records_in": 99, "records_out": 0, "bytes_in": 0, "bytes_out": 0},
            {"vertex": "map", "subtask": 1, "attempt": 1, "start_us": 5, "end_us": 35, "records_in": 7, "records_out": 7, "bytes_in": 70, "bytes_out": 112},
            {"vertex": "sort", "subtask": 0, "attempt": 0, "start_us": 3, "end_us": 40, "records_in": 12, "records_out": 12, "bytes_in": 192, "bytes_out": 1200},
        ]});
        let vertices = vertices(&timeline);
        let map = &vertices[0];
        assert_eq!(map["vertex"], "map");
        assert_eq!(
            (map["subtasks"].as_u64(), map["attempts"].as_u64()),
            (Some(2), Some(3))
        );
        let records = &map["figures"]["records_in"];
        assert_eq!(
            records["sum"], 12,
            "the failed attempt's 99 records do not count"
        );
        assert_eq!(
            (records["min"].as_u64(), records["max"].as_u64()),
            (Some(5), Some(7))
        );
        assert_eq!(map["figures"]["duration_us"]["max"], 30);
        assert_eq!(vertices[1]["figures"]["bytes_out"]["median"], 1200);
        assert_eq!(super::vertices(&json!({})), json!([]));
    }
}
