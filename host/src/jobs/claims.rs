//! Who runs next: queues, priorities, fair share between owners, concurrency
//! limits, rates, and the failure breaker's probes. Owns the `weir_limits`
//! table (limits and token buckets) and decides which Ready jobs a claim
//! takes ([`survey`], then [`plan`]); [`super::state::claim_lanes`] and
//! [`super::state::claim_ids`] make the change of state, and the breaker's
//! counting lives in [`super::breaker`].
//!
//! The rules, as operators can rely on them:
//!
//! * **Queues.** Every job runs in a queue (`default` unless its step or its
//!   submission names one); a node claims only from the queues it serves.
//! * **Priority and ageing.** A job has a priority 0–9 (9 first; `low` 0,
//!   `normal` 5, `high` 9). Within a lane, claims take jobs by their *rank*:
//!   the time they fell due less one minute per priority level
//!   ([`AGE_PER_LEVEL_MS`]). So a job runs before any job of lower priority
//!   that fell due less than a minute per level before it, and a job of low
//!   priority is delayed, never starved: once it has waited a minute per
//!   level of difference, it goes before newer work of higher priority.
//! * **Fair share, round-robin.** The jobs of one owner in one queue are an
//!   owner's share. A claim gives each share an equal part of its batch
//!   (one slot to each in turn; within a share, to its steps' lanes in
//!   turn), a share with fewer due jobs leaving its part to the others, and
//!   the batch runs one job of each share per round, each round in rank
//!   order. So an owner's backlog of any size delays another owner's job by
//!   at most one claim batch. Shares have equal weight.
//! * **Concurrency limits** (`--max-running` of a step or a queue) count the
//!   jobs Locked (claimed or running) on every node. On PostgreSQL a claim
//!   counts them under a row lock of the limit's row, so two nodes cannot
//!   both take the last slot; on SQLite claims take the file's write lock.
//! * **Rates** (`--rate` of a step) are token buckets of one second's burst
//!   (at least one job), kept in the limit's row and shared by every node.
//! * **The breaker's probe.** A step the breaker holds runs nothing until
//!   the hold ends; then one job runs as its probe: the due job most likely
//!   to succeed, a retry before a first attempt, the earliest due first.
//!
//! It writes no job's state columns and knows nothing of workers or wasm.

use std::collections::HashMap;

use crate::db::{Connection, OptionalExtension, params};
use crate::error::{Error, Result};

/// The queue of a job whose step or submission names none.
pub const DEFAULT_QUEUE: &str = "default";
/// The priority of a job whose step or submission names none.
pub const DEFAULT_PRIORITY: i64 = 5;
/// The highest priority (the lowest is 0).
pub const MAX_PRIORITY: i64 = 9;
/// How much earlier a job counts as due per level of priority.
pub const AGE_PER_LEVEL_MS: i64 = 60_000;
/// A job's rank: claims take the lowest first. The lanes index is on it:
/// the text must stay the one in migration 14.
pub(crate) const RANK_SQL: &str = "(COALESCE(postpone_until, created_at) - priority * 60000)";
/// Most lanes one claim looks at (beyond that, claims rotate through them).
const MAX_LANES: usize = 256;

/// Reads a priority: 0–9, or `low`, `normal`, `high`.
pub fn parse_priority(s: &str) -> Result<i64> {
    let p = match s.trim().to_ascii_lowercase().as_str() {
        "low" => 0,
        "normal" => DEFAULT_PRIORITY,
        "high" => MAX_PRIORITY,
        n => n.parse::<i64>().map_err(|_| Error::invalid(format!("bad priority {s:?}: write 0 to 9 (9 runs first), low, normal or high")))?,
    };
    check_priority(p)
}

/// Refuses a priority outside 0–9.
pub fn check_priority(p: i64) -> Result<i64> {
    if (0..=MAX_PRIORITY).contains(&p) { Ok(p) } else { Err(Error::invalid(format!("bad priority {p}: a priority is 0 to 9 (9 runs first)"))) }
}

/// Refuses a queue name that is not a name.
pub fn check_queue(q: &str) -> Result<()> {
    crate::names::check_name("queue", q)
}

