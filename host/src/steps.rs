//! Step registrations: which plug-in runs on which message, table, stage and
//! mode, with its filtering attributes, trigger condition, config, images,
//! limits and grants (Dataverse's "SDK message processing steps").
//!
//! Owns the `weir_steps` table (one JSON spec per step, with its table and
//! message beside it), the one place a step request gets its defaults
//! ([`StepRequest::normalise`]) and the rules a step must satisfy to be
//! registered ([`add`]). It does not run anything.

use crate::db::{Connection, params};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter;
use crate::plugins::{Plugins, check_name};
use crate::store::records;
use crate::time::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MessageKind {
    Create,
    Update,
    Delete,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Create => "create",
            MessageKind::Update => "update",
            MessageKind::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    PreValidation,
    PreOperation,
    PostOperation,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::PreValidation => "pre-validation",
            StageKind::PreOperation => "pre-operation",
            StageKind::PostOperation => "post-operation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ModeKind {
    #[default]
    Sync,
    Async,
}

impl ModeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeKind::Sync => "sync",
            ModeKind::Async => "async",
        }
    }
}

/// Access a step has to a table through `records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

/// Access to a table. Serialised as `{"table": TABLE, "access": "read"|"write"}`;
/// read from that or from `"TABLE:read"`/`"TABLE:write"`, as the CLI writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Grant {
    pub table: String,
    pub access: Access,
}

impl<'de> serde::Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Grant, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            table: String,
            access: Access,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Grant;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a grant: \"TABLE:read\", \"TABLE:write\" or {\"table\": TABLE, \"access\": \"read\" or \"write\"}")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Grant, E> {
                Grant::parse(s).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Grant, A::Error> {
                let o = <Object as serde::Deserialize>::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Grant { table: o.table, access: o.access })
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Grant {
    /// Parses `TABLE:read` or `TABLE:write`.
    pub fn parse(s: &str) -> Result<Grant> {
        let (table, access) = s.split_once(':').ok_or_else(|| Error::invalid(format!("bad grant {s:?}: write TABLE:read or TABLE:write")))?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            _ => return Err(Error::invalid(format!("bad grant {s:?}: the access is read or write"))),
        };
        Ok(Grant { table: table.to_string(), access })
    }
}

/// Refuses a plug-in's `records` call its grants do not allow, naming who
/// lacks what.
pub fn check_grant(who: &str, grants: &[Grant], table: &str, access: Access) -> std::result::Result<(), crate::runtime::wit::RecordError> {
    if allowed(grants, table, access) {
        return Ok(());
    }
    let a = if access == Access::Write { "write" } else { "read" };
    Err(crate::runtime::wit::RecordError::Denied(format!("{who} has no {a} grant for table {table} (register it with --grant {table}:{a})")))
}

/// Whether `grants` allow `access` to `table` (write implies read).
pub fn allowed(grants: &[Grant], table: &str, access: Access) -> bool {
    grants.iter().any(|g| g.table == table && (g.access == Access::Write || access == Access::Read))
}

/// A host grant as stored and shown: trimmed and lowercase (checked by [`check_outside`]).
pub fn normalise_host(h: &str) -> String {
    h.trim().to_ascii_lowercase()
}

/// Checks what a step or background operation may reach outside weir:
/// every `--allow-http` grant parses, every secret name is a name, and only
/// async work has either (a sync step runs inside the store's write
/// transaction, which must not wait on the network).
pub fn check_outside(who: &str, is_async: bool, allow_http: &[String], secrets: &[String]) -> Result<()> {
    if !is_async && !allow_http.is_empty() {
        return Err(Error::invalid(format!(
            "{who}: a sync step cannot be granted outbound HTTP (--allow-http): it runs inside the operation's write transaction; \
             make the call from an async step (--mode async), which runs after the commit"
        )));
    }
    if !is_async && !secrets.is_empty() {
        return Err(Error::invalid(format!("{who}: secrets (--secret) are granted to async steps only; make it an async step (--mode async)")));
    }
    for h in allow_http {
        crate::runtime::HttpGrant::parse(h).map_err(|e| Error::invalid(format!("{who}: {e}")))?;
    }
    for s in secrets {
        check_name("secret", s).map_err(|e| Error::invalid(format!("{who}: --secret: {e}")))?;
    }
    Ok(())
}

