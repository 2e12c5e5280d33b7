//! Authentication and authorisation through the engine's request path: identity and
//! claim headers, roles, scopes, claim values, path binding, API keys, answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_engine::{Decision, Engine, Policy, RequestHead};

const NOW: u64 = 1_767_225_600;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";
const API_KEY: &str = "sk_test_merchant_1";

fn sign(claims: Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": "https://auth.tax.example", "aud": "refund-portal", "sub": "u1",
        "country": "IN", "roles": ["taxpayer"], "scope": "refunds:read chat",
        "address": {"region": "KA"}, "tid": "tax-portal", "plan": "pro",
        "iat": NOW - 60, "exp": NOW + 1800,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn engine() -> Engine {
    let secret = B64.encode(SECRET);
    let key_digest = hex(&Sha256::digest(API_KEY.as_bytes()));
    let policy = format!(
        r#"
version: 1
auth:
  jwt_providers:
    - name: taxpayers
      issuer: https://auth.tax.example
      audiences: [refund-portal]
      algorithms: [HS256]
      from: [{{ header: authorization, prefix: "Bearer " }}, {{ query: access_token }}, {{ cookie: session }}]
      remove_token: true
      jwks: {{ inline: {{ keys: [{{ kty: oct, k: "{secret}" }}] }} }}
      claims_to_headers:
        - {{ claim: country, header: x-tollgate-country }}
        - {{ claim: address.region, header: x-tollgate-region }}
        - {{ claim: roles, header: x-tollgate-roles }}
      identity: {{ tenant_claim: tid, plan_claim: plan }}
  api_keys:
    keys:
      - {{ id: key-1, sha256: "{key_digest}", tenant: merchant-1, plan: pro }}
routes:
  - name: refunds
    match: {{ path: {{ prefix: /v1/refunds/ }} }}
    cluster: origin
    auth:
      accept: [taxpayers]
      roles: {{ values: [taxpayer, admin] }}
      claims: {{ country: [IN, US] }}
      bind_path: /v1/refunds/{{sub}}
  - name: chat
    match: {{ path: {{ prefix: /v1/chat }} }}
    cluster: origin
    auth: {{ accept: [taxpayers], scopes: {{ values: [chat, refunds:read] }} }}
  - name: admin
    match: {{ path: {{ prefix: /admin }} }}
    cluster: origin
    auth: {{ accept: [taxpayers], roles: {{ values: [admin] }} }}
  - name: payments
    match: {{ path: {{ prefix: /v1/payments }} }}
    cluster: payments
    auth: {{ accept: [api_key] }}
  - name: news
    match: {{ path: {{ prefix: /news }} }}
    cluster: origin
    auth: {{ accept: [taxpayers], optional: true }}
"#
    );
    Engine::new(Policy::load(&policy).unwrap(), 3)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn get(engine: &Engine, path: &str, headers: &[(&str, String)]) -> Decision {
    let mut pairs = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api".to_string()),
    ];
    pairs.extend(headers.iter().map(|(k, v)| (k.to_string(), v.clone())));
    engine.on_request_headers(
        RequestHead::from_pairs(pairs),
        NOW * 1000,
        &tollgate_engine::MemorySharedData::default(),
    )
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    match d {
        Decision::Forward(p) => p
            .set_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
        Decision::Reply(r) => r
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
    }
}

fn status(d: &Decision) -> u16 {
    match d {
        Decision::Forward(_) => 200,
        Decision::Reply(r) => r.status,
    }
}

#[test]
fn verified_token_sets_identity_and_claim_headers() {
    let e = engine();
    let d = get(&e, "/v1/refunds/u1", &[bearer(&sign(claims(json!({}))))]);
    assert_eq!(status(&d), 200);
    assert_eq!(header(&d, "x-tollgate-user"), Some("u1"));
    assert_eq!(header(&d, "x-tollgate-tenant"), Some("tax-portal"));
    assert_eq!(header(&d, "x-tollgate-plan"), Some("pro"));
    assert_eq!(header(&d, "x-tollgate-auth"), Some("jwt:taxpayers"));
    assert_eq!(header(&d, "x-tollgate-country"), Some("IN"));
    assert_eq!(header(&d, "x-tollgate-region"), Some("KA"));
    assert_eq!(header(&d, "x-tollgate-roles"), Some("taxpayer"));
    let Decision::Forward(plan) = d else {
        unreachable!()
    };
    assert!(plan.remove_headers.contains(&"authorization".to_string()));
}

#[test]
fn missing_credentials_get_a_bare_challenge() {
    let d = get(&engine(), "/v1/refunds/u1", &[]);
    assert_eq!(status(&d), 401);
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    let Decision::Reply(r) = d else {
        unreachable!()
    };
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "unauthorized");
}

#[test]
fn invalid_token_reveals_nothing_about_why() {
    let e = engine();
    let expired = get(
        &e,
        "/v1/refunds/u1",
        &[bearer(&sign(claims(json!({"exp": NOW - 3600}))))],
    );
    let forged = get(
        &e,
        "/v1/refunds/u1",
        &[bearer(&(sign(claims(json!({}))) + "x"))],
    );
    for d in [&expired, &forged] {
        assert_eq!(status(d), 401);
        assert_eq!(
            header(d, "www-authenticate"),
            Some("Bearer realm=\"tollgate\", error=\"invalid_token\"")
        );
    }
    let (Decision::Reply(a), Decision::Reply(b)) = (expired, forged) else {
        unreachable!()
    };
    // Same body shape and message for both; the reason is only in `detail` (logs).
    let (ja, jb): (Value, Value) = (
        serde_json::from_slice(&a.body).unwrap(),
        serde_json::from_slice(&b.body).unwrap(),
    );
    assert_eq!(ja["message"], jb["message"]);
    assert_ne!(a.detail, b.detail);
}

