//! `weir bench`: weir's own figures next to the physical limit on the same
//! machine (raw commits of the database), in a scratch database: an SQLite
//! file, or with `--db postgres://…` a new database on that server (dropped
//! afterwards). Each figure is the median of repeated runs, with the spread
//! (min–max). Use a release build.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json, json};

use crate::Weir;
use crate::db::OptionalExtension;
use crate::error::{Error, Result};
use crate::jobs::{self, JobContext, NewJob};
use crate::runtime::wit::{Context, Mode};
use crate::runtime::{Limits, NoRecords, Runtime, RuntimeConfig};
use crate::steps::{MessageKind, ModeKind, StageKind, Step};
use crate::values::EntityDoc;
use crate::worker::WorkOptions;

/// Repetitions of each timed run.
const RUNS: usize = 5;
/// Length of each timed run.
const RUN_TIME: Duration = Duration::from_millis(700);

/// One figure: its runs and unit.
struct Figure {
    key: Cow<'static, str>,
    label: Cow<'static, str>,
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
    (0..RUNS).map(|_| once(&mut op)).collect()
}

/// Calls `op` for `RUN_TIME`; returns operations per second.
fn once(mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN_TIME {
        op()?;
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Calls `op` for `RUN_TIME`; returns the wall time and the CPU time (all
/// threads of the process: work moved to another thread is not free) per call, in µs.
fn per_call(mut op: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    let (started, cpu) = (Instant::now(), cpu_us());
    let mut n = 0u64;
    while started.elapsed() < RUN_TIME {
        op()?;
        n += 1;
    }
    let n = n.max(1) as f64;
    Ok((started.elapsed().as_secs_f64() * 1e6 / n, (cpu_us() - cpu) / n))
}

/// CPU time this process has used, all threads, in µs (NaN where unknown).
fn cpu_us() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// What the HTTP section measures, each figure per run.
struct HttpFigures {
    /// Creates per second on one connection and on 32, and the p99 latency at 32 (ms).
    one: Vec<f64>,
    many: Vec<f64>,
    p99: Vec<f64>,
    /// The floor under them: `GET /api/health` per second, same clients and server.
    health_one: Vec<f64>,
    health_many: Vec<f64>,
}

/// `weir serve`'s API on a loopback port of its own, over the bench's weir,
/// driven by keep-alive clients.
/// A `weir serve` API on a loopback port of its own, over the bench's weir,
/// with one worker, until [`BenchServer::stop`].
struct BenchServer {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<()>>,
}

impl BenchServer {
    fn start(rt: &tokio::runtime::Runtime, weir: &std::sync::Arc<Weir>, config: crate::api::ApiConfig) -> Result<BenchServer> {
        let internal = |e: std::io::Error| Error::Internal(e.to_string());
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(internal)?;
        let addr = listener.local_addr().map_err(internal)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let work = WorkOptions { workers: 1, ..WorkOptions::default() };
        let handle = rt.spawn(crate::api::serve_on(listener, weir.clone(), config, work, async move {
            let _ = stopped.await;
        }));
        Ok(BenchServer { addr, stop, handle })
    }

    fn stop(self, rt: &tokio::runtime::Runtime) -> Result<()> {
        let _ = self.stop.send(());
        rt.block_on(self.handle).map_err(|e| Error::Internal(e.to_string()))?
    }
}

fn bench_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::Internal(e.to_string()))
}

fn http_creates(weir: &std::sync::Arc<Weir>) -> Result<HttpFigures> {
    let rt = bench_runtime()?;
    let server = BenchServer::start(&rt, weir, crate::api::ApiConfig::default())?;
    let addr = server.addr;
    let url = format!("http://{addr}/api/data/httpbench");
    let health = format!("http://{addr}/api/health");
    let body = r#"{"name": "bench", "amount": 1.5}"#;
    // One client per connection, each posting (or asking for health) for
    // RUN_TIME; returns (requests, latencies µs).
    let drive = |connections: usize, create: bool| -> Result<(f64, Vec<f64>)> {
        let started = Instant::now();
        let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..connections)
                .map(|_| {
                    s.spawn(|| {
                        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                        let mut latencies = Vec::new();
                        while started.elapsed() < RUN_TIME {
                            let t = Instant::now();
                            let (sent, expected) = if create {
                                (agent.post(&url).header("content-type", "application/json").send(body), 201)
                            } else {
                                (agent.get(&health).call(), 200)
                            };
                            let mut r = sent.map_err(|e| Error::Internal(format!("{url}: {e}")))?;
                            if r.status() != expected {
                                return Err(Error::Internal(format!("{url} answered {}", r.status())));
                            }
                            // Read to the end, or the connection is not kept alive.
                            r.body_mut().read_to_vec().map_err(|e| Error::Internal(format!("{url}: {e}")))?;
                            latencies.push(t.elapsed().as_secs_f64() * 1e6);
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a client thread panicked".into())))).collect()
        });
        let mut all = Vec::new();
        for r in results {
            all.extend(r?);
        }
        Ok((all.len() as f64 / started.elapsed().as_secs_f64(), all))
    };
    let mut f = HttpFigures { one: Vec::new(), many: Vec::new(), p99: Vec::new(), health_one: Vec::new(), health_many: Vec::new() };
    for _ in 0..RUNS {
        f.one.push(drive(1, true)?.0);
        let (rate, mut lat) = drive(32, true)?;
        lat.sort_by(|a, b| a.total_cmp(b));
        f.many.push(rate);
        f.p99.push(lat.get(lat.len() * 99 / 100).copied().unwrap_or(f64::NAN) / 1e3);
        f.health_one.push(drive(1, false)?.0);
        f.health_many.push(drive(32, false)?.0);
    }
    server.stop(&rt)?;
    Ok(f)
}

/// What signing in costs per request, each figure per run.
struct AuthFigures {
    /// `GET /api/me` per second on one connection: with the server's token
    /// (no lookup), a user's token (its hash and privileges read), and the
    /// user's token on a server that also counts rates (a limit never hit).
    server_token: Vec<f64>,
    user_token: Vec<f64>,
    limited: Vec<f64>,
}

/// Two `weir serve` APIs on loopback over the bench's weir, one without and
/// one with `--rate-limit`, each asked `GET /api/me` on one keep-alive
/// connection: the cost of a token lookup and of the rate limiter.
fn http_auth(weir: &std::sync::Arc<Weir>) -> Result<AuthFigures> {
    let _ = weir.add_user("bench-user");
    let token = weir
        .create_token(
            &crate::access::TokenRequest { user: "bench-user".into(), role: crate::access::Role::Reader, label: None, expires_at: None, rate_milli: None },
            "bench",
        )?
        .token;
    let rt = bench_runtime()?;
    let mut servers = Vec::new();
    for rate_limit in [None, Some(crate::api::RateSettings { rate_milli: 1_000_000_000, burst: 1_000_000 })] {
        let config = crate::api::ApiConfig { token: Some("bench-admin".into()), rate_limit, ..crate::api::ApiConfig::default() };
        let server = BenchServer::start(&rt, weir, config)?;
        servers.push((format!("http://{}/api/me", server.addr), server));
    }
    let drive = |url: &str, bearer: &str| -> Result<f64> {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let (started, mut n) = (Instant::now(), 0u64);
        while started.elapsed() < RUN_TIME {
            let mut r = agent.get(url).header("authorization", &format!("Bearer {bearer}")).call().map_err(|e| Error::Internal(format!("{url}: {e}")))?;
            if r.status() != 200 {
                return Err(Error::Internal(format!("{url} answered {}", r.status())));
            }
            r.body_mut().read_to_vec().map_err(|e| Error::Internal(format!("{url}: {e}")))?;
            n += 1;
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    };
    let mut f = AuthFigures { server_token: Vec::new(), user_token: Vec::new(), limited: Vec::new() };
    for _ in 0..RUNS {
        f.server_token.push(drive(&servers[0].0, "bench-admin")?);
        f.user_token.push(drive(&servers[0].0, &token)?);
        f.limited.push(drive(&servers[1].0, &token)?);
    }
    for (_, server) in servers {
        server.stop(&rt)?;
    }
    Ok(f)
}

fn bench_context() -> Context {
    Context::standalone("bench", Mode::Sync)
}

/// A plug-in to measure beside the Rust credit-check example (`weir bench
/// --component LABEL=FILE`): any component, under any label (a language, a
/// name). Without a context it is measured as a credit-check build (the
/// examples in guest-examples/python and guest-examples/js: their layout of
/// tables); with one ([`ComponentLayout`]) in the plug-in's own layout.
#[derive(Debug, Clone)]
pub struct LangComponent {
    pub label: String,
    pub file: std::path::PathBuf,
}

impl std::str::FromStr for LangComponent {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<LangComponent, String> {
        let (label, file) =
            s.split_once('=').ok_or_else(|| format!("{s:?}: give LABEL=FILE.wasm, e.g. python=credit_check.wasm or my-check=target/my_check.wasm"))?;
        if label.is_empty() || label.len() > 40 || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("{label:?}: a label is 1 to 40 letters, digits, - or _ (it names the figures: lang_LABEL_load_s...)"));
        }
        Ok(LangComponent { label: label.to_string(), file: file.into() })
    }
}

/// The plug-in's own layout for `--component`: a context as `weir plugin
/// test` takes it (its table, message, stage or input, and the target's
/// fields) and the records fixture its calls read.
#[derive(Debug, Clone, Default)]
pub struct ComponentLayout {
    pub context: Option<Json>,
    pub records: Option<Json>,
}

/// The columns of a table made for a record's fields, typed by their JSON:
/// whole numbers integer, other numbers decimal, strings text, booleans
/// boolean, objects and arrays json.
fn columns_of(fields: &Map<String, Json>) -> Vec<(String, String)> {
    fields
        .iter()
        .filter(|(name, _)| name.as_str() != "id")
        .map(|(name, v)| {
            let ty = match v {
                Json::Number(n) if n.is_i64() => "integer",
                Json::Number(_) => "decimal",
                Json::Bool(_) => "boolean",
                Json::Object(_) | Json::Array(_) => "json",
                _ => "text",
            };
            (name.clone(), ty.to_string())
        })
        .collect()
}

/// Loads one build (`label`) into a database of its own (with its own, empty
/// compile cache, so the compile is measured) and measures it: a sync
/// plug-in by the creates it checks as the only step of its table, a
/// workflow by the jobs of it drained (background operations with the
/// context's input, two workers). Without a `layout` context, the
/// credit-check layout. Errors name the plug-in.
fn language(scratch: &std::path::Path, label: &str, wasm: &[u8], layout: &ComponentLayout, figures: &mut Vec<Figure>) -> Result<()> {
    let named = |e: Error| Error::invalid(format!("--component {label}: {e}"));
    let dir = tempfile::tempdir_in(scratch).map_err(|e| Error::Internal(format!("cannot make a directory in {}: {e}", scratch.display())))?;
    let weir = Weir::open_with_cache(dir.path().join("w.db"), Default::default(), Some(dir.path().join("cache")))?;
    let credit_check = json!({"message": "create", "table": "opportunity", "stage": "pre-validation", "target": {"name": "bench", "amount": 5}});
    let context = layout.context.clone().unwrap_or(credit_check);
    match &layout.records {
        Some(fixture) => crate::trial::seed(&weir, fixture).map_err(named)?,
        None if layout.context.is_none() => {
            weir.create_table("account", &[("name", "text"), ("creditlimit", "decimal")])?;
            weir.create_table("opportunity", &[("name", "text"), ("amount", "decimal"), ("customer", "ref:account")])?;
        }
        None => {}
    }
    let table = context["table"].as_str().unwrap_or_default().to_string();
    let target = context["target"].as_object().cloned().unwrap_or_default();
    if !table.is_empty() && weir.list_tables()?.iter().all(|t| t.name != table) {
        let cols = columns_of(&target);
        let cols: Vec<(&str, &str)> = cols.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        weir.create_table(&table, &cols).map_err(named)?;
    }
    let started = Instant::now();
    let version = weir.add_plugin(label, wasm).map_err(named)?;
    let load = started.elapsed().as_secs_f64();
    // What it may touch: every table of the layout.
    let grants: Vec<crate::steps::Grant> =
        weir.list_tables()?.into_iter().map(|t| crate::steps::Grant { table: t.name, access: crate::steps::Access::Write }).collect();
    let serves_sync = crate::runtime::World::parse(&version.world).is_some_and(|w| w.serves_sync());
    let sync = context["mode"].as_str() != Some("async") && serves_sync;
    figures.push(Figure { key: format!("lang_{label}_load_s").into(), label: format!("{label}: plug-in add (compile)").into(), unit: "s", runs: vec![load] });
    // An author's edit-and-test round: `weir plugin test` of a new build
    // compiles it, the next test of the same build loads the compiled copy.
    let mut tests = Vec::new();
    for _ in 0..2 {
        let req = crate::trial::TrialRequest {
            wasm: wasm.to_vec(),
            context: context.clone(),
            records: layout.records.clone(),
            state: None,
            cache_dir: Some(dir.path().join("test-cache")),
        };
        let started = Instant::now();
        crate::trial::run(req).map_err(named)?;
        tests.push(started.elapsed().as_secs_f64());
    }
    if tests[1] > 3.0 {
        tracing::warn!("--component {label}: a second `plugin test` of the same build took {:.1} s (over 3 s): is the compile cache in use?", tests[1]);
    }
    let first = format!("{label}: plugin test of a new build (compiles)");
    figures.push(Figure { key: format!("lang_{label}_test_first_s").into(), label: first.into(), unit: "s", runs: vec![tests[0]] });
    let again = format!("{label}: plugin test again (compiled copy)");
    figures.push(Figure { key: format!("lang_{label}_test_again_s").into(), label: again.into(), unit: "s", runs: vec![tests[1]] });
    if sync {
        if table.is_empty() {
            return Err(named(Error::invalid("a sync plug-in is measured on its table: give the context a \"table\"")));
        }
        let stage = match context["stage"].as_str().unwrap_or("pre-operation") {
            "pre-validation" => StageKind::PreValidation,
            "post-operation" => StageKind::PostOperation,
            _ => StageKind::PreOperation,
        };
        let mut step = Step::new("measured", label, MessageKind::Create, &table, stage, ModeKind::Sync);
        step.grants = grants;
        step.config = context["config"].clone();
        weir.add_step(&step).map_err(named)?;
        let mut rec = Json::Object(target.into_iter().filter(|(k, _)| k != "id").collect());
        if layout.context.is_none() {
            // The credit-check layout: an account whose limit the creates stay under.
            let account = weir.pipeline().create("system", "account", &json!({"name": "Contoso", "creditlimit": 1_000_000}))?;
            rec["customer"] = json!(account.id);
        }
        let runs = rate(|| weir.pipeline().create("system", &table, &rec).map(|_| ()).map_err(named))?;
        let what = format!("{label}: µs per {table} create it checks");
        figures.push(Figure { key: format!("lang_{label}_create_us").into(), label: what.into(), unit: "µs", runs: runs.iter().map(|r| 1e6 / r).collect() });
    } else {
        let input = context["input"].clone();
        let n = 500;
        let runs = (0..3).map(|_| drain_input(&weir, label, n, &grants, &input)).collect::<Result<Vec<f64>>>().map_err(named)?;
        let what = format!("{label}: µs per job drained ({n} background jobs, 2 workers)");
        figures.push(Figure { key: format!("lang_{label}_job_us").into(), label: what.into(), unit: "µs", runs: runs.iter().map(|r| 1e6 / r).collect() });
    }
    Ok(())
}

/// Drains `n` jobs of `plugin` with `input` and `grants` on two workers;
/// jobs per second. A job that does not succeed stops the measure, naming it.
fn drain_input(weir: &Weir, plugin: &str, n: usize, grants: &[crate::steps::Grant], input: &Json) -> Result<f64> {
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut j = job(plugin, plugin_version(weir, plugin)?);
    j.context.correlation_id = run_id.clone();
    j.context.input = input.clone();
    j.grants = grants.to_vec();
    let conn = weir.db().connect()?;
    let tx = conn.transaction()?;
    for _ in 0..n {
        jobs::enqueue(&tx, &j)?;
    }
    tx.commit()?;
    let started_ms = crate::time::now_ms();
    // A workflow that waits is drained when its jobs have finished, waits included (up to a minute).
    let rt = crate::worker::runtime()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let opts = WorkOptions { workers: 2, until_idle: true, idle_horizon: Duration::ZERO, ..WorkOptions::default() };
        rt.block_on(weir.work(opts, std::future::pending()))?;
        let open: i64 = conn.query_row("SELECT COUNT(*) FROM weir_jobs WHERE correlation_id = ?1 AND statecode < 3", [&run_id], |r| r.get(0))?;
        if open == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drained_rate(&conn, &run_id, plugin, n, started_ms)
}

/// The bench's scratch database on a PostgreSQL server, dropped at the end.
struct ScratchPg {
    server: String,
    name: String,
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        if let Err(e) = crate::db::postgres::drop_database(&self.server, &self.name) {
            tracing::warn!("could not drop the bench's database {}: {e}", self.name);
        }
    }
}

pub fn run(json_out: bool, only: Option<&str>, components: &[LangComponent], layout: &ComponentLayout, db: &std::path::Path) -> Result<()> {
    let want = |section: &str| only.is_none_or(|o| section.contains(o));
    let scratch = tempfile::tempdir().map_err(|e| Error::Internal(format!("cannot make a scratch directory: {e}")))?;
    let (bench_db, _scratch_pg) = match db.to_str().filter(|d| crate::db::postgres::is_url(d)) {
        Some(server) => {
            let name = format!("weir_bench_{}", uuid::Uuid::now_v7().simple());
            let url = crate::db::postgres::create_database(server, &name)?;
            (std::path::PathBuf::from(url), Some(ScratchPg { server: server.to_string(), name }))
        }
        None => (scratch.path().join("bench.db"), None),
    };
    let weir = std::sync::Arc::new(Weir::open(&bench_db)?);
    let mut figures = Vec::new();
    // A progress bar on a terminal (hidden otherwise, and with --json).
    let progress = if json_out { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(12) };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:20}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(120));
    let say = |s: &str| {
        progress.inc(1);
        progress.set_message(format!("measuring {s}"));
    };

    if want("sqlite") {
        say("raw commits");
        let conn = weir.db().connect()?;
        conn.execute_batch("CREATE TABLE raw (id TEXT PRIMARY KEY, created_at BIGINT, modified_at BIGINT, name TEXT, amount REAL)")?;
        let mut stmt = conn.prepare("INSERT INTO raw VALUES (?1, ?2, ?2, 'bench', 1.0)")?;
        let runs = rate(|| {
            conn.begin_write()?;
            stmt.execute(crate::params![uuid::Uuid::now_v7().to_string(), crate::time::now_ms()])?;
            conn.execute_batch("COMMIT")?;
            Ok(())
        })?;
        // On a database with row locks, weir's writes take its write lock: so does this.
        let label = if weir.db().dialect().row_locks() { "raw insert+commit, write lock taken (the limit)" } else { "raw insert+commit (the limit)" };
        figures.push(Figure { key: "sqlite_commit_per_s".into(), label: label.into(), unit: "/s", runs });
    }

    weir.add_plugin("noop", crate::examples::wasm("noop").unwrap_or_default())?;
    let p = weir.pipeline().clone();
    if want("create") {
        let sizes = [
            (0usize, "create_bare_per_s", "weir create, no steps"),
            (1, "create_1_sync_plugin_per_s", "weir create, 1 no-op sync plug-in"),
            (5, "create_5_sync_plugins_per_s", "weir create, 5 no-op sync plug-ins"),
        ];
        for (k, _, _) in sizes {
            let table = format!("bench{k}");
            weir.create_table(&table, &[("name", "text"), ("amount", "decimal")])?;
            for i in 0..k {
                weir.add_step(&Step::new(&format!("{table}-noop{i}"), "noop", MessageKind::Create, &table, StageKind::PreOperation, ModeKind::Sync))?;
            }
        }
        say("creates with 0, 1 and 5 sync plug-ins");
        // Interleaved (0, 1, 5, 0, 1, 5, ...) so a change in the machine's load
        // affects every size alike and the per-plug-in slope stays meaningful.
        let rec = json!({"name": "bench", "amount": 1.5});
        let mut runs = vec![Vec::new(); sizes.len()];
        for _ in 0..RUNS {
            for (j, (k, _, _)) in sizes.iter().enumerate() {
                let table = format!("bench{k}");
                runs[j].push(once(|| p.create("system", &table, &rec).map(|_| ()))?);
            }
        }
        let mut per_op_us = Vec::new();
        for ((k, key, label), runs) in sizes.into_iter().zip(runs) {
            per_op_us.push((k as f64, runs.iter().map(|r| 1e6 / r).collect::<Vec<_>>()));
            figures.push(Figure { key: key.into(), label: label.into(), unit: "/s", runs });
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
        figures.push(Figure {
            key: "sync_invoke_overhead_us".into(),
            label: "cost per sync plug-in in a create (slope 0/1/5)".into(),
            unit: "µs",
            runs: overhead,
        });
    }

    if want("call") {
        say("one sync call (fresh Store + instantiate + call), and the floor under it");
        let prepared = weir.pool().with_conn(|conn| weir.plugins().prepared(conn, "noop", 1))?;
        let rt = weir.plugins().runtime();
        let ctx = bench_context();
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let (us, cpu_us) = per_call(|| {
                let limits = Limits {
                    fuel: Some(1_000_000),
                    deadline: Instant::now() + Duration::from_secs(1),
                    budget_ms: 1000,
                    memory_bytes: 64 << 20,
                    max_host_calls: 100,
                };
                rt.call_sync(&prepared, &ctx, Box::new(NoRecords), &limits).0.map(|_| ()).map_err(|e| Error::Internal(e.to_string()))
            })?;
            wall.push(us);
            cpu.push(cpu_us);
        }
        // The floor: raw wasmtime, weir's engine settings, the same component.
        let floor =
            crate::runtime::Floor::new(&RuntimeConfig { max_instances: 16, ..RuntimeConfig::default() }, crate::examples::wasm("noop").unwrap_or_default())
                .map_err(|e| Error::Internal(format!("the floor's engine: {e:#}")))?;
        let internal = |e: anyhow::Error| Error::Internal(e.to_string());
        let fresh: Vec<f64> = (0..RUNS).map(|_| per_call(|| floor.fresh_call(&ctx).map_err(internal)).map(|(us, _)| us)).collect::<Result<_>>()?;
        let mut warm_call = floor.warm().map_err(internal)?;
        let warm: Vec<f64> = (0..RUNS).map(|_| per_call(|| warm_call(&ctx).map_err(internal)).map(|(us, _)| us)).collect::<Result<_>>()?;
        let ratio = wall.iter().zip(&fresh).map(|(w, f)| w / f).collect();
        let cpu_ratio = cpu.iter().zip(&fresh).map(|(c, f)| c / f).collect();
        figures.push(Figure { key: "sync_call_us".into(), label: "one sync call: fresh Store + instantiate + call".into(), unit: "µs", runs: wall });
        figures.push(Figure { key: "sync_cpu_us".into(), label: "CPU per sync call, all threads".into(), unit: "µs", runs: cpu });
        figures.push(Figure {
            key: "floor_fresh_call_us".into(),
            label: "floor: raw wasmtime, fresh Store + instantiate + call".into(),
            unit: "µs",
            runs: fresh,
        });
        figures.push(Figure { key: "floor_warm_call_us".into(), label: "floor: raw wasmtime, a call on a warm instance".into(), unit: "µs", runs: warm });
        figures.push(Figure { key: "sync_call_floor_ratio".into(), label: "sync call / fresh floor".into(), unit: "×", runs: ratio });
        figures.push(Figure { key: "sync_cpu_floor_ratio".into(), label: "CPU per sync call / fresh floor".into(), unit: "×", runs: cpu_ratio });
    }

    if want("enqueue") {
        say("jobs enqueued through the public API");
        let runs = rate(|| weir.submit_background(&crate::Background::new("noop", Json::Null, "system")).map(|_| ()))?;
        figures.push(Figure { key: "enqueue_per_s".into(), label: "background jobs submitted (each its own commit)".into(), unit: "/s", runs });
    }

    if want("http") {
        say("HTTP creates on loopback, 1 and 32 keep-alive connections");
        if weir.list_tables()?.iter().all(|t| t.name != "httpbench") {
            weir.create_table("httpbench", &[("name", "text"), ("amount", "decimal")])?;
        }
        let f = http_creates(&weir)?;
        figures.push(Figure { key: "http_create_per_s_1".into(), label: "HTTP creates, 1 keep-alive connection".into(), unit: "/s", runs: f.one });
        figures.push(Figure { key: "http_create_per_s_32".into(), label: "HTTP creates, 32 keep-alive connections".into(), unit: "/s", runs: f.many });
        figures.push(Figure { key: "http_create_p99_ms".into(), label: "HTTP create latency p99 at 32 connections".into(), unit: "ms", runs: f.p99 });
        figures.push(Figure {
            key: "http_health_per_s_1".into(),
            label: "floor: GET /api/health, 1 keep-alive connection".into(),
            unit: "/s",
            runs: f.health_one,
        });
        figures.push(Figure {
            key: "http_health_per_s_32".into(),
            label: "floor: GET /api/health, 32 keep-alive connections".into(),
            unit: "/s",
            runs: f.health_many,
        });
    }

    if want("auth") {
        say("signing in: the server's token, a user's token, and the rate limiter");
        let f = http_auth(&weir)?;
        let us_between = |slow: &[f64], fast: &[f64]| slow.iter().zip(fast).map(|(s, f)| 1e6 / s - 1e6 / f).collect::<Vec<_>>();
        let lookup = us_between(&f.user_token, &f.server_token);
        let limiter = us_between(&f.limited, &f.user_token);
        figures.push(Figure {
            key: "http_me_server_token_per_s_1".into(),
            label: "GET /api/me with the server's token, 1 connection".into(),
            unit: "/s",
            runs: f.server_token,
        });
        figures.push(Figure {
            key: "http_me_user_token_per_s_1".into(),
            label: "GET /api/me with a user's token, 1 connection".into(),
            unit: "/s",
            runs: f.user_token,
        });
        figures.push(Figure {
            key: "http_me_rate_limited_per_s_1".into(),
            label: "the same with --rate-limit on (never hit)".into(),
            unit: "/s",
            runs: f.limited,
        });
        figures.push(Figure { key: "auth_token_lookup_us".into(), label: "a user token's lookup per request".into(), unit: "µs", runs: lookup });
        figures.push(Figure {
            key: "rate_limit_overhead_us".into(),
            label: "the rate limiter per request, over HTTP (within noise)".into(),
            unit: "µs",
            runs: limiter,
        });
        // The limiter alone: one caller's bucket checked in a loop, as each
        // request does (a lookup of its bucket, then one GCRA step).
        let limiter = crate::api::limiter::Limiter::new(Some(crate::api::RateSettings { rate_milli: 1_000_000_000_000, burst: 1_000_000 }));
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let (started, mut n) = (Instant::now(), 0u64);
            while started.elapsed() < RUN_TIME {
                for _ in 0..1000 {
                    let _ = std::hint::black_box(limiter.check(std::hint::black_box("token:tok-0123456789ab"), None));
                }
                n += 1000;
            }
            runs.push(started.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        figures.push(Figure { key: "rate_limit_check_ns".into(), label: "the rate limiter's check alone".into(), unit: "ns", runs });
    }

    if want("load") {
        say("component loads");
        let wasm = crate::examples::wasm("credit-check").unwrap_or_default();
        let cache = scratch.path().join("load-cache");
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let dir = cache.join(i.to_string());
            let rt = Runtime::new(RuntimeConfig { cache_dir: Some(dir.clone()), max_instances: 4, ..RuntimeConfig::default() })
                .map_err(|e| Error::Internal(e.to_string()))?;
            let t = Instant::now();
            rt.prepare(wasm)?;
            cold.push(t.elapsed().as_secs_f64() * 1e3);
            drop(rt);
            let rt = Runtime::new(RuntimeConfig { cache_dir: Some(dir), max_instances: 4, ..RuntimeConfig::default() })
                .map_err(|e| Error::Internal(e.to_string()))?;
            let t = Instant::now();
            rt.prepare(wasm)?;
            cached.push(t.elapsed().as_secs_f64() * 1e3);
        }
        figures.push(Figure { key: "component_cold_load_ms".into(), label: "component load, compiling (credit-check)".into(), unit: "ms", runs: cold });
        figures.push(Figure { key: "component_cached_load_ms".into(), label: "component load, from the disk cache".into(), unit: "ms", runs: cached });
    }

    // The async section's parts are sections of their own too
    // (`--only writing`), each named `async ...`.
    if want("async notify") {
        say("async jobs: 10,000 notify jobs, 2 workers");
        figures.push(Figure {
            key: "async_notify_10k_2_workers_per_s".into(),
            label: "drain 10,000 notify jobs, 2 workers".into(),
            unit: "/s",
            runs: (0..3).map(|_| drain(&weir, "notify", 10_000, 2)).collect::<Result<_>>()?,
        });
    }
    if want("async writing") {
        say("async jobs: 10,000 jobs that each write a record, 2 workers");
        if weir.list_tables()?.iter().all(|t| t.name != "entry") {
            weir.create_table("entry", &[("source", "text"), ("attempt", "integer")])?;
        }
        let grants = [crate::steps::Grant { table: "entry".into(), access: crate::steps::Access::Write }];
        figures.push(Figure {
            key: "async_writing_jobs_per_s".into(),
            label: "drain 10,000 jobs writing one record each, 2 workers".into(),
            unit: "/s",
            runs: (0..3).map(|_| drain_with(&weir, "append-entry", 10_000, 2, &[], &grants)).collect::<Result<_>>()?,
        });
    }
    if want("async noop") {
        say("async jobs: 50,000 no-op jobs, default workers");
        let workers = WorkOptions::default().workers;
        figures.push(Figure {
            key: "async_jobs_per_s".into(),
            label: "drain 50,000 no-op jobs, default workers".into(),
            unit: "/s",
            runs: (0..3).map(|_| drain(&weir, "noop", 50_000, workers)).collect::<Result<_>>()?,
        });
    }
    if want("async fair") {
        let workers = WorkOptions::default().workers;
        say("async jobs: 50,000 no-op jobs of 4 owners in 2 queues, priorities mixed, a limit on one step");
        figures.push(Figure {
            key: "async_jobs_per_s_fair".into(),
            label: "drain 50,000 no-op jobs: 4 owners, 2 queues, 3 priorities, a limit".into(),
            unit: "/s",
            runs: (0..3).map(|_| drain_fair(&weir, 50_000, workers)).collect::<Result<_>>()?,
        });
    }
    if want("async nodes") {
        say("async jobs: 50,000 no-op jobs, two worker processes");
        figures.push(Figure {
            key: "async_jobs_per_s_2_nodes".into(),
            label: "drain 50,000 no-op jobs, 2 worker processes".into(),
            unit: "/s",
            runs: (0..3).map(|_| drain_by_processes(&weir, &bench_db, "noop", 50_000, 2)).collect::<Result<_>>()?,
        });
    }
    if want("containment") {
        say("containment: no-op jobs with and without misbehaving ones");
        let workers = WorkOptions::default().workers;
        let bad = ["spin-forever", "memory-hog", "deep-recursion", "panicker"];
        let (mut clean, mut mixed) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            clean.push(drain_among(&weir, "noop", 20_000, workers, &[])?);
            mixed.push(drain_among(&weir, "noop", 20_000, workers, &bad)?);
        }
        let ratio = clean.iter().zip(&mixed).map(|(c, m)| m / c).collect();
        figures.push(Figure { key: "containment_clean_per_s".into(), label: "20,000 no-op jobs alone".into(), unit: "/s", runs: clean });
        figures.push(Figure { key: "containment_mixed_per_s".into(), label: "the same among 16 misbehaving jobs".into(), unit: "/s", runs: mixed });
        figures.push(Figure { key: "containment_ratio".into(), label: "good-job throughput, mixed / clean".into(), unit: "", runs: ratio });
    }
    if want("fanout") {
        say("a workflow starts 100 no-op children and waits for all of them");
        let workers = WorkOptions::default().workers;
        figures.push(Figure {
            key: "fanout_100_children_s".into(),
            label: "fan-out of 100 children, fan-in on all: start to the parent's completion".into(),
            unit: "s",
            runs: (0..3).map(|_| fanout(&weir, 100, workers)).collect::<Result<_>>()?,
        });
    }
    if want("languages") {
        say("credit-check in Rust, and the components given with --component");
        language(scratch.path(), "rust", crate::examples::wasm("credit-check").unwrap_or_default(), &ComponentLayout::default(), &mut figures)?;
        let mut seen = vec!["rust".to_string()];
        for c in components {
            let wasm = crate::plugins::read_component_file(&c.file)?;
            // A label given twice (or `rust`, the example's) is numbered: each figure keeps its key.
            let mut label = c.label.clone();
            let mut n = 1;
            while seen.contains(&label) {
                n += 1;
                label = format!("{}-{n}", c.label);
            }
            seen.push(label.clone());
            language(scratch.path(), &label, &wasm, layout, &mut figures)?;
        }
    }
    if want("latency") {
        say("enqueue-to-start latency at 1,000 jobs/s");
        let (p50, p99) = latency(&weir, 1000, Duration::from_secs(3))?;
        figures.push(Figure { key: "enqueue_to_start_p50_ms".into(), label: "enqueue to start, p50 at 1,000 jobs/s".into(), unit: "ms", runs: vec![p50] });
        figures.push(Figure { key: "enqueue_to_start_p99_ms".into(), label: "enqueue to start, p99 at 1,000 jobs/s".into(), unit: "ms", runs: vec![p99] });
    }

    progress.finish_and_clear();
    let machine = machine();
    if json_out {
        let mut obj = Map::new();
        let mut runs = Map::new();
        for f in &figures {
            obj.insert(f.key.to_string(), json!(round(f.median())));
            runs.insert(f.key.to_string(), json!(f.runs.iter().map(|v| round(*v)).collect::<Vec<_>>()));
        }
        obj.insert("runs".into(), Json::Object(runs));
        obj.insert("machine".into(), machine);
        obj.insert("profile".into(), json!(if cfg!(debug_assertions) { "debug" } else { "release" }));
        crate::output::print_json(&Json::Object(obj));
    } else {
        outln!(
            "weir bench ({} build) on {}",
            if cfg!(debug_assertions) { "debug — use --release for real figures" } else { "release" },
            machine["summary"].as_str().unwrap_or("?")
        );
        outln!("{:<52} {:>12} {:>24}", "figure", "median", format!("spread ({RUNS} runs)"));
        for f in &figures {
            let p = if f.median().abs() < 10.0 { 2 } else { 1 };
            outln!("{:<52} {:>10.p$} {:<2} {:>10.p$} – {:<10.p$}", f.label, f.median(), f.unit, f.min(), f.max());
        }
    }
    drop(weir);
    Ok(())
}

