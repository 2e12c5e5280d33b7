//! The OWASP CRS regression tests (go-ftw YAML, `tests/corpora/crs/`, Apache-2.0) through
//! the bundled `core` rule set, per CRS family: a stage that expects a CRS rule to fire
//! counts as detected when Tollgate blocks or scores the request; a stage that expects
//! one not to fire counts as a false positive when Tollgate blocks or scores it.
//! The floors below are the measured rates rounded down: a detector change that loses
//! detections or adds false positives fails here. `cargo test -p tollgate-engine --test
//! crs_corpus -- --nocapture` prints the table published in docs/waf.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use tollgate_engine::{BodyDecision, Decision, Engine, MemorySharedData, Policy, RequestHead};

const POLICY: &str = r#"
version: 1
routes:
  - name: all
    cluster: origin
    waf: { rule_sets: [core], max_body_bytes: 1048576, over_limit: inspect_prefix }
"#;

/// (CRS file prefix, family, detection floor %, false-positive ceiling %).
const FAMILIES: &[(&str, &str, f64, f64)] = &[
    ("REQUEST-913", "scanner", 100.0, 0.0),
    ("REQUEST-920", "protocol", 8.0, 6.0),
    ("REQUEST-921", "protocol-attack", 17.0, 3.0),
    ("REQUEST-930", "lfi", 34.0, 7.0),
    ("REQUEST-931", "rfi", 27.0, 0.0),
    ("REQUEST-932", "rce", 21.0, 9.0),
    ("REQUEST-933", "php", 41.0, 8.0),
    ("REQUEST-941", "xss", 47.0, 6.0),
    ("REQUEST-942", "sqli", 37.0, 9.0),
    ("REQUEST-944", "java", 46.0, 0.0),
];

/// The shared corpus beside the project (`../shared/corpora/crs-regression`, or
/// `TOLLGATE_CRS_CORPUS`) when present; otherwise the copy of the families used here, kept
/// in the repository so the test runs on a bare clone.
fn corpus_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("TOLLGATE_CRS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../../shared/corpora/crs-regression"));
    if shared.join("REQUEST-942-APPLICATION-ATTACK-SQLI").is_dir() {
        return shared;
    }
    manifest.join("tests/corpora/crs")
}

#[derive(Default, Debug)]
struct Tally {
    attacks: usize,
    detected: usize,
    benign: usize,
    false_positives: usize,
    missed: Vec<String>,
    fps: Vec<String>,
}

/// The outcome of one request: `Some(rules)` when the WAF blocked or scored it.
fn run(engine: &Engine, store: &MemorySharedData, input: &Value) -> Option<Option<Vec<String>>> {
    if input.get("encoded_request").is_some() || input.get("raw_request").is_some() {
        return None;
    }
    let method = input
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_string();
    let uri = input
        .get("uri")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let mut pairs: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), method.into_bytes()),
        (":path".into(), uri.into_bytes()),
    ];
    if let Some(headers) = input.get("headers").and_then(Value::as_mapping) {
        for (k, v) in headers {
            let name = k.as_str()?.to_ascii_lowercase();
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => String::new(),
            };
            if name == "host" {
                pairs.push((":authority".into(), value.clone().into_bytes()));
            }
            pairs.push((name, value.into_bytes()));
        }
    }
    let body = match input.get("data") {
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(Value::Sequence(lines)) => lines
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes(),
        _ => Vec::new(),
    };
    let head = RequestHead::from_pairs(pairs).with_peer(Some("192.0.2.10:40000".into()));
    match engine.on_request_headers(head, 0, store) {
        Decision::Reply(reply) => Some(Some(
            reply
                .waf
                .map(|w| w.rules)
                .unwrap_or_else(|| vec![format!("status {}", reply.status)]),
        )),
        Decision::Forward(plan) => {
            let mut rules = plan.waf.map(|w| w.rules);
            if let Some(check) = &plan.body_check {
                let inspected = &body[..body.len().min(check.max_body_bytes)];
                match engine.on_request_body_decision(check, inspected, body.len(), "id") {
                    BodyDecision::Reply(reply) => {
                        rules = Some(reply.waf.map(|w| w.rules).unwrap_or_default())
                    }
                    BodyDecision::Forward { waf, .. } => {
                        if let Some(w) = waf {
                            rules = Some(w.rules);
                        }
                    }
                }
            }
            Some(rules)
        }
    }
}

fn family_of(file: &Path) -> Option<&'static (&'static str, &'static str, f64, f64)> {
    let dir = file.parent()?.file_name()?.to_str()?;
    FAMILIES.iter().find(|(prefix, ..)| dir.starts_with(prefix))
}

fn tallies() -> BTreeMap<&'static str, Tally> {
    let engine = Engine::new(Policy::load(POLICY).unwrap(), 1);
    let store = MemorySharedData::default();
    let mut out: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() > 200, "corpus missing: {}", files.len());
    for file in files {
        let Some((_, family, ..)) = family_of(&file) else {
            continue;
        };
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for test in doc["tests"].as_sequence().into_iter().flatten() {
            for stage in test["stages"].as_sequence().into_iter().flatten() {
                let log = &stage["output"]["log"];
                let attack = log.get("expect_ids").is_some();
                let benign = log.get("no_expect_ids").is_some();
                if !attack && !benign {
                    continue;
                }
                let Some(outcome) = run(&engine, &store, &stage["input"]) else {
                    continue;
                };
                let name = format!(
                    "{}#{}",
                    file.file_stem().unwrap().to_string_lossy(),
                    test["test_id"].as_u64().unwrap_or(0)
                );
                let tally = out.entry(family).or_default();
                if attack {
                    tally.attacks += 1;
                    match outcome {
                        Some(_) => tally.detected += 1,
                        None => tally.missed.push(name),
                    }
                } else {
                    tally.benign += 1;
                    if let Some(rules) = outcome {
                        tally.false_positives += 1;
                        tally.fps.push(format!("{name} {rules:?}"));
                    }
                }
            }
        }
    }
    out
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

#[test]
fn crs_regression_rates_hold() {
    let tallies = tallies();
    println!("| family | attacks | detected | rate | benign | false positives | FP rate |");
    println!("|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (_, family, floor, ceiling) in FAMILIES {
        let t = tallies.get(family).unwrap();
        let rate = pct(t.detected, t.attacks);
        let fp_rate = pct(t.false_positives, t.benign);
        println!(
            "| {family} | {} | {} | {rate:.1}% | {} | {} | {fp_rate:.1}% |",
            t.attacks, t.detected, t.benign, t.false_positives
        );
        if std::env::var_os("CRS_VERBOSE").is_some() {
            println!("  missed: {:?}", t.missed);
            println!("  false positives: {:?}", t.fps);
        }
        if rate < *floor {
            failures.push(format!("{family}: detection {rate:.1}% < floor {floor}%"));
        }
        if fp_rate > *ceiling {
            failures.push(format!(
                "{family}: false positives {fp_rate:.1}% > ceiling {ceiling}%: {:?}",
                t.fps
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
