//! The plug-in registry: stores component versions (through [`crate::store`]),
//! checks their world with the [`crate::runtime`], and hands out prepared
//! (compiled, linked) versions for the pipeline and the job workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::db::Connection;

use crate::error::{Error, Result};
use crate::runtime::{Prepared, Runtime, World};
use crate::store::{self, PluginRow};

/// The largest component weir accepts.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Plug-in versions, prepared on first use and kept for the process's life.
pub struct Plugins {
    runtime: Arc<Runtime>,
    prepared: Mutex<HashMap<(String, i64), Arc<Prepared>>>,
}

/// Reads a component file for `weir plugin add`, bounded before anything is
/// read: the path must name a regular file (not a device such as /dev/zero, a
/// FIFO that would block the open, or a directory) of at most
/// [`MAX_COMPONENT_BYTES`], and at most one byte past the limit is ever read
/// (the file may grow after the check).
pub fn read_component_file(path: &Path) -> Result<Vec<u8>> {
    crate::files::read_regular(path, MAX_COMPONENT_BYTES as u64, "a component (.wasm)")
}

pub use crate::names::check_name;

impl Plugins {
    pub fn new(runtime: Arc<Runtime>) -> Plugins {
        Plugins { runtime, prepared: Mutex::new(HashMap::new()) }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Validates `wasm` and stores it as the next version of `name`, once
    /// `check` accepts its world (the caller's: steps that follow the
    /// plug-in must be able to run the new version).
    pub fn add(&self, conn: &Connection, name: &str, wasm: &[u8], check: impl FnOnce(World) -> Result<()>) -> Result<PluginRow> {
        check_name("plug-in", name)?;
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(Error::invalid(format!("{name}: the component is {} bytes, over the limit of {MAX_COMPONENT_BYTES}", wasm.len())));
        }
        let (world, contract) = self.runtime.inspect_contract(wasm).map_err(|e| Error::invalid(format!("{name}: {e}")))?;
        check(world)?;
        let digest = Runtime::digest(wasm);
        let version = store::insert_plugin(conn, name, world.as_str(), contract.as_str(), &digest, wasm)?;
        let row = store::list_plugins(conn)?
            .into_iter()
            .find(|p| p.name == name && p.version == version)
            .ok_or_else(|| Error::Internal(format!("plug-in {name} version {version} vanished")))?;
        Ok(row)
    }

    /// The newest version of `name` and its world.
    pub fn head(&self, conn: &Connection, name: &str) -> Result<(i64, World)> {
        let (version, world) = store::plugin_head(conn, name)?
            .ok_or_else(|| Error::not_found(format!("no plug-in named {name}; add it with `weir plugin add {name} FILE.wasm`")))?;
        let world = World::parse(&world).ok_or_else(|| Error::Internal(format!("plug-in {name} has unknown world {world}")))?;
        Ok((version, world))
    }

    /// Makes the version before the current one current again; returns it.
    pub fn rollback(&self, conn: &Connection, name: &str) -> Result<i64> {
        let (current, _) = self.head(conn, name)?;
        let previous = store::list_plugins(conn)?
            .into_iter()
            .filter(|p| p.name == name && p.version < current && !p.rolled_back)
            .map(|p| p.version)
            .max()
            .ok_or_else(|| Error::Conflict(format!("plug-in {name} has no version before {current} to roll back to")))?;
        store::retire_plugin_version(conn, name, current)?;
        Ok(previous)
    }

    /// Removes plug-in `name`, or one version of it, once `in_use` (the
    /// caller's: steps and unfinished jobs that need it) finds nothing
    /// needing it; it is told the current version.
    pub fn remove(&self, conn: &Connection, name: &str, version: Option<i64>, in_use: impl FnOnce(Option<i64>) -> Result<()>) -> Result<usize> {
        let current = self.head(conn, name).ok().map(|(v, _)| v);
        in_use(current)?;
        let n = store::delete_plugin(conn, name, version)?;
        if let Ok(mut cache) = self.prepared.lock() {
            cache.retain(|(n, v), _| !(n == name && version.is_none_or(|x| x == *v)));
        }
        if n == 0 {
            return Err(Error::not_found(match version {
                Some(v) => format!("plug-in {name} has no version {v}"),
                None => format!("no plug-in named {name}"),
            }));
        }
        Ok(n)
    }

    /// Plug-in `name` at `version` if it is already prepared (no database read).
    pub fn cached(&self, name: &str, version: i64) -> Option<Arc<Prepared>> {
        self.prepared.lock().ok()?.get(&(name.to_string(), version)).cloned()
    }

    /// Plug-in `name` at `version`, compiled and linked.
    pub fn prepared(&self, conn: &Connection, name: &str, version: i64) -> Result<Arc<Prepared>> {
        let key = (name.to_string(), version);
        if let Some(p) = self.prepared.lock().map_err(lock)?.get(&key) {
            return Ok(p.clone());
        }
        let (_, _, wasm) = store::load_plugin(conn, name, Some(version))?.ok_or_else(|| Error::not_found(format!("no plug-in {name} version {version}")))?;
        let prepared = self.runtime.prepare(&wasm).map_err(|e| Error::invalid(format!("{name}: {e}")))?;
        self.prepared.lock().map_err(lock)?.insert(key, prepared.clone());
        Ok(prepared)
    }
}

fn lock<T>(_: T) -> Error {
    Error::Internal("plug-in cache lock poisoned".into())
}
