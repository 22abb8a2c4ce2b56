//! A fair share of the workers, on both databases, with real worker
//! processes: priority (an urgent job goes first), owners' shares (a big
//! backlog does not hold up another owner), concurrency limits over two
//! nodes, queues served by their own nodes, rates, the breaker (one hold,
//! a probe that succeeds, release) and postponing both ways.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Answer, Env, Receiver, wait_for};
use weir::jobs::{self, JobContext, NewJob};

/// A job of `plugin` (version 1) for `owner` in `queue` at `priority`, of
/// `step` if one.
fn job(plugin: &str, step: Option<&str>, owner: &str, queue: &str, priority: i64) -> NewJob {
    NewJob {
        kind: if step.is_some() { "step" } else { "background" },
        asked_by: None,
        unique_key: None,
        step: step.map(String::from),
        plugin: plugin.into(),
        plugin_version: 1,
        owner: owner.into(),
        context: JobContext::background(owner, json!(null)),
        grants: vec![],
        max_attempts: 5,
        backoff_ms: 100,
        timeout_ms: 10_000,
        fuel: None,
        postpone_until: None,
        callback_url: None,
        queue: queue.into(),
        priority,
    }
}

/// Enqueues `jobs` in one transaction; their ids in order.
fn enqueue(env: &Env, jobs: impl IntoIterator<Item = NewJob>) -> Vec<String> {
    let conn = env.sql();
    let tx = conn.transaction_with_behavior(weir::db::TransactionBehavior::Immediate).unwrap();
    let ids = jobs.into_iter().map(|j| jobs::enqueue(&tx, &j).unwrap()).collect();
    tx.commit().unwrap();
    ids
}

