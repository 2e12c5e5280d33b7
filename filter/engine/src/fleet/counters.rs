//! Global-limit counters in shared data, one fixed-size binary record per (limit key,
//! window length), so that a request reads and rewrites 72 bytes whatever the number of
//! keys. An index of the live records lets the syncing worker find them; it changes only
//! when a key appears or its window ends.

use super::{CAS_ATTEMPTS, CounterDelta, FleetError, FleetLimits};
use crate::shared::{SetError, SharedData};

const RECORD_PREFIX: &str = "tg:fleet:c:";
const INDEX_PREFIX: &str = "tg:fleet:index:";
/// The index is split so that a new key rewrites 1/64 of it, not all of it.
const INDEX_SHARDS: u64 = 64;
const FIELDS: usize = 9;
const RECORD_BYTES: usize = FIELDS * 8;
/// `view_window_start_ms` of a record no answer has covered yet.
const NO_VIEW: u64 = u64::MAX;

/// This node's consumption of one key in its current window, and the fleet's, as of the
/// last sync answer that covered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CounterRecord {
    pub window_start_ms: u64,
    pub window_ms: u64,
    /// Admitted here in the window: what this node enforces against.
    pub own: u64,
    /// Admitted here since the last batch took it.
    pub unsent: u64,
    /// The window the view fields describe.
    pub view_window_start_ms: u64,
    pub others: u64,
    pub fleet_total: u64,
    /// The others' growth between the two answers before.
    pub others_growth: u64,
    pub view_at_ms: u64,
}

impl CounterRecord {
    fn new(window_start_ms: u64, window_ms: u64) -> Self {
        Self {
            window_start_ms,
            window_ms,
            own: 0,
            unsent: 0,
            view_window_start_ms: NO_VIEW,
            others: 0,
            fleet_total: 0,
            others_growth: 0,
            view_at_ms: 0,
        }
    }

    fn encode(&self) -> [u8; RECORD_BYTES] {
        let fields = [
            self.window_start_ms,
            self.window_ms,
            self.own,
            self.unsent,
            self.view_window_start_ms,
            self.others,
            self.fleet_total,
            self.others_growth,
            self.view_at_ms,
        ];
        let mut out = [0u8; RECORD_BYTES];
        for (chunk, field) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// `None` for an empty value (a pruned record) or one of another layout.
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != RECORD_BYTES {
            return None;
        }
        let mut f = [0u64; FIELDS];
        for (field, chunk) in f.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *field = u64::from_le_bytes(b);
        }
        Some(Self {
            window_start_ms: f[0],
            window_ms: f[1],
            own: f[2],
            unsent: f[3],
            view_window_start_ms: f[4],
            others: f[5],
            fleet_total: f[6],
            others_growth: f[7],
            view_at_ms: f[8],
        })
    }

    /// Moves the record to the window starting at `window_start_ms`; what an earlier
    /// window left unsent is dropped, as that window is over on every node.
    fn roll_to(&mut self, window_start_ms: u64) {
        if self.window_start_ms != window_start_ms {
            self.window_start_ms = window_start_ms;
            self.own = 0;
            self.unsent = 0;
        }
    }
}

/// `key|window_ms`: the index entry and the record key's suffix.
fn record_id(key: &str, window_ms: u64) -> String {
    format!("{key}|{window_ms}")
}

fn record_key(id: &str) -> String {
    let mut k = String::with_capacity(RECORD_PREFIX.len() + id.len());
    k.push_str(RECORD_PREFIX);
    k.push_str(id);
    k
}

fn split_id(id: &str) -> Option<(&str, u64)> {
    let (key, window) = id.rsplit_once('|')?;
    Some((key, window.parse().ok()?))
}

/// The record and its CAS token; `None` when absent or pruned.
fn read(
    store: &dyn SharedData,
    key: &str,
) -> Result<(Option<CounterRecord>, Option<u32>), FleetError> {
    match store.get(key).map_err(|_| FleetError::Store)? {
        Some((bytes, cas)) => Ok((CounterRecord::decode(&bytes), Some(cas))),
        None => Ok((None, None)),
    }
}

fn shard_key(shard: u64) -> String {
    format!("{INDEX_PREFIX}{shard}")
}

fn shard_of(id: &str) -> u64 {
    // FNV-1a: stable across VMs and builds, which is all the shard choice needs.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % INDEX_SHARDS
}

