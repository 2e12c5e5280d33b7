//! Partner webhook signatures through the engine's headers and body phases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate_engine::{Decision, Engine, Policy, RequestHead};

const NOW: u64 = 1_767_225_600;
const SECRET: &str = "whsec_test_0123456789abcdef";
const OLD_SECRET: &str = "whsec_old_0123456789abcdef";

fn engine() -> Engine {
    let policy = format!(
        r#"
version: 1
routes:
  - name: stripe-like
    match: {{ path: {{ prefix: /webhooks/stripe }} }}
    cluster: payments
    webhook: {{ scheme: stripe, signature_header: stripe-signature, secrets: ["{SECRET}", "{OLD_SECRET}"] }}
  - name: github-like
    match: {{ path: {{ prefix: /webhooks/gh }} }}
    cluster: payments
    webhook:
      scheme: headers
      signature_header: x-signature
      timestamp_header: x-timestamp
      signature_prefix: "sha256="
      encoding: base64
      secrets: ["{SECRET}"]
      tolerance_seconds: 60
      max_body_bytes: 64
"#
    );
    Engine::new(Policy::load(&policy).unwrap(), 9)
}

fn mac(secret: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("{timestamp}.").as_bytes());
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs both phases; returns the status the client would see (200 = forwarded).
fn run(
    e: &Engine,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    now: u64,
) -> (u16, Option<&'static str>) {
    let mut pairs = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    pairs.extend(headers.iter().map(|(k, v)| (k.to_string(), v.clone())));
    match e.on_request_headers(
        RequestHead::from_pairs(pairs),
        now * 1000,
        &tollgate_engine::MemorySharedData::default(),
    ) {
        Decision::Reply(r) => (r.status, r.detail),
        Decision::Forward(plan) => {
            let check = plan
                .body_check
                .expect("webhook routes must ask for the body");
            match e.on_request_body(&check, body, &plan.request_id) {
                None => (200, None),
                Some(r) => (r.status, r.detail),
            }
        }
    }
}

#[test]
fn stripe_scheme_accepts_current_and_rotated_secrets() {
    let e = engine();
    let body = br#"{"type":"payment.succeeded"}"#;
    for secret in [SECRET, OLD_SECRET] {
        let sig = format!("t={NOW},v1={}", hex(&mac(secret, NOW, body)));
        assert_eq!(
            run(
                &e,
                "/webhooks/stripe",
                &[("stripe-signature", sig)],
                body,
                NOW
            )
            .0,
            200
        );
    }
    // Several v1 entries: one valid is enough.
    let sig = format!(
        "t={NOW},v1={},v1={}",
        hex(&[7u8; 32]),
        hex(&mac(SECRET, NOW, body))
    );
    assert_eq!(
        run(
            &e,
            "/webhooks/stripe",
            &[("stripe-signature", sig)],
            body,
            NOW
        )
        .0,
        200
    );
}

#[test]
fn tampered_body_missing_or_malformed_signature_fail() {
    let e = engine();
    let body = b"{\"amount\":100}";
    let sig = format!("t={NOW},v1={}", hex(&mac(SECRET, NOW, body)));
    assert_eq!(
        run(
            &e,
            "/webhooks/stripe",
            &[("stripe-signature", sig)],
            b"{\"amount\":999}",
            NOW
        ),
        (401, Some("webhook_bad_signature"))
    );
    assert_eq!(
        run(&e, "/webhooks/stripe", &[], body, NOW),
        (401, Some("webhook_missing_signature"))
    );
    assert_eq!(
        run(
            &e,
            "/webhooks/stripe",
            &[("stripe-signature", "t=abc,v1=zz".into())],
            body,
            NOW
        ),
        (401, Some("webhook_malformed_signature"))
    );
}

#[test]
fn replays_outside_the_window_are_refused() {
    let e = engine();
    let body = b"{}";
    let old = NOW - 301;
    let sig = format!("t={old},v1={}", hex(&mac(SECRET, old, body)));
    assert_eq!(
        run(
            &e,
            "/webhooks/stripe",
            &[("stripe-signature", sig.clone())],
            body,
            NOW
        ),
        (401, Some("webhook_stale_timestamp"))
    );
    // The same capture was fine when it was fresh.
    assert_eq!(
        run(
            &e,
            "/webhooks/stripe",
            &[("stripe-signature", sig)],
            body,
            old + 10
        )
        .0,
        200
    );
}

#[test]
fn headers_scheme_with_prefix_base64_and_size_limit() {
    let e = engine();
    let body = b"ping";
    let sig = format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(mac(SECRET, NOW, body))
    );
    let headers = [("x-signature", sig), ("x-timestamp", NOW.to_string())];
    assert_eq!(run(&e, "/webhooks/gh", &headers, body, NOW).0, 200);
    assert_eq!(
        run(&e, "/webhooks/gh", &headers, body, NOW + 61),
        (401, Some("webhook_stale_timestamp"))
    );
    let big = vec![b'x'; 65];
    assert_eq!(
        run(&e, "/webhooks/gh", &headers, &big, NOW),
        (413, Some("body_too_large"))
    );
}
