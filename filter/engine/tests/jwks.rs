//! Remote JWKS through the engine's key-source state machine, driven the way the adapter
//! drives it (ticks, fetch answers, host time), with several "workers" (engines) sharing
//! one `MemorySharedData` like the VMs of one Envoy node: one fetch per node, refresh by
//! Cache-Control within bounds, unknown-kid refetch and its rate limit, the stale window,
//! "keys unavailable" versus "token invalid", discovery, the fetch lease; and the
//! node-wide token tables (verified once per node, failed tokens, per-client budget).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_engine::auth::jwks_source::{FetchKind, FetchOutcome, KeyFetch};
use tollgate_engine::{Counter, Decision, Engine, MemorySharedData, Policy, RequestHead};

const T0: u64 = 1_767_225_600_000;
const ISSUER: &str = "https://idp.example";

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

fn token_with(kid: &str, key: &[u8], sub: &str, now_ms: u64) -> String {
    let now = now_ms / 1000;
    let claims = json!({"iss": ISSUER, "sub": sub, "iat": now - 10, "exp": now + 3600});
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "kid": kid}).to_string()),
        B64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn token(kid: &str, sub: &str, now_ms: u64) -> String {
    token_with(kid, &secret(kid), sub, now_ms)
}

fn policy(remote: &str, auth_extra: &str) -> String {
    format!(
        r#"
version: 1
auth:
  jwt_providers:
    - name: idp
      issuer: {ISSUER}
      algorithms: [HS256]
      jwks:
        remote: {{ {remote} }}
{auth_extra}
routes:
  - {{ name: api, cluster: origin, auth: {{ accept: [idp] }} }}
"#
    )
}

const REMOTE: &str = "cluster: idp_cluster, path: /jwks.json, refresh_seconds: 60, \
     min_refresh_seconds: 10, max_refresh_seconds: 600, max_stale_seconds: 120, \
     unknown_kid_refetch_seconds: 30, timeout_ms: 2000";

/// Several engines (VMs) over one shared store, like one Envoy node.
struct Node {
    store: MemorySharedData,
    workers: Vec<Engine>,
}

impl Node {
    fn new(policy_text: &str, workers: usize) -> Node {
        Node {
            store: MemorySharedData::default(),
            workers: (0..workers)
                .map(|i| Engine::new(Policy::load(policy_text).unwrap(), 1000 + i as u64))
                .collect(),
        }
    }

    /// Ticks every worker; returns the fetches started, with the worker that owns each.
    fn tick(&self, now_ms: u64) -> Vec<(usize, KeyFetch)> {
        let mut out = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            for f in w.key_tick(now_ms, &self.store).fetches {
                out.push((i, f));
            }
        }
        out
    }

    fn answer(
        &self,
        worker: usize,
        fetch: &KeyFetch,
        outcome: FetchOutcome,
        now_ms: u64,
    ) -> Vec<KeyFetch> {
        self.workers[worker]
            .key_fetch_done(fetch, outcome, now_ms, &self.store)
            .fetches
    }

    fn get(&self, worker: usize, token: &str, now_ms: u64) -> Decision {
        self.get_from(worker, token, now_ms, "203.0.113.7:5000")
    }

    fn get_from(&self, worker: usize, token: &str, now_ms: u64, peer: &str) -> Decision {
        let request = RequestHead::from_pairs([
            (":method", "GET".to_string()),
            (":path", "/v1/x".to_string()),
            (":authority", "api".to_string()),
            ("authorization", format!("Bearer {token}")),
        ])
        .with_peer(Some(peer.to_string()));
        self.workers[worker].on_request_headers(request, now_ms, &self.store)
    }

    /// One tick; exactly one fetch must start node-wide; it is answered with `outcome`.
    fn fetch_once(&self, now_ms: u64, outcome: FetchOutcome) -> KeyFetch {
        let fetches = self.tick(now_ms);
        assert_eq!(fetches.len(), 1, "one fetch per node: {fetches:?}");
        let (worker, fetch) = fetches.into_iter().next().unwrap();
        assert!(self.answer(worker, &fetch, outcome, now_ms).is_empty());
        fetch
    }
}

