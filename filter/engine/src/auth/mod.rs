//! Authentication (JWT, API keys) and authorisation (roles, scopes, claim values, path
//! binding). Compiled from the policy once; per request it reads headers and returns an
//! identity or a reason to refuse. Reasons go to logs and metrics, never to the client.

mod api_keys;
pub(crate) mod compile;
pub mod keys;
mod route;
pub mod token;

use std::cell::RefCell;
use std::collections::HashMap;

use jwt_simple::prelude::{Duration as JwtDuration, HashSet, UnixTimeStamp, VerificationOptions};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use api_keys::ApiKeys;
pub(crate) use compile::compile_auth;
pub use route::{RouteAuth, bind_path_conflict};

use keys::{Algorithm, KeyEntry};
use token::{UnverifiedToken, claim, claim_as_header_value, numeric_date, parse_unverified};

use crate::request::RequestHead;

/// Why a request was not authenticated or not authorised. For logs and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthReason {
    NoCredentials,
    TokenTooLarge,
    Malformed,
    AlgorithmNotAllowed,
    EmbeddedKey,
    CriticalHeader,
    UnknownIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    TooOld,
    MissingClaim,
    UnknownKeyId,
    BadSignature,
    UnknownApiKey,
    MissingRole,
    MissingScope,
    ClaimNotAllowed,
    PathNotBound,
}

impl AuthReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::TokenTooLarge => "token_too_large",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::EmbeddedKey => "embedded_key",
            Self::CriticalHeader => "critical_header",
            Self::UnknownIssuer => "unknown_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::TooOld => "too_old",
            Self::MissingClaim => "missing_claim",
            Self::UnknownKeyId => "unknown_key_id",
            Self::BadSignature => "bad_signature",
            Self::UnknownApiKey => "unknown_api_key",
            Self::MissingRole => "missing_role",
            Self::MissingScope => "missing_scope",
            Self::ClaimNotAllowed => "claim_not_allowed",
            Self::PathNotBound => "path_not_bound",
        }
    }
}

/// Who the caller is, once authenticated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// `jwt:<provider>` or `api_key`.
    pub method: String,
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub plan: Option<String>,
    pub key_id: Option<String>,
    /// Verified JWT claims (empty for API keys).
    pub claims: Map<String, Value>,
    /// Headers for the origin from `claims_to_headers`.
    pub claim_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    Header {
        name: String,
        prefix: Option<String>,
    },
    Query(String),
    Cookie(String),
}

#[derive(Debug, Clone, Default)]
pub struct IdentityRules {
    pub tenant_claim: Option<String>,
    pub tenant_value: Option<String>,
    pub user_claim: String,
    pub plan_claim: Option<String>,
}

#[derive(Debug)]
pub struct JwtProvider {
    pub name: String,
    pub issuer: String,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_seconds: u64,
    pub max_age_seconds: Option<u64>,
    pub required_claims: Vec<String>,
    pub sources: Vec<TokenSource>,
    pub remove_token: bool,
    pub max_token_bytes: usize,
    pub keys: Vec<KeyEntry>,
    pub claims_to_headers: Vec<(String, String)>,
    pub identity: IdentityRules,
}

/// A credential found on the request, and how to remove it before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Header(String),
    QueryParam(String),
    Cookie(String),
}

/// Verified tokens are remembered by SHA-256 until they expire, so each distinct token
/// costs one signature check per VM. Bounded: when full, expired entries go first, then
/// everything (a flood of distinct valid tokens only costs re-verification).
#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<[u8; 32], CachedToken>,
}

#[derive(Debug, Clone)]
struct CachedToken {
    provider: usize,
    expires_at: u64,
    claims: Map<String, Value>,
}

const TOKEN_CACHE_CAPACITY: usize = 4096;

impl TokenCache {
    fn get(&self, digest: &[u8; 32], now_s: u64) -> Option<&CachedToken> {
        self.entries.get(digest).filter(|e| now_s < e.expires_at)
    }

