//! Policy `auth` sections → compiled providers, keys and route rules.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::api_keys::{ApiKey, parse_digest};
use super::jwks_source::{RemoteJwks, RemoteKeys, UnavailableAnswer, split_url};
use super::keys::{Algorithm, compile_jwks};
use super::route::{RouteAuth, Segment};
use super::token_cache::TokenCacheConfig;
use super::{ApiKeys, Authenticator, IdentityRules, JwtProvider, TokenSource};
use crate::headers::{IDENTITY_PREFIX, is_valid_header_name};
use crate::policy::compile::Errors;
use crate::policy::document::{
    AuthDocument, JwtProviderDocument, RemoteJwksDocument, RouteAuthDocument, TokenSourceDocument,
};

const DEFAULT_MAX_TOKEN_BYTES: u32 = 8192;
const DEFAULT_CLOCK_SKEW_SECONDS: u32 = 30;
/// The name routes use to accept API keys.
pub const API_KEY: &str = "api_key";

pub(crate) fn compile_auth(document: Option<&AuthDocument>, errors: &mut Errors) -> Authenticator {
    let Some(document) = document else {
        return Authenticator::default();
    };
    let mut providers: Vec<JwtProvider> = Vec::new();
    for (i, p) in document.jwt_providers.iter().enumerate() {
        let at = format!("auth.jwt_providers[{i}]");
        if p.name.is_empty() || p.name == API_KEY {
            errors.push(
                format!("{at}.name"),
                format!("must be non-empty and not {API_KEY:?}"),
            );
        } else if providers.iter().any(|q| q.name == p.name) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate provider name {:?}", p.name),
            );
        }
        if let Some(provider) = compile_provider(p, &at, errors) {
            providers.push(provider);
        }
    }
    let api_keys = document.api_keys.as_ref().map(|doc| {
        let at = "auth.api_keys";
        let header = doc
            .header
            .clone()
            .unwrap_or_else(|| "x-api-key".to_string())
            .to_ascii_lowercase();
        if !is_valid_header_name(&header) {
            errors.push(
                format!("{at}.header"),
                format!("{header:?} is not a valid header name"),
            );
        }
        let mut keys: Vec<ApiKey> = Vec::with_capacity(doc.keys.len());
        for (i, k) in doc.keys.iter().enumerate() {
            let Some(digest) = parse_digest(&k.sha256) else {
                errors.push(
                    format!("{at}.keys[{i}].sha256"),
                    "must be 64 lower-case hex characters (the SHA-256 of the key)",
                );
                continue;
            };
            if k.id.is_empty() || !crate::headers::is_valid_header_value(k.id.as_bytes()) {
                errors.push(
                    format!("{at}.keys[{i}].id"),
                    "must be a non-empty printable string",
                );
            } else if keys.iter().any(|o| o.id == k.id) {
                errors.push(
                    format!("{at}.keys[{i}].id"),
                    format!("duplicate key id {:?}", k.id),
                );
            }
            if keys.iter().any(|o| o.digest == digest) {
                errors.push(format!("{at}.keys[{i}].sha256"), "duplicate key digest");
            }
            if k.tenant.is_empty() || !crate::headers::is_valid_header_value(k.tenant.as_bytes()) {
                errors.push(
                    format!("{at}.keys[{i}].tenant"),
                    "must be a non-empty printable string",
                );
            }
            keys.push(ApiKey {
                id: k.id.clone(),
                digest,
                tenant: k.tenant.clone(),
                plan: k.plan.clone(),
            });
        }
        ApiKeys::new(header, doc.remove_key.unwrap_or(true), keys)
    });
    Authenticator::new(providers, api_keys, compile_token_cache(document, errors))
}

fn compile_token_cache(document: &AuthDocument, errors: &mut Errors) -> TokenCacheConfig {
    let mut config = TokenCacheConfig::default();
    if let Some(cache) = &document.token_cache {
        config.verified_entries = cache.verified_entries.unwrap_or(config.verified_entries);
        config.failed_entries = cache.failed_entries.unwrap_or(config.failed_entries);
        if let Some(ttl) = cache.failed_ttl_seconds {
            if ttl == 0 {
                errors.push(
                    "auth.token_cache.failed_ttl_seconds",
                    "must be at least 1 (set failed_entries: 0 to turn the table off)",
                );
            }
            config.failed_ttl_ms = u64::from(ttl) * 1000;
        }
    }
    if let Some(budget) = &document.client_budget {
        config.budget_per_minute = budget
            .failed_verifications_per_minute
            .unwrap_or(config.budget_per_minute);
        if let Some(clients) = budget.clients {
            if clients == 0 {
                errors.push(
                    "auth.client_budget.clients",
                    "must be at least 1 (set failed_verifications_per_minute: 0 to turn the budget off)",
                );
            }
            config.budget_clients = clients;
        }
    }
    config
}

