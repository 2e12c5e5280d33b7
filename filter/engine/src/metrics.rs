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
}

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::Requests,
        Counter::Forwarded,
        Counter::NoRoute,
        Counter::SpoofedHeadersRemoved,
        Counter::Authenticated,
        Counter::Unauthenticated,
        Counter::Forbidden,
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
        }
    }
}
