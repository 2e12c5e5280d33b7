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
    /// Credentials Tollgate accepts (JWT providers, API keys); routes pick among them.
    #[serde(default)]
    pub auth: Option<AuthDocument>,
    /// Plans and rate limits; routes pick limits by name.
    #[serde(default)]
    pub rate_limits: Option<RateLimitsDocument>,
    /// Web application firewall rules and rule sets; routes select sets by name.
    #[serde(default)]
    pub waf: Option<crate::waf::document::WafDocument>,
    /// Routes, tried in order; the first that matches serves the request.
    pub routes: Vec<RouteDocument>,
    /// The sync sidecar: makes `global` limits hold across gateway nodes and collects
    /// usage events for billing. Omit to run each node on its own.
    #[serde(default)]
    pub sidecar: Option<SidecarDocument>,
    /// The node's response cache (routes opt in with their own `cache`).
    #[serde(default)]
    pub cache: Option<crate::cache::document::CacheDocument>,
    /// Edge fraud rules (velocity per body key, amounts, country mismatch, blocklists);
    /// routes enable them by name.
    #[serde(default)]
    pub fraud: Option<crate::fraud::FraudDocument>,
}

/// Where and how often a node syncs with the sidecar. Requests never wait for it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarDocument {
    /// The Envoy cluster of the sidecar.
    pub cluster: String,
    /// `:authority` of sync calls (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Path of the sync endpoint (default `/v1/sync`).
    #[serde(default)]
    pub path: Option<String>,
    /// How often the node syncs (default `1s`).
    #[serde(default)]
    pub tick: Option<String>,
    /// How long a sync call may take (default `200ms`); shorter than `tick`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Consecutive failed syncs that open the circuit (default 3).
    #[serde(default)]
    pub failures_to_open: Option<u32>,
    /// How long an open circuit makes no calls (default `10s`).
    #[serde(default)]
    pub open_for: Option<String>,
    /// This node's id in the fleet (default: a random id chosen at start).
    #[serde(default)]
    pub node_id: Option<String>,
    /// Usage events kept while the sidecar is away (default 10000); beyond it events are
    /// dropped and counted in `tollgate_usage_dropped_total`.
    #[serde(default)]
    pub max_queued_events: Option<u32>,
    /// Usage events sent in one sync (default 1000).
    #[serde(default)]
    pub max_events_per_batch: Option<u32>,
    /// Distinct global-limit keys counted between syncs (default 10000).
    #[serde(default)]
    pub max_keys: Option<u32>,
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
    /// Who may call this route. Omit for a public route.
    #[serde(default)]
    pub auth: Option<RouteAuthDocument>,
    /// Verify a partner webhook signature over the body before forwarding.
    #[serde(default)]
    pub webhook: Option<WebhookDocument>,
    /// Names of `rate_limits.limits` that apply here; all must pass.
    #[serde(default)]
    pub limits: Vec<RouteLimitDocument>,
    /// Web application firewall for this route: rule sets, threshold, mode.
    #[serde(default)]
    pub waf: Option<crate::waf::document::RouteWafDocument>,
    /// Personal data masked in this route's response bodies, keeping their length (so
    /// `content-length` stays right): `card` (numbers passing the Luhn check; last 4
    /// kept), `ssn` (US, last 4 kept), `pan_in` (Indian PAN, last 4 kept), `bank_account`
    /// (JSON fields such as `account_number` or `iban`; last 4 kept), `email` (the local
    /// part after its first character). The request's `accept-encoding` is removed so the
    /// origin answers uncompressed.
    #[serde(default)]
    pub pii_masking: Vec<String>,
    /// Answer GET and HEAD from the node's cache when a stored response may be used
    /// (RFC 9111 as a shared cache), keyed by tenant first.
    #[serde(default)]
    pub cache: Option<crate::cache::document::RouteCacheDocument>,
    /// Honour `Idempotency-Key` on POST and PATCH: the first completed response is kept
    /// and replayed to retries; a retry in flight gets 409, a reused key 422.
    #[serde(default)]
    pub idempotency: Option<crate::idempotency::IdempotencyDocument>,
    /// Edge fraud rules evaluated on this route's JSON body before forwarding.
    #[serde(default)]
    pub fraud: Option<crate::fraud::RouteFraudDocument>,
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

/// Authentication: who may call, and how they prove it.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthDocument {
    /// JWT issuers whose tokens Tollgate accepts.
    #[serde(default)]
    pub jwt_providers: Vec<JwtProviderDocument>,
    /// API keys, stored as SHA-256 digests only.
    #[serde(default)]
    pub api_keys: Option<ApiKeysDocument>,
    /// Node-wide memory of verified and failed tokens (shared by all workers).
    #[serde(default)]
    pub token_cache: Option<TokenCacheDocument>,
    /// A per-client budget of failed signature checks; beyond it the client's unverified
    /// tokens are refused without any crypto.
    #[serde(default)]
    pub client_budget: Option<ClientBudgetDocument>,
}