const DEFAULT_TIMEOUT_MS: u32 = 5_000;
const DEFAULT_REFRESH_SECONDS: u32 = 300;
const DEFAULT_MIN_REFRESH_SECONDS: u32 = 30;
const DEFAULT_MAX_REFRESH_SECONDS: u32 = 86_400;
const DEFAULT_MAX_STALE_SECONDS: u32 = 3_600;
const DEFAULT_UNKNOWN_KID_SECONDS: u32 = 30;
const DEFAULT_RETRY_AFTER_SECONDS: u32 = 5;

fn fingerprint(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

fn compile_remote(
    p: &JwtProviderDocument,
    r: &RemoteJwksDocument,
    at: &str,
    errors: &mut Errors,
) -> RemoteJwks {
    let at = format!("{at}.jwks.remote");
    if r.cluster.is_empty() {
        errors.push(format!("{at}.cluster"), "must name an Envoy cluster");
    }
    let issuer_url = split_url(&p.issuer);
    let discovery_path = if r.discovery {
        match &issuer_url {
            Some((_, path)) => {
                let base = path.split('?').next().unwrap_or("").trim_end_matches('/');
                Some(format!("{base}/.well-known/openid-configuration"))
            }
            None => {
                errors.push(
                    format!("{at}.discovery"),
                    "needs an http(s) issuer URL to find /.well-known/openid-configuration",
                );
                None
            }
        }
    } else {
        None
    };
    match (&r.path, r.discovery) {
        (Some(_), true) => errors.push(
            format!("{at}.path"),
            "give `path` or `discovery: true`, not both",
        ),
        (None, false) => errors.push(
            format!("{at}.path"),
            "give the JWKS path, or `discovery: true` to find it",
        ),
        (Some(path), false) if !valid_path(path) => errors.push(
            format!("{at}.path"),
            format!("{path:?} must start with '/' and contain no spaces or control characters"),
        ),
        _ => {}
    }
    let authority = match (&r.authority, &issuer_url) {
        (Some(a), _) => {
            if a.is_empty() || !a.bytes().all(|b| b.is_ascii_graphic()) {
                errors.push(format!("{at}.authority"), "must be a host name");
            }
            a.clone()
        }
        (None, Some((host, _))) => host.clone(),
        (None, None) => r.cluster.clone(),
    };
    let timeout_ms = r.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=60_000).contains(&timeout_ms) {
        errors.push(format!("{at}.timeout_ms"), "must be between 1 and 60000");
    }
    let refresh = r.refresh_seconds.unwrap_or(DEFAULT_REFRESH_SECONDS);
    let min = r
        .min_refresh_seconds
        .unwrap_or(DEFAULT_MIN_REFRESH_SECONDS.min(refresh));
    let max = r
        .max_refresh_seconds
        .unwrap_or(DEFAULT_MAX_REFRESH_SECONDS.max(refresh));
    if refresh == 0 {
        errors.push(format!("{at}.refresh_seconds"), "must be at least 1");
    }
    if min == 0 {
        errors.push(format!("{at}.min_refresh_seconds"), "must be at least 1");
    }
    if min > refresh || refresh > max {
        errors.push(
            format!("{at}.refresh_seconds"),
            format!("must lie within min_refresh_seconds ({min}) and max_refresh_seconds ({max})"),
        );
    }
    let unavailable = r.keys_unavailable.clone().unwrap_or_default();
    let status = unavailable.status.unwrap_or(503);
    if status != 401 && !(500..=599).contains(&status) {
        errors.push(
            format!("{at}.keys_unavailable.status"),
            format!("{status} is not 401 or a 5xx status"),
        );
    }
    let settings = format!("{}|{:?}|{r:?}", p.issuer, p.algorithms);
    RemoteJwks {
        cluster: r.cluster.clone(),
        path: r.path.clone(),
        authority,
        discovery_path,
        timeout_ms: u64::from(timeout_ms),
        refresh_ms: u64::from(refresh) * 1000,
        min_refresh_ms: u64::from(min) * 1000,
        max_refresh_ms: u64::from(max) * 1000,
        max_stale_ms: u64::from(r.max_stale_seconds.unwrap_or(DEFAULT_MAX_STALE_SECONDS)) * 1000,
        unknown_kid_interval_ms: u64::from(
            r.unknown_kid_refetch_seconds
                .unwrap_or(DEFAULT_UNKNOWN_KID_SECONDS),
        ) * 1000,
        unavailable: UnavailableAnswer {
            status,
            retry_after_seconds: unavailable
                .retry_after_seconds
                .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS),
        },
        key_prefix: format!("tollgate/jwks/{}/{}", p.name, fingerprint(&settings)),
    }
}