/// Checks `--may-start` grants: async work only, each a plug-in name (the
/// plug-in itself is looked up when a job starts it: it may be added later).
pub fn check_may_start(who: &str, is_async: bool, may_start: &[String]) -> Result<()> {
    if !is_async && !may_start.is_empty() {
        return Err(Error::invalid(format!("{who}: only async steps may start jobs (--may-start); make it an async step (--mode async)")));
    }
    for p in may_start {
        check_name("plug-in", p).map_err(|e| Error::invalid(format!("{who}: --may-start: {e}")))?;
    }
    Ok(())
}

/// A registered step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Step {
    pub name: String,
    pub plugin: String,
    /// Pinned to this version (`--plugin NAME@VERSION`); unpinned steps run
    /// the plug-in's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<i64>,
    /// None for scheduled steps.
    pub message: Option<MessageKind>,
    pub table: Option<String>,
    pub stage: Option<StageKind>,
    pub mode: ModeKind,
    /// Order within a stage (lower first), then by name.
    pub rank: i64,
    /// Update steps fire only when one of these columns changed (empty: any).
    pub filter: Vec<String>,
    /// Trigger condition on the target, in the filter language.
    pub when: Option<String>,
    pub config: Json,
    pub pre_image: bool,
    pub post_image: bool,
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub grants: Vec<Grant>,
    /// Cron expression with seconds, for scheduled workflows.
    pub schedule: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which calls keep their trace in the trace log (default: the failed ones).
    #[serde(default)]
    pub trace: crate::traces::TraceMode,
    /// Hosts its outbound HTTP may reach (`--allow-http`; async steps only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// Secrets it may read, by name (`--secret`; async steps only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Plug-ins its jobs may start as child jobs (`--may-start`; async steps only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_start: Vec<String>,
    /// The queue its jobs run in (async steps; default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its jobs' priority, 0–9, 9 first (async steps; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// At most this many of its jobs run at once over every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<i64>,
    /// At most this many of its jobs start per second, minute or hour (`20/s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Failures in a row before the breaker holds it (0: never; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_after: Option<i64>,
    /// The breaker's longest hold, in ms (default 10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hold_ms: Option<i64>,
    /// One job at a time per record: an operation that would queue a job
    /// while one of this step for the same record, queued less than this
    /// many ms ago, is Ready or running queues none (`--unique-for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for_ms: Option<i64>,
}

/// A step's recent failures, as the failure breaker counts them (read by
/// `jobs::step_health`, which owns the breaker's table).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct StepHealth {
    pub consecutive_failures: i64,
    /// Its jobs are held until then (then one runs as a probe).
    pub held_until: Option<String>,
}

/// A step with its health, as `step list --json` and `GET /api/steps` show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StepView {
    #[serde(flatten)]
    pub step: Step,
    /// Its recent consecutive failures and until when the failure breaker holds it.
    pub health: StepHealth,
}

fn yes() -> bool {
    true
}

/// The rank of a step that does not give one.
pub const DEFAULT_RANK: i64 = 1;

/// A step as it is asked for: `weir step add`'s flags, the body of
/// `POST /api/steps`. Only `name` and `plugin` are required; everything else
/// has a default, applied in one place, [`StepRequest::normalise`]. Unknown
/// fields are refused. Every field of a [`Step`] as `weir step list --json`
/// shows it is accepted, so a listed step can be sent back as it is.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub name: String,
    pub plugin: String,
    /// With `table` and `stage`, for a step on record operations.
    pub message: Option<MessageKind>,
    pub table: Option<String>,
    pub stage: Option<StageKind>,
    /// Default: async for a scheduled step (a workflow), sync otherwise.
    pub mode: Option<ModeKind>,
    /// Default: [`DEFAULT_RANK`].
    pub rank: Option<i64>,
    #[serde(default)]
    pub filter: Vec<String>,
    pub when: Option<String>,
    /// Default: null.
    #[serde(default)]
    pub config: Json,
    #[serde(default)]
    pub pre_image: bool,
    #[serde(default)]
    pub post_image: bool,
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Cron expression with seconds, instead of message, table and stage.
    pub schedule: Option<String>,
    /// Default: enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default: `errors`.
    #[serde(default)]
    pub trace: crate::traces::TraceMode,
    /// `HOST[:PORT]` or `*.DOMAIN[:PORT]` each (async steps only).
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Secret names (async steps only).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Plug-ins its jobs may start as child jobs (async steps only).
    #[serde(default)]
    pub may_start: Vec<String>,
    /// The queue its jobs run in (async steps; default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its jobs' priority, 0–9, 9 first (async steps; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// At most this many of its jobs run at once over every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<i64>,
    /// At most this many of its jobs start per second, minute or hour (`20/s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Failures in a row before the breaker holds it (0: never; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_after: Option<i64>,
    /// The breaker's longest hold, in ms (default 10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hold_ms: Option<i64>,
    /// One job at a time per record: an operation that would queue a job
    /// while one of this step for the same record, queued less than this
    /// many ms ago, is Ready or running queues none (`--unique-for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for_ms: Option<i64>,
}

