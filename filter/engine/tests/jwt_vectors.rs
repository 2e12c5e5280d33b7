//! JWT test vectors: `tests/vectors/jwt.json` holds the issuers' key sets (public and
//! private, test-only), and for each case the token, its decoded header and payload, and
//! the outcome Tollgate must give. Every hostile shape from the threat list is a case.
//! Regenerate (new keys, same cases): `cargo test --release -p tollgate-engine --test
//! jwt_vectors -- --ignored regenerate`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use tollgate_engine::{Decision, Engine, Policy, RequestHead};

/// 2026-01-01T00:00:00Z: the virtual "now" of every case.
const NOW: u64 = 1_767_225_600;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/jwt.json")
}

fn policy_for(vectors: &Value) -> String {
    let jwks = |name: &str| vectors["issuers"][name]["jwks"].to_string();
    format!(
        r#"
version: 1
auth:
  jwt_providers:
    - name: taxpayers
      issuer: https://auth.tax.example
      audiences: [refund-portal]
      algorithms: [ES256, RS256, EdDSA]
      clock_skew_seconds: 30
      max_age_seconds: 7200
      required_claims: [sub, country]
      jwks: {{ inline: {taxpayers} }}
      claims_to_headers: [{{ claim: country, header: x-tollgate-country }}, {{ claim: roles, header: x-tollgate-roles }}]
      identity: {{ tenant_value: tax-portal }}
    - name: partners
      issuer: https://partners.example
      algorithms: [HS256]
      jwks: {{ inline: {partners} }}
      identity: {{ tenant_claim: tid, plan_claim: plan }}
    - name: mixed
      issuer: https://mixed.example
      algorithms: [RS256, HS256]
      jwks: {{ inline: {mixed} }}
routes:
  - name: api
    match: {{ path: {{ prefix: / }} }}
    cluster: origin
    auth: {{ accept: [taxpayers, partners, mixed] }}
"#,
        taxpayers = jwks("taxpayers"),
        partners = jwks("partners"),
        mixed = jwks("mixed"),
    )
}

