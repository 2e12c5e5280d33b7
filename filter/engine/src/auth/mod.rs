//! Authentication (JWT, API keys) and authorisation (roles, scopes, claim values, path
//! binding). Compiled from the policy once; per request it reads headers and returns an
//! identity or a reason to refuse. Reasons go to logs and metrics, never to the client.

mod api_keys;
pub(crate) mod compile;
pub mod jwks_source;
pub mod keys;
mod route;
pub mod token;
pub mod token_cache;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jwt_simple::prelude::{Duration as JwtDuration, HashSet, UnixTimeStamp, VerificationOptions};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use api_keys::ApiKeys;
pub(crate) use compile::compile_auth;
pub use route::{RouteAuth, bind_path_conflict};

use jwks_source::{KeySources, RemoteKeys, UnavailableAnswer};
use keys::{Algorithm, KeyEntry};
use token::{UnverifiedToken, claim, claim_as_header_value, numeric_date, parse_unverified};
use token_cache::{SharedVerified, TokenCacheConfig, token_hash};

use crate::metrics::Counter;
use crate::request::RequestHead;
use crate::shared::SharedData;

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
    /// The token failed its signature check recently (remembered node-wide).
    RecentlyFailed,
    /// The client spent its budget of failed signature checks for this minute.
    ClientBudgetSpent,
    /// The issuer's keys are unavailable (answered per the provider's settings).
    KeysUnavailable,
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
            Self::RecentlyFailed => "recently_failed",
            Self::ClientBudgetSpent => "client_budget_spent",
            Self::KeysUnavailable => "keys_unavailable",
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
    /// Inline keys (empty for a remote JWKS).
    pub keys: Vec<KeyEntry>,
    /// A remote JWKS, fetched by the root context and shared node-wide.
    pub remote: Option<Rc<RemoteKeys>>,
    /// Fingerprint of the provider's settings: node-wide cache entries carry it.
    pub tag: String,
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

/// Verified tokens are remembered by the exact token text until they expire, with the
/// identity already built: a repeat costs one hash-map lookup (SipHash with per-VM random
/// keys, then a byte comparison, so no collision can stand in for a token) — no SHA-256,
/// no claim copying. Bounded in entries and in bytes: when full, expired entries go
/// first, then everything (a flood of distinct valid tokens only costs re-verification).
#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<Box<str>, CachedToken>,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct CachedToken {
    provider: usize,
    expires_at: u64,
    identity: Rc<Identity>,
}

const TOKEN_CACHE_CAPACITY: usize = 4096;
/// The token text plus its decoded claims (smaller than the token) per entry.
const TOKEN_CACHE_BYTES: usize = 8 << 20;

impl TokenCache {
    fn entry_bytes(token: &str) -> usize {
        2 * token.len() + 256
    }

    fn get(&self, token: &str, now_s: u64) -> Option<&CachedToken> {
        self.entries.get(token).filter(|e| now_s < e.expires_at)
    }

    fn insert(&mut self, token: &str, entry: CachedToken, now_s: u64) {
        let size = Self::entry_bytes(token);
        if self.entries.len() >= TOKEN_CACHE_CAPACITY || self.bytes + size > TOKEN_CACHE_BYTES {
            self.entries.retain(|_, e| now_s < e.expires_at);
            self.bytes = self.entries.keys().map(|t| Self::entry_bytes(t)).sum();
            if self.entries.len() >= TOKEN_CACHE_CAPACITY || self.bytes + size > TOKEN_CACHE_BYTES {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        if self.entries.insert(token.into(), entry).is_none() {
            self.bytes += size;
        }
    }
}

/// The compiled `auth` section of a policy.
#[derive(Debug, Default)]
pub struct Authenticator {
    pub providers: Vec<JwtProvider>,
    pub api_keys: Option<ApiKeys>,
    /// Remote key sets, driven by the adapter's root context.
    pub key_sources: KeySources,
    /// Node-wide token tables and the per-client failure budget.
    pub token_cache: TokenCacheConfig,
    cache: RefCell<TokenCache>,
}

/// The result of authenticating one request for one route.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthOutcome {
    /// Authenticated; remove these credentials before forwarding.
    Authenticated(Rc<Identity>, Vec<Removal>),
    /// No credentials, and the route allows that.
    Anonymous,
    /// 401.
    Unauthenticated(AuthReason),
    /// The token's issuer has no usable keys (never fetched, or stale beyond its bound).
    KeysUnavailable(UnavailableAnswer),
}

/// Per-request inputs authentication needs beyond the request itself.
pub struct AuthInput<'a> {
    /// Host time (Unix ms).
    pub now_ms: u64,
    /// The client's IP, for the failed-verification budget.
    pub client: Option<&'a str>,
    pub store: &'a dyn SharedData,
}

