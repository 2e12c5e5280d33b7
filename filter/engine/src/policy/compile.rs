//! Validation and compilation of a parsed policy document. Every problem is collected
//! (not just the first) so one `on_configure` log shows everything to fix.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};

use super::document::{HeaderMatchDocument, MatchDocument, PathMatchDocument, PolicyDocument};
use super::{PolicyError, PolicyErrors};
use crate::auth::Authenticator;
use crate::auth::compile::compile_route_auth;
use crate::headers::{IDENTITY_PREFIX, is_valid_header_name, is_valid_header_value};
use crate::routing::{
    HeaderCondition, HeaderMatcher, HostPattern, PathMatcher, Route, RouteMatcher, RouteTable,
};

/// Compiled regexes are bounded so a hostile policy cannot balloon VM memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A validated, compiled policy, ready to serve requests.
#[derive(Debug)]
pub struct Policy {
    pub routes: RouteTable,
    pub auth: Authenticator,
    pub rate_limits: crate::limits::RateLimits,
    /// Incoming header whose well-formed value is reused as the request id.
    pub request_id_header: Option<String>,
    /// Every WAF rule routes may use.
    pub waf: crate::waf::Waf,
    /// Fleet sync, when the policy has a `sidecar` section.
    pub sidecar: Option<crate::fleet::SidecarConfig>,
    /// Bytes the node's response cache may hold (`cache.max_bytes`).
    pub cache_max_bytes: u64,
    /// Every fraud rule routes may use.
    pub fraud: crate::fraud::Fraud,
}

#[derive(Default)]
pub(crate) struct Errors(Vec<PolicyError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(PolicyError::new(path, message));
    }

    /// How many errors so far (to tell whether a part compiled cleanly).
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }
}

