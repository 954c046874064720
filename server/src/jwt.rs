//! JSON Web Tokens from the app's own login: `--jwt-hs256-secret-file PATH` (a shared
//! secret) and/or `--jwt-public-key-file PATH` (a PEM public key: RSA → RS256, P-256 →
//! ES256, Ed25519 → EdDSA), with optional `--jwt-issuer` / `--jwt-audience`.
//!
//! Verified with the `jsonwebtoken` crate, never by hand: the token's `alg` must be the one
//! of a configured key (so never `none`, and never an RSA public key used as an HMAC
//! secret); `exp` is required and checked; the user is `sub` (required); an admin carries
//! `"rangersync_admin": true`.

use std::path::Path;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::tokens::MAX_USER_ID;

/// The claims rangersync reads (the others are the app's).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    rangersync_admin: Option<Value>,
}

/// What `--jwt-*` configured.
#[derive(Clone, Default)]
pub struct JwtOptions {
    /// The HS256 secret (the file's bytes, one trailing newline removed).
    pub hs256_secret: Option<Vec<u8>>,
    /// A PEM public key.
    pub public_key_pem: Option<Vec<u8>>,
    /// Required `iss`, when given.
    pub issuer: Option<String>,
    /// Required `aud`, when given.
    pub audience: Option<String>,
}

/// The configured keys, each with the one algorithm it verifies.
pub struct Jwt {
    keys: Vec<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field(
                "algorithms",
                &self.keys.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Read a key file: the secret's bytes without one trailing newline.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read JWT secret file {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() < 32 {
        return Err(format!(
            "JWT secret file {} holds {} bytes; an HS256 secret needs at least 32",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The algorithm and key of a PEM public key.
fn public_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((Algorithm::EdDSA, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((Algorithm::ES256, k));
    }
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, k));
    }
    Err("the JWT public key is not a PEM RSA, P-256 or Ed25519 public key".to_owned())
}

impl Jwt {
    /// The verifier for `opts`; `None` when no key is configured.
    pub fn new(opts: &JwtOptions) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &opts.hs256_secret {
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        }
        if let Some(pem) = &opts.public_key_pem {
            keys.push(public_key(pem)?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            keys,
            issuer: opts.issuer.clone(),
            audience: opts.audience.clone(),
        }))
    }

    /// Who a token names, or why it is refused (a message that never holds the token).
    pub fn caller(&self, token: &str) -> Result<Caller, String> {
        let header = decode_header(token).map_err(|e| format!("not a valid JWT: {e}"))?;
        let (alg, key) = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or_else(|| format!("JWT alg {:?} matches no configured key", header.alg))?;
        let mut validation = Validation::new(*alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = 30;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data =
            decode::<Claims>(token, key, &validation).map_err(|e| format!("JWT refused: {e}"))?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > MAX_USER_ID {
            return Err(format!("JWT sub must be 1 to {MAX_USER_ID} bytes"));
        }
        Ok(Caller {
            user_id: sub,
            admin: data.claims.rangersync_admin == Some(Value::Bool(true)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn claims() -> Value {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        json!({ "sub": "erin", "exp": exp, "rangersync_admin": true })
    }

    #[test]
    fn each_kind_of_public_key_accepts_only_its_own_algorithm() {
        let fixtures = [
            (
                include_str!("../tests/fixtures/rsa-public.pem"),
                include_str!("../tests/fixtures/rsa-private.pem"),
                Algorithm::RS256,
            ),
            (
                include_str!("../tests/fixtures/p256-public.pem"),
                include_str!("../tests/fixtures/p256-private.pem"),
                Algorithm::ES256,
            ),
            (
                include_str!("../tests/fixtures/ed25519-public.pem"),
                include_str!("../tests/fixtures/ed25519-private.pem"),
                Algorithm::EdDSA,
            ),
        ];
        for (public, private, alg) in fixtures {
            let jwt = Jwt::new(&JwtOptions {
                public_key_pem: Some(public.as_bytes().to_vec()),
                ..JwtOptions::default()
            })
            .unwrap()
            .unwrap();
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
                Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
                _ => EncodingKey::from_ed_pem(private.as_bytes()),
            }
            .unwrap();
            let token = encode(&Header::new(alg), &claims(), &key).unwrap();
            let caller = jwt
                .caller(&token)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!((caller.user_id.as_str(), caller.admin), ("erin", true));
            let hmac = encode(
                &Header::new(Algorithm::HS256),
                &claims(),
                &EncodingKey::from_secret(public.as_bytes()),
            )
            .unwrap();
            assert!(
                jwt.caller(&hmac).is_err(),
                "{alg:?}: the public key as an HMAC secret"
            );
        }
    }
}
