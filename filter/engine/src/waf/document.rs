//! The `waf:` sections of a policy as people write them: rules and rule sets at the top
//! level, and per route which sets apply, the threshold and the mode.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// Web application firewall: rules, named rule sets, per-tenant modes. Routes pick rule
/// sets in their own `waf:` section. The bundled sets `core` and `prompt-injection` are
/// always available.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafDocument {
    /// Rules written in this policy (ids must not reuse a bundled rule's id).
    #[serde(default)]
    pub rules: Vec<WafRuleDocument>,
    /// Named sets of rule ids (from `rules` or the bundled sets); routes select sets by
    /// name.
    #[serde(default)]
    pub rule_sets: BTreeMap<String, Vec<String>>,
    /// Per-tenant mode, overriding the route's and the rules' modes for that tenant's
    /// requests (e.g. `detect_only` while a tenant's traffic is being tuned).
    #[serde(default)]
    pub tenants: BTreeMap<String, WafTenantDocument>,
}

/// A tenant's WAF settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafTenantDocument {
    /// `enforce` or `detect_only`, for every rule on every route this tenant calls.
    pub mode: WafMode,
}

/// Whether matches block or are only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafMode {
    /// Scores count toward the route's threshold; at or above it the request gets 403.
    Enforce,
    /// Scores are computed and reported (header to the origin, counter, log), nothing is
    /// blocked.
    DetectOnly,
}

/// When a rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafPhase {
    /// With the request head (method, path, query, headers, cookies, client IP).
    #[default]
    RequestHeaders,
    /// With the request body (buffered up to the route's `max_body_bytes`); may read
    /// body targets and head targets.
    RequestBody,
}

/// One rule: where to look, how to normalise, what to look for, and what a match is worth.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafRuleDocument {
    /// Unique id (letters, digits, `.`, `-`, `_`); appears in logs, metrics and the
    /// header to the origin, never in replies to the client.
    pub id: String,
    /// Free text for people reading logs.
    #[serde(default)]
    pub message: Option<String>,
    /// `request_headers` (default) or `request_body`.
    #[serde(default)]
    pub phase: WafPhase,
    /// What to inspect (see `and[].targets` for the list).
    pub targets: Vec<String>,
    /// Applied in order to each value before the operator.
    #[serde(default)]
    pub transforms: Vec<WafTransform>,
    /// What to look for.
    #[serde(with = "serde_yaml::with::singleton_map")]
    #[schemars(with = "WafOperatorDocument")]
    pub operator: WafOperatorDocument,
    /// The rule matches when the operator matches no value.
    #[serde(default)]
    pub negate: bool,
    /// Further conditions that must all hold too (e.g. both `Content-Length` and
    /// `Transfer-Encoding` present).
    #[serde(default, rename = "and")]
    pub and: Vec<WafConditionDocument>,
    /// Added to the request's score when the rule matches (default 5; the default
    /// threshold is 5, so one default-score match blocks).
    #[serde(default)]
    pub score: Option<u32>,
    /// `enforce` (default) or `detect_only` (e.g. a new rule on trial). A route's or a
    /// tenant's mode overrides it.
    #[serde(default)]
    pub mode: Option<WafMode>,
    /// Families this rule belongs to (`sqli`, `xss`...), for reports.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Targets, transformations and an operator: the rule's condition holds when the
/// operator matches any of the transformed target values (or none, with `negate`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafConditionDocument {
    /// What to inspect: `method`, `path` (raw, no query), `uri` (raw path and query),
    /// `query` (raw query string), `query_names`, `query_values` (URL-decoded once),
    /// `authority`, `headers` (every value), `header_names`, `header:<name>`, `cookies`,
    /// `cookie_names`, `cookie:<name>`, `client_ip`; body phase: `body` (raw), `json`
    /// (every string, number and boolean leaf), `json_names`, `json:<a.b.c>` (arrays are
    /// walked), `form_values`, `form_names`, `form:<name>`, `body_length`; both phases:
    /// `args` / `args_names` (query in the headers phase, form fields and JSON string leaves in the body phase).
    pub targets: Vec<String>,
    /// Applied in order to each value before the operator: `url_decode`,
    /// `url_decode_uni`, `url_decode_repeated`, `html_entity_decode`, `lowercase`,
    /// `normalize_path`, `remove_nulls`, `compress_whitespace`, `remove_comments`,
    /// `base64_decode`.
    #[serde(default)]
    pub transforms: Vec<WafTransform>,
    /// What to look for.
    #[serde(with = "serde_yaml::with::singleton_map")]
    #[schemars(with = "WafOperatorDocument")]
    pub operator: WafOperatorDocument,
    /// The condition holds when the operator matches no value.
    #[serde(default)]
    pub negate: bool,
}

