//! The dashboard as a page to work an incident from: the jobs' waiting
//! states (held, delayed, scheduled, waiting for a slot) in the API, the
//! event stream that pushes changes made by another process, and an
//! operator's incident walk in headless Chromium (tests/browser/incident.mjs).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::{Env, Server, TOKEN, q, raw_http, wait_for};
use serde_json::{Value, json};

/// A CRM whose `charge` step always fails, `welcome` is held by the
/// breaker, `sync` retries after an hour, and queue `slow` (one at a time)
/// is full (its one slot taken by a job of a node that is gone). Returns
/// the server and the jobs: running on the gone node, held, delayed,
/// scheduled, waiting for a slot.
struct Incident {
    env: Env,
    s: Server,
    busy: String,
    held: String,
    delayed: String,
    scheduled: String,
    slot: String,
}

fn incident() -> Incident {
    let env = Env::new();
    env.crm_tables(&[]);
    for p in ["notify", "always-fails", "flaky"] {
        env.add_example(p);
    }
    let async_step = |name: &str, plugin: &str, table: &str, extra: &[&str]| {
        let mut args = vec!["step", "add", name, "--plugin", plugin, "--message", "create", "--table", table, "--stage", "post-operation", "--mode", "async"];
        args.extend_from_slice(extra);
        env.run(&args).ok();
    };
    async_step("charge", "always-fails", "opportunity", &["--max-attempts", "1"]);
    async_step("welcome", "notify", "account", &[]);
    async_step("sync", "flaky", "account", &["--max-attempts", "3", "--backoff-ms", "3600000"]);
    // The breaker holds `welcome` (as after failures in a row), for a long time.
    env.sql().execute("INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES ('welcome', 7, 9999999999999)", []).unwrap();
    let s = Server::start(&env, &[]);
    assert_eq!(s.call("PATCH", "/api/queues/slow", Some(br#"{"max_running": 1}"#), Some(TOKEN)).status, 200);
    // A job of queue `slow` running on a node that went away a minute ago
    // (its lease ends in ten): the queue's one slot is taken.
    let busy = s.post("/api/background", &json!({"plugin": "notify", "input": {}, "queue": "slow", "at": "+1h"})).body["id"].as_str().unwrap().to_string();
    env.sql()
        .execute(
            &format!(
                "UPDATE weir_jobs SET statecode = 2, statuscode = 20, attempts = 1, claims = 1, lease_owner = 'gone-node', worker = 'gone-node', lease_until = created_at + 600000, started_at = created_at WHERE id = '{busy}'"
            ),
            [],
        )
        .unwrap();
    env.sql()
        .execute(
            &format!(
                "INSERT INTO weir_nodes (id, host, pid, version, queues, workers, busy, started_at, last_seen)
                 SELECT 'gone-node', 'old-host', 4242, '0.1.0', '[\"slow\"]', 4, 1, created_at - 3600000, created_at - 60000 FROM weir_jobs WHERE id = '{busy}'"
            ),
            [],
        )
        .unwrap();
    let slot = s.post("/api/background", &json!({"plugin": "notify", "input": {}, "queue": "slow"})).body["id"].as_str().unwrap().to_string();
    let scheduled = s.post("/api/background", &json!({"plugin": "notify", "input": {}, "at": "+1h"})).body["id"].as_str().unwrap().to_string();
    assert_eq!(s.post("/api/data/account", &json!({"name": "Acme", "creditlimit": 10})).status, 201);
    let job_of = |step: &str| {
        let page = s.get(&format!("/api/jobs?$filter={}", q(&format!("step eq '{step}'")))).body;
        page["value"][0]["id"].as_str().unwrap_or_else(|| panic!("a {step} job: {page}")).to_string()
    };
    let (held, delayed) = (job_of("welcome"), job_of("sync"));
    wait_for("the sync job's first attempt to fail", || s.get(&format!("/api/jobs/{delayed}")).body["attempts"] == 1);
    for amount in [1, 2] {
        assert_eq!(s.post("/api/data/opportunity", &json!({"name": format!("deal {amount}"), "amount": amount})).status, 201);
    }
    let failed = format!("/api/jobs?$filter={}", q("step eq 'charge' and status eq 'Failed'"));
    wait_for("both charges to fail", || s.get(&failed).body["count"] == 2);
    Incident { env, s, busy, held, delayed, scheduled, slot }
}

#[test]
fn jobs_say_why_they_wait_held_delayed_scheduled_or_for_a_slot() {
    // `_env`, not `..`: the database lives as long as the test (on PostgreSQL its drop drops it).
    let Incident { env: _env, s, held, delayed, scheduled, slot, .. } = incident();
    let waiting = |id: &str| s.get(&format!("/api/jobs/{id}")).body["waiting"].clone();
    assert_eq!(waiting(&held), "held", "its step's breaker holds it: {}", s.get(&format!("/api/jobs/{held}")).text);
    assert_eq!(waiting(&delayed), "delayed", "a retry waiting out its backoff");
    assert_eq!(waiting(&scheduled), "scheduled", "due later, never tried");
    assert_eq!(waiting(&slot), "waiting_for_slot", "queue slow's one slot is taken");
    // The list says the same, with owner, due and last error times.
    let page = s.get("/api/jobs?$top=100").body;
    let row = |id: &str| page["value"].as_array().unwrap().iter().find(|j| j["id"] == id).cloned().unwrap_or_else(|| panic!("{id} listed: {page}"));
    for (id, kind) in [(&held, "held"), (&delayed, "delayed"), (&scheduled, "scheduled"), (&slot, "waiting_for_slot")] {
        assert_eq!(row(id)["waiting"], kind, "{id} in the list");
    }
    let d = row(&delayed);
    assert!(d["due_at"].as_str().is_some_and(|t| t > d["created_at"].as_str().unwrap()), "a delayed retry is due later: {d}");
    assert!(d["last_error_at"].is_string(), "its failed attempt's end: {d}");
    assert!(row(&scheduled)["last_error_at"].is_null(), "a job never tried has no last error");
    let failed = s.get(&format!("/api/jobs?$filter={}", q("step eq 'charge'"))).body;
    for j in failed["value"].as_array().unwrap() {
        assert_eq!(j["last_error_at"], j["completed_at"], "a Failed job's last error is its end: {j}");
        assert!(j["waiting"].is_null() && j["owner"].is_string(), "{j}");
    }
    // A released step's jobs no longer wait.
    assert_eq!(s.post("/api/steps/welcome/release", &json!({})).status, 200);
    wait_for("the released job to run", || s.get(&format!("/api/jobs/{held}")).body["status"] == "Succeeded");
    assert!(waiting(&held).is_null());
    // The OpenAPI document names the states.
    let doc = s.get("/api/openapi.json").body;
    let states = doc["components"]["schemas"]["Waiting"].to_string();
    for kind in ["held", "delayed", "scheduled", "waiting_for_slot"] {
        assert!(states.contains(kind), "the schema documents {kind}: {states}");
    }
    // The charts' range: per 5 minutes over 6 hours; a bad range is refused, saying what to use.
    let six = s.get("/api/stats?range=6h").body;
    assert_eq!((six["range"].as_str(), six["bucket_s"].as_i64(), six["throughput"].as_array().map(Vec::len)), (Some("6h"), Some(300), Some(72)), "{six}");
    let week = s.get("/api/stats?range=7d").body;
    let failures: i64 = week["throughput"].as_array().unwrap().iter().map(|m| m["failed"].as_i64().unwrap()).sum();
    assert_eq!(failures, 2, "the week's chart counts both failures");
    let bad = s.get("/api/stats?range=1y");
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"].as_str().unwrap().contains("1h, 6h, 24h or 7d"), "{}", bad.text);
}

/// Reads an open event stream until `needle` arrives (true) or `wait` passes (false).
fn read_until(stream: &mut std::net::TcpStream, seen: &mut String, needle: &str, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left.max(Duration::from_millis(10)))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return seen.contains(needle),
            Err(e) => panic!("the event stream broke: {e}"),
        }
    }
    true
}

