//! Fleet sync with the sidecar, as the engine sees it: no proxy-wasm types, no I/O.
//!
//! Every worker of a node records global-limit consumption and usage events in shared
//! data; the one worker holding the sync lease ([`try_lead`]) turns them into a batch
//! ([`take_batch`]), the adapter posts it, and the answer is applied ([`apply_response`]).
//! While the fleet view is fresh, a node may add its share of the fleet's remaining
//! headroom, `(limit − fleet_total) / nodes`, to what the sidecar already counted for it;
//! while it is not, it holds to its share of the limit, `limit / nodes` ([`admissible`]).
//!
//! Delivery is at least once: a batch stays in flight (same batch id, same events) until
//! the sidecar acknowledges it, and the sidecar de-duplicates by batch and event id.
//! Everything is bounded: counters by `max_keys`, events by `max_queued_events`; what
//! does not fit is dropped and counted, never blocks a request.

mod compile;
mod counters;
mod driver;
mod usage;

pub use compile::SidecarConfig;
pub(crate) use compile::compile_sidecar;
pub use driver::{SyncCall, SyncDriver, SyncOutcome};
pub use usage::{Flushed, push_usage, usage_queue};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::shared::{SetError, SharedData};

const INFLIGHT_KEY: &str = "tg:fleet:inflight";
const STATE_KEY: &str = "tg:fleet:state";
const LEASE_KEY: &str = "tg:fleet:lease";
const CAS_ATTEMPTS: usize = 8;
/// A worker hands its buffered usage events to the node's queue at this many, and on
/// its timer.
pub const FLUSH_EVENTS: usize = 64;

/// Bounds of the node-local sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLimits {
    /// Distinct (key, window length) counters held between syncs.
    pub max_keys: usize,
    /// Usage events queued while waiting for the sidecar.
    pub max_queued_events: usize,
    /// Usage events sent in one batch (whole chunks: up to `FLUSH_EVENTS - 1` more).
    pub max_events_per_batch: usize,
}

impl Default for FleetLimits {
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            max_queued_events: 10_000,
            max_events_per_batch: 1_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("shared data unavailable")]
    Store,
    #[error("shared data kept changing (CAS retries exhausted)")]
    Contended,
    #[error("sidecar answer is not valid JSON for a sync response: {0}")]
    BadResponse(String),
    #[error("sidecar answered batch {got} while batch {expected} is in flight")]
    WrongBatch { expected: String, got: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterDelta {
    pub key: String,
    pub window_start_ms: u64,
    pub window_ms: u64,
    pub delta: u64,
}

/// What each stage decided, for the usage record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decisions {
    pub auth: Option<String>,
    pub limit: Option<String>,
    pub waf: Option<String>,
    pub cache: Option<String>,
    /// Fraud rules: `block:<names>` or `flag:<names>`; absent when none matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<String>,
}

/// One request, as billing sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageEvent {
    pub event_id: String,
    pub tenant: String,
    pub timestamp_ms: u64,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub plan: String,
    pub key_id: Option<String>,
    /// 0–100 (the sidecar reads any JSON number).
    pub risk_score: u32,
    pub decisions: Decisions,
    pub latency_ms: u64,
}

/// `POST /v1/sync` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncRequest {
    pub node_id: String,
    pub batch_id: String,
    pub sent_at_ms: u64,
    pub counters: Vec<CounterDelta>,
    pub usage: Vec<UsageEvent>,
    pub purge_seq: u64,
    pub override_seq: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
struct CounterView {
    key: String,
    window_start_ms: u64,
    window_ms: u64,
    #[serde(default)]
    others: u64,
    #[serde(default)]
    fleet_total: u64,
}

/// A plan override for one tenant, set by an operator at the sidecar.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantOverride {
    /// A plan of `rate_limits.plans` for the tenant's `plan: true` limits; another name
    /// leaves the tenant's own plan in force.
    #[serde(default)]
    pub plan: String,
    /// Requests per the limit's period, by limit name.
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct OverrideRecord {
    tenant: String,
    #[serde(flatten)]
    value: TenantOverride,
    #[serde(default)]
    deleted: bool,
}

const OVERRIDE_PREFIX: &str = "tg:fleet:ovr:";

/// A cache purge posted at the sidecar: `value` is `<tenant>:<target>`.
#[derive(Debug, Clone, Deserialize)]
struct PurgeRecord {
    by: String,
    value: String,
    #[serde(default)]
    mode: String,
}

