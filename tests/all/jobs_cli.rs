//! Background jobs through the real binary: async steps enqueue in the
//! operation's transaction, `weir work` runs them with retries, a killed worker's
//! job is taken over after its lease expires, misbehaving guests fail with their
//! typed error while the others keep running.

use std::time::{Duration, Instant};

use crate::common::Env;
use serde_json::Value;

fn setup(plugins: &[&str]) -> Env {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text", "--column", "amount:decimal"]).ok();
    for p in plugins {
        env.add_example(p);
    }
    env
}

fn async_step(env: &Env, name: &str, plugin: &str, extra: &[&str]) {
    let mut args = vec!["step", "add", name, "--plugin", plugin, "--message", "create", "--table", "thing", "--stage", "post-operation", "--mode", "async"];
    args.extend_from_slice(extra);
    env.run(&args).ok();
}

fn jobs(env: &Env, filter: &str) -> Vec<Value> {
    env.run(&["jobs", "list", "--json", "--filter", filter]).ok().json().as_array().unwrap().clone()
}

fn job_of_step(env: &Env, step: &str) -> Value {
    let list = jobs(env, &format!("step eq '{step}'"));
    assert_eq!(list.len(), 1, "one job of step {step}: {list:?}");
    let id = list[0]["id"].as_str().unwrap();
    env.run(&["jobs", "show", id, "--json"]).ok().json()
}

#[test]
fn three_async_steps_make_three_jobs_that_retry_and_fail_as_they_should() {
    let env = setup(&["notify", "flaky", "always-fails"]);
    async_step(&env, "notify-step", "notify", &[]);
    async_step(&env, "flaky-step", "flaky", &["--backoff-ms", "50"]);
    async_step(&env, "fails-step", "always-fails", &[]);
    env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok();
    assert_eq!(jobs(&env, "statecode eq 0").len(), 3, "three Ready jobs");

    let out = env.run(&["work", "--until-idle", "--workers", "2"]).ok();
    assert!(out.stdout.contains("ran 5 attempts"), "{}", out.stdout);

    let flaky = job_of_step(&env, "flaky-step");
    assert_eq!((flaky["status"].as_str(), flaky["attempts"].as_u64()), (Some("Succeeded"), Some(3)), "{flaky}");
    assert_eq!(flaky["result"]["attempt"], 3);
    let fails = job_of_step(&env, "fails-step");
    assert_eq!((fails["statecode"].as_i64(), fails["statuscode"].as_i64(), fails["attempts"].as_u64()), (Some(3), Some(31), Some(1)), "{fails}");
    assert_eq!(fails["error_code"], "permanent");
    assert!(fails["error"].as_str().unwrap().starts_with("always-fails: record"), "{fails}");
    let notify = job_of_step(&env, "notify-step");
    assert_eq!(notify["status"], "Succeeded");
    assert!(notify["trace"][0]["message"].as_str().unwrap().starts_with("notify:"), "{notify}");
    for key in [
        "id",
        "kind",
        "step",
        "plugin",
        "state",
        "status",
        "statecode",
        "statuscode",
        "attempts",
        "max_attempts",
        "error",
        "trace",
        "owner",
        "created_at",
        "started_at",
        "completed_at",
        "postpone_until",
    ] {
        assert!(notify.get(key).is_some(), "jobs show --json has {key}");
    }
    // The Dataverse filter for failures finds exactly the failure.
    let failures = jobs(&env, "statecode eq 3 and statuscode eq 31");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["step"], "fails-step");
    assert_eq!(jobs(&env, "status eq 'Succeeded'").len(), 2);
    let bad = env.run(&["jobs", "list", "--filter", "statuscode eq"]).fails();
    assert!(bad.stderr.contains("bad filter at position 14"), "{}", bad.stderr);
}