impl Authenticator {
    pub(crate) fn new(
        providers: Vec<JwtProvider>,
        api_keys: Option<ApiKeys>,
        token_cache: TokenCacheConfig,
    ) -> Self {
        let key_sources = KeySources::new(
            providers
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.remote.clone().map(|r| (i, p.issuer.clone(), r)))
                .collect(),
        );
        Self {
            providers,
            api_keys,
            key_sources,
            token_cache,
            cache: RefCell::default(),
        }
    }

    /// Finds and checks the credentials a route accepts. Counters for the decision are
    /// appended to `counters`.
    pub fn authenticate(
        &self,
        route: &RouteAuth,
        request: &RequestHead,
        input: &AuthInput<'_>,
        counters: &mut Vec<(Counter, u64)>,
    ) -> AuthOutcome {
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
                    AuthOutcome::Authenticated(Rc::new(identity), removal.into_iter().collect())
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
                    return self.verify_token(route, &token, removal, input, counters);
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
        input: &AuthInput<'_>,
        counters: &mut Vec<(Counter, u64)>,
    ) -> AuthOutcome {
        let (now_ms, store) = (input.now_ms, input.store);
        let now_s = now_ms / 1000;
        if let Some(hit) = self.cache.borrow().get(token, now_s)
            && route.accept_providers.contains(&hit.provider)
            && let Some(provider) = self.providers.get(hit.provider)
        {
            return authenticated(provider, Rc::clone(&hit.identity), removal);
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
        // The node-wide tables need a digest an attacker cannot collide.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let hash = token_hash(&digest);
        let config = &self.token_cache;
        let remember = |valid_until_s: u64, claims: Map<String, Value>| {
            let identity = Rc::new(build_identity(provider, claims));
            self.cache.borrow_mut().insert(
                token,
                CachedToken {
                    provider: index,
                    expires_at: valid_until_s,
                    identity: Rc::clone(&identity),
                },
                now_s,
            );
            identity
        };
        // Verified by another worker (or earlier on this one): no crypto.
        if let Some(hit) = token_cache::get_verified(store, config, &hash, now_s)
            && hit.provider_tag == provider.tag
        {
            counters.push((Counter::SharedTokenCacheHits, 1));
            let identity = remember(hit.valid_until_s, unverified.claims);
            return authenticated(provider, identity, removal);
        }
        let (algorithm, valid_until_s) = match provider.precheck(&unverified, now_s) {
            Ok(v) => v,
            Err(reason) => return AuthOutcome::Unauthenticated(reason),
        };
        if token_cache::recently_failed(store, config, &hash, now_ms) {
            counters.push((Counter::FailedTokenHits, 1));
            return AuthOutcome::Unauthenticated(AuthReason::RecentlyFailed);
        }
        let mut keys = match provider.key_set(now_ms, store) {
            Ok(keys) => keys,
            Err(answer) => {
                counters.push((Counter::KeysUnavailable, 1));
                return AuthOutcome::KeysUnavailable(answer);
            }
        };
        if unverified.kid.is_some()
            && provider
                .candidates(&keys, &unverified, algorithm)
                .is_empty()
            && let Some(remote) = &provider.remote
            && remote.unknown_kid(now_ms, store, counters)
            && let Ok(newer) = remote.keys(now_ms, store)
        {
            // Another worker fetched a newer set already: use it at once.
            keys = newer;
        }
        let candidates = provider.candidates(&keys, &unverified, algorithm);
        if candidates.is_empty() {
            return AuthOutcome::Unauthenticated(if unverified.kid.is_some() {
                AuthReason::UnknownKeyId
            } else {
                AuthReason::BadSignature
            });
        }
        if let Some(client) = input.client
            && token_cache::budget_spent(store, config, client, now_ms)
        {
            counters.push((Counter::ClientBudgetRefusals, 1));
            return AuthOutcome::Unauthenticated(AuthReason::ClientBudgetSpent);
        }
        counters.push((Counter::SignatureChecks, 1));
        if provider.verify_signature(token, &candidates, now_s) {
            let identity = remember(valid_until_s, unverified.claims);
            token_cache::put_verified(
                store,
                config,
                &hash,
                &SharedVerified {
                    provider_tag: provider.tag.clone(),
                    valid_until_s,
                },
                now_s,
            );
            authenticated(provider, identity, removal)
        } else {
            counters.push((Counter::BadSignatures, 1));
            token_cache::remember_failed(store, config, &hash, now_ms);
            if let Some(client) = input.client {
                token_cache::spend_budget(store, config, client, now_ms);
            }
            AuthOutcome::Unauthenticated(AuthReason::BadSignature)
        }
    }
}

