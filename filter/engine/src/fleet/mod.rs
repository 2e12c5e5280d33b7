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
mod driver;

use std::collections::BTreeMap;

pub use compile::SidecarConfig;
pub(crate) use compile::compile_sidecar;
pub use driver::{SyncCall, SyncDriver, SyncOutcome};

use serde::{Deserialize, Serialize};

use crate::shared::{SetError, SharedData};

const PENDING_KEY: &str = "tg:fleet:pending";
const QUEUE_KEY: &str = "tg:fleet:queue";
const INFLIGHT_KEY: &str = "tg:fleet:inflight";
const STATE_KEY: &str = "tg:fleet:state";
const LEASE_KEY: &str = "tg:fleet:lease";
const CAS_ATTEMPTS: usize = 8;

/// Bounds of the node-local sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLimits {
    /// Distinct (key, window) counters held between syncs.
    pub max_keys: usize,
    /// Usage events queued while waiting for the sidecar.
    pub max_queued_events: usize,
    /// Usage events sent in one batch.
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

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decisions {
    pub auth: Option<String>,
    pub limit: Option<String>,
    pub waf: Option<String>,
    pub cache: Option<String>,
}

/// One request, as billing sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageEvent {
    pub event_id: String,
    pub tenant: String,
    pub timestamp_ms: u64,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub plan: String,
    pub key_id: Option<String>,
    pub risk_score: f64,
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

/// The parts of the sidecar's answer the filter uses; the rest is ignored so that a newer
/// sidecar can answer an older filter.
#[derive(Debug, Clone, Deserialize)]
struct SyncResponse {
    batch_id: String,
    nodes: u64,
    #[serde(default)]
    counters: Vec<CounterView>,
    #[serde(default)]
    purge_seq: u64,
    #[serde(default)]
    override_seq: u64,
}

