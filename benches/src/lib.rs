//! Shared fixtures for Tollgate's criterion benches (see `benches/benches/`).

use tollgate_engine::RequestHead;

/// The demo policy, as shipped.
pub const DEMO_POLICY: &str = include_str!("../../policies/demo.yaml");

/// A typical API request as Envoy hands it to the filter: pseudo-headers first, then
/// the headers Envoy and a client add.
pub fn typical_request(path: &str) -> RequestHead {
    RequestHead::from_pairs([
        (":authority", "api.example.com"),
        (":path", path),
        (":method", "GET"),
        (":scheme", "https"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("x-tollgate-tenant", "spoofed"),
    ])
}