/// A rate: jobs per second, in thousandths (`20/s` is 20,000; `30/m` 500).
pub fn parse_rate(s: &str) -> Result<i64> {
    let bad = || Error::invalid(format!("bad rate {s:?}: write N/s, N/m or N/h (e.g. 20/s), N > 0"));
    let (n, per) = s.trim().split_once('/').unwrap_or((s.trim(), "s"));
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let secs = match per.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    let milli = (n * 1000.0 / secs).round();
    if !n.is_finite() || n <= 0.0 || !(1.0..=1e12).contains(&milli) {
        return Err(bad());
    }
    Ok(milli as i64)
}

/// A rate as people write it.
pub fn rate_text(milli: i64) -> String {
    if milli % 1000 == 0 {
        format!("{}/s", milli / 1000)
    } else if (milli * 60) % 1000 == 0 {
        format!("{}/m", milli * 60 / 1000)
    } else {
        format!("{}/h", (milli as f64 * 3.6).round() as i64)
    }
}

/// A job's lane: the JSON array `[queue, owner, step]` (step null for a
/// background operation). Claims rotate among owners' lanes.
pub fn lane(queue: &str, owner: &str, step: Option<&str>) -> String {
    serde_json::json!([queue, owner, step]).to_string()
}

/// The queues a node serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served(Option<Vec<String>>);

impl Served {
    /// Every queue.
    pub fn all() -> Served {
        Served(None)
    }

    /// Only these (a list of names, checked).
    pub fn only(queues: Vec<String>) -> Result<Served> {
        if queues.is_empty() {
            return Err(Error::invalid("--queues needs at least one queue name"));
        }
        for q in &queues {
            check_queue(q)?;
        }
        Ok(Served(Some(queues)))
    }

    /// Reads `a,b,c` (an empty text: every queue).
    pub fn parse(s: &str) -> Result<Served> {
        let names: Vec<String> = s.split(',').map(str::trim).filter(|q| !q.is_empty()).map(String::from).collect();
        if names.is_empty() { Ok(Served::all()) } else { Served::only(names) }
    }

    pub fn serves(&self, queue: &str) -> bool {
        self.0.as_ref().is_none_or(|qs| qs.iter().any(|q| q == queue))
    }

    /// The names, or None for every queue.
    pub fn names(&self) -> Option<&[String]> {
        self.0.as_deref()
    }

    /// As one SQL parameter: a JSON array of names, or NULL for every queue.
    pub(crate) fn param(&self) -> Option<String> {
        self.0.as_ref().map(|qs| serde_json::json!(qs).to_string())
    }

    /// The SQL condition "queue `column` is served", the list in parameter
    /// `param` ([`Served::push_param`] passes it); for every queue, no
    /// condition and no parameter (so the statement is the one a node
    /// serving every queue always ran, and plans as well).
    pub(crate) fn sql(&self, conn: &Connection, column: &str, param: &str) -> String {
        match &self.0 {
            None => "1 = 1".into(),
            Some(_) => conn.dialect().in_text_list(column, param),
        }
    }

    /// Adds the parameter of [`Served::sql`], if it has one.
    pub(crate) fn push_param<'a>(&self, list: &'a mut Option<String>, args: &mut Vec<crate::db::ValueRef<'a>>) {
        *list = self.param();
        if let Some(l) = list.as_deref() {
            args.push(l.into());
        }
    }
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("every queue"),
            Some(qs) => f.write_str(&qs.join(",")),
        }
    }
}

// ------------------------------------------------------------ limits

/// Which thing a limit is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Step,
    Queue,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Step => "step",
            Scope::Queue => "queue",
        }
    }
}

/// A step's or a queue's limits, as set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_running: Option<i64>,
    /// Jobs per second, in thousandths.
    pub rate_milli: Option<i64>,
}

