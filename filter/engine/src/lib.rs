//! Tollgate's policy engine.
//!
//! Plain Rust with no proxy-wasm types: the wasm adapter (`tollgate-filter`), host-sim,
//! the benches and the fuzz targets all link this crate and drive it the same way.
//! Inputs (request head, time, entropy) are handed in; decisions come back as values.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod cache;
pub mod decision;
pub mod fleet;
pub mod fraud;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod pii;
pub mod pipeline;
pub mod policy;
pub mod request;
pub mod request_id;
pub mod routing;
pub mod shared;
pub mod usage;
pub mod waf;
pub mod webhook;

pub use decision::{BodyCheck, BodyDecision, Decision, ForwardPlan, LocalReply};
pub use metrics::Counter;
pub use pipeline::Engine;
pub use policy::{Policy, PolicyError, PolicyErrors};
pub use request::RequestHead;
pub use shared::{MemorySharedData, SetError, SharedData, StoreUnavailable};
