//! One attempt: the context a job's plug-in sees, its sandbox, the call,
//! the `records` a workflow uses (writes kept until the outcome), waits
//! checked against the job's grants, bulk deletes, and `weir jobs replay`.
//!
//! Owns no table: the attempt's outcome goes to the recorder.

use super::*;
/// The context a job's plug-in sees (`jobs`: the reports of the jobs its
/// last wait was for).
fn context(job: &Claimed, jobs: Vec<JobReport>) -> Context {
    let c = &job.context;
    Context {
        message: match c.message.as_str() {
            "create" => Message::Create,
            "update" => Message::Update,
            "delete" => Message::Delete,
            _ => Message::Background,
        },
        table: c.table.clone(),
        stage: Stage::PostOperation,
        mode: Mode::Async,
        depth: c.depth,
        user: c.user.clone(),
        correlation_id: c.correlation_id.clone(),
        target: Entity::from(c.target.clone()),
        pre_image: c.pre_image.clone().map(Entity::from),
        post_image: c.post_image.clone().map(Entity::from),
        config: c.config.to_string(),
        input: c.input.to_string(),
        attempt: job.job_attempt(),
        wake: match job.wake.as_deref() {
            Some("timer") => Some(WakeReason::Timer),
            Some("condition-met") => Some(WakeReason::ConditionMet),
            Some("timed-out") => Some(WakeReason::TimedOut),
            Some("checkpoint") => Some(WakeReason::Checkpoint),
            _ => None,
        },
        job_id: job.id.clone(),
        parent_job: job.parent_id.clone(),
        jobs,
        // A background operation or a schedule is its own operation.
        operation_id: if c.operation_id.is_empty() { job.id.clone() } else { c.operation_id.clone() },
        step: job.step.clone().unwrap_or_default(),
        plugin: job.plugin.clone(),
        plugin_version: u32::try_from(job.plugin_version).unwrap_or(u32::MAX),
        shared_variables: c.shared_variables.iter().map(|(name, value)| Variable { name: name.clone(), value: value.clone() }).collect(),
    }
}

pub(super) async fn run_job(shared: &Shared, job: Claimed) {
    let started = Instant::now();
    shared.counters.attempts.fetch_add(1, Ordering::Relaxed);
    let span = crate::otel::job_attempt(job.context.traceparent.as_deref(), &job.id, &job.plugin, job.step.as_deref(), job.job_attempt());
    let (outcome, trace, Asked { changes, children }) = attempt(shared, &job, span.cx().traceparent()).await;
    let label = match &outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Wait(_) => "wait",
        Outcome::Checkpoint(_) => "checkpoint",
        Outcome::Failed { permanent: false, .. } if job.attempts < job.max_attempts => "retry",
        Outcome::Failed { .. } => "failed",
        Outcome::Interrupted => "interrupted",
    };
    crate::telemetry::job_attempt(label);
    span.set(|| vec![opentelemetry::KeyValue::new("weir.outcome", label)]);
    if let Outcome::Failed { message, .. } = &outcome {
        span.fail(|| message.clone());
    }
    if label == "retry" {
        crate::telemetry::job_retry();
    }
    let took = started.elapsed();
    // Prefetch follows the jobs that work: a few timing-out or failing
    // attempts must not shrink it for everyone else.
    let progressed = matches!(outcome, Outcome::Succeeded { .. } | Outcome::Wait(_) | Outcome::Checkpoint(_));
    if progressed {
        let avg = shared.avg_attempt_us.load(Ordering::Relaxed);
        shared.avg_attempt_us.store((avg * 7 + took.as_micros() as u64) / 8, Ordering::Relaxed);
    }
    // A success, a wait or a checkpoint commits the attempt's writes and the
    // jobs it started with it; a failure drops them (the next attempt writes
    // again, once).
    let writes = (progressed && !(changes.is_empty() && children.is_empty())).then(|| Writes {
        who: format!("job {} ({})", job.id, job.step.as_deref().unwrap_or(&job.plugin)),
        user: job.owner.clone(),
        depth: job.context.depth + 1,
        vars: job.context.shared_variables.clone(),
        changes,
        children,
        trace: span.cx(),
    });
    let ok = progressed;
    let trace_log = job.context.trace.keeps(ok).then(|| crate::traces::Trace {
        step: job.step.clone(),
        plugin: job.plugin.clone(),
        mode: "async",
        message: job.context.message.clone(),
        table: job.context.table.clone(),
        record: job.context.target.id.clone(),
        correlation_id: job.context.correlation_id.clone(),
        job: Some(job.id.clone()),
        outcome: match &outcome {
            Outcome::Succeeded { .. } => "ok".into(),
            Outcome::Wait(_) => "wait".into(),
            Outcome::Checkpoint(_) => "checkpoint".into(),
            Outcome::Failed { code, .. } => code.clone(),
            Outcome::Interrupted => "interrupted".into(),
        },
        error: match &outcome {
            Outcome::Failed { message, .. } => Some(message.clone()),
            _ => None,
        },
        duration_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        fuel: None,
        lines: trace.clone(),
    });
    let completion = jobs::Completion { id: job.id.clone(), outcome, trace, duration_ms: took.as_millis() as u64 };
    if shared.done.send(Done { completion, writes, trace_log }).is_err() {
        tracing::error!("job {}: the outcome recorder stopped; the lease will expire and the job run again", job.id);
        shared.held.fetch_sub(1, Ordering::SeqCst);
        shared.wake.notify_one();
    }
}

