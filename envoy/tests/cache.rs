//! The response cache in real Envoy: a second GET is answered from the node's cache
//! (the echo origin's body names the first request's id, the response the second's); a
//! tenant never gets another tenant's entry; a stale entry is revalidated with its ETag
//! and the origin's 304 freshens it; with the origin gone, a stale copy answers within
//! `stale_if_error`, marked for the front end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sha2::{Digest, Sha256};
use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig};

fn hex_sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy() -> String {
    format!(
        r#"
version: 1
auth:
  api_keys:
    keys:
      - {{ id: ka, sha256: "{}", tenant: t-a }}
      - {{ id: kb, sha256: "{}", tenant: t-b }}
routes:
  - name: news
    match: {{ path: {{ exact: /v1/refunds/news }} }}
    cluster: origin
    cache: {{ ttl: 1s, stale_if_error: 1h }}
  - name: docs
    match: {{ path: {{ prefix: /v1/docs/ }} }}
    cluster: origin
    cache: {{}}
  - name: refunds
    match: {{ path: {{ prefix: /v1/refunds }} }}
    cluster: origin
    auth: {{ accept: [api_key] }}
    cache: {{ per_user: true }}
"#,
        hex_sha("key-a"),
        hex_sha("key-b")
    )
}

/// The request id the origin saw (the echo of the forwarded headers).
fn origin_request_id(r: &tollgate_envoy_tests::HttpResponse) -> String {
    r.origin_saw_headers()
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "x-tollgate-request-id")
        .map(|(_, v)| v)
        .unwrap()
}

#[test]
fn envoy_answers_from_the_cache_per_tenant_and_stale_while_the_origin_is_down() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let config = EnvoyConfig::new("cache", &policy())
        .unwrap()
        .cluster("origin", origin.port());
    let envoy = Envoy::start(&config).unwrap();

    // Per-user refund status (the origin says max-age=300): stored per tenant and user.
    let a1 = envoy
        .get("/v1/refunds/ua", &[("x-api-key", "key-a")])
        .unwrap();
    assert_eq!(a1.status, 200, "{}", a1.body);
    assert_eq!(
        a1.header("cache-status"),
        Some("tollgate; fwd=miss; stored")
    );
    let a2 = envoy
        .get("/v1/refunds/ua", &[("x-api-key", "key-a")])
        .unwrap();
    assert!(
        a2.header("cache-status")
            .unwrap()
            .starts_with("tollgate; hit")
    );
    assert_eq!(a2.body, a1.body, "served from the cache");
    assert_eq!(
        origin_request_id(&a2),
        a1.header("x-tollgate-request-id").unwrap()
    );
    assert_ne!(
        a2.header("x-tollgate-request-id"),
        a1.header("x-tollgate-request-id")
    );
    // Tenant b asks for the same URL: the origin answers it, never tenant a's entry.
    let b1 = envoy
        .get("/v1/refunds/ua", &[("x-api-key", "key-b")])
        .unwrap();
    assert_eq!(
        b1.header("cache-status"),
        Some("tollgate; fwd=miss; stored")
    );
    assert_ne!(b1.body, a1.body);

    // A document with an ETag and a 1 s lifetime: once stale, the cache asks the origin
    // with If-None-Match; the origin's 304 freshens the entry, which answers.
    let d1 = envoy.get("/v1/docs/terms", &[]).unwrap();
    assert_eq!(
        d1.header("cache-status"),
        Some("tollgate; fwd=miss; stored")
    );
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let d2 = envoy.get("/v1/docs/terms", &[]).unwrap();
    assert_eq!(d2.status, 200, "{}", d2.body);
    assert_eq!(
        d2.header("cache-status"),
        Some("tollgate; fwd=stale; fwd-status=304")
    );
    assert_eq!(d2.body, d1.body);
    assert_eq!(d2.header("etag"), Some("\"terms-v1\""));

    // Public news (the origin says max-age=300; the route's TTL of 1 s wins), an hour
    // of stale-if-error.
    let n1 = envoy.get("/v1/refunds/news", &[]).unwrap();
    assert_eq!(
        n1.header("cache-status"),
        Some("tollgate; fwd=miss; stored")
    );
    drop(origin);
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let n2 = envoy.get("/v1/refunds/news", &[]).unwrap();
    assert_eq!(n2.status, 200, "{}", n2.body);
    assert_eq!(n2.header("x-tollgate-stale"), Some("1"));
    assert!(n2.header("cache-status").unwrap().contains("hit; stale"));
    assert_eq!(n2.body, n1.body);
    let stats = envoy.wasmcustom_stats().unwrap();
    // The refund hit and the revalidated document.
    assert_eq!(stats.get("wasmcustom.tollgate_cache_hits_total"), Some(&2));
    assert_eq!(
        stats.get("wasmcustom.tollgate_cache_stale_hits_total"),
        Some(&1)
    );
    assert_eq!(
        stats.get("wasmcustom.tollgate_cache_stored_total"),
        Some(&4)
    );
}
