//! What an attacker tried against a release build, each answered: cross-site
//! writes and DNS rebinding against `weir serve`, options that wrapped or
//! starved the pool, a sync step holding the store, logs that could not be
//! written, unbounded listings and bodies, bad header bytes, a closed pipe.
//! Every test here failed before its fix.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, Server, TOKEN, raw_http};

fn records(env: &Env, table: &str) -> usize {
    env.run(&["record", "query", table]).ok().json().as_array().map_or(0, Vec::len)
}

fn body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON body ({e}): {text:?}"))
}

/// A page on the same machine sends what a browser sends; none of the three
/// ways in (simple requests, foreign origins, rebinding the name) gets through,
/// while the API's own origin and an allowed one still work.
#[test]
fn a_browser_page_of_another_site_can_neither_write_nor_read() {
    let env = Env::new();
    env.run(&["table", "create", "note", "--column", "text:text"]).ok();
    env.run(&["record", "create", "note", r#"{"text":"secret"}"#]).ok();
    let s = Server::start_open(&env, &["--allow-origin", "http://app.example:3000"]);
    let addr = s.addr().to_string();
    let host = addr.as_bytes();
    let own_origin = format!("http://{addr}");
    let record = br#"{"text":"planted"}"#;

    // 1. "Simple" requests (no preflight): text/plain, form types, none at all.
    let writes: [(&str, &str, &[u8]); 5] = [
        ("POST", "/api/data/note", record),
        ("POST", "/api/tables", br#"{"name":"planted","columns":[]}"#),
        ("POST", "/api/background", br#"{"plugin":"x","input":{}}"#),
        ("POST", "/api/plugins?name=planted", b"\0asm\x0d\0\x01\0"),
        ("PATCH", "/api/data/note/x", record),
    ];
    for (method, path, payload) in writes {
        for kind in [&b"text/plain"[..], b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x"] {
            let (status, _, text) = raw_http(&addr, method, path, &[("Host", host), ("Content-Type", kind)], payload);
            assert_eq!(status, 415, "{method} {path} as {}: {text}", String::from_utf8_lossy(kind));
            assert!(body(&text)["error"].as_str().unwrap().contains("application/"), "{text}");
        }
        let (status, _, _) = raw_http(&addr, method, path, &[("Host", host)], payload);
        assert_eq!(status, 415, "{method} {path} without a content type");
    }
    // A job action is a write too.
    let (status, _, _) = raw_http(&addr, "POST", "/api/jobs/x/cancel", &[("Host", host), ("Content-Type", b"text/plain")], b"{}");
    assert_eq!(status, 415);

    // 2. JSON from a foreign origin (a CORS request the browser would send
    // after a preflight weir never approves), or marked cross-site.
    for origin in [&b"http://attacker.example"[..], b"null", b"http://localhost:1", b"http://app.example:3001"] {
        let (status, _, text) = raw_http(&addr, "POST", "/api/data/note", &[("Host", host), ("Origin", origin), ("Content-Type", b"application/json")], record);
        assert_eq!(status, 403, "origin {}: {text}", String::from_utf8_lossy(origin));
        assert!(body(&text)["error"].as_str().unwrap().contains("--allow-origin"), "{text}");
    }
    for site in [&b"cross-site"[..], b"same-site"] {
        let (status, _, _) =
            raw_http(&addr, "POST", "/api/data/note", &[("Host", host), ("Sec-Fetch-Site", site), ("Content-Type", b"application/json")], record);
        assert_eq!(status, 403);
        // Reads too: a no-cors fetch carries no Origin.
        let (status, _, text) = raw_http(&addr, "GET", "/api/data/note", &[("Host", host), ("Sec-Fetch-Site", site), ("Sec-Fetch-Mode", b"no-cors")], b"");
        assert_eq!(status, 403, "{text}");
        assert!(!text.contains("secret"));
    }

    // 3. DNS rebinding: the attacker's name resolves to 127.0.0.1, so the
    // page is same-origin with itself, but the Host says whose name it is.
    let port = addr.rsplit(':').next().unwrap();
    for forged in [format!("attacker.example:{port}"), "localhost:1".to_string(), format!("127.0.0.1.nip.io:{port}")] {
        let (status, _, text) = raw_http(&addr, "GET", "/api/data/note", &[("Host", forged.as_bytes())], b"");
        assert_eq!(status, 421, "Host {forged}: {text}");
        assert!(!text.contains("secret"), "Host {forged} read data: {text}");
        let (status, _, _) = raw_http(
            &addr,
            "POST",
            "/api/data/note",
            &[("Host", forged.as_bytes()), ("Origin", format!("http://{forged}").as_bytes()), ("Content-Type", b"application/json")],
            record,
        );
        assert_eq!(status, 421);
    }
    assert_eq!(records(&env, "note"), 1, "nothing was written");
    assert_eq!(env.run(&["table", "list", "--json"]).ok().json().as_array().unwrap().len(), 1);
    assert_eq!(env.run(&["plugin", "list", "--json"]).ok().json(), json!([]));

    // The dashboard's own origin, by address or by name, and the allowed origin work.
    let localhost = format!("localhost:{port}");
    let own = [
        (addr.clone(), own_origin.clone(), "same-origin"),
        (localhost.clone(), format!("http://{localhost}"), "same-origin"),
        (addr.clone(), "http://app.example:3000".to_string(), "cross-site"),
    ];
    for (host, origin, site) in &own {
        let headers: [(&str, &[u8]); 4] =
            [("Host", host.as_bytes()), ("Origin", origin.as_bytes()), ("Sec-Fetch-Site", site.as_bytes()), ("Content-Type", b"application/json")];
        let (status, _, text) = raw_http(&addr, "POST", "/api/data/note", &headers, br#"{"text":"mine"}"#);
        assert_eq!(status, 201, "{origin} via {host}: {text}");
    }
    let (status, _, text) = raw_http(&addr, "GET", "/api/data/note", &[("Host", host), ("Sec-Fetch-Site", b"same-origin")], b"");
    assert_eq!((status, body(&text)["value"].as_array().unwrap().len()), (200, 4));
    // A link from another site opens the dashboard (a navigation shows it only to the user).
    let (status, _, _) = raw_http(&addr, "GET", "/", &[("Host", host), ("Sec-Fetch-Site", b"cross-site"), ("Sec-Fetch-Mode", b"navigate")], b"");
    assert_eq!(status, 200);
}

/// With a token the server may sit behind a proxy under any name, and a
/// request without the token still reads nothing.
#[test]
fn with_a_token_any_host_name_is_served_to_token_holders() {
    let env = Env::new();
    env.run(&["table", "create", "note", "--column", "text:text"]).ok();
    let s = Server::start(&env, &[]);
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = raw_http(s.addr(), "GET", "/api/data/note", &[("Host", b"weir.internal.example"), ("Authorization", bearer.as_bytes())], b"");
    assert_eq!(status, 200);
    let (status, _, _) = raw_http(s.addr(), "GET", "/api/data/note", &[("Host", b"weir.internal.example")], b"");
    assert_eq!(status, 401);
    // Origins are still checked: a token in a page's script does not make another site the server's.
    let headers: [(&str, &[u8]); 4] = [
        ("Host", b"weir.internal.example"),
        ("Authorization", bearer.as_bytes()),
        ("Origin", b"https://attacker.example"),
        ("Content-Type", b"application/json"),
    ];
    let (status, _, _) = raw_http(s.addr(), "POST", "/api/data/note", &headers, b"{}");
    assert_eq!(status, 403);
}

/// A finished job, for tests that must show it survives.
fn one_finished_job(env: &Env) -> String {
    env.add_example("notify");
    let id = env.run(&["background", "submit", "notify", "--input", "{}", "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(env.run(&["jobs", "show", &id, "--json"]).ok().json()["status"], "Succeeded");
    id
}

#[test]
fn durations_and_counts_out_of_range_are_usage_errors_never_wraps() {
    let env = Env::new();
    let job = one_finished_job(&env);
    let usage = |args: &[&str], option: &str, range: &str| {
        let r = env.run(args);
        assert_eq!(r.code, 2, "{args:?} must be a usage error; stderr: {}", r.stderr);
        assert!(r.stderr.contains(option) && r.stderr.contains(range), "{args:?}: the error names {option} and {range}: {}", r.stderr);
    };
    usage(&["jobs", "cleanup", "--older-than", "300000000y"], "--older-than", "100years");
    for option in ["--keep-succeeded", "--keep-failed", "--end-abandoned-after"] {
        usage(&["work", "--until-idle", option, "300000000y"], option, "100years");
        usage(&["serve", "--listen", "127.0.0.1:0", option, "300000000y"], option, "100years");
    }
    usage(&["work", "--until-idle", "--retention-every", "0s"], "--retention-every", "1s");
    // The job that a wrapped age would have deleted is still there.
    assert_eq!(env.run(&["jobs", "show", &job, "--json"]).ok().json()["status"], "Succeeded");
    // The largest age allowed deletes nothing recent; 0s deletes it.
    assert_eq!(env.run(&["jobs", "cleanup", "--older-than", "100y", "--json"]).ok().json()["deleted"], 0);
    assert_eq!(env.run(&["jobs", "cleanup", "--older-than", "0s", "--json"]).ok().json()["deleted"], 1);

    for (args, option, range) in [
        (&["jobs", "list", "--top", "0"][..], "--top", "1..=5000"),
        (&["jobs", "list", "--top", "18446744073709551615"], "--top", "1..=5000"),
        (&["record", "query", "x", "--top", "5001"], "--top", "1..=5000"),
        (&["step", "add", "s", "--plugin", "p", "--schedule", "0 * * * * *", "--fuel", "0"], "--fuel", "1..="),
        (&["step", "add", "s", "--plugin", "p", "--schedule", "0 * * * * *", "--backoff-ms", "18446744073709551615"], "--backoff-ms", "0..=86400000"),
        (&["step", "add", "s", "--plugin", "p", "--schedule", "0 * * * * *", "--max-attempts", "0"], "--max-attempts", "1..=1000"),
        (&["background", "submit", "notify", "--input", "{}", "--timeout-ms", "0"], "--timeout-ms", "1..=86400000"),
        (&["serve", "--max-body-bytes", "18446744073709551615"], "--max-body-bytes", "1024..="),
        (&["serve", "--shutdown-grace-ms", "18446744073709551615"], "--shutdown-grace-ms", "0..=3600000"),
    ] {
        usage(args, option, range);
    }
    // Over HTTP the same ranges hold (no CLI parser there).
    let s = Server::start(&env, &[]);
    let step = json!({"name": "s", "plugin": "notify", "schedule": "0 * * * * *", "mode": "async", "rank": 1, "filter": [], "config": null,
        "pre_image": false, "post_image": false, "grants": [], "backoff_ms": u64::MAX});
    let r = s.post("/api/steps", &step);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("--backoff-ms") && r.text.contains("out of range"), "{}", r.text);
    let r = s.post("/api/background", &json!({"plugin": "notify", "max_attempts": 4_000_000_000u64}));
    assert_eq!(r.status, 400, "{}", r.text);
}

#[test]
fn worker_options_are_bounded() {
    let env = Env::new();
    for lease in ["0", "1", "999", "3600001", "18446744073709551615"] {
        for cmd in [&["work", "--until-idle"][..], &["serve", "--listen", "127.0.0.1:0"]] {
            let mut args = cmd.to_vec();
            args.extend(["--lease-ms", lease]);
            let r = env.run(&args);
            assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
            assert!(r.stderr.contains("--lease-ms") && r.stderr.contains("1000..=3600000"), "{}", r.stderr);
        }
    }
    for workers in ["0", "1025", "18446744073709551615"] {
        for cmd in [&["work", "--until-idle"][..], &["serve", "--listen", "127.0.0.1:0"]] {
            let mut args = cmd.to_vec();
            args.extend(["--workers", workers]);
            let r = env.run(&args);
            assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
            assert!(r.stderr.contains("--workers") && r.stderr.contains("1..=1024"), "{}", r.stderr);
            assert!(!r.stderr.contains("crashed"));
        }
    }
    // The shortest lease allowed runs every job once and successfully.
    env.add_example("notify");
    for _ in 0..20 {
        env.run(&["background", "submit", "notify", "--input", "{}"]).ok();
    }
    let stats = env.run(&["work", "--until-idle", "--lease-ms", "1000", "--workers", "1024", "--json"]).ok().json();
    assert_eq!((stats["attempts"].as_u64(), stats["succeeded"].as_u64(), stats["leases_expired"].as_u64()), (Some(20), Some(20), Some(0)), "{stats}");
    let done = env.run(&["jobs", "list", "--filter", "statuscode eq 30", "--json"]).ok().json();
    assert_eq!(done.as_array().unwrap().len(), 20);
    // The library refuses the same options (for embedders).
    let opts = weir::worker::WorkOptions { lease_ms: 1, ..Default::default() };
    assert!(opts.check().unwrap_err().to_string().contains("lease_ms"));
    let opts = weir::worker::WorkOptions { workers: usize::MAX, ..Default::default() };
    assert!(opts.check().is_err());
}

/// A table `slow` whose creates run a step that spins to the operation's 2 s
/// budget inside the write transaction.
fn spinning_creates() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "slow", "--column", "n:integer"]).ok();
    env.add_example("spin-forever");
    let step = "spin --plugin spin-forever --message create --table slow --stage pre-operation --fuel 100000000000";
    env.run(&[&["step", "add"][..], &step.split(' ').collect::<Vec<_>>()].concat()).ok();
    env
}

/// Steps that spin to the operation budget while holding the write lock, and
/// creates on an unrelated table at the same time: every create ends within
/// one budget plus the margin, either stored or refused as busy (503 with
/// Retry-After over HTTP, exit 1 naming the cause in the CLI), never a raw
/// "database is locked" 500.
#[test]
fn a_sync_step_holding_the_store_makes_others_wait_a_bounded_time() {
    let env = spinning_creates();
    env.run(&["table", "create", "fast", "--column", "n:integer"]).ok();
    let s = std::sync::Arc::new(Server::start(&env, &[]));
    // Six spinners hold the lock for 2 s each, one after another: 12 s of
    // queue, more than SQLite's old 10 s busy timeout.
    let spinners: Vec<_> = (0..6)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.post("/api/data/slow", &json!({"n": 1})))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let fast: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 400));
                let started = Instant::now();
                let r = s.post("/api/data/fast", &json!({"n": i}));
                (r, started.elapsed())
            })
        })
        .collect();
    let cli = {
        let mut c = env.command();
        c.args(["record", "create", "fast", r#"{"n":100}"#]);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            c.output().unwrap()
        })
    };
    let mut worst = Duration::ZERO;
    let (mut stored, mut busy) = (0, 0);
    for h in fast {
        let (r, took) = h.join().unwrap();
        worst = worst.max(took);
        match r.status {
            201 => stored += 1,
            503 => {
                busy += 1;
                assert_eq!(r.body["code"], "busy", "{}", r.text);
                assert!(r.text.contains("try again"), "{}", r.text);
            }
            other => panic!("a create on an unrelated table got {other}: {}", r.text),
        }
    }
    for h in spinners {
        let r = h.join().unwrap();
        assert!(r.status == 422 || r.status == 503, "a spinner got {}: {}", r.status, r.text);
        if r.status == 422 {
            assert_eq!(r.body["code"], "timed_out", "{}", r.text);
        }
    }
    let out = cli.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(0) || (out.status.code() == Some(1) && stderr.contains("busy")), "CLI: {:?} {stderr}", out.status);
    assert!(!stderr.contains("database error"), "{stderr}");
    // The retry header, on the wire.
    eprintln!("creates on an unrelated table: {stored} stored, {busy} busy; the longest waited {worst:?}");
    assert_eq!(records(&env, "fast"), stored + usize::from(out.status.code() == Some(0)));
    assert_eq!(records(&env, "slow"), 0);
}