fn compile_provider(p: &JwtProviderDocument, at: &str, errors: &mut Errors) -> Option<JwtProvider> {
    if p.issuer.is_empty() {
        errors.push(format!("{at}.issuer"), "must not be empty");
    }
    if p.audiences.as_ref().is_some_and(Vec::is_empty) {
        errors.push(
            format!("{at}.audiences"),
            "must not be empty (omit it to not check `aud`)",
        );
    }
    let mut algorithms = Vec::new();
    if p.algorithms.is_empty() {
        errors.push(format!("{at}.algorithms"), "list at least one algorithm");
    }
    for (i, name) in p.algorithms.iter().enumerate() {
        match Algorithm::from_name(name) {
            Some(a) => algorithms.push(a),
            None => errors.push(
                format!("{at}.algorithms[{i}]"),
                format!("{name:?} is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
            ),
        }
    }
    let (keys, remote) = match (&p.jwks.inline, &p.jwks.remote) {
        (Some(inline), None) => {
            let keys = match compile_jwks(inline, &algorithms) {
                Ok(keys) => {
                    if keys.is_empty() && !algorithms.is_empty() {
                        errors.push(
                            format!("{at}.jwks.inline"),
                            "no key fits the provider's algorithms",
                        );
                    }
                    keys
                }
                Err(problems) => {
                    for (i, message) in problems {
                        errors.push(format!("{at}.jwks.inline.keys[{i}]"), message);
                    }
                    Vec::new()
                }
            };
            (keys, None)
        }
        (None, Some(remote)) => {
            let config = compile_remote(p, remote, at, errors);
            (
                Vec::new(),
                Some(Rc::new(RemoteKeys::new(config, algorithms.clone()))),
            )
        }
        _ => {
            errors.push(
                format!("{at}.jwks"),
                "give exactly one of `inline` or `remote`",
            );
            (Vec::new(), None)
        }
    };
    let sources = match &p.from {
        None => vec![TokenSource::Header {
            name: "authorization".to_string(),
            prefix: Some("Bearer ".to_string()),
        }],
        Some(list) if list.is_empty() => {
            errors.push(
                format!("{at}.from"),
                "must not be empty (omit it for `Authorization: Bearer`)",
            );
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| compile_source(s, &format!("{at}.from[{i}]"), errors))
            .collect(),
    };
    let mut claims_to_headers = Vec::new();
    for (i, c) in p.claims_to_headers.iter().enumerate() {
        let header = c.header.to_ascii_lowercase();
        if !header.starts_with(IDENTITY_PREFIX) || !is_valid_header_name(&header) {
            errors.push(
                format!("{at}.claims_to_headers[{i}].header"),
                format!("{:?} must be a header name starting with {IDENTITY_PREFIX} (clients cannot forge those)", c.header),
            );
        } else if crate::headers::RESERVED.contains(&header.as_str()) {
            errors.push(
                format!("{at}.claims_to_headers[{i}].header"),
                format!("{header} is set by Tollgate itself"),
            );
        }
        if c.claim.is_empty() {
            errors.push(
                format!("{at}.claims_to_headers[{i}].claim"),
                "must not be empty",
            );
        }
        claims_to_headers.push((c.claim.clone(), header));
    }
    let identity = p.identity.clone().unwrap_or_default();
    if identity.tenant_claim.is_some() && identity.tenant_value.is_some() {
        errors.push(
            format!("{at}.identity"),
            "give `tenant_claim` or `tenant_value`, not both",
        );
    }
    Some(JwtProvider {
        name: p.name.clone(),
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        algorithms,
        clock_skew_seconds: u64::from(p.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS)),
        max_age_seconds: p.max_age_seconds.map(u64::from),
        required_claims: p.required_claims.clone(),
        sources,
        remove_token: p.remove_token,
        max_token_bytes: p.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES) as usize,
        keys,
        remote,
        tag: fingerprint(&format!("{p:?}")),
        claims_to_headers,
        identity: IdentityRules {
            tenant_claim: identity.tenant_claim,
            tenant_value: identity.tenant_value,
            user_claim: identity.user_claim.unwrap_or_else(|| "sub".to_string()),
            plan_claim: identity.plan_claim,
        },
    })
}