    fn insert(&mut self, digest: [u8; 32], entry: CachedToken, now_s: u64) {
        if self.entries.len() >= TOKEN_CACHE_CAPACITY {
            self.entries.retain(|_, e| now_s < e.expires_at);
            if self.entries.len() >= TOKEN_CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(digest, entry);
    }
}

/// The compiled `auth` section of a policy.
#[derive(Debug, Default)]
pub struct Authenticator {
    pub providers: Vec<JwtProvider>,
    pub api_keys: Option<ApiKeys>,
    cache: RefCell<TokenCache>,
}

/// The result of authenticating one request for one route.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthOutcome {
    /// Authenticated; remove these credentials before forwarding.
    Authenticated(Box<Identity>, Vec<Removal>),
    /// No credentials, and the route allows that.
    Anonymous,
    /// 401.
    Unauthenticated(AuthReason),
}

impl Authenticator {
    pub(crate) fn new(providers: Vec<JwtProvider>, api_keys: Option<ApiKeys>) -> Self {
        Self {
            providers,
            api_keys,
            cache: RefCell::default(),
        }
    }

    /// Finds and checks the credentials a route accepts. `now_ms` is host time.
    pub fn authenticate(
        &self,
        route: &RouteAuth,
        request: &RequestHead,
        now_ms: u64,
    ) -> AuthOutcome {
        let now_s = now_ms / 1000;
        // API key first: it is a cheap hash lookup.
        if route.accept_api_key
            && let Some(api_keys) = &self.api_keys
            && let Some(presented) = request.header(&api_keys.header)
        {
            return match api_keys.lookup(presented) {
                Some(identity) => {
                    let removal = api_keys
                        .remove_key
                        .then(|| Removal::Header(api_keys.header.clone()));
                    AuthOutcome::Authenticated(Box::new(identity), removal.into_iter().collect())
                }
                None => AuthOutcome::Unauthenticated(AuthReason::UnknownApiKey),
            };
        }
        // JWT: the first accepted provider source that carries a token decides.
        for &provider_index in &route.accept_providers {
            let Some(provider) = self.providers.get(provider_index) else {
                continue;
            };
            for source in &provider.sources {
                if let Some((token, removal)) = extract(source, request) {
                    return self.verify_token(route, &token, removal, now_s);
                }
            }
        }
        if route.optional {
            AuthOutcome::Anonymous
        } else {
            AuthOutcome::Unauthenticated(AuthReason::NoCredentials)
        }
    }

    fn verify_token(
        &self,
        route: &RouteAuth,
        token: &str,
        removal: Removal,
        now_s: u64,
    ) -> AuthOutcome {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.borrow().get(&digest, now_s)
            && route.accept_providers.contains(&hit.provider)
            && let Some(provider) = self.providers.get(hit.provider)
        {
            return authenticated(provider, hit.claims.clone(), removal);
        }
        // Many providers may read the same header: the (unverified) issuer picks one.
        let max_bytes = route
            .accept_providers
            .iter()
            .filter_map(|&i| self.providers.get(i))
            .map(|p| p.max_token_bytes)
            .max()
            .unwrap_or(0);
        let unverified = match parse_unverified(token, max_bytes) {
            Ok(t) => t,
            Err(reason) => return AuthOutcome::Unauthenticated(reason),
        };
        let issuer = unverified.claims.get("iss").and_then(Value::as_str);
        let Some((index, provider)) = route
            .accept_providers
            .iter()
            .filter_map(|&i| self.providers.get(i).map(|p| (i, p)))
            .find(|(_, p)| Some(p.issuer.as_str()) == issuer)
        else {
            return AuthOutcome::Unauthenticated(AuthReason::UnknownIssuer);
        };
        if token.len() > provider.max_token_bytes {
            return AuthOutcome::Unauthenticated(AuthReason::TokenTooLarge);
        }
        match provider.verify(token, &unverified, now_s) {
            Ok(expires_at) => {
                self.cache.borrow_mut().insert(
                    digest,
                    CachedToken {
                        provider: index,
                        expires_at,
                        claims: unverified.claims.clone(),
                    },
                    now_s,
                );
                authenticated(provider, unverified.claims, removal)
            }
            Err(reason) => AuthOutcome::Unauthenticated(reason),
        }
    }
}

fn authenticated(
    provider: &JwtProvider,
    claims: Map<String, Value>,
    removal: Removal,
) -> AuthOutcome {
    let text = |path: &str| claim(&claims, path).and_then(claim_as_header_value);
    let identity = Identity {
        method: format!("jwt:{}", provider.name),
        tenant: provider
            .identity
            .tenant_value
            .clone()
            .or_else(|| provider.identity.tenant_claim.as_deref().and_then(text)),
        user: text(&provider.identity.user_claim),
        plan: provider.identity.plan_claim.as_deref().and_then(text),
        key_id: None,
        claim_headers: provider
            .claims_to_headers
            .iter()
            .filter_map(|(path, header)| text(path).map(|v| (header.clone(), v)))
            .collect(),
        claims,
    };
    let removals = if provider.remove_token {
        vec![removal]
    } else {
        Vec::new()
    };
    AuthOutcome::Authenticated(Box::new(identity), removals)
}

