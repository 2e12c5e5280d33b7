//! The embedded store's retention sweep, driven with explicit times (no waiting).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{MINUTE, TempDir};
use tollgate_sidecar::model::{CounterDelta, PreparedBatch, PreparedEvent};
use tollgate_sidecar::store::Store;
use tollgate_sidecar::store::embedded::EmbeddedStore;

fn ev(id: &str, minute_ms: u64) -> PreparedEvent {
    PreparedEvent {
        tenant: "acme".into(),
        event_id: id.into(),
        minute_ms,
        status_class: "2xx",
        route: "/a".into(),
        latency_ms: 1,
    }
}

#[tokio::test]
async fn expire_removes_old_usage_ids_and_counters() {
    let dir = TempDir::new("expire");
    let store = EmbeddedStore::open(&dir.0).unwrap();
    let day = 24 * 60 * MINUTE;
    let retention = 30 * day;
    let t0 = 100 * day;
    let window = CounterDelta {
        key: "acme:rpm".into(),
        window_start_ms: t0,
        window_ms: MINUTE,
        delta: 3,
    };
    let b = PreparedBatch {
        node_id: "n".into(),
        batch_id: "b1".into(),
        counters: vec![window.clone()],
        events: vec![ev("old", t0), ev("new", t0 + 20 * day)],
        dropped_events: 0,
    };
    assert_eq!(
        store
            .apply_batch(&b, t0, retention)
            .await
            .unwrap()
            .events_accepted,
        2
    );

    // 31 days after t0: the first minute, the batch id and the counter window are gone.
    let now = t0 + 31 * day;
    assert!(store.expire(now, retention).await.unwrap() >= 4);
    let left = store.usage("acme", 0, u64::MAX).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].minute_ms, t0 + 20 * day);
    assert_eq!(
        store.counters("n", &[window]).await.unwrap()[0].fleet_total,
        0
    );
    // Its event id was forgotten with it; the newer one still de-duplicates.
    let again = PreparedBatch {
        batch_id: "b2".into(),
        counters: vec![],
        ..b
    };
    let o = store.apply_batch(&again, now, retention).await.unwrap();
    assert!(!o.duplicate);
    assert_eq!((o.events_accepted, o.events_duplicate), (1, 1));
    // The re-added old minute (event id + rollup) is past the horizon again; then done.
    assert_eq!(store.expire(now, retention).await.unwrap(), 2);
    assert_eq!(store.expire(now, retention).await.unwrap(), 0);
}
