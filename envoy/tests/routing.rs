//! End-to-end: the built `tollgate_filter.wasm` in a real Envoy 1.40, in front of demo
//! origins. Each test runs its own Envoy (own ports and base id), so they run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig, RouteMode};

/// Refunds of Indian residents go to `origin_in`, everything else to `origin`.
const POLICY: &str = r#"
version: 1
routes:
  - name: refunds-in
    match: { path: { prefix: /v1/refunds/ }, headers: [{name: x-country, exact: IN}] }
    cluster: origin_in
  - name: default
    match: { path: { prefix: / } }
    cluster: origin
"#;

struct Setup {
    // Field order = drop order: Envoy goes first, then the origins it talks to.
    envoy: Envoy,
    _origin: BackgroundOrigin,
    _origin_in: BackgroundOrigin,
}

fn setup(label: &str, policy: &str) -> Setup {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let origin_in = BackgroundOrigin::start("origin_in").unwrap();
    let config = EnvoyConfig::new(label, policy)
        .unwrap()
        .cluster("origin", origin.port())
        .cluster("origin_in", origin_in.port());
    Setup {
        envoy: Envoy::start(&config).unwrap(),
        _origin: origin,
        _origin_in: origin_in,
    }
}

/// `(path, request headers, origin that must answer, route name the origin must see)`.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);

fn headers_named<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn tollgate_headers(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-tollgate-"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn request_passes_through_and_is_counted() {
    let s = setup("pass_through", POLICY);

    let resp = s.envoy.get("/v1/refunds/u1", &[]).unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-demo-origin"), Some("origin"));
    // The origin's own response headers and body come back unchanged.
    assert_eq!(resp.header("cache-control"), Some("max-age=300"));
    let echo = resp.json().unwrap();
    assert_eq!(echo["user"], "u1");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/v1/refunds/u1");

    let resp = s
        .envoy
        .request(
            "POST",
            "/v1/chat?lang=en",
            &[("content-type", "text/plain"), ("x-client", "a")],
            Some(b"hello edge"),
        )
        .unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let echo = resp.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/chat?lang=en");
    assert_eq!(echo["body"], "hello edge");
    let saw = resp.origin_saw_headers().unwrap();
    assert_eq!(headers_named(&saw, "x-client"), ["a"]);
    assert_eq!(headers_named(&saw, "x-tollgate-route"), ["default"]);

    // The filter's counters are Envoy stats, one per name for the VMs of all workers.
    let stats = s.envoy.wasmcustom_stats().unwrap();
    assert!(
        stats.keys().any(|k| k.starts_with("wasmcustom.tollgate_")),
        "{stats:?}"
    );
    assert_eq!(stats.get("wasmcustom.tollgate_requests_total"), Some(&2));
    assert_eq!(stats.get("wasmcustom.tollgate_forwarded_total"), Some(&2));
    assert_eq!(stats.get("wasmcustom.tollgate_no_route_total"), Some(&0));
}

#[test]
fn policy_selects_the_cluster_by_path_and_header() {
    let s = setup("cluster_selection", POLICY);
    let cases: [Case; 5] = [
        (
            "/v1/refunds/u1",
            &[("x-country", "IN")],
            "origin_in",
            "refunds-in",
        ),
        (
            "/v1/refunds/u1",
            &[("x-country", "US")],
            "origin",
            "default",
        ),
        ("/v1/refunds/u1", &[], "origin", "default"),
        ("/v1/other", &[("x-country", "IN")], "origin", "default"),
        // The client naming a cluster changes nothing: the filter's choice wins.
        (
            "/v1/refunds/u1",
            &[("x-tollgate-cluster", "origin_in")],
            "origin",
            "default",
        ),
    ];
    for (path, headers, origin, route) in cases {
        let resp = s.envoy.get(path, headers).unwrap();
        assert_eq!(resp.status, 200, "{path} {headers:?}: {resp:?}");
        assert_eq!(
            resp.header("x-demo-origin"),
            Some(origin),
            "{path} {headers:?}"
        );
        let saw = resp.origin_saw_headers().unwrap();
        assert_eq!(
            headers_named(&saw, "x-tollgate-route"),
            [route],
            "{path} {headers:?}"
        );
    }
    // Many requests: both workers' VMs route the same way.
    for i in 0..20 {
        let resp = s
            .envoy
            .get(&format!("/v1/refunds/u{i}"), &[("x-country", "IN")])
            .unwrap();
        assert_eq!(resp.header("x-demo-origin"), Some("origin_in"));
    }
}

