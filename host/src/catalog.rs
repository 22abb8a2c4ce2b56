//! The catalogue cache: what every operation reads — table definitions, the
//! steps on a table and message, plug-in heads, active users — kept in memory
//! as of one catalogue version. Triggers bump the version on any change to
//! those tables (from any process); each write transaction (a group of
//! operations) calls [`Catalog::sync`] when it begins, which drops the cache
//! when the version moved, so a change is seen by the next group.
//!
//! Reads through [`crate::store`], [`crate::steps`] and [`crate::plugins`];
//! writes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::db::Connection;
use parking_lot::Mutex;

use crate::error::Result;
use crate::plugins::Plugins;
use crate::steps::{self, MessageKind, Step};
use crate::store::{self, records, records::TableDef};

#[derive(Default)]
struct Cached {
    version: i64,
    tables: HashMap<String, TableDef>,
    steps: HashMap<(String, MessageKind), Arc<Vec<Step>>>,
    heads: HashMap<String, i64>,
    active_users: HashSet<String>,
}

/// The cached catalogue of one database.
pub struct Catalog {
    plugins: Arc<Plugins>,
    cache: Mutex<Cached>,
}

impl Catalog {
    pub fn new(plugins: Arc<Plugins>) -> Catalog {
        Catalog { plugins, cache: Mutex::new(Cached::default()) }
    }

    /// Drops what is cached if the catalogue changed since it was read. Call
    /// inside the operation's transaction.
    pub fn sync(&self, conn: &Connection) -> Result<()> {
        let version = store::catalog_version(conn)?;
        let mut c = self.cache.lock();
        if c.version != version {
            *c = Cached { version, ..Cached::default() };
        }
        Ok(())
    }

    /// The definition of `table` (not found: an error naming it).
    pub fn table(&self, conn: &Connection, table: &str) -> Result<TableDef> {
        if let Some(def) = self.cache.lock().tables.get(table) {
            return Ok(def.clone());
        }
        let def = records::require_table(conn, table)?;
        self.cache.lock().tables.insert(table.to_string(), def.clone());
        Ok(def)
    }

    /// The enabled steps on `table` for `message`, in run order.
    pub fn steps(&self, conn: &Connection, table: &str, message: MessageKind) -> Result<Arc<Vec<Step>>> {
        let key = (table.to_string(), message);
        if let Some(steps) = self.cache.lock().steps.get(&key) {
            return Ok(steps.clone());
        }
        let steps = Arc::new(steps::for_operation(conn, table, message)?);
        self.cache.lock().steps.insert(key, steps.clone());
        Ok(steps)
    }

    /// The newest version of `plugin`.
    pub fn plugin_head(&self, conn: &Connection, plugin: &str) -> Result<i64> {
        if let Some(v) = self.cache.lock().heads.get(plugin) {
            return Ok(*v);
        }
        let (version, _) = self.plugins.head(conn, plugin)?;
        self.cache.lock().heads.insert(plugin.to_string(), version);
        Ok(version)
    }

    /// Refuses a user who does not exist or is deactivated.
    pub fn require_active_user(&self, conn: &Connection, user: &str) -> Result<()> {
        if self.cache.lock().active_users.contains(user) {
            return Ok(());
        }
        store::require_active_user(conn, user)?;
        self.cache.lock().active_users.insert(user.to_string());
        Ok(())
    }
}
