//! Column types and typed values: parsing a record's JSON against its table's
//! columns, rendering values back to JSON, and their SQLite representation.
//!
//! Values use the WIT `value` type of the current contract (0.2), the one
//! plug-ins see, so nothing is converted twice between the store and a guest.
//! Decimals are exact canonical text ([`crate::decimal`]); references carry
//! their table.

use crate::db::{Storage, ValueRef};
use serde_json::Value as Json;

use crate::filter::{Kind, Scalar};
pub use crate::runtime::wit::{Reference, Value};

/// A column's declared type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ColType {
    Text,
    Integer,
    Decimal,
    Boolean,
    Timestamp,
    Json,
    Ref(String),
}

impl ColType {
    pub fn parse(s: &str) -> Result<ColType, String> {
        Ok(match s {
            "text" => ColType::Text,
            "integer" => ColType::Integer,
            "decimal" => ColType::Decimal,
            "boolean" => ColType::Boolean,
            "timestamp" => ColType::Timestamp,
            "json" => ColType::Json,
            _ => match s.strip_prefix("ref:") {
                Some(t) if !t.is_empty() => ColType::Ref(t.to_string()),
                _ => return Err(format!("unknown column type {s:?}: use text, integer, decimal, boolean, timestamp, json or ref:TABLE")),
            },
        })
    }

    /// How the column is stored (each database's type for it: `db::Dialect::column_type`).
    pub fn storage(&self) -> Storage {
        match self {
            ColType::Text | ColType::Json | ColType::Ref(_) => Storage::Text,
            ColType::Integer | ColType::Boolean | ColType::Timestamp => Storage::Integer,
            ColType::Decimal => Storage::Decimal,
        }
    }

    /// How the filter language compares this column.
    pub fn kind(&self) -> Kind {
        match self {
            ColType::Text | ColType::Json | ColType::Ref(_) => Kind::Text,
            ColType::Integer => Kind::Number,
            ColType::Decimal => Kind::Decimal,
            ColType::Boolean => Kind::Bool,
            ColType::Timestamp => Kind::Time,
        }
    }
}

impl std::fmt::Display for ColType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColType::Text => f.write_str("text"),
            ColType::Integer => f.write_str("integer"),
            ColType::Decimal => f.write_str("decimal"),
            ColType::Boolean => f.write_str("boolean"),
            ColType::Timestamp => f.write_str("timestamp"),
            ColType::Json => f.write_str("json"),
            ColType::Ref(t) => write!(f, "ref:{t}"),
        }
    }
}

impl From<ColType> for String {
    fn from(c: ColType) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for ColType {
    type Error = String;
    fn try_from(s: String) -> Result<ColType, String> {
        ColType::parse(&s)
    }
}

/// Refuses text holding the NUL character (U+0000): PostgreSQL cannot store
/// it, so neither database takes it (one rule for both, and `weir migrate`
/// never meets it).
pub fn refuse_nul(what: &str, text: &str) -> Result<(), String> {
    match text.find('\0') {
        Some(at) => Err(format!("{what} holds the NUL character (U+0000) at byte {at}: weir does not store it; remove it")),
        None => Ok(()),
    }
}

/// Converts a JSON value for a column of type `ty` (column `col`), or says why not.
pub fn from_json(col: &str, ty: &ColType, v: &Json) -> Result<Value, String> {
    if let Json::String(s) = v {
        refuse_nul(&format!("column {col}'s value"), s)?;
    }
    let wrong = |want: &str| format!("column {col} is {ty}: expected {want}, got {}", short(v));
    Ok(match (ty, v) {
        (_, Json::Null) => Value::Null,
        (ColType::Text, Json::String(s)) => Value::Text(s.clone()),
        (ColType::Integer, Json::Number(n)) => Value::Integer(n.as_i64().ok_or_else(|| wrong("a whole number"))?),
        // The number exactly as written (serde_json keeps its text).
        (ColType::Decimal, Json::Number(n)) => {
            Value::Decimal(crate::decimal::canonicalise(&n.to_string()).map_err(|e| wrong(&format!("an exact decimal ({e})")))?)
        }
        (ColType::Decimal, Json::String(s)) => Value::Decimal(crate::decimal::canonicalise(s).map_err(|_| wrong("a number"))?),
        (ColType::Boolean, Json::Bool(b)) => Value::Boolean(*b),
        (ColType::Timestamp, Json::String(s)) => {
            Value::Timestamp(crate::time::parse_rfc3339(s).ok_or_else(|| wrong("an RFC 3339 time such as \"2026-11-22T15:00:00Z\""))?)
        }
        (ColType::Timestamp, Json::Number(n)) => Value::Timestamp(n.as_i64().ok_or_else(|| wrong("milliseconds since the epoch"))?),
        (ColType::Json, v) => Value::Json(v.to_string()),
        (ColType::Ref(t), Json::String(s)) => Value::Reference(Reference { table: t.clone(), id: s.clone() }),
        (ColType::Text, _) => return Err(wrong("a string")),
        (ColType::Integer, _) => return Err(wrong("a whole number")),
        (ColType::Decimal, _) => return Err(wrong("a number")),
        (ColType::Boolean, _) => return Err(wrong("true or false")),
        (ColType::Timestamp, _) => return Err(wrong("an RFC 3339 time")),
        (ColType::Ref(t), _) => return Err(wrong(&format!("the id of a {t} record (a string)"))),
    })
}

/// A CSV cell as the JSON a column of type `ty` takes (an empty cell is
/// null); what does not fit is passed on as text, for [`from_json`] to refuse
/// naming the column.
pub fn json_of_cell(ty: &ColType, cell: &str) -> Json {
    let t = cell.trim();
    if t.is_empty() {
        return Json::Null;
    }
    let text = || Json::String(cell.to_string());
    match ty {
        ColType::Integer | ColType::Decimal => t.parse::<serde_json::Number>().map(Json::Number).unwrap_or_else(|_| text()),
        ColType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Json::Bool(true),
            "false" | "0" | "no" => Json::Bool(false),
            _ => text(),
        },
        ColType::Timestamp => t.parse::<i64>().map(Json::from).unwrap_or_else(|_| text()),
        ColType::Json => serde_json::from_str(t).unwrap_or_else(|_| text()),
        ColType::Text | ColType::Ref(_) => text(),
    }
}

