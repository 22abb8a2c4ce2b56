//! Who may do what through the API: users' own tokens, the built-in roles,
//! the privileges users and roles hold (on tables, and to act as another
//! user), and the audit log of who changed what. Owns `weir_tokens`,
//! `weir_privileges` and `weir_audit`.
//!
//! It decides and remembers; it changes no record, step or job. The API
//! resolves each request's bearer token to a [`Caller`] here and asks the
//! caller before a handler runs (`api::policy` maps routes to what they
//! need); the CLI works on the database directly, so its user is the
//! database's owner (an admin) and only its changes are audited.
//!
//! Tokens are 256 random bits; only their SHA-256 is stored. A fast hash is
//! right for secrets of full entropy (nothing to guess, so nothing for a slow
//! hash to slow down) and keeps a request's check to one indexed lookup; a
//! password would need a slow one, and weir keeps none.

use std::collections::BTreeSet;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{Connection, OptionalExtension, params};
use crate::error::{Error, Result};
use crate::time::{now_ms, to_rfc3339};

/// A built-in role: what a token lets its user do beyond table privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: users, tokens, grants, tables, the audit log, every record.
    Admin,
    /// Uploads plug-ins and manages steps and schedules on the tables they
    /// hold privileges on.
    Author,
    /// Acts on jobs (one and in bulk), steers queues and steps' holds, reads
    /// jobs and traces.
    Operator,
    /// Reads jobs, steps, plug-ins, tables and figures.
    Reader,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Author, Role::Operator, Role::Reader];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Author => "author",
            Role::Operator => "operator",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| Error::invalid(format!("no role {s:?}: the roles are admin, author, operator and reader")))
    }

    /// Whether the role may do `what` (table privileges aside).
    pub fn allows(self, what: Capability) -> bool {
        use Capability::*;
        match self {
            Role::Admin => true,
            Role::Author => matches!(what, Read | ReadTraces | ManagePlugins | ManageSteps | SteerSteps | Submit),
            Role::Operator => matches!(what, Read | ReadTraces | ActOnJobs | SteerSteps | SteerQueues | Submit),
            Role::Reader => matches!(what, Read),
        }
    }
}

/// What a route lets a caller do, beyond records (those need table
/// privileges: [`TablePrivilege`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Read jobs, steps, plug-ins, tables, schedules, queues, nodes, figures.
    Read,
    /// Read traces (they carry records' data).
    ReadTraces,
    /// Cancel, pause, resume, retry, postpone, delete jobs; bulk actions; reassign.
    ActOnJobs,
    /// Upload, remove and roll back plug-ins.
    ManagePlugins,
    /// Add, change and remove steps (and their schedules).
    ManageSteps,
    /// Enable, disable and release steps.
    SteerSteps,
    /// Set queues' limits.
    SteerQueues,
    /// Submit background operations (their grants are checked against the
    /// caller's table privileges).
    Submit,
    /// Create tables.
    ManageTables,
    /// Users, tokens, grants and the audit log.
    Administer,
}

/// A privilege on a table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TablePrivilege {
    Create,
    Read,
    Write,
    Delete,
}

impl TablePrivilege {
    pub const ALL: [TablePrivilege; 4] = [TablePrivilege::Create, TablePrivilege::Read, TablePrivilege::Write, TablePrivilege::Delete];

    pub fn name(self) -> &'static str {
        match self {
            TablePrivilege::Create => "create",
            TablePrivilege::Read => "read",
            TablePrivilege::Write => "write",
            TablePrivilege::Delete => "delete",
        }
    }
}

/// The privilege to act as another user (`X-Weir-User`).
pub const IMPERSONATE: &str = "impersonate";

/// Who a grant is for: a user, or everyone whose token has a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Role(Role),
}

impl Subject {
    /// `role:NAME`, `user:NAME`, or a bare name: a role's if it is one, else a user's.
    pub fn parse(s: &str) -> Result<Subject> {
        if let Some(role) = s.strip_prefix("role:") {
            return Role::parse(role).map(Subject::Role);
        }
        if let Some(user) = s.strip_prefix("user:") {
            crate::names::check_name("user", user)?;
            return Ok(Subject::User(user.into()));
        }
        if let Ok(role) = Role::parse(s) {
            return Ok(Subject::Role(role));
        }
        crate::names::check_name("user", s)?;
        Ok(Subject::User(s.into()))
    }

    fn key(&self) -> String {
        match self {
            Subject::User(u) => format!("user:{u}"),
            Subject::Role(r) => format!("role:{}", r.name()),
        }
    }
}

