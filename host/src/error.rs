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
    /// An illegal state change (e.g. resuming a job that is not paused).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Anything else the host could not do.
    #[error("{0}")]
    Internal(String),
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