/// Adds `id` to its index shard unless it is there. `false` when the shard is full (each
/// holds `max_keys / 64`, so the node holds about `max_keys` keys in all).
fn index_add(store: &dyn SharedData, id: &str, max_keys: usize) -> Result<bool, FleetError> {
    let key = shard_key(shard_of(id));
    let per_shard = max_keys.div_ceil(INDEX_SHARDS as usize);
    for _ in 0..CAS_ATTEMPTS {
        let (text, cas) = match store.get(&key).map_err(|_| FleetError::Store)? {
            Some((bytes, cas)) => (String::from_utf8(bytes).unwrap_or_default(), Some(cas)),
            None => (String::new(), None),
        };
        if text.lines().any(|line| line == id) {
            return Ok(true);
        }
        if text.lines().count() >= per_shard {
            return Ok(false);
        }
        let mut next = text;
        next.push_str(id);
        next.push('\n');
        match store.set(&key, next.as_bytes(), Some(cas.unwrap_or(0))) {
            Ok(()) => return Ok(true),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Err(FleetError::Contended)
}

/// The record of `id` and its CAS token, or a new one (indexed first so the syncing
/// worker finds it). `None` when the index is full.
fn read_or_create(
    store: &dyn SharedData,
    limits: &FleetLimits,
    id: &str,
    window_start_ms: u64,
    window_ms: u64,
) -> Result<Option<(CounterRecord, Option<u32>)>, FleetError> {
    let (found, cas) = read(store, &record_key(id))?;
    Ok(match found {
        Some(record) => Some((record, cas)),
        None if index_add(store, id, limits.max_keys)? => {
            Some((CounterRecord::new(window_start_ms, window_ms), cas))
        }
        None => None,
    })
}

/// What a global limit's check needs from the fleet view.
#[derive(Debug, Clone, Copy)]
pub(super) struct Check {
    pub limit: u64,
    pub window_ms: u64,
    pub cost: u64,
    pub now_ms: u64,
    pub stale_after_ms: u64,
    pub nodes: u64,
}

/// Admits `cost` when this node's total in the window stays within what
/// [`super::admissible`] allows, and records it for the next batch. A key that does
/// not fit in the index is admitted uncounted (fail open, like a shared-data failure).
pub(super) fn admit(
    store: &dyn SharedData,
    limits: &FleetLimits,
    key: &str,
    check: Check,
) -> Result<super::Admission, FleetError> {
    let window_start_ms = check.now_ms - check.now_ms % check.window_ms;
    let window_end_ms = window_start_ms.saturating_add(check.window_ms);
    let id = record_id(key, check.window_ms);
    let rkey = record_key(&id);
    for _ in 0..CAS_ATTEMPTS {
        let Some((mut record, cas)) =
            read_or_create(store, limits, &id, window_start_ms, check.window_ms)?
        else {
            return Ok(super::Admission::Allow {
                remaining: check.limit.div_ceil(check.nodes.max(1)),
            });
        };
        record.roll_to(window_start_ms);
        let fresh = check.nodes > 0
            && record.view_window_start_ms == window_start_ms
            && check.now_ms.saturating_sub(record.view_at_ms) <= check.stale_after_ms;
        let view = if fresh {
            super::View::Fresh {
                others: record.others,
                fleet_total: record.fleet_total,
                others_growth: record.others_growth,
            }
        } else {
            super::View::Stale
        };
        let allowed = super::admissible(check.limit, view, check.nodes);
        let total = record.own.saturating_add(check.cost);
        if total > allowed {
            return Ok(super::Admission::Deny {
                retry_after_ms: window_end_ms - check.now_ms,
            });
        }
        record.own = total;
        record.unsent = record.unsent.saturating_add(check.cost);
        match store.set(&rkey, &record.encode(), Some(cas.unwrap_or(0))) {
            Ok(()) => {
                return Ok(super::Admission::Allow {
                    remaining: allowed - total,
                });
            }
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Err(FleetError::Contended)
}

/// The counters to send: what each record admitted since the last batch (taken, so it is
/// sent once), and `delta: 0` for keys whose window is still running, so the answer keeps
/// reporting the others' consumption for them. Records whose window is over and sent are
/// pruned from the index.
pub(super) fn take_deltas(
    store: &dyn SharedData,
    now_ms: u64,
) -> Result<Vec<CounterDelta>, FleetError> {
    let mut deltas = Vec::new();
    for shard in 0..INDEX_SHARDS {
        let key = shard_key(shard);
        let index = match store.get(&key).map_err(|_| FleetError::Store)? {
            Some((bytes, _)) => String::from_utf8(bytes).unwrap_or_default(),
            None => continue,
        };
        let mut pruned: Vec<&str> = Vec::new();
        for id in index.lines() {
            match take_one(store, id, now_ms)? {
                Taken::Delta(delta) => deltas.push(delta),
                Taken::Pruned => pruned.push(id),
                Taken::Contended => {}
            }
        }
        if !pruned.is_empty() {
            index_remove(store, &key, &pruned)?;
        }
    }
    Ok(deltas)
}

enum Taken {
    Delta(CounterDelta),
    /// Gone, unreadable, or over and fully sent: leaves the index.
    Pruned,
    /// Kept changing: left for the next batch.
    Contended,
}

fn take_one(store: &dyn SharedData, id: &str, now_ms: u64) -> Result<Taken, FleetError> {
    let Some((key, _)) = split_id(id) else {
        return Ok(Taken::Pruned);
    };
    let rkey = record_key(id);
    for _ in 0..CAS_ATTEMPTS {
        let (found, cas) = read(store, &rkey)?;
        let Some(mut record) = found else {
            return Ok(Taken::Pruned);
        };
        let running = record.window_start_ms.saturating_add(record.window_ms) > now_ms;
        let delta = CounterDelta {
            key: key.to_string(),
            window_start_ms: record.window_start_ms,
            window_ms: record.window_ms,
            delta: record.unsent,
        };
        let encoded;
        let (value, out): (&[u8], _) = if record.unsent > 0 {
            record.unsent = 0;
            encoded = record.encode();
            (&encoded, Taken::Delta(delta))
        } else if running {
            return Ok(Taken::Delta(delta));
        } else {
            // Over and fully sent: empty the record (shared data has no delete).
            (&[], Taken::Pruned)
        };
        match store.set(&rkey, value, cas) {
            Ok(()) => return Ok(out),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Ok(Taken::Contended)
}

fn index_remove(store: &dyn SharedData, key: &str, ids: &[&str]) -> Result<(), FleetError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some((bytes, cas)) = store.get(key).map_err(|_| FleetError::Store)? else {
            return Ok(());
        };
        let text = String::from_utf8(bytes).unwrap_or_default();
        let mut next = String::with_capacity(text.len());
        for line in text.lines().filter(|line| !ids.contains(line)) {
            next.push_str(line);
            next.push('\n');
        }
        match store.set(key, next.as_bytes(), Some(cas)) {
            Ok(()) => return Ok(()),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Err(FleetError::Contended)
}

/// Stores what an answer said about one counter. `others_growth` is how much the
/// others' count rose since the previous answer for the same window: about what they
/// will add again, unseen, before this node's next sync.
pub(super) fn apply_view(
    store: &dyn SharedData,
    limits: &FleetLimits,
    view: &tollgate_protocol::CounterView,
    now_ms: u64,
) -> Result<(), FleetError> {
    let id = record_id(&view.key, view.window_ms.max(1));
    let rkey = record_key(&id);
    for _ in 0..CAS_ATTEMPTS {
        let Some((mut record, cas)) = read_or_create(
            store,
            limits,
            &id,
            view.window_start_ms,
            view.window_ms.max(1),
        )?
        else {
            return Ok(());
        };
        if view.window_start_ms < record.window_start_ms {
            return Ok(()); // about a window this node has left
        }
        record.roll_to(view.window_start_ms);
        record.others_growth = if record.view_window_start_ms == view.window_start_ms {
            view.others.saturating_sub(record.others)
        } else {
            0
        };
        record.view_window_start_ms = view.window_start_ms;
        record.others = view.others;
        record.fleet_total = view.fleet_total.max(view.others);
        record.view_at_ms = now_ms;
        match store.set(&rkey, &record.encode(), Some(cas.unwrap_or(0))) {
            Ok(()) => return Ok(()),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Err(FleetError::Contended)
}

/// The view of one counter as stored (for tests and diagnostics).
pub(super) fn view_of(
    store: &dyn SharedData,
    key: &str,
    window_start_ms: u64,
    window_ms: u64,
) -> Result<Option<(u64, u64, u64, u64)>, FleetError> {
    let (found, _) = read(store, &record_key(&record_id(key, window_ms)))?;
    Ok(found
        .filter(|r| r.view_window_start_ms == window_start_ms)
        .map(|r| (r.others, r.fleet_total, r.others_growth, r.view_at_ms)))
}

/// Records in the index (for tests and metrics).
pub(super) fn live_keys(store: &dyn SharedData) -> Result<usize, FleetError> {
    let mut n = 0;
    for shard in 0..INDEX_SHARDS {
        if let Some((bytes, _)) = store
            .get(&shard_key(shard))
            .map_err(|_| FleetError::Store)?
        {
            n += bytes.iter().filter(|b| **b == b'\n').count();
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn record_round_trips_and_rejects_other_layouts() {
        let mut r = CounterRecord::new(60_000, 60_000);
        r.own = 7;
        r.unsent = 3;
        r.others = u64::MAX - 1;
        assert_eq!(CounterRecord::decode(&r.encode()), Some(r));
        assert_eq!(CounterRecord::decode(b""), None);
        assert_eq!(CounterRecord::decode(&[0u8; RECORD_BYTES + 1]), None);
    }
}