fn job(plugin: &str, version: i64) -> NewJob {
    NewJob {
        kind: "bench",
        asked_by: None,
        unique_key: None,
        step: None,
        plugin: plugin.into(),
        plugin_version: version,
        owner: "system".into(),
        context: JobContext {
            message: "background".into(),
            table: "bench".into(),
            stage: "post-operation".into(),
            depth: 1,
            user: "system".into(),
            correlation_id: "bench".into(),
            target: EntityDoc { table: "bench".into(), id: "bench".into(), fields: vec![] },
            pre_image: None,
            post_image: None,
            config: Json::Null,
            input: Json::Null,
            trace: Default::default(),
            allow_http: vec![],
            may_start: vec![],
            secrets: vec![],
            operation_id: String::new(),
            shared_variables: Default::default(),
            traceparent: None,
        },
        grants: vec![],
        max_attempts: 1,
        backoff_ms: 1000,
        timeout_ms: 10_000,
        fuel: None,
        postpone_until: None,
        callback_url: None,
        queue: crate::jobs::claims::DEFAULT_QUEUE.into(),
        priority: crate::jobs::claims::DEFAULT_PRIORITY,
    }
}

/// A workflow (the `orchestra` fixture's `fanout` mode) that starts `n`
/// no-op children and waits for all of them: seconds from its submission to
/// its completion, on `workers` workers.
fn fanout(weir: &Weir, n: usize, workers: usize) -> Result<f64> {
    plugin_version(weir, "orchestra")?;
    let mut req = crate::Background::new("orchestra", json!({"mode": "fanout", "n": n}), "system");
    req.may_start = vec!["orchestra".into()];
    let started = Instant::now();
    let id = weir.submit_background(&req)?;
    let opts = WorkOptions { workers, until_idle: true, idle_horizon: Duration::ZERO, ..WorkOptions::default() };
    crate::worker::runtime()?.block_on(weir.work(opts, std::future::pending()))?;
    let took = started.elapsed().as_secs_f64();
    let job = weir.show_job(&id)?;
    if job.status != "Succeeded" || job.result.as_ref().is_none_or(|r| r["reports"] != json!(n)) {
        return Err(Error::Internal(format!("bench: the fan-out parent {id} ended {} with {:?}", job.status, job.result)));
    }
    Ok(took)
}

