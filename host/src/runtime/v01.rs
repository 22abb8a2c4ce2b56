//! The frozen 0.1 contract (`wit/v0.1`): its bindings, its host imports and
//! the conversions between it and the current contract, so components built
//! against 0.1 keep loading and running unchanged, with 0.1 semantics.
//!
//! An adapter, not a second host: every 0.1 import is served by the current
//! one, converted at this boundary. There, a decimal is the `f64` nearest the
//! exact value (and a float coming back becomes the decimal it prints as), a
//! reference is a bare id (its table comes from the column), `query` takes a
//! filter and a top, and the context leaves out what 0.2 added (identity,
//! operation id, shared variables); a 0.1 outcome has no notes or variables.

use super::{HostState, Step, wit as cur};

/// The 0.1 bindings, sync flavour (both exports, trappable imports).
pub mod wit {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "hybrid",
        additional_derives: [PartialEq],
        imports: { default: trappable },
    });
}

/// The 0.1 `workflow` world with async calls.
pub mod wit_async {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "workflow",
        exports: { default: async },
        with: {
            "weir:plugin/types": super::wit::weir::plugin::types,
            "weir:plugin/records": super::wit::weir::plugin::records,
            "weir:plugin/log": super::wit::weir::plugin::log,
            "weir:plugin/secrets": super::wit::weir::plugin::secrets,
        },
    });
}

use self::wit::weir::plugin::{log as old_log, records as old_records, secrets as old_secrets, types as old};

pub fn value_to_old(v: cur::Value) -> old::Value {
    match v {
        cur::Value::Null => old::Value::Null,
        cur::Value::Boolean(b) => old::Value::Boolean(b),
        cur::Value::Integer(i) => old::Value::Integer(i),
        cur::Value::Decimal(d) => old::Value::Decimal(crate::decimal::to_f64(&d)),
        cur::Value::Text(s) => old::Value::Text(s),
        cur::Value::Timestamp(t) => old::Value::Timestamp(t),
        cur::Value::Reference(r) => old::Value::Reference(r.id),
        cur::Value::Json(s) => old::Value::Json(s),
    }
}

pub fn value_from_old(v: old::Value) -> cur::Value {
    match v {
        old::Value::Null => cur::Value::Null,
        old::Value::Boolean(b) => cur::Value::Boolean(b),
        old::Value::Integer(i) => cur::Value::Integer(i),
        // NaN and infinities have no decimal: the text the store refuses.
        old::Value::Decimal(d) => cur::Value::Decimal(crate::decimal::from_f64(d).unwrap_or_else(|| format!("{d}"))),
        old::Value::Text(s) => cur::Value::Text(s),
        old::Value::Timestamp(t) => cur::Value::Timestamp(t),
        old::Value::Reference(id) => cur::Value::Reference(cur::Reference { table: String::new(), id }),
        old::Value::Json(s) => cur::Value::Json(s),
    }
}

fn fields_to_old(fields: Vec<cur::Field>) -> Vec<old::Field> {
    fields.into_iter().map(|f| old::Field { name: f.name, value: value_to_old(f.value) }).collect()
}

pub fn fields_from_old(fields: Vec<old::Field>) -> Vec<cur::Field> {
    fields.into_iter().map(|f| cur::Field { name: f.name, value: value_from_old(f.value) }).collect()
}

fn entity_to_old(e: cur::Entity) -> old::Entity {
    old::Entity { table: e.table, id: e.id, fields: fields_to_old(e.fields) }
}

/// The context a 0.1 plug-in sees.
pub fn context_to_old(c: &cur::Context) -> old::Context {
    let c = c.clone();
    old::Context {
        message: match c.message {
            cur::Message::Create => old::Message::Create,
            cur::Message::Update => old::Message::Update,
            cur::Message::Delete => old::Message::Delete,
            cur::Message::Background => old::Message::Background,
        },
        table: c.table,
        stage: match c.stage {
            cur::Stage::PreValidation => old::Stage::PreValidation,
            cur::Stage::PreOperation => old::Stage::PreOperation,
            cur::Stage::PostOperation => old::Stage::PostOperation,
        },
        mode: match c.mode {
            cur::Mode::Sync => old::Mode::Sync,
            cur::Mode::Async => old::Mode::Async,
        },
        depth: c.depth,
        user: c.user,
        correlation_id: c.correlation_id,
        target: entity_to_old(c.target),
        pre_image: c.pre_image.map(entity_to_old),
        post_image: c.post_image.map(entity_to_old),
        config: c.config,
        input: c.input,
        attempt: c.attempt,
        wake: c.wake.map(|w| match w {
            cur::WakeReason::Timer => old::WakeReason::Timer,
            cur::WakeReason::ConditionMet => old::WakeReason::ConditionMet,
            cur::WakeReason::TimedOut => old::WakeReason::TimedOut,
            // 0.1 has no checkpoint step, so it never wakes from one.
            cur::WakeReason::Checkpoint => old::WakeReason::Timer,
        }),
    }
}

