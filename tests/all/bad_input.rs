//! Bad input over HTTP (a live `weir serve`) and on the command line:
//! malformed JSON, unknown tables and columns, wrong types, oversized bodies,
//! bad filters, SQL injection in filter strings and in names, bad wasm. Each
//! gets a clear error — a 4xx with a JSON `error` over HTTP, exit 1 with the
//! message on stderr from the CLI — and nothing is stored.

use crate::common::{Env, Server, TOKEN, component_importing, path, q};
use serde_json::json;

const TABLES: &[&str] = &["account", "opportunity"];

/// Two tables with a column of every type, a sentinel record, a plug-in and a
/// sync step whose trigger condition must keep working.
fn shop() -> (Env, String) {
    let env = Env::new();
    env.run(&[
        "table",
        "create",
        "account",
        "--column",
        "name:text",
        "--column",
        "creditlimit:decimal",
        "--column",
        "n:integer",
        "--column",
        "ok:boolean",
        "--column",
        "at:timestamp",
        "--column",
        "doc:json",
    ])
    .ok();
    env.run(&["table", "create", "opportunity", "--column", "name:text", "--column", "customer:ref:account"]).ok();
    env.add_example("notify");
    env.add_example("set-defaults");
    let acct = env.run(&["record", "create", "account", r#"{"name":"Contoso","creditlimit":1000,"n":1}"#]).ok().json();
    (env, acct["id"].as_str().unwrap().to_string())
}

/// Files of bad wasm: (file name, bytes, words the refusal must contain).
fn bad_wasm() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let notify = weir::examples::wasm("notify").unwrap();
    vec![
        ("random.wasm", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "not a wasm component"),
        ("empty.wasm", vec![], "not a wasm component"),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "core wasm module"),
        ("truncated.wasm", notify[..notify.len() / 2].to_vec(), "invalid component"),
        ("noworld.wasm", b"\0asm\x0d\0\x01\0".to_vec(), "none of weir's worlds"),
        ("http.wasm", component_importing("wasi:http/outgoing-handler@0.2.0", "handle"), "needs imports weir does not provide"),
    ]
}

