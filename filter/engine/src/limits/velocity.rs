//! Velocity spikes: a key (tenant, API key, ...) whose short-window request rate jumps far
//! above its own long-window rate.
//!
//! Each key keeps two exponentially decaying request counts whose time constants are the two
//! windows. At a steady rate both give the same rate; a burst lifts the short one first, so
//! `short / short_window ≥ ratio × long / long_window` (with at least `min_requests` in the
//! short count) marks a spike. A key with no history that suddenly sends `min_requests`
//! spikes too: its long-window rate is still near zero.
//!
//! Storage and its bound, as for the limiters' buckets: `max_keys / 4` shared-data slots
//! (`tg:vel:<rule>:<slot>`), four entries each. A key whose counts have decayed away (idle
//! for about five long windows) frees its entry; when all four are in use, the entry with
//! the least long-window activity is evicted.

use super::{KeyPart, LimitInput, WAYS, key_fingerprint};
use crate::shared::{SetError, SharedData, StoreUnavailable};

const ENTRY_BYTES: usize = 32;
const CAS_ATTEMPTS: usize = 8;
/// Below this long-window count an entry carries no history worth keeping.
const IDLE_COUNT: f64 = 0.01;

#[derive(Debug, Clone, PartialEq)]
pub struct VelocityRule {
    pub name: String,
    pub key: Vec<KeyPart>,
    pub short_window_ms: u64,
    pub long_window_ms: u64,
    /// How many times the long-window rate the short-window rate must reach.
    pub ratio: f64,
    /// Requests the short window must hold before anything is flagged.
    pub min_requests: f64,
    /// Refuse (429) flagged requests instead of only marking them.
    pub block: bool,
    /// Added to the request's risk score when flagged (the sum is capped at 100).
    pub risk_score: u32,
    pub slots: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VelocityOutcome {
    /// Rules that flagged this request.
    pub flagged: Vec<String>,
    /// A blocking rule that flagged it, with the suggested wait in ms.
    pub blocked: Option<(String, u64)>,
    /// 0–100.
    pub risk_score: u32,
    /// Rules skipped because shared data failed (fail open).
    pub store_errors: u64,
    pub evictions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    fingerprint: u64,
    last_ms: u64,
    short: f64,
    long: f64,
}

impl Entry {
    fn decayed(self, now_ms: u64, rule: &VelocityRule) -> (f64, f64) {
        // Workers share one clock, but a CAS loser may carry a slightly older `now`.
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        (
            self.short * (-dt / rule.short_window_ms as f64).exp(),
            self.long * (-dt / rule.long_window_ms as f64).exp(),
        )
    }
}

fn decode(value: &[u8]) -> Vec<Entry> {
    value
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|c| {
            Some(Entry {
                fingerprint: u64::from_le_bytes(c.get(..8)?.try_into().ok()?),
                last_ms: u64::from_le_bytes(c.get(8..16)?.try_into().ok()?),
                short: f64::from_le_bytes(c.get(16..24)?.try_into().ok()?),
                long: f64::from_le_bytes(c.get(24..32)?.try_into().ok()?),
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&e.fingerprint.to_le_bytes());
        out.extend_from_slice(&e.last_ms.to_le_bytes());
        out.extend_from_slice(&e.short.to_le_bytes());
        out.extend_from_slice(&e.long.to_le_bytes());
    }
    out
}

/// Counts this request for every rule whose key it has, and reports the spikes.
pub fn check(
    rules: &[VelocityRule],
    input: &LimitInput<'_>,
    now_ms: u64,
    store: &dyn SharedData,
) -> VelocityOutcome {
    let mut outcome = VelocityOutcome::default();
    for rule in rules {
        let Some(fp) = key_fingerprint(&rule.key, input) else {
            continue;
        };
        match record(rule, fp, now_ms, store) {
            Err(StoreUnavailable) => outcome.store_errors += 1,
            Ok((spike, evicted)) => {
                outcome.evictions += u64::from(evicted);
                if spike {
                    outcome.flagged.push(rule.name.clone());
                    outcome.risk_score = outcome.risk_score.saturating_add(rule.risk_score);
                    if rule.block && outcome.blocked.is_none() {
                        outcome.blocked = Some((rule.name.clone(), rule.short_window_ms));
                    }
                }
            }
        }
    }
    outcome.risk_score = outcome.risk_score.min(100);
    outcome
}

/// Read–update–CAS-write with bounded retries: whether this request is part of a spike, and
/// whether another key's entry was evicted.
fn record(
    rule: &VelocityRule,
    fp: u64,
    now_ms: u64,
    store: &dyn SharedData,
) -> Result<(bool, bool), StoreUnavailable> {
    let slot_key = format!("tg:vel:{}:{}", rule.name, fp % u64::from(rule.slots.max(1)));
    for _ in 0..CAS_ATTEMPTS {
        let (mut entries, cas) = match store.get(&slot_key)? {
            Some((value, cas)) => (decode(&value), Some(cas)),
            None => (Vec::new(), None),
        };
        let fresh = Entry {
            fingerprint: fp,
            last_ms: now_ms,
            short: 0.0,
            long: 0.0,
        };
        let mut evicted = false;
        let index = match entries.iter().position(|e| e.fingerprint == fp) {
            Some(i) => i,
            None => {
                let activity = |e: &Entry| e.decayed(now_ms, rule).1;
                if let Some(i) = entries.iter().position(|e| activity(e) < IDLE_COUNT) {
                    entries[i] = fresh;
                    i
                } else if entries.len() < WAYS {
                    entries.push(fresh);
                    entries.len() - 1
                } else {
                    let i = entries
                        .iter()
                        .enumerate()
                        .min_by(|(_, a), (_, b)| activity(a).total_cmp(&activity(b)))
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
        let (short, long) = entry.decayed(now_ms, rule);
        *entry = Entry {
            fingerprint: fp,
            last_ms: now_ms.max(entry.last_ms),
            short: short + 1.0,
            long: long + 1.0,
        };
        let spike = is_spike(rule, entry.short, entry.long);
        match store.set(&slot_key, &encode(&entries), cas) {
            Ok(()) => return Ok((spike, evicted)),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(StoreUnavailable),
        }
    }
    Err(StoreUnavailable)
}

fn is_spike(rule: &VelocityRule, short: f64, long: f64) -> bool {
    let short_rate = short / rule.short_window_ms as f64;
    let long_rate = long / rule.long_window_ms as f64;
    short >= rule.min_requests && short_rate >= rule.ratio * long_rate
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::request::RequestHead;
    use crate::shared::MemorySharedData;

    fn rule() -> VelocityRule {
        VelocityRule {
            name: "spike".into(),
            key: vec![KeyPart::Header("x-k".into())],
            short_window_ms: 10_000,
            long_window_ms: 600_000,
            ratio: 5.0,
            min_requests: 20.0,
            block: false,
            risk_score: 40,
            slots: 1,
        }
    }

    fn hit(rules: &[VelocityRule], key: &str, now_ms: u64, store: &MemorySharedData) -> bool {
        let request = RequestHead::from_pairs([(":path", "/"), ("x-k", key)]);
        let input = LimitInput {
            request: &request,
            identity: None,
            route_name: "r",
            client_ip: None,
        };
        !check(rules, &input, now_ms, store).flagged.is_empty()
    }

    #[test]
    fn a_steady_rate_is_never_a_spike() {
        let store = MemorySharedData::default();
        let rules = [rule()];
        // 2 requests a second for an hour: both windows see the same rate.
        let flagged = (0..7200u64)
            .filter(|i| hit(&rules, "k", 1_000_000 + i * 500, &store))
            .count();
        // Only the start, before the long window has any history, can look like a jump.
        let late = (7200..7400u64)
            .filter(|i| hit(&rules, "k", 1_000_000 + i * 500, &store))
            .count();
        assert!(flagged < 7200);
        assert_eq!(late, 0);
    }

    #[test]
    fn a_jump_over_the_long_rate_is_flagged_and_decays() {
        let store = MemorySharedData::default();
        let rules = [rule()];
        let mut t = 1_000_000;
        // An hour at one request every 2 s.
        for _ in 0..1800 {
            hit(&rules, "k", t, &store);
            t += 2000;
        }
        assert!(!hit(&rules, "k", t, &store));
        // Then 20 a second: flagged within the first seconds.
        let first = (0..100).position(|i| hit(&rules, "k", t + i * 50, &store));
        assert!(matches!(first, Some(i) if i < 40), "{first:?}");
        // Back to the old pace: the flag goes away once the short window forgets.
        t += 5000 + 120_000;
        assert!(!hit(&rules, "k", t, &store));
    }

    #[test]
    fn fewer_than_min_requests_never_flag() {
        let store = MemorySharedData::default();
        let rules = [rule()];
        // 19 at once from a key with no history.
        let flagged = (0..19)
            .filter(|i| hit(&rules, "new", 5_000 + i, &store))
            .count();
        assert_eq!(flagged, 0);
        // The count decays a little between requests, so the threshold is crossed by the
        // 21st here.
        assert!(!hit(&rules, "new", 5_019, &store));
        assert!(hit(&rules, "new", 5_020, &store));
    }

    #[test]
    fn keys_are_bounded_and_idle_entries_are_reused() {
        let store = MemorySharedData::default();
        let rules = [rule()];
        let request = |k: &str| RequestHead::from_pairs([(":path", "/"), ("x-k", k)]);
        let mut evictions = 0;
        for i in 0..10 {
            let r = request(&format!("k{i}"));
            let input = LimitInput {
                request: &r,
                identity: None,
                route_name: "r",
                client_ip: None,
            };
            evictions += check(&rules, &input, 1_000 + i, &store).evictions;
        }
        // One slot of four entries: the six keys past the fourth each evicted one.
        assert_eq!(evictions, 6);
        let value = store.get("tg:vel:spike:0").unwrap().unwrap().0;
        assert_eq!(value.len(), 4 * ENTRY_BYTES);
        // Hours later every entry is idle: new keys take them without evicting.
        let r = request("later");
        let input = LimitInput {
            request: &r,
            identity: None,
            route_name: "r",
            client_ip: None,
        };
        assert_eq!(check(&rules, &input, 10 * 3_600_000, &store).evictions, 0);
    }

    #[test]
    fn a_blocking_rule_reports_the_block_and_scores_cap_at_100() {
        let store = MemorySharedData::default();
        let mut a = rule();
        a.block = true;
        a.risk_score = 80;
        let mut b = rule();
        b.name = "other".into();
        b.risk_score = 80;
        let rules = [a, b];
        let request = RequestHead::from_pairs([(":path", "/"), ("x-k", "k")]);
        let input = LimitInput {
            request: &request,
            identity: None,
            route_name: "r",
            client_ip: None,
        };
        let mut last = VelocityOutcome::default();
        for i in 0..25 {
            last = check(&rules, &input, 1_000 + i, &store);
        }
        assert_eq!(last.flagged, ["spike", "other"]);
        assert_eq!(last.blocked, Some(("spike".to_string(), 10_000)));
        assert_eq!(last.risk_score, 100);
    }
}
