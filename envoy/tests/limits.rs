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

const VELOCITY_POLICY: &str = r#"
version: 1
rate_limits:
  velocity:
    - { name: device-spike, key: ["header:x-device"], short_window: 10s, long_window: 10m, min_requests: 5, risk_score: 30 }
    - { name: card-burst, key: ["header:x-card"], short_window: 1m, long_window: 1h, min_requests: 5, block: true }
routes:
  - name: api
    match: { path: { prefix: / } }
    cluster: origin
"#;

/// A burst from a key with no history is a spike: flagged to the origin (flag-only rule) or
/// refused (blocking rule), counted the same across both workers.
#[test]
fn velocity_spikes_are_flagged_and_blocked_across_workers() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("limits-velocity", VELOCITY_POLICY)
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();
    let flags: Vec<Option<String>> = (0..8)
        .map(|_| {
            let r = envoy.get("/x", &[("x-device", "d1")]).unwrap();
            assert_eq!(r.status, 200, "flag-only rules never block");
            let saw = r.origin_saw_headers().unwrap();
            let flag = saw
                .iter()
                .find(|(k, _)| k == "x-tollgate-velocity")
                .map(|(_, v)| v.clone());
            if flag.is_some() {
                assert!(
                    saw.iter()
                        .any(|(k, v)| k == "x-tollgate-risk-score" && v == "30")
                );
            }
            flag
        })
        .collect();
    // Four requests can never reach the threshold (5); real time passes between requests, so
    // the count decays a little and the 5th or 6th crosses it, whichever worker serves it.
    assert!(flags[..4].iter().all(Option::is_none), "{flags:?}");
    assert_eq!(flags[7].as_deref(), Some("device-spike"), "{flags:?}");

    let statuses: Vec<u16> = (0..8)
        .map(|_| envoy.get("/pay", &[("x-card", "c1")]).unwrap().status)
        .collect();
    assert!(statuses[..4].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[7], 429, "{statuses:?}");
    let refused = envoy.get("/pay", &[("x-card", "c1")]).unwrap();
    assert_eq!(refused.json().unwrap()["error"], "velocity_exceeded");
    assert_eq!(refused.header("retry-after"), Some("60"));
    let stats = envoy.wasmcustom_stats().unwrap();
    assert!(
        stats
            .get("wasmcustom.tollgate_velocity_flagged_total")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert!(
        stats
            .get("wasmcustom.tollgate_velocity_blocked_total")
            .copied()
            .unwrap_or(0)
            >= 2
    );
}
