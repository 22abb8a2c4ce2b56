//! The library's error type. Every message says what failed and, where it helps,
//! what to do; the CLI prints it as is and the HTTP API returns it as JSON.

use crate::runtime::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the caller (unknown table or column, wrong type, bad JSON,
    /// bad expression...). Nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A plug-in rejected or failed the operation; it was rolled back.
    /// The message is `<plugin>: <message>`.
    #[error("{plugin}: {message}")]
    Plugin { plugin: String, step: String, code: String, message: String, trace: Vec<crate::runtime::TraceLine> },
    /// The operation chain went deeper than the limit; rolled back.
    #[error("{0}")]
    DepthLimit(String),
    /// A component could not be loaded.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The caller may not do this (a deactivated user, a role or privilege
    /// they lack); HTTP 403.
    #[error("{0}")]
    Forbidden(String),
    /// The credential is missing, unknown, revoked or expired; HTTP 401.
    #[error("{0}")]
    Unauthorized(String),
    /// An illegal state change (e.g. resuming a job that is not paused).
    #[error("{0}")]
    Conflict(String),
    /// Another operation held the database's write lock for longer than this
    /// one could wait (one operation budget plus a margin). Nothing was
    /// written; the caller may try again (HTTP 503 with `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// The database server cannot be reached (restarting, failing over, down)
    /// or the session was lost: nothing was done; weir reconnects by itself
    /// (HTTP 503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(crate::db::DbError),
    /// Anything else the host could not do.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::db::DbError> for Error {
    /// A busy or locked database becomes [`Error::Busy`], a typed answer the
    /// caller can act on, instead of a raw database error.
    fn from(e: crate::db::DbError) -> Error {
        use crate::db::DbError;
        match e {
            DbError::Busy(m) => return Error::Busy(m),
            DbError::Open(m) => return Error::Internal(m),
            DbError::Unavailable(m) => return Error::Unavailable(m),
            e @ DbError::Nul(_) => return Error::Invalid(e.to_string()),
            e if e.is_unavailable() => {
                return Error::Unavailable(format!("the database cannot be reached ({e}); nothing was done; weir reconnects by itself: try again"));
            }
            _ => {}
        }
        if e.is_busy() {
            return Error::Busy(format!(
                "the database is busy: another operation held the write lock for longer than this one may wait \
                 (one operation budget plus a margin); nothing was written, try again ({e})"
            ));
        }
        Error::Db(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        crate::db::DbError::from(e).into()
    }
}

/// A library error as the `records` interface reports it to a guest.
pub fn to_record_error(e: Error) -> crate::runtime::wit::RecordError {
    use crate::runtime::wit::RecordError;
    match e {
        Error::NotFound(m) => RecordError::NotFound(m),
        Error::Invalid(m) | Error::Conflict(m) => RecordError::Invalid(m),
        e => RecordError::Failed(e.to_string()),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Error {
        Error::NotFound(msg.into())
    }
}
