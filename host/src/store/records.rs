//! Declared tables and their records: the `weir_tables` catalog and one SQLite
//! table `data_<name>` per declared table, with `id`, `created_at`,
//! `modified_at` and the declared columns.
//!
//! Identifiers are validated names (see [`crate::names::check_name`]) and are
//! always double-quoted; values are always bound parameters.

use crate::db::{Connection, OptionalExtension, Storage, params_from_iter};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::filter::{self, Expr, Kind};
use crate::runtime::wit::{Entity, Field};
use crate::time::{now_ms, to_rfc3339};
use crate::values::{self, ColType, Value};

/// Columns every table has.
pub const SYSTEM_COLUMNS: &[&str] = &["id", "created_at", "modified_at"];
/// Most columns a table may declare.
pub const MAX_COLUMNS: usize = 200;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Column {
    pub name: String,
    /// text, integer, decimal, boolean, timestamp, json or ref:TABLE.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub ty: ColType,
}

/// A declared table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<Column>,
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// A field's filter kind, system columns included.
    pub fn kind(&self, field: &str) -> Option<Kind> {
        match field {
            "id" => Some(Kind::Text),
            "created_at" | "modified_at" => Some(Kind::Time),
            _ => self.column(field).map(|c| c.ty.kind()),
        }
    }

    /// The quoted SQL column for a field, for the filter compiler.
    pub fn sql_column(&self, field: &str) -> Option<(String, Kind)> {
        self.kind(field).map(|k| (format!("\"{field}\""), k))
    }

    fn sql_table(&self) -> String {
        format!("\"data_{}\"", self.name)
    }

    /// Parses a JSON object of column values (no system columns) for this table.
    pub fn parse_fields(&self, json: &Json) -> Result<Vec<(String, Value)>> {
        let Json::Object(map) = json else {
            return Err(Error::invalid(format!("a {} record must be a JSON object, got {}", self.name, kind_of_json(json))));
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            if SYSTEM_COLUMNS.contains(&k.as_str()) {
                return Err(Error::invalid(format!("column {k} of table {} is set by weir and cannot be written", self.name)));
            }
            let col = self.column(k).ok_or_else(|| self.unknown_column(k))?;
            out.push((k.clone(), values::from_json(k, &col.ty, v).map_err(|m| Error::invalid(format!("{}: {m}", self.name)))?));
        }
        Ok(out)
    }

    /// Checks plug-in supplied fields against the columns.
    pub fn conform_fields(&self, fields: Vec<Field>) -> Result<Vec<(String, Value)>> {
        fields
            .into_iter()
            .map(|f| {
                if SYSTEM_COLUMNS.contains(&f.name.as_str()) {
                    return Err(Error::invalid(format!("column {} of table {} is set by weir and cannot be written", f.name, self.name)));
                }
                let col = self.column(&f.name).ok_or_else(|| self.unknown_column(&f.name))?;
                let v = values::conform(&f.name, &col.ty, f.value).map_err(|m| Error::invalid(format!("{}: {m}", self.name)))?;
                Ok((f.name, v))
            })
            .collect()
    }

    pub fn unknown_column(&self, name: &str) -> Error {
        let known: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        Error::invalid(format!("table {} has no column {name:?} (columns: {})", self.name, known.join(", ")))
    }
}

fn kind_of_json(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub table: String,
    pub id: String,
    /// Declared columns, in declaration order.
    pub fields: Vec<(String, Value)>,
    pub created_at: i64,
    pub modified_at: i64,
    /// Notes plug-ins left for whoever started the operation that returned
    /// this record (empty when it was read): shown as `@notes` in its JSON.
    pub notes: Vec<String>,
}

impl Record {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A field for the filter language, system columns included.
    pub fn scalar(&self, def: &TableDef, field: &str) -> Option<(Kind, filter::Scalar)> {
        let kind = def.kind(field)?;
        let v = match field {
            "id" => Value::Text(self.id.clone()),
            "created_at" => Value::Timestamp(self.created_at),
            "modified_at" => Value::Timestamp(self.modified_at),
            _ => self.get(field).cloned().unwrap_or(Value::Null),
        };
        Some((kind, values::scalar(&v)))
    }

