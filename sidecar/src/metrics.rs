//! Process counters, rendered in the Prometheus text format by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub syncs: AtomicU64,
    pub batches: AtomicU64,
    pub duplicate_batches: AtomicU64,
    pub events_ingested: AtomicU64,
    pub duplicate_events: AtomicU64,
    pub dropped_events: AtomicU64,
    pub store_errors: AtomicU64,
    pub bad_requests: AtomicU64,
    pub purges: AtomicU64,
    pub plan_changes: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// `nodes` is read from the store at scrape time; `None` when the store failed.
    pub fn render(&self, nodes: Option<u64>) -> String {
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "syncs_total",
                "Sync requests answered (including duplicates).",
                &self.syncs,
            ),
            (
                "batches_total",
                "Sync batches applied for the first time.",
                &self.batches,
            ),
            (
                "duplicate_batches_total",
                "Sync batches recognised as retries and not counted again.",
                &self.duplicate_batches,
            ),
            (
                "events_ingested_total",
                "Usage events counted into rollups.",
                &self.events_ingested,
            ),
            (
                "duplicate_events_total",
                "Usage events ignored because their event_id was seen before.",
                &self.duplicate_events,
            ),
            (
                "dropped_events_total",
                "Usage events dropped as older than retention or too far in the future.",
                &self.dropped_events,
            ),
            (
                "store_errors_total",
                "Store operations that failed (answered 503).",
                &self.store_errors,
            ),
            (
                "bad_requests_total",
                "Requests rejected with a 4xx.",
                &self.bad_requests,
            ),
            ("purges_total", "Cache purges accepted.", &self.purges),
            (
                "plan_changes_total",
                "Plan overrides written or deleted.",
                &self.plan_changes,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP tollgate_sidecar_{name} {help}");
            let _ = writeln!(out, "# TYPE tollgate_sidecar_{name} counter");
            let _ = writeln!(
                out,
                "tollgate_sidecar_{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        if let Some(n) = nodes {
            let _ = writeln!(
                out,
                "# HELP tollgate_sidecar_nodes Gateway nodes that synced in the last 10 s."
            );
            let _ = writeln!(out, "# TYPE tollgate_sidecar_nodes gauge");
            let _ = writeln!(out, "tollgate_sidecar_nodes {n}");
        }
        out
    }
}