fn plugin_version(weir: &Weir, plugin: &str) -> Result<i64> {
    if weir.pool().with_conn(|c| weir.plugins().head(c, plugin)).is_err() {
        weir.add_plugin(plugin, crate::examples::wasm(plugin).unwrap_or_default())?;
    }
    Ok(weir.pool().with_conn(|c| weir.plugins().head(c, plugin))?.0)
}

/// Enqueues `n` jobs of `plugin` in one transaction, then times a pool of
/// `workers` draining them. Returns jobs per second.
fn drain(weir: &Weir, plugin: &str, n: usize, workers: usize) -> Result<f64> {
    drain_among(weir, plugin, n, workers, &[])
}

/// Like [`drain`], with the misbehaving `bad` plug-ins' jobs (each `BAD_EACH`
/// times, a 500 ms timeout, one attempt) spread evenly among the good ones.
/// Returns the good jobs per second, up to the last good one's completion.
fn drain_among(weir: &Weir, plugin: &str, n: usize, workers: usize, bad: &[&str]) -> Result<f64> {
    drain_with(weir, plugin, n, workers, bad, &[])
}

/// Like [`drain_among`], the good jobs with `grants`.
fn drain_with(weir: &Weir, plugin: &str, n: usize, workers: usize, bad: &[&str], grants: &[crate::steps::Grant]) -> Result<f64> {
    let (conn, run_id) = enqueue_run(weir, plugin, n, bad, grants)?;
    let opts = WorkOptions { workers, until_idle: true, idle_horizon: Duration::ZERO, ..WorkOptions::default() };
    let started_ms = crate::time::now_ms();
    crate::worker::runtime()?.block_on(weir.work(opts, std::future::pending()))?;
    drained_rate(&conn, &run_id, plugin, n, started_ms)
}

