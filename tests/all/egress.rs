//! Workflows reach the outside world only where granted: outbound HTTP
//! (`wasi:http`) to `--allow-http` hosts under the egress policy, secrets
//! granted with `--secret` (sealed at rest, shown nowhere), and signed
//! callbacks. Every server here is a real one on loopback, granted by its
//! literal address.

use std::process::Stdio;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::common::{Answer, Env, Receiver, Server, TOKEN, wait_for};

/// The service's secret key in these tests (64 hex digits).
const KEY: &str = "5f1c0de5a11ce0ff1ce5eed5b0a710ad5f1c0de5a11ce0ff1ce5eed5b0a710ad";
/// The secret's value: it must reach the receiver and nothing else.
const HOOK_TOKEN: &str = "tok-4aa7c1-do-not-leak";

fn set_secret(env: &Env, name: &str, value: &str) {
    use std::io::Write;
    let mut child = env.command().args(["secret", "set", name]).env("WEIR_SECRET_KEY", KEY).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "secret set failed: {out:?}");
}

fn job(env: &Env, id: &str) -> Value {
    env.run(&["jobs", "show", id, "--json"]).ok().json()
}

fn all_jobs(env: &Env) -> Vec<Value> {
    env.run(&["jobs", "list", "--json"]).ok().json().as_array().unwrap().clone()
}

fn finished(j: &Value) -> bool {
    matches!(j["status"].as_str(), Some("Succeeded" | "Failed" | "Canceled"))
}

