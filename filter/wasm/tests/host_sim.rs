//! The compiled `tollgate_filter.wasm` in host-sim, driven through `replay` with the
//! virtual clock: routing, identity headers, JWT, rate limits across workers, webhooks
//! over the body, and refusal of a bad policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bootstrap_text, root};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::{ReplayOptions, replay};

const T0_MS: u64 = 1_767_225_600_000;

fn bootstrap(policy: &str) -> String {
    bootstrap_text(policy, &[("origin", 18081), ("origin_eu", 18082)])
}

/// Runs `lines` (contract input) through replay with `workers` VMs; returns output lines.
fn run(policy: &str, workers: usize, lines: &[Value]) -> Vec<Value> {
    let bootstrap = Bootstrap::parse(&bootstrap(policy)).unwrap();
    let mut options = ReplayOptions::default();
    options.sim.workers = workers;
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    replay(bootstrap, options, input.as_bytes(), &mut out, &mut err).unwrap();
    let log = String::from_utf8_lossy(&err).into_owned();
    let out = String::from_utf8(out).unwrap();
    let parsed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), lines.len(), "log:\n{log}");
    for p in &parsed {
        assert!(p.get("trap").is_none(), "the filter trapped: {p}\n{log}");
        assert!(
            p.get("error").is_none(),
            "replay refused a line: {p}\n{log}"
        );
    }
    parsed
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

fn line(time_ms: u64, worker: usize, method: &str, path: &str, headers: Value) -> Value {
    json!({"time_ms": time_ms, "worker": worker, "downstream_addr": "203.0.113.7:51234",
           "request": {"method": method, "path": path, "authority": "api.example.com", "headers": headers}})
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn routes_by_policy_and_strips_spoofed_identity() {
    let policy = std::fs::read_to_string(root().join("policies/demo.yaml")).unwrap();
    let out = run(
        &policy,
        2,
        &[
            line(
                T0_MS,
                0,
                "GET",
                "/v1/refunds/u1",
                json!([
                    ["x-tollgate-user", "admin"],
                    ["x-tollgate-cluster", "origin_eu"]
                ]),
            ),
            line(
                T0_MS,
                1,
                "GET",
                "/v1/refunds/u1",
                json!([["x-country", "EU"]]),
            ),
            line(T0_MS, 0, "GET", "/admin", json!([])),
        ],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["upstream_cluster"], "origin");
    let seen = &out[0]["upstream_request"]["headers"];
    assert_eq!(header(seen, "x-tollgate-user"), None);
    assert_eq!(
        header(seen, "x-tollgate-cluster"),
        None,
        "the routing header must not reach the origin"
    );
    assert_eq!(header(seen, "x-tollgate-route"), Some("api"));
    let id = header(seen, "x-tollgate-request-id").unwrap();
    assert_eq!(
        header(&out[0]["headers"], "x-tollgate-request-id"),
        Some(id)
    );
    assert_eq!(out[1]["upstream_cluster"], "origin_eu");
    assert_eq!(out[2]["status"], 404);
    let content_types: Vec<&Value> = out[2]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "content-type")
        .collect();
    assert_eq!(
        content_types,
        [&json!(["content-type", "application/json"])]
    );
    assert_eq!(out[2]["local_reply"], true);
    assert_eq!(out[2]["upstream_called"], false);
}