/// Node-wide token tables in Envoy shared data. Each is a fixed set of buckets, so its
/// size is bounded whatever the traffic.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheDocument {
    /// Verified tokens remembered node-wide until their `exp` (default 8192; 0: only the
    /// per-worker cache).
    #[serde(default)]
    pub verified_entries: Option<u32>,
    /// Tokens that failed their signature check, remembered so a replay costs no crypto
    /// (default 4096; 0: off).
    #[serde(default)]
    pub failed_entries: Option<u32>,
    /// How long a failed token is remembered, in seconds (default 300).
    #[serde(default)]
    pub failed_ttl_seconds: Option<u32>,
}

/// Failed signature checks allowed per client IP per minute.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientBudgetDocument {
    /// Failed signature checks per client IP per minute (default 20; 0: no budget). The
    /// client IP is the one rate limits use (`rate_limits.client_ip`).
    #[serde(default)]
    pub failed_verifications_per_minute: Option<u32>,
    /// Clients tracked at once (default 8192).
    #[serde(default)]
    pub clients: Option<u32>,
}

/// One JWT issuer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderDocument {
    /// Unique name, referenced by routes (`auth.accept`).
    pub name: String,
    /// Required `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; the token must carry at least one. Omit to not check.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// Algorithms accepted from this issuer. The token's `alg` alone never decides:
    /// anything outside this list is refused before any key is touched.
    pub algorithms: Vec<String>,
    /// Tolerated clock difference for `exp`/`nbf`/`iat`, in seconds (default 30).
    #[serde(default)]
    pub clock_skew_seconds: Option<u32>,
    /// Refuse tokens issued (`iat`) longer ago than this, in seconds.
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
    /// Claims that must be present.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Where the token is read from, in order (default: `Authorization: Bearer`).
    #[serde(default)]
    pub from: Option<Vec<TokenSourceDocument>>,
    /// Remove the token from the request before forwarding (default false).
    #[serde(default)]
    pub remove_token: bool,
    /// Largest token accepted, in bytes (default 8192); longer ones are refused unread.
    #[serde(default)]
    pub max_token_bytes: Option<u32>,
    /// The issuer's keys.
    pub jwks: JwksDocument,
    /// Claims copied into request headers for the origin.
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimHeaderDocument>,
    /// Which claims name the tenant, user and plan.
    #[serde(default)]
    pub identity: Option<IdentityDocument>,
}

/// Where a token is found. Exactly one of `header`, `query` or `cookie`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceDocument {
    /// Header name.
    #[serde(default)]
    pub header: Option<String>,
    /// Prefix before the token in that header (e.g. `"Bearer "`, matched case-insensitively).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Query parameter name.
    #[serde(default)]
    pub query: Option<String>,
    /// Cookie name.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// The issuer's key set: exactly one of `inline` or `remote`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksDocument {
    /// A JWKS document (`{"keys": [...]}`), inline, as YAML/JSON or as a JSON string.
    #[serde(default)]
    pub inline: Option<serde_json::Value>,
    /// A JWKS fetched from an Envoy cluster, refreshed and shared by every worker.
    #[serde(default)]
    pub remote: Option<RemoteJwksDocument>,
}

/// A JWKS fetched through an Envoy cluster by the filter's root context, stored in
/// shared data (one fetch and one copy per node).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksDocument {
    /// The Envoy cluster that reaches the identity provider (it must exist in the
    /// bootstrap).
    pub cluster: String,
    /// Path of the JWKS on that cluster (e.g. `/.well-known/jwks.json`). Omit it with
    /// `discovery: true`.
    #[serde(default)]
    pub path: Option<String>,
    /// OpenID discovery: fetch `<issuer>/.well-known/openid-configuration` through the
    /// cluster and take the JWKS location from its `jwks_uri` (default false).
    #[serde(default)]
    pub discovery: bool,
    /// `:authority` of the fetch (default: the issuer's host).
    #[serde(default)]
    pub authority: Option<String>,
    /// Fetch timeout in milliseconds (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Refresh interval in seconds when the response carries no `Cache-Control: max-age`
    /// (default 300).
    #[serde(default)]
    pub refresh_seconds: Option<u32>,
    /// Lower bound on the refresh interval a response may ask for, in seconds (default
    /// 30, or `refresh_seconds` if lower). Also caps the retry backoff after failures.
    #[serde(default)]
    pub min_refresh_seconds: Option<u32>,
    /// Upper bound on the refresh interval, in seconds (default 86400).
    #[serde(default)]
    pub max_refresh_seconds: Option<u32>,
    /// How long past its refresh time the last good key set is still used while the
    /// identity provider is unreachable, in seconds (default 3600).
    #[serde(default)]
    pub max_stale_seconds: Option<u32>,
    /// At most one refetch per this many seconds when tokens name an unknown `kid`
    /// (default 30; per provider, per node).
    #[serde(default)]
    pub unknown_kid_refetch_seconds: Option<u32>,
    /// The answer while no usable key set exists (default 503 with `Retry-After: 5`).
    #[serde(default)]
    pub keys_unavailable: Option<KeysUnavailableDocument>,
}