impl Policy {
    pub fn compile(document: &PolicyDocument) -> Result<Self, PolicyErrors> {
        let mut errors = Errors::default();
        if document.version != 1 {
            errors.push(
                "version",
                format!(
                    "unsupported policy version {} (this Tollgate reads version 1)",
                    document.version
                ),
            );
        }
        let request_id_header = document
            .request_id
            .as_ref()
            .and_then(|r| r.reuse_header.as_ref())
            .and_then(|name| {
                let lower = name.to_ascii_lowercase();
                if is_valid_header_name(&lower) {
                    Some(lower)
                } else {
                    errors.push(
                        "request_id.reuse_header",
                        format!("{name:?} is not a valid header name"),
                    );
                    None
                }
            });

        let auth = crate::auth::compile_auth(document.auth.as_ref(), &mut errors);
        let fraud = crate::fraud::compile(document.fraud.as_ref(), &mut errors);
        let mut rate_limits =
            crate::limits::compile_rate_limits(document.rate_limits.as_ref(), &mut errors);
        let sidecar = document
            .sidecar
            .as_ref()
            .map(|s| crate::fleet::compile_sidecar(s, &mut errors));
        match &sidecar {
            Some(s) => {
                rate_limits.fleet = Some(crate::limits::FleetSettings {
                    limits: s.limits,
                    stale_after_ms: s.stale_after_ms(),
                });
            }
            None => {
                if let Some(doc) = &document.rate_limits {
                    for (i, l) in doc.limits.iter().enumerate() {
                        if l.global {
                            errors.push(
                                format!("rate_limits.limits[{i}].global"),
                                "a global limit needs a `sidecar` section",
                            );
                        }
                    }
                }
            }
        }
        let waf_catalog = crate::waf::compile_waf(
            document.waf.as_ref(),
            document.routes.iter().any(|r| r.waf.is_some()),
            &mut errors,
        );
        let cache_max_bytes =
            crate::cache::compile::compile_cache_settings(document.cache.as_ref(), &mut errors);
        if document.routes.is_empty() {
            errors.push("routes", "must have at least one route");
        }
        let mut seen_names: HashMap<&str, usize> = HashMap::new();
        let mut routes = Vec::with_capacity(document.routes.len());
        for (i, route) in document.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if route.name.is_empty() {
                errors.push(format!("{at}.name"), "must not be empty");
            } else if !route
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                errors.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} may contain only letters, digits, '-', '_' and '.'",
                        route.name
                    ),
                );
            } else if let Some(first) = seen_names.insert(route.name.as_str(), i) {
                errors.push(
                    format!("{at}.name"),
                    format!(
                        "duplicate route name {:?} (first used by routes[{first}])",
                        route.name
                    ),
                );
            }
            if route.cluster.is_empty() {
                errors.push(format!("{at}.cluster"), "must not be empty");
            } else if !is_valid_header_value(route.cluster.as_bytes())
                || route.cluster.contains(' ')
            {
                // The cluster travels to Envoy's router in a request header.
                errors.push(
                    format!("{at}.cluster"),
                    format!("{:?} is not a valid cluster name", route.cluster),
                );
            }
            let matcher = compile_match(&route.matcher, &format!("{at}.match"), &mut errors);
            let route_auth = route
                .auth
                .as_ref()
                .map(|a| compile_route_auth(a, &auth, &format!("{at}.auth"), &mut errors));
            let webhook = route.webhook.as_ref().map(|w| {
                crate::webhook::WebhookVerifier::compile(w, &format!("{at}.webhook"), &mut errors)
            });
            routes.push(Route {
                name: route.name.clone(),
                cluster: route.cluster.clone(),
                matcher,
                auth: route_auth,
                webhook,
                limits: crate::limits::compile_route_limits(
                    &route.limits,
                    &rate_limits,
                    &format!("{at}.limits"),
                    &mut errors,
                ),
                waf: route.waf.as_ref().map(|w| {
                    crate::waf::compile_route_waf(
                        w,
                        &waf_catalog,
                        &format!("{at}.waf"),
                        &mut errors,
                    )
                }),
                pii: compile_pii(
                    &route.pii_masking,
                    &format!("{at}.pii_masking"),
                    &mut errors,
                ),
                idempotency: route.idempotency.as_ref().map(|d| {
                    crate::idempotency::compile(d, &format!("{at}.idempotency"), &mut errors)
                }),
                fraud: route.fraud.as_ref().map(|f| {
                    crate::fraud::compile_route(f, &fraud, &format!("{at}.fraud"), &mut errors)
                }),
                cache: route.cache.as_ref().map(|c| {
                    crate::cache::compile::compile_route_cache(
                        c,
                        &format!("{at}.cache"),
                        &mut errors,
                    )
                }),
            });
        }

        if errors.0.is_empty() {
            Ok(Policy {
                routes: RouteTable::new(routes),
                auth,
                rate_limits,
                request_id_header,
                waf: waf_catalog.waf,
                sidecar,
                cache_max_bytes,
                fraud,
            })
        } else {
            Err(PolicyErrors(errors.0))
        }
    }
}

fn compile_pii(names: &[String], at: &str, errors: &mut Errors) -> Option<crate::pii::PiiKinds> {
    let mut kinds = crate::pii::PiiKinds::default();
    for (i, name) in names.iter().enumerate() {
        match kinds.with(name) {
            Some(more) => kinds = more,
            None => errors.push(
                format!("{at}[{i}]"),
                format!(
                    "unknown kind {name:?}; expected one of {}",
                    crate::pii::PiiKinds::NAMES.join(", ")
                ),
            ),
        }
    }
    (!names.is_empty()).then_some(kinds)
}

