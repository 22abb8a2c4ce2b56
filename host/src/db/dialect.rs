//! Every difference between SQLite and PostgreSQL that weir's SQL meets, one
//! method each, with the callers that depend on it.
//!
//! weir writes one text of each statement in SQLite's dialect with `?N`
//! placeholders ([`super::conn`] rewrites the placeholders and drops SQLite's
//! index hints for PostgreSQL). Where the two really differ, the caller asks
//! its connection's [`Dialect`] for the fragment to write: each dialect
//! writes its own expression, and nothing is emulated on the server (the
//! SQLite look-alike functions PostgreSQL once carried were dropped by
//! migration 12). Only `db/` matches on the variants.
//!
//! Owns no connection and runs nothing: it only names differences.

use std::borrow::Cow;

/// The database weir's SQL is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// An SQLite file: one machine, one writer at a time (the file's lock).
    Sqlite,
    /// A PostgreSQL database: several nodes, row locks, one clock.
    Postgres,
}

/// How a value of a record's column is stored (the column types of
/// `crate::values::ColType` map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Text that compares and sorts bytewise (ids, text, JSON, references).
    Text,
    /// A 64-bit integer (integers, booleans, timestamps in ms).
    Integer,
    /// An exact decimal of up to 28 significant digits, ordered numerically.
    Decimal,
}