/// The 503's `Retry-After`, seen on the wire.
#[test]
fn busy_answers_say_when_to_retry() {
    let env = spinning_creates();
    let s = Server::start_open(&env, &[]);
    let addr = s.addr().to_string();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                raw_http(&addr, "POST", "/api/data/slow", &[("Host", addr.as_bytes()), ("Content-Type", b"application/json")], b"{\"n\":1}")
            })
        })
        .collect();
    let answers: Vec<(u16, String, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Four 2 s holds in a row: the fourth cannot wait 6 s.
    let busy: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 503).collect();
    assert!(!busy.is_empty(), "{answers:?}");
    for (_, head, _) in busy {
        assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    }
}

/// stderr is /dev/full: log lines are lost, answers are not.
#[test]
fn an_unwritable_stderr_loses_log_lines_not_answers() {
    let env = Env::new();
    env.run(&["table", "create", "note", "--column", "text:text"]).ok();
    env.add_example("always-fails");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let mut cmd = env.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--workers", "2"]).env("WEIR_LOG", "trace").stdout(Stdio::piped()).stderr(full());
    let s = Server::spawn(&mut cmd);
    for i in 0..20 {
        assert_eq!(s.post("/api/data/note", &json!({"text": format!("n{i}")})).status, 201);
        assert_eq!(s.post("/api/data/nope", &json!({})).status, 404);
        assert_eq!(s.post("/api/data/note", &json!({"nope": 1})).status, 400);
    }
    // A failing job logs warnings from the worker pool.
    assert_eq!(s.post("/api/background", &json!({"plugin": "always-fails", "input": {}, "max_attempts": 1})).status, 202);
    crate::common::wait_for("the job to fail", || s.get("/api/jobs?$filter=statuscode%20eq%2031").body["value"].as_array().is_some_and(|v| v.len() == 1));
    let metrics = s.get("/metrics").text;
    let dropped: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("weir_log_write_failures_total ")).and_then(|n| n.trim().parse().ok()).expect("the metric is exported");
    assert!(dropped > 0, "{metrics}");
    assert_eq!(records(&env, "note"), 20);

    // `weir work` and a failing command, likewise.
    env.run(&["background", "submit", "always-fails", "--input", "{}", "--max-attempts", "1"]).ok();
    let work = env.command().args(["work", "--until-idle"]).env("WEIR_LOG", "trace").stderr(full()).output().unwrap();
    assert_eq!(work.status.code(), Some(0), "{work:?}");
    let fails = env.command().args(["record", "create", "nope", "{}"]).stderr(full()).output().unwrap();
    assert_eq!(fails.status.code(), Some(1), "{fails:?}");
}

