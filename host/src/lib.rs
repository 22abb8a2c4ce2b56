//! weir: a WebAssembly plug-in host with a record store, an event pipeline and a
//! durable job queue.
//!
//! Modules, one concern each:
//! * [`runtime`]: owns wasmtime — compiling, caching, sandboxing and calling plug-ins.
//! * [`store`]: owns the SQLite database — connection, migrations, the catalog of
//!   tables, records and plug-in binaries. The only module that writes SQL for them.
//! * [`plugins`]: the plug-in registry — versions, worlds, loading into the runtime.
//! * [`examples`]: the example plug-ins built from `guest-examples/`.
//! * [`cli`]: the `weir` command line.

pub mod cli;
pub mod error;
pub mod examples;
pub mod plugins;
pub mod runtime;
pub mod store;
pub mod time;

pub use error::Error;
pub mod demo;

use std::path::Path;
use std::sync::Arc;

use error::Result;
use plugins::Plugins;
use runtime::{Runtime, RuntimeConfig};
use store::{Db, PluginRow};

/// A weir instance: the database, the runtime and the registry, wired together.
pub struct Weir {
    db: Db,
    plugins: Arc<Plugins>,
}

impl Weir {
    /// Opens the database at `path` (creating it), with compiled components cached
    /// in `<path>.cache/`.
    pub fn open(path: impl AsRef<Path>) -> Result<Weir> {
        let path = path.as_ref();
        let db = Db::open(path)?;
        let mut cache = path.as_os_str().to_owned();
        cache.push(".cache");
        let config = RuntimeConfig { cache_dir: Some(cache.into()), ..RuntimeConfig::default() };
        let runtime = Runtime::new(config).map_err(|e| Error::Internal(format!("cannot start the wasm runtime: {e:#}")))?;
        Ok(Weir { db, plugins: Arc::new(Plugins::new(Arc::new(runtime))) })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    /// Validates and stores a component as the next version of plug-in `name`.
    pub fn add_plugin(&self, name: &str, wasm: &[u8]) -> Result<PluginRow> {
        let conn = self.db.connect()?;
        self.plugins.add(&conn, name, wasm)
    }

    pub fn list_plugins(&self) -> Result<Vec<PluginRow>> {
        store::list_plugins(&self.db.connect()?)
    }
}
