//! The job lifecycle in one place (issue 14): the CLI and the HTTP API register
//! steps through the same normalisation, and a step row that cannot be read
//! breaks only the operations it belongs to.

use serde_json::{Value, json};

use crate::common::{Env, Server};

/// A step as `step list --json` shows it, without its name.
fn listed(env: &Env, name: &str) -> Value {
    let all = env.run(&["step", "list", "--json"]).ok().json();
    let mut step = all.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("step {name} is listed: {all}")).clone();
    step.as_object_mut().unwrap().remove("name");
    step
}

#[test]
fn a_minimal_scheduled_step_over_http_is_the_same_as_the_clis() {
    let env = Env::new();
    env.add_example("notify");
    env.run(&["step", "add", "nightly-cli", "--plugin", "notify", "--schedule", "0 0 2 * * *"]).ok();
    let s = Server::start(&env, &[]);
    // Only what the CLI needs: the mode is implied by the schedule, the rest defaulted.
    let r = s.post("/api/steps", &json!({"name": "nightly", "plugin": "notify", "schedule": "0 0 2 * * *"}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["mode"], "async", "{}", r.text);
    let cli = listed(&env, "nightly-cli");
    assert_eq!(cli["mode"], "async", "{cli}");
    assert_eq!(listed(&env, "nightly"), cli, "the same step whichever way it was added");

    // A minimal event step: the defaults (sync, rank 1) are the CLI's.
    env.add_example("set-defaults");
    env.run(&["table", "create", "account", "--column", "name:text", "--column", "priority:text"]).ok();
    env.run(&["step", "add", "defaults-cli", "--plugin", "set-defaults", "--message", "create", "--table", "account", "--stage", "pre-operation"]).ok();
    let body = json!({"name": "defaults", "plugin": "set-defaults", "message": "create", "table": "account", "stage": "pre-operation"});
    let r = s.post("/api/steps", &body);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(listed(&env, "defaults"), listed(&env, "defaults-cli"));

    // Unknown fields are refused, naming the field; so is an explicit sync schedule, on both paths.
    let r = s.post("/api/steps", &json!({"name": "typo", "plugin": "notify", "schedule": "0 0 2 * * *", "shedule": "x"}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("unknown field `shedule`"), "{}", r.text);
    let r = s.post("/api/steps", &json!({"name": "sync-sched", "plugin": "notify", "schedule": "0 0 2 * * *", "mode": "sync"}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("scheduled steps run as async workflows"), "{}", r.text);
    let cli = env.run(&["step", "add", "sync-sched", "--plugin", "notify", "--schedule", "0 0 2 * * *", "--mode", "sync"]).fails();
    assert!(cli.stderr.contains("scheduled steps run as async workflows"), "{}", cli.stderr);
}

#[test]
fn a_corrupt_step_fails_only_operations_on_its_own_table() {
    let env = Env::new();
    env.add_example("set-defaults");
    for t in ["a", "b"] {
        env.run(&["table", "create", t, "--column", "name:text", "--column", "priority:text"]).ok();
        let step = format!("defaults-{t}");
        env.run(&["step", "add", &step, "--plugin", "set-defaults", "--message", "create", "--table", t, "--stage", "pre-operation"]).ok();
    }
    let conn = env.sql();
    assert_eq!(conn.execute("UPDATE weir_steps SET spec = '{not json' WHERE name = 'defaults-a'", []).unwrap(), 1);
    drop(conn);

    // Table b is unrelated: its creates run its step as before.
    let rec = env.run(&["record", "create", "b", r#"{"name": "x"}"#]).ok().json();
    assert_eq!(rec["priority"], "normal", "the step on b ran: {rec}");
    // Table a's creates fail, naming the step and what to do; nothing is written.
    let bad = env.run(&["record", "create", "a", r#"{"name": "x"}"#]).fails();
    assert!(bad.stderr.contains("step defaults-a is unreadable"), "{}", bad.stderr);
    assert!(bad.stderr.contains("weir step remove defaults-a"), "{}", bad.stderr);
    assert_eq!(env.run(&["record", "query", "a"]).ok().json(), json!([]));
    // Other messages on a are not the broken step's: a delete on a goes as far
    // as looking the record up (and says it does not exist).
    let del = env.run(&["record", "delete", "a", "nosuch"]).fails();
    assert!(del.stderr.contains("nosuch") && !del.stderr.contains("unreadable"), "{}", del.stderr);

    // The listing still lists the others and shows the broken one.
    let table = env.run(&["step", "list"]).ok();
    assert!(table.stdout.contains("defaults-b"), "{}", table.stdout);
    assert!(table.stdout.contains("defaults-a") && table.stdout.contains("unreadable"), "{}", table.stdout);
    let json = env.run(&["step", "list", "--json"]).ok();
    let names: Vec<String> = json.json().as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["defaults-b"], "--json lists the readable steps");
    assert!(json.stderr.contains("step defaults-a is unreadable"), "a warning names the broken one: {}", json.stderr);
    let s = Server::start(&env, &[]);
    let listed = s.get("/api/steps");
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["value"].as_array().map(Vec::len), Some(1), "{}", listed.text);
    assert_eq!(listed.body["unreadable"][0]["name"], "defaults-a", "{}", listed.text);
    drop(s);

    // What the message says to do works.
    env.run(&["step", "remove", "defaults-a"]).ok();
    env.run(&["step", "add", "defaults-a", "--plugin", "set-defaults", "--message", "create", "--table", "a", "--stage", "pre-operation"]).ok();
    assert_eq!(env.run(&["record", "create", "a", r#"{"name": "x"}"#]).ok().json()["priority"], "normal");
}

/// Claims that keep failing (here a trigger refuses every claim, as a full
/// disk would) are retried ever less often and logged once, not every
/// millisecond; when claiming works again the pool says so and runs the job.
#[test]
fn failing_claims_back_off_and_are_logged_once() {
    use std::io::Read;
    let env = Env::new();
    env.add_example("notify");
    let id = env.run(&["background", "submit", "notify", "--input", "{}", "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    let conn = env.sql();
    crate::common::refuse_statecode(&env, &conn, "refuse_claims", 2);
    let mut work = env
        .command()
        .args(["work", "--workers", "1"])
        .env("WEIR_LOG", "warn,weir::worker=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log as it comes, so a flood of it cannot block the worker.
    let mut stderr = work.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    crate::common::allow_statecode(&env, &conn, "refuse_claims");
    crate::common::wait_for("the job to run once claims work", || env.run(&["jobs", "show", &id, "--json"]).ok().json()["status"] == "Succeeded");
    let _ = work.kill();
    let _ = work.wait();
    let log = reader.join().unwrap();
    let failures = log.lines().filter(|l| l.contains("claiming jobs failed")).count();
    assert_eq!(failures, 1, "one warning, not one per retry ({failures}):\n{}", log.lines().take(20).collect::<Vec<_>>().join("\n"));
    assert!(log.contains("simulated: database or disk is full") && log.contains("retrying in"), "{log}");
    assert!(log.contains("claiming jobs works again"), "{log}");
}