fn compile_match(document: &MatchDocument, at: &str, errors: &mut Errors) -> RouteMatcher {
    let mut matcher = RouteMatcher::default();
    if let Some(hosts) = &document.hosts {
        if hosts.is_empty() {
            errors.push(
                format!("{at}.hosts"),
                "must not be empty (omit it to match any host)",
            );
        }
        let mut patterns = Vec::with_capacity(hosts.len());
        for (i, host) in hosts.iter().enumerate() {
            match compile_host(host) {
                Ok(p) => patterns.push(p),
                Err(message) => errors.push(format!("{at}.hosts[{i}]"), message),
            }
        }
        matcher.hosts = Some(patterns);
    }
    if let Some(path) = &document.path {
        matcher.path = compile_path(path, &format!("{at}.path"), errors);
    }
    if let Some(methods) = &document.methods {
        if methods.is_empty() {
            errors.push(
                format!("{at}.methods"),
                "must not be empty (omit it to match any method)",
            );
        }
        for (i, method) in methods.iter().enumerate() {
            let is_token = !method.is_empty()
                && method
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
            if !is_token {
                errors.push(
                    format!("{at}.methods[{i}]"),
                    format!("{method:?} is not an HTTP method in upper case"),
                );
            }
        }
        matcher.methods = Some(methods.clone());
    }
    if let Some(headers) = &document.headers {
        for (i, header) in headers.iter().enumerate() {
            if let Some(h) = compile_header(header, &format!("{at}.headers[{i}]"), errors) {
                matcher.headers.push(h);
            }
        }
    }
    matcher
}

fn compile_host(host: &str) -> Result<HostPattern, String> {
    let lower = host.to_ascii_lowercase();
    if lower == "*" {
        return Ok(HostPattern::Any);
    }
    let (body, wildcard) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (lower.as_str(), false),
    };
    let valid = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid {
        return Err(format!(
            "{host:?} is not a host name, '*.suffix' or '*' (ports are not part of the match)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Suffix(format!(".{body}"))
    } else {
        HostPattern::Exact(lower)
    })
}

fn compile_path(
    document: &PathMatchDocument,
    at: &str,
    errors: &mut Errors,
) -> Option<PathMatcher> {
    let given = [
        document.exact.is_some(),
        document.prefix.is_some(),
        document.regex.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        errors.push(at, "give exactly one of `exact`, `prefix` or `regex`");
        return None;
    }
    if let Some(exact) = &document.exact {
        if !exact.starts_with('/') {
            errors.push(format!("{at}.exact"), "must start with '/'");
        }
        return Some(PathMatcher::Exact(exact.clone()));
    }
    if let Some(prefix) = &document.prefix {
        if !prefix.starts_with('/') {
            errors.push(format!("{at}.prefix"), "must start with '/'");
        }
        return Some(PathMatcher::Prefix(prefix.clone()));
    }
    let pattern = document.regex.as_deref().unwrap_or_default();
    compile_regex(pattern, &format!("{at}.regex"), errors).map(PathMatcher::Regex)
}

fn compile_header(
    document: &HeaderMatchDocument,
    at: &str,
    errors: &mut Errors,
) -> Option<HeaderMatcher> {
    let name = document.name.to_ascii_lowercase();
    if !is_valid_header_name(&name) {
        errors.push(
            format!("{at}.name"),
            format!("{:?} is not a valid header name", document.name),
        );
    } else if name.starts_with(IDENTITY_PREFIX) {
        errors.push(
            format!("{at}.name"),
            format!(
                "{IDENTITY_PREFIX}* headers are removed from client requests and cannot be matched"
            ),
        );
    }
    let given = [
        document.exact.is_some(),
        document.prefix.is_some(),
        document.regex.is_some(),
        document.present.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        errors.push(
            at,
            "give at most one of `exact`, `prefix`, `regex` or `present`",
        );
        return None;
    }
    let condition = if let Some(v) = &document.exact {
        HeaderCondition::Exact(v.as_bytes().to_vec())
    } else if let Some(v) = &document.prefix {
        HeaderCondition::Prefix(v.as_bytes().to_vec())
    } else if let Some(pattern) = &document.regex {
        HeaderCondition::Regex(compile_regex(pattern, &format!("{at}.regex"), errors)?)
    } else {
        HeaderCondition::Present(document.present.unwrap_or(true))
    };
    Some(HeaderMatcher { name, condition })
}

/// Anchored: a policy regex must match the whole value, as in Envoy's `safe_regex`.
fn compile_regex(pattern: &str, at: &str, errors: &mut Errors) -> Option<Regex> {
    match RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            let detail = e.to_string();
            // The regex crate's message spans several lines; keep the last, the reason.
            let reason = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .trim_start_matches("error: ");
            errors.push(at, format!("invalid regex {pattern:?}: {reason}"));
            None
        }
    }
}