/// Checks (and normalises) a value a plug-in produced for column `col`.
pub fn conform(col: &str, ty: &ColType, v: Value) -> Result<Value, String> {
    match &v {
        Value::Text(t) => refuse_nul(&format!("column {col}'s value"), t)?,
        Value::Reference(r) => refuse_nul(&format!("column {col}'s reference"), &r.id)?,
        _ => {}
    }
    Ok(match (ty, v) {
        (_, Value::Null) => Value::Null,
        (ColType::Text, Value::Text(s)) => Value::Text(s),
        (ColType::Integer, Value::Integer(i)) => Value::Integer(i),
        (ColType::Decimal, Value::Decimal(d)) => Value::Decimal(crate::decimal::canonicalise(&d).map_err(|e| format!("column {col} is decimal: {e}"))?),
        (ColType::Decimal, Value::Integer(i)) => Value::Decimal(i.to_string()),
        (ColType::Boolean, Value::Boolean(b)) => Value::Boolean(b),
        (ColType::Timestamp, Value::Timestamp(t)) => Value::Timestamp(t),
        (ColType::Json, Value::Json(s)) => {
            serde_json::from_str::<Json>(&s).map_err(|e| format!("column {col} is json: the value is not JSON ({e})"))?;
            Value::Json(s)
        }
        (ColType::Ref(t), Value::Text(id)) => Value::Reference(Reference { table: t.clone(), id }),
        (ColType::Ref(t), Value::Reference(r)) if r.table.is_empty() || r.table == *t => Value::Reference(Reference { table: t.clone(), id: r.id }),
        (ColType::Ref(t), Value::Reference(r)) => {
            return Err(format!("column {col} refers to table {t}: a plug-in gave it a reference to table {}", r.table));
        }
        (ty, v) => return Err(format!("column {col} is {ty}: a plug-in gave it {}", type_name(&v))),
    })
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::Decimal(_) => "a decimal",
        Value::Text(_) => "text",
        Value::Timestamp(_) => "a timestamp",
        Value::Reference(_) => "a reference",
        Value::Json(_) => "json",
    }
}

fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 40 { format!("{}...", &s[..s.floor_char_boundary(37)]) } else { s }
}

/// A value as JSON (timestamps as RFC 3339, json columns as documents).
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        // Written exactly as stored (serde_json keeps the number's text).
        Value::Decimal(d) => d.parse::<serde_json::Number>().map(Json::Number).unwrap_or_else(|_| Json::String(d.clone())),
        Value::Text(s) => Json::String(s.clone()),
        Value::Reference(r) => Json::String(r.id.clone()),
        Value::Timestamp(ms) => Json::String(crate::time::to_rfc3339(*ms)),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone())),
    }
}

