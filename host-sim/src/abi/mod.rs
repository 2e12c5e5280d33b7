//! The host side of proxy-wasm ABI 0.2.1 as Envoy 1.40 implements it, split by area.

pub mod buffers;
pub mod headers;
pub mod http_call;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod pairs;
pub mod properties;
pub mod queues;
pub mod shared_data;
pub mod types;
pub mod wasi;

use wasmtime::Linker;

use crate::state::HostState;

/// Defines every `env` import of §1.2 and the WASI preview1 functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    lifecycle::add(linker)?;
    headers::add(linker)?;
    buffers::add(linker)?;
    shared_data::add(linker)?;
    queues::add(linker)?;
    http_call::add(linker)?;
    metrics::add(linker)?;
    properties::add(linker)?;
    wasi::add(linker)?;
    Ok(())
}
