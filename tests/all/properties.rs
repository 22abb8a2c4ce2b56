//! Property tests (proptest) for the two places untrusted text meets the store:
//! the filter language and record values.
//!
//! * The filter parser never panics, whatever the string, and its errors point
//!   inside the input.
//! * Generated well-typed expressions print and parse back to the same tree, and
//!   select the same rows whether compiled to SQL and run by SQLite or evaluated
//!   in memory (the pipeline uses the first for queries, the second for `--when`
//!   and wait conditions), string literals full of quotes and SQL included, and
//!   exact decimals compared by SQLite's collation and by the evaluator alike.
//! * Record values: any JSON value against any column type is accepted or
//!   refused without a panic, and what is accepted reads back the same from
//!   SQLite, directly and through the pipeline; what is refused stores nothing.

use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{Value as Json, json};
use weir::filter::{self, Expr, Kind, Literal, Op, Scalar};
use weir::runtime::wit::{Reference, Value};
use weir::values::{self, ColType};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------- the parser

/// Text that looks like the filter language: its words, literals, quotes,
/// parentheses and some junk, so the parser goes deep rather than failing on
/// the first character.
fn filterish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("amount".to_string()),
        Just("name".to_string()),
        Just("and".to_string()),
        Just("or".to_string()),
        Just("not".to_string()),
        Just("eq".to_string()),
        Just("ne".to_string()),
        Just("gt".to_string()),
        Just("le".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("'".to_string()),
        Just("''".to_string()),
        Just("'it''s'".to_string()),
        Just("-".to_string()),
        Just("1e".to_string()),
        Just(";".to_string()),
        Just("é".to_string()),
        "-?[0-9]{1,25}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?",
        "[a-z_][a-z0-9_-]{0,8}",
        "'[^']{0,8}'",
        "\\PC{1,3}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn the_parser_never_panics_on_any_string(input in "\\PC{0,200}") {
        check_parse(&input);
    }

    #[test]
    fn the_parser_never_panics_on_filter_like_text(input in filterish()) {
        check_parse(&input);
    }
}

/// Parses; an error must point inside the input (or just past its end) and
/// quote it; a success must compile against a permissive schema or say why not.
fn check_parse(input: &str) {
    match filter::parse(input) {
        Ok(expr) => {
            let _ = filter::to_sql(&expr, input, &|f| Some((format!("\"{f}\""), Kind::Text)));
            let _ = filter::eval(&expr, &|_| Some((Kind::Number, Scalar::Num(1.0))));
        }
        Err(e) => {
            assert!(e.pos <= input.chars().count(), "position {} past the end of {input:?}", e.pos);
            assert!(!e.message.is_empty());
            assert!(e.to_string().contains("bad filter at position"), "{e}");
        }
    }
}

#[test]
fn long_and_deep_inputs_are_refused_not_overflowed() {
    let long = format!("name eq '{}'", "x".repeat(filter::MAX_LEN));
    assert!(filter::parse(&long).unwrap_err().message.contains("longer than"));
    for depth in [65, 1000, 100_000] {
        let nots = format!("{}a eq 1", "not ".repeat(depth));
        let parens = format!("{}a eq 1{}", "(".repeat(depth), ")".repeat(depth));
        for input in [nots, parens] {
            // Inputs over the length limit are refused before they are parsed.
            let e = filter::parse(&input).unwrap_err();
            assert!(e.message.contains("nested deeper") || e.message.contains("longer than"), "{}", e.message);
        }
    }
}

// -------------------------------------------------- expressions over a schema

/// The columns of the test table: (name, SQL type, filter kind).
const COLUMNS: &[(&str, &str, Kind)] = &[
    ("name", "TEXT", Kind::Text),
    ("qty", "INTEGER", Kind::Number),
    ("amount", "REAL", Kind::Number),
    ("ok", "INTEGER", Kind::Bool),
    ("due", "INTEGER", Kind::Time),
    ("price", "TEXT COLLATE WEIR_DECIMAL", Kind::Decimal),
];

/// Canonical decimals for the `price` column: past f64's precision, tiny, negative.
const DECIMALS: &[&str] =
    &["0", "0.03", "-1.5", "100", "12345678901234567.89", "12345678901234567.88", "0.1", "-0.0000000000000000000000000001", "9999999999999999999999999999"];
/// Decimal literals as a filter may write them (exponents, trailing zeros).
const DECIMAL_LITERALS: &[&str] = &["0.030", "1e2", "-1.50", "12345678901234567.89", "0.1", "12345678901234567.885", "-1e-28", "99.99"];