impl StepRequest {
    /// A request with nothing but a name and a plug-in; set the other fields after.
    pub fn new(name: impl Into<String>, plugin: impl Into<String>) -> StepRequest {
        StepRequest {
            name: name.into(),
            plugin: plugin.into(),
            message: None,
            table: None,
            stage: None,
            mode: None,
            rank: None,
            filter: vec![],
            when: None,
            config: Json::Null,
            pre_image: false,
            post_image: false,
            fuel: None,
            timeout_ms: None,
            max_attempts: None,
            backoff_ms: None,
            grants: vec![],
            schedule: None,
            enabled: true,
            trace: Default::default(),
            allow_http: vec![],
            secrets: vec![],
            may_start: vec![],
            queue: None,
            priority: None,
            max_running: None,
            rate: None,
            hold_after: None,
            max_hold_ms: None,
            unique_for_ms: None,
        }
    }

    /// The step, with every default and implication applied: a schedule
    /// implies async (a mode given explicitly is kept, and [`add`] refuses a
    /// sync schedule), otherwise sync; rank [`DEFAULT_RANK`]. It is not
    /// checked here: [`add`] checks it against the catalog.
    pub fn normalise(self) -> Step {
        let implied = if self.schedule.is_some() { ModeKind::Async } else { ModeKind::Sync };
        // `NAME@VERSION` pins a version; a version that is not a number is
        // left in the name, which the checks then refuse.
        let (plugin, plugin_version) = match self.plugin.split_once('@') {
            Some((name, v)) if v.parse::<i64>().is_ok() => (name.to_string(), v.parse::<i64>().ok()),
            _ => (self.plugin, None),
        };
        Step {
            name: self.name,
            plugin,
            plugin_version,
            message: self.message,
            table: self.table,
            stage: self.stage,
            mode: self.mode.unwrap_or(implied),
            rank: self.rank.unwrap_or(DEFAULT_RANK),
            filter: self.filter,
            when: self.when,
            config: self.config,
            pre_image: self.pre_image,
            post_image: self.post_image,
            fuel: self.fuel,
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            grants: self.grants,
            schedule: self.schedule,
            enabled: self.enabled,
            trace: self.trace,
            allow_http: self.allow_http.iter().map(|h| normalise_host(h)).collect(),
            secrets: self.secrets,
            may_start: self.may_start,
            queue: self.queue,
            priority: self.priority,
            max_running: self.max_running,
            rate: self.rate,
            hold_after: self.hold_after,
            max_hold_ms: self.max_hold_ms,
            unique_for_ms: self.unique_for_ms,
        }
    }
}

impl Step {
    /// A step on `message` of `table` at `stage`, with the defaults of
    /// [`StepRequest::normalise`]: rank 1, no filter, condition, config,
    /// images, limits or grants. Adjust fields with struct update syntax.
    pub fn new(name: &str, plugin: &str, message: MessageKind, table: &str, stage: StageKind, mode: ModeKind) -> Step {
        StepRequest { message: Some(message), table: Some(table.into()), stage: Some(stage), mode: Some(mode), ..StepRequest::new(name, plugin) }.normalise()
    }

    /// What `weir_steps.on_message` holds: the message, or `schedule`.
    fn on_message(&self) -> Option<&'static str> {
        match (self.message, &self.schedule) {
            (Some(m), _) => Some(m.as_str()),
            (None, Some(_)) => Some(SCHEDULE),
            (None, None) => None,
        }
    }

    /// The parsed trigger condition.
    pub fn when_expr(&self) -> Option<filter::Expr> {
        self.when.as_deref().and_then(|w| filter::parse(w).ok())
    }
}