/// Like [`drain`] for no-op jobs that fair share sorts out: 4 owners each
/// submitting a batch (as an import would), in 2 queues, at priorities 9, 5,
/// 5 and 0, one owner's batch of a step limited to 1,000 running at once
/// (counted on every claim; a limit that binds would measure itself, not the
/// claim). Claims rotate among the owners and order each by priority.
fn drain_fair(weir: &Weir, n: usize, workers: usize) -> Result<f64> {
    const LIMITED: &str = "bench-limited";
    let run_id = uuid::Uuid::now_v7().to_string();
    let version = plugin_version(weir, "noop")?;
    let conn = weir.db().connect()?;
    let limits = jobs::claims::Limits { max_running: Some(1_000), rate_milli: None };
    jobs::claims::set_limits(&conn, jobs::claims::Scope::Step, LIMITED, limits, crate::time::now_ms())?;
    let tx = conn.transaction()?;
    for (o, priority) in [9, 5, 5, 0].into_iter().enumerate() {
        let owner = format!("bench-owner-{}", o + 1);
        if crate::store::user_active(&tx, &owner)?.is_none() {
            crate::store::add_user(&tx, &owner)?;
        }
        let mut j = job("noop", version);
        j.context.correlation_id = run_id.clone();
        j.owner = owner;
        j.queue = if o % 2 == 0 { jobs::claims::DEFAULT_QUEUE.into() } else { "bench-bulk".into() };
        j.priority = priority;
        j.step = (o == 2).then(|| LIMITED.into());
        for _ in 0..n / 4 {
            jobs::enqueue(&tx, &j)?;
        }
    }
    tx.commit()?;
    let opts = WorkOptions { workers, until_idle: true, idle_horizon: Duration::ZERO, ..WorkOptions::default() };
    let started_ms = crate::time::now_ms();
    crate::worker::runtime()?.block_on(weir.work(opts, std::future::pending()))?;
    drained_rate(&conn, &run_id, "noop", n / 4 * 4, started_ms)
}

