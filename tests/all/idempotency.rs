//! The same request twice makes one job: `Idempotency-Key` on background
//! submissions (HTTP and CLI), and steps that run one job at a time per
//! record (`--unique-for`).

use serde_json::{Value, json};

use crate::common::*;

fn submit(s: &Server, token: &str, key: &str, body: &str) -> (u16, Value, bool) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(&format!("{}/api/background", s.base))
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .send(body.as_bytes())
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null), replayed)
}

fn background_jobs(env: &Env) -> i64 {
    env.sql().query_row("SELECT COUNT(*) FROM weir_jobs WHERE kind = 'background'", [], |r| r.get(0)).unwrap()
}

#[test]
fn an_idempotency_key_answers_the_first_job_and_refuses_another_body() {
    let env = Env::new();
    env.add_example("noop");
    let s = Server::start(&env, &[]);
    let (first, body, replayed) = submit(&s, TOKEN, "order-17", r#"{"plugin": "noop", "input": {"a": 1, "b": 2}}"#);
    assert_eq!((first, replayed), (202, false), "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // The same request (other spacing and key order): the same job, 200.
    let (again, body2, replayed) = submit(&s, TOKEN, "order-17", r#"{"input":{"b":2,"a":1},"plugin":"noop"}"#);
    assert_eq!((again, body2["id"].as_str(), replayed), (200, Some(id.as_str()), true), "{body2}");
    // Another request with the key: 409, naming the key.
    let (clash, err, _) = submit(&s, TOKEN, "order-17", r#"{"plugin": "noop", "input": {"a": 2}}"#);
    assert_eq!(clash, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("order-17"), "{err}");
    assert_eq!(background_jobs(&env), 1);
    // Keys are the caller's own: another user's same key is another job.
    env.run(&["user", "add", "svc"]).ok();
    let svc = env.run(&["token", "create", "--user", "svc", "--role", "operator", "--json"]).ok().json()["token"].as_str().unwrap().to_string();
    let (other, body3, _) = submit(&s, &svc, "order-17", r#"{"plugin": "noop", "input": {"a": 1, "b": 2}}"#);
    assert_eq!(other, 202);
    assert_ne!(body3["id"].as_str(), Some(id.as_str()));
    // Eight at once with a new key: one job.
    let before = background_jobs(&env);
    let answers: Vec<(u16, String)> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..8).map(|_| t.spawn(|| submit(&s, TOKEN, "burst-1", r#"{"plugin": "noop", "input": 7}"#))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).map(|(st, b, _)| (st, b["id"].as_str().unwrap_or("").to_string())).collect()
    });
    assert_eq!(background_jobs(&env), before + 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(st, _)| *st == 202).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|(_, i)| *i == answers[0].1), "every answer names the one job: {answers:?}");
    // The CLI takes a key too.
    let a = env.run(&["background", "submit", "noop", "--input", "{\"x\": 1}", "--idempotency-key", "cli-1", "--json"]).ok().json();
    let b = env.run(&["background", "submit", "noop", "--input", "{\"x\": 1}", "--idempotency-key", "cli-1", "--json"]).ok().json();
    assert_eq!((a["id"].clone(), a["replayed"].clone(), b["replayed"].clone()), (b["id"].clone(), json!(false), json!(true)));
    let refused = env.run(&["background", "submit", "noop", "--input", "{\"x\": 2}", "--idempotency-key", "cli-1"]).fails();
    assert!(refused.stderr.contains("used for another request"), "{}", refused.stderr);
}

#[test]
fn a_step_with_unique_for_queues_one_job_per_record_at_a_time() {
    let env = Env::new();
    env.add_example("noop");
    env.run(&["table", "create", "doc", "--column", "name:text"]).ok();
    env.run(&[
        "step",
        "add",
        "index",
        "--plugin",
        "noop",
        "--message",
        "update",
        "--table",
        "doc",
        "--stage",
        "post-operation",
        "--mode",
        "async",
        "--unique-for",
        "1h",
    ])
    .ok();
    let a = env.run(&["record", "create", "doc", r#"{"name": "a"}"#]).ok().json()["id"].as_str().unwrap().to_string();
    let b = env.run(&["record", "create", "doc", r#"{"name": "b"}"#]).ok().json()["id"].as_str().unwrap().to_string();
    for n in 0..3 {
        env.run(&["record", "update", "doc", &a, &format!(r#"{{"name": "a{n}"}}"#)]).ok();
    }
    env.run(&["record", "update", "doc", &b, r#"{"name": "b1"}"#]).ok();
    let jobs =
        |status: &str| -> i64 { env.sql().query_row(&format!("SELECT COUNT(*) FROM weir_jobs WHERE step = 'index' {status}"), [], |r| r.get(0)).unwrap() };
    assert_eq!(jobs(""), 2, "three updates of a queue one job while it is Ready; b its own");
    // Once a's job has run, the next update queues another.
    env.run(&["work", "--until-idle"]).ok();
    env.run(&["record", "update", "doc", &a, r#"{"name": "a9"}"#]).ok();
    assert_eq!(jobs(""), 3);
    assert_eq!(jobs("AND statecode = 0"), 1);
    // The window: a job queued longer ago than --unique-for does not count.
    env.run(&["step", "update", "index", "--unique-for", "1ms"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(20));
    env.run(&["record", "update", "doc", &a, r#"{"name": "a10"}"#]).ok();
    assert_eq!(jobs("AND statecode = 0"), 2);
    // 0s removes it; a sync step may not have it.
    env.run(&["step", "update", "index", "--unique-for", "0s"]).ok();
    let listed = env.run(&["step", "list", "--json"]).ok().json();
    assert!(listed.to_string().contains("\"index\"") && !listed.to_string().contains("unique_for"), "{listed}");
    let sync =
        env.run(&["step", "add", "u2", "--plugin", "noop", "--message", "update", "--table", "doc", "--stage", "pre-operation", "--unique-for", "1h"]).fails();
    assert!(sync.stderr.contains("--unique-for apply to async steps"), "{}", sync.stderr);
}
