//! Edge fraud rules through the compiled `tollgate_filter.wasm` in host-sim: the 6th
//! payment of a card fingerprint within the hour, an amount threshold, card vs client
//! country, and a blocklisted client IP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::bootstrap_text;

use serde_json::{Value, json};
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::{ReplayOptions, replay};

const T0_MS: u64 = 1_767_225_600_000;

const POLICY: &str = r#"version: 1
fraud:
  client_country: { header: x-client-country }
  rules:
    - name: card_velocity
      velocity: { key: [card.fingerprint], max: 5, window: 1h }
      score: 40
    - name: big_amount
      amount: { field: amount, gt: 10000 }
      score: 30
    - name: country
      country_mismatch: { card_country: card.country }
      score: 20
    - name: bad_ips
      blocklist: { ips: [198.51.100.0/24] }
      action: block
    - name: hot_card
      velocity: { key: [card.fingerprint], max: 10, window: 1h }
      action: block
routes:
  - name: pay
    cluster: origin
    match: { path: { prefix: /v1/payments } }
    fraud: { rules: [card_velocity, big_amount, country, bad_ips, hot_card] }
"#;

fn run(lines: &[Value]) -> Vec<Value> {
    let bootstrap = Bootstrap::parse(&bootstrap_text(POLICY, &[("origin", 18081)])).unwrap();
    let mut options = ReplayOptions::default();
    options.sim.workers = 2;
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    replay(bootstrap, options, input.as_bytes(), &mut out, &mut err).unwrap();
    let log = String::from_utf8_lossy(&err).into_owned();
    let parsed: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), lines.len(), "log:\n{log}");
    for p in &parsed {
        assert!(p.get("trap").is_none(), "the filter trapped: {p}\n{log}");
        assert!(
            p.get("error").is_none(),
            "replay refused a line: {p}\n{log}"
        );
    }
    parsed
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

fn payment(time_ms: u64, worker: usize, peer: &str, country: &str, body: &str) -> Value {
    json!({"time_ms": time_ms, "worker": worker, "downstream_addr": format!("{peer}:51234"),
           "request": {"method": "POST", "path": "/v1/payments", "authority": "api.example.com",
                       "headers": [["content-type", "application/json"], ["x-client-country", country]],
                       "body": body}})
}

fn card(fp: &str, amount: u64, country: &str) -> String {
    format!(
        r#"{{"amount":{amount},"currency":"EUR","card":{{"fingerprint":"{fp}","country":"{country}"}}}}"#
    )
}

fn fraud_header(o: &Value) -> Option<&str> {
    header(&o["upstream_request"]["headers"], "x-tollgate-fraud")
}

#[test]
fn payments_are_flagged_and_blocked_by_fraud_rules_in_wasm() {
    let peer = "203.0.113.7";
    // Six payments of one card within the hour, across two workers.
    let mut lines: Vec<Value> = (0..6u64)
        .map(|i| {
            payment(
                T0_MS + i * 300_000,
                i as usize % 2,
                peer,
                "DE",
                &card("fp1", 100, "DE"),
            )
        })
        .collect();
    lines.push(payment(
        T0_MS + 2_000_000,
        0,
        peer,
        "DE",
        &card("fp2", 20_000, "DE"),
    ));
    lines.push(payment(
        T0_MS + 2_000_000,
        1,
        peer,
        "US",
        &card("fp3", 100, "DE"),
    ));
    lines.push(payment(
        T0_MS + 2_000_000,
        0,
        "198.51.100.23",
        "DE",
        &card("fp4", 100, "DE"),
    ));
    lines.push(payment(T0_MS + 2_000_000, 1, peer, "DE", "not json"));
    // fp1 keeps paying: the 11th within the hour is refused by the hard rule.
    lines.extend((0..5u64).map(|i| {
        payment(
            T0_MS + 2_100_000 + i,
            i as usize % 2,
            peer,
            "DE",
            &card("fp1", 100, "DE"),
        )
    }));
    let out = run(&lines);

    for (i, o) in out[..5].iter().enumerate() {
        assert_eq!(o["status"], 200, "{i}: {o}");
        assert_eq!(fraud_header(o), None, "{i}: {o}");
    }
    let sixth = &out[5];
    assert_eq!(sixth["status"], 200, "flag-only rules forward: {sixth}");
    assert_eq!(fraud_header(sixth), Some("card_velocity"));
    assert_eq!(
        header(
            &sixth["upstream_request"]["headers"],
            "x-tollgate-risk-score"
        ),
        Some("40")
    );

    assert_eq!(fraud_header(&out[6]), Some("big_amount"), "{}", out[6]);
    assert_eq!(fraud_header(&out[7]), Some("country"), "{}", out[7]);

    let blocked = &out[8];
    assert_eq!(blocked["status"], 403, "{blocked}");
    assert_eq!(blocked["upstream_called"], false);
    let body: Value = serde_json::from_str(blocked["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "fraud_blocked");
    assert_eq!(
        header(&blocked["headers"], "x-tollgate-request-id"),
        body["incident"].as_str()
    );
    assert!(
        !blocked.to_string().contains("bad_ips"),
        "no rule names to the client: {blocked}"
    );

    assert_eq!(
        out[9]["status"], 200,
        "a body that is not JSON matches nothing: {}",
        out[9]
    );
    assert_eq!(fraud_header(&out[9]), None);

    for o in &out[10..14] {
        assert_eq!(o["status"], 200, "{o}");
        assert_eq!(fraud_header(o), Some("card_velocity"), "{o}");
    }
    assert_eq!(out[14]["status"], 403, "{}", out[14]);
}
