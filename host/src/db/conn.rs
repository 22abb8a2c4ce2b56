//! The connection façade: one connection type for both of weir's databases.
//!
//! Owns [`Connection`] (an SQLite connection, or a PostgreSQL session), its
//! statements, rows, parameters and errors. The rest of weir writes SQL in one
//! dialect (SQLite's, with `?N` placeholders) against this small surface, which
//! mirrors the part of rusqlite weir uses; on PostgreSQL the placeholders become
//! `$N`, parameters adapt to the types the server expects, and columns read back
//! with rusqlite's coercions (a `bool` from an integer, a `u32` from a bigint),
//! so a query written once reads the same on both. Where the dialects really
//! differ, callers ask the connection's [`Dialect`] what to write.
//!
//! A PostgreSQL connection keeps at most [`STATEMENT_CACHE`] prepared
//! statements (least recently used go, closed on the server), and when its
//! session is gone (the server restarted) it fails the call as unavailable
//! and opens a new session on its next call outside a transaction.
//!
//! It knows nothing of weir's tables.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use tokio_postgres as postgres;

use super::dialect::Dialect;
use tokio_postgres::types::{IsNull, ToSql as PgToSql, Type, to_sql_checked};

/// An error of either database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Pg(#[from] postgres::Error),
    /// A query that must return a row returned none.
    #[error("the query returned no row")]
    NoRows,
    /// PostgreSQL refused to prepare a statement (the statement is kept for
    /// the message: weir's SQL, so a bug in it shows where).
    #[error("{} (in: {sql})", pg_message(.source))]
    Prepare { sql: String, source: postgres::Error },
    /// A column could not be read as the type asked for.
    #[error("column {0}: {1}")]
    Type(usize, String),
    /// The database could not be opened (a file, a URL, its schema).
    #[error("{0}")]
    Open(String),
    /// No connection or lock could be had within the busy wait.
    #[error("{0}")]
    Busy(String),
    /// A text parameter holds the NUL character, which PostgreSQL cannot
    /// store: refused on both databases before it is sent (parameter index).
    #[error("a value given (parameter {0}) holds the NUL character (U+0000), which weir does not store or look up; remove it")]
    Nul(usize),
    /// The database server cannot be reached (down, restarting, the session
    /// lost): nothing was done; weir reconnects by itself.
    #[error("{0}")]
    Unavailable(String),
    /// A query sent ahead of another statement failed (see
    /// [`Connection::query_ahead`]); that statement's error is the server's.
    #[error("{0}")]
    Ahead(String),
}

/// Whether `e` means the session is gone: its socket closed, or the server
/// shutting down or refusing sessions (SQLSTATE class 57P, 08).
fn pg_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => c.code().starts_with("57P") || c.code().starts_with("08"),
        // No SQLSTATE: the driver's own failure. Only those of the socket
        // (its messages, by kind: the driver's kinds are private) mean the
        // session is gone; a parameter it could not encode does not.
        None => {
            let text = e.to_string();
            ["error communicating with the server", "error connecting to server", "timeout waiting for server", "unexpected message from server"]
                .iter()
                .any(|kind| text.starts_with(kind))
        }
    }
}

/// Whether `e` is a lock not had in time, a serialization failure or a deadlock.
fn pg_busy(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// PostgreSQL's own message (with its detail), not the client's "db error".
pub(crate) fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

impl DbError {
    /// The write lock could not be had in time (SQLite's busy or locked;
    /// PostgreSQL's lock timeout or a serialization failure).
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Busy(_) => true,
            DbError::Sqlite(e) => matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)),
            DbError::Pg(e) => pg_busy(e),
            _ => false,
        }
    }

    /// The server could not be reached or went away (a restart, a failover,
    /// an outage): the call did nothing, and a later one may work.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Pg(e) | DbError::Prepare { source: e, .. } => pg_lost(e),
            _ => false,
        }
    }

    /// A unique, primary key, foreign key or check constraint refused a write.
    pub fn is_constraint(&self) -> bool {
        match self {
            DbError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation),
            DbError::Pg(e) | DbError::Prepare { source: e, .. } => e.code().is_some_and(|c| c.code().starts_with("23")),
            _ => false,
        }
    }

    fn no_rows(&self) -> bool {
        matches!(self, DbError::NoRows | DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A value going in or coming out: SQLite's five storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

impl ValueRef<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ValueRef::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ValueRef::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

impl<'a> From<&'a str> for ValueRef<'a> {
    fn from(s: &'a str) -> Self {
        ValueRef::Text(Cow::Borrowed(s))
    }
}
impl From<String> for ValueRef<'_> {
    fn from(s: String) -> Self {
        ValueRef::Text(Cow::Owned(s))
    }
}
impl From<i64> for ValueRef<'_> {
    fn from(i: i64) -> Self {
        ValueRef::Integer(i)
    }
}

/// A statement parameter.
pub trait ToSql {
    fn to_sql(&self) -> ValueRef<'_>;
}

