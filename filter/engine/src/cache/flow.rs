//! The cache on the request path: what the request-header phase does with a cached
//! route (answer from the cache, or forward and remember what to store), and what the
//! response phases do (store, or stand in with a stale copy when the origin fails).

use super::compile::RouteCache;
use super::{CacheStore, EntryMeta, Headers, Hit, Lookup, build_key};
use crate::auth::Identity;
use crate::decision::LocalReply;
use crate::request::RequestHead;
use crate::shared::SharedData;

/// Tenant of entries on routes that do not authenticate (shared by every caller).
const PUBLIC_TENANT: &str = "-";

/// Marks an answer from a stale entry, so a front end can show a banner.
pub const STALE_HEADER: &str = "x-tollgate-stale";

/// Response headers that describe one connection or one transfer, not the resource:
/// never stored, never replayed.
fn is_per_transfer(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "content-length"
            | ":status"
    ) || name.starts_with("x-envoy-")
        || name.starts_with(crate::headers::IDENTITY_PREFIX)
        || name == crate::headers::REQUEST_ID
}

/// What a forwarded request on a cached route carries to the response phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePending {
    digest: String,
    tenant: String,
    url: String,
    route: RouteCache,
    method: String,
    request_headers: Vec<(String, Vec<u8>)>,
    /// Unix seconds when the request was forwarded.
    request_time: u64,
    /// `fwd` of `Cache-Status`: `miss`, `stale` (stored but unusable) or `uri-miss`.
    fwd: &'static str,
    /// A stale entry that may stand in if the origin fails.
    stale: Option<Box<Hit>>,
    /// The stored entry this request revalidates (its validators went to the origin):
    /// a 304 freshens it and it answers.
    revalidating: Option<Box<Hit>>,
}

