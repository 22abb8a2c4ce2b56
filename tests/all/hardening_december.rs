//! What the December attack found (hardening, round 2), each answered by a
//! test that failed on the build it was found on.

use serde_json::json;

use crate::common::Env;

/// Item 1 (high): a workflow with no grant on a table learned, one bit per
/// wait, whether its records matched a filter (an IBAN in ~200 waits), while
/// its `records.query` of the same table was denied. A wait now needs the read
/// grant on its table, like a query: refused with the typed `denied` error
/// before the table or filter is looked at, and nothing is left waiting.
#[test]
fn a_workflow_cannot_wait_on_a_table_it_may_not_read() {
    let env = Env::new();
    env.run(&["table", "create", "customer", "--column", "iban:text"]).ok();
    env.run(&["table", "create", "other", "--column", "x:text"]).ok();
    let victim = env.run(&["record", "create", "customer", r#"{"iban": "DE89370400440532013000"}"#]).ok().json();
    let victim_id = victim["id"].as_str().unwrap().to_string();
    env.add_example("contract-probe");
    let submit = |input: serde_json::Value, grant: &[&str]| {
        let input = input.to_string();
        let args = [&["background", "submit", "contract-probe", "--input", &input, "--json"][..], grant].concat();
        env.run(&args).ok().json()["id"].as_str().unwrap().to_string()
    };
    let show = |id: &str| env.run(&["jobs", "show", id, "--json"]).ok().json();

    // Both kinds of wait, without a grant and with a grant on another table only.
    let query = json!({"wait": {"table": "customer", "filter": "iban gt 'DE5'", "timeout_ms": 600_000}});
    let record = json!({"wait_record": {"table": "customer", "id": victim_id, "condition": "iban gt 'DE5'", "timeout_ms": 600_000}});
    // A wait on a table that does not exist is refused the same way: the
    // error must not tell an ungranted workflow which tables exist.
    let missing = json!({"wait": {"table": "payroll", "filter": "x eq 1", "timeout_ms": 600_000}});
    let hostile = [
        (submit(query.clone(), &[]), "wait-for-query", "customer"),
        (submit(record.clone(), &[]), "wait-for", "customer"),
        (submit(query.clone(), &["--grant", "other:write"]), "wait-for-query", "customer"),
        (submit(missing, &[]), "wait-for-query", "payroll"),
    ];
    env.run(&["work", "--until-idle"]).ok();
    for (id, what, table) in &hostile {
        let job = show(id);
        assert_eq!((job["status"].as_str(), job["error_code"].as_str()), (Some("Failed"), Some("denied")), "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(&format!("cannot {what} on table {table}")) && error.contains(&format!("--grant {table}:read")), "{error}");
        assert_eq!(job["attempts"], 1, "denied is permanent: not retried: {job}");
        assert!(job["wait"].is_null(), "nothing waits: {job}");
    }
    // Nothing is waiting, so a write to the table wakes nobody.
    let waiting = env.run(&["jobs", "list", "--json", "--filter", "statecode eq 1"]).ok().json();
    assert_eq!(waiting, json!([]), "{waiting}");

    // With the read grant (or write, which implies it) both waits work.
    let granted = [submit(query, &["--grant", "customer:read"]), submit(record, &["--grant", "customer:write"])];
    env.run(&["work", "--until-idle"]).ok();
    for id in &granted {
        let job = show(id);
        assert_eq!((job["status"].as_str(), job["result"]["wake"].as_str()), (Some("Succeeded"), Some("condition-met")), "{job}");
    }
}
