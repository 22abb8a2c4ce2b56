//! `weir demo`: loads the example plug-ins into the database and walks through
//! weir's story, printing what happens at each step. Safe to run again on the
//! same database: what exists is reused.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Weir;
use crate::error::{Error, Result};
use crate::runtime::wit::{Context, Mode};
use crate::runtime::{Limits, NoRecords};
use crate::steps::{Grant, MessageKind, ModeKind, StageKind, Step};
use crate::worker::WorkOptions;

pub fn run(db: &Path) -> Result<()> {
    let weir = Weir::open(db)?;
    outln!("weir demo on {}\n", db.display());

    outln!("1. Loading the example plug-ins");
    let known = weir.list_plugins()?;
    for name in crate::examples::names() {
        let wasm = crate::examples::wasm(name).unwrap_or_default();
        let digest = crate::runtime::Runtime::digest(wasm);
        match known.iter().find(|p| p.name == name && p.sha256 == digest) {
            Some(p) => outln!("   {name:<15} v{} ({}), already loaded", p.version, p.world),
            None => {
                let p = weir.add_plugin(name, wasm)?;
                outln!("   {name:<15} v{} ({}), {} bytes", p.version, p.world, p.size);
            }
        }
    }

    outln!("\n2. The sandbox: each misbehaving guest ends with its own typed error");
    for name in ["spin-forever", "memory-hog", "deep-recursion", "panicker"] {
        let started = Instant::now();
        let outcome = sandbox_call(&weir, name)?;
        outln!("   {name:<15} -> {outcome} ({} ms)", started.elapsed().as_millis());
    }

    outln!("\n3. The credit-check story: a sync plug-in inside the transaction");
    setup_tables(&weir)?;
    let p = weir.pipeline();
    let account = p.create("system", "account", &json!({"name": "Contoso", "creditlimit": 1000}))?;
    outln!("   account Contoso, credit limit 1000: {}", account.id);
    let audits_before = weir.query("audit", None, &[], None)?.len();
    match p.create("system", "opportunity", &json!({"name": "Big deal", "amount": 5000, "customer": account.id})) {
        Err(e) => outln!("   opportunity of 5000 -> rejected: {e}"),
        Ok(r) => outln!("   opportunity of 5000 -> unexpectedly accepted: {}", r.id),
    }
    let audits_after_reject = weir.query("audit", None, &[], None)?.len();
    outln!("   audit rows written by the rejected operation: {}", audits_after_reject - audits_before);
    let opp = p.create("system", "opportunity", &json!({"name": "Small deal", "amount": 500, "customer": account.id}))?;
    let audits = weir.query("audit", Some(&format!("recordid eq '{}'", opp.id)), &[], None)?;
    outln!(
        "   opportunity of 500  -> accepted: {}, priority {} (set-defaults), {} audit row (audit-trail)",
        opp.id,
        opp.get("priority").map(crate::values::to_json).unwrap_or_default(),
        audits.len()
    );

    outln!("\n4. The depth guard: ping-pong updates the record it is triggered by");
    let before = opp.get("counter").cloned();
    match p.update("system", "opportunity", &opp.id, &json!({"counter": 1})) {
        Err(e) => outln!("   update -> {e}"),
        Ok(_) => outln!("   update -> unexpectedly succeeded"),
    }
    let after = weir.get("opportunity", &opp.id)?;
    outln!("   counter kept its old value: {:?}", after.get("counter") == before.as_ref());

    outln!("\n5. Background jobs: async steps run after the commit, with retries");
    let shipment = p.create("system", "shipment", &json!({"name": "Parcel to Contoso"}))?;
    let mine = format!("regarding eq '{}'", shipment.id);
    outln!("   created shipment {}: {} jobs enqueued in its transaction", shipment.id, weir.list_jobs(Some(&mine), 100)?.len());
    let opts = WorkOptions { workers: 2, until_idle: true, ..WorkOptions::default() };
    let stats = crate::worker::runtime()?.block_on(weir.work(opts, std::future::pending()))?;
    outln!("   weir work --until-idle: {} attempts, {} succeeded", stats.attempts, stats.succeeded);
    for j in weir.list_jobs(Some(&mine), 100)?.iter().rev() {
        outln!(
            "   {:<13} {:<10} {:<9} after {} attempt(s){}",
            j.plugin,
            j.state,
            j.status,
            j.attempts,
            j.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    let failures = weir.list_jobs(Some(&format!("statecode eq 3 and statuscode eq 31 and {mine}")), 100)?;
    outln!(
        "   jobs list --filter \"statecode eq 3 and statuscode eq 31\" finds {} failure(s): {}",
        failures.len(),
        failures.iter().map(|j| j.plugin.as_str()).collect::<Vec<_>>().join(", ")
    );

    outln!("\n6. A wait state: approval waits, holding no worker, until the expense is approved");
    let rt = crate::worker::runtime()?;
    let idle = || WorkOptions { workers: 2, until_idle: true, ..WorkOptions::default() };
    let expense = p.create("system", "expense", &json!({"amount": 120.0}))?;
    rt.block_on(weir.work(idle(), std::future::pending()))?;
    let waiting = weir.list_jobs(Some(&format!("regarding eq '{}'", expense.id)), 1)?;
    if let Some(j) = waiting.first() {
        outln!("   expense {}: job {} is {}/{} (wait {})", expense.id, j.id, j.state, j.status, j.wait.clone().unwrap_or_default());
    }
    p.update("system", "expense", &expense.id, &json!({"approved": true}))?;
    outln!("   approved the expense: the committed change made the job Ready");
    rt.block_on(weir.work(idle(), std::future::pending()))?;
    let paid = weir.get("expense", &expense.id)?;
    outln!("   after weir work: expense state = {}", paid.get("state").map(crate::values::to_json).unwrap_or_default());

    outln!("\n7. A background operation with a callback");
    let (url, received) = demo_callback_server()?;
    let input = json!({"table": "expense", "set": {"state": "archived"}, "filter": "state eq 'paid'"});
    let job = weir.submit_background(&crate::Background {
        grants: vec![Grant::parse("expense:write")?],
        callback_url: Some(url.clone()),
        ..crate::Background::new("bulk-update", input, "system")
    })?;
    outln!("   weir background submit bulk-update -> job {job} (status at /api/jobs/{job})");
    rt.block_on(weir.work(idle(), std::future::pending()))?;
    let j = weir.show_job(&job)?;
    outln!("   job {}: {} with result {}", j.id, j.status, j.result.clone().unwrap_or_default());
    match received.recv_timeout(Duration::from_secs(5)) {
        Ok(body) => outln!("   callback received at {url}: {body}"),
        Err(_) => outln!("   no callback arrived at {url}"),
    }
    outln!("\ndone.");
    Ok(())
}

/// Runs a misbehaving example once as a sync call with demo limits.
fn sandbox_call(weir: &Weir, name: &str) -> Result<String> {
    let prepared = weir.pool().with_conn(|conn| {
        let (version, _) = weir.plugins().head(conn, name)?;
        weir.plugins().prepared(conn, name, version)
    })?;
    let ctx = Context::standalone("demo", Mode::Sync);
    let limits =
        Limits { fuel: Some(200_000_000), deadline: Instant::now() + Duration::from_secs(2), budget_ms: 2000, memory_bytes: 32 << 20, max_host_calls: 1000 };
    let (r, _) = weir.plugins().runtime().call_sync(&prepared, &ctx, Box::new(NoRecords), &limits);
    Ok(match r {
        Ok(_) => "succeeded".into(),
        Err(e) => format!("{}: {}", e.code(), first_line(&e.to_string())),
    })
}

/// A one-shot HTTP receiver on loopback for the demo's callback.
fn demo_callback_server() -> Result<(String, std::sync::mpsc::Receiver<String>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Internal(format!("demo callback server: {e}")))?;
    let url = format!("http://{}/callback", listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let Ok(clone) = stream.try_clone() else { return };
        let mut reader = BufReader::new(clone);
        let mut len = 0usize;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            line.clear();
        }
        let mut body = vec![0; len.min(1 << 20)];
        let _ = reader.read_exact(&mut body);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
    });
    Ok((url, rx))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(140).collect()
}

