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

/// Item 2 (medium): an outcome the store would not take (a full disk, here a
/// trigger refusing every completion) left its job InProgress for as long as
/// the worker lived: the heartbeat kept renewing the lease the log said would
/// expire. Now the recorder tries again for about a lease, then gives the
/// outcome up: the heartbeat stops renewing that lease, it expires (a lost
/// attempt), the job runs again, and once the store takes outcomes again it
/// ends. The worker's summary counts the unrecorded outcome apart, never as
/// a success.
#[test]
fn an_outcome_that_cannot_be_recorded_lets_its_lease_expire_and_is_not_counted() {
    let env = Env::new();
    env.add_example("notify");
    let id = env.run(&["background", "submit", "notify", "--input", "{}", "--json"]).ok().json()["id"].as_str().unwrap().to_string();
    let conn = env.sql();
    conn.execute_batch(if env.is_postgres() {
        "CREATE FUNCTION refuse_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.statecode = 3 THEN RAISE EXCEPTION 'simulated: database or disk is full'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_outcomes BEFORE UPDATE OF statecode ON weir_jobs FOR EACH ROW EXECUTE FUNCTION refuse_outcomes();"
    } else {
        "CREATE TRIGGER refuse_outcomes BEFORE UPDATE OF statecode ON weir_jobs WHEN NEW.statecode = 3
         BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END;"
    })
    .unwrap();
    let work = env
        .command()
        .args(["work", "--workers", "1", "--lease-ms", "1000", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first attempt's lease runs out: its attempt is kept as lost.
    let lost =
        || -> i64 { conn.query_row("SELECT COUNT(*) FROM weir_job_attempts WHERE job_id = ?1 AND outcome = 'lost'", [id.as_str()], |r| r.get(0)).unwrap() };
    crate::common::wait_for("the unrecorded attempt's lease to expire", || lost() >= 1);
    conn.execute_batch(if env.is_postgres() { "DROP TRIGGER refuse_outcomes ON weir_jobs" } else { "DROP TRIGGER refuse_outcomes" }).unwrap();
    crate::common::wait_for("the job to end once outcomes are taken", || env.run(&["jobs", "show", &id, "--json"]).ok().json()["status"] == "Succeeded");
    std::process::Command::new("kill").arg(work.id().to_string()).status().unwrap();
    let out = work.wait_with_output().unwrap();
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["succeeded"], 1, "only the recorded success counts: {stats}");
    assert!(stats["unrecorded"].as_u64().unwrap() >= 1, "the given-up outcome is counted apart: {stats}");
    assert_eq!(
        stats["attempts"].as_u64().unwrap(),
        stats["succeeded"].as_u64().unwrap()
            + stats["retried_or_failed"].as_u64().unwrap()
            + stats["unrecorded"].as_u64().unwrap()
            + stats["lost_leases"].as_u64().unwrap(),
        "every attempt is counted once: {stats}"
    );
}
