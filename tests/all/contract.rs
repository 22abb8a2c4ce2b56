//! The plug-in contract, `weir:plugin@0.3.0`, through real guests: exact
//! decimals from the CLI and HTTP through a plug-in and back, notes, shared
//! variables, identity, typed references, rich queries and waits on a query;
//! and components built against 0.1 before it (kept as fixtures in
//! `tests/fixtures/v0.1/`, never rebuilt) running unchanged with 0.1 semantics.

use serde_json::{Value, json};

use crate::common::{Env, Server, q};

const BIG: &str = "12345678901234567.89";

fn fixture(env: &Env, name: &str, file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v0.1").join(file);
    env.run(&["plugin", "add", name, path.to_str().unwrap()]).ok();
}

/// The `seen: {...}` (or `query: {...}`) lines contract-probe logged, newest trace first.
fn probe_lines(env: &Env, prefix: &str) -> Vec<Value> {
    let traces = env.run(&["trace", "list", "--json", "--filter", "plugin eq 'contract-probe'"]).ok().json();
    let mut out = Vec::new();
    for t in traces.as_array().unwrap() {
        for l in t["lines"].as_array().unwrap() {
            if let Some(rest) = l["message"].as_str().and_then(|m| m.strip_prefix(prefix)) {
                out.push(serde_json::from_str(rest).unwrap());
            }
        }
    }
    out
}

