//! End-to-end in real Envoy: JWT and API-key authentication, authorisation by path
//! binding, and partner webhook signatures verified over the body before the origin
//! sees the request (`allow_on_headers_stop_iteration`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig};

const JWT_SECRET: &[u8] = b"e2e-test-only-secret-0123456789abcdef";
const API_KEY: &str = "sk_e2e_merchant";
const WEBHOOK_SECRET: &str = "whsec_e2e_0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn policy() -> String {
    let k = B64.encode(JWT_SECRET);
    let digest = hex(&Sha256::digest(API_KEY.as_bytes()));
    format!(
        r#"
version: 1
auth:
  jwt_providers:
    - name: portal
      issuer: https://auth.e2e
      algorithms: [HS256]
      remove_token: true
      jwks: {{ inline: {{ keys: [{{ kty: oct, k: "{k}" }}] }} }}
      claims_to_headers: [{{ claim: country, header: x-tollgate-country }}]
      identity: {{ tenant_value: tax-portal }}
  api_keys:
    keys: [{{ id: key-1, sha256: "{digest}", tenant: merchant-1, plan: pro }}]
routes:
  - name: refunds
    match: {{ path: {{ prefix: /v1/refunds/ }} }}
    cluster: origin
    auth: {{ accept: [portal], bind_path: "/v1/refunds/{{sub}}" }}
  - name: payments
    match: {{ path: {{ prefix: /v1/payments }} }}
    cluster: origin
    auth: {{ accept: [api_key] }}
  - name: webhooks
    match: {{ path: {{ prefix: /webhooks/partner }} }}
    cluster: origin
    webhook: {{ scheme: stripe, signature_header: partner-signature, secrets: ["{WEBHOOK_SECRET}"] }}
"#
    )
}

fn token(sub: &str, exp: u64) -> String {
    let claims = format!(
        r#"{{"iss":"https://auth.e2e","sub":"{sub}","country":"IN","iat":{},"exp":{exp}}}"#,
        now() - 5
    );
    let input = format!(
        "{}.{}",
        B64.encode(br#"{"alg":"HS256"}"#),
        B64.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn setup(label: &str) -> (Envoy, BackgroundOrigin) {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new(label, &policy())
        .unwrap()
        .cluster("origin", origin.port());
    (Envoy::start(&config).unwrap(), origin)
}

fn seen<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn jwt_identity_reaches_the_origin_and_path_binding_holds() {
    let (envoy, _origin) = setup("auth-jwt");
    let bearer = format!("Bearer {}", token("u1", now() + 600));
    let ok = envoy
        .get(
            "/v1/refunds/u1",
            &[("authorization", &bearer), ("x-tollgate-user", "admin")],
        )
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let headers = ok.origin_saw_headers().unwrap();
    assert_eq!(seen(&headers, "x-tollgate-user"), Some("u1"));
    assert_eq!(seen(&headers, "x-tollgate-tenant"), Some("tax-portal"));
    assert_eq!(seen(&headers, "x-tollgate-country"), Some("IN"));
    assert_eq!(
        seen(&headers, "authorization"),
        None,
        "remove_token must strip the token"
    );

    let other = envoy
        .get("/v1/refunds/u2", &[("authorization", &bearer)])
        .unwrap();
    assert_eq!(other.status, 403);
    assert_eq!(other.json().unwrap()["error"], "insufficient_scope");

    let missing = envoy.get("/v1/refunds/u1", &[]).unwrap();
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );

    let expired = format!("Bearer {}", token("u1", now() - 3600));
    let expired = envoy
        .get("/v1/refunds/u1", &[("authorization", &expired)])
        .unwrap();
    assert_eq!(expired.status, 401);
    assert_eq!(expired.json().unwrap()["error"], "invalid_token");

    let stats = envoy.wasmcustom_stats().unwrap();
    assert_eq!(
        stats.get("wasmcustom.tollgate_authenticated_total"),
        Some(&1)
    );
    assert_eq!(
        stats.get("wasmcustom.tollgate_unauthenticated_total"),
        Some(&2)
    );
    assert_eq!(stats.get("wasmcustom.tollgate_forbidden_total"), Some(&1));
}

#[test]
fn api_key_names_the_merchant_and_never_reaches_the_origin() {
    let (envoy, _origin) = setup("auth-apikey");
    let ok = envoy
        .get("/v1/payments", &[("x-api-key", API_KEY)])
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let headers = ok.origin_saw_headers().unwrap();
    assert_eq!(seen(&headers, "x-tollgate-tenant"), Some("merchant-1"));
    assert_eq!(seen(&headers, "x-tollgate-key-id"), Some("key-1"));
    assert_eq!(seen(&headers, "x-api-key"), None);
    assert_eq!(
        envoy
            .get("/v1/payments", &[("x-api-key", "sk_wrong")])
            .unwrap()
            .status,
        401
    );
}

#[test]
fn webhook_body_is_verified_before_the_origin_sees_it() {
    let (envoy, _origin) = setup("auth-webhook");
    let body = br#"{"event":"refund.issued","amount":1200}"#;
    let t = now();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let signature = format!("t={t},v1={}", hex(&mac.finalize().into_bytes()));

    let ok = envoy
        .request(
            "POST",
            "/webhooks/partner",
            &[("partner-signature", &signature)],
            Some(body),
        )
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.json().unwrap()["body"],
        String::from_utf8_lossy(body).as_ref()
    );

    let tampered = br#"{"event":"refund.issued","amount":9999}"#;
    let bad = envoy
        .request(
            "POST",
            "/webhooks/partner",
            &[("partner-signature", &signature)],
            Some(tampered),
        )
        .unwrap();
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json().unwrap()["error"], "invalid_signature");

    let stale_t = t - 600;
    let stale = format!("t={stale_t},v1={}", hex(&[0u8; 32]));
    let stale = envoy
        .request(
            "POST",
            "/webhooks/partner",
            &[("partner-signature", &stale)],
            Some(body),
        )
        .unwrap();
    assert_eq!(stale.status, 401);
}