/// Runs one attempt; returns its outcome, its trace and the record writes it
/// asked for.
/// The kind (and plug-in name) of bulk-delete jobs: built into weir, not a component.
pub const BULK_DELETE: &str = "bulk-delete";

/// Records a bulk delete reads per page.
const BULK_PAGE: usize = 500;

/// A bulk delete (`weir record delete-where`): deletes every record of the
/// input's table matching its filter, page by page, each as its own operation
/// through the pipeline (its delete steps run) as the job's owner. A retried
/// attempt carries on with what is left; a cancel stops it between deletes.
async fn bulk_delete(shared: &Shared, job: &Claimed) -> (Outcome, Vec<crate::runtime::TraceLine>, Asked) {
    let input = &job.context.input;
    let (table, filter) = (input["table"].as_str().unwrap_or_default().to_string(), input["filter"].as_str().unwrap_or_default().to_string());
    if !job.owner_active {
        let message = format!("bulk delete: the job's owner {} is deactivated (or gone); reactivate the owner and retry the job, or cancel it", job.owner);
        return (Outcome::Failed { code: "owner_inactive".into(), message, permanent: true }, vec![], Asked::default());
    }
    let cancel = CancelFlag::default();
    shared.cancels.lock().insert(job.id.clone(), cancel.clone());
    let (pool, pipeline, owner) = (shared.pool.clone(), shared.pipeline.clone(), job.owner.clone());
    let run = tokio::task::spawn_blocking(move || {
        let line = |message: String| crate::runtime::TraceLine { level: "info".into(), message };
        let (mut deleted, mut trace) = (0u64, Vec::new());
        loop {
            if cancel.is_canceled() {
                return (Outcome::Interrupted, trace);
            }
            let page = pool.with_conn(|conn| {
                let def = crate::store::records::require_table(conn, &table)?;
                crate::store::records::query_text(conn, &def, Some(&filter), &[], BULK_PAGE)
            });
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let message = format!("bulk delete of {table}: cannot read the matching records after deleting {deleted}: {e}");
                    return (Outcome::Failed { code: "invalid".into(), message, permanent: matches!(e, Error::Invalid(_) | Error::NotFound(_)) }, trace);
                }
            };
            if page.is_empty() {
                trace.push(line(format!("bulk delete of {table} where {filter}: done, {deleted} deleted")));
                return (Outcome::Succeeded { result: Some(serde_json::json!({"table": table, "filter": filter, "deleted": deleted}).to_string()) }, trace);
            }
            for rec in page {
                match pipeline.delete(&owner, &table, &rec.id) {
                    Ok(()) => deleted += 1,
                    // Deleted meanwhile (by a step, or another writer): nothing left to do.
                    Err(Error::NotFound(_)) => {}
                    Err(e) => {
                        let message = format!("bulk delete of {table}: {deleted} deleted, then {} {} was not: {e}", table, rec.id);
                        let permanent = matches!(e, Error::Plugin { .. } | Error::DepthLimit(_) | Error::Forbidden(_));
                        return (Outcome::Failed { code: if permanent { "rejected" } else { "transient" }.into(), message, permanent }, trace);
                    }
                }
            }
            trace.push(line(format!("bulk delete of {table}: {deleted} deleted so far")));
        }
    });
    match run.await {
        Ok((outcome, trace)) => (outcome, trace, Asked::default()),
        Err(e) => (
            Outcome::Failed { code: "host".into(), message: format!("bulk delete: the worker thread failed: {e}"), permanent: false },
            vec![],
            Asked::default(),
        ),
    }
}

