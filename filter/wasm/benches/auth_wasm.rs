//! What authentication costs inside wasm (the compiled filter in host-sim, one request
//! per iteration, virtual clock, stub origin): a route without auth as the baseline,
//! a token cached in the VM, a token another worker verified (node-wide cache), and the
//! three shapes of a forged-token flood: new forgeries (one signature check each), a
//! replayed forgery (failed-token memory) and new forgeries from a client past its
//! failure budget (no crypto).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::StubUpstream;
use tollgate_sim::{Sim, SimOptions, SimRequest, UpstreamReply};

fn sim(policy: &str, workers: usize, now_ms: u64) -> Sim {
    let options = SimOptions {
        workers,
        start_time_ns: Some(now_ms * 1_000_000),
        ..SimOptions::default()
    };
    let text = common::bootstrap_text(policy, &[("origin", 18081)]);
    Sim::new(Bootstrap::parse(&text).unwrap(), options).unwrap()
}

fn request(
    path: &str,
    token: Option<&str>,
    worker: usize,
    client: &str,
    now_ms: u64,
) -> SimRequest {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push((
            b"authorization".to_vec(),
            format!("Bearer {t}").into_bytes(),
        ));
    }
    SimRequest {
        time_ns: Some(now_ms * 1_000_000),
        worker,
        downstream_addr: Some(format!("{client}:4000")),
        method: "GET".into(),
        path: path.into(),
        authority: "api.example.com".into(),
        scheme: "https".into(),
        headers,
        ..SimRequest::default()
    }
}

fn run(sim: &Sim, req: SimRequest, expect: u16) {
    let out = sim.handle(req, &mut StubUpstream(None));
    assert_eq!(
        out.status,
        expect,
        "{:?}",
        String::from_utf8_lossy(&out.body)
    );
    sim.take_logs();
    black_box(out);
}

