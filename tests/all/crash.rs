//! The crash suite: a live `weir serve` takes concurrent creates over HTTP and is
//! killed with SIGKILL at random moments, then restarted, round after round.
//! Afterwards, with the jobs drained by a clean worker:
//!
//! * every create the server acknowledged (201) is stored;
//! * every stored record carries exactly the effects of its sync steps (the
//!   pre-operation default is set and there is exactly one audit row) and no
//!   effect exists without its record (nothing half-applied);
//! * every stored record has exactly one job of each async step, and it reached
//!   Succeeded; no job exists for a record that is not stored;
//! * every stored record has exactly one entry written by its async workflow,
//!   although attempts were killed mid-way and ran again: an attempt's writes
//!   commit with its outcome, exactly once;
//! * no job's completion ran twice, and every attempt a job started is counted:
//!   triggers the test adds to the database log each committed transition into
//!   Completed or Locked (a claim) and each claim given back unstarted, and each
//!   job must show exactly one completion and as many claims, less those given
//!   back, as its `attempts` (a lost attempt counts).
//!
//! `WEIR_CRASH_ROUNDS` sets the number of kill -9 rounds (default 5).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::Env;
use rand::Rng;

const TOKEN: &str = "crash-token";
const CLIENTS: usize = 4;

fn setup() -> Env {
    let env = Env::new();
    env.run(&["table", "create", "order", "--column", "name:text", "--column", "priority:text", "--column", "amount:decimal"]).ok();
    env.run(&["table", "create", "audit", "--column", "entity:text", "--column", "recordid:text", "--column", "action:text"]).ok();
    env.run(&["table", "create", "entry", "--column", "source:text", "--column", "attempt:integer"]).ok();
    for p in ["set-defaults", "audit-trail", "notify", "append-entry"] {
        env.add_example(p);
    }
    let step = |name: &str, plugin: &str, stage: &str, extra: &[&str]| {
        let mut args = vec!["step", "add", name, "--plugin", plugin, "--message", "create", "--table", "order", "--stage", stage];
        args.extend_from_slice(extra);
        env.run(&args).ok();
    };
    step("defaults", "set-defaults", "pre-operation", &[]);
    step("audit", "audit-trail", "post-operation", &["--grant", "audit:write"]);
    step("notify", "notify", "post-operation", &["--mode", "async"]);
    // Writes, then works for a while: kills land between its write and its end.
    step("append", "append-entry", "post-operation", &["--mode", "async", "--grant", "entry:write", "--config", r#"{"spin_ms": 30}"#]);
    // The test's own instruments: they write in the transaction that changes the
    // job, so only committed transitions are logged.
    let conn = env.sql();
    let sqlite = "CREATE TABLE test_transitions (job TEXT NOT NULL, kind TEXT NOT NULL);
         CREATE TRIGGER test_log_completed AFTER UPDATE OF statecode ON weir_jobs
           WHEN NEW.statecode = 3 AND OLD.statecode <> 3
           BEGIN INSERT INTO test_transitions VALUES (NEW.id, 'completed'); END;
         CREATE TRIGGER test_log_started AFTER UPDATE OF statecode ON weir_jobs
           WHEN NEW.statecode = 2 AND OLD.statecode <> 2
           BEGIN INSERT INTO test_transitions VALUES (NEW.id, 'started'); END;
         CREATE TRIGGER test_log_released AFTER UPDATE OF statecode ON weir_jobs
           WHEN OLD.statecode = 2 AND NEW.statecode = 0 AND NEW.attempts < OLD.attempts
           BEGIN INSERT INTO test_transitions VALUES (NEW.id, 'released'); END;";
    let postgres = "CREATE TABLE test_transitions (job TEXT NOT NULL, kind TEXT NOT NULL);
         CREATE FUNCTION test_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.statecode = 3 AND OLD.statecode <> 3 THEN INSERT INTO test_transitions VALUES (NEW.id, 'completed'); END IF;
           IF NEW.statecode = 2 AND OLD.statecode <> 2 THEN INSERT INTO test_transitions VALUES (NEW.id, 'started'); END IF;
           IF OLD.statecode = 2 AND NEW.statecode = 0 AND NEW.attempts < OLD.attempts THEN INSERT INTO test_transitions VALUES (NEW.id, 'released'); END IF;
           RETURN NULL;
         END $$;
         CREATE TRIGGER test_log AFTER UPDATE OF statecode ON weir_jobs FOR EACH ROW EXECUTE FUNCTION test_log();";
    conn.execute_batch(if env.is_postgres() { postgres } else { sqlite }).unwrap();
    env
}

/// Starts `weir serve` on a free loopback port; returns the child and its base URL.
fn serve(env: &Env) -> (std::process::Child, String) {
    let mut child = env
        .command()
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--workers", "2", "--lease-ms", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("serve prints its address").to_string();
    (child, base)
}

/// The rounds to run (`WEIR_CRASH_ROUNDS`, default 5), the database, the
/// acknowledged ids so far, and the randomness of the kills.
fn start() -> (usize, Env, Arc<Mutex<Vec<String>>>, rand::rngs::ThreadRng) {
    let rounds: usize = std::env::var("WEIR_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    (rounds, setup(), Arc::default(), rand::rng())
}

#[test]
fn kill_9_rounds_lose_nothing_and_half_apply_nothing() {
    let (rounds, env, acked, mut rng) = start();
    for round in 0..rounds {
        let (mut child, base) = serve(&env);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (base, acked) = (base.clone(), acked.clone());
                std::thread::spawn(move || acked.lock().unwrap().extend(client_of_several(&[base], n, round, &AtomicBool::new(false))))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for c in clients {
            c.join().unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= rounds * 10, "the clients got too few creates through to test anything: {}", acked.len());
    let summary = drain_and_check(&env, &acked);
    eprintln!("crash suite: {rounds} kill -9 rounds, {summary}");
}

/// A node of several on one database: `weir serve` (with its workers) or
/// `weir work`.
struct Node {
    child: std::process::Child,
    /// The API's base URL, for a serve node.
    base: Option<String>,
}

fn start_node(env: &Env, serves: bool) -> Node {
    if serves {
        let (child, base) = serve(env);
        return Node { child, base: Some(base) };
    }
    let child = env.command().args(["work", "--workers", "2", "--lease-ms", "1000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    Node { child, base: None }
}

/// Two `weir serve` nodes and two `weir work` nodes on one database, clients
/// creating through both servers; each round one node, chosen at random, is
/// killed with SIGKILL at a random moment and started again while the others
/// keep going. The same checks as the single-node crash suite hold: an
/// attempt a killed node had claimed is taken over by another once its lease
/// ends, and no job is claimed by two nodes or completed twice.
#[test]
fn several_nodes_killed_one_at_a_time_lose_nothing_and_half_apply_nothing() {
    let (rounds, env, acked, mut rng) = start();
    let mut nodes: Vec<Node> = [true, true, false, false].into_iter().map(|serves| start_node(&env, serves)).collect();
    let mut killed = Vec::new();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let bases: Vec<String> = nodes.iter().filter_map(|n| n.base.clone()).collect();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (bases, acked, stop) = (bases.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || acked.lock().unwrap().extend(client_of_several(&bases, n, round, &stop)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        let victim = rng.random_range(0..nodes.len());
        let serves = nodes[victim].base.is_some();
        nodes[victim].child.kill().unwrap(); // SIGKILL
        nodes[victim].child.wait().unwrap();
        killed.push(if serves { "serve" } else { "work" });
        // The others go on alone for a while, then the node comes back.
        std::thread::sleep(Duration::from_millis(rng.random_range(200..600)));
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        nodes[victim] = start_node(&env, serves);
    }
    for mut n in nodes {
        n.child.kill().unwrap();
        n.child.wait().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= rounds * 10, "the clients got too few creates through to test anything: {}", acked.len());
    let summary = drain_and_check(&env, &acked);
    eprintln!("crash suite, several nodes: {rounds} rounds killing {killed:?}, {summary}");
}

/// One client of several servers: creates orders through `bases` (starting
/// with its own) until `stop`; a server that stops answering (killed) is left
/// for the next. Returns the ids of the acknowledged creates.
fn client_of_several(bases: &[String], n: usize, round: usize, stop: &AtomicBool) -> Vec<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
    let mut acked = Vec::new();
    let mut server = n % bases.len();
    let mut failures = 0;
    for i in 0.. {
        if stop.load(Ordering::SeqCst) || failures > bases.len() {
            break;
        }
        let body = serde_json::json!({"name": format!("r{round}-c{n}-{i}"), "amount": i}).to_string();
        let reply = agent
            .post(&format!("{}/api/data/order", bases[server]))
            .header("authorization", &format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .send(body.as_bytes());
        match reply {
            Ok(mut r) if r.status() == 201 => {
                let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                acked.push(v["id"].as_str().expect("a created record has an id").to_string());
                failures = 0;
            }
            Ok(r) => panic!("create answered {} (not a crash)", r.status()),
            Err(_) => {
                failures += 1;
                server = (server + 1) % bases.len();
            }
        }
    }
    acked
}

/// Drains what the killed nodes left (expired leases are taken over), then
/// checks the suite's promises; returns a summary of what was checked.
fn drain_and_check(env: &Env, acked: &[String]) -> String {
    env.run(&["work", "--until-idle", "--lease-ms", "1000"]).ok();

    let conn = env.sql();
    let stored: HashMap<String, Option<String>> =
        conn.prepare("SELECT id, priority FROM data_order").unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    for id in acked {
        assert!(stored.contains_key(id), "acknowledged order {id} was lost");
    }
    for (id, priority) in &stored {
        assert_eq!(priority.as_deref(), Some("normal"), "order {id} lacks its pre-operation default");
    }
    let mut audits: HashMap<String, usize> = HashMap::new();
    let rows: Vec<String> = conn.prepare("SELECT recordid FROM data_audit").unwrap().query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    for r in rows {
        *audits.entry(r).or_default() += 1;
    }
    for id in stored.keys() {
        assert_eq!(audits.get(id).copied().unwrap_or(0), 1, "order {id} must have exactly one audit row");
    }
    for id in audits.keys() {
        assert!(stored.contains_key(id), "audit row for order {id}, which is not stored: a half-applied create");
    }
    let jobs: Vec<(String, String, i64, i64)> = conn
        .prepare(&format!(
            "SELECT id, {}, statuscode, attempts FROM weir_jobs WHERE step IN ('notify', 'append')",
            conn.dialect().json_text("context", "target.id")
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut per_record: HashMap<&str, usize> = HashMap::new();
    for (job, target, status, attempts) in &jobs {
        assert!(stored.contains_key(target), "job {job} is for order {target}, which is not stored");
        assert_eq!(*status, 30, "job {job} for order {target} did not succeed (status {status}, {attempts} attempts)");
        *per_record.entry(target.as_str()).or_default() += 1;
    }
    let missing: HashSet<&String> = stored.keys().filter(|id| per_record.get(id.as_str()).copied().unwrap_or(0) != 2).collect();
    assert!(missing.is_empty(), "orders without exactly one notify and one append job: {missing:?}");
    let mut entries: HashMap<String, usize> = HashMap::new();
    let rows: Vec<String> = conn.prepare("SELECT source FROM data_entry").unwrap().query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    for r in rows {
        *entries.entry(r).or_default() += 1;
    }
    for id in stored.keys() {
        assert_eq!(entries.get(id).copied().unwrap_or(0), 1, "order {id} must have exactly one entry from its workflow");
    }
    assert_eq!(entries.len(), stored.len(), "entries for orders that are not stored");
    // No completion ran twice; no attempt went uncounted.
    let mut completions: HashMap<String, usize> = HashMap::new();
    let mut starts: HashMap<String, i64> = HashMap::new();
    let log: Vec<(String, String)> = conn
        .prepare("SELECT job, kind FROM test_transitions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (job, kind) in log {
        match kind.as_str() {
            "completed" => *completions.entry(job).or_default() += 1,
            "started" => *starts.entry(job).or_default() += 1,
            _ => *starts.entry(job).or_default() -= 1, // a claim given back unstarted
        }
    }
    for (job, target, _, attempts) in &jobs {
        assert_eq!(completions.get(job).copied().unwrap_or(0), 1, "job {job} for order {target} completed more or less than once");
        assert_eq!(starts.get(job).copied().unwrap_or(0), *attempts, "job {job} for order {target}: started attempts and counted attempts differ");
    }
    if !env.is_postgres() {
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
    }
    let retried = jobs.iter().filter(|j| j.3 > 1).count();
    format!("{} acknowledged creates, {} stored, {} jobs succeeded ({retried} after a lost attempt)", acked.len(), stored.len(), jobs.len())
}
