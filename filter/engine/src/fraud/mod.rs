//! Edge fraud rules for payment routes: velocity per body key, amount thresholds, card
//! country vs client country, blocklists. Evaluated in the request-body phase, once the
//! JSON body is known, before anything is forwarded; flags go to the origin as headers,
//! `action: block` rules (and a route's `block_score`) refuse with 403.
//!
//! Body fields are read through the WAF's JSON access ([`crate::waf::inputs::BodyInputs`]):
//! dotted paths, arrays walked transparently (the first value wins). A body that is not
//! JSON, or lacks a field, makes the rules needing it not match — never an error.
//!
//! Velocity counts live in shared data as a sliding window over two fixed windows (the
//! previous window's count weighted by how much of it still overlaps): the estimate is
//! within the previous window's count of the exact sliding count, and exact for a key
//! whose requests all fall in one window. Storage is bounded like the velocity slots:
//! `max_keys / 4` slots (`tg:fraud:<rule>:<slot>`), four entries each; an entry idle for
//! two windows is reused first, otherwise the entry with the smallest count is evicted.
//! Shared data failing skips the rule (fail open) and is counted.

mod compile;
pub mod document;
mod store;
#[cfg(test)]
mod tests;

pub(crate) use compile::{compile, compile_route};
pub use document::*;

use crate::shared::{SharedData, StoreUnavailable};
use crate::waf::Cidr;
use store::count;

#[derive(Debug, Clone, PartialEq)]
enum Check {
    Velocity {
        key: Vec<String>,
        max: u32,
        window_ms: u64,
    },
    Amount {
        field: String,
        gt: Option<f64>,
        gte: Option<f64>,
        currency_field: Option<String>,
        by_currency: Vec<(String, f64)>,
    },
    CountryMismatch {
        card_country: String,
    },
    Blocklist {
        ips: Vec<Cidr>,
        field: Option<String>,
        values: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FraudRule {
    pub name: String,
    score: u32,
    block: bool,
    check: Check,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CountrySource {
    Header(String),
    Claim(String),
}

/// The compiled `fraud:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fraud {
    rules: Vec<FraudRule>,
    country: Option<CountrySource>,
    slots: u32,
}

/// A route's compiled `fraud:`: indexes into [`Fraud`]'s rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFraud {
    rules: Vec<usize>,
    pub block_score: Option<u32>,
    pub max_body_bytes: usize,
}

/// What the body phase needs from the request head, captured in the header phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudPending {
    pub tenant: Option<String>,
    pub client_ip: Option<std::net::IpAddr>,
    /// Upper-cased.
    pub client_country: Option<String>,
    /// The risk score from the header phase (velocity spikes), added to.
    pub base_risk_score: u32,
}

impl Fraud {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Header phase: what the body phase will need.
    pub fn pending(
        &self,
        request: &crate::request::RequestHead,
        identity: Option<&crate::auth::Identity>,
        client_ip: Option<&str>,
        base_risk_score: u32,
    ) -> FraudPending {
        let client_country = match &self.country {
            Some(CountrySource::Header(h)) => request
                .header(h)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string),
            Some(CountrySource::Claim(c)) => identity
                .and_then(|i| crate::auth::token::claim(&i.claims, c))
                .and_then(|v| v.as_str())
                .map(str::to_string),
            None => None,
        }
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty());
        FraudPending {
            tenant: identity.and_then(|i| i.tenant.clone()),
            client_ip: client_ip.and_then(|ip| ip.parse().ok()),
            client_country,
            base_risk_score,
        }
    }

    /// Body phase: every rule of the route against the body.
    pub fn evaluate(
        &self,
        route: &RouteFraud,
        pending: &FraudPending,
        body: &[u8],
        now_ms: u64,
        store: &dyn SharedData,
    ) -> FraudOutcome {
        let inputs = crate::waf::inputs::BodyInputs::new("application/json", body, body.len());
        let field = |path: &str| -> Option<&[u8]> {
            inputs
                .json
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, v)| v.as_ref())
        };
        let mut outcome = FraudOutcome::default();
        let mut score = 0u32;
        for rule in route.rules.iter().filter_map(|i| self.rules.get(*i)) {
            let matched = match &rule.check {
                Check::Velocity {
                    key,
                    max,
                    window_ms,
                } => {
                    use std::hash::Hasher;
                    // Fixed keys: every VM derives the same fingerprint for a key.
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    h.write(pending.tenant.as_deref().unwrap_or("").as_bytes());
                    h.write_u8(0x1f);
                    let mut complete = true;
                    for p in key {
                        match field(p) {
                            Some(v) => {
                                h.write(v);
                                h.write_u8(0x1f);
                            }
                            None => complete = false,
                        }
                    }
                    if !complete {
                        continue;
                    }
                    match count(
                        &rule.name,
                        h.finish(),
                        *window_ms,
                        self.slots,
                        now_ms,
                        store,
                    ) {
                        Ok((n, evicted)) => {
                            outcome.evictions += u64::from(evicted);
                            n > f64::from(*max)
                        }
                        Err(StoreUnavailable) => {
                            outcome.store_errors += 1;
                            false
                        }
                    }
                }
                Check::Amount {
                    field: f,
                    gt,
                    gte,
                    currency_field,
                    by_currency,
                } => {
                    let amount = field(f)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|t| t.trim().parse::<f64>().ok())
                        .filter(|a| a.is_finite());
                    let currency = currency_field
                        .as_deref()
                        .and_then(field)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(|c| c.trim().to_ascii_uppercase());
                    let special = currency
                        .and_then(|c| by_currency.iter().find(|(k, _)| *k == c).map(|x| x.1));
                    amount.is_some_and(|a| match special {
                        Some(limit) => a > limit,
                        None => gt.is_some_and(|g| a > g) || gte.is_some_and(|g| a >= g),
                    })
                }
                Check::CountryMismatch { card_country } => {
                    let card = field(card_country)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(|c| c.trim().to_ascii_uppercase())
                        .filter(|c| !c.is_empty());
                    matches!((card, &pending.client_country), (Some(c), Some(k)) if c != *k)
                }
                Check::Blocklist {
                    ips,
                    field: f,
                    values,
                } => {
                    pending
                        .client_ip
                        .is_some_and(|ip| ips.iter().any(|c| c.contains(ip)))
                        || f.as_deref()
                            .and_then(field)
                            .is_some_and(|v| values.iter().any(|x| x.as_bytes() == v))
                }
            };
            if matched {
                outcome.matched.push(rule.name.clone());
                score = score.saturating_add(rule.score);
                if rule.block {
                    outcome.blocked = true;
                }
            }
        }
        outcome.score = score.min(100);
        if route.block_score.is_some_and(|t| score >= t) {
            outcome.blocked = true;
        }
        outcome.risk_score = pending.base_risk_score.saturating_add(score).min(100);
        outcome
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FraudOutcome {
    /// Names of the matching rules, in route order.
    pub matched: Vec<String>,
    /// A hard rule matched, or the score reached the route's `block_score`.
    pub blocked: bool,
    /// The matching rules' summed score (0-100).
    pub score: u32,
    /// The request's risk score: the header phase's plus `score`, capped at 100.
    pub risk_score: u32,
    /// Velocity rules skipped because shared data failed (fail open).
    pub store_errors: u64,
    pub evictions: u64,
}