fn sync_step(name: &str, plugin: &str, message: MessageKind, table: &str, stage: StageKind) -> Step {
    Step::new(name, plugin, message, table, stage, ModeKind::Sync)
}

/// Creates the demo's tables and steps unless they exist.
fn setup_tables(weir: &Weir) -> Result<()> {
    let tables: Vec<String> = weir.list_tables()?.into_iter().map(|t| t.name).collect();
    let want: &[(&str, &[(&str, &str)])] = &[
        ("account", &[("name", "text"), ("creditlimit", "decimal")]),
        (
            "opportunity",
            &[("name", "text"), ("amount", "decimal"), ("customer", "ref:account"), ("priority", "text"), ("stage", "text"), ("counter", "integer")],
        ),
        ("audit", &[("entity", "text"), ("recordid", "text"), ("action", "text")]),
        ("shipment", &[("name", "text")]),
        ("expense", &[("amount", "decimal"), ("approved", "boolean"), ("state", "text")]),
    ];
    for (name, cols) in want {
        if !tables.iter().any(|t| t == name) {
            weir.create_table(name, cols)?;
        }
    }
    // A step that exists (even one whose stored spec is damaged) is kept.
    let listing = weir.list_steps()?;
    let existing: Vec<String> = listing.steps.into_iter().map(|s| s.name).chain(listing.unreadable.into_iter().map(|u| u.name)).collect();
    let grant = |t: &str, w: &str| Grant::parse(&format!("{t}:{w}"));
    let mut steps = vec![
        Step { rank: 0, ..sync_step("demo-defaults", "set-defaults", MessageKind::Create, "opportunity", StageKind::PreOperation) },
        Step {
            grants: vec![grant("account", "read")?],
            ..sync_step("demo-credit", "credit-check", MessageKind::Create, "opportunity", StageKind::PreOperation)
        },
        Step { grants: vec![grant("audit", "write")?], ..sync_step("demo-audit", "audit-trail", MessageKind::Create, "opportunity", StageKind::PostOperation) },
        Step {
            grants: vec![grant("opportunity", "write")?],
            filter: vec!["counter".into()],
            ..sync_step("demo-ping-pong", "ping-pong", MessageKind::Update, "opportunity", StageKind::PostOperation)
        },
    ];
    let job = |name: &str, plugin: &str| Step::new(name, plugin, MessageKind::Create, "shipment", StageKind::PostOperation, ModeKind::Async);
    steps.push(job("demo-notify", "notify"));
    steps.push(Step { backoff_ms: Some(100), ..job("demo-flaky", "flaky") });
    steps.push(job("demo-fails", "always-fails"));
    steps.push(Step {
        grants: vec![grant("expense", "write")?],
        ..Step::new("demo-approval", "approval", MessageKind::Create, "expense", StageKind::PostOperation, ModeKind::Async)
    });
    steps.retain(|s| !existing.contains(&s.name));
    for s in &steps {
        weir.add_step(s).map_err(|e| Error::Internal(format!("demo step {}: {e}", s.name)))?;
    }
    Ok(())
}
