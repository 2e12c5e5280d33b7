//! The sync protocol between gateway nodes (the filter) and the sidecar: `POST /v1/sync`
//! carries a [`SyncRequest`] and is answered with a [`SyncResponse`].
//!
//! Both ends use these types, so the wire format has one definition. Reading is lenient
//! in both directions: unknown fields are ignored and fields a peer may not know yet
//! have defaults, so a filter and a sidecar of different versions keep talking during a
//! rolling upgrade. Validation of what a node sends (sizes, character sets) is the
//! sidecar's job; these types only shape the JSON.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/sync` body: what a node consumed since its last sync, and its usage
/// records. A node re-sends a batch with the same `batch_id` until it is answered; the
/// sidecar counts it once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

/// Units a node admitted in one window of one global-limit key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterDelta {
    pub key: String,
    pub window_start_ms: u64,
    pub window_ms: u64,
    pub delta: u64,
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
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub key_id: Option<String>,
    /// 0–100.
    #[serde(default)]
    pub risk_score: u32,
    #[serde(default)]
    pub decisions: Decisions,
    #[serde(default)]
    pub latency_ms: u64,
}

/// What each stage decided. Mostly fixed words, so the filter borrows them rather than
/// allocating a string per stage per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decisions {
    #[serde(default)]
    pub auth: Option<Cow<'static, str>>,
    #[serde(default)]
    pub limit: Option<Cow<'static, str>>,
    #[serde(default)]
    pub waf: Option<Cow<'static, str>>,
    #[serde(default)]
    pub cache: Option<Cow<'static, str>>,
    /// Fraud rules that matched: `flag:<names>` or `block:<names>`; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<Cow<'static, str>>,
}

/// The sidecar's answer to a sync.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncResponse {
    pub batch_id: String,
    /// The batch id had been applied before; nothing was counted this time.
    #[serde(default)]
    pub duplicate: bool,
    /// Nodes that synced recently, this one included.
    pub nodes: u64,
    /// The fleet's view of each window the batch carried.
    #[serde(default)]
    pub counters: Vec<CounterView>,
    /// Plan overrides changed after the request's `override_seq`, oldest first.
    #[serde(default)]
    pub overrides: Vec<PlanRecord>,
    /// Where to resume the override feed next time.
    #[serde(default)]
    pub override_seq: u64,
    /// Cache purges after the request's `purge_seq`, oldest first.
    #[serde(default)]
    pub purges: Vec<PurgeRecord>,
    #[serde(default)]
    pub purge_seq: u64,
    #[serde(default)]
    pub events: EventCounts,
    #[serde(default)]
    pub server_time_ms: u64,
}

/// One window of one key across the fleet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterView {
    pub key: String,
    pub window_start_ms: u64,
    pub window_ms: u64,
    #[serde(default)]
    pub fleet_total: u64,
    /// The fleet total less this node's own consumption.
    #[serde(default)]
    pub others: u64,
}

/// What became of the batch's usage events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventCounts {
    pub accepted: u64,
    pub duplicate: u64,
    /// Outside the retention horizon or too far in the future.
    pub dropped: u64,
}

/// A tenant's plan override, as the sidecar stores it and sends it to nodes; `deleted`
/// marks a removed override so that nodes drop it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanRecord {
    pub tenant: String,
    /// A plan of the policy's `rate_limits.plans`.
    #[serde(default)]
    pub plan: String,
    /// Requests per the limit's period, by limit name.
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub updated_at_ms: u64,
    #[serde(default)]
    pub deleted: bool,
}

/// What a purge selects. `Other` is a kind this build does not know (sent by a newer
/// sidecar); nodes skip it, and the sidecar never accepts it from an operator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PurgeBy {
    /// One cache key.
    Key,
    /// Keys starting with the value (a value starting with `/` matches paths).
    Prefix,
    /// Entries whose `Surrogate-Key` response header named the value.
    SurrogateKey,
    #[serde(other)]
    Other,
}

/// Hard purges remove entries; soft purges mark them stale (still usable for
/// stale-if-error and revalidation).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PurgeMode {
    #[default]
    Hard,
    Soft,
}

/// A cache purge as the sidecar stores it and fans it out; `value` is
/// `<tenant>:<target>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeRecord {
    #[serde(default)]
    pub seq: u64,
    pub by: PurgeBy,
    pub value: String,
    #[serde(default)]
    pub mode: PurgeMode,
    #[serde(default)]
    pub created_at_ms: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_older_sidecar_answer_still_reads() {
        let r: SyncResponse = serde_json::from_str(r#"{"batch_id":"b1","nodes":3}"#).unwrap();
        assert_eq!(r.nodes, 3);
        assert!(r.counters.is_empty() && r.purges.is_empty() && r.overrides.is_empty());
    }

    #[test]
    fn a_newer_sidecar_answer_still_reads() {
        let r: SyncResponse = serde_json::from_str(
            r#"{"batch_id":"b1","nodes":1,"future":true,
                "purges":[{"seq":4,"by":"tag_v9","value":"acme:x","mode":"soft"}]}"#,
        )
        .unwrap();
        assert_eq!(r.purges[0].by, PurgeBy::Other);
        assert_eq!(r.purges[0].mode, PurgeMode::Soft);
    }

    #[test]
    fn usage_events_round_trip() {
        let e = UsageEvent {
            event_id: "n1:e1".into(),
            tenant: "acme".into(),
            timestamp_ms: 60_000,
            route: "orders".into(),
            method: "POST".into(),
            status: 201,
            plan: "pro".into(),
            key_id: Some("k1".into()),
            risk_score: 40,
            decisions: Decisions {
                auth: Some("api_key".into()),
                limit: Some(Cow::Owned("allow".to_string())),
                waf: None,
                cache: None,
                fraud: Some("flag:card-velocity".into()),
            },
            latency_ms: 7,
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<UsageEvent>(&text).unwrap(), e);
    }
}
