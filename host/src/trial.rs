//! `weir plugin test`: runs one component offline, in the same sandbox and
//! limits as a step, against a scratch store seeded from a fixture, and
//! reports what it did — the outcome (changes, notes and variables, or the
//! workflow's step), the records it wrote and its trace lines.
//!
//! Owns nothing that lasts but the compiled component, kept in the compile
//! cache like any other (so testing and then adding it compiles once): a
//! scratch database in a temporary directory, deleted afterwards. The context and the fixture are JSON an author writes
//! by hand (see [`TrialRequest`]); values are typed by the fixture's columns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Map, Value as Json, json};

use crate::Weir;
use crate::db::Pool;
use crate::error::{Error, Result, to_record_error};
use crate::pipeline::Pipeline;
use crate::runtime::wit::{Context, Entity, Field, Message, Mode, Page, QueryOptions, RecordError, Stage, Step, Variable, WakeReason};
use crate::runtime::{CallError, Limits, RecordHost, TraceLine};
use crate::store::records::{self, Column};
use crate::values::{self, ColType, Value};

/// What to run.
///
/// `context` (all optional): `{"message": "create", "table": "opportunity",
/// "stage": "pre-operation", "mode": "sync", "user": "alice", "target": {"id":
/// "o1", "amount": 5000, "customer": "a1"}, "pre_image": {...}, "post_image":
/// {...}, "config": {...}, "input": {...}, "attempt": 1, "wake": "timer",
/// "shared_variables": {"name": JSON}}`.
///
/// `records`: `{"account": {"columns": {"name": "text", "creditlimit":
/// "decimal"}, "records": [{"id": "a1", "name": "Contoso", "creditlimit": 1000}]}}`.
pub struct TrialRequest {
    pub wasm: Vec<u8>,
    pub context: Json,
    pub records: Option<Json>,
    /// The state a workflow saved with its last wait.
    pub state: Option<Vec<u8>>,
    /// The compile cache (`None`: the user's, as for a database).
    pub cache_dir: Option<std::path::PathBuf>,
}

/// What the component did.
#[derive(Debug, serde::Serialize)]
pub struct TrialReport {
    /// `plugin`, `workflow` or `hybrid`, and the contract it was built against.
    pub world: &'static str,
    pub contract: &'static str,
    /// How it ran: `sync` or `async`.
    pub mode: &'static str,
    /// `ok`, or the error's code (`rejected`, `failed`, `transient`, `permanent`, `out_of_fuel`, ...).
    pub outcome: String,
    pub error: Option<String>,
    /// Sync: the fields it set on the target, its notes and the shared variables it set.
    pub changes: Map<String, Json>,
    pub notes: Vec<String>,
    pub variables: Map<String, Json>,
    /// Async: `{"done": RESULT}` or the wait it asked for.
    pub step: Option<Json>,
    /// Records it created, updated or deleted in the scratch store.
    pub writes: Vec<Json>,
    pub trace: Vec<TraceLine>,
    pub duration_us: u64,
    pub fuel: Option<u64>,
    /// The state a workflow's wait or checkpoint saved (`--save-state`
    /// writes it; `--state` gives it to the next run).
    #[serde(skip)]
    pub saved_state: Option<Vec<u8>>,
}

/// A saved state as the report shows it: the JSON it holds (as the SDKs
/// save it), else its text, else its size.
fn state_view(state: &[u8]) -> Json {
    match serde_json::from_slice::<Json>(state) {
        Ok(doc) => json!({"bytes": state.len(), "json": doc}),
        Err(_) => match std::str::from_utf8(state) {
            Ok(text) => json!({"bytes": state.len(), "text": text}),
            Err(_) => json!({"bytes": state.len()}),
        },
    }
}

impl TrialReport {
    pub fn succeeded(&self) -> bool {
        self.outcome == "ok"
    }
}

