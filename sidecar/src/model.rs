//! Wire types of the HTTP/JSON API and their validation. Everything a node or an
//! operator sends is checked here, before any store is touched, so a bad request
//! changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// One minute, the usage rollup granularity.
pub const MINUTE_MS: u64 = 60_000;
/// A node counts as alive this long after its last sync.
pub const NODE_TTL_MS: u64 = 10_000;
/// Bounds that keep one request's work and one store record small.
pub const MAX_COUNTERS: usize = 10_000;
pub const MAX_EVENTS: usize = 20_000;
pub const MAX_ID_LEN: usize = 128;
pub const MAX_KEY_LEN: usize = 512;
pub const MAX_ROUTE_LEN: usize = 256;
pub const MAX_LIMITS: usize = 32;
/// Larger deltas are a bug in the sender; the bound also keeps Redis' i64 and Lua's
/// doubles exact.
pub const MAX_DELTA: u64 = 1 << 40;
pub const MAX_WINDOW_MS: u64 = 86_400_000;
/// Distinct routes kept per tenant-minute; the rest are counted under `OTHER_ROUTE`.
pub const MAX_ROUTES_PER_MINUTE: usize = 200;
pub const OTHER_ROUTE: &str = "(other)";
/// Events stamped further ahead of the sidecar's clock than this are dropped.
pub const MAX_FUTURE_SKEW_MS: u64 = 5 * MINUTE_MS;
/// At most this many purges / overrides are returned in one sync answer; the node
/// pages by sending the returned sequence number next time.
pub const MAX_FEED: usize = 1_000;
/// Purges kept for nodes that were away; older ones are forgotten.
pub const PURGES_KEPT: u64 = 10_000;

