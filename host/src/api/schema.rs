//! The bodies of the HTTP API: the envelopes the handlers wrap around the
//! library's types (listings, acknowledgements, errors) and the requests they
//! read, each a type the OpenAPI document describes, so what `/api/openapi.json`
//! says is what the handlers send. The library's own types (jobs, steps,
//! plug-ins, tables, users, traces, figures) carry their schemas where they are
//! defined. Nothing here does work: the handlers in `mod.rs` fill these in.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};

use crate::jobs::stats::Stats;
use crate::jobs::timers::ScheduleView;
use crate::jobs::{GroupBy, JobGroup, JobView};
use crate::steps::{StepView, Unreadable};
use crate::store::records::{Column, TableDef};
use crate::store::{PluginRow, UserRow};
use crate::traces::TraceView;

/// An error: what failed and what to do. A plug-in's refusal or failure (422)
/// also names the plug-in, the step, the plug-in's code and its trace.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `busy` (503), `depth_limit`, or the plug-in's own code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub trace: Option<Json>,
}

/// A stored record: its id, the system columns and one property per column
/// of its table (the table's columns are in `GET /api/tables`). A create or
/// update whose plug-ins left notes carries them in `@notes`.
pub struct Record;

impl utoipa::PartialSchema for Record {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .description(Some("A record: `id`, `created_at`, `modified_at` and its table's columns"))
            .property("id", text())
            .property("created_at", text().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime))))
            .property("modified_at", text().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime))))
            .property("@notes", utoipa::openapi::schema::ArrayBuilder::new().items(text()))
            .required("id")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for Record {}

/// The column values of a record to create or change: one property per
/// column (a decimal as a JSON number or string, a reference as the id, a
/// timestamp as RFC 3339 or ms).
pub struct RecordFields;

impl utoipa::PartialSchema for RecordFields {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some("Column values by column name"))
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for RecordFields {}

/// A plug-in component's bytes (`application/wasm`).
pub struct Wasm;

impl utoipa::PartialSchema for Wasm {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary)))
            .description(Some("A WebAssembly component"))
            .into()
    }
}

impl ToSchema for Wasm {}

#[derive(ToSchema)]
#[allow(dead_code)] // the shape only: the handler builds this JSON itself
pub struct RecordList {
    pub value: Vec<Record>,
}

