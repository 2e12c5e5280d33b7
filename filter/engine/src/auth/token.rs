//! Reading a JWT without trusting it: size, structure, header and claims, decoded with
//! hard bounds. Everything here is cheap; it runs before any signature check so a forged
//! or malformed token costs no crypto.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AuthReason;

/// The protected header fields Tollgate looks at. Presence of the key-carrying fields
/// is recorded so such tokens can be refused outright.
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
    jku: Option<Value>,
    jwk: Option<Value>,
    x5u: Option<Value>,
    x5c: Option<Value>,
}

#[derive(Debug)]
pub struct UnverifiedToken {
    pub alg: String,
    /// Empty or missing signatures are refused before any key is tried.
    pub has_signature: bool,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

/// Header segments are small in practice; refusing big ones bounds JSON work.
const MAX_HEADER_SEGMENT: usize = 1024;

pub fn parse_unverified(token: &str, max_bytes: usize) -> Result<UnverifiedToken, AuthReason> {
    if token.len() > max_bytes {
        return Err(AuthReason::TokenTooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthReason::Malformed);
    };
    if header_b64.len() > MAX_HEADER_SEGMENT {
        return Err(AuthReason::Malformed);
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| AuthReason::Malformed)?;
    let header: RawHeader =
        serde_json::from_slice(&header_json).map_err(|_| AuthReason::Malformed)?;
    if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() || header.x5c.is_some()
    {
        // Keys come from the policy's JWKS only; a token naming its own key is an attack.
        return Err(AuthReason::EmbeddedKey);
    }
    if header.crit.is_some() {
        return Err(AuthReason::CriticalHeader);
    }
    let alg = header.alg.ok_or(AuthReason::Malformed)?;
    let claims_json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| AuthReason::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&claims_json).map_err(|_| AuthReason::Malformed)?;
    Ok(UnverifiedToken {
        alg,
        has_signature: !signature_b64.is_empty(),
        kid: header.kid,
        claims,
    })
}

/// A claim by dotted path (`address.country`).
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |value, key| value.get(key))
}

/// A claim as a header value: strings as they are, numbers and booleans printed, arrays
/// joined with `,`. `None` for objects, nulls or anything unsafe in a header.
pub fn claim_as_header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => claim_as_header_value(other),
                })
                .collect();
            parts?.join(",")
        }
        Value::Object(_) | Value::Null => return None,
    };
    crate::headers::is_valid_header_value(text.as_bytes()).then_some(text)
}

/// A set-valued claim: an array of strings, or a space-separated string (OAuth scope).
pub fn claim_as_set(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => s.split(' ').filter(|p| !p.is_empty()).collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A numeric date claim (seconds since the epoch).
pub fn numeric_date(claims: &Map<String, Value>, name: &str) -> Option<Option<u64>> {
    match claims.get(name) {
        None => Some(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some),
    }
}
