//! The filter language EXPR, used everywhere a condition is written: `weir record
//! query --filter`, HTTP `$filter`, step `--when` trigger conditions, `wait-for`
//! conditions and `weir jobs list --filter`.
//!
//! OData-style: comparisons `FIELD op LITERAL` with `eq ne gt ge lt le`,
//! combined with `and`, `or`, `not` and parentheses. Literals: 'strings' (a quote
//! doubled inside: 'O''Brien'), numbers, `true`, `false`, `null`.
//!
//! This module owns parsing (with errors that point at the position), evaluation
//! against in-memory values, and compilation to parameterised SQL: field names
//! are resolved by the caller to trusted column expressions and every literal is
//! a bound parameter, never pasted into the SQL text.

use std::fmt;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// A literal value in an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    /// A number with a fraction or exponent, as written (a finite float).
    Float(String),
    Str(String),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cmp { field: String, op: Op, value: Literal, pos: usize },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

/// A bad expression: what is wrong and where (0-based character offset).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FilterError {
    pub pos: usize,
    pub message: String,
    pub input: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad filter at position {}: {}\n  {}\n  {}^", self.pos + 1, self.message, self.input, " ".repeat(self.pos))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Literal),
    LParen,
    RParen,
}

/// Longest accepted expression, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest accepted nesting of parentheses and `not`.
const MAX_DEPTH: usize = 64;
/// Most comparisons one expression may make: each is evaluated for every
/// row a query reads (a job's target is read out of its JSON context), so
/// hundreds of them made one listing cost seconds.
pub const MAX_COMPARISONS: usize = 32;

struct Parser<'a> {
    input: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
    comparisons: usize,
}

/// Parses an expression.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let err = |pos: usize, message: String| FilterError { pos, message, input: input.to_string() };
    if input.len() > MAX_LEN {
        return Err(err(0, format!("the expression is longer than {MAX_LEN} bytes")));
    }
    let toks = lex(input).map_err(|(pos, m)| err(pos, m))?;
    if toks.is_empty() {
        return Err(err(0, "the expression is empty".into()));
    }
    let mut p = Parser { input, toks, at: 0, depth: 0, comparisons: 0 };
    let e = p.or()?;
    if let Some((t, pos)) = p.toks.get(p.at) {
        return Err(p.err(*pos, format!("expected `and`, `or` or the end, found {}", describe(t))));
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Lit(Literal::Str(s)) => format!("'{s}'"),
        Tok::Lit(l) => format!("{l:?}").to_lowercase(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
    }
}

/// Character offset of a byte offset, for error carets.
fn char_pos(input: &str, byte: usize) -> usize {
    input[..byte.min(input.len())].chars().count()
}

fn lex(input: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let mut toks = Vec::new();
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let cpos = char_pos(input, start);
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                toks.push((Tok::LParen, cpos));
                i += 1
            }
            b')' => {
                toks.push((Tok::RParen, cpos));
                i += 1
            }
            b'\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match input[i..].find('\'') {
                        None => return Err((cpos, "unterminated string: add the closing '".into())),
                        Some(off) => {
                            s.push_str(&input[i..i + off]);
                            i += off + 1;
                            if bytes.get(i) == Some(&b'\'') {
                                s.push('\'');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                if s.contains('\0') {
                    return Err((cpos, "a string may not hold the NUL character (U+0000): weir stores no text with it, so nothing could match".into()));
                }
                toks.push((Tok::Lit(Literal::Str(s)), cpos));
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || matches!(bytes[i], b'.' | b'e' | b'E' | b'+' | b'-')) {
                    // a sign only right after an exponent marker
                    if matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
                        break;
                    }
                    i += 1;
                }
                let text = &input[start..i];
                let lit = if let Ok(n) = text.parse::<i64>() {
                    Literal::Int(n)
                } else if text.parse::<f64>().is_ok_and(f64::is_finite) {
                    Literal::Float(text.to_string())
                } else {
                    return Err((cpos, format!("bad number `{text}`")));
                };
                toks.push((Tok::Lit(lit), cpos));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-') {
                    i += 1;
                }
                let word = &input[start..i];
                let tok = match word {
                    "true" => Tok::Lit(Literal::Bool(true)),
                    "false" => Tok::Lit(Literal::Bool(false)),
                    "null" => Tok::Lit(Literal::Null),
                    _ => Tok::Ident(word.to_string()),
                };
                toks.push((tok, cpos));
            }
            _ => {
                let ch = input[start..].chars().next().unwrap_or('?');
                return Err((cpos, format!("unexpected character `{ch}` (strings are written in single quotes)")));
            }
        }
    }
    Ok(toks)
}

