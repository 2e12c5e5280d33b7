//! Golden bad policies: each file under `policies/invalid/` must be refused with exactly
//! the errors in the `.err` file beside it (one `path: message` per line). The demo
//! policy and every other policy under `policies/` must load.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use std::path::{Path, PathBuf};

use tollgate_engine::Policy;

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && keep(p.extension().and_then(|e| e.to_str()).unwrap_or("")))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_policy_fails_with_its_golden_errors() {
    let dir = policies_dir().join("invalid");
    let files = files_in(&dir, |ext| ext == "yaml" || ext == "json");
    assert!(
        files.len() >= 10,
        "expected the golden set, found {files:?}"
    );
    let mut mismatches = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let golden_path = file.with_extension(format!(
            "{}.err",
            file.extension().unwrap().to_str().unwrap()
        ));
        let expected = std::fs::read_to_string(&golden_path)
            .unwrap_or_else(|_| panic!("missing golden file {}", golden_path.display()));
        match Policy::load(&text) {
            Ok(_) => mismatches.push(format!("{}: loaded, but must fail", file.display())),
            Err(errors) => {
                let actual = errors.to_string();
                if actual.trim_end() != expected.trim_end() {
                    mismatches.push(format!(
                        "{}:\n--- expected\n{}\n--- actual\n{}",
                        file.display(),
                        expected.trim_end(),
                        actual
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn every_shipped_policy_loads() {
    let files = files_in(&policies_dir(), |ext| ext == "yaml" || ext == "json");
    assert!(!files.is_empty());
    for file in files {
        if file.file_name().unwrap() == "schema.json" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(errors) = Policy::load(&text) {
            panic!("{}: {errors}", file.display());
        }
    }
}

#[test]
fn published_schema_is_current() {
    let published = std::fs::read_to_string(policies_dir().join("schema.json"))
        .expect("policies/schema.json (regenerate: cargo run -p tollgate-engine --bin tollgate-policy -- schema > policies/schema.json)");
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert!(
        published == Policy::json_schema(),
        "policies/schema.json is stale; regenerate with: cargo run -p tollgate-engine --bin tollgate-policy -- schema > policies/schema.json"
    );
}