/// Runs the component once; an error means the request itself was bad (a
/// bad fixture or context, not a component).
pub fn run(req: TrialRequest) -> Result<TrialReport> {
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(format!("cannot make a scratch directory: {e}")))?;
    let weir = Weir::open_with_cache(dir.path().join("trial.db"), Default::default(), req.cache_dir.clone())?;
    if let Some(fixture) = &req.records {
        seed(&weir, fixture)?;
    }
    let prepared = weir.plugins().runtime().prepare(&req.wasm).map_err(|e| Error::invalid(format!("the component: {e}")))?;
    let c = &req.context;
    let mode = match c["mode"].as_str() {
        Some("sync") => Mode::Sync,
        Some("async") => Mode::Async,
        Some(other) => return Err(Error::invalid(format!("context: mode is sync or async, not {other:?}"))),
        None if prepared.world.serves_sync() => Mode::Sync,
        None => Mode::Async,
    };
    let ctx = context(&weir, c, mode)?;
    let writes = Arc::new(Mutex::new(Vec::new()));
    let host = TrialRecords { pipeline: weir.pipeline().clone(), pool: weir.pool().clone(), user: ctx.user.clone(), writes: writes.clone() };
    let settings = weir.pipeline().settings().clone();
    let started = Instant::now();
    let mut report = TrialReport {
        world: prepared.world.as_str(),
        contract: prepared.contract.as_str(),
        mode: if mode == Mode::Sync { "sync" } else { "async" },
        outcome: "ok".into(),
        error: None,
        changes: Map::new(),
        notes: vec![],
        variables: Map::new(),
        step: None,
        writes: vec![],
        trace: vec![],
        duration_us: 0,
        fuel: None,
        saved_state: None,
    };
    let fail = |report: &mut TrialReport, e: CallError| {
        report.outcome = e.code().to_string();
        report.error = Some(e.to_string());
    };
    if mode == Mode::Sync {
        let limits = Limits {
            fuel: Some(settings.default_fuel),
            deadline: Instant::now() + settings.op_budget,
            budget_ms: settings.op_budget.as_millis() as u64,
            memory_bytes: settings.memory_bytes,
            max_host_calls: settings.max_host_calls,
        };
        let (result, stats) = weir.plugins().runtime().call_sync(&prepared, &ctx, Box::new(host), &limits);
        match result {
            Ok(o) => {
                report.changes = o.changes.iter().map(|f| (f.name.clone(), values::to_json(&f.value))).collect();
                report.notes = o.notes;
                report.variables = o.variables.into_iter().map(|v| (v.name, serde_json::from_str(&v.value).unwrap_or(Json::String(v.value)))).collect();
            }
            Err(e) => fail(&mut report, e),
        }
        report.fuel = Some(stats.fuel_used);
        report.trace = stats.trace;
    } else {
        let limits = Limits {
            fuel: None,
            deadline: Instant::now() + Duration::from_millis(crate::jobs::DEFAULT_TIMEOUT_MS),
            budget_ms: crate::jobs::DEFAULT_TIMEOUT_MS,
            memory_bytes: settings.memory_bytes,
            max_host_calls: settings.max_host_calls,
        };
        let rt = crate::worker::runtime()?;
        let call = weir.plugins().runtime().call_async(&prepared, &ctx, req.state.clone(), Box::new(host), &limits, Default::default(), Default::default());
        let (result, stats) = rt.block_on(call);
        match result {
            Ok(Step::Done(r)) => report.step = Some(json!({"done": r.map(|t| serde_json::from_str::<Json>(&t).unwrap_or(Json::String(t)))})),
            Ok(Step::WaitUntil(w)) => {
                report.step = Some(json!({"wait_until": crate::time::to_rfc3339(w.at), "state": state_view(&w.state)}));
                report.saved_state = Some(w.state);
            }
            Ok(Step::WaitFor(w)) => {
                let wait = json!({"table": w.table, "id": w.id, "condition": w.condition, "timeout_ms": w.timeout_ms});
                report.step = Some(json!({"wait_for": wait, "state": state_view(&w.state)}));
                report.saved_state = Some(w.state);
            }
            Ok(Step::WaitForQuery(w)) => {
                report.step =
                    Some(json!({"wait_for_query": {"table": w.table, "filter": w.filter, "timeout_ms": w.timeout_ms}, "state": state_view(&w.state)}));
                report.saved_state = Some(w.state);
            }
            Ok(Step::WaitForJobs(w)) => {
                report.step = Some(json!({"wait_for_jobs": {"jobs": w.jobs, "all": w.all, "timeout_ms": w.timeout_ms}, "state": state_view(&w.state)}));
                report.saved_state = Some(w.state);
            }
            Ok(Step::Checkpoint(state)) => {
                report.step = Some(json!({"checkpoint": {}, "state": state_view(&state)}));
                report.saved_state = Some(state);
            }
            Err(e) => fail(&mut report, e),
        }
        report.trace = stats.trace;
    }
    report.duration_us = started.elapsed().as_micros() as u64;
    report.writes = std::mem::take(&mut *writes.lock());
    Ok(report)
}

