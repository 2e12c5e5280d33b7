//! End-to-end in real Envoy (`--concurrency 2`): a limit holds across worker threads
//! because buckets live in shared data, not in a worker's memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig};

const POLICY: &str = r#"
version: 1
rate_limits:
  limits:
    - { name: per-ip, key: [client_ip], rate: 10, per: 1h }
  headers: { on_allowed: true }
routes:
  - name: api
    match: { path: { prefix: / } }
    cluster: origin
    limits: [per-ip]
"#;

#[test]
fn limit_holds_across_workers() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("limits-workers", POLICY)
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();
    // Each request opens a new connection, so Envoy spreads them over its workers.
    let statuses: Vec<u16> = (0..25)
        .map(|_| envoy.get("/x", &[]).unwrap().status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );

    let refused = envoy.get("/x", &[]).unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.json().unwrap()["error"], "rate_limited");
    let stats = envoy.wasmcustom_stats().unwrap();
    assert_eq!(
        stats.get("wasmcustom.tollgate_rate_limited_total"),
        Some(&16)
    );
    assert_eq!(
        stats
            .get("wasmcustom.tollgate_limiter_fail_open_total")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[test]
fn allowed_responses_carry_ratelimit_fields() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("limits-headers", POLICY)
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();
    let ok = envoy.get("/x", &[]).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("ratelimit-policy"),
        Some("\"per-ip\";q=10;w=3600")
    );
    assert_eq!(ok.header("ratelimit"), Some("\"per-ip\";r=9;t=360"));
}
