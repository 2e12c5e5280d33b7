//! Velocity (spike) rules through the engine: a key whose recent rate jumps far above its
//! own baseline is flagged to the origin with a risk score, or refused when the rule blocks;
//! several workers share the counts; broken shared data fails open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sha2::{Digest, Sha256};
use tollgate_engine::{Counter, Decision, Engine, MemorySharedData, Policy, RequestHead};

const T0: u64 = 1_767_225_600_000;

fn policy() -> String {
    let digest: String = Sha256::digest(b"key-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"
version: 1
auth:
  api_keys:
    keys:
      - {{ id: k1, sha256: "{digest}", tenant: t1, plan: pro }}
rate_limits:
  velocity:
    - {{ name: key-spike, key: [key_id], short_window: 10s, long_window: 10m, ratio: 5, min_requests: 20, risk_score: 40 }}
    - {{ name: card-burst, key: ["header:x-card"], short_window: 1m, long_window: 1h, min_requests: 5, block: true }}
routes:
  - name: api
    cluster: origin
    auth: {{ accept: [api_key] }}
"#
    )
}

struct Node {
    workers: Vec<Engine>,
    store: MemorySharedData,
}

impl Node {
    fn new(workers: usize) -> Self {
        let policy = policy();
        Node {
            workers: (0..workers)
                .map(|i| Engine::new(Policy::load(&policy).unwrap(), i as u64))
                .collect(),
            store: MemorySharedData::default(),
        }
    }

    fn send(&self, i: usize, now: u64, card: Option<&str>) -> Decision {
        let mut pairs = vec![
            (":method", "POST".to_string()),
            (":path", "/pay".to_string()),
            ("x-api-key", "key-1".to_string()),
        ];
        if let Some(c) = card {
            pairs.push(("x-card", c.to_string()));
        }
        let request = RequestHead::from_pairs(pairs);
        self.workers[i % self.workers.len()].on_request_headers(request, now, &self.store)
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    let Decision::Forward(plan) = d else {
        return None;
    };
    plan.set_headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn counted(d: &Decision, counter: Counter) -> bool {
    let counters = match d {
        Decision::Forward(plan) => &plan.counters,
        Decision::Reply(reply) => &reply.counters,
    };
    counters.iter().any(|(c, _)| *c == counter)
}

#[test]
fn a_spike_over_the_baseline_is_flagged_across_workers_and_never_blocked() {
    let node = Node::new(3);
    let mut t = T0;
    // Twenty minutes at one request a second, spread over three workers: the baseline.
    for i in 0..1200 {
        let d = node.send(i, t, None);
        if i >= 600 {
            assert_eq!(header(&d, "x-tollgate-velocity"), None, "request {i}");
        }
        t += 1000;
    }
    // Then twenty a second: flagged within a few seconds, by whichever worker serves it.
    let mut first_flag = None;
    for i in 0..100 {
        let d = node.send(i, t, None);
        assert!(
            matches!(d, Decision::Forward(_)),
            "flag-only rules never block"
        );
        if header(&d, "x-tollgate-velocity") == Some("key-spike") {
            assert_eq!(header(&d, "x-tollgate-risk-score"), Some("40"));
            assert!(counted(&d, Counter::VelocityFlagged));
            first_flag.get_or_insert(i);
        }
        t += 50;
    }
    // Analytically the 55th or so (3 s in): short count ≈ 59 ≥ (600 + 55) / 12.
    assert!(
        matches!(first_flag, Some(i) if (40..80).contains(&i)),
        "{first_flag:?}"
    );
}

#[test]
fn a_blocking_rule_refuses_the_burst_with_429() {
    let node = Node::new(2);
    let mut outcomes = Vec::new();
    for i in 0..8 {
        outcomes.push(node.send(i, T0 + i as u64 * 1000, Some("card-42")));
    }
    assert!(
        outcomes[..4]
            .iter()
            .all(|d| matches!(d, Decision::Forward(_)))
    );
    let Decision::Reply(reply) = &outcomes[7] else {
        panic!("the burst must be refused")
    };
    assert_eq!(reply.status, 429);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "velocity_exceeded");
    assert!(
        reply
            .headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v == "60")
    );
    assert!(counted(&outcomes[7], Counter::VelocityBlocked));
    // Another card is not affected.
    assert!(matches!(
        node.send(0, T0 + 8000, Some("card-7")),
        Decision::Forward(_)
    ));
}

#[test]
fn broken_shared_data_fails_open_and_is_counted() {
    let node = Node::new(1);
    node.store.broken.set(true);
    for i in 0..30 {
        let d = node.send(0, T0 + i, Some("card-42"));
        assert!(matches!(d, Decision::Forward(_)));
        assert!(counted(&d, Counter::LimiterFailOpen));
        assert_eq!(header(&d, "x-tollgate-velocity"), None);
    }
}