/// A 0.1 sync outcome as the current one.
pub fn outcome_from_old(o: wit::exports::weir::plugin::handler::Outcome) -> cur::Outcome {
    cur::Outcome { changes: fields_from_old(o.changes), notes: Vec::new(), variables: Vec::new() }
}

/// A 0.1 workflow step as the current one.
pub fn step_from_old(step: wit_async::exports::weir::plugin::runner::Step) -> Step {
    use wit_async::exports::weir::plugin::runner::Step as Old;
    match step {
        Old::Done(result) => Step::Done(result),
        Old::WaitUntil(w) => Step::WaitUntil(cur::WaitUntil { at: w.at, state: w.state }),
        Old::WaitFor(w) => Step::WaitFor(cur::WaitFor { table: w.table, id: w.id, condition: w.condition, timeout_ms: w.timeout_ms, state: w.state }),
    }
}

fn record_error_to_old(e: cur::RecordError) -> old_records::RecordError {
    match e {
        cur::RecordError::NotFound(m) => old_records::RecordError::NotFound(m),
        cur::RecordError::Denied(m) => old_records::RecordError::Denied(m),
        cur::RecordError::Invalid(m) => old_records::RecordError::Invalid(m),
        cur::RecordError::Failed(m) => old_records::RecordError::Failed(m),
    }
}

type Answer<T> = wasmtime::Result<Result<T, old_records::RecordError>>;

fn old_answer<T, U>(r: wasmtime::Result<Result<T, cur::RecordError>>, f: impl FnOnce(T) -> U) -> Answer<U> {
    r.map(|inner| inner.map(f).map_err(record_error_to_old))
}

impl old::Host for HostState {}

impl old_log::Host for HostState {
    fn write(&mut self, level: old_log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            old_log::Level::Trace => cur::Level::Trace,
            old_log::Level::Debug => cur::Level::Debug,
            old_log::Level::Info => cur::Level::Info,
            old_log::Level::Warn => cur::Level::Warn,
            old_log::Level::Error => cur::Level::Error,
        };
        cur::weir::plugin::log::Host::write(self, level, message)
    }
}

impl old_records::Host for HostState {
    fn get(&mut self, table: String, id: String) -> Answer<old::Entity> {
        old_answer(cur::weir::plugin::records::Host::get(self, table, id), entity_to_old)
    }
    fn query(&mut self, table: String, filter: String, top: u32) -> Answer<Vec<old::Entity>> {
        let q = cur::QueryOptions { table, filter, order_by: vec![], columns: vec![], skip: 0, top, count: false };
        old_answer(cur::weir::plugin::records::Host::query(self, q), |page| page.records.into_iter().map(entity_to_old).collect())
    }
    fn create(&mut self, table: String, fields: Vec<old::Field>) -> Answer<old::Entity> {
        old_answer(cur::weir::plugin::records::Host::create(self, table, fields_from_old(fields)), entity_to_old)
    }
    fn update(&mut self, table: String, id: String, fields: Vec<old::Field>) -> Answer<old::Entity> {
        old_answer(cur::weir::plugin::records::Host::update(self, table, id, fields_from_old(fields)), entity_to_old)
    }
    fn delete(&mut self, table: String, id: String) -> Answer<()> {
        old_answer(cur::weir::plugin::records::Host::delete(self, table, id), |()| ())
    }
}

impl old_secrets::Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, old_secrets::SecretError>> {
        Ok(cur::weir::plugin::secrets::Host::get(self, name)?.map_err(|e| match e {
            cur::SecretError::Denied(m) => old_secrets::SecretError::Denied(m),
            cur::SecretError::NotFound(m) => old_secrets::SecretError::NotFound(m),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cross_the_0_1_boundary_with_0_1_semantics() {
        assert_eq!(value_to_old(cur::Value::Decimal("0.03".into())), old::Value::Decimal(0.03));
        assert_eq!(value_from_old(old::Value::Decimal(0.1 * (1.0 - 0.7))), cur::Value::Decimal("0.030000000000000006".into()));
        let r = cur::Value::Reference(cur::Reference { table: "account".into(), id: "a1".into() });
        assert_eq!(value_to_old(r), old::Value::Reference("a1".into()));
        assert_eq!(value_from_old(old::Value::Reference("a1".into())), cur::Value::Reference(cur::Reference { table: String::new(), id: "a1".into() }));
    }
}
