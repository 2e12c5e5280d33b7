//! Remote JWKS through the compiled `tollgate_filter.wasm` in host-sim: replay input lines
//! on the virtual clock, with the identity provider's cluster answered by a stub callout
//! backend (so the test sees every fetch). Three worker VMs plus the main-thread VM tick
//! as in Envoy. Shows one fetch per node, verification once per node (shared token
//! cache), rotation through an unknown `kid`, OIDC discovery, and an unreachable IdP:
//! stale keys first, then `keys_unavailable`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use common::bootstrap_text;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::{InputLine, OutputLine, StubUpstream};
use tollgate_sim::state::{CallResponse, PendingCallout};
use tollgate_sim::{CalloutReply, Callouts, Sim, SimOptions};

const T0_MS: u64 = 1_767_225_600_000;
const ISSUER: &str = "https://idp.example";

fn bootstrap(policy: &str) -> Bootstrap {
    Bootstrap::parse(&bootstrap_text(
        policy,
        &[("origin", 18081), ("idp", 18090)],
    ))
    .unwrap()
}

fn secret(kid: &str) -> Vec<u8> {
    format!("{kid}-secret-0123456789abcdef0123456789").into_bytes()
}

fn jwks(kids: &[&str]) -> String {
    let keys: Vec<Value> = kids
        .iter()
        .map(|k| json!({"kty": "oct", "kid": k, "alg": "HS256", "k": B64.encode(secret(k))}))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn token(issuer: &str, kid: &str, sub: &str, now_ms: u64) -> String {
    let now = now_ms / 1000;
    let claims = json!({"iss": issuer, "sub": sub, "iat": now - 10, "exp": now + 3600});
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "kid": kid}).to_string()),
        B64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret(kid)).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// What the stub identity provider answers.
#[derive(Clone)]
enum Idp {
    /// `(path, body, cache-control)` documents; other paths get 404.
    Serving(Vec<(String, String, Option<String>)>),
    Down,
}

/// The IdP cluster, stubbed: records every callout (cluster, path, authority).
struct StubIdp {
    mode: Mutex<Idp>,
    calls: Mutex<Vec<(String, String, String)>>,
}