impl ToSql for ValueRef<'_> {
    fn to_sql(&self) -> ValueRef<'_> {
        match self {
            ValueRef::Text(s) => ValueRef::Text(Cow::Borrowed(s)),
            ValueRef::Blob(b) => ValueRef::Blob(Cow::Borrowed(b)),
            v => v.clone(),
        }
    }
}
impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> ValueRef<'_> {
        (**self).to_sql()
    }
}
impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, ToSql::to_sql)
    }
}
impl ToSql for str {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(Cow::Borrowed(self))
    }
}
impl ToSql for String {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(Cow::Borrowed(self))
    }
}
impl ToSql for [u8] {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Blob(Cow::Borrowed(self))
    }
}
impl ToSql for Vec<u8> {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Blob(Cow::Borrowed(self))
    }
}
impl ToSql for f64 {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}
impl ToSql for bool {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Integer(*self as i64)
    }
}
macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> ValueRef<'_> {
                // Larger than i64 (a u64 or usize past 2^63) is stored saturated.
                ValueRef::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_to_sql!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

/// A statement's parameters: `[]`, `[a, b]` of one type, [`params!`] or
/// [`params_from_iter`].
pub trait Params {
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for [&dyn ToSql; 0] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}
impl Params for () {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}
impl Params for &[&dyn ToSql] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(&self) -> Vec<ValueRef<'_>> {
                self.iter().map(ToSql::to_sql).collect()
            }
        }
        impl<T: ToSql> Params for &[T; $n] {
            fn values(&self) -> Vec<ValueRef<'_>> {
                self.iter().map(ToSql::to_sql).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// Parameters from an iterator (built at run time).
pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I>
where
    I: IntoIterator + Clone,
    I::Item: ToSql,
{
    ParamsFromIter(iter)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator + Clone,
    I::Item: ToSql,
{
    fn values(&self) -> Vec<ValueRef<'_>> {
        // The items may be owned (made by the iterator): keep them owned.
        self.0.clone().into_iter().map(|v| owned(v.to_sql())).collect()
    }
}

fn owned(v: ValueRef<'_>) -> ValueRef<'static> {
    match v {
        ValueRef::Null => ValueRef::Null,
        ValueRef::Integer(i) => ValueRef::Integer(i),
        ValueRef::Real(f) => ValueRef::Real(f),
        ValueRef::Text(s) => ValueRef::Text(Cow::Owned(s.into_owned())),
        ValueRef::Blob(b) => ValueRef::Blob(Cow::Owned(b.into_owned())),
    }
}

/// Statement parameters of mixed types, as rusqlite's `params!`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::db::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::db::ToSql),+] as &[&dyn $crate::db::ToSql] };
}
pub use crate::params;

impl rusqlite::ToSql for ValueRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match self {
            ValueRef::Null => V::Null,
            ValueRef::Integer(i) => V::Integer(*i),
            ValueRef::Real(f) => V::Real(*f),
            ValueRef::Text(s) => V::Text(s.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

/// A parameter as PostgreSQL wants it: converted to the type the server
/// inferred for its placeholder (so `?1` may be compared with a bigint, a
/// numeric or a text column alike).
/// Writes `v` as PostgreSQL's binary form of `ty`.
fn put<T: PgToSql>(v: &T, ty: &Type, out: &mut bytes::BytesMut) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
    v.to_sql(ty, out)
}

impl PgToSql for ValueRef<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let wrong = || -> Box<dyn std::error::Error + Sync + Send> { format!("cannot send {self:?} as {ty}").into() };
        match self {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => put(&i, ty, out),
                Type::INT4 => put(&i32::try_from(*i).map_err(|_| wrong())?, ty, out),
                Type::INT2 => put(&i16::try_from(*i).map_err(|_| wrong())?, ty, out),
                Type::FLOAT8 => put(&(*i as f64), ty, out),
                Type::FLOAT4 => put(&(*i as f32), ty, out),
                Type::BOOL => put(&(*i != 0), ty, out),
                Type::NUMERIC => put(&rust_decimal::Decimal::from(*i), ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => put(&i.to_string(), &Type::TEXT, out),
                _ => Err(wrong()),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => put(&f, ty, out),
                Type::FLOAT4 => put(&(*f as f32), ty, out),
                Type::NUMERIC => put(&rust_decimal::Decimal::try_from(*f).map_err(|_| wrong())?, ty, out),
                Type::INT8 if f.fract() == 0.0 => put(&(*f as i64), ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::UNKNOWN => put(&f.to_string(), &Type::TEXT, out),
                _ => Err(wrong()),
            },
            ValueRef::Text(s) => match *ty {
                Type::NUMERIC => put(&s.parse::<rust_decimal::Decimal>().map_err(|_| wrong())?, ty, out),
                Type::INT8 => put(&s.parse::<i64>().map_err(|_| wrong())?, ty, out),
                Type::FLOAT8 => put(&s.parse::<f64>().map_err(|_| wrong())?, ty, out),
                Type::BYTEA => put(&s.as_bytes(), ty, out),
                Type::JSON | Type::JSONB => {
                    if *ty == Type::JSONB {
                        out.extend_from_slice(&[1]);
                    }
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => put(&&**s, &Type::TEXT, out),
            },
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => put(&&**b, ty, out),
                _ => Err(wrong()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column read as a Rust type, with rusqlite's coercions on both databases.
pub trait FromSql: rusqlite::types::FromSql + Sized {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String>;
}

impl FromSql for i64 {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Integer(i) => Ok(i),
            v => Err(format!("expected an integer, found {v:?}")),
        }
    }
}
macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
int_from_sql!(i32, u32, u64, usize, u8, u16);

impl FromSql for f64 {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            // PostgreSQL's numeric (an AVG), read as its text.
            ValueRef::Text(s) => s.parse().map_err(|_| format!("expected a number, found {s:?}")),
            v => Err(format!("expected a number, found {v:?}")),
        }
    }
}
impl FromSql for bool {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromSql for String {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Text(s) => Ok(s.into_owned()),
            v => Err(format!("expected text, found {v:?}")),
        }
    }
}
impl FromSql for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.into_owned()),
            ValueRef::Text(s) => Ok(s.into_owned().into_bytes()),
            v => Err(format!("expected bytes, found {v:?}")),
        }
    }
}
impl<T: FromSql> FromSql for Option<T> {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column's position in a row.
pub trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    /// Column `idx` as `T`. (The unused first parameter keeps rusqlite's
    /// `get::<_, T>(i)` spelling.)
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let idx = idx.index();
        match self {
            Row::Sqlite(r) => Ok(r.get(idx)?),
            Row::Pg(_) => T::from_value(self.get_ref(idx)?).map_err(|m| DbError::Type(idx, m)),
        }
    }

    /// Column `idx` as it is stored.
    pub fn get_ref(&self, idx: usize) -> Result<ValueRef<'_>> {
        match self {
            Row::Sqlite(r) => Ok(match r.get_ref(idx)? {
                rusqlite::types::ValueRef::Null => ValueRef::Null,
                rusqlite::types::ValueRef::Integer(i) => ValueRef::Integer(i),
                rusqlite::types::ValueRef::Real(f) => ValueRef::Real(f),
                rusqlite::types::ValueRef::Text(t) => ValueRef::Text(String::from_utf8_lossy(t)),
                rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(Cow::Borrowed(b)),
            }),
            Row::Pg(r) => pg_value(r, idx),
        }
    }
}