fn ok(body: &str, headers: &[(&str, &str)]) -> FetchOutcome {
    FetchOutcome::Response {
        status: 200,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn status(status: u16) -> FetchOutcome {
    FetchOutcome::Response {
        status,
        headers: Vec::new(),
        body: b"upstream connect error".to_vec(),
    }
}

fn count(d: &Decision, counter: Counter) -> u64 {
    d.counters()
        .iter()
        .filter(|(c, _)| *c == counter)
        .map(|(_, n)| n)
        .sum()
}

fn code(d: &Decision) -> u16 {
    match d {
        Decision::Forward(_) => 200,
        Decision::Reply(r) => r.status,
    }
}

fn reply_header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    match d {
        Decision::Reply(r) => r
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
        Decision::Forward(_) => None,
    }
}

fn detail(d: &Decision) -> Option<&'static str> {
    match d {
        Decision::Reply(r) => r.detail,
        Decision::Forward(_) => None,
    }
}

#[test]
fn one_fetch_per_node_and_every_worker_verifies_with_it() {
    let node = Node::new(&policy(REMOTE, ""), 3);
    let t = token("k1", "u1", T0);
    let fetches = node.tick(T0);
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    let (owner, fetch) = &fetches[0];
    assert_eq!(fetch.kind, FetchKind::Jwks);
    assert_eq!(fetch.cluster, "idp_cluster");
    assert_eq!(fetch.path, "/jwks.json");
    assert_eq!(
        fetch.authority, "idp.example",
        "the issuer's host by default"
    );
    assert_eq!(fetch.timeout_ms, 2000);
    // Nothing fetched yet: keys unavailable, not an invalid token.
    let before = node.get(0, &t, T0 + 1);
    assert_eq!(code(&before), 503);
    assert_eq!(reply_header(&before, "retry-after"), Some("5"));
    assert_eq!(count(&before, Counter::KeysUnavailable), 1);
    assert_eq!(count(&before, Counter::SignatureChecks), 0);
    match &before {
        Decision::Reply(r) => {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["error"], "keys_unavailable");
        }
        Decision::Forward(_) => panic!("forwarded without keys"),
    }
    // Other workers do not fetch while the lease is held.
    assert!(node.tick(T0 + 200).is_empty());
    node.answer(*owner, fetch, ok(&jwks(&["k1"]), &[]), T0 + 300);
    // Every worker picks the set up from shared data; the token is verified once.
    let mut checks = 0;
    let mut shared_hits = 0;
    for w in 0..3 {
        let d = node.get(w, &t, T0 + 400);
        assert_eq!(code(&d), 200, "worker {w}: {d:?}");
        checks += count(&d, Counter::SignatureChecks);
        shared_hits += count(&d, Counter::SharedTokenCacheHits);
    }
    assert_eq!(checks, 1, "each distinct token is verified once per node");
    assert_eq!(shared_hits, 2);
    // Nothing is due before the refresh interval (60 s, no Cache-Control).
    assert!(node.tick(T0 + 59_000).is_empty());
    assert_eq!(node.tick(T0 + 60_300).len(), 1);
}

#[test]
fn refresh_honours_cache_control_within_the_bounds() {
    // (response headers, expected refresh interval in seconds)
    let cases: [(&[(&str, &str)], u64); 6] = [
        (&[], 60),
        (&[("cache-control", "public, max-age=300")], 300),
        (&[("cache-control", "max-age=300"), ("age", "100")], 200),
        (&[("cache-control", "max-age=3")], 10),
        (&[("cache-control", "max-age=100000")], 600),
        (&[("cache-control", "no-store")], 10),
    ];
    for (headers, seconds) in cases {
        let node = Node::new(&policy(REMOTE, ""), 2);
        node.fetch_once(T0, ok(&jwks(&["k1"]), headers));
        let due = T0 + seconds * 1000;
        assert!(node.tick(due - 1000).is_empty(), "{headers:?}: too early");
        let fetches = node.tick(due);
        assert_eq!(fetches.len(), 1, "{headers:?}: due after {seconds} s");
    }
}

#[test]
fn an_unchanged_document_keeps_its_generation() {
    let node = Node::new(&policy(REMOTE, ""), 2);
    node.fetch_once(T0, ok(&jwks(&["k1"]), &[]));
    let fetches = node.tick(T0 + 60_000);
    let (worker, fetch) = &fetches[0];
    let work = node.workers[*worker].key_fetch_done(
        fetch,
        ok(&jwks(&["k1"]), &[]),
        T0 + 60_000,
        &node.store,
    );
    assert!(
        !work.counters.contains(&(Counter::JwksUpdates, 1)),
        "{work:?}"
    );
    let fetches = node.tick(T0 + 120_000);
    let (worker, fetch) = &fetches[0];
    let work = node.workers[*worker].key_fetch_done(
        fetch,
        ok(&jwks(&["k1", "k2"]), &[]),
        T0 + 120_000,
        &node.store,
    );
    assert!(work.counters.contains(&(Counter::JwksUpdates, 1)));
}

