//! Policy `auth` sections → compiled providers, keys and route rules.

use super::api_keys::{ApiKey, parse_digest};
use super::keys::{Algorithm, compile_jwks};
use super::route::{RouteAuth, Segment};
use super::{ApiKeys, Authenticator, IdentityRules, JwtProvider, TokenSource};
use crate::headers::{IDENTITY_PREFIX, is_valid_header_name};
use crate::policy::compile::Errors;
use crate::policy::document::{
    AuthDocument, JwtProviderDocument, RouteAuthDocument, TokenSourceDocument,
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
    Authenticator::new(providers, api_keys)
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
    let keys = match compile_jwks(&p.jwks.inline, &algorithms) {
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