/// Enqueues, in one transaction, `n` jobs of `plugin` with `grants` as one
/// run (its id their correlation id), and the misbehaving `bad` plug-ins'
/// jobs (each `BAD_EACH` times, a 500 ms timeout) spread evenly among them.
/// Returns a connection for [`drained_rate`] and the run's id.
fn enqueue_run(weir: &Weir, plugin: &str, n: usize, bad: &[&str], grants: &[crate::steps::Grant]) -> Result<(crate::db::Connection, String)> {
    const BAD_EACH: usize = 4;
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut good = job(plugin, plugin_version(weir, plugin)?);
    good.context.correlation_id = run_id.clone();
    good.grants = grants.to_vec();
    let mut bad_jobs = Vec::new();
    for b in bad {
        let mut j = job(b, plugin_version(weir, b)?);
        j.timeout_ms = 500;
        for _ in 0..BAD_EACH {
            bad_jobs.push(j.clone());
        }
    }
    let every = n / (bad_jobs.len() + 1);
    let conn = weir.db().connect()?;
    let tx = conn.transaction()?;
    for i in 0..n {
        jobs::enqueue(&tx, &good)?;
        if every > 0
            && i % every == every / 2
            && let Some(b) = bad_jobs.get(i / every)
        {
            jobs::enqueue(&tx, b)?;
        }
    }
    tx.commit()?;
    Ok((conn, run_id))
}