impl Parser<'_> {
    fn err(&self, pos: usize, message: String) -> FilterError {
        FilterError { pos, message, input: self.input.to_string() }
    }

    fn end_pos(&self) -> usize {
        self.input.chars().count()
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if let Some((Tok::Ident(w), _)) = self.toks.get(self.at)
            && w == kw
        {
            self.at += 1;
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let pos = self.toks.get(self.at).map_or(self.end_pos(), |t| t.1);
            return Err(self.err(pos, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let e = if self.keyword("not") { Expr::Not(Box::new(self.unary()?)) } else { self.primary()? };
        self.depth -= 1;
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let Some((tok, pos)) = self.toks.get(self.at).cloned() else {
            return Err(self.err(self.end_pos(), "expected a comparison such as `amount gt 100`, found the end".into()));
        };
        self.at += 1;
        match tok {
            Tok::LParen => {
                let e = self.or()?;
                match self.toks.get(self.at) {
                    Some((Tok::RParen, _)) => {
                        self.at += 1;
                        Ok(e)
                    }
                    Some((t, p)) => Err(self.err(*p, format!("expected `)`, found {}", describe(t)))),
                    None => Err(self.err(self.end_pos(), "expected `)`, found the end".into())),
                }
            }
            Tok::Ident(field) if !matches!(field.as_str(), "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le") => {
                let op = match self.toks.get(self.at) {
                    Some((Tok::Ident(o), p)) => {
                        let op = match o.as_str() {
                            "eq" => Op::Eq,
                            "ne" => Op::Ne,
                            "gt" => Op::Gt,
                            "ge" => Op::Ge,
                            "lt" => Op::Lt,
                            "le" => Op::Le,
                            _ => return Err(self.err(*p, format!("expected an operator (eq ne gt ge lt le), found `{o}`"))),
                        };
                        self.at += 1;
                        op
                    }
                    Some((t, p)) => return Err(self.err(*p, format!("expected an operator (eq ne gt ge lt le) after `{field}`, found {}", describe(t)))),
                    None => return Err(self.err(self.end_pos(), format!("expected an operator (eq ne gt ge lt le) after `{field}`, found the end"))),
                };
                let value = match self.toks.get(self.at) {
                    Some((Tok::Lit(l), _)) => {
                        self.at += 1;
                        l.clone()
                    }
                    Some((t, p)) => return Err(self.err(*p, format!("expected a value ('text', a number, true, false or null), found {}", describe(t)))),
                    None => return Err(self.err(self.end_pos(), "expected a value ('text', a number, true, false or null), found the end".into())),
                };
                if value == Literal::Null && !matches!(op, Op::Eq | Op::Ne) {
                    return Err(self.err(pos, "null can only be compared with eq or ne".into()));
                }
                self.comparisons += 1;
                if self.comparisons > MAX_COMPARISONS {
                    return Err(self.err(pos, format!("more than {MAX_COMPARISONS} comparisons: narrow the expression (each is evaluated for every row)")));
                }
                Ok(Expr::Cmp { field, op, value, pos })
            }
            t => Err(self.err(pos, format!("expected a field name or `(`, found {}", describe(&t)))),
        }
    }
}

impl Expr {
    /// Every field the expression names, with its position.
    pub fn fields(&self) -> Vec<(&str, usize)> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Cmp { field, pos, .. } = e {
                out.push((field.as_str(), *pos));
            }
        });
        out
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Not(a) => a.walk(f),
            Expr::Cmp { .. } => {}
        }
    }
}

/// A value a field holds, for in-memory evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    /// Integers and timestamps: compared exactly, as SQLite does, also past 2^53.
    Int(i64),
    Num(f64),
    /// An exact decimal (decimal columns).
    Dec(crate::decimal::Decimal),
    Str(String),
}

/// How a field's literal must be converted before comparing (from the column type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    /// An exact decimal column: literals compare exactly, not as floats.
    Decimal,
    Bool,
    /// Stored as milliseconds since the epoch; literals are RFC 3339 strings or numbers.
    Time,
}

