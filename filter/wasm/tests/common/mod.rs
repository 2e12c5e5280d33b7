//! Shared by the filter's host-sim tests and benches: the compiled `.wasm` (built once per
//! binary, never stale) and an Envoy bootstrap like `envoy/bootstrap/demo.yaml` around it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Builds the filter for wasm32-wasip1 once per test binary.
pub fn filter_wasm() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "tollgate-filter", "--target"])
            .args(["wasm32-wasip1", "--release"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "building the filter failed");
        target_dir().join("wasm32-wasip1/release/tollgate_filter.wasm")
    })
    .clone()
}

/// The demo bootstrap's shape with `policy` inline and one static cluster per
/// `(name, port)` on loopback.
pub fn bootstrap_text(policy: &str, clusters: &[(&str, u16)]) -> String {
    let indented: String = policy
        .lines()
        .map(|l| format!("                    {l}\n"))
        .collect();
    let clusters: String = clusters
        .iter()
        .map(|(name, port)| {
            format!(
                "  - name: {name}\n    connect_timeout: 1s\n    type: STATIC\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]\n"
            )
        })
        .collect();
    format!(
        r#"
static_resources:
  listeners:
  - name: tollgate
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tollgate
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              request_headers_to_remove: [x-tollgate-cluster]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster_header: x-tollgate-cluster }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: tollgate
                root_id: tollgate
                failure_policy: FAIL_CLOSED
                allow_on_headers_stop_iteration: true
                vm_config:
                  vm_id: tollgate
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{wasm}" }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
{indented}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        wasm = filter_wasm().display()
    )
}
