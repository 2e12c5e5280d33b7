//! A bad policy must stop Envoy from serving: `on_configure` returns false, Envoy rejects
//! the static bootstrap and exits non-zero, and the log names the offending field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use tollgate_envoy_tests::{Envoy, EnvoyConfig, repo_root};

/// Refusing a config takes Envoy a few seconds (V8 compiles the module first); this is
/// the bound, not the expectation.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// `expected_fields`: the field paths that must each appear in a
/// `policy error: <path>: <message>` log line.
fn assert_refused(label: &str, policy: &str, expected_fields: &[&str]) {
    let config = EnvoyConfig::new(label, policy).unwrap();
    let exited = Envoy::start_expect_exit(&config, EXIT_WITHIN).unwrap();
    assert!(
        !exited.status.success(),
        "{label}: envoy exited {} on a bad policy; log {}",
        exited.status,
        exited.log_path.display()
    );
    for field in expected_fields {
        let line = format!("policy error: {field}: ");
        assert!(
            exited.log.contains(&line),
            "{label}: log lacks `{line}`; log {}:\n{}",
            exited.log_path.display(),
            exited.log
        );
    }
}

/// Golden bad policies from `policies/invalid/`: Envoy must name every field that the
/// `.err` beside each lists (the exact messages are the engine's golden tests' business).
/// The engine's own tests cover every file; in Envoy a few kinds are enough
/// (each Envoy start costs seconds of V8 compilation): an unknown field in YAML and in
/// JSON, several errors at once, and an empty document.
const CASES: [&str; 4] = [
    "unknown-field.yaml",
    "unknown-field.json",
    "many-errors.yaml",
    "empty.yaml",
];

#[test]
fn invalid_policies_are_refused_with_every_error_named() {
    let dir = repo_root().join("policies/invalid");
    std::thread::scope(|scope| {
        for name in CASES {
            let path: PathBuf = dir.join(name);
            scope.spawn(move || {
                let policy = fs::read_to_string(&path).unwrap();
                let err = fs::read_to_string(format!("{}.err", path.display())).unwrap();
                // Each line is `<field path>: <message>`.
                let fields: Vec<&str> = err
                    .lines()
                    .filter_map(|l| l.split_once(": ").map(|(path, _)| path))
                    .collect();
                assert!(!fields.is_empty(), "{name}.err names no field");
                assert_refused(&format!("invalid_{name}"), &policy, &fields);
            });
        }
    });
}
