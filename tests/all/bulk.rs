//! Bulk work from the CLI: `record import` of JSON lines (each record through
//! the pipeline, a summary with the reason for every refused line) and
//! `record export` (every matching record as JSON lines, past one page).

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::Env;

#[test]
fn import_goes_through_the_pipeline_and_export_returns_every_record() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text", "--column", "n:integer", "--column", "priority:text"]).ok();
    env.add_example("set-defaults");
    let step = "defaults --plugin set-defaults --message create --table thing --stage pre-operation";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    let mut lines: Vec<String> = (0..5_100).map(|i| json!({"name": format!("t{i}"), "n": i}).to_string()).collect();
    lines.insert(3, r#"{"name": "bad", "colour": "red"}"#.into());
    lines.insert(7, "{not json".into());
    lines.insert(9, String::new());
    let file = env.write("things.jsonl", lines.join("\n").as_bytes());
    let out = env.run(&["record", "import", "thing", crate::common::path(&file), "--json"]);
    assert_eq!(out.code, 1, "refused lines make it exit 1: {}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["created"], 5_100);
    let refused = summary["refused"].as_array().unwrap();
    assert_eq!(refused.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 8]);
    assert!(refused[0]["error"].as_str().unwrap().contains("colour"), "{}", refused[0]);
    assert!(refused[1]["error"].as_str().unwrap().contains("not valid JSON"), "{}", refused[1]);
    assert!(out.stderr.contains("2 of 5102 lines were refused"), "{}", out.stderr);

    // Every record once, each with what its pre-operation step set.
    let all = env.run(&["record", "export", "thing"]).ok().stdout;
    let rows: Vec<Value> = all.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5_100);
    assert_eq!(rows.iter().map(|r| r["id"].as_str().unwrap()).collect::<HashSet<_>>().len(), 5_100);
    assert!(rows.iter().all(|r| r["priority"] == "normal"), "each record went through the pipeline");
    let some = env.run(&["record", "export", "thing", "--filter", "n ge 5000"]).ok().stdout;
    assert_eq!(some.lines().count(), 100);
    let text = env.run(&["record", "import", "thing", crate::common::path(&env.write("ok.jsonl", b"{\"n\": 1}\n"))]).ok().stdout;
    assert!(text.starts_with("created 1 thing records"), "{text}");
}
