//! Engine stages natively, on a fake clock: JWT verification per algorithm (first seen
//! and cached), one rate-limit decision, API-key lookup, edge fraud rules on a payment body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use tollgate_engine::{Decision, Engine, MemorySharedData, Policy, RequestHead};

const VECTORS: &str = include_str!("../../filter/engine/tests/vectors/jwt.json");

fn jwt_policy(vectors: &Value) -> String {
    let jwks = |name: &str| vectors["issuers"][name]["jwks"].to_string();
    format!(
        r#"
version: 1
auth:
  jwt_providers:
    - {{ name: taxpayers, issuer: "https://auth.tax.example", audiences: [refund-portal], algorithms: [ES256, RS256, EdDSA], jwks: {{ inline: {} }} }}
    - {{ name: partners, issuer: "https://partners.example", algorithms: [HS256], jwks: {{ inline: {} }} }}
routes:
  - {{ name: api, cluster: origin, auth: {{ accept: [taxpayers, partners] }} }}
"#,
        jwks("taxpayers"),
        jwks("partners")
    )
}

fn request(token: &str) -> RequestHead {
    RequestHead::from_pairs([
        (":method", "GET".to_string()),
        (":path", "/v1/refunds/u1".to_string()),
        ("authorization", format!("Bearer {token}")),
    ])
}