/// Converts a literal for comparison with a field of `kind`, or says why not.
fn coerce(lit: &Literal, kind: Kind, field: &str) -> Result<Scalar, String> {
    Ok(match (lit, kind) {
        (Literal::Null, _) => Scalar::Null,
        (Literal::Str(s), Kind::Text) => Scalar::Str(s.clone()),
        (Literal::Int(n), Kind::Number | Kind::Time) => Scalar::Int(*n),
        (Literal::Float(f), Kind::Number) => Scalar::Num(f.parse().unwrap_or(f64::NAN)),
        (Literal::Int(n), Kind::Decimal) => Scalar::Dec((*n).into()),
        (Literal::Float(f), Kind::Decimal) => Scalar::Dec(crate::decimal::parse(f).map_err(|e| format!("`{field}` is an exact decimal: {e}"))?),
        (Literal::Bool(b), Kind::Bool) => Scalar::Bool(*b),
        (Literal::Str(s), Kind::Time) => match crate::time::parse_rfc3339(s) {
            Some(ms) => Scalar::Int(ms),
            None => return Err(format!("`{field}` is a timestamp: compare it with an RFC 3339 time such as '2026-01-31T12:00:00Z'")),
        },
        (_, Kind::Text) => return Err(format!("`{field}` is text: compare it with a 'quoted string'")),
        (_, Kind::Number | Kind::Decimal) => return Err(format!("`{field}` is a number: compare it with a number")),
        (_, Kind::Bool) => return Err(format!("`{field}` is a boolean: compare it with true or false")),
        (_, Kind::Time) => return Err(format!("`{field}` is a timestamp: compare it with an RFC 3339 time")),
    })
}

/// Checks names and types against a schema (`resolve` gives a field's kind).
pub fn check(expr: &Expr, input: &str, resolve: &dyn Fn(&str) -> Option<Kind>) -> Result<(), FilterError> {
    let mut result = Ok(());
    expr.walk(&mut |e| {
        if result.is_err() {
            return;
        }
        if let Expr::Cmp { field, value, pos, .. } = e {
            result = match resolve(field) {
                None => Err(FilterError { pos: *pos, message: format!("unknown field `{field}`"), input: input.to_string() }),
                Some(kind) => coerce(value, kind, field).map(|_| ()).map_err(|m| FilterError { pos: *pos, message: m, input: input.to_string() }),
            };
        }
    });
    result
}

/// Evaluates against in-memory values (`get` gives a field's kind and value).
/// Two-valued, like the SQL [`to_sql`] makes: a comparison of a null field with
/// anything but `null` is false (so `ne 'x'` does not match null either, and
/// `not (f eq 'x')` does); `eq null` and `ne null` test for null.
pub fn eval(expr: &Expr, get: &dyn Fn(&str) -> Option<(Kind, Scalar)>) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, get) && eval(b, get),
        Expr::Or(a, b) => eval(a, get) || eval(b, get),
        Expr::Not(a) => !eval(a, get),
        Expr::Cmp { field, op, value, .. } => {
            let Some((kind, have)) = get(field) else { return false };
            let Ok(want) = coerce(value, kind, field) else { return false };
            match (&have, &want) {
                (Scalar::Null, Scalar::Null) => *op == Op::Eq,
                (_, Scalar::Null) => *op == Op::Ne,
                (Scalar::Null, _) => false,
                _ => {
                    let ord = match (&have, &want) {
                        (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
                        (Scalar::Int(a), Scalar::Num(b)) => cmp_int_float(*a, *b),
                        (Scalar::Num(a), Scalar::Int(b)) => cmp_int_float(*b, *a).map(std::cmp::Ordering::reverse),
                        (Scalar::Num(a), Scalar::Num(b)) => a.partial_cmp(b),
                        (Scalar::Dec(a), Scalar::Dec(b)) => Some(a.cmp(b)),
                        (Scalar::Str(a), Scalar::Str(b)) => Some(a.cmp(b)),
                        (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
                        _ => None,
                    };
                    let Some(ord) = ord else { return false };
                    use std::cmp::Ordering::*;
                    match op {
                        Op::Eq => ord == Equal,
                        Op::Ne => ord != Equal,
                        Op::Gt => ord == Greater,
                        Op::Ge => ord != Less,
                        Op::Lt => ord == Less,
                        Op::Le => ord != Greater,
                    }
                }
            }
        }
    }
}

