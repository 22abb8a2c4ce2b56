//! Step registrations: which plug-in runs on which message, table, stage and
//! mode, with its filtering attributes, trigger condition, config, images,
//! limits and grants (Dataverse's "SDK message processing steps").
//!
//! Owns the `weir_steps` table (one JSON spec per step) and the rules a step
//! must satisfy to be registered. It does not run anything.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter;
use crate::plugins::{Plugins, check_name};
use crate::store::records;
use crate::time::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub table: String,
    pub access: Access,
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

/// Whether `grants` allow `access` to `table` (write implies read).
pub fn allowed(grants: &[Grant], table: &str, access: Access) -> bool {
    grants.iter().any(|g| g.table == table && (g.access == Access::Write || access == Access::Read))
}

/// A registered step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub name: String,
    pub plugin: String,
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
}

fn yes() -> bool {
    true
}

impl Step {
    /// A step with default options: rank 1, no filter, condition, config,
    /// images, limits or grants. Adjust fields with struct update syntax.
    pub fn new(name: &str, plugin: &str, message: MessageKind, table: &str, stage: StageKind, mode: ModeKind) -> Step {
        Step {
            name: name.into(),
            plugin: plugin.into(),
            message: Some(message),
            table: Some(table.into()),
            stage: Some(stage),
            mode,
            rank: 1,
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
        }
    }

    /// The parsed trigger condition.
    pub fn when_expr(&self) -> Option<filter::Expr> {
        self.when.as_deref().and_then(|w| filter::parse(w).ok())
    }
}

/// Checks a step against the catalog and the plug-in's world; stores it.
pub fn add(conn: &Connection, plugins: &Plugins, step: &Step) -> Result<()> {
    check_name("step", &step.name)?;
    let (_, world) = plugins.head(conn, &step.plugin)?;
    let name = &step.name;
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
    } else if step.mode != ModeKind::Async {
        return Err(Error::invalid(format!("step {name}: scheduled steps run as async workflows")));
    } else if let Some(expr) = &step.schedule {
        crate::jobs::timers::parse_cron(expr).map_err(|e| Error::invalid(format!("step {name}: {e}")))?;
        if step.message.is_some() || step.table.is_some() || step.stage.is_some() {
            return Err(Error::invalid(format!("step {name}: a scheduled step has no --message, --table or --stage")));
        }
    }
    for g in &step.grants {
        records::require_table(conn, &g.table).map_err(|e| Error::invalid(format!("step {name}: --grant: {e}")))?;
    }
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
    let spec = serde_json::to_string(step).map_err(|e| Error::Internal(e.to_string()))?;
    let n = conn.execute(
        "INSERT INTO weir_steps (name, spec, enabled, created_at) VALUES (?1, ?2, 1, ?3) ON CONFLICT (name) DO NOTHING",
        params![name, spec, now_ms()],
    )?;
    if n == 0 {
        return Err(Error::Conflict(format!("a step named {name} already exists; remove it first (`weir step remove {name}`)")));
    }
    Ok(())
}

fn read(spec: String, enabled: bool) -> Result<Step> {
    let mut s: Step = serde_json::from_str(&spec).map_err(|e| Error::Internal(format!("corrupt step spec: {e}")))?;
    s.enabled = enabled;
    Ok(s)
}

pub fn list(conn: &Connection) -> Result<Vec<Step>> {
    let mut stmt = conn.prepare_cached("SELECT spec, enabled FROM weir_steps ORDER BY name")?;
    let rows: Vec<(String, bool)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(|(s, e)| read(s, e)).collect()
}

pub fn get(conn: &Connection, name: &str) -> Result<Step> {
    let row: Option<(String, bool)> =
        conn.prepare_cached("SELECT spec, enabled FROM weir_steps WHERE name = ?1")?.query_row([name], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    let (spec, enabled) = row.ok_or_else(|| Error::not_found(format!("no step named {name}")))?;
    read(spec, enabled)
}

/// Enabled steps registered on `table` for `message`, in execution order.
pub fn for_operation(conn: &Connection, table: &str, message: MessageKind) -> Result<Vec<Step>> {
    let mut steps: Vec<Step> = list(conn)?.into_iter().filter(|s| s.enabled && s.table.as_deref() == Some(table) && s.message == Some(message)).collect();
    steps.sort_by(|a, b| (a.stage, a.rank, &a.name).cmp(&(b.stage, b.rank, &b.name)));
    Ok(steps)
}

pub fn set_enabled(conn: &Connection, name: &str, enabled: bool) -> Result<()> {
    if conn.execute("UPDATE weir_steps SET enabled = ?2 WHERE name = ?1", params![name, enabled])? == 0 {
        return Err(Error::not_found(format!("no step named {name}")));
    }
    Ok(())
}

pub fn remove(conn: &Connection, name: &str) -> Result<()> {
    if conn.execute("DELETE FROM weir_steps WHERE name = ?1", [name])? == 0 {
        return Err(Error::not_found(format!("no step named {name}")));
    }
    Ok(())
}
