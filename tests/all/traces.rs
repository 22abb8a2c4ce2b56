//! The plug-in trace log: per step `--trace off|errors|all`. With `all` a
//! successful sync call's log line is kept (and an async one's); by default
//! only failed calls are, even when their operation rolled back; `off` keeps
//! nothing. Listed and shown by the CLI and the API, filtered by the filter
//! language, and deleted by retention.

use serde_json::Value;

use crate::common::{Env, Server, q};

fn crm() -> (Env, String) {
    let env = Env::new();
    env.run(&["table", "create", "account", "--column", "name:text", "--column", "creditlimit:decimal"]).ok();
    env.run(&["table", "create", "opportunity", "--column", "name:text", "--column", "amount:decimal", "--column", "customer:ref:account"]).ok();
    env.add_example("credit-check");
    env.add_example("notify");
    let acct = env.run(&["record", "create", "account", r#"{"name":"A","creditlimit":100}"#]).ok().json()["id"].as_str().unwrap().to_string();
    (env, acct)
}

fn add(env: &Env, spec: &str) {
    env.run(&[&["step", "add"][..], &spec.split(' ').collect::<Vec<_>>()].concat()).ok();
}

fn traces(env: &Env, filter: &str) -> Vec<Value> {
    env.run(&["trace", "list", "--json", "--filter", filter]).ok().json().as_array().unwrap().clone()
}

#[test]
fn trace_all_keeps_successful_calls_and_errors_keeps_failures() {
    let (env, acct) = crm();
    add(&env, "credit --plugin credit-check --message create --table opportunity --stage pre-operation --grant account:read --trace all");
    add(&env, "notify --plugin notify --message create --table opportunity --stage post-operation --mode async --trace all");
    let ok = env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 50, "customer": "{acct}"}}"#)]).ok().json();
    let kept = traces(&env, "plugin eq 'credit-check'");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((kept[0]["outcome"].as_str(), kept[0]["mode"].as_str(), kept[0]["record"].as_str()), (Some("ok"), Some("sync"), ok["id"].as_str()));
    assert!(kept[0]["lines"].to_string().contains("amount 50 is within the credit limit 100"), "{}", kept[0]);
    assert!(kept[0]["duration_us"].as_i64().unwrap() > 0 && kept[0]["fuel"].as_i64().unwrap() > 0);
    let id = kept[0]["id"].as_str().unwrap();
    let shown = env.run(&["trace", "show", id]).ok().stdout;
    assert!(shown.contains("within the credit limit") && shown.contains("sync call of credit-check"), "{shown}");
    let listed = env.run(&["trace", "list"]).ok().stdout;
    assert!(listed.contains("credit-check") && listed.contains("within the credit limit"), "{listed}");
    // The async step's successful attempt too.
    env.run(&["work", "--until-idle"]).ok();
    let asynchronous = traces(&env, "mode eq 'async'");
    assert_eq!(asynchronous.len(), 1, "{asynchronous:?}");
    assert!(asynchronous[0]["lines"].to_string().contains("notify:"), "{}", asynchronous[0]);
    assert!(asynchronous[0]["job"].is_string());

    // The default, errors: a rejected create keeps its trace although it rolled back.
    env.run(&["step", "update", "credit", "--trace", "errors"]).ok();
    env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 5000, "customer": "{acct}"}}"#)]).fails();
    env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 60, "customer": "{acct}"}}"#)]).ok();
    let credit = traces(&env, "plugin eq 'credit-check'");
    assert_eq!(credit.len(), 2, "one success with all, one failure with errors: {credit:?}");
    assert_eq!(credit[0]["outcome"], "rejected");
    assert!(credit[0]["error"].as_str().unwrap().contains("exceeds the credit limit"), "{}", credit[0]);
    // off: nothing.
    env.run(&["step", "update", "credit", "--trace", "off"]).ok();
    env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 5000, "customer": "{acct}"}}"#)]).fails();
    assert_eq!(traces(&env, "plugin eq 'credit-check'").len(), 2);
    // The second accepted create queued a notify job: run it now, so that the
    // retention run below has no job left that could write a trace after it.
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(traces(&env, "mode eq 'async'").len(), 2);

    // The API, and retention (its own age).
    let s = Server::start(&env, &[]);
    let api = s.get(&format!("/api/traces?$filter={}", q("outcome eq 'rejected'"))).body;
    assert_eq!(api["value"].as_array().unwrap().len(), 1, "{api}");
    let one = s.get(&format!("/api/traces/{}", api["value"][0]["id"].as_str().unwrap()));
    assert_eq!(one.body["plugin"], "credit-check");
    assert_eq!(s.get("/api/traces/nope").status, 404);
    drop(s);
    let work = env.command().args(["work", "--until-idle", "--keep-traces", "0s"]).env("WEIR_LOG", "info").output().unwrap();
    assert!(work.status.success());
    let left = traces(&env, "");
    assert!(left.is_empty(), "retention kept {} traces; the worker said: {}", left.len(), String::from_utf8_lossy(&work.stderr));
}