#[test]
fn listings_are_capped_and_paged() {
    let env = Env::new();
    env.add_example("notify");
    {
        let weir = weir::Weir::open(env.db()).unwrap();
        let req = weir::Background {
            plugin: "notify".into(),
            input: json!({}),
            grants: vec![],
            allow_http: vec![],
            secrets: vec![],
            may_start: vec![],
            callback_url: None,
            at: Some(weir::time::MAX_MS),
            owner: "system".into(),
            asked_by: None,
            max_attempts: None,
            timeout_ms: None,
            queue: None,
            priority: None,
            callback_hosts: Default::default(),
        };
        for _ in 0..5_001 {
            weir.submit_background(&req).unwrap();
        }
    }
    let s = Server::start(&env, &[]);
    let first = s.get("/api/jobs?$top=1000000");
    assert_eq!(first.status, 200);
    assert_eq!(first.body["value"].as_array().unwrap().len(), 5_000);
    let next = first.body["next"].as_str().expect("a full page links the next").to_string();
    assert_eq!(next, "/api/jobs?$top=5000&$skip=5000");
    let second = s.get(&next);
    assert_eq!(second.body["value"].as_array().unwrap().len(), 1);
    assert!(second.body.get("next").is_none());
    let ids: std::collections::HashSet<&str> =
        first.body["value"].as_array().unwrap().iter().chain(second.body["value"].as_array().unwrap()).map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5_001, "pages neither overlap nor leave gaps");
    let page = env.run(&["jobs", "list", "--top", "2", "--skip", "5000", "--json"]).ok().json();
    assert_eq!(page.as_array().unwrap().len(), 1);
}

