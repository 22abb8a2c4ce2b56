//! The claims of SECURITY.md, each proven here (or in the test it names).
//!
//! A plug-in is untrusted code: it reaches no file, no environment variable, no
//! argument, no stdin, no network and no table its step was not granted; it
//! keeps no state between calls; it can import nothing weir does not provide;
//! what it writes is checked like any caller's input. An API caller without the
//! token reaches nothing but the health check.

use std::net::TcpListener;
use std::process::Output;

use crate::common::{Env, Server, TOKEN, component_importing, path};
use serde_json::{Value, json};

const SECRET_VALUE: &str = "hunter2-the-environment-secret";
const SECRET_FILE_TEXT: &str = "TOP-SECRET-file-contents-4711";

/// A sandbox to escape from: a `thing` table the step runs on, a `secret`
/// table it is not granted, a secret file, and a loopback listener.
struct Target {
    env: Env,
    file: std::path::PathBuf,
    listener: TcpListener,
    config: String,
}

fn target() -> Target {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    env.run(&["table", "create", "secret", "--column", "name:text"]).ok();
    env.run(&["record", "create", "secret", r#"{"name":"the crown jewels"}"#]).ok();
    env.add_example("escape-artist");
    let file = env.write("secret.txt", SECRET_FILE_TEXT.as_bytes());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = json!({"file": path(&file), "env": "WEIR_TEST_SECRET", "port": port, "table": "secret"}).to_string();
    Target { env, file, listener, config }
}

impl Target {
    /// Runs weir with a secret in its environment, in the sandbox's directory.
    fn run(&self, args: &[&str]) -> Output {
        self.env.command().args(args).env("WEIR_TEST_SECRET", SECRET_VALUE).current_dir(self.env.dir.path()).output().unwrap()
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Every attempt the guest makes, as it labels them in its trace.
    fn attempts(&self) -> Vec<String> {
        let mut a = vec![
            format!("fs.read {}", self.file.display()),
            "fs.read_dir /".into(),
            "fs.read_dir .".into(),
            "fs.write escape.txt".into(),
            "env.var WEIR_TEST_SECRET".into(),
            "env.vars".into(),
            "env.args".into(),
            "stdin.read".into(),
            format!("net.tcp_connect 127.0.0.1:{}", self.port()),
            "net.udp_bind 0.0.0.0:0".into(),
            "net.resolve localhost".into(),
            format!("http.get 127.0.0.1:{}", self.port()),
            "secrets.get hook".into(),
        ];
        a.extend(["records.query secret".to_string(), "records.create secret".to_string()]);
        a
    }

    /// Checks a trace (lines of text) and everything else the run printed.
    fn assert_all_blocked(&self, trace: &[String], everything: &str) {
        for what in self.attempts() {
            assert!(trace.iter().any(|l| l.contains(&format!("blocked: {what}: "))), "{what} was not blocked: {trace:#?}");
        }
        let query = trace.iter().find(|l| l.contains("blocked: records.query secret")).unwrap();
        assert!(query.contains("Denied") && query.contains("no read grant for table secret"), "{query}");
        let create = trace.iter().find(|l| l.contains("blocked: records.create secret")).unwrap();
        assert!(create.contains("Denied") && create.contains("no write grant for table secret"), "{create}");
        assert!(!everything.contains("ESCAPED"), "{everything}");
        for secret in [SECRET_VALUE, SECRET_FILE_TEXT, "the crown jewels"] {
            assert!(!everything.contains(secret), "{secret} leaked: {everything}");
        }
        // Nobody connected to the listener, nothing was written to the directory.
        assert_eq!(self.listener.accept().map(|_| ()).unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "a connection reached the listener");
        assert!(!self.env.dir.path().join("escape.txt").exists(), "the guest wrote a file");
        assert_eq!(self.env.run(&["record", "query", "secret"]).ok().json().as_array().unwrap().len(), 1);
    }
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_sync_plug_in_reaches_no_file_environment_network_stdio_or_ungranted_table() {
    let t = target();
    t.env
        .run(&[
            "step",
            "add",
            "escape",
            "--plugin",
            "escape-artist",
            "--message",
            "create",
            "--table",
            "thing",
            "--stage",
            "pre-operation",
            "--config",
            &t.config,
        ])
        .ok();
    let out = t.run(&["record", "create", "thing", r#"{"name":"x"}"#]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let n = t.attempts().len();
    assert!(stderr.starts_with(&format!("error: escape-artist: escape-artist: all {n} attempts were blocked")), "{stderr}");
    let trace: Vec<String> = stderr.lines().map(String::from).collect();
    t.assert_all_blocked(&trace, &format!("{stdout}{stderr}"));
    // The guest's stdout and stderr are captured into its trace, not inherited.
    assert!(stderr.contains("[stdout] escape-artist: this line goes to stdout"), "{stderr}");
    assert!(stderr.contains("[stderr] escape-artist: this line goes to stderr"), "{stderr}");
    assert!(!stdout.contains("this line goes to"), "{stdout}");
    // Terminal escapes the guest wrote reach nobody's terminal.
    assert!(stderr.contains("[warn] escape-artist: \u{fffd}[2J\u{fffd}[31mlog in red\u{fffd}"), "{stderr}");
    assert!(stderr.contains("[stdout] escape-artist: \u{fffd}[2J\u{fffd}[31mstdout in red\u{fffd}"), "{stderr}");
    assert!(!stderr.contains('\x1b') && !stderr.contains('\x07'), "{stderr:?}");
    assert_eq!(t.env.run(&["record", "query", "thing"]).ok().json(), json!([]));
}

#[test]
fn an_async_job_reaches_no_file_environment_network_stdio_or_ungranted_table() {
    let t = target();
    let submitted = t.run(&["background", "submit", "escape-artist", "--input", &t.config, "--grant", "thing:read", "--json"]);
    assert!(submitted.status.success(), "{:?}", text(&submitted));
    let id = serde_json::from_slice::<Value>(&submitted.stdout).unwrap()["id"].as_str().unwrap().to_string();
    let worked = t.run(&["work", "--until-idle"]);
    assert!(worked.status.success(), "{:?}", text(&worked));
    let job = t.env.run(&["jobs", "show", &id, "--json"]).ok();
    let view = job.json();
    assert_eq!((view["status"].as_str(), view["error_code"].as_str()), (Some("Failed"), Some("permanent")), "{view}");
    let n = t.attempts().len();
    assert_eq!(view["error"], format!("escape-artist: escape-artist: all {n} attempts were blocked"));
    let trace: Vec<String> =
        view["trace"].as_array().unwrap().iter().map(|l| format!("[{}] {}", l["level"].as_str().unwrap(), l["message"].as_str().unwrap())).collect();
    let (wout, werr) = text(&worked);
    t.assert_all_blocked(&trace, &format!("{}{wout}{werr}", job.stdout));
    assert!(trace.contains(&"[stdout] escape-artist: this line goes to stdout".to_string()), "{trace:#?}");
    assert!(!wout.contains("this line goes to"), "{wout}");
    assert!(!job.stdout.contains("\\u001b") && !job.stdout.contains('\x1b'), "{}", job.stdout);
}

#[test]
fn no_state_survives_from_one_call_to_the_next() {
    let t = target();
    t.env
        .run(&[
            "step",
            "add",
            "escape",
            "--plugin",
            "escape-artist",
            "--message",
            "create",
            "--table",
            "thing",
            "--stage",
            "pre-operation",
            "--config",
            &t.config,
        ])
        .ok();
    for _ in 0..3 {
        let (_, stderr) = text(&t.run(&["record", "create", "thing", r#"{"name":"x"}"#]));
        assert!(stderr.contains("[info] calls seen by this instance: 1\n"), "{stderr}");
    }
    // In one process too: each call instantiates afresh.
    let rt = weir::runtime::Runtime::new(weir::runtime::RuntimeConfig::default()).unwrap();
    let p = rt.prepare(weir::examples::wasm("escape-artist").unwrap()).unwrap();
    for _ in 0..3 {
        let limits = weir::runtime::Limits {
            fuel: Some(100_000_000),
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(10),
            budget_ms: 10_000,
            memory_bytes: 64 << 20,
            max_host_calls: 1000,
        };
        let ctx = weir::runtime::wit::Context::standalone("thing", weir::runtime::wit::Mode::Sync);
        let (_, stats) = rt.call_sync(&p, &ctx, Box::new(weir::runtime::NoRecords), &limits);
        assert!(stats.trace.iter().any(|l| l.message == "calls seen by this instance: 1"), "{:?}", stats.trace);
    }
}

#[test]
fn a_component_can_import_only_what_weir_provides() {
    let env = Env::new();
    // A foreign interface, weir's own in a version weir does not implement, one it
    // does not have, and a standard one with a forged signature. (A standard WASI
    // interface weir lacks loads as a denial: see the next test.)
    for (interface, func) in [
        ("wasi:http/outgoing-handler@0.2.0", "handle"),
        ("weir:plugin/admin@0.1.0", "run-sql"),
        ("weir:plugin/records@0.9.0", "get"),
        ("acme:db/sql@1.0.0", "query"),
        ("wasi:cli/run@0.2.0", "spawn"),
    ] {
        let f = env.write("evil.wasm", &component_importing(interface, func));
        let out = env.run(&["plugin", "add", "evil", path(&f)]).fails();
        assert!(out.stderr.contains("needs imports weir does not provide") && out.stderr.contains(interface), "{interface}: {}", out.stderr);
    }
    assert_eq!(env.run(&["plugin", "list", "--json"]).ok().json(), json!([]));
}

#[test]
fn a_standard_wasi_interface_weir_lacks_is_linked_as_a_denial() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    // It imports wasi:keyvalue/store, which weir does not provide: it loads...
    env.add_example("denied-import");
    env.run(&["step", "add", "guard", "--plugin", "denied-import", "--message", "create", "--table", "thing", "--stage", "pre-validation"]).ok();
    // ...and the call that uses it fails, typed, naming the interface, and nothing is stored.
    let out = env.run(&["record", "create", "thing", r#"{"name":"a"}"#]).fails();
    assert!(out.stderr.contains("was denied get of wasi:keyvalue/store@0.2.0-draft"), "{}", out.stderr);
    assert_eq!(env.run(&["record", "query", "thing", "--json"]).ok().json(), json!([]));
    let trace = env.run(&["trace", "list", "--json"]).ok().json();
    assert_eq!(trace[0]["outcome"], "denied", "the trace log keeps the typed outcome: {trace}");
    // What weir does provide still works in that component: its log, WASI's stderr and clock.
    let lines = trace[0]["lines"].to_string();
    assert!(lines.contains("checking thing") && lines.contains("the clock reads past 2020"), "{lines}");
}

#[test]
fn only_standard_interfaces_weir_lacks_are_denied_the_rest_must_link() {
    // An invented function in weir's own interface, or an extra one in a WASI
    // interface weir provides, is refused at load, never stubbed.
    let env = Env::new();
    for (interface, func) in [("weir:plugin/records@0.2.0", "drop-table"), ("wasi:cli/environment@0.2.0", "set-environment")] {
        let f = env.write("forged.wasm", &component_importing(interface, func));
        let out = env.run(&["plugin", "add", "forged", path(&f)]).fails();
        assert!(out.stderr.contains("needs imports weir does not provide") && out.stderr.contains(interface), "{interface}: {}", out.stderr);
    }
}

fn expenses() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "expense", "--column", "state:text"]).ok();
    env.run(&["table", "create", "audit", "--column", "entity:text", "--column", "recordid:text", "--column", "action:text"]).ok();
    env.add_example("audit-trail");
    env.add_example("bulk-update");
    env.run(&["record", "create", "expense", r#"{"state":"paid"}"#]).ok();
    env
}

/// Runs a bulk-update background job once and checks it failed saying `words`.
#[track_caller]
fn assert_bulk_update_fails(env: &Env, input: &str, grant: Option<&str>, words: &str) {
    let mut args = vec!["background", "submit", "bulk-update", "--input", input, "--max-attempts", "1", "--json"];
    if let Some(g) = grant {
        args.extend(["--grant", g]);
    }
    let id = env.run(&args).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["work", "--until-idle"]).ok();
    let job = env.run(&["jobs", "show", &id, "--json"]).ok().json();
    assert_eq!(job["status"], "Failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains(words), "{input}: {job}");
}

#[test]
fn grants_hold_in_every_mode_and_stage() {
    let env = expenses();
    // Read and write grants at post-operation are covered by
    // pipeline_cli::a_plugin_without_a_grant_can_neither_read_nor_write. Here:
    // a write grant does not let a pre-validation step write (pre-validation
    // is read-only)...
    let audit = ["step", "add", "audit", "--plugin", "audit-trail", "--message", "update", "--table", "expense", "--grant", "audit:write", "--stage"];
    env.run(&[&audit[..], &["pre-validation"]].concat()).ok();
    let expense = env.run(&["record", "query", "expense"]).ok().json()[0]["id"].as_str().unwrap().to_string();
    let out = env.run(&["record", "update", "expense", &expense, r#"{"state":"x"}"#]).fails();
    assert!(out.stderr.contains("pre-validation steps may only read (they run before the operation, as outside its transaction)"), "{}", out.stderr);
    assert_eq!(env.run(&["record", "query", "audit"]).ok().json(), json!([]));
    // ...the same step at post-operation may.
    env.run(&["step", "remove", "audit"]).ok();
    env.run(&[&audit[..], &["post-operation"]].concat()).ok();
    env.run(&["record", "update", "expense", &expense, r#"{"state":"x"}"#]).ok();
    assert_eq!(env.run(&["record", "query", "audit"]).ok().json().as_array().unwrap().len(), 1);

    // An async job: no grant, no reading; a read grant, no writing.
    let input = r#"{"table":"expense","set":{"state":"archived"}}"#;
    for (grant, words) in [(None, "no read grant for table expense"), (Some("expense:read"), "no write grant for table expense")] {
        assert_bulk_update_fails(&env, input, grant, words);
    }
    assert_eq!(env.run(&["record", "query", "expense", "--filter", "state eq 'x'"]).ok().json().as_array().unwrap().len(), 1, "nothing archived");
}

#[test]
fn what_a_plug_in_writes_is_checked_like_any_input() {
    let env = expenses();
    for (set, words) in [
        (json!({"created_at": 0}), "column created_at of table expense is set by weir and cannot be written"),
        (json!({"id": "mine"}), "column id of table expense is set by weir"),
        (json!({"nosuch": 1}), "table expense has no column"),
        (json!({"state": 5}), "column state is text: a plug-in gave it an integer"),
    ] {
        assert_bulk_update_fails(&env, &json!({"table": "expense", "set": set}).to_string(), Some("expense:write"), words);
    }
    assert_eq!(env.run(&["record", "query", "expense", "--filter", "state eq 'paid'"]).ok().json().as_array().unwrap().len(), 1, "unchanged");
}

#[test]
fn without_the_token_the_api_answers_only_the_health_check() {
    let env = expenses();
    let s = Server::start(&env, &[]);
    let routes: &[(&str, &str, &[u8])] = &[
        ("GET", "/api/data/expense", b""),
        ("POST", "/api/data/expense", br#"{"state":"stolen"}"#),
        ("GET", "/api/jobs", b""),
        ("POST", "/api/background", br#"{"plugin":"bulk-update","input":{}}"#),
        ("GET", "/api/plugins", b""),
        ("POST", "/api/plugins?name=evil", b"\0asm"),
        ("GET", "/api/steps", b""),
        ("GET", "/api/tables", b""),
        ("POST", "/api/tables", br#"{"name":"evil","columns":[]}"#),
        ("GET", "/api/stats", b""),
        ("GET", "/metrics", b""),
        ("GET", "/api/openapi.json", b""),
    ];
    let near_miss = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    for (method, route, body) in routes {
        for token in [None, Some("wrong"), Some(near_miss.as_str()), Some("")] {
            let r = s.call(method, route, Some(body), token);
            assert_eq!(r.status, 401, "{method} {route} with {token:?}: {}", r.text);
            assert!(r.body["error"].as_str().unwrap().contains("bearer token"), "{}", r.text);
        }
    }
    assert_eq!(s.call("GET", "/api/health", None, None).status, 200);
    drop(s);
    assert_eq!(env.run(&["record", "query", "expense"]).ok().json().as_array().unwrap().len(), 1, "nothing stored");
    assert_eq!(env.run(&["table", "list", "--json"]).ok().json().as_array().unwrap().len(), 2);
    assert_eq!(env.run(&["jobs", "list", "--json"]).ok().json(), json!([]));
}