#[test]
fn decimals_round_trip_exactly_through_the_cli_http_filters_and_a_plug_in() {
    let env = Env::new();
    env.run(&["table", "create", "deal", "--column", "name:text", "--column", "amount:decimal"]).ok();
    env.add_example("contract-probe");
    // A plug-in that multiplies: 0.1 × 0.3 is 0.03, not 0.030000000000000006.
    let config = json!({"scale": {"column": "amount", "by": "0.3"}}).to_string();
    let add = ["step", "add", "probe", "--plugin", "contract-probe", "--message", "create", "--table", "deal", "--stage", "pre-operation"];
    env.run(&[&add[..], &["--config", &config, "--trace", "all", "--when", "name eq 'scaled'"]].concat()).ok();
    let scaled = env.run(&["record", "create", "deal", r#"{"name": "scaled", "amount": 0.1}"#]).ok();
    assert!(scaled.stdout.contains("\"amount\": 0.03") || scaled.stdout.contains("\"amount\":0.03"), "{}", scaled.stdout);
    assert_eq!(scaled.json()["amount"].to_string(), "0.03");

    // The CLI: as given, to the last digit, and the plug-in saw the same text.
    let big = env.run(&["record", "create", "deal", &format!(r#"{{"name": "big", "amount": {BIG}}}"#)]).ok().json();
    assert_eq!(big["amount"].to_string(), BIG);
    let got = env.run(&["record", "get", "deal", big["id"].as_str().unwrap()]).ok();
    assert!(got.stdout.contains(BIG), "{}", got.stdout);
    env.run(&["record", "create", "deal", r#"{"name": "next", "amount": 12345678901234567.88}"#]).ok();
    env.run(&["record", "create", "deal", r#"{"name": "cents", "amount": "10.50"}"#]).ok();
    let seen = probe_lines(&env, "seen: ");
    assert_eq!(seen.last().unwrap()["fields"]["amount"]["decimal"], "0.1", "{seen:?}");

    // Filters and order compare exactly: as floats these two are equal.
    let names = |filter: &str| -> Vec<String> {
        let rows = env.run(&["record", "query", "deal", "--filter", filter]).ok().json();
        rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&format!("amount eq {BIG}")), vec!["big"]);
    assert_eq!(names("amount gt 12345678901234567.88"), vec!["big"]);
    assert_eq!(names("amount eq 10.5 or amount eq 0.030"), vec!["scaled", "cents"]);
    assert_eq!(names("amount lt 1e3 and amount gt 0.0299999999999999999999999"), vec!["scaled", "cents"]);
    let bad = env.run(&["record", "query", "deal", "--filter", "amount eq 1.00000000000000000000000000001"]).fails();
    assert!(bad.stderr.contains("exact decimal"), "{}", bad.stderr);

    // HTTP: a JSON number in, the same number out.
    let s = Server::start(&env, &[]);
    let body = format!(r#"{{"name": "http", "amount": {BIG}}}"#);
    let created = s.call("POST", "/api/data/deal", Some(body.as_bytes()), Some(crate::common::TOKEN));
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(created.text.contains(&format!("\"amount\":{BIG}")), "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    let read = s.get(&format!("/api/data/deal/{id}"));
    assert!(read.text.contains(&format!("\"amount\":{BIG}")), "{}", read.text);
    let sorted = s.get(&format!("/api/data/deal?$orderby=amount%20desc&$filter={}", q("amount gt 100")));
    let order: Vec<&str> = sorted.body["value"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(order, vec!["big", "http", "next"], "{}", sorted.text);
}

#[test]
fn a_0_1_component_built_before_0_2_still_runs_with_0_1_semantics() {
    let env = Env::new();
    env.crm_tables(&[]);
    env.run(&["table", "create", "expense", "--column", "amount:decimal", "--column", "approved:boolean", "--column", "state:text"]).ok();
    fixture(&env, "credit-check", "credit_check.wasm");
    fixture(&env, "set-defaults", "set_defaults.wasm");
    fixture(&env, "approval", "approval.wasm");
    fixture(&env, "bulk-update", "bulk_update.wasm");
    env.add_example("contract-probe");
    let plugins = env.run(&["plugin", "list", "--json"]).ok().json();
    let contract = |name: &str| plugins.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["contract"].clone();
    assert_eq!((contract("credit-check"), contract("approval"), contract("contract-probe")), (json!("0.1"), json!("0.1"), json!("0.3")));
    assert!(env.run(&["plugin", "list"]).ok().stdout.contains("CONTRACT"));

    // Sync: reads through `records` (a reference as a bare id), decimals as floats.
    let step = |args: &[&str]| env.run(&[&["step", "add"][..], args].concat()).ok();
    step(&["credit", "--plugin", "credit-check", "--message", "create", "--table", "opportunity", "--stage", "pre-operation", "--grant", "account:read"]);
    step(&["defaults", "--plugin", "set-defaults", "--message", "create", "--table", "opportunity", "--stage", "pre-operation", "--rank", "2"]);
    let account = env.run(&["record", "create", "account", r#"{"name": "Contoso", "creditlimit": 100}"#]).ok().json();
    let acct = account["id"].as_str().unwrap();
    let ok = env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 99.5, "customer": "{acct}"}}"#)]).ok().json();
    assert_eq!((ok["amount"].to_string().as_str(), ok["priority"].as_str()), ("99.5", Some("normal")), "{ok}");
    let refused = env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 5000, "customer": "{acct}"}}"#)]).fails();
    assert!(refused.stderr.contains("credit-check: amount 5000 exceeds the credit limit 100 of account Contoso"), "{}", refused.stderr);

    // Async: a 0.1 workflow waits for a record and resumes.
    crate::waits_cli::approval_step(&env, None);
    let expense = env.run(&["record", "create", "expense", r#"{"amount": 12.25}"#]).ok().json();
    env.run(&["work", "--until-idle"]).ok();
    let jobs = env.run(&["jobs", "list", "--json"]).ok().json();
    assert_eq!(jobs[0]["status"], "Waiting", "{jobs}");
    env.run(&["record", "update", "expense", expense["id"].as_str().unwrap(), r#"{"approved": true}"#]).ok();
    env.run(&["work", "--until-idle"]).ok();
    let done = env.run(&["jobs", "show", jobs[0]["id"].as_str().unwrap(), "--json"]).ok().json();
    assert_eq!((done["status"].as_str(), done["result"]["state"].as_str()), (Some("Succeeded"), Some("paid")), "{done}");
    // A 0.1 background operation writes a decimal as a float: stored as that float prints.
    let input = json!({"table": "expense", "set": {"amount": 0.5}}).to_string();
    env.run(&["background", "submit", "bulk-update", "--input", &input, "--grant", "expense:write"]).ok();
    env.run(&["work", "--until-idle"]).ok();
    let after = env.run(&["record", "get", "expense", expense["id"].as_str().unwrap()]).ok().json();
    assert_eq!(after["amount"].to_string(), "0.5");
}

#[test]
fn notes_shared_variables_identity_and_typed_references_reach_plug_ins_and_callers() {
    let env = Env::new();
    env.crm_tables(&[]);
    env.add_example("credit-check");
    env.add_example("contract-probe");
    let step = |args: &[&str]| env.run(&[&["step", "add"][..], args].concat()).ok();
    step(&["credit", "--plugin", "credit-check", "--message", "create", "--table", "opportunity", "--stage", "pre-operation", "--grant", "account:read"]);
    let later = json!({"set": {"seen_by_probe": true}, "note": "probed"}).to_string();
    let on_opportunity = ["--message", "create", "--table", "opportunity", "--stage", "post-operation", "--trace", "all"];
    step(&[&["probe", "--plugin", "contract-probe", "--config", &later][..], &on_opportunity].concat());
    step(&[&["later", "--plugin", "contract-probe", "--mode", "async"][..], &on_opportunity].concat());
    let account = env.run(&["record", "create", "account", r#"{"name": "Contoso", "creditlimit": 100}"#]).ok().json();
    let acct = account["id"].as_str().unwrap();

    // Notes: on stderr, and in the JSON as `@notes`, prefixed with the plug-in.
    let created = env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 95, "customer": "{acct}"}}"#)]).ok();
    let note = "credit-check: amount 95 uses more than 90% of the credit limit 100";
    assert!(created.stderr.contains(&format!("note: {note}")), "{}", created.stderr);
    assert_eq!(created.json()["@notes"], json!([note, "contract-probe: probed"]));
    let quiet = env.run(&["record", "create", "opportunity", &format!(r#"{{"amount": 5, "customer": "{acct}"}}"#)]).ok();
    assert!(quiet.json().get("@notes").unwrap().as_array().unwrap().len() == 1 && !quiet.stderr.contains("credit-check:"), "{}", quiet.stderr);

    // Shared variables and identity, as the sync post-operation step saw them.
    let seen = probe_lines(&env, "seen: ");
    let first = seen.iter().rev().find(|s| s["step"] == "probe").unwrap();
    assert_eq!(first["variables"], json!({"credit_limit": "100"}), "set by credit-check at pre-operation: {first}");
    assert_eq!((first["plugin"].as_str(), first["plugin_version"].as_u64()), (Some("contract-probe"), Some(1)));
    let op = first["operation_id"].as_str().unwrap().to_string();
    assert!(!op.is_empty() && op != first["correlation_id"].as_str().unwrap());
    // A typed reference: the table with the id.
    assert_eq!(first["fields"]["customer"], json!({"table": "account", "id": acct}));

    // The job the operation queued sees its variables (the probe's too) and its operation.
    env.run(&["work", "--until-idle"]).ok();
    let jobs = env.run(&["jobs", "list", "--json", "--filter", "step eq 'later'"]).ok().json();
    let result = &jobs.as_array().unwrap().iter().find(|j| j["result"]["operation_id"] == op.as_str()).expect("the first operation's job")["result"];
    assert_eq!(result["variables"], json!({"credit_limit": "100", "seen_by_probe": true}));
    assert_eq!((result["step"].as_str(), result["plugin"].as_str()), (Some("later"), Some("contract-probe")));

    // HTTP returns the notes with the record.
    let s = Server::start(&env, &[]);
    let body = format!(r#"{{"amount": 99, "customer": "{acct}"}}"#);
    let r = s.call("POST", "/api/data/opportunity", Some(body.as_bytes()), Some(crate::common::TOKEN));
    assert_eq!(r.body["@notes"][0], "credit-check: amount 99 uses more than 90% of the credit limit 100", "{}", r.text);
    drop(s);

    // A plug-in writing a reference names its table: the wrong one is refused.
    env.run(&["table", "create", "link", "--column", "to:ref:account"]).ok();
    let link = |table: &str| json!({"link": {"column": "to", "table": table, "id": acct}}).to_string();
    let on_link = ["--message", "create", "--table", "link", "--stage", "pre-operation"];
    step(&[&["linker", "--plugin", "contract-probe", "--config", &link("account")][..], &on_link].concat());
    let linked = env.run(&["record", "create", "link", "{}"]).ok().json();
    assert_eq!(linked["to"], acct);
    env.run(&["step", "update", "linker", "--config", &link("opportunity")]).ok();
    let wrong = env.run(&["record", "create", "link", "{}"]).fails();
    assert!(wrong.stderr.contains("refers to table account: a plug-in gave it a reference to table opportunity"), "{}", wrong.stderr);
}

#[test]
fn queries_order_page_project_and_count_and_a_workflow_waits_on_a_query() {
    let env = Env::new();
    env.run(&["table", "create", "deal", "--column", "name:text", "--column", "amount:decimal"]).ok();
    env.run(&["table", "create", "trigger", "--column", "name:text"]).ok();
    env.run(&["table", "create", "approval", "--column", "expense:text"]).ok();
    env.add_example("contract-probe");
    for (name, amount) in [("a", "5"), ("b", "50.5"), ("c", "7"), ("d", "500"), ("e", "0.5")] {
        env.run(&["record", "create", "deal", &format!(r#"{{"name": "{name}", "amount": {amount}}}"#)]).ok();
    }
    let query =
        json!({"query": {"table": "deal", "filter": "amount gt 1", "order_by": [["amount", true]], "columns": ["name"], "skip": 1, "top": 2, "count": true}});
    let args = ["step", "add", "q", "--plugin", "contract-probe", "--message", "create", "--table", "trigger", "--stage", "pre-operation"];
    env.run(&[&args[..], &["--config", &query.to_string(), "--grant", "deal:read", "--trace", "all"]].concat()).ok();
    env.run(&["record", "create", "trigger", "{}"]).ok();
    let result = probe_lines(&env, "query: ").pop().unwrap();
    let names: Vec<String> = result["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| env.run(&["record", "get", "deal", id.as_str().unwrap()]).ok().json()["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["b", "c"], "by amount, descending, after skipping d: {result}");
    assert_eq!(result["count"], 4, "every match, not the page");
    assert_eq!(result["fields"], json!([["name"], ["name"]]), "only the asked-for columns");

    // Waits on a query: until an approval for E1 exists.
    let wait = |expense: &str| {
        let input = json!({"wait": {"table": "approval", "filter": format!("expense eq '{expense}'"), "timeout_ms": 600_000}}).to_string();
        let out = env.run(&["background", "submit", "contract-probe", "--input", &input, "--grant", "approval:read", "--json"]).ok().json();
        out["id"].as_str().unwrap().to_string()
    };
    let status = |id: &str| env.run(&["jobs", "show", id, "--json"]).ok().json();
    let first = wait("E1");
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(status(&first)["status"], "Waiting");
    assert_eq!(status(&first)["wait"]["condition"], "expense eq 'E1'");
    env.run(&["record", "create", "approval", r#"{"expense": "E2"}"#]).ok();
    assert_eq!(status(&first)["status"], "Waiting", "another expense's approval does not match");
    env.run(&["record", "create", "approval", r#"{"expense": "E1"}"#]).ok();
    env.run(&["work", "--until-idle"]).ok();
    let done = status(&first);
    assert_eq!((done["status"].as_str(), done["result"]["wake"].as_str()), (Some("Succeeded"), Some("condition-met")), "{done}");
    // One that already matches when the job starts waiting wakes at once.
    let second = wait("E2");
    env.run(&["work", "--until-idle"]).ok();
    assert_eq!(status(&second)["result"]["wake"], "condition-met");
    // A bad filter is refused when the job asks to wait.
    let input = json!({"wait": {"table": "approval", "filter": "nope eq 1"}}).to_string();
    let bad = env.run(&["background", "submit", "contract-probe", "--input", &input, "--grant", "approval:read", "--json"]).ok().json();
    env.run(&["work", "--until-idle"]).ok();
    let failed = status(bad["id"].as_str().unwrap());
    assert!(failed["error"].as_str().unwrap().contains("unknown field `nope`"), "{failed}");
}

#[test]
fn a_database_from_before_exact_decimals_is_upgraded_keeping_every_value() {
    let env = Env::new();
    if env.is_postgres() {
        // An SQLite file's upgrade: PostgreSQL databases began with exact decimals.
        return;
    }
    env.run(&["table", "create", "deal", "--column", "name:text", "--column", "amount:decimal"]).ok();
    env.add_example("credit-check");
    // Put the database back to schema 9: decimal columns REAL, holding floats
    // (one that float arithmetic produced), plug-ins without a contract.
    {
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        conn.execute_batch(
            "DROP TABLE data_deal;
             CREATE TABLE data_deal (id TEXT PRIMARY KEY NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL, name TEXT, amount REAL);
             INSERT INTO data_deal VALUES ('d1', 1, 2, 'float', 0.030000000000000006), ('d2', 3, 4, 'round', 12.5), ('d3', 5, 6, 'none', NULL);
             DROP INDEX weir_jobs_children;
             ALTER TABLE weir_jobs DROP COLUMN parent_id;
             ALTER TABLE weir_jobs DROP COLUMN child_key;
             ALTER TABLE weir_jobs DROP COLUMN earlier_failures;
             DROP TABLE weir_idempotency;
             DROP INDEX weir_jobs_unique;
             ALTER TABLE weir_jobs DROP COLUMN unique_key;
             DROP TABLE weir_tokens;
             DROP TABLE weir_privileges;
             DROP TABLE weir_audit;
             ALTER TABLE weir_jobs DROP COLUMN asked_by;
             DROP INDEX weir_jobs_lanes;
             ALTER TABLE weir_jobs DROP COLUMN queue;
             ALTER TABLE weir_jobs DROP COLUMN priority;
             ALTER TABLE weir_jobs DROP COLUMN lane;
             ALTER TABLE weir_step_health DROP COLUMN holds;
             ALTER TABLE weir_step_health DROP COLUMN probe_job;
             DROP TABLE weir_limits;
             DROP TABLE weir_nodes;
             DROP INDEX weir_jobs_wait_query;
             DROP INDEX weir_callbacks_job;
             ALTER TABLE weir_jobs DROP COLUMN wait_key_column;
             ALTER TABLE weir_jobs DROP COLUMN wait_key_value;
             ALTER TABLE weir_plugins DROP COLUMN contract;
             PRAGMA user_version = 9;",
        )
        .unwrap();
        let ty: String = conn.query_row("SELECT typeof(amount) FROM data_deal WHERE id = 'd1'", [], |r| r.get(0)).unwrap();
        assert_eq!(ty, "real");
    }
    let d1 = env.run(&["record", "get", "deal", "d1"]).ok();
    assert!(d1.stdout.contains("0.030000000000000006"), "the float as it printed before: {}", d1.stdout);
    assert_eq!(env.run(&["record", "get", "deal", "d2"]).ok().json()["amount"].to_string(), "12.5");
    assert!(env.run(&["record", "get", "deal", "d3"]).ok().json()["amount"].is_null());
    let d2 = env.run(&["record", "get", "deal", "d2"]).ok().json();
    assert_eq!((d2["created_at"].as_str(), d2["modified_at"].as_str()), (Some("1970-01-01T00:00:00.003Z"), Some("1970-01-01T00:00:00.004Z")));
    // Exact from now on: stored as text, compared as decimals.
    let rows = env.run(&["record", "query", "deal", "--filter", "amount gt 0.03 and amount lt 0.0300000000000001"]).ok().json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let ty: String = conn.query_row("SELECT typeof(amount) FROM data_deal WHERE id = 'd1'", [], |r| r.get(0)).unwrap();
    assert_eq!(ty, "text");
    let plugins = env.run(&["plugin", "list", "--json"]).ok().json();
    assert_eq!(plugins[0]["contract"], "0.1", "versions stored before contracts were recorded are 0.1 (this one is 0.2, but could not be told apart)");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]

    /// Any decimal of up to 28 digits, at any scale and sign, is stored, read
    /// back, shown as JSON and passed through a plug-in (which multiplies it by
    /// one) without changing a digit.
    #[test]
    fn any_decimal_round_trips_through_the_store_json_and_a_plug_in(digits in "[1-9][0-9]{0,27}", scale in 0usize..28, negative in proptest::prelude::any::<bool>()) {
        use std::sync::OnceLock;
        static STORE: OnceLock<(tempfile::TempDir, weir::Weir)> = OnceLock::new();
        let (_, weir) = STORE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let weir = weir::Weir::open(dir.path().join("d.db")).unwrap();
            weir.create_table("deal", &[("amount", "decimal"), ("via", "text")]).unwrap();
            weir.add_plugin("contract-probe", weir::examples::wasm("contract-probe").unwrap()).unwrap();
            let config = json!({"scale": {"column": "amount", "by": "1"}});
            let mut step = weir::steps::Step::new("probe", "contract-probe", weir::steps::MessageKind::Create, "deal", weir::steps::StageKind::PreOperation, weir::steps::ModeKind::Sync);
            step.config = config;
            step.when = Some("via eq 'plug-in'".into());
            weir.add_step(&step).unwrap();
            (dir, weir)
        });
        let scale = scale.min(digits.len());
        let (int, frac) = digits.split_at(digits.len() - scale);
        let text = format!("{}{}{}{}", if negative { "-" } else { "" }, if int.is_empty() { "0" } else { int }, if frac.is_empty() { "" } else { "." }, frac);
        for via in ["store", "plug-in"] {
            let body: Value = serde_json::from_str(&format!(r#"{{"amount": {text}, "via": "{via}"}}"#)).unwrap();
            let created = weir.pipeline().create("system", "deal", &body).unwrap();
            let back = weir.get("deal", &created.id).unwrap();
            proptest::prop_assert_eq!(back.to_json()["amount"].to_string(), text.clone(), "{}", via);
            proptest::prop_assert_eq!(created.to_json()["amount"].to_string(), text.clone());
        }
    }
}
