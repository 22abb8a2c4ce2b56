//! The job lifecycle end to end through the real binary: an attempt's record
//! writes commit with its outcome (a retried attempt writes once; a worker
//! that lost its lease writes nothing), and a postponed wait never runs or
//! times out earlier than it would have.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Env, wait_for};

/// Tables `order` and `entry`, and `append-entry` as an async step on
/// creates of orders with `config`.
fn orders(config: &str) -> Env {
    let env = Env::new();
    env.run(&["table", "create", "order", "--column", "name:text"]).ok();
    env.run(&["table", "create", "entry", "--column", "source:text", "--column", "attempt:integer"]).ok();
    env.add_example("append-entry");
    let step = ["step", "add", "append", "--plugin", "append-entry", "--message", "create", "--table", "order", "--stage", "post-operation"];
    let rest = ["--mode", "async", "--grant", "entry:write", "--backoff-ms", "0", "--config", config];
    env.run(&[&step[..], &rest[..]].concat()).ok();
    env
}

fn order(env: &Env) -> String {
    env.run(&["record", "create", "order", r#"{"name":"o"}"#]).ok().json()["id"].as_str().unwrap().to_string()
}

fn entries(env: &Env) -> Vec<Value> {
    env.run(&["record", "query", "entry"]).ok().json().as_array().unwrap().clone()
}

fn the_job(env: &Env) -> Value {
    let jobs = env.run(&["jobs", "list", "--json"]).ok().json();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    jobs[0].clone()
}

/// Write, then fail transiently, twice; succeed on the third attempt: one
/// entry, from the attempt that succeeded.
#[test]
fn a_retried_attempt_writes_once() {
    let env = orders(r#"{"succeed_on": 3}"#);
    let id = order(&env);
    env.run(&["work", "--until-idle"]).ok();
    let job = the_job(&env);
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("Succeeded"), Some(3)), "{job}");
    let rows = entries(&env);
    assert_eq!(rows.len(), 1, "one entry however many attempts: {rows:?}");
    assert_eq!((rows[0]["source"].as_str(), rows[0]["attempt"].as_i64()), (Some(id.as_str()), Some(3)));
}

/// A failure that is final keeps nothing the attempt wrote.
#[test]
fn a_failed_attempt_keeps_none_of_its_writes() {
    let env = orders(r#"{"succeed_on": 99}"#);
    env.run(&["step", "remove", "append"]).ok();
    let step =
        "append --plugin append-entry --message create --table order --stage post-operation --mode async --grant entry:write --max-attempts 2 --backoff-ms 0";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>(), &["--config", r#"{"succeed_on": 99}"#]].concat()).ok();
    order(&env);
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(the_job(&env)["status"], "Failed");
    assert_eq!(entries(&env), Vec::<Value>::new());
}

/// Worker A runs the attempt (it writes its entry, then works for 2 s) and is
/// stopped (SIGSTOP) past its lease; worker B takes the job over and
/// completes it; A continues (SIGCONT) and finishes its attempt. Only B's
/// entry exists: a worker that lost its lease commits nothing.
#[test]
fn a_worker_stopped_past_its_lease_writes_nothing_after_another_completed() {
    let env = orders(r#"{"spin_ms": 2000}"#);
    let id = order(&env);
    let mut a = env.command().args(["work", "--lease-ms", "1000", "--workers", "1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = a.id().to_string();
    wait_for("worker A to start the attempt", || the_job(&env)["status"] == "InProgress");
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    // Stopped between transactions: A stopped while it holds the store's
    // write lock (a housekeeping tick's, a few ms in each 100) would keep B
    // from writing until A runs again. If the lock is not free, let A go on a
    // moment and stop it again.
    let write_lock_free = || {
        let conn = env.sql();
        conn.set_busy_timeout(Duration::from_millis(200)).unwrap();
        conn.transaction_with_behavior(weir::db::TransactionBehavior::Immediate).is_ok()
    };
    let mut tries = 0;
    loop {
        signal("-STOP");
        if write_lock_free() {
            break;
        }
        tries += 1;
        assert!(tries < 50, "worker A always held the write lock when stopped");
        signal("-CONT");
        std::thread::sleep(Duration::from_millis(20));
    }
    // B takes over once A's lease (1 s) has run out, and completes the job.
    let b = env.run(&["work", "--until-idle", "--lease-ms", "1000", "--json"]).ok().json();
    assert_eq!((b["attempts"].as_u64(), b["succeeded"].as_u64(), b["leases_expired"].as_u64()), (Some(1), Some(1), Some(1)), "{b}");
    let job = the_job(&env);
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("Succeeded"), Some(2)), "{job}");
    // A wakes up, finishes its attempt (about a second of work left) and stops.
    signal("-CONT");
    std::thread::sleep(Duration::from_millis(200));
    signal("-TERM");
    let status = a.wait().unwrap();
    assert!(status.success(), "worker A exits cleanly: {status:?}");
    let rows = entries(&env);
    assert_eq!(rows.len(), 1, "only the attempt that completed the job wrote: {rows:?}");
    assert_eq!((rows[0]["source"].as_str(), rows[0]["attempt"].as_i64()), (Some(id.as_str()), Some(2)));
    assert_eq!(the_job(&env)["status"], "Succeeded");
    // The history keeps both: A's lost attempt and B's.
    let shown = env.run(&["jobs", "show", the_job(&env)["id"].as_str().unwrap(), "--json"]).ok().json();
    let outcomes: Vec<&str> = shown["history"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["lost", "succeeded"], "{shown}");
}

/// A 7-day approval postponed by 2 s neither wakes nor times out early; an
/// approval before the postponement makes it run no earlier than it.
#[test]
fn postponing_a_wait_never_makes_it_run_or_time_out_earlier() {
    let env = Env::new();
    env.run(&["table", "create", "expense", "--column", "amount:decimal", "--column", "approved:boolean", "--column", "state:text"]).ok();
    env.add_example("approval");
    let step = "approve --plugin approval --message create --table expense --stage post-operation --mode async --grant expense:write";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    let expense = env.run(&["record", "create", "expense", r#"{"amount": 10}"#]).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["work", "--until-idle"]).ok();
    let job = the_job(&env);
    assert_eq!(job["status"], "Waiting");
    let id = job["id"].as_str().unwrap().to_string();
    let timeout_at = job["wait"]["timeout_at"].as_str().unwrap().to_string();
    let postponed = env.run(&["jobs", "postpone", &id, "--until", "+2s", "--json"]).ok().json();
    assert_eq!(postponed["status"], "Waiting");
    // The timer is still the 7-day timeout: a worker that waits for anything
    // due within its idle horizon (3 s) finds nothing, and nothing expired.
    assert_eq!(postponed["postpone_until"].as_str(), Some(timeout_at.as_str()), "{postponed}");
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(the_job(&env)["status"], "Waiting");
    assert_eq!(env.run(&["record", "get", "expense", &expense]).ok().json()["state"], Value::Null, "not expired");
    // Approved now, before the postponement ends: Ready, but not before it.
    let not_before = postponed["wait"]["not_before"].as_str().unwrap().to_string();
    env.run(&["record", "update", "expense", &expense, r#"{"approved": true}"#]).ok();
    let ready = the_job(&env);
    assert_eq!(ready["status"], "WaitingForResources");
    assert_eq!(ready["postpone_until"].as_str(), Some(not_before.as_str()), "{ready}");
    env.run(&["work", "--until-idle"]).ok();
    let done = the_job(&env);
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert!(done["started_at"].as_str().unwrap() >= not_before.as_str(), "ran at {} before {not_before}", done["started_at"]);
    assert_eq!(env.run(&["record", "get", "expense", &expense]).ok().json()["state"], "paid");
    // Its history: the attempt that asked to wait, and the one after the approval.
    let shown = env.run(&["jobs", "show", &id, "--json"]).ok().json();
    let history = shown["history"].as_array().unwrap();
    let outcomes: Vec<&str> = history.iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["wait", "succeeded"], "{shown}");
    assert_eq!(history[0]["wait"]["condition"], "approved eq true");
}

/// A flaky job's three attempts are all kept after it succeeds, each with its
/// error and trace, and a retried job keeps its earlier attempts.
#[test]
fn every_attempt_is_kept_in_the_history() {
    let env = Env::new();
    env.run(&["table", "create", "order", "--column", "name:text"]).ok();
    env.add_example("flaky");
    env.add_example("always-fails");
    let step = "flaky --plugin flaky --message create --table order --stage post-operation --mode async --backoff-ms 0";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    order(&env);
    env.run(&["work", "--until-idle"]).ok();
    let id = the_job(&env)["id"].as_str().unwrap().to_string();
    let job = env.run(&["jobs", "show", &id, "--json"]).ok().json();
    let history = job["history"].as_array().expect("jobs show has the history");
    let outcomes: Vec<&str> = history.iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed, retried", "failed, retried", "succeeded"], "{job}");
    let numbers: Vec<i64> = history.iter().map(|h| h["number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    for (i, h) in history.iter().take(2).enumerate() {
        assert!(h["error"].as_str().unwrap().contains(&format!("busy (attempt {})", i + 1)), "{h}");
        assert!(h["worker"].as_str().unwrap().starts_with("worker-"), "{h}");
        assert!(h["started_at"].as_str().unwrap() <= h["ended_at"].as_str().unwrap());
    }
    assert!(history[2]["trace"].to_string().contains("succeeded on attempt 3"), "{}", history[2]);
    let total: i64 = history.iter().map(|h| h["duration_ms"].as_i64().unwrap()).sum();
    assert_eq!(job["total_duration_ms"].as_i64(), Some(total));
    let text = env.run(&["jobs", "show", &id]).ok().stdout;
    assert!(text.contains("history:     3 attempts") && text.contains("busy (attempt 2)"), "{text}");
    // Listings stay small: no history there.
    assert!(the_job(&env).get("history").is_none());

    // A Failed job retried by an operator keeps its first attempt.
    let bg = env.run(&["background", "submit", "always-fails", "--input", "{}", "--max-attempts", "1", "--json"]).ok().json();
    let bg = bg["id"].as_str().unwrap();
    env.run(&["work", "--until-idle"]).ok();
    env.run(&["jobs", "retry", bg]).ok();
    env.run(&["work", "--until-idle"]).ok();
    let shown = env.run(&["jobs", "show", bg, "--json"]).ok().json();
    let outcomes: Vec<&str> = shown["history"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "failed"], "{shown}");
}
