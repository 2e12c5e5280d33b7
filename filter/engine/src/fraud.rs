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

use schemars::JsonSchema;
use serde::Deserialize;

use crate::policy::compile::Errors;
use crate::shared::{SetError, SharedData, StoreUnavailable};
use crate::waf::Cidr;

/// The policy's `fraud:` section: rules that payment routes enable by name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudDocument {
    /// Where the client's country comes from for `country_mismatch` rules.
    #[serde(default)]
    pub client_country: Option<ClientCountryDocument>,
    /// Distinct velocity keys each velocity rule keeps (default 65536); beyond it the
    /// least active are evicted.
    #[serde(default)]
    pub max_keys: Option<u32>,
    /// The rules; routes list the names they use.
    pub rules: Vec<FraudRuleDocument>,
}

/// The client's country: a trusted header the CDN or front proxy sets (e.g.
/// `x-client-country`, `cf-ipcountry`), or a JWT claim. Give exactly one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCountryDocument {
    #[serde(default)]
    pub header: Option<String>,
    /// Dotted claim path of the authenticated token.
    #[serde(default)]
    pub claim: Option<String>,
}

/// One fraud rule: a name, what it checks (exactly one of `velocity`, `amount`,
/// `country_mismatch`, `blocklist`), its score and action.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudRuleDocument {
    /// Unique; sent to the origin in `x-tollgate-fraud`, never to the client.
    pub name: String,
    /// Added to the request's risk score when the rule matches (the sum is capped at 100).
    #[serde(default)]
    pub score: u32,
    /// `flag` (default): mark the request for the origin; `block`: refuse it (403).
    #[serde(default)]
    pub action: FraudAction,
    #[serde(default)]
    pub velocity: Option<FraudVelocityDocument>,
    #[serde(default)]
    pub amount: Option<FraudAmountDocument>,
    #[serde(default)]
    pub country_mismatch: Option<CountryMismatchDocument>,
    #[serde(default)]
    pub blocklist: Option<BlocklistDocument>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FraudAction {
    #[default]
    Flag,
    Block,
}

/// More than `max` requests with the same key within `window` match. The key is always
/// scoped by tenant (requests without a tenant share one anonymous scope).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudVelocityDocument {
    /// JSON body field paths forming the key, e.g. `card.fingerprint` or `account_id`.
    /// A request missing any of them is not counted.
    pub key: Vec<String>,
    pub max: u32,
    /// `30s`, `10m`, `1h`, `1d`.
    pub window: String,
}

/// A JSON number field compared with thresholds (numbers written as strings are read
/// too). Give `gt` and/or `gte`; `currency` picks per-currency thresholds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudAmountDocument {
    /// JSON body field path, e.g. `amount`.
    pub field: String,
    /// Matches when the amount is greater than this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// Matches when the amount is greater than or equal to this.
    #[serde(default)]
    pub gte: Option<f64>,
    /// JSON body field holding the currency code (e.g. `currency`).
    #[serde(default)]
    pub currency_field: Option<String>,
    /// Thresholds (greater than) per currency code, case-insensitive; a currency not
    /// listed uses `gt`/`gte`.
    #[serde(default)]
    pub gt_by_currency: std::collections::BTreeMap<String, f64>,
}

/// The card's country (a JSON body field) differs from the client's country
/// (`fraud.client_country`). Either value missing: no match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountryMismatchDocument {
    /// JSON body field path, e.g. `card.country`.
    pub card_country: String,
}

/// Refuse or flag listed client IPs / CIDR blocks, and listed values of body fields.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlocklistDocument {
    /// Addresses or CIDR blocks, matched against the client IP as the limits see it.
    #[serde(default)]
    pub ips: Vec<String>,
    /// JSON body field path whose value is compared with `values`.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

/// A route's `fraud:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFraudDocument {
    /// Names of `fraud.rules` evaluated on this route.
    pub rules: Vec<String>,
    /// Refuse (403) when the summed score of the matching rules reaches this.
    #[serde(default)]
    pub block_score: Option<u32>,
    /// Largest body read (default 65536); a longer body gets 413.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

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