/// Checks a step against the catalog and the plug-in's world; stores it. A
/// sync step's `timeout_ms` may not exceed `op_budget_ms`, the operation's
/// budget it runs in.
pub fn add(conn: &Connection, plugins: &Plugins, step: &Step, op_budget_ms: u64) -> Result<()> {
    check(conn, plugins, step, op_budget_ms)?;
    let name = &step.name;
    let spec = serde_json::to_string(step).map_err(|e| Error::Internal(format!("step {name}: cannot write its spec: {e}")))?;
    let n = conn.execute(
        "INSERT INTO weir_steps (name, spec, enabled, created_at, on_table, on_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
        params![name, spec, step.enabled, now_ms(), step.table, step.on_message()],
    )?;
    if n == 0 {
        return Err(Error::Conflict(format!("a step named {name} already exists; change it with `weir step update {name}` or remove it first")));
    }
    write_limits(conn, step)
}

/// Keeps the claim's copy of a step's limits (`jobs::claims`) as the step says.
fn write_limits(conn: &Connection, step: &Step) -> Result<()> {
    let rate_milli = step.rate.as_deref().map(crate::jobs::claims::parse_rate).transpose()?;
    let limits = crate::jobs::claims::Limits { max_running: step.max_running, rate_milli };
    crate::jobs::claims::set_limits(conn, crate::jobs::claims::Scope::Step, &step.name, limits, now_ms())
}

impl Step {
    /// The queue its jobs run in.
    pub fn queue_name(&self) -> &str {
        self.queue.as_deref().unwrap_or(crate::jobs::claims::DEFAULT_QUEUE)
    }

    /// Its jobs' priority.
    pub fn job_priority(&self) -> i64 {
        self.priority.unwrap_or(crate::jobs::claims::DEFAULT_PRIORITY)
    }
}

/// What `weir step update` and `PATCH /api/steps/{name}` may change of a
/// step in place (its trigger — message, table, stage, mode, schedule — and
/// its plug-in stay; remove and add it to change those). Absent fields keep
/// their value; `when: ""` removes the condition; `grants` replaces them all.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpdate {
    pub rank: Option<i64>,
    #[schema(value_type = Value)]
    pub config: Option<Json>,
    pub when: Option<String>,
    pub filter: Option<Vec<String>>,
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub grants: Option<Vec<Grant>>,
    pub trace: Option<crate::traces::TraceMode>,
    /// Replaces the hosts (an empty list removes them all).
    pub allow_http: Option<Vec<String>>,
    /// Replaces the secrets (an empty list removes them all).
    pub secrets: Option<Vec<String>>,
    /// Replaces the plug-ins it may start (an empty list removes them all).
    pub may_start: Option<Vec<String>>,
    pub queue: Option<String>,
    pub priority: Option<i64>,
    /// 0 removes the limit.
    pub max_running: Option<i64>,
    /// `off` removes the rate.
    pub rate: Option<String>,
    pub hold_after: Option<i64>,
    pub max_hold_ms: Option<i64>,
    /// 0 removes it.
    pub unique_for_ms: Option<i64>,
}

/// Changes step `name` in place (checked like a new one); returns it.
pub fn update(conn: &Connection, plugins: &Plugins, name: &str, change: &StepUpdate, op_budget_ms: u64) -> Result<Step> {
    let rows = read_rows(conn, "SELECT name, spec, enabled, on_table, on_message FROM weir_steps WHERE name = ?1", [name])?;
    let mut step = match rows.into_iter().next() {
        None => return Err(Error::not_found(format!("no step named {name}"))),
        Some(Err(bad)) => return Err(Error::Conflict(bad.to_string())),
        Some(Ok(step)) => step,
    };
    if let Some(rank) = change.rank {
        step.rank = rank;
    }
    if let Some(config) = &change.config {
        step.config = config.clone();
    }
    if let Some(when) = &change.when {
        step.when = Some(when.clone()).filter(|w| !w.trim().is_empty());
    }
    if let Some(filter) = &change.filter {
        step.filter = filter.clone();
    }
    step.fuel = change.fuel.or(step.fuel);
    step.timeout_ms = change.timeout_ms.or(step.timeout_ms);
    step.max_attempts = change.max_attempts.or(step.max_attempts);
    step.backoff_ms = change.backoff_ms.or(step.backoff_ms);
    if let Some(grants) = &change.grants {
        step.grants = grants.clone();
    }
    if let Some(trace) = change.trace {
        step.trace = trace;
    }
    if let Some(hosts) = &change.allow_http {
        step.allow_http = hosts.iter().map(|h| normalise_host(h)).collect();
    }
    if let Some(secrets) = &change.secrets {
        step.secrets = secrets.clone();
    }
    if let Some(may_start) = &change.may_start {
        step.may_start = may_start.clone();
    }
    if let Some(queue) = &change.queue {
        step.queue = Some(queue.clone());
    }
    step.priority = change.priority.or(step.priority);
    if let Some(max) = change.max_running {
        step.max_running = Some(max).filter(|&m| m != 0);
    }
    if let Some(rate) = &change.rate {
        step.rate = Some(rate.clone()).filter(|r| r.trim() != "off");
    }
    step.hold_after = change.hold_after.or(step.hold_after);
    step.max_hold_ms = change.max_hold_ms.or(step.max_hold_ms);
    if let Some(ms) = change.unique_for_ms {
        step.unique_for_ms = Some(ms).filter(|&m| m != 0);
    }
    check(conn, plugins, &step, op_budget_ms)?;
    let spec = serde_json::to_string(&step).map_err(|e| Error::Internal(format!("step {name}: cannot write its spec: {e}")))?;
    conn.execute("UPDATE weir_steps SET spec = ?2 WHERE name = ?1", params![name, spec])?;
    write_limits(conn, &step)?;
    Ok(step)
}