/// A PostgreSQL column as one of SQLite's storage classes.
fn pg_value(r: &postgres::Row, idx: usize) -> Result<ValueRef<'_>> {
    let column = r.columns().get(idx).ok_or_else(|| DbError::Type(idx, "no such column".into()))?;
    let ty = column.type_().clone();
    let v = match ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(idx)?.map(ValueRef::Integer),
        Type::INT4 => r.try_get::<_, Option<i32>>(idx)?.map(|i| ValueRef::Integer(i.into())),
        Type::INT2 => r.try_get::<_, Option<i16>>(idx)?.map(|i| ValueRef::Integer(i.into())),
        Type::BOOL => r.try_get::<_, Option<bool>>(idx)?.map(|b| ValueRef::Integer(b.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(idx)?.map(ValueRef::Real),
        Type::FLOAT4 => r.try_get::<_, Option<f32>>(idx)?.map(|f| ValueRef::Real(f.into())),
        Type::BYTEA => r.try_get::<_, Option<&[u8]>>(idx)?.map(|b| ValueRef::Blob(Cow::Borrowed(b))),
        // Whole numbers of scale 0 (a SUM of bigints is numeric) read as
        // integers; other numerics as their exact text, scale kept (120.0
        // stays 120.0, as SQLite keeps a decimal's text).
        Type::NUMERIC => r.try_get::<_, Option<rust_decimal::Decimal>>(idx)?.map(|d| match (d.scale(), i64::try_from(d)) {
            (0, Ok(i)) => ValueRef::Integer(i),
            _ => ValueRef::Text(Cow::Owned(d.to_string())),
        }),
        _ => r.try_get::<_, Option<&str>>(idx)?.map(|s| ValueRef::Text(Cow::Borrowed(s))),
    };
    Ok(v.unwrap_or(ValueRef::Null))
}

/// Maps `Result<T>` where no row is not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.no_rows() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How many prepared statements a PostgreSQL connection keeps (least
/// recently used go first; weir's statements are few, but filters and
/// listings make new texts).
pub const STATEMENT_CACHE: usize = 128;