const DEFAULT_MAX_KEYS: u32 = 65_536;
const DEFAULT_MAX_BODY: usize = 65_536;

fn path_ok(path: &str) -> bool {
    !path.is_empty() && path.split('.').all(|p| !p.is_empty())
}

fn check_path(path: &str, at: &str, errors: &mut Errors) {
    if !path_ok(path) {
        errors.push(
            at,
            format!("{path:?} is not a JSON field path (dotted names, e.g. card.fingerprint)"),
        );
    }
}

pub(crate) fn compile(doc: Option<&FraudDocument>, errors: &mut Errors) -> Fraud {
    let Some(doc) = doc else {
        return Fraud::default();
    };
    let country = doc.client_country.as_ref().and_then(|c| {
        match (&c.header, &c.claim) {
            (Some(h), None) => {
                let lower = h.to_ascii_lowercase();
                if crate::headers::is_valid_header_name(&lower) {
                    return Some(CountrySource::Header(lower));
                }
                errors.push(
                    "fraud.client_country.header",
                    format!("{h:?} is not a valid header name"),
                );
            }
            (None, Some(c)) if path_ok(c) => return Some(CountrySource::Claim(c.clone())),
            (None, Some(c)) => errors.push(
                "fraud.client_country.claim",
                format!("{c:?} is not a claim path"),
            ),
            _ => errors.push("fraud.client_country", "give exactly one of header, claim"),
        }
        None
    });
    let max_keys = doc.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys < 4 {
        errors.push("fraud.max_keys", "must be at least 4");
    }
    let mut rules: Vec<FraudRule> = Vec::new();
    for (i, r) in doc.rules.iter().enumerate() {
        let at = format!("fraud.rules[{i}]");
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            errors.push(
                format!("{at}.name"),
                format!("{:?}: use letters, digits, '_' or '-'", r.name),
            );
        }
        if rules.iter().any(|x| x.name == r.name) {
            errors.push(format!("{at}.name"), format!("duplicate rule {:?}", r.name));
        }
        if r.score > 100 {
            errors.push(format!("{at}.score"), "must be 0-100");
        }
        let given = [
            r.velocity.is_some(),
            r.amount.is_some(),
            r.country_mismatch.is_some(),
            r.blocklist.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            errors.push(
                at.clone(),
                "give exactly one of velocity, amount, country_mismatch, blocklist",
            );
            continue;
        }
        let check = if let Some(v) = &r.velocity {
            let at = format!("{at}.velocity");
            if v.key.is_empty() {
                errors.push(format!("{at}.key"), "list at least one JSON field path");
            }
            for (j, p) in v.key.iter().enumerate() {
                check_path(p, &format!("{at}.key[{j}]"), errors);
            }
            let window_ms = match crate::limits::parse_period(&v.window) {
                Some(ms) => ms.get(),
                None => {
                    errors.push(
                        format!("{at}.window"),
                        format!("{:?} is not a period like 30s, 10m, 1h", v.window),
                    );
                    1
                }
            };
            Check::Velocity {
                key: v.key.clone(),
                max: v.max,
                window_ms,
            }
        } else if let Some(a) = &r.amount {
            let at = format!("{at}.amount");
            check_path(&a.field, &format!("{at}.field"), errors);
            if let Some(c) = &a.currency_field {
                check_path(c, &format!("{at}.currency_field"), errors);
            }
            if !a.gt_by_currency.is_empty() && a.currency_field.is_none() {
                errors.push(
                    format!("{at}.gt_by_currency"),
                    "needs currency_field to read the currency from",
                );
            }
            if a.gt.is_none() && a.gte.is_none() && a.gt_by_currency.is_empty() {
                errors.push(at.clone(), "give gt, gte or gt_by_currency");
            }
            Check::Amount {
                field: a.field.clone(),
                gt: a.gt,
                gte: a.gte,
                currency_field: a.currency_field.clone(),
                by_currency: a
                    .gt_by_currency
                    .iter()
                    .map(|(c, v)| (c.to_ascii_uppercase(), *v))
                    .collect(),
            }
        } else if let Some(c) = &r.country_mismatch {
            check_path(
                &c.card_country,
                &format!("{at}.country_mismatch.card_country"),
                errors,
            );
            if doc.client_country.is_none() {
                errors.push(
                    format!("{at}.country_mismatch"),
                    "needs fraud.client_country (where the client's country comes from)",
                );
            }
            Check::CountryMismatch {
                card_country: c.card_country.clone(),
            }
        } else if let Some(b) = &r.blocklist {
            let at = format!("{at}.blocklist");
            let ips = b
                .ips
                .iter()
                .enumerate()
                .filter_map(|(j, text)| {
                    let c = Cidr::parse(text);
                    if c.is_none() {
                        errors.push(
                            format!("{at}.ips[{j}]"),
                            format!("{text:?} is not an IP address or CIDR block"),
                        );
                    }
                    c
                })
                .collect();
            if let Some(f) = &b.field {
                check_path(f, &format!("{at}.field"), errors);
            }
            if b.field.is_some() == b.values.is_empty() {
                errors.push(at.clone(), "field and values go together");
            }
            if b.ips.is_empty() && b.values.is_empty() {
                errors.push(at.clone(), "list ips, or a field and its values");
            }
            Check::Blocklist {
                ips,
                field: b.field.clone(),
                values: b.values.clone(),
            }
        } else {
            continue;
        };
        rules.push(FraudRule {
            name: r.name.clone(),
            score: r.score,
            block: r.action == FraudAction::Block,
            check,
        });
    }
    Fraud {
        rules,
        country,
        slots: (max_keys / 4).max(1),
    }
}