/// What `grant` and `revoke` take: table privileges on a table, or impersonate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Table(Vec<TablePrivilege>, String),
    Impersonate,
}

impl Grant {
    /// `create,read,write,delete` (any of them, or `all`) with a table, or
    /// `impersonate` without one.
    pub fn parse(privileges: &str, table: Option<&str>) -> Result<Grant> {
        if privileges.trim() == IMPERSONATE {
            if table.is_some() {
                return Err(Error::invalid("impersonate is not a privilege on a table: grant it without `on TABLE`"));
            }
            return Ok(Grant::Impersonate);
        }
        let Some(table) = table else {
            return Err(Error::invalid(format!("which table? write `{privileges} on TABLE` (or grant impersonate, which needs none)")));
        };
        crate::names::check_name("table", table)?;
        let mut list = BTreeSet::new();
        for p in privileges.split(',').map(str::trim) {
            if p == "all" {
                list.extend(TablePrivilege::ALL);
                continue;
            }
            let found = TablePrivilege::ALL.into_iter().find(|t| t.name() == p).ok_or_else(|| {
                Error::invalid(format!("no privilege {p:?}: a table's privileges are create, read, write and delete (or all); impersonate is granted alone"))
            })?;
            list.insert(found);
        }
        Ok(Grant::Table(list.into_iter().collect(), table.into()))
    }

    fn rows(&self) -> Vec<(&'static str, String)> {
        match self {
            Grant::Impersonate => vec![(IMPERSONATE, String::new())],
            Grant::Table(ps, t) => ps.iter().map(|p| (p.name(), t.clone())).collect(),
        }
    }
}

/// A privilege as `weir grant list` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PrivilegeRow {
    /// `user:NAME` or `role:NAME`.
    pub subject: String,
    pub privilege: String,
    /// The table (none for impersonate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub granted_at: String,
    pub granted_by: String,
}

/// Grants `grant` to `who`; granting what is held already changes nothing.
pub fn grant(conn: &Connection, who: &Subject, grant: &Grant, by: &str) -> Result<()> {
    if let Subject::User(u) = who {
        crate::store::user_active(conn, u)?.ok_or_else(|| Error::not_found(format!("no user named {u}; add it with `weir user add {u}`")))?;
    }
    for (privilege, table) in grant.rows() {
        conn.execute(
            "INSERT INTO weir_privileges (subject, privilege, table_name, granted_at, granted_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (subject, privilege, table_name) DO NOTHING",
            params![who.key(), privilege, table, now_ms(), by],
        )?;
    }
    Ok(())
}

/// Takes `grant` back from `who`; returns how many privileges it removed.
pub fn revoke(conn: &Connection, who: &Subject, grant: &Grant) -> Result<usize> {
    let mut n = 0;
    for (privilege, table) in grant.rows() {
        n += conn.execute("DELETE FROM weir_privileges WHERE subject = ?1 AND privilege = ?2 AND table_name = ?3", params![who.key(), privilege, table])?;
    }
    Ok(n)
}

/// Every privilege granted, by subject.
pub fn list_grants(conn: &Connection) -> Result<Vec<PrivilegeRow>> {
    let rows = conn
        .prepare_cached("SELECT subject, privilege, table_name, granted_at, granted_by FROM weir_privileges ORDER BY subject, table_name, privilege")?
        .query_map([], |r| {
            let table: String = r.get(2)?;
            Ok(PrivilegeRow {
                subject: r.get(0)?,
                privilege: r.get(1)?,
                table: (!table.is_empty()).then_some(table),
                granted_at: to_rfc3339(r.get(3)?),
                granted_by: r.get(4)?,
            })
        })?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// A token as `weir token list` shows it (never its secret).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenRow {
    pub id: String,
    pub user: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_at: String,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Requests per second allowed to this token (none: the server's limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Usable now: not revoked, not expired, its user active.
    pub usable: bool,
}

/// A new token: its row and, once, its secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub row: TokenRow,
    /// The bearer token. Shown once: weir keeps only its SHA-256.
    pub token: String,
}

/// What a token is asked for with.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub user: String,
    pub role: Role,
    pub label: Option<String>,
    /// When it stops working (ms since the epoch).
    pub expires_at: Option<i64>,
    /// Its own rate limit, in thousandths of a request per second.
    pub rate_milli: Option<i64>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Makes a token for an active user; the answer carries the secret, which is