fn subscribe(addr: &str, token: &str) -> (std::net::TcpStream, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut stream, &mut seen, "event: ready", Duration::from_secs(10)), "the stream opens with ready: {seen:?}");
    (stream, seen)
}

#[test]
fn the_event_stream_pushes_a_change_made_by_another_process() {
    let env = Env::new();
    env.crm_tables(&[]);
    env.add_example("notify");
    let s = Server::start(&env, &[]);
    env.run(&["user", "add", "rita"]).ok();
    let reader = env.run(&["token", "create", "--user", "rita", "--role", "reader", "--json"]).ok().json()["token"].as_str().unwrap().to_string();
    // Authorized like every read: no token, no stream; a reader may listen.
    let (status, _, body) = raw_http(s.addr(), "GET", "/api/events", &[("Host", s.addr().as_bytes()), ("Accept", b"text/event-stream")], b"");
    assert_eq!(status, 401, "{body}");
    // A client that would read the endless body to its end is told what to send.
    let plain = s.get("/api/events");
    assert_eq!(plain.status, 406, "{}", plain.text);
    assert!(plain.body["error"].as_str().unwrap().contains("Accept: text/event-stream"), "{}", plain.text);

    let (mut stream, mut seen) = subscribe(s.addr(), &reader);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.to_ascii_lowercase().contains("content-type: text/event-stream"), "{seen}");
    // The watcher's first read after a quiet spell reports a change (what
    // happened meanwhile is unknown); then nothing changes, nothing comes.
    read_until(&mut stream, &mut seen, "event: change", Duration::from_secs(3));
    let mut quiet = String::new();
    assert!(!read_until(&mut stream, &mut quiet, "event: change", Duration::from_secs(3)), "no change, no event: {quiet:?}");
    // Another process (the CLI, on the same database) queues a job: the stream says so.
    let started = Instant::now();
    env.run(&["background", "submit", "notify", "--input", "{}"]).ok();
    let mut news = String::new();
    assert!(read_until(&mut stream, &mut news, "event: change", Duration::from_secs(5)), "the CLI's job reaches the stream: {news:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "within a few seconds");
    // Two listeners share the one watcher: both hear of the next change.
    let (mut second, _) = subscribe(s.addr(), TOKEN);
    let mut skip = String::new();
    read_until(&mut second, &mut skip, "event: change", Duration::from_secs(3));
    read_until(&mut stream, &mut skip, "event: change", Duration::from_secs(3));
    assert_eq!(s.post("/api/steps", &json!({"name": "nightly", "plugin": "notify", "schedule": "0 0 0 1 1 * 2099"})).status, 201);
    env.sql().execute("INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES ('nightly', 5, 9999999999999)", []).unwrap();
    for (name, s) in [("first", &mut stream), ("second", &mut second)] {
        let mut got = String::new();
        assert!(read_until(s, &mut got, "event: change", Duration::from_secs(5)), "the {name} listener hears of the hold: {got:?}");
    }
}

