//! Global limits across three gateway nodes through the engine, with an in-test stand-in
//! for the sidecar's counter arithmetic (the real sidecar has its own tests): each node
//! syncs once a second on the virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tollgate_engine::fleet::{self, SyncRequest};
use tollgate_engine::{Decision, Engine, MemorySharedData, Policy, RequestHead};

/// A minute boundary, so one fixed window spans [T0, T0 + 60 s).
const T0: u64 = 1_767_225_600_000;

fn policy() -> String {
    let sha = hex_sha("free-key");
    format!(
        r#"
version: 1
sidecar: {{ cluster: sidecar }}
auth:
  api_keys:
    keys:
      - {{ id: k-free, sha256: "{sha}", tenant: t-free, plan: free }}
rate_limits:
  plans:
    free: {{ rate: 60, per: 1m }}
  limits:
    - {{ name: tenant-plan, key: [tenant], plan: true, global: true }}
routes:
  - name: api
    cluster: origin
    auth: {{ accept: [api_key] }}
    limits: [tenant-plan]
"#
    )
}

fn hex_sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Node {
    id: String,
    engine: Engine,
    store: MemorySharedData,
    batches: u64,
}

impl Node {
    fn decide(&self, now: u64, key: &str) -> Decision {
        let request = RequestHead::from_pairs(vec![
            (":method", "GET".to_string()),
            (":path", "/v1/x".to_string()),
            ("x-api-key", key.to_string()),
        ]);
        self.engine.on_request_headers(request, now, &self.store)
    }

    fn send(&self, now: u64) -> bool {
        matches!(self.decide(now, "free-key"), Decision::Forward(_))
    }
}

/// Sums counters per (key, window) and per node, answers with the others' share.
#[derive(Default)]
struct FakeSidecar {
    per_node: HashMap<(String, u64, u64), HashMap<String, u64>>,
    nodes: std::collections::HashSet<String>,
}

impl FakeSidecar {
    fn sync(&mut self, body: &[u8]) -> Vec<u8> {
        let req: SyncRequest = serde_json::from_slice(body).unwrap();
        self.nodes.insert(req.node_id.clone());
        let mut counters = Vec::new();
        for c in &req.counters {
            let per = self
                .per_node
                .entry((c.key.clone(), c.window_start_ms, c.window_ms))
                .or_default();
            *per.entry(req.node_id.clone()).or_default() += c.delta;
            let total: u64 = per.values().sum();
            let own = per[&req.node_id];
            counters.push(serde_json::json!({
                "key": c.key, "window_start_ms": c.window_start_ms, "window_ms": c.window_ms,
                "fleet_total": total, "others": total - own,
            }));
        }
        serde_json::json!({"batch_id": req.batch_id, "nodes": self.nodes.len(), "counters": counters})
            .to_string()
            .into_bytes()
    }
}

fn nodes() -> Vec<Node> {
    (0..3)
        .map(|i| Node {
            id: format!("node-{i}"),
            engine: Engine::new(Policy::load(&policy()).unwrap(), i),
            store: MemorySharedData::default(),
            batches: 0,
        })
        .collect()
}

fn sync(node: &mut Node, sidecar: Option<&mut FakeSidecar>, now: u64) {
    let limits = fleet::FleetLimits::default();
    node.batches += 1;
    let batch_id = format!("{}-{}", node.id, node.batches);
    let body = fleet::take_batch(&node.store, &limits, &node.id, &batch_id, now).unwrap();
    if let Some(sidecar) = sidecar {
        let answer = sidecar.sync(&body);
        fleet::apply_response(&node.store, &limits, &answer, now).unwrap();
    }
}

/// Each node gets `per_second` requests a second for a minute; returns the total
/// admitted in that window.
fn run_minute(nodes: &mut [Node], sidecar: &mut FakeSidecar, up: impl Fn(u64) -> bool) -> u64 {
    let mut admitted = 0;
    for second in 0..60 {
        for step in 0..4 {
            let now = T0 + second * 1000 + step * 250;
            for node in nodes.iter() {
                admitted += u64::from(node.send(now));
            }
        }
        let now = T0 + second * 1000 + 999;
        for node in nodes.iter_mut() {
            let reachable = up(second);
            sync(node, reachable.then_some(&mut *sidecar), now);
        }
    }
    admitted
}

/// Two rounds of syncs before the window, so every node knows the fleet has three members.
fn warm_up(nodes: &mut [Node], sidecar: &mut FakeSidecar) {
    for round in 0..2 {
        for node in nodes.iter_mut() {
            sync(node, Some(&mut *sidecar), T0 - 5_000 + round);
        }
    }
}

