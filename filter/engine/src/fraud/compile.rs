//! The `fraud:` documents checked and compiled once per policy load; errors name the
//! field path.

use super::document::{FraudDocument, RouteFraudDocument};
use super::*;
use crate::policy::compile::Errors;

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