/// The rules every stored step follows.
fn check(conn: &Connection, plugins: &Plugins, step: &Step, op_budget_ms: u64) -> Result<()> {
    check_name("step", &step.name)?;
    let name = &step.name;
    if step.schedule.is_some() && step.mode != ModeKind::Async {
        return Err(Error::invalid(format!(
            "step {name}: scheduled steps run as async workflows; leave out the mode (a schedule implies async) or make it async"
        )));
    }
    let world = match step.plugin_version {
        None => plugins.head(conn, &step.plugin)?.1,
        Some(v) => {
            let world = crate::store::plugin_world(conn, &step.plugin, v)?
                .ok_or_else(|| Error::not_found(format!("step {name}: plug-in {} has no version {v} (`weir plugin list` shows its versions)", step.plugin)))?;
            crate::runtime::World::parse(&world).ok_or_else(|| Error::Internal(format!("plug-in {} has unknown world {world}", step.plugin)))?
        }
    };
    match step.mode {
        ModeKind::Sync if !world.serves_sync() => {
            return Err(Error::invalid(format!(
                "step {name}: plug-in {} is a {} component and cannot run as a sync step (use --mode async)",
                step.plugin,
                world.as_str()
            )));
        }
        ModeKind::Async if !world.serves_async() => {
            return Err(Error::invalid(format!(
                "step {name}: plug-in {} is a {} component and cannot run as an async step (use --mode sync)",
                step.plugin,
                world.as_str()
            )));
        }
        _ => {}
    }
    if step.schedule.is_none() {
        let (Some(message), Some(table), Some(stage)) = (step.message, &step.table, step.stage) else {
            return Err(Error::invalid(format!("step {name}: give --message, --table and --stage (or --schedule)")));
        };
        let def = records::require_table(conn, table)?;
        if step.mode == ModeKind::Async && stage != StageKind::PostOperation {
            return Err(Error::invalid(format!("step {name}: async steps run at post-operation only")));
        }
        if step.pre_image && message == MessageKind::Create {
            return Err(Error::invalid(format!("step {name}: there is no pre-image on create")));
        }
        if step.post_image && (message == MessageKind::Delete || stage != StageKind::PostOperation) {
            return Err(Error::invalid(format!("step {name}: a post-image exists only at post-operation of create or update")));
        }
        if !step.filter.is_empty() && message != MessageKind::Update {
            return Err(Error::invalid(format!("step {name}: filtering attributes apply to update steps only")));
        }
        for col in &step.filter {
            if def.column(col).is_none() {
                return Err(Error::invalid(format!("step {name}: --filter: {}", def.unknown_column(col))));
            }
        }
        if let Some(when) = &step.when {
            let expr = filter::parse(when).map_err(|e| Error::invalid(format!("step {name}: --when: {e}")))?;
            filter::check(&expr, when, &|f| def.kind(f)).map_err(|e| Error::invalid(format!("step {name}: --when: {e}")))?;
        }
    } else if let Some(expr) = &step.schedule {
        crate::time::parse_cron(expr).map_err(|e| Error::invalid(format!("step {name}: {e}")))?;
        if step.message.is_some() || step.table.is_some() || step.stage.is_some() {
            return Err(Error::invalid(format!("step {name}: a scheduled step has no --message, --table or --stage")));
        }
    }
    for g in &step.grants {
        records::require_table(conn, &g.table).map_err(|e| Error::invalid(format!("step {name}: --grant: {e}")))?;
    }
    check_outside(&format!("step {name}"), step.mode == ModeKind::Async, &step.allow_http, &step.secrets)?;
    check_may_start(&format!("step {name}"), step.mode == ModeKind::Async, &step.may_start)?;
    use crate::limits;
    let ranges = [
        ("--fuel", step.fuel, &limits::FUEL),
        ("--timeout-ms", step.timeout_ms, &limits::TIMEOUT_MS),
        ("--max-attempts", step.max_attempts.map(u64::from), &limits::MAX_ATTEMPTS),
        ("--backoff-ms", step.backoff_ms, &limits::BACKOFF_MS),
    ];
    for (what, value, range) in ranges {
        if let Some(v) = value {
            limits::check(what, v, range).map_err(|e| Error::invalid(format!("step {name}: {e}")))?;
        }
    }
    check_share(step)?;
    if let (ModeKind::Sync, Some(ms)) = (step.mode, step.timeout_ms)
        && ms > op_budget_ms
    {
        return Err(Error::invalid(format!(
            "step {name}: --timeout-ms {ms} is longer than the operation's budget of {op_budget_ms} ms that a sync step runs in; \
             lower it, raise the budget (`weir serve`/`work --op-budget-ms`), or make it an async step"
        )));
    }
    Ok(())
}