/// Enqueues `n` jobs of `plugin`, then times `nodes` separate `weir work
/// --until-idle` processes (this executable) draining them together, as
/// several nodes on one database would. Returns jobs per second.
fn drain_by_processes(weir: &Weir, db: &std::path::Path, plugin: &str, n: usize, nodes: usize) -> Result<f64> {
    let (conn, run_id) = enqueue_run(weir, plugin, n, &[], &[])?;
    let exe = std::env::current_exe().map_err(|e| Error::Internal(format!("bench: cannot find weir's own executable: {e}")))?;
    let started_ms = crate::time::now_ms();
    let children = (0..nodes)
        .map(|_| {
            std::process::Command::new(&exe)
                .arg("--db")
                .arg(db)
                .args(["work", "--until-idle"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| Error::Internal(format!("bench: cannot start a worker process: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    for mut c in children {
        let status = c.wait().map_err(|e| Error::Internal(format!("bench: a worker process: {e}")))?;
        if !status.success() {
            return Err(Error::Internal(format!("bench: a worker process failed ({status})")));
        }
    }
    drained_rate(&conn, &run_id, plugin, n, started_ms)
}

/// Jobs per second of a drain that started at `started_ms`: all `n` jobs of
/// run `run_id` must have succeeded; the drain ended with the last one.
fn drained_rate(conn: &crate::db::Connection, run_id: &str, plugin: &str, n: usize, started_ms: i64) -> Result<f64> {
    let (done, last): (i64, Option<i64>) =
        conn.query_row("SELECT COUNT(*), MAX(completed_at) FROM weir_jobs WHERE correlation_id = ?1 AND statuscode = 30", [run_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if done < n as i64 {
        let why: Option<String> = conn
            .query_row("SELECT error_message FROM weir_jobs WHERE correlation_id = ?1 AND error_message IS NOT NULL LIMIT 1", [run_id], |r| r.get(0))
            .optional()?;
        let why = why.map(|w| format!(" (one said: {w})")).unwrap_or_default();
        return Err(Error::Internal(format!("bench: only {done} of {n} {plugin} jobs succeeded{why}")));
    }
    let secs = (last.unwrap_or(started_ms) - started_ms).max(1) as f64 / 1e3;
    Ok(n as f64 / secs)
}

/// Enqueues jobs at `rate` per second for `period` while a pool runs; returns
/// the p50 and p99 of (first start − creation) in ms.
fn latency(weir: &Weir, rate: u32, period: Duration) -> Result<(f64, f64)> {
    let version = plugin_version(weir, "noop")?;
    let rt = crate::worker::runtime()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pool = rt.spawn({
        let (pool, pipeline, plugins) = (weir.pool().clone(), weir.pipeline().clone(), weir.plugins().clone());
        async move {
            let opts = WorkOptions::default();
            crate::worker::run(pool, pipeline, plugins, opts, async {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    let conn = weir.db().connect()?;
    let mut j = job("noop", version);
    j.kind = "latency";
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < period {
        jobs::enqueue(&conn, &j)?;
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Let the pool finish what was enqueued.
    while conn.query_row("SELECT COUNT(*) FROM weir_jobs WHERE kind = 'latency' AND statecode < 3", [], |r| r.get::<_, i64>(0))? > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stop_tx.send(());
    rt.block_on(pool).map_err(|e| Error::Internal(e.to_string()))??;
    let mut lat: Vec<f64> = conn
        .prepare("SELECT started_at - created_at FROM weir_jobs WHERE kind = 'latency'")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .map(|v| v.map(|v| v as f64))
        .collect::<crate::db::Result<_>>()?;
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    Ok((pct(0.50), pct(0.99)))
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
