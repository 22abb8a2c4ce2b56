//! Workflows that start jobs and wait for them (`jobs.start`,
//! `wait-for-jobs`), compensate (the order saga), and save checkpoints; on
//! SQLite and, with `WEIR_TEST_PG`, on PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// A database with the orchestra fixture, allowed to start itself.
fn orchestra() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "chunk", "--column", "n:integer", "--column", "attempt:integer"]).ok();
    env.add_example("orchestra");
    env
}

fn submit(env: &Env, input: Value, extra: &[&str]) -> String {
    let input = input.to_string();
    let mut args = vec!["background", "submit", "orchestra", "--input", &input, "--may-start", "orchestra", "--json"];
    args.extend_from_slice(extra);
    env.run(&args).ok().json()["id"].as_str().unwrap().to_string()
}

fn show(env: &Env, id: &str) -> Value {
    env.run(&["jobs", "show", id, "--json"]).ok().json()
}

fn count(env: &Env, sql: &str) -> i64 {
    env.sql().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_hundred_children_fan_out_and_the_parent_wakes_once_with_every_result() {
    let env = orchestra();
    let parent = submit(&env, json!({"mode": "fanout", "n": 100}), &[]);
    env.run(&["work", "--until-idle", "--workers", "8"]).ok();
    let job = show(&env, &parent);
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert_eq!(job["result"], json!({"reports": 100, "succeeded": 100, "sum": 4950, "in_order": true}), "{job}");
    // Its runs: the one that started the children and waited, then the one it woke for.
    let outcomes: Vec<&str> = job["history"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "wait").count(), 1, "woke once: {outcomes:?}");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    // One tree: every child links its parent, carries its correlation and is listed on it.
    let children = job["children"].as_array().unwrap();
    assert_eq!(children.len(), 100);
    assert!(children.iter().all(|c| c["status"] == "Succeeded" && c["plugin"] == "orchestra"), "{children:?}");
    let listed = env.run(&["jobs", "list", "--filter", &format!("parent eq '{parent}'"), "--top", "500", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 100);
    let first = show(&env, children[0]["id"].as_str().unwrap());
    assert_eq!((first["parent"].as_str(), first["child_key"].as_str()), (Some(parent.as_str()), Some("c0")), "{first}");
    assert_eq!(first["correlation_id"], job["correlation_id"]);
    assert_eq!(first["result"]["parent"].as_str(), Some(parent.as_str()), "the child's context names its parent");
    // The job page says it: `jobs show` lists the children and a child its parent.
    let text = env.run(&["jobs", "show", &parent]).ok().stdout;
    assert!(text.contains("children:    100 (0 unfinished"), "{text}");
}

#[test]
fn a_parent_retried_after_starting_children_starts_none_twice() {
    let env = orchestra();
    let parent = submit(&env, json!({"mode": "retry-start"}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let job = show(&env, &parent);
    assert_eq!(job["status"], "Succeeded", "{job}");
    // Attempt 1 started two and failed: nothing of it stayed. Attempt 2 started them.
    assert_eq!(count(&env, &format!("SELECT COUNT(*) FROM weir_jobs WHERE parent_id = '{parent}'")), 2);
    let r = &job["result"];
    assert_eq!(r["attempt"], 2, "the attempt counts the job's runs, not the segment since the wake: {r}");
    assert_eq!(r["reports"], 2);
    // Starting a key again after the wait answers the child started before.
    assert_eq!(r["again"], r["first"][0], "{r}");
}

#[test]
fn starting_a_job_needs_a_grant_and_a_wait_only_names_its_own_children() {
    let env = orchestra();
    // No --may-start: refused, naming the grant.
    let input = json!({"mode": "undeclared", "plugin": "orchestra"}).to_string();
    let id = env.run(&["background", "submit", "orchestra", "--input", &input, "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    // Granted another plug-in only: refused too.
    let other = submit(&env, json!({"mode": "undeclared", "plugin": "noop"}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let denied = show(&env, &id);
    let error = denied["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("Denied") && error.contains("--may-start orchestra"), "{denied}");
    assert!(show(&env, &other)["result"]["error"].as_str().unwrap_or_default().contains("--may-start noop"));
    assert_eq!(count(&env, "SELECT COUNT(*) FROM weir_jobs WHERE parent_id IS NOT NULL"), 0);
    // A child does not inherit its parent's --may-start: it starts nothing of its own.
    let nested = submit(&env, json!({"mode": "nested"}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let job = show(&env, &nested);
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert!(job["result"]["child"]["error"].as_str().unwrap_or_default().contains("Denied"), "{job}");
    assert_eq!(count(&env, &format!("SELECT COUNT(*) FROM weir_jobs WHERE parent_id = '{nested}'")), 1);
    // A wait for another job's child (or any job it did not start) fails for good.
    let stranger = submit(&env, json!({"mode": "stranger", "job": id}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let job = show(&env, &stranger);
    assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("Failed"), Some("invalid_wait")), "{job}");
    assert!(job["error"].as_str().unwrap().contains(&format!("{id} is not a job it started")), "{job}");
    // A sync plug-in cannot start jobs, and a sync step cannot be granted it.
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    env.add_example("noop");
    let refused = env
        .run(&["step", "add", "s", "--plugin", "noop", "--table", "thing", "--message", "create", "--stage", "pre-operation", "--may-start", "noop"])
        .fails();
    assert!(refused.stderr.contains("only async steps may start jobs"), "{}", refused.stderr);
}

#[test]
fn canceling_a_parent_with_cascade_cancels_its_unfinished_children() {
    let env = orchestra();
    let parent = submit(&env, json!({"mode": "sleepy-parent"}), &[]);
    let lone = submit(&env, json!({"mode": "sleepy-parent"}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let job = show(&env, &parent);
    assert_eq!(job["status"], "Waiting", "{job}");
    let children: Vec<String> = job["children"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(children.len(), 3);
    assert!(children.iter().all(|c| show(&env, c)["status"] == "Waiting"));
    // Without --cascade the children are left; with it they go too.
    let out = env.run(&["jobs", "cancel", &parent, "--cascade"]).ok().stdout;
    assert!(out.contains("Canceled") && out.matches("is now Canceled").count() == 3, "{out}");
    for c in &children {
        assert_eq!(show(&env, c)["status"], "Canceled");
    }
    env.run(&["jobs", "cancel", &lone]).ok();
    let left = show(&env, &lone);
    assert!(left["children"].as_array().unwrap().iter().all(|c| c["status"] == "Waiting"), "{left}");
    // The API's cascade: pause through HTTP.
    let third = submit(&env, json!({"mode": "sleepy-parent"}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let s = Server::start(&env, &[]);
    let paused = s.post(&format!("/api/jobs/{third}/pause"), &json!({"cascade": true}));
    assert_eq!(paused.status, 200, "{}", paused.text);
    let view = paused.body;
    assert_eq!(view["status"], "Paused", "{view}");
    assert!(view["children"].as_array().unwrap().iter().all(|c| c["status"] == "Paused"), "{view}");
}

/// A job of five chunks, a checkpoint after each, killed (kill -9 of its
/// worker) in chunk 3: it resumes at chunk 3 on attempt 2, and each chunk's
/// record exists once.
#[test]
fn a_job_killed_in_its_third_chunk_resumes_there_with_attempt_two() {
    let env = orchestra();
    let id = submit(&env, json!({"mode": "chunks", "chunks": 5, "stall_at": 3}), &["--grant", "chunk:write"]);
    let mut worker = env.command().args(["work", "--lease-ms", "1500"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Chunks 1 and 2 committed; chunk 3 running.
    wait_for("chunk 3 to start", || {
        let job = show(&env, &id);
        job["status"] == "InProgress" && count(&env, "SELECT COUNT(*) FROM data_chunk") == 2
    });
    std::thread::sleep(Duration::from_millis(200));
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    env.run(&["work", "--until-idle", "--lease-ms", "1500"]).ok();
    let job = show(&env, &id);
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert_eq!(job["result"]["chunks"], 5);
    let rows: Vec<(i64, i64)> = {
        let conn = env.sql();
        let mut st = conn.prepare("SELECT n, attempt FROM data_chunk ORDER BY n").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    };
    assert_eq!(rows, vec![(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)], "each chunk once; the killed one again on attempt 2");
    let outcomes: Vec<&str> = job["history"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "checkpoint").count(), 4, "{outcomes:?}");
    assert!(outcomes.contains(&"lost"), "{outcomes:?}");
}

/// The order saga (guest-examples/order-saga): reserve → charge → ship; a
/// ship that fails for good is compensated by a refund, then a release.
fn saga() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "orders", "--column", "item:text", "--column", "qty:integer", "--column", "amount:decimal", "--column", "status:text"]).ok();
    env.run(&["table", "create", "reservations", "--column", "order:text", "--column", "item:text", "--column", "qty:integer"]).ok();
    env.run(&["table", "create", "payments", "--column", "order:text", "--column", "kind:text", "--column", "amount:decimal"]).ok();
    env.run(&["table", "create", "shipments", "--column", "order:text"]).ok();
    env.add_example("order-saga");
    env.run(&[
        "step",
        "add",
        "order-saga",
        "--plugin",
        "order-saga",
        "--table",
        "orders",
        "--message",
        "create",
        "--stage",
        "post-operation",
        "--mode",
        "async",
        "--grant",
        "orders:write",
        "--grant",
        "reservations:write",
        "--grant",
        "payments:write",
        "--grant",
        "shipments:write",
        "--may-start",
        "order-saga",
    ])
    .ok();
    env
}

fn order(env: &Env, item: &str) -> String {
    let body = json!({"item": item, "qty": 2, "amount": "49.90"}).to_string();
    env.run(&["record", "create", "orders", &body]).ok().json()["id"].as_str().unwrap().to_string()
}

fn payments(env: &Env, order: &str) -> Vec<(String, String)> {
    let rows = env.run(&["record", "query", "payments", "--filter", &format!("order eq '{order}'"), "--json"]).ok().json();
    rows.as_array().unwrap().iter().map(|p| (p["kind"].as_str().unwrap().to_string(), p["amount"].to_string())).collect()
}

/// The saga's children in the order they finished.
fn finished_children(env: &Env, parent: &str) -> Vec<String> {
    let conn = env.sql();
    let sql = format!("SELECT child_key FROM weir_jobs WHERE parent_id = '{parent}' ORDER BY completed_at, id");
    let mut st = conn.prepare(&sql).unwrap();
    st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
}

fn saga_job(env: &Env) -> Value {
    let jobs = env.run(&["jobs", "list", "--filter", "step eq 'order-saga'", "--json"]).ok().json();
    jobs[0].clone()
}

#[test]
fn the_order_saga_completes_or_compensates_in_reverse_order() {
    let env = saga();
    let good = order(&env, "book");
    env.run(&["work", "--until-idle"]).ok();
    let done = env.run(&["record", "get", "orders", &good]).ok().json();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(payments(&env, &good), vec![("charge".into(), "49.90".into())]);

    let vase = order(&env, "fragile-vase");
    env.run(&["work", "--until-idle"]).ok();
    let parent = saga_job(&env);
    let job = show(&env, parent["id"].as_str().unwrap());
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert_eq!((job["result"]["status"].as_str(), job["result"]["failed"].as_str()), (Some("compensated"), Some("ship")), "{job}");
    let order_now = env.run(&["record", "get", "orders", &vase]).ok().json();
    assert_eq!(order_now["status"], "compensated");
    // Refund, then release, once each, after the ship failed.
    assert_eq!(finished_children(&env, job["id"].as_str().unwrap()), ["reserve", "charge", "ship", "refund", "release"]);
    let mut paid = payments(&env, &vase);
    paid.sort();
    assert_eq!(paid, vec![("charge".into(), "49.90".into()), ("refund".into(), "-49.90".into())]);
    let held = env.run(&["record", "query", "reservations", "--filter", &format!("order eq '{vase}'"), "--json"]).ok().json();
    assert_eq!(held.as_array().unwrap().len(), 0, "the stock was released: {held}");
    let ship = job["children"].as_array().unwrap().iter().find(|c| c["key"] == "ship").unwrap().clone();
    assert_eq!(ship["status"], "Failed");
}

/// kill -9 of the worker in the middle of sagas, again and again: every
/// order ends completed or compensated with exactly one charge (and one
/// refund when compensated), one job per child key.
#[test]
fn the_saga_survives_kill_9_without_a_double_charge() {
    let env = saga();
    let orders: Vec<String> = (0..6).map(|i| order(&env, if i % 2 == 0 { "fragile-vase" } else { "lamp" })).collect();
    for round in 0..4 {
        let mut worker = env.command().args(["work", "--lease-ms", "1000", "--workers", "4"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(250 + 150 * round));
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
    }
    env.run(&["work", "--until-idle", "--lease-ms", "1000"]).ok();
    for (i, o) in orders.iter().enumerate() {
        let rec = env.run(&["record", "get", "orders", o]).ok().json();
        let mut paid: Vec<String> = payments(&env, o).into_iter().map(|(k, _)| k).collect();
        paid.sort();
        if i % 2 == 0 {
            assert_eq!(rec["status"], "compensated", "{rec}");
            assert_eq!(paid, ["charge", "refund"], "order {o}");
        } else {
            assert_eq!(rec["status"], "completed", "{rec}");
            assert_eq!(paid, ["charge"], "order {o}");
        }
    }
    let dupes = count(
        &env,
        "SELECT COUNT(*) FROM (SELECT parent_id, child_key FROM weir_jobs WHERE parent_id IS NOT NULL GROUP BY parent_id, child_key HAVING COUNT(*) > 1) AS d",
    );
    assert_eq!(dupes, 0);
}

/// Components built against 0.2 (kept as fixtures in `tests/fixtures/v0.2/`,
/// never rebuilt) keep running through the adapter: a sync plug-in that
/// reads records and rejects, and a workflow that waits and resumes.
#[test]
fn components_built_against_0_2_run_unchanged() {
    let env = Env::new();
    env.crm_tables(&[]);
    env.run(&["table", "create", "expense", "--column", "amount:decimal", "--column", "approved:boolean", "--column", "state:text"]).ok();
    let fixture = |name: &str, file: &str| {
        let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v0.2").join(file);
        env.run(&["plugin", "add", name, path(&f)]).ok();
    };
    fixture("credit-check", "credit_check.wasm");
    fixture("approval", "approval.wasm");
    env.add_example("orchestra");
    let plugins = env.run(&["plugin", "list", "--json"]).ok().json();
    let contract = |name: &str| plugins.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["contract"].clone();
    assert_eq!((contract("credit-check"), contract("approval"), contract("orchestra")), (json!("0.2"), json!("0.2"), json!("0.3")));
    // Sync: reads the account through `records`, exact decimals, rejects over the limit.
    let step = |args: &[&str]| env.run(&[&["step", "add"][..], args].concat()).ok();
    step(&["credit", "--plugin", "credit-check", "--message", "create", "--table", "opportunity", "--stage", "pre-operation", "--grant", "account:read"]);
    let account = env.run(&["record", "create", "account", r#"{"name": "Contoso", "creditlimit": 100}"#]).ok().json();
    let acct = account["id"].as_str().unwrap();
    env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 99.5, "customer": "{acct}"}}"#)]).ok();
    let refused = env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 100.01, "customer": "{acct}"}}"#)]).fails();
    assert!(refused.stderr.contains("credit-check") && refused.stderr.contains("100.01"), "{}", refused.stderr);
    // Async: a 0.2 workflow waits for a record and resumes.
    crate::waits_cli::approval_step(&env, None);
    let expense = env.run(&["record", "create", "expense", r#"{"amount": 12.25}"#]).ok().json();
    env.run(&["work", "--until-idle"]).ok();
    let jobs = env.run(&["jobs", "list", "--json"]).ok().json();
    assert_eq!(jobs[0]["status"], "Waiting", "{jobs}");
    env.run(&["record", "update", "expense", expense["id"].as_str().unwrap(), r#"{"approved": true}"#]).ok();
    env.run(&["work", "--until-idle"]).ok();
    let done = show(&env, jobs[0]["id"].as_str().unwrap());
    assert_eq!((done["status"].as_str(), done["result"]["state"].as_str()), (Some("Succeeded"), Some("paid")), "{done}");
}

/// The job page shows the tree: a parent lists the jobs it started, a child
/// links its parent, and canceling the parent asks whether its unfinished
/// children go too (a real Chromium, as the dashboard's own test drives it).
#[test]
fn the_job_page_shows_the_tree_and_offers_the_cascade() {
    let env = orchestra();
    let parent = submit(&env, json!({"mode": "sleepy-parent"}), &[]);
    env.run(&["work", "--until-idle"]).ok();
    let s = Server::start(&env, &[]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/tree.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .args([&format!("{}/", s.base), TOKEN, &parent, dir.to_str().unwrap()])
        .output()
        .expect("node runs (the browser tests need Node.js, tests/browser's npm packages and Debian's chromium; .ci/run installs them)");
    assert!(out.status.success(), "browser test failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["errors"], json!([]), "no script errors on the page");
    let children = page["children"].as_array().unwrap();
    assert_eq!(children.len(), 3, "{page}");
    assert!(children.iter().all(|c| c["status"] == "Waiting"), "{page}");
    assert_eq!(page["parentLink"], format!("/jobs/{parent}"));
    assert!(page["question"].as_str().unwrap().contains("3 unfinished"), "{page}");
    assert_eq!(page["sent"], r#"{"cascade":true}"#);
    for c in children {
        let id = c["link"].as_str().unwrap().trim_start_matches("/jobs/");
        assert_eq!(show(&env, id)["status"], "Canceled");
    }
}