/// What an attempt asked for besides its outcome: record writes and jobs to
/// start, applied with its outcome (or not at all).
#[derive(Default)]
pub(super) struct Asked {
    pub changes: Vec<(String, Change)>,
    pub children: Vec<jobs::children::NewChild>,
}

/// `traceparent`: the attempt's span, for its outbound requests.
async fn attempt(shared: &Shared, job: &Claimed, traceparent: Option<String>) -> (Outcome, Vec<crate::runtime::TraceLine>, Asked) {
    if job.kind == BULK_DELETE {
        return bulk_delete(shared, job).await;
    }
    let failed = |code: &str, message: String| Outcome::Failed { code: code.into(), message, permanent: false };
    let cached = shared.plugins.cached(&job.plugin, job.plugin_version);
    let prepared =
        match cached.map(Ok).unwrap_or_else(|| off_executor(|| shared.pool.with_conn(|conn| shared.plugins.prepared(conn, &job.plugin, job.plugin_version)))) {
            Ok(p) => p,
            Err(e) => return (failed("host", format!("{}: cannot load version {}: {e}", job.plugin, job.plugin_version)), vec![], Asked::default()),
        };
    if !job.owner_active {
        let message = format!(
            "{}: the job's owner {} is deactivated (or gone), so it cannot run; reactivate the owner and retry the job, or cancel it",
            job.plugin, job.owner
        );
        return (Outcome::Failed { code: "owner_inactive".into(), message, permanent: true }, vec![], Asked::default());
    }
    let cancel = CancelFlag::default();
    shared.cancels.lock().insert(job.id.clone(), cancel.clone());
    let sandbox = Sandbox {
        memory_bytes: shared.memory_bytes,
        max_host_calls: shared.max_host_calls,
        key: shared.opts.secret_key.clone(),
        http: shared.opts.egress,
        live: Default::default(),
        traceparent,
        tables: Some(shared.pipeline.clone()),
    };
    shared.live.lock().insert(job.id.clone(), sandbox.live.clone());
    let (outcome, code, stats, asked) = execute(&shared.plugins, &prepared, &shared.pool, job, &sandbox, true, cancel).await;
    shared.live.lock().remove(&job.id);
    crate::telemetry::plugin_call(&job.plugin, "async", code, stats.duration, stats.fuel_used);
    for request in &stats.http {
        crate::telemetry::http_request(&job.plugin, request);
    }
    (outcome, stats.trace, asked)
}

/// What an attempt may use besides the job's own grants.
struct Sandbox {
    memory_bytes: u64,
    max_host_calls: u64,
    /// Opens the secrets the job is granted.
    key: Option<crate::secrets::SecretKey>,
    http: crate::runtime::EgressLimits,
    /// Where the call's trace lines go while it runs (the job's page).
    live: Arc<Mutex<LiveTrace>>,
    /// Sent with its outbound requests: the attempt's span (OpenTelemetry).
    traceparent: Option<String>,
    /// Whose catalogue cache the writes are checked against (the table's
    /// columns; the commit checks them again); without it, the store's.
    tables: Option<Arc<Pipeline>>,
}

