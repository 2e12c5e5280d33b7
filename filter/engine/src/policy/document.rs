//! The policy document as people write it (YAML, or JSON).
//!
//! These types mirror the document one to one and reject unknown fields, so a misspelt
//! key fails the load instead of silently meaning "no setting". Validation that needs
//! more than the shape (regexes compile, names are unique...) lives in `compile`.

use schemars::JsonSchema;
use serde::Deserialize;

/// The whole policy: the Envoy plugin `configuration` of the Tollgate filter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Version of the policy format. Only `1` exists.
    pub version: u32,
    /// How the request id that Tollgate passes to the origin is chosen.
    #[serde(default)]
    pub request_id: Option<RequestIdDocument>,
    /// Routes, tried in order; the first that matches serves the request.
    pub routes: Vec<RouteDocument>,
}

/// Request-id settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestIdDocument {
    /// An incoming header whose value is reused as the request id when it is well-formed
    /// (Envoy's connection manager sets `x-request-id`). Omit to always generate one.
    #[serde(default)]
    pub reuse_header: Option<String>,
}

/// One route: what it matches and where it goes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDocument {
    /// Unique name; appears in logs, metrics and the `x-tollgate-route` header.
    pub name: String,
    /// What a request must look like for this route to apply. Empty matches everything.
    #[serde(default, rename = "match")]
    pub matcher: MatchDocument,
    /// The Envoy cluster (origin) that serves this route.
    pub cluster: String,
}

/// Request matching. Every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchDocument {
    /// Host names (`:authority` without port): exact (`api.example.com`), a suffix
    /// wildcard (`*.example.com`) or `*`. Case-insensitive. Omit to match any host.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Path condition, on the path without its query string.
    #[serde(default)]
    pub path: Option<PathMatchDocument>,
    /// HTTP methods (upper case). Omit to match any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Option<Vec<HeaderMatchDocument>>,
}

/// Exactly one of `exact`, `prefix` or `regex`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathMatchDocument {
    /// The path equals this string.
    #[serde(default)]
    pub exact: Option<String>,
    /// The path starts with this string.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The whole path matches this regular expression (linear-time `regex` syntax).
    #[serde(default)]
    pub regex: Option<String>,
}

/// A header condition: `name` plus at most one of `exact`, `prefix`, `regex`, `present`.
/// With none of them the header must be present.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchDocument {
    /// Header name (case-insensitive).
    pub name: String,
    /// The header's first value equals this string.
    #[serde(default)]
    pub exact: Option<String>,
    /// The header's first value starts with this string.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The header's first value fully matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}
