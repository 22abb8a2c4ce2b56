//! Plug-in versions an operator can trust: a step can pin one
//! (`--plugin NAME@VERSION`), `plugin rollback` makes the previous version
//! current, `plugin remove` is refused while a step or an unfinished job uses
//! what it would remove, a new version that cannot serve a step following the
//! plug-in is refused, and version numbers are never reused.

use serde_json::{Value, json};

use crate::common::{Env, Server, path};

fn versions(env: &Env, name: &str) -> Vec<Value> {
    env.run(&["plugin", "list", "--json"]).ok().json().as_array().unwrap().iter().filter(|p| p["name"] == name).cloned().collect()
}

fn current(env: &Env, name: &str) -> Option<i64> {
    versions(env, name).iter().find(|p| p["current"] == true).and_then(|p| p["version"].as_i64())
}

#[test]
fn pin_roll_back_remove_and_refuse_an_incompatible_version() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text", "--column", "priority:text"]).ok();
    let notify = env.example_file("notify");
    let defaults = env.example_file("set-defaults");
    env.run(&["plugin", "add", "fill", path(&defaults)]).ok();
    env.run(&["step", "add", "fill", "--plugin", "fill", "--message", "create", "--table", "thing", "--stage", "pre-operation"]).ok();
    // A workflow under the name of a plug-in a sync step follows: refused, nothing stored.
    let refused = env.run(&["plugin", "add", "fill", path(&notify)]).fails();
    assert!(refused.stderr.contains("step fill runs fill as a sync step"), "{}", refused.stderr);
    assert_eq!(versions(&env, "fill").len(), 1);
    env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok();

    // Versions of an async plug-in, a pinned step, rollback.
    env.run(&["plugin", "add", "ping", path(&notify)]).ok();
    env.run(&["plugin", "add", "ping", path(&notify)]).ok();
    assert_eq!(current(&env, "ping"), Some(2));
    env.run(&["step", "add", "pinned", "--plugin", "ping@1", "--message", "create", "--table", "thing", "--stage", "post-operation", "--mode", "async"]).ok();
    env.run(&["step", "add", "follows", "--plugin", "ping", "--message", "create", "--table", "thing", "--stage", "post-operation", "--mode", "async"]).ok();
    let listed = env.run(&["step", "list", "--json"]).ok().json();
    let pinned = listed.as_array().unwrap().iter().find(|s| s["name"] == "pinned").unwrap().clone();
    assert_eq!((pinned["plugin"].as_str(), pinned["plugin_version"].as_i64()), (Some("ping"), Some(1)));
    assert!(env.run(&["step", "add", "bad", "--plugin", "ping@9", "--schedule", "0 * * * * *"]).fails().stderr.contains("has no version 9"));
    env.run(&["record", "create", "thing", r#"{"name":"b"}"#]).ok();
    let jobs = env.run(&["jobs", "list", "--json"]).ok().json();
    let version_of = |step: &str| jobs.as_array().unwrap().iter().find(|j| j["step"] == step).unwrap()["plugin_version"].as_i64();
    assert_eq!((version_of("pinned"), version_of("follows")), (Some(1), Some(2)));

    // Removal is refused while anything uses it.
    let busy = env.run(&["plugin", "remove", "ping@2"]).fails();
    assert!(busy.stderr.contains("used by step follows"), "{}", busy.stderr);
    assert!(env.run(&["plugin", "remove", "ping@1"]).fails().stderr.contains("used by step pinned"));

    let rolled = env.run(&["plugin", "rollback", "ping", "--json"]).ok().json();
    assert_eq!(rolled["current"], 1);
    assert_eq!(current(&env, "ping"), Some(1));
    assert_eq!(versions(&env, "ping")[1]["rolled_back"], true);
    assert!(env.run(&["plugin", "rollback", "ping"]).fails().stderr.contains("no version before 1"));
    // Version 2, rolled back and used by no step, still has a job to finish.
    let pending = env.run(&["plugin", "remove", "ping@2"]).fails();
    assert!(pending.stderr.contains("needed by 1 job(s)"), "{}", pending.stderr);
    env.run(&["work", "--until-idle"]).ok();
    env.run(&["plugin", "remove", "ping@2", "--json"]).ok();
    assert_eq!(versions(&env, "ping").len(), 1);

    // Over HTTP, and numbers never reused after a removal.
    env.run(&["step", "remove", "pinned"]).ok();
    env.run(&["step", "remove", "follows"]).ok();
    let s = Server::start(&env, &[]);
    assert_eq!(s.post("/api/plugins/ping/rollback", &json!({})).status, 409);
    let removed = s.call("DELETE", "/api/plugins/ping", None, Some(crate::common::TOKEN));
    assert_eq!((removed.status, &removed.body["removed"]), (200, &json!(1)), "{}", removed.text);
    assert_eq!(s.call("DELETE", "/api/plugins/ping", None, Some(crate::common::TOKEN)).status, 404);
    drop(s);
    env.run(&["plugin", "add", "ping", path(&notify)]).ok();
    assert_eq!(current(&env, "ping"), Some(3), "a removed name's versions are not reused");
}

/// A job that failed on a broken version runs again on the fix: `jobs retry
/// --version current|N` (and `retry-current` in bulk and over HTTP), refused
/// for a version whose world cannot run a job or that does not exist.
#[test]
fn a_failed_job_is_retried_on_the_fixed_version() {
    let env = Env::new();
    let broken = env.example_file("always-fails");
    let fixed = env.example_file("noop");
    let sync = env.example_file("credit-check");
    env.run(&["plugin", "add", "fixme", path(&broken)]).ok();
    let submit =
        || env.run(&["background", "submit", "fixme", "--input", "{}", "--max-attempts", "1", "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    let (one, two, three) = (submit(), submit(), submit());
    env.run(&["work", "--until-idle"]).ok();
    let show = |id: &str| env.run(&["jobs", "show", id, "--json"]).ok().json();
    assert_eq!(show(&one)["status"], "Failed");
    // The fix ships as version 2; a plain retry runs version 1 again.
    env.run(&["plugin", "add", "fixme", path(&fixed)]).ok();
    env.run(&["jobs", "retry", &one]).ok();
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!((show(&one)["status"].as_str(), show(&one)["plugin_version"].as_i64()), (Some("Failed"), Some(1)));
    // On the current version it succeeds.
    let retried = env.run(&["jobs", "retry", &one, "--version", "current", "--json"]).ok().json();
    assert_eq!(retried["plugin_version"], 2);
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(show(&one)["status"], "Succeeded");
    // A version whose world cannot run a job, or none at all: refused, nothing changes.
    env.run(&["plugin", "add", "fixme", path(&sync), "--json"]).ok();
    let wrong = env.run(&["jobs", "retry", &two, "--version", "3"]).fails();
    assert!(wrong.stderr.contains("a job runs a workflow"), "{}", wrong.stderr);
    let missing = env.run(&["jobs", "retry", &two, "--version", "9"]).fails();
    assert!(missing.stderr.contains("fixme has no version 9"), "{}", missing.stderr);
    assert_eq!(show(&two)["status"], "Failed");
    // Bulk: on the current version, which is now the sync one: refused per job.
    env.run(&["plugin", "rollback", "fixme"]).ok();
    let bulk = env.run(&["jobs", "bulk", "retry-current", "--filter", &format!("id eq '{two}'"), "--json"]).ok().json();
    assert_eq!(bulk["applied"], 1, "{bulk}");
    assert_eq!(show(&two)["plugin_version"], 2);
    // Over HTTP: retry with a version in the body.
    let s = Server::start(&env, &[]);
    let r = s.post(&format!("/api/jobs/{three}/retry"), &json!({"version": 2}));
    assert_eq!((r.status, r.body["plugin_version"].as_i64()), (200, Some(2)), "{}", r.text);
    crate::common::wait_for("the retried jobs to succeed", || show(&two)["status"] == "Succeeded" && show(&three)["status"] == "Succeeded");
}
