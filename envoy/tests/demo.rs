//! The shipped deployment files: they carry the demo policy and Envoy accepts them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_yaml::Value;
use tollgate_envoy_tests::{envoy_binary, filter_wasm, repo_root, target_dir};

fn read_yaml(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap()
}

fn demo_policy() -> Value {
    serde_yaml::from_str(&read_yaml("policies/demo.yaml")).unwrap()
}

/// The `configuration.value` of the wasm filter in an Envoy bootstrap.
fn bootstrap_policy(bootstrap: &Value) -> Value {
    let filters = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    let wasm = filters
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .expect("a wasm filter");
    let text = wasm["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("configuration is a StringValue");
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn demo_bootstrap_and_istio_plugin_carry_the_demo_policy() {
    let bootstrap: Value = serde_yaml::from_str(&read_yaml("envoy/bootstrap/demo.yaml")).unwrap();
    assert_eq!(bootstrap_policy(&bootstrap), demo_policy());

    let istio = read_yaml("envoy/istio/wasmplugin.yaml");
    let plugin = serde_yaml::Deserializer::from_str(&istio)
        .map(|doc| Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "WasmPlugin")
        .expect("a WasmPlugin document");
    assert_eq!(plugin["spec"]["pluginConfig"], demo_policy());
    assert_eq!(plugin["spec"]["phase"], "AUTHN");
    assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE");
}

/// `envoy --mode validate` loads the filter and runs its `on_configure`, so this checks
/// the whole bootstrap, the policy included, without opening a port.
#[test]
fn demo_bootstrap_validates_in_envoy() {
    let mut text = read_yaml("envoy/bootstrap/demo.yaml");
    let relative = "filename: target/wasm32-wasip1/release/tollgate_filter.wasm";
    assert!(text.contains(relative));
    // Point at the module under test wherever the target directory is.
    let wasm = filter_wasm().unwrap();
    text = text.replace(
        relative,
        &format!(
            "filename: {}",
            serde_json::to_string(&wasm.to_string_lossy()).unwrap()
        ),
    );
    let dir = target_dir().join("envoy-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("demo-validate-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();

    let mut child = Command::new(envoy_binary().unwrap())
        .args(["--mode", "validate", "-l", "warn", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("envoy --mode validate still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {log}", out.status);
    assert!(log.contains("OK"), "{log}");
}
