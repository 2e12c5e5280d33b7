//! The same behaviour on the shared Redis store (a real `redis-server` per test, see
//! scripts/install-redis.sh), plus what only a shared store can do: several sidecar
//! instances agreeing on one fleet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn fleet_totals() {
    scenario_fleet_totals(&Harness::redis(1));
}

#[test]
fn batch_idempotent() {
    scenario_batch_idempotent(&Harness::redis(1));
}

#[test]
fn usage_rollups() {
    scenario_usage_rollups(&Harness::redis(1));
}

#[test]
fn retention_drop() {
    scenario_retention_drop(&Harness::redis(1));
}

#[test]
fn sync_rejects() {
    scenario_sync_rejects(&Harness::redis(1));
}

#[test]
fn usage_rejects() {
    scenario_usage_rejects(&Harness::redis(1));
}

#[test]
fn plan_overrides() {
    scenario_plan_overrides(&Harness::redis(1));
}

#[test]
fn purges() {
    scenario_purges(&Harness::redis(1));
}

#[test]
fn health_metrics_and_routing() {
    scenario_health_metrics_and_routing(&Harness::redis(1));
}

/// Two sidecars on one Redis: nodes syncing to either see the same fleet totals,
/// usage and de-duplication as with one sidecar.
#[test]
fn two_instances_agree() {
    let h = Harness::redis(2);
    let (s1, s2) = (&h.sidecars[0], &h.sidecars[1]);
    let m = current_minute();
    let mut expected_total = 0;
    for i in 0..10u64 {
        let (via, node) = if i % 2 == 0 {
            (s1, "node-a")
        } else {
            (s2, "node-b")
        };
        let events = (0..5)
            .map(|j| event(&format!("e{i}-{j}"), "acme", m + j, "/a", 200, 1))
            .collect();
        let r = sync(
            &via.url("/v1/sync"),
            &batch(
                node,
                &format!("{node}-{i}"),
                vec![counter("acme:rpm", m, i)],
                events,
            ),
        );
        expected_total += i;
        assert_eq!(r["counters"][0]["fleet_total"], expected_total);
    }
    // A retry through the other instance is still a duplicate.
    let retry = batch(
        "node-a",
        "node-a-0",
        vec![counter("acme:rpm", m, 0)],
        vec![],
    );
    assert_eq!(sync(&s2.url("/v1/sync"), &retry)["duplicate"], true);
    let a = sync(
        &s1.url("/v1/sync"),
        &batch("node-a", "final-a", vec![counter("acme:rpm", m, 0)], vec![]),
    );
    let b = sync(
        &s2.url("/v1/sync"),
        &batch("node-b", "final-b", vec![counter("acme:rpm", m, 0)], vec![]),
    );
    assert_eq!(a["counters"][0]["fleet_total"], 45);
    assert_eq!(a["counters"][0]["others"], 1 + 3 + 5 + 7 + 9);
    assert_eq!(b["counters"][0]["others"], 2 + 4 + 6 + 8);
    assert_eq!(a["nodes"], 2);
    assert_eq!(b["nodes"], 2);
    let u1 = usage(&s1.url(""), "acme", m, m + MINUTE);
    let u2 = usage(&s2.url(""), "acme", m, m + MINUTE);
    assert_eq!(u1["total"]["count"], 50);
    assert_eq!(u1, u2);
}

/// With Redis gone, sync answers 503 store_unavailable (the node keeps its batch and
/// retries) and the failure is counted; nothing hangs.
#[test]
fn redis_down_is_503() {
    let mut h = Harness::redis(1);
    h.stop_redis();
    let started = std::time::Instant::now();
    let r = send(
        "POST",
        &h.url("/v1/sync"),
        &batch("node-a", "x", vec![], vec![]),
    );
    r.assert_error(503, "store_unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    request("GET", &h.url("/healthz"), None).assert_error(503, "store_unavailable");
    let m = request("GET", &h.url("/metrics"), None);
    assert!(
        m.text
            .lines()
            .any(|l| l.starts_with("tollgate_sidecar_store_errors_total ")
                && l != "tollgate_sidecar_store_errors_total 0"),
        "{}",
        m.text
    );
}
