//! The WAF natively: the bundled `core` set on a typical ~2 KiB request (head only, and
//! head plus the empty-body phase the adapter runs for a GET), and on a 64 KiB JSON body.
//! Baseline: the same request on the same route without `waf:`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
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

/// About 2 KiB of head: a browser's headers, cookies, a JWT and a query string.
fn request_2k(method: &str, content_type: Option<&str>) -> RequestHead {
    let mut pairs: Vec<(&str, String)> = vec![
        (":authority", "api.example.com".into()),
        (":path", "/v1/refunds/u1/history?year=2025&status=pending&include=notes,payments&page=2&per_page=50&sort=-created_at&q=refund+for+march".into()),
        (":method", method.into()),
        (":scheme", "https".into()),
        ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36".into()),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8".into()),
        ("accept-language", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7".into()),
        ("accept-encoding", "gzip, deflate, br, zstd".into()),
        ("referer", "https://portal.example.com/v1/refunds?year=2025&status=pending".into()),
        ("cookie", format!("session={}; theme=dark; _ga=GA1.2.123456789.1700000000; consent=analytics%3Dfalse%26ads%3Dfalse", "x".repeat(400))),
        ("authorization", format!("Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}", "e".repeat(300), "s".repeat(86))),
        ("x-forwarded-for", "198.51.100.23, 203.0.113.7".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e".into()),
        ("sec-ch-ua", "\"Chromium\";v=\"126\", \"Google Chrome\";v=\"126\", \"Not-A.Brand\";v=\"99\"".into()),
        ("sec-fetch-mode", "cors".into()),
        ("sec-fetch-site", "same-origin".into()),
    ];
    if let Some(ct) = content_type {
        pairs.push(("content-type", ct.into()));
    }
    RequestHead::from_pairs(pairs).with_peer(Some("203.0.113.7:40000".into()))
}

/// A 64 KiB JSON document of ordinary records.
fn json_64k() -> Vec<u8> {
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        let item = format!(
            r#"{{"id":"ord_{i:06}","customer":{{"name":"Anna Schmidt","email":"anna{i}@example.de","address":{{"street":"Hauptstraße {i}","city":"München","zip":"80331"}}}},"amount":{}.99,"currency":"EUR","note":"Please deliver after 6 pm, ring twice; thanks!","tags":["gift","express"]}}"#,
            i % 500
        );
        items.push(item);
        let len: usize = items.iter().map(|s| s.len() + 1).sum();
        if len > 64 * 1024 - 64 {
            break;
        }
        i += 1;
    }
    format!(r#"{{"orders":[{}]}}"#, items.join(",")).into_bytes()
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
