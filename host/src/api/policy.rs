//! What each route needs of its caller: the one table from routes (method
//! and path template, as the router matched them) to [`Need`]s. The auth
//! layer in `mod.rs` resolves the caller and asks [`check`] before any
//! handler runs, so a refused request changes nothing; the few checks that
//! depend on the body (a plug-in's grants, a step's table) are in the
//! handlers, through the same [`Caller`]. A route missing here is refused
//! to everyone but an admin (and the authorization test walks every route
//! of the OpenAPI document, so a new one cannot slip through unnoticed).

use axum::http::Method;

use crate::access::{Caller, Capability, TablePrivilege};
use crate::error::Result;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the health check, the dashboard's static shell.
    Open,
    /// A capability of the caller's role.
    Role(Capability),
    /// A privilege on the table the path names (`/api/data/{table}`).
    Table(TablePrivilege),
}

/// Routes anyone may reach, token or not.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/api/health" | "/" | "/assets/chart.js") || path.starts_with("/jobs/")
}

/// What `method` on the route `template` (e.g. `/api/steps/{name}`) needs.
pub fn need(method: &Method, template: &str) -> Need {
    use Capability::*;
    let m = method.as_str();
    match (m, template) {
        ("GET", "/api/health" | "/" | "/assets/chart.js" | "/jobs/{id}") => Need::Open,
        ("POST", "/api/data/{table}" | "/api/data/{table}/batch") => Need::Table(TablePrivilege::Create),
        ("GET", "/api/data/{table}" | "/api/data/{table}/{id}") => Need::Table(TablePrivilege::Read),
        ("PATCH", "/api/data/{table}/{id}") => Need::Table(TablePrivilege::Write),
        ("DELETE", "/api/data/{table}/{id}") => Need::Table(TablePrivilege::Delete),
        ("GET", "/api/traces" | "/api/traces/{id}") => Need::Role(ReadTraces),
        ("GET", "/api/users" | "/api/tokens" | "/api/grants" | "/api/audit") => Need::Role(Administer),
        ("GET", _) => Need::Role(Read),
        ("POST", "/api/jobs/bulk" | "/api/jobs/{id}/{action}" | "/api/jobs/reassign") | ("DELETE", "/api/jobs/{id}") => Need::Role(ActOnJobs),
        ("POST", "/api/background") => Need::Role(Submit),
        ("POST", "/api/plugins" | "/api/plugins/{name}/rollback") | ("DELETE", "/api/plugins/{name}") => Need::Role(ManagePlugins),
        ("POST", "/api/steps") | ("PATCH" | "DELETE", "/api/steps/{name}") => Need::Role(ManageSteps),
        ("POST", "/api/steps/{name}/{action}") => Need::Role(SteerSteps),
        ("PATCH", "/api/queues/{name}") => Need::Role(SteerQueues),
        ("POST", "/api/tables") => Need::Role(ManageTables),
        _ => Need::Role(Administer),
    }
}

/// Refuses `caller` a route it may not use (403, saying what it lacks).
pub fn check(caller: &Caller, method: &Method, template: &str, table: Option<&str>) -> Result<()> {
    match need(method, template) {
        Need::Open => Ok(()),
        Need::Role(c) => caller.require(c, &format!("{method} {template}")),
        Need::Table(p) => caller.require_table(p, table.unwrap_or("")),
    }
}