/// One element's result in a batch: the record (201) or the error the single
/// create would have had.
#[derive(ToSchema)]
#[allow(dead_code)] // the shape only: the handler builds this JSON itself
pub struct BatchResult {
    pub status: u16,
    pub record: Option<Record>,
    pub error: Option<String>,
    pub plugin: Option<String>,
    pub step: Option<String>,
    pub code: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // the shape only: the handler builds this JSON itself
pub struct BatchResults {
    /// One result per element, in order.
    pub value: Vec<BatchResult>,
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub value: Vec<JobView>,
    /// How many jobs the filter selects in all.
    pub count: i64,
    /// The next page's URL, when this one is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Jobs grouped by step, plug-in, kind or owner.
#[derive(Serialize, ToSchema)]
pub struct JobGroups {
    pub by: GroupBy,
    pub value: Vec<JobGroup>,
}

/// The body of `POST /api/jobs/{id}/{action}`: postpone's `until`,
/// priority's `priority`; the other actions need none.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct JobActionRequest {
    /// For postpone: RFC 3339, or `+DURATION` from now (`+2h`).
    pub until: Option<String>,
    /// For priority: 0 to 9 (9 runs first), or `low`, `normal`, `high`.
    #[schema(value_type = Option<Value>)]
    #[serde(default, deserialize_with = "number_or_word")]
    pub priority: Option<String>,
    /// For retry: the plug-in version to run, a number or `current`.
    #[schema(value_type = Option<Value>)]
    #[serde(default, deserialize_with = "number_or_word")]
    pub version: Option<String>,
    /// For cancel and pause: also every unfinished job it started, and theirs.
    #[serde(default)]
    pub cascade: bool,
}

/// A priority or a version as sent: a number or a word, kept as text for
/// its parser ([`crate::jobs::claims::parse_priority`], `VersionPick::parse`).
fn number_or_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Json>::deserialize(d)? {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// `POST /api/jobs/bulk`: one action on every job a filter selects.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: crate::BulkVerb,
    /// The job filter (weir's filter language, as in `GET /api/jobs`).
    pub filter: String,
    /// For postpone: RFC 3339 or `+DURATION`.
    pub until: Option<String>,
    /// For priority: 0 to 9 (9 runs first), `low`, `normal` or `high`.
    #[schema(value_type = Option<Value>)]
    #[serde(default, deserialize_with = "number_or_word")]
    pub priority: Option<String>,
    /// Count the jobs it would act on, change nothing (the answer's `newest`
    /// goes back as `through`).
    #[serde(default)]
    pub dry_run: bool,
    /// Act only on jobs no newer than this id (the `newest` a dry run
    /// answered): none that arrived after the count.
    pub through: Option<String>,
}

/// `202 Accepted` for a background operation.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    /// The job's URL.
    pub location: String,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// One plug-in's calls as this process counted them (since it started).
#[derive(Serialize, ToSchema)]
pub struct PluginFigures {
    pub plugin: String,
    pub calls: u64,
    pub failures: u64,
    pub fuel: u64,
    pub mean_ms: f64,
}

/// The dashboard's figures: the job system's from the database, the
/// plug-ins' calls from this process.
#[derive(Serialize, ToSchema)]
pub struct StatsView {
    #[serde(flatten)]
    pub jobs: Stats,
    pub plugins: Vec<PluginFigures>,
}

#[derive(Serialize, ToSchema)]
pub struct StepList {
    pub value: Vec<StepView>,
    /// Steps whose stored spec cannot be read, listed apart.
    pub unreadable: Vec<Unreadable>,
}

/// A step after an action: enable and disable say `enabled`; release says
/// whether a hold was in force.
#[derive(Serialize, ToSchema)]
pub struct StepEnabled {
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueList {
    pub value: Vec<crate::jobs::claims::QueueView>,
}

/// A queue's settings (`PATCH /api/queues/{name}`).
#[derive(Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// At most this many of its jobs run at once over every node; null: no limit.
    pub max_running: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct NodeList {
    pub value: Vec<crate::nodes::NodeView>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub value: Vec<PluginRow>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginRemoved {
    pub plugin: String,
    /// The version removed; null: every version.
    pub version: Option<i64>,
    pub removed: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PluginCurrent {
    pub plugin: String,
    /// The version unpinned steps now run.
    pub current: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TableList {
    pub value: Vec<TableDef>,
}

/// `POST /api/tables`.
#[derive(ToSchema)]
#[allow(dead_code)] // the shape only: the handler builds this JSON itself
pub struct TableRequest {
    pub name: String,
    pub columns: Vec<Column>,
}

/// `GET /api/me`: who the caller is and what they may do.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub user: String,
    pub role: crate::access::Role,
    /// The user the request acts as (`X-Weir-User`).
    pub acting_as: String,
    /// What the role allows: read, read-traces, act-on-jobs, manage-plugins,
    /// manage-steps, steer-steps, steer-queues, submit, manage-tables, administer.
    pub may: Vec<&'static str>,
    /// Privileges held on tables (an admin holds all without them).
    pub tables: Vec<crate::access::Held>,
    /// How the caller signed in: `server-token`, `token`, `jwt` or `loopback`.
    pub via: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub value: Vec<crate::access::TokenRow>,
}

/// `POST /api/tokens`: a token for a user, with a role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub user: String,
    pub role: crate::access::Role,
    /// A label to tell it apart.
    pub name: Option<String>,
    /// How long it works: a duration (`90d`, `12h`).
    pub expires: Option<String>,
    /// Its own request rate (`50/s`).
    pub rate: Option<String>,
}

/// A token after `revoke`.
#[derive(Serialize, ToSchema)]
pub struct TokenRevoked {
    pub token: String,
    /// False when it was revoked already.
    pub revoked: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub value: Vec<crate::access::PrivilegeRow>,
}

/// `POST /api/grants` (and `revoke: true` to take back): privileges for a
/// user or a role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// A user, a role, `user:NAME` or `role:NAME`.
    pub who: String,
    /// `create,read,write,delete` (or `all`) with `table`, or `impersonate`.
    pub privileges: String,
    pub table: Option<String>,
    #[serde(default)]
    pub revoke: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub value: Vec<crate::access::AuditEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub value: Vec<UserRow>,
}

/// `POST /api/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserChanged {
    pub user: String,
    pub active: bool,
}

/// `POST /api/jobs/reassign`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignRequest {
    pub from: String,
    pub to: String,
}

#[derive(Serialize, ToSchema)]
pub struct Reassigned {
    pub from: String,
    pub to: String,
    pub reassigned: usize,
}

#[derive(Serialize, ToSchema)]
pub struct TraceList {
    pub value: Vec<TraceView>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    pub value: Vec<ScheduleView>,
}