fn jwt(c: &mut Criterion) {
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    let now_ms = vectors["now"].as_u64().unwrap() * 1000;
    let policy = jwt_policy(&vectors);
    let store = MemorySharedData::default();
    let mut group = c.benchmark_group("jwt");
    group.throughput(Throughput::Elements(1));
    for (label, case) in [
        ("ES256", "valid ES256"),
        ("RS256", "valid RS256"),
        ("EdDSA", "valid EdDSA"),
        ("HS256", "valid HS256 partner"),
    ] {
        let token = vectors["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == case)
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        group.bench_function(format!("first_seen/{label}"), |b| {
            b.iter_batched(
                || {
                    (
                        Engine::new(Policy::load(&policy).unwrap(), 1),
                        request(&token),
                        // A fresh node too: the node-wide cache would skip the check.
                        MemorySharedData::default(),
                    )
                },
                |(engine, req, node)| {
                    let d = engine.on_request_headers(req, now_ms, &node);
                    assert!(matches!(d, Decision::Forward(_)));
                    d
                },
                BatchSize::SmallInput,
            )
        });
        let engine = Engine::new(Policy::load(&policy).unwrap(), 1);
        engine.on_request_headers(request(&token), now_ms, &store);
        group.bench_function(format!("cached/{label}"), |b| {
            b.iter_batched(
                || request(&token),
                |req| black_box(engine.on_request_headers(req, now_ms, &store)),
                BatchSize::SmallInput,
            )
        });
    }
    // Verified by another worker: this VM's first sight of the token is a node-wide hit.
    let valid_es = vectors["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "valid ES256")
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let node = MemorySharedData::default();
    Engine::new(Policy::load(&policy).unwrap(), 2).on_request_headers(
        request(&valid_es),
        now_ms,
        &node,
    );
    group.bench_function("shared_cache_hit/ES256", |b| {
        b.iter_batched(
            || {
                (
                    Engine::new(Policy::load(&policy).unwrap(), 1),
                    request(&valid_es),
                )
            },
            |(engine, req)| {
                let d = engine.on_request_headers(req, now_ms, &node);
                assert!(matches!(d, Decision::Forward(_)));
                d
            },
            BatchSize::SmallInput,
        )
    });
    let forged = format!("{}x", vectors["cases"][0]["token"].as_str().unwrap());
    let engine = Engine::new(Policy::load(&policy).unwrap(), 1);
    group.bench_function("forged/ES256", |b| {
        b.iter_batched(
            // A fresh node each time: the failed-token memory would skip the check.
            || (request(&forged), MemorySharedData::default()),
            |(req, node)| black_box(engine.on_request_headers(req, now_ms, &node)),
            BatchSize::SmallInput,
        )
    });
    // The same forged token again (a replayed forgery): the failed-token memory answers.
    let node = MemorySharedData::default();
    engine.on_request_headers(request(&forged), now_ms, &node);
    group.bench_function("forged_remembered/ES256", |b| {
        b.iter_batched(
            || request(&forged),
            |req| black_box(engine.on_request_headers(req, now_ms, &node)),
            BatchSize::SmallInput,
        )
    });
    // A flood of distinct forgeries from one client past its budget: no crypto.
    let node = MemorySharedData::default();
    let from_client = |token: &str| request(token).with_peer(Some("203.0.113.9:4000".into()));
    let parts: Vec<&str> = valid_es.split('.').collect();
    let mut n = 0u64;
    let mut distinct_forgery = move || {
        n += 1;
        let sig = base64_url(&n.to_le_bytes().repeat(8));
        from_client(&format!("{}.{}.{sig}", parts[0], parts[1]))
    };
    for _ in 0..25 {
        engine.on_request_headers(distinct_forgery(), now_ms, &node);
    }
    group.bench_function("forged_over_budget/ES256", |b| {
        b.iter_batched(
            &mut distinct_forgery,
            |req| black_box(engine.on_request_headers(req, now_ms, &node)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn limits(c: &mut Criterion) {
    let policy = r#"
version: 1
rate_limits:
  limits: [{ name: per-ip, key: [client_ip], rate: 1000000000, per: 1s }]
routes:
  - { name: api, cluster: origin, limits: [per-ip] }
"#;
    let engine = Engine::new(Policy::load(policy).unwrap(), 1);
    let store = MemorySharedData::default();
    let mut group = c.benchmark_group("limits");
    group.throughput(Throughput::Elements(1));
    let baseline_engine = Engine::new(
        Policy::load("version: 1\nroutes: [{name: api, cluster: origin}]").unwrap(),
        1,
    );
    let head = || {
        RequestHead::from_pairs([(":method", "GET"), (":path", "/x")])
            .with_peer(Some("203.0.113.9:443".to_string()))
    };
    group.bench_function("request_without_limit", |b| {
        b.iter_batched(
            head,
            |r| black_box(baseline_engine.on_request_headers(r, 1_000, &store)),
            BatchSize::SmallInput,
        )
    });
    let mut now = 1_000u64;
    group.bench_function("request_with_one_limit", |b| {
        b.iter_batched(
            head,
            |r| {
                now += 1;
                black_box(engine.on_request_headers(r, now, &store))
            },
            BatchSize::SmallInput,
        )
    });
    // The same limit held across the fleet: the sidecar's view lives in shared data, so
    // this adds two small reads and a write; many keys, so the index is realistic.
    let global_engine = Engine::new(
        Policy::load(
            &policy
                .replace("per: 1s }", "per: 1s, global: true }")
                .replace(
                    "version: 1\n",
                    "version: 1\nsidecar: { cluster: sidecar, max_keys: 20000 }\n",
                ),
        )
        .unwrap(),
        1,
    );
    let global_store = MemorySharedData::default();
    let mut client = 0u32;
    group.bench_function("request_with_one_global_limit", |b| {
        b.iter_batched(
            || {
                client = (client + 1) % 10_000;
                RequestHead::from_pairs([(":method", "GET"), (":path", "/x")])
                    .with_peer(Some(format!("10.0.{}.{}:443", client / 250, client % 250)))
            },
            |r| {
                now += 1;
                black_box(global_engine.on_request_headers(r, now, &global_store))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

const FRAUD_POLICY: &str = r#"
version: 1
fraud:
  client_country: { header: x-client-country }
  rules:
    - { name: card_velocity, velocity: { key: [card.fingerprint], max: 5, window: 1h }, score: 40 }
    - { name: account_velocity, velocity: { key: [account_id], max: 5, window: 1h }, score: 40 }
    - { name: big_amount, amount: { field: amount, gt: 10000, currency_field: currency, gt_by_currency: { JPY: 1500000 } }, score: 30 }
    - { name: card_country, country_mismatch: { card_country: card.country }, score: 20 }
    - { name: bad_ips, blocklist: { ips: [198.51.100.0/24] }, action: block }
    - { name: stolen_cards, blocklist: { field: card.fingerprint, values: [fp_stolen_1, fp_stolen_2] }, action: block }
routes:
  - name: pay
    cluster: origin
    fraud: { rules: [card_velocity, account_velocity, big_amount, card_country, bad_ips, stolen_cards], block_score: 80 }
"#;

/// The whole fraud body phase (parse, six rules, two shared-data velocity updates) on a
/// typical ~400-byte payment body; fingerprints rotate over 1000 cards and the clock moves
/// 50 ms per payment, so counts stay under the limits and entries get evicted as in use.
fn fraud(c: &mut Criterion) {
    let engine = Engine::new(Policy::load(FRAUD_POLICY).unwrap(), 7);
    let store = MemorySharedData::default();
    let head = RequestHead::from_pairs([
        (":method", "POST"),
        (":path", "/v1/payments"),
        (":authority", "api.example.com"),
        ("content-type", "application/json"),
        ("x-client-country", "DE"),
    ])
    .with_peer(Some("203.0.113.7:5000".to_string()));
    let Decision::Forward(plan) = engine.on_request_headers(head, 1_000, &store) else {
        panic!("the payment route forwards");
    };
    let check = plan.body_check.clone().unwrap();
    let bodies: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"amount":1299,"currency":"EUR","description":"Order 4711 for customer","account_id":"acct_{i:06}","card":{{"fingerprint":"fp_{i:08x}","country":"DE","brand":"visa","last4":"4242","exp_month":12,"exp_year":2030}},"billing":{{"name":"Erika Mustermann","city":"Berlin","country":"DE","postal_code":"10115"}},"metadata":{{"order_id":"4711","channel":"web"}}}}"#
            )
            .into_bytes()
        })
        .collect();
    let mut group = c.benchmark_group("fraud");
    group.throughput(Throughput::Elements(1));
    let mut n = 0usize;
    group.bench_function("payment_body_six_rules", |b| {
        b.iter(|| {
            n += 1;
            black_box(engine.fraud_on_body(
                &check,
                &bodies[n % bodies.len()],
                1_000 + n as u64 * 50,
                &store,
                "id",
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, jwt, limits, fraud);
criterion_main!(benches);