fn auth(c: &mut Criterion) {
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("filter/engine/tests/vectors/jwt.json"))
            .unwrap(),
    )
    .unwrap();
    let now_ms = vectors["now"].as_u64().unwrap() * 1000;
    let hs_secret = B64
        .decode(
            vectors["issuers"]["partners"]["hs256_secret_b64url"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let policy = format!(
        r#"version: 1
auth:
  jwt_providers:
    - {{ name: taxpayers, issuer: "https://auth.tax.example", audiences: [refund-portal], algorithms: [ES256], jwks: {{ inline: {} }} }}
    - {{ name: partners, issuer: "https://partners.example", algorithms: [HS256], jwks: {{ inline: {} }} }}
routes:
  - {{ name: open, match: {{ path: {{ prefix: /open }} }}, cluster: origin }}
  - {{ name: api, cluster: origin, auth: {{ accept: [taxpayers, partners] }} }}
"#,
        vectors["issuers"]["taxpayers"]["jwks"], vectors["issuers"]["partners"]["jwks"]
    );
    let valid_es = vectors["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "valid ES256")
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<String> = valid_es.split('.').map(str::to_string).collect();
    let forgery = |n: u64| {
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            B64.encode(n.to_le_bytes().repeat(8))
        )
    };
    let hs_token = |n: u64| {
        let claims = json!({"iss": "https://partners.example", "sub": format!("p{n}"),
                            "exp": now_ms / 1000 + 3600});
        let input = format!(
            "{}.{}",
            B64.encode(br#"{"alg":"HS256"}"#),
            B64.encode(claims.to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&hs_secret).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
    };

    let sim = sim(&policy, 2, now_ms);
    let mut g = c.benchmark_group("auth_wasm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("no_auth_route", |b| {
        b.iter(|| run(&sim, request("/open", None, 0, "203.0.113.1", now_ms), 200))
    });
    // The same bytes on a route without auth: what carrying the token costs the host.
    g.bench_function("no_auth_route_with_token", |b| {
        b.iter(|| {
            run(
                &sim,
                request("/open", Some(&valid_es), 0, "203.0.113.1", now_ms),
                200,
            )
        })
    });
    run(
        &sim,
        request("/v1/x", Some(&valid_es), 0, "203.0.113.1", now_ms),
        200,
    );
    g.bench_function("vm_cached/ES256", |b| {
        b.iter(|| {
            run(
                &sim,
                request("/v1/x", Some(&valid_es), 0, "203.0.113.1", now_ms),
                200,
            )
        })
    });
    let mut n = 0u64;
    g.bench_function("node_cached/HS256", |b| {
        b.iter_batched(
            || {
                n += 1;
                let t = hs_token(n);
                // Worker 1 verifies it; worker 0 then sees it for the first time.
                run(
                    &sim,
                    request("/v1/x", Some(&t), 1, "203.0.113.1", now_ms),
                    200,
                );
                request("/v1/x", Some(&t), 0, "203.0.113.1", now_ms)
            },
            |req| run(&sim, req, 200),
            BatchSize::SmallInput,
        )
    });
    let mut n = 0u64;
    g.bench_function("first_seen/HS256", |b| {
        b.iter_batched(
            || {
                n += 1;
                request(
                    "/v1/x",
                    Some(&hs_token(1_000_000 + n)),
                    0,
                    "203.0.113.1",
                    now_ms,
                )
            },
            |req| run(&sim, req, 200),
            BatchSize::SmallInput,
        )
    });
    // Forged-token floods. New forgeries from ever new clients: a check each.
    let mut n = 0u64;
    g.bench_function("forged_new/ES256", |b| {
        b.iter_batched(
            || {
                n += 1;
                let client = format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
                request("/v1/x", Some(&forgery(n)), 0, &client, now_ms)
            },
            |req| run(&sim, req, 401),
            BatchSize::SmallInput,
        )
    });
    // The same forgery replayed: the node remembers it failed.
    run(
        &sim,
        request("/v1/x", Some(&forgery(0)), 0, "198.51.100.1", now_ms),
        401,
    );
    g.bench_function("forged_replayed/ES256", |b| {
        b.iter(|| {
            run(
                &sim,
                request("/v1/x", Some(&forgery(0)), 0, "198.51.100.1", now_ms),
                401,
            )
        })
    });
    // New forgeries from one client past its budget (20 per minute): no crypto.
    for i in 0..25 {
        run(
            &sim,
            request(
                "/v1/x",
                Some(&forgery(u64::MAX - i)),
                0,
                "198.51.100.2",
                now_ms,
            ),
            401,
        );
    }
    let mut n = 1u64 << 40;
    g.bench_function("forged_over_budget/ES256", |b| {
        b.iter_batched(
            || {
                n += 1;
                request("/v1/x", Some(&forgery(n)), 0, "198.51.100.2", now_ms)
            },
            |req| run(&sim, req, 401),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// One rate-limit decision in wasm with real shared-data CAS (host-sim's store shared by the
/// workers): a route with no limit as the baseline, one per-client-IP limit, the same with a
/// velocity rule. Then how much shared data 10,000 tenants' buckets take on the host.
fn limits(c: &mut Criterion) {
    let now_ms = 1_767_225_600_000;
    let policy = r#"version: 1
rate_limits:
  limits:
    - { name: per-ip, key: [client_ip], rate: 1000000000, per: 1s }
    - { name: per-tenant, key: ["header:x-tenant"], rate: 60, per: 1m, max_keys: 65536 }
  velocity:
    - { name: ip-spike, key: [client_ip], min_requests: 1000000000 }
routes:
  - { name: open, match: { path: { prefix: /open } }, cluster: origin }
  - { name: limited, match: { path: { prefix: /limited } }, cluster: origin, limits: [per-ip] }
  - { name: tenants, match: { path: { prefix: /tenants } }, cluster: origin, limits: [per-tenant] }
"#;
    let no_velocity = policy.replace(
        "  velocity:\n    - { name: ip-spike, key: [client_ip], min_requests: 1000000000 }\n",
        "",
    );
    let sim_plain = sim(&no_velocity, 2, now_ms);
    let sim_velocity = sim(policy, 2, now_ms);
    let mut g = c.benchmark_group("limits_wasm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("no_limit_route", |b| {
        b.iter(|| {
            run(
                &sim_plain,
                request("/open", None, 0, "203.0.113.1", now_ms),
                200,
            )
        })
    });
    g.bench_function("one_limit", |b| {
        b.iter(|| {
            run(
                &sim_plain,
                request("/limited", None, 0, "203.0.113.1", now_ms),
                200,
            )
        })
    });
    g.bench_function("one_limit_and_velocity", |b| {
        b.iter(|| {
            run(
                &sim_velocity,
                request("/limited", None, 0, "203.0.113.1", now_ms),
                200,
            )
        })
    });
    g.finish();

    // Keys per MiB: 10,000 tenants, each with one request through the per-tenant limit.
    let sim = sim(&no_velocity, 2, now_ms);
    let (entries_before, bytes_before) = sim.shared.data_footprint();
    for t in 0..10_000 {
        let mut req = request("/tenants", None, t % 2, "203.0.113.1", now_ms);
        req.headers
            .push((b"x-tenant".to_vec(), format!("tenant-{t:05}").into_bytes()));
        run(&sim, req, 200);
    }
    let (entries, bytes) = sim.shared.data_footprint();
    let (entries, bytes) = (entries - entries_before, bytes - bytes_before);
    eprintln!(
        "limits_wasm/footprint: 10000 tenants -> {entries} shared-data entries, {bytes} bytes of keys and values \
         ({:.1} bytes per tenant, {:.0} tenants per MiB before the host's map overhead)",
        bytes as f64 / 10_000.0,
        10_000.0 * 1_048_576.0 / bytes as f64
    );
}

/// The response cache in wasm: a hit by object size (the whole request through the
/// filter, answered from shared data, no origin call) beside the same route's miss (the
/// origin's answer stored again each time) and an uncached route.
fn cache(c: &mut Criterion) {
    let now_ms = 1_767_225_600_000;
    let policy = r#"version: 1
routes:
  - { name: cached, match: { path: { prefix: /cached } }, cluster: origin, cache: { ttl: 1h } }
  - { name: open, cluster: origin }
"#;
    let cached = sim(policy, 2, now_ms);
    let origin = |size: usize| UpstreamReply::Response {
        status: 200,
        headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
        body: vec![b'x'; size],
        trailers: Vec::new(),
    };
    let mut g = c.benchmark_group("cache_wasm");
    g.throughput(Throughput::Elements(1));
    // The baseline for a hit: another answer the filter gives itself (a 404 JSON reply,
    // no origin), so hit minus this is what the cache adds.
    let no_route = sim(
        "version: 1\nroutes: [{name: only, match: {path: {exact: /only}}, cluster: origin}]\n",
        2,
        now_ms,
    );
    g.bench_function("local_reply_404", |b| {
        b.iter(|| {
            let out = no_route.handle(
                request("/cached/4096", None, 1, "203.0.113.1", now_ms),
                &mut StubUpstream(None),
            );
            assert_eq!(out.status, 404);
            black_box(out);
        })
    });
    no_route.take_logs();
    g.bench_function("uncached_route_4k", |b| {
        b.iter(|| {
            let out = cached.handle(
                request("/open", None, 0, "203.0.113.1", now_ms),
                &mut StubUpstream(Some(origin(4096))),
            );
            assert_eq!(out.status, 200);
            black_box(out);
        })
    });
    for size in [1024usize, 4096, 16384, 65536] {
        let path = format!("/cached/{size}");
        let first = cached.handle(
            request(&path, None, 0, "203.0.113.1", now_ms),
            &mut StubUpstream(Some(origin(size))),
        );
        assert!(first.upstream_called);
        g.bench_function(format!("hit_{}k", size / 1024), |b| {
            b.iter(|| {
                let out = cached.handle(
                    request(&path, None, 1, "203.0.113.1", now_ms),
                    &mut StubUpstream(None),
                );
                assert!(!out.upstream_called && out.body.len() == size);
                black_box(out);
            })
        });
    }
    // A miss that stores: 1,000 keys in turn (query string), each replaced when it comes
    // round again, so the node's index holds about a thousand entries.
    let mut n = 0u64;
    g.bench_function("miss_and_store_4k", |b| {
        b.iter(|| {
            n += 1;
            let mut req = request(
                &format!("/cached/miss?n={}", n % 1000),
                None,
                0,
                "203.0.113.1",
                now_ms,
            );
            // no-cache: the stored copy may not answer, so every request is a miss.
            req.headers
                .push((b"cache-control".to_vec(), b"no-cache".to_vec()));
            let out = cached.handle(req, &mut StubUpstream(Some(origin(4096))));
            assert!(out.upstream_called);
            black_box(out);
        })
    });
    g.finish();
    cached.take_logs();
}

/// The bundled `core` WAF set in wasm, on the same ~2 KiB browser request and 64 KiB
/// JSON body as the native `waf` bench: each beside the same route without `waf:`, so
/// the difference is the WAF's cost in wasm (issue budget: at most 3x native).
fn waf(c: &mut Criterion) {
    let now_ms = 1_767_225_600_000;
    let policy = r#"version: 1
routes:
  - { name: screened, match: { path: { prefix: /v1/refunds } }, cluster: origin, waf: { rule_sets: [core], max_body_bytes: 1048576 } }
  - { name: plain, cluster: origin }
"#;
    let sim = sim(policy, 2, now_ms);
    let browser = |path_prefix: &str, method: &str, content_type: Option<&str>| {
        let pairs = tollgate_benches::browser_head_2k(method, content_type);
        let mut req = request("/", None, 0, "203.0.113.7", now_ms);
        req.method = method.into();
        for (name, value) in pairs {
            match name {
                ":path" => req.path = format!("{path_prefix}{value}"),
                ":authority" => req.authority = value,
                n if n.starts_with(':') => {}
                n => req
                    .headers
                    .push((n.as_bytes().to_vec(), value.into_bytes())),
            }
        }
        req
    };
    let ok = || UpstreamReply::Response {
        status: 200,
        headers: Vec::new(),
        body: b"{}".to_vec(),
        trailers: Vec::new(),
    };
    let mut g = c.benchmark_group("waf_wasm");
    g.throughput(Throughput::Elements(1));
    for (name, prefix) in [("request_2k/no_waf", "/plain"), ("request_2k/core", "")] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = sim.handle(browser(prefix, "GET", None), &mut StubUpstream(Some(ok())));
                assert_eq!(out.status, 200, "{:?}", String::from_utf8_lossy(&out.body));
                black_box(out);
            })
        });
    }
    let body = tollgate_benches::json_orders_64k();
    for (name, prefix) in [("json_64k/no_waf", "/plain"), ("json_64k/core", "")] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut req = browser(prefix, "POST", Some("application/json"));
                req.body_chunks = vec![body.clone()];
                let out = sim.handle(req, &mut StubUpstream(Some(ok())));
                assert_eq!(out.status, 200, "{:?}", String::from_utf8_lossy(&out.body));
                black_box(out);
            })
        });
    }
    g.finish();
    sim.take_logs();
}

criterion_group!(benches, auth, limits, cache, waf);
criterion_main!(benches);