/// A PostgreSQL connection: the session's client, its prepared statements
/// (by weir's SQL text, at most [`STATEMENT_CACHE`]) and whether a
/// transaction is open; and where to open a new session when this one is gone.
///
/// A call sends its request and waits for the answer on the calling thread,
/// blocking it as an SQLite call does (see `db/postgres/session.rs`), which
/// works on any thread, tokio's too.
pub struct PgConn {
    session: RefCell<super::postgres::Session>,
    source: std::sync::Arc<super::postgres::Source>,
    statements: RefCell<lru::LruCache<String, PgStatement>>,
    in_transaction: Cell<bool>,
    /// The busy wait set on it, set again on a new session.
    busy_ms: Cell<Option<u128>>,
    /// Statements of the open transaction not sent yet: they go with its
    /// next statement, in the same round trip (see [`Connection::defer`] and
    /// [`Connection::query_ahead`]).
    deferred: RefCell<Vec<SentAhead>>,
}

/// A statement waiting to go with the transaction's next one.
enum SentAhead {
    /// A savepoint's statement (`SAVEPOINT`, `RELEASE`): no answer.
    Batch(String),
    /// A query, its parameters in the order the prepared statement takes
    /// them; its rows go to `answer`.
    Query { stmt: PgStatement, args: Vec<ValueRef<'static>>, answer: Box<dyn FnOnce(Result<Vec<postgres::Row>>) + Send> },
}

/// The answer of a query sent ahead ([`Connection::query_ahead`]).
pub struct Ahead<T>(std::sync::Arc<parking_lot::Mutex<Option<Result<T>>>>);

impl<T> Ahead<T> {
    /// The query's answer; if no statement has taken the query to the
    /// server yet, it is sent now (a round trip of its own).
    pub fn take(self, conn: &Connection) -> Result<T> {
        if self.0.lock().is_none() {
            conn.flush()?;
        }
        self.0.lock().take().unwrap_or_else(|| {
            Err(DbError::Unavailable(
                "the session with the database ended before a query sent ahead was answered; nothing of its transaction was committed; try again".into(),
            ))
        })
    }
}

/// A connection to weir's database.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

impl From<rusqlite::Connection> for Connection {
    fn from(c: rusqlite::Connection) -> Self {
        Connection::Sqlite(c)
    }
}

impl Connection {
    /// A PostgreSQL connection over `client`, reconnecting through `source`.
    pub(crate) fn postgres(session: super::postgres::Session, source: std::sync::Arc<super::postgres::Source>) -> Connection {
        let cache = lru::LruCache::new(std::num::NonZeroUsize::new(STATEMENT_CACHE).unwrap_or(std::num::NonZeroUsize::MIN));
        Connection::Pg(Box::new(PgConn {
            session: RefCell::new(session),
            source,
            statements: RefCell::new(cache),
            in_transaction: Cell::new(false),
            busy_ms: Cell::new(None),
            deferred: RefCell::new(Vec::new()),
        }))
    }

