//! JWKS → verification keys, compiled once per policy load. A key is only ever used
//! with the algorithms its provider allows and its own type supports, so an RSA public
//! key can never be turned into an HMAC secret (RS/HS confusion).
//!
//! RSA and Ed25519 signatures are checked with `rsa` and `ed25519-dalek`, which are several
//! times faster inside wasm than jwt-simple's pure-Rust backends; the token rules around them
//! stay jwt-simple's (`rules`). HMAC and ECDSA stay on jwt-simple (ECDSA already uses the
//! `p256`/`p384` crates there).

mod p256_fixed;
mod rsa_pkcs1;

use rsa_pkcs1::Hash;
mod rules;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use rsa::sha2::{Sha256, Sha384, Sha512};
use rsa::{BoxedUint, RsaPublicKey};
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

    /// The `alg` name a token must carry.
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
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

/// A key ready to verify one algorithm. Each variant fixes the algorithm (and so the
/// padding and hash), so a key is never used with another one.
pub enum VerifyingKey {
    HS256(HS256Key),
    HS384(HS384Key),
    HS512(HS512Key),
    RS256(rsa::pkcs1v15::VerifyingKey<Sha256>),
    RS384(rsa::pkcs1v15::VerifyingKey<Sha384>),
    RS512(rsa::pkcs1v15::VerifyingKey<Sha512>),
    PS256(rsa::pss::VerifyingKey<Sha256>),
    PS384(rsa::pss::VerifyingKey<Sha384>),
    PS512(rsa::pss::VerifyingKey<Sha512>),
    ES256(Box<p256_fixed::P256Verifier>),
    ES384(ES384PublicKey),
    EdDSA(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (HMAC secrets).
        f.write_str("VerifyingKey(..)")
    }
}

/// An RSA signature of the key's exact size that verifies over `input`.
fn rsa_ok<S, K>(key: &K, input: &[u8], signature: &[u8]) -> bool
where
    K: rsa::signature::Verifier<S>,
    S: for<'a> TryFrom<&'a [u8]>,
{
    S::try_from(signature).is_ok_and(|s| key.verify(input, &s).is_ok())
}

/// RS*: the e = 65537 fast path, else `rsa` (`fallback`).
fn pkcs1_ok(
    public: &RsaPublicKey,
    hash: Hash,
    input: &[u8],
    sig: &[u8],
    fallback: impl FnOnce() -> bool,
) -> bool {
    if rsa_pkcs1::is_f4(public) {
        rsa_pkcs1::verify(public, hash, input, sig)
    } else {
        fallback()
    }
}

impl VerifyingKey {
    /// Verifies signature, header, issuer, audience and times with jwt-simple's rules.
    pub fn verify(&self, token: &str, options: VerificationOptions) -> bool {
        let o = &options;
        let ok = |alg: Algorithm, check: &dyn Fn(&[u8], &[u8]) -> bool| {
            // jwt-simple also accepts `Ed25519` for EdDSA; Tollgate's pipeline refuses that
            // name earlier (`Algorithm::from_name`), the key accepts what jwt-simple did.
            let alias: &[&str] = if alg == Algorithm::EdDSA {
                &["EdDSA", "Ed25519"]
            } else {
                &[]
            };
            let names = [alg.name()];
            rules::verify(
                token,
                o,
                if alias.is_empty() { &names } else { alias },
                check,
            )
        };
        match self {
            Self::HS256(k) => k
                .verify_token::<NoCustomClaims>(token, Some(options))
                .is_ok(),
            Self::HS384(k) => k
                .verify_token::<NoCustomClaims>(token, Some(options))
                .is_ok(),
            Self::HS512(k) => k
                .verify_token::<NoCustomClaims>(token, Some(options))
                .is_ok(),
            Self::RS256(k) => ok(Algorithm::RS256, &|i, s| {
                pkcs1_ok(k.as_ref(), Hash::Sha256, i, s, || rsa_ok(k, i, s))
            }),
            Self::RS384(k) => ok(Algorithm::RS384, &|i, s| {
                pkcs1_ok(k.as_ref(), Hash::Sha384, i, s, || rsa_ok(k, i, s))
            }),
            Self::RS512(k) => ok(Algorithm::RS512, &|i, s| {
                pkcs1_ok(k.as_ref(), Hash::Sha512, i, s, || rsa_ok(k, i, s))
            }),
            Self::PS256(k) => ok(Algorithm::PS256, &|i, s| rsa_ok(k, i, s)),
            Self::PS384(k) => ok(Algorithm::PS384, &|i, s| rsa_ok(k, i, s)),
            Self::PS512(k) => ok(Algorithm::PS512, &|i, s| rsa_ok(k, i, s)),
            Self::ES256(k) => ok(Algorithm::ES256, &|i, s| k.verify(i, s)),
            Self::ES384(k) => k
                .verify_token::<NoCustomClaims>(token, Some(options))
                .is_ok(),
            Self::EdDSA(k) => ok(Algorithm::EdDSA, &|i, s| {
                // Strict: non-canonical or small-order points are refused, as before.
                ed25519_dalek::Signature::from_slice(s)
                    .is_ok_and(|s| k.verify_strict(i, &s).is_ok())
            }),
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
            let key = rsa_key(&n, &e).map_err(|e| format!("invalid {algorithm:?} key: {e}"))?;
            match algorithm {
                Algorithm::RS256 => VerifyingKey::RS256(rsa::pkcs1v15::VerifyingKey::new(key)),
                Algorithm::RS384 => VerifyingKey::RS384(rsa::pkcs1v15::VerifyingKey::new(key)),
                Algorithm::RS512 => VerifyingKey::RS512(rsa::pkcs1v15::VerifyingKey::new(key)),
                Algorithm::PS256 => VerifyingKey::PS256(rsa::pss::VerifyingKey::new(key)),
                Algorithm::PS384 => VerifyingKey::PS384(rsa::pss::VerifyingKey::new(key)),
                _ => VerifyingKey::PS512(rsa::pss::VerifyingKey::new(key)),
            }
        }
        Algorithm::ES256 => VerifyingKey::ES256(Box::new(p256_fixed::P256Verifier::from_sec1(
            &ec_point(32)?,
        )?)),
        Algorithm::ES384 => {
            VerifyingKey::ES384(ES384PublicKey::from_bytes(&ec_point(48)?).map_err(bad)?)
        }
        Algorithm::EdDSA => {
            let x: [u8; 32] = field_bytes(jwk, "x")?
                .try_into()
                .map_err(|_| "Ed25519 keys must be 32 bytes".to_string())?;
            VerifyingKey::EdDSA(
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|e| format!("invalid {algorithm:?} key: {e}"))?,
            )
        }
    })
}

/// The RSA public key from JWK `n` and `e` (big-endian). `rsa` checks the exponent range and
/// a modulus of at most 4096 bits.
fn rsa_key(n: &[u8], e: &[u8]) -> Result<RsaPublicKey, String> {
    let bits = |b: &[u8]| u32::try_from(b.len().max(1) * 8).map_err(|_| "too large".to_string());
    let n = BoxedUint::from_be_slice(n, bits(n)?).map_err(|e| e.to_string())?;
    let e = BoxedUint::from_be_slice(e, bits(e)?).map_err(|e| e.to_string())?;
    RsaPublicKey::new(n, e).map_err(|e| e.to_string())
}