#[test]
fn users_read_only_their_own_records() {
    let e = engine();
    let token = sign(claims(json!({})));
    assert_eq!(status(&get(&e, "/v1/refunds/u1", &[bearer(&token)])), 200);
    assert_eq!(
        status(&get(&e, "/v1/refunds/u1?year=2025", &[bearer(&token)])),
        200
    );
    assert_eq!(status(&get(&e, "/v1/refunds/u2", &[bearer(&token)])), 403);
    // Normalisation tricks that could land on another user's record at the origin.
    for path in [
        "/v1/refunds/u1/../u2",
        "/v1/refunds/u1/%2e%2e/u2",
        "/v1/refunds/u1%2F..%2Fu2",
        "/v1/refunds//u2",
        "/v1/refunds/u1\\..\\u2",
    ] {
        assert_eq!(status(&get(&e, path, &[bearer(&token)])), 403, "{path}");
    }
}

#[test]
fn roles_scopes_and_claim_values() {
    let e = engine();
    let taxpayer = sign(claims(json!({})));
    assert_eq!(status(&get(&e, "/admin/x", &[bearer(&taxpayer)])), 403);
    let admin = sign(claims(json!({"roles": ["admin"]})));
    assert_eq!(status(&get(&e, "/admin/x", &[bearer(&admin)])), 200);
    // Scopes are a set: all required ones must be there, order irrelevant.
    assert_eq!(status(&get(&e, "/v1/chat", &[bearer(&taxpayer)])), 200);
    let only_chat = sign(claims(json!({"scope": "chat"})));
    assert_eq!(status(&get(&e, "/v1/chat", &[bearer(&only_chat)])), 403);
    let d = get(&e, "/v1/chat", &[bearer(&only_chat)]);
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"tollgate\", error=\"insufficient_scope\"")
    );
    // Country must be in the allowed list.
    let eu = sign(claims(json!({"country": "DE"})));
    assert_eq!(status(&get(&e, "/v1/refunds/u1", &[bearer(&eu)])), 403);
}

#[test]
fn api_keys_by_sha256() {
    let e = engine();
    let d = get(&e, "/v1/payments", &[("x-api-key", API_KEY.to_string())]);
    assert_eq!(status(&d), 200);
    assert_eq!(header(&d, "x-tollgate-tenant"), Some("merchant-1"));
    assert_eq!(header(&d, "x-tollgate-key-id"), Some("key-1"));
    assert_eq!(header(&d, "x-tollgate-plan"), Some("pro"));
    let Decision::Forward(plan) = d else {
        unreachable!()
    };
    assert!(plan.remove_headers.contains(&"x-api-key".to_string()));
    assert_eq!(
        status(&get(
            &e,
            "/v1/payments",
            &[("x-api-key", "sk_test_wrong".into())]
        )),
        401
    );
    assert_eq!(status(&get(&e, "/v1/payments", &[])), 401);
    // A JWT is not accepted where only API keys are.
    assert_eq!(
        status(&get(
            &e,
            "/v1/payments",
            &[bearer(&sign(claims(json!({}))))]
        )),
        401
    );
}

#[test]
fn tokens_from_query_and_cookie_are_removed_before_forwarding() {
    let e = engine();
    let token = sign(claims(json!({})));
    let d = get(
        &e,
        &format!("/v1/refunds/u1?year=2025&access_token={token}"),
        &[],
    );
    let Decision::Forward(plan) = d else {
        panic!("query token refused")
    };
    assert_eq!(plan.set_path.as_deref(), Some("/v1/refunds/u1?year=2025"));
    let d = get(
        &e,
        "/v1/refunds/u1",
        &[("cookie", format!("theme=dark; session={token}; lang=en"))],
    );
    let Decision::Forward(plan) = d else {
        panic!("cookie token refused")
    };
    assert!(
        plan.set_headers
            .contains(&("cookie".to_string(), "theme=dark; lang=en".to_string()))
    );
}

#[test]
fn optional_routes_pass_anonymous_but_not_bad_tokens() {
    let e = engine();
    let anon = get(&e, "/news", &[]);
    assert_eq!(status(&anon), 200);
    assert_eq!(header(&anon, "x-tollgate-user"), None);
    assert_eq!(status(&get(&e, "/news", &[bearer("garbage")])), 401);
}

#[test]
fn cached_token_still_expires() {
    let e = engine();
    let token = sign(claims(json!({"exp": NOW + 10})));
    assert_eq!(status(&get(&e, "/v1/refunds/u1", &[bearer(&token)])), 200);
    // Same token later: the cache must not outlive `exp` (+ skew 30 s).
    let later = e.on_request_headers(
        RequestHead::from_pairs([
            (":method", "GET".to_string()),
            (":path", "/v1/refunds/u1".to_string()),
            ("authorization", format!("Bearer {token}")),
        ]),
        (NOW + 100) * 1000,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(status(&later), 401);
}

#[test]
fn claim_headers_never_carry_injected_lines() {
    let e = engine();
    let token = sign(claims(
        json!({"country": "IN\r\nx-evil: 1", "address": {"region": "K\nA"}}),
    ));
    // country fails the allowed-values rule on the refunds route; use the chat route.
    let d = get(&e, "/v1/chat", &[bearer(&token)]);
    assert_eq!(status(&d), 200);
    assert_eq!(header(&d, "x-tollgate-country"), None);
    assert_eq!(header(&d, "x-tollgate-region"), None);
}