/// Values chosen so that comparisons are often equal, and at the edges:
/// quotes and SQL in strings, integers past 2^53 and at i64's ends.
const TEXTS: &[&str] = &["", "a", "b", "A", "O'Brien", "x' OR 1=1 --", "'; DROP TABLE t; --", "é", "a\"b"];
const INTS: &[i64] = &[0, 1, -1, 2, 100, (1 << 53) + 1, 1 << 53, i64::MAX, i64::MIN, 1_700_000_000_000];
const FLOATS: &[&str] = &["0.0", "0.5", "-1.5", "1.0", "2.0", "100.25", "1e300", "-1e300", "9007199254740993.0", "9.3e18"];

/// One row: a value per column, null allowed everywhere.
#[derive(Debug, Clone)]
struct Row {
    name: Option<String>,
    qty: Option<i64>,
    amount: Option<f64>,
    ok: Option<bool>,
    due: Option<i64>,
    price: Option<&'static str>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::of(prop::sample::select(TEXTS).prop_map(String::from)),
        prop::option::of(prop::sample::select(INTS)),
        prop::option::of(prop_oneof![prop::sample::select(FLOATS).prop_map(|f| f.parse::<f64>().unwrap()), prop::sample::select(INTS).prop_map(|i| i as f64)]),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(INTS)),
        prop::option::of(prop::sample::select(DECIMALS)),
    )
        .prop_map(|(name, qty, amount, ok, due, price)| Row { name, qty, amount, ok, due, price })
}

impl Row {
    fn scalar(&self, field: &str) -> Option<(Kind, Scalar)> {
        let v = match field {
            "name" => self.name.clone().map_or(Value::Null, Value::Text),
            "qty" => self.qty.map_or(Value::Null, Value::Integer),
            // A float column (no such weir type any more, but the evaluator has floats).
            "amount" => return Some((Kind::Number, self.amount.map_or(Scalar::Null, Scalar::Num))),
            "ok" => self.ok.map_or(Value::Null, Value::Boolean),
            "due" => self.due.map_or(Value::Null, Value::Timestamp),
            "price" => self.price.map_or(Value::Null, |p| Value::Decimal(p.into())),
            _ => return None,
        };
        let kind = COLUMNS.iter().find(|c| c.0 == field)?.2;
        Some((kind, values::scalar(&v)))
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le])
}

/// A comparison that type-checks against [`COLUMNS`].
fn comparison() -> impl Strategy<Value = Expr> {
    let text = prop_oneof![prop::sample::select(TEXTS).prop_map(String::from), "[ -~]{0,6}"];
    let number = prop_oneof![prop::sample::select(INTS).prop_map(Literal::Int), prop::sample::select(FLOATS).prop_map(|f| Literal::Float(f.into()))];
    let decimal = prop_oneof![
        prop::sample::select(vec![0i64, 100, -1, 12345678901234567]).prop_map(Literal::Int),
        prop::sample::select(DECIMAL_LITERALS).prop_map(|d| Literal::Float(d.into())),
    ];
    let time = prop_oneof![
        prop::sample::select(INTS).prop_map(Literal::Int),
        prop::sample::select(vec!["1970-01-01T00:00:00Z", "1970-01-01T00:00:01Z", "2023-11-14T22:13:20Z"]).prop_map(|s| Literal::Str(s.into())),
    ];
    let typed = prop_oneof![
        (Just("name"), text.prop_map(Literal::Str)),
        (prop::sample::select(vec!["qty", "amount"]), number),
        (Just("ok"), any::<bool>().prop_map(Literal::Bool)),
        (Just("due"), time),
        (Just("price"), decimal),
    ];
    let cmp = (typed, op()).prop_map(|((field, value), op)| Expr::Cmp { field: field.into(), op, value, pos: 0 });
    let null = (prop::sample::select(COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>()), prop::sample::select(vec![Op::Eq, Op::Ne]))
        .prop_map(|(field, op)| Expr::Cmp { field: field.into(), op, value: Literal::Null, pos: 0 });
    prop_oneof![4 => cmp, 1 => null]
}

fn expr() -> impl Strategy<Value = Expr> {
    comparison().prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Not(Box::new(a))),
        ]
    })
}

/// Writes an expression in the filter language, fully parenthesised.
fn render(e: &Expr) -> String {
    match e {
        Expr::And(a, b) => format!("({} and {})", render(a), render(b)),
        Expr::Or(a, b) => format!("({} or {})", render(a), render(b)),
        Expr::Not(a) => format!("not {}", render(a)),
        Expr::Cmp { field, op, value, .. } => {
            let op = match op {
                Op::Eq => "eq",
                Op::Ne => "ne",
                Op::Gt => "gt",
                Op::Ge => "ge",
                Op::Lt => "lt",
                Op::Le => "le",
            };
            let value = match value {
                Literal::Null => "null".to_string(),
                Literal::Bool(b) => b.to_string(),
                Literal::Int(i) => i.to_string(),
                Literal::Float(f) => f.clone(),
                Literal::Str(s) => format!("'{}'", s.replace('\'', "''")),
            };
            format!("{field} {op} {value}")
        }
    }
}

