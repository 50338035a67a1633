//! Bearer JWTs (`--jwt-jwks`): tokens signed with HS256, RS256 or ES256 by keys from a local JWKS file, their
//! `exp`, `nbf`, `iss` and `aud` checked with a bounded clock skew; the caller is the token's `sub`.
//!
//! The algorithm comes from the key, never from the token: each key of the file is bound to one algorithm
//! (its `alg`, or by its type: `oct` HS256, `RSA` RS256, `EC` P-256 ES256), the token's `kid` picks the key
//! (a file of one key needs none), and a token whose header names another algorithm is refused. The file is
//! looked at again at most once a second and re-read when it changes; a file that no longer parses keeps
//! the keys in force and says why in the log.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm},
};
use serde::Deserialize;

use super::keys::check_identity_name;
use crate::Error;

/// The largest JWKS file Ferry reads.
pub const MAX_JWKS_FILE_BYTES: u64 = 1024 * 1024;
/// The most clock skew `--jwt-leeway-secs` may allow.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// The least time between two looks at the JWKS file for a change.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How bearer JWTs are checked: the `--jwt-*` flags.
#[derive(Debug, Clone)]
pub struct JwtOptions {
    /// `--jwt-jwks`: the keys, as a JSON Web Key Set.
    pub jwks_file: PathBuf,
    /// `--jwt-issuer`: the `iss` a token must carry, if any.
    pub issuer: Option<String>,
    /// `--jwt-audience`: the `aud` a token must carry, if any; without it, tokens with an `aud` are refused.
    pub audience: Option<String>,
    /// `--jwt-leeway-secs`: the clock skew allowed on `exp` and `nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
}

/// One key of the set, bound to its algorithm.
struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The verifier: the options and the keys in force, swapped whole when the file changes.
pub struct JwtVerifier {
    options: JwtOptions,
    keys: ArcSwap<Vec<Key>>,
    /// The file's modification time when last read, and when it was last looked at.
    seen: Mutex<(Option<SystemTime>, Instant)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("options", &self.options)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Reads the JWKS file; the error names the file and the key at fault.
    pub fn load(options: JwtOptions) -> Result<Self, String> {
        if options.leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!(
                "--jwt-leeway-secs is at most {MAX_LEEWAY_SECS}, got {}",
                options.leeway_secs
            ));
        }
        let modified = modified(&options.jwks_file);
        let keys = read_keys(&options.jwks_file)?;
        Ok(JwtVerifier {
            options,
            keys: ArcSwap::from_pointee(keys),
            seen: Mutex::new((modified, Instant::now())),
        })
    }

    /// The identity a token's `sub` names, once its signature and claims hold. The error says which check
    /// failed and never repeats the token.
    pub fn verify(&self, token: &str) -> Result<Arc<str>, Error> {
        self.reload_if_changed();
        let refuse = |why: &str| Error::Unauthenticated(format!("the bearer token {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| refuse("is not a JWT"))?;
        let keys = self.keys.load();
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|key| key.id.as_deref() == Some(kid.as_str())),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or_else(|| refuse("names no key of --jwt-jwks ('kid')"))?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.options.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &self.options.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &self.options.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|error| {
            refuse(match error.kind() {
                ErrorKind::ExpiredSignature => "has expired ('exp')",
                ErrorKind::ImmatureSignature => "is not valid yet ('nbf')",
                ErrorKind::InvalidAudience => "is not for this server ('aud' is not --jwt-audience)",
                ErrorKind::InvalidIssuer => "is from another issuer ('iss' is not --jwt-issuer)",
                ErrorKind::InvalidSignature => "has a signature that does not verify",
                ErrorKind::InvalidAlgorithm => "is signed with another algorithm than its key's",
                ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                    "exp" => "has no 'exp' claim",
                    "sub" => "has no 'sub' claim",
                    "iss" => "has no 'iss' claim",
                    _ => "has no 'aud' claim",
                },
                _ => "is malformed",
            })
        })?;
        let subject = claims.claims.sub;
        check_identity_name(&subject).map_err(|_| refuse("has a 'sub' that cannot name an identity"))?;
        Ok(Arc::from(subject))
    }

    /// Looks at the file at most once every [`RECHECK_INTERVAL`]; when it changed, reads it, and keeps the
    /// keys in force if the new file does not parse.
    fn reload_if_changed(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.1.elapsed() < RECHECK_INTERVAL {
            return;
        }
        seen.1 = Instant::now();
        let modified = modified(&self.options.jwks_file);
        if modified == seen.0 {
            return;
        }
        seen.0 = modified;
        match read_keys(&self.options.jwks_file) {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "the JWKS file changed: its keys are in force");
                self.keys.store(Arc::new(keys));
            }
            Err(error) => {
                tracing::warn!(%error, "the JWKS file changed but cannot be used; the keys in force stay")
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads and checks a JWKS file: at most [`MAX_JWKS_FILE_BYTES`], one or more keys, each of a supported
/// algorithm, key ids unique.
fn read_keys(path: &Path) -> Result<Vec<Key>, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|error| format!("cannot read the JWKS file {shown}: {error}"))?
        .len();
    if size > MAX_JWKS_FILE_BYTES {
        return Err(format!(
            "the JWKS file {shown} is {size} bytes, over the limit of {MAX_JWKS_FILE_BYTES}"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the JWKS file {shown}: {error}"))?;
    parse_keys(&text).map_err(|error| format!("{shown}: {error}"))
}

/// Parses a JWKS document into keys bound to their algorithms.
fn parse_keys(text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|error| format!("not a JSON Web Key Set: {error}"))?;
    if set.keys.is_empty() {
        return Err("the key set has no keys".to_owned());
    }
    let mut keys: Vec<Key> = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        let key = key_of(jwk).map_err(|error| format!("key {}: {error}", index + 1))?;
        if key.id.is_some() && keys.iter().any(|other| other.id == key.id) {
            return Err(format!("key {}: its 'kid' is another key's too", index + 1));
        }
        keys.push(key);
    }
    if keys.len() > 1 && keys.iter().any(|key| key.id.is_none()) {
        return Err("a set of several keys needs a 'kid' on each".to_owned());
    }
    Ok(keys)
}

fn key_of(jwk: &Jwk) -> Result<Key, String> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => {
            return Err(
                "only HS256 ('oct'), RS256 ('RSA') and ES256 ('EC', P-256) keys are supported".to_owned(),
            );
        }
    };
    let algorithm = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::HS256) if by_type == Algorithm::HS256 => by_type,
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => by_type,
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => by_type,
        Some(other) => {
            return Err(format!(
                "'alg' {other:?} is not supported for this key type \
                 (HS256 for 'oct', RS256 for 'RSA', ES256 for 'EC')"
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|error| format!("unusable key: {error}"))?;
    Ok(Key {
        id: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests;
