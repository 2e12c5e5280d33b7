//! Per-request overhead of host-sim with the no-op probe (virtual clock, stub upstream).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let sim = common::sim("noop", 1);
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("noop_probe_get_request", |b| {
        b.iter(|| {
            let r = common::run(
                &sim,
                common::get("/v1/refunds/u1?year=2025"),
                "{\"status\":\"PROCESSING\"}",
            );
            sim.take_logs();
            std::hint::black_box(r)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