/// Compares an integer with a float exactly (no rounding of the integer to a
/// float), as SQLite compares an INTEGER with a REAL.
fn cmp_int_float(i: i64, f: f64) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::*;
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_63 {
        return Some(Less);
    }
    if f < -TWO_63 {
        return Some(Greater);
    }
    let whole = f.trunc();
    Some(match i.cmp(&(whole as i64)) {
        Equal => 0.0f64.partial_cmp(&(f - whole))?,
        ord => ord,
    })
}

/// A SQL parameter produced by [`to_sql`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    Int(i64),
    Real(f64),
    Text(String),
}

impl crate::db::ToSql for SqlParam {
    fn to_sql(&self) -> crate::db::ValueRef<'_> {
        use crate::db::ValueRef;
        match self {
            SqlParam::Int(i) => ValueRef::Integer(*i),
            SqlParam::Real(f) => ValueRef::Real(*f),
            SqlParam::Text(s) => ValueRef::from(s.as_str()),
        }
    }
}

/// ` WHERE <condition>` and its parameters for an optional filter `src`
/// over the fields `resolve` knows (empty when there is none): what a
/// listing with `--filter` / `$filter` appends to its SELECT.
pub fn where_clause(src: Option<&str>, resolve: &dyn Fn(&str) -> Option<(String, Kind)>) -> crate::error::Result<(String, Vec<SqlParam>)> {
    let Some(src) = src.map(str::trim).filter(|s| !s.is_empty()) else { return Ok((String::new(), Vec::new())) };
    let invalid = |e: FilterError| crate::error::Error::invalid(e.to_string());
    let (cond, params) = to_sql(&parse(src).map_err(invalid)?, src, resolve).map_err(invalid)?;
    Ok((format!(" WHERE {cond}"), params))
}

/// Compiles to a SQL condition with `?` placeholders. `resolve` maps a field to a
/// trusted SQL column expression and its kind; unknown fields are an error.
/// Comparisons are two-valued as in [`eval`]: `f op ?` becomes
/// `(f op ? AND f IS NOT NULL)`, false rather than SQL's unknown when `f` is
/// null, so `not` selects the same rows in SQL as in memory.
pub fn to_sql(expr: &Expr, input: &str, resolve: &dyn Fn(&str) -> Option<(String, Kind)>) -> Result<(String, Vec<SqlParam>), FilterError> {
    let mut params = Vec::new();
    let sql = sql_of(expr, input, resolve, &mut params)?;
    Ok((sql, params))
}

fn sql_of(expr: &Expr, input: &str, resolve: &dyn Fn(&str) -> Option<(String, Kind)>, params: &mut Vec<SqlParam>) -> Result<String, FilterError> {
    Ok(match expr {
        Expr::And(a, b) => format!("({} AND {})", sql_of(a, input, resolve, params)?, sql_of(b, input, resolve, params)?),
        Expr::Or(a, b) => format!("({} OR {})", sql_of(a, input, resolve, params)?, sql_of(b, input, resolve, params)?),
        Expr::Not(a) => format!("(NOT {})", sql_of(a, input, resolve, params)?),
        Expr::Cmp { field, op, value, pos } => {
            let err = |message: String| FilterError { pos: *pos, message, input: input.to_string() };
            let (column, kind) = resolve(field).ok_or_else(|| err(format!("unknown field `{field}`")))?;
            match coerce(value, kind, field).map_err(err)? {
                Scalar::Null if *op == Op::Eq => format!("({column} IS NULL)"),
                Scalar::Null => format!("({column} IS NOT NULL)"),
                Scalar::Bool(b) => compare(&column, *op, SqlParam::Int(b as i64), params),
                Scalar::Int(n) => compare(&column, *op, SqlParam::Int(n), params),
                Scalar::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => compare(&column, *op, SqlParam::Int(n as i64), params),
                // A fraction against an integer column: compared as a real on
                // both databases (PostgreSQL will not bind 1.5 to a bigint).
                Scalar::Num(n) if kind == Kind::Number => {
                    params.push(SqlParam::Real(n));
                    format!("({column} {} CAST(? AS DOUBLE PRECISION) AND {column} IS NOT NULL)", op.sql())
                }
                Scalar::Num(n) => compare(&column, *op, SqlParam::Real(n), params),
                // Canonical text; the column's collation compares it exactly.
                Scalar::Dec(d) => compare(&column, *op, SqlParam::Text(crate::decimal::canonical(&d)), params),
                Scalar::Str(s) => compare(&column, *op, SqlParam::Text(s), params),
            }
        }
    })
}

