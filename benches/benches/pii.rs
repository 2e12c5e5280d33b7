//! PII masking natively: a 64 KiB JSON response with every kind on, masked whole and
//! streamed in 16 KiB chunks (as Envoy delivers bodies), and a log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_engine::pii::{MaskStream, PiiKinds, PiiMasker};

/// Records like a refund-status API answer; one in four carries PII.
fn body(bytes: usize) -> Vec<u8> {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() < bytes {
        if i % 4 == 0 {
            out.push_str(&format!(
                r#"{{"id":{i},"card":"4111 1111 1111 1111","email":"user{i}@example.com","ssn":"123-45-6789","account_number":"0001234{i:05}"}},"#
            ));
        } else {
            out.push_str(&format!(
                r#"{{"id":{i},"status":"PROCESSING","amount":1234.50,"updated":"2026-11-22T10:00:00Z","note":"order 12345678 queued"}},"#
            ));
        }
        i += 1;
    }
    out.push_str("{}]");
    out.into_bytes()
}

fn pii(c: &mut Criterion) {
    let masker = PiiMasker::new().unwrap();
    let input = body(64 << 10);
    let mut group = c.benchmark_group("pii");
    group.throughput(Throughput::Bytes(input.len() as u64));
    let text = std::str::from_utf8(&input).unwrap();
    group.bench_function("64KiB_json_whole", |b| {
        b.iter(|| black_box(masker.mask_all(PiiKinds::ALL, black_box(text))))
    });
    group.bench_function("64KiB_json_16KiB_chunks", |b| {
        b.iter(|| {
            let mut stream = MaskStream::default();
            let mut n = 0;
            for chunk in input.chunks(16 << 10) {
                n += stream.push(&masker, PiiKinds::ALL, chunk, false).len();
            }
            n += stream.push(&masker, PiiKinds::ALL, &[], true).len();
            assert_eq!(n, input.len());
            n
        })
    });
    let line =
        "tollgate: 403 req-1 (waf) rules=942100 client=jane.doe@example.com card=4111111111111111";
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("log_line", |b| {
        b.iter(|| black_box(masker.mask_all(PiiKinds::ALL, black_box(line))))
    });
    group.finish();
}

criterion_group!(benches, pii);
criterion_main!(benches);
