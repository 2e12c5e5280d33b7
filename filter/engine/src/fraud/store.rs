//! Velocity counts in shared data: bounded slots of fixed-size entries.

use crate::shared::{SetError, SharedData, StoreUnavailable};

const ENTRY_BYTES: usize = 24;
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    fingerprint: u64,
    /// Index of the entry's current fixed window (`now / window`).
    window: u64,
    current: u32,
    previous: u32,
}

impl Entry {
    /// Rolled forward to `window`: counts of windows that ended are shifted or dropped.
    fn at(self, window: u64) -> Entry {
        match window.saturating_sub(self.window) {
            0 => self,
            1 => Entry {
                window,
                current: 0,
                previous: self.current,
                ..self
            },
            _ => Entry {
                window,
                current: 0,
                previous: 0,
                ..self
            },
        }
    }
}

fn decode(value: &[u8]) -> Vec<Entry> {
    value
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|c| {
            Some(Entry {
                fingerprint: u64::from_le_bytes(c.get(..8)?.try_into().ok()?),
                window: u64::from_le_bytes(c.get(8..16)?.try_into().ok()?),
                current: u32::from_le_bytes(c.get(16..20)?.try_into().ok()?),
                previous: u32::from_le_bytes(c.get(20..24)?.try_into().ok()?),
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&e.fingerprint.to_le_bytes());
        out.extend_from_slice(&e.window.to_le_bytes());
        out.extend_from_slice(&e.current.to_le_bytes());
        out.extend_from_slice(&e.previous.to_le_bytes());
    }
    out
}

/// Counts this request for the key; returns the sliding-window estimate including it and
/// whether another key's entry was evicted.
pub(super) fn count(
    rule: &str,
    fp: u64,
    window_ms: u64,
    slots: u32,
    now_ms: u64,
    store: &dyn SharedData,
) -> Result<(f64, bool), StoreUnavailable> {
    let window_ms = window_ms.max(1);
    let window = now_ms / window_ms;
    // The share of the previous window still inside the sliding window.
    let overlap = 1.0 - (now_ms % window_ms) as f64 / window_ms as f64;
    let slot_key = format!("tg:fraud:{rule}:{}", fp % u64::from(slots.max(1)));
    for _ in 0..CAS_ATTEMPTS {
        let (mut entries, cas) = match store.get(&slot_key)? {
            Some((value, cas)) => (decode(&value), Some(cas)),
            None => (Vec::new(), None),
        };
        let fresh = Entry {
            fingerprint: fp,
            window,
            current: 0,
            previous: 0,
        };
        let weight = |e: &Entry| {
            let e = e.at(window);
            f64::from(e.current) + f64::from(e.previous) * overlap
        };
        let mut evicted = false;
        let index = match entries.iter().position(|e| e.fingerprint == fp) {
            Some(i) => i,
            None => {
                if let Some(i) = entries.iter().position(|e| weight(e) <= 0.0) {
                    entries[i] = fresh;
                    i
                } else if entries.len() < crate::limits::WAYS {
                    entries.push(fresh);
                    entries.len() - 1
                } else {
                    let i = entries
                        .iter()
                        .enumerate()
                        .min_by(|(_, a), (_, b)| weight(a).total_cmp(&weight(b)))
                        .map_or(0, |(i, _)| i);
                    entries[i] = fresh;
                    evicted = true;
                    i
                }
            }
        };
        let Some(entry) = entries.get_mut(index) else {
            return Err(StoreUnavailable);
        };
        // A CAS loser may carry a slightly older clock: never roll a window back.
        let mut e = if entry.window > window {
            *entry
        } else {
            entry.at(window)
        };
        e.current = e.current.saturating_add(1);
        *entry = e;
        let estimate = f64::from(e.current) + f64::from(e.previous) * overlap;
        match store.set(&slot_key, &encode(&entries), cas) {
            Ok(()) => return Ok((estimate, evicted)),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(StoreUnavailable),
        }
    }
    Err(StoreUnavailable)
}
