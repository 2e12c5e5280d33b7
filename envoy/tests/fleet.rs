//! Global limits and usage metering against a real `tollgate-sidecar` process.
//!
//! - Three host-sim nodes (the compiled filter, two worker VMs each, own shared data each)
//!   on a virtual clock: a Free tenant (60/min) stays within 5% of 60 per minute; the
//!   sidecar is `kill -9`ed mid-stream and stays down for 30 s of the nodes' time; no
//!   request fails because of it, limits still hold, and afterwards the sidecar's usage
//!   rollup counts every request exactly once (acknowledged batches survived the kill,
//!   re-sent ones counted once, the outage's records delivered late).
//! - Three Envoy instances against one sidecar, in real time, for one aligned minute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_envoy_tests::sidecar::{SidecarProcess, sidecar_data_dir};
use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig, free_port};
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::{InputLine, OutputLine, StubUpstream};
use tollgate_sim::{Sim, SimOptions};

const MINUTE_MS: u64 = 60_000;
const TENANT: &str = "t-free";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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
      - {{ id: k-free, sha256: "{sha}", tenant: {TENANT}, plan: free }}
rate_limits:
  plans:
    free: {{ rate: 60, per: 1m }}
  limits:
    - {{ name: tenant-plan, key: [tenant], plan: true, global: true }}
routes:
  - {{ name: news, match: {{ path: {{ prefix: /v1/news }} }}, cluster: origin, cache: {{ ttl: 1h }} }}
  - {{ name: api, cluster: origin, auth: {{ accept: [api_key] }}, limits: [tenant-plan] }}
"#
    )
}

fn sim_node(index: usize, sidecar_port: u16, start_ms: u64) -> Sim {
    let config = EnvoyConfig::new(&format!("fleet-sim-{index}"), &policy(index))
        .unwrap()
        .cluster("origin", 9)
        .cluster("sidecar", sidecar_port);
    let bootstrap = Bootstrap::parse(&config.render(10_000, 9_901).unwrap()).unwrap();
    let options = SimOptions {
        workers: 2,
        seed: 1 + index as u64,
        wasm_override: Some(config.wasm.clone()),
        start_time_ns: Some(start_ms * 1_000_000),
        callouts_use_config_addresses: true,
        ..SimOptions::default()
    };
    Sim::new(bootstrap, options).unwrap()
}

/// One request at `time_ms` on `worker`; the origin is a stub answering 200.
fn send(sim: &Sim, time_ms: u64, worker: usize) -> u64 {
    let line = json!({"time_ms": time_ms, "worker": worker,
        "request": {"method": "GET", "path": "/v1/x", "authority": "api.example.com",
                    "headers": [["x-api-key", "free-key"]]}});
    exchange(sim, line)["status"].as_u64().unwrap()
}

/// One contract input line through a node; the output line.
fn exchange(sim: &Sim, line: Value) -> Value {
    sim.advance_to(line["time_ms"].as_u64().unwrap() * 1_000_000);
    let (request, upstream) = InputLine::parse(&line.to_string())
        .unwrap()
        .into_parts()
        .unwrap();
    let out = OutputLine::from_response(sim.handle(request, &mut StubUpstream(upstream)));
    let out = serde_json::to_value(out).unwrap();
    assert!(out.get("trap").is_none(), "the filter trapped: {out}");
    out
}

fn advance_all(nodes: &[Sim], to_ms: u64) {
    for sim in nodes {
        sim.advance_to(to_ms * 1_000_000);
    }
}