impl PurgeRecord {
    /// Applies it to this node's cache; unknown kinds and values without a tenant are
    /// skipped (a newer sidecar may know more kinds).
    fn apply(&self, store: &dyn SharedData) -> Result<(), FleetError> {
        let Some((tenant, target)) = self.value.split_once(':') else {
            return Ok(());
        };
        let target = match self.by.as_str() {
            "key" => crate::cache::PurgeTarget::Key(target.to_string()),
            "prefix" => crate::cache::PurgeTarget::Prefix(target.to_string()),
            "surrogate_key" => crate::cache::PurgeTarget::Surrogate(target.to_string()),
            _ => return Ok(()),
        };
        // The byte bound matters only when storing.
        crate::cache::CacheStore::new(store, u64::MAX)
            .purge(tenant, &target, self.mode == "soft")
            .map(|_| ())
            .map_err(|_| FleetError::Store)
    }
}

/// The parts of the sidecar's answer the filter uses; the rest is ignored so that a newer
/// sidecar can answer an older filter.
#[derive(Debug, Clone, Deserialize)]
struct SyncResponse {
    batch_id: String,
    nodes: u64,
    #[serde(default)]
    counters: Vec<CounterView>,
    #[serde(default)]
    overrides: Vec<OverrideRecord>,
    #[serde(default)]
    purges: Vec<PurgeRecord>,
    #[serde(default)]
    purge_seq: u64,
    #[serde(default)]
    override_seq: u64,
}

/// Node-wide view of the fleet, kept in shared data as 32 bytes (read on every
/// global-limit check). Per-counter views live in the counter records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetState {
    /// Nodes the sidecar last reported (0: never heard from it).
    pub nodes: u64,
    /// When the last answer was applied.
    pub synced_at_ms: u64,
    pub purge_seq: u64,
    pub override_seq: u64,
}

impl FleetState {
    fn encode(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, v) in out.chunks_exact_mut(8).zip([
            self.nodes,
            self.synced_at_ms,
            self.purge_seq,
            self.override_seq,
        ]) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut f = [0u64; 4];
        if bytes.len() != 32 {
            return None;
        }
        for (field, chunk) in f.iter_mut().zip(bytes.chunks_exact(8)) {
            *field = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        Some(Self {
            nodes: f[0],
            synced_at_ms: f[1],
            purge_seq: f[2],
            override_seq: f[3],
        })
    }
}

fn load_json<T: for<'de> Deserialize<'de> + Default>(
    store: &dyn SharedData,
    key: &str,
) -> Result<(T, Option<u32>), FleetError> {
    match store.get(key).map_err(|_| FleetError::Store)? {
        // A value this code cannot read (older layout, corruption) is replaced, not fatal.
        Some((bytes, cas)) => Ok((
            serde_json::from_slice(&bytes).unwrap_or_default(),
            Some(cas),
        )),
        None => Ok((T::default(), None)),
    }
}

/// Read-modify-write with CAS retries; `edit` returns what the caller gets back.
fn update_json<T, R>(
    store: &dyn SharedData,
    key: &str,
    mut edit: impl FnMut(&mut T) -> R,
) -> Result<R, FleetError>
where
    T: Serialize + for<'de> Deserialize<'de> + Default,
{
    for _ in 0..CAS_ATTEMPTS {
        let (mut value, cas) = load_json::<T>(store, key)?;
        let out = edit(&mut value);
        let bytes = serde_json::to_vec(&value).map_err(|_| FleetError::Store)?;
        match store.set(key, &bytes, Some(cas.unwrap_or(0))) {
            Ok(()) => return Ok(out),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Err(FleetError::Contended)
}

/// A global limit's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow {
        remaining: u64,
    },
    /// Over the fleet-wide limit (or this node's share of it) until the window ends.
    Deny {
        retry_after_ms: u64,
    },
}

/// A global limit of `limit` units per fixed window of `window_ms`: admits `cost` when
/// this node's total in the window stays within [`admissible`], and records it for the
/// next batch. Costs two small shared-data reads and one write.
#[allow(clippy::too_many_arguments)]
pub fn admit(
    store: &dyn SharedData,
    limits: &FleetLimits,
    key: &str,
    limit: u64,
    window_ms: u64,
    cost: u64,
    now_ms: u64,
    stale_after_ms: u64,
) -> Result<Admission, FleetError> {
    let nodes = fleet_state(store)?.nodes;
    counters::admit(
        store,
        limits,
        key,
        counters::Check {
            limit,
            window_ms: window_ms.max(1),
            cost,
            now_ms,
            stale_after_ms,
            nodes,
        },
    )
}