/// The rules of a step's queue, priority, limits and breaker settings.
fn check_share(step: &Step) -> Result<()> {
    use crate::jobs::claims;
    let name = &step.name;
    let given = step.queue.is_some()
        || step.priority.is_some()
        || step.max_running.is_some()
        || step.rate.is_some()
        || step.hold_after.is_some()
        || step.max_hold_ms.is_some()
        || step.unique_for_ms.is_some();
    if given && step.mode != ModeKind::Async {
        return Err(Error::invalid(format!(
            "step {name}: --queue, --priority, --max-running, --rate, --hold-after, --max-hold and --unique-for apply to async steps (jobs); a sync step runs inside its operation"
        )));
    }
    let within = |e: Error| Error::invalid(format!("step {name}: {e}"));
    if let Some(q) = &step.queue {
        claims::check_queue(q).map_err(within)?;
    }
    if let Some(p) = step.priority {
        claims::check_priority(p).map_err(within)?;
    }
    if let Some(rate) = &step.rate {
        claims::parse_rate(rate).map_err(within)?;
    }
    use crate::limits;
    let ranges = [
        ("--max-running", step.max_running, &limits::MAX_RUNNING),
        ("--hold-after", step.hold_after, &limits::HOLD_AFTER),
        ("--max-hold (ms)", step.max_hold_ms, &limits::MAX_HOLD_MS),
        ("--unique-for (ms)", step.unique_for_ms, &limits::UNIQUE_FOR_MS),
    ];
    for (what, value, range) in ranges {
        if let Some(v) = value {
            let v = u64::try_from(v).map_err(|_| Error::invalid(format!("step {name}: {what} cannot be negative")))?;
            limits::check(what, v, range).map_err(|e| Error::invalid(format!("step {name}: {e}")))?;
        }
    }
    Ok(())
}

/// `weir_steps.on_message` of a scheduled step.
const SCHEDULE: &str = "schedule";

/// A stored step whose spec cannot be read (a damaged row, a hand edit): the
/// operations it belongs to fail, naming it, until it is removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Unreadable {
    pub name: String,
    /// The table and message it was registered on, when known.
    pub table: Option<String>,
    pub message: Option<String>,
    /// Why its spec cannot be read.
    pub error: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.name;
        let fails = match (self.table.as_deref(), self.message.as_deref()) {
            (_, Some(SCHEDULE)) => "it does not fire".to_string(),
            (Some(table), Some(message)) => format!("{message}s on {table} fail"),
            // Registered before weir kept its table beside it: it may belong to any operation.
            _ => "every record operation fails".to_string(),
        };
        write!(
            f,
            "step {name} is unreadable: its stored spec is damaged ({}); remove it with `weir step remove {name}` and add it again; until then, {fails}",
            self.error
        )
    }
}

