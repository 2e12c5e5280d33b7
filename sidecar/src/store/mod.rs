//! The storage contract the HTTP layer is written against, and its two implementations:
//! [`embedded::EmbeddedStore`] (redb file, the default) and [`redis::RedisStore`]
//! (shared by several sidecar instances). Both must behave the same; the behaviour
//! tests in `tests/` run one scenario list against each.
//!
//! Every method takes the current time from the caller, so nothing below reads a clock.

use std::future::Future;

use crate::model::{
    CounterDelta, PlanBody, PlanRecord, PreparedBatch, PurgeBody, PurgeRecord, Rollup,
};

pub mod embedded;
pub mod redis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Task(String),
}

/// What applying one sync batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The batch id had been applied before; nothing was counted this time.
    pub duplicate: bool,
    pub events_accepted: u64,
    pub events_duplicate: u64,
}

/// Fleet and own totals of one counter window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterTotals {
    pub fleet_total: u64,
    pub own: u64,
}

/// A page of a sequenced feed (purges, plan overrides) and the sequence to ask from
/// next time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed<T> {
    pub items: Vec<T>,
    pub next_seq: u64,
}

pub trait Store: Send + Sync + 'static {
    /// Applies a batch atomically and durably: either the batch id, its counter deltas
    /// and its new events are all recorded, or none are. A batch id seen before (per
    /// node) applies nothing.
    fn apply_batch(
        &self,
        batch: &PreparedBatch,
        now_ms: u64,
        retention_ms: u64,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;

    /// [`Store::apply_batch`], then [`Store::counters`] for the batch's windows. A store
    /// that can read the totals in the applying transaction overrides it.
    fn apply_batch_with_totals(
        &self,
        batch: &PreparedBatch,
        now_ms: u64,
        retention_ms: u64,
    ) -> impl Future<Output = Result<(BatchOutcome, Vec<CounterTotals>), StoreError>> + Send {
        async move {
            let outcome = self.apply_batch(batch, now_ms, retention_ms).await?;
            let totals = self.counters(&batch.node_id, &batch.counters).await?;
            Ok((outcome, totals))
        }
    }

    /// Totals for each window, in the order given, as seen by `node_id`.
    fn counters(
        &self,
        node_id: &str,
        windows: &[CounterDelta],
    ) -> impl Future<Output = Result<Vec<CounterTotals>, StoreError>> + Send;

    /// Marks `node_id` alive at `now_ms`; returns the nodes alive in the last
    /// [`crate::model::NODE_TTL_MS`].
    fn heartbeat(
        &self,
        node_id: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn nodes_alive(&self, now_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Per-minute rollups of `tenant` with `from_ms <= minute_ms < to_ms`, oldest first.
    fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> impl Future<Output = Result<Vec<Rollup>, StoreError>> + Send;

    fn put_plan(
        &self,
        tenant: &str,
        body: &PlanBody,
        now_ms: u64,
    ) -> impl Future<Output = Result<PlanRecord, StoreError>> + Send;

    /// The live override, or `None` (never a tombstone).
    fn get_plan(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Option<PlanRecord>, StoreError>> + Send;

    /// Replaces the override with a tombstone; `None` when there was none.
    fn delete_plan(
        &self,
        tenant: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<PlanRecord>, StoreError>> + Send;

    /// Overrides (and tombstones) changed after `since`, oldest first, at most `limit`.
    fn plans_since(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Feed<PlanRecord>, StoreError>> + Send;

    fn add_purge(
        &self,
        body: &PurgeBody,
        now_ms: u64,
    ) -> impl Future<Output = Result<PurgeRecord, StoreError>> + Send;

    fn purges_since(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Feed<PurgeRecord>, StoreError>> + Send;

    /// Deletes usage, event ids and batch ids older than the retention horizon and
    /// counter windows long past. Returns how many records went. Redis expires by TTL,
    /// so there it only trims indexes.
    fn expire(
        &self,
        now_ms: u64,
        retention_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Cheap liveness probe for `/healthz`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Counter windows are kept this long after they end: long enough for late syncs of a
/// node that was briefly away, short enough to keep the counter table small.
pub const COUNTER_GRACE_MS: u64 = 10 * 60_000;

/// Where the node should resume: after the last item of a full page, else at the
/// newest sequence (the read of `latest` may lag an item read after it).
pub fn feed_next(last: Option<u64>, full: bool, latest: u64, since: u64) -> u64 {
    match (last, full) {
        (Some(seq), true) => seq,
        (last, _) => latest.max(since).max(last.unwrap_or(0)),
    }
}
