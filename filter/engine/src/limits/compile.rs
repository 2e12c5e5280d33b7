//! Policy `rate_limits` → compiled limits and plans.

use std::num::NonZeroU64;

use super::gcra::Quota;
use super::velocity::VelocityRule;
use super::{KeyPart, Limit, RateLimits, RateSource, RouteLimit};
use crate::policy::compile::Errors;
use crate::policy::document::{RateLimitsDocument, RouteLimitDocument};

/// `30s`, `1m`, `2h`, `1d`, or plain seconds.
pub(crate) fn parse_period(text: &str) -> Option<NonZeroU64> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    NonZeroU64::new(n.checked_mul(ms)?)
}

/// A limit's or detector's `key` list.
fn parse_key(parts: &[String], at: &str, errors: &mut Errors) -> Vec<KeyPart> {
    if parts.is_empty() {
        errors.push(format!("{at}.key"), "list at least one key part (tenant, user, client_ip, key_id, route, header:<name>, claim:<path>)");
    }
    let mut key = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let parsed = match part.as_str() {
            "tenant" => Some(KeyPart::Tenant),
            "user" => Some(KeyPart::User),
            "client_ip" => Some(KeyPart::ClientIp),
            "key_id" => Some(KeyPart::KeyId),
            "route" => Some(KeyPart::Route),
            other => match other.split_once(':') {
                Some(("header", h))
                    if crate::headers::is_valid_header_name(&h.to_ascii_lowercase()) =>
                {
                    Some(KeyPart::Header(h.to_ascii_lowercase()))
                }
                Some(("claim", c)) if !c.is_empty() => Some(KeyPart::Claim(c.to_string())),
                _ => None,
            },
        };
        match parsed {
            Some(p) => key.push(p),
            None => errors.push(format!("{at}.key[{j}]"), format!("{part:?} is not one of tenant, user, client_ip, key_id, route, header:<name>, claim:<path>")),
        }
    }
    key
}

/// Names become shared-data keys and header values.
fn check_name(name: &str, at: &str, errors: &mut Errors) -> bool {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !ok {
        errors.push(
            format!("{at}.name"),
            format!("{name:?} may contain only letters, digits, '-' and '_'"),
        );
    }
    ok
}

fn compile_velocity(
    doc: &crate::policy::document::VelocityDocument,
    at: &str,
    errors: &mut Errors,
) -> Option<VelocityRule> {
    let window = |text: &Option<String>, default: u64, field: &str, errors: &mut Errors| match text
    {
        None => Some(default),
        Some(t) => match parse_period(t) {
            Some(p) => Some(p.get()),
            None => {
                errors.push(
                    format!("{at}.{field}"),
                    format!("{t:?} is not a period like 10s, 1m or 1h"),
                );
                None
            }
        },
    };
    let short = window(&doc.short_window, 10_000, "short_window", errors);
    let long = window(&doc.long_window, 600_000, "long_window", errors);
    if let (Some(s), Some(l)) = (short, long)
        && s >= l
    {
        errors.push(
            format!("{at}.long_window"),
            "must be longer than short_window",
        );
    }
    let ratio = doc.ratio.unwrap_or(5.0);
    if !(ratio.is_finite() && ratio > 1.0) {
        errors.push(format!("{at}.ratio"), "must be a number greater than 1");
    }
    let risk_score = doc.risk_score.unwrap_or(50);
    if risk_score > 100 {
        errors.push(format!("{at}.risk_score"), "must be between 0 and 100");
    }
    let min_requests = doc.min_requests.unwrap_or(20);
    if min_requests == 0 {
        errors.push(format!("{at}.min_requests"), "must be > 0");
    }
    let max_keys = doc.max_keys.unwrap_or(65_536);
    if max_keys < 4 {
        errors.push(format!("{at}.max_keys"), "must be at least 4");
    }
    let key = parse_key(&doc.key, at, errors);
    Some(VelocityRule {
        name: doc.name.clone(),
        key,
        short_window_ms: short?,
        long_window_ms: long?,
        ratio,
        min_requests: f64::from(min_requests),
        block: doc.block,
        risk_score,
        slots: (max_keys / 4).max(1),
    })
}

fn quota(
    rate: Option<u64>,
    per: Option<&str>,
    burst: Option<u64>,
    at: &str,
    errors: &mut Errors,
) -> Option<Quota> {
    let rate = match rate.and_then(NonZeroU64::new) {
        Some(r) => r,
        None => {
            errors.push(format!("{at}.rate"), "must be > 0");
            return None;
        }
    };
    let period_ms = match parse_period(per.unwrap_or("1m")) {
        Some(p) => p,
        None => {
            errors.push(
                format!("{at}.per"),
                format!(
                    "{:?} is not a period like 30s, 1m, 1h or 1d",
                    per.unwrap_or("")
                ),
            );
            return None;
        }
    };
    let burst = match burst {
        None => rate,
        Some(b) => match NonZeroU64::new(b) {
            Some(b) => b,
            None => {
                errors.push(format!("{at}.burst"), "must be > 0");
                return None;
            }
        },
    };
    Some(Quota {
        rate,
        period_ms,
        burst,
    })
}

