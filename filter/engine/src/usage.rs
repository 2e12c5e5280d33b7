//! Usage records, one per request of a known tenant, for the sidecar's billing rollups.
//!
//! The request-header phase drafts the record ([`Engine::on_request_headers`] attaches it
//! to the decision); the adapter fills in the status as the exchange goes and hands it
//! back at the end ([`Engine::finish_usage`]). Records collect in a per-VM buffer and
//! reach shared data in chunks of [`FLUSH_EVENTS`] or on the timer
//! ([`Engine::flush_usage`]), so a request never waits on shared data for them.
//!
//! [`Engine::on_request_headers`]: crate::Engine::on_request_headers
//! [`Engine::finish_usage`]: crate::Engine::finish_usage
//! [`Engine::flush_usage`]: crate::Engine::flush_usage

use crate::auth::Identity;
use crate::decision::{Decision, LocalReply};
use crate::fleet::{Decisions, FLUSH_EVENTS, FleetLimits, UsageEvent};
use crate::metrics::Counter;
use crate::shared::SharedData;

/// The sidecar's bounds on record fields; a longer method is cut, never refused.
const MAX_METHOD: usize = 32;
/// Status recorded when the exchange ended without any response (client gone).
pub const NO_RESPONSE_STATUS: u16 = 499;

/// Tenant ids become store keys at the sidecar, which accepts 1..=64 of
/// `A-Z a-z 0-9 . _ -`; a record for another id would make it refuse the whole batch.
pub fn is_billable_tenant(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The record of a request whose tenant is known, before its status and latency are.
pub(crate) fn draft(
    event_id: String,
    identity: &Identity,
    route: &crate::routing::Route,
    method: &str,
    now_ms: u64,
    decision: &Decision,
) -> Option<Box<UsageEvent>> {
    let tenant = identity
        .tenant
        .as_deref()
        .filter(|t| is_billable_tenant(t))?;
    let mut method = method.to_string();
    if method.len() > MAX_METHOD || method.chars().any(char::is_control) {
        method = "OTHER".to_string();
    }
    let mut event = UsageEvent {
        event_id,
        tenant: tenant.to_string(),
        timestamp_ms: now_ms,
        route: route.name.clone(),
        method,
        status: 0,
        plan: identity.plan.clone().unwrap_or_default(),
        key_id: identity.key_id.clone(),
        risk_score: 0,
        decisions: Decisions {
            auth: Some(identity.method.clone().into()),
            limit: (!route.limits.is_empty()).then_some("allow".into()),
            waf: route.waf.is_some().then_some("pass".into()),
            cache: None,
            fraud: None,
        },
        latency_ms: 0,
    };
    match decision {
        Decision::Forward(plan) => {
            event.risk_score = plan.risk_score;
            if plan.cache.is_some() {
                event.decisions.cache = Some("miss".into());
            }
            if plan
                .set_headers
                .iter()
                .any(|(name, _)| name == crate::headers::SHADOW_LIMITED)
            {
                event.decisions.limit = Some("shadow_deny".into());
            }
            if let Some(verdict) = &plan.waf {
                event.decisions.waf = Some(
                    if verdict.would_block() {
                        "detect"
                    } else {
                        "match"
                    }
                    .into(),
                );
            }
        }
        Decision::Reply(reply) => {
            note_reply(&mut event, reply);
            let header = |name: &str| reply.headers.iter().any(|(n, _)| n == name);
            if reply
                .headers
                .iter()
                .any(|(n, v)| n == "cache-status" && v.contains("; hit"))
            {
                event.decisions.cache = Some(
                    if header(crate::cache::flow::STALE_HEADER) {
                        "stale"
                    } else {
                        "hit"
                    }
                    .into(),
                );
            }
        }
    }
    Some(Box::new(event))
}

/// A local reply ends the exchange: its status, and which stage refused.
pub fn note_reply(event: &mut UsageEvent, reply: &LocalReply) {
    event.status = reply.status;
    let d = &mut event.decisions;
    match reply.detail {
        Some("rate_limited") => d.limit = Some("deny".into()),
        Some("velocity_exceeded") => d.limit = Some("velocity_deny".into()),
        Some("waf_blocked") => d.waf = Some("block".into()),
        Some("body_too_large") => d.waf = Some("body_too_large".into()),
        // `note_fraud` already recorded which rules; not an authorisation refusal.
        Some("fraud_blocked") => {}
        Some(other) if reply.status == 403 => d.auth = Some(format!("forbidden:{other}").into()),
        Some(other) if reply.status == 401 => d.auth = Some(format!("refused:{other}").into()),
        _ => {}
    }
}

/// The fraud rules' outcome on a request's record: the rule names and the risk score.
pub fn note_fraud(event: &mut UsageEvent, outcome: &crate::fraud::FraudOutcome) {
    if outcome.matched.is_empty() {
        return;
    }
    let verdict = if outcome.blocked { "block" } else { "flag" };
    event.decisions.fraud = Some(format!("{verdict}:{}", outcome.matched.join(",")).into());
    event.risk_score = event.risk_score.max(outcome.risk_score);
}

/// The per-VM buffer of finished records.
#[derive(Debug, Default)]
pub(crate) struct UsageBuffer {
    events: std::cell::RefCell<Vec<UsageEvent>>,
}

/// What a flush did, for metrics and the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsageFlush {
    pub counters: Vec<(Counter, u64)>,
    /// A line to log at warning level (records lost).
    pub warning: Option<String>,
}

impl UsageBuffer {
    pub(crate) fn push(&self, event: UsageEvent) -> usize {
        let mut events = self.events.borrow_mut();
        events.push(event);
        events.len()
    }

    /// Hands the buffered records to the node's queue. When shared data fails they stay
    /// buffered (up to the queue's bound) for the next flush.
    pub(crate) fn flush(&self, store: &dyn SharedData, limits: &FleetLimits) -> UsageFlush {
        let mut events = self.events.borrow_mut();
        if events.is_empty() {
            return UsageFlush::default();
        }
        match crate::fleet::push_usage(store, limits, &events) {
            Ok(flushed) => {
                events.clear();
                let mut out = UsageFlush::default();
                if flushed.queued > 0 {
                    out.counters.push((Counter::UsageRecorded, flushed.queued));
                }
                if flushed.dropped > 0 {
                    out.counters.push((Counter::UsageDropped, flushed.dropped));
                    out.warning = Some(format!(
                        "usage queue full ({} records): {} usage records dropped",
                        limits.max_queued_events, flushed.dropped
                    ));
                }
                out
            }
            Err(e) => {
                let over = events.len().saturating_sub(limits.max_queued_events);
                events.drain(..over);
                UsageFlush {
                    counters: if over > 0 {
                        vec![(Counter::UsageDropped, over as u64)]
                    } else {
                        Vec::new()
                    },
                    warning: Some(format!(
                        "usage records kept in the worker: {e}{}",
                        if over > 0 {
                            format!("; {over} dropped")
                        } else {
                            String::new()
                        }
                    )),
                }
            }
        }
    }

    pub(crate) fn needs_flush(len: usize) -> bool {
        len >= FLUSH_EVENTS
    }
}