#[test]
fn an_operator_works_an_incident_from_the_dashboard() {
    let Incident { env: _env, s, busy, held, delayed, scheduled, slot } = incident();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/incident.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .args([&format!("{}/", s.base), TOKEN, dir.to_str().unwrap(), &held, &delayed, &scheduled, &slot, &busy])
        .output()
        .expect("node runs (the browser test needs Node.js, tests/browser's npm packages and Debian's chromium; .ci/run installs them)");
    assert!(out.status.success(), "browser test failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["errors"], json!([]), "no script errors on the page");
    assert_eq!(
        page["badges"],
        json!({"held": "held", "delayed": "delayed", "scheduled": "scheduled", "slot": "waiting_for_slot"}),
        "each waiting job shows its own badge"
    );
    let charges: Vec<String> = s.get(&format!("/api/jobs?$filter={}", q("step eq 'charge'"))).body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(charges.len(), 3, "the two failures and the one made during the walk");
    assert_eq!(page["failures"], json!(charges[1..]), "typed into the filter box: the step's two failures, newest first");
    assert!(page["filterUrl"].as_str().unwrap().contains("filter=step+eq"), "the filter is in the URL: {}", page["filterUrl"]);
    let job = &page["job"];
    let record = s.get(&format!("/api/jobs/{}", charges[1])).body["target"].clone();
    assert_eq!(
        job["recordLink"],
        json!(format!("/?view=record&table={}&id={}&from={}", record["table"].as_str().unwrap(), record["id"].as_str().unwrap(), charges[1])),
        "the job links to its record (whose page links back to it)"
    );
    assert_eq!(page["record"]["backLink"], json!(format!("/jobs/{}", charges[1])), "{}", page["record"]);
    assert!(job["stepLink"].as_str().unwrap().contains("filter=step%20eq%20'charge'"), "{job}");
    assert!(job["correlationLink"].as_str().unwrap().contains("correlation_id%20eq"), "{job}");
    assert!(page["record"]["json"].as_str().unwrap().contains(record["id"].as_str().unwrap()), "the record's JSON: {}", page["record"]);
    assert!(page["record"]["jobs"].as_array().unwrap().contains(&json!(charges[1])), "the record lists its jobs: {}", page["record"]);
    assert_eq!(page["back"], json!(charges[1]), "back from the record, the job's page again");
    assert_eq!(page["stepList"], "step eq 'charge'", "the step link opens the list filtered by the step");
    assert!(page["released"].as_str().unwrap().contains("step welcome released"), "{}", page["released"]);
    let pushed = &page["pushed"];
    assert_eq!(pushed["newRow"], json!(charges[0]), "the new failure appears in the list: {pushed}");
    assert_eq!(pushed["listRequestsWhileQuiet"], 0, "no poll while nothing changes: {pushed}");
    assert_eq!(pushed["navigations"], 0, "and no reload: {pushed}");
    let bad = &page["badFilter"];
    assert!(bad["error"].as_str().unwrap().contains("this filter cannot be used"), "the error is beside the box: {bad}");
    assert_eq!(bad["rowsBefore"], bad["rowsAfter"], "the list keeps what it showed: {bad}");
    assert_eq!(bad["summaryBefore"], bad["summaryAfter"], "and so does the summary: {bad}");
    assert!(bad["invalid"] == "true", "the box is marked invalid: {bad}");
    assert_eq!(page["gone"], json!({"state": "gone", "jobs": [busy], "workers": "1/4"}), "a gone node with the job it holds and its lease end");
    for (view, width) in page["widths"].as_object().unwrap() {
        assert!(width.as_i64().unwrap() <= 1280, "the {view} view fits 1280 px without scrolling sideways: {width}");
    }
    for shot in [
        "incident-1-waiting",
        "incident-2-failures",
        "incident-3-job",
        "incident-4-record",
        "incident-5-released",
        "incident-6-pushed",
        "incident-7-bad-filter",
        "incident-8-nodes",
    ] {
        assert!(dir.join(format!("{shot}.png")).exists(), "{shot}.png kept in target/artifacts");
    }
    // The API answers a bad filter 400 with what is wrong.
    let bad = s.get(&format!("/api/jobs?$filter={}", q("step eq")));
    assert_eq!(bad.status, 400, "{}", bad.text);
}