/// Sets (or, with no limit, removes) the limits of a step or a queue, in the
/// caller's transaction. A rate's bucket starts full.
pub fn set_limits(conn: &Connection, scope: Scope, name: &str, limits: Limits, now: i64) -> Result<()> {
    if limits == Limits::default() {
        conn.prepare_cached("DELETE FROM weir_limits WHERE scope = ?1 AND name = ?2")?.execute(params![scope.as_str(), name])?;
        return Ok(());
    }
    let burst = limits.rate_milli.map_or(0, burst);
    conn.prepare_cached(
        "INSERT INTO weir_limits (scope, name, max_running, rate_milli, tokens_milli, refilled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope, name) DO UPDATE SET max_running = ?3, rate_milli = ?4,
             tokens_milli = CASE WHEN weir_limits.rate_milli IS NULL THEN ?5 ELSE weir_limits.tokens_milli END,
             refilled_at = CASE WHEN weir_limits.rate_milli IS NULL THEN ?6 ELSE weir_limits.refilled_at END",
    )?
    .execute(params![scope.as_str(), name, limits.max_running, limits.rate_milli, burst, now])?;
    Ok(())
}

/// The limits of a queue (none set: no limits).
pub fn queue_limits(conn: &Connection, queue: &str) -> Result<Limits> {
    Ok(conn
        .prepare_cached("SELECT max_running, rate_milli FROM weir_limits WHERE scope = 'queue' AND name = ?1")?
        .query_row([queue], |r| Ok(Limits { max_running: r.get(0)?, rate_milli: r.get(1)? }))
        .optional()?
        .unwrap_or_default())
}

/// A bucket holds one second of its rate, and at least one job.
fn burst(rate_milli: i64) -> i64 {
    rate_milli.max(1000)
}

/// A limit's row as a claim reads it.
#[derive(Debug, Clone)]
struct LimitRow {
    max_running: Option<i64>,
    rate_milli: Option<i64>,
    tokens_milli: i64,
    refilled_at: i64,
}

impl LimitRow {
    /// Tokens at `now`, refilled since the last take (capped at the burst).
    fn tokens_at(&self, now: i64) -> i64 {
        match self.rate_milli {
            None => i64::MAX,
            Some(rate) => {
                let gained = (now - self.refilled_at).max(0).saturating_mul(rate) / 1000;
                self.tokens_milli.saturating_add(gained).min(burst(rate))
            }
        }
    }
}

/// Every limit, held step and running count a claim (or a view) needs.
#[derive(Debug, Default)]
pub(crate) struct Throttles {
    limits: HashMap<(Scope, String), LimitRow>,
    /// Held steps: hold end, probe job, consecutive failures.
    held: HashMap<String, (i64, Option<String>, i64)>,
    running_steps: HashMap<String, i64>,
    running_queues: HashMap<String, i64>,
}

fn read_limits(conn: &Connection, sql: &str) -> Result<HashMap<(Scope, String), LimitRow>> {
    Ok(conn.prepare_cached(sql)?.query_map([], limit_row)?.collect::<crate::db::Result<_>>()?)
}

const LIMIT_COLUMNS: &str = "SELECT scope, name, max_running, rate_milli, tokens_milli, refilled_at FROM weir_limits";

impl Throttles {
    /// Reads every limit and hold; running counts only where a limit needs them.
    pub(crate) fn load(conn: &Connection) -> Result<Throttles> {
        let limits = read_limits(conn, &format!("{LIMIT_COLUMNS} ORDER BY scope, name"))?;
        let held = conn
            .prepare_cached("SELECT step, hold_until, probe_job, consecutive_failures FROM weir_step_health WHERE hold_until IS NOT NULL")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?
            .collect::<crate::db::Result<_>>()?;
        let mut t = Throttles { limits, held, ..Default::default() };
        if t.limits.values().any(|l| l.max_running.is_some()) {
            t.count_running(conn)?;
        }
        Ok(t)
    }

    fn count_running(&mut self, conn: &Connection) -> Result<()> {
        self.running_steps.clear();
        self.running_queues.clear();
        let rows: Vec<(String, Option<String>, i64)> = conn
            .prepare_cached("SELECT queue, step, COUNT(*) FROM weir_jobs WHERE statecode = 2 GROUP BY queue, step")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<crate::db::Result<_>>()?;
        for (queue, step, n) in rows {
            *self.running_queues.entry(queue).or_default() += n;
            if let Some(step) = step {
                *self.running_steps.entry(step).or_default() += n;
            }
        }
        Ok(())
    }