/// not kept.
pub fn create_token(conn: &Connection, req: &TokenRequest, by: &str) -> Result<NewToken> {
    crate::store::require_active_user(conn, &req.user)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("weir_{}", base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes));
    let id = format!("tok-{}", &hex::encode(Sha256::digest(secret.as_bytes()))[..12]);
    let now = now_ms();
    conn.execute(
        "INSERT INTO weir_tokens (id, user_name, role, label, hash, created_at, created_by, expires_at, rate_milli) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![id, req.user, req.role.name(), req.label, hash(&secret), now, by, req.expires_at, req.rate_milli],
    )?;
    let row = read_tokens(conn, Some(&id))?.pop().ok_or_else(|| Error::Internal(format!("token {id} was not stored")))?;
    Ok(NewToken { row, token: secret })
}

/// Every token (without secrets), newest first.
pub fn list_tokens(conn: &Connection) -> Result<Vec<TokenRow>> {
    read_tokens(conn, None)
}

/// The tokens, or only token `id`.
fn read_tokens(conn: &Connection, id: Option<&str>) -> Result<Vec<TokenRow>> {
    let now = now_ms();
    let rows = conn
        .prepare_cached(
            "SELECT t.id, t.user_name, t.role, t.label, t.created_at, t.created_by, t.expires_at, t.revoked_at, t.rate_milli, COALESCE(u.active, 0)
             FROM weir_tokens t LEFT JOIN weir_users u ON u.name = t.user_name
             WHERE CAST(?1 AS TEXT) IS NULL OR t.id = ?1 ORDER BY t.created_at DESC, t.id",
        )?
        .query_map([id], |r| {
            let role: String = r.get(2)?;
            let (expires, revoked): (Option<i64>, Option<i64>) = (r.get(6)?, r.get(7)?);
            let rate: Option<i64> = r.get(8)?;
            let active: i64 = r.get(9)?;
            Ok(TokenRow {
                id: r.get(0)?,
                user: r.get(1)?,
                role: Role::parse(&role).unwrap_or(Role::Reader),
                label: r.get(3)?,
                created_at: to_rfc3339(r.get(4)?),
                created_by: r.get(5)?,
                expires_at: expires.map(to_rfc3339),
                revoked_at: revoked.map(to_rfc3339),
                rate_per_s: rate.map(|m| m as f64 / 1000.0),
                usable: revoked.is_none() && expires.is_none_or(|e| e > now) && active != 0,
            })
        })?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// Revokes a token by its id: it stops working at once. Revoking a revoked
/// token changes nothing (false).
pub fn revoke_token(conn: &Connection, id: &str) -> Result<bool> {
    let known: Option<Option<i64>> = conn.prepare_cached("SELECT revoked_at FROM weir_tokens WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?;
    match known {
        None => Err(Error::not_found(format!("no token {id}; `weir token list` shows them"))),
        Some(Some(_)) => Ok(false),
        Some(None) => Ok(conn.execute("UPDATE weir_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now_ms()])? == 1),
    }
}

/// The caller of a request: who they are, their role, what they hold, and
/// whom they act as.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user the credential belongs to.
    pub user: String,
    pub role: Role,
    /// The user the request acts as: `user`, or another with impersonate.
    pub acting_as: String,
    /// The token's id (none for the server's own token or no token).
    pub token: Option<String>,
    /// The token's own rate limit (thousandths of a request per second).
    pub rate_milli: Option<i64>,
    /// `(privilege, table)` pairs held by the user or the role.
    held: BTreeSet<(String, String)>,
}

/// Why a token is not accepted (each is a 401).
fn unusable(why: &str) -> Error {
    Error::Unauthorized(format!("{why}: ask an admin for a new token (`weir token create --user NAME --role ROLE`)"))
}

impl Caller {
    /// The server's own credential (`serve --token`, or no token on
    /// loopback): an admin, as `system`.
    pub fn admin(user: &str) -> Caller {
        Caller { user: user.into(), role: Role::Admin, acting_as: user.into(), token: None, rate_milli: None, held: BTreeSet::new() }
    }

    /// A user the identity provider signed in (a JWT), with the role its
    /// claims give. A user weir has not seen is added on first sign-in; a
    /// deactivated one is refused.
    pub fn signed_in(conn: &Connection, user: &str, role: Role) -> Result<Caller> {
        match crate::store::user_active(conn, user)? {
            Some(true) => {}
            Some(false) => return Err(unusable(&format!("user {user} is deactivated"))),
            None => {
                conn.execute("INSERT INTO weir_users (name, active, created_at) VALUES (?1, 1, ?2) ON CONFLICT (name) DO NOTHING", params![user, now_ms()])?;
            }
        }
        let held = held(conn, user, role)?;
        Ok(Caller { user: user.into(), role, acting_as: user.into(), token: None, rate_milli: None, held })
    }

    /// The caller a user token names: refused when it is unknown, revoked,
    /// expired, or its user is deactivated.
    pub fn from_token(conn: &Connection, token: &str) -> Result<Caller> {
        type Row = (String, String, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<Row> = conn
            .prepare_cached(
                "SELECT t.id, t.user_name, t.role, t.expires_at, t.revoked_at, t.rate_milli, u.active
                 FROM weir_tokens t LEFT JOIN weir_users u ON u.name = t.user_name WHERE t.hash = ?1",
            )?
            .query_row([hash(token)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
            .optional()?;
        let Some((id, user, role, expires, revoked, rate_milli, active)) = row else {
            return Err(Error::Unauthorized("missing or wrong bearer token: send Authorization: Bearer <token>".into()));
        };
        if revoked.is_some() {
            return Err(unusable(&format!("token {id} was revoked")));
        }
        if expires.is_some_and(|e| e <= now_ms()) {
            return Err(unusable(&format!("token {id} expired")));
        }
        if active.is_none_or(|a| a == 0) {
            return Err(unusable(&format!("the user of token {id}, {user}, is deactivated")));
        }
        let role = Role::parse(&role)?;
        let held = held(conn, &user, role)?;
        Ok(Caller { user: user.clone(), role, acting_as: user, token: Some(id), rate_milli, held })
    }

    /// Whom its operations run as, and who asked (see [`crate::pipeline::Who`]).
    pub fn who(&self) -> crate::pipeline::Who<'_> {
        crate::pipeline::Who::on_behalf(&self.acting_as, &self.user)
    }

    /// The bucket its requests are counted in: its token's, or its user's.
    pub fn rate_key(&self) -> String {
        match &self.token {
            Some(id) => format!("token:{id}"),
            None => format!("user:{}", self.user),
        }
    }

    /// What its role may do, by name (the dashboard hides the rest).
    pub fn may(&self) -> Vec<&'static str> {
        use Capability::*;
        [
            (Read, "read"),
            (ReadTraces, "read-traces"),
            (ActOnJobs, "act-on-jobs"),
            (ManagePlugins, "manage-plugins"),
            (ManageSteps, "manage-steps"),
            (SteerSteps, "steer-steps"),
            (SteerQueues, "steer-queues"),
            (Submit, "submit"),
            (ManageTables, "manage-tables"),
            (Administer, "administer"),
        ]
        .into_iter()
        .filter(|(c, _)| self.role.allows(*c))
        .map(|(_, n)| n)
        .collect()
    }

    /// The privileges it holds on tables (an admin holds all without them).
    pub fn tables(&self) -> Vec<Held> {
        self.held.iter().filter(|(p, _)| p != IMPERSONATE).map(|(p, t)| Held { privilege: p.clone(), table: t.clone() }).collect()
    }

    /// Acts as `other` (`X-Weir-User`): refused without impersonate.
    pub fn act_as(mut self, other: &str) -> Result<Caller> {
        if other != self.user && !self.holds(IMPERSONATE, "") {
            return Err(Error::Forbidden(format!(
                "{} may not act as {other}: that needs the impersonate privilege (`weir grant {} impersonate`); leave X-Weir-User out to act as yourself",
                self.user, self.user
            )));
        }
        self.acting_as = other.into();
        Ok(self)
    }

    fn holds(&self, privilege: &str, table: &str) -> bool {
        self.role == Role::Admin || self.held.contains(&(privilege.to_string(), table.to_string()))
    }

    /// Refused unless the role allows `what`.
    pub fn require(&self, what: Capability, doing: &str) -> Result<()> {
        if self.role.allows(what) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("{} ({}) may not {doing}: ask an admin for a token with a role that may", self.user, self.role.name())))
        }
    }

    /// Refused unless the caller holds `p` on `table`.
    pub fn require_table(&self, p: TablePrivilege, table: &str) -> Result<()> {
        if self.holds(p.name(), table) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} may not {} records of table {table}: that needs the {} privilege on it (`weir grant {} {} on {table}`)",
                self.user,
                p.name(),
                p.name(),
                self.user,
                p.name()
            )))
        }
    }

    /// Refused unless the caller holds what a plug-in is granted: `read` on
    /// a table it may read; create, write and delete where it may write (a
    /// plug-in's write grant does all three).
    pub fn require_grants(&self, grants: &[crate::steps::Grant]) -> Result<()> {
        for g in grants {
            let (access, needed): (&str, &[TablePrivilege]) = match g.access {
                crate::steps::Access::Write => ("write", &[TablePrivilege::Create, TablePrivilege::Write, TablePrivilege::Delete]),
                crate::steps::Access::Read => ("read", &[TablePrivilege::Read]),
            };
            for p in needed {
                self.require_table(*p, &g.table).map_err(|e| Error::Forbidden(format!("cannot grant a plug-in {access} access to table {}: {e}", g.table)))?;
            }
        }
        Ok(())
    }

    /// Refused unless the caller holds some privilege on `table` (an author
    /// manages steps on the tables they hold privileges on).
    pub fn require_some_on(&self, table: &str) -> Result<()> {
        if self.role == Role::Admin || self.held.iter().any(|(_, t)| t == table) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} holds no privilege on table {table}, so may not register steps on it (an admin grants one: `weir grant {} read on {table}`)",
                self.user, self.user
            )))
        }
    }
}