    /// What to write for this connection's database.
    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Pg(_) => Dialect::Postgres,
        }
    }

    /// Whether the connection's session is gone (the server went away): a
    /// pool drops it rather than hand it out again.
    pub fn is_broken(&self) -> bool {
        match self {
            Connection::Sqlite(_) => false,
            Connection::Pg(p) => p.session.borrow().is_closed(),
        }
    }

    /// The SQLite connection, for settings only SQLite has.
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Connection::Sqlite(c) => Some(c),
            Connection::Pg(_) => None,
        }
    }

    /// How long a statement waits for another connection's lock (the write
    /// lock) before it fails as busy: SQLite's busy timeout, PostgreSQL's
    /// `lock_timeout`.
    pub fn set_busy_timeout(&self, wait: std::time::Duration) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.busy_timeout(wait)?),
            Connection::Pg(p) => {
                p.busy_ms.set(Some(wait.as_millis()));
                self.execute_batch(&self.dialect().busy_timeout_sql(wait.as_millis()).unwrap_or_default())
            }
        }
    }

    /// Whether no transaction is open.
    pub fn is_autocommit(&self) -> bool {
        match self {
            Connection::Sqlite(c) => c.is_autocommit(),
            Connection::Pg(p) => !p.in_transaction.get(),
        }
    }

    /// Runs statements separated by `;` (no parameters, no results).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Connection::Pg(p) => {
                p.ready()?;
                let session = p.session.borrow();
                let (before, r) = p.with_deferred(&session, session.client().batch_execute(sql));
                if r.is_err() && p.begins(sql) {
                    // A transaction whose opening batch failed (its lock not
                    // had in time): end it, so the connection is usable again.
                    let _ = session.wait(session.client().batch_execute("ROLLBACK"));
                }
                drop(session);
                p.track(sql, r.is_ok());
                before.and(r).map_err(|e| p.failed(e))
            }
        }
    }

    /// Runs a savepoint's statement (`SAVEPOINT`, `RELEASE`) inside a
    /// transaction: on PostgreSQL it is sent with the transaction's next
    /// statement, in one round trip, and a failure of it is that
    /// statement's; elsewhere (SQLite, or outside a transaction) at once.
    pub fn defer(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Pg(p) if p.in_transaction.get() => {
                p.deferred.borrow_mut().push(SentAhead::Batch(sql.to_string()));
                Ok(())
            }
            _ => self.execute_batch(sql),
        }
    }

    /// Runs a query inside a transaction, its rows mapped by `f`: on
    /// PostgreSQL it is sent with the transaction's next statement, in the
    /// same round trip, and a failure of it is that statement's too; on
    /// SQLite, or outside a transaction, at once. Its rows are had from the
    /// answer ([`Ahead::take`]), once that statement has run (or by sending
    /// it then). For a query whose answer is needed only after statements
    /// that do not depend on it.
    pub fn query_ahead<T: Send + 'static>(
        &self,
        sql: &str,
        params: Vec<ValueRef<'static>>,
        f: impl Fn(&Row<'_>) -> Result<T> + Send + 'static,
    ) -> Result<Ahead<Vec<T>>> {
        let slot = std::sync::Arc::new(parking_lot::Mutex::new(None));
        match self {
            Connection::Pg(p) if p.in_transaction.get() => {
                refuse_nul(&params)?;
                let stmt = p.statement(sql)?;
                let args = stmt.taken(&params)?.into_iter().cloned().collect();
                let to = slot.clone();
                let answer = move |rows: Result<Vec<postgres::Row>>| {
                    *to.lock() = Some(rows.and_then(|rows| rows.iter().map(|r| f(&Row::Pg(r))).collect()));
                };
                p.deferred.borrow_mut().push(SentAhead::Query { stmt, args, answer: Box::new(answer) });
            }
            _ => {
                let rows = self.prepare_cached(sql)?.query_map(params_from_iter(params), f)?.collect::<Result<Vec<T>>>()?;
                *slot.lock() = Some(Ok(rows));
            }
        }
        Ok(Ahead(slot))
    }

    /// Sends the statements waiting for the transaction's next one
    /// ([`Connection::defer`], [`Connection::query_ahead`]) now.
    pub fn flush(&self) -> Result<()> {
        match self {
            Connection::Pg(p) if !p.deferred.borrow().is_empty() => {
                p.ready()?;
                let session = p.session.borrow();
                let (before, ()) = p.with_deferred(&session, std::future::ready(()));
                drop(session);
                before.map_err(|e| p.failed(e))
            }
            _ => Ok(()),
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        match self {
            Connection::Sqlite(c) => Ok(Statement::Sqlite(StmtKind::Plain(c.prepare(sql)?))),
            Connection::Pg(p) => Ok(Statement::Pg(p, p.statement(sql)?)),
        }
    }

    /// A statement from the connection's cache (prepared on first use).
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        match self {
            Connection::Sqlite(c) => Ok(Statement::Sqlite(StmtKind::Cached(c.prepare_cached(sql)?))),
            Connection::Pg(p) => Ok(Statement::Pg(p, p.statement(sql)?)),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare(sql)?.execute(params)
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(&self, sql: &str, params: P, f: F) -> Result<T> {
        self.prepare(sql)?.query_row(params, f)
    }

    /// Opens a write transaction and takes the database's write lock now
    /// (waiting at most the connection's busy time): SQLite's `BEGIN
    /// IMMEDIATE`; on PostgreSQL, `BEGIN` and weir's transaction-scoped
    /// advisory lock, which every such writer of every node takes, so writes are
    /// serialised as on SQLite and every read inside sees the state it writes on.
    /// The job queue's claims and successes take row locks instead (see
    /// [`TransactionBehavior::RowLocked`]), so a write-locked read of a job row
    /// that is then acted on must lock that row too.
    pub fn begin_write(&self) -> Result<()> {
        match self {
            Connection::Sqlite(c) => {
                c.prepare_cached(&self.dialect().begin_write_sql())?.execute([])?;
                Ok(())
            }
            Connection::Pg(_) => self.execute_batch(&self.dialect().begin_write_sql()),
        }
    }

    /// Opens a transaction (a write transaction, see [`Connection::begin_write`],
    /// when `Immediate`) that rolls back unless committed.
    pub fn transaction_with_behavior(&self, behavior: TransactionBehavior) -> Result<Transaction<'_>> {
        match behavior {
            TransactionBehavior::Immediate => self.begin_write()?,
            TransactionBehavior::RowLocked if !self.dialect().row_locks() => self.begin_write()?,
            TransactionBehavior::Deferred | TransactionBehavior::RowLocked => self.execute_batch("BEGIN")?,
        }
        Ok(Transaction { conn: self, done: false })
    }

    pub fn transaction(&self) -> Result<Transaction<'_>> {
        self.transaction_with_behavior(TransactionBehavior::Deferred)
    }
}