pub(crate) fn compile_route(
    doc: &RouteFraudDocument,
    fraud: &Fraud,
    at: &str,
    errors: &mut Errors,
) -> RouteFraud {
    if doc.rules.is_empty() {
        errors.push(format!("{at}.rules"), "list at least one rule name");
    }
    let rules = doc
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let found = fraud.rules.iter().position(|r| &r.name == name);
            if found.is_none() {
                errors.push(
                    format!("{at}.rules[{i}]"),
                    format!("no rule {name:?} in fraud.rules"),
                );
            }
            found
        })
        .collect();
    if doc.block_score.is_some_and(|s| s == 0 || s > 100) {
        errors.push(format!("{at}.block_score"), "must be 1-100");
    }
    let max_body_bytes = doc.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if max_body_bytes == 0 {
        errors.push(format!("{at}.max_body_bytes"), "must be positive");
    }
    RouteFraud {
        rules,
        block_score: doc.block_score,
        max_body_bytes,
    }
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
fn count(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::policy::Policy;
    use crate::shared::MemorySharedData;

    const POLICY: &str = r#"
version: 1
fraud:
  client_country: { header: x-client-country }
  max_keys: 4
  rules:
    - name: card_velocity
      velocity: { key: [card.fingerprint], max: 5, window: 1h }
      score: 40
    - name: big_amount
      amount: { field: amount, gt: 10000, currency_field: currency, gt_by_currency: { JPY: 1000000 } }
      score: 30
    - name: country
      country_mismatch: { card_country: card.country }
      score: 20
    - name: bad_ips
      blocklist: { ips: [203.0.113.0/24] }
      action: block
    - name: bad_cards
      blocklist: { field: card.fingerprint, values: [stolen] }
      action: block
routes:
  - name: pay
    cluster: origin
    fraud: { rules: [card_velocity, big_amount, country, bad_ips, bad_cards], block_score: 90 }
"#;

    fn setup() -> (Fraud, RouteFraud) {
        let policy = Policy::load(POLICY).unwrap();
        let route = policy.routes.get(0).unwrap().fraud.clone().unwrap();
        (policy.fraud, route)
    }

    fn pending(tenant: Option<&str>, ip: Option<&str>, country: Option<&str>) -> FraudPending {
        FraudPending {
            tenant: tenant.map(str::to_string),
            client_ip: ip.map(|i| i.parse().unwrap()),
            client_country: country.map(str::to_string),
            base_risk_score: 0,
        }
    }

    fn pay(card: &str) -> Vec<u8> {
        format!(r#"{{"amount": 25.5, "currency": "EUR", "card": {{"fingerprint": "{card}", "country": "DE"}}}}"#)
            .into_bytes()
    }

    #[test]
    fn the_sixth_payment_in_an_hour_is_flagged_per_tenant() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let a = pending(Some("acme"), None, None);
        let t0 = 10 * 3_600_000;
        for i in 0..5 {
            let o = fraud.evaluate(&route, &a, &pay("fp1"), t0 + i * 60_000, &store);
            assert!(o.matched.is_empty(), "{i}: {o:?}");
        }
        let o = fraud.evaluate(&route, &a, &pay("fp1"), t0 + 300_000, &store);
        assert_eq!(o.matched, ["card_velocity"]);
        assert_eq!((o.score, o.blocked), (40, false));
        // Another tenant's payments with the same card are counted apart.
        let b = pending(Some("globex"), None, None);
        let o = fraud.evaluate(&route, &b, &pay("fp1"), t0 + 300_000, &store);
        assert!(o.matched.is_empty());
        // Another card of the same tenant too.
        let o = fraud.evaluate(&route, &a, &pay("fp2"), t0 + 300_000, &store);
        assert!(o.matched.is_empty());
    }

    #[test]
    fn the_window_slides() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let a = pending(Some("acme"), None, None);
        let t0 = 10 * 3_600_000;
        for i in 0..5 {
            fraud.evaluate(&route, &a, &pay("fp"), t0 + i, &store);
        }
        // Half an hour into the next window, half of the earlier five still count.
        let o = fraud.evaluate(&route, &a, &pay("fp"), t0 + 5_400_000, &store);
        assert!(o.matched.is_empty(), "{o:?}");
        // Two hours later the earlier payments are gone entirely.
        for i in 0..5 {
            let o = fraud.evaluate(&route, &a, &pay("fp"), t0 + 3 * 3_600_000 + i, &store);
            assert!(o.matched.is_empty(), "{o:?}");
        }
        let o = fraud.evaluate(&route, &a, &pay("fp"), t0 + 3 * 3_600_000 + 9, &store);
        assert_eq!(o.matched, ["card_velocity"]);
    }

    #[test]
    fn velocity_storage_is_bounded_and_evicts() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let a = pending(None, None, None);
        let mut evictions = 0;
        for i in 0..10 {
            evictions += fraud
                .evaluate(&route, &a, &pay(&format!("c{i}")), 1_000 + i, &store)
                .evictions;
        }
        // max_keys 4: one slot of four entries.
        assert_eq!(evictions, 6);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn shared_data_failing_fails_open() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        store.broken.set(true);
        let a = pending(Some("acme"), None, None);
        for i in 0..10 {
            let o = fraud.evaluate(&route, &a, &pay("fp"), 1_000 + i, &store);
            assert!(o.matched.is_empty());
            assert_eq!(o.store_errors, 1);
        }
    }

    #[test]
    fn amounts_compare_per_currency() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let p = pending(None, None, None);
        let body = |amount: &str, currency: &str| {
            format!(r#"{{"amount": {amount}, "currency": "{currency}"}}"#).into_bytes()
        };
        let hit = |b: Vec<u8>| fraud.evaluate(&route, &p, &b, 1, &store).matched;
        assert_eq!(hit(body("10000.01", "USD")), ["big_amount"]);
        assert!(hit(body("10000", "USD")).is_empty());
        assert_eq!(hit(body("\"20000\"", "EUR")), ["big_amount"]);
        // Yen has its own threshold.
        assert!(hit(body("500000", "jpy")).is_empty());
        assert_eq!(hit(body("2000000", "JPY")), ["big_amount"]);
        assert!(hit(body("\"lots\"", "USD")).is_empty());
    }

    #[test]
    fn country_mismatch_needs_both_countries() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let body = br#"{"card": {"country": "de"}}"#;
        let hit = |c: Option<&str>, b: &[u8]| {
            fraud
                .evaluate(&route, &pending(None, None, c), b, 1, &store)
                .matched
        };
        assert_eq!(hit(Some("US"), body), ["country"]);
        assert!(hit(Some("DE"), body).is_empty());
        assert!(hit(None, body).is_empty());
        assert!(hit(Some("US"), br#"{"card": {}}"#).is_empty());
    }

    #[test]
    fn blocklists_block_by_ip_and_by_field() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let o = fraud.evaluate(
            &route,
            &pending(None, Some("203.0.113.9"), None),
            b"{}",
            1,
            &store,
        );
        assert_eq!(
            (o.matched.as_slice(), o.blocked),
            (&["bad_ips".to_string()][..], true)
        );
        let o = fraud.evaluate(
            &route,
            &pending(None, Some("198.51.100.1"), None),
            &pay("stolen"),
            1,
            &store,
        );
        assert_eq!(o.matched, ["bad_cards"]);
        assert!(o.blocked);
        let o = fraud.evaluate(
            &route,
            &pending(None, Some("198.51.100.1"), None),
            &pay("ok"),
            2,
            &store,
        );
        assert!(!o.blocked);
    }

    #[test]
    fn the_route_threshold_blocks_on_the_summed_score() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let p = FraudPending {
            base_risk_score: 50,
            ..pending(Some("t"), None, Some("US"))
        };
        let body = br#"{"amount": 50000, "currency": "USD", "card": {"fingerprint": "x", "country": "DE"}}"#;
        let o = fraud.evaluate(&route, &p, body, 1, &store);
        // 30 + 20: flagged, not blocked; the risk score adds the header phase's 50.
        assert_eq!(o.matched, ["big_amount", "country"]);
        assert_eq!((o.score, o.blocked, o.risk_score), (50, false, 100));
        for i in 0..5 {
            fraud.evaluate(&route, &p, body, 2 + i, &store);
        }
        let o = fraud.evaluate(&route, &p, body, 10, &store);
        assert_eq!((o.score, o.blocked), (90, true));
    }

    #[test]
    fn the_usage_record_carries_the_rules_and_the_score() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let o = fraud.evaluate(
            &route,
            &pending(None, Some("203.0.113.1"), None),
            b"{}",
            1,
            &store,
        );
        let mut event = crate::fleet::UsageEvent {
            event_id: "e".into(),
            tenant: "t".into(),
            timestamp_ms: 1,
            route: "pay".into(),
            method: "POST".into(),
            status: 0,
            plan: String::new(),
            key_id: None,
            risk_score: 10,
            decisions: Default::default(),
            latency_ms: 0,
        };
        crate::usage::note_fraud(&mut event, &o);
        assert_eq!(event.decisions.fraud.as_deref(), Some("block:bad_ips"));
        let reply = crate::decision::LocalReply {
            detail: Some("fraud_blocked"),
            ..crate::decision::LocalReply::json_error(403, "fraud_blocked", "x", "id")
        };
        crate::usage::note_reply(&mut event, &reply);
        assert_eq!((event.status, event.decisions.auth.as_deref()), (403, None));
    }

    #[test]
    fn bodies_that_are_not_json_match_nothing() {
        let (fraud, route) = setup();
        let store = MemorySharedData::default();
        let p = pending(None, None, Some("US"));
        for body in [
            &b""[..],
            b"amount=50000",
            b"{\"amount\": 5000",
            b"[1,2]",
            b"\xff\xfe",
        ] {
            assert!(
                fraud
                    .evaluate(&route, &p, body, 1, &store)
                    .matched
                    .is_empty()
            );
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = POLICY
            .replace("window: 1h", "window: soon")
            .replace("card.country", "card..country")
            .replace("bad_cards]", "nope]");
        let errors = Policy::load(&bad).unwrap_err().to_string();
        assert!(
            errors.contains("fraud.rules[0].velocity.window"),
            "{errors}"
        );
        assert!(
            errors.contains("fraud.rules[2].country_mismatch.card_country"),
            "{errors}"
        );
        assert!(errors.contains("routes[0].fraud.rules[4]"), "{errors}");
    }
}