/// Every stored step, by name: those that can be read and those that cannot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Listing {
    pub steps: Vec<Step>,
    pub unreadable: Vec<Unreadable>,
}

/// Reads the rows `sql` selects (name, spec, enabled, on_table, on_message).
fn read_rows(conn: &Connection, sql: &str, args: impl crate::db::Params) -> Result<Vec<std::result::Result<Step, Unreadable>>> {
    type Row = (String, String, bool, Option<String>, Option<String>);
    let mut stmt = conn.prepare_cached(sql)?;
    let rows: Vec<Row> = stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect::<crate::db::Result<_>>()?;
    Ok(rows
        .into_iter()
        .map(|(name, spec, enabled, table, message)| match serde_json::from_str::<Step>(&spec) {
            Ok(step) => Ok(Step { enabled, ..step }),
            Err(e) => Err(Unreadable { name, table, message, error: e.to_string() }),
        })
        .collect())
}

/// Every stored step by name, the unreadable ones apart.
pub fn list_all(conn: &Connection) -> Result<Listing> {
    let mut listing = Listing::default();
    for row in read_rows(conn, "SELECT name, spec, enabled, on_table, on_message FROM weir_steps ORDER BY name", [])? {
        match row {
            Ok(step) => listing.steps.push(step),
            Err(bad) => listing.unreadable.push(bad),
        }
    }
    Ok(listing)
}

/// The steps that can be read, by name; an unreadable one is left out (see
/// [`list_all`]; the operations it belongs to fail, naming it).
pub fn list(conn: &Connection) -> Result<Vec<Step>> {
    let listing = list_all(conn)?;
    for bad in &listing.unreadable {
        tracing::debug!("{bad}");
    }
    Ok(listing.steps)
}

/// Enabled steps registered on `table` for `message`, in execution order.
///
/// Only the rows registered there are read, so a step that cannot be read
/// fails the operations it belongs to and no others. A row whose table is not
/// known (damaged before weir kept it beside the spec) may belong to any
/// operation: it fails them all rather than let a step that guards one be
/// skipped.
pub fn for_operation(conn: &Connection, table: &str, message: MessageKind) -> Result<Vec<Step>> {
    let sql = "SELECT name, spec, enabled, on_table, on_message FROM weir_steps
               WHERE (on_table = ?1 AND on_message = ?2) OR (on_table IS NULL AND on_message IS NULL) ORDER BY name";
    let mut steps = Vec::new();
    for row in read_rows(conn, sql, params![table, message.as_str()])? {
        match row {
            Ok(s) if s.enabled && s.table.as_deref() == Some(table) && s.message == Some(message) => steps.push(s),
            Ok(_) => {}
            Err(bad) => return Err(Error::Internal(bad.to_string())),
        }
    }
    steps.sort_by(|a, b| (a.stage, a.rank, &a.name).cmp(&(b.stage, b.rank, &b.name)));
    Ok(steps)
}

/// Enables or disables a step; either ends a hold of its failure breaker
/// (an operator who turns a step off and on again means it to run).
pub fn set_enabled(conn: &Connection, name: &str, enabled: bool) -> Result<()> {
    if conn.execute("UPDATE weir_steps SET enabled = ?2 WHERE name = ?1", params![name, enabled])? == 0 {
        return Err(Error::not_found(format!("no step named {name}")));
    }
    crate::jobs::breaker::release(conn, name)?;
    Ok(())
}

/// Ends a hold of step `name`'s failure breaker now (`weir step release`);
/// whether one was in force.
pub fn release(conn: &Connection, name: &str) -> Result<bool> {
    let exists: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM weir_steps WHERE name = ?1)", [name], |r| r.get(0))?;
    if !exists {
        return Err(Error::not_found(format!("no step named {name}")));
    }
    crate::jobs::breaker::release(conn, name)
}

pub fn remove(conn: &Connection, name: &str) -> Result<()> {
    if conn.execute("DELETE FROM weir_steps WHERE name = ?1", [name])? == 0 {
        return Err(Error::not_found(format!("no step named {name}")));
    }
    crate::jobs::claims::set_limits(conn, crate::jobs::claims::Scope::Step, name, Default::default(), now_ms())
}

