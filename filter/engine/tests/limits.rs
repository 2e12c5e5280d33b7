//! Rate limits through the engine: plans, several limits at once, several workers on one
//! shared store, refill on the virtual clock, bounded keys, shadow mode, answers, and
//! fail-open when shared data breaks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use sha2::{Digest, Sha256};
use tollgate_engine::{Decision, Engine, MemorySharedData, Policy, RequestHead};

const T0: u64 = 1_767_225_600_000;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn policy() -> String {
    let key = |k: &str| hex(&Sha256::digest(k.as_bytes()));
    format!(
        r#"
version: 1
auth:
  api_keys:
    keys:
      - {{ id: k-free, sha256: "{}", tenant: t-free, plan: free }}
      - {{ id: k-pro, sha256: "{}", tenant: t-pro, plan: pro }}
      - {{ id: k-upgraded, sha256: "{}", tenant: t-upgraded, plan: free }}
      - {{ id: k-shadow, sha256: "{}", tenant: t-shadow, plan: free }}
      - {{ id: k-none, sha256: "{}", tenant: t-none }}
rate_limits:
  plans:
    free: {{ rate: 60, per: 1m }}
    starter: {{ rate: 300, per: 1m }}
    pro: {{ rate: 1000, per: 1m }}
    enterprise: {{ rate: 5000, per: 1m }}
  tenant_overrides:
    t-upgraded: {{ plan: pro }}
    t-shadow: {{ shadow: true }}
  limits:
    - {{ name: tenant-plan, key: [tenant], plan: true }}
    - {{ name: per-ip, key: [client_ip], rate: 1000, per: 1m }}
    - {{ name: per-ip-small, key: [client_ip], rate: 3, per: 10s, max_keys: 8 }}
    - {{ name: header-shadow, key: [header:x-device], rate: 1, per: 1h, shadow: true }}
  headers: {{ on_allowed: true, legacy: true }}
routes:
  - name: api
    match: {{ path: {{ prefix: /v1/ }} }}
    cluster: origin
    auth: {{ accept: [api_key] }}
    limits: [tenant-plan, per-ip]
  - name: expensive
    match: {{ path: {{ prefix: /bulk }} }}
    cluster: origin
    auth: {{ accept: [api_key] }}
    limits: [{{ name: tenant-plan, cost: 10 }}]
  - name: public
    match: {{ path: {{ prefix: /public }} }}
    cluster: origin
    limits: [per-ip-small, header-shadow]
"#,
        key("free-key"),
        key("pro-key"),
        key("upgraded-key"),
        key("shadow-key"),
        key("none-key")
    )
}

struct Node {
    workers: Vec<Engine>,
    store: MemorySharedData,
}

fn node(workers: usize) -> Node {
    Node {
        workers: (0..workers)
            .map(|i| Engine::new(Policy::load(&policy()).unwrap(), i as u64))
            .collect(),
        store: MemorySharedData::default(),
    }
}

impl Node {
    fn send(
        &self,
        worker: usize,
        path: &str,
        api_key: Option<&str>,
        ip: &str,
        now: u64,
    ) -> Decision {
        let mut pairs = vec![(":method", "GET".to_string()), (":path", path.to_string())];
        if let Some(k) = api_key {
            pairs.push(("x-api-key", k.to_string()));
        }
        let request = RequestHead::from_pairs(pairs).with_peer(Some(format!("{ip}:5555")));
        self.workers[worker % self.workers.len()].on_request_headers(request, now, &self.store)
    }

    fn count_allowed(&self, n: usize, path: &str, key: Option<&str>, ip: &str, now: u64) -> usize {
        (0..n)
            .filter(|i| matches!(self.send(*i, path, key, ip, now), Decision::Forward(_)))
            .count()
    }
}

#[test]
fn free_tenant_gets_exactly_60_across_workers_and_request_61_is_refused() {
    let n = node(3);
    assert_eq!(
        n.count_allowed(60, "/v1/x", Some("free-key"), "10.0.0.1", T0),
        60
    );
    let Decision::Reply(r) = n.send(1, "/v1/x", Some("free-key"), "10.0.0.1", T0 + 500) else {
        panic!("request 61 must be refused")
    };
    assert_eq!(r.status, 429);
    let header = |k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        header("ratelimit").as_deref(),
        Some("\"tenant-plan\";r=0;t=60")
    );
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("60"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    // One token back per second.
    assert_eq!(
        n.count_allowed(2, "/v1/x", Some("free-key"), "10.0.0.1", T0 + 1000),
        1
    );
    assert_eq!(
        n.count_allowed(100, "/v1/x", Some("free-key"), "10.0.0.1", T0 + 61_000),
        60
    );
}