#[test]
fn free_tenant_gets_exactly_60_per_minute_across_workers() {
    let key = "sk_free_tenant";
    let digest = hex(&Sha256::digest(key.as_bytes()));
    let policy = format!(
        r#"version: 1
auth:
  api_keys:
    keys: [{{ id: k1, sha256: "{digest}", tenant: t-free, plan: free }}]
rate_limits:
  plans: {{ free: {{ rate: 60, per: 1m }} }}
  limits: [{{ name: plan, key: [tenant], plan: true }}]
routes:
  - {{ name: api, cluster: origin, auth: {{ accept: [api_key] }}, limits: [plan] }}
"#
    );
    // 61 requests within one second, spread over 3 workers; then at +999 ms and +1 s.
    let mut lines: Vec<Value> = (0..61)
        .map(|i| {
            line(
                T0_MS + i,
                i as usize % 3,
                "GET",
                "/v1/x",
                json!([["x-api-key", key]]),
            )
        })
        .collect();
    lines.push(line(
        T0_MS + 999,
        1,
        "GET",
        "/v1/x",
        json!([["x-api-key", key]]),
    ));
    lines.push(line(
        T0_MS + 1_000,
        2,
        "GET",
        "/v1/x",
        json!([["x-api-key", key]]),
    ));
    let out = run(&policy, 3, &lines);
    let allowed = out[..61].iter().filter(|o| o["status"] == 200).count();
    assert_eq!(allowed, 60);
    assert_eq!(out[60]["status"], 429);
    assert_eq!(header(&out[60]["headers"], "retry-after"), Some("1"));
    assert_eq!(out[61]["status"], 429, "no refill before a full second");
    assert_eq!(out[62]["status"], 200, "one token back after one second");
    assert_eq!(
        header(&out[0]["upstream_request"]["headers"], "x-tollgate-tenant"),
        Some("t-free")
    );
    assert_eq!(
        header(&out[0]["upstream_request"]["headers"], "x-api-key"),
        None,
        "the key never reaches the origin"
    );
}

#[test]
fn velocity_spikes_are_flagged_and_blocked_in_wasm() {
    let policy = r#"version: 1
rate_limits:
  velocity:
    - { name: device-spike, key: ["header:x-device"], short_window: 10s, long_window: 10m, min_requests: 10, risk_score: 30 }
    - { name: card-burst, key: ["header:x-card"], short_window: 1m, long_window: 1h, min_requests: 5, block: true }
routes:
  - { name: api, cluster: origin }
"#;
    // A device at one request every 10 s for 10 minutes, then 30 in three seconds over 3
    // workers; a card paying 6 times in 6 seconds.
    let mut lines: Vec<Value> = (0..60)
        .map(|i| {
            line(
                T0_MS + i * 10_000,
                i as usize % 3,
                "GET",
                "/x",
                json!([["x-device", "d1"]]),
            )
        })
        .collect();
    let spike_start = T0_MS + 600_000;
    lines.extend((0..30).map(|i| {
        line(
            spike_start + i * 100,
            i as usize % 3,
            "GET",
            "/x",
            json!([["x-device", "d1"]]),
        )
    }));
    lines.extend((0..6).map(|i| {
        line(
            spike_start + 10_000 + i * 1000,
            i as usize % 3,
            "POST",
            "/pay",
            json!([["x-card", "c1"]]),
        )
    }));
    let out = run(policy, 3, &lines);
    let flagged = |o: &Value| {
        header(&o["upstream_request"]["headers"], "x-tollgate-velocity").map(str::to_string)
    };
    assert!(
        out[30..60].iter().all(|o| flagged(o).is_none()),
        "a steady device is never flagged"
    );
    let first = out[60..90].iter().position(|o| flagged(o).is_some());
    assert!(matches!(first, Some(i) if i < 25), "{first:?}");
    let spiked = &out[89];
    assert_eq!(spiked["status"], 200, "flag-only rules forward");
    assert_eq!(flagged(spiked).as_deref(), Some("device-spike"));
    assert_eq!(
        header(
            &spiked["upstream_request"]["headers"],
            "x-tollgate-risk-score"
        ),
        Some("30")
    );
    assert!(out[90..94].iter().all(|o| o["status"] == 200));
    let blocked = &out[95];
    assert_eq!(blocked["status"], 429, "{blocked}");
    assert_eq!(blocked["upstream_called"], false);
    assert_eq!(header(&blocked["headers"], "retry-after"), Some("60"));
    assert!(
        blocked["body"]
            .as_str()
            .unwrap()
            .contains("velocity_exceeded")
    );
}