/// A value transformation. Each returns its input unchanged when there is nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafTransform {
    /// `%XX` and `+` decoded once; invalid escapes are kept as they are.
    UrlDecode,
    /// As `url_decode`, plus IIS `%uXXXX` escapes.
    UrlDecodeUni,
    /// `url_decode_uni` until nothing changes (at most 4 rounds): defeats double encoding.
    UrlDecodeRepeated,
    /// Named (`&lt;`...) and numeric (`&#60;`, `&#x3c;`) entities, with or without `;`.
    HtmlEntityDecode,
    /// ASCII lower case.
    Lowercase,
    /// `\` as `/`, `//` collapsed, `.` and `..` segments resolved.
    NormalizePath,
    /// NUL bytes removed.
    RemoveNulls,
    /// Runs of whitespace as one space.
    CompressWhitespace,
    /// `/* ... */` comments removed (SQL obfuscation like `UNION/**/SELECT`).
    RemoveComments,
    /// Base64 (standard or URL-safe alphabet) decoded; left as is when not valid base64.
    Base64Decode,
}

/// Exactly one operator.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafOperatorDocument {
    /// The value contains this string.
    Contains(String),
    /// The value equals this string.
    Equals(String),
    /// The value starts with this string.
    Prefix(String),
    /// The value matches this regular expression anywhere (linear-time `regex` syntax,
    /// bytes mode; `(?i)` for case-insensitive).
    Regex(String),
    /// The value contains any of these phrases (one Aho-Corasick automaton; ASCII
    /// case-insensitive).
    Phrases(Vec<String>),
    /// The value is an IP address inside any of these addresses or CIDR blocks.
    IpMatch(Vec<String>),
    /// The value, read as a number, is greater than this.
    NumGt(i64),
    /// The value, read as a number, is less than this.
    NumLt(i64),
    /// The value, read as a number, equals this.
    NumEq(i64),
    /// The value is longer than this many bytes.
    LengthGt(u64),
    /// The value is shorter than this many bytes.
    LengthLt(u64),
    /// A built-in detector.
    Detect(WafDetector),
}

/// Built-in detectors: token and pattern heuristics tuned for few false positives on
/// ordinary text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafDetector {
    Sqli,
    Xss,
    PathTraversal,
    CommandInjection,
    /// A `%` not followed by two hex digits (or `%u` and four).
    InvalidUrlEncoding,
}

/// What happens to a body longer than `max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafOverLimit {
    /// Refuse the request with 413 (default: nothing unseen reaches the origin).
    #[default]
    Reject,
    /// Inspect the first `max_body_bytes` and forward the whole body.
    InspectPrefix,
}

/// A route's WAF: which rule sets apply and how their scores are used.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteWafDocument {
    /// Rule sets that apply: `core`, `prompt-injection`, or names from `waf.rule_sets`.
    #[serde(default)]
    pub rule_sets: Vec<String>,
    /// Single rules that apply too, by id.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Rule ids switched off on this route (false positives on its traffic).
    #[serde(default)]
    pub exclude_rules: Vec<String>,
    /// A request whose enforced score reaches this is blocked (default 5).
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Overrides every rule's mode on this route.
    #[serde(default)]
    pub mode: Option<WafMode>,
    /// Body bytes inspected by `request_body` rules (default 65536, at most 16 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<u32>,
    /// What happens to a longer body: `reject` (413, default) or `inspect_prefix`.
    #[serde(default)]
    pub over_limit: Option<WafOverLimit>,
    /// Clients (IPs or CIDR blocks) whose requests skip the WAF on this route.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Clients (IPs or CIDR blocks) refused with 403 on this route (reported only in
    /// `detect_only` mode).
    #[serde(default)]
    pub deny_ips: Vec<String>,
}