impl PgConn {
    /// The prepared statement for weir's `sql`, placeholders translated.
    fn statement(&self, sql: &str) -> Result<PgStatement> {
        self.ready()?;
        if let Some(s) = self.statements.borrow_mut().get(sql) {
            return Ok(s.clone());
        }
        let (text, takes) = translate(sql);
        let session = self.session.borrow();
        let prepared = session.wait(session.client().prepare(&text)).map_err(|source| {
            if pg_lost(&source) {
                return self.failed(source);
            }
            DbError::Prepare { sql: sql.split_whitespace().collect::<Vec<_>>().join(" "), source }
        })?;
        let stmt = PgStatement { prepared, takes: takes.into(), control: Self::control(sql) };
        self.statements.borrow_mut().put(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Makes sure the session is there: a session that ended (the server
    /// went away) is replaced by a new one, its statements forgotten, unless
    /// a transaction was open on it (lost with it: the caller hears so).
    fn ready(&self) -> Result<()> {
        // Outside a transaction, what the server said meanwhile is read first
        // (a restart's goodbye), so a session it closed is replaced before
        // the call rather than failing it; inside one, a lost session fails the call.
        let session = self.session.borrow();
        let closed = if self.in_transaction.get() { session.client().is_closed() } else { session.is_closed() };
        drop(session);
        if !closed {
            return Ok(());
        }
        self.deferred.borrow_mut().clear();
        if self.in_transaction.replace(false) {
            return Err(DbError::Unavailable(format!(
                "the session with the PostgreSQL database {} ended inside a transaction: nothing of it was committed; try again",
                self.source.shown()
            )));
        }
        let session = self.source.session()?;
        if let Some(ms) = self.busy_ms.get()
            && let Some(sql) = Dialect::Postgres.busy_timeout_sql(ms)
        {
            session.wait(session.client().batch_execute(&sql)).map_err(DbError::Pg)?;
        }
        self.statements.borrow_mut().clear();
        *self.session.borrow_mut() = session;
        Ok(())
    }

    /// An error of a call: when it means the session is gone, the outage is
    /// noted (logged once) and the caller hears the database is unavailable.
    fn failed(&self, e: postgres::Error) -> DbError {
        if !pg_lost(&e) {
            return DbError::Pg(e);
        }
        let what = pg_message(&e);
        self.source.lost(&what);
        if self.session.borrow().client().is_closed() {
            self.in_transaction.set(false);
            self.deferred.borrow_mut().clear();
        }
        DbError::Unavailable(format!(
            "the session with the PostgreSQL database {} was lost ({what}); nothing of this call was done; weir reconnects by itself: try again",
            self.source.shown()
        ))
    }

    fn first_word(sql: &str) -> String {
        sql.trim_start().split(|c: char| c.is_whitespace() || c == ';').next().unwrap_or("").to_ascii_uppercase()
    }

    fn begins(&self, sql: &str) -> bool {
        matches!(Self::first_word(sql).as_str(), "BEGIN" | "START")
    }

    /// Whether `sql` opens (`Some(true)`) or ends (`Some(false)`) a transaction.
    fn control(sql: &str) -> Option<bool> {
        match Self::first_word(sql).as_str() {
            "BEGIN" | "START" => Some(true),
            "COMMIT" | "END" => Some(false),
            "ROLLBACK" if !sql.to_ascii_uppercase().contains(" TO ") => Some(false),
            _ => None,
        }
    }

    /// Follows the transaction state through statements (a connection left
    /// in a transaction is not pooled again: see `Pool::checkin`). A failed
    /// `BEGIN` opened nothing; a failed `COMMIT` ended the transaction.
    fn track(&self, sql: &str, ok: bool) {
        self.follow(Self::control(sql), ok);
    }

    fn follow(&self, control: Option<bool>, ok: bool) {
        match control {
            Some(true) if ok => self.in_transaction.set(true),
            Some(false) => self.in_transaction.set(false),
            _ => {}
        }
    }

    /// Runs `f` on the client with the statement and, of `values`, the
    /// parameters it takes.
    fn run<T>(
        &self,
        stmt: &PgStatement,
        values: &[ValueRef<'_>],
        f: impl AsyncFnOnce(&postgres::Client, &postgres::Statement, &[&(dyn PgToSql + Sync)]) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let args: Vec<&(dyn PgToSql + Sync)> = stmt.taken(values)?.into_iter().map(|v| v as &(dyn PgToSql + Sync)).collect();
        let session = self.session.borrow();
        let (before, answer) = self.with_deferred(&session, f(session.client(), &stmt.prepared, &args));
        drop(session);
        before.map_err(|e| self.failed(e))?;
        answer.map_err(|e| self.failed(e))
    }

    /// Waits for `call`, the statements sent ahead of it going first in the
    /// same round trip. The first of their failures comes first (the
    /// transaction is aborted by it, so `call` failed too); a query sent
    /// ahead hears its rows, or that it failed.
    fn with_deferred<F: std::future::Future>(&self, session: &super::postgres::Session, call: F) -> (Result<(), postgres::Error>, F::Output) {
        /// What goes ahead: savepoint statements next to each other as one batch.
        enum Planned {
            Batch(String),
            Query(PgStatement, Vec<ValueRef<'static>>),
        }
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        if deferred.is_empty() {
            return (Ok(()), session.wait(call));
        }
        let mut plan = Vec::new();
        let mut answers = Vec::new();
        for item in deferred {
            match item {
                SentAhead::Batch(sql) => match plan.last_mut() {
                    Some(Planned::Batch(batch)) => {
                        batch.push_str("; ");
                        batch.push_str(&sql);
                    }
                    _ => {
                        plan.push(Planned::Batch(sql));
                        answers.push(None);
                    }
                },
                SentAhead::Query { stmt, args, answer } => {
                    plan.push(Planned::Query(stmt, args));
                    answers.push(Some(answer));
                }
            }
        }
        let client = session.client();
        let args: Vec<Vec<&(dyn PgToSql + Sync)>> = plan
            .iter()
            .map(|item| match item {
                Planned::Batch(_) => Vec::new(),
                Planned::Query(_, args) => args.iter().map(|v| v as &(dyn PgToSql + Sync)).collect(),
            })
            .collect();
        let sent: Vec<super::postgres::Call<'_, Result<Option<Vec<postgres::Row>>, postgres::Error>>> = plan
            .iter()
            .zip(&args)
            .map(|(item, args)| -> super::postgres::Call<'_, _> {
                match item {
                    Planned::Batch(batch) => Box::pin(async move { client.batch_execute(batch).await.map(|()| None) }),
                    Planned::Query(stmt, _) => Box::pin(async move { client.query(&stmt.prepared, args).await.map(Some) }),
                }
            })
            .collect();
        let (results, answer) = session.wait_after(sent, call);
        let mut first: Result<(), postgres::Error> = Ok(());
        for (result, to) in results.into_iter().zip(answers) {
            let heard = match result {
                Ok(rows) => Ok(rows.unwrap_or_default()),
                Err(e) => {
                    let what = format!("{} (in a statement sent ahead of another, which failed with it)", pg_message(&e));
                    let told = if pg_lost(&e) {
                        DbError::Unavailable(what)
                    } else if pg_busy(&e) {
                        DbError::Busy(what)
                    } else {
                        DbError::Ahead(what)
                    };
                    if first.is_ok() {
                        first = Err(e);
                    }
                    Err(told)
                }
            };
            if let Some(to) = to {
                to(heard);
            }
        }
        (first, answer)
    }
}

/// weir's SQL as PostgreSQL runs it: `?N` placeholders become `$K`,
/// numbered in order of first use (PostgreSQL must infer a type for every
/// parameter, so one a statement does not use cannot be sent), and SQLite's
/// index hints (`INDEXED BY name`) go (PostgreSQL's planner chooses). Returns
/// the text and, for each `$K`, the index of the parameter it takes. The
/// functions of SQLite's that weir uses exist on PostgreSQL as functions of
/// weir's schema (see `store/pg.rs`).
pub fn translate(sql: &str) -> (String, Vec<usize>) {
    let (mut out, used) = placeholders(sql);
    while let Some(at) = out.find(" INDEXED BY ") {
        let rest = &out[at + " INDEXED BY ".len()..];
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        out.replace_range(at..at + " INDEXED BY ".len() + name_len, "");
    }
    (out, used)
}

/// `?N` and `?` placeholders as `$K` (outside quotes and `--` comments), in
/// order of first use; returns the text and each `$K`'s parameter index.
pub fn placeholders(sql: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut used: Vec<usize> = Vec::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut highest = 0usize;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse::<usize>().unwrap_or(highest + 1);
                highest = highest.max(n);
                let index = n.saturating_sub(1);
                let k = match used.iter().position(|&u| u == index) {
                    Some(k) => k,
                    None => {
                        used.push(index);
                        used.len() - 1
                    }
                };
                out.push('$');
                out.push_str(&(k + 1).to_string());
            }
            c => out.push(c),
        }
    }
    (out, used)
}

/// A prepared PostgreSQL statement and, for each of its `$K`, the index of
/// the parameter (of weir's `?N`) it takes.
#[derive(Clone)]
pub struct PgStatement {
    prepared: postgres::Statement,
    takes: std::sync::Arc<[usize]>,
    /// Whether it opens or ends a transaction (see `PgConn::control`).
    control: Option<bool>,
}

impl PgStatement {
    /// Of `values` (weir's `?N` parameters), those the prepared statement
    /// takes, in its order.
    fn taken<'v, 'a>(&self, values: &'v [ValueRef<'a>]) -> Result<Vec<&'v ValueRef<'a>>> {
        let given = values.len();
        let arg = |i: usize| values.get(i).ok_or_else(|| DbError::Type(i, format!("the statement uses parameter {} but was given {given}", i + 1)));
        self.takes.iter().map(|&i| arg(i)).collect()
    }
}