/// Runs `job`'s plug-in once (`prepared`, its version or a replacement) and
/// returns the outcome, the call's code (`ok` or its error's), its figures and
/// the record writes it asked for (not applied: the caller commits them with
/// the outcome, or not).
/// Without `http`, every outbound request is refused (a replay must not
/// reach other systems unless asked).
async fn execute(
    plugins: &Arc<Plugins>,
    prepared: &crate::runtime::Prepared,
    pool: &Arc<Pool>,
    job: &Claimed,
    sandbox: &Sandbox,
    http: bool,
    cancel: CancelFlag,
) -> (Outcome, &'static str, crate::runtime::CallStats, Asked) {
    let failed = |code: &str, message: String, permanent: bool| Outcome::Failed { code: code.into(), message, permanent };
    // Woken from a wait for jobs: their reports.
    let reports =
        if job.awaited.is_empty() { Ok(vec![]) } else { off_executor(|| pool.with_conn(|conn| jobs::children::reports(conn, &job.id, &job.awaited))) };
    let reports = match reports {
        Ok(r) => r.into_iter().map(job_report).collect(),
        Err(e) => {
            let message = format!("{}: the reports of the jobs it waited for cannot be read: {e}", job.plugin);
            return (failed("host", message, false), "host", Default::default(), Asked::default());
        }
    };
    let ctx = context(job, reports);
    let limits = Limits {
        fuel: job.fuel,
        deadline: Instant::now() + Duration::from_millis(job.timeout_ms),
        budget_ms: job.timeout_ms,
        memory_bytes: sandbox.memory_bytes,
        max_host_calls: sandbox.max_host_calls,
    };
    let pending = Arc::new(Mutex::new(Vec::new()));
    let children = Arc::new(Mutex::new(Vec::new()));
    let records = JobRecords {
        pool: pool.clone(),
        plugins: plugins.clone(),
        job: job.clone(),
        children: children.clone(),
        live: sandbox.live.clone(),
        who: attempt_who(job),
        grants: job.grants.clone(),
        pending: pending.clone(),
        secrets: job.context.secrets.clone(),
        key: sandbox.key.clone(),
        tables: sandbox.tables.clone(),
    };
    // Grants were checked when the step or operation was registered; one
    // that no longer parses (a hand edit) is left out, so it grants nothing.
    let grants = if http { job.context.allow_http.iter().filter_map(|h| crate::runtime::HttpGrant::parse(h).ok()).collect() } else { vec![] };
    let egress = crate::runtime::Egress { grants, limits: sandbox.http, traceparent: sandbox.traceparent.clone() };
    let (result, stats) = plugins.runtime().call_async(prepared, &ctx, job.state.clone(), Box::new(records), &limits, egress, cancel).await;
    let code = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
    let outcome = match result {
        Ok(Step::Done(result)) => Outcome::Succeeded { result },
        Ok(Step::WaitUntil(w)) if w.at > crate::time::MAX_MS => past_9999(&job.plugin, w.at),
        Ok(Step::WaitUntil(w)) => Outcome::Wait(Wait { until: w.at, state: w.state, ..Wait::default() }),
        Ok(Step::WaitForJobs(w)) => wait_on_jobs(pool, job, &children.lock(), w),
        Ok(Step::Checkpoint(state)) => Outcome::Checkpoint(state),
        Ok(Step::WaitForQuery(w)) => wait_on(pool, job, w.table, None, w.filter, w.timeout_ms, w.state),
        Ok(Step::WaitFor(w)) => wait_on(pool, job, w.table, Some(w.id), w.condition, w.timeout_ms, w.state),
        Err(CallError::Canceled) => Outcome::Interrupted,
        Err(CallError::Permanent(m)) => failed("permanent", format!("{}: {m}", job.plugin), true),
        // Retrying cannot grant what weir does not provide.
        Err(e @ CallError::Denied { .. }) => failed(e.code(), format!("{}: {e}", job.plugin), true),
        Err(e) => failed(e.code(), format!("{}: {e}", job.plugin), false),
    };
    let asked = Asked { changes: std::mem::take(&mut *pending.lock()), children: std::mem::take(&mut *children.lock()) };
    (outcome, code, stats, asked)
}

/// A child's report as the contract gives it.
fn job_report(r: jobs::children::Report) -> JobReport {
    JobReport {
        id: r.id,
        plugin: r.plugin,
        key: r.key,
        status: match r.status {
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "canceled" => JobStatus::Canceled,
            _ => JobStatus::Pending,
        },
        result: r.result,
        error: r.error,
    }
}

/// A wait for jobs: only this job's children (started before, or by this
/// attempt), at least one, at most [`jobs::children::MAX_AWAITED`]; refused
/// permanently otherwise (a workflow learns nothing of others' jobs).
fn wait_on_jobs(pool: &Pool, job: &Claimed, started: &[jobs::children::NewChild], mut w: WaitForJobs) -> Outcome {
    let plugin = &job.plugin;
    // Each job once, in the order first given.
    let mut seen = std::collections::HashSet::new();
    w.jobs.retain(|id| seen.insert(id.clone()));
    let refuse =
        |why: String| Outcome::Failed { code: "invalid_wait".into(), message: format!("{plugin}: cannot wait for those jobs: {why}"), permanent: true };
    if w.jobs.is_empty() || w.jobs.len() > jobs::children::MAX_AWAITED {
        return refuse(format!("wait-for-jobs names 1 to {} jobs, not {}", jobs::children::MAX_AWAITED, w.jobs.len()));
    }
    let earlier: Vec<String> = w.jobs.iter().filter(|id| !started.iter().any(|c| &c.id == *id)).cloned().collect();
    if !earlier.is_empty() {
        match off_executor(|| pool.with_conn(|conn| jobs::children::strangers(conn, &job.id, &earlier))) {
            Ok(strangers) if strangers.is_empty() => {}
            Ok(strangers) => return refuse(format!("{} is not a job it started (jobs.start answers the ids it may wait for)", strangers[0])),
            Err(e) => return Outcome::Failed { code: "host".into(), message: format!("{plugin}: cannot check the jobs it waits for: {e}"), permanent: false },
        }
    }
    let until = crate::time::now_ms().saturating_add(i64::try_from(w.timeout_ms).unwrap_or(i64::MAX));
    if until > crate::time::MAX_MS {
        return past_9999(plugin, until);
    }
    Outcome::Wait(Wait { until, jobs: w.jobs, all: w.all, state: w.state, ..Wait::default() })
}

