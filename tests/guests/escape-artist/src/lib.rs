//! escape-artist: tries to reach what a plug-in must not reach, and reports.
//!
//! A hostile guest for the sandbox's security tests; it exports both worlds. It
//! tries to read a file, list directories, read the environment and the
//! arguments, open a TCP connection, bind a UDP socket, resolve a host name,
//! send an HTTP request (`wasi:http`), read a secret and read a table its step
//! was not granted. A secret it is granted, it tries to leak through its log,
//! stdout, stderr and error. Each attempt is logged as
//! `blocked: WHAT: ERROR` or `ESCAPED: WHAT: WHAT IT GOT`. When every attempt was
//! blocked it rejects (sync) or fails permanently (async) with "all N attempts
//! were blocked"; when one got through it fails with "ESCAPED".
//!
//! It writes terminal escape sequences to stdout and its log, which weir must
//! not pass on. It also counts its calls in a static: each call runs in a fresh instance, so
//! it logs `calls seen by this instance: 1` every time.
//!
//! The step's config (or a background operation's input) names the targets:
//! `{"file": PATH, "env": NAME, "port": N, "table": NAME, "secret": NAME}`.

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};

use weir_guest::records;
use weir_guest::types::Context;

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WorkflowError};

type Attempt = Result<String, String>;

fn attempts(ctx: &Context) -> Vec<(String, Attempt)> {
    let config = weir_guest::json(&ctx.config);
    let input = weir_guest::json(&ctx.input);
    let get = |k: &str| if config[k].is_null() { input[k].clone() } else { config[k].clone() };
    let file = get("file").as_str().unwrap_or("/etc/passwd").to_string();
    let env = get("env").as_str().unwrap_or("HOME").to_string();
    let port = get("port").as_u64().unwrap_or(80) as u16;
    let table = get("table").as_str().unwrap_or("secret").to_string();

    let mut out: Vec<(String, Attempt)> = Vec::new();
    out.push((
        format!("fs.read {file}"),
        std::fs::read(&file).map(|b| format!("{} bytes: {}", b.len(), String::from_utf8_lossy(&b))).map_err(|e| e.to_string()),
    ));
    for dir in ["/", "."] {
        out.push((
            format!("fs.read_dir {dir}"),
            std::fs::read_dir(dir).map(|d| format!("{} entries", d.count())).map_err(|e| e.to_string()),
        ));
    }
    out.push((
        "fs.write escape.txt".into(),
        std::fs::write("escape.txt", b"I was here").map(|_| "wrote a file".to_string()).map_err(|e| e.to_string()),
    ));
    out.push((format!("env.var {env}"), std::env::var(&env).map_err(|e| e.to_string())));
    let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    out.push(("env.vars".into(), if vars.is_empty() { Err("no variables".into()) } else { Ok(vars.join(" ")) }));
    let args: Vec<String> = std::env::args().collect();
    out.push(("env.args".into(), if args.is_empty() { Err("no arguments".into()) } else { Ok(args.join(" ")) }));
    let mut stdin = Vec::new();
    out.push((
        "stdin.read".into(),
        match std::io::stdin().read_to_end(&mut stdin) {
            Ok(0) => Err("stdin is empty".into()),
            Ok(n) => Ok(format!("{n} bytes")),
            Err(e) => Err(e.to_string()),
        },
    ));
    out.push((
        format!("net.tcp_connect 127.0.0.1:{port}"),
        std::net::TcpStream::connect(("127.0.0.1", port)).map(|s| format!("connected to {:?}", s.peer_addr())).map_err(|e| e.to_string()),
    ));
    out.push((
        "net.udp_bind 0.0.0.0:0".into(),
        std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(b"hello", ("127.0.0.1", port)))
            .map(|n| format!("sent {n} bytes"))
            .map_err(|e| e.to_string()),
    ));
    out.push((
        "net.resolve localhost".into(),
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
            .map(|a| format!("{:?}", a.collect::<Vec<_>>()))
            .map_err(|e| e.to_string()),
    ));
    out.push((format!("http.get 127.0.0.1:{port}"), http_get(&format!("127.0.0.1:{port}"))));
    let secret = get("secret").as_str().unwrap_or("hook").to_string();
    out.push((
        format!("secrets.get {secret}"),
        weir_guest::secrets::get(&secret)
            .map(|value| {
                // Granted: try to leak it through every channel weir keeps.
                println!("escape-artist: stdout leak {value}");
                eprintln!("escape-artist: stderr leak {value}");
                format!("the value is {value}")
            })
            .map_err(|e| format!("{e:?}")),
    ));
    out.push((
        format!("records.query {table}"),
        weir_guest::query(&table, "", 10).map(|r| format!("{} records", r.len())).map_err(|e| format!("{e:?}")),
    ));
    out.push((
        format!("records.create {table}"),
        records::create(&table, &[]).map(|r| format!("created {}", r.id)).map_err(|e| format!("{e:?}")),
    ));
    out
}