    /// `{"id": ..., <columns>..., "created_at": ..., "modified_at": ...}`.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("id".into(), Json::String(self.id.clone()));
        for (k, v) in &self.fields {
            m.insert(k.clone(), values::to_json(v));
        }
        m.insert("created_at".into(), Json::String(to_rfc3339(self.created_at)));
        m.insert("modified_at".into(), Json::String(to_rfc3339(self.modified_at)));
        // `@` cannot start a column name: no clash.
        if !self.notes.is_empty() {
            m.insert("@notes".into(), Json::from(self.notes.clone()));
        }
        Json::Object(m)
    }

    /// The record as plug-ins see it (system times as timestamp fields).
    pub fn to_entity(&self) -> Entity {
        let mut fields: Vec<Field> = self.fields.iter().map(|(n, v)| Field { name: n.clone(), value: v.clone() }).collect();
        fields.push(Field { name: "created_at".into(), value: Value::Timestamp(self.created_at) });
        fields.push(Field { name: "modified_at".into(), value: Value::Timestamp(self.modified_at) });
        Entity { table: self.table.clone(), id: self.id.clone(), fields }
    }
}

/// Refuses a table name the database cannot hold as `data_<name>`.
fn check_name_length(conn: &Connection, name: &str) -> Result<()> {
    let d = conn.dialect();
    match d.max_identifier_len().map(|n| n - "data_".len()) {
        Some(max) if name.len() > max => Err(Error::invalid(format!(
            "table {name}: at most {max} characters on {} (its names are at most {} bytes, and weir prefixes `data_`)",
            d.name(),
            max + "data_".len()
        ))),
        _ => Ok(()),
    }
}

/// Declares a table and creates its storage.
pub fn create_table(conn: &Connection, name: &str, columns: &[Column]) -> Result<TableDef> {
    crate::names::check_name("table", name)?;
    check_name_length(conn, name)?;
    if table_def(conn, name)?.is_some() {
        return Err(Error::Conflict(format!("table {name} already exists")));
    }
    if columns.len() > MAX_COLUMNS {
        return Err(Error::invalid(format!("table {name}: at most {MAX_COLUMNS} columns")));
    }
    for (i, c) in columns.iter().enumerate() {
        crate::names::check_name("column", &c.name)?;
        if SYSTEM_COLUMNS.contains(&c.name.as_str()) {
            return Err(Error::invalid(format!("table {name}: column {} is a system column", c.name)));
        }
        if columns[..i].iter().any(|o| o.name == c.name) {
            return Err(Error::invalid(format!("table {name}: column {} is declared twice", c.name)));
        }
        if let ColType::Ref(target) = &c.ty
            && target != name
            && table_def(conn, target)?.is_none()
        {
            return Err(Error::invalid(format!("table {name}: column {} refers to table {target}, which does not exist", c.name)));
        }
    }
    create_storage(conn, name, columns)?;
    conn.execute(
        "INSERT INTO weir_tables (name, columns, created_at) VALUES (?1, ?2, ?3)",
        crate::params![name, serde_json::to_string(columns).map_err(|e| Error::Internal(e.to_string()))?, now_ms()],
    )?;
    Ok(TableDef { name: name.to_string(), columns: columns.to_vec() })
}

/// The `CREATE TABLE` of a declared table's storage.
/// Creates the data table of table `name` (its rows' storage, not its catalogue entry).
pub(crate) fn create_storage(conn: &Connection, name: &str, columns: &[Column]) -> Result<()> {
    check_name_length(conn, name)?;
    conn.execute_batch(&ddl(conn, name, columns))?;
    Ok(())
}

fn ddl(conn: &Connection, name: &str, columns: &[Column]) -> String {
    let d = conn.dialect();
    let (text, int) = (d.column_type(Storage::Text), d.column_type(Storage::Integer));
    let mut ddl = format!("CREATE TABLE \"data_{name}\" (id {text} PRIMARY KEY NOT NULL, created_at {int} NOT NULL, modified_at {int} NOT NULL");
    for c in columns {
        ddl.push_str(&format!(", \"{}\" {}", c.name, d.column_type(c.ty.storage())));
    }
    ddl.push(')');
    ddl
}