#[test]
fn host_sim_nodes_and_a_real_sidecar_hold_the_limit_and_lose_no_usage_through_kill9_and_outage() {
    let port = free_port().unwrap();
    let data = sidecar_data_dir("fleet-sim").unwrap();
    let mut sidecar = Some(SidecarProcess::start(port, &data).unwrap());
    // The nodes' clock starts at the next real minute (the sidecar keeps usage stamped
    // within its retention and at most 5 minutes ahead), 5 s early so every node has
    // synced and learnt N = 3 before the first window.
    let t0 = now_ms().div_ceil(MINUTE_MS) * MINUTE_MS;
    let nodes: Vec<Sim> = (0..3).map(|i| sim_node(i, port, t0 - 5_000)).collect();
    for second in 1..5u64 {
        advance_all(&nodes, t0 - 5_000 + second * 1_000);
    }
    let (kill_at, restart_at) = (t0 + MINUTE_MS + 10_000, t0 + MINUTE_MS + 40_000);
    let mut admitted = [[0u64; 3]; 2];
    let mut sent = 0u64;
    // Four requests a second to each node for two minutes.
    for step in 0..480u64 {
        let now = t0 + step * 250;
        if now >= kill_at && now < restart_at && sidecar.is_some() {
            sidecar.take().unwrap().kill9();
        }
        if now >= restart_at && sidecar.is_none() {
            sidecar = Some(SidecarProcess::start(port, &data).unwrap());
        }
        let minute = ((now - t0) / MINUTE_MS) as usize;
        for (i, sim) in nodes.iter().enumerate() {
            let status = send(sim, now + i as u64, step as usize);
            assert!(
                status == 200 || status == 429,
                "status {status} at +{} ms",
                now - t0
            );
            sent += 1;
            admitted[minute][i] += u64::from(status == 200);
        }
    }
    let totals = admitted.map(|m| m.iter().sum::<u64>());
    eprintln!(
        "host-sim + tollgate-sidecar: admitted per node {admitted:?} = {totals:?} of 60 a minute"
    );
    assert!((57..=63).contains(&totals[0]), "minute 1: {admitted:?}");
    // Minute 2 lost the sidecar for 30 s: each node fell back to its share (or kept what
    // it had admitted already), and the restarted sidecar knew one node at first, so the
    // bound is the outage's (docs/sidecar.md), a little wider than steady state's 5%.
    assert!((40..=66).contains(&totals[1]), "minute 2: {admitted:?}");
    // A few ticks deliver what queued during the outage.
    for second in 1..=6u64 {
        advance_all(&nodes, t0 + 2 * MINUTE_MS + second * 1_000);
    }
    let sidecar = sidecar.unwrap();
    let usage = sidecar.usage(TENANT, t0, t0 + 2 * MINUTE_MS).unwrap();
    let total = &usage["total"];
    assert_eq!(total["count"], sent, "usage: {usage}");
    assert_eq!(
        total["status"]["2xx"],
        totals[0] + totals[1],
        "usage: {usage}"
    );
    assert_eq!(
        total["status"]["4xx"],
        sent - totals[0] - totals[1],
        "usage: {usage}"
    );
    assert_eq!(total["routes"]["api"], sent);
    let minutes = usage["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 2);
    assert!(
        minutes.iter().all(|m| m["count"] == 3 * 240),
        "usage: {usage}"
    );
}

#[test]
fn host_sim_nodes_keep_their_share_while_the_sidecar_is_down() {
    let port = free_port().unwrap();
    let data = sidecar_data_dir("fleet-down").unwrap();
    let sidecar = SidecarProcess::start(port, &data).unwrap();
    let t0 = now_ms().div_ceil(MINUTE_MS) * MINUTE_MS;
    let nodes: Vec<Sim> = (0..3).map(|i| sim_node(i, port, t0 - 5_000)).collect();
    for second in 1..5u64 {
        advance_all(&nodes, t0 - 5_000 + second * 1_000);
    }
    // Down for the whole window: each node holds the limit divided by the last known
    // number of nodes, and every request is still answered.
    sidecar.kill9();
    let mut admitted = [0u64; 3];
    for step in 0..240u64 {
        let now = t0 + step * 250;
        for (i, sim) in nodes.iter().enumerate() {
            let status = send(sim, now + i as u64, step as usize);
            assert!(status == 200 || status == 429, "status {status}");
            admitted[i] += u64::from(status == 200);
        }
    }
    assert_eq!(admitted, [20, 20, 20]);
}

#[test]
fn a_plan_override_set_at_the_sidecar_reaches_every_node() {
    let port = free_port().unwrap();
    let data = sidecar_data_dir("fleet-override").unwrap();
    let sidecar = SidecarProcess::start(port, &data).unwrap();
    let put = tollgate_envoy_tests::request(
        "PUT",
        &sidecar.url(&format!("/v1/tenants/{TENANT}/plan")),
        &[("content-type", "application/json")],
        Some(br#"{"plan": "free", "limits": {"tenant-plan": 30}}"#),
    )
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    let t0 = now_ms().div_ceil(MINUTE_MS) * MINUTE_MS;
    let nodes: Vec<Sim> = (0..3).map(|i| sim_node(i, port, t0 - 5_000)).collect();
    for second in 1..5u64 {
        advance_all(&nodes, t0 - 5_000 + second * 1_000);
    }
    let mut admitted = [0u64; 3];
    for step in 0..240u64 {
        let now = t0 + step * 250;
        for (i, sim) in nodes.iter().enumerate() {
            admitted[i] += u64::from(send(sim, now + i as u64, step as usize) == 200);
        }
    }
    let total: u64 = admitted.iter().sum();
    eprintln!("override to 30/min: admitted {admitted:?} = {total}");
    assert!((28..=32).contains(&total), "admitted {admitted:?}");
}

#[test]
fn a_purge_posted_to_the_sidecar_reaches_every_node_cache() {
    let port = free_port().unwrap();
    let data = sidecar_data_dir("fleet-purge").unwrap();
    let sidecar = SidecarProcess::start(port, &data).unwrap();
    let t0 = now_ms();
    let nodes: Vec<Sim> = (0..2).map(|i| sim_node(i, port, t0)).collect();
    let news = |time_ms: u64, body: &str| {
        json!({"time_ms": time_ms, "worker": 0,
            "request": {"method": "GET", "path": "/v1/news/today", "authority": "api.example.com"},
            "upstream": {"status": 200, "headers": [["cache-control", "public"]], "body": body}})
    };
    for sim in &nodes {
        exchange(sim, news(t0 + 1_000, "v1"));
        let hit = exchange(sim, news(t0 + 2_000, "v2"));
        assert_eq!(
            (hit["body"].as_str(), &hit["upstream_called"]),
            (Some("v1"), &json!(false))
        );
    }
    // Public entries belong to tenant "-"; a prefix starting with / matches the path.
    let posted = tollgate_envoy_tests::request(
        "POST",
        &sidecar.url("/v1/purge"),
        &[("content-type", "application/json")],
        Some(br#"{"by": "prefix", "value": "-:/v1/news/"}"#),
    )
    .unwrap();
    assert_eq!(posted.status, 201, "{}", posted.body);
    for second in 3..=5u64 {
        advance_all(&nodes, t0 + second * 1_000);
    }
    for sim in &nodes {
        let fresh = exchange(sim, news(t0 + 6_000, "v3"));
        assert_eq!(
            (fresh["body"].as_str(), &fresh["upstream_called"]),
            (Some("v3"), &json!(true))
        );
    }
}

#[test]
fn three_envoys_against_one_sidecar_hold_a_free_tenant_to_60_a_minute() {
    let origin = BackgroundOrigin::start("origin").unwrap();
    let port = free_port().unwrap();
    let data = sidecar_data_dir("fleet-envoy").unwrap();
    let sidecar = SidecarProcess::start(port, &data).unwrap();
    let envoys: Vec<Envoy> = (0..3)
        .map(|i| {
            let config = EnvoyConfig::new(&format!("fleet-envoy-{i}"), &policy(i))
                .unwrap()
                .concurrency(1)
                .cluster("origin", origin.port())
                .cluster("sidecar", port);
            Envoy::start(&config).unwrap()
        })
        .collect();
    // Start at a minute boundary at least 5 s away, so every node has synced first.
    let mut t0 = now_ms().div_ceil(MINUTE_MS) * MINUTE_MS;
    if t0 - now_ms() < 5_000 {
        t0 += MINUTE_MS;
    }
    std::thread::sleep(Duration::from_millis(t0 - now_ms() + 50));
    let mut admitted = [0u64; 3];
    let mut sent = 0u64;
    // Two requests a second to each node until the window is nearly over (2 s margin for
    // the machine's scheduling).
    while now_ms() < t0 + MINUTE_MS - 2_000 {
        let round = now_ms();
        for (i, envoy) in envoys.iter().enumerate() {
            let r = envoy.get("/v1/x", &[("x-api-key", "free-key")]).unwrap();
            assert!(
                r.status == 200 || r.status == 429,
                "status {}: {}",
                r.status,
                r.body
            );
            admitted[i] += u64::from(r.status == 200);
            sent += 1;
        }
        let spent = now_ms() - round;
        std::thread::sleep(Duration::from_millis(500u64.saturating_sub(spent)));
    }
    let total: u64 = admitted.iter().sum();
    eprintln!("Envoy x3 + tollgate-sidecar: admitted {admitted:?} = {total} of 60 ({sent} sent)");
    assert!((57..=63).contains(&total), "admitted {admitted:?}");
    // Every request's usage record reaches the sidecar within a few syncs.
    let mut last = Value::Null;
    for _ in 0..50 {
        last = sidecar.usage(TENANT, t0, t0 + MINUTE_MS).unwrap();
        if last["total"]["count"] == sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last["total"]["count"], sent, "usage: {last}");
    assert_eq!(last["total"]["status"]["2xx"], total, "usage: {last}");
}
