//! The event pipeline through the real `weir` binary on a real SQLite file:
//! sync plug-ins inside the transaction, rollbacks, filters, the depth guard,
//! grants, and bad input refused with nothing stored.

use crate::common::{Env, Run};
use serde_json::Value;

/// account/opportunity/audit tables, the example plug-ins, an account (limit 1000).
fn crm() -> (Env, String) {
    let env = Env::new();
    env.crm_tables(&["stage:text", "counter:integer"]);
    env.run(&["table", "create", "audit", "--column", "entity:text", "--column", "recordid:text", "--column", "action:text"]).ok();
    for p in ["credit-check", "set-defaults", "audit-trail", "ping-pong", "spin-forever", "notify"] {
        env.add_example(p);
    }
    let acct = env.run(&["record", "create", "account", r#"{"name":"Contoso","creditlimit":1000}"#]).ok().json();
    (env, acct["id"].as_str().unwrap().to_string())
}

fn count(env: &Env, table: &str, filter: Option<&str>) -> usize {
    let mut args = vec!["record", "query", table];
    if let Some(f) = filter {
        args.extend(["--filter", f]);
    }
    env.run(&args).ok().json().as_array().unwrap().len()
}

fn credit_steps(env: &Env) {
    env.run(&[
        "step",
        "add",
        "defaults",
        "--plugin",
        "set-defaults",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--rank",
        "0",
    ])
    .ok();
    env.run(&[
        "step",
        "add",
        "credit",
        "--plugin",
        "credit-check",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--grant",
        "account:read",
    ])
    .ok();
    env.run(&[
        "step",
        "add",
        "audit",
        "--plugin",
        "audit-trail",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "post-operation",
        "--grant",
        "audit:write",
    ])
    .ok();
}

fn opportunity(env: &Env, acct: &str, amount: u32) -> Run {
    env.run(&["record", "create", "opportunity", &format!(r#"{{"name":"deal {amount}","amount":{amount},"customer":"{acct}"}}"#)])
}

#[test]
fn credit_check_rejects_and_nothing_is_written() {
    let (env, acct) = crm();
    credit_steps(&env);
    let out = opportunity(&env, &acct, 5000).fails();
    assert!(out.stderr.contains("credit-check: amount 5000 exceeds the credit limit 1000 of account Contoso"), "{}", out.stderr);
    assert_eq!(count(&env, "opportunity", None), 0, "the opportunity was rolled back");
    assert_eq!(count(&env, "audit", None), 0, "the audit row was rolled back");
}

#[test]
fn an_accepted_opportunity_gets_defaults_and_one_audit_row() {
    let (env, acct) = crm();
    credit_steps(&env);
    let rec = opportunity(&env, &acct, 500).ok().json();
    assert_eq!(rec["priority"], "normal", "set-defaults filled priority: {rec}");
    assert_eq!(rec["amount"], 500.0);
    let id = rec["id"].as_str().unwrap();
    let audits = env.run(&["record", "query", "audit", "--filter", &format!("recordid eq '{id}'")]).ok().json();
    assert_eq!(audits.as_array().unwrap().len(), 1);
    assert_eq!(audits[0]["action"], "create");
    assert_eq!(audits[0]["entity"], "opportunity");
    // The audit row was written in the same transaction: same commit time or earlier than any later write.
    assert_eq!(count(&env, "audit", None), 1);
    let got = env.run(&["record", "get", "opportunity", id]).ok().json();
    assert_eq!(got, rec);
    // A step config overrides the default.
    env.run(&["step", "remove", "defaults"]).ok();
    env.run(&[
        "step",
        "add",
        "defaults2",
        "--plugin",
        "set-defaults",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--config",
        r#"{"priority":"high"}"#,
    ])
    .ok();
    assert_eq!(opportunity(&env, &acct, 10).ok().json()["priority"], "high");
}

#[test]
fn a_filtered_update_step_fires_only_when_its_column_changes() {
    let (env, acct) = crm();
    env.run(&[
        "step",
        "add",
        "stage-audit",
        "--plugin",
        "audit-trail",
        "--message",
        "update",
        "--table",
        "opportunity",
        "--stage",
        "post-operation",
        "--filter",
        "stage",
        "--grant",
        "audit:write",
    ])
    .ok();
    let id = opportunity(&env, &acct, 100).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["record", "update", "opportunity", &id, r#"{"name":"renamed"}"#]).ok();
    assert_eq!(count(&env, "audit", None), 0, "a rename does not fire the stage step");
    env.run(&["record", "update", "opportunity", &id, r#"{"stage":"won"}"#]).ok();
    assert_eq!(count(&env, "audit", Some("action eq 'update'")), 1, "a stage change fires it");
    env.run(&["record", "update", "opportunity", &id, r#"{"stage":"won"}"#]).ok();
    assert_eq!(count(&env, "audit", None), 1, "writing the same stage again changes nothing");
}

#[test]
fn a_when_condition_gates_a_step() {
    let (env, acct) = crm();
    env.run(&[
        "step",
        "add",
        "big-audit",
        "--plugin",
        "audit-trail",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "post-operation",
        "--when",
        "amount ge 1000 and name ne 'skip'",
        "--grant",
        "audit:write",
    ])
    .ok();
    opportunity(&env, &acct, 10).ok();
    assert_eq!(count(&env, "audit", None), 0);
    opportunity(&env, &acct, 2000).ok();
    assert_eq!(count(&env, "audit", None), 1);
    let bad = env
        .run(&[
            "step",
            "add",
            "bad",
            "--plugin",
            "audit-trail",
            "--message",
            "create",
            "--table",
            "opportunity",
            "--stage",
            "post-operation",
            "--when",
            "amount gt",
        ])
        .fails();
    assert!(bad.stderr.contains("--when: bad filter at position 10"), "{}", bad.stderr);
}

#[test]
fn spin_forever_fails_the_create_on_fuel_or_time_and_stores_nothing() {
    let (env, acct) = crm();
    env.run(&[
        "step",
        "add",
        "spin",
        "--plugin",
        "spin-forever",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--fuel",
        "20000000",
    ])
    .ok();
    let out = opportunity(&env, &acct, 1).fails();
    assert!(out.stderr.contains("spin-forever: ran out of fuel after 20000000 units"), "{}", out.stderr);
    assert_eq!(count(&env, "opportunity", None), 0);
    // Unlimited-looking fuel: the step's own time budget stops it...
    env.run(&["step", "remove", "spin"]).ok();
    env.run(&[
        "step",
        "add",
        "spin2",
        "--plugin",
        "spin-forever",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--fuel",
        "1000000000000000",
        "--timeout-ms",
        "300",
    ])
    .ok();
    let out = opportunity(&env, &acct, 1).fails();
    assert!(out.stderr.contains("spin-forever: timed out after 300 ms"), "{}", out.stderr);
    assert_eq!(count(&env, "opportunity", None), 0);
    // ...and without one, the whole operation's 2 s budget (epochs, not fuel).
    env.run(&["step", "remove", "spin2"]).ok();
    env.run(&[
        "step",
        "add",
        "spin3",
        "--plugin",
        "spin-forever",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-operation",
        "--fuel",
        "1000000000000000",
    ])
    .ok();
    let started = std::time::Instant::now();
    let out = opportunity(&env, &acct, 1).fails();
    assert!(out.stderr.contains("spin-forever: timed out after 2000 ms"), "{}", out.stderr);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "stopped by the 2 s budget, not before");
    assert_eq!(count(&env, "opportunity", None), 0);
}

#[test]
fn ping_pong_is_stopped_at_the_depth_limit_and_rolled_back() {
    let (env, acct) = crm();
    env.run(&[
        "step",
        "add",
        "pong",
        "--plugin",
        "ping-pong",
        "--message",
        "update",
        "--table",
        "opportunity",
        "--stage",
        "post-operation",
        "--grant",
        "opportunity:write",
    ])
    .ok();
    env.run(&[
        "step",
        "add",
        "audit-upd",
        "--plugin",
        "audit-trail",
        "--message",
        "update",
        "--table",
        "opportunity",
        "--stage",
        "post-operation",
        "--grant",
        "audit:write",
    ])
    .ok();
    let rec = opportunity(&env, &acct, 1).ok().json();
    let id = rec["id"].as_str().unwrap();
    let out = env.run(&["record", "update", "opportunity", id, r#"{"counter":1}"#]).fails();
    assert!(out.stderr.contains("deeper than 8 levels") && out.stderr.contains("infinite loop"), "{}", out.stderr);
    let after = env.run(&["record", "get", "opportunity", id]).ok().json();
    assert_eq!(after["counter"], Value::Null, "the record keeps its old value");
    assert_eq!(after["modified_at"], rec["modified_at"]);
    assert_eq!(count(&env, "audit", None), 0, "no nested audit row survived");
}

#[test]
fn a_plugin_without_a_grant_can_neither_read_nor_write() {
    let (env, acct) = crm();
    // credit-check reads account: without the grant it fails.
    env.run(&["step", "add", "credit", "--plugin", "credit-check", "--message", "create", "--table", "opportunity", "--stage", "pre-operation"]).ok();
    let out = opportunity(&env, &acct, 5).fails();
    assert!(out.stderr.contains("no read grant for table account"), "{}", out.stderr);
    env.run(&["step", "remove", "credit"]).ok();
    // audit-trail writes audit: a read grant is not enough.
    env.run(&[
        "step",
        "add",
        "audit",
        "--plugin",
        "audit-trail",
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "post-operation",
        "--grant",
        "audit:read",
    ])
    .ok();
    let out = opportunity(&env, &acct, 5).fails();
    assert!(out.stderr.contains("no write grant for table audit"), "{}", out.stderr);
    assert_eq!(count(&env, "opportunity", None), 0);
    assert_eq!(count(&env, "audit", None), 0);
}

#[test]
fn bad_input_is_refused_with_the_culprit_named_and_nothing_stored() {
    let (env, acct) = crm();
    let cases: &[(&[&str], &str)] = &[
        (&["record", "create", "nosuch", "{}"], "no table named \"nosuch\""),
        (&["record", "create", "opportunity", r#"{"colour":"red"}"#], "table opportunity has no column \"colour\""),
        (&["record", "create", "opportunity", r#"{"amount":"lots"}"#], "column amount is decimal: expected a number, got \"lots\""),
        (&["record", "create", "opportunity", r#"{"counter":1.5}"#], "column counter is integer: expected a whole number"),
        (&["record", "create", "opportunity", r#"{"name": "#], "the record is not valid JSON"),
        (&["record", "create", "opportunity", "[1,2]"], "must be a JSON object"),
        (&["record", "create", "opportunity", r#"{"customer":"nope"}"#], "column customer refers to account nope, which does not exist"),
        (&["record", "create", "opportunity", r#"{"id":"x"}"#], "column id of table opportunity is set by weir"),
        (&["record", "update", "opportunity", "missing-id", r#"{"name":"x"}"#], "no opportunity record with id missing-id"),
        (&["record", "query", "opportunity", "--filter", "amount gt 'x'"], "`amount` is a number"),
        (&["record", "query", "opportunity", "--filter", "colour eq 'red'"], "unknown field `colour`"),
        (&["record", "query", "opportunity", "--filter", "name eq 'x' or 1=1; DROP TABLE x"], "bad filter at position"),
        (&["table", "create", "t2", "--column", "x:float"], "unknown column type \"float\""),
        (&["table", "create", "t3", "--column", "p:ref:nowhere"], "refers to table nowhere, which does not exist"),
        (&["table", "create", "account"], "table account already exists"),
        (
            &["step", "add", "s", "--plugin", "notify", "--message", "create", "--table", "opportunity", "--stage", "post-operation"],
            "cannot run as a sync step",
        ),
        (
            &["step", "add", "s", "--plugin", "credit-check", "--message", "create", "--table", "opportunity", "--stage", "post-operation", "--mode", "async"],
            "cannot run as an async step",
        ),
        (
            &["step", "add", "s", "--plugin", "audit-trail", "--message", "create", "--table", "opportunity", "--stage", "pre-operation", "--pre-image"],
            "no pre-image on create",
        ),
        (
            &["step", "add", "s", "--plugin", "audit-trail", "--message", "update", "--table", "opportunity", "--stage", "pre-operation", "--post-image"],
            "post-image exists only at post-operation",
        ),
        (&["step", "add", "s", "--plugin", "nosuch", "--message", "create", "--table", "opportunity", "--stage", "pre-operation"], "no plug-in named nosuch"),
        (
            &["step", "add", "s", "--plugin", "audit-trail", "--message", "update", "--table", "opportunity", "--stage", "pre-operation", "--filter", "colour"],
            "no column \"colour\"",
        ),
    ];
    for (args, want) in cases {
        let out = env.run(args).fails();
        assert!(out.stderr.contains(want), "{args:?}: wanted {want:?} in {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    assert_eq!(count(&env, "opportunity", None), 0);
    assert_eq!(count(&env, "account", None), 1);
    let steps = env.run(&["step", "list", "--json"]).ok().json();
    assert_eq!(steps.as_array().unwrap().len(), 0);
    let _ = acct;
}

#[test]
fn records_update_delete_query_and_order() {
    let (env, acct) = crm();
    for amount in [30, 10, 20] {
        opportunity(&env, &acct, amount).ok();
    }
    let q = env.run(&["record", "query", "opportunity", "--filter", "amount ge 20", "--orderby", "amount desc"]).ok().json();
    let amounts: Vec<f64> = q.as_array().unwrap().iter().map(|r| r["amount"].as_f64().unwrap()).collect();
    assert_eq!(amounts, vec![30.0, 20.0]);
    let top = env.run(&["record", "query", "opportunity", "--top", "1", "--orderby", "amount"]).ok().json();
    assert_eq!(top.as_array().unwrap().len(), 1);
    assert_eq!(top[0]["amount"], 10.0);
    let id = top[0]["id"].as_str().unwrap();
    let upd = env.run(&["record", "update", "opportunity", id, r#"{"stage":"won","amount":11}"#]).ok().json();
    assert_eq!(upd["stage"], "won");
    assert_eq!(upd["name"], "deal 10", "untouched columns are kept");
    env.run(&["record", "delete", "opportunity", id]).ok();
    env.run(&["record", "get", "opportunity", id]).fails();
    assert_eq!(count(&env, "opportunity", Some("stage eq null")), 2);
}

#[test]
fn steps_can_be_listed_disabled_and_enabled() {
    let (env, acct) = crm();
    credit_steps(&env);
    let list = env.run(&["step", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    env.run(&["step", "disable", "credit"]).ok();
    opportunity(&env, &acct, 5000).ok();
    env.run(&["step", "enable", "credit"]).ok();
    opportunity(&env, &acct, 5000).fails();
    env.run(&["step", "disable", "nosuch"]).fails();
}