/// Schema migration 10: decimal columns were REAL (floats); they become
/// exact canonical text. Each table with one is rebuilt, every value kept as
/// the decimal its float prints as (its shortest round-trip form, what weir
/// showed before), dates and ids unchanged. Runs in the migration's transaction.
pub(crate) fn exact_decimals(conn: &Connection) -> Result<()> {
    for def in list_tables(conn)? {
        if !def.columns.iter().any(|c| c.ty == ColType::Decimal) {
            continue;
        }
        let old = format!("\"data_{}__floats\"", def.name);
        conn.execute_batch(&format!("ALTER TABLE {} RENAME TO {old}", def.sql_table()))?;
        conn.execute_batch(&ddl(conn, &def.name, &def.columns))?;
        let rows: Vec<Record> = {
            let mut stmt = conn.prepare(&format!("SELECT {} FROM {old}", select_list(&def)))?;
            stmt.query_map([], |r| read_row(&def, r))?.collect::<crate::db::Result<_>>()?
        };
        let marks: Vec<String> = (1..=def.columns.len() + 3).map(|i| format!("?{i}")).collect();
        let sql = format!("INSERT INTO {} ({}) VALUES ({})", def.sql_table(), select_list(&def), marks.join(", "));
        let mut insert = conn.prepare(&sql)?;
        for r in &rows {
            let mut args: Vec<crate::db::ValueRef<'_>> = vec![r.id.as_str().into(), r.created_at.into(), r.modified_at.into()];
            args.extend(r.fields.iter().map(|(_, v)| values::to_sql(v)));
            insert.execute(params_from_iter(args))?;
        }
        conn.execute_batch(&format!("DROP TABLE {old}"))?;
    }
    Ok(())
}

pub fn table_def(conn: &Connection, name: &str) -> Result<Option<TableDef>> {
    let cols: Option<String> = conn.prepare_cached("SELECT columns FROM weir_tables WHERE name = ?1")?.query_row([name], |r| r.get(0)).optional()?;
    cols.map(|c| {
        let columns = serde_json::from_str(&c).map_err(|e| Error::Internal(format!("catalog of table {name} is corrupt: {e}")))?;
        Ok(TableDef { name: name.to_string(), columns })
    })
    .transpose()
}

/// The table, or a not-found error naming it.
pub fn require_table(conn: &Connection, name: &str) -> Result<TableDef> {
    table_def(conn, name)?.ok_or_else(|| Error::not_found(format!("no table named {name:?}; create it with `weir table create {name} --column NAME:TYPE`")))
}

pub fn list_tables(conn: &Connection) -> Result<Vec<TableDef>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM weir_tables ORDER BY name")?;
    let names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<crate::db::Result<_>>()?;
    names.iter().filter_map(|n| table_def(conn, n).transpose()).collect()
}

/// Checks that every reference column points at an existing record.
pub fn check_refs(conn: &Connection, def: &TableDef, fields: &[(String, Value)]) -> Result<()> {
    for (name, v) in fields {
        if let (Some(Column { ty: ColType::Ref(target), .. }), Value::Reference(r)) = (def.column(name), v)
            && !exists(conn, target, &r.id)?
        {
            return Err(Error::invalid(format!("{}: column {name} refers to {target} {}, which does not exist", def.name, r.id)));
        }
    }
    Ok(())
}

pub fn exists(conn: &Connection, table: &str, id: &str) -> Result<bool> {
    if id.contains('\0') {
        return Ok(false);
    }
    Ok(conn.prepare_cached(&format!("SELECT 1 FROM \"data_{table}\" WHERE id = ?1"))?.query_row([id], |_| Ok(())).optional()?.is_some())
}

/// The record [`insert`] would store, but for its times (set when it is
/// stored): for what depends only on its values.
pub fn to_insert(def: &TableDef, id: &str, fields: &[(String, Value)]) -> Record {
    Record { table: def.name.clone(), id: id.to_string(), fields: fields.to_vec(), created_at: 0, modified_at: 0, notes: Vec::new() }
}

pub fn insert(conn: &Connection, def: &TableDef, id: &str, fields: &[(String, Value)]) -> Result<Record> {
    let now = now_ms();
    let mut cols = String::from("id, created_at, modified_at");
    let mut marks = String::from("?1, ?2, ?2");
    for (i, (name, _)) in fields.iter().enumerate() {
        cols.push_str(&format!(", \"{name}\""));
        marks.push_str(&format!(", ?{}", i + 3));
    }
    // The stored row comes back with the insert: no second round trip.
    let sql = format!("INSERT INTO {} ({cols}) VALUES ({marks}) RETURNING {}", def.sql_table(), select_list(def));
    let mut args: Vec<crate::db::ValueRef<'_>> = vec![id.into(), now.into()];
    args.extend(fields.iter().map(|(_, v)| values::to_sql(v)));
    conn.prepare_cached(&sql)?.query_row(params_from_iter(args), |r| read_row(def, r)).map_err(|e| match e {
        e if e.is_constraint() => Error::Conflict(format!("{} {id} already exists", def.name)),
        e => e.into(),
    })
}