fn authenticated(provider: &JwtProvider, identity: Rc<Identity>, removal: Removal) -> AuthOutcome {
    let removals = if provider.remove_token {
        vec![removal]
    } else {
        Vec::new()
    };
    AuthOutcome::Authenticated(identity, removals)
}

fn build_identity(provider: &JwtProvider, claims: Map<String, Value>) -> Identity {
    let text = |path: &str| claim(&claims, path).and_then(claim_as_header_value);
    Identity {
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
    }
}

impl JwtProvider {
    /// Checks on the unverified token that need no key: algorithm, signature present,
    /// audience, times, required claims. Returns the algorithm and how long a successful
    /// verification stays valid (Unix seconds: `exp`, or `iat + max_age` if sooner).
    fn precheck(
        &self,
        unverified: &UnverifiedToken,
        now_s: u64,
    ) -> Result<(Algorithm, u64), AuthReason> {
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
        let mut valid_until = exp;
        if let Some(max_age) = self.max_age_seconds {
            let iat = iat.ok_or(AuthReason::MissingClaim)?;
            if now_s.saturating_sub(iat) > max_age.saturating_add(skew) {
                return Err(AuthReason::TooOld);
            }
            valid_until = valid_until.min(iat.saturating_add(max_age));
        }
        if self
            .required_claims
            .iter()
            .any(|c| claim(claims, c).is_none())
        {
            return Err(AuthReason::MissingClaim);
        }
        Ok((algorithm, valid_until))
    }

    /// The keys to verify with now: inline, or the remote set (possibly stale within its
    /// bound).
    fn key_set(
        &self,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Result<Rc<Vec<KeyEntry>>, UnavailableAnswer> {
        match &self.remote {
            None => Ok(Rc::new(Vec::new())),
            Some(remote) => remote.keys(now_ms, store).map_err(|e| e.0),
        }
    }

    /// Keys of the token's algorithm and `kid` (inline keys first, then remote ones).
    fn candidates<'a>(
        &'a self,
        remote: &'a [KeyEntry],
        unverified: &UnverifiedToken,
        algorithm: Algorithm,
    ) -> Vec<&'a KeyEntry> {
        self.keys
            .iter()
            .chain(remote.iter())
            .filter(|k| k.algorithm == algorithm)
            .filter(|k| match (&unverified.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect()
    }

    /// The signature check, with jwt-simple's rules on issuer, audience and times too.
    fn verify_signature(&self, token: &str, candidates: &[&KeyEntry], now_s: u64) -> bool {
        let skew = self.clock_skew_seconds;
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
        candidates
            .iter()
            .take(4)
            .any(|k| k.key.verify(token, options.clone()))
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