impl StubIdp {
    fn new(mode: Idp) -> Arc<StubIdp> {
        Arc::new(StubIdp {
            mode: Mutex::new(mode),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, mode: Idp) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> Vec<(String, String, String)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Callouts for StubIdp {
    fn call(&self, c: &PendingCallout, _address: Option<&str>) -> CalloutReply {
        let header = |name: &[u8]| {
            c.headers
                .iter()
                .find(|(k, _)| k.as_slice() == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let path = header(b":path");
        self.calls
            .lock()
            .unwrap()
            .push((c.cluster.clone(), path.clone(), header(b":authority")));
        match &*self.mode.lock().unwrap() {
            Idp::Down => CalloutReply::ConnectFailure,
            Idp::Serving(docs) => {
                let (status, body, cache) = match docs.iter().find(|(p, _, _)| *p == path) {
                    Some((_, body, cache)) => ("200", body.clone(), cache.clone()),
                    None => ("404", String::new(), None),
                };
                let mut headers = vec![
                    (b":status".to_vec(), status.as_bytes().to_vec()),
                    (b"content-type".to_vec(), b"application/json".to_vec()),
                ];
                if let Some(cc) = cache {
                    headers.push((b"cache-control".to_vec(), cc.into_bytes()));
                }
                CalloutReply::Response(CallResponse {
                    headers,
                    body: body.into_bytes(),
                    trailers: Vec::new(),
                })
            }
        }
    }
}

fn start(policy: &str, idp: &Arc<StubIdp>, workers: usize) -> Sim {
    let options = SimOptions {
        workers,
        start_time_ns: Some(T0_MS * 1_000_000),
        ..SimOptions::default()
    };
    Sim::with_callouts(bootstrap(policy), options, idp.clone()).unwrap()
}

/// One replay input line through the simulator; the output line as JSON.
fn send(sim: &Sim, time_ms: u64, worker: usize, bearer: &str) -> Value {
    let line = json!({"time_ms": time_ms, "worker": worker,
        "downstream_addr": "203.0.113.7:51234",
        "request": {"method": "GET", "path": "/v1/x", "authority": "api.example.com",
                    "headers": [["authorization", format!("Bearer {bearer}")]]}});
    let (request, upstream) = InputLine::parse(&line.to_string())
        .unwrap()
        .into_parts()
        .unwrap();
    let out = OutputLine::from_response(sim.handle(request, &mut StubUpstream(upstream)));
    let out = serde_json::to_value(out).unwrap();
    assert!(out.get("trap").is_none(), "the filter trapped: {out}");
    out
}

fn metric(sim: &Sim, name: &str) -> i64 {
    sim.metrics()
        .into_iter()
        .find(|(n, _)| n == &format!("wasmcustom.{name}"))
        .map_or(0, |(_, v)| v)
}

fn header<'a>(out: &'a Value, name: &str) -> Option<&'a str> {
    out["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

fn error_code(out: &Value) -> String {
    serde_json::from_str::<Value>(out["body"].as_str().unwrap_or(""))
        .map(|b| b["error"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

const POLICY: &str = r#"version: 1
auth:
  jwt_providers:
    - name: idp
      issuer: https://idp.example
      algorithms: [HS256]
      jwks:
        remote:
          cluster: idp
          path: /jwks.json
          refresh_seconds: 60
          min_refresh_seconds: 1
          max_stale_seconds: 30
          unknown_kid_refetch_seconds: 30
routes:
  - { name: api, cluster: origin, auth: { accept: [idp] } }
"#;

fn serving(kids: &[&str]) -> Idp {
    Idp::Serving(vec![(
        "/jwks.json".into(),
        jwks(kids),
        Some("max-age=60".into()),
    )])
}

#[test]
fn three_workers_one_fetch_rotation_and_an_unreachable_idp() {
    let idp = StubIdp::new(serving(&["k1"]));
    let sim = start(POLICY, &idp, 3);
    // Before the first tick (200 ms after configure) no keys: 503, not 401.
    let t1 = token(ISSUER, "k1", "u1", T0_MS);
    let early = send(&sim, T0_MS + 100, 0, &t1);
    assert_eq!(early["status"], 503, "{early}");
    assert_eq!(error_code(&early), "keys_unavailable");
    assert_eq!(header(&early, "retry-after"), Some("5"));
    assert!(idp.calls().is_empty());

    // One fetch for the node; every worker verifies with it; the token is checked once.
    for worker in 0..3 {
        let out = send(&sim, T0_MS + 1_000, worker, &t1);
        assert_eq!(out["status"], 200, "worker {worker}: {out}");
        assert_eq!(out["upstream_cluster"], "origin");
    }
    assert_eq!(
        idp.calls(),
        vec![("idp".into(), "/jwks.json".into(), "idp.example".into())],
        "one fetch for 3 workers + the main VM"
    );
    assert_eq!(metric(&sim, "tollgate_jwks_fetches_total"), 1);
    assert_eq!(metric(&sim, "tollgate_auth_signature_checks_total"), 1);
    assert_eq!(metric(&sim, "tollgate_auth_shared_cache_hits_total"), 2);

    // Rotation: the IdP now signs with k2. The first k2 token is refused and asks for a
    // refetch; after the next tick every worker accepts k2.
    idp.set(serving(&["k1", "k2"]));
    let t2 = token(ISSUER, "k2", "u2", T0_MS + 2_000);
    let first = send(&sim, T0_MS + 2_000, 1, &t2);
    assert_eq!(first["status"], 401, "{first}");
    assert_eq!(metric(&sim, "tollgate_jwks_unknown_kid_refetches_total"), 1);
    for worker in [2, 0] {
        let out = send(&sim, T0_MS + 3_500, worker, &t2);
        assert_eq!(out["status"], 200, "worker {worker}: {out}");
    }
    assert_eq!(idp.calls().len(), 2, "{:?}", idp.calls());
    assert_eq!(metric(&sim, "tollgate_jwks_updates_total"), 2);

    // The IdP goes down. The refresh (due ~62 s) fails; the last good set is used for
    // max_stale (30 s) past its refresh time, then keys are unavailable.
    idp.set(Idp::Down);
    let stale = send(
        &sim,
        T0_MS + 80_000,
        2,
        &token(ISSUER, "k2", "u3", T0_MS + 80_000),
    );
    assert_eq!(stale["status"], 200, "stale keys still verify: {stale}");
    assert!(metric(&sim, "tollgate_jwks_fetch_failures_total") >= 1);
    let late = T0_MS + 100_000;
    let gone = send(&sim, late, 0, &token(ISSUER, "k2", "u4", late));
    assert_eq!(gone["status"], 503, "{gone}");
    assert_eq!(error_code(&gone), "keys_unavailable");
    assert!(metric(&sim, "tollgate_auth_keys_unavailable_total") >= 2);
    // An invalid token is still "invalid", not "unavailable".
    let forged = send(&sim, late, 0, "e30.e30.c2ln");
    assert_eq!(forged["status"], 401);
    // Fetches kept being retried, spaced by the backoff (capped at min_refresh 1 s).
    let failures = metric(&sim, "tollgate_jwks_fetch_failures_total");
    assert!((20..=45).contains(&failures), "{failures} failed fetches");

    // The IdP is back: keys return within a tick or two.
    idp.set(serving(&["k2"]));
    let back = T0_MS + 103_000;
    let ok = send(&sim, back, 1, &token(ISSUER, "k2", "u5", back));
    assert_eq!(ok["status"], 200, "{ok}");
}

#[test]
fn oidc_discovery_through_the_cluster() {
    let issuer = "https://idp.example/realms/tax";
    let discovery = json!({"issuer": issuer,
                           "jwks_uri": "https://keys.idp.example/realms/tax/certs"});
    let idp = StubIdp::new(Idp::Serving(vec![
        (
            "/realms/tax/.well-known/openid-configuration".into(),
            discovery.to_string(),
            None,
        ),
        ("/realms/tax/certs".into(), jwks(&["k1"]), None),
    ]));
    let policy = POLICY
        .replace("issuer: https://idp.example", &format!("issuer: {issuer}"))
        .replace("path: /jwks.json", "discovery: true");
    let sim = start(&policy, &idp, 2);
    let out = send(&sim, T0_MS + 1_000, 1, &token(issuer, "k1", "u1", T0_MS));
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(
        idp.calls(),
        vec![
            (
                "idp".into(),
                "/realms/tax/.well-known/openid-configuration".into(),
                "idp.example".into()
            ),
            (
                "idp".into(),
                "/realms/tax/certs".into(),
                "keys.idp.example".into()
            ),
        ]
    );
}

#[test]
fn forged_tokens_are_checked_once_per_node_and_budgeted_per_client() {
    let idp = StubIdp::new(serving(&["k1"]));
    let policy = POLICY.replace(
        "routes:",
        "  client_budget: { failed_verifications_per_minute: 5 }\nroutes:",
    );
    let sim = start(&policy, &idp, 3);
    let t = T0_MS + 1_000;
    let good = token(ISSUER, "k1", "u1", t);
    // A forged token: right structure and kid, wrong signature.
    let forge = |n: u32| {
        let mut parts: Vec<String> = token(ISSUER, "k1", &format!("x{n}"), t)
            .split('.')
            .map(str::to_string)
            .collect();
        parts[2] = B64.encode([n as u8; 32]);
        parts.join(".")
    };
    // The same forgery on every worker costs one signature check node-wide.
    for worker in 0..3 {
        assert_eq!(send(&sim, t, worker, &forge(0))["status"], 401);
    }
    assert_eq!(metric(&sim, "tollgate_auth_signature_checks_total"), 1);
    assert_eq!(metric(&sim, "tollgate_auth_failed_token_hits_total"), 2);
    // A flood of distinct forgeries from one client: 5 checks, then no more crypto.
    for n in 1..50 {
        assert_eq!(send(&sim, t, n as usize % 3, &forge(n))["status"], 401);
    }
    assert_eq!(metric(&sim, "tollgate_auth_signature_checks_total"), 5);
    assert_eq!(
        metric(&sim, "tollgate_auth_client_budget_refusals_total"),
        45
    );
    // The client's next minute: its valid token verifies.
    let next = T0_MS + 61_000;
    assert_eq!(send(&sim, next, 0, &good)["status"], 200);
}