/// A wait (or its timeout) past the end of year 9999, the last time weir
/// can write: refused, permanently.
fn past_9999(plugin: &str, at: i64) -> Outcome {
    Outcome::Failed {
        code: "invalid_wait".into(),
        message: format!("{plugin}: cannot wait that long: the wait would end at {at} ms since 1970, after the end of year 9999 (the latest time weir keeps)"),
        permanent: true,
    }
}

/// How an attempt of `job` is named in its errors: the job and its step (or plug-in).
fn attempt_who(job: &Claimed) -> String {
    format!("job {} ({})", job.id, job.step.as_deref().unwrap_or(&job.plugin))
}

/// A wait for a condition over `table` (on record `record`, or on any record
/// of it), checked before the job is suspended on it; with its timeout.
/// Waking on a condition tells the workflow whether records match, so a wait
/// needs the read grant on its table, as `records.query` does: refused with
/// the `denied` code (permanent: retrying cannot grant it), before the table
/// or the filter is looked at, so an ungranted workflow learns nothing.
fn wait_on(pool: &Pool, job: &Claimed, table: String, record: Option<String>, condition: String, timeout_ms: u64, state: Vec<u8>) -> Outcome {
    let plugin = &job.plugin;
    if let Err(RecordError::Denied(why) | RecordError::NotFound(why) | RecordError::Invalid(why) | RecordError::Failed(why)) =
        check_grant(&attempt_who(job), &job.grants, &table, Access::Read)
    {
        let what = if record.is_some() { "wait-for" } else { "wait-for-query" };
        return Outcome::Failed { code: "denied".into(), message: format!("{plugin}: cannot {what} on table {table}: {why}"), permanent: true };
    }
    let until = crate::time::now_ms().saturating_add(i64::try_from(timeout_ms).unwrap_or(i64::MAX));
    if until > crate::time::MAX_MS {
        return past_9999(plugin, until);
    }
    let checked = match &record {
        Some(id) if id.contains('\0') => Err(Error::invalid("the record id holds the NUL character (U+0000): no record has such an id")),
        Some(_) => off_executor(|| pool.with_conn(|conn| jobs::waits::check_condition(conn, &table, &condition))),
        None => off_executor(|| pool.with_conn(|conn| jobs::waits::check_query_wait(conn, &table, &condition))),
    };
    match checked {
        // A wait for one record is found by the record; one for any record by its key.
        Ok(key) => {
            let key = if record.is_some() { None } else { key };
            Outcome::Wait(Wait { until, table: Some(table), record, condition: Some(condition), key, state, ..Wait::default() })
        }
        Err(e) => Outcome::Failed { code: "invalid_wait".into(), message: format!("{plugin}: cannot wait for that: {e}"), permanent: true },
    }
}

/// What `weir jobs replay` found: the outcome of running a job's captured
/// context again, its trace, and the record writes it asked for (never applied).
#[derive(Debug, serde::Serialize)]
pub struct Replay {
    pub job: String,
    /// The plug-in that ran: `NAME@VERSION`, or the file given instead.
    pub ran: String,
    /// `succeeded`, `wait`, `failed` or `interrupted`.
    pub outcome: &'static str,
    pub result: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub wait: Option<serde_json::Value>,
    pub trace: Vec<crate::runtime::TraceLine>,
    /// Writes it asked for, as `{op, table, id, fields}` (rolled back: none was applied).
    pub writes: Vec<serde_json::Value>,
    pub duration_ms: u64,
}

