//! §17.1: every import of proxy-wasm-abi.md §1.2 (and the WASI set) resolves with Envoy's
//! signature. A hand-written module imports them all; instantiation fails on any gap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_sim::config::Bootstrap;
use tollgate_sim::{Sim, SimError, SimOptions};

const IMPORTS: &[(&str, &str, usize, &str)] = &[
    ("env", "proxy_log", 3, ""),
    ("env", "proxy_get_log_level", 1, ""),
    ("env", "proxy_get_current_time_nanoseconds", 1, ""),
    ("env", "proxy_set_tick_period_milliseconds", 1, ""),
    ("env", "proxy_get_buffer_bytes", 5, ""),
    ("env", "proxy_set_buffer_bytes", 5, ""),
    ("env", "proxy_get_header_map_pairs", 3, ""),
    ("env", "proxy_set_header_map_pairs", 3, ""),
    ("env", "proxy_get_header_map_value", 5, ""),
    ("env", "proxy_replace_header_map_value", 5, ""),
    ("env", "proxy_remove_header_map_value", 3, ""),
    ("env", "proxy_add_header_map_value", 5, ""),
    ("env", "proxy_get_property", 4, ""),
    ("env", "proxy_set_property", 4, ""),
    ("env", "proxy_get_shared_data", 5, ""),
    ("env", "proxy_set_shared_data", 5, ""),
    ("env", "proxy_register_shared_queue", 3, ""),
    ("env", "proxy_resolve_shared_queue", 5, ""),
    ("env", "proxy_dequeue_shared_queue", 3, ""),
    ("env", "proxy_enqueue_shared_queue", 3, ""),
    ("env", "proxy_continue_stream", 1, ""),
    ("env", "proxy_close_stream", 1, ""),
    ("env", "proxy_send_local_response", 8, ""),
    ("env", "proxy_http_call", 10, ""),
    ("env", "proxy_grpc_call", 12, ""),
    ("env", "proxy_grpc_stream", 9, ""),
    ("env", "proxy_grpc_send", 4, ""),
    ("env", "proxy_grpc_cancel", 1, ""),
    ("env", "proxy_grpc_close", 1, ""),
    ("env", "proxy_get_status", 3, ""),
    ("env", "proxy_set_effective_context", 1, ""),
    ("env", "proxy_call_foreign_function", 6, ""),
    ("env", "proxy_done", 0, ""),
    ("env", "proxy_define_metric", 4, ""),
    ("env", "proxy_get_metric", 2, ""),
    // (id: i32, value: i64)
    ("env", "proxy_record_metric", 1, "i64"),
    ("env", "proxy_increment_metric", 1, "i64"),
    ("wasi_snapshot_preview1", "fd_write", 4, ""),
    ("wasi_snapshot_preview1", "environ_get", 2, ""),
    ("wasi_snapshot_preview1", "environ_sizes_get", 2, ""),
    ("wasi_snapshot_preview1", "args_get", 2, ""),
    ("wasi_snapshot_preview1", "args_sizes_get", 2, ""),
    ("wasi_snapshot_preview1", "random_get", 2, ""),
    ("wasi_snapshot_preview1", "sched_yield", 0, ""),
    ("wasi_snapshot_preview1", "poll_oneoff", 4, ""),
    ("wasi_snapshot_preview1", "fd_fdstat_get", 2, ""),
];

fn module(abi_marker: bool, on_vm_start_body: &str) -> String {
    let mut m = String::from("(module\n");
    for (i, (module, name, n, extra)) in IMPORTS.iter().enumerate() {
        let params = "i32 ".repeat(*n);
        m.push_str(&format!(
            "  (import \"{module}\" \"{name}\" (func $f{i} (param {params}{extra}) (result i32)))\n"
        ));
    }
    m.push_str("  (import \"wasi_snapshot_preview1\" \"clock_time_get\" (func $clock (param i32 i64 i32) (result i32)))\n");
    m.push_str("  (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n");
    m.push_str("  (memory (export \"memory\") 1)\n");
    if abi_marker {
        m.push_str("  (func (export \"proxy_abi_version_0_2_1\"))\n");
    }
    m.push_str(
        "  (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) i32.const 1024)\n",
    );
    m.push_str("  (func (export \"proxy_on_context_create\") (param i32 i32))\n");
    m.push_str(&format!(
        "  (func (export \"proxy_on_vm_start\") (param i32 i32) (result i32) {on_vm_start_body})\n"
    ));
    m.push_str(
        "  (func (export \"proxy_on_configure\") (param i32 i32) (result i32) i32.const 1)\n)\n",
    );
    m
}

fn bootstrap(wat: &str) -> Bootstrap {
    let escaped = serde_json::to_string(wat).unwrap();
    let text = format!(
        r#"{{"static_resources": {{"listeners": [{{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 1}}}},
  "filter_chains": [{{"filters": [{{"name": "envoy.filters.network.http_connection_manager", "typed_config": {{
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "route_config": {{"virtual_hosts": []}},
    "http_filters": [
      {{"name": "envoy.filters.http.wasm", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {{"vm_config": {{"code": {{"local": {{"inline_string": {escaped}}}}}}}}}}}}},
      {{"name": "envoy.filters.http.router"}}]}}}}]}}]}}]}}}}"#
    );
    Bootstrap::parse(&text).unwrap()
}

fn opts() -> SimOptions {
    SimOptions {
        workers: 1,
        start_time_ns: Some(1),
        ..SimOptions::default()
    }
}

#[test]
fn every_abi_import_is_defined_with_envoys_signature() {
    Sim::new(bootstrap(&module(true, "i32.const 1")), opts()).unwrap();
}

#[test]
fn missing_abi_version_fails_the_load() {
    match Sim::new(bootstrap(&module(false, "i32.const 1")), opts()) {
        Err(SimError::Trap(m)) => assert!(m.contains("ABI version"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn wild_pointers_in_any_import_trap_the_vm_not_the_host() {
    // proxy_get_current_time_nanoseconds writing to the last bytes of memory, and
    // fd_write with an iovec table outside memory.
    for body in [
        "i32.const 65533 call $f2",
        "i32.const 1 i32.const 70000 i32.const 1 i32.const 0 call $f37",
    ] {
        match Sim::new(bootstrap(&module(true, body)), opts()) {
            Err(SimError::Trap(m)) => assert!(m.contains("out of bounds"), "{m}"),
            other => panic!("{body}: {:?}", other.err()),
        }
    }
}

#[test]
fn proc_exit_traps() {
    match Sim::new(
        bootstrap(&module(true, "i32.const 3 call $exit i32.const 1")),
        opts(),
    ) {
        Err(SimError::Trap(m)) => assert!(m.contains("proc_exit(3)"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}
