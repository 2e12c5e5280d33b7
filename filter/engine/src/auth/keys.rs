//! JWKS → verification keys, compiled once per policy load. A key is only ever used
//! with the algorithms its provider allows and its own type supports, so an RSA public
//! key can never be turned into an HMAC secret (RS/HS confusion).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde_json::Value;

/// The algorithms Tollgate accepts at all. `none` is not one of them in any spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Exact, case-sensitive names as in RFC 7518 (a JWT's `alg` is case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    fn family(self) -> KeyFamily {
        match self {
            Self::HS256 | Self::HS384 | Self::HS512 => KeyFamily::Oct,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                KeyFamily::Rsa
            }
            Self::ES256 => KeyFamily::P256,
            Self::ES384 => KeyFamily::P384,
            Self::EdDSA => KeyFamily::Ed25519,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Oct,
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// A key ready to verify one algorithm.
pub enum VerifyingKey {
    HS256(HS256Key),
    HS384(HS384Key),
    HS512(HS512Key),
    RS256(RS256PublicKey),
    RS384(RS384PublicKey),
    RS512(RS512PublicKey),
    PS256(PS256PublicKey),
    PS384(PS384PublicKey),
    PS512(PS512PublicKey),
    ES256(ES256PublicKey),
    ES384(ES384PublicKey),
    EdDSA(Ed25519PublicKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (HMAC secrets).
        f.write_str("VerifyingKey(..)")
    }
}

impl VerifyingKey {
    /// Verifies signature, issuer, audience and times with jwt-simple's rules.
    pub fn verify(&self, token: &str, options: VerificationOptions) -> bool {
        let o = Some(options);
        match self {
            Self::HS256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::HS384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::HS512(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::RS256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::RS384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::RS512(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::PS256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::PS384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::PS512(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::ES256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::ES384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Self::EdDSA(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
        }
    }
}

/// One usable (key, algorithm) pair.
#[derive(Debug)]
pub struct KeyEntry {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: VerifyingKey,
}

fn field_bytes(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("`{name}` is not base64url"))
}

/// Compiles a JWKS for the given allowed algorithms. Keys that do not fit any allowed
/// algorithm are skipped; malformed keys are errors (reported with their index).
pub fn compile_jwks(
    jwks: &Value,
    allowed: &[Algorithm],
) -> Result<Vec<KeyEntry>, Vec<(usize, String)>> {
    let jwks = match jwks {
        Value::String(text) => serde_json::from_str::<Value>(text)
            .map_err(|e| vec![(0, format!("not a JWKS document: {e}"))])?,
        other => other.clone(),
    };
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Err(vec![(0, "a JWKS needs a `keys` array".to_string())]);
    };
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        if jwk
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue; // encryption keys never verify signatures
        }
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
        let jwk_alg = jwk.get("alg").and_then(Value::as_str);
        let family = match jwk.get("kty").and_then(Value::as_str) {
            Some("oct") => KeyFamily::Oct,
            Some("RSA") => KeyFamily::Rsa,
            Some("EC") => match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => KeyFamily::P256,
                Some("P-384") => KeyFamily::P384,
                other => {
                    errors.push((
                        i,
                        format!("unsupported EC curve {:?}", other.unwrap_or("(none)")),
                    ));
                    continue;
                }
            },
            Some("OKP") => match jwk.get("crv").and_then(Value::as_str) {
                Some("Ed25519") => KeyFamily::Ed25519,
                other => {
                    errors.push((
                        i,
                        format!("unsupported OKP curve {:?}", other.unwrap_or("(none)")),
                    ));
                    continue;
                }
            },
            other => {
                errors.push((
                    i,
                    format!("unsupported key type {:?}", other.unwrap_or("(none)")),
                ));
                continue;
            }
        };
        for &algorithm in allowed {
            if algorithm.family() != family {
                continue;
            }
            if let Some(a) = jwk_alg
                && Algorithm::from_name(a) != Some(algorithm)
            {
                continue; // the key says which algorithm it is for
            }
            match build_key(jwk, algorithm) {
                Ok(key) => entries.push(KeyEntry {
                    kid: kid.clone(),
                    algorithm,
                    key,
                }),
                Err(e) => {
                    errors.push((i, e));
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

fn build_key(jwk: &Value, algorithm: Algorithm) -> Result<VerifyingKey, String> {
    let bad = |e: jwt_simple::Error| format!("invalid {algorithm:?} key: {e}");
    let ec_point = |len: usize| -> Result<Vec<u8>, String> {
        let (x, y) = (field_bytes(jwk, "x")?, field_bytes(jwk, "y")?);
        if x.len() != len || y.len() != len {
            return Err(format!("EC coordinates must be {len} bytes"));
        }
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Ok(point)
    };
    Ok(match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let k = field_bytes(jwk, "k")?;
            if k.len() < 32 {
                return Err("HMAC secrets must be at least 32 bytes".to_string());
            }
            match algorithm {
                Algorithm::HS256 => VerifyingKey::HS256(HS256Key::from_bytes(&k)),
                Algorithm::HS384 => VerifyingKey::HS384(HS384Key::from_bytes(&k)),
                _ => VerifyingKey::HS512(HS512Key::from_bytes(&k)),
            }
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let (n, e) = (field_bytes(jwk, "n")?, field_bytes(jwk, "e")?);
            if n.len() < 256 {
                return Err("RSA keys must be at least 2048 bits".to_string());
            }
            match algorithm {
                Algorithm::RS256 => {
                    VerifyingKey::RS256(RS256PublicKey::from_components(&n, &e).map_err(bad)?)
                }
                Algorithm::RS384 => {
                    VerifyingKey::RS384(RS384PublicKey::from_components(&n, &e).map_err(bad)?)
                }
                Algorithm::RS512 => {
                    VerifyingKey::RS512(RS512PublicKey::from_components(&n, &e).map_err(bad)?)
                }
                Algorithm::PS256 => {
                    VerifyingKey::PS256(PS256PublicKey::from_components(&n, &e).map_err(bad)?)
                }
                Algorithm::PS384 => {
                    VerifyingKey::PS384(PS384PublicKey::from_components(&n, &e).map_err(bad)?)
                }
                _ => VerifyingKey::PS512(PS512PublicKey::from_components(&n, &e).map_err(bad)?),
            }
        }
        Algorithm::ES256 => {
            VerifyingKey::ES256(ES256PublicKey::from_bytes(&ec_point(32)?).map_err(bad)?)
        }
        Algorithm::ES384 => {
            VerifyingKey::ES384(ES384PublicKey::from_bytes(&ec_point(48)?).map_err(bad)?)
        }
        Algorithm::EdDSA => {
            let x = field_bytes(jwk, "x")?;
            VerifyingKey::EdDSA(Ed25519PublicKey::from_bytes(&x).map_err(bad)?)
        }
    })
}
