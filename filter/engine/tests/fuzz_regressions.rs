//! Replays every committed fuzz seed and minimised crash (`fuzz/corpus`, `fuzz/regressions`)
//! through the same entry points the fuzz targets use. A crash once found stays a test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                run(&std::fs::read(&path).unwrap());
                count += 1;
            }
        }
    }
    count
}

#[test]
fn policy_load_corpus_replays_without_panic() {
    assert!(replay("policy_load", tollgate_engine::fuzzing::policy_load) > 5);
}

#[test]
fn request_path_corpus_replays_without_panic() {
    assert!(replay("request_path", tollgate_engine::fuzzing::request_path) >= 4);
}

#[test]
fn jwt_token_corpus_replays_without_panic() {
    assert!(replay("jwt_token", tollgate_engine::fuzzing::jwt_token) >= 20);
}

#[test]
fn waf_inputs_corpus_replays_without_panic() {
    assert!(replay("waf_inputs", tollgate_engine::fuzzing::waf_inputs) >= 9);
}

#[test]
fn pii_stream_corpus_replays_without_panic() {
    assert!(replay("pii_stream", tollgate_engine::fuzzing::pii_stream) >= 5);
}