    /// Why a Ready job of `step` in `queue` does not run now (None: nothing
    /// of weir's holds it; it runs when a worker is free).
    pub(crate) fn reason(&self, queue: &str, step: Option<&str>, now: i64) -> Option<String> {
        if let Some(step) = step {
            if let Some((until, _, failures)) = self.held.get(step) {
                let when = if *until > now { format!("until {}", crate::time::to_rfc3339(*until)) } else { "until its probe succeeds".into() };
                return Some(format!("held by the failure breaker of step {step} ({failures} failures in a row) {when}; `weir step release {step}` ends it"));
            }
            if let Some(l) = self.limits.get(&(Scope::Step, step.to_string())) {
                if let Some(max) = l.max_running {
                    let running = self.running_steps.get(step).copied().unwrap_or(0);
                    if running >= max {
                        return Some(format!("waiting for a slot of step {step}: {running} of {max} running"));
                    }
                }
                if let Some(rate) = l.rate_milli
                    && l.tokens_at(now) < 1000
                {
                    return Some(format!("waiting for step {step}'s rate limit ({})", rate_text(rate)));
                }
            }
        }
        if let Some(max) = self.limits.get(&(Scope::Queue, queue.to_string())).and_then(|l| l.max_running) {
            let running = self.running_queues.get(queue).copied().unwrap_or(0);
            if running >= max {
                return Some(format!("waiting for a slot of queue {queue}: {running} of {max} running"));
            }
        }
        None
    }

    /// The kind of wait [`Throttles::reason`] explains, for a badge: held
    /// by its step's breaker, a full slot of its step or queue, or its
    /// step's rate (None: nothing of weir's holds it).
    pub(crate) fn waiting(&self, queue: &str, step: Option<&str>, now: i64) -> Option<super::Waiting> {
        use super::Waiting;
        let full = |scope: Scope, name: &str, running: &HashMap<String, i64>| {
            self.limits.get(&(scope, name.to_string())).and_then(|l| l.max_running).is_some_and(|max| running.get(name).copied().unwrap_or(0) >= max)
        };
        if let Some(step) = step {
            if self.held.contains_key(step) {
                return Some(Waiting::Held);
            }
            if full(Scope::Step, step, &self.running_steps) {
                return Some(Waiting::WaitingForSlot);
            }
            if self.limits.get(&(Scope::Step, step.to_string())).is_some_and(|l| l.rate_milli.is_some() && l.tokens_at(now) < 1000) {
                return Some(Waiting::RateLimited);
            }
        }
        full(Scope::Queue, queue, &self.running_queues).then_some(Waiting::WaitingForSlot)
    }

    /// How many more jobs of `scope` `name` may start now (None: no limit).
    fn room(&self, scope: Scope, name: &str, now: i64) -> Option<i64> {
        let l = self.limits.get(&(scope, name.to_string()))?;
        let running = match scope {
            Scope::Step => self.running_steps.get(name),
            Scope::Queue => self.running_queues.get(name),
        }
        .copied()
        .unwrap_or(0);
        let slots = l.max_running.map_or(i64::MAX, |m| (m - running).max(0));
        let tokens = l.tokens_at(now) / 1000;
        Some(slots.min(tokens))
    }
}

// ------------------------------------------------------------ claiming

/// A lane parsed: queue, owner, step.
#[derive(Debug, Clone)]
struct Lane {
    text: String,
    queue: String,
    owner: String,
    step: Option<String>,
}

fn parse_lane(text: String) -> Option<Lane> {
    let (queue, owner, step): (String, String, Option<String>) = serde_json::from_str(&text).ok()?;
    Some(Lane { text, queue, owner, step })
}

/// Every lane that has a Ready job (one index seek each).
fn lanes(conn: &Connection) -> Result<Vec<Lane>> {
    let sql = "WITH RECURSIVE lanes(lane) AS (
                   SELECT MIN(lane) FROM weir_jobs WHERE statecode = 0
                   UNION ALL
                   SELECT (SELECT MIN(j.lane) FROM weir_jobs j WHERE j.statecode = 0 AND j.lane > l.lane) FROM lanes l WHERE l.lane IS NOT NULL
               )
               SELECT lane FROM lanes WHERE lane IS NOT NULL";
    let texts: Vec<String> = conn.prepare_cached(sql)?.query_map([], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    Ok(texts.into_iter().filter_map(parse_lane).collect())
}