/// `POST /v1/sync` body. Unknown fields are ignored so that a newer filter can talk to
/// an older sidecar during a rolling upgrade.
#[derive(Debug, Clone, Deserialize)]
pub struct SyncRequest {
    pub node_id: String,
    pub batch_id: String,
    pub sent_at_ms: u64,
    #[serde(default)]
    pub counters: Vec<CounterDelta>,
    #[serde(default)]
    pub usage: Vec<UsageEvent>,
    /// Highest purge sequence the node has applied (0: none).
    #[serde(default)]
    pub purge_seq: u64,
    /// Highest plan-override sequence the node has applied (0: none).
    #[serde(default)]
    pub override_seq: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct CounterDelta {
    pub key: String,
    pub window_start_ms: u64,
    pub window_ms: u64,
    pub delta: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct UsageEvent {
    pub event_id: String,
    pub tenant: String,
    pub timestamp_ms: u64,
    pub route: String,
    pub method: String,
    pub status: u16,
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub risk_score: f64,
    #[serde(default)]
    pub decisions: Decisions,
    #[serde(default)]
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Decisions {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub waf: Option<String>,
    #[serde(default)]
    pub cache: Option<String>,
    /// Fraud rules that matched: `flag:<names>` or `block:<names>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterView {
    pub key: String,
    pub window_start_ms: u64,
    pub window_ms: u64,
    pub fleet_total: u64,
    pub others: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventCounts {
    pub accepted: u64,
    pub duplicate: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncResponse {
    pub batch_id: String,
    pub duplicate: bool,
    pub nodes: u64,
    pub counters: Vec<CounterView>,
    pub overrides: Vec<PlanRecord>,
    pub override_seq: u64,
    pub purges: Vec<PurgeRecord>,
    pub purge_seq: u64,
    pub events: EventCounts,
    pub server_time_ms: u64,
}

/// `PUT /v1/tenants/{tenant}/plan` body. Typed by operators, so unknown fields are an
/// error: a misspelt `limit` must not silently mean "no limits".
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    pub plan: String,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

/// A plan override as stored and as sent to nodes; `deleted` marks a removed override
/// so that nodes drop it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PlanRecord {
    pub tenant: String,
    pub plan: String,
    pub limits: BTreeMap<String, u64>,
    pub seq: u64,
    pub updated_at_ms: u64,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PurgeBy {
    Key,
    Prefix,
    SurrogateKey,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PurgeMode {
    #[default]
    Hard,
    Soft,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    pub by: PurgeBy,
    pub value: String,
    #[serde(default)]
    pub mode: PurgeMode,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PurgeRecord {
    pub seq: u64,
    pub by: PurgeBy,
    pub value: String,
    pub mode: PurgeMode,
    pub created_at_ms: u64,
}

/// Per tenant per minute usage, as stored and as returned by `GET /v1/usage`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Rollup {
    pub minute_ms: u64,
    pub count: u64,
    pub latency_ms_sum: u64,
    /// Keyed by status class: "1xx" .. "5xx".
    pub status: BTreeMap<String, u64>,
    pub routes: BTreeMap<String, u64>,
}

impl Rollup {
    /// Adds one event, keeping at most [`MAX_ROUTES_PER_MINUTE`] distinct routes.
    pub fn add(&mut self, ev: &PreparedEvent) {
        self.count += 1;
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(ev.latency_ms);
        *self.status.entry(ev.status_class.to_owned()).or_default() += 1;
        let route =
            if self.routes.contains_key(&ev.route) || self.routes.len() < MAX_ROUTES_PER_MINUTE {
                ev.route.clone()
            } else {
                OTHER_ROUTE.to_owned()
            };
        *self.routes.entry(route).or_default() += 1;
    }

    /// Sums another rollup into this one (used for range totals).
    pub fn merge(&mut self, other: &Rollup) {
        self.count += other.count;
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
        for (k, v) in &other.status {
            *self.status.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.routes {
            *self.routes.entry(k.clone()).or_default() += v;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageResponse {
    pub tenant: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub minutes: Vec<Rollup>,
    pub total: Rollup,
}

/// What a store needs of one usage event: identity and the rollup inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    pub tenant: String,
    pub event_id: String,
    pub minute_ms: u64,
    pub status_class: &'static str,
    pub route: String,
    pub latency_ms: u64,
}

/// A validated sync batch, ready for a store: counter deltas merged per window, events
/// outside the retention horizon already dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBatch {
    pub node_id: String,
    pub batch_id: String,
    pub counters: Vec<CounterDelta>,
    pub events: Vec<PreparedEvent>,
    pub dropped_events: u64,
}

/// Tenants and node ids end up inside store keys and URL paths: a small charset keeps
/// them unambiguous there.
pub fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 64 {
        return Err(ApiError::invalid(format!(
            "{field} must be 1..=64 characters"
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ApiError::invalid(format!(
            "{field} may contain only A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::invalid(format!(
            "{field} must be 1..={max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

fn status_class(status: u16) -> Option<&'static str> {
    match status {
        100..=199 => Some("1xx"),
        200..=299 => Some("2xx"),
        300..=399 => Some("3xx"),
        400..=499 => Some("4xx"),
        500..=599 => Some("5xx"),
        _ => None,
    }
}

impl SyncRequest {
    /// Validates the whole batch (any malformed item rejects it, so nothing is half
    /// applied) and prepares it for a store. Events older than the retention horizon or
    /// too far in the future are dropped and counted, not rejected: a node that was
    /// away long must still be able to deliver the rest of its queue.
    pub fn prepare(&self, now_ms: u64, retention_ms: u64) -> Result<PreparedBatch, ApiError> {
        check_name("node_id", &self.node_id)?;
        check_text("batch_id", &self.batch_id, MAX_ID_LEN)?;
        if self.counters.len() > MAX_COUNTERS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_COUNTERS} counters per batch"
            )));
        }
        if self.usage.len() > MAX_EVENTS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_EVENTS} usage events per batch"
            )));
        }
        let mut merged: BTreeMap<(String, u64, u64), u64> = BTreeMap::new();
        for (i, c) in self.counters.iter().enumerate() {
            check_text(&format!("counters[{i}].key"), &c.key, MAX_KEY_LEN)?;
            if c.window_ms == 0 || c.window_ms > MAX_WINDOW_MS {
                return Err(ApiError::invalid(format!(
                    "counters[{i}].window_ms must be 1..={MAX_WINDOW_MS}"
                )));
            }
            if c.delta > MAX_DELTA {
                return Err(ApiError::invalid(format!(
                    "counters[{i}].delta must be at most {MAX_DELTA}"
                )));
            }
            let slot = merged
                .entry((c.key.clone(), c.window_start_ms, c.window_ms))
                .or_default();
            *slot = slot.saturating_add(c.delta).min(MAX_DELTA);
        }
        let oldest = now_ms.saturating_sub(retention_ms);
        let newest = now_ms.saturating_add(MAX_FUTURE_SKEW_MS);
        let mut events = Vec::with_capacity(self.usage.len());
        let mut dropped = 0;
        for (i, e) in self.usage.iter().enumerate() {
            check_text(&format!("usage[{i}].event_id"), &e.event_id, MAX_ID_LEN)?;
            check_name(&format!("usage[{i}].tenant"), &e.tenant)?;
            check_text(&format!("usage[{i}].route"), &e.route, MAX_ROUTE_LEN)?;
            check_text(&format!("usage[{i}].method"), &e.method, 32)?;
            if !e.risk_score.is_finite() {
                return Err(ApiError::invalid(format!(
                    "usage[{i}].risk_score must be a finite number"
                )));
            }
            let Some(class) = status_class(e.status) else {
                return Err(ApiError::invalid(format!(
                    "usage[{i}].status must be 100..=599"
                )));
            };
            let minute_ms = e.timestamp_ms - e.timestamp_ms % MINUTE_MS;
            if minute_ms < oldest || e.timestamp_ms > newest {
                dropped += 1;
                continue;
            }
            events.push(PreparedEvent {
                tenant: e.tenant.clone(),
                event_id: e.event_id.clone(),
                minute_ms,
                status_class: class,
                route: e.route.clone(),
                latency_ms: e.latency_ms,
            });
        }
        Ok(PreparedBatch {
            node_id: self.node_id.clone(),
            batch_id: self.batch_id.clone(),
            counters: merged
                .into_iter()
                .map(|((key, window_start_ms, window_ms), delta)| CounterDelta {
                    key,
                    window_start_ms,
                    window_ms,
                    delta,
                })
                .collect(),
            events,
            dropped_events: dropped,
        })
    }
}

impl PlanBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_text("plan", &self.plan, 64)?;
        if self.limits.len() > MAX_LIMITS {
            return Err(ApiError::invalid(format!("at most {MAX_LIMITS} limits")));
        }
        for (name, value) in &self.limits {
            // The filter's limit names (`rate_limits.limits[].name`).
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(ApiError::invalid(format!(
                    "limit name {name:?} must be 1..=64 of a-z 0-9 _ -"
                )));
            }
            if *value == 0 || *value > MAX_DELTA {
                return Err(ApiError::invalid(format!(
                    "limits.{name} must be 1..={MAX_DELTA} requests per the limit's period"
                )));
            }
        }
        Ok(())
    }
}

