//! JWT signature verification inside wasm (wasmtime, as host-sim runs the filter) and
//! natively: jwt-simple's pure-Rust backend next to Tollgate's `VerifyingKey`, per algorithm.
//! Needs the guest built first (`scripts/bench-jwt-wasm.sh` does both):
//! `cargo build --release --target wasm32-wasip1 -p tollgate-jwt-guest`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wasmtime::{Caller, Config, Engine, Linker, Module, Store, TypedFunc};

fn guest_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_JWT_GUEST_WASM") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("wasm32-wasip1/release/tollgate_jwt_guest.wasm")
}

/// The guest only needs WASI for std's start-up and hash seeds: random_get gets fixed
/// bytes, the clock a fixed time, the environment nothing; anything else traps.
fn instantiate() -> (Store<()>, TypedFunc<(u32, u32), u32>) {
    let path = guest_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo build --release --target wasm32-wasip1 -p tollgate-jwt-guest`",
            path.display()
        )
    });
    // Same engine settings as host-sim (fuel metering on).
    let mut cfg = Config::new();
    cfg.consume_fuel(true);
    let engine = Engine::new(&cfg).unwrap();
    let module = Module::new(&engine, bytes).unwrap();
    let mut linker: Linker<()> = Linker::new(&engine);
    let w = "wasi_snapshot_preview1";
    fn write(c: &mut Caller<'_, ()>, at: i32, data: &[u8]) -> i32 {
        let Some(mem) = c.get_export("memory").and_then(|e| e.into_memory()) else {
            return 8;
        };
        match mem.write(c, at as u32 as usize, data) {
            Ok(()) => 0,
            Err(_) => 21,
        }
    }
    linker
        .func_wrap(
            w,
            "random_get",
            |mut c: Caller<'_, ()>, at: i32, len: i32| {
                write(&mut c, at, &vec![7u8; len as u32 as usize])
            },
        )
        .unwrap();
    linker
        .func_wrap(
            w,
            "environ_sizes_get",
            |mut c: Caller<'_, ()>, n: i32, size: i32| {
                write(&mut c, n, &0u32.to_le_bytes()) | write(&mut c, size, &0u32.to_le_bytes())
            },
        )
        .unwrap();
    linker
        .func_wrap(
            w,
            "clock_time_get",
            |mut c: Caller<'_, ()>, _: i32, _: i64, at: i32| {
                write(&mut c, at, &1_767_225_600_000_000_000u64.to_le_bytes())
            },
        )
        .unwrap();
    linker.define_unknown_imports_as_traps(&module).unwrap();
    let mut store = Store::new(&engine, ());
    store.set_fuel(u64::MAX).unwrap();
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let run = instance
        .get_typed_func::<(u32, u32), u32>(&mut store, "bench_run")
        .unwrap();
    (store, run)
}

fn bench(c: &mut Criterion) {
    let (mut store, run) = instantiate();
    let mut group = c.benchmark_group("jwt_verify");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for (i, name) in tollgate_jwt_guest::CASES.iter().enumerate() {
        let case = i as u32;
        assert_eq!(
            run.call(&mut store, (case, 2)).unwrap(),
            2,
            "{name} in wasm"
        );
        assert!(tollgate_jwt_guest::run_one(case), "{name} natively");
        group.bench_function(format!("wasm/{name}"), |b| {
            b.iter_custom(|iters| {
                let iters = u32::try_from(iters).unwrap();
                let start = Instant::now();
                let verified = run.call(&mut store, (case, iters)).unwrap();
                let elapsed = start.elapsed();
                assert_eq!(verified, iters);
                elapsed
            })
        });
        group.bench_function(format!("native/{name}"), |b| {
            b.iter(|| tollgate_jwt_guest::bench_run(case, 1))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
