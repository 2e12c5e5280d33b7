//! The request path natively: routing, identity-header stripping, request ids, replies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use tollgate_engine::{Counter, Decision, Engine, Policy, RequestHead};

const NOW_MS: u64 = 1_767_225_600_000;

const POLICY: &str = r#"
version: 1
request_id: { reuse_header: x-request-id }
routes:
  - name: refunds-eu
    match:
      path: { prefix: /v1/refunds/ }
      headers: [{ name: x-country, exact: EU }]
    cluster: origin_eu
  - name: users
    match:
      hosts: ["*.example.com"]
      path: { regex: "/users/[0-9]+" }
      methods: [GET]
    cluster: users
  - name: admin-host
    match: { hosts: [admin.internal], path: { prefix: / } }
    cluster: admin
  - name: api
    match: { path: { prefix: /v1/ } }
    cluster: origin
  - name: health
    match: { path: { exact: /healthz } }
    cluster: origin
"#;

fn engine() -> Engine {
    Engine::new(Policy::load(POLICY).unwrap(), 7)
}

fn request(method: &str, authority: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut pairs: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), method.into()),
        (":authority".into(), authority.into()),
        (":path".into(), path.into()),
        (":scheme".into(), "http".into()),
    ];
    pairs.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    );
    RequestHead::from_pairs(pairs)
}

fn cluster_of(decision: &Decision) -> Option<&str> {
    match decision {
        Decision::Forward(plan) => plan
            .set_headers
            .iter()
            .find(|(k, _)| k == "x-tollgate-cluster")
            .map(|(_, v)| v.as_str()),
        Decision::Reply(_) => None,
    }
}

#[test]
fn first_matching_route_wins_in_policy_order() {
    let e = engine();
    let eu = e.on_request_headers(
        request("GET", "a", "/v1/refunds/u1", &[("x-country", "EU")]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(cluster_of(&eu), Some("origin_eu"));
    let in_ = e.on_request_headers(
        request("GET", "a", "/v1/refunds/u1", &[("x-country", "IN")]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(cluster_of(&in_), Some("origin"));
    let health = e.on_request_headers(
        request("GET", "a", "/healthz?probe=1", &[]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(cluster_of(&health), Some("origin"));
}

#[test]
fn host_method_and_regex_conditions_all_apply() {
    let e = engine();
    let hit = e.on_request_headers(
        request("GET", "api.example.com:8443", "/users/42", &[]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(cluster_of(&hit), Some("users"));
    // Regex is anchored: a longer path does not match.
    let longer = e.on_request_headers(
        request("GET", "api.example.com", "/users/42/x", &[]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(cluster_of(&longer), None);
    // Wrong method, bare domain (wildcard needs a label before the suffix).
    assert_eq!(
        cluster_of(&e.on_request_headers(
            request("POST", "api.example.com", "/users/42", &[]),
            NOW_MS,
            &tollgate_engine::MemorySharedData::default()
        )),
        None
    );
    assert_eq!(
        cluster_of(&e.on_request_headers(
            request("GET", "example.com", "/users/42", &[]),
            NOW_MS,
            &tollgate_engine::MemorySharedData::default()
        )),
        None
    );
    assert_eq!(
        cluster_of(&e.on_request_headers(
            request("GET", "ADMIN.internal", "/anything", &[]),
            NOW_MS,
            &tollgate_engine::MemorySharedData::default()
        )),
        Some("admin")
    );
}

#[test]
fn unmatched_request_gets_json_404_with_request_id() {
    let e = engine();
    let decision = e.on_request_headers(
        request("GET", "a", "/nope", &[("x-request-id", "abc-1")]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    let Decision::Reply(reply) = decision else {
        panic!("expected a reply")
    };
    assert_eq!(reply.status, 404);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["request_id"], "abc-1");
    assert!(reply.counters.contains(&(Counter::NoRoute, 1)));
    assert!(
        reply
            .headers
            .iter()
            .any(|(k, v)| *k == "content-type" && v == "application/json")
    );
}

#[test]
fn client_identity_headers_are_removed_and_replaced() {
    let e = engine();
    let decision = e.on_request_headers(
        request(
            "GET",
            "a",
            "/v1/x",
            &[
                ("x-tollgate-tenant", "evil"),
                ("X-Tollgate-Cluster", "admin"),
                ("x-tollgate-tenant", "evil2"),
                ("x-other", "kept"),
            ],
        ),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    let Decision::Forward(plan) = decision else {
        panic!("expected forward")
    };
    assert_eq!(
        plan.remove_headers,
        vec!["x-tollgate-tenant", "x-tollgate-cluster"]
    );
    assert!(plan.counters.contains(&(Counter::SpoofedHeadersRemoved, 2)));
    // The cluster comes from the policy, never from the client.
    assert!(
        plan.set_headers
            .contains(&("x-tollgate-cluster".to_string(), "origin".to_string()))
    );
    assert!(
        plan.set_headers
            .contains(&("x-tollgate-route".to_string(), "api".to_string()))
    );
}

#[test]
fn spoofed_cluster_header_cannot_pick_a_route() {
    // Stripping happens before matching: identity headers can never steer routing.
    let e = engine();
    let d = e.on_request_headers(
        request("GET", "a", "/other", &[("x-tollgate-cluster", "admin")]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert!(matches!(d, Decision::Reply(ref r) if r.status == 404));
}

#[test]
fn request_id_reused_when_well_formed_else_generated() {
    let e = engine();
    let reused = e.on_request_headers(
        request("GET", "a", "/v1/x", &[("x-request-id", "req-123")]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_eq!(reused.request_id(), "req-123");
    let hostile = e.on_request_headers(
        request("GET", "a", "/v1/x", &[("x-request-id", "a\r\nb")]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_ne!(hostile.request_id(), "a\r\nb");
    assert_eq!(hostile.request_id().len(), 36);
    let fresh1 = e.on_request_headers(
        request("GET", "a", "/v1/x", &[]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    let fresh2 = e.on_request_headers(
        request("GET", "a", "/v1/x", &[]),
        NOW_MS,
        &tollgate_engine::MemorySharedData::default(),
    );
    assert_ne!(fresh1.request_id(), fresh2.request_id());
}

#[test]
fn every_request_is_counted_once() {
    let e = engine();
    for path in ["/v1/a", "/zzz"] {
        let d = e.on_request_headers(
            request("GET", "a", path, &[]),
            NOW_MS,
            &tollgate_engine::MemorySharedData::default(),
        );
        assert_eq!(
            d.counters()
                .iter()
                .filter(|(c, _)| *c == Counter::Requests)
                .count(),
            1
        );
    }
}

#[test]
fn json_policy_is_accepted() {
    let json =
        r#"{"version":1,"routes":[{"name":"a","cluster":"c","match":{"path":{"prefix":"/"}}}]}"#;
    let policy = Policy::load(json).unwrap();
    assert_eq!(policy.routes.len(), 1);
}

#[test]
fn route_without_match_matches_everything() {
    let e = Engine::new(
        Policy::load("version: 1\nroutes: [{name: all, cluster: c}]").unwrap(),
        1,
    );
    assert_eq!(
        cluster_of(&e.on_request_headers(
            request("DELETE", "x", "/", &[]),
            NOW_MS,
            &tollgate_engine::MemorySharedData::default()
        )),
        Some("c")
    );
}
