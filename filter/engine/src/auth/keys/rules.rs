//! jwt-simple 0.15's token rules (`Token::verify` and `JWTClaims::validate`) around a
//! signature check done by another backend. RSA and Ed25519 signatures are verified with
//! crates that are several times faster inside wasm than jwt-simple's pure-Rust ones; the
//! header and claims checks must not change with them, so they are restated here and tested
//! against jwt-simple itself (`tests/jwt_backends.rs`).
//!
//! One deliberate difference: jwt-simple's HMAC-only `salt` header is not looked at.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;

/// jwt-simple's default bound on the header segment.
const MAX_HEADER_LENGTH: usize = 8192;

/// Checks `token` for an algorithm named one of `algs`: header rules, then the signature over the
/// signing input (`verify_signature(input, signature)`), then the claims.
pub(super) fn verify(
    token: &str,
    options: &VerificationOptions,
    algs: &[&str],
    verify_signature: impl FnOnce(&[u8], &[u8]) -> bool,
) -> bool {
    if options
        .max_token_length
        .is_some_and(|max| token.len() > max)
    {
        return false;
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if header_b64.len() > options.max_header_length.unwrap_or(MAX_HEADER_LENGTH) {
        return false;
    }
    let Ok(header) = Token::decode_metadata(token) else {
        return false;
    };
    if !header_allowed(&header, options, algs) {
        return false;
    }
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return false;
    };
    let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    if !verify_signature(signed, &signature) {
        return false;
    }
    let Ok(claims_json) = URL_SAFE_NO_PAD.decode(claims_b64) else {
        return false;
    };
    serde_json::from_slice::<JWTClaims<NoCustomClaims>>(&claims_json)
        .is_ok_and(|claims| claims_valid(&claims, options))
}

fn header_allowed(header: &TokenMetadata, options: &VerificationOptions, algs: &[&str]) -> bool {
    if header.critical().is_some_and(|crit| !crit.is_empty()) {
        return false;
    }
    let typ = header.signature_type().map(str::to_uppercase);
    match (&options.required_signature_type, &typ) {
        (Some(want), Some(typ)) if *typ == want.to_uppercase() => {}
        (Some(_), _) => return false,
        (None, Some(typ)) if typ != "JWT" && !typ.ends_with("+JWT") => return false,
        (None, _) => {}
    }
    if let Some(want) = &options.required_content_type
        && header.content_type().map(str::to_uppercase) != Some(want.to_uppercase())
    {
        return false;
    }
    if !algs.contains(&header.algorithm()) {
        return false;
    }
    if let Some(want) = &options.required_key_id
        && header.key_id() != Some(want.as_str())
    {
        return false;
    }
    true
}

/// Times are compared in coarsetime ticks, saturating where jwt-simple would overflow.
fn claims_valid(claims: &JWTClaims<NoCustomClaims>, options: &VerificationOptions) -> bool {
    let ticks = |d: Duration| d.as_ticks();
    let now = ticks(
        options
            .artificial_time
            .unwrap_or_else(Clock::now_since_epoch),
    );
    let tolerance = ticks(options.time_tolerance.unwrap_or_default());
    let iat = claims.issued_at.map(ticks);
    if let Some(reject_before) = options.reject_before
        && iat.is_none_or(|iat| iat < ticks(reject_before))
    {
        return false;
    }
    if !options.accept_future && iat.is_some_and(|iat| iat > now.saturating_add(tolerance)) {
        return false;
    }
    if let Some(max_validity) = options.max_validity {
        match iat {
            Some(iat) if now <= iat || now - iat <= ticks(max_validity) => {}
            _ => return false,
        }
    }
    if !options.accept_future
        && let Some(nbf) = claims.invalid_before
        && now.saturating_add(tolerance) < ticks(nbf)
    {
        return false;
    }
    if let Some(exp) = claims.expires_at
        && !(now >= tolerance && now - tolerance <= ticks(exp))
    {
        return false;
    }
    let required = |want: &Option<String>, have: &Option<String>| match want {
        Some(want) => have.as_ref() == Some(want),
        None => true,
    };
    if let Some(issuers) = &options.allowed_issuers
        && !claims.issuer.as_ref().is_some_and(|i| issuers.contains(i))
    {
        return false;
    }
    if !required(&options.required_subject, &claims.subject)
        || !required(&options.required_nonce, &claims.nonce)
    {
        return false;
    }
    if let Some(audiences) = &options.allowed_audiences
        && !claims
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(audiences))
    {
        return false;
    }
    true
}