/// How a transaction takes its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBehavior {
    Deferred,
    /// SQLite takes the write lock at once (PostgreSQL: weir's write lock,
    /// see [`Connection::begin_write`]).
    Immediate,
    /// A write transaction that changes only rows it locks itself, each
    /// change a guarded `UPDATE` (re-checked on PostgreSQL after waiting for
    /// another writer's lock on the row) or a claim that skips locked rows:
    /// the job queue's claims and successes. SQLite takes the write lock at
    /// once, as `Immediate`; PostgreSQL takes no write lock, so several
    /// nodes claim and record outcomes at once.
    RowLocked,
}

/// An open transaction; rolled back when dropped without [`Transaction::commit`].
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// rusqlite's statement, cached or not.
pub enum StmtKind<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Plain(rusqlite::Statement<'c>),
}

impl<'c> std::ops::Deref for StmtKind<'c> {
    type Target = rusqlite::Statement<'c>;
    fn deref(&self) -> &rusqlite::Statement<'c> {
        match self {
            StmtKind::Cached(s) => s,
            StmtKind::Plain(s) => s,
        }
    }
}
impl std::ops::DerefMut for StmtKind<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            StmtKind::Cached(s) => s,
            StmtKind::Plain(s) => s,
        }
    }
}

/// A prepared statement.
pub enum Statement<'c> {
    Sqlite(StmtKind<'c>),
    Pg(&'c PgConn, PgStatement),
}

/// Refuses text parameters holding NUL (see [`DbError::Nul`]).
fn refuse_nul(values: &[ValueRef<'_>]) -> Result<()> {
    match values.iter().position(|v| matches!(v, ValueRef::Text(t) if t.contains('\0'))) {
        Some(i) => Err(DbError::Nul(i + 1)),
        None => Ok(()),
    }
}

impl Statement<'_> {
    /// Runs the statement; returns the number of rows changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values();
        refuse_nul(&values)?;
        match self {
            Statement::Sqlite(s) => Ok(s.execute(rusqlite::params_from_iter(values.iter()))?),
            Statement::Pg(p, stmt) => {
                let n = p.run(stmt, &values, async |c, s, args| c.execute(s, args).await);
                p.follow(stmt.control, n.is_ok());
                Ok(usize::try_from(n?).unwrap_or(usize::MAX))
            }
        }
    }

    /// The first row, mapped by `f` ([`DbError::NoRows`] if there is none).
    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(&mut self, params: P, f: F) -> Result<T> {
        let values = params.values();
        refuse_nul(&values)?;
        match self {
            Statement::Sqlite(s) => {
                let mut rows = s.query(rusqlite::params_from_iter(values.iter()))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(DbError::NoRows),
                }
            }
            Statement::Pg(p, stmt) => {
                let rows = p.run(stmt, &values, async |c, s, args| c.query(s, args).await)?;
                match rows.first() {
                    Some(r) => f(&Row::Pg(r)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    /// Every row, mapped by `f`.
    pub fn query_map<T, P: Params, F: FnMut(&Row<'_>) -> Result<T>>(&mut self, params: P, f: F) -> Result<MappedRows<'_, F>> {
        Ok(MappedRows { rows: self.query(params)?, f })
    }

    /// The rows, read one by one with [`Rows::next`].
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        let values = params.values();
        refuse_nul(&values)?;
        match self {
            Statement::Sqlite(s) => Ok(Rows::Sqlite(s.query(rusqlite::params_from_iter(values.iter()))?)),
            Statement::Pg(p, stmt) => {
                let rows = p.run(stmt, &values, async |c, s, args| c.query(s, args).await)?;
                Ok(Rows::Pg(rows, 0))
            }
        }
    }
}

/// The rows of a query.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Pg(Vec<postgres::Row>, usize),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            Rows::Pg(rows, at) => {
                let row = rows.get(*at);
                *at += 1;
                Ok(row.map(Row::Pg))
            }
        }
    }
}

