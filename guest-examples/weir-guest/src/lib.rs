//! Shared helpers for weir plug-ins written in Rust.
//!
//! This crate generates the bindings of weir's imports (`types`, `records`, `log`, `secrets`)
//! once. A plug-in crate generates its own world (`plugin`, `workflow` or
//! `hybrid`) on top of them with one line, then implements the exports:
//!
//! ```ignore
//! weir_guest::bindings!("plugin");
//!
//! struct MyPlugin;
//! impl exports::weir::plugin::handler::Guest for MyPlugin { /* execute */ }
//! export!(MyPlugin);
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "host-api",
});

pub use weir::plugin::{log, records, secrets, types};
use types::{Context, Entity, Field, Reference, Value};

/// Exact decimals (28 significant digits), for `decimal` columns.
pub use rust_decimal::Decimal;

impl Entity {
    /// The value of column `name`, if the record carries it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// Column `name` as a float (integer or decimal columns); `None` when
    /// absent or null. For money, use [`Entity::decimal`]: it is exact.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }

    /// Column `name` as an exact decimal (integer or decimal columns); `None`
    /// when absent or null.
    pub fn decimal(&self, name: &str) -> Option<Decimal> {
        match self.get(name)? {
            Value::Integer(i) => Some(Decimal::from(*i)),
            Value::Decimal(d) => d.parse().ok(),
            _ => None,
        }
    }

    /// Column `name` as text (text, json columns, and a reference's id); `None` when absent or null.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Text(s) | Value::Json(s) => Some(s),
            Value::Reference(r) => Some(&r.id),
            _ => None,
        }
    }

    /// Column `name` as a reference (its table and id); `None` when absent, null or not a reference.
    pub fn reference(&self, name: &str) -> Option<&Reference> {
        match self.get(name)? {
            Value::Reference(r) => Some(r),
            _ => None,
        }
    }

    /// Column `name` as a boolean; `None` when absent or null.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

/// A field to send to `records::create`/`update` or to return as a change.
pub fn field(name: &str, value: Value) -> Field {
    Field { name: name.to_string(), value }
}

/// A text field.
pub fn text(name: &str, value: impl Into<String>) -> Field {
    field(name, Value::Text(value.into()))
}

/// An exact decimal field.
pub fn decimal(name: &str, value: Decimal) -> Field {
    field(name, Value::Decimal(value.to_string()))
}

/// The value of shared variable `name` of the operation (JSON), if set.
pub fn variable(ctx: &Context, name: &str) -> Option<serde_json::Value> {
    ctx.shared_variables.iter().find(|v| v.name == name).and_then(|v| serde_json::from_str(&v.value).ok())
}

/// A shared variable to return in a sync outcome's `variables`.
pub fn set_variable(name: &str, value: &serde_json::Value) -> types::Variable {
    types::Variable { name: name.to_string(), value: value.to_string() }
}

/// `records::query` with only a filter and a top (no order, skip, columns or count).
pub fn query(table: &str, filter: &str, top: u32) -> Result<Vec<Entity>, records::RecordError> {
    let q = records::QueryOptions { table: table.into(), filter: filter.into(), order_by: vec![], columns: vec![], skip: 0, top, count: false };
    records::query(&q).map(|page| page.records)
}

/// Parses a JSON document from the context (`config` or `input`); `null` on bad JSON.
pub fn json(doc: &str) -> serde_json::Value {
    serde_json::from_str(doc).unwrap_or(serde_json::Value::Null)
}

/// Writes an info line to the call's trace.
pub fn info(message: &str) {
    log::write(log::Level::Info, message);
}

/// Writes a warning to the call's trace.
pub fn warn(message: &str) {
    log::write(log::Level::Warn, message);
}

pub use serde_json;

/// Generates a plug-in's bindings for one of weir's worlds (`"plugin"`,
/// `"workflow"` or `"hybrid"`), reusing this crate's types and imports. Expands
/// to `wit_bindgen::generate!` with the WIT package at `../../wit` (relative to
/// the plug-in crate); the plug-in crate depends on `wit-bindgen` too.
#[macro_export]
macro_rules! bindings {
    ($world:literal) => {
        wit_bindgen::generate!({
            path: "../../wit",
            world: $world,
            with: {
                "weir:plugin/types@0.2.0": weir_guest::types,
                "weir:plugin/records@0.2.0": weir_guest::records,
                "weir:plugin/log@0.2.0": weir_guest::log,
                "weir:plugin/secrets@0.2.0": weir_guest::secrets,
            },
        });
    };
}