/// `column op ?`, false (not unknown) when the column is null.
fn compare(column: &str, op: Op, param: SqlParam, params: &mut Vec<SqlParam>) -> String {
    params.push(param);
    format!("({column} {} ? AND {column} IS NOT NULL)", op.sql())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(f: &str) -> Option<(String, Kind)> {
        match f {
            "amount" => Some(("\"amount\"".into(), Kind::Number)),
            "name" => Some(("\"name\"".into(), Kind::Text)),
            "ok" => Some(("\"ok\"".into(), Kind::Bool)),
            _ => None,
        }
    }

    #[test]
    fn parses_precedence_and_compiles_to_parameters() {
        let e = parse("amount gt 100 and not (name eq 'O''Brien' or ok eq true)").unwrap();
        let (sql, params) = to_sql(&e, "", &kinds).unwrap();
        assert_eq!(
            sql,
            "((\"amount\" > ? AND \"amount\" IS NOT NULL) AND (NOT ((\"name\" = ? AND \"name\" IS NOT NULL) OR (\"ok\" = ? AND \"ok\" IS NOT NULL))))"
        );
        assert_eq!(params, vec![SqlParam::Int(100), SqlParam::Text("O'Brien".into()), SqlParam::Int(1)]);
        let e = parse("a eq 1 or b eq 2 and c eq 3").unwrap();
        assert!(matches!(e, Expr::Or(_, _)), "and binds tighter than or");
    }

    #[test]
    fn errors_point_at_the_position() {
        let e = parse("amount gx 5").unwrap_err();
        assert_eq!(e.pos, 7);
        assert!(e.to_string().contains("expected an operator"), "{e}");
        assert!(e.to_string().contains("\n  amount gx 5\n         ^"), "{e}");
        assert_eq!(parse("name eq 'abc").unwrap_err().pos, 8);
        assert_eq!(parse("(amount eq 1").unwrap_err().pos, 12);
        assert_eq!(parse("amount eq").unwrap_err().pos, 9);
        assert_eq!(parse("amount eq 1 name").unwrap_err().pos, 12);
        assert!(parse("").is_err());
        assert!(parse("amount gt null").is_err());
        assert!(parse("x eq 1; DROP TABLE t").unwrap_err().message.contains("unexpected character `;`"));
        let deep = format!("{}a eq 1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let terms = |n: usize| (0..n).map(|i| format!("a eq {i}")).collect::<Vec<_>>().join(" or ");
        assert!(parse(&terms(MAX_COMPARISONS)).is_ok());
        let many = parse(&terms(MAX_COMPARISONS + 1)).unwrap_err();
        assert!(many.message.contains("more than 32 comparisons"), "{many}");
    }

    #[test]
    fn unknown_fields_and_type_mismatches_are_errors() {
        let e = parse("nope eq 1").unwrap();
        assert!(to_sql(&e, "nope eq 1", &kinds).unwrap_err().message.contains("unknown field `nope`"));
        let e = parse("amount eq 'x'").unwrap();
        assert!(to_sql(&e, "", &kinds).unwrap_err().message.contains("is a number"));
    }

    #[test]
    fn evaluates_like_sql() {
        let get = |f: &str| -> Option<(Kind, Scalar)> {
            match f {
                "amount" => Some((Kind::Number, Scalar::Num(150.0))),
                "name" => Some((Kind::Text, Scalar::Null)),
                "ok" => Some((Kind::Bool, Scalar::Bool(true))),
                _ => None,
            }
        };
        let t = |s: &str| eval(&parse(s).unwrap(), &get);
        assert!(t("amount gt 100 and ok eq true"));
        assert!(!t("amount le 100"));
        assert!(t("name eq null"));
        assert!(!t("name eq 'x'"));
        assert!(t("not (amount lt 100)"));
        assert!(t("amount ge 150.0 or zzz eq 1"));
        // Two-valued: a comparison with a null field is false, and `not` negates it.
        assert!(!t("name ne 'x'"));
        assert!(t("not (name eq 'x')"));
        // Integers compare exactly, also past 2^53 and against floats.
        let big = |f: &str| -> Option<(Kind, Scalar)> { (f == "n").then_some((Kind::Number, Scalar::Int((1 << 53) + 1))) };
        let t = |s: &str| eval(&parse(s).unwrap(), &big);
        assert!(t("n eq 9007199254740993") && !t("n eq 9007199254740992"));
        assert!(t("n gt 9007199254740992.0") && t("n lt 9007199254740993.5") && t("n lt 1e19") && t("n gt -1e19"));
    }
}
