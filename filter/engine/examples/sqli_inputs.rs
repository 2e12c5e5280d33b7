//! Dumps the argument values of the CRS SQL-injection regression cases (942, from
//! `tests/corpora/crs`) with Tollgate's SQLi detector verdict and its time, one JSON
//! line per case, for `scripts/sqli-vs-libinjection.py` to run libinjection on the very
//! same values: `cargo run --release -p tollgate-engine --example sqli_inputs > cases.jsonl`.

use std::path::PathBuf;
use std::time::Instant;

use serde_yaml::Value;
use tollgate_engine::waf::detect::Detectors;
use tollgate_engine::waf::document::WafDetector;
use tollgate_engine::waf::inputs::split_pairs;
use tollgate_engine::waf::transform;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpora/crs/REQUEST-942-APPLICATION-ATTACK-SQLI");
    let detectors = Detectors::new()?;
    let mut files = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<PathBuf>, _>>()?;
    files.sort();
    for file in files {
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
        let stem = file.file_stem().unwrap_or_default().to_string_lossy();
        for test in doc["tests"].as_sequence().into_iter().flatten() {
            for stage in test["stages"].as_sequence().into_iter().flatten() {
                let log = &stage["output"]["log"];
                let attack = log.get("expect_ids").is_some();
                if !attack && log.get("no_expect_ids").is_none() {
                    continue;
                }
                let input = &stage["input"];
                let uri = input["uri"].as_str().unwrap_or("/");
                let query = uri.split_once('?').map_or("", |(_, q)| q);
                let data = input["data"].as_str().unwrap_or("");
                let mut values: Vec<String> = Vec::new();
                for raw in [query.as_bytes(), data.as_bytes()] {
                    for (name, value) in split_pairs(raw, b'&') {
                        for v in [name, value] {
                            let decoded = transform::url_decode(&v, true);
                            if !decoded.is_empty() {
                                values.push(String::from_utf8_lossy(&decoded).into_owned());
                            }
                        }
                    }
                }
                let start = Instant::now();
                let mut hit = false;
                for _ in 0..100 {
                    hit = values
                        .iter()
                        .any(|v| detectors.detect(WafDetector::Sqli, v.as_bytes()));
                }
                let nanos = start.elapsed().as_nanos() / 100;
                println!(
                    "{}",
                    serde_json::json!({
                        "case": format!("{stem}#{}", test["test_id"].as_u64().unwrap_or(0)),
                        "attack": attack,
                        "values": values,
                        "tollgate": hit,
                        "tollgate_ns": nanos,
                    })
                );
            }
        }
    }
    Ok(())
}
