//! Single sign-on: bearer JWTs from the platform's identity provider. Owns
//! the provider's keys (a JWKS file) and the rules a token must meet; it
//! answers who the token names and with which role, and [`crate::access`]
//! makes the caller of that.
//!
//! A token is accepted only when its signature verifies with a key of the
//! JWKS (by `kid`, or the only key), with an algorithm of that key's family
//! (RSA: RS/PS; P-256/P-384: ES256/ES384; Ed25519: EdDSA — never HMAC, and
//! `alg: none` does not parse), and its `iss`, `aud`, `exp` (and `nbf` when
//! present) hold, with 30 s of clock leeway. The JWKS file is read again
//! when a token names a key it lacks (at most every 10 s), so a provider's
//! key rotation needs no restart. Verification is the maintained
//! `jsonwebtoken` crate's (RustCrypto backend, public-key operations only).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;

use crate::access::Role;
use crate::error::{Error, Result};

/// What `serve --jwt-*` says.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_file: PathBuf,
    /// The claim holding the weir user's name (default `sub`).
    pub user_claim: String,
    /// A claim holding role names (a string or a list); the highest weir
    /// role among them is the caller's.
    pub role_claim: Option<String>,
    /// The role of a token whose claims name none.
    pub default_role: Role,
}

/// A verifier of the provider's tokens.
#[derive(Debug)]
pub struct Jwt {
    settings: JwtSettings,
    keys: Mutex<(JwkSet, Instant)>,
}

/// Who a valid token names.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub user: String,
    pub role: Role,
}

/// Least time between two reads of the JWKS file for an unknown `kid`.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

fn read_keys(path: &std::path::Path) -> Result<JwkSet> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::invalid(format!("cannot read the JWKS file {}: {e}", path.display())))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| Error::invalid(format!("the JWKS file {} is not a JWK set: {e}", path.display())))?;
    if let Some(k) = set.keys.iter().find(|k| matches!(k.algorithm, AlgorithmParameters::OctetKey(_))) {
        return Err(Error::invalid(format!(
            "the JWKS file {} holds a symmetric key{}: weir accepts only public keys (RSA, EC, Ed25519) from an identity provider",
            path.display(),
            k.common.key_id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default()
        )));
    }
    if set.keys.is_empty() {
        return Err(Error::invalid(format!("the JWKS file {} holds no keys", path.display())));
    }
    Ok(set)
}

/// The algorithms a key may verify.
fn algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        _ => vec![],
    }
}

fn refused(why: impl std::fmt::Display) -> Error {
    Error::Unauthorized(format!("the bearer JWT was refused: {why}"))
}

impl Jwt {
    /// Reads the keys; refuses a file that holds none or a symmetric one.
    pub fn new(settings: JwtSettings) -> Result<Jwt> {
        let keys = read_keys(&settings.jwks_file)?;
        Ok(Jwt { settings, keys: Mutex::new((keys, Instant::now())) })
    }

    /// Whether `token` looks like a JWT (three dot-separated parts) rather
    /// than a weir token.
    pub fn looks_like(token: &str) -> bool {
        token.split('.').count() == 3
    }

    fn key_for(&self, kid: Option<&str>) -> Result<Jwk> {
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let mut keys = self.keys.lock();
        if let Some(k) = find(&keys.0) {
            return Ok(k);
        }
        if keys.1.elapsed() >= RELOAD_EVERY {
            // Perhaps the provider rotated its keys.
            match read_keys(&self.settings.jwks_file) {
                Ok(set) => *keys = (set, Instant::now()),
                Err(e) => tracing::warn!("kept the JWKS keys read before: {e}"),
            }
            if let Some(k) = find(&keys.0) {
                return Ok(k);
            }
        }
        Err(refused(match kid {
            Some(k) => format!("no key {k:?} in the JWKS file"),
            None => "it names no key (kid) and the JWKS file holds several".into(),
        }))
    }

    /// Verifies `token` and says whom it names.
    pub fn verify(&self, token: &str) -> Result<Claimed> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(format!("its header: {e} (alg none and unknown algorithms are refused)")))?;
        let jwk = self.key_for(header.kid.as_deref())?;
        let allowed = algorithms(&jwk);
        if !allowed.contains(&header.alg) {
            return Err(refused(format!("algorithm {:?} does not fit its key", header.alg)));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| refused(format!("its key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = allowed;
        v.leeway = 30;
        v.validate_nbf = true;
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind::*;
            refused(match e.kind() {
                ExpiredSignature => "it has expired".to_string(),
                ImmatureSignature => "it is not valid yet (nbf)".into(),
                InvalidIssuer => format!("its issuer is not {}", self.settings.issuer),
                InvalidAudience => format!("its audience is not {}", self.settings.audience),
                InvalidSignature => "its signature does not verify".into(),
                other => format!("{other:?}"),
            })
        })?;
        let claims = data.claims;
        let user = claims
            .get(&self.settings.user_claim)
            .and_then(|u| u.as_str())
            .ok_or_else(|| refused(format!("it has no {} claim naming the user", self.settings.user_claim)))?
            .to_string();
        crate::names::check_name("user", &user).map_err(|e| refused(format!("its {} claim: {e}", self.settings.user_claim)))?;
        let role = match &self.settings.role_claim {
            None => self.settings.default_role,
            Some(c) => {
                let named: Vec<&str> = match claims.get(c) {
                    Some(serde_json::Value::String(s)) => vec![s.as_str()],
                    Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
                    _ => vec![],
                };
                // Admin first: the highest role named wins.
                Role::ALL.into_iter().find(|r| named.contains(&r.name())).unwrap_or(self.settings.default_role)
            }
        };
        Ok(Claimed { user, role })
    }
}
