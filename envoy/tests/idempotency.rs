//! `Idempotency-Key` in real Envoy: a retried payment gets the first answer again (the
//! echo origin's body names the first request's id) and never reaches the origin; the
//! same key with another body gets 422.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sha2::{Digest, Sha256};
use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig};

#[test]
fn envoy_replays_a_retried_payment_and_refuses_a_reused_key() {
    let sha: String = Sha256::digest(b"pay-key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let policy = format!(
        r#"
version: 1
auth:
  api_keys:
    keys: [{{ id: kp, sha256: "{sha}", tenant: shop }}]
routes:
  - name: payments
    cluster: origin
    auth: {{ accept: [api_key] }}
    idempotency: {{}}
"#
    );
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("idempotency", &policy)
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();
    let pay = |key: &str, body: &str| {
        envoy
            .request(
                "POST",
                "/v1/payments",
                &[
                    ("x-api-key", "pay-key"),
                    ("idempotency-key", key),
                    ("content-type", "application/json"),
                ],
                Some(body.as_bytes()),
            )
            .unwrap()
    };
    let first = pay("order-17", r#"{"amount": 10}"#);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = pay("order-17", r#"{"amount": 10}"#);
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.body, first.body,
        "the first answer, not a second charge"
    );
    assert_ne!(
        retry.header("x-tollgate-request-id"),
        first.header("x-tollgate-request-id")
    );
    let reused = pay("order-17", r#"{"amount": 99}"#);
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(reused.json().unwrap()["error"], "idempotency_key_reused");
}
