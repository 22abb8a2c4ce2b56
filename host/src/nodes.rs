//! The nodes that run workers: each worker pool says who it is (host,
//! process, version, the queues it serves, its workers) when it starts, and
//! that it is alive on its housekeeping tick; it signs off when it stops.
//! Owns the `weir_nodes` table. It runs nothing: the queues view reads which
//! nodes serve a queue from here.

use crate::db::{Connection, params};
use crate::error::Result;
use crate::jobs::claims::Served;

/// A node not seen for this long is gone: it missed two heartbeats (one
/// every 5 s, on its housekeeping tick) and a margin. It no longer counts as
/// serving a queue; the jobs it held run again when their leases end.
pub const LIVE_MS: i64 = 12_000;
/// A node not seen for this long is forgotten.
const FORGET_MS: i64 = 24 * 3600 * 1000;

/// A node as operators see it (`weir nodes`, `GET /api/nodes`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeView {
    /// The worker pool's id (the lease owner of the jobs it runs).
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The weir version it runs.
    pub version: String,
    /// The queues it serves (null: every queue).
    pub queues: Option<Vec<String>>,
    pub workers: i64,
    /// Jobs it holds the lease of.
    pub busy: i64,
    pub started_at: String,
    pub last_seen: String,
    /// Seen within the last 12 seconds (two heartbeats and a margin); a
    /// node that is not is gone.
    pub live: bool,
    /// The jobs it holds the lease of (at most 100): a gone node's run
    /// again on another node when their leases end.
    pub jobs: Vec<HeldJob>,
}

/// A job a node holds, as the nodes view shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HeldJob {
    pub id: String,
    pub step: Option<String>,
    pub plugin: String,
    /// When its lease ends (another node may take it over then).
    pub lease_until: Option<String>,
}

impl NodeView {
    /// Whether it serves `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.as_ref().is_none_or(|qs| qs.iter().any(|q| q == queue))
    }
}

/// Says node `id` runs `workers` workers serving `served`, from `now`.
pub fn register(conn: &Connection, id: &str, served: &Served, workers: usize, now: i64) -> Result<()> {
    let host = hostname();
    conn.prepare_cached(
        "INSERT INTO weir_nodes (id, host, pid, version, queues, workers, busy, started_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7)
         ON CONFLICT (id) DO UPDATE SET last_seen = ?7",
    )?
    .execute(params![id, host, i64::from(std::process::id()), env!("CARGO_PKG_VERSION"), served.param(), workers as i64, now])?;
    conn.prepare_cached("DELETE FROM weir_nodes WHERE last_seen < ?1")?.execute([now - FORGET_MS])?;
    Ok(())
}

/// Node `id` is alive at `now`, holding `busy` leases.
pub fn beat(conn: &Connection, id: &str, busy: usize, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE weir_nodes SET last_seen = ?2, busy = ?3 WHERE id = ?1")?.execute(params![id, now, busy as i64])?;
    Ok(())
}

/// Node `id` stopped.
pub fn sign_off(conn: &Connection, id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM weir_nodes WHERE id = ?1")?.execute([id])?;
    Ok(())
}

/// Every node seen in the last day, newest first.
pub fn list(conn: &Connection, now: i64) -> Result<Vec<NodeView>> {
    let rows = conn
        .prepare_cached("SELECT id, host, pid, version, queues, workers, busy, started_at, last_seen FROM weir_nodes ORDER BY started_at DESC, id")?
        .query_map([], |r| {
            let queues: Option<String> = r.get(4)?;
            let last_seen: i64 = r.get(8)?;
            Ok(NodeView {
                id: r.get(0)?,
                host: r.get(1)?,
                pid: r.get(2)?,
                version: r.get(3)?,
                queues: queues.and_then(|q| serde_json::from_str(&q).ok()),
                workers: r.get(5)?,
                busy: r.get(6)?,
                started_at: crate::time::to_rfc3339(r.get(7)?),
                last_seen: crate::time::to_rfc3339(last_seen),
                live: now - last_seen <= LIVE_MS,
                jobs: Vec::new(),
            })
        })?
        .collect::<crate::db::Result<Vec<NodeView>>>()?;
    let mut rows = rows;
    for node in &mut rows {
        node.jobs = held_jobs(conn, &node.id)?;
    }
    Ok(rows)
}

/// The jobs node `id` holds the lease of.
fn held_jobs(conn: &Connection, id: &str) -> Result<Vec<HeldJob>> {
    let rows = conn
        .prepare_cached("SELECT id, step, plugin, lease_until FROM weir_jobs WHERE lease_owner = ?1 AND statecode = 2 ORDER BY lease_until LIMIT 100")?
        .query_map([id], |r| {
            Ok(HeldJob { id: r.get(0)?, step: r.get(1)?, plugin: r.get(2)?, lease_until: r.get::<_, Option<i64>>(3)?.map(crate::time::to_rfc3339) })
        })?
        .collect::<crate::db::Result<_>>()?;
    Ok(rows)
}

/// The nodes seen in the last [`LIVE_MS`].
pub fn live(conn: &Connection, now: i64) -> Result<Vec<NodeView>> {
    Ok(list(conn, now)?.into_iter().filter(|n| n.live).collect())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
