//! Edge response cache: RFC 9111 semantics for a shared cache, plus RFC 5861 stale
//! extensions, RFC 9211 `Cache-Status` and RFC 9213 `CDN-Cache-Control`.
//!
//! Pure functions over header lists (lower-case names, raw values) and unix seconds: the
//! adapter decides where entries live; this module decides what may be stored, whether a
//! stored entry may answer a request, and what the answer's headers are.

pub mod compile;
pub mod control;
pub mod date;
pub mod document;
pub mod flow;
pub mod key;
pub mod store;

pub use control::CacheControl;
pub use key::{CacheKey, KeyError, KeyInput, KeySpec, QueryRule, build_key};
pub use store::{CacheStore, Hit, PurgeTarget, StoreError};

/// Header list as the engine sees it: lower-case names, raw values.
pub type Headers = [(String, Vec<u8>)];

/// The name this cache uses in `Cache-Status`.
pub const CACHE_NAME: &str = "tollgate";

/// Per-route knobs that change the RFC defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRules {
    /// Replaces the origin's freshness lifetime (no-store/private still apply).
    pub ttl: Option<u64>,
    /// Responses are keyed by user: credentials and `private` no longer block storing.
    pub per_user: bool,
    /// Default stale-while-revalidate window when the response names none.
    pub stale_while_revalidate: u64,
    /// Default stale-if-error window when the response names none.
    pub stale_if_error: u64,
}

fn values<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn first<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn has(headers: &Headers, name: &str) -> bool {
    headers.iter().any(|(n, _)| n == name)
}

/// The response directives this cache obeys: `CDN-Cache-Control` when present (RFC 9213
/// §2.1: it replaces `Cache-Control` for the CDN), else `Cache-Control`.
pub fn response_directives(headers: &Headers) -> CacheControl {
    if has(headers, "cdn-cache-control") {
        CacheControl::parse_values(values(headers, "cdn-cache-control"))
    } else {
        CacheControl::parse_values(values(headers, "cache-control"))
    }
}

pub fn request_directives(headers: &Headers) -> CacheControl {
    let mut cc = CacheControl::parse_values(values(headers, "cache-control"));
    // RFC 9111 §5.4: `Pragma: no-cache` without Cache-Control means no-cache.
    if !has(headers, "cache-control")
        && values(headers, "pragma").any(|v| {
            String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("no-cache")
        })
    {
        cc.no_cache = true;
    }
    cc
}