/// The batch to post now, as JSON. A batch still in flight (unacknowledged) is returned
/// unchanged, same id, so the sidecar counts it once; otherwise what the counters
/// admitted since the last batch and up to `max_events_per_batch` queued events become a
/// new batch with `batch_id`.
pub fn take_batch(
    store: &dyn SharedData,
    limits: &FleetLimits,
    node_id: &str,
    batch_id: &str,
    now_ms: u64,
) -> Result<Vec<u8>, FleetError> {
    if let Some((bytes, _)) = store.get(INFLIGHT_KEY).map_err(|_| FleetError::Store)?
        && serde_json::from_slice::<SyncRequest>(&bytes).is_ok()
    {
        return Ok(bytes);
    }
    let counters = counters::take_deltas(store, now_ms)?;
    let usage = usage::take_usage(store, limits, now_ms)?;
    let state = fleet_state(store)?;
    let request = SyncRequest {
        node_id: node_id.to_string(),
        batch_id: batch_id.to_string(),
        sent_at_ms: now_ms,
        counters,
        usage,
        purge_seq: state.purge_seq,
        override_seq: state.override_seq,
    };
    let bytes = serde_json::to_vec(&request).map_err(|_| FleetError::Store)?;
    store
        .set(INFLIGHT_KEY, &bytes, None)
        .map_err(|_| FleetError::Store)?;
    Ok(bytes)
}

/// Applies the sidecar's answer to the batch in flight: stores the fleet view and clears
/// the batch. A malformed answer or one for another batch changes nothing, so the batch
/// is re-sent next tick.
pub fn apply_response(
    store: &dyn SharedData,
    limits: &FleetLimits,
    body: &[u8],
    now_ms: u64,
) -> Result<FleetState, FleetError> {
    let response: SyncResponse =
        serde_json::from_slice(body).map_err(|e| FleetError::BadResponse(e.to_string()))?;
    if let Some((bytes, _)) = store.get(INFLIGHT_KEY).map_err(|_| FleetError::Store)?
        && let Ok(inflight) = serde_json::from_slice::<SyncRequest>(&bytes)
        && inflight.batch_id != response.batch_id
    {
        return Err(FleetError::WrongBatch {
            expected: inflight.batch_id,
            got: response.batch_id,
        });
    }
    for view in &response.counters {
        counters::apply_view(store, limits, view, now_ms)?;
    }
    for record in &response.overrides {
        let key = format!("{OVERRIDE_PREFIX}{}", record.tenant);
        // A removed override is emptied (shared data has no delete).
        let value = if record.deleted {
            Vec::new()
        } else {
            serde_json::to_vec(&record.value).map_err(|_| FleetError::Store)?
        };
        store
            .set(&key, &value, None)
            .map_err(|_| FleetError::Store)?;
    }
    for purge in &response.purges {
        purge.apply(store)?;
    }
    let state = FleetState {
        nodes: response.nodes,
        synced_at_ms: now_ms,
        purge_seq: response.purge_seq,
        override_seq: response.override_seq,
    };
    store
        .set(STATE_KEY, &state.encode(), None)
        .map_err(|_| FleetError::Store)?;
    // An empty value marks "nothing in flight" (shared data has no delete).
    store
        .set(INFLIGHT_KEY, b"", None)
        .map_err(|_| FleetError::Store)?;
    Ok(state)
}

/// Forgets the batch in flight (the sidecar refused it for good: a 4xx).
pub fn abandon_batch(store: &dyn SharedData) -> Result<(), FleetError> {
    store
        .set(INFLIGHT_KEY, b"", None)
        .map_err(|_| FleetError::Store)
}

/// The node's current view of the fleet.
pub fn fleet_state(store: &dyn SharedData) -> Result<FleetState, FleetError> {
    Ok(match store.get(STATE_KEY).map_err(|_| FleetError::Store)? {
        Some((bytes, _)) => FleetState::decode(&bytes).unwrap_or_default(),
        None => FleetState::default(),
    })
}

