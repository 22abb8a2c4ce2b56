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
use types::{Entity, Field, Value};

impl Entity {
    /// The value of column `name`, if the record carries it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// Column `name` as a number (integer or decimal columns); `None` when absent or null.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) => Some(*d),
            _ => None,
        }
    }

    /// Column `name` as text (text, reference and json columns); `None` when absent or null.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Text(s) | Value::Reference(s) | Value::Json(s) => Some(s),
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
                "weir:plugin/types@0.1.0": weir_guest::types,
                "weir:plugin/records@0.1.0": weir_guest::records,
                "weir:plugin/log@0.1.0": weir_guest::log,
                "weir:plugin/secrets@0.1.0": weir_guest::secrets,
            },
        });
    };
}