impl JwtProvider {
    /// Cheap checks on the unverified token, then the signature. Returns `exp`.
    fn verify(
        &self,
        token: &str,
        unverified: &UnverifiedToken,
        now_s: u64,
    ) -> Result<u64, AuthReason> {
        let algorithm = Algorithm::from_name(&unverified.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(AuthReason::AlgorithmNotAllowed)?;
        if !unverified.has_signature {
            return Err(AuthReason::BadSignature);
        }
        let claims = &unverified.claims;
        if let Some(audiences) = &self.audiences {
            let aud = claims
                .get("aud")
                .map(token::claim_as_set)
                .unwrap_or_default();
            if !aud.iter().any(|a| audiences.iter().any(|x| x == a)) {
                return Err(AuthReason::WrongAudience);
            }
        }
        let date = |name| numeric_date(claims, name).ok_or(AuthReason::Malformed);
        let skew = self.clock_skew_seconds;
        let exp = date("exp")?.ok_or(AuthReason::MissingClaim)?;
        if now_s > exp.saturating_add(skew) {
            return Err(AuthReason::Expired);
        }
        if let Some(nbf) = date("nbf")?
            && nbf > now_s.saturating_add(skew)
        {
            return Err(AuthReason::NotYetValid);
        }
        let iat = date("iat")?;
        if let Some(iat) = iat
            && iat > now_s.saturating_add(skew)
        {
            return Err(AuthReason::NotYetValid);
        }
        if let Some(max_age) = self.max_age_seconds {
            let iat = iat.ok_or(AuthReason::MissingClaim)?;
            if now_s.saturating_sub(iat) > max_age.saturating_add(skew) {
                return Err(AuthReason::TooOld);
            }
        }
        if self
            .required_claims
            .iter()
            .any(|c| claim(claims, c).is_none())
        {
            return Err(AuthReason::MissingClaim);
        }
        let candidates: Vec<&KeyEntry> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == algorithm)
            .filter(|k| match (&unverified.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(if unverified.kid.is_some() {
                AuthReason::UnknownKeyId
            } else {
                AuthReason::BadSignature
            });
        }
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([self.issuer.clone()])),
            allowed_audiences: self.audiences.as_ref().map(|a| a.iter().cloned().collect()),
            time_tolerance: Some(JwtDuration::from_secs(skew)),
            max_validity: self.max_age_seconds.map(JwtDuration::from_secs),
            max_token_length: Some(self.max_token_bytes),
            // Host time, not the wall clock: replays and tests run on a virtual clock.
            artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
            ..VerificationOptions::default()
        };
        // Without a kid several keys may fit; a bounded number are tried.
        if candidates
            .iter()
            .take(4)
            .any(|k| k.key.verify(token, options.clone()))
        {
            Ok(exp)
        } else {
            Err(AuthReason::BadSignature)
        }
    }
}

fn extract(source: &TokenSource, request: &RequestHead) -> Option<(String, Removal)> {
    match source {
        TokenSource::Header { name, prefix } => {
            let value = std::str::from_utf8(request.header(name)?).ok()?.trim();
            let token = match prefix {
                Some(p) => {
                    let head = value.get(..p.len())?;
                    if !head.eq_ignore_ascii_case(p) {
                        return None;
                    }
                    value.get(p.len()..)?.trim()
                }
                None => value,
            };
            (!token.is_empty()).then(|| (token.to_string(), Removal::Header(name.clone())))
        }
        TokenSource::Query(param) => {
            let query = request.path().split_once('?')?.1;
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k == param)
                .filter(|(_, v)| !v.is_empty())
                .map(|(_, v)| (v.to_string(), Removal::QueryParam(param.clone())))
        }
        TokenSource::Cookie(name) => {
            let cookies = std::str::from_utf8(request.header("cookie")?).ok()?;
            cookies
                .split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .filter(|(_, v)| !v.is_empty())
                .map(|(_, v)| (v.to_string(), Removal::Cookie(name.clone())))
        }
    }
}
