//! Request-header phase of the engine, natively: route matching, identity-header
//! stripping and request ids over the demo policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tollgate_benches::{DEMO_POLICY, typical_request};
use tollgate_engine::{Engine, Policy};

fn request_headers(c: &mut Criterion) {
    let engine = Engine::new(Policy::load(DEMO_POLICY).unwrap(), 42);
    let mut group = c.benchmark_group("request_headers");
    group.throughput(Throughput::Elements(1));
    for (name, path) in [
        ("routed", "/v1/refunds/u1?year=2025"),
        ("no_route", "/nope"),
    ] {
        let request = typical_request(path);
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(engine.on_request_headers(
                    black_box(request.clone()),
                    1_767_225_600_000,
                    &tollgate_engine::MemorySharedData::default(),
                ))
            })
        });
    }
    group.finish();
}

fn policy_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Bytes(DEMO_POLICY.len() as u64));
    group.bench_function("load_demo", |b| {
        b.iter(|| Policy::load(black_box(DEMO_POLICY)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, request_headers, policy_load);
criterion_main!(benches);
