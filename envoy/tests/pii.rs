//! PII masking end to end in real Envoy: the echo origin returns the request body, and a
//! masked route's response reaches the client with cards, SSNs, PAN numbers, account
//! numbers and e-mail addresses masked, at the same length; other routes are untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig};

const POLICY: &str = r#"
version: 1
routes:
  - name: refunds
    match: { path: { prefix: /v1/refunds } }
    cluster: origin
    pii_masking: [card, ssn, pan_in, bank_account, email]
  - { name: other, cluster: origin }
"#;

#[test]
fn responses_of_masked_routes_carry_no_pii_in_envoy() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("pii", POLICY)
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();
    let json = [("content-type", "application/json")];
    // Long enough that the origin's answer can reach the filter in several chunks.
    let record = "card 4111 1111 1111 1111, ssn 123-45-6789, pan ABCDE1234F, \
                  mail jane.doe@example.com, order 4111111111111112. ";
    let body = record.repeat(400);
    let masked = envoy
        .request("POST", "/v1/refunds/u1", &json, Some(body.as_bytes()))
        .unwrap();
    assert_eq!(masked.status, 200, "{}", masked.body);
    let echo = masked.json().unwrap();
    let seen = echo["body"].as_str().unwrap();
    assert_eq!(seen.len(), body.len());
    assert!(!seen.contains("4111 1111 1111 1111"));
    assert!(!seen.contains("123-45-6789"));
    assert!(!seen.contains("jane.doe@"));
    assert_eq!(seen.matches("**** **** **** 1111").count(), 400);
    assert_eq!(seen.matches("***-**-6789").count(), 400);
    assert_eq!(seen.matches("******234F").count(), 400);
    assert_eq!(seen.matches("j*******@example.com").count(), 400);
    // Not a card (fails Luhn): left alone.
    assert_eq!(seen.matches("4111111111111112").count(), 400);

    let plain = envoy
        .request("POST", "/v1/other", &json, Some(body.as_bytes()))
        .unwrap();
    assert_eq!(plain.json().unwrap()["body"], body.as_str());
}
