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
}

impl Counter {
    pub const ALL: [Counter; 4] = [
        Counter::Requests,
        Counter::Forwarded,
        Counter::NoRoute,
        Counter::SpoofedHeadersRemoved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "tollgate_requests_total",
            Counter::Forwarded => "tollgate_forwarded_total",
            Counter::NoRoute => "tollgate_no_route_total",
            Counter::SpoofedHeadersRemoved => "tollgate_spoofed_headers_removed_total",
        }
    }

    /// Dense index, for arrays of host metric ids.
    pub fn index(self) -> usize {
        match self {
            Counter::Requests => 0,
            Counter::Forwarded => 1,
            Counter::NoRoute => 2,
            Counter::SpoofedHeadersRemoved => 3,
        }
    }
}
