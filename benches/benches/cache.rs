//! Cache hit path natively (engine only, not yet through the .wasm): key digest, entry
//! read from shared data, freshness decision and reply headers, by object size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_engine::MemorySharedData;
use tollgate_engine::cache::{
    CacheStore, EntryMeta, KeyInput, KeySpec, Lookup, RouteRules, build_key, status_hit,
};

const T0: u64 = 1_700_000_000;

fn hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_hit_native");
    let data = MemorySharedData::default();
    let store = CacheStore::new(&data, 64 << 20);
    let rules = RouteRules::default();
    let spec = KeySpec {
        sort_query: true,
        ..KeySpec::default()
    };
    let request: Vec<(String, Vec<u8>)> = vec![
        ("accept".into(), b"application/json".to_vec()),
        ("user-agent".into(), b"bench".to_vec()),
    ];
    let header = |name: &str| {
        request
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let claim = |_: &str| None::<String>;
    for size in [1024usize, 4096, 65536] {
        let path = format!("/refunds/{size}?b=2&a=1");
        let input = KeyInput {
            tenant: "acme",
            user: None,
            authority: "api.example",
            path: &path,
            header: &header,
            claim: &claim,
        };
        let key = build_key(&spec, &input).unwrap();
        let headers = vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            ("cache-control".to_string(), b"public, max-age=300".to_vec()),
            ("etag".to_string(), b"\"v1\"".to_vec()),
            ("vary".to_string(), b"accept".to_vec()),
        ];
        let meta = EntryMeta::new(200, headers, &request, T0, T0, &rules);
        store
            .put(&key.digest, &key.tenant, &key.url, &meta, &vec![b'x'; size])
            .unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let key = build_key(&spec, black_box(&input)).unwrap();
                let hit = store.get(&key.digest, &request).unwrap().unwrap();
                let Lookup::Fresh { ttl, .. } = hit.meta.lookup(&request, T0 + 10, &rules) else {
                    panic!("expected a fresh hit");
                };
                black_box((hit.meta.serve_headers(T0 + 10, &status_hit(ttl)), hit.body))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hit);
criterion_main!(benches);
