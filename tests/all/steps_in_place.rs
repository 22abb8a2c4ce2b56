//! Steps changed in place (CLI `step update`, HTTP PATCH, enable, disable,
//! remove), their health in `step list`, and a sync step's timeout held to
//! the operation budget it runs in.

use serde_json::{Value, json};

use crate::common::{Env, Server};

fn env_with_steps() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "opportunity", "--column", "name:text", "--column", "priority:text", "--column", "amount:decimal"]).ok();
    env.add_example("set-defaults");
    env.add_example("always-fails");
    let defaults = "defaults --plugin set-defaults --message create --table opportunity --stage pre-operation";
    env.run(&[&["step", "add"][..], &defaults.split(' ').collect::<Vec<_>>()].concat()).ok();
    let failing = "failing --plugin always-fails --message create --table opportunity --stage post-operation --mode async --max-attempts 1";
    env.run(&[&["step", "add"][..], &failing.split(' ').collect::<Vec<_>>()].concat()).ok();
    env
}

fn step(env: &Env, name: &str) -> Value {
    let list = env.run(&["step", "list", "--json"]).ok().json();
    list.as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or_else(|| panic!("no step {name} in {list}"))
}

#[test]
fn a_step_changes_in_place_and_shows_its_health() {
    let env = env_with_steps();
    let before = step(&env, "defaults");
    let changed = env.run(&["step", "update", "defaults", "--rank", "5", "--when", "amount gt 10", "--json"]).ok().json();
    assert_eq!((changed["rank"].as_i64(), changed["when"].as_str()), (Some(5), Some("amount gt 10")));
    let after = step(&env, "defaults");
    assert_eq!(after["rank"], 5);
    for same in ["plugin", "message", "table", "stage", "mode", "enabled"] {
        assert_eq!(after[same], before[same], "{same} stays");
    }
    // The condition takes effect: a small amount skips the step, a large one runs it.
    let small = env.run(&["record", "create", "opportunity", r#"{"amount": 1}"#]).ok().json();
    let big = env.run(&["record", "create", "opportunity", r#"{"amount": 100}"#]).ok().json();
    assert_eq!((small["priority"].clone(), big["priority"].as_str()), (Value::Null, Some("normal")));
    // "" removes the condition; a bad change is refused and changes nothing.
    env.run(&["step", "update", "defaults", "--when", ""]).ok();
    assert_eq!(step(&env, "defaults")["when"], Value::Null);
    let bad = env.run(&["step", "update", "defaults", "--when", "colour eq 1"]).fails();
    assert!(bad.stderr.contains("colour"), "{}", bad.stderr);
    assert!(env.run(&["step", "update", "nope", "--rank", "1"]).fails().stderr.contains("no step named nope"));

    // Health: the failing step's job failed once.
    env.run(&["work", "--until-idle"]).ok();
    let failing = step(&env, "failing");
    assert_eq!(failing["health"]["consecutive_failures"], 2, "two creates, two failed jobs: {failing}");
    assert_eq!(step(&env, "defaults")["health"]["consecutive_failures"], 0);
    assert!(env.run(&["step", "list"]).ok().stdout.contains("2 failures in a row"));

    // Over HTTP: change, disable, enable, remove.
    let s = Server::start(&env, &[]);
    let r = s.call("PATCH", "/api/steps/defaults", Some(br#"{"rank": 7, "config": {"priority": "high"}}"#), Some(crate::common::TOKEN));
    assert_eq!((r.status, r.body["rank"].as_i64()), (200, Some(7)), "{}", r.text);
    let r = s.call("PATCH", "/api/steps/defaults", Some(br#"{"table": "other"}"#), Some(crate::common::TOKEN));
    assert_eq!(r.status, 400, "the trigger cannot change: {}", r.text);
    assert_eq!(s.post("/api/steps/defaults/disable", &json!({})).body["enabled"], false);
    assert_eq!(step(&env, "defaults")["enabled"], false);
    assert_eq!(s.post("/api/steps/defaults/enable", &json!({})).body["enabled"], true);
    assert!(s.get("/api/steps").body["value"].as_array().unwrap().iter().any(|v| v["name"] == "failing" && v["health"]["consecutive_failures"] == 2));
    assert_eq!(s.call("DELETE", "/api/steps/defaults", None, Some(crate::common::TOKEN)).status, 204);
    assert_eq!(s.call("DELETE", "/api/steps/defaults", None, Some(crate::common::TOKEN)).status, 404);
}

/// A sync step runs inside the operation's budget: a longer --timeout-ms is
/// refused when registered or changed, not silently capped.
#[test]
fn a_sync_step_s_timeout_may_not_exceed_the_operation_budget() {
    let env = env_with_steps();
    let args = "slowish --plugin set-defaults --message create --table opportunity --stage pre-operation --timeout-ms 5000";
    let refused = env.run(&[&["step", "add"][..], &args.split(' ').collect::<Vec<_>>()].concat()).fails();
    assert!(refused.stderr.contains("longer than the operation's budget of 2000 ms"), "{}", refused.stderr);
    let changed = env.run(&["step", "update", "defaults", "--timeout-ms", "5000"]).fails();
    assert!(changed.stderr.contains("budget"), "{}", changed.stderr);
    assert_eq!(step(&env, "defaults")["timeout_ms"], Value::Null, "nothing changed");
    // With a larger budget (up to 2 minutes) it is accepted; beyond that is a usage error.
    env.run(&[&["--op-budget-ms", "10000", "step", "add"][..], &args.split(' ').collect::<Vec<_>>()].concat()).ok();
    let r = env.run(&["--op-budget-ms", "200000", "step", "list"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--op-budget-ms") && r.stderr.contains("100..=120000"), "{}", r.stderr);
    // Async steps are not bound by it.
    let asynchronous = "slow-async --plugin always-fails --message create --table opportunity --stage post-operation --mode async --timeout-ms 60000";
    env.run(&[&["step", "add"][..], &asynchronous.split(' ').collect::<Vec<_>>()].concat()).ok();
}
