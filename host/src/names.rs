//! Names weir accepts for what users name: plug-ins, steps, tables,
//! columns, users. Imports only the error type.

use crate::error::{Error, Result};

/// Checks a name for plug-ins, steps, tables, columns and users.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(Error::invalid(format!("bad {kind} name {name:?}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter"))) }
}