#[test]
fn spoofed_tollgate_headers_never_reach_the_origin() {
    let s = setup("spoofed_headers", POLICY);
    let resp = s
        .envoy
        .get(
            "/v1/refunds/u1",
            &[
                ("x-tollgate-cluster", "origin_in"),
                ("x-tollgate-route", "refunds-in"),
                ("x-tollgate-request-id", "evil-id"),
                ("X-Tollgate-User", "admin"),
                ("x-tollgate-user", "root"),
                ("x-tollgate-tenant", "acme"),
                ("x-tollgate-", "empty-suffix"),
            ],
        )
        .unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-demo-origin"), Some("origin"));
    let saw = resp.origin_saw_headers().unwrap();
    let request_id = resp
        .header("x-tollgate-request-id")
        .expect("the filter sets x-tollgate-request-id on the response");
    assert_ne!(request_id, "evil-id");
    // Only what the filter set itself, with its own values; never x-tollgate-cluster, which
    // the route configuration strips after routing on it.
    assert_eq!(
        tollgate_headers(&saw),
        [
            ("x-tollgate-route", "default"),
            ("x-tollgate-request-id", request_id)
        ],
        "origin saw {saw:?}"
    );

    // The same holds for a route chosen by the policy.
    let resp = s
        .envoy
        .get(
            "/v1/refunds/u1",
            &[("x-country", "IN"), ("x-tollgate-cluster", "origin")],
        )
        .unwrap();
    assert_eq!(resp.header("x-demo-origin"), Some("origin_in"));
    let saw = resp.origin_saw_headers().unwrap();
    assert!(
        headers_named(&saw, "x-tollgate-cluster").is_empty(),
        "{saw:?}"
    );
    assert_eq!(headers_named(&saw, "x-tollgate-route"), ["refunds-in"]);

    let stats = s.envoy.wasmcustom_stats().unwrap();
    // Distinct names removed: cluster, route, request-id, user, tenant, the bare prefix
    // (6), then cluster (1).
    assert_eq!(
        stats.get("wasmcustom.tollgate_spoofed_headers_removed_total"),
        Some(&7),
        "{stats:?}"
    );
}

#[test]
fn unmatched_request_gets_the_filter_404() {
    let policy = r#"
version: 1
routes:
  - name: api
    match: { path: { prefix: /v1/ }, methods: [GET] }
    cluster: origin
"#;
    let s = setup("no_route", policy);
    for (method, path) in [("GET", "/nope"), ("POST", "/v1/refunds/u1")] {
        let resp = s.envoy.request(method, path, &[], None).unwrap();
        assert_eq!(resp.status, 404, "{method} {path}: {resp:?}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert!(resp.header("x-demo-origin").is_none(), "{resp:?}");
        let body = resp.json().unwrap();
        assert_eq!(body["error"], "no_route", "{body}");
        let request_id = resp.header("x-tollgate-request-id").unwrap();
        assert_eq!(body["request_id"], request_id);
    }
    let counters = s.envoy.wasmcustom_stats().unwrap();
    assert_eq!(
        counters.get("wasmcustom.tollgate_no_route_total"),
        Some(&2),
        "{counters:?}"
    );
    // No request reached an upstream.
    let stats = tollgate_envoy_tests::request(
        "GET",
        &s.envoy
            .admin_url("/stats?filter=cluster\\.origin\\.upstream_rq_total"),
        &[],
        None,
    )
    .unwrap();
    assert!(
        stats.body.contains("cluster.origin.upstream_rq_total: 0"),
        "{}",
        stats.body
    );
}

#[test]
fn header_match_routes_follow_the_filter_too() {
    // The Istio shape (a VirtualService matching the header's value): Envoy re-picks the
    // route after the filter rewrote the header, and the client's own value is ignored.
    let origin = BackgroundOrigin::start("origin").unwrap();
    let origin_in = BackgroundOrigin::start("origin_in").unwrap();
    let config = EnvoyConfig::new("header_match", POLICY)
        .unwrap()
        .cluster("origin", origin.port())
        .cluster("origin_in", origin_in.port())
        .route_mode(RouteMode::HeaderMatch);
    let envoy = Envoy::start(&config).unwrap();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("x-country", "IN")], "origin_in"),
        (&[("x-tollgate-cluster", "origin_in")], "origin"),
        (
            &[("x-country", "IN"), ("x-tollgate-cluster", "origin")],
            "origin_in",
        ),
    ];
    for (headers, want) in cases {
        let resp = envoy.get("/v1/refunds/u1", headers).unwrap();
        assert_eq!(resp.status, 200, "{headers:?}: {resp:?}");
        assert_eq!(resp.header("x-demo-origin"), Some(want), "{headers:?}");
        let saw = resp.origin_saw_headers().unwrap();
        // Header-match routes have no request_headers_to_remove of their own here: the
        // virtual host's removal still applies.
        assert!(
            headers_named(&saw, "x-tollgate-cluster").is_empty(),
            "{saw:?}"
        );
    }
}

#[test]
fn a_cluster_unknown_to_envoy_is_envoys_503() {
    // The policy cannot see Envoy's cluster list; a typo there shows as Envoy's own 503.
    let policy = "version: 1\nroutes:\n  - name: lost\n    cluster: nowhere\n";
    let s = setup("unknown_cluster", policy);
    let resp = s.envoy.get("/x", &[]).unwrap();
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(resp.header("x-demo-origin").is_none());
    assert!(
        s.envoy.wait_for_log(
            "ACCESS GET /x 503 cluster_not_found",
            Duration::from_secs(5)
        ),
        "{}",
        s.envoy.log_path().display()
    );
}