/// A GET through `wasi:http`, which weir sends only to granted hosts.
fn http_get(authority: &str) -> Attempt {
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some("/"));
    let pending = wasip2::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    let response = loop {
        match pending.get() {
            Some(r) => break r,
            None => pending.subscribe().block(),
        }
    };
    match response {
        Ok(Ok(r)) => Ok(format!("answered {}", r.status())),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(()) => Err("no response".into()),
    }
}

/// Calls this instance has seen.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Runs every attempt, logs each outcome; `Ok(summary)` when all were blocked.
fn try_to_escape(ctx: &Context) -> Result<String, String> {
    let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    weir_guest::info(&format!("calls seen by this instance: {calls}"));
    println!("escape-artist: this line goes to stdout");
    eprintln!("escape-artist: this line goes to stderr");
    // Terminal escapes (clear the screen, red, a bell) in every channel.
    println!("escape-artist: \x1b[2J\x1b[31mstdout in red\x07");
    weir_guest::warn("escape-artist: \x1b[2J\x1b[31mlog in red\x07");
    let results = attempts(ctx);
    let mut escaped = Vec::new();
    for (what, result) in &results {
        match result {
            Err(e) => weir_guest::info(&format!("blocked: {what}: {e}")),
            Ok(got) => {
                weir_guest::warn(&format!("ESCAPED: {what}: {got}"));
                escaped.push(what.clone());
            }
        }
    }
    if escaped.is_empty() {
        Ok(format!("escape-artist: all {} attempts were blocked", results.len()))
    } else {
        Err(format!("escape-artist: ESCAPED through {}", escaped.join(", ")))
    }
}

struct Artist;

impl exports::weir::plugin::handler::Guest for Artist {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        match try_to_escape(&ctx) {
            Ok(all_blocked) => Err(PluginError::Rejected(all_blocked)),
            Err(escaped) => Err(PluginError::Failed(escaped)),
        }
    }
}

/// With `"leak": "wait"` (or `"bad-wait"`) in its input, a workflow reads the
/// secret it is granted, logs it line by line, and waits on a condition that
/// holds it (`"bad-wait"`: over a column that does not exist, so weir's own
/// error would quote it).
fn leak_through_a_wait(ctx: &Context) -> Option<Result<Step, WorkflowError>> {
    let input = weir_guest::json(&ctx.input);
    let mode = input["leak"].as_str()?;
    let name = input["secret"].as_str().unwrap_or("hook");
    let value = match weir_guest::secrets::get(name) {
        Ok(v) => v,
        Err(e) => return Some(Err(WorkflowError::Permanent(format!("no secret: {e:?}")))),
    };
    for line in value.lines() {
        weir_guest::info(&format!("line: {line}"));
    }
    let first = value.lines().next().unwrap_or_default().replace('\'', "''");
    let column = if mode == "bad-wait" { "nope" } else { "name" };
    Some(Ok(Step::WaitForQuery(exports::weir::plugin::runner::WaitForQuery {
        table: input["table"].as_str().unwrap_or("thing").into(),
        filter: format!("{column} eq '{first}'"),
        timeout_ms: 600_000,
        state: vec![],
    })))
}

impl exports::weir::plugin::runner::Guest for Artist {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        if let Some(step) = leak_through_a_wait(&ctx) {
            return step;
        }
        match try_to_escape(&ctx) {
            Ok(all_blocked) => Err(WorkflowError::Permanent(all_blocked)),
            Err(escaped) => Err(WorkflowError::Transient(escaped)),
        }
    }
}

export!(Artist);