pub fn is_cacheable_method(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

/// Statuses cacheable by heuristic (RFC 9110 §15.1); 206 is left out because we do not
/// store partial content.
pub fn is_heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Why a response was not stored (the `detail` of `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Credentials,
    SetCookie,
    VaryStar,
    NoFreshness,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Credentials => "credentials",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// Whether the request carried credentials (RFC 9111 §3.5), including our API-key header.
pub fn has_credentials(request: &Headers) -> bool {
    has(request, "authorization") || has(request, "x-api-key")
}

/// RFC 9111 §3: may this shared cache store the response?
pub fn storable(
    method: &str,
    request: &Headers,
    status: u16,
    response: &Headers,
    rules: &RouteRules,
) -> Result<(), NotStored> {
    if !is_cacheable_method(method) {
        return Err(NotStored::Method);
    }
    // Only final responses we can replay whole; 206 and 304 are not stored as entries.
    if !(200..600).contains(&status) || status == 206 || status == 304 {
        return Err(NotStored::Status);
    }
    let req = request_directives(request);
    let resp = response_directives(response);
    if req.no_store || resp.no_store {
        return Err(NotStored::NoStore);
    }
    if resp.private && !rules.per_user {
        return Err(NotStored::Private);
    }
    if has_credentials(request) && !rules.per_user && !resp.public && resp.s_maxage.is_none() {
        return Err(NotStored::Credentials);
    }
    if has(response, "set-cookie") {
        return Err(NotStored::SetCookie);
    }
    if values(response, "vary").any(|v| v.split(|b| *b == b',').any(|p| p.trim_ascii() == b"*")) {
        return Err(NotStored::VaryStar);
    }
    let explicit = resp.public
        || resp.max_age.is_some()
        || resp.s_maxage.is_some()
        || has(response, "expires")
        || rules.ttl.is_some()
        || (resp.private && rules.per_user);
    if !explicit && !is_heuristically_cacheable(status) {
        return Err(NotStored::NoFreshness);
    }
    Ok(())
}

/// Metadata of a stored response: what freshness and age are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// When the request that produced this response was sent (unix seconds).
    pub request_time: u64,
    /// When the response was received.
    pub response_time: u64,
    /// The request's values of the headers named in `Vary` (None: absent).
    pub vary: Vec<(String, Option<Vec<u8>>)>,
    /// Route TTL override frozen at store time.
    pub ttl: Option<u64>,
    /// Marked stale by a soft purge: must be revalidated before it is served fresh.
    pub invalidated: bool,
}

impl EntryMeta {
    pub fn new(
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        request: &Headers,
        request_time: u64,
        response_time: u64,
        rules: &RouteRules,
    ) -> Self {
        let vary = vary_names(&headers)
            .into_iter()
            .map(|name| {
                let value = joined(request, &name);
                (name, value)
            })
            .collect();
        EntryMeta {
            status,
            headers,
            request_time,
            response_time,
            vary,
            ttl: rules.ttl,
            invalidated: false,
        }
    }

    fn date(&self) -> Option<u64> {
        first(&self.headers, "date").and_then(date::parse_http_date)
    }

    /// RFC 9111 §4.2.1 (shared cache): s-maxage, max-age, Expires − Date, heuristic.
    pub fn freshness_lifetime(&self) -> u64 {
        if let Some(ttl) = self.ttl {
            return ttl;
        }
        let cc = response_directives(&self.headers);
        if let Some(s) = cc.s_maxage {
            return s;
        }
        if let Some(m) = cc.max_age {
            return m;
        }
        if let Some(expires) = first(&self.headers, "expires") {
            // An invalid Expires (e.g. "0") means already expired.
            let Some(expires) = date::parse_http_date(expires) else {
                return 0;
            };
            let date = self.date().unwrap_or(self.response_time);
            return expires.saturating_sub(date);
        }
        // Heuristic (§4.2.2): 10% of the time since Last-Modified, at most a day.
        if (is_heuristically_cacheable(self.status) || cc.public)
            && let Some(lm) = first(&self.headers, "last-modified").and_then(date::parse_http_date)
        {
            let date = self.date().unwrap_or(self.response_time);
            return (date.saturating_sub(lm) / 10).min(86_400);
        }
        0
    }

    /// RFC 9111 §4.2.3.
    pub fn current_age(&self, now: u64) -> u64 {
        let age_value = first(&self.headers, "age")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| control::parse_delta(v.trim()))
            .unwrap_or(0);
        let apparent = self
            .date()
            .map_or(0, |d| self.response_time.saturating_sub(d));
        let delay = self.response_time.saturating_sub(self.request_time);
        let corrected_initial = apparent.max(age_value.saturating_add(delay));
        corrected_initial.saturating_add(now.saturating_sub(self.response_time))
    }

    /// Does the stored entry's Vary selection match this request (§4.1)?
    pub fn vary_matches(&self, request: &Headers) -> bool {
        self.vary.iter().all(|(name, stored)| {
            normalise(stored.as_deref()) == normalise(joined(request, name).as_deref())
        })
    }

    pub fn etag(&self) -> Option<&[u8]> {
        first(&self.headers, "etag")
    }

    pub fn last_modified(&self) -> Option<&[u8]> {
        first(&self.headers, "last-modified")
    }

    /// Conditional headers for revalidating this entry with the origin (§4.3.1).
    pub fn revalidation_headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(etag) = self.etag() {
            out.push(("if-none-match".to_string(), etag.to_vec()));
        }
        if let Some(lm) = self.last_modified() {
            out.push(("if-modified-since".to_string(), lm.to_vec()));
        }
        out
    }

    /// A 304 from the origin freshens the entry (§4.3.4): its headers replace the stored
    /// ones of the same name, except framing headers, and the clock restarts.
    pub fn freshen(&mut self, not_modified: &Headers, request_time: u64, response_time: u64) {
        const KEEP: [&str; 3] = ["content-length", "content-encoding", "transfer-encoding"];
        for (name, _) in not_modified {
            if !KEEP.contains(&name.as_str()) {
                self.headers.retain(|(n, _)| n != name);
            }
        }
        for (name, value) in not_modified {
            if !KEEP.contains(&name.as_str()) {
                self.headers.push((name.clone(), value.clone()));
            }
        }
        self.request_time = request_time;
        self.response_time = response_time;
        self.invalidated = false;
    }

    /// May this entry answer a request outright, and how (§4.2, §4.2.4, RFC 5861)?
    pub fn lookup(&self, request: &Headers, now: u64, rules: &RouteRules) -> Lookup {
        let req = request_directives(request);
        let resp = response_directives(&self.headers);
        let lifetime = self.freshness_lifetime();
        let age = self.current_age(now);
        let fresh = !self.invalidated && age < lifetime;
        let must_validate = req.no_cache || resp.no_cache;
        if fresh && !must_validate {
            let within_max_age = req.max_age.is_none_or(|m| age <= m);
            let within_min_fresh = req.min_fresh.is_none_or(|m| lifetime - age >= m);
            if within_max_age && within_min_fresh {
                return Lookup::Fresh {
                    age,
                    ttl: lifetime - age,
                };
            }
        }
        let staleness = age.saturating_sub(lifetime);
        // must-revalidate / proxy-revalidate / s-maxage forbid serving stale (§5.2.2.2,
        // §5.2.2.8, §5.2.2.10); so does an explicit no-cache.
        let no_stale = resp.must_revalidate
            || resp.proxy_revalidate
            || resp.s_maxage.is_some()
            || must_validate;
        if !fresh && !no_stale && !self.invalidated {
            if let Some(max_stale) = req.max_stale
                && max_stale.is_none_or(|m| staleness <= m)
            {
                return Lookup::Stale { age };
            }
            let swr = resp
                .stale_while_revalidate
                .unwrap_or(rules.stale_while_revalidate);
            if swr > 0 && staleness <= swr {
                return Lookup::StaleWhileRevalidate { age };
            }
        }
        if self.etag().is_some() || self.last_modified().is_some() {
            Lookup::Revalidate
        } else {
            Lookup::Miss
        }
    }

    /// RFC 5861 §4: may this entry stand in for a failed origin response?
    pub fn usable_on_error(&self, now: u64, rules: &RouteRules) -> bool {
        let resp = response_directives(&self.headers);
        if resp.must_revalidate || resp.proxy_revalidate || resp.s_maxage.is_some() {
            return false;
        }
        let window = resp.stale_if_error.unwrap_or(rules.stale_if_error);
        let staleness = self
            .current_age(now)
            .saturating_sub(self.freshness_lifetime());
        staleness <= window
    }

    /// Headers for a reply served from this entry: stored headers with `Age` replaced and
    /// `Cache-Status` appended.
    pub fn serve_headers(&self, now: u64, status: &str) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "age" && n != "cache-status")
            .cloned()
            .collect();
        out.push((
            "age".to_string(),
            self.current_age(now).to_string().into_bytes(),
        ));
        out.push(("cache-status".to_string(), status.as_bytes().to_vec()));
        out
    }

    /// §4.3.2: does a conditional request get a 304 from this (fresh) entry?
    pub fn not_modified_for(&self, request: &Headers) -> bool {
        if let Some(inm) = joined(request, "if-none-match") {
            let Some(etag) = self.etag() else {
                return inm.trim_ascii() == b"*";
            };
            return inm
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .any(|tag| tag == b"*" || weak_eq(tag, etag));
        }
        if let Some(ims) = first(request, "if-modified-since").and_then(date::parse_http_date) {
            let modified = self
                .last_modified()
                .and_then(date::parse_http_date)
                .or_else(|| self.date());
            return modified.is_some_and(|m| m <= ims);
        }
        false
    }
}

/// How a stored entry may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Fresh {
        age: u64,
        ttl: u64,
    },
    /// Stale but accepted by the client's max-stale.
    Stale {
        age: u64,
    },
    /// Serve now, revalidate in the background (RFC 5861 §3).
    StaleWhileRevalidate {
        age: u64,
    },
    /// Forward a conditional request; a 304 freshens the entry.
    Revalidate,
    Miss,
}

/// `Cache-Status` values (RFC 9211).
pub fn status_hit(ttl: u64) -> String {
    format!("{CACHE_NAME}; hit; ttl={ttl}")
}

pub fn status_stale_hit() -> String {
    format!("{CACHE_NAME}; hit; stale")
}

pub fn status_forward(fwd: &str, stored: bool, detail: Option<&str>) -> String {
    let mut s = format!("{CACHE_NAME}; fwd={fwd}");
    if stored {
        s.push_str("; stored");
    }
    if let Some(d) = detail {
        s.push_str("; detail=");
        s.push_str(d);
    }
    s
}

fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    strip(a.trim_ascii()) == strip(b.trim_ascii())
}

fn vary_names(headers: &Headers) -> Vec<String> {
    let mut names: Vec<String> = values(headers, "vary")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|n| String::from_utf8_lossy(n.trim_ascii()).to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// All values of a header joined with ", " (how a field with several lines compares).
fn joined(headers: &Headers, name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in values(headers, name) {
        match &mut out {
            None => out = Some(v.to_vec()),
            Some(o) => {
                o.extend_from_slice(b", ");
                o.extend_from_slice(v);
            }
        }
    }
    out
}

/// Whitespace around list members does not change a Vary selection.
fn normalise(value: Option<&[u8]>) -> Option<Vec<u8>> {
    value.map(|v| {
        let parts: Vec<&[u8]> = v.split(|b| *b == b',').map(<[u8]>::trim_ascii).collect();
        parts.join(&b","[..])
    })
}

#[cfg(test)]
mod tests;