/// The tree without positions, for comparing.
fn strip(e: &Expr) -> Expr {
    match e {
        Expr::And(a, b) => Expr::And(Box::new(strip(a)), Box::new(strip(b))),
        Expr::Or(a, b) => Expr::Or(Box::new(strip(a)), Box::new(strip(b))),
        Expr::Not(a) => Expr::Not(Box::new(strip(a))),
        Expr::Cmp { field, op, value, .. } => {
            // A float literal with no fraction prints as `2.0` and reads back as a float.
            Expr::Cmp { field: field.clone(), op: *op, value: value.clone(), pos: 0 }
        }
    }
}

fn table(rows: &[Row]) -> Connection {
    let conn = decimal_aware();
    let cols: Vec<String> = COLUMNS.iter().map(|(n, t, _)| format!("\"{n}\" {t}")).collect();
    conn.execute_batch(&format!("CREATE TABLE t (rowid_ INTEGER PRIMARY KEY, {})", cols.join(", "))).unwrap();
    for (i, r) in rows.iter().enumerate() {
        let params = rusqlite::params![i as i64, r.name, r.qty, r.amount, r.ok.map(i64::from), r.due, r.price];
        conn.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", params).unwrap();
    }
    conn
}

/// An in-memory database with weir's decimal collation, as the store registers it.
fn decimal_aware() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.create_collation(weir::decimal::COLLATION, weir::decimal::compare).unwrap();
    conn
}

fn sql_column(field: &str) -> Option<(String, Kind)> {
    COLUMNS.iter().find(|c| c.0 == field).map(|c| (format!("\"{}\"", c.0), c.2))
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn generated_expressions_print_and_parse_back_the_same(e in expr()) {
        let text = render(&e);
        let parsed = filter::parse(&text).map_err(|err| TestCaseError::fail(format!("{err}")))?;
        prop_assert_eq!(strip(&parsed), strip(&e), "{}", text);
        prop_assert!(filter::check(&parsed, &text, &|f| sql_column(f).map(|c| c.1)).is_ok());
    }

    #[test]
    fn sql_and_in_memory_evaluation_select_the_same_rows(e in expr(), rows in prop::collection::vec(row(), 1..12)) {
        let text = render(&e);
        let parsed = filter::parse(&text).unwrap();
        let conn = weir::db::Connection::from(table(&rows));
        let (cond, params) = filter::to_sql(&parsed, &text, &sql_column).unwrap();
        let mut stmt = conn.prepare(&format!("SELECT rowid_ FROM t WHERE {cond} ORDER BY rowid_")).unwrap();
        let by_sql: Vec<usize> = stmt
            .query_map(weir::db::params_from_iter(params.iter()), |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| r.unwrap() as usize)
            .collect();
        let in_memory: Vec<usize> = (0..rows.len()).filter(|&i| filter::eval(&parsed, &|f| rows[i].scalar(f))).collect();
        prop_assert_eq!(&by_sql, &in_memory, "{}\nSQL {}\nrows {:?}", text, cond, rows);
        // Whatever the literals held, the table is still there, with every row.
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(n as usize, rows.len());
    }
}

// ------------------------------------------------------------- record values

fn col_type() -> impl Strategy<Value = ColType> {
    prop_oneof![
        Just(ColType::Text),
        Just(ColType::Integer),
        Just(ColType::Decimal),
        Just(ColType::Boolean),
        Just(ColType::Timestamp),
        Just(ColType::Json),
        Just(ColType::Ref("account".into())),
    ]
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        prop::sample::select(vec!["2026-11-22T15:00:00Z", "2026-11-22T15:00:00.123+02:00", "not a time", "1970-01-01T00:00:00Z"]).prop_map(Json::from),
        "\\PC{0,12}".prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|kv| Json::Object(kv.into_iter().collect())),
        ]
    })
}

fn wit_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![prop::sample::select(DECIMALS).prop_map(String::from), any::<f64>().prop_map(|f| format!("{f}")), "[-+0-9.eE]{0,30}"]
            .prop_map(Value::Decimal),
        "\\PC{0,12}".prop_map(Value::Text),
        any::<i64>().prop_map(Value::Timestamp),
        ("(account)?", "\\PC{0,12}").prop_map(|(table, id)| Value::Reference(Reference { table, id })),
        prop_oneof![json_value().prop_map(|j| j.to_string()), "\\PC{0,12}"].prop_map(Value::Json),
    ]
}