/// Node-wide view of the fleet, kept in shared data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FleetState {
    /// Nodes the sidecar last reported (0: never heard from it).
    pub nodes: u64,
    /// When the last answer was applied.
    pub synced_at_ms: u64,
    /// `(others, fleet_total, others' growth since the answer before)` by counter
    /// (`key|window_start_ms|window_ms`), as of the last answer.
    pub counters: BTreeMap<String, (u64, u64, u64)>,
    pub purge_seq: u64,
    pub override_seq: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Pending {
    /// Consumption since the last batch, to send.
    counters: BTreeMap<String, CounterDelta>,
    /// This node's total per counter in windows not yet over, to enforce against.
    #[serde(default)]
    window_totals: BTreeMap<String, (u64, u64)>,
    dropped: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Queue {
    events: std::collections::VecDeque<UsageEvent>,
    /// Events refused because the queue was full, since the node started.
    dropped: u64,
}

fn counter_id(key: &str, window_start_ms: u64, window_ms: u64) -> String {
    format!("{key}|{window_start_ms}|{window_ms}")
}

fn load<T: for<'de> Deserialize<'de> + Default>(
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
fn update<T, R>(
    store: &dyn SharedData,
    key: &str,
    mut edit: impl FnMut(&mut T) -> R,
) -> Result<R, FleetError>
where
    T: Serialize + for<'de> Deserialize<'de> + Default,
{
    for _ in 0..CAS_ATTEMPTS {
        let (mut value, cas) = load::<T>(store, key)?;
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

/// Adds `delta` to this node's consumption of a global limit key. Returns false when the
/// counter table is full and the consumption was dropped (then counted).
pub fn record_consumption(
    store: &dyn SharedData,
    limits: &FleetLimits,
    key: &str,
    window_start_ms: u64,
    window_ms: u64,
    delta: u64,
) -> Result<bool, FleetError> {
    let id = counter_id(key, window_start_ms, window_ms);
    update(store, PENDING_KEY, |p: &mut Pending| {
        if let Some(c) = p.counters.get_mut(&id) {
            c.delta = c.delta.saturating_add(delta);
            true
        } else if p.counters.len() < limits.max_keys {
            p.counters.insert(
                id.clone(),
                CounterDelta {
                    key: key.to_string(),
                    window_start_ms,
                    window_ms,
                    delta,
                },
            );
            true
        } else {
            p.dropped = p.dropped.saturating_add(1);
            false
        }
    })
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
/// this node's total in the window plus the others' stays within
/// [`admissible`], and records it for the next batch. When the counter table is full
/// the request is admitted uncounted (fail open, like a shared-data failure) and the
/// loss is counted.
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
    let window_ms = window_ms.max(1);
    let window_start_ms = now_ms - now_ms % window_ms;
    let window_end_ms = window_start_ms.saturating_add(window_ms);
    let state = fleet_state(store)?;
    let view = state.view(key, window_start_ms, window_ms, now_ms, stale_after_ms);
    let allowed = admissible(limit, view, state.nodes);
    let id = counter_id(key, window_start_ms, window_ms);
    update(store, PENDING_KEY, |p: &mut Pending| {
        // Windows that are over no longer matter for enforcement.
        p.window_totals.retain(|_, (_, end)| *end > now_ms);
        let mine = p.window_totals.get(&id).map_or(0, |(n, _)| *n);
        if mine.saturating_add(cost) > allowed {
            return Admission::Deny {
                retry_after_ms: window_end_ms - now_ms,
            };
        }
        let fits = p.window_totals.contains_key(&id) || p.window_totals.len() < limits.max_keys;
        let counted = fits && (p.counters.contains_key(&id) || p.counters.len() < limits.max_keys);
        if !counted {
            p.dropped = p.dropped.saturating_add(1);
            return Admission::Allow {
                remaining: allowed.saturating_sub(mine),
            };
        }
        p.window_totals
            .entry(id.clone())
            .or_insert((0, window_end_ms))
            .0 = mine.saturating_add(cost);
        let pending = p
            .counters
            .entry(id.clone())
            .or_insert_with(|| CounterDelta {
                key: key.to_string(),
                window_start_ms,
                window_ms,
                delta: 0,
            });
        pending.delta = pending.delta.saturating_add(cost);
        Admission::Allow {
            remaining: allowed.saturating_sub(mine.saturating_add(cost)),
        }
    })
}

/// What became of a usage event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// The queue was full: the event is lost; `dropped_total` counts all such losses.
    Dropped {
        dropped_total: u64,
    },
}

/// Queues a usage event for the next batch, or drops it when the queue is full.
pub fn push_usage(
    store: &dyn SharedData,
    limits: &FleetLimits,
    event: &UsageEvent,
) -> Result<Queued, FleetError> {
    update(store, QUEUE_KEY, |q: &mut Queue| {
        if q.events.len() < limits.max_queued_events {
            q.events.push_back(event.clone());
            Queued::Yes
        } else {
            q.dropped = q.dropped.saturating_add(1);
            Queued::Dropped {
                dropped_total: q.dropped,
            }
        }
    })
}

/// Usage events waiting (not counting the batch in flight).
pub fn queued_usage(store: &dyn SharedData) -> Result<usize, FleetError> {
    Ok(load::<Queue>(store, QUEUE_KEY)?.0.events.len())
}

/// The batch to post now, as JSON. A batch still in flight (unacknowledged) is returned
/// unchanged, same id, so the sidecar counts it once; otherwise pending counters and up to
/// `max_events_per_batch` queued events become a new batch with `batch_id`.
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
    let counters = update(store, PENDING_KEY, |p: &mut Pending| {
        let mut sent = std::mem::take(&mut p.counters);
        // Counters of windows still running go out even when nothing was added (delta
        // 0), so the answer keeps reporting the other nodes' consumption for them.
        for (id, (_, end)) in &p.window_totals {
            if *end > now_ms && !sent.contains_key(id) {
                let mut parts = id.rsplitn(3, '|');
                let (Some(window_ms), Some(start), Some(key)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (Ok(window_ms), Ok(window_start_ms)) = (window_ms.parse(), start.parse())
                else {
                    continue;
                };
                sent.insert(
                    id.clone(),
                    CounterDelta {
                        key: key.to_string(),
                        window_start_ms,
                        window_ms,
                        delta: 0,
                    },
                );
            }
        }
        sent.into_values().collect::<Vec<_>>()
    })?;
    let usage = update(store, QUEUE_KEY, |q: &mut Queue| {
        let n = q.events.len().min(limits.max_events_per_batch);
        q.events.drain(..n).collect::<Vec<_>>()
    })?;
    let state = load::<FleetState>(store, STATE_KEY)?.0;
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
    let previous = load::<FleetState>(store, STATE_KEY)?.0;
    let state = FleetState {
        nodes: response.nodes,
        synced_at_ms: now_ms,
        counters: response
            .counters
            .iter()
            .map(|c| {
                let id = counter_id(&c.key, c.window_start_ms, c.window_ms);
                // The others' consumption since the previous answer: about what they will
                // have added again, unseen, by the time this node next syncs.
                let growth = previous
                    .counters
                    .get(&id)
                    .map_or(0, |(before, _, _)| c.others.saturating_sub(*before));
                (id, (c.others, c.fleet_total.max(c.others), growth))
            })
            .collect(),
        purge_seq: response.purge_seq,
        override_seq: response.override_seq,
    };
    let bytes = serde_json::to_vec(&state).map_err(|_| FleetError::Store)?;
    store
        .set(STATE_KEY, &bytes, None)
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
    Ok(load::<FleetState>(store, STATE_KEY)?.0)
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

impl FleetState {
    /// The view of one counter: fresh when synced within `stale_after_ms` and covered by
    /// the answer. A counter the answer did not cover is unknown, not zero.
    pub fn view(
        &self,
        key: &str,
        window_start_ms: u64,
        window_ms: u64,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> View {
        let recent = self.nodes > 0 && now_ms.saturating_sub(self.synced_at_ms) <= stale_after_ms;
        match self
            .counters
            .get(&counter_id(key, window_start_ms, window_ms))
        {
            Some((others, fleet_total, others_growth)) if recent => View::Fresh {
                others: *others,
                fleet_total: *fleet_total,
                others_growth: *others_growth,
            },
            _ => View::Stale,
        }
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
    update(store, LEASE_KEY, |l: &mut Lease| {
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
