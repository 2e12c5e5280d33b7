#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::policy::Policy;
use crate::shared::MemorySharedData;

const POLICY: &str = r#"
version: 1
fraud:
  client_country: { header: x-client-country }
  max_keys: 4
  rules:
    - name: card_velocity
      velocity: { key: [card.fingerprint], max: 5, window: 1h }
      score: 40
    - name: big_amount
      amount: { field: amount, gt: 10000, currency_field: currency, gt_by_currency: { JPY: 1000000 } }
      score: 30
    - name: country
      country_mismatch: { card_country: card.country }
      score: 20
    - name: bad_ips
      blocklist: { ips: [203.0.113.0/24] }
      action: block
    - name: bad_cards
      blocklist: { field: card.fingerprint, values: [stolen] }
      action: block
routes:
  - name: pay
    cluster: origin
    fraud: { rules: [card_velocity, big_amount, country, bad_ips, bad_cards], block_score: 90 }
"#;

fn setup() -> (Fraud, RouteFraud) {
    let policy = Policy::load(POLICY).unwrap();
    let route = policy.routes.get(0).unwrap().fraud.clone().unwrap();
    (policy.fraud, route)
}

fn pending(tenant: Option<&str>, ip: Option<&str>, country: Option<&str>) -> FraudPending {
    FraudPending {
        tenant: tenant.map(str::to_string),
        client_ip: ip.map(|i| i.parse().unwrap()),
        client_country: country.map(str::to_string),
        base_risk_score: 0,
    }
}

fn pay(card: &str) -> Vec<u8> {
    format!(r#"{{"amount": 25.5, "currency": "EUR", "card": {{"fingerprint": "{card}", "country": "DE"}}}}"#)
            .into_bytes()
}

#[test]
fn the_sixth_payment_in_an_hour_is_flagged_per_tenant() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let a = pending(Some("acme"), None, None);
    let t0 = 10 * 3_600_000;
    for i in 0..5 {
        let o = fraud.evaluate(&route, &a, &pay("fp1"), t0 + i * 60_000, &store);
        assert!(o.matched.is_empty(), "{i}: {o:?}");
    }
    let o = fraud.evaluate(&route, &a, &pay("fp1"), t0 + 300_000, &store);
    assert_eq!(o.matched, ["card_velocity"]);
    assert_eq!((o.score, o.blocked), (40, false));
    // Another tenant's payments with the same card are counted apart.
    let b = pending(Some("globex"), None, None);
    let o = fraud.evaluate(&route, &b, &pay("fp1"), t0 + 300_000, &store);
    assert!(o.matched.is_empty());
    // Another card of the same tenant too.
    let o = fraud.evaluate(&route, &a, &pay("fp2"), t0 + 300_000, &store);
    assert!(o.matched.is_empty());
}

#[test]
fn the_window_slides() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let a = pending(Some("acme"), None, None);
    let t0 = 10 * 3_600_000;
    for i in 0..5 {
        fraud.evaluate(&route, &a, &pay("fp"), t0 + i, &store);
    }
    // Half an hour into the next window, half of the earlier five still count.
    let o = fraud.evaluate(&route, &a, &pay("fp"), t0 + 5_400_000, &store);
    assert!(o.matched.is_empty(), "{o:?}");
    // Two hours later the earlier payments are gone entirely.
    for i in 0..5 {
        let o = fraud.evaluate(&route, &a, &pay("fp"), t0 + 3 * 3_600_000 + i, &store);
        assert!(o.matched.is_empty(), "{o:?}");
    }
    let o = fraud.evaluate(&route, &a, &pay("fp"), t0 + 3 * 3_600_000 + 9, &store);
    assert_eq!(o.matched, ["card_velocity"]);
}

#[test]
fn velocity_storage_is_bounded_and_evicts() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let a = pending(None, None, None);
    let mut evictions = 0;
    for i in 0..10 {
        evictions += fraud
            .evaluate(&route, &a, &pay(&format!("c{i}")), 1_000 + i, &store)
            .evictions;
    }
    // max_keys 4: one slot of four entries.
    assert_eq!(evictions, 6);
    assert_eq!(store.len(), 1);
}

#[test]
fn shared_data_failing_fails_open() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    store.broken.set(true);
    let a = pending(Some("acme"), None, None);
    for i in 0..10 {
        let o = fraud.evaluate(&route, &a, &pay("fp"), 1_000 + i, &store);
        assert!(o.matched.is_empty());
        assert_eq!(o.store_errors, 1);
    }
}