/// What the last answer that covered a counter said about it, if that answer is recent
/// (within `stale_after_ms`) and about this window; otherwise [`View::Stale`].
pub fn counter_view(
    store: &dyn SharedData,
    key: &str,
    window_start_ms: u64,
    window_ms: u64,
    now_ms: u64,
    stale_after_ms: u64,
) -> Result<View, FleetError> {
    let nodes = fleet_state(store)?.nodes;
    Ok(
        match counters::view_of(store, key, window_start_ms, window_ms)? {
            Some((others, fleet_total, others_growth, at))
                if nodes > 0 && now_ms.saturating_sub(at) <= stale_after_ms =>
            {
                View::Fresh {
                    others,
                    fleet_total,
                    others_growth,
                }
            }
            _ => View::Stale,
        },
    )
}

/// The sidecar's plan override for `tenant`, if one is in force on this node.
pub fn tenant_override(
    store: &dyn SharedData,
    tenant: &str,
) -> Result<Option<TenantOverride>, FleetError> {
    let key = format!("{OVERRIDE_PREFIX}{tenant}");
    Ok(match store.get(&key).map_err(|_| FleetError::Store)? {
        Some((bytes, _)) if !bytes.is_empty() => serde_json::from_slice(&bytes).ok(),
        _ => None,
    })
}

/// Global-limit counters the node holds (bounded by `max_keys`).
pub fn live_counters(store: &dyn SharedData) -> Result<usize, FleetError> {
    counters::live_keys(store)
}

/// What the last answer said about one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Synced recently: the other nodes' and the whole fleet's consumption.
    Fresh {
        others: u64,
        fleet_total: u64,
        /// The others' growth over the last sync interval.
        others_growth: u64,
    },
    /// Sidecar away, circuit open, never synced, or a counter the answer did not cover.
    Stale,
}

/// How many units of a global limit this node may have admitted in a window.
///
/// Fresh: what the sidecar counted for this node plus its share of the headroom left,
/// `own + ⌈(limit − fleet_total − others_growth) / nodes⌉`, so the nodes together cannot
/// spend much more than the headroom before the next sync however the load is spread.
/// `others_growth` stands in for what the others admit meanwhile, which this node cannot
/// see yet (the answers are not simultaneous).
/// Stale: the node's share `⌈limit / nodes⌉`. `nodes == 0` (never synced) counts as one.
pub fn admissible(limit: u64, view: View, nodes: u64) -> u64 {
    let nodes = nodes.max(1);
    match view {
        View::Fresh {
            others,
            fleet_total,
            others_growth,
        } => {
            let own = fleet_total.saturating_sub(others);
            let headroom = limit
                .saturating_sub(fleet_total)
                .saturating_sub(others_growth);
            own.saturating_add(headroom.div_ceil(nodes))
        }
        View::Stale => limit.div_ceil(nodes),
    }
}

/// Consecutive failures toward the sidecar open the circuit for `open_ms`; while open no
/// call is made. One success closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub threshold: u32,
    pub open_ms: u64,
    failures: u32,
    open_until_ms: u64,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_ms: u64) -> Self {
        Self {
            threshold: threshold.max(1),
            open_ms,
            failures: 0,
            open_until_ms: 0,
        }
    }

    pub fn allows(&self, now_ms: u64) -> bool {
        now_ms >= self.open_until_ms
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until_ms = 0;
    }

    /// Returns true when this failure opened the circuit.
    pub fn failure(&mut self, now_ms: u64) -> bool {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.threshold {
            self.failures = 0;
            self.open_until_ms = now_ms.saturating_add(self.open_ms);
            return true;
        }
        false
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Lease {
    holder: String,
    until_ms: u64,
}

/// Takes or renews the node's sync lease for `lease_ms`: true when `worker` may sync now.
/// A worker that dies stops renewing, and another takes over once the lease lapses.
pub fn try_lead(
    store: &dyn SharedData,
    worker: &str,
    now_ms: u64,
    lease_ms: u64,
) -> Result<bool, FleetError> {
    update_json(store, LEASE_KEY, |l: &mut Lease| {
        if l.holder == worker || l.holder.is_empty() || now_ms >= l.until_ms {
            l.holder = worker.to_string();
            l.until_ms = now_ms.saturating_add(lease_ms);
            true
        } else {
            false
        }
    })
}

#[cfg(test)]
mod tests;