/// A privilege held on a table, as `GET /api/me` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Held {
    pub privilege: String,
    pub table: String,
}

/// The privileges a user holds, directly or through the role.
fn held(conn: &Connection, user: &str, role: Role) -> Result<BTreeSet<(String, String)>> {
    let rows = conn
        .prepare_cached("SELECT privilege, table_name FROM weir_privileges WHERE subject IN (?1, ?2)")?
        .query_map(params![format!("user:{user}"), format!("role:{}", role.name())], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// One entry of the audit log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    #[serde(default)]
    pub id: i64,
    pub at: String,
    /// Who did it (a token's user, the CLI's `cli:` + account).
    pub actor: String,
    /// As whom (the same unless they acted as another user).
    pub as_user: String,
    /// `api` or `cli`.
    pub via: String,
    /// What: `POST /api/steps`, `step add`...
    pub action: String,
    /// What it named: a path, or the command's arguments.
    pub target: String,
    /// The HTTP status, or 0 for a CLI command that succeeded.
    pub outcome: i64,
    /// The request's body where it fits (never a secret's value).
    #[schema(value_type = Option<Value>)]
    pub detail: Option<serde_json::Value>,
}

/// Appends an entry.
pub fn record(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.execute(
        "INSERT INTO weir_audit (at, actor, as_user, via, action, target, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![now_ms(), e.actor, e.as_user, e.via, e.action, e.target, e.outcome, e.detail.as_ref().map(|d| d.to_string())],
    )?;
    Ok(())
}

/// The audit fields the filter language can use.
fn audit_field(name: &str) -> Option<(String, crate::filter::Kind)> {
    use crate::filter::Kind;
    Some(match name {
        "actor" | "as_user" | "via" | "action" | "target" => (name.to_string(), Kind::Text),
        "id" | "outcome" => (name.to_string(), Kind::Number),
        "at" => ("at".to_string(), Kind::Time),
        _ => return None,
    })
}

/// Entries matching `filter_src` (the filter language over actor, as_user,
/// via, action, target, outcome, id and at: `actor eq 'alice' and outcome ge
/// 400`), newest first, at most `top`.
pub fn list(conn: &Connection, filter_src: Option<&str>, top: usize) -> Result<Vec<AuditEntry>> {
    use crate::filter;
    let (cond, mut args) = filter::where_clause(filter_src, &audit_field)?;
    let sql = format!("SELECT id, at, actor, as_user, via, action, target, outcome, detail FROM weir_audit{cond} ORDER BY id DESC LIMIT ?");
    args.push(filter::SqlParam::Int(top.min(crate::limits::MAX_PAGE) as i64));
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(crate::db::params_from_iter(args.iter()), |r| {
            let detail: Option<String> = r.get(8)?;
            Ok(AuditEntry {
                id: r.get(0)?,
                at: to_rfc3339(r.get(1)?),
                actor: r.get(2)?,
                as_user: r.get(3)?,
                via: r.get(4)?,
                action: r.get(5)?,
                target: r.get(6)?,
                outcome: r.get(7)?,
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// Deletes entries older than `before` (ms since the epoch): retention.
pub fn cleanup(conn: &Connection, before: i64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM weir_audit WHERE at < ?1", [before])?)
}
