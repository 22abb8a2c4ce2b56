//! `weir bench`: weir's own figures next to the physical limit on the same
//! machine (raw SQLite commits), in a scratch database. Each figure is the
//! median of repeated runs, with the spread (min–max). Use a release build.

use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json, json};

use crate::Weir;
use crate::error::{Error, Result};
use crate::runtime::wit::{Context, Mode};
use crate::runtime::{Limits, NoRecords, Runtime, RuntimeConfig};
use crate::steps::{MessageKind, ModeKind, StageKind, Step};

/// Repetitions of each timed run.
const RUNS: usize = 5;
/// Length of each timed run.
const RUN_TIME: Duration = Duration::from_millis(700);

/// One figure: its runs and unit.
struct Figure {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    runs: Vec<f64>,
}

impl Figure {
    fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Calls `op` for `RUN_TIME`, `RUNS` times; returns operations per second of each run.
fn rate(mut op: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < RUN_TIME {
            op()?;
            n += 1;
        }
        out.push(n as f64 / started.elapsed().as_secs_f64());
    }
    Ok(out)
}

fn bench_context() -> Context {
    Context::standalone("bench", Mode::Sync)
}

pub fn run(json_out: bool) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| Error::Internal(format!("cannot make a scratch directory: {e}")))?;
    let weir = Weir::open(scratch.path().join("bench.db"))?;
    let mut figures = Vec::new();
    let say = |s: &str| {
        if !json_out {
            eprintln!("  measuring {s}...");
        }
    };

    say("raw SQLite commits");
    {
        let conn = weir.db().connect()?;
        conn.execute_batch("CREATE TABLE raw (id TEXT PRIMARY KEY, created_at INTEGER, modified_at INTEGER, name TEXT, amount REAL)")?;
        let mut stmt = conn.prepare("INSERT INTO raw VALUES (?1, ?2, ?2, 'bench', 1.0)")?;
        let runs = rate(|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            stmt.execute(rusqlite::params![uuid::Uuid::now_v7().to_string(), crate::time::now_ms()])?;
            conn.execute_batch("COMMIT")?;
            Ok(())
        })?;
        figures.push(Figure { key: "sqlite_commit_per_s", label: "raw SQLite insert+commit (the limit)", unit: "/s", runs });
    }

    weir.add_plugin("noop", crate::examples::wasm("noop").unwrap_or_default())?;
    let p = weir.pipeline().clone();
    let mut per_op_us = Vec::new();
    for (k, key, label) in [
        (0usize, "create_bare_per_s", "weir create, no steps"),
        (1, "create_1_sync_plugin_per_s", "weir create, 1 no-op sync plug-in"),
        (5, "create_5_sync_plugins_per_s", "weir create, 5 no-op sync plug-ins"),
    ] {
        say(label);
        let table = format!("bench{k}");
        weir.create_table(&table, &[("name", "text"), ("amount", "decimal")])?;
        for i in 0..k {
            weir.add_step(&Step::new(&format!("{table}-noop{i}"), "noop", MessageKind::Create, &table, StageKind::PreOperation, ModeKind::Sync))?;
        }
        let rec = json!({"name": "bench", "amount": 1.5});
        let runs = rate(|| p.create("system", &table, &rec).map(|_| ()))?;
        per_op_us.push((k as f64, runs.iter().map(|r| 1e6 / r).collect::<Vec<_>>()));
        figures.push(Figure { key, label, unit: "/s", runs });
    }
    // Overhead per sync plug-in: least-squares slope of µs per create against plug-in count, per run.
    let overhead: Vec<f64> = (0..RUNS)
        .map(|i| {
            let pts: Vec<(f64, f64)> = per_op_us.iter().map(|(k, us)| (*k, us[i])).collect();
            let n = pts.len() as f64;
            let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            let (mx, my) = (sx / n, sy / n);
            let num: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
            let den: f64 = pts.iter().map(|(x, _)| (x - mx).powi(2)).sum();
            num / den
        })
        .collect();
    figures.push(Figure { key: "sync_invoke_overhead_us", label: "cost per sync plug-in in a create (slope 0/1/5)", unit: "µs", runs: overhead });

    say("one sync call (fresh Store + instantiate + call)");
    {
        let prepared = p.with_conn(|conn| weir.plugins().prepared(conn, "noop", 1))?;
        let rt = weir.plugins().runtime();
        let ctx = bench_context();
        let runs = rate(|| {
            let limits = Limits {
                fuel: Some(1_000_000),
                deadline: Instant::now() + Duration::from_secs(1),
                budget_ms: 1000,
                memory_bytes: 64 << 20,
                max_host_calls: 100,
            };
            rt.call_sync(&prepared, &ctx, Box::new(NoRecords), &limits).0.map(|_| ()).map_err(|e| Error::Internal(e.to_string()))
        })?;
        figures.push(Figure { key: "sync_call_us", label: "one sync call: fresh Store + instantiate + call", unit: "µs", runs: runs.iter().map(|r| 1e6 / r).collect() });
    }

    say("component loads");
    {
        let wasm = crate::examples::wasm("credit-check").unwrap_or_default();
        let cache = scratch.path().join("load-cache");
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let dir = cache.join(i.to_string());
            let rt = Runtime::new(RuntimeConfig { cache_dir: Some(dir.clone()), max_instances: 4, ..RuntimeConfig::default() }).map_err(|e| Error::Internal(e.to_string()))?;
            let t = Instant::now();
            rt.prepare(wasm)?;
            cold.push(t.elapsed().as_secs_f64() * 1e3);
            drop(rt);
            let rt = Runtime::new(RuntimeConfig { cache_dir: Some(dir), max_instances: 4, ..RuntimeConfig::default() }).map_err(|e| Error::Internal(e.to_string()))?;
            let t = Instant::now();
            rt.prepare(wasm)?;
            cached.push(t.elapsed().as_secs_f64() * 1e3);
        }
        figures.push(Figure { key: "component_cold_load_ms", label: "component load, compiling (credit-check)", unit: "ms", runs: cold });
        figures.push(Figure { key: "component_cached_load_ms", label: "component load, from the disk cache", unit: "ms", runs: cached });
    }

    let machine = machine();
    if json_out {
        let mut obj = Map::new();
        let mut runs = Map::new();
        for f in &figures {
            obj.insert(f.key.into(), json!(round(f.median())));
            runs.insert(f.key.into(), json!(f.runs.iter().map(|v| round(*v)).collect::<Vec<_>>()));
        }
        obj.insert("runs".into(), Json::Object(runs));
        obj.insert("machine".into(), machine);
        obj.insert("profile".into(), json!(if cfg!(debug_assertions) { "debug" } else { "release" }));
        crate::cli::print_json(&Json::Object(obj));
    } else {
        println!("weir bench ({} build) on {}", if cfg!(debug_assertions) { "debug — use --release for real figures" } else { "release" }, machine["summary"].as_str().unwrap_or("?"));
        println!("{:<52} {:>12} {:>24}", "figure", "median", format!("spread ({RUNS} runs)"));
        for f in &figures {
            println!("{:<52} {:>10.1} {:<2} {:>10.1} – {:<10.1}", f.label, f.median(), f.unit, f.min(), f.max());
        }
    }
    drop(weir);
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn machine() -> Json {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    json!({
        "cpus": cpus,
        "cpu": model,
        "memory_gib": round(mem_gib),
        "os": std::env::consts::OS,
        "summary": format!("{cpus} × {model}, {mem_gib:.0} GiB"),
    })
}
