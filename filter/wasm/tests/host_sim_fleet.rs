//! Global limits through the compiled `tollgate_filter.wasm`: three host-sim nodes (two
//! worker VMs each, own shared data each) sync on the virtual clock with one stand-in
//! sidecar that sums counters per node as `tollgate-sidecar` does. A Free tenant (60/min)
//! stays within 5% of 60 across the nodes; with the sidecar unreachable every node keeps
//! serving and holds its share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::bootstrap_text;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::{InputLine, OutputLine, StubUpstream};
use tollgate_sim::state::{CallResponse, PendingCallout};
use tollgate_sim::{CalloutReply, Callouts, Sim, SimOptions};

/// A minute boundary: one fixed window is [T0, T0 + 60 s).
const T0_MS: u64 = 1_767_225_600_000;

#[derive(Default)]
struct Fleet {
    up: bool,
    per_counter: HashMap<(String, u64, u64), HashMap<String, u64>>,
    nodes: HashSet<String>,
    batches: u64,
    /// Usage events by id (at-least-once delivery: a repeat must be identical).
    events: HashMap<String, Value>,
}

struct StubSidecar(Mutex<Fleet>);

impl Callouts for StubSidecar {
    fn call(&self, c: &PendingCallout, _address: Option<&str>) -> CalloutReply {
        let mut fleet = self.0.lock().unwrap();
        if !fleet.up {
            return CalloutReply::ConnectFailure;
        }
        fleet.batches += 1;
        let req: Value = serde_json::from_slice(&c.body).unwrap();
        let node = req["node_id"].as_str().unwrap().to_string();
        fleet.nodes.insert(node.clone());
        for event in req["usage"].as_array().unwrap() {
            let id = event["event_id"].as_str().unwrap().to_string();
            if let Some(seen) = fleet.events.insert(id, event.clone()) {
                assert_eq!(&seen, event, "an event id was reused for another event");
            }
        }
        let mut counters = Vec::new();
        for c in req["counters"].as_array().unwrap() {
            let id = (
                c["key"].as_str().unwrap().to_string(),
                c["window_start_ms"].as_u64().unwrap(),
                c["window_ms"].as_u64().unwrap(),
            );
            let per = fleet.per_counter.entry(id.clone()).or_default();
            *per.entry(node.clone()).or_default() += c["delta"].as_u64().unwrap();
            let total: u64 = per.values().sum();
            counters.push(
                json!({"key": id.0, "window_start_ms": id.1, "window_ms": id.2,
                "fleet_total": total, "others": total - per[&node]}),
            );
        }
        let body = json!({"batch_id": req["batch_id"], "nodes": fleet.nodes.len(),
            "counters": counters});
        CalloutReply::Response(CallResponse {
            headers: vec![(b":status".to_vec(), b"200".to_vec())],
            body: body.to_string().into_bytes(),
            trailers: Vec::new(),
        })
    }
}

fn policy(node: usize) -> String {
    let sha: String = Sha256::digest(b"free-key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"version: 1
sidecar: {{ cluster: sidecar, tick: 1s, timeout: 200ms, node_id: edge-{node} }}
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
  - {{ name: api, cluster: origin, auth: {{ accept: [api_key] }}, limits: [tenant-plan] }}
"#
    )
}

fn node(sidecar: &Arc<StubSidecar>, index: usize, start_ms: u64) -> Sim {
    let bootstrap = Bootstrap::parse(&bootstrap_text(
        &policy(index),
        &[("origin", 18081), ("sidecar", 18095)],
    ))
    .unwrap();
    let options = SimOptions {
        workers: 2,
        start_time_ns: Some(start_ms * 1_000_000),
        ..SimOptions::default()
    };
    Sim::with_callouts(bootstrap, options, sidecar.clone()).unwrap()
}

fn send(sim: &Sim, time_ms: u64, worker: usize) -> u64 {
    sim.advance_to(time_ms * 1_000_000);
    let line = json!({"time_ms": time_ms, "worker": worker,
        "request": {"method": "GET", "path": "/v1/x", "authority": "api.example.com",
                    "headers": [["x-api-key", "free-key"]]}});
    let (request, upstream) = InputLine::parse(&line.to_string())
        .unwrap()
        .into_parts()
        .unwrap();
    let out = OutputLine::from_response(sim.handle(request, &mut StubUpstream(upstream)));
    let out = serde_json::to_value(out).unwrap();
    assert!(out.get("trap").is_none(), "the filter trapped: {out}");
    out["status"].as_u64().unwrap()
}

/// Four requests a second to each node through the window; admitted per node.
fn minute(nodes: &[Sim]) -> Vec<u64> {
    let mut admitted = vec![0; nodes.len()];
    for step in 0..240u64 {
        let now = T0_MS + step * 250;
        for (i, sim) in nodes.iter().enumerate() {
            let status = send(sim, now + i as u64, step as usize);
            assert!(status == 200 || status == 429, "status {status}");
            admitted[i] += u64::from(status == 200);
        }
    }
    admitted
}

fn fleet(up: bool) -> (Arc<StubSidecar>, Vec<Sim>) {
    let sidecar = Arc::new(StubSidecar(Mutex::new(Fleet {
        up: true,
        ..Fleet::default()
    })));
    // Start 5 s early so every node has synced (and learnt N = 3) before the window.
    let nodes: Vec<Sim> = (0..3).map(|i| node(&sidecar, i, T0_MS - 5_000)).collect();
    for second in 1..5u64 {
        for sim in &nodes {
            sim.advance_to((T0_MS - 5_000 + second * 1_000) * 1_000_000);
        }
    }
    sidecar.0.lock().unwrap().up = up;
    (sidecar, nodes)
}

#[test]
fn three_nodes_hold_a_free_tenant_to_60_a_minute() {
    let (sidecar, nodes) = fleet(true);
    let admitted = minute(&nodes);
    let total: u64 = admitted.iter().sum();
    eprintln!("host-sim, 3 nodes x 4 req/s: admitted {admitted:?} = {total} of 60");
    assert!((57..=63).contains(&total), "admitted {admitted:?}");
    assert!(sidecar.0.lock().unwrap().batches > 3 * 60 / 2);
    // Every request left one usage record, and each reached the sidecar once it synced.
    for second in 1..=3u64 {
        for sim in &nodes {
            sim.advance_to((T0_MS + 60_000 + second * 1_000) * 1_000_000);
        }
    }
    let fleet = sidecar.0.lock().unwrap();
    assert_eq!(fleet.events.len(), 3 * 240);
    let by_status = |code: u64| {
        fleet
            .events
            .values()
            .filter(|e| e["status"].as_u64() == Some(code))
            .count() as u64
    };
    assert_eq!(by_status(200), total);
    assert_eq!(by_status(429), 3 * 240 - total);
    let denied = fleet.events.values().find(|e| e["status"] == 429).unwrap();
    assert_eq!(denied["tenant"], "t-free");
    assert_eq!(denied["plan"], "free");
    assert_eq!(denied["key_id"], "k-free");
    assert_eq!(denied["route"], "api");
    assert_eq!(denied["method"], "GET");
    assert_eq!(denied["decisions"]["auth"], "api_key");
    assert_eq!(denied["decisions"]["limit"], "deny");
}

#[test]
fn sidecar_unreachable_each_node_serves_and_holds_its_share() {
    let (_sidecar, nodes) = fleet(false);
    let admitted = minute(&nodes);
    // Every request was answered (200 or 429, checked in `minute`); each node 60 / 3.
    assert_eq!(admitted, vec![20, 20, 20]);
}