fn compile_source(s: &TokenSourceDocument, at: &str, errors: &mut Errors) -> Option<TokenSource> {
    let given = [s.header.is_some(), s.query.is_some(), s.cookie.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        errors.push(at, "give exactly one of `header`, `query` or `cookie`");
        return None;
    }
    if s.prefix.is_some() && s.header.is_none() {
        errors.push(format!("{at}.prefix"), "only applies to `header`");
    }
    if let Some(h) = &s.header {
        let name = h.to_ascii_lowercase();
        if !is_valid_header_name(&name) {
            errors.push(
                format!("{at}.header"),
                format!("{h:?} is not a valid header name"),
            );
        }
        return Some(TokenSource::Header {
            name,
            prefix: s.prefix.clone(),
        });
    }
    if let Some(q) = &s.query {
        return Some(TokenSource::Query(q.clone()));
    }
    s.cookie.clone().map(TokenSource::Cookie)
}

pub(crate) fn compile_route_auth(
    document: &RouteAuthDocument,
    authenticator: &Authenticator,
    at: &str,
    errors: &mut Errors,
) -> RouteAuth {
    let mut route = RouteAuth {
        optional: document.optional,
        ..RouteAuth::default()
    };
    if document.accept.is_empty() {
        errors.push(
            format!("{at}.accept"),
            "list at least one provider name or \"api_key\"",
        );
    }
    for (i, name) in document.accept.iter().enumerate() {
        if name == API_KEY {
            if authenticator.api_keys.is_none() {
                errors.push(
                    format!("{at}.accept[{i}]"),
                    "\"api_key\" needs auth.api_keys",
                );
            }
            route.accept_api_key = true;
        } else if let Some(index) = authenticator.providers.iter().position(|p| &p.name == name) {
            route.accept_providers.push(index);
        } else {
            errors.push(
                format!("{at}.accept[{i}]"),
                format!("no JWT provider named {name:?} in auth.jwt_providers"),
            );
        }
    }
    let rule = |r: &Option<crate::policy::document::ClaimSetRuleDocument>,
                default: &str,
                field: &str,
                errors: &mut Errors| {
        r.as_ref().map(|r| {
            if r.values.is_empty() {
                errors.push(format!("{at}.{field}.values"), "must not be empty");
            }
            (
                r.claim.clone().unwrap_or_else(|| default.to_string()),
                r.values.clone(),
            )
        })
    };
    route.roles = rule(&document.roles, "roles", "roles", errors);
    route.scopes = rule(&document.scopes, "scope", "scopes", errors);
    if let Some(claims) = &document.claims {
        for (name, values) in claims {
            if values.is_empty() {
                errors.push(
                    format!("{at}.claims.{name}"),
                    "list at least one allowed value",
                );
            }
            route.claims.push((name.clone(), values.clone()));
        }
    }
    if let Some(template) = &document.bind_path {
        let field = format!("{at}.bind_path");
        if !template.starts_with('/') {
            errors.push(&field, "must start with '/'");
        }
        let segments: Vec<Segment> = template
            .split('/')
            .skip(1)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Claim(name.to_string()),
                    None => Segment::Literal(s.to_string()),
                },
            )
            .collect();
        if !segments
            .iter()
            .any(|s| matches!(s, Segment::Claim(n) if !n.is_empty()))
        {
            errors.push(
                &field,
                "must bind at least one segment to a claim, e.g. /v1/refunds/{sub}",
            );
        }
        route.bind_path = Some(segments);
    }
    route
}
