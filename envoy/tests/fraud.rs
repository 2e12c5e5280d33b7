//! Edge fraud rules end to end in real Envoy: the 6th payment of a card within the hour
//! reaches the origin flagged, an amount over the threshold and a card/client country
//! mismatch are flagged, a blocklisted client IP gets 403 `fraud_blocked` without rule
//! names; counters show in Envoy's stats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig};

const POLICY: &str = r#"
version: 1
fraud:
  client_country: { header: x-client-country }
  rules:
    - { name: card_velocity, velocity: { key: [card.fingerprint], max: 5, window: 1h }, score: 40 }
    - { name: big_amount, amount: { field: amount, gt: 10000 }, score: 30 }
    - { name: country, country_mismatch: { card_country: card.country }, score: 20 }
    - { name: local_clients, blocklist: { ips: [127.0.0.0/8, "::1"] }, action: block }
routes:
  - name: blocked
    match: { path: { prefix: /v1/blocked } }
    cluster: origin
    fraud: { rules: [local_clients] }
  - name: pay
    match: { path: { prefix: /v1/payments } }
    cluster: origin
    fraud: { rules: [card_velocity, big_amount, country] }
"#;

fn card(fp: &str, amount: u64, country: &str) -> Vec<u8> {
    format!(r#"{{"amount":{amount},"currency":"EUR","card":{{"fingerprint":"{fp}","country":"{country}"}}}}"#)
        .into_bytes()
}

#[test]
fn fraud_rules_flag_and_block_payments_in_envoy() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("fraud", POLICY)
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("x-client-country", "DE"),
    ];
    let seen = |r: &tollgate_envoy_tests::HttpResponse, name: &str| {
        r.origin_saw_headers()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    };

    for i in 0..5 {
        let r = envoy
            .request(
                "POST",
                "/v1/payments",
                &headers,
                Some(&card("fp1", 100, "DE")),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{i}: {}", r.body);
        assert_eq!(seen(&r, "x-tollgate-fraud"), None, "{i}");
    }
    let sixth = envoy
        .request(
            "POST",
            "/v1/payments",
            &headers,
            Some(&card("fp1", 100, "DE")),
        )
        .unwrap();
    assert_eq!(sixth.status, 200, "{}", sixth.body);
    assert_eq!(
        seen(&sixth, "x-tollgate-fraud").as_deref(),
        Some("card_velocity")
    );
    assert_eq!(seen(&sixth, "x-tollgate-risk-score").as_deref(), Some("40"));
    // The origin gets the body whole.
    assert_eq!(
        sixth.json().unwrap()["body"],
        std::str::from_utf8(&card("fp1", 100, "DE")).unwrap()
    );

    let big = envoy
        .request(
            "POST",
            "/v1/payments",
            &headers,
            Some(&card("fp2", 20_000, "FR")),
        )
        .unwrap();
    assert_eq!(big.status, 200, "{}", big.body);
    assert_eq!(
        seen(&big, "x-tollgate-fraud").as_deref(),
        Some("big_amount,country")
    );
    assert_eq!(seen(&big, "x-tollgate-risk-score").as_deref(), Some("50"));

    let blocked = envoy
        .request(
            "POST",
            "/v1/blocked",
            &headers,
            Some(&card("fp3", 100, "DE")),
        )
        .unwrap();
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    let body = blocked.json().unwrap();
    assert_eq!(body["error"], "fraud_blocked");
    let incident = body["incident"].as_str().unwrap();
    assert_eq!(blocked.header("x-tollgate-request-id"), Some(incident));
    assert!(!blocked.body.contains("local_clients"), "{}", blocked.body);
    assert!(
        envoy.wait_for_log(
            &format!("{incident} fraud blocked rules=local_clients"),
            std::time::Duration::from_secs(5)
        ),
        "the rule names go to the log:\n{}",
        envoy.log()
    );

    let stats = envoy.wasmcustom_stats().unwrap();
    assert_eq!(
        stats.get("wasmcustom.tollgate_fraud_flagged_total"),
        Some(&2),
        "{stats:?}"
    );
    assert_eq!(
        stats.get("wasmcustom.tollgate_fraud_blocked_total"),
        Some(&1),
        "{stats:?}"
    );
}