#[test]
fn three_nodes_hold_a_free_tenant_to_60_a_minute() {
    let mut nodes = nodes();
    let mut sidecar = FakeSidecar::default();
    warm_up(&mut nodes, &mut sidecar);
    let admitted = run_minute(&mut nodes, &mut sidecar, |_| true);
    eprintln!("3 nodes, 12 req/s offered: admitted {admitted} of 60 in one window");
    // 12 requests a second offered, 60 a minute allowed: within 5%.
    assert!((57..=63).contains(&admitted), "admitted {admitted}");
}

#[test]
fn sidecar_away_each_node_keeps_its_share() {
    let mut nodes = nodes();
    let mut sidecar = FakeSidecar::default();
    warm_up(&mut nodes, &mut sidecar);
    // The sidecar never answers in this window: each node admits 60 / 3.
    let admitted = run_minute(&mut nodes, &mut sidecar, |_| false);
    assert_eq!(admitted, 60);
    for node in &nodes {
        let fresh = fleet::fleet_state(&node.store).unwrap();
        assert_eq!(fresh.nodes, 3);
    }
}

#[test]
fn global_limit_without_sidecar_names_the_field() {
    let text = policy().replace("sidecar: { cluster: sidecar }\n", "");
    let errors = Policy::load(&text).unwrap_err();
    assert_eq!(errors.0[0].path, "rate_limits.limits[0].global");
}

#[test]
fn every_request_of_a_tenant_leaves_one_usage_record() {
    let node = &nodes()[0];
    // Never synced, so this node holds the whole limit: 60 admitted, the 61st refused.
    for i in 0..61 {
        let (usage, status) = match node.decide(T0 + i, "free-key") {
            Decision::Forward(plan) => (plan.usage, 200),
            Decision::Reply(reply) => (reply.usage, reply.status),
        };
        let flush = node
            .engine
            .finish_usage(*usage.unwrap(), status, T0 + i + 3, &node.store);
        assert!(flush.warning.is_none());
    }
    // No tenant, no record.
    match node.decide(T0 + 100, "wrong-key") {
        Decision::Reply(reply) => assert_eq!((reply.status, reply.usage), (401, None)),
        Decision::Forward(_) => panic!("a wrong key was forwarded"),
    }
    // Fewer than `FLUSH_EVENTS` records stay in the VM until its timer flushes them.
    assert_eq!(fleet::usage_queue(&node.store).unwrap(), (0, 0));
    let flush = node.engine.flush_usage(&node.store);
    assert_eq!(
        flush.counters,
        vec![(tollgate_engine::Counter::UsageRecorded, 61)]
    );
    let body = fleet::take_batch(
        &node.store,
        &fleet::FleetLimits::default(),
        "n0",
        "b1",
        T0 + 1_000,
    )
    .unwrap();
    let batch: SyncRequest = serde_json::from_slice(&body).unwrap();
    assert_eq!(batch.usage.len(), 61);
    let ids: std::collections::HashSet<_> = batch.usage.iter().map(|e| &e.event_id).collect();
    assert_eq!(ids.len(), 61, "event ids are unique");
    let (first, last) = (&batch.usage[0], &batch.usage[60]);
    assert_eq!(
        (
            first.tenant.as_str(),
            first.plan.as_str(),
            first.key_id.as_deref()
        ),
        ("t-free", "free", Some("k-free"))
    );
    assert_eq!(
        (first.route.as_str(), first.method.as_str()),
        ("api", "GET")
    );
    assert_eq!(
        (first.timestamp_ms, first.status, first.latency_ms),
        (T0, 200, 3)
    );
    assert_eq!(first.decisions.auth.as_deref(), Some("api_key"));
    assert_eq!(first.decisions.limit.as_deref(), Some("allow"));
    assert_eq!(
        (last.status, last.decisions.limit.as_deref()),
        (429, Some("deny"))
    );
}

#[test]
fn plan_overrides_from_the_sidecar_apply_until_removed() {
    let node = &nodes()[0];
    let limits = fleet::FleetLimits::default();
    let answer = |batch: &str, overrides: serde_json::Value| {
        fleet::take_batch(&node.store, &limits, "n0", batch, T0).unwrap();
        let body = serde_json::json!({"batch_id": batch, "nodes": 1, "overrides": overrides,
            "override_seq": 1});
        fleet::apply_response(&node.store, &limits, body.to_string().as_bytes(), T0).unwrap();
    };
    answer(
        "b1",
        serde_json::json!([{"tenant": "t-free", "plan": "free", "limits": {"tenant-plan": 5},
            "seq": 1, "updated_at_ms": 1, "deleted": false}]),
    );
    let admitted = (0..10).filter(|i| node.send(T0 + i)).count();
    assert_eq!(admitted, 5);
    // Removed: the plan's 60 a minute again (a new quota, so a new local bucket).
    answer(
        "b2",
        serde_json::json!([{"tenant": "t-free", "plan": "free", "limits": {},
            "seq": 2, "updated_at_ms": 2, "deleted": true}]),
    );
    let admitted = (0..10).filter(|i| node.send(T0 + 20 + i)).count();
    assert_eq!(admitted, 10);
}