/// The rows of a query, each mapped by a function.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    f: F,
}

impl<T, F: FnMut(&Row<'_>) -> Result<T>> Iterator for MappedRows<'_, F> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        match self.rows.next() {
            Ok(Some(r)) => Some((self.f)(&r)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{placeholders, translate};

    #[test]
    fn placeholders_become_dollars_outside_quotes_and_comments() {
        let text = |sql: &str| placeholders(sql).0;
        assert_eq!(placeholders("SELECT ?1, ?2 WHERE a = ?1"), ("SELECT $1, $2 WHERE a = $1".into(), vec![0, 1]));
        assert_eq!(text("a = ? AND b = ? AND c = '?'"), "a = $1 AND b = $2 AND c = '?'");
        // Unused parameters are not sent: ?3 and the ? after it are the first two.
        assert_eq!(placeholders("a = ?3 AND b = ?"), ("a = $1 AND b = $2".into(), vec![2, 3]));
        assert_eq!(text("\"we?ird\" = ?1"), "\"we?ird\" = $1");
        assert_eq!(text("a = ?1 -- it's a comment?\n AND b = ?2"), "a = $1 \n AND b = $2");
    }

    #[test]
    fn index_hints_go_on_postgres() {
        assert_eq!(translate("SELECT 1 FROM weir_jobs INDEXED BY weir_jobs_ready WHERE a = ?1").0, "SELECT 1 FROM weir_jobs WHERE a = $1");
        assert_eq!(translate("FROM weir_jobs j INDEXED BY weir_jobs_ready\n WHERE").0, "FROM weir_jobs j\n WHERE");
    }
}