#[test]
fn an_unknown_kid_triggers_one_rate_limited_refetch() {
    let node = Node::new(&policy(REMOTE, ""), 3);
    node.fetch_once(T0, ok(&jwks(&["k1"]), &[("cache-control", "max-age=600")]));
    let t = T0 + 1_000;
    // The IdP rotated: tokens now name k2, which this node has not seen.
    let rotated = token("k2", "u2", t);
    let first = node.get(1, &rotated, t);
    assert_eq!(code(&first), 401, "{first:?}");
    assert_eq!(detail(&first), Some("unknown_key_id"));
    assert_eq!(count(&first, Counter::JwksUnknownKidRefetches), 1);
    assert_eq!(count(&first, Counter::SignatureChecks), 0);
    // Another worker meets the same kid: the node already asked, no second request.
    let second = node.get(2, &rotated, t + 300);
    assert_eq!(count(&second, Counter::JwksUnknownKidRefetches), 0);
    // The next tick fetches although the set is far from its refresh time.
    node.fetch_once(t + 1_000, ok(&jwks(&["k1", "k2"]), &[]));
    for w in 0..3 {
        assert_eq!(code(&node.get(w, &rotated, t + 1_500)), 200, "worker {w}");
    }
    // A kid that does not exist: no second refetch within 30 s...
    let bogus = token("k9", "u9", t);
    let d = node.get(0, &bogus, t + 2_000);
    assert_eq!(code(&d), 401);
    assert_eq!(count(&d, Counter::JwksUnknownKidRefetches), 0);
    assert!(node.tick(t + 3_000).is_empty());
    // ...and one once the interval has passed.
    let d = node.get(0, &bogus, t + 31_000);
    assert_eq!(count(&d, Counter::JwksUnknownKidRefetches), 1);
    assert_eq!(node.tick(t + 32_000).len(), 1);
}

#[test]
fn a_new_set_fetched_by_another_worker_is_used_at_once() {
    let node = Node::new(&policy(REMOTE, ""), 2);
    node.fetch_once(T0, ok(&jwks(&["k1"]), &[]));
    assert_eq!(code(&node.get(0, &token("k1", "a", T0), T0 + 100)), 200);
    // Worker 1 fetches a rotated set (refresh due); worker 0 has not ticked since.
    let fetches = node.tick(T0 + 60_000);
    let (owner, fetch) = &fetches[0];
    node.answer(*owner, fetch, ok(&jwks(&["k2"]), &[]), T0 + 60_000);
    let other = 1 - owner;
    let d = node.get(other, &token("k2", "b", T0 + 60_000), T0 + 60_500);
    assert_eq!(code(&d), 200, "{d:?}");
}

#[test]
fn an_unreachable_idp_leaves_stale_keys_then_keys_unavailable() {
    let node = Node::new(&policy(REMOTE, ""), 2);
    node.fetch_once(T0, ok(&jwks(&["k1"]), &[]));
    // Refresh due at +60 s; the IdP is down from then on (connect failure → 503).
    let mut t = T0 + 60_000;
    let mut failures = 0;
    while t <= T0 + 175_000 {
        for (worker, fetch) in node.tick(t) {
            let work = node.workers[worker].key_fetch_done(&fetch, status(503), t, &node.store);
            assert!(work.counters.contains(&(Counter::JwksFetchFailures, 1)));
            failures += 1;
        }
        t += 1_000;
    }
    // Backoff from 1 s doubling, capped at the 10 s lower bound: ~15 attempts, not 116.
    assert!((10..=20).contains(&failures), "{failures} attempts");
    // Stale but within max_stale (120 s past the refresh time): still verifying.
    let stale = node.get(0, &token("k1", "u1", T0 + 170_000), T0 + 170_000);
    assert_eq!(code(&stale), 200, "{stale:?}");
    // Past it: keys unavailable, whatever the token.
    let later = T0 + 181_000;
    let d = node.get(1, &token("k1", "u2", later), later);
    assert_eq!(code(&d), 503, "{d:?}");
    assert_eq!(detail(&d), Some("keys_unavailable"));
    // A token the node verified before is still good until it expires (cached).
    let cached = node.get(0, &token("k1", "u1", T0 + 170_000), later);
    assert_eq!(code(&cached), 200);
    // The IdP is back: the next attempt succeeds and tokens verify again.
    let fetches = node.tick(later + 10_000);
    let (worker, fetch) = &fetches[0];
    node.answer(*worker, fetch, ok(&jwks(&["k1"]), &[]), later + 10_000);
    let d = node.get(1, &token("k1", "u3", later), later + 10_500);
    assert_eq!(code(&d), 200);
}

