//! The `tollgate-sim` binary: replay determinism, check verdicts, config errors, --cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-sim-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_config(name: &str, scenario: &str, extra: &str) -> PathBuf {
    let p = tmp(name).join("envoy.yaml");
    std::fs::write(&p, bootstrap_text(scenario, extra)).unwrap();
    p
}

fn sim_bin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-sim"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const INPUT: &str = r#"{"time_ms": 1767225600000, "worker": 0, "downstream_addr": "203.0.113.7:51234", "request": {"method": "GET", "path": "/v1/refunds/u1?year=2025", "authority": "api.example.com", "scheme": "https", "headers": [["authorization", "Bearer x"]], "body": ""}, "upstream": {"status": 200, "headers": [["cache-control", "max-age=300"]], "body": "{\"status\":\"PROCESSING\"}"}}
{"time_ms": 1767225600500, "worker": 1, "request": {"method": "POST", "path": "/b", "body_base64": "AAEC/w=="}, "upstream": {"error": "connect_failure"}}
{"time_ms": 1767225601000, "request": {"path": "/c"}, "upstream": {"error": "timeout"}}
{"time_ms": 1767225601000, "request": {"path": "/d"}, "upstream": {"status": 201, "body_base64": "/w=="}}
not json
"#;

#[test]
fn replay_twice_is_byte_identical() {
    let cfg = write_config("replay", "time", "");
    let args = ["replay", "--config", cfg.to_str().unwrap(), "--logs"];
    let a = sim_bin(&args, INPUT);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = sim_bin(&args, INPUT);
    assert_eq!(a.stdout, b.stdout);
    let lines: Vec<serde_json::Value> = a
        .stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["upstream_called"], true);
    assert_eq!(lines[0]["upstream_cluster"], "backend");
    assert_eq!(lines[0]["local_reply"], false);
    assert_eq!(lines[0]["body"], "{\"status\":\"PROCESSING\"}");
    assert_eq!(
        lines[0]["upstream_request"]["path"],
        "/v1/refunds/u1?year=2025"
    );
    assert!(lines[0]["logs"].as_array().unwrap().iter().any(|l| {
        l.as_str()
            .unwrap()
            .contains("host_ms=1767225600000 wasi_ms=1767225600000")
    }));
    assert_eq!(lines[1]["status"], 503);
    assert_eq!(lines[1]["upstream_request"]["body_base64"], "AAEC/w==");
    assert!(
        lines[1]["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("vm1 "))
    );
    assert_eq!(lines[2]["status"], 504);
    assert_eq!(lines[3]["body_base64"], "/w==");
    assert!(lines[4]["error"].as_str().unwrap().starts_with("line 5:"));
}

#[test]
fn check_verdicts() {
    let ok = write_config("check-ok", "noop", "");
    let out = sim_bin(&["check", "--config", ok.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("on_configure size=4 scenario=noop") && text.contains("accepted"),
        "{text}"
    );
    let bad = write_config("check-bad", "reject", "");
    let out = sim_bin(&["check", "--config", bad.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("scenario=reject") && text.contains("rejected"),
        "{text}"
    );
}

#[test]
fn unknown_config_field_is_named() {
    let p = tmp("unknown").join("envoy.yaml");
    let text = bootstrap_text("noop", "").replace(
        "                name: probe_plugin\n",
        "                name: probe_plugin\n                colour: blue\n",
    );
    std::fs::write(&p, text).unwrap();
    let out = sim_bin(&["check", "--config", p.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config.colour: unknown field"),
        "{err}"
    );
}

/// A one-shot HTTP server answering every request with `body`.
fn tiny_server(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut buf = vec![0; len];
            let _ = r.read_exact(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-from: tiny\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn cluster_flag_points_callouts_at_a_real_server() {
    let port = tiny_server("from-sidecar");
    let cfg = write_config("cluster", "callout", "");
    let cluster = format!("sidecar=http://127.0.0.1:{port}");
    let out = sim_bin(
        &[
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--logs",
            "--cluster",
            &cluster,
        ],
        "{\"time_ms\": 1, \"request\": {\"path\": \"/\"}}\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("body=\\\"from-sidecar\\\""), "{text}");
    assert!(text.contains("\"status\":200"), "{text}");
}