/// A value [`Dialect::json_set`] stores in a JSON document, as an SQL
/// expression of the type named.
#[derive(Debug, Clone, Copy)]
pub enum JsonArg<'a> {
    /// Stored as a JSON string.
    Text(&'a str),
    /// Stored as a JSON number.
    Integer(&'a str),
    /// An expression whose text is JSON, stored as that JSON value.
    Json(&'a str),
}

/// The advisory lock every PostgreSQL write transaction takes but the job
/// queue's claims and successes (see [`Dialect::row_locks`]); an arbitrary
/// key: "weir" in ASCII.
pub const WRITE_LOCK: i64 = 0x7765_6972;

impl Dialect {
    /// The database's name, for messages and the bench's labels.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
        }
    }

    /// **Write lock.** The statements that open a write transaction and take
    /// the database's write lock now: SQLite's `BEGIN IMMEDIATE`; on
    /// PostgreSQL, `BEGIN` and weir's transaction-scoped advisory lock, which
    /// every writer of every node takes, so writes are serialised as on SQLite
    /// and every read inside sees the state it writes on.
    /// Caller: `Connection::begin_write` (operations, catalogue changes,
    /// operator actions, housekeeping).
    pub fn begin_write_sql(self) -> Cow<'static, str> {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE".into(),
            Dialect::Postgres => format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})").into(),
        }
    }

    /// **Row locks.** Whether a transaction that changes only rows it locks
    /// itself (`TransactionBehavior::RowLocked`: the queue's claims and
    /// successes) can do without the write lock: PostgreSQL's row locks let
    /// several nodes claim and record at once; SQLite has one lock, taken at
    /// once. Caller: `Connection::transaction_with_behavior`.
    pub fn row_locks(self) -> bool {
        self == Dialect::Postgres
    }

    /// **Locking reads.** `select` made to lock the rows it reads until the
    /// transaction ends, where another transaction could change them without
    /// the write lock (PostgreSQL's row-locked claims and outcomes); as is on
    /// SQLite, whose write lock already excludes every other writer.
    /// Callers: `jobs::control::current` (an operator action reads a job's
    /// status, then acts on it), `jobs::state::expire`.
    pub fn locking_read(self, select: &str) -> Cow<'_, str> {
        match self {
            Dialect::Sqlite => Cow::Borrowed(select),
            Dialect::Postgres => Cow::Owned(format!("{select} FOR UPDATE")),
        }
    }

    /// **Busy wait.** The statement that makes the session wait at most `ms`
    /// for another's lock (PostgreSQL's `lock_timeout`); `None` where the
    /// driver sets it (SQLite's busy timeout). Caller: `Connection::set_busy_timeout`.
    pub fn busy_timeout_sql(self, ms: u128) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!("SET lock_timeout = {}", ms.max(1))),
        }
    }

    /// **Clock.** The query for the database's clock in ms since the epoch,
    /// where nodes share it (PostgreSQL: every node reads leases and due
    /// times from one clock); `None` on SQLite (one machine, its clock).
    /// Caller: `db::database_now`, through `crate::time::now_on` (the
    /// worker's claims, outcomes and housekeeping).
    pub fn clock_sql(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"),
        }
    }

    /// **Change polling.** A query for a counter that changes when another
    /// connection commits: SQLite's `data_version`; PostgreSQL's write-ahead
    /// log position (the fallback while the node's listener is down).
    /// Caller: `db::data_version` (the dispatcher's wake-ups, the catalogue cache).
    pub fn data_version_sql(self) -> &'static str {
        match self {
            Dialect::Sqlite => "PRAGMA data_version",
            Dialect::Postgres => "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint",
        }
    }

    /// **Column types.** The type of a record's column of `storage`, and of
    /// weir's own columns: text sorts bytewise on both (`COLLATE "C"` on
    /// PostgreSQL, as SQLite's default); decimals are exact (canonical text
    /// ordered by weir's collation on SQLite, `NUMERIC` on PostgreSQL).
    /// Caller: `store::records` (a table's storage).
    pub fn column_type(self, storage: Storage) -> &'static str {
        match (self, storage) {
            (Dialect::Sqlite, Storage::Text) => "TEXT",
            (Dialect::Sqlite, Storage::Integer) => "INTEGER",
            (Dialect::Sqlite, Storage::Decimal) => "TEXT COLLATE WEIR_DECIMAL",
            (Dialect::Postgres, Storage::Text) => "TEXT COLLATE \"C\"",
            (Dialect::Postgres, Storage::Integer) => "BIGINT",
            (Dialect::Postgres, Storage::Decimal) => "NUMERIC",
        }
    }

    /// **Name length.** The longest identifier the database keeps (bytes):
    /// PostgreSQL cuts names at 63; SQLite has no limit that matters.
    /// Caller: `store::records::create_table` (`data_<name>` must fit).
    pub fn max_identifier_len(self) -> Option<usize> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(63),
        }
    }

    /// **JSON read.** The value at `path` (keys separated by dots) of the
    /// JSON text `doc`, as text (null when absent). Callers: `jobs::waits`
    /// (a wait's condition), `jobs::state` (timers), `jobs` (filters on a
    /// job's target).
    pub fn json_text(self, doc: &str, path: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({doc}, '$.{path}')"),
            Dialect::Postgres => format!("(CAST({doc} AS jsonb) #>> '{{{}}}')", path.replace('.', ",")),
        }
    }

    /// **JSON write.** The JSON text `doc` with key `key` set to `value`.
    /// Callers: `jobs::state` (a wait's wake reason, a postponed wait's
    /// not-before time, a paused wait's `met`).
    pub fn json_set(self, doc: &str, key: &str, value: JsonArg<'_>) -> String {
        match (self, value) {
            (Dialect::Sqlite, JsonArg::Text(v) | JsonArg::Integer(v)) => format!("json_set({doc}, '$.{key}', {v})"),
            (Dialect::Sqlite, JsonArg::Json(v)) => format!("json_set({doc}, '$.{key}', json({v}))"),
            (Dialect::Postgres, v) => {
                let v = match v {
                    JsonArg::Text(v) => format!("to_jsonb(CAST({v} AS TEXT))"),
                    JsonArg::Integer(v) => format!("to_jsonb(CAST({v} AS BIGINT))"),
                    JsonArg::Json(v) => format!("CAST(CAST({v} AS TEXT) AS jsonb)"),
                };
                format!("CAST(jsonb_set(CAST({doc} AS jsonb), '{{{key}}}', {v}) AS TEXT)")
            }
        }
    }

    /// **Short reads on the caller's thread.** Whether a short indexed read
    /// (a bearer token's lookup on every API request) may run on an async
    /// thread: an SQLite read takes a few µs in-process, less than handing
    /// it to a blocking thread (~60 µs measured); PostgreSQL's is a network
    /// round trip, so it goes to a blocking thread. Caller: `api` (signing in).
    pub fn short_reads_inline(self) -> bool {
        self == Dialect::Sqlite
    }

    /// **A separate recorder connection.** Whether a worker records outcomes
    /// and heartbeats on a connection of their own: on PostgreSQL they take
    /// row locks and run beside the dispatcher's claims; on SQLite one
    /// connection serves both (the file has one writer anyway).
    /// Caller: `worker` (its recorder).
    pub fn separate_recorder(self) -> bool {
        self == Dialect::Postgres
    }

    /// **Set-based completion.** Whether a group of successes is recorded
    /// in one statement ([`Dialect::set_based_success_sql`]); where not, one
    /// by one in one write transaction. Caller: `jobs::complete_batch`.
    pub fn set_based_completion(self) -> bool {
        self == Dialect::Postgres
    }

    /// **Set-based completion.** The statement that records a group of
    /// successes at once, or `None` where they are recorded one by one in one
    /// write transaction (SQLite: one writer, each update is cheap). A job
    /// a workflow started is left to the one-by-one path: its end may wake
    /// its parent, which must not race the parent's own outcome (that path
    /// takes weir's write lock, as the parent's does).
    /// PostgreSQL: the group arrives as one JSON parameter (`?1`: objects of
    /// id, ms, trace, result), is materialised, and each job is updated by key
    /// if `?2` still holds its lease and it is `running`; `set` is the status
    /// change, `release` the lease's release; the steps of the jobs it ended
    /// lose their breakers' failures in the same statement. Returns id, step
    /// and whether a callback waits. `?3` is now.
    /// Caller: `jobs::state::complete_many`.
    pub fn set_based_success_sql(self, set: &str, release: &str, running: i64) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            // The plan must look each job up by key, driven by the group. The
            // lease and status checks are therefore join conditions on columns
            // of the materialised group, not conditions on `weir_jobs` alone: as
            // those, the planner estimated "one row" (a worker id is new to the
            // table's statistics), scanned the running jobs first and the group
            // once per job (85 ms for 512 jobs instead of 7).
            Dialect::Postgres => Some(format!(
                "WITH done AS MATERIALIZED (
                     SELECT d.id AS done_id, d.ms AS done_ms, d.trace AS done_trace, d.result AS done_result,
                            CAST(?2 AS TEXT) AS done_worker, CAST({running} AS BIGINT) AS done_status
                     FROM jsonb_to_recordset(CAST(CAST(?1 AS TEXT) AS jsonb)) AS d(id text, ms bigint, trace text, result text)
                 ), ended AS (
                     UPDATE weir_jobs SET {set}, duration_ms = done_ms, trace = done_trace, worker = done_worker, {release},
                         completed_at = ?3, result = done_result, error_code = NULL, error_message = NULL, state = NULL, postpone_until = NULL
                     FROM done WHERE weir_jobs.id = done_id AND weir_jobs.lease_owner = done_worker AND weir_jobs.statuscode = done_status
                       AND weir_jobs.parent_id IS NULL
                     RETURNING weir_jobs.id, weir_jobs.step, weir_jobs.callback_url
                 ), healed AS (
                     DELETE FROM weir_step_health WHERE step IN (SELECT step FROM ended)
                 )
                 SELECT id, step, callback_url IS NOT NULL FROM ended"
            )),
        }
    }

    /// **Set-based completion, one job.** [`Dialect::set_based_success_sql`]
    /// for a group of one, the job's values as parameters instead of a JSON
    /// group (`?1` id, `?2` worker, `?3` now, `?4` ms, `?5` trace, `?6`
    /// result): the group's parsing and join cost the server about 85 µs a
    /// statement, four times the update itself, and an attempt that wrote
    /// records is recorded alone. Same checks, same answer.
    /// Caller: `jobs::state::complete_many_ahead`.
    pub fn one_success_sql(self, set: &str, release: &str, running: i64) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!(
                "WITH ended AS (
                     UPDATE weir_jobs SET {set}, duration_ms = ?4, trace = ?5, worker = ?2, {release},
                         completed_at = ?3, result = ?6, error_code = NULL, error_message = NULL, state = NULL, postpone_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND statuscode = {running} AND parent_id IS NULL
                     RETURNING id, step, callback_url
                 ), healed AS (
                     DELETE FROM weir_step_health WHERE step IN (SELECT step FROM ended)
                 )
                 SELECT id, step, callback_url IS NOT NULL FROM ended"
            )),
        }
    }

    /// **Skipping locked rows.** `select` made to lock the rows it reads and
    /// pass over rows another transaction holds, so nodes claiming at once
    /// take different jobs (PostgreSQL); as is on SQLite, where one claim runs
    /// at a time. Callers: `jobs::claims` (a claim's candidates and probes, and
    /// the limits it counts against), `jobs::state::heartbeat` (a held job's
    /// row that the worker's outcome group has locked is passed over).
    pub fn skip_locked(self, select: &str) -> Cow<'_, str> {
        match self {
            Dialect::Sqlite => Cow::Borrowed(select),
            Dialect::Postgres => Cow::Owned(format!("{select} FOR UPDATE SKIP LOCKED")),
        }
    }

    /// **A list as one parameter.** The condition "`expr` is one of the
    /// text values of the JSON array in parameter `param` (`?N`)": one
    /// prepared statement serves a list of any length. On PostgreSQL the list
    /// becomes an array first, so an index on `expr` is used for each value
    /// (a join with the set-returning function would be planned for a list of
    /// unknown length, often as a scan of the whole table). Callers:
    /// `jobs::claims` (the queues a node serves, the limits a claim counts
    /// against), `jobs::state::claim_ids` (the jobs a claim takes).
    pub fn in_text_list(self, expr: &str, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{expr} IN (SELECT value FROM json_each({param}))"),
            Dialect::Postgres => format!("{expr} = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST({param} AS jsonb))))"),
        }
    }

    /// **A claim in one statement.** The `UPDATE` with `set` of the jobs
    /// whose ids `picked` gives (a `SELECT id ...` that checks their status
    /// and, on PostgreSQL, locks them `FOR UPDATE SKIP LOCKED`), returning
    /// `returning`. The update itself names nothing but the ids: on
    /// PostgreSQL they become an array first, so each job is found by its key
    /// (with a condition on the status too, the planner may take a partial
    /// index of Ready jobs that its statistics think empty, and read all of
    /// it for each claim). Caller: `jobs::state::claim_lanes`.
    pub fn claim_sql(self, set: &str, picked: &str, returning: &str) -> String {
        let ids = match self {
            Dialect::Sqlite => format!("id IN ({picked})"),
            Dialect::Postgres => format!("id = ANY(ARRAY({picked}))"),
        };
        format!("UPDATE weir_jobs SET {set} WHERE {ids} RETURNING {returning}")
    }

    /// **A job's lane in SQL.** The JSON array `[queue, owner, step]` of the
    /// row's queue and step and the owner `owner` (an SQL expression), as
    /// `jobs::claims::lane` writes it in Rust (the same text on SQLite; on
    /// PostgreSQL the same values, which is what a lane needs). Caller:
    /// `jobs::state::reassign` (a job's owner changes its lane).
    pub fn lane_sql(self, owner: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_array(queue, {owner}, step)"),
            Dialect::Postgres => {
                format!("'[' || to_json(queue)::text || ',' || to_json(CAST({owner} AS TEXT))::text || ',' || COALESCE(to_json(step)::text, 'null') || ']'")
            }
        }
    }

    /// **Identity columns after a copy.** The statement that makes the
    /// numbering of `table`'s `id` continue after the rows copied into it
    /// (PostgreSQL's identity sequences); `None` where the next id follows
    /// the largest one by itself (SQLite's `INTEGER PRIMARY KEY`).
    /// Caller: `store::copy` (`weir migrate`).
    pub fn continue_identity_sql(self, table: &str) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_and_values_are_written_per_dialect() {
        assert_eq!(Dialect::Sqlite.json_text("context", "target.id"), "json_extract(context, '$.target.id')");
        assert_eq!(Dialect::Postgres.json_text("context", "target.id"), "(CAST(context AS jsonb) #>> '{target,id}')");
        assert_eq!(Dialect::Sqlite.json_set("wait", "met", JsonArg::Json("'true'")), "json_set(wait, '$.met', json('true'))");
        assert_eq!(
            Dialect::Postgres.json_set("wait", "wake", JsonArg::Text("?2")),
            "CAST(jsonb_set(CAST(wait AS jsonb), '{wake}', to_jsonb(CAST(?2 AS TEXT))) AS TEXT)"
        );
    }
}