/// The answer when the issuer's keys are unavailable.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysUnavailableDocument {
    /// 503 (default) or another 5xx for a JSON `keys_unavailable` error; or 401 to answer
    /// like an invalid token.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` seconds on 5xx answers (default 5; 0: no header).
    #[serde(default)]
    pub retry_after_seconds: Option<u32>,
}

/// Copy a claim into a request header.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeaderDocument {
    /// Claim path; nested claims with dots (`address.country`). Arrays are joined with `,`.
    pub claim: String,
    /// Header to set; must start with `x-tollgate-` so clients can never forge it.
    pub header: String,
}

/// Where tenant, user and plan come from.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityDocument {
    /// Claim naming the tenant; or a fixed tenant with `tenant_value`.
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Fixed tenant for every token of this provider.
    #[serde(default)]
    pub tenant_value: Option<String>,
    /// Claim naming the user (default `sub`).
    #[serde(default)]
    pub user_claim: Option<String>,
    /// Claim naming the plan.
    #[serde(default)]
    pub plan_claim: Option<String>,
}

/// API keys: callers send a key; the policy holds only its SHA-256.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysDocument {
    /// Header carrying the key (default `x-api-key`).
    #[serde(default)]
    pub header: Option<String>,
    /// Remove the key header before forwarding (default true).
    #[serde(default)]
    pub remove_key: Option<bool>,
    pub keys: Vec<ApiKeyDocument>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyDocument {
    /// Identifier of the key (not secret); goes to the origin as `x-tollgate-key-id`.
    pub id: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    pub tenant: String,
    #[serde(default)]
    pub plan: Option<String>,
}

/// Route-level authentication and authorisation.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthDocument {
    /// Accepted credentials: names of JWT providers, and/or `api_key`. Any one suffices.
    pub accept: Vec<String>,
    /// `true`: requests without credentials pass (invalid credentials still fail).
    #[serde(default)]
    pub optional: bool,
    /// The caller must have at least one of these roles.
    #[serde(default)]
    pub roles: Option<ClaimSetRuleDocument>,
    /// The caller must have all of these scopes.
    #[serde(default)]
    pub scopes: Option<ClaimSetRuleDocument>,
    /// Claim values allowed: `{country: [IN, US]}`.
    #[serde(default)]
    pub claims: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Path template binding a segment to a claim: `/v1/refunds/{sub}` means the segment
    /// in that position must equal the `sub` claim.
    #[serde(default)]
    pub bind_path: Option<String>,
}

/// A set-valued claim rule. Roles: any of `values`; scopes: all of `values`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimSetRuleDocument {
    /// Claim holding the set: an array, or a space-separated string (OAuth `scope`).
    /// Default `roles` for roles and `scope` for scopes.
    #[serde(default)]
    pub claim: Option<String>,
    pub values: Vec<String>,
}