/// Stores `v` in a column of type `ty` and reads it back.
fn through_sqlite(ty: &ColType, v: &Value) -> Value {
    let conn = weir::db::Connection::from(decimal_aware());
    conn.execute_batch(&format!("CREATE TABLE t (c {})", weir::db::Dialect::Sqlite.column_type(ty.storage()))).unwrap();
    conn.execute("INSERT INTO t VALUES (?1)", [values::to_sql(v)]).unwrap();
    conn.query_row("SELECT c FROM t", [], |r| Ok(values::from_sql(ty, r.get_ref(0)?))).unwrap()
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn json_values_are_accepted_or_refused_and_accepted_ones_round_trip(ty in col_type(), v in json_value()) {
        match values::from_json("c", &ty, &v) {
            Ok(value) => {
                prop_assert_eq!(through_sqlite(&ty, &value), value.clone());
                // And back to JSON: the same value, as the API shows it.
                let shown = values::to_json(&value);
                match (&ty, &v) {
                    (_, Json::Null) => prop_assert_eq!(shown, Json::Null),
                    // Exact: the same decimal as sent, written canonically.
                    (ColType::Decimal, _) => prop_assert_eq!(
                        weir::decimal::canonicalise(&shown.to_string()),
                        weir::decimal::canonicalise(v.as_str().map_or_else(|| v.to_string(), String::from).as_str())
                    ),
                    (ColType::Timestamp, _) => prop_assert!(shown.is_string()),
                    _ => prop_assert_eq!(shown, v),
                }
            }
            Err(message) => {
                prop_assert!(message.starts_with("column c is "), "{}", message);
                prop_assert!(message.contains("expected"), "{}", message);
            }
        }
    }

    #[test]
    fn plug_in_values_are_accepted_or_refused_and_accepted_ones_round_trip(ty in col_type(), v in wit_value()) {
        match values::conform("c", &ty, v) {
            Ok(value) => prop_assert_eq!(through_sqlite(&ty, &value), value),
            Err(message) => prop_assert!(message.starts_with("column c is "), "{}", message),
        }
    }
}

/// A weir with one table holding a column of every type.
fn store() -> (tempfile::TempDir, weir::Weir) {
    let dir = tempfile::tempdir().unwrap();
    let weir = weir::Weir::open(dir.path().join("p.db")).unwrap();
    weir.create_table("account", &[("name", "text")]).unwrap();
    let cols = [("t", "text"), ("i", "integer"), ("d", "decimal"), ("b", "boolean"), ("ts", "timestamp"), ("j", "json"), ("r", "ref:account")];
    weir.create_table("thing", &cols).unwrap();
    (dir, weir)
}

fn record() -> impl Strategy<Value = Json> {
    let cols = prop::sample::select(vec!["t", "i", "d", "b", "ts", "j", "r", "nope", "id", "created_at"]);
    prop_oneof![
        prop::collection::vec((cols, json_value()), 0..5).prop_map(|kv| Json::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        json_value(),
    ]
}

#[test]
fn records_through_the_pipeline_store_what_was_accepted_and_nothing_else() {
    let (_dir, weir) = store();
    let p = weir.pipeline();
    let account = p.create("system", "account", &json!({"name": "A"})).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config(150));
    let stored = std::cell::Cell::new(0usize);
    runner
        .run(&record(), |mut body| {
            // A reference that exists, sometimes.
            if let Some(Json::String(r)) = body.get_mut("r")
                && r.len() % 2 == 0
            {
                *r = account.id.clone();
            }
            let def = weir.pool().with_conn(|c| weir::store::records::require_table(c, "thing")).unwrap();
            let expected = def.parse_fields(&body);
            let before = count(&weir);
            match p.create("system", "thing", &body) {
                Ok(rec) => {
                    stored.set(stored.get() + 1);
                    let fields = expected.map_err(|e| TestCaseError::fail(format!("the pipeline took what parsing refuses: {e}")))?;
                    let back = weir.get("thing", &rec.id).unwrap();
                    for (name, value) in fields {
                        prop_assert_eq!(back.get(&name), Some(&value), "column {}", name);
                    }
                    prop_assert_eq!(back.to_json(), rec.to_json());
                }
                Err(e) => {
                    prop_assert!(matches!(e, weir::Error::Invalid(_)), "bad input is Invalid, got {:?}", e);
                    prop_assert!(!e.to_string().is_empty());
                    prop_assert_eq!(count(&weir), before, "a refused record stored nothing");
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(count(&weir), stored.get(), "every accepted record, and only those, is stored");
}

fn count(weir: &weir::Weir) -> usize {
    weir.query("thing", None, &[], None).unwrap().len()
}