/// Refuses a new version of plug-in `name` of `world` when a step that
/// follows the plug-in (is not pinned to a version) could not run it.
pub fn check_followers(conn: &Connection, name: &str, world: crate::runtime::World) -> Result<()> {
    for step in list(conn)?.iter().filter(|s| s.plugin == name && s.plugin_version.is_none()) {
        let serves = match step.mode {
            ModeKind::Sync => world.serves_sync(),
            ModeKind::Async => world.serves_async(),
        };
        if !serves {
            return Err(Error::invalid(format!(
                "{name}: this is a {} component, but step {} runs {name} as a {} step and would fail on every call; \
                 pin that step to its version (`weir step remove` and add it with --plugin {name}@VERSION) or add a component of the right world",
                world.as_str(),
                step.name,
                step.mode.as_str()
            )));
        }
    }
    Ok(())
}

/// Refuses to remove plug-in `name` (one version, or all; `current` is its
/// current version) while a step uses it.
pub fn check_unused(conn: &Connection, name: &str, version: Option<i64>, current: Option<i64>) -> Result<()> {
    for step in list(conn)?.iter().filter(|s| s.plugin == name) {
        let uses = match (version, step.plugin_version) {
            (None, _) => true,
            (Some(v), Some(pinned)) => v == pinned,
            (Some(v), None) => Some(v) == current,
        };
        if uses {
            let which = version.map_or(String::new(), |v| format!(" version {v}"));
            return Err(Error::Conflict(format!(
                "plug-in {name}{which} is used by step {}; remove or re-point the step first (`weir step remove {}`)",
                step.name, step.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_its_defaults_in_one_place() {
        let scheduled: StepRequest = serde_json::from_str(r#"{"name": "n", "plugin": "p", "schedule": "0 0 2 * * *"}"#).unwrap();
        let step = scheduled.normalise();
        assert_eq!((step.mode, step.rank, step.enabled, &step.config), (ModeKind::Async, DEFAULT_RANK, true, &Json::Null));
        let on_create: StepRequest =
            serde_json::from_str(r#"{"name": "n", "plugin": "p", "message": "create", "table": "t", "stage": "pre-operation"}"#).unwrap();
        assert_eq!(on_create.normalise(), Step::new("n", "p", MessageKind::Create, "t", StageKind::PreOperation, ModeKind::Sync));
        // An explicit mode is kept (add refuses a sync schedule, saying why).
        let sync: StepRequest = serde_json::from_str(r#"{"name": "n", "plugin": "p", "schedule": "* * * * * *", "mode": "sync"}"#).unwrap();
        assert_eq!(sync.normalise().mode, ModeKind::Sync);
        // A listed step goes back in as it is.
        let listed = serde_json::to_string(&step).unwrap();
        assert_eq!(serde_json::from_str::<StepRequest>(&listed).unwrap().normalise(), step);
        let err = serde_json::from_str::<StepRequest>(r#"{"name": "n", "plugin": "p", "shedule": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `shedule`"), "{err}");
    }

    #[test]
    fn grants_read_as_text_or_objects() {
        let read = Grant { table: "t".into(), access: Access::Read };
        assert_eq!(serde_json::from_str::<Grant>(r#""t:read""#).unwrap(), read);
        assert_eq!(serde_json::from_str::<Grant>(r#"{"table": "t", "access": "read"}"#).unwrap(), read);
        assert_eq!(serde_json::from_str::<Grant>(&serde_json::to_string(&read).unwrap()).unwrap(), read);
        let err = serde_json::from_str::<Grant>(r#""t:admin""#).unwrap_err().to_string();
        assert!(err.contains("the access is read or write"), "{err}");
        assert!(serde_json::from_str::<Grant>(r#"{"table": "t", "access": "read", "x": 1}"#).is_err());
        assert!(serde_json::from_str::<Grant>("7").unwrap_err().to_string().contains("a grant"));
    }

    #[test]
    fn an_unreadable_step_says_what_it_breaks_and_what_to_do() {
        let bad = |table: Option<&str>, message: Option<&str>| {
            Unreadable { name: "s".into(), table: table.map(Into::into), message: message.map(Into::into), error: "EOF".into() }.to_string()
        };
        let on_create = bad(Some("a"), Some("create"));
        assert!(on_create.starts_with("step s is unreadable: ") && on_create.contains("`weir step remove s`"), "{on_create}");
        assert!(on_create.ends_with("creates on a fail"), "{on_create}");
        assert!(bad(None, Some(SCHEDULE)).ends_with("it does not fire"));
        assert!(bad(None, None).ends_with("every record operation fails"));
    }
}