#[test]
fn jwt_vectors_hold_in_wasm() {
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("filter/engine/tests/vectors/jwt.json")).unwrap(),
    )
    .unwrap();
    let now_ms = vectors["now"].as_u64().unwrap() * 1000;
    let policy = format!(
        r#"version: 1
auth:
  jwt_providers:
    - name: taxpayers
      issuer: https://auth.tax.example
      audiences: [refund-portal]
      algorithms: [ES256, RS256, EdDSA]
      max_age_seconds: 7200
      required_claims: [sub, country]
      jwks: {{ inline: {} }}
      claims_to_headers: [{{ claim: country, header: x-tollgate-country }}]
routes:
  - {{ name: refunds, cluster: origin, auth: {{ accept: [taxpayers], bind_path: "/v1/refunds/{{sub}}" }} }}
"#,
        vectors["issuers"]["taxpayers"]["jwks"]
    );
    // The taxpayer-issuer cases (ES256, RS256, EdDSA and the `none` family).
    let cases: Vec<&Value> = vectors["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["token"]
                .as_str()
                .is_some_and(|t| t.len() < 4096 || c["expect"] != "ok")
                && (c["payload"]["iss"] == "https://auth.tax.example"
                    || c["name"].as_str().unwrap().contains("none"))
        })
        .collect();
    assert!(cases.len() >= 15, "{}", cases.len());
    let lines: Vec<Value> = cases
        .iter()
        .map(|c| {
            let bearer = format!("Bearer {}", c["token"].as_str().unwrap());
            line(
                now_ms,
                0,
                "GET",
                "/v1/refunds/u1",
                json!([["authorization", bearer]]),
            )
        })
        .collect();
    let out = run(&policy, 1, &lines);
    for (case, o) in cases.iter().zip(&out) {
        let ok = case["expect"] == "ok";
        assert_eq!(o["status"] == 200, ok, "{}: {o}", case["name"]);
        let seen = &o["upstream_request"]["headers"];
        if ok {
            assert_eq!(header(seen, "x-tollgate-user"), Some("u1"));
            assert_eq!(header(seen, "x-tollgate-country"), Some("IN"));
        } else {
            assert_eq!(o["status"], 401, "{}", case["name"]);
            let challenge = header(&o["headers"], "www-authenticate").unwrap();
            assert!(challenge.contains("invalid_token"), "{challenge}");
        }
    }
}

