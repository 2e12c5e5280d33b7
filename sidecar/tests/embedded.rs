//! Behaviour of the sidecar on its embedded (redb) store, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn fleet_totals() {
    scenario_fleet_totals(&Harness::embedded());
}

#[test]
fn batch_idempotent() {
    scenario_batch_idempotent(&Harness::embedded());
}

#[test]
fn usage_rollups() {
    scenario_usage_rollups(&Harness::embedded());
}

#[test]
fn retention_drop() {
    scenario_retention_drop(&Harness::embedded());
}

#[test]
fn sync_rejects() {
    scenario_sync_rejects(&Harness::embedded());
}

#[test]
fn usage_rejects() {
    scenario_usage_rejects(&Harness::embedded());
}

#[test]
fn plan_overrides() {
    scenario_plan_overrides(&Harness::embedded());
}

#[test]
fn purges() {
    scenario_purges(&Harness::embedded());
}

#[test]
fn health_metrics_and_routing() {
    scenario_health_metrics_and_routing(&Harness::embedded());
}

/// kill -9 after acknowledged batches, restart on the same directory: every
/// acknowledged event, counter, override and purge is there, and a re-sent batch
/// counts once.
#[test]
fn restart_keeps_acknowledged_data() {
    let dir = TempDir::new("restart");
    let m = current_minute();
    let acked = batch(
        "node-a",
        "r1",
        vec![counter("acme:rpm", m, 7)],
        (0..50)
            .map(|i| event(&format!("e{i}"), "acme", m + i, "/v1/a", 200, 2))
            .collect(),
    );
    let first = Sidecar::embedded(&dir.0, &[]);
    assert_eq!(
        sync(&first.url("/v1/sync"), &acked)["events"]["accepted"],
        50
    );
    assert_eq!(
        send(
            "PUT",
            &first.url("/v1/tenants/acme/plan"),
            &json!({"plan": "pro"})
        )
        .status,
        200
    );
    assert_eq!(
        send(
            "POST",
            &first.url("/v1/purge"),
            &json!({"by": "key", "value": "k"})
        )
        .status,
        201
    );
    first.kill9();

    let second = Sidecar::embedded(&dir.0, &[]);
    let u = usage(&second.url(""), "acme", m, m + MINUTE);
    assert_eq!(u["total"]["count"], 50);
    assert_eq!(u["total"]["latency_ms_sum"], 100);
    let again = sync(&second.url("/v1/sync"), &acked);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["counters"][0]["fleet_total"], 7);
    assert_eq!(again["overrides"][0]["plan"], "pro");
    assert_eq!(again["purges"][0]["value"], "k");
    assert_eq!(
        usage(&second.url(""), "acme", m, m + MINUTE)["total"]["count"],
        50
    );
}

/// A second sidecar on the same data directory refuses to start (redb's file lock).
#[test]
fn data_dir_is_exclusive() {
    let dir = TempDir::new("lock");
    let _first = Sidecar::embedded(&dir.0, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"))
        .args(["--listen", "127.0.0.1:0", "--data", dir.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("embedded store"),
        "{out:?}"
    );
}

/// Retention via --retention-days: events older than the horizon are dropped at ingest.
#[test]
fn retention_days_flag() {
    let dir = TempDir::new("retention");
    let s = Sidecar::embedded(&dir.0, &["--retention-days", "1"]);
    let two_days_ago = now_ms() - 2 * 24 * 60 * MINUTE;
    let r = sync(
        &s.url("/v1/sync"),
        &batch(
            "node-a",
            "b",
            vec![],
            vec![event("old", "acme", two_days_ago, "/a", 200, 1)],
        ),
    );
    assert_eq!(r["events"]["dropped"], 1);
}

/// kill -9 in the middle of a stream of batches: after restart every acknowledged batch
/// is there whole, at most the one in flight was applied too (whole, never half), and
/// re-sending everything counts each event exactly once.
#[test]
fn kill9_mid_stream_loses_no_acknowledged_event() {
    const PER_BATCH: u64 = 100;
    let dir = TempDir::new("kill9");
    let m = current_minute();
    let body = move |i: u64| {
        let events = (0..PER_BATCH)
            .map(|j| event(&format!("b{i}-e{j}"), "acme", m + j, "/v1/a", 200, 1))
            .collect();
        serde_json::to_vec(&batch(
            "node-a",
            &format!("b{i}"),
            vec![counter("acme:rpm", m, 1)],
            events,
        ))
        .unwrap()
    };
    let first = Sidecar::embedded(&dir.0, &[]);
    let url = first.url("/v1/sync");
    let sender = std::thread::spawn(move || {
        let (mut acked, mut attempted) = (0u64, 0u64);
        for i in 0..10_000u64 {
            attempted = i + 1;
            match try_request("POST", &url, Some(body(i))) {
                Ok(r) if r.status == 200 => acked = i + 1,
                _ => break,
            }
        }
        (acked, attempted)
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    first.kill9();
    let (acked, attempted) = sender.join().unwrap();
    assert!(
        acked >= 3 && attempted < 10_000,
        "stream too short or kill too late: {acked}/{attempted}"
    );

    let second = Sidecar::embedded(&dir.0, &[]);
    let count = usage(&second.url(""), "acme", m, m + MINUTE)["total"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(count % PER_BATCH, 0, "a batch was half applied: {count}");
    assert!(
        count >= acked * PER_BATCH && count <= attempted * PER_BATCH,
        "{count} vs acked {acked}"
    );
    for i in 0..attempted {
        let r = request("POST", &second.url("/v1/sync"), Some(body(i)));
        assert_eq!(r.status, 200, "{}", r.text);
        if i < acked {
            assert_eq!(r.json()["duplicate"], true);
        }
    }
    let count = usage(&second.url(""), "acme", m, m + MINUTE)["total"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(count, attempted * PER_BATCH);
}