#[test]
fn amounts_compare_per_currency() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let p = pending(None, None, None);
    let body = |amount: &str, currency: &str| {
        format!(r#"{{"amount": {amount}, "currency": "{currency}"}}"#).into_bytes()
    };
    let hit = |b: Vec<u8>| fraud.evaluate(&route, &p, &b, 1, &store).matched;
    assert_eq!(hit(body("10000.01", "USD")), ["big_amount"]);
    assert!(hit(body("10000", "USD")).is_empty());
    assert_eq!(hit(body("\"20000\"", "EUR")), ["big_amount"]);
    // Yen has its own threshold.
    assert!(hit(body("500000", "jpy")).is_empty());
    assert_eq!(hit(body("2000000", "JPY")), ["big_amount"]);
    assert!(hit(body("\"lots\"", "USD")).is_empty());
}

#[test]
fn country_mismatch_needs_both_countries() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let body = br#"{"card": {"country": "de"}}"#;
    let hit = |c: Option<&str>, b: &[u8]| {
        fraud
            .evaluate(&route, &pending(None, None, c), b, 1, &store)
            .matched
    };
    assert_eq!(hit(Some("US"), body), ["country"]);
    assert!(hit(Some("DE"), body).is_empty());
    assert!(hit(None, body).is_empty());
    assert!(hit(Some("US"), br#"{"card": {}}"#).is_empty());
}

#[test]
fn blocklists_block_by_ip_and_by_field() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let o = fraud.evaluate(
        &route,
        &pending(None, Some("203.0.113.9"), None),
        b"{}",
        1,
        &store,
    );
    assert_eq!(
        (o.matched.as_slice(), o.blocked),
        (&["bad_ips".to_string()][..], true)
    );
    let o = fraud.evaluate(
        &route,
        &pending(None, Some("198.51.100.1"), None),
        &pay("stolen"),
        1,
        &store,
    );
    assert_eq!(o.matched, ["bad_cards"]);
    assert!(o.blocked);
    let o = fraud.evaluate(
        &route,
        &pending(None, Some("198.51.100.1"), None),
        &pay("ok"),
        2,
        &store,
    );
    assert!(!o.blocked);
}

#[test]
fn the_route_threshold_blocks_on_the_summed_score() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let p = FraudPending {
        base_risk_score: 50,
        ..pending(Some("t"), None, Some("US"))
    };
    let body =
        br#"{"amount": 50000, "currency": "USD", "card": {"fingerprint": "x", "country": "DE"}}"#;
    let o = fraud.evaluate(&route, &p, body, 1, &store);
    // 30 + 20: flagged, not blocked; the risk score adds the header phase's 50.
    assert_eq!(o.matched, ["big_amount", "country"]);
    assert_eq!((o.score, o.blocked, o.risk_score), (50, false, 100));
    for i in 0..5 {
        fraud.evaluate(&route, &p, body, 2 + i, &store);
    }
    let o = fraud.evaluate(&route, &p, body, 10, &store);
    assert_eq!((o.score, o.blocked), (90, true));
}

#[test]
fn the_usage_record_carries_the_rules_and_the_score() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let o = fraud.evaluate(
        &route,
        &pending(None, Some("203.0.113.1"), None),
        b"{}",
        1,
        &store,
    );
    let mut event = crate::fleet::UsageEvent {
        event_id: "e".into(),
        tenant: "t".into(),
        timestamp_ms: 1,
        route: "pay".into(),
        method: "POST".into(),
        status: 0,
        plan: String::new(),
        key_id: None,
        risk_score: 10,
        decisions: Default::default(),
        latency_ms: 0,
    };
    crate::usage::note_fraud(&mut event, &o);
    assert_eq!(event.decisions.fraud.as_deref(), Some("block:bad_ips"));
    let reply = crate::decision::LocalReply {
        detail: Some("fraud_blocked"),
        ..crate::decision::LocalReply::json_error(403, "fraud_blocked", "x", "id")
    };
    crate::usage::note_reply(&mut event, &reply);
    assert_eq!((event.status, event.decisions.auth.as_deref()), (403, None));
}

#[test]
fn bodies_that_are_not_json_match_nothing() {
    let (fraud, route) = setup();
    let store = MemorySharedData::default();
    let p = pending(None, None, Some("US"));
    for body in [
        &b""[..],
        b"amount=50000",
        b"{\"amount\": 5000",
        b"[1,2]",
        b"\xff\xfe",
    ] {
        assert!(
            fraud
                .evaluate(&route, &p, body, 1, &store)
                .matched
                .is_empty()
        );
    }
}

#[test]
fn config_errors_name_the_field() {
    let bad = POLICY
        .replace("window: 1h", "window: soon")
        .replace("card.country", "card..country")
        .replace("bad_cards]", "nope]");
    let errors = Policy::load(&bad).unwrap_err().to_string();
    assert!(
        errors.contains("fraud.rules[0].velocity.window"),
        "{errors}"
    );
    assert!(
        errors.contains("fraud.rules[2].country_mismatch.card_country"),
        "{errors}"
    );
    assert!(errors.contains("routes[0].fraud.rules[4]"), "{errors}");
}