pub fn update(conn: &Connection, def: &TableDef, id: &str, fields: &[(String, Value)]) -> Result<Record> {
    if id.contains('\0') {
        return Err(not_found(def, &id.replace('\0', "\\0")));
    }
    let mut sets = String::from("modified_at = ?2");
    for (i, (name, _)) in fields.iter().enumerate() {
        sets.push_str(&format!(", \"{name}\" = ?{}", i + 3));
    }
    let sql = format!("UPDATE {} SET {sets} WHERE id = ?1 RETURNING {}", def.sql_table(), select_list(def));
    let mut args: Vec<crate::db::ValueRef<'_>> = vec![id.into(), now_ms().into()];
    args.extend(fields.iter().map(|(_, v)| values::to_sql(v)));
    conn.prepare_cached(&sql)?.query_row(params_from_iter(args), |r| read_row(def, r)).optional()?.ok_or_else(|| not_found(def, id))
}

pub fn delete(conn: &Connection, def: &TableDef, id: &str) -> Result<()> {
    if id.contains('\0') {
        return Err(not_found(def, &id.replace('\0', "\\0")));
    }
    let n = conn.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", def.sql_table()))?.execute([id])?;
    if n == 0 {
        return Err(not_found(def, id));
    }
    Ok(())
}

pub fn not_found(def: &TableDef, id: &str) -> Error {
    Error::not_found(format!("no {} record with id {id}", def.name))
}

fn select_list(def: &TableDef) -> String {
    let mut s = String::from("id, created_at, modified_at");
    for c in &def.columns {
        s.push_str(&format!(", \"{}\"", c.name));
    }
    s
}

fn read_row(def: &TableDef, r: &crate::db::Row<'_>) -> crate::db::Result<Record> {
    let mut fields = Vec::with_capacity(def.columns.len());
    for (i, c) in def.columns.iter().enumerate() {
        fields.push((c.name.clone(), values::from_sql(&c.ty, r.get_ref(i + 3)?)));
    }
    Ok(Record { table: def.name.clone(), id: r.get(0)?, created_at: r.get(1)?, modified_at: r.get(2)?, fields, notes: Vec::new() })
}

pub fn get(conn: &Connection, def: &TableDef, id: &str) -> Result<Option<Record>> {
    if id.contains('\0') {
        // No id holds NUL (ids are checked when made): none to find.
        return Ok(None);
    }
    let sql = format!("SELECT {} FROM {} WHERE id = ?1", select_list(def), def.sql_table());
    Ok(conn.prepare_cached(&sql)?.query_row([id], |r| read_row(def, r)).optional()?)
}

/// Sort order for queries: a field and a direction.
#[derive(Debug, Clone)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
}

/// Records matching `filter` (already parsed from `source`), at most `top`.
/// Most records one query returns (`$top`, `--top`, `records.query`).
pub const MAX_TOP: usize = 5_000;

/// Records of `def` matching `filter` (the filter language's text), in
/// `order`, at most `top` (capped at [`MAX_TOP`]).
pub fn query_text(conn: &Connection, def: &TableDef, filter: Option<&str>, order: &[OrderBy], top: usize) -> Result<Vec<Record>> {
    query_text_page(conn, def, filter, order, 0, top)
}

/// [`query_text`] after skipping `skip` records.
pub fn query_text_page(conn: &Connection, def: &TableDef, filter: Option<&str>, order: &[OrderBy], skip: usize, top: usize) -> Result<Vec<Record>> {
    let expr = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Some((filter::parse(f).map_err(|e| Error::invalid(e.to_string()))?, f)),
        None => None,
    };
    query_page(conn, def, expr.as_ref().map(|(e, s)| (e, *s)), order, skip, top.min(MAX_TOP))
}