/// Rotates which share a claim serves first (and which lanes it looks at
/// when there are more than it reads), so leftovers even out over claims.
static ROTATION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a claim decided: the probes to take (step, job), and how many due
/// jobs to take of each lane, best ranked first.
pub(crate) struct Plan {
    pub probes: Vec<(String, String)>,
    /// Lane (index into `lanes`) and how many of its jobs to take.
    pub quotas: Vec<(usize, i64)>,
    lanes: Vec<Lane>,
    room: Room,
    turn: usize,
    throttles: Throttles,
}

/// The room a claim has per limited step and queue.
struct Room(HashMap<(Scope, String), i64>);

impl Room {
    fn keys(l: &Lane) -> impl Iterator<Item = (Scope, String)> + '_ {
        [(Scope::Queue, l.queue.clone())].into_iter().chain(l.step.clone().map(|s| (Scope::Step, s)))
    }

    fn fits(&self, l: &Lane) -> bool {
        Self::keys(l).all(|k| self.0.get(&k).is_none_or(|&r| r > 0))
    }

    fn take(&mut self, l: &Lane) {
        for k in Self::keys(l) {
            if let Some(r) = self.0.get_mut(&k) {
                *r -= 1;
            }
        }
    }
}

/// What a claim reads before it takes the store's write lock (SQLite) or
/// any lock (PostgreSQL): the limits and holds, and the lanes with Ready jobs
/// of the queues the node serves. A lane or a hold that appears meanwhile
/// counts from the next claim; limits are read again under the lock.
pub(crate) struct Survey {
    throttles: Throttles,
    lanes: Vec<Lane>,
}

/// Reads a [`Survey`] for a node serving `served`.
pub(crate) fn survey(conn: &Connection, served: &Served) -> Result<Survey> {
    Ok(Survey { throttles: Throttles::load(conn)?, lanes: lanes(conn)?.into_iter().filter(|l| served.serves(&l.queue)).collect() })
}

/// Decides what a claim of `limit` jobs takes at `now` for a node serving
/// `served` (see the module's rules), from what `survey` read: probes of
/// held steps whose hold has passed, then each owner's share of the rest,
/// split among the share's lanes, within the room limits and rates leave.
/// Runs in the claim's transaction: the limits it counts against are read
/// again there (on PostgreSQL locked until the claim ends; a limit another
/// node is claiming against is left out this time).
pub(crate) fn plan(tx: &Connection, survey: Survey, served: &Served, now: i64, limit: usize) -> Result<Plan> {
    let d = tx.dialect();
    let Survey { mut throttles, mut lanes } = survey;
    let wanted: Vec<(Scope, String)> = {
        let mut w: Vec<(Scope, String)> = Vec::new();
        for k in lanes.iter().flat_map(Room::keys) {
            if throttles.limits.contains_key(&k) && !w.contains(&k) {
                w.push(k);
            }
        }
        w
    };
    let mut blocked: Vec<(Scope, String)> = Vec::new();
    if !wanted.is_empty() && !d.row_locks() {
        // Under the file's write lock: exact as read now.
        throttles.limits = read_limits(tx, &format!("{LIMIT_COLUMNS} ORDER BY scope, name"))?;
        throttles.count_running(tx)?;
    } else if !wanted.is_empty() {
        // Locked and read again: another node's claim against them has
        // committed (its jobs count), or it is claiming now and they wait.
        let keys: Vec<String> = wanted.iter().map(|(s, n)| format!("{}:{n}", s.as_str())).collect();
        let sql = d.skip_locked(&format!("{LIMIT_COLUMNS} WHERE {} ORDER BY scope, name", d.in_text_list("(scope || ':' || name)", "?1"))).into_owned();
        let fresh = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map([serde_json::json!(keys).to_string()], limit_row)?;
            rows.collect::<crate::db::Result<HashMap<_, _>>>()?
        };
        for key in &wanted {
            match fresh.get(key) {
                Some(row) => {
                    throttles.limits.insert(key.clone(), row.clone());
                }
                None => blocked.push(key.clone()),
            }
        }
        if throttles.limits.values().any(|l| l.max_running.is_some()) {
            throttles.count_running(tx)?;
        }
    }
    let mut room = Room(wanted.iter().map(|k| (k.clone(), if blocked.contains(k) { 0 } else { throttles.room(k.0, &k.1, now).unwrap_or(i64::MAX) })).collect());
    let mut probes: Vec<(String, String)> = Vec::new();
    let due_probes: Vec<String> = throttles.held.iter().filter(|(_, (until, _, _))| *until <= now).map(|(step, _)| step.clone()).collect();
    for step in due_probes {
        if probes.len() >= limit {
            break;
        }
        let Some(lane) = lanes.iter().find(|l| l.step.as_deref() == Some(step.as_str()) && room.fits(l)).cloned() else { continue };
        if let Some(id) = super::breaker::pick_probe(tx, &step, served, now)? {
            room.take(&lane);
            probes.push((step, id));
        }
    }
    lanes.retain(|l| l.step.as_ref().is_none_or(|s| !throttles.held.contains_key(s)) && room.fits(l));
    let turn = ROTATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if lanes.len() > MAX_LANES {
        let n = lanes.len();
        lanes.rotate_left(turn % n);
        lanes.truncate(MAX_LANES);
    }
    let mut plan = Plan { probes, quotas: Vec::new(), lanes, room, turn, throttles };
    let all: Vec<usize> = (0..plan.lanes.len()).collect();
    plan.quotas = plan.distribute(&all, limit.saturating_sub(plan.probes.len()));
    Ok(plan)
}

