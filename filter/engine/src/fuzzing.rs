//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the regression test that
//! replays their corpora, so a crash found by the fuzzer is a plain test afterwards.

use crate::{Engine, Policy, RequestHead};

/// Policy text of any shape must load or be refused, never panic.
pub fn policy_load(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(policy) = Policy::load(text)
    {
        // A policy that loads must also serve a request.
        let engine = Engine::new(policy, 0);
        let _ = engine.on_request_headers(
            RequestHead::from_pairs([(":path", "/")]),
            0,
            &crate::MemorySharedData::default(),
        );
    }
}

const FUZZ_POLICY: &str = r#"
version: 1
request_id: { reuse_header: x-request-id }
routes:
  - name: r1
    match: { hosts: ["*.example.com"], path: { regex: "/u/[0-9]+" }, methods: [GET] }
    cluster: c1
  - name: r2
    match: { path: { prefix: /v1/ }, headers: [{ name: x-country, regex: "[A-Z]{2}" }] }
    cluster: c2
  - name: r3
    match: { path: { exact: /healthz }, headers: [{ name: x-debug, present: false }] }
    cluster: c3
"#;

/// Arbitrary header lines (`name:value`, pseudo-headers as `:path:/x`) through the
/// request-header phase of a fixed policy.
pub fn request_path(data: &[u8]) {
    let Ok(policy) = Policy::load(FUZZ_POLICY) else {
        return;
    };
    let engine = Engine::new(policy, 1);
    let pairs = data.split(|&b| b == b'\n').filter_map(|line| {
        // Skip the leading ':' of a pseudo-header when looking for the separator.
        let start = usize::from(line.first() == Some(&b':'));
        let split = line.get(start..)?.iter().position(|&b| b == b':')? + start;
        let name = String::from_utf8_lossy(line.get(..split)?).into_owned();
        Some((name, line.get(split + 1..)?.to_vec()))
    });
    let _ = engine.on_request_headers(
        RequestHead::from_pairs(pairs),
        0,
        &crate::MemorySharedData::default(),
    );
}