#[test]
fn keys_unavailable_is_not_token_invalid() {
    let node = Node::new(&policy(REMOTE, ""), 1);
    // Before any key set: malformed, expired or foreign tokens are still 401 (cheap
    // checks come first); only a token that could be valid waits for keys.
    assert_eq!(code(&node.get(0, "not.a.token", T0)), 401);
    let expired = token("k1", "u1", T0 - 7_200_000);
    assert_eq!(code(&node.get(0, &expired, T0)), 401);
    assert_eq!(detail(&node.get(0, &expired, T0)), Some("expired"));
    assert_eq!(code(&node.get(0, &token("k1", "u1", T0), T0)), 503);
    // Configured to answer 401 instead.
    let remote = format!("{REMOTE}, keys_unavailable: {{ status: 401 }}");
    let node = Node::new(&policy(&remote, ""), 1);
    let d = node.get(0, &token("k1", "u1", T0), T0);
    assert_eq!(code(&d), 401);
    assert_eq!(detail(&d), Some("keys_unavailable"));
    assert!(
        reply_header(&d, "www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // Or a 502 without Retry-After.
    let remote = format!("{REMOTE}, keys_unavailable: {{ status: 502, retry_after_seconds: 0 }}");
    let node = Node::new(&policy(&remote, ""), 1);
    let d = node.get(0, &token("k1", "u1", T0), T0);
    assert_eq!(code(&d), 502);
    assert_eq!(reply_header(&d, "retry-after"), None);
}

#[test]
fn unusable_documents_are_failures_and_keep_the_last_good_set() {
    for bad in [
        ok("<html>", &[]),
        ok(r#"{"keys": "no"}"#, &[]),
        // Only keys Tollgate cannot use for HS256.
        ok(
            r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"},{"kty":"oct","use":"enc","k":"AAAA"}]}"#,
            &[],
        ),
        status(404),
        FetchOutcome::Failed("reset".into()),
    ] {
        let node = Node::new(&policy(REMOTE, ""), 1);
        node.fetch_once(T0, ok(&jwks(&["k1"]), &[]));
        let refresh = T0 + 60_000;
        let fetches = node.tick(refresh);
        let (w, f) = &fetches[0];
        let work = node.workers[*w].key_fetch_done(f, bad.clone(), refresh, &node.store);
        assert!(
            work.counters.contains(&(Counter::JwksFetchFailures, 1)),
            "{bad:?}"
        );
        let d = node.get(0, &token("k1", "u1", refresh), refresh + 1_000);
        assert_eq!(code(&d), 200, "the last good set stays after {bad:?}");
    }
    // A document with one usable key among unusable ones is accepted.
    let node = Node::new(&policy(REMOTE, ""), 1);
    let mixed = json!({"keys": [
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "oct", "kid": "k1", "k": B64.encode(secret("k1"))}]});
    node.fetch_once(T0, ok(&mixed.to_string(), &[]));
    assert_eq!(code(&node.get(0, &token("k1", "u1", T0), T0 + 1)), 200);
}

#[test]
fn oidc_discovery_finds_the_jwks_through_the_cluster() {
    let text = policy("cluster: idp_cluster, discovery: true", "").replace(
        "issuer: https://idp.example",
        "issuer: https://idp.example/realms/tax",
    );
    let node = Node::new(&text, 2);
    let fetches = node.tick(T0);
    assert_eq!(fetches.len(), 1);
    let (w, discovery) = &fetches[0];
    assert_eq!(discovery.kind, FetchKind::Discovery);
    assert_eq!(
        discovery.path,
        "/realms/tax/.well-known/openid-configuration"
    );
    assert_eq!(discovery.authority, "idp.example");
    // The wrong issuer in the document is refused.
    let foreign = json!({"issuer": "https://evil.example", "jwks_uri": "https://evil.example/k"});
    let work =
        node.workers[*w].key_fetch_done(discovery, ok(&foreign.to_string(), &[]), T0, &node.store);
    assert!(work.fetches.is_empty());
    assert!(work.counters.contains(&(Counter::JwksFetchFailures, 1)));
    // After the backoff, a good document leads straight to the JWKS fetch.
    let fetches = node.tick(T0 + 1_000);
    let (w, discovery) = &fetches[0];
    let doc = json!({"issuer": "https://idp.example/realms/tax",
                     "jwks_uri": "https://keys.idp.example/realms/tax/certs?v=2"});
    let next = node.answer(*w, discovery, ok(&doc.to_string(), &[]), T0 + 1_000);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kind, FetchKind::Jwks);
    assert_eq!(next[0].path, "/realms/tax/certs?v=2");
    assert_eq!(next[0].authority, "keys.idp.example");
    assert_eq!(next[0].cluster, "idp_cluster");
    // The token's issuer is the realm URL.
    node.answer(*w, &next[0], ok(&jwks(&["k1"]), &[]), T0 + 1_100);
    let now = T0 + 2_000;
    let claims =
        json!({"iss": "https://idp.example/realms/tax", "sub": "u", "exp": now / 1000 + 60});
    let input = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"HS256","kid":"k1"}"#),
        B64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret("k1")).unwrap();
    mac.update(input.as_bytes());
    let t = format!("{input}.{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(code(&node.get(1, &t, now)), 200);
    // The next refresh reuses the discovered location (no second discovery).
    let fetches = node.tick(T0 + 1_100 + 300_000);
    assert_eq!(fetches[0].1.kind, FetchKind::Jwks);
}

