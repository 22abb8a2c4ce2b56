//! Secrets: values (API tokens, passwords) a platform team stores for plug-ins
//! and grants per step with `--secret NAME`.
//!
//! Owns the `weir_secrets` table and the service's secret key. A value is
//! sealed with ChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`, an AEAD:
//! confidentiality and integrity) under a 256-bit key from `WEIR_SECRET_KEY`
//! (64 hex digits) or a key file (`--secret-key-file`, `WEIR_SECRET_KEY_FILE`),
//! with a fresh random 96-bit nonce per write and the secret's name as
//! associated data (a sealed value moved to another name does not open). The
//! key is never stored in the database. Values are read only here and only
//! handed to a plug-in granted them; nothing here logs or returns a value
//! except [`reveal`].

use std::path::Path;

use crate::db::{Connection, OptionalExtension, params};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use crate::error::{Error, Result};

/// Longest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The service's secret key.
#[derive(Clone)]
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

const HOW: &str =
    "set WEIR_SECRET_KEY to 64 hex digits (make one with `openssl rand -hex 32`) or point --secret-key-file (WEIR_SECRET_KEY_FILE) at a file holding them";

impl SecretKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn parse(text: &str, source: &str) -> Result<SecretKey> {
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
        let bytes = bytes.ok_or_else(|| Error::invalid(format!("the secret key in {source} is not 64 hex digits (32 bytes); {HOW}")))?;
        Ok(SecretKey(*Key::from_slice(&bytes)))
    }

    /// The key from `WEIR_SECRET_KEY`, else from `file`; `None` when neither is set.
    pub fn from_env(file: Option<&Path>) -> Result<Option<SecretKey>> {
        if let Ok(text) = std::env::var("WEIR_SECRET_KEY")
            && !text.trim().is_empty()
        {
            return SecretKey::parse(&text, "WEIR_SECRET_KEY").map(Some);
        }
        let Some(path) = file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|e| Error::invalid(format!("cannot read the secret key file {}: {e}", path.display())))?;
        SecretKey::parse(&text, &path.display().to_string()).map(Some)
    }

    /// The key, or an error saying how to give one (`doing`: what needs it).
    pub fn required(key: Option<&SecretKey>, doing: &str) -> Result<SecretKey> {
        key.cloned().ok_or_else(|| Error::invalid(format!("{doing} needs the secret key: {HOW}")))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.0)
    }
}

/// A stored secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Stores (or replaces) secret `name`. Refuses a key other than the one the
/// stored secrets were sealed with, so one database never holds two keys' secrets.
pub fn set(conn: &Connection, key: &SecretKey, name: &str, value: &str, now: i64) -> Result<()> {
    crate::names::check_name("secret", name)?;
    let other: Option<(String, Vec<u8>, Vec<u8>)> =
        conn.query_row("SELECT name, nonce, sealed FROM weir_secrets LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    if let Some((other, nonce, sealed)) = other
        && open(key, &other, &nonce, &sealed).is_none()
    {
        return Err(Error::invalid(format!(
            "the secret key differs from the one the stored secrets were sealed with (secret {other} does not open with it); use that key"
        )));
    }
    if value.is_empty() || value.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid(format!("secret {name}: the value must have 1 to {MAX_VALUE_BYTES} bytes (it has {})", value.len())));
    }
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = key
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: value.as_bytes(), aad: name.as_bytes() })
        .map_err(|_| Error::Internal(format!("secret {name}: sealing failed")))?;
    conn.execute(
        "INSERT INTO weir_secrets (name, nonce, sealed, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, sealed = excluded.sealed, updated_at = excluded.updated_at",
        params![name, &nonce[..], sealed, now],
    )?;
    Ok(())
}

/// Every secret's name and dates, by name.
pub fn list(conn: &Connection) -> Result<Vec<SecretInfo>> {
    let mut stmt = conn.prepare_cached("SELECT name, created_at, updated_at FROM weir_secrets ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(SecretInfo { name: r.get(0)?, created_at: crate::time::to_rfc3339(r.get(1)?), updated_at: crate::time::to_rfc3339(r.get(2)?) })
    })?;
    Ok(rows.collect::<crate::db::Result<_>>()?)
}

/// Removes secret `name`; steps granted it then get `not-found`.
pub fn remove(conn: &Connection, name: &str) -> Result<()> {
    if conn.execute("DELETE FROM weir_secrets WHERE name = ?1", [name])? == 0 {
        return Err(Error::NotFound(format!("no secret named {name} (see `weir secret list`)")));
    }
    Ok(())
}

/// The value of secret `name`: `None` when there is none or it does not open
/// with `key`. Only for a plug-in granted it.
pub fn reveal(conn: &Connection, key: &SecretKey, name: &str) -> Result<Option<String>> {
    let row: Option<(Vec<u8>, Vec<u8>)> =
        conn.prepare_cached("SELECT nonce, sealed FROM weir_secrets WHERE name = ?1")?.query_row([name], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    Ok(row.and_then(|(nonce, sealed)| open(key, name, &nonce, &sealed)))
}

fn open(key: &SecretKey, name: &str, nonce: &[u8], sealed: &[u8]) -> Option<String> {
    if nonce.len() != 12 {
        return None;
    }
    let plain = key.cipher().decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: name.as_bytes() }).ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path().join("s.db")).unwrap();
        let conn = db.connect().unwrap();
        (dir, conn)
    }

    #[test]
    fn values_are_sealed_at_rest_and_open_only_with_their_key_and_name() {
        let (_dir, conn) = db();
        let key = SecretKey::parse(&"ab".repeat(32), "test").unwrap();
        set(&conn, &key, "hook", "s3cr3t-token", 1).unwrap();
        let (nonce, sealed): (Vec<u8>, Vec<u8>) = conn.query_row("SELECT nonce, sealed FROM weir_secrets", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"s3cr3t-token"), "stored in the clear");
        assert_eq!(reveal(&conn, &key, "hook").unwrap().as_deref(), Some("s3cr3t-token"));
        // Moved to another name, it does not open.
        assert_eq!(open(&key, "other", &nonce, &sealed), None);
        let wrong = SecretKey::parse(&"cd".repeat(32), "test").unwrap();
        assert_eq!(reveal(&conn, &wrong, "hook").unwrap(), None);
        let refused = set(&conn, &wrong, "second", "x", 2).unwrap_err().to_string();
        assert!(refused.contains("differs from the one") && refused.contains("hook"), "{refused}");
        // Replacing keeps the creation date and seals again with a new nonce.
        set(&conn, &key, "hook", "rotated", 3).unwrap();
        let nonce2: Vec<u8> = conn.query_row("SELECT nonce FROM weir_secrets", [], |r| r.get(0)).unwrap();
        assert_ne!(nonce, nonce2);
        assert_eq!(reveal(&conn, &key, "hook").unwrap().as_deref(), Some("rotated"));
        assert_eq!(list(&conn).unwrap().len(), 1);
        remove(&conn, "hook").unwrap();
        assert!(remove(&conn, "hook").unwrap_err().to_string().contains("no secret named hook"));
        assert!(SecretKey::parse("abc", "WEIR_SECRET_KEY").unwrap_err().to_string().contains("64 hex digits"));
        assert!(set(&conn, &key, "bad name!", "x", 4).is_err());
        assert!(set(&conn, &key, "empty", "", 4).is_err());
    }
}