fn count(env: &Env, sql: &str) -> i64 {
    env.sql().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn node(env: &Env, args: &[&str]) -> Child {
    env.command().arg("work").args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

fn stop(mut nodes: Vec<Child>) {
    for n in &mut nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}

#[test]
fn an_urgent_job_behind_five_thousand_starts_in_the_first_claim_batch() {
    let env = Env::new();
    env.add_example("noop");
    enqueue(&env, (0..5_000).map(|_| job("noop", None, "system", "default", 5)));
    let urgent = enqueue(&env, [job("noop", None, "system", "default", 9)]).remove(0);
    env.run(&["work", "--until-idle", "--workers", "4"]).ok();
    assert_eq!(count(&env, "SELECT COUNT(*) FROM weir_jobs WHERE statuscode = 30"), 5_001);
    // Every job a claim takes starts at the claim's time: none started before it.
    let before = count(&env, &format!("SELECT COUNT(*) FROM weir_jobs WHERE started_at < (SELECT started_at FROM weir_jobs WHERE id = '{urgent}')"));
    assert_eq!(before, 0, "the urgent job was in the first claim batch");
    let shown = env.run(&["jobs", "show", &urgent, "--json"]).ok().json();
    assert_eq!((shown["priority"].as_i64(), shown["queue"].as_str()), (Some(9), Some("default")));
}

#[test]
fn another_owner_s_ten_jobs_finish_before_the_first_owner_s_five_hundredth() {
    let env = Env::new();
    env.add_example("noop");
    env.run(&["user", "add", "alice"]).ok();
    env.run(&["user", "add", "bob"]).ok();
    enqueue(&env, (0..10_000).map(|_| job("noop", None, "alice", "default", 5)));
    enqueue(&env, (0..10).map(|_| job("noop", None, "bob", "default", 5)));
    env.run(&["work", "--until-idle", "--workers", "8"]).ok();
    assert_eq!(count(&env, "SELECT COUNT(*) FROM weir_jobs WHERE statuscode = 30"), 10_010);
    let bob_done = "(SELECT MAX(completed_at) FROM weir_jobs WHERE owner = 'bob')";
    let alice_before = count(&env, &format!("SELECT COUNT(*) FROM weir_jobs WHERE owner = 'alice' AND completed_at < {bob_done}"));
    eprintln!("fair share: alice's jobs finished before bob's last of 10: {alice_before} (of 10,000)");
    assert!(alice_before < 500, "bob's 10 jobs waited behind {alice_before} of alice's");
    let filtered = env.run(&["jobs", "list", "--filter", "owner eq 'bob' and queue eq 'default' and priority eq 5", "--json"]).ok().json();
    assert_eq!(filtered.as_array().unwrap().len(), 10);
}

#[test]
fn max_running_three_holds_over_two_nodes_of_eight_workers() {
    let env = Env::new();
    env.add_example("notify");
    env.run(&["table", "create", "t", "--column", "name:text"]).ok();
    let slow = Receiver::start(|_, _| Answer { delay: Duration::from_millis(40), ..Answer::status("200 OK") });
    let host = format!("127.0.0.1:{}", slow.port);
    env.run(&[
        "step",
        "add",
        "limited",
        "--plugin",
        "notify",
        "--message",
        "create",
        "--table",
        "t",
        "--stage",
        "post-operation",
        "--mode",
        "async",
        "--max-running",
        "3",
        "--allow-http",
        &host,
        "--config",
        &json!({"url": slow.url("/slow")}).to_string(),
    ])
    .ok();
    let jobs: Vec<NewJob> = (0..30)
        .map(|_| {
            let mut j = job("notify", Some("limited"), "system", "default", 5);
            j.context.config = json!({"url": slow.url("/slow")});
            j.context.allow_http = vec![host.clone()];
            j
        })
        .collect();
    enqueue(&env, jobs);
    let nodes = vec![node(&env, &["--workers", "8"]), node(&env, &["--workers", "8"])];
    let (mut most, mut reason_seen) = (0, None);
    let started = Instant::now();
    let conn = env.sql();
    loop {
        let running: i64 = conn.query_row("SELECT COUNT(*) FROM weir_jobs WHERE step = 'limited' AND statecode = 2", [], |r| r.get(0)).unwrap();
        most = most.max(running);
        if reason_seen.is_none() && running == 3 {
            reason_seen = jobs::list(&conn, Some("step eq 'limited' and statecode eq 0"), 1, 0).unwrap().pop().and_then(|j| j.waiting_for);
        }
        let done: i64 = conn.query_row("SELECT COUNT(*) FROM weir_jobs WHERE step = 'limited' AND statecode = 3", [], |r| r.get(0)).unwrap();
        if done == 30 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "30 jobs of 40 ms, 3 at a time, did not finish: {done} done");
        std::thread::sleep(Duration::from_millis(3));
    }
    stop(nodes);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM weir_jobs WHERE step = 'limited' AND statuscode = 30"), 30, "every job succeeded");
    assert!(most <= 3, "{most} attempts of the step ran at once");
    assert!(most >= 2, "the limit's slots were used ({most} at most)");
    let reason = reason_seen.expect("a Ready job of a full step says why it waits");
    assert!(reason.contains("waiting for a slot of step limited: 3 of 3 running"), "{reason}");
    assert_eq!(slow.seen().len(), 30);
}

#[test]
fn a_node_serves_only_its_queues() {
    let env = Env::new();
    env.add_example("noop");
    let a = enqueue(&env, (0..5).map(|_| job("noop", None, "system", "a", 5)));
    let b = enqueue(&env, (0..5).map(|_| job("noop", None, "system", "b", 5)));
    env.run(&["work", "--until-idle", "--queues", "a"]).ok();
    let status = |id: &str| env.run(&["jobs", "show", id, "--json"]).ok().json()["status"].as_str().unwrap().to_string();
    assert!(a.iter().all(|id| status(id) == "Succeeded"));
    assert!(b.iter().all(|id| status(id) == "WaitingForResources"), "a node serving queue a ran none of b's jobs");
    // The queues view: b has 5 ready jobs and no node serving it.
    let queues = env.run(&["queue", "list", "--json"]).ok().json();
    let qb = queues.as_array().unwrap().iter().find(|q| q["name"] == "b").cloned().unwrap();
    assert_eq!((qb["ready"].as_i64(), qb["running"].as_i64()), (Some(5), Some(0)));
    let waiting = env.run(&["jobs", "show", &b[0], "--json"]).ok().json();
    assert!(waiting["waiting_for"].as_str().unwrap().contains("no live node serves queue b"), "{waiting}");
    // A node serving b (among others) runs them; while it runs, it is listed.
    let mut serving = node(&env, &["--queues", "b,c"]);
    wait_for("queue b's jobs to run", || b.iter().all(|id| status(id) == "Succeeded"));
    let nodes = env.run(&["nodes", "--json"]).ok().json();
    assert!(nodes.as_array().unwrap().iter().any(|n| n["queues"] == json!(["b", "c"]) && n["live"] == true), "{nodes}");
    let _ = serving.kill();
    let _ = serving.wait();
}

#[test]
fn a_rate_of_20_per_second_holds_over_ten_seconds_across_two_nodes() {
    let env = Env::new();
    env.add_example("noop");
    env.run(&["table", "create", "t", "--column", "name:text"]).ok();
    env.run(&[
        "step",
        "add",
        "rated",
        "--plugin",
        "noop",
        "--message",
        "create",
        "--table",
        "t",
        "--stage",
        "post-operation",
        "--mode",
        "async",
        "--rate",
        "20/s",
    ])
    .ok();
    enqueue(&env, (0..220).map(|_| job("noop", Some("rated"), "system", "default", 5)));
    let nodes = vec![node(&env, &["--workers", "4"]), node(&env, &["--workers", "4"])];
    wait_for("220 jobs at 20/s", || count(&env, "SELECT COUNT(*) FROM weir_jobs WHERE statuscode = 30") == 220);
    stop(nodes);
    let conn = env.sql();
    let starts: Vec<i64> =
        conn.prepare("SELECT started_at FROM weir_jobs ORDER BY started_at").unwrap().query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    let span = starts[219] - starts[0];
    // A full bucket (20) at once, then 20 a second: the 220th about 10 s in.
    eprintln!("rate 20/s: 220 jobs started over {span} ms");
    assert!(span >= 9_500, "220 jobs at 20/s with a bucket of 20 started within {span} ms");
    for (i, &t) in starts.iter().enumerate() {
        let in_second = starts[i..].iter().take_while(|&&s| s < t + 1_000).count();
        assert!(in_second <= 40, "{in_second} jobs started within a second of {t}: more than the rate and one bucket");
    }
}

#[test]
fn jobs_that_fail_once_are_held_at_most_once_and_release_ends_a_hold() {
    let env = Env::new();
    env.add_example("flaky");
    env.run(&["table", "create", "t", "--column", "name:text"]).ok();
    let add = |name: &str, failures: u32| {
        env.run(&[
            "step",
            "add",
            name,
            "--plugin",
            "flaky",
            "--message",
            "create",
            "--table",
            "t",
            "--stage",
            "post-operation",
            "--mode",
            "async",
            "--backoff-ms",
            "100",
            "--max-attempts",
            "5",
            "--hold-after",
            "5",
            "--max-hold",
            "10m",
            "--config",
            &json!({"failures": failures}).to_string(),
        ])
        .ok();
    };
    // Jobs as the step queues them: its config with them.
    let flaky = |step: &str, failures: u32| {
        let mut j = job("flaky", Some(step), "system", "default", 5);
        j.context.config = json!({"failures": failures});
        j
    };
    add("once", 1);
    enqueue(&env, (0..24).map(|_| flaky("once", 1)));
    env.run(&["work", "--until-idle", "--workers", "8"]).ok();
    assert_eq!(count(&env, "SELECT COUNT(*) FROM weir_jobs WHERE statuscode = 30 AND attempts = 2"), 24, "each succeeded on its second attempt");
    // Its first failures tripped one hold (2 s); the probe, a due retry,
    // succeeded and let the rest through: no job waited much longer.
    let slowest = count(&env, "SELECT MAX(completed_at - created_at) FROM weir_jobs");
    eprintln!("fail-once step: the slowest of 24 jobs took {slowest} ms");
    assert!(slowest < 2_000 + 200 + 5_000, "a job took {slowest} ms: more than its backoff and one hold");
    assert_eq!(count(&env, "SELECT COUNT(*) FROM weir_step_health"), 0, "the probe's success reset the breaker");

    // A step that keeps failing is held; release ends the hold at once, and
    // so do disable and enable.
    add("broken", 100);
    enqueue(&env, (0..6).map(|_| flaky("broken", 100)));
    let held = || count(&env, "SELECT COUNT(*) FROM weir_step_health WHERE step = 'broken' AND hold_until IS NOT NULL");
    let mut n = node(&env, &["--workers", "2"]);
    wait_for("the broken step to be held", || held() == 1);
    let _ = n.kill();
    let _ = n.wait();
    let steps = env.run(&["step", "list", "--json"]).ok().json();
    let broken = steps.as_array().unwrap().iter().find(|s| s["name"] == "broken").cloned().unwrap();
    assert!(broken["health"]["held_until"].is_string(), "{broken}");
    let released = env.run(&["step", "release", "broken", "--json"]).ok().json();
    assert_eq!(released["released"], true);
    assert_eq!(held(), 0);
    assert_eq!(env.run(&["step", "release", "broken", "--json"]).ok().json()["released"], false, "nothing left to release");
    env.sql().execute("INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES ('broken', 9, 9999999999999)", []).unwrap();
    env.run(&["step", "disable", "broken"]).ok();
    env.run(&["step", "enable", "broken"]).ok();
    assert_eq!(held(), 0, "disable and enable end a hold");
    assert!(env.run(&["step", "release", "nope"]).fails().stderr.contains("no step named nope"));
}

#[test]
fn postpone_moves_a_job_both_ways_and_a_waiting_job_keeps_its_condition() {
    let env = Env::new();
    env.add_example("noop");
    let weir = weir::Weir::open(env.db()).unwrap();
    let id = enqueue(&env, [job("noop", None, "system", "default", 5)]).remove(0);
    let later = weir::time::now_ms() + 3_600_000;
    let v = weir.control_job(&id, weir::JobAction::Postpone(later)).unwrap();
    assert_eq!(v.postpone_until.as_deref().and_then(weir::time::parse_rfc3339), Some(later));
    let earlier = later - 1_800_000;
    let v = weir.control_job(&id, weir::JobAction::Postpone(earlier)).unwrap();
    assert_eq!(v.postpone_until.as_deref().and_then(weir::time::parse_rfc3339), Some(earlier), "earlier than the last postponement");
    let v = weir.control_job(&id, weir::JobAction::RunNow).unwrap();
    assert!(v.postpone_until.is_none());
    // Its priority is overridable while it has not started, one job or a
    // filter's worth; a running job keeps the priority it was claimed with.
    assert_eq!(env.run(&["jobs", "priority", &id, "high", "--json"]).ok().json()["priority"], 9);
    assert!(env.run(&["jobs", "priority", &id, "10"]).fails().stderr.contains("0 to 9"));
    // A job waiting for a record keeps its wait through postpone and run-now.
    let mut conn = env.sql();
    let now = weir::time::now_ms();
    let claimed = jobs::claim_ready(&mut conn, "W", &jobs::claims::Served::all(), now, 60_000, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    let wait = jobs::Wait {
        until: now + 7 * 86_400_000,
        table: Some("t".into()),
        record: Some("r1".into()),
        condition: Some("name eq 'x'".into()),
        key: None,
        state: vec![],
        ..Default::default()
    };
    let c = jobs::Completion { id: id.clone(), outcome: jobs::Outcome::Wait(wait), trace: vec![], duration_ms: 1 };
    let running = weir.control_job(&id, weir::JobAction::Reprioritize(1)).unwrap_err().to_string();
    assert!(running.contains("has not started"), "{running}");
    assert!(jobs::complete(&mut conn, &c, "W", now).unwrap());
    let v = weir.control_job(&id, weir::JobAction::Postpone(now + 3_600_000)).unwrap();
    assert_eq!((v.status, v.wait.as_ref().unwrap()["condition"].as_str()), ("Waiting", Some("name eq 'x'")));
    let v = weir.control_job(&id, weir::JobAction::RunNow).unwrap();
    assert_eq!((v.status, v.wait.as_ref().unwrap()["kind"].as_str()), ("Waiting", Some("for")));
    assert_eq!(v.postpone_until.as_deref().and_then(weir::time::parse_rfc3339), Some(now + 7 * 86_400_000), "its own timeout, not the postponement");
    let others = enqueue(&env, [job("noop", None, "system", "imports", 5), job("noop", None, "system", "imports", 5)]);
    let bulk = env.run(&["jobs", "bulk", "priority", "--filter", "queue eq 'imports'", "--priority", "low", "--json"]).ok().json();
    assert_eq!(bulk["applied"], 2, "{bulk}");
    for other in &others {
        assert_eq!(weir.show_job(other).unwrap().priority, 0);
    }
    assert!(env.run(&["jobs", "bulk", "priority", "--filter", "queue eq 'imports'"]).fails().stderr.contains("priority needs"));
}