#[test]
fn hypers_own_refusals_are_json_and_short_bodies_time_out() {
    let env = Env::new();
    env.run(&["table", "create", "note", "--column", "text:text"]).ok();
    let s = Server::start_open(&env, &["--body-timeout-ms", "500"]);
    let addr = s.addr().to_string();
    let host: (&str, &[u8]) = ("Host", addr.as_bytes());

    let long = format!("/api/data/note?$filter={}", "a".repeat(70_000));
    let (status, head, text) = raw_http(&addr, "GET", &long, &[host], b"");
    assert_eq!(status, 414, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    assert!(body(&text)["error"].as_str().unwrap().contains("URL is too long"), "{text}");

    let many: Vec<(String, Vec<u8>)> = (0..150).map(|i| (format!("X-Filler-{i}"), b"x".to_vec())).collect();
    let mut headers: Vec<(&str, &[u8])> = vec![host];
    headers.extend(many.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    let (status, head, text) = raw_http(&addr, "GET", "/api/data/note", &headers, b"");
    assert_eq!(status, 431, "{head}");
    assert!(body(&text)["error"].as_str().unwrap().contains("headers"), "{text}");

    // Content-Length: 100, 10 bytes sent, then silence: answered and closed,
    // not a connection held open for as long as the client likes.
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "POST /api/data/note HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"text\":1").unwrap();
    let mut reply = String::new();
    let started = Instant::now();
    c.read_to_string(&mut reply).expect("the server closes the connection");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(reply.contains("stopped arriving"), "{reply}");
    assert_eq!(records(&env, "note"), 0);
}

#[test]
fn a_user_header_that_is_not_ascii_is_refused() {
    let env = Env::new();
    env.run(&["table", "create", "note", "--column", "text:text"]).ok();
    env.add_example("notify");
    let s = Server::start_open(&env, &[]);
    let addr = s.addr().to_string();
    for user in [&b"\xff\xfe"[..], b"caf\xc3\xa9", b""] {
        let headers: [(&str, &[u8]); 3] = [("Host", addr.as_bytes()), ("Content-Type", b"application/json"), ("X-Weir-User", user)];
        let (status, _, text) = raw_http(&addr, "POST", "/api/data/note", &headers, br#"{"text":"x"}"#);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("X-Weir-User"), "{text}");
        let (status, _, _) = raw_http(&addr, "POST", "/api/background", &headers, br#"{"plugin":"notify"}"#);
        assert_eq!(status, 400);
    }
    assert_eq!(records(&env, "note"), 0);
    assert_eq!(env.run(&["jobs", "list", "--json"]).ok().json(), json!([]));
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let env = Env::new();
    env.run(&["table", "create", "order", "--column", "text:text"]).ok();
    {
        let weir = weir::Weir::open(env.db()).unwrap();
        for i in 0..2_000 {
            weir.pipeline().create("system", "order", &json!({"text": format!("order number {i} with some words")})).unwrap();
        }
    }
    // `weir record query order | head -1`: more output than a pipe holds.
    let mut child = env.command().args(["record", "query", "order"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "[");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
