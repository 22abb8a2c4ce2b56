//! Several weir nodes on one database (the crash suite has the several-node
//! kill -9 test): a schedule fires once per tick however many nodes run it,
//! and a catalogue change made through one node takes effect on another
//! within a second; an operator's bulk actions race two nodes' claims and
//! outcomes and every job still ends once, as it should. On PostgreSQL
//! (`WEIR_TEST_PG`) the nodes are what the "Several nodes" guide describes;
//! on SQLite, processes sharing one file.
//! And the way there: `weir migrate` copies an SQLite database to PostgreSQL.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Env, Server};

#[test]
fn a_schedule_fires_once_per_tick_with_three_nodes_running() {
    let env = Env::new();
    env.add_example("notify");
    env.run(&["step", "add", "tick", "--plugin", "notify", "--schedule", "* * * * * *"]).ok();
    let started = Instant::now();
    let mut nodes: Vec<_> = (0..3).map(|_| env.command().args(["work", "--workers", "2"]).stdout(Stdio::null()).spawn().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(5500));
    for n in &mut nodes {
        // SIGTERM: a graceful stop.
        std::process::Command::new("kill").arg(n.id().to_string()).status().unwrap();
    }
    for n in &mut nodes {
        assert!(n.wait().unwrap().success());
    }
    let ran_for = started.elapsed().as_secs();
    let jobs = env.run(&["jobs", "list", "--json", "--filter", "kind eq 'schedule'"]).ok().json();
    let jobs = jobs.as_array().unwrap();
    // The first tick is the one after the first sight of the schedule: about
    // one a second after it, and never one per node.
    assert!((3..=ran_for as usize + 1).contains(&jobs.len()), "{} jobs in {ran_for} s with three nodes: {jobs:?}", jobs.len());
    let seconds: HashSet<&str> = jobs.iter().map(|j| &j["created_at"].as_str().unwrap()[..19]).collect();
    assert_eq!(seconds.len(), jobs.len(), "two jobs in one second: a tick fired twice: {jobs:?}");
}

