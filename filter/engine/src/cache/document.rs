//! The policy's `cache` sections, as written.

use schemars::JsonSchema;
use serde::Deserialize;

/// Node-wide cache settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheDocument {
    /// Bytes of responses the node keeps in shared data, all workers together (default
    /// 64 MiB). Past it the oldest-stored entries are evicted first.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// A route's response cache (RFC 9111, as a shared cache). GET and HEAD only.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheDocument {
    /// Freshness lifetime that replaces the origin's (`5m`); `no-store`, `private` and
    /// credentials rules still apply. Omit to follow the origin's headers.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Key entries by the authenticated user (a JWT's user, else the API key id) as well
    /// as the tenant; responses to requests with credentials, and `private` ones, may
    /// then be stored.
    #[serde(default)]
    pub per_user: bool,
    /// How the query string enters the key: `keep` (default), `ignore`,
    /// `{keep: [names]}` or `{drop: [names]}`.
    #[serde(default)]
    pub query: Option<QueryDocument>,
    /// Sort query parameters by name, so their order does not split entries.
    #[serde(default)]
    pub sort_query: bool,
    /// Request headers whose values enter the key.
    #[serde(default)]
    pub key_headers: Vec<String>,
    /// JWT claims whose values enter the key.
    #[serde(default)]
    pub key_claims: Vec<String>,
    /// Largest response body stored (default 1 MiB); larger ones pass uncached.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// How long past its lifetime a stale entry may still answer at once when the
    /// response names no `stale-while-revalidate` (RFC 5861; default 0).
    #[serde(default)]
    pub stale_while_revalidate: Option<String>,
    /// How long past its lifetime a stale entry may answer when the origin fails (5xx,
    /// timeout, connection failure) and the response names no `stale-if-error`
    /// (default 0). Such answers carry `x-tollgate-stale: 1`.
    #[serde(default)]
    pub stale_if_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum QueryDocument {
    /// `keep` or `ignore`.
    Mode(String),
    /// Keep only these parameters, or drop these.
    Lists(QueryListsDocument),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryListsDocument {
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    #[serde(default)]
    pub drop: Option<Vec<String>>,
}