#[test]
fn bad_requests_over_http_get_a_clear_4xx_and_store_nothing() {
    let (env, acct) = shop();
    let before = env.snapshot(TABLES);
    let s = Server::start(&env, &["--max-body-bytes", "4096"]);
    let post = |path: &str, body: &str| s.call("POST", path, Some(body.as_bytes()), Some(TOKEN));
    let patch = |path: &str, body: &str| s.call("PATCH", path, Some(body.as_bytes()), Some(TOKEN));
    let get = |path: &str| s.call("GET", path, None, Some(TOKEN));
    let filter = |f: &str| get(&format!("/api/data/account?$filter={}", q(f)));
    let rec = format!("/api/data/account/{acct}");
    let deep = format!("{}name eq 'x'{}", "(".repeat(70), ")".repeat(70));
    let long = format!("name eq '{}'", "x".repeat(5000));
    let cases = vec![
        // Malformed JSON and bodies of the wrong shape.
        ("malformed JSON", post("/api/data/account", "{not json"), 400, "the body is not valid JSON"),
        ("empty body", post("/api/data/account", ""), 400, "the body is not valid JSON"),
        ("array body", post("/api/data/account", "[1,2]"), 400, "must be a JSON object, got an array"),
        ("malformed patch", patch(&rec, "{\"name\":"), 400, "the body is not valid JSON"),
        // Unknown table, column, record.
        ("unknown table", post("/api/data/nosuch", "{}"), 404, "no table named \"nosuch\""),
        ("unknown column", post("/api/data/account", r#"{"colour":"red"}"#), 400, "table account has no column \"colour\""),
        ("unknown column on patch", patch(&rec, r#"{"colour":"red"}"#), 400, "no column \"colour\""),
        ("unknown record", patch("/api/data/account/nosuch", r#"{"name":"x"}"#), 404, "no account record with id nosuch"),
        ("system column", post("/api/data/account", r#"{"id":"mine"}"#), 400, "column id of table account is set by weir"),
        // Wrong types.
        ("text given a number", post("/api/data/account", r#"{"name":5}"#), 400, "column name is text: expected a string, got 5"),
        ("integer given a fraction", post("/api/data/account", r#"{"n":1.5}"#), 400, "column n is integer: expected a whole number"),
        ("integer out of range", post("/api/data/account", r#"{"n":99999999999999999999}"#), 400, "column n is integer"),
        ("decimal given text", post("/api/data/account", r#"{"creditlimit":"lots"}"#), 400, "column creditlimit is decimal: expected a number"),
        ("boolean given a string", post("/api/data/account", r#"{"ok":"true"}"#), 400, "column ok is boolean: expected true or false"),
        ("timestamp given words", post("/api/data/account", r#"{"at":"yesterday"}"#), 400, "column at is timestamp: expected an RFC 3339 time"),
        ("reference to nothing", post("/api/data/opportunity", r#"{"customer":"nobody"}"#), 400, "refers to account nobody, which does not exist"),
        ("reference given a number", post("/api/data/opportunity", r#"{"customer":7}"#), 400, "the id of a account record"),
        // Oversized bodies: 413 with the limit named, also when the JSON is fine.
        ("oversized record", post("/api/data/account", &json!({"name": "x".repeat(5000)}).to_string()), 413, "larger than the limit of 4096 bytes"),
        ("oversized patch", patch(&rec, &json!({"name": "x".repeat(5000)}).to_string()), 413, "larger than the limit of 4096 bytes"),
        ("oversized table", post("/api/tables", &json!({"name": "t", "pad": "x".repeat(5000)}).to_string()), 413, "larger than the limit"),
        // Bad $filter: the position and what is wrong.
        ("bad operator", filter("name gx 'a'"), 400, "bad filter at position 6: expected an operator"),
        ("unknown field", filter("colour eq 'red'"), 400, "unknown field `colour`"),
        ("wrong literal type", filter("creditlimit eq 'lots'"), 400, "`creditlimit` is a number"),
        ("unterminated string", filter("name eq 'abc"), 400, "unterminated string"),
        ("empty filter", filter("and"), 400, "bad filter"),
        ("nested too deep", get(&format!("/api/data/account?$filter={}", q(&deep))), 400, "nested deeper than 64 levels"),
        ("filter too long", get(&format!("/api/data/account?$filter={}", q(&long))), 400, "longer than 4096 bytes"),
        // SQL injection in filter strings: refused as syntax, never run as SQL.
        ("injection: OR 1=1", filter("name eq 'x' OR 1=1"), 400, "unexpected character `=`"),
        ("injection: OR", filter("name eq 'x' OR name ne 'x'"), 400, "expected `and`, `or` or the end, found `OR`"),
        ("injection: statement", filter("name eq 'x'; DROP TABLE data_account"), 400, "unexpected character `;`"),
        ("injection: comment", filter("name eq 'x' -- "), 400, "bad number `-`"),
        ("injection: tautology", filter("name eq 'x' or 1 eq 1"), 400, "expected a field name or `(`, found int(1)"),
        ("injection: subquery", filter("name eq (SELECT name FROM data_account)"), 400, "expected a value"),
        // SQL injection in names: tables, columns, ids, sort and select lists.
        (
            "injection in a table name",
            post(&format!("/api/data/{}", q("account; DROP TABLE data_account")), "{}"),
            404,
            "no table named \"account; DROP TABLE data_account\"",
        ),
        ("injection in a quoted table name", get(&format!("/api/data/{}", q("account\" --"))), 404, "no table named"),
        ("injection in an id", get(&format!("/api/data/account/{}", q("x' OR '1'='1"))), 404, "no account record with id x' OR '1'='1"),
        ("injection in a column name", post("/api/data/account", r#"{"name\" = 1; --":"x"}"#), 400, "has no column"),
        ("injection in $orderby", get(&format!("/api/data/account?$orderby={}", q("name; DROP TABLE data_account"))), 400, "is not asc or desc"),
        ("injection in $orderby field", get(&format!("/api/data/account?$orderby={}", q("name,(SELECT)"))), 400, "has no column \"(SELECT)\""),
        ("injection in $select", get(&format!("/api/data/account?$select={}", q("name,(SELECT 1)"))), 400, "has no column \"(SELECT 1)\""),
        ("bad $top", get("/api/data/account?$top=-1"), 400, "bad $top"),
        ("injection in a new table's name", post("/api/tables", r#"{"name":"t\"; DROP TABLE weir_jobs; --","columns":[]}"#), 400, "bad table name"),
        (
            "injection in a new column's name",
            post("/api/tables", r#"{"name":"t","columns":[{"name":"a\" TEXT); DROP TABLE x; --","type":"text"}]}"#),
            400,
            "bad column name",
        ),
        ("unknown column type", post("/api/tables", r#"{"name":"t","columns":[{"name":"a","type":"varchar"}]}"#), 400, "unknown column type \"varchar\""),
        ("columns not a list", post("/api/tables", r#"{"name":"t","columns":"a:text"}"#), 400, "\"columns\" is a list of"),
        ("column without a type", post("/api/tables", r#"{"name":"t","columns":[{"name":"a"}]}"#), 400, "bad column {\"name\":\"a\"}"),
        ("table exists", post("/api/tables", r#"{"name":"account","columns":[]}"#), 409, "table account already exists"),
        // Steps and background operations.
        ("step: bad JSON", post("/api/steps", "{"), 400, "bad step"),
        ("step: missing fields", post("/api/steps", r#"{"name":"s"}"#), 400, "missing field `plugin`"),
        ("step: bad --when", post("/api/steps", &json!(step("s", "set-defaults", "sync", Some("name eq"))).to_string()), 400, "--when: bad filter"),
        ("step: wrong world", post("/api/steps", &json!(step("s", "notify", "sync", None)).to_string()), 400, "cannot run as a sync step"),
        ("step: unknown plug-in", post("/api/steps", &json!(step("s", "nosuch", "sync", None)).to_string()), 404, "no plug-in named nosuch"),
        ("background: wrong type", post("/api/background", r#"{"plugin":"notify","max_attempts":"5"}"#), 400, "invalid type: string \"5\", expected u32"),
        ("background: unknown field", post("/api/background", r#"{"plugin":"notify","max_attempt":5}"#), 400, "unknown field `max_attempt`"),
        ("background: no plug-in", post("/api/background", r#"{"input":{}}"#), 400, "missing field `plugin`"),
        ("background: zero attempts", post("/api/background", r#"{"plugin":"notify","max_attempts":0}"#), 400, "max_attempts 0 is out of range: use 1..=1000"),
        ("background: bad grant", post("/api/background", r#"{"plugin":"notify","grants":["account:admin"]}"#), 400, "the access is read or write"),
        ("background: grant on nothing", post("/api/background", r#"{"plugin":"notify","grants":["nosuch:read"]}"#), 404, "no table named \"nosuch\""),
        ("background: bad callback", post("/api/background", r#"{"plugin":"notify","callback":"file:///etc/passwd"}"#), 400, "bad callback URL"),
        ("background: far future", post("/api/background", r#"{"plugin":"notify","at":"+99999999999y"}"#), 400, "too far in the future"),
        ("background: bad time", post("/api/background", r#"{"plugin":"notify","at":"tomorrow"}"#), 400, "bad time \"tomorrow\""),
        ("jobs: bad filter", get(&format!("/api/jobs?$filter={}", q("statecode eq"))), 400, "bad filter at position 13"),
        ("jobs: injection", get(&format!("/api/jobs?$filter={}", q("id eq 'x' UNION SELECT 1"))), 400, "found `UNION`"),
        ("jobs: bad postpone", post("/api/jobs/nosuch/postpone", r#"{"until":"+99999999999y"}"#), 400, "too far in the future"),
        ("jobs: unknown", get(&format!("/api/jobs/{}", q("x' OR 1=1 --"))), 404, "no job with id"),
        // Routes and methods axum answers by itself: JSON too.
        ("no such route", get("/api/nosuch"), 404, "no route GET /api/nosuch"),
        ("wrong method", s.call("PATCH", "/api/tables", Some(b"{}"), Some(TOKEN)), 405, "/api/tables does not take PATCH"),
        ("no token", s.call("GET", "/api/tables", None, None), 401, "bearer token"),
    ];
    let mut failures = Vec::new();
    for (what, reply, status, words) in &cases {
        let error = reply.body["error"].as_str();
        if reply.status != *status || !error.is_some_and(|e| e.contains(words)) {
            failures.push(format!("{what}: wanted {status} with {words:?}, got {} {}", reply.status, reply.text));
        }
    }
    // Bad wasm uploads.
    for (file, bytes, words) in bad_wasm() {
        let reply = s.call("POST", "/api/plugins?name=bad", Some(&bytes), Some(TOKEN));
        if reply.status != 400 || !reply.body["error"].as_str().is_some_and(|e| e.contains(words) && e.starts_with("bad: ")) {
            failures.push(format!("upload {file}: wanted 400 with {words:?}, got {} {}", reply.status, reply.text));
        }
    }
    for (what, url, words) in [("no name", "/api/plugins", "give the plug-in's name"), ("bad name", "/api/plugins?name=Bad%3B%20rm", "bad plug-in name")] {
        let reply = s.call("POST", url, Some(weir::examples::wasm("noop").unwrap()), Some(TOKEN));
        if reply.status != 400 || !reply.body["error"].as_str().is_some_and(|e| e.contains(words)) {
            failures.push(format!("upload with {what}: wanted 400 with {words:?}, got {} {}", reply.status, reply.text));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len() + 8, failures.join("\n"));

    // A string literal full of SQL is a string: it matches nothing, drops nothing.
    let literal = filter("name eq 'x'' OR 1=1 --'");
    assert_eq!((literal.status, &literal.body), (200, &json!({"value": []})), "{}", literal.text);
    let quoted = filter("name eq 'Contoso' or name eq ''';DROP TABLE data_account;--'");
    assert_eq!(quoted.body["value"].as_array().map(Vec::len), Some(1), "{}", quoted.text);

    drop(s);
    assert_eq!(env.snapshot(TABLES), before, "nothing was stored by the bad requests");
}

/// A step as the API takes it.
fn step(name: &str, plugin: &str, mode: &str, when: Option<&str>) -> serde_json::Value {
    json!({
        "name": name, "plugin": plugin, "message": "create", "table": "account", "stage": "pre-operation", "mode": mode,
        "rank": 1, "filter": [], "when": when, "config": null, "pre_image": false, "post_image": false, "fuel": null,
        "timeout_ms": null, "max_attempts": null, "backoff_ms": null, "grants": [], "schedule": null,
    })
}

#[test]
fn bad_commands_exit_1_with_a_clear_message_and_store_nothing() {
    let (env, acct) = shop();
    let before = env.snapshot(TABLES);
    let deep = format!("{}name eq 'x'{}", "(".repeat(70), ")".repeat(70));
    let noop = env.example_file("noop");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["record", "create", "account", "{not json"], "the record is not valid JSON"),
        (vec!["record", "create", "account", "[1]"], "must be a JSON object"),
        (vec!["record", "create", "nosuch", "{}"], "no table named \"nosuch\""),
        (vec!["record", "create", "account", r#"{"colour":"red"}"#], "table account has no column \"colour\""),
        (vec!["record", "create", "account", r#"{"n":"one"}"#], "column n is integer: expected a whole number, got \"one\""),
        (vec!["record", "create", "account", r#"{"at":12.5}"#], "column at is timestamp"),
        (vec!["record", "create", "opportunity", r#"{"customer":"nobody"}"#], "which does not exist"),
        (vec!["record", "update", "account", &acct, r#"{"ok":1}"#], "column ok is boolean"),
        (vec!["record", "update", "account", "nosuch", r#"{"name":"x"}"#], "no account record with id nosuch"),
        (vec!["record", "delete", "account", "x' OR '1'='1"], "no account record with id x' OR '1'='1"),
        (vec!["record", "get", "account; DROP TABLE data_account", "x"], "no table named"),
        (vec!["record", "query", "account", "--filter", "name gx 'a'"], "bad filter at position 6"),
        (vec!["record", "query", "account", "--filter", "name eq 'x' OR 1=1"], "unexpected character `=`"),
        (vec!["record", "query", "account", "--filter", "name eq 'x' OR name ne 'x'"], "found `OR`"),
        (vec!["record", "query", "account", "--filter", "name eq 'x'; DELETE FROM data_account"], "unexpected character `;`"),
        (vec!["record", "query", "account", "--filter", &deep], "nested deeper"),
        (vec!["record", "query", "account", "--orderby", "name; DROP TABLE data_account"], "is not asc or desc"),
        (vec!["table", "create", "t; DROP TABLE weir_jobs", "--column", "a:text"], "bad table name"),
        (vec!["table", "create", "t", "--column", "a\" TEXT); --:text"], "bad column name"),
        (vec!["table", "create", "t", "--column", "a:varchar"], "unknown column type \"varchar\""),
        (vec!["table", "create", "t", "--column", "a"], "bad --column \"a\": write NAME:TYPE"),
        (vec!["table", "create", "account"], "table account already exists"),
        (vec!["step", "add", "s", "--plugin", "notify", "--message", "create", "--table", "account", "--stage", "pre-operation"], "cannot run as a sync step"),
        (
            vec![
                "step",
                "add",
                "s",
                "--plugin",
                "set-defaults",
                "--message",
                "create",
                "--table",
                "account",
                "--stage",
                "pre-operation",
                "--when",
                "colour eq 1",
            ],
            "unknown field `colour`",
        ),
        (
            vec!["step", "add", "s", "--plugin", "set-defaults", "--message", "create", "--table", "account", "--stage", "pre-operation", "--config", "{"],
            "--config is not valid JSON",
        ),
        (
            vec!["step", "add", "s", "--plugin", "set-defaults", "--message", "create", "--table", "account", "--stage", "pre-operation", "--grant", "account"],
            "bad grant",
        ),
        (vec!["background", "submit", "notify", "--input", "{}", "--at", "+99999999999y"], "too far in the future"),
        (vec!["jobs", "list", "--filter", "id eq 'x' UNION SELECT 1"], "found `UNION`"),
        (vec!["plugin", "add", "x", "/nonexistent/x.wasm"], "cannot read /nonexistent/x.wasm"),
        (vec!["plugin", "add", "Bad Name", path(&noop)], "bad plug-in name \"Bad Name\""),
        (vec!["--as", "nobody", "record", "create", "account", "{}"], "no user named nobody"),
    ];
    let mut failures = Vec::new();
    for (args, words) in &cases {
        let out = env.run(args);
        if out.code != 1 || !out.stderr.starts_with("error: ") || !out.stderr.contains(words) {
            failures.push(format!("weir {}: wanted exit 1 with {words:?}, got {} {}", args.join(" "), out.code, out.stderr.trim()));
        }
    }
    for (file, bytes, words) in bad_wasm() {
        let f = env.write(file, &bytes);
        let out = env.run(&["plugin", "add", "bad", path(&f)]);
        if out.code != 1 || !out.stderr.contains(words) {
            failures.push(format!("plugin add {file}: wanted exit 1 with {words:?}, got {} {}", out.code, out.stderr.trim()));
        }
    }
    // Usage errors are exit 2.
    for args in [
        vec!["record", "create", "account"],
        vec!["step", "add", "s", "--plugin", "p", "--message", "frobnicate"],
        vec!["frobnicate"],
        vec!["background", "submit", "notify", "--input", "{}", "--max-attempts", "0"],
    ] {
        let out = env.run(&args);
        if out.code != 2 {
            failures.push(format!("weir {}: wanted exit 2, got {} {}", args.join(" "), out.code, out.stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));

    // A string literal full of SQL is a string.
    let found = env.run(&["record", "query", "account", "--filter", "name eq 'x'' OR 1=1 --'"]).ok().json();
    assert_eq!(found, json!([]));
    assert_eq!(env.snapshot(TABLES), before, "nothing was stored by the bad commands");
}
