//! The frozen 0.2 contract (`wit/v0.2`): its bindings, its host imports and
//! the conversions between it and the current contract (0.3), so components
//! built against 0.2 keep loading and running unchanged.
//!
//! An adapter, not a second host: every 0.2 import is served by the current
//! one. 0.3 only added to 0.2 (the `jobs` import, the `wait-for-jobs` and
//! `checkpoint` steps, the `checkpoint` wake reason, and the context's
//! `job-id`, `parent-job` and `jobs`), and every type 0.2 has is spelled the
//! same in 0.3, so each crosses this boundary by its serde form (the
//! bindings of both derive it from the same WIT names): a 0.2 context is the
//! current one without what 0.3 added. A 0.2 workflow never checkpoints, so
//! it never wakes from one.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{HostState, Step, wit as cur};

/// The 0.2 bindings, sync flavour (both exports, trappable imports).
pub mod wit {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "hybrid",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        imports: { default: trappable },
    });
}

/// The 0.2 `workflow` world with async calls.
pub mod wit_async {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "workflow",
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "weir:plugin/types": super::wit::weir::plugin::types,
            "weir:plugin/records": super::wit::weir::plugin::records,
            "weir:plugin/log": super::wit::weir::plugin::log,
            "weir:plugin/secrets": super::wit::weir::plugin::secrets,
        },
    });
}

use self::wit::weir::plugin::{log as old_log, records as old_records, secrets as old_secrets, types as old};

/// A value of one contract as the same-named value of the other. The two
/// share every name, so this fails only on a bug of weir's (a case 0.2 lacks):
/// the call then traps rather than guessing.
fn cross<A: Serialize, B: DeserializeOwned>(a: &A) -> wasmtime::Result<B> {
    let doc = serde_json::to_value(a).map_err(|e| wasmtime::Error::msg(format!("the 0.2 adapter cannot convert a value: {e}")))?;
    serde_json::from_value(doc).map_err(|e| wasmtime::Error::msg(format!("the 0.2 adapter cannot convert a value: {e}")))
}

/// The context a 0.2 plug-in sees: the current one without what 0.3 added.
pub fn context_to_old(c: &cur::Context) -> wasmtime::Result<old::Context> {
    let mut c = c.clone();
    if c.wake == Some(cur::WakeReason::Checkpoint) {
        // Cannot happen (0.2 has no checkpoint step); a timer is the nearest.
        c.wake = Some(cur::WakeReason::Timer);
    }
    cross(&c)
}

/// A 0.2 sync outcome as the current one.
pub fn outcome_from_old(o: &wit::exports::weir::plugin::handler::Outcome) -> wasmtime::Result<cur::Outcome> {
    cross(o)
}

/// A 0.2 plug-in error as the current one.
pub fn plugin_error_from_old(e: &wit::exports::weir::plugin::handler::PluginError) -> wasmtime::Result<cur::PluginError> {
    cross(e)
}

/// A 0.2 workflow step as the current one.
pub fn step_from_old(step: &wit_async::exports::weir::plugin::runner::Step) -> wasmtime::Result<Step> {
    cross(step)
}

/// A 0.2 workflow error as the current one.
pub fn workflow_error_from_old(e: &wit_async::exports::weir::plugin::runner::WorkflowError) -> wasmtime::Result<cur::WorkflowError> {
    cross(e)
}

type Answer<T> = wasmtime::Result<Result<T, old_records::RecordError>>;

/// A current `records` answer as 0.2's.
fn old_answer<T: Serialize, U: DeserializeOwned>(r: wasmtime::Result<Result<T, cur::RecordError>>) -> Answer<U> {
    match r? {
        Ok(v) => Ok(Ok(cross(&v)?)),
        Err(e) => Ok(Err(cross(&e)?)),
    }
}

impl old::Host for HostState {}

impl old_log::Host for HostState {
    fn write(&mut self, level: old_log::Level, message: String) -> wasmtime::Result<()> {
        let level = cross(&level)?;
        cur::weir::plugin::log::Host::write(self, level, message)
    }
}

impl old_records::Host for HostState {
    fn get(&mut self, table: String, id: String) -> Answer<old::Entity> {
        old_answer(cur::weir::plugin::records::Host::get(self, table, id))
    }
    fn query(&mut self, q: old_records::QueryOptions) -> Answer<old_records::Page> {
        let q: cur::QueryOptions = cross(&q)?;
        old_answer(cur::weir::plugin::records::Host::query(self, q))
    }
    fn create(&mut self, table: String, fields: Vec<old::Field>) -> Answer<old::Entity> {
        let fields = cross(&fields)?;
        old_answer(cur::weir::plugin::records::Host::create(self, table, fields))
    }
    fn update(&mut self, table: String, id: String, fields: Vec<old::Field>) -> Answer<old::Entity> {
        let fields = cross(&fields)?;
        old_answer(cur::weir::plugin::records::Host::update(self, table, id, fields))
    }
    fn delete(&mut self, table: String, id: String) -> Answer<()> {
        old_answer(cur::weir::plugin::records::Host::delete(self, table, id))
    }
}

impl old_secrets::Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, old_secrets::SecretError>> {
        match cur::weir::plugin::secrets::Host::get(self, name)? {
            Ok(v) => Ok(Ok(v)),
            Err(e) => Ok(Err(cross(&e)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_crosses_to_0_2_without_what_0_3_added() {
        let mut c = cur::Context::standalone("deal", cur::Mode::Async);
        c.job_id = "j1".into();
        c.wake = Some(cur::WakeReason::ConditionMet);
        c.target.fields.push(cur::Field { name: "amount".into(), value: cur::Value::Decimal("10.50".into()) });
        let old = context_to_old(&c).unwrap();
        assert_eq!(old.wake, Some(old::WakeReason::ConditionMet));
        assert_eq!(old.target.fields[0].value, old::Value::Decimal("10.50".into()));
        assert_eq!(old.correlation_id, "deal");
        c.wake = Some(cur::WakeReason::Checkpoint);
        assert_eq!(context_to_old(&c).unwrap().wake, Some(old::WakeReason::Timer));
    }

    #[test]
    fn a_0_2_step_crosses_to_the_current_one() {
        use wit_async::exports::weir::plugin::runner as r;
        let old = r::Step::WaitFor(r::WaitFor { table: "t".into(), id: "1".into(), condition: "x eq 1".into(), timeout_ms: 5, state: vec![1, 2] });
        match step_from_old(&old).unwrap() {
            Step::WaitFor(w) => assert_eq!((w.table.as_str(), w.timeout_ms, w.state), ("t", 5, vec![1, 2])),
            other => panic!("{other:?}"),
        }
    }
}
