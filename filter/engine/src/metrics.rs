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
    /// JWT signature checks performed (the expensive step; cache hits do not count).
    SignatureChecks,
    /// JWT signature checks that failed.
    BadSignatures,
    /// Tokens found in the node-wide (shared-data) verified-token cache.
    SharedTokenCacheHits,
    /// Tokens refused because they failed verification recently (no crypto).
    FailedTokenHits,
    /// Tokens refused without crypto because their client spent its failure budget.
    ClientBudgetRefusals,
    /// Requests answered "keys unavailable" (no usable JWKS for the token's issuer).
    KeysUnavailable,
    /// JWKS or OIDC discovery fetches started (one node-wide fetcher at a time).
    JwksFetches,
    /// JWKS or discovery fetches that failed (network, status, or an unusable document).
    JwksFetchFailures,
    /// New key sets stored for the node (a changed JWKS document).
    JwksUpdates,
    /// Refetches triggered by a token naming an unknown `kid` (rate-limited per node).
    JwksUnknownKidRefetches,
    /// Usage records handed to the node's queue for the sidecar.
    UsageRecorded,
    /// Usage records lost: the node's queue was full (the sidecar away too long), or the
    /// tenant id is not one the sidecar can bill.
    UsageDropped,
    /// Requests answered from the cache with a fresh entry.
    CacheHits,
    /// Requests answered from the cache with a stale entry (max-stale, stale-while-
    /// revalidate, or stale-if-error when the origin failed).
    CacheStaleHits,
    /// Requests on cached routes that went to the origin.
    CacheMisses,
    /// Responses stored.
    CacheStored,
    FraudFlagged,
    FraudBlocked,
    FraudFailOpen,
}

impl Counter {
    pub const ALL: [Counter; 36] = [
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
        Counter::SignatureChecks,
        Counter::BadSignatures,
        Counter::SharedTokenCacheHits,
        Counter::FailedTokenHits,
        Counter::ClientBudgetRefusals,
        Counter::KeysUnavailable,
        Counter::JwksFetches,
        Counter::JwksFetchFailures,
        Counter::JwksUpdates,
        Counter::JwksUnknownKidRefetches,
        Counter::UsageRecorded,
        Counter::UsageDropped,
        Counter::CacheHits,
        Counter::CacheStaleHits,
        Counter::CacheMisses,
        Counter::CacheStored,
        Counter::FraudFlagged,
        Counter::FraudBlocked,
        Counter::FraudFailOpen,
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
            Counter::SignatureChecks => "tollgate_auth_signature_checks_total",
            Counter::BadSignatures => "tollgate_auth_bad_signatures_total",
            Counter::SharedTokenCacheHits => "tollgate_auth_shared_cache_hits_total",
            Counter::FailedTokenHits => "tollgate_auth_failed_token_hits_total",
            Counter::ClientBudgetRefusals => "tollgate_auth_client_budget_refusals_total",
            Counter::KeysUnavailable => "tollgate_auth_keys_unavailable_total",
            Counter::JwksFetches => "tollgate_jwks_fetches_total",
            Counter::JwksFetchFailures => "tollgate_jwks_fetch_failures_total",
            Counter::JwksUpdates => "tollgate_jwks_updates_total",
            Counter::JwksUnknownKidRefetches => "tollgate_jwks_unknown_kid_refetches_total",
            Counter::UsageRecorded => "tollgate_usage_recorded_total",
            Counter::UsageDropped => "tollgate_usage_dropped_total",
            Counter::CacheHits => "tollgate_cache_hits_total",
            Counter::CacheStaleHits => "tollgate_cache_stale_hits_total",
            Counter::CacheMisses => "tollgate_cache_misses_total",
            Counter::CacheStored => "tollgate_cache_stored_total",
            Counter::FraudFlagged => "tollgate_fraud_flagged_total",
            Counter::FraudBlocked => "tollgate_fraud_blocked_total",
            Counter::FraudFailOpen => "tollgate_fraud_fail_open_total",
        }
    }

    /// Dense index, for arrays of host metric ids (the declaration order, as in `ALL`).
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn all_lists_every_counter_at_its_index_with_a_unique_name() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }
}