#[test]
fn a_rolled_back_operation_enqueues_nothing() {
    let env = setup(&["notify", "spin-forever"]);
    async_step(&env, "notify-step", "notify", &[]);
    env.run(&["step", "add", "spin", "--plugin", "spin-forever", "--message", "create", "--table", "thing", "--stage", "post-operation", "--fuel", "1000000"])
        .ok();
    env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).fails();
    assert_eq!(jobs(&env, "id ne null").len(), 0);
    env.run(&["step", "disable", "spin"]).ok();
    env.run(&["record", "create", "thing", r#"{"name":"b"}"#]).ok();
    assert_eq!(jobs(&env, "id ne null").len(), 1);
}

#[test]
fn a_killed_worker_s_job_is_taken_over_and_succeeds() {
    let env = setup(&["slow"]);
    async_step(&env, "slow-step", "slow", &["--config", r#"{"ms": 2500}"#]);
    env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok();
    let mut worker = env.command().args(["work", "--lease-ms", "1000"]).spawn().unwrap();
    let started = Instant::now();
    while jobs(&env, "statuscode eq 20").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    let job = job_of_step(&env, "slow-step");
    assert_eq!(job["status"], "InProgress", "the dead worker's job is still locked: {job}");
    let out = env.run(&["work", "--until-idle", "--lease-ms", "1000"]).ok();
    assert!(out.stdout.contains("1 expired leases taken over"), "{}", out.stdout);
    let job = job_of_step(&env, "slow-step");
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "the lost attempt counts: {job}");
}

/// Starts `weir work` with `args`, waits until a job runs, then sends SIGTERM;
/// returns how long the worker took to exit after it, and its stdout.
fn terminate_while_running(env: &Env, args: &[&str]) -> (Duration, String) {
    let worker = env.command().arg("work").args(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while jobs(env, "statuscode eq 20").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    std::process::Command::new("kill").arg(worker.id().to_string()).status().unwrap(); // SIGTERM
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "a clean stop: {:?}", out.status);
    (sent.elapsed(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sigterm_lets_a_running_job_finish_within_the_grace_period_and_interrupts_it_after() {
    // Within the grace period: the job finishes, then the worker exits.
    let env = setup(&["slow"]);
    async_step(&env, "short", "slow", &["--config", r#"{"ms": 1500}"#]);
    env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok();
    terminate_while_running(&env, &["--shutdown-grace-ms", "20000"]);
    let job = job_of_step(&env, "short");
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("Succeeded"), Some(1)), "{job}");

    // Past it: the job is interrupted and goes back to Ready, the attempt not
    // counted, and the worker exits long before the job would have finished.
    let env = setup(&["slow"]);
    async_step(&env, "long", "slow", &["--config", r#"{"ms": 60000}"#, "--timeout-ms", "120000"]);
    env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok();
    let (took, _) = terminate_while_running(&env, &["--shutdown-grace-ms", "300"]);
    assert!(took < Duration::from_secs(20), "interrupted after the grace period, not run to the end: {took:?}");
    let job = job_of_step(&env, "long");
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("WaitingForResources"), Some(0)), "{job}");
    assert_eq!(job["error_code"], "interrupted", "{job}");
    assert!(job["error"].as_str().unwrap().contains("its worker shut down"), "{job}");
}

#[test]
fn misbehaving_async_guests_fail_with_their_typed_error_while_others_run() {
    let env = setup(&["notify", "spin-forever", "memory-hog", "deep-recursion", "panicker"]);
    let once = ["--max-attempts", "1"];
    async_step(&env, "spin", "spin-forever", &["--max-attempts", "1", "--timeout-ms", "500"]);
    async_step(&env, "hog", "memory-hog", &once);
    async_step(&env, "deep", "deep-recursion", &once);
    async_step(&env, "panic", "panicker", &once);
    async_step(&env, "notify-step", "notify", &[]);
    for i in 0..3 {
        env.run(&["record", "create", "thing", &format!(r#"{{"name":"t{i}"}}"#)]).ok();
    }
    env.run(&["work", "--until-idle", "--workers", "4"]).ok();
    for (step, code, words) in [
        ("spin", "timed_out", "timed out after 500 ms"),
        ("hog", "memory_limit", "memory limit"),
        ("deep", "stack_overflow", "stack"),
        ("panic", "trap", "panicked"),
    ] {
        let failed = jobs(&env, &format!("step eq '{step}' and status eq 'Failed'"));
        assert_eq!(failed.len(), 3, "{step}: {failed:?}");
        for j in &failed {
            assert_eq!(j["error_code"], code, "{j}");
            assert!(j["error"].as_str().unwrap().contains(words), "{j}");
        }
    }
    assert_eq!(jobs(&env, "step eq 'notify-step' and status eq 'Succeeded'").len(), 3);
}

/// Every command that changes something answers in JSON with `--json`, for
/// scripts: steps, users, records and each job action.
#[test]
fn commands_answer_in_json_for_scripts() {
    let env = setup(&["notify"]);
    let step = env
        .run(&[
            "step",
            "add",
            "n",
            "--plugin",
            "notify",
            "--message",
            "create",
            "--table",
            "thing",
            "--stage",
            "post-operation",
            "--mode",
            "async",
            "--rank",
            "3",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!((step["name"].as_str(), step["plugin"].as_str(), step["rank"].as_i64()), (Some("n"), Some("notify"), Some(3)), "{step}");
    assert_eq!(env.run(&["step", "disable", "n", "--json"]).ok().json(), serde_json::json!({"step": "n", "enabled": false}));
    assert_eq!(env.run(&["step", "enable", "n", "--json"]).ok().json(), serde_json::json!({"step": "n", "enabled": true}));
    assert_eq!(env.run(&["user", "add", "ana", "--json"]).ok().json(), serde_json::json!({"user": "ana", "active": true}));

    let rec = env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).ok().json();
    let job = jobs(&env, "step eq 'n'")[0]["id"].as_str().unwrap().to_string();
    let paused = env.run(&["jobs", "pause", &job, "--json"]).ok().json();
    assert_eq!((paused["id"].as_str(), paused["status"].as_str()), (Some(job.as_str()), Some("Paused")), "{paused}");
    let resumed = env.run(&["jobs", "resume", &job, "--json"]).ok().json();
    assert_eq!(resumed["status"], "WaitingForResources", "{resumed}");
    let later = env.run(&["jobs", "postpone", &job, "--until", "+1h", "--json"]).ok().json();
    assert_eq!(later["status"], "WaitingForResources", "{later}");
    assert!(later["postpone_until"].is_string() || later["postpone_until"].is_number(), "{later}");
    let canceled = env.run(&["jobs", "cancel", &job, "--json"]).ok().json();
    assert_eq!((canceled["statecode"].as_i64(), canceled["statuscode"].as_i64()), (Some(3), Some(32)), "{canceled}");
    let retry = env.run(&["jobs", "retry", &job, "--json"]).fails();
    assert!(retry.stderr.contains("only a Failed job can be retried"), "{}", retry.stderr);

    let id = rec["id"].as_str().unwrap();
    assert_eq!(env.run(&["record", "delete", "thing", id, "--json"]).ok().json(), serde_json::json!({"table": "thing", "id": id, "deleted": true}));
    assert_eq!(env.run(&["step", "remove", "n", "--json"]).ok().json(), serde_json::json!({"step": "n", "removed": true}));
    assert_eq!(env.run(&["user", "deactivate", "ana", "--json"]).ok().json(), serde_json::json!({"user": "ana", "active": false}));
}
