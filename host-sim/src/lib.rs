//! tollgate-sim: a wasmtime-based proxy-wasm host that runs the same `.wasm` Envoy loads,
//! following Envoy 1.40's behaviour (see `docs/proxy-wasm-abi.md` in shared docs).
//!
//! In-process use: build a [`config::Bootstrap`], create a [`Sim`] and call [`Sim::handle`] with a
//! [`SimRequest`] and an [`Upstream`]; or drive JSON lines through [`replay::replay`].
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod abi;
pub mod check;
pub mod clock;
pub mod config;
pub mod http_client;
pub mod replay;
pub mod routing;
pub mod serve;
pub mod shared;
pub mod sim;
pub mod state;
pub mod vm;

pub use config::Bootstrap;
pub use sim::{
    CalloutReply, Callouts, Sim, SimError, SimOptions, SimRequest, SimResponse, Upstream,
    UpstreamReply, UpstreamRequest,
};
pub use state::{FailurePolicy, LogLine};
pub use vm::VmLimits;