/// Creates the fixture's tables (those others refer to first) and records.
pub(crate) fn seed(weir: &Weir, fixture: &Json) -> Result<()> {
    let Json::Object(tables) = fixture else {
        return Err(Error::invalid("the records fixture must be an object: {\"TABLE\": {\"columns\": {\"NAME\": \"TYPE\"}, \"records\": [...]}}"));
    };
    let mut pending: Vec<(&String, &Json)> = tables.iter().collect();
    // Tables whose references are not created yet wait for a later pass.
    while !pending.is_empty() {
        let before = pending.len();
        let mut last_error = None;
        pending.retain(|(name, spec)| {
            let columns: Result<Vec<Column>> = spec["columns"]
                .as_object()
                .map(|cols| {
                    cols.iter()
                        .map(|(n, t)| {
                            let ty =
                                ColType::parse(t.as_str().unwrap_or_default()).map_err(|e| Error::invalid(format!("fixture table {name}, column {n}: {e}")))?;
                            Ok(Column { name: n.clone(), ty })
                        })
                        .collect()
                })
                .unwrap_or_else(|| Err(Error::invalid(format!("fixture table {name}: give its \"columns\" as {{\"NAME\": \"TYPE\"}}"))));
            match columns.and_then(|cols| weir.pool().with_conn(|conn| records::create_table(conn, name, &cols))) {
                Ok(_) => false,
                Err(e) => {
                    last_error = Some(e);
                    true
                }
            }
        });
        if pending.len() == before {
            return Err(last_error.unwrap_or_else(|| Error::invalid("the records fixture's tables cannot be created")));
        }
    }
    for (name, spec) in tables {
        for (i, rec) in spec["records"].as_array().into_iter().flatten().enumerate() {
            let mut obj = rec.as_object().cloned().ok_or_else(|| Error::invalid(format!("fixture table {name}, record {}: not an object", i + 1)))?;
            let id = match obj.remove("id") {
                Some(Json::String(id)) => id,
                _ => uuid::Uuid::now_v7().to_string(),
            };
            weir.pool().with_conn(|conn| {
                let def = records::require_table(conn, name)?;
                let fields = def.parse_fields(&Json::Object(obj))?;
                records::insert(conn, &def, &id, &fields)
            })?;
        }
    }
    Ok(())
}

/// The context the component sees, from the author's JSON.
fn context(weir: &Weir, c: &Json, mode: Mode) -> Result<Context> {
    let table = c["table"].as_str().unwrap_or_default().to_string();
    let def = if table.is_empty() { None } else { weir.pool().with_conn(|conn| records::table_def(conn, &table))? };
    let entity = |key: &str| -> Result<Option<Entity>> {
        match &c[key] {
            Json::Null => Ok(None),
            Json::Object(m) => {
                let id = m.get("id").and_then(Json::as_str).unwrap_or("test-record").to_string();
                let mut fields = Vec::new();
                for (name, v) in m.iter().filter(|(k, _)| k.as_str() != "id") {
                    let value = match def.as_ref().and_then(|d| d.column(name)) {
                        Some(col) => values::from_json(name, &col.ty, v).map_err(|e| Error::invalid(format!("context {key}: {e}")))?,
                        None => guess(v),
                    };
                    fields.push(Field { name: name.clone(), value });
                }
                Ok(Some(Entity { table: table.clone(), id, fields }))
            }
            other => Err(Error::invalid(format!("context {key}: an object of fields (with \"id\"), not {other}"))),
        }
    };
    let text = |key: &str, default: &str| c[key].as_str().unwrap_or(default).to_string();
    let default_stage = if mode == Mode::Sync { "pre-operation" } else { "post-operation" };
    Ok(Context {
        message: match c["message"].as_str().unwrap_or("create") {
            "create" => Message::Create,
            "update" => Message::Update,
            "delete" => Message::Delete,
            "background" => Message::Background,
            other => return Err(Error::invalid(format!("context: message is create, update, delete or background, not {other:?}"))),
        },
        table: table.clone(),
        stage: match c["stage"].as_str().unwrap_or(default_stage) {
            "pre-validation" => Stage::PreValidation,
            "pre-operation" => Stage::PreOperation,
            "post-operation" => Stage::PostOperation,
            other => return Err(Error::invalid(format!("context: stage is pre-validation, pre-operation or post-operation, not {other:?}"))),
        },
        mode,
        depth: c["depth"].as_u64().unwrap_or(1) as u32,
        user: text("user", "system"),
        correlation_id: text("correlation_id", "test-correlation"),
        target: entity("target")?.unwrap_or(Entity { table: table.clone(), id: "test-record".into(), fields: vec![] }),
        pre_image: entity("pre_image")?,
        post_image: entity("post_image")?,
        config: c["config"].to_string(),
        input: c["input"].to_string(),
        attempt: c["attempt"].as_u64().unwrap_or(1) as u32,
        wake: match c["wake"].as_str() {
            None => None,
            Some("timer") => Some(WakeReason::Timer),
            Some("condition-met") => Some(WakeReason::ConditionMet),
            Some("timed-out") => Some(WakeReason::TimedOut),
            Some("checkpoint") => Some(WakeReason::Checkpoint),
            Some(other) => return Err(Error::invalid(format!("context: wake is timer, condition-met, timed-out or checkpoint, not {other:?}"))),
        },
        operation_id: text("operation_id", "test-operation"),
        step: text("step", "test"),
        plugin: text("plugin", "test"),
        plugin_version: c["plugin_version"].as_u64().unwrap_or(1) as u32,
        shared_variables: c["shared_variables"]
            .as_object()
            .map(|m| m.iter().map(|(name, v)| Variable { name: name.clone(), value: v.to_string() }).collect())
            .unwrap_or_default(),
        job_id: if mode == Mode::Async { text("job_id", "test-job") } else { String::new() },
        parent_job: c["parent_job"].as_str().map(String::from),
        jobs: match &c["jobs"] {
            Json::Null => vec![],
            Json::Array(reports) => reports.iter().map(job_report).collect::<Result<_>>()?,
            other => return Err(Error::invalid(format!("context: jobs is a list of job reports, not {other}"))),
        },
    })
}