fn limit_row(r: &crate::db::Row<'_>) -> crate::db::Result<((Scope, String), LimitRow)> {
    let scope = if r.get::<_, String>(0)? == "queue" { Scope::Queue } else { Scope::Step };
    Ok(((scope, r.get(1)?), LimitRow { max_running: r.get(2)?, rate_milli: r.get(3)?, tokens_milli: r.get(4)?, refilled_at: r.get(5)? }))
}

/// Items in claim order: one of each share per round, each round in rank
/// order; within a share, by rank. `share_of` names an item's share.
fn round_robin<T, K: Eq + std::hash::Hash>(items: Vec<(T, K, i64)>) -> Vec<T> {
    let mut by_share: HashMap<K, Vec<(T, i64)>> = HashMap::new();
    for (item, key, rank) in items {
        by_share.entry(key).or_default().push((item, rank));
    }
    let mut queues: Vec<std::collections::VecDeque<(T, i64)>> = by_share
        .into_values()
        .map(|mut v| {
            v.sort_by_key(|(_, rank)| *rank);
            v.into()
        })
        .collect();
    let mut out = Vec::new();
    loop {
        let mut round: Vec<(T, i64)> = queues.iter_mut().filter_map(|q| q.pop_front()).collect();
        if round.is_empty() {
            return out;
        }
        round.sort_by_key(|(_, rank)| *rank);
        out.extend(round.into_iter().map(|(item, _)| item));
    }
}

impl Plan {
    /// The lanes' texts and quotas, as [`super::state::claim_lanes`] takes them.
    pub(crate) fn quotas(&self) -> Vec<(&str, i64)> {
        self.quotas.iter().map(|&(i, q)| (self.lanes[i].text.as_str(), q)).collect()
    }