impl PurgeBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_text("value", &self.value, MAX_KEY_LEN)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn event(id: &str, ts: u64) -> UsageEvent {
        UsageEvent {
            event_id: id.into(),
            tenant: "acme".into(),
            timestamp_ms: ts,
            route: "/v1/x".into(),
            method: "GET".into(),
            status: 200,
            plan: "free".into(),
            key_id: None,
            risk_score: 0.0,
            decisions: Decisions::default(),
            latency_ms: 3,
        }
    }

    fn batch(counters: Vec<CounterDelta>, usage: Vec<UsageEvent>) -> SyncRequest {
        SyncRequest {
            node_id: "n1".into(),
            batch_id: "b1".into(),
            sent_at_ms: 0,
            counters,
            usage,
            purge_seq: 0,
            override_seq: 0,
        }
    }

    #[test]
    fn merges_counter_deltas_per_window() {
        let c = |d| CounterDelta {
            key: "t:k".into(),
            window_start_ms: 60_000,
            window_ms: 60_000,
            delta: d,
        };
        let p = batch(vec![c(2), c(3)], vec![])
            .prepare(100_000, 1_000_000)
            .unwrap();
        assert_eq!(p.counters.len(), 1);
        assert_eq!(p.counters[0].delta, 5);
    }

    #[test]
    fn drops_events_outside_retention_and_future_skew() {
        let now = 100 * MINUTE_MS;
        let p = batch(
            vec![],
            vec![
                event("old", now - 50 * MINUTE_MS),
                event("ok", now - 5 * MINUTE_MS),
                event("future", now + 10 * MINUTE_MS),
            ],
        )
        .prepare(now, 10 * MINUTE_MS)
        .unwrap();
        assert_eq!(p.dropped_events, 2);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].minute_ms, now - 5 * MINUTE_MS);
    }

    #[test]
    fn rejects_bad_items() {
        let mut e = event("x", 1);
        e.status = 42;
        assert!(batch(vec![], vec![e]).prepare(10, 10).is_err());
        let mut e = event("x", 1);
        e.tenant = "a:b".into();
        assert!(batch(vec![], vec![e]).prepare(10, 10).is_err());
        let c = CounterDelta {
            key: "k".into(),
            window_start_ms: 0,
            window_ms: 0,
            delta: 1,
        };
        assert!(batch(vec![c], vec![]).prepare(10, 10).is_err());
    }

    #[test]
    fn rollup_caps_distinct_routes() {
        let mut r = Rollup::default();
        for i in 0..(MAX_ROUTES_PER_MINUTE + 5) {
            r.add(&PreparedEvent {
                tenant: "t".into(),
                event_id: i.to_string(),
                minute_ms: 0,
                status_class: "2xx",
                route: format!("/r{i}"),
                latency_ms: 1,
            });
        }
        assert_eq!(r.routes.len(), MAX_ROUTES_PER_MINUTE + 1);
        assert_eq!(r.routes[OTHER_ROUTE], 5);
        assert_eq!(r.count as usize, MAX_ROUTES_PER_MINUTE + 5);
    }
}
