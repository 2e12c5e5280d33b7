//! The counters Tollgate keeps per decision. The adapter defines one host metric per
//! variant (Envoy shows them as `wasmcustom.<name>`); the engine only names them.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Every request that reached the filter's request-header phase.
    Requests,
    /// Requests forwarded to an origin.
    Forwarded,
    /// Requests answered 404 because no route matched.
    NoRoute,
    /// Client-sent `x-tollgate-*` headers removed (one per header name).
    SpoofedHeadersRemoved,
    /// Requests whose credentials were verified.
    Authenticated,
    /// Requests refused 401 (missing or invalid credentials).
    Unauthenticated,
    /// Requests refused 403 (authenticated, not authorised).
    Forbidden,
    /// Requests refused 429 by an enforcing limit.
    RateLimited,
    /// Requests a shadow limit would have refused (forwarded, marked).
    ShadowLimited,
    /// Limit checks skipped because shared data failed (the request passed: fail open).
    LimiterFailOpen,
    /// Buckets evicted to keep the key table bounded.
    LimiterEvictions,
    /// Requests a velocity rule flagged as part of a rate spike (forwarded, marked).
    VelocityFlagged,
    /// Requests refused 429 by a blocking velocity rule.
    VelocityBlocked,
    /// Requests refused 403 by the WAF.
    WafBlocked,
    /// Requests the WAF would have blocked in `detect_only` mode (forwarded, marked).
    WafDetected,
    /// Requests with WAF matches below the threshold (forwarded, marked).
    WafMatched,
    /// Bodies longer than the WAF inspects, forwarded after inspecting their prefix.
    WafBodyTruncated,
}

impl Counter {
    pub const ALL: [Counter; 17] = [
        Counter::Requests,
        Counter::Forwarded,
        Counter::NoRoute,
        Counter::SpoofedHeadersRemoved,
        Counter::Authenticated,
        Counter::Unauthenticated,
        Counter::Forbidden,
        Counter::RateLimited,
        Counter::ShadowLimited,
        Counter::LimiterFailOpen,
        Counter::LimiterEvictions,
        Counter::VelocityFlagged,
        Counter::VelocityBlocked,
        Counter::WafBlocked,
        Counter::WafDetected,
        Counter::WafMatched,
        Counter::WafBodyTruncated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "tollgate_requests_total",
            Counter::Forwarded => "tollgate_forwarded_total",
            Counter::NoRoute => "tollgate_no_route_total",
            Counter::SpoofedHeadersRemoved => "tollgate_spoofed_headers_removed_total",
            Counter::Authenticated => "tollgate_authenticated_total",
            Counter::Unauthenticated => "tollgate_unauthenticated_total",
            Counter::Forbidden => "tollgate_forbidden_total",
            Counter::RateLimited => "tollgate_rate_limited_total",
            Counter::ShadowLimited => "tollgate_shadow_limited_total",
            Counter::LimiterFailOpen => "tollgate_limiter_fail_open_total",
            Counter::LimiterEvictions => "tollgate_limiter_evictions_total",
            Counter::VelocityFlagged => "tollgate_velocity_flagged_total",
            Counter::VelocityBlocked => "tollgate_velocity_blocked_total",
            Counter::WafBlocked => "tollgate_waf_blocked_total",
            Counter::WafDetected => "tollgate_waf_detected_total",
            Counter::WafMatched => "tollgate_waf_matched_total",
            Counter::WafBodyTruncated => "tollgate_waf_body_truncated_total",
        }
    }

    /// Dense index, for arrays of host metric ids.
    pub fn index(self) -> usize {
        match self {
            Counter::Requests => 0,
            Counter::Forwarded => 1,
            Counter::NoRoute => 2,
            Counter::SpoofedHeadersRemoved => 3,
            Counter::Authenticated => 4,
            Counter::Unauthenticated => 5,
            Counter::Forbidden => 6,
            Counter::RateLimited => 7,
            Counter::ShadowLimited => 8,
            Counter::LimiterFailOpen => 9,
            Counter::LimiterEvictions => 10,
            Counter::VelocityFlagged => 11,
            Counter::VelocityBlocked => 12,
            Counter::WafBlocked => 13,
            Counter::WafDetected => 14,
            Counter::WafMatched => 15,
            Counter::WafBodyTruncated => 16,
        }
    }
}