#[test]
fn a_catalog_change_through_one_node_takes_effect_on_another_within_a_second() {
    let env = Env::new();
    env.run(&["table", "create", "order", "--column", "name:text", "--column", "priority:text"]).ok();
    env.add_example("set-defaults");
    let a = Server::start(&env, &[]);
    let create = || a.post("/api/data/order", &json!({"name": "x"}));
    let first = create();
    assert_eq!((first.status, &first.body["priority"]), (201, &json!(null)), "{}", first.text);

    // Another node adds a sync step: node a runs it on its next create, as
    // soon as the change is committed.
    let b = Server::start(&env, &[]);
    let added = b.post("/api/steps", &json!({"name": "defaults", "plugin": "set-defaults", "message": "create", "table": "order", "stage": "pre-operation"}));
    assert_eq!(added.status, 201, "{}", added.text);
    let changed = Instant::now();
    let mut seen = None;
    while changed.elapsed() < Duration::from_secs(1) {
        if create().body["priority"] == "normal" {
            seen = Some(changed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.expect("node a ran the step added through node b within a second");
    eprintln!("a step added through one node ran on the other after {seen:?}");

    // And disabling it through b stops it on a.
    let disabled = b.call("POST", "/api/steps/defaults/disable", Some(b"{}"), Some(crate::common::TOKEN));
    assert_eq!(disabled.status, 200, "{}", disabled.text);
    let changed = Instant::now();
    while create().body["priority"] == "normal" {
        assert!(changed.elapsed() < Duration::from_secs(1), "node a still runs the step disabled through node b");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs PostgreSQL (the copy's target): run with WEIR_TEST_PG set (.ci/run's PostgreSQL pass, --include-ignored)"]
fn migrate_copies_the_demo_s_database_to_postgres_and_refuses_a_non_empty_target() {
    let env = Env::new();
    assert!(env.is_postgres(), "needs WEIR_TEST_PG");
    let source = env.dir.path().join("demo.db");
    let on = |db: &Path, args: &[&str]| {
        let out = env.command_on(db).args(args).output().unwrap();
        assert!(out.status.success(), "weir {args:?} on {}: {}", db.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    on(&source, &["demo"]);
    let copied: serde_json::Value = serde_json::from_str(&on(&source, &["migrate", "--to", env.db().to_str().unwrap(), "--json"])).unwrap();
    assert!(copied["rows"].as_u64().unwrap() > 50, "{copied}");

    // Everything reads back the same on both: the catalogue, every record,
    // every job with its state, attempts and trace.
    let mut listings: Vec<Vec<String>> = vec![
        vec!["table".into(), "list".into(), "--json".into()],
        vec!["plugin".into(), "list".into(), "--json".into()],
        vec!["step".into(), "list".into(), "--json".into()],
        vec!["user".into(), "list".into(), "--json".into()],
        vec!["jobs".into(), "list".into(), "--json".into()],
    ];
    let tables: serde_json::Value = serde_json::from_str(&on(&source, &["table", "list", "--json"])).unwrap();
    for t in tables.as_array().unwrap() {
        listings.push(vec!["record".into(), "query".into(), t["name"].as_str().unwrap().into()]);
    }
    let jobs: serde_json::Value = serde_json::from_str(&on(&source, &["jobs", "list", "--json"])).unwrap();
    assert!(!jobs.as_array().unwrap().is_empty());
    for j in jobs.as_array().unwrap() {
        listings.push(vec!["jobs".into(), "show".into(), j["id"].as_str().unwrap().into(), "--json".into()]);
    }
    for args in &listings {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(on(&env.db(), &args), on(&source, &args), "weir {args:?} differs after the copy");
    }

    // The copy works: a create runs its steps on PostgreSQL.
    let audits = |db: &Path| serde_json::from_str::<serde_json::Value>(&on(db, &["record", "query", "audit"])).unwrap().as_array().unwrap().len();
    let before = audits(&env.db());
    let account = serde_json::from_str::<serde_json::Value>(&on(&env.db(), &["record", "query", "account"])).unwrap()[0]["id"].as_str().unwrap().to_string();
    on(&env.db(), &["record", "create", "opportunity", &format!(r#"{{"name": "after the copy", "amount": 10, "customer": "{account}"}}"#)]);
    assert_eq!(audits(&env.db()), before + 1, "the post-operation audit step ran on the copy");

    // A second copy into the same database is refused, and changes nothing.
    let again = env.command_on(&source).args(["migrate", "--to", env.db().to_str().unwrap()]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(audits(&env.db()), before + 1);
}

/// (SQLite's connections are files opened in-process; PostgreSQL's are
/// server sessions, each a process to start.)
#[test]
#[ignore = "needs PostgreSQL: run with WEIR_TEST_PG set (.ci/run's PostgreSQL pass, --include-ignored)"]
fn a_node_reuses_its_connections() {
    let env = Env::new();
    assert!(env.is_postgres(), "needs WEIR_TEST_PG");
    let weir = weir::Weir::open(env.db()).unwrap();
    weir.create_table("thing", &[("name", "text")]).unwrap();
    weir.pipeline().create("system", "thing", &json!({"name": "warm"})).unwrap();
    let conn = env.sql();
    let sessions = || -> Vec<i64> {
        conn.prepare("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = sessions();
    for i in 0..200 {
        weir.pipeline().create("system", "thing", &json!({"name": format!("n{i}")})).unwrap();
        assert_eq!(weir.query("thing", Some(&format!("name eq 'n{i}'")), &[], None).unwrap().len(), 1);
    }
    assert_eq!(sessions(), before, "200 creates and reads opened new sessions instead of reusing the pool's");
}

#[test]
fn a_node_older_than_the_schema_refuses_to_start() {
    let env = Env::new();
    env.run(&["table", "list"]).ok();
    // As if a newer weir on another node had upgraded the schema.
    let newer = if env.is_postgres() { "UPDATE weir_schema SET version = version + 1" } else { "PRAGMA user_version = 999" };
    env.sql().execute_batch(newer).unwrap();
    let refused = env.run(&["table", "list"]).fails();
    assert!(refused.stderr.contains("newer than this weir"), "{}", refused.stderr);
}

/// Two nodes drain a queue while an operator cancels running jobs, pauses
/// ready ones and resumes them, in bulk, over and over. On PostgreSQL the
/// nodes claim and record outcomes with row locks only while the operator's
/// actions take the write lock: every action still succeeds, an operator's
/// cancel wins over the outcome it races, and every job ends once, as
/// Succeeded or Canceled, having run again only after a pause that caught
/// it running.
#[test]
fn operators_act_in_bulk_while_two_nodes_drain_the_queue() {
    const N: usize = 400;
    let env = Env::new();
    env.add_example("slow");
    let weir = weir::Weir::open(env.db()).unwrap();
    let version = weir.list_plugins().unwrap().into_iter().find(|p| p.name == "slow").unwrap().version;
    let mut job = crate::jobs_lib::new_job("drain");
    // 10 ms of work each: a few seconds of draining (longer than a bulk
    // action over every job takes), with a few jobs running on each node at
    // any moment.
    (job.plugin, job.plugin_version, job.context.config) = ("slow".into(), version, json!({"ms": 10}));
    let conn = weir.db().connect().unwrap();
    let tx = conn.transaction().unwrap();
    for _ in 0..N {
        weir::jobs::enqueue(&tx, &job).unwrap();
    }
    tx.commit().unwrap();
    let mut nodes: Vec<_> =
        (0..2).map(|_| env.command().args(["work", "--workers", "2"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()).collect();
    let count =
        |filter: &str| -> i64 { env.run(&["jobs", "bulk", "cancel", "--filter", filter, "--dry-run", "--json"]).ok().json()["matched"].as_i64().unwrap() };
    let mut canceled_running = 0;
    let started = Instant::now();
    loop {
        let c = env.run(&["jobs", "bulk", "cancel", "--filter", "statecode eq 2", "--json"]).ok().json();
        canceled_running += c["applied"].as_i64().unwrap();
        let p = env.run(&["jobs", "bulk", "pause", "--filter", "statecode eq 0", "--json"]).ok().json();
        let r = env.run(&["jobs", "bulk", "resume", "--filter", "statuscode eq 11", "--json"]).ok().json();
        // A job may finish between the selection and the action (skipped:
        // it has completed), but never change between the action's read of
        // its status and its write.
        for answer in [&c, &p, &r] {
            assert!(!answer["errors"].to_string().contains("changed meanwhile"), "{answer}");
        }
        // Time for the nodes to claim what was resumed, so the next round
        // finds jobs running.
        std::thread::sleep(Duration::from_millis(50));
        let left = count("statecode ne 3");
        if left == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the queue did not drain in 2 minutes");
    }
    for n in &mut nodes {
        std::process::Command::new("kill").arg(n.id().to_string()).status().unwrap();
    }
    for n in nodes {
        let out = n.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert!(!log.contains("ERROR"), "a node failed to record an outcome: {log}");
    }
    assert!(
        canceled_running > 0,
        "no running job was canceled: the race was not exercised; {}",
        env.run(&["jobs", "groups", "--by", "plugin", "--json"]).ok().stdout
    );
    let ended: Vec<(String, i64, i64, i64, Option<String>)> = env
        .sql()
        .prepare(
            "SELECT CASE statuscode WHEN 30 THEN 'Succeeded' WHEN 32 THEN 'Canceled' ELSE 'other ' || statuscode END, attempts,
                    (SELECT COUNT(*) FROM weir_job_attempts a WHERE a.job_id = j.id AND a.outcome = 'paused'),
                    (SELECT COUNT(*) FROM weir_job_attempts a WHERE a.job_id = j.id AND a.outcome <> 'paused'),
                    error_code
             FROM weir_jobs j WHERE plugin = 'slow'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ended.len(), N);
    let succeeded = ended.iter().filter(|(s, ..)| s == "Succeeded").count();
    let canceled = ended.iter().filter(|(s, ..)| s == "Canceled").count();
    let paused_running: i64 = ended.iter().map(|e| e.2).sum();
    eprintln!("{succeeded} succeeded, {canceled} canceled ({canceled_running} while running), {paused_running} paused while running");
    assert_eq!(succeeded + canceled, N, "every job ends Succeeded or Canceled: {:?}", ended.iter().find(|(s, ..)| s.starts_with("other")));
    assert!(canceled as i64 >= canceled_running, "every running job an operator canceled ends Canceled ({canceled} < {canceled_running})");
    assert!(ended.iter().all(|e| e.3 == 0), "an attempt ended otherwise than by a pause (a retry, a lost lease): {:?}", ended.iter().find(|e| e.3 > 0));
    assert!(
        ended.iter().filter(|(s, ..)| s == "Succeeded").all(|e| e.1 <= 1 + e.2),
        "a job ran more often than its pauses explain: {:?}",
        ended.iter().find(|e| e.0 == "Succeeded" && e.1 > 1 + e.2)
    );
    assert!(ended.iter().filter(|(s, ..)| s == "Canceled").all(|e| e.4.as_deref() == Some("canceled")));
}

/// Two nodes: `weir nodes` lists both; a running job shows its node, lease
/// and elapsed time; after a kill -9 its node is shown gone within two
/// heartbeats (and a margin) with the job it held and its lease end, and
/// the other node takes the job over.
#[test]
fn a_killed_node_is_shown_gone_with_its_job_until_another_takes_it_over() {
    let env = Env::new();
    env.add_example("slow");
    env.run(&["table", "create", "t", "--column", "name:text"]).ok();
    let step = ["step", "add", "long", "--plugin", "slow", "--message", "create", "--table", "t", "--stage", "post-operation", "--mode", "async"];
    env.run(&[&step[..], &["--config", r#"{"ms": 60000}"#, "--timeout-ms", "120000"]].concat()).ok();
    env.run(&["record", "create", "t", r#"{"name": "x"}"#]).ok();
    let node = |env: &Env| env.command().args(["work", "--workers", "1", "--lease-ms", "20000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let nodes = |env: &Env| env.run(&["nodes", "--json"]).ok().json();
    let job = || env.run(&["jobs", "list", "--filter", "step eq 'long'", "--json"]).ok().json()[0].clone();
    let mut a = node(&env);
    crate::common::wait_for("node A to run the job", || job()["status"] == "InProgress");
    let a_id = nodes(&env).as_array().unwrap().iter().find(|n| n["pid"] == a.id()).unwrap()["id"].as_str().unwrap().to_string();
    let id = job()["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let running = env.run(&["jobs", "show", &id, "--json"]).ok().json();
    assert_eq!(running["worker"].as_str(), Some(a_id.as_str()), "{running}");
    assert!(running["elapsed_ms"].as_i64().is_some_and(|ms| ms >= 200), "{running}");
    assert!(running["lease_until"].is_string(), "{running}");
    assert!(env.run(&["jobs", "show", &id]).ok().stdout.contains(&format!("running on:  {a_id}")));
    // The line the plug-in wrote as it began, seen while it still runs.
    crate::common::wait_for("the running attempt's trace line", || {
        let j = env.run(&["jobs", "show", &id, "--json"]).ok().json();
        j["trace"].to_string().contains("working for 60000 ms")
    });
    assert_eq!(env.run(&["jobs", "show", &id, "--json"]).ok().json()["status"], "InProgress");
    let text = env.run(&["jobs", "show", &id]).ok().stdout;
    assert!(text.contains("trace so far:") && text.contains("[info] working for 60000 ms"), "{text}");
    let mut b = node(&env);
    crate::common::wait_for("both nodes listed", || nodes(&env).as_array().unwrap().iter().filter(|n| n["live"] == true).count() == 2);
    let listed = nodes(&env);
    let shown_a = listed.as_array().unwrap().iter().find(|n| n["id"] == a_id.as_str()).unwrap().clone();
    assert_eq!(shown_a["jobs"][0]["id"].as_str(), Some(id.as_str()), "{listed}");
    // kill -9 A.
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    crate::common::wait_for("A shown gone", || nodes(&env).as_array().unwrap().iter().any(|n| n["id"] == a_id.as_str() && n["live"] == false));
    let gone_after = killed.elapsed();
    assert!(gone_after < Duration::from_secs(15), "gone {gone_after:?} after the kill: two 5 s heartbeats and a margin");
    // Gone, still holding its job until the lease (20 s) ends.
    let gone = nodes(&env).as_array().unwrap().iter().find(|n| n["id"] == a_id.as_str()).unwrap().clone();
    assert_eq!(gone["jobs"][0]["id"].as_str(), Some(id.as_str()), "{gone}");
    assert!(gone["jobs"][0]["lease_until"].is_string(), "{gone}");
    let text = env.run(&["nodes"]).ok().stdout;
    assert!(text.contains("GONE") && text.contains(&format!("held {id}")), "{text}");
    // Its job, with its lease end, until B takes it over.
    crate::common::wait_for("B to take the job over", || {
        let j = env.run(&["jobs", "show", &id, "--json"]).ok().json();
        j["status"] == "InProgress" && j["worker"].as_str().is_some_and(|w| w != a_id)
    });
    eprintln!("nodes: A shown gone {gone_after:?} after its kill -9; B took its job over");
    let _ = b.kill();
    let _ = b.wait();
}

/// `--log-format json`: every line on stderr is one JSON object a log
/// collector takes (level, message, target), without colour codes.
#[test]
fn logs_can_be_json_lines() {
    let env = Env::new();
    let mut cmd = env.command();
    cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .env("WEIR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut s = Server::spawn(&mut cmd);
    let mut stderr = s.child.stderr.take().unwrap();
    // Up and answering (its signal handlers set), then asked to stop.
    assert_eq!(s.call("GET", "/api/health", None, None).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap();
    s.child.wait().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().any(|l| l["level"] == "INFO" && l["fields"]["message"].as_str().is_some_and(|m| m.contains("shutting down"))), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes: {text}");
}

/// `/metrics` of two nodes agree on what the database holds: jobs by step,
/// queue and status, retries by step, and the steps the breaker holds.
#[test]
fn two_nodes_report_the_same_database_wide_series() {
    let env = Env::new();
    env.add_example("flaky");
    env.add_example("notify");
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    let step = |name: &str, plugin: &str, queue: &str| {
        let add = ["step", "add", name, "--plugin", plugin, "--message", "create", "--table", "thing", "--stage", "post-operation", "--mode", "async"];
        env.run(&[&add[..], &["--queue", queue, "--max-attempts", "2", "--backoff-ms", "1"]].concat()).ok();
    };
    step("tell", "notify", "default");
    step("wobbly", "flaky", "imports");
    for n in 0..3 {
        env.run(&["record", "create", "thing", &json!({"name": format!("t{n}")}).to_string()]).ok();
    }
    env.run(&["work", "--until-idle"]).ok();
    let hold = "INSERT INTO weir_step_health (step, consecutive_failures, hold_until) VALUES ('wobbly', 6, 9999999999999)
                ON CONFLICT (step) DO UPDATE SET consecutive_failures = 6, hold_until = 9999999999999";
    env.sql().execute(hold, []).unwrap();
    let a = Server::start(&env, &[]);
    let b = Server::start(&env, &[]);
    let shared = |m: &str| -> Vec<String> {
        m.lines()
            .filter(|l| ["weir_jobs_by_step{", "weir_job_retries{", "weir_held_steps ", "weir_step_held_seconds{"].iter().any(|p| l.starts_with(p)))
            .map(|l| {
                // The hold's remaining seconds tick between two reads: compare its presence.
                if l.starts_with("weir_step_held_seconds") { l.split(' ').next().unwrap().to_string() } else { l.to_string() }
            })
            .collect()
    };
    let (ma, mb) = (shared(&a.get("/metrics").text), shared(&b.get("/metrics").text));
    assert_eq!(ma, mb, "both nodes read the same database");
    assert!(ma.contains(&r#"weir_jobs_by_step{step="tell",queue="default",status="Succeeded"} 3"#.to_string()), "{ma:#?}");
    let flaky: i64 = ma
        .iter()
        .filter(|l| l.starts_with(r#"weir_jobs_by_step{step="wobbly",queue="imports""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(flaky, 3, "{ma:#?}");
    let retries = ma.iter().find(|l| l.starts_with(r#"weir_job_retries{step="wobbly"}"#)).expect("flaky's retries");
    assert!(retries.rsplit(' ').next().unwrap().parse::<i64>().unwrap() >= 1, "{retries}");
    assert!(ma.contains(&"weir_held_steps 1".to_string()) && ma.contains(&r#"weir_step_held_seconds{step="wobbly"}"#.to_string()), "{ma:#?}");
}