fn trace_text(j: &Value) -> String {
    j["history"].as_array().unwrap().iter().map(|h| h["trace"].to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_granted_step_delivers_the_record_with_its_bearer_token_and_the_secret_shows_nowhere() {
    let env = Env::new();
    env.run(&["table", "create", "account", "--column", "name:text"]).ok();
    env.run(&["table", "create", "lead", "--column", "name:text"]).ok();
    env.add_example("notify");
    let hook = Receiver::start(|_, _| Answer { body: b"thanks".to_vec(), ..Answer::status("200 OK") });
    set_secret(&env, "hook", HOOK_TOKEN);
    let grant = format!("127.0.0.1:{}", hook.port);
    let config = json!({"url": hook.url("/hook"), "secret": "hook"}).to_string();
    let step = |name: &str, table: &str, extra: &[&str]| {
        let mut args = vec!["step", "add", name, "--plugin", "notify", "--message", "create", "--table", table, "--stage", "post-operation"];
        args.extend_from_slice(&["--mode", "async", "--secret", "hook", "--config", &config, "--trace", "all"]);
        args.extend_from_slice(extra);
        env.run(&args).ok();
    };
    step("deliver", "account", &["--allow-http", &grant]);
    // The same step without the grant.
    step("ungranted", "lead", &[]);
    let acme = env.run(&["record", "create", "account", r#"{"name":"Acme"}"#]).ok().json();
    env.run(&["record", "create", "lead", r#"{"name":"Bob"}"#]).ok();

    let log = std::fs::File::create(env.dir.path().join("serve.log")).unwrap();
    let s = Server::spawn(
        env.command()
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--workers", "2"])
            .env("WEIR_SECRET_KEY", KEY)
            .env("WEIR_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log),
    );
    // The same grant through the HTTP API, on a background operation.
    let submitted = s.post("/api/background", &json!({"plugin": "notify", "input": {"url": hook.url("/api-hook")}, "allow_http": [grant]}));
    assert_eq!(submitted.status, 202, "{}", submitted.text);
    wait_for("the three jobs to finish", || {
        let jobs = all_jobs(&env);
        jobs.len() == 3 && jobs.iter().all(finished)
    });

    let seen = hook.seen();
    let hooked: Vec<_> = seen.iter().filter(|r| r.path == "/hook").collect();
    assert_eq!(hooked.len(), 1, "only the granted step reached the receiver: {seen:?}");
    let delivered = hooked[0];
    assert_eq!(delivered.method, "POST");
    assert_eq!(delivered.header("authorization"), Some(format!("Bearer {HOOK_TOKEN}").as_str()));
    assert_eq!(delivered.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!((body["table"].as_str(), body["id"].as_str(), body["fields"]["name"].as_str()), (Some("account"), acme["id"].as_str(), Some("Acme")));
    let api_hook: Vec<_> = seen.iter().filter(|r| r.path == "/api-hook").collect();
    assert_eq!(api_hook.len(), 1, "the background operation granted through the API: {seen:?}");
    assert_eq!(api_hook[0].header("authorization"), None, "it was granted no secret");

    let jobs = all_jobs(&env);
    let by_step = |name: &str| jobs.iter().find(|j| j["step"] == name).map(|j| job(&env, j["id"].as_str().unwrap())).unwrap();
    let ok = by_step("deliver");
    assert_eq!(ok["status"], "Succeeded", "{ok}");
    assert_eq!(ok["result"]["status"], 200);
    assert!(trace_text(&ok).contains(&format!("http POST {grant} -> 200")), "{ok}");
    let denied = by_step("ungranted");
    assert_eq!((denied["status"].as_str(), denied["attempts"].as_u64()), (Some("Failed"), Some(1)), "denied is permanent: {denied}");
    let error = denied["error"].as_str().unwrap();
    assert!(error.contains("denied") && error.contains(&hook.url("/hook")), "{error}");
    let why = trace_text(&denied);
    assert!(why.contains(&format!("{grant} is not granted (the step's --allow-http grants: none)")), "{why}");

    let metrics = s.get("/metrics").text;
    let line = |outcome: &str, host: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("weir_http_requests_total{") && l.contains(&format!("outcome=\"{outcome}\"")) && l.contains(host))
            .map(str::to_string)
    };
    assert!(line("2xx", &format!("host=\"{grant}\"")).is_some_and(|l| l.ends_with(" 2")), "two granted requests: {metrics}");
    assert!(line("denied", "host=\"(not granted)\"").is_some_and(|l| l.ends_with(" 1")), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("weir_http_bytes_total{") && l.contains("direction=\"in\"") && l.ends_with(" 12")),
        "6 bytes per answer: {metrics}"
    );

    // The secret's value: in no output, listing, trace, log, metric or file.
    let mut everything = vec![metrics];
    for path in ["/api/jobs", "/api/steps", "/api/traces", "/api/plugins", "/"] {
        everything.push(s.get(path).text);
    }
    for j in &jobs {
        everything.push(s.get(&format!("/api/jobs/{}", j["id"].as_str().unwrap())).text);
    }
    drop(s);
    everything.push(std::fs::read_to_string(env.dir.path().join("serve.log")).unwrap());
    for args in [&["step", "list", "--json"][..], &["secret", "list", "--json"], &["trace", "list", "--json"], &["jobs", "list", "--json"], &["step", "list"]] {
        everything.push(env.run(args).ok().stdout);
    }
    for file in ["weir.db", "weir.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.dir.path().join(file)) {
            everything.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    for (i, text) in everything.iter().enumerate() {
        assert!(!text.contains(HOOK_TOKEN), "the secret leaked into output {i}: {text}");
    }
    let secrets = env.run(&["secret", "list", "--json"]).ok().json();
    assert_eq!(secrets[0]["name"], "hook");
    let steps = env.run(&["step", "list", "--json"]).ok().json();
    let deliver = steps.as_array().unwrap().iter().find(|s| s["name"] == "deliver").unwrap();
    assert_eq!((deliver["allow_http"].clone(), deliver["secrets"].clone()), (json!([grant]), json!(["hook"])));
    // Nor is the key that seals it.
    let stored = if env.is_postgres() {
        // Every row of every table weir keeps, as text.
        let conn = env.sql();
        let tables: Vec<String> = conn
            .prepare("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables
            .iter()
            .map(|t| conn.query_row(&format!("SELECT COALESCE(string_agg(t::text, ' '), '') FROM \"{t}\" t"), [], |r| r.get::<_, String>(0)).unwrap())
            .collect()
    } else {
        String::from_utf8_lossy(&std::fs::read(env.db()).unwrap()).into_owned()
    };
    assert!(stored.contains("deliver") && !stored.contains(KEY), "the stored text is read, and the key is not in it");
}

#[test]
fn the_policy_refuses_private_names_redirects_oversized_and_slow_answers_and_caps_requests() {
    let env = Env::new();
    env.add_example("notify");
    let server = Receiver::start(|r, _| match r.path.as_str() {
        "/redirect" => Answer { headers: vec![("location", "/hook".into())], ..Answer::status("302 Found") },
        "/big" => Answer { body: vec![b'x'; 256 << 10], length: false, ..Answer::status("200 OK") },
        "/slow" => Answer { delay: Duration::from_secs(4), ..Answer::status("200 OK") },
        "/fail" => Answer::status("500 Internal Server Error"),
        "/forbidden" => Answer::status("403 Forbidden"),
        _ => Answer::status("200 OK"),
    });
    let literal = format!("127.0.0.1:{}", server.port);
    let named = format!("localhost:{}", server.port);
    let submit = |input: Value, grant: &str, attempts: &str| {
        let input = input.to_string();
        let args = ["background", "submit", "notify", "--input", &input, "--allow-http", grant, "--max-attempts", attempts, "--json"];
        env.run(&args).ok().json()["id"].as_str().unwrap().to_string()
    };
    let private = submit(json!({"url": format!("http://{named}/hook")}), &named, "1");
    let redirect = submit(json!({"url": server.url("/redirect")}), &literal, "1");
    let big = submit(json!({"url": server.url("/big")}), &literal, "1");
    let slow = submit(json!({"url": server.url("/slow")}), &literal, "1");
    let capped = submit(json!({"url": server.url("/hook"), "count": 3}), &literal, "1");
    let failing = submit(json!({"url": server.url("/fail")}), &literal, "2");
    let forbidden = submit(json!({"url": server.url("/forbidden")}), &literal, "3");
    let args = ["work", "--until-idle", "--http-timeout", "1s", "--http-max-response-bytes", "65536", "--http-max-requests", "2"];
    env.run(&args).ok();

    let failed = |id: &str, attempts: u64, error: &[&str], trace: &str| {
        let j = job(&env, id);
        assert_eq!((j["status"].as_str(), j["attempts"].as_u64()), (Some("Failed"), Some(attempts)), "{j}");
        let e = j["error"].as_str().unwrap();
        assert!(error.iter().all(|w| e.contains(w)), "{error:?} not all in {e}; the trace: {}", trace_text(&j));
        let t = trace_text(&j);
        assert!(t.contains(trace), "{trace:?} not in the trace {t}");
    };
    failed(&private, 1, &["destination address prohibited"], "an address of the host's own network");
    failed(&redirect, 1, &["answered 302", "redirects are not followed"], &format!("http POST {literal} -> 302"));
    failed(&big, 1, &["response body size exceeds limit"], "passed the limit of 65536 bytes");
    failed(&slow, 1, &["response timeout"], &format!("http POST {literal} -> timeout"));
    failed(&capped, 1, &["denied"], "already made 2 requests, its limit");
    failed(&failing, 2, &["answered 500"], &format!("http POST {literal} -> 500"));
    failed(&forbidden, 1, &["answered 403"], &format!("http POST {literal} -> 403"));

    let count = |path: &str| server.seen().iter().filter(|r| r.path == path).count();
    assert_eq!(count("/hook"), 2, "the capped job's first two requests, and no redirect or private name reached /hook");
    assert_eq!((count("/redirect"), count("/big"), count("/slow"), count("/fail"), count("/forbidden")), (1, 1, 1, 2, 1), "a 5xx is retried, a 4xx is not");
    // Each request carries the job's stable key: a retried attempt sends the same one.
    let keys: Vec<String> = server.seen().iter().filter(|r| r.path == "/fail").map(|r| r.header("idempotency-key").unwrap_or_default().to_string()).collect();
    assert_eq!(keys, vec![format!("{failing}-1"), format!("{failing}-1")], "the retry sent the first attempt's key");
    let capped_keys: Vec<String> =
        server.seen().iter().filter(|r| r.path == "/hook").map(|r| r.header("idempotency-key").unwrap_or_default().to_string()).collect();
    assert_eq!(capped_keys, vec![format!("{capped}-1"), format!("{capped}-2")]);
}

#[test]
fn outbound_http_and_secrets_are_granted_to_async_work_only_and_grants_are_checked() {
    let env = Env::new();
    env.run(&["table", "create", "account", "--column", "name:text"]).ok();
    env.add_example("credit-check");
    env.add_example("notify");
    let sync = ["step", "add", "s", "--plugin", "credit-check", "--message", "create", "--table", "account", "--stage", "pre-operation"];
    let refused = env.run(&[&sync[..], &["--allow-http", "api.example.com"]].concat()).fails();
    assert!(refused.stderr.contains("a sync step cannot be granted outbound HTTP") && refused.stderr.contains("--mode async"), "{}", refused.stderr);
    let refused = env.run(&[&sync[..], &["--secret", "hook"]].concat()).fails();
    assert!(refused.stderr.contains("async steps only"), "{}", refused.stderr);
    let asynchronous = ["step", "add", "a", "--plugin", "notify", "--message", "create", "--table", "account", "--stage", "post-operation", "--mode", "async"];
    for (bad, why) in [("*", "never every host"), ("http://api.example.com", "not a URL"), ("api.example.com:99999", "the port"), ("*.com", "wildcard")] {
        let out = env.run(&[&asynchronous[..], &["--allow-http", bad]].concat()).fails();
        assert!(out.stderr.contains(why), "{bad}: {}", out.stderr);
    }
    let out = env.run(&["background", "submit", "notify", "--input", "{}", "--allow-http", "*"]).fails();
    assert!(out.stderr.contains("never every host"), "{}", out.stderr);
    // Granted, changed in place, removed.
    env.run(&[&asynchronous[..], &["--allow-http", "API.example.com:8443", "--allow-http", "*.hooks.example.com"]].concat()).ok();
    let shown = env.run(&["step", "list", "--json"]).ok().json();
    assert_eq!(shown[0]["allow_http"], json!(["api.example.com:8443", "*.hooks.example.com"]));
    let updated = env.run(&["step", "update", "a", "--allow-http", "127.0.0.1:9", "--secret", "hook", "--json"]).ok().json();
    assert_eq!((updated["allow_http"].clone(), updated["secrets"].clone()), (json!(["127.0.0.1:9"]), json!(["hook"])));
    let cleared = env.run(&["step", "update", "a", "--no-http", "--no-secrets", "--json"]).ok().json();
    assert!(cleared.get("allow_http").is_none() && cleared.get("secrets").is_none(), "{cleared}");
    // A secret needs the key; its value comes from stdin only.
    let out = env.run(&["secret", "set", "hook"]).fails();
    assert!(out.stderr.contains("WEIR_SECRET_KEY") && out.stderr.contains("openssl rand -hex 32"), "{}", out.stderr);
    let out = env.command().args(["secret", "set", "hook", "the-value"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no value as an argument");
    set_secret(&env, "hook", "v1");
    // The key may come from a file instead.
    let file = env.write("weir.key", format!("{KEY}\n").as_bytes());
    let mut child = env.command().args(["secret", "set", "second"]).env("WEIR_SECRET_KEY_FILE", &file).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"v2").unwrap();
    assert!(child.wait().unwrap().success(), "the key file opens the same secrets");
    assert_eq!(env.run(&["secret", "list", "--json"]).ok().json().as_array().unwrap().len(), 2);
    let wrong = env.command().args(["secret", "set", "other"]).env("WEIR_SECRET_KEY", "ab".repeat(32)).stdin(Stdio::null()).output().unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("differs from the one"), "{wrong:?}");
    env.run(&["secret", "remove", "hook"]).ok();
    env.run(&["secret", "remove", "second"]).ok();
    assert!(env.run(&["secret", "remove", "second"]).fails().stderr.contains("no secret named second"));
    assert!(env.run(&["secret", "list"]).ok().stdout.contains("no secrets"));
}

#[test]
fn a_hostile_guest_s_leaks_of_a_granted_secret_are_redacted() {
    let env = Env::new();
    env.add_example("escape-artist");
    set_secret(&env, "hook", HOOK_TOKEN);
    let listener = Receiver::start(|_, _| Answer::status("200 OK"));
    let input = json!({"port": listener.port, "secret": "hook", "table": "nothing"}).to_string();
    let id = env.run(&["background", "submit", "escape-artist", "--input", &input, "--secret", "hook", "--max-attempts", "1", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.command().args(["work", "--until-idle"]).env("WEIR_SECRET_KEY", KEY).env("WEIR_LOG", "debug").output().unwrap();
    assert!(out.status.success());
    let j = job(&env, &id);
    let text = j.to_string();
    assert_eq!(j["status"], "Failed", "{j}");
    // It read the secret (it was granted) and put it in its log, stdout,
    // stderr and error: each shows the name, never the value.
    assert!(!text.contains(HOOK_TOKEN), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(HOOK_TOKEN));
    let trace = trace_text(&j);
    for line in ["ESCAPED: secrets.get hook: the value is [secret hook]", "stdout leak [secret hook]", "stderr leak [secret hook]"] {
        assert!(trace.contains(line), "{line:?} not in {trace}");
    }
    // Not granted the host, its HTTP request was refused before any connection.
    let http = format!("blocked: http.get 127.0.0.1:{}: ErrorCode::HttpRequestDenied", listener.port);
    assert!(trace.contains(&http) && trace.contains(&format!("127.0.0.1:{} is not granted", listener.port)), "{trace}");
    assert!(listener.seen().is_empty());
}

#[test]
fn callbacks_are_signed_and_their_delivery_shows_on_the_job() {
    let env = Env::new();
    env.add_example("notify");
    let receiver = Receiver::start(|_, _| Answer::status("204 No Content"));
    let id = env.run(&["background", "submit", "notify", "--input", "{}", "--callback", &receiver.url("/done"), "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.command().args(["work", "--until-idle"]).env("WEIR_CALLBACK_SECRET", "whsec-test").output().unwrap();
    wait_for("the callback", || !receiver.seen().is_empty());
    let got = &receiver.seen()[0];
    let signature = got.header("weir-signature").expect("a signed callback");
    let (t, v1) = signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let now = weir::time::now_ms() / 1000;
    assert!((now - t.parse::<i64>().unwrap()).abs() < 60, "t is the time of sending: {signature}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec-test").unwrap();
    mac.update(format!("{t}.{}", got.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).expect("the signature verifies with the shared secret");
    let mut tampered = Hmac::<sha2::Sha256>::new_from_slice(b"whsec-test").unwrap();
    tampered.update(format!("{t}.{}", got.body.replace("Succeeded", "Failed")).as_bytes());
    assert!(tampered.verify_slice(&hex::decode(v1).unwrap()).is_err());
    let shown = job(&env, &id);
    let delivery = &shown["callback"];
    assert_eq!(
        (delivery["state"].as_str(), delivery["attempts"].as_i64(), delivery["last_status"].as_i64()),
        (Some("delivered"), Some(1), Some(204)),
        "{shown}"
    );
    assert!(delivery["delivered_at"].is_string() && delivery["last_error"].is_null());
    let listed = env.run(&["jobs", "list", "--json", "--filter", &format!("id eq '{id}'")]).ok().stdout;
    assert!(!listed.contains("whsec-test"));
}
