//! The plug-in author's tools: `weir plugin test` runs a component offline
//! against a fixture, and `weir jobs replay` runs a job's captured context
//! again (or a fixed build of its plug-in) without changing anything.

use serde_json::{Value, json};

use crate::common::{Env, path, wait_for};

fn write_json(env: &Env, file: &str, v: &Value) -> String {
    path(&env.write(file, v.to_string().as_bytes())).to_string()
}

fn crm_fixture(env: &Env) -> String {
    let fixture = json!({
        "account": {"columns": {"name": "text", "creditlimit": "decimal"}, "records": [{"id": "a1", "name": "Contoso", "creditlimit": 1000}]},
        "opportunity": {"columns": {"name": "text", "amount": "decimal", "customer": "ref:account"}},
    });
    write_json(env, "records.json", &fixture)
}

#[test]
fn plugin_test_runs_a_component_offline_against_a_fixture() {
    let env = Env::new();
    let wasm = env.example_file("credit-check");
    let records = crm_fixture(&env);
    let context = |amount: &str| {
        let c = json!({"message": "create", "table": "opportunity", "stage": "pre-operation",
            "target": {"id": "o1", "amount": serde_json::from_str::<Value>(amount).unwrap(), "customer": "a1"}});
        write_json(&env, "context.json", &c)
    };
    let test = |ctx: &str, json: bool| {
        let mut args = vec!["plugin", "test", path(&wasm), "--context", ctx, "--records", &records];
        if json {
            args.push("--json");
        }
        env.run(&args)
    };
    // Rejected: exit 1, the typed error and the trace.
    let out = test(&context("5000"), false).fails();
    assert!(out.stdout.contains("ran as a sync step: rejected"), "{}", out.stdout);
    assert!(out.stdout.contains("amount 5000 exceeds the credit limit 1000 of account Contoso"), "{}", out.stdout);
    // Accepted, with a note and a shared variable: exit 0.
    let ok = test(&context("950.00"), true).ok().json();
    assert_eq!((ok["outcome"].as_str(), ok["mode"].as_str(), ok["contract"].as_str()), (Some("ok"), Some("sync"), Some("0.3")), "{ok}");
    assert_eq!(ok["notes"], json!(["amount 950.00 uses more than 90% of the credit limit 1000"]));
    assert_eq!(ok["variables"], json!({"credit_limit": "1000"}));
    assert!(ok["trace"].to_string().contains("is within the credit limit 1000"), "{ok}");
    assert!(ok["fuel"].as_u64().unwrap() > 0);
    // It used no database: the `--db` file was never made.
    assert!(!env.db().exists(), "plugin test made a database");

    // A workflow: its first run asks to wait; resumed with its state, it writes.
    let approval = env.example_file("approval");
    let fixture = json!({"expense": {"columns": {"amount": "decimal", "approved": "boolean", "state": "text"}, "records": [{"id": "e1", "amount": 12.5}]}});
    let fixture = write_json(&env, "expense.json", &fixture);
    let first = write_json(&env, "first.json", &json!({"table": "expense", "target": {"id": "e1"}}));
    let waits = env.run(&["plugin", "test", path(&approval), "--context", &first, "--records", &fixture, "--json"]).ok().json();
    assert_eq!((waits["mode"].as_str(), waits["step"]["wait_for"]["condition"].as_str()), (Some("async"), Some("approved eq true")), "{waits}");
    let state = env.write("state.bin", b"awaiting-approval");
    let woke = write_json(&env, "woke.json", &json!({"table": "expense", "target": {"id": "e1"}, "wake": "condition-met", "attempt": 2}));
    let resumed = env.run(&["plugin", "test", path(&approval), "--context", &woke, "--records", &fixture, "--state", path(&state)]).ok().stdout;
    assert!(resumed.contains(r#"step:      {"done":{"state":"paid"}}"#), "{resumed}");
    assert!(resumed.contains(r#"wrote:     update expense e1 {"state":"paid"}"#), "{resumed}");

    // Bad input is named.
    let bad = write_json(&env, "bad.json", &json!({"message": "upsert"}));
    assert!(env.run(&["plugin", "test", path(&wasm), "--context", &bad]).fails().stderr.contains("message is create, update, delete or background"));
    let not_json = env.write("broken.json", b"{");
    assert!(env.run(&["plugin", "test", path(&wasm), "--context", path(&not_json)]).fails().stderr.contains("is not valid JSON"));
}

#[test]
fn jobs_replay_shows_a_failed_job_s_error_and_trace_and_changes_nothing() {
    let env = Env::new();
    env.run(&["table", "create", "shipment", "--column", "name:text"]).ok();
    env.run(&["table", "create", "entry", "--column", "source:text", "--column", "attempt:integer"]).ok();
    for p in ["always-fails", "append-entry", "noop"] {
        env.add_example(p);
    }
    let on_shipment = ["--message", "create", "--table", "shipment", "--stage", "post-operation", "--mode", "async"];
    env.run(&[&["step", "add", "fail", "--plugin", "always-fails"][..], &on_shipment].concat()).ok();
    env.run(&[&["step", "add", "append", "--plugin", "append-entry", "--grant", "entry:write"][..], &on_shipment].concat()).ok();
    let shipment = env.run(&["record", "create", "shipment", r#"{"name": "parcel"}"#]).ok().json();
    env.run(&["work", "--until-idle"]).ok();
    let jobs = env.run(&["jobs", "list", "--json"]).ok().json();
    let id_of = |step: &str| jobs.as_array().unwrap().iter().find(|j| j["step"] == step).unwrap()["id"].as_str().unwrap().to_string();
    let (failed, appended) = (id_of("fail"), id_of("append"));
    let before = env.run(&["jobs", "show", &failed, "--json"]).ok().json();
    assert_eq!(before["status"], "Failed");

    // The failure again, with its error and trace; the job is untouched.
    let replay = env.run(&["jobs", "replay", &failed]).fails();
    let sid = shipment["id"].as_str().unwrap();
    assert!(replay.stdout.contains(&format!("outcome: failed [permanent] always-fails: record {sid} can never be processed")), "{}", replay.stdout);
    assert!(replay.stdout.contains("with always-fails@1") && replay.stdout.contains("nothing was changed"), "{}", replay.stdout);
    let after = env.run(&["jobs", "show", &failed, "--json"]).ok().json();
    assert_eq!(
        (after["status"].clone(), after["attempts"].clone(), after["history"].clone()),
        (before["status"].clone(), before["attempts"].clone(), before["history"].clone())
    );

    // A fixed build: the same context, now succeeding.
    let fixed = env.example_file("noop");
    let ok = env.run(&["jobs", "replay", &failed, "--plugin-file", path(&fixed), "--json"]).ok().json();
    assert_eq!((ok["outcome"].as_str(), ok["ran"].as_str()), (Some("succeeded"), Some("the given file")), "{ok}");

    // A job that wrote: the write is shown, not applied.
    let entries = || env.run(&["record", "query", "entry"]).ok().json().as_array().unwrap().len();
    assert_eq!(entries(), 1);
    let wrote = env.run(&["jobs", "replay", &appended, "--json"]).ok().json();
    assert_eq!((wrote["writes"][0]["op"].as_str(), wrote["writes"][0]["table"].as_str()), (Some("create"), Some("entry")), "{wrote}");
    assert_eq!(wrote["writes"][0]["fields"]["source"], sid);
    assert_eq!(entries(), 1, "a replay applies nothing");
    assert!(env.run(&["jobs", "replay", "no-such-job"]).fails().stderr.contains("no job with id no-such-job"));
}

/// `cargo` for a project outside this workspace: none of this test's cargo
/// settings, a target directory kept between runs.
fn outside_cargo(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key.starts_with("RUSTC") || key == "RUSTFLAGS" {
            cmd.env_remove(&key);
        }
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new");
    cmd.current_dir(dir).env("CARGO_TARGET_DIR", target);
    cmd
}

#[test]
fn plugin_new_makes_a_project_outside_any_checkout_that_builds_tests_and_runs_as_a_step() {
    let env = Env::new();
    let made = env.command().current_dir(env.dir.path()).args(["plugin", "new", "hello-check", "--json"]).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    let project = env.dir.path().join("hello-check");
    for file in ["Cargo.toml", "src/lib.rs", "context.json", "README.md", "weir-guest/Cargo.toml", "weir-guest/wit/types.wit", "weir-guest/wit/worlds.wit"] {
        assert!(project.join(file).is_file(), "{file} was not written");
    }
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("cargo build --release --target wasm32-wasip2"), "{readme}");
    // The README's build command, in a directory that knows nothing of weir's repository.
    let built = outside_cargo(&project).args(["build", "--release", "--target", "wasm32-wasip2"]).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new/wasm32-wasip2/release/hello_check.wasm");
    assert!(made["builds"].as_str().unwrap().ends_with("hello_check.wasm"));
    let wasm_path = path(&wasm).to_string();
    let tested = env.run(&["plugin", "test", &wasm_path, "--context", path(&project.join("context.json")), "--json"]).ok().json();
    assert_eq!((tested["outcome"].as_str(), tested["notes"][0].as_str()), (Some("ok"), Some("checked by hello-check")), "{tested}");
    // As a step on a real database.
    env.run(&["plugin", "add", "hello-check", &wasm_path]).ok();
    env.run(&["table", "create", "contact", "--column", "name:text"]).ok();
    env.run(&["step", "add", "hello", "--plugin", "hello-check", "--message", "create", "--table", "contact", "--stage", "pre-operation"]).ok();
    let created = env.run(&["record", "create", "contact", r#"{"name": "Ada"}"#]).ok();
    assert!(created.stderr.contains("note: hello-check: checked by hello-check"), "{}", created.stderr);
    let blank = env.run(&["record", "create", "contact", r#"{"name": " "}"#]).fails();
    assert!(blank.stderr.contains("hello-check: the name must not be blank"), "{}", blank.stderr);
    // Measured on a table made from a record, as an author would start.
    let bench = [
        "bench",
        "--only",
        "languages",
        "--component",
        &format!("hello={wasm_path}"),
        "--table",
        "person",
        "--record",
        r#"{"name": "Ada", "age": 36}"#,
        "--json",
    ];
    let figures = env.run(&bench).ok().json();
    assert!(figures["lang_hello_create_us"].as_f64().is_some_and(|us| us > 0.0), "{figures}");
    let refused =
        env.run(&["bench", "--only", "languages", "--component", &format!("hello={wasm_path}"), "--table", "person", "--record", r#"{"name": " "}"#]).fails();
    assert!(refused.stderr.contains("--component hello") && refused.stderr.contains("the name must not be blank"), "{}", refused.stderr);
    // Refusals are clear.
    let again = env.command().current_dir(env.dir.path()).args(["plugin", "new", "hello-check"]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let cobol = env.command().current_dir(env.dir.path()).args(["plugin", "new", "old", "--lang", "cobol"]).output().unwrap();
    assert_eq!(cobol.status.code(), Some(2), "an unknown language is a usage error");
    assert!(String::from_utf8_lossy(&cobol.stderr).contains("[possible values: rust, python, js]"), "{}", String::from_utf8_lossy(&cobol.stderr));
}

/// The outside author's path for a workflow in Rust: `plugin new --world
/// workflow`, built outside any checkout; its first run saves its state (a
/// serde type) and waits, `--save-state` keeps it, `--state` resumes from it;
/// as a step it waits and resumes; `bench --component` measures it in its
/// own layout.
#[test]
fn a_rust_workflow_from_plugin_new_saves_state_waits_and_resumes() {
    let env = Env::new();
    let made = env.command().current_dir(env.dir.path()).args(["plugin", "new", "follow-up", "--world", "workflow", "--json"]).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let project = env.dir.path().join("follow-up");
    let built = outside_cargo(&project).args(["build", "--release", "--target", "wasm32-wasip2"]).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new/wasm32-wasip2/release/follow_up.wasm");
    let (wasm, state) = (path(&wasm).to_string(), env.dir.path().join("state.bin"));
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("--save-state state.bin") && readme.contains("--context resumed.json --state state.bin"), "{readme}");
    let first = env.run(&["plugin", "test", &wasm, "--context", path(&project.join("context.json")), "--save-state", path(&state), "--json"]).ok().json();
    assert_eq!(first["step"]["state"]["json"], json!({"record": "c1"}), "the report shows the saved state: {first}");
    assert!(first["step"]["wait_until"].is_string(), "{first}");
    assert_eq!(std::fs::read(&state).unwrap(), br#"{"record":"c1"}"#);
    let resumed = env.run(&["plugin", "test", &wasm, "--context", path(&project.join("resumed.json")), "--state", path(&state), "--json"]).ok().json();
    assert_eq!(resumed["step"], json!({"done": {"seen": "c1"}}), "{resumed}");
    let nothing =
        env.run(&["plugin", "test", &wasm, "--context", path(&project.join("resumed.json")), "--state", path(&state), "--save-state", "x.bin"]).fails();
    assert!(nothing.stderr.contains("saved no state"), "{}", nothing.stderr);
    // As a step: it waits about a second, then resumes and finishes.
    env.run(&["plugin", "add", "follow-up", &wasm]).ok();
    env.run(&["table", "create", "contact", "--column", "name:text"]).ok();
    let step = ["step", "add", "follow", "--plugin", "follow-up", "--message", "create", "--table", "contact", "--stage", "post-operation", "--mode", "async"];
    env.run(&step).ok();
    let id = env.run(&["record", "create", "contact", r#"{"name": "Ada"}"#]).ok().json()["id"].as_str().unwrap().to_string();
    env.run(&["work", "--until-idle"]).ok();
    wait_for("the follow-up to resume", || {
        env.run(&["work", "--until-idle"]).ok();
        env.run(&["jobs", "list", "--json"]).ok().json()[0]["status"] == "Succeeded"
    });
    let job = env.run(&["jobs", "list", "--json"]).ok().json()[0].clone();
    assert_eq!(job["result"], json!({"seen": id}), "{job}");
    // Measured in its own layout (a workflow: per job drained).
    let ctx = env.write("bench-context.json", br#"{"mode": "async", "input": {"n": 1}}"#);
    let figures = env.run(&["bench", "--only", "languages", "--component", &format!("follow-up={wasm}"), "--context", path(&ctx), "--json"]).ok().json();
    assert!(figures["lang_follow-up_load_s"].as_f64().unwrap() > 0.0, "{figures}");
    assert!(figures["lang_follow-up_job_us"].as_f64().unwrap() > 0.0, "{figures}");
}