/// A value for the filter language.
pub fn scalar(v: &Value) -> Scalar {
    match v {
        Value::Null => Scalar::Null,
        Value::Boolean(b) => Scalar::Bool(*b),
        Value::Integer(i) | Value::Timestamp(i) => Scalar::Int(*i),
        Value::Decimal(d) => crate::decimal::parse(d).map(Scalar::Dec).unwrap_or(Scalar::Null),
        Value::Text(s) | Value::Json(s) => Scalar::Str(s.clone()),
        Value::Reference(r) => Scalar::Str(r.id.clone()),
    }
}

/// The stored form of a value.
pub fn to_sql(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Null => ValueRef::Null,
        Value::Boolean(b) => ValueRef::Integer(*b as i64),
        Value::Integer(i) | Value::Timestamp(i) => ValueRef::Integer(*i),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => ValueRef::from(s.as_str()),
        Value::Reference(r) => ValueRef::from(r.id.as_str()),
    }
}

/// Reads a column of type `ty` as stored.
pub fn from_sql(ty: &ColType, v: ValueRef<'_>) -> Value {
    let text = |v: ValueRef<'_>| v.as_str().map(str::to_string).unwrap_or_default();
    match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColType::Text, v) => Value::Text(text(v)),
        (ColType::Json, v) => Value::Json(text(v)),
        (ColType::Ref(t), v) => Value::Reference(Reference { table: t.clone(), id: text(v) }),
        (ColType::Integer, v) => Value::Integer(v.as_i64().unwrap_or_default()),
        (ColType::Timestamp, v) => Value::Timestamp(v.as_i64().unwrap_or_default()),
        (ColType::Boolean, v) => Value::Boolean(v.as_i64().unwrap_or_default() != 0),
        (ColType::Decimal, ValueRef::Integer(i)) => Value::Decimal(i.to_string()),
        (ColType::Decimal, ValueRef::Real(f)) => Value::Decimal(crate::decimal::from_f64(f).unwrap_or_else(|| "0".into())),
        (ColType::Decimal, v) => Value::Decimal(text(v)),
    }
}

/// A value in a form serde can store (job contexts are kept as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum ValueDoc {
    Null,
    Boolean(bool),
    Integer(i64),
    /// Exact: a JSON number written as stored (a float in job contexts kept
    /// before decimals were exact).
    Decimal(serde_json::Number),
    Text(String),
    Timestamp(i64),
    /// A reference kept before references named their table: the id only.
    Reference(String),
    Ref(Reference),
    Json(String),
}

impl From<&Value> for ValueDoc {
    fn from(v: &Value) -> ValueDoc {
        match v.clone() {
            Value::Null => ValueDoc::Null,
            Value::Boolean(b) => ValueDoc::Boolean(b),
            Value::Integer(i) => ValueDoc::Integer(i),
            Value::Decimal(d) => d.parse::<serde_json::Number>().map(ValueDoc::Decimal).unwrap_or(ValueDoc::Text(d)),
            Value::Text(s) => ValueDoc::Text(s),
            Value::Timestamp(t) => ValueDoc::Timestamp(t),
            Value::Reference(r) => ValueDoc::Ref(r),
            Value::Json(s) => ValueDoc::Json(s),
        }
    }
}

impl From<ValueDoc> for Value {
    fn from(v: ValueDoc) -> Value {
        match v {
            ValueDoc::Null => Value::Null,
            ValueDoc::Boolean(b) => Value::Boolean(b),
            ValueDoc::Integer(i) => Value::Integer(i),
            ValueDoc::Decimal(n) => Value::Decimal(crate::decimal::canonicalise(&n.to_string()).unwrap_or_else(|_| n.to_string())),
            ValueDoc::Text(s) => Value::Text(s),
            ValueDoc::Timestamp(t) => Value::Timestamp(t),
            ValueDoc::Reference(id) => Value::Reference(Reference { table: String::new(), id }),
            ValueDoc::Ref(r) => Value::Reference(r),
            ValueDoc::Json(s) => Value::Json(s),
        }
    }
}

/// An entity in a form serde can store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityDoc {
    pub table: String,
    pub id: String,
    pub fields: Vec<(String, ValueDoc)>,
}

impl From<&crate::runtime::wit::Entity> for EntityDoc {
    fn from(e: &crate::runtime::wit::Entity) -> EntityDoc {
        EntityDoc { table: e.table.clone(), id: e.id.clone(), fields: e.fields.iter().map(|f| (f.name.clone(), ValueDoc::from(&f.value))).collect() }
    }
}

impl From<EntityDoc> for crate::runtime::wit::Entity {
    fn from(e: EntityDoc) -> crate::runtime::wit::Entity {
        crate::runtime::wit::Entity {
            table: e.table,
            id: e.id,
            fields: e.fields.into_iter().map(|(name, v)| crate::runtime::wit::Field { name, value: v.into() }).collect(),
        }
    }
}
