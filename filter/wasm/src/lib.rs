//! Tollgate's proxy-wasm adapter.
//!
//! Thin by design: callbacks gather inputs from the host, call the engine
//! (`tollgate-engine`, plain Rust) and apply its decision. Every host access goes through
//! `host`, built on the SDK's `Result`-returning `hostcalls`, never the trait helpers that
//! unwrap — a panic here is a wasm trap, and Envoy then fails every later request on the
//! worker.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod fleet_sync;
mod host;
mod http;
mod key_fetch;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_context_id| Box::new(root::TollgateRoot::default()));
}}