#[test]
fn every_vector_gives_its_outcome() {
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let engine = Engine::new(Policy::load(&policy_for(&vectors)).unwrap(), 1);
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 25, "the vector set lost cases");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let token = case["token"].as_str().unwrap();
        let request = RequestHead::from_pairs([
            (":method", "GET".to_string()),
            (":path", "/v1/x".to_string()),
            (":authority", "api".to_string()),
            ("authorization", format!("Bearer {token}")),
        ]);
        let outcome = match engine.on_request_headers(
            request,
            NOW * 1000,
            &tollgate_engine::MemorySharedData::default(),
        ) {
            Decision::Forward(_) => "ok".to_string(),
            Decision::Reply(r) => format!("{}:{}", r.status, r.detail.unwrap_or("-")),
        };
        if outcome != case["expect"].as_str().unwrap() {
            failures.push(format!(
                "{name}: expected {}, got {outcome}",
                case["expect"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vectors_document_their_tokens() {
    // Decoded header and payload beside each token must be what the token carries, so
    // a reader can trust the file.
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    for case in vectors["cases"].as_array().unwrap() {
        let token = case["token"].as_str().unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        if let (Some(h), Value::Object(_)) = (parts.first(), &case["header"])
            && let Ok(bytes) = B64.decode(h)
        {
            let decoded: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(decoded, case["header"], "{}", case["name"]);
        }
    }
}

/// Writes a fresh vector file. Slow in debug builds (RSA key generation): use --release.
#[test]
#[ignore]
fn regenerate() {
    use jwt_simple::prelude::*;

    let es = ES256KeyPair::generate().with_key_id("es-1");
    let es_other = ES256KeyPair::generate().with_key_id("es-1");
    let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("rs-1");
    let ed = Ed25519KeyPair::generate().with_key_id("ed-1");
    let hs_secret: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let hs = HS256Key::from_bytes(&hs_secret).with_key_id("hs-1");
    let mixed_rs = RS256KeyPair::generate(2048).unwrap().with_key_id("mx-1");

    let b64 = |b: &[u8]| B64.encode(b);
    let rsa_jwk = |k: &RS256KeyPair, kid: &str| {
        let c = k.public_key().to_components();
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
    };
    let es_point = es.public_key().public_key().to_bytes_uncompressed();
    let jwks_tax = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "es-1", "x": b64(&es_point[1..33]), "y": b64(&es_point[33..65])},
        rsa_jwk(&rs, "rs-1"),
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(&ed.public_key().to_bytes())},
    ]});
    let jwks_partners = json!({"keys": [{"kty": "oct", "kid": "hs-1", "k": b64(&hs_secret)}]});
    let jwks_mixed = json!({"keys": [rsa_jwk(&mixed_rs, "mx-1")]});

    let tax_claims = |extra: Value| {
        let mut c = json!({
            "iss": "https://auth.tax.example", "aud": "refund-portal", "sub": "u1",
            "pan": "XXXXX1234Y", "country": "IN", "roles": ["taxpayer"],
            "iat": NOW - 60, "exp": NOW + 1800,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    // jwt-simple signs the standard claims itself; build JWTClaims from our JSON.
    let sign_with = |claims: &Value, sign: &dyn Fn(JWTClaims<Value>) -> String| {
        let mut c: JWTClaims<Value> =
            Claims::with_custom_claims(Value::Null, Duration::from_secs(1));
        c.issued_at = claims
            .get("iat")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        c.expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        c.invalid_before = claims
            .get("nbf")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        c.issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_string);
        c.subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string);
        c.audiences = claims
            .get("aud")
            .and_then(Value::as_str)
            .map(|a| Audiences::AsString(a.to_string()));
        let mut custom = claims.clone();
        for k in ["iat", "exp", "nbf", "iss", "sub", "aud"] {
            custom.as_object_mut().unwrap().remove(k);
        }
        c.custom = custom;
        sign(c)
    };
    let es_sign = |c: JWTClaims<Value>| es.sign(c).unwrap();
    let rs_sign = |c: JWTClaims<Value>| rs.sign(c).unwrap();
    let ed_sign = |c: JWTClaims<Value>| ed.sign(c).unwrap();
    let other_sign = |c: JWTClaims<Value>| es_other.sign(c).unwrap();
    // Hand-built tokens for hostile headers: HMAC with the partners' real secret, so
    // only the header makes them hostile.
    let raw = |header: Value, payload: Value, secret: Option<&[u8]>| {
        use hmac::{Hmac, Mac};
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        );
        let signature = match secret {
            Some(s) => {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(s).unwrap();
                mac.update(signing_input.as_bytes());
                b64(&mac.finalize().into_bytes())
            }
            None => String::new(),
        };
        format!("{signing_input}.{signature}")
    };
    let partner_claims = json!({"iss": "https://partners.example", "sub": "p1", "tid": "acme", "plan": "pro", "iat": NOW - 10, "exp": NOW + 600});
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": "hs-1"});

    let valid_es = sign_with(&tax_claims(json!({})), &es_sign);
    let parts: Vec<&str> = valid_es.split('.').collect();
    let (es_h, es_p) = (parts[0].to_string(), parts[1].to_string());
    let rsa_pem_public = rs.public_key().to_pem().unwrap();

    let mut cases: Vec<(String, String, &str)> = vec![
        ("valid ES256".into(), valid_es.clone(), "ok"),
        (
            "valid RS256".into(),
            sign_with(&tax_claims(json!({})), &rs_sign),
            "ok",
        ),
        (
            "valid EdDSA".into(),
            sign_with(&tax_claims(json!({})), &ed_sign),
            "ok",
        ),
        (
            "valid HS256 partner".into(),
            raw(hs_header.clone(), partner_claims.clone(), Some(&hs_secret)),
            "ok",
        ),
        (
            "valid HS256 via jwt-simple".into(),
            hs.authenticate(
                Claims::with_custom_claims(json!({"tid": "acme"}), Duration::from_secs(600))
                    .with_issuer("https://partners.example")
                    .with_subject("p2"),
            )
            .map(|_| String::new())
            .unwrap_or_default(),
            "skip",
        ),
        (
            "alg none".into(),
            raw(json!({"alg": "none"}), tax_claims(json!({})), None),
            "401:algorithm_not_allowed",
        ),
        (
            "alg None".into(),
            raw(json!({"alg": "None"}), tax_claims(json!({})), None),
            "401:algorithm_not_allowed",
        ),
        (
            "alg NONE with a signature".into(),
            format!("{}.{}.c2ln", b64(br#"{"alg":"NONE"}"#), es_p),
            "401:algorithm_not_allowed",
        ),
        (
            "alg nOnE".into(),
            raw(
                json!({"alg": "nOnE", "typ": "JWT"}),
                tax_claims(json!({})),
                None,
            ),
            "401:algorithm_not_allowed",
        ),
        (
            "alg outside the provider list (HS256 for taxpayers)".into(),
            raw(
                json!({"alg": "HS256"}),
                tax_claims(json!({})),
                Some(&hs_secret),
            ),
            "401:algorithm_not_allowed",
        ),
        (
            "RS/HS confusion: HS256 signed with the RSA public key PEM".into(),
            raw(
                json!({"alg": "HS256", "kid": "mx-1"}),
                json!({"iss": "https://mixed.example", "sub": "x", "exp": NOW + 600}),
                Some(mixed_rs.public_key().to_pem().unwrap().as_bytes()),
            ),
            "401:unknown_key_id",
        ),
        (
            "RS/HS confusion without kid".into(),
            raw(
                json!({"alg": "HS256"}),
                json!({"iss": "https://mixed.example", "sub": "x", "exp": NOW + 600}),
                Some(rsa_pem_public.as_bytes()),
            ),
            "401:bad_signature",
        ),
        (
            "embedded jwk".into(),
            raw(
                json!({"alg": "HS256", "kid": "hs-1", "jwk": {"kty": "oct", "k": "AAAA"}}),
                partner_claims.clone(),
                Some(&hs_secret),
            ),
            "401:embedded_key",
        ),
        (
            "jku header".into(),
            raw(
                json!({"alg": "HS256", "kid": "hs-1", "jku": "https://evil.example/jwks"}),
                partner_claims.clone(),
                Some(&hs_secret),
            ),
            "401:embedded_key",
        ),
        (
            "x5u header".into(),
            raw(
                json!({"alg": "HS256", "kid": "hs-1", "x5u": "https://evil.example/cert"}),
                partner_claims.clone(),
                Some(&hs_secret),
            ),
            "401:embedded_key",
        ),
        (
            "unknown crit".into(),
            raw(
                json!({"alg": "HS256", "kid": "hs-1", "crit": ["exp-ext"], "exp-ext": 1}),
                partner_claims.clone(),
                Some(&hs_secret),
            ),
            "401:critical_header",
        ),
        (
            "empty signature".into(),
            format!("{es_h}.{es_p}."),
            "401:bad_signature",
        ),
        (
            "truncated signature".into(),
            valid_es[..valid_es.len() - 10].to_string(),
            "401:bad_signature",
        ),
        (
            "ECDSA r=s=0".into(),
            format!("{es_h}.{es_p}.{}", b64(&[0u8; 64])),
            "401:bad_signature",
        ),
        (
            "signed by another key with the same kid".into(),
            sign_with(&tax_claims(json!({})), &other_sign),
            "401:bad_signature",
        ),
        (
            "bad base64 in header".into(),
            format!("e$$.{es_p}.abc"),
            "401:malformed",
        ),
        (
            "bad JSON in payload".into(),
            format!("{es_h}.{}.abc", b64(b"{not json")),
            "401:malformed",
        ),
        (
            "two segments".into(),
            format!("{es_h}.{es_p}"),
            "401:malformed",
        ),
        (
            "expired".into(),
            sign_with(
                &tax_claims(json!({"iat": NOW - 4000, "exp": NOW - 3600})),
                &es_sign,
            ),
            "401:expired",
        ),
        (
            "not yet valid".into(),
            sign_with(&tax_claims(json!({"nbf": NOW + 600})), &es_sign),
            "401:not_yet_valid",
        ),
        (
            "issued in the future".into(),
            sign_with(&tax_claims(json!({"iat": NOW + 600})), &es_sign),
            "401:not_yet_valid",
        ),
        (
            "too old for max_age".into(),
            sign_with(
                &tax_claims(json!({"iat": NOW - 9000, "exp": NOW + 600})),
                &es_sign,
            ),
            "401:too_old",
        ),
        (
            "wrong issuer".into(),
            sign_with(
                &tax_claims(json!({"iss": "https://evil.example"})),
                &es_sign,
            ),
            "401:unknown_issuer",
        ),
        (
            "wrong audience".into(),
            sign_with(&tax_claims(json!({"aud": "another-app"})), &es_sign),
            "401:wrong_audience",
        ),
        (
            "missing required claim".into(),
            sign_with(&tax_claims(json!({"country": null})), &es_sign),
            "401:missing_claim",
        ),
        (
            "no exp".into(),
            sign_with(&tax_claims(json!({"exp": null})), &es_sign),
            "401:missing_claim",
        ),
        (
            "unknown kid".into(),
            raw(
                json!({"alg": "HS256", "kid": "hs-9"}),
                partner_claims.clone(),
                Some(&hs_secret),
            ),
            "401:unknown_key_id",
        ),
        (
            "token of many kilobytes".into(),
            sign_with(&tax_claims(json!({"pad": "x".repeat(20_000)})), &es_sign),
            "401:token_too_large",
        ),
    ];
    cases.retain(|(_, _, expect)| *expect != "skip");
    let decode = |part: Option<&str>| {
        part.and_then(|p| B64.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or(Value::Null)
    };
    let cases: Vec<Value> = cases
        .into_iter()
        .map(|(name, token, expect)| {
            let mut parts = token.split('.');
            let header = decode(parts.next());
            let payload = decode(parts.next());
            let payload = if token.len() > 4096 { json!("(large; see token)") } else { payload };
            json!({"name": name, "expect": expect, "header": header, "payload": payload, "token": token})
        })
        .collect();
    let file = json!({
        "about": "Tollgate JWT vectors. now = 1767225600 (2026-01-01T00:00:00Z). Keys are test-only.",
        "now": NOW,
        "issuers": {
            "taxpayers": {"jwks": jwks_tax, "private_pem": {"es-1": es.to_pem().unwrap(), "rs-1": rs.to_pem().unwrap(), "ed-1": ed.to_pem()}},
            "partners": {"jwks": jwks_partners, "hs256_secret_b64url": b64(&hs_secret)},
            "mixed": {"jwks": jwks_mixed, "private_pem": {"mx-1": mixed_rs.to_pem().unwrap()}},
        },
        "cases": cases,
    });
    std::fs::write(
        vectors_path(),
        serde_json::to_string_pretty(&file).unwrap() + "\n",
    )
    .unwrap();
}