/// Runs job `id`'s captured context (and the state its last wait saved)
/// again, against the current records, without changing anything: its
/// writes are checked and reported but never committed, and the job row is
/// untouched. `wasm` runs a fixed build instead of the job's version; `http`
/// lets it reach the hosts it is granted (off by default: a replay should not
/// notify anyone twice).
pub async fn replay(pool: Arc<Pool>, plugins: Arc<Plugins>, id: &str, wasm: Option<&[u8]>, opts: &WorkOptions, http: bool) -> Result<Replay> {
    let job = off_executor(|| pool.with_conn(|conn| jobs::load(conn, id)))?;
    let (prepared, ran) = match wasm {
        Some(bytes) => (plugins.runtime().prepare(bytes)?, "the given file".to_string()),
        None => {
            (off_executor(|| pool.with_conn(|conn| plugins.prepared(conn, &job.plugin, job.plugin_version)))?, format!("{}@{}", job.plugin, job.plugin_version))
        }
    };
    if !prepared.world.serves_async() {
        return Err(Error::invalid(format!("{ran} is a {} component: it cannot run job {id}, a workflow's", prepared.world.as_str())));
    }
    let settings = crate::pipeline::Settings::default();
    let sandbox = Sandbox {
        memory_bytes: settings.memory_bytes,
        max_host_calls: settings.max_host_calls,
        key: opts.secret_key.clone(),
        http: opts.egress,
        live: Default::default(),
        traceparent: None,
        tables: None,
    };
    let started = Instant::now();
    let (outcome, _, stats, asked) = execute(&plugins, &prepared, &pool, &job, &sandbox, http, CancelFlag::default()).await;
    let started_jobs = asked.children.iter().map(|c| serde_json::json!({"op": "start", "plugin": c.job.plugin, "key": c.key, "input": c.job.context.input}));
    let writes = asked
        .changes
        .into_iter()
        .map(|(table, change)| {
            let (op, id, fields) = match change {
                Change::Create(id, f) => ("create", id, f),
                Change::Update(id, f) => ("update", id, f),
                Change::Delete(id) => ("delete", id, vec![]),
            };
            let fields: serde_json::Map<String, serde_json::Value> = fields.iter().map(|f| (f.name.clone(), crate::values::to_json(&f.value))).collect();
            serde_json::json!({"op": op, "table": table, "id": id, "fields": fields})
        })
        .chain(started_jobs)
        .collect();
    let mut replay = Replay {
        job: job.id.clone(),
        ran,
        outcome: "succeeded",
        result: None,
        error_code: None,
        error: None,
        wait: None,
        trace: stats.trace,
        writes,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    match outcome {
        Outcome::Succeeded { result } => replay.result = result,
        Outcome::Wait(w) => {
            replay.outcome = "wait";
            replay.wait = Some(w.doc());
        }
        Outcome::Checkpoint(_) => replay.outcome = "checkpoint",
        Outcome::Failed { code, message, .. } => {
            replay.outcome = "failed";
            replay.error_code = Some(code);
            replay.error = Some(message);
        }
        Outcome::Interrupted => replay.outcome = "interrupted",
    }
    Ok(replay)
}

/// `records` for async jobs. Writes are checked at once (the grant, the
/// table, columns and types, that an updated or deleted record exists) and
/// kept until the attempt ends: a success or a wait commits them together with
/// the job's new state, only if the attempt still holds the job
/// ([`Pipeline::commit_attempt`]: each a nested operation at the trigger's
/// depth + 1, as the job's owner, its steps firing); a failure drops them. So
/// a retried attempt never writes twice, and a worker that lost its lease
/// writes nothing. `get` sees the attempt's own writes; `query` sees the
/// committed store.
struct JobRecords {
    pool: Arc<Pool>,
    /// Resolves the plug-ins it starts.
    plugins: Arc<Plugins>,
    /// The job it runs for (the parent of the jobs it starts).
    job: Claimed,
    /// Jobs it started, created with the outcome.
    children: Arc<Mutex<Vec<jobs::children::NewChild>>>,
    /// The trace lines so far, for the job's page while it runs.
    live: Arc<Mutex<LiveTrace>>,
    who: String,
    grants: Vec<Grant>,
    pending: Arc<Mutex<Vec<(String, Change)>>>,
    /// The secrets the job is granted, and the key that opens them.
    secrets: Vec<String>,
    key: Option<crate::secrets::SecretKey>,
    tables: Option<Arc<Pipeline>>,
}

/// Merges `changes` into `fields` by name.
fn merge(fields: &mut Vec<Field>, changes: &[Field]) {
    for c in changes {
        match fields.iter_mut().find(|f| f.name == c.name) {
            Some(f) => f.value = c.value.clone(),
            None => fields.push(c.clone()),
        }
    }
}

impl JobRecords {
    /// The table's definition, and the fields conformed to it (checked now so
    /// the guest hears of a bad write at once).
    fn check_fields(&self, table: &str, fields: &[Field]) -> std::result::Result<Vec<Field>, RecordError> {
        check_grant(&self.who, &self.grants, table, Access::Write)?;
        let def = |conn: &crate::db::Connection| match &self.tables {
            Some(pipeline) => pipeline.table_def(conn, table),
            None => crate::store::records::require_table(conn, table),
        };
        let conformed = off_executor(|| self.pool.with_conn(|conn| def(conn)?.conform_fields(fields.to_vec()))).map_err(to_record_error)?;
        Ok(conformed.into_iter().map(|(name, value)| Field { name, value }).collect())
    }

    /// The record as this attempt sees it: committed, then its own pending
    /// changes. None when it does not exist (or this attempt deleted it).
    fn view(&self, table: &str, id: &str) -> std::result::Result<Option<Entity>, RecordError> {
        let stored = match off_executor(|| self.pool.with_conn(|conn| crate::store::records::get_named(conn, table, id))) {
            Ok(r) => Some(r.to_entity()),
            Err(crate::error::Error::NotFound(_)) => None,
            Err(e) => return Err(to_record_error(e)),
        };
        let mut seen = stored;
        for (t, change) in self.pending.lock().iter().filter(|(t, _)| t == table) {
            match change {
                Change::Create(cid, fields) if cid == id => seen = Some(Entity { table: t.clone(), id: cid.clone(), fields: fields.clone() }),
                Change::Update(uid, fields) if uid == id => {
                    if let Some(e) = &mut seen {
                        merge(&mut e.fields, fields);
                    }
                }
                Change::Delete(did) if did == id => seen = None,
                _ => {}
            }
        }
        Ok(seen)
    }

    fn missing(table: &str, id: &str) -> RecordError {
        RecordError::NotFound(format!("no {table} record with id {id}"))
    }
}

impl RecordHost for JobRecords {
    fn watches_trace(&self) -> bool {
        true
    }
    fn trace_line(&mut self, level: &str, message: &str) {
        self.live.lock().push(level, message);
    }

    /// A child job: granted by `--may-start`, the plug-in's current version
    /// (a workflow), run as this job's owner with this job's grants, in its
    /// correlation. A key started before (committed, or in this attempt)
    /// answers that job; a new one is created with the attempt's outcome.
    fn start_job(&mut self, o: &StartOptions) -> std::result::Result<String, JobError> {
        let job = &self.job;
        if !job.context.may_start.contains(&o.plugin) {
            return Err(JobError::Denied(format!("{} may not start plug-in {} (grant it with --may-start {})", self.who, o.plugin, o.plugin)));
        }
        jobs::children::check_key(&o.key).map_err(JobError::Invalid)?;
        if let Some(c) = self.children.lock().iter().find(|c| c.key == o.key) {
            return Ok(c.id.clone());
        }
        {
            let started = self.children.lock();
            let bytes: usize = started.iter().map(|c| c.job.context.input.to_string().len()).sum::<usize>() + o.input.len();
            if started.len() >= jobs::children::MAX_STARTED || bytes > jobs::children::MAX_STARTED_INPUT_BYTES {
                return Err(JobError::Invalid(format!(
                    "one attempt starts at most {} jobs with {} bytes of input in all: end this run with a checkpoint, then start the rest",
                    jobs::children::MAX_STARTED,
                    jobs::children::MAX_STARTED_INPUT_BYTES
                )));
            }
        }
        // A child is one level deeper, as a nested operation is: chains past the limit are probable loops.
        if job.context.depth >= crate::pipeline::MAX_DEPTH {
            return Err(JobError::Invalid(format!(
                "{} is {} levels deep: a child would pass the limit of {} (a probable loop of jobs starting jobs)",
                self.who,
                job.context.depth,
                crate::pipeline::MAX_DEPTH
            )));
        }
        let input: serde_json::Value = serde_json::from_str(&o.input).map_err(|e| JobError::Invalid(format!("the input of {} is not JSON: {e}", o.key)))?;
        if let Some(q) = &o.queue {
            jobs::claims::check_queue(q).map_err(|e| JobError::Invalid(e.to_string()))?;
        }
        if let Some(p) = o.priority {
            jobs::claims::check_priority(i64::from(p)).map_err(|e| JobError::Invalid(e.to_string()))?;
        }
        let found = off_executor(|| {
            self.pool.with_conn(|conn| match jobs::children::existing(conn, &job.id, &o.key)? {
                Some(id) => Ok(Err(id)),
                None => Ok(Ok((self.plugins.head(conn, &o.plugin)?, jobs::children::priority_of(conn, &job.id)?))),
            })
        });
        let ((version, world), parent_priority) = match found {
            Ok(Err(existing)) => return Ok(existing),
            Ok(Ok(head)) => head,
            Err(Error::NotFound(m)) => return Err(JobError::NotFound(m)),
            Err(e) => return Err(JobError::Invalid(format!("cannot start {}: {e}", o.plugin))),
        };
        if !world.serves_async() {
            return Err(JobError::NotFound(format!("plug-in {} is a {} component: it has no workflow to run as a job", o.plugin, world.as_str())));
        }
        let c = &job.context;
        let new = jobs::NewJob {
            kind: "background",
            step: None,
            plugin: o.plugin.clone(),
            plugin_version: version,
            owner: job.owner.clone(),
            context: jobs::JobContext {
                correlation_id: c.correlation_id.clone(),
                depth: c.depth + 1,
                allow_http: c.allow_http.clone(),
                secrets: c.secrets.clone(),
                // A child starts no jobs of its own: `--may-start` is the step's grant, not inherited.
                may_start: vec![],
                trace: c.trace,
                ..jobs::JobContext::background(&job.owner, input)
            },
            grants: job.grants.clone(),
            max_attempts: jobs::DEFAULT_MAX_ATTEMPTS,
            backoff_ms: jobs::DEFAULT_BACKOFF_MS,
            timeout_ms: jobs::DEFAULT_TIMEOUT_MS,
            fuel: None,
            postpone_until: None,
            callback_url: None,
            queue: o.queue.clone().unwrap_or_else(|| jobs::claims::DEFAULT_QUEUE.into()),
            priority: o.priority.map_or(parent_priority, i64::from),
            asked_by: None,
            unique_key: None,
        };
        let id = uuid::Uuid::now_v7().to_string();
        self.children.lock().push(jobs::children::NewChild { id: id.clone(), key: o.key.clone(), job: new });
        Ok(id)
    }

    fn secret(&mut self, name: &str) -> std::result::Result<String, SecretError> {
        if !self.secrets.iter().any(|s| s == name) {
            return Err(SecretError::Denied(format!("{} has no grant for secret {name} (register the step with --secret {name})", self.who)));
        }
        let Some(key) = &self.key else {
            return Err(SecretError::NotFound(format!("secret {name} cannot be opened: this worker has no secret key (WEIR_SECRET_KEY or --secret-key-file)")));
        };
        match off_executor(|| self.pool.with_conn(|conn| crate::secrets::reveal(conn, key, name))) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(SecretError::NotFound(format!("no secret named {name} opens with this worker's key (`weir secret set {name}` stores it)"))),
            Err(e) => Err(SecretError::NotFound(format!("secret {name} cannot be read: {e}"))),
        }
    }

    fn get(&mut self, table: &str, id: &str) -> std::result::Result<Entity, RecordError> {
        check_grant(&self.who, &self.grants, table, Access::Read)?;
        self.view(table, id)?.ok_or_else(|| Self::missing(table, id))
    }
    fn query(&mut self, q: &QueryOptions) -> std::result::Result<Page, RecordError> {
        check_grant(&self.who, &self.grants, &q.table, Access::Read)?;
        off_executor(|| {
            self.pool.with_conn(|conn| {
                let def = crate::store::records::require_table(conn, &q.table)?;
                crate::store::records::plugin_query(conn, &def, q, crate::store::records::MAX_TOP)
            })
        })
        .map_err(to_record_error)
    }
    fn create(&mut self, table: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let fields = self.check_fields(table, &fields)?;
        let id = uuid::Uuid::now_v7().to_string();
        self.pending.lock().push((table.to_string(), Change::Create(id.clone(), fields.clone())));
        Ok(Entity { table: table.to_string(), id, fields })
    }
    fn update(&mut self, table: &str, id: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let fields = self.check_fields(table, &fields)?;
        let mut seen = self.view(table, id)?.ok_or_else(|| Self::missing(table, id))?;
        merge(&mut seen.fields, &fields);
        self.pending.lock().push((table.to_string(), Change::Update(id.to_string(), fields)));
        Ok(seen)
    }
    fn delete(&mut self, table: &str, id: &str) -> std::result::Result<(), RecordError> {
        check_grant(&self.who, &self.grants, table, Access::Write)?;
        self.view(table, id)?.ok_or_else(|| Self::missing(table, id))?;
        self.pending.lock().push((table.to_string(), Change::Delete(id.to_string())));
        Ok(())
    }
}