/// A job report of a test context: `{"id", "plugin", "key", "status":
/// pending|succeeded|failed|canceled, "result", "error"}`.
fn job_report(r: &Json) -> Result<crate::runtime::wit::JobReport> {
    use crate::runtime::wit::JobStatus;
    let text = |key: &str| r[key].as_str().unwrap_or_default().to_string();
    Ok(crate::runtime::wit::JobReport {
        id: text("id"),
        plugin: text("plugin"),
        key: text("key"),
        status: match r["status"].as_str().unwrap_or("succeeded") {
            "pending" => JobStatus::Pending,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "canceled" => JobStatus::Canceled,
            other => return Err(Error::invalid(format!("context: a job report's status is pending, succeeded, failed or canceled, not {other:?}"))),
        },
        result: match &r["result"] {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        },
        error: r["error"].as_str().map(String::from),
    })
}

/// A value for a field of no declared table: from its JSON shape.
fn guess(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => n.as_i64().map(Value::Integer).unwrap_or_else(|| Value::Decimal(n.to_string())),
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

/// `records` against the scratch store: reads it, and writes through its
/// pipeline (no steps are registered there), logging every write.
struct TrialRecords {
    pipeline: Arc<Pipeline>,
    pool: Arc<Pool>,
    user: String,
    writes: Arc<Mutex<Vec<Json>>>,
}

impl TrialRecords {
    fn log(&self, op: &str, table: &str, id: &str, fields: Json) {
        self.writes.lock().push(json!({"op": op, "table": table, "id": id, "fields": fields}));
    }
}

fn fields_json(fields: &[Field]) -> Json {
    Json::Object(fields.iter().map(|f| (f.name.clone(), values::to_json(&f.value))).collect())
}

impl RecordHost for TrialRecords {
    fn get(&mut self, table: &str, id: &str) -> std::result::Result<Entity, RecordError> {
        self.pool.with_conn(|conn| records::get_named(conn, table, id)).map(|r| r.to_entity()).map_err(to_record_error)
    }
    fn query(&mut self, q: &QueryOptions) -> std::result::Result<Page, RecordError> {
        self.pool
            .with_conn(|conn| {
                let def = records::require_table(conn, &q.table)?;
                records::plugin_query(conn, &def, q, records::MAX_TOP)
            })
            .map_err(to_record_error)
    }
    fn create(&mut self, table: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let body = fields_json(&fields);
        let rec = self.pipeline.create(&self.user, table, &body).map_err(to_record_error)?;
        self.log("create", table, &rec.id, body);
        Ok(rec.to_entity())
    }
    fn update(&mut self, table: &str, id: &str, fields: Vec<Field>) -> std::result::Result<Entity, RecordError> {
        let body = fields_json(&fields);
        let rec = self.pipeline.update(&self.user, table, id, &body).map_err(to_record_error)?;
        self.log("update", table, id, body);
        Ok(rec.to_entity())
    }
    fn delete(&mut self, table: &str, id: &str) -> std::result::Result<(), RecordError> {
        self.pipeline.delete(&self.user, table, id).map_err(to_record_error)?;
        self.log("delete", table, id, Json::Null);
        Ok(())
    }
}