#[test]
fn webhook_signature_is_checked_over_the_body() {
    let secret = "whsec_replay_0123456789abcdef";
    let policy = format!(
        "version: 1\nroutes:\n  - {{ name: hooks, cluster: origin, webhook: {{ scheme: stripe, signature_header: sig, secrets: [\"{secret}\"] }} }}\n"
    );
    let body = r#"{"event":"paid"}"#;
    let t = T0_MS / 1000;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let sig = hex(&mac.finalize().into_bytes());
    let signed = |b: &str, time| {
        let mut l = line(
            time,
            0,
            "POST",
            "/hooks",
            json!([["sig", format!("t={t},v1={sig}")]]),
        );
        l["request"]["body"] = json!(b);
        l
    };
    let mut chunked = line(
        T0_MS,
        0,
        "POST",
        "/hooks",
        json!([["sig", format!("t={t},v1={sig}")]]),
    );
    chunked["request"]["body_chunks"] = json!([&body[..5], &body[5..]]);
    let out = run(
        &policy,
        1,
        &[
            signed(body, T0_MS),
            signed(r#"{"event":"refunded"}"#, T0_MS),
            signed(body, T0_MS + 301_000),
            chunked,
        ],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["upstream_request"]["body"], body);
    assert_eq!(out[1]["status"], 401);
    assert_eq!(out[1]["upstream_called"], false);
    assert_eq!(out[2]["status"], 401, "a capture replayed after 5 minutes");
    assert_eq!(
        out[3]["status"], 200,
        "a body in several chunks: {}",
        out[3]
    );
    assert_eq!(out[3]["upstream_request"]["body"], body);
}

#[test]
fn check_refuses_a_bad_policy_naming_the_field() {
    // In-process `tollgate-sim check`: the same verdict Envoy gives at start-up.
    let bad = std::fs::read_to_string(root().join("policies/invalid/many-errors.yaml")).unwrap();
    let report = tollgate_sim::check::check(
        Bootstrap::parse(&bootstrap(&bad)).unwrap(),
        tollgate_sim::SimOptions::default(),
    );
    let text: String = report
        .logs
        .iter()
        .map(|l| format!("{}\n", l.message))
        .collect();
    assert!(!report.accepted, "{text}");
    assert!(
        text.contains("policy error: routes[0].match.methods[0]"),
        "{text}"
    );
    assert!(text.contains("policy error: routes[1].cluster"), "{text}");
}

#[test]
fn waf_blocks_marks_and_reads_bodies_in_wasm() {
    let policy = r#"version: 1
waf:
  rules:
    - { id: big-amount, phase: request_body, targets: ["json:amount"], operator: { num_gt: 10000 }, score: 3 }
routes:
  - name: shadow
    match: { path: { prefix: /shadow } }
    cluster: origin
    waf: { rule_sets: [core], mode: detect_only }
  - name: api
    cluster: origin
    waf: { rule_sets: [core], rules: [big-amount], max_body_bytes: 256, over_limit: inspect_prefix }
"#;
    let with_body = |path: &str, body: &str, chunks: bool| {
        let mut l = line(
            T0_MS,
            0,
            "POST",
            path,
            json!([["content-type", "application/json"]]),
        );
        if chunks {
            let (a, b) = body.split_at(body.len() / 2);
            l["request"]["body_chunks"] = json!([a, b]);
        } else {
            l["request"]["body"] = json!(body);
        }
        l
    };
    let attack_query = "/v1/items?id=1%27%20OR%20%271%27%3D%271";
    let xss_body = r#"{"note":"<img src=x onerror=alert(document.cookie)>"}"#;
    let mut long = String::from(r#"{"note":""#);
    long.push_str(&"a".repeat(400));
    long.push_str(r#"<script>alert(1)</script>"}"#);
    let out = run(
        policy,
        1,
        &[
            line(T0_MS, 0, "GET", attack_query, json!([])),
            with_body("/v1/notes", xss_body, true),
            line(
                T0_MS,
                0,
                "GET",
                &attack_query.replace("/v1/", "/shadow/"),
                json!([]),
            ),
            with_body("/v1/pay", r#"{"amount":20000}"#, false),
            with_body("/v1/notes", &long, false),
            with_body(
                "/v1/notes",
                r#"{"note":"Wann kommt meine Erstattung?"}"#,
                false,
            ),
        ],
    );
    // Blocked in the header phase: 403, JSON with the incident id, no rule id anywhere.
    assert_eq!(out[0]["status"], 403, "{}", out[0]);
    assert_eq!(out[0]["upstream_called"], false);
    let body: Value = serde_json::from_str(out[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "request_blocked");
    let incident = body["incident_id"].as_str().unwrap();
    assert_eq!(
        header(&out[0]["headers"], "x-tollgate-request-id"),
        Some(incident)
    );
    assert!(!out[0].to_string().contains("sqli"), "{}", out[0]);
    // Blocked in the body phase (body in two chunks).
    assert_eq!(out[1]["status"], 403, "{}", out[1]);
    assert_eq!(out[1]["upstream_called"], false);
    // Detect-only route: forwarded, marked for the origin, not for the client.
    assert_eq!(out[2]["status"], 200, "{}", out[2]);
    let mark = header(&out[2]["upstream_request"]["headers"], "x-tollgate-waf").unwrap();
    assert!(
        mark.contains("action=detect_only") && mark.contains("sqli-args"),
        "{mark}"
    );
    assert_eq!(header(&out[2]["headers"], "x-tollgate-waf"), None);
    // A body rule below the threshold: forwarded with its score.
    assert_eq!(out[3]["status"], 200, "{}", out[3]);
    let mark = header(&out[3]["upstream_request"]["headers"], "x-tollgate-waf").unwrap();
    assert!(
        mark.contains("score=3") && mark.contains("big-amount"),
        "{mark}"
    );
    assert_eq!(out[3]["upstream_request"]["body"], r#"{"amount":20000}"#);
    // Over the limit with inspect_prefix: the prefix is clean, the whole body goes on.
    assert_eq!(out[4]["status"], 200, "{}", out[4]);
    assert_eq!(out[4]["upstream_request"]["body"], long.as_str());
    // Clean traffic passes unmarked.
    assert_eq!(out[5]["status"], 200, "{}", out[5]);
    assert_eq!(
        header(&out[5]["upstream_request"]["headers"], "x-tollgate-waf"),
        None
    );
}

/// Issue 9's budget for the compiled filter: a platform team pulls it to every node.
#[test]
fn compiled_filter_fits_in_3_mib() {
    let bytes = std::fs::metadata(common::filter_wasm()).unwrap().len();
    assert!(bytes <= 3 << 20, "tollgate_filter.wasm is {bytes} bytes");
}

/// PII in a masked route's response is masked through the compiled filter, keeping the
/// length; `accept-encoding` never reaches the origin; other routes pass bodies untouched.
#[test]
fn pii_is_masked_in_responses_of_masked_routes_only() {
    let policy = r#"
version: 1
routes:
  - name: refunds
    match: { path: { prefix: /v1/refunds } }
    cluster: origin
    pii_masking: [card, ssn, pan_in, bank_account, email]
  - { name: other, cluster: origin }
"#;
    let body = r#"{"card":"4111 1111 1111 1111","ssn":"123-45-6789","pan":"ABCDE1234F","account_number":"123456789012","email":"jane.doe@example.com","order":"4111111111111112"}"#;
    let masked = r#"{"card":"**** **** **** 1111","ssn":"***-**-6789","pan":"******234F","account_number":"********9012","email":"j*******@example.com","order":"4111111111111112"}"#;
    let with_upstream = |path: &str| {
        let mut l = line(T0_MS, 0, "GET", path, json!([["accept-encoding", "gzip"]]));
        l["upstream"] = json!({"status": 200,
            "headers": [["content-type", "application/json"],
                        ["content-length", body.len().to_string()]],
            "body": body});
        l
    };
    let out = run(
        policy,
        1,
        &[with_upstream("/v1/refunds/u1"), with_upstream("/v1/other")],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["body"], masked);
    assert_eq!(
        header(&out[0]["headers"], "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        header(&out[0]["upstream_request"]["headers"], "accept-encoding"),
        None
    );
    assert_eq!(out[1]["body"], body, "a route without masking");
    assert_eq!(
        header(&out[1]["upstream_request"]["headers"], "accept-encoding"),
        Some("gzip")
    );
}

/// A GET with an API key at `time_ms` on `worker`; the stub origin would answer `body`.
fn cached_get(time_ms: u64, worker: usize, path: &str, key: &str, upstream: Value) -> Value {
    let mut l = line(time_ms, worker, "GET", path, json!([["x-api-key", key]]));
    l["upstream"] = upstream;
    l
}

fn origin(status: u16, cache_control: &str, body: &str) -> Value {
    json!({"status": status, "headers": [["content-type", "text/plain"],
        ["cache-control", cache_control]], "body": body})
}

fn cache_policy(route_cache: &str) -> String {
    format!(
        r#"
version: 1
auth:
  api_keys:
    keys:
      - {{ id: ka, sha256: "{}", tenant: t-a }}
      - {{ id: kb, sha256: "{}", tenant: t-b }}
routes:
  - name: items
    cluster: origin
    auth: {{ accept: [api_key] }}
    cache: {route_cache}
"#,
        hex(&Sha256::digest(b"key-a")),
        hex(&Sha256::digest(b"key-b"))
    )
}

#[test]
fn cached_route_answers_from_the_node_cache_and_never_across_tenants() {
    let policy = cache_policy("{}");
    let shared = "public, max-age=60";
    let out = run(
        &policy,
        2,
        &[
            cached_get(T0_MS, 0, "/v1/items", "key-a", origin(200, shared, "A-1")),
            // The other worker: the cache is the node's, in shared data.
            cached_get(
                T0_MS + 1_000,
                1,
                "/v1/items",
                "key-a",
                origin(200, shared, "A-2"),
            ),
            // Another tenant, same URL: its own entry, never t-a's.
            cached_get(
                T0_MS + 2_000,
                0,
                "/v1/items",
                "key-b",
                origin(200, shared, "B-1"),
            ),
            cached_get(
                T0_MS + 3_000,
                1,
                "/v1/items",
                "key-b",
                origin(200, shared, "B-2"),
            ),
            // Set-Cookie and no-store responses are not stored.
            cached_get(T0_MS + 4_000, 0, "/v1/cookie", "key-a", {
                let mut o = origin(200, shared, "C-1");
                o["headers"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(["set-cookie", "s=1"]));
                o
            }),
            cached_get(
                T0_MS + 5_000,
                0,
                "/v1/cookie",
                "key-a",
                origin(200, shared, "C-2"),
            ),
            cached_get(
                T0_MS + 6_000,
                0,
                "/v1/private",
                "key-a",
                origin(200, "no-store", "P-1"),
            ),
            cached_get(
                T0_MS + 7_000,
                0,
                "/v1/private",
                "key-a",
                origin(200, "no-store", "P-2"),
            ),
            // Expired after 60 s: the origin again.
            cached_get(
                T0_MS + 61_000,
                0,
                "/v1/items",
                "key-a",
                origin(200, shared, "A-3"),
            ),
        ],
    );
    let bodies: Vec<&str> = out.iter().map(|o| o["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        [
            "A-1", "A-1", "B-1", "B-1", "C-1", "C-2", "P-1", "P-2", "A-3"
        ]
    );
    let called: Vec<bool> = out
        .iter()
        .map(|o| o["upstream_called"].as_bool().unwrap())
        .collect();
    assert_eq!(
        called,
        [true, false, true, false, true, true, true, true, true]
    );
    assert_eq!(
        header(&out[0]["headers"], "cache-status"),
        Some("tollgate; fwd=miss; stored")
    );
    assert_eq!(
        header(&out[1]["headers"], "cache-status"),
        Some("tollgate; hit; ttl=59")
    );
    assert_eq!(header(&out[1]["headers"], "age"), Some("1"));
    assert_eq!(
        header(&out[1]["headers"], "content-type"),
        Some("text/plain")
    );
    assert!(header(&out[1]["headers"], "x-tollgate-request-id").is_some());
    assert_eq!(
        header(&out[4]["headers"], "cache-status"),
        Some("tollgate; fwd=miss; detail=set-cookie")
    );
    assert_eq!(
        header(&out[8]["headers"], "cache-status"),
        Some("tollgate; fwd=stale; stored")
    );
}

#[test]
fn stale_copy_answers_while_the_origin_fails_within_stale_if_error() {
    let policy = cache_policy("{ ttl: 5m, stale_if_error: 1h }");
    let out = run(
        &policy,
        1,
        &[
            cached_get(
                T0_MS,
                0,
                "/v1/refund",
                "key-a",
                origin(200, "public", "refund: paid"),
            ),
            // Ten minutes on (stale), the origin is down: the stored copy, marked stale.
            cached_get(
                T0_MS + 600_000,
                0,
                "/v1/refund",
                "key-a",
                origin(503, "no-store", "down"),
            ),
            // Past the hour's window: the failure goes through.
            cached_get(
                T0_MS + 5_000_000,
                0,
                "/v1/refund",
                "key-a",
                origin(503, "no-store", "down"),
            ),
        ],
    );
    assert_eq!(
        (out[1]["status"].as_u64(), out[1]["body"].as_str()),
        (Some(200), Some("refund: paid"))
    );
    assert_eq!(header(&out[1]["headers"], "x-tollgate-stale"), Some("1"));
    assert_eq!(
        header(&out[1]["headers"], "cache-status"),
        Some("tollgate; hit; stale; detail=origin-503")
    );
    assert_eq!(
        (out[2]["status"].as_u64(), out[2]["body"].as_str()),
        (Some(503), Some("down"))
    );
}

#[test]
fn idempotency_key_replays_the_first_response_and_refuses_a_reused_key() {
    let policy = cache_policy("{}").replace("    cache: {}\n", "    idempotency: { ttl: 24h }\n");
    let pay = |t: u64, key_header: &str, idem: &str, body: &str, upstream: Value| {
        let mut l = line(
            T0_MS + t,
            (t % 2) as usize,
            "POST",
            "/v1/payments",
            json!([
                ["x-api-key", key_header],
                ["idempotency-key", idem],
                ["content-type", "application/json"]
            ]),
        );
        l["request"]["body"] = json!(body);
        l["upstream"] = upstream;
        l
    };
    let charged = |n: u32| {
        json!({"status": 201, "headers": [["content-type", "application/json"]],
        "body": format!("{{\"charge\":{n}}}")})
    };
    let out = run(
        &policy,
        2,
        &[
            pay(0, "key-a", "k1", r#"{"amount":10}"#, charged(1)),
            // A retry (the other worker): the first answer again, no second charge.
            pay(1_000, "key-a", "k1", r#"{"amount":10}"#, charged(2)),
            // Same key, another payment: refused.
            pay(2_000, "key-a", "k1", r#"{"amount":99}"#, charged(3)),
            // Another tenant may use the same key for its own payment.
            pay(3_000, "key-b", "k1", r#"{"amount":10}"#, charged(4)),
            // A failed attempt (5xx) is not kept: the retry goes through.
            pay(
                4_000,
                "key-a",
                "k2",
                r#"{"amount":5}"#,
                json!({"status": 502, "body": "bad gateway"}),
            ),
            pay(5_000, "key-a", "k2", r#"{"amount":5}"#, charged(5)),
            // A malformed key.
            pay(6_000, "key-a", "", r#"{"amount":5}"#, charged(6)),
        ],
    );
    let summary: Vec<(u64, bool, String)> = out
        .iter()
        .map(|o| {
            (
                o["status"].as_u64().unwrap(),
                o["upstream_called"].as_bool().unwrap(),
                o["body"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(summary[0], (201, true, r#"{"charge":1}"#.to_string()));
    assert_eq!(summary[1], (201, false, r#"{"charge":1}"#.to_string()));
    assert_eq!(
        header(&out[1]["headers"], "idempotent-replayed"),
        Some("true")
    );
    assert_eq!(
        header(&out[1]["headers"], "content-type"),
        Some("application/json")
    );
    assert_eq!((summary[2].0, summary[2].1), (422, false));
    assert!(summary[2].2.contains("idempotency_key_reused"));
    assert_eq!(summary[3], (201, true, r#"{"charge":4}"#.to_string()));
    assert_eq!((summary[4].0, summary[4].1), (502, true));
    assert_eq!(summary[5], (201, true, r#"{"charge":5}"#.to_string()));
    assert_eq!((summary[6].0, summary[6].1), (400, false));
}

#[test]
fn a_stale_entry_is_revalidated_with_its_etag_and_a_304_freshens_it() {
    let policy = cache_policy("{}");
    let first = json!({"status": 200, "headers": [["cache-control", "public, max-age=2"],
        ["etag", "\"v1\""], ["content-type", "text/plain"]], "body": "E-1"});
    let not_modified = json!({"status": 304, "headers": [["cache-control", "public, max-age=2"],
        ["etag", "\"v1\""]]});
    let out = run(
        &policy,
        1,
        &[
            cached_get(T0_MS, 0, "/v1/doc", "key-a", first),
            // Stale after 2 s: the cache asks the origin with the ETag; 304.
            cached_get(T0_MS + 5_000, 0, "/v1/doc", "key-a", not_modified),
            // Freshened: answered from the cache again, no origin call.
            cached_get(T0_MS + 6_000, 0, "/v1/doc", "key-a", json!({"status": 500})),
        ],
    );
    assert_eq!(out[1]["status"], 200, "{}", out[1]);
    assert_eq!(out[1]["body"], "E-1");
    assert_eq!(
        header(&out[1]["upstream_request"]["headers"], "if-none-match"),
        Some("\"v1\"")
    );
    assert_eq!(
        header(&out[1]["headers"], "cache-status"),
        Some("tollgate; fwd=stale; fwd-status=304")
    );
    assert_eq!(
        (out[2]["body"].as_str(), out[2]["upstream_called"].as_bool()),
        (Some("E-1"), Some(false))
    );
}
