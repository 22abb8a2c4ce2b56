//! Wait states, job control, schedules, background operations, callbacks,
//! retention and owners, end to end through the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Env;
use serde_json::Value;

fn expenses() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "expense", "--column", "amount:decimal", "--column", "approved:boolean", "--column", "state:text"]).ok();
    for p in ["approval", "bulk-update", "notify", "always-fails", "slow"] {
        env.add_example(p);
    }
    env
}

pub(crate) fn approval_step(env: &Env, config: Option<&str>) {
    let mut args = vec![
        "step",
        "add",
        "approve",
        "--plugin",
        "approval",
        "--message",
        "create",
        "--table",
        "expense",
        "--stage",
        "post-operation",
        "--mode",
        "async",
        "--grant",
        "expense:write",
    ];
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    env.run(&args).ok();
}

fn expense(env: &Env, user: &str) -> String {
    let out = env.run(&["--as", user, "record", "create", "expense", r#"{"amount": 42.5}"#]).ok().json();
    out["id"].as_str().unwrap().to_string()
}

fn job_for(env: &Env, record: &str) -> Value {
    let list = env.run(&["jobs", "list", "--json", "--filter", &format!("regarding eq '{record}'")]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    list[0].clone()
}

fn state_of(env: &Env, id: &str) -> Value {
    env.run(&["record", "get", "expense", id]).ok().json()["state"].clone()
}

fn work(env: &Env) {
    env.run(&["work", "--until-idle"]).ok();
}

#[test]
fn an_approval_waits_and_resumes_on_approval() {
    let env = expenses();
    approval_step(&env, None);
    let id = expense(&env, "system");
    work(&env);
    let job = job_for(&env, &id);
    assert_eq!((job["statecode"].as_i64(), job["statuscode"].as_i64()), (Some(1), Some(10)), "Suspended/Waiting: {job}");
    assert_eq!(job["wait"]["kind"], "for");
    assert_eq!(job["wait"]["condition"], "approved eq true");
    assert_eq!(state_of(&env, &id), Value::Null);
    // A change that does not meet the condition leaves it waiting.
    env.run(&["record", "update", "expense", &id, r#"{"amount": 50}"#]).ok();
    assert_eq!(job_for(&env, &id)["status"], "Waiting");
    env.run(&["record", "update", "expense", &id, r#"{"approved": true}"#]).ok();
    assert_eq!(job_for(&env, &id)["status"], "WaitingForResources", "the committed approval made it Ready");
    work(&env);
    let job = job_for(&env, &id);
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert_eq!(job["result"]["state"], "paid");
    assert_eq!(state_of(&env, &id), "paid");
}

#[test]
fn an_unapproved_expense_expires_at_the_timeout() {
    let env = expenses();
    approval_step(&env, Some(r#"{"timeout_ms": 400}"#));
    let id = expense(&env, "system");
    work(&env); // waits for the short timeout, then runs the resumed workflow
    assert_eq!(job_for(&env, &id)["status"], "Succeeded");
    assert_eq!(state_of(&env, &id), "expired");
}

#[test]
fn a_waiting_job_can_be_canceled() {
    let env = expenses();
    approval_step(&env, None);
    let id = expense(&env, "system");
    work(&env);
    let job = job_for(&env, &id)["id"].as_str().unwrap().to_string();
    let out = env.run(&["jobs", "cancel", &job]).ok();
    assert!(out.stdout.contains("Completed/Canceled"), "{}", out.stdout);
    env.run(&["record", "update", "expense", &id, r#"{"approved": true}"#]).ok();
    work(&env);
    assert_eq!(job_for(&env, &id)["statuscode"], 32);
    assert_eq!(state_of(&env, &id), Value::Null, "a canceled wait never runs");
    let again = env.run(&["jobs", "cancel", &job]).fails();
    assert!(again.stderr.contains("it has already completed"), "{}", again.stderr);
}

#[test]
fn a_paused_job_stays_paused_through_its_wake_up_and_succeeds_after_resume() {
    let env = expenses();
    approval_step(&env, None);
    let id = expense(&env, "system");
    work(&env);
    let job = job_for(&env, &id)["id"].as_str().unwrap().to_string();
    env.run(&["jobs", "pause", &job]).ok();
    env.run(&["record", "update", "expense", &id, r#"{"approved": true}"#]).ok();
    work(&env);
    let j = job_for(&env, &id);
    assert_eq!((j["statecode"].as_i64(), j["statuscode"].as_i64()), (Some(1), Some(11)), "still Paused: {j}");
    assert_eq!(state_of(&env, &id), Value::Null);
    let bad = env.run(&["jobs", "retry", &job]).fails();
    assert!(bad.stderr.contains("only a Failed job can be retried"), "{}", bad.stderr);
    let out = env.run(&["jobs", "resume", &job]).ok();
    assert!(out.stdout.contains("Ready/WaitingForResources"), "the condition was met while paused: {}", out.stdout);
    work(&env);
    assert_eq!(job_for(&env, &id)["status"], "Succeeded");
    assert_eq!(state_of(&env, &id), "paid");
    let bad = env.run(&["jobs", "resume", &job]).fails();
    assert!(bad.stderr.contains("only a Paused job can be resumed"), "{}", bad.stderr);
}

#[test]
fn a_once_a_second_schedule_runs_repeatedly_and_once_after_downtime() {
    let env = expenses();
    env.run(&["step", "add", "tick", "--plugin", "notify", "--schedule", "* * * * * *"]).ok();
    let bad = env.run(&["step", "add", "bad", "--plugin", "notify", "--schedule", "every minute"]).fails();
    assert!(bad.stderr.contains("bad --schedule"), "{}", bad.stderr);
    let count = || env.run(&["jobs", "list", "--json", "--filter", "kind eq 'schedule' and status eq 'Succeeded'"]).ok().json().as_array().unwrap().len();
    let run_for = |d: Duration, shift: &str| {
        let mut w = env.command().env("WEIR_CLOCK_SHIFT", shift).arg("work").stdout(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(d);
        // SIGTERM: a graceful stop.
        std::process::Command::new("kill").arg(w.id().to_string()).status().unwrap();
        assert!(w.wait().unwrap().success());
    };
    run_for(Duration::from_millis(4500), "0s");
    let first = count();
    assert!(first >= 3, "ran {first} times in 4.5 s");
    // Downtime: three ticks missed (the next worker's clock is 3 s ahead).
    run_for(Duration::from_millis(600), "3s");
    let caught_up = count() - first;
    assert!((1..=2).contains(&caught_up), "after downtime it ran {caught_up} times, not once per missed tick");
}

/// A one-request-at-a-time HTTP server on loopback that answers 500 to the
/// first `fail_first` requests and 200 after, keeping every body.
fn callback_server(fail_first: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            seen.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            let status = if n < fail_first { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

#[test]
fn a_background_bulk_update_changes_every_expense_and_calls_back() {
    let env = expenses();
    let ids: Vec<String> = (0..3).map(|_| expense(&env, "system")).collect();
    let (url, bodies) = callback_server(1);
    let out = env
        .run(&[
            "background",
            "submit",
            "bulk-update",
            "--input",
            r#"{"table":"expense","set":{"state":"archived"}}"#,
            "--grant",
            "expense:write",
            "--callback",
            &url,
            "--json",
        ])
        .ok()
        .json();
    let job = out["id"].as_str().unwrap().to_string();
    assert_eq!(out["location"], format!("/api/jobs/{job}"));
    work(&env);
    for id in &ids {
        assert_eq!(state_of(&env, id), "archived");
    }
    let shown = env.run(&["jobs", "show", &job, "--json"]).ok().json();
    assert_eq!(shown["status"], "Succeeded", "the failed first callback did not change the job: {shown}");
    assert_eq!(shown["result"]["updated"], 3);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one failed delivery, one retry: {bodies:?}");
    let last: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(last["id"], job.as_str());
    assert_eq!(last["status"], "Succeeded");
    assert_eq!(last["result"]["updated"], 3);
    let bad = env.run(&["background", "submit", "bulk-update", "--input", "{nope"]).fails();
    assert!(bad.stderr.contains("--input is not valid JSON"), "{}", bad.stderr);
    let bad = env.run(&["background", "submit", "notify", "--input", "{}", "--callback", "ftp://x"]).fails();
    assert!(bad.stderr.contains("bad callback URL"), "{}", bad.stderr);
}

#[test]
fn a_delayed_job_waits_for_its_time_and_can_be_postponed() {
    let env = expenses();
    let job = env.run(&["background", "submit", "notify", "--input", "{}", "--at", "+1h", "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    work(&env);
    assert!(started.elapsed() < Duration::from_secs(10), "a job an hour away is not waited for");
    let shown = env.run(&["jobs", "show", &job, "--json"]).ok().json();
    assert_eq!(shown["status"], "WaitingForResources");
    assert!(shown["postpone_until"].is_string());
    // Postpone moves a job either way: later, then earlier than that (still
    // in the future, so it keeps waiting).
    let later = env.run(&["jobs", "postpone", &job, "--until", "+2h", "--json"]).ok().json();
    assert!(later["postpone_until"].as_str() > shown["postpone_until"].as_str(), "{later}");
    let earlier = env.run(&["jobs", "postpone", &job, "--until", "+30m", "--json"]).ok().json();
    assert!(earlier["postpone_until"].as_str() < shown["postpone_until"].as_str(), "{earlier}");
    work(&env);
    assert_eq!(env.run(&["jobs", "show", &job, "--json"]).ok().json()["status"], "WaitingForResources");
    let bad = env.run(&["jobs", "postpone", &job, "--until", "tomorrow"]).fails();
    assert!(bad.stderr.contains("bad time"), "{}", bad.stderr);
    // Run-now makes it due at once: the next pool runs it.
    let due = env.run(&["jobs", "run-now", &job, "--json"]).ok().json();
    assert!(due["postpone_until"].is_null(), "{due}");
    work(&env);
    assert_eq!(env.run(&["jobs", "show", &job, "--json"]).ok().json()["status"], "Succeeded");
}

#[test]
fn cleanup_of_succeeded_jobs_leaves_canceled_and_failed_ones() {
    let env = expenses();
    for _ in 0..2 {
        env.run(&["background", "submit", "notify", "--input", "{}"]).ok();
    }
    env.run(&["background", "submit", "always-fails", "--input", "{}"]).ok();
    let cancel = env.run(&["background", "submit", "notify", "--input", "{}", "--at", "+1h", "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["jobs", "cancel", &cancel]).ok();
    work(&env);
    let out = env.run(&["jobs", "cleanup", "--older-than", "0s", "--status", "succeeded"]).ok();
    assert_eq!(out.stdout.trim(), "deleted 2 jobs");
    let left = env.run(&["jobs", "list", "--json"]).ok().json();
    let mut statuses: Vec<&str> = left.as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, vec!["Canceled", "Failed"]);
    // The default age keeps recent jobs.
    assert_eq!(env.run(&["jobs", "cleanup"]).ok().stdout.trim(), "deleted 0 jobs");
}

#[test]
fn the_worker_cleans_up_by_itself_and_ends_abandoned_waits() {
    let env = expenses();
    // A timeout beyond `--until-idle`'s 3 s horizon, so the pool does not wait for it.
    approval_step(&env, Some(r#"{"timeout_ms": 3500}"#));
    env.run(&["background", "submit", "notify", "--input", "{}"]).ok();
    env.run(&["background", "submit", "always-fails", "--input", "{}"]).ok();
    let id = expense(&env, "system");
    // Run the jobs (the approval now waits) with the default retention: recent
    // jobs are kept.
    env.run(&["work", "--until-idle"]).ok();
    let approval = job_for(&env, &id)["id"].as_str().unwrap().to_string();
    env.run(&["jobs", "pause", &approval]).ok();
    let count = |filter: &str| env.run(&["jobs", "list", "--json", "--filter", filter]).ok().json().as_array().unwrap().len();
    assert_eq!((count("status eq 'Succeeded'"), count("status eq 'Failed'")), (1, 1));
    // Past the wait's timeout, still paused: abandoned. A pool told to keep
    // successes for no time, failures for a day and to end abandoned waits at
    // once does so at its start, without `weir jobs cleanup`.
    let timeout_at = job_for(&env, &id)["wait"]["timeout_at"].as_str().unwrap().to_string();
    let bad = env.run(&["work", "--until-idle", "--keep-failed", "soon"]);
    assert_eq!(bad.code, 2, "a bad duration is a usage error: {}", bad.stderr);
    assert!(bad.stderr.contains("--keep-failed") && bad.stderr.contains("try 30d"), "{}", bad.stderr);
    // 3.6 s later (the clock seam moves the worker's clock; nobody sleeps).
    env.run_later("3600ms", &["work", "--until-idle", "--keep-succeeded", "0s", "--keep-failed", "1d", "--end-abandoned-after", "0s"]).ok();
    assert_eq!(count("status eq 'Succeeded'"), 0, "successes deleted");
    assert_eq!(count("status eq 'Failed'"), 1, "failures kept longer");
    let ended = job_for(&env, &id);
    assert_eq!((ended["status"].as_str(), ended["error_code"].as_str()), (Some("Canceled"), Some("abandoned")), "timeout at {timeout_at}: {ended}");
    assert_eq!(state_of(&env, &id), serde_json::Value::Null, "the workflow did not run on");
}

#[test]
fn a_deactivated_owner_s_waiting_job_fails_naming_the_owner_and_can_be_canceled() {
    let env = expenses();
    approval_step(&env, None);
    env.run(&["user", "add", "alice"]).ok();
    let a1 = expense(&env, "alice");
    let a2 = expense(&env, "alice");
    work(&env);
    assert_eq!(job_for(&env, &a1)["owner"], "alice");
    env.run(&["user", "deactivate", "alice"]).ok();
    let refused = env.run(&["--as", "alice", "record", "create", "expense", "{}"]).fails();
    assert!(refused.stderr.contains("user alice is deactivated"), "{}", refused.stderr);
    assert!(env.run(&["--as", "nobody", "record", "create", "expense", "{}"]).fails().stderr.contains("no user named nobody"));
    env.run(&["record", "update", "expense", &a1, r#"{"approved": true}"#]).ok();
    work(&env);
    let j = job_for(&env, &a1);
    assert_eq!(j["status"], "Failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("owner alice is deactivated"), "{j}");
    assert_eq!(state_of(&env, &a1), Value::Null);
    let other = job_for(&env, &a2)["id"].as_str().unwrap().to_string();
    env.run(&["jobs", "cancel", &other]).ok();
    assert_eq!(job_for(&env, &a2)["status"], "Canceled");
}

#[test]
fn running_jobs_are_interrupted_by_cancel_and_pause() {
    let env = expenses();
    env.run(&[
        "step",
        "add",
        "slowly",
        "--plugin",
        "slow",
        "--message",
        "create",
        "--table",
        "expense",
        "--stage",
        "post-operation",
        "--mode",
        "async",
        "--config",
        r#"{"ms": 20000}"#,
        "--timeout-ms",
        "60000",
    ])
    .ok();
    let a = expense(&env, "system");
    let b = expense(&env, "system");
    let mut w = env.command().args(["work", "--workers", "4"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while env.run(&["jobs", "list", "--json", "--filter", "statuscode eq 20"]).ok().json().as_array().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "the jobs never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ja, jb) = (job_for(&env, &a)["id"].as_str().unwrap().to_string(), job_for(&env, &b)["id"].as_str().unwrap().to_string());
    let out = env.run(&["jobs", "cancel", &ja]).ok();
    assert!(out.stdout.contains("Locked/Canceling"), "{}", out.stdout);
    let out = env.run(&["jobs", "pause", &jb]).ok();
    assert!(out.stdout.contains("Locked/Pausing"), "{}", out.stdout);
    let interrupted = Instant::now();
    while job_for(&env, &a)["status"] != "Canceled" || job_for(&env, &b)["status"] != "Paused" {
        assert!(interrupted.elapsed() < Duration::from_secs(10), "the running guests were not interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(interrupted.elapsed() < Duration::from_secs(5), "interrupted long before the 20 s of work");
    std::process::Command::new("kill").arg(w.id().to_string()).status().unwrap();
    assert!(w.wait().unwrap().success());
    let paused = job_for(&env, &b);
    assert_eq!(paused["attempts"], 0, "the interrupted attempt does not count: {paused}");
}