pub(crate) fn compile_rate_limits(
    doc: Option<&RateLimitsDocument>,
    errors: &mut Errors,
) -> RateLimits {
    let Some(doc) = doc else {
        return RateLimits::default();
    };
    let mut out = RateLimits {
        default_plan: doc.default_plan.clone(),
        headers_on_allowed: doc.headers.as_ref().is_some_and(|h| h.on_allowed),
        legacy_headers: doc.headers.as_ref().is_some_and(|h| h.legacy),
        xff_trusted_hops: doc.client_ip.as_ref().map_or(0, |c| c.xff_trusted_hops),
        ..RateLimits::default()
    };
    for (name, plan) in &doc.plans {
        if let Some(q) = quota(
            Some(plan.rate),
            plan.per.as_deref(),
            plan.burst,
            &format!("rate_limits.plans.{name}"),
            errors,
        ) {
            out.plans.push((name.clone(), q));
        }
    }
    let plan_known = |p: &str| doc.plans.contains_key(p);
    if let Some(p) = &doc.default_plan
        && !plan_known(p)
    {
        errors.push(
            "rate_limits.default_plan",
            format!("no plan named {p:?} in rate_limits.plans"),
        );
    }
    for (tenant, o) in &doc.tenant_overrides {
        if let Some(p) = &o.plan
            && !plan_known(p)
        {
            errors.push(
                format!("rate_limits.tenant_overrides.{tenant}.plan"),
                format!("no plan named {p:?} in rate_limits.plans"),
            );
        }
        out.tenant_overrides
            .push((tenant.clone(), o.plan.clone(), o.shadow));
    }
    for (i, l) in doc.limits.iter().enumerate() {
        let at = format!("rate_limits.limits[{i}]");
        if check_name(&l.name, &at, errors) && out.limits.iter().any(|o| o.name == l.name) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate limit name {:?}", l.name),
            );
        }
        let key = parse_key(&l.key, &at, errors);
        let rate = if l.plan {
            if l.rate.is_some() || l.per.is_some() || l.burst.is_some() {
                errors.push(
                    &at,
                    "a `plan: true` limit takes rate, per and burst from the plan",
                );
            }
            if doc.plans.is_empty() {
                errors.push(format!("{at}.plan"), "needs rate_limits.plans");
            }
            Some(RateSource::Plan)
        } else {
            quota(l.rate, l.per.as_deref(), l.burst, &at, errors).map(RateSource::Fixed)
        };
        let max_keys = l.max_keys.unwrap_or(65_536);
        if max_keys < 4 {
            errors.push(format!("{at}.max_keys"), "must be at least 4");
        }
        if let Some(rate) = rate {
            out.limits.push(Limit {
                name: l.name.clone(),
                key,
                rate,
                shadow: l.shadow,
                global: l.global,
                slots: (max_keys / 4).max(1),
            });
        }
    }
    for (i, v) in doc.velocity.iter().enumerate() {
        let at = format!("rate_limits.velocity[{i}]");
        if check_name(&v.name, &at, errors) && out.velocity.iter().any(|o| o.name == v.name) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate velocity rule name {:?}", v.name),
            );
        }
        if let Some(rule) = compile_velocity(v, &at, errors) {
            out.velocity.push(rule);
        }
    }
    out
}

pub(crate) fn compile_route_limits(
    docs: &[RouteLimitDocument],
    limits: &RateLimits,
    at: &str,
    errors: &mut Errors,
) -> Vec<RouteLimit> {
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let (name, cost) = match d {
            RouteLimitDocument::Name(n) => (n, 1),
            RouteLimitDocument::WithCost { name, cost } => (name, *cost),
        };
        match limits.limits.iter().position(|l| &l.name == name) {
            None => errors.push(
                format!("{at}[{i}]"),
                format!("no limit named {name:?} in rate_limits.limits"),
            ),
            Some(limit) => {
                if cost == 0 {
                    errors.push(format!("{at}[{i}].cost"), "must be > 0");
                }
                if let Some(Limit {
                    rate: RateSource::Fixed(q),
                    ..
                }) = limits.limits.get(limit)
                    && cost > q.burst.get()
                {
                    errors.push(
                        format!("{at}[{i}].cost"),
                        format!(
                            "{cost} is more than the limit's burst {}: no request could ever pass",
                            q.burst
                        ),
                    );
                }
                out.push(RouteLimit { limit, cost });
            }
        }
    }
    out
}