#[test]
fn plans_and_overrides_decide_the_rate() {
    let n = node(2);
    assert_eq!(
        n.count_allowed(1200, "/v1/x", Some("pro-key"), "10.0.0.2", T0),
        1000
    );
    // Credentials say free, the tenant override says pro.
    assert_eq!(
        n.count_allowed(1200, "/v1/x", Some("upgraded-key"), "10.0.0.3", T0),
        1000
    );
    // No plan and no default plan: the plan limit does not apply (per-ip still does).
    assert_eq!(
        n.count_allowed(1200, "/v1/x", Some("none-key"), "10.0.0.4", T0),
        1000
    );
}

#[test]
fn route_cost_takes_several_tokens() {
    let n = node(1);
    assert_eq!(
        n.count_allowed(10, "/bulk", Some("free-key"), "10.0.0.5", T0),
        6
    );
}

#[test]
fn all_limits_must_pass() {
    // The per-IP limit (1000/min) binds before the pro tenant's 1000: share one IP across
    // two pro-plan tenants.
    let n = node(2);
    let a = n.count_allowed(600, "/v1/x", Some("pro-key"), "192.0.2.9", T0);
    let b = n.count_allowed(600, "/v1/x", Some("upgraded-key"), "192.0.2.9", T0);
    assert_eq!((a, b), (600, 400));
}

#[test]
fn tenant_in_shadow_mode_is_marked_never_blocked() {
    let n = node(2);
    let mut marked = 0;
    for i in 0..100 {
        match n.send(i, "/v1/x", Some("shadow-key"), "10.0.0.6", T0) {
            Decision::Forward(p) => {
                if p.set_headers
                    .iter()
                    .any(|(k, v)| k == "x-tollgate-shadow-limited" && v == "tenant-plan")
                {
                    marked += 1;
                }
            }
            Decision::Reply(r) => panic!("shadow tenant blocked: {}", r.status),
        }
    }
    assert_eq!(marked, 40);
}

#[test]
fn allowed_responses_carry_ratelimit_fields() {
    let n = node(1);
    let Decision::Forward(plan) = n.send(0, "/v1/x", Some("free-key"), "10.0.0.7", T0) else {
        panic!()
    };
    let get = |k: &str| {
        plan.response_headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("ratelimit-policy"),
        Some("\"tenant-plan\";q=60;w=60, \"per-ip\";q=1000;w=60")
    );
    assert_eq!(get("ratelimit"), Some("\"tenant-plan\";r=59;t=1"));
    assert_eq!(get("x-ratelimit-remaining"), Some("59"));
}

#[test]
fn a_flood_of_client_ips_cannot_grow_the_table() {
    let n = node(2);
    for i in 0..5000u32 {
        let ip = format!("198.51.{}.{}", i / 256, i % 256);
        n.send(i as usize, "/public/x", None, &ip, T0 + u64::from(i));
    }
    // per-ip-small: max_keys 8 → 2 slots; header-shadow has no header → no state.
    let slots = n.store.len();
    assert!(slots <= 2, "{slots} slots");
    assert!(n.store.bytes() < 512, "{} bytes", n.store.bytes());
}

#[test]
fn per_ip_limit_holds_while_the_table_has_room() {
    let n = node(2);
    assert_eq!(n.count_allowed(5, "/public/a", None, "203.0.113.1", T0), 3);
    assert_eq!(n.count_allowed(5, "/public/a", None, "203.0.113.2", T0), 3);
    assert_eq!(
        n.count_allowed(5, "/public/a", None, "203.0.113.1", T0 + 3_334),
        1
    );
}

#[test]
fn broken_shared_data_fails_open_and_is_counted() {
    let n = node(1);
    n.store.broken.set(true);
    for _ in 0..100 {
        let Decision::Forward(plan) = n.send(0, "/v1/x", Some("free-key"), "10.0.0.8", T0) else {
            panic!("must fail open")
        };
        assert!(
            plan.counters
                .iter()
                .any(|(c, v)| *c == tollgate_engine::Counter::LimiterFailOpen && *v == 2)
        );
    }
}

#[test]
fn bad_limit_policies_name_the_field() {
    let bad = r#"
version: 1
rate_limits:
  limits:
    - { name: a, key: [tenant, ip], rate: 0, per: 1w }
routes:
  - { name: r, cluster: c, limits: [a, nope] }
"#;
    let errors = Policy::load(bad).unwrap_err().to_string();
    assert!(errors.contains("rate_limits.limits[0].key[1]"), "{errors}");
    assert!(
        errors.contains("rate_limits.limits[0].rate: must be > 0"),
        "{errors}"
    );
    assert!(
        errors.contains("routes[0].limits[1]: no limit named \"nope\""),
        "{errors}"
    );
}
