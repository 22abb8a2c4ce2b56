//! Exact decimals: the canonical text of a decimal column's value, and its
//! order.
//!
//! A decimal is kept as canonical text everywhere (the store's TEXT column, the
//! WIT `decimal(string)`, JSON numbers written as they are): an optional `-`,
//! the digits, and the fraction after `.` with the scale it was given
//! (`10.50` stays `10.50`; `1e3` becomes `1000`, `+7` `7`), at most
//! [`MAX_DIGITS`] digits (`rust_decimal`'s 96-bit mantissa, as
//! Dataverse's decimal columns). Nothing converts it through a float. SQLite
//! orders the column with the [`COLLATION`] registered on every connection, so
//! filters and sorts compare exactly.
//!
//! Owns no state; touches nothing else.

use std::cmp::Ordering;
use std::str::FromStr;

pub use rust_decimal::Decimal;

/// The most significant digits a decimal may have.
pub const MAX_DIGITS: u32 = 28;

/// The SQLite collation decimal columns are declared with.
pub const COLLATION: &str = "WEIR_DECIMAL";

/// Parses decimal text (`12.50`, `-0.03`, `1e3`, `100`) exactly, or says why not.
pub fn parse(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let bad = |why: &str| format!("{text:?} is not an exact decimal: {why}");
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')) {
        return Err(bad("write digits with an optional sign, point and exponent, such as 12.50 or -0.03"));
    }
    let d = if t.contains(['e', 'E']) { Decimal::from_scientific(t) } else { Decimal::from_str_exact(t) };
    let d = d.map_err(|_| bad(&format!("it needs more than {MAX_DIGITS} significant digits or is out of range")))?;
    if digits(&d.normalize()) > MAX_DIGITS {
        return Err(bad(&format!("it has more than {MAX_DIGITS} significant digits")));
    }
    // A scientific form rust_decimal rounded (more digits than it holds) is not exact.
    if t.contains(['e', 'E']) && !same_digits(t, &d.normalize()) {
        return Err(bad(&format!("it needs more than {MAX_DIGITS} significant digits")));
    }
    Ok(d)
}

/// The canonical text of `d` (its scale kept; zero never negative).
pub fn canonical(d: &Decimal) -> String {
    let mut d = *d;
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d.to_string()
}

/// Parses and returns the canonical text.
pub fn canonicalise(text: &str) -> Result<String, String> {
    parse(text).map(|d| canonical(&d))
}

/// The decimal nearest a float as the float prints (its shortest round-trip
/// form): how a 0.1 plug-in's `f64` becomes a decimal. None for NaN and
/// infinities, or beyond the range.
pub fn from_f64(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    // `{}` never uses an exponent and round-trips; very small or large values
    // may still be out of range.
    let text = format!("{f}");
    canonicalise(&text).ok().or_else(|| Decimal::from_f64_retain(f).map(|d| canonical(&d)))
}

/// The float nearest a decimal (for 0.1 plug-ins, whose decimals are `f64`).
pub fn to_f64(text: &str) -> f64 {
    f64::from_str(text).unwrap_or(0.0)
}

/// Orders two decimal texts numerically; text that does not parse sorts after
/// every decimal, by its bytes.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Decimal::from_str(a), Decimal::from_str(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn digits(d: &Decimal) -> u32 {
    let m = d.mantissa().unsigned_abs();
    if m == 0 { 1 } else { m.ilog10() + 1 }
}

/// Whether the significant digits of scientific text survived in `d`.
fn same_digits(text: &str, d: &Decimal) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let sig: String = mantissa.chars().filter(char::is_ascii_digit).collect::<String>().trim_start_matches('0').trim_end_matches('0').to_string();
    let have = d.mantissa().unsigned_abs().to_string().trim_end_matches('0').to_string();
    sig.is_empty() && d.is_zero() || sig == have
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_and_canonical() {
        for (input, canon) in [
            ("12345678901234567.89", "12345678901234567.89"),
            ("0.03", "0.03"),
            ("0.030", "0.030"),
            ("-0.03", "-0.03"),
            ("100", "100"),
            ("100.000", "100.000"),
            ("10.50", "10.50"),
            ("-0.00", "0.00"),
            ("1e3", "1000"),
            ("1.5E-2", "0.015"),
            ("-0", "0"),
            ("+7", "7"),
            ("9999999999999999999999999999", "9999999999999999999999999999"),
            ("0.0000000000000000000000000001", "0.0000000000000000000000000001"),
        ] {
            assert_eq!(canonicalise(input).as_deref(), Ok(canon), "{input}");
        }
        for bad in ["", "abc", "1.2.3", "12345678901234567890123456789", "1e40", "0x10", "1,5", "NaN", "99999999999999999999999999991e-1"] {
            assert!(canonicalise(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(compare("10", "9.99"), Ordering::Greater);
        assert_eq!(compare("-1", "0.5"), Ordering::Less);
        assert_eq!(compare("1.0", "1"), Ordering::Equal);
        assert_eq!(compare("12345678901234567.89", "12345678901234567.88"), Ordering::Greater);
        assert_eq!(from_f64(0.1 * (1.0 - 0.7)).as_deref(), Some("0.030000000000000006"));
        assert_eq!(from_f64(f64::NAN), None);
        assert_eq!(to_f64("0.03"), 0.03);
    }
}