    /// Gives `left` slots among lanes `among`: one at a time to each share
    /// (queue, owner) in turn, within a share to its lanes in turn, while
    /// the limits leave room.
    fn distribute(&mut self, among: &[usize], mut left: usize) -> Vec<(usize, i64)> {
        let mut shares: Vec<((&str, &str), Vec<usize>)> = Vec::new();
        for &i in among {
            let key = (self.lanes[i].queue.as_str(), self.lanes[i].owner.as_str());
            match shares.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(i),
                None => shares.push((key, vec![i])),
            }
        }
        if !shares.is_empty() {
            let n = shares.len();
            shares.rotate_left(self.turn % n);
        }
        let mut quota: HashMap<usize, i64> = HashMap::new();
        let mut cursor = vec![0usize; shares.len()];
        while left > 0 {
            let mut gave = false;
            for (s, (_, idx)) in shares.iter().enumerate() {
                if left == 0 {
                    break;
                }
                for k in 0..idx.len() {
                    let i = idx[(cursor[s] + k) % idx.len()];
                    if self.room.fits(&self.lanes[i]) {
                        self.room.take(&self.lanes[i]);
                        *quota.entry(i).or_default() += 1;
                        cursor[s] = (cursor[s] + k + 1) % idx.len();
                        left -= 1;
                        gave = true;
                        break;
                    }
                }
            }
            if !gave {
                break;
            }
        }
        let mut quotas: Vec<(usize, i64)> = quota.into_iter().collect();
        quotas.sort_unstable();
        quotas
    }

    /// After a round of claims that took `got` jobs of each lane (by text):
    /// the room of the lanes that gave less than their quota goes back, and
    /// `left` more slots go to the lanes that gave all theirs (they may have
    /// more). The next round's quotas; none when no lane can give more.
    pub(crate) fn refill(&mut self, got: &HashMap<String, i64>, left: usize) -> Vec<(usize, i64)> {
        let mut full = Vec::new();
        for &(i, q) in &self.quotas.clone() {
            let n = got.get(&self.lanes[i].text).copied().unwrap_or(0);
            if n >= q {
                full.push(i);
            } else {
                for k in Room::keys(&self.lanes[i]) {
                    if let Some(r) = self.room.0.get_mut(&k) {
                        *r += q - n;
                    }
                }
            }
        }
        self.quotas = if left == 0 || full.is_empty() { Vec::new() } else { self.distribute(&full, left) };
        self.quotas.clone()
    }

    /// The jobs claimed of the lanes (with lane and rank) in the order to run
    /// them (see [`round_robin`]).
    pub(crate) fn order<T>(&self, rows: Vec<(T, String, i64)>) -> Vec<T> {
        let shares: HashMap<&str, (&str, &str)> = self.lanes.iter().map(|l| (l.text.as_str(), (l.queue.as_str(), l.owner.as_str()))).collect();
        round_robin(rows.into_iter().map(|(item, lane, rank)| (item, shares.get(lane.as_str()).copied().unwrap_or(("", "")), rank)).collect())
    }

    /// After the claim: marks the probes claimed, and takes the tokens of
    /// the rated steps of the jobs claimed (`steps`, one per job).
    pub(crate) fn settle(&self, tx: &Connection, claimed: &[&str], steps: &[Option<&str>], now: i64) -> Result<()> {
        for (step, id) in &self.probes {
            if claimed.contains(&id.as_str()) {
                super::breaker::probing(tx, step, id)?;
            }
        }
        let mut taken: HashMap<&str, i64> = HashMap::new();
        for step in steps.iter().flatten() {
            if self.throttles.limits.get(&(Scope::Step, step.to_string())).is_some_and(|l| l.rate_milli.is_some()) {
                *taken.entry(step).or_default() += 1;
            }
        }
        for (step, n) in taken {
            let Some(l) = self.throttles.limits.get(&(Scope::Step, step.to_string())) else { continue };
            let left = l.tokens_at(now) - n * 1000;
            tx.prepare_cached("UPDATE weir_limits SET tokens_milli = ?3, refilled_at = ?4 WHERE scope = ?1 AND name = ?2")?.execute(params![
                "step",
                step,
                left.max(0),
                now
            ])?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ views

/// One queue as operators see it (`weir queue list`, `GET /api/queues`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueView {
    pub name: String,
    /// Ready jobs (due or not).
    pub ready: i64,
    /// Ready jobs due now.
    pub due: i64,
    /// Locked jobs (claimed or running) on every node.
    pub running: i64,
    /// Suspended jobs (waiting or paused).
    pub suspended: i64,
    /// Its concurrency limit over every node (null: none).
    pub max_running: Option<i64>,
    /// When its oldest due Ready job fell due.
    pub oldest_due: Option<String>,
    /// The live nodes that serve it (by id).
    pub nodes: Vec<String>,
}

/// Every queue that has unfinished jobs, a limit, or a step, by name.
pub fn queues(conn: &Connection, now: i64) -> Result<Vec<QueueView>> {
    let mut views: std::collections::BTreeMap<String, QueueView> = Default::default();
    let blank =
        |name: &str| QueueView { name: name.to_string(), ready: 0, due: 0, running: 0, suspended: 0, max_running: None, oldest_due: None, nodes: vec![] };
    let rows: Vec<(String, i64, i64, i64, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT queue,
                    SUM(CASE WHEN statecode = 0 THEN 1 ELSE 0 END),
                    SUM(CASE WHEN statecode = 0 AND COALESCE(postpone_until, created_at) <= ?1 THEN 1 ELSE 0 END),
                    SUM(CASE WHEN statecode = 2 THEN 1 ELSE 0 END),
                    SUM(CASE WHEN statecode = 1 THEN 1 ELSE 0 END),
                    MIN(CASE WHEN statecode = 0 AND COALESCE(postpone_until, created_at) <= ?1 THEN COALESCE(postpone_until, created_at) END)
             FROM weir_jobs WHERE statecode < 3 GROUP BY queue",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<crate::db::Result<_>>()?;
    for (name, ready, due, running, suspended, oldest) in rows {
        let v = views.entry(name.clone()).or_insert_with(|| blank(&name));
        (v.ready, v.due, v.running, v.suspended, v.oldest_due) = (ready, due, running, suspended, oldest.map(crate::time::to_rfc3339));
    }
    for (scope, name, max) in conn
        .prepare_cached("SELECT scope, name, max_running FROM weir_limits WHERE scope = 'queue'")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))?
        .collect::<crate::db::Result<Vec<_>>>()?
    {
        debug_assert_eq!(scope, "queue");
        views.entry(name.clone()).or_insert_with(|| blank(&name)).max_running = max;
    }
    for step in crate::steps::list(conn)? {
        if step.mode == crate::steps::ModeKind::Async || step.schedule.is_some() {
            let q = step.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_string());
            views.entry(q.clone()).or_insert_with(|| blank(&q));
        }
    }
    views.entry(DEFAULT_QUEUE.to_string()).or_insert_with(|| blank(DEFAULT_QUEUE));
    let nodes = crate::nodes::live(conn, now)?;
    for v in views.values_mut() {
        v.nodes = nodes.iter().filter(|n| n.serves(&v.name)).map(|n| n.id.clone()).collect();
    }
    Ok(views.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_rotate_among_owners_and_keep_rank_within_one() {
        let mut items: Vec<(String, &str, i64)> = (0..5).map(|i| (format!("a{i}"), "a", i)).collect();
        items.extend((0..2).map(|i| (format!("b{i}"), "b", 100 + i)));
        assert_eq!(round_robin(items), ["a0", "b0", "a1", "b1", "a2", "a3", "a4"]);
    }

    #[test]
    fn priorities_rates_and_lanes_read_and_write() {
        assert_eq!(parse_priority("high").unwrap(), 9);
        assert_eq!(parse_priority("3").unwrap(), 3);
        assert!(parse_priority("10").is_err() && parse_priority("urgent").is_err());
        assert_eq!(parse_rate("20/s").unwrap(), 20_000);
        assert_eq!(parse_rate("30/m").unwrap(), 500);
        assert_eq!(rate_text(500), "30/m");
        assert_eq!(rate_text(20_000), "20/s");
        assert!(parse_rate("0/s").is_err() && parse_rate("5/d").is_err() && parse_rate("x").is_err());
        assert_eq!(lane("q", "o", Some("s")), r#"["q","o","s"]"#);
        assert_eq!(lane("q", "o", None), r#"["q","o",null]"#);
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_one_second() {
        let row = LimitRow { max_running: None, rate_milli: Some(20_000), tokens_milli: 0, refilled_at: 1_000 };
        assert_eq!(row.tokens_at(1_050), 1_000, "20/s: one job per 50 ms");
        assert_eq!(row.tokens_at(60_000), 20_000, "capped at one second's burst");
    }
}