impl CachePending {
    /// Conditional headers to add to the forwarded request (§4.3.1), when the cache
    /// revalidates its entry.
    pub fn validators(&self) -> Vec<(String, String)> {
        self.revalidating
            .as_ref()
            .map(|hit| {
                hit.meta
                    .revalidation_headers()
                    .into_iter()
                    .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The request phase's answer for a cached route.
#[derive(Debug)]
pub enum RequestStep {
    /// Answer from the cache; `stale` when the entry was past its lifetime.
    Reply { reply: LocalReply, stale: bool },
    /// Forward, then offer the response to [`on_response_headers`].
    Forward(Box<CachePending>),
    /// Not a request this cache handles (method, user missing, store failure).
    Bypass,
}

/// The response-header phase's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseStep {
    /// Send the response on, with this `Cache-Status`; `store` when its body is to be
    /// collected and given to [`store_response`].
    Pass { cache_status: String, store: bool },
    /// The origin failed: answer with the stale entry instead.
    ServeStale(LocalReply),
    /// The origin said 304 to the cache's own conditional request: the entry was
    /// freshened and answers (its counters: a hit).
    Revalidated(LocalReply),
}

fn request_claim(identity: Option<&Identity>, path: &str) -> Option<String> {
    let claims = &identity?.claims;
    crate::auth::token::claim(claims, path).and_then(crate::auth::token::claim_as_header_value)
}

/// Any reply made from a stored entry (a hit, a stale copy on an origin error, a
/// revalidated entry): its headers as served now less per-transfer ones, `Cache-Status`,
/// the request id, and the body unless the answer has none (HEAD, 304).
fn entry_reply(
    hit: &Hit,
    status: u16,
    with_body: bool,
    now_s: u64,
    cache_status: &str,
    request_id: &str,
) -> LocalReply {
    let mut headers: Vec<(String, String)> = hit
        .meta
        .serve_headers(now_s, cache_status)
        .into_iter()
        .filter(|(name, _)| !is_per_transfer(name))
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    headers.push((
        crate::headers::REQUEST_ID.to_string(),
        request_id.to_string(),
    ));
    let body = if with_body {
        hit.body.clone()
    } else {
        Vec::new()
    };
    LocalReply::new(status, headers, body, request_id)
}

/// A hit: the entry, or a 304 when the request's validators match it.
fn reply_from(
    hit: &Hit,
    request: &RequestHead,
    now_s: u64,
    cache_status: &str,
    request_id: &str,
) -> LocalReply {
    let conditional = hit.meta.not_modified_for(request.headers());
    let status = if conditional { 304 } else { hit.meta.status };
    let with_body = !conditional && request.method() != "HEAD";
    entry_reply(hit, status, with_body, now_s, cache_status, request_id)
}

/// The request-header phase of a cached route: a fresh (or acceptably stale) entry
/// answers; otherwise the request goes on and the response may be stored.
pub fn on_request(
    route: &RouteCache,
    max_bytes: u64,
    request: &RequestHead,
    identity: Option<&Identity>,
    request_id: &str,
    now_ms: u64,
    store: &dyn SharedData,
) -> RequestStep {
    if !super::is_cacheable_method(request.method()) {
        return RequestStep::Bypass;
    }
    let tenant = identity
        .and_then(|i| i.tenant.as_deref())
        .unwrap_or(PUBLIC_TENANT);
    let header = |name: &str| request.header(name).map(<[u8]>::to_vec);
    let claim = |path: &str| request_claim(identity, path);
    let input = super::KeyInput {
        tenant,
        // An API key has no user: the key itself is the caller.
        user: identity.and_then(|i| i.user.as_deref().or(i.key_id.as_deref())),
        authority: request.authority(),
        path: request.path(),
        header: &header,
        claim: &claim,
    };
    let Ok(key) = build_key(&route.key, &input) else {
        return RequestStep::Bypass;
    };
    let now_s = now_ms / 1000;
    let cache = CacheStore::new(store, max_bytes);
    let Ok(found) = cache.get(&key.digest, request.headers()) else {
        return RequestStep::Bypass;
    };
    let mut fwd = "miss";
    let mut stale = None;
    let mut revalidating = None;
    if let Some(hit) = found {
        match hit.meta.lookup(request.headers(), now_s, &route.rules) {
            Lookup::Fresh { ttl, .. } => {
                let status = super::status_hit(ttl);
                return RequestStep::Reply {
                    reply: reply_from(&hit, request, now_s, &status, request_id),
                    stale: false,
                };
            }
            Lookup::Stale { .. } | Lookup::StaleWhileRevalidate { .. } => {
                let status = super::status_stale_hit();
                let mut reply = reply_from(&hit, request, now_s, &status, request_id);
                reply
                    .headers
                    .push((STALE_HEADER.to_string(), "1".to_string()));
                return RequestStep::Reply { reply, stale: true };
            }
            Lookup::Revalidate | Lookup::Miss => {
                fwd = "stale";
                if hit.meta.usable_on_error(now_s, &route.rules) {
                    stale = Some(Box::new(hit.clone()));
                }
                // The client's own conditional headers go through untouched (its 304 is
                // its own); otherwise the cache asks with the entry's validators.
                let client_conditional = request.header("if-none-match").is_some()
                    || request.header("if-modified-since").is_some();
                if !client_conditional
                    && request.method() == "GET"
                    && (hit.meta.etag().is_some() || hit.meta.last_modified().is_some())
                {
                    revalidating = Some(Box::new(hit));
                }
            }
        }
    }
    if super::request_directives(request.headers()).only_if_cached {
        let mut reply = LocalReply::json_error(
            504,
            "not_cached",
            "only-if-cached was requested and no usable response is stored",
            request_id,
        );
        reply.headers.push((
            "cache-status".to_string(),
            super::status_forward(fwd, false, Some("only-if-cached")),
        ));
        return RequestStep::Reply {
            reply,
            stale: false,
        };
    }
    RequestStep::Forward(Box::new(CachePending {
        digest: key.digest,
        tenant: key.tenant,
        url: key.url,
        route: route.clone(),
        method: request.method().to_string(),
        request_headers: request.headers().to_vec(),
        request_time: now_s,
        fwd,
        stale,
        revalidating,
    }))
}

/// The response-header phase: store the response, pass it on, answer with the entry the
/// origin just confirmed (304), or — the origin failed — with the stale entry (RFC 5861
/// `stale-if-error`).
pub fn on_response_headers(
    pending: &CachePending,
    status: u16,
    headers: &Headers,
    request_id: &str,
    now_ms: u64,
    max_bytes: u64,
    store: &dyn SharedData,
) -> ResponseStep {
    let now_s = now_ms / 1000;
    if status == 304
        && let Some(hit) = &pending.revalidating
    {
        let mut meta = hit.meta.clone();
        let fresh: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(name, _)| !is_per_transfer(name) && name != "cache-status")
            .cloned()
            .collect();
        meta.freshen(&fresh, pending.request_time, now_s);
        // A failed write only means the next request revalidates again.
        let _ = CacheStore::new(store, max_bytes).update_meta(&pending.digest, &meta);
        let refreshed = Hit {
            meta,
            body: hit.body.clone(),
        };
        // RFC 9211 §2.4: forwarded to validate, the origin said not modified.
        let status = format!("{}; fwd=stale; fwd-status=304", super::CACHE_NAME);
        return ResponseStep::Revalidated(entry_reply(
            &refreshed,
            refreshed.meta.status,
            pending.method != "HEAD",
            now_s,
            &status,
            request_id,
        ));
    }
    if status >= 500
        && let Some(hit) = &pending.stale
        && hit.meta.usable_on_error(now_s, &pending.route.rules)
    {
        let status = format!("{}; detail=origin-{status}", super::status_stale_hit());
        let mut reply = entry_reply(
            hit,
            hit.meta.status,
            pending.method != "HEAD",
            now_s,
            &status,
            request_id,
        );
        reply
            .headers
            .push((STALE_HEADER.to_string(), "1".to_string()));
        return ResponseStep::ServeStale(reply);
    }
    // HEAD answers have no body to replay to a GET.
    let verdict = if pending.method == "GET" {
        super::storable(
            &pending.method,
            &pending.request_headers,
            status,
            headers,
            &pending.route.rules,
        )
        .map_err(super::NotStored::as_str)
    } else {
        Err("method")
    };
    match verdict {
        Ok(()) => ResponseStep::Pass {
            cache_status: super::status_forward(pending.fwd, true, None),
            store: true,
        },
        Err(detail) => ResponseStep::Pass {
            cache_status: super::status_forward(pending.fwd, false, Some(detail)),
            store: false,
        },
    }
}

/// Largest body [`store_response`] takes for this route.
pub fn max_object_bytes(pending: &CachePending) -> usize {
    pending.route.max_object_bytes
}

/// Stores a complete response (its headers as the origin sent them, its whole body).
pub fn store_response(
    pending: &CachePending,
    max_bytes: u64,
    status: u16,
    headers: &Headers,
    body: &[u8],
    now_ms: u64,
    store: &dyn SharedData,
) -> Result<(), super::StoreError> {
    let kept: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| !is_per_transfer(name) && name != "cache-status")
        .cloned()
        .collect();
    let meta = EntryMeta::new(
        status,
        kept,
        &pending.request_headers,
        pending.request_time,
        now_ms / 1000,
        &pending.route.rules,
    );
    CacheStore::new(store, max_bytes).put(
        &pending.digest,
        &pending.tenant,
        &pending.url,
        &meta,
        body,
    )
}
