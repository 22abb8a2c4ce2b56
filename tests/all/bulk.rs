//! Bulk work from the CLI: `record import` of JSON lines (each record through
//! the pipeline, a summary with the reason for every refused line) and
//! `record export` (every matching record as JSON lines, past one page), CSV
//! import typed by the columns, and `POST /api/data/{table}/batch`.

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

#[test]
fn a_csv_file_imports_row_by_row_typed_by_the_columns() {
    let env = Env::new();
    env.run(&["table", "create", "account", "--column", "name:text"]).ok();
    let cols = ["--column", "name:text", "--column", "amount:decimal", "--column", "qty:integer", "--column", "ok:boolean", "--column", "at:timestamp"];
    env.run(&[&["table", "create", "deal"][..], &cols, &["--column", "meta:json", "--column", "account:ref:account"]].concat()).ok();
    let acct = env.run(&["record", "create", "account", r#"{"name": "A"}"#]).ok().json()["id"].as_str().unwrap().to_string();
    let csv = format!(
        "name,amount,qty,ok,at,meta,account\n\
         \"Big, quoted\",12345678901234567.89,3,true,2026-11-26T10:00:00Z,\"{{\"\"k\"\": 1}}\",{acct}\n\
         empty cells,,,,,,\n\
         bad amount,lots,1,yes,,,\n\
         no such account,1.5,1,no,,,nope\n"
    );
    let file = env.write("deals.csv", csv.as_bytes());
    let out = env.run(&["record", "import", "deal", crate::common::path(&file), "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["created"], 2, "{summary}");
    let refused = summary["refused"].as_array().unwrap();
    assert_eq!(refused.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 5], "{summary}");
    assert!(refused[0]["error"].as_str().unwrap().contains("column amount is decimal: expected a number"), "{}", refused[0]);
    assert!(refused[1]["error"].as_str().unwrap().contains("refers to account nope"), "{}", refused[1]);
    let rows = env.run(&["record", "query", "deal", "--filter", "qty eq 3"]).ok().json();
    let big = &rows[0];
    assert_eq!((big["name"].as_str(), big["amount"].to_string().as_str(), big["ok"].as_bool()), (Some("Big, quoted"), "12345678901234567.89", Some(true)));
    assert_eq!((big["meta"].clone(), big["account"].as_str(), big["at"].as_str()), (json!({"k": 1}), Some(acct.as_str()), Some("2026-11-26T10:00:00.000Z")));
    let empty = &env.run(&["record", "query", "deal", "--filter", "name eq 'empty cells'"]).ok().json()[0];
    assert!(empty["amount"].is_null() && empty["qty"].is_null() && empty["ok"].is_null(), "{empty}");
    // A header naming no column is refused per row, naming it.
    let file = env.write("odd.txt", b"name,colour\nx,red\n");
    let out = env.run(&["record", "import", "deal", crate::common::path(&file), "--format", "csv", "--json"]);
    assert!(out.stdout.contains("colour"), "{}", out.stdout);
}

#[test]
fn a_batch_over_http_answers_each_element_in_order() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text", "--column", "n:integer"]).ok();
    let s = crate::common::Server::start(&env, &[]);
    let body = json!([{"name": "a", "n": 1}, {"name": "b", "n": "two"}, {"name": "c", "colour": "red"}, {"name": "d", "n": 4}]);
    let r = s.post("/api/data/thing/batch", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["value"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 400, 400, 201], "{}", r.text);
    assert_eq!(results[0]["record"]["name"], "a");
    assert!(results[1]["error"].as_str().unwrap().contains("column n is integer"), "{}", r.text);
    assert!(results[2]["error"].as_str().unwrap().contains("colour"), "{}", r.text);
    let stored = env.run(&["record", "query", "thing"]).ok().json();
    assert_eq!(stored.as_array().unwrap().len(), 2, "each element its own operation: {stored}");
    assert_eq!(s.post("/api/data/thing/batch", &json!({"name": "x"})).status, 400);
    let many: Vec<Value> = (0..1001).map(|i| json!({"n": i})).collect();
    let too_many = s.post("/api/data/thing/batch", &Value::Array(many));
    assert!(too_many.status == 400 && too_many.text.contains("at most 1000"), "{}", too_many.text);
    assert_eq!(s.post("/api/data/nope/batch", &json!([{"name": "x"}])).body["value"][0]["status"], 404);
}

#[test]
fn delete_where_runs_as_a_job_through_the_pipeline_and_calls_back() {
    let env = Env::new();
    env.run(&["table", "create", "item", "--column", "n:integer"]).ok();
    env.run(&["table", "create", "audit", "--column", "entity:text", "--column", "recordid:text", "--column", "action:text"]).ok();
    env.add_example("audit-trail");
    let step = "audit --plugin audit-trail --message delete --table item --stage post-operation --grant audit:write";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    let lines: Vec<String> = (0..1_200).map(|i| json!({"n": i}).to_string()).collect();
    let file = env.write("items.jsonl", lines.join("\n").as_bytes());
    env.run(&["record", "import", "item", crate::common::path(&file)]).ok();
    let receiver = crate::common::Receiver::start(|_, _| crate::common::Answer::status("200 OK"));
    let job = env.run(&["record", "delete-where", "item", "--filter", "n lt 1000", "--callback", &receiver.url("/done"), "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env.run(&["record", "query", "item", "--top", "5000"]).ok().json().as_array().unwrap().len(),
        1_200,
        "nothing is deleted before a worker runs it"
    );
    env.run(&["work", "--until-idle"]).ok();
    let left = env.run(&["record", "query", "item", "--top", "5000"]).ok().json();
    assert_eq!(left.as_array().unwrap().len(), 200);
    assert!(left.as_array().unwrap().iter().all(|r| r["n"].as_i64().unwrap() >= 1000));
    // Each delete went through the pipeline: the delete step wrote an audit row for each.
    let audits = env.run(&["record", "query", "audit", "--filter", "action eq 'delete'", "--top", "5000"]).ok().json();
    assert_eq!(audits.as_array().unwrap().len(), 1_000);
    let shown = env.run(&["jobs", "show", &job, "--json"]).ok().json();
    assert_eq!(
        (shown["status"].as_str(), shown["kind"].as_str(), shown["result"]["deleted"].as_u64()),
        (Some("Succeeded"), Some("bulk-delete"), Some(1000)),
        "{shown}"
    );
    assert!(shown["trace"].to_string().contains("500 deleted so far"), "progress on the job: {shown}");
    crate::common::wait_for("the callback", || !receiver.seen().is_empty());
    let called: Value = serde_json::from_str(&receiver.seen()[0].body).unwrap();
    assert_eq!((called["status"].as_str(), called["result"]["deleted"].as_u64()), (Some("Succeeded"), Some(1000)));
    // Refused at once: no filter, a bad one, an unknown table.
    assert!(env.run(&["record", "delete-where", "item", "--filter", " "]).fails().stderr.contains("needs a --filter"));
    assert!(env.run(&["record", "delete-where", "item", "--filter", "colour eq 'red'"]).fails().stderr.contains("unknown field `colour`"));
    assert!(env.run(&["record", "delete-where", "nope", "--filter", "id ne null"]).fails().stderr.contains("no table named"));
}