#[test]
fn a_fetcher_that_vanishes_only_delays_the_next_fetch() {
    let node = Node::new(&policy(REMOTE, ""), 2);
    let fetches = node.tick(T0);
    assert_eq!(fetches.len(), 1);
    // The owner never answers (its VM went away). The lease is timeout + 1 s.
    assert!(node.tick(T0 + 2_900).is_empty());
    let again = node.tick(T0 + 3_000);
    assert_eq!(again.len(), 1, "{again:?}");
}

#[test]
fn forged_tokens_cost_one_check_and_spend_the_client_budget() {
    let extra = "  client_budget: { failed_verifications_per_minute: 3 }";
    let node = Node::new(&policy(REMOTE, extra), 2);
    node.fetch_once(T0, ok(&jwks(&["k1"]), &[]));
    let t = T0 + 1_000;
    let forged = |n: u32| {
        token_with(
            "k1",
            b"attacker-secret-0123456789abcdef",
            &format!("x{n}"),
            t,
        )
    };
    let d = node.get(0, &forged(0), t);
    assert_eq!(code(&d), 401);
    assert_eq!(count(&d, Counter::SignatureChecks), 1);
    assert_eq!(count(&d, Counter::BadSignatures), 1);
    // The same forged token again, on another worker: remembered, no crypto.
    let d = node.get(1, &forged(0), t);
    assert_eq!(code(&d), 401);
    assert_eq!(detail(&d), Some("recently_failed"));
    assert_eq!(count(&d, Counter::FailedTokenHits), 1);
    assert_eq!(count(&d, Counter::SignatureChecks), 0);
    // Two more distinct forgeries spend the budget of 3; the fourth costs no crypto.
    for n in 1..3 {
        assert_eq!(
            count(
                &node.get(n as usize % 2, &forged(n), t),
                Counter::SignatureChecks
            ),
            1
        );
    }
    let d = node.get(0, &forged(3), t);
    assert_eq!(code(&d), 401);
    assert_eq!(detail(&d), Some("client_budget_spent"));
    assert_eq!(count(&d, Counter::ClientBudgetRefusals), 1);
    assert_eq!(count(&d, Counter::SignatureChecks), 0);
    // That client's new tokens wait for the next minute; other clients are unaffected.
    assert_eq!(code(&node.get(1, &token("k1", "v", t), t)), 401);
    let other = node.get_from(1, &token("k1", "w", t), t, "198.51.100.9:1");
    assert_eq!(code(&other), 200);
    let next_minute = T0 + 60_000;
    assert_eq!(code(&node.get(0, &token("k1", "v", t), next_minute)), 200);
}