/// A plug-in's `records.query`: filter, order, column list, skip, top (at most
/// `max_top`) and an optional count of every match, as a page of entities
/// (only the asked-for columns, when a list is given; unknown ones are an error).
pub fn plugin_query(conn: &Connection, def: &TableDef, q: &crate::runtime::wit::QueryOptions, max_top: usize) -> Result<crate::runtime::wit::Page> {
    let source = q.filter.trim();
    let expr = if source.is_empty() { None } else { Some(filter::parse(source).map_err(|e| Error::invalid(e.to_string()))?) };
    let filter = expr.as_ref().map(|e| (e, source));
    let order: Vec<OrderBy> = q.order_by.iter().map(|o| OrderBy { field: o.column.clone(), descending: o.descending }).collect();
    for c in &q.columns {
        if def.kind(c).is_none() {
            return Err(def.unknown_column(c));
        }
    }
    let rows = query_page(conn, def, filter, &order, q.skip as usize, (q.top as usize).min(max_top).min(MAX_TOP))?;
    let count = if q.count { Some(count(conn, def, filter)?) } else { None };
    let records = rows
        .iter()
        .map(|r| {
            let mut e = r.to_entity();
            if !q.columns.is_empty() {
                e.fields.retain(|f| q.columns.contains(&f.name));
            }
            e
        })
        .collect();
    Ok(crate::runtime::wit::Page { records, count })
}

/// The record `id` of table `table` (either unknown: an error naming it).
pub fn get_named(conn: &Connection, table: &str, id: &str) -> Result<Record> {
    let def = require_table(conn, table)?;
    get(conn, &def, id)?.ok_or_else(|| not_found(&def, id))
}

pub fn query(conn: &Connection, def: &TableDef, filter: Option<(&Expr, &str)>, order: &[OrderBy], top: usize) -> Result<Vec<Record>> {
    query_page(conn, def, filter, order, 0, top)
}

/// How many records of `def` match `filter`.
pub fn count(conn: &Connection, def: &TableDef, filter: Option<(&Expr, &str)>) -> Result<u64> {
    let (cond, params) = condition(def, filter)?;
    let sql = format!("SELECT COUNT(*) FROM {}{cond}", def.sql_table());
    let n: i64 = conn.prepare_cached(&sql)?.query_row(params_from_iter(params.iter()), |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// ` WHERE ...` for a filter (empty without one), and its parameters.
fn condition(def: &TableDef, filter: Option<(&Expr, &str)>) -> Result<(String, Vec<filter::SqlParam>)> {
    match filter {
        Some((expr, source)) => {
            let (cond, p) = filter::to_sql(expr, source, &|f| def.sql_column(f)).map_err(|e| Error::invalid(e.to_string()))?;
            Ok((format!(" WHERE {cond}"), p))
        }
        None => Ok((String::new(), Vec::new())),
    }
}

/// One page of [`query`]: `top` records after skipping `skip`.
pub fn query_page(conn: &Connection, def: &TableDef, filter: Option<(&Expr, &str)>, order: &[OrderBy], skip: usize, top: usize) -> Result<Vec<Record>> {
    let (cond, mut params) = condition(def, filter)?;
    let mut sql = format!("SELECT {} FROM {}{cond}", select_list(def), def.sql_table());
    let mut orders = Vec::new();
    for o in order {
        let (col, _) = def.sql_column(&o.field).ok_or_else(|| def.unknown_column(&o.field))?;
        orders.push(format!("{col} {}", if o.descending { "DESC" } else { "ASC" }));
    }
    orders.push("id ASC".into());
    // The page as parameters: one prepared statement serves every page.
    sql.push_str(&format!(" ORDER BY {} LIMIT ? OFFSET ?", orders.join(", ")));
    params.push(filter::SqlParam::Int(i64::try_from(top).unwrap_or(i64::MAX)));
    params.push(filter::SqlParam::Int(i64::try_from(skip).unwrap_or(i64::MAX)));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), |r| read_row(def, r))?;
    Ok(rows.collect::<crate::db::Result<_>>()?)
}

/// Most sort keys one query takes.
pub const MAX_ORDER_KEYS: usize = 16;

/// Parses `col`, `col desc`, `a asc, b desc` (at most [`MAX_ORDER_KEYS`] keys).
pub fn parse_orderby(s: &str) -> Result<Vec<OrderBy>> {
    let keys = s.split(',').filter(|p| !p.trim().is_empty()).count();
    if keys > MAX_ORDER_KEYS {
        return Err(Error::invalid(format!("bad order: {keys} sort keys, at most {MAX_ORDER_KEYS}")));
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let mut words = part.split_whitespace();
            let field = words.next().unwrap_or_default().to_string();
            let descending = match words.next() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(w) => return Err(Error::invalid(format!("bad order {part:?}: {w:?} is not asc or desc"))),
            };
            if words.next().is_some() {
                return Err(Error::invalid(format!("bad order {part:?}: write COL [asc|desc]")));
            }
            Ok(OrderBy { field, descending })
        })
        .collect()
}