/// Verifying partner webhooks: an HMAC-SHA256 over the timestamp and the body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDocument {
    /// `stripe`: one header `t=<unix>,v1=<hex>[,v1=<hex>]`; `headers`: a timestamp header
    /// and a signature header. Either way the signed content is `<timestamp>.<body>`.
    pub scheme: WebhookScheme,
    /// The signature header (default `webhook-signature`).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// For `headers`: the timestamp header (default `webhook-timestamp`).
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// For `headers`: a prefix before the signature, e.g. `sha256=`.
    #[serde(default)]
    pub signature_prefix: Option<String>,
    /// For `headers`: `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,
    /// Shared secrets; several while rotating. Any one verifying suffices.
    pub secrets: Vec<String>,
    /// Oldest (and furthest in the future) timestamp accepted, in seconds (default 300).
    #[serde(default)]
    pub tolerance_seconds: Option<u32>,
    /// Largest body verified, in bytes (default 1 MiB); larger bodies get 413.
    #[serde(default)]
    pub max_body_bytes: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    Stripe,
    Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// Rate limiting: plans, named limits, answers.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsDocument {
    /// Plans by name: `{free: {rate: 60, per: 1m}}`. Limits with `plan: true` take their
    /// rate from the caller's plan.
    #[serde(default)]
    pub plans: std::collections::BTreeMap<String, PlanDocument>,
    /// Plan for tenants whose credentials name none.
    #[serde(default)]
    pub default_plan: Option<String>,
    /// Per-tenant plan or shadow mode, overriding what the credentials say.
    #[serde(default)]
    pub tenant_overrides: std::collections::BTreeMap<String, TenantOverrideDocument>,
    /// Named limits; routes list the ones that apply to them.
    #[serde(default)]
    pub limits: Vec<LimitDocument>,
    /// `RateLimit` header options.
    #[serde(default)]
    pub headers: Option<RateLimitHeadersDocument>,
    /// Where the client IP comes from.
    #[serde(default)]
    pub client_ip: Option<ClientIpDocument>,
    /// Spike detectors: flag (or block) a key whose short-window rate jumps far above its
    /// long-window rate. Each applies to every request that has its key.
    #[serde(default)]
    pub velocity: Vec<VelocityDocument>,
}

/// One spike detector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VelocityDocument {
    pub name: String,
    /// What is counted together, as for limits: `tenant`, `key_id`, `user`, `client_ip`,
    /// `route`, `header:<name>`, `claim:<path>`.
    pub key: Vec<String>,
    /// The recent window (default `10s`).
    #[serde(default)]
    pub short_window: Option<String>,
    /// The baseline window (default `10m`); longer than `short_window`.
    #[serde(default)]
    pub long_window: Option<String>,
    /// How many times its long-window rate the short-window rate must reach (default 5).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Requests the short window must hold before anything is flagged (default 20).
    #[serde(default)]
    pub min_requests: Option<u32>,
    /// Added to the request's risk score (0–100) when flagged (default 50).
    #[serde(default)]
    pub risk_score: Option<u32>,
    /// Refuse flagged requests with 429 instead of only marking them (default false).
    #[serde(default)]
    pub block: bool,
    /// Most keys tracked at once (default 65536); beyond it the least active is evicted.
    #[serde(default)]
    pub max_keys: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    /// Requests per `per`.
    pub rate: u64,
    /// Period: `30s`, `1m`, `1h`, `1d` (default `1m`).
    #[serde(default)]
    pub per: Option<String>,
    /// Bucket size (default: `rate`).
    #[serde(default)]
    pub burst: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrideDocument {
    #[serde(default)]
    pub plan: Option<String>,
    /// Count and mark would-be blocks for this tenant, block nothing.
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitDocument {
    pub name: String,
    /// What is counted together: any of `tenant`, `user`, `client_ip`, `key_id`, `route`,
    /// `header:<name>`, `claim:<path>`. A request missing a part is not limited by this limit.
    pub key: Vec<String>,
    /// Requests per `per` (omit with `plan: true`).
    #[serde(default)]
    pub rate: Option<u64>,
    /// Period: `30s`, `1m`, `1h`, `1d` (default `1m`).
    #[serde(default)]
    pub per: Option<String>,
    /// Bucket size (default: `rate`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// Take rate, period and burst from the caller's plan.
    #[serde(default)]
    pub plan: bool,
    /// Count and mark would-be blocks, block nothing.
    #[serde(default)]
    pub shadow: bool,
    /// Hold this limit across all gateway nodes through the `sidecar`: per fixed window
    /// of `per`, the fleet admits at most `rate` (see docs/sidecar.md for the overshoot
    /// bound). Needs a `sidecar` section.
    #[serde(default)]
    pub global: bool,
    /// Most keys tracked at once (default 65536); beyond it the bucket nearest to full is
    /// evicted.
    #[serde(default)]
    pub max_keys: Option<u32>,
}

/// A limit applied by a route: its name, or `{name, cost}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RouteLimitDocument {
    Name(String),
    WithCost {
        name: String,
        /// Tokens this route's requests take (default 1).
        cost: u64,
    },
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitHeadersDocument {
    /// Also send `RateLimit-Policy`/`RateLimit` on allowed responses.
    #[serde(default)]
    pub on_allowed: bool,
    /// Send `X-RateLimit-Limit/Remaining/Reset` too.
    #[serde(default)]
    pub legacy: bool,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIpDocument {
    /// Trusted proxies in front of this gateway: the client IP is taken that many entries
    /// from the right of `x-forwarded-for`. 0 (default): the connection's peer address.
    #[serde(default)]
    pub xff_trusted_hops: u32,
}
