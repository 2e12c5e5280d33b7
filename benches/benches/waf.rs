//! The WAF natively: the bundled `core` set on a typical ~2 KiB request (head only, and
//! head plus the empty-body phase the adapter runs for a GET), and on a 64 KiB JSON body.
//! Baseline: the same request on the same route without `waf:`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tollgate_benches::{browser_head_2k, json_orders_64k as json_64k};
use tollgate_engine::{BodyDecision, Decision, Engine, MemorySharedData, Policy, RequestHead};

const WAF_POLICY: &str = r#"
version: 1
routes:
  - name: api
    cluster: origin
    waf: { rule_sets: [core], max_body_bytes: 1048576 }
"#;

const PLAIN_POLICY: &str = r#"
version: 1
routes:
  - name: api
    cluster: origin
"#;

/// The shared ~2 KiB browser request as the engine sees it.
fn request_2k(method: &str, content_type: Option<&str>) -> RequestHead {
    RequestHead::from_pairs(browser_head_2k(method, content_type))
        .with_peer(Some("203.0.113.7:40000".into()))
}

fn waf(c: &mut Criterion) {
    let store = MemorySharedData::default();
    let with_waf = Engine::new(Policy::load(WAF_POLICY).unwrap(), 1);
    let plain = Engine::new(Policy::load(PLAIN_POLICY).unwrap(), 1);
    let size: usize = {
        let r = request_2k("GET", None);
        r.path().len()
            + r.headers()
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    };
    let mut group = c.benchmark_group("waf");
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("request_2k/no_waf", |b| {
        b.iter_batched(
            || request_2k("GET", None),
            |req| black_box(plain.on_request_headers(req, 0, &store)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("request_2k/core", |b| {
        b.iter_batched(
            || request_2k("GET", None),
            |req| {
                let Decision::Forward(plan) = with_waf.on_request_headers(req, 0, &store) else {
                    panic!("blocked")
                };
                // A GET ends with its headers: the adapter runs the body phase at once.
                let check = plan.body_check.as_ref().unwrap();
                black_box(with_waf.on_request_body_decision(check, b"", 0, &plan.request_id))
            },
            BatchSize::SmallInput,
        )
    });
    let body = json_64k();
    let Decision::Forward(plan) =
        with_waf.on_request_headers(request_2k("POST", Some("application/json")), 0, &store)
    else {
        panic!("blocked")
    };
    let check = plan.body_check.unwrap();
    assert!(matches!(
        with_waf.on_request_body_decision(&check, &body, body.len(), "id"),
        BodyDecision::Forward { waf: None, .. }
    ));
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_64k/core_body_phase", |b| {
        b.iter(|| black_box(with_waf.on_request_body_decision(&check, &body, body.len(), "id")))
    });
    group.finish();
    c.bench_function("waf/policy_load_with_core", |b| {
        b.iter(|| black_box(Policy::load(WAF_POLICY).unwrap()))
    });
}

criterion_group!(benches, waf);
criterion_main!(benches);
