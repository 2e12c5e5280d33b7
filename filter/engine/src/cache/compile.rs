//! Policy `cache` sections → the settings the request path uses.

use super::document::{CacheDocument, QueryDocument, RouteCacheDocument};
use super::{KeySpec, QueryRule, RouteRules};
use crate::headers::is_valid_header_name;
use crate::policy::compile::Errors;

pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1024 * 1024;

/// A route's compiled cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    pub rules: RouteRules,
    pub key: KeySpec,
    pub max_object_bytes: usize,
}

fn seconds(text: Option<&str>, at: &str, errors: &mut Errors) -> Option<u64> {
    let text = text?;
    match crate::limits::parse_period(text) {
        Some(ms) => Some(ms.get().div_ceil(1000)),
        None => {
            errors.push(at, format!("{text:?} is not a duration like 30s, 5m or 1h"));
            None
        }
    }
}

pub(crate) fn compile_cache_settings(doc: Option<&CacheDocument>, errors: &mut Errors) -> u64 {
    match doc.and_then(|d| d.max_bytes) {
        Some(0) => {
            errors.push("cache.max_bytes", "must be > 0");
            DEFAULT_MAX_BYTES
        }
        Some(n) => n,
        None => DEFAULT_MAX_BYTES,
    }
}

pub(crate) fn compile_route_cache(
    doc: &RouteCacheDocument,
    at: &str,
    errors: &mut Errors,
) -> RouteCache {
    let query = match &doc.query {
        None => QueryRule::Keep,
        Some(QueryDocument::Mode(mode)) => match mode.as_str() {
            "keep" => QueryRule::Keep,
            "ignore" => QueryRule::Ignore,
            other => {
                errors.push(
                    format!("{at}.query"),
                    format!("{other:?} is not keep, ignore, {{keep: [...]}} or {{drop: [...]}}"),
                );
                QueryRule::Keep
            }
        },
        Some(QueryDocument::Lists(lists)) => match (&lists.keep, &lists.drop) {
            (Some(keep), None) => QueryRule::KeepOnly(keep.clone()),
            (None, Some(drop)) => QueryRule::Drop(drop.clone()),
            _ => {
                errors.push(format!("{at}.query"), "give exactly one of keep or drop");
                QueryRule::Keep
            }
        },
    };
    let mut key_headers = Vec::new();
    for (i, name) in doc.key_headers.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        if is_valid_header_name(&lower) {
            key_headers.push(lower);
        } else {
            errors.push(
                format!("{at}.key_headers[{i}]"),
                format!("{name:?} is not a valid header name"),
            );
        }
    }
    let max_object_bytes = match doc.max_object_bytes {
        Some(0) => {
            errors.push(format!("{at}.max_object_bytes"), "must be > 0");
            DEFAULT_MAX_OBJECT_BYTES
        }
        Some(n) => n,
        None => DEFAULT_MAX_OBJECT_BYTES,
    };
    RouteCache {
        rules: RouteRules {
            ttl: seconds(doc.ttl.as_deref(), &format!("{at}.ttl"), errors),
            per_user: doc.per_user,
            stale_while_revalidate: seconds(
                doc.stale_while_revalidate.as_deref(),
                &format!("{at}.stale_while_revalidate"),
                errors,
            )
            .unwrap_or(0),
            stale_if_error: seconds(
                doc.stale_if_error.as_deref(),
                &format!("{at}.stale_if_error"),
                errors,
            )
            .unwrap_or(0),
        },
        key: KeySpec {
            per_user: doc.per_user,
            query,
            sort_query: doc.sort_query,
            headers: key_headers,
            claims: doc.key_claims.clone(),
        },
        max_object_bytes: usize::try_from(max_object_bytes).unwrap_or(usize::MAX),
    }
}
