//! Per-VM host state (the wasmtime `Store` data) and the state of the stream being processed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::StoreLimits;

use crate::abi::pairs::Pairs;
use crate::clock::Clock;
use crate::shared::{MetricKind, Shared};

/// Envoy's `PluginConfig.failure_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum FailurePolicy {
    #[default]
    FailClosed,
    FailOpen,
    FailReload,
}

/// Node identity from the bootstrap (`xds.node.*` properties).
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub id: String,
    pub cluster: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Everything about the plugin that does not change at run time.
#[derive(Clone, Debug, Default)]
pub struct PluginInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub failure_policy: FailurePolicy,
    pub allow_on_headers_stop_iteration: bool,
    pub node: NodeInfo,
    /// Names of the clusters in the bootstrap: a callout to any other name is BadArgument.
    pub clusters: Vec<String>,
}

/// Which callback the host is currently running (drives map/buffer availability).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    None,
    Initialize,
    ContextCreate,
    VmStart,
    Configure,
    Tick,
    QueueReady,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    HttpCallResponse,
    Log,
    Done,
    Delete,
}

impl Callback {
    pub fn export_name(self) -> &'static str {
        match self {
            Callback::None => "none",
            Callback::Initialize => "_initialize",
            Callback::ContextCreate => "proxy_on_context_create",
            Callback::VmStart => "proxy_on_vm_start",
            Callback::Configure => "proxy_on_configure",
            Callback::Tick => "proxy_on_tick",
            Callback::QueueReady => "proxy_on_queue_ready",
            Callback::RequestHeaders => "proxy_on_request_headers",
            Callback::RequestBody => "proxy_on_request_body",
            Callback::RequestTrailers => "proxy_on_request_trailers",
            Callback::ResponseHeaders => "proxy_on_response_headers",
            Callback::ResponseBody => "proxy_on_response_body",
            Callback::ResponseTrailers => "proxy_on_response_trailers",
            Callback::HttpCallResponse => "proxy_on_http_call_response",
            Callback::Log => "proxy_on_log",
            Callback::Done => "proxy_on_done",
            Callback::Delete => "proxy_on_delete",
        }
    }
}

/// A local reply requested by the filter (`proxy_send_local_response`), applied after the call.
#[derive(Clone, Debug)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Pairs,
    pub grpc_status: i32,
}

/// Facts about the connection and route that properties expose.
#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    pub downstream_addr: String,
    pub destination_addr: String,
    pub connection_id: u64,
    pub start_time_ns: u64,
    pub protocol: String,
    pub route_name: Option<String>,
    pub cluster_name: Option<String>,
    pub response_code: Option<u32>,
    pub response_code_details: Option<String>,
    pub upstream_address: Option<String>,
    pub request_size: u64,
    pub response_size: u64,
    /// `proxy_set_property` values, readable back as top-level names.
    pub filter_state: HashMap<String, Vec<u8>>,
}

/// The HTTP stream being processed by this VM (at most one at a time: callbacks of a VM never
/// run concurrently).
#[derive(Clone, Debug, Default)]
pub struct StreamState {
    pub id: u32,
    pub req_headers: Pairs,
    pub req_body: Vec<u8>,
    pub req_trailers: Pairs,
    pub resp_headers: Pairs,
    pub resp_body: Vec<u8>,
    pub resp_trailers: Pairs,
    /// `on_request_headers` stopped iteration and the stream was not continued yet: Envoy keeps
    /// its pointer to the header map.
    pub req_held: bool,
    pub resp_held: bool,
    /// `continue_stream` was called: Envoy forgets the maps at once and resumes after the call.
    pub continue_request: bool,
    pub continue_response: bool,
    pub close_requested: bool,
    pub local_reply: Option<LocalReply>,
    /// Response headers went downstream: a local reply can no longer change the response.
    pub response_committed: bool,
    pub info: StreamInfo,
}

/// A callout issued with `proxy_http_call`, performed after the VM call returns.
#[derive(Clone, Debug)]
pub struct PendingCallout {
    pub token: u32,
    pub cluster: String,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
    pub timeout_ms: u32,
}

/// The callout response readable during `on_http_call_response`.
#[derive(Clone, Debug, Default)]
pub struct CallResponse {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
}

/// One `proxy_log` (or WASI stdout/stderr) line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub vm: usize,
    pub context_id: u32,
    pub level: String,
    pub message: String,
}

/// The wasmtime store data of one VM.
pub struct HostState {
    pub limits: StoreLimits,
    pub plugin: Arc<PluginInfo>,
    pub shared: Arc<Shared>,
    pub clock: Arc<Clock>,
    pub logs: Arc<Mutex<Vec<LogLine>>>,
    /// Slot index of this VM (workers 0..N, then the main-thread VM).
    pub vm_index: usize,
    pub callback: Callback,
    /// Inside a host→guest allocation: only a few imports are allowed.
    pub in_alloc: bool,
    pub current_ctx: u32,
    pub effective_ctx: u32,
    pub tick_period_ms: u32,
    /// Set when the filter changed the tick period during the last call.
    pub tick_changed: bool,
    pub stream: Option<StreamState>,
    pub call_response: Option<CallResponse>,
    pub pending_callouts: Vec<PendingCallout>,
    pub next_callout_token: u32,
    /// What `proxy_get_status` returns.
    pub last_status: (u32, Vec<u8>),
    pub metrics: HashMap<u32, (MetricKind, String)>,
    /// Next per-type index for metric ids (counter, gauge, histogram).
    pub next_metric: [u32; 3],
    pub rng: u64,
    pub monotonic_floor: u64,
    /// Critical log lines of the current call (the SDK's panic message), quoted in trap reports.
    pub panic_message: Option<String>,
}

impl HostState {
    pub fn log(&mut self, level: usize, message: String) {
        let level = crate::abi::types::LOG_LEVELS
            .get(level)
            .copied()
            .unwrap_or("info");
        if level == "critical" && self.panic_message.is_none() {
            self.panic_message = Some(message.clone());
        }
        let ctx = if self.effective_ctx != 0 {
            self.effective_ctx
        } else {
            self.current_ctx
        };
        crate::shared::lock(&self.logs).push(LogLine {
            vm: self.vm_index,
            context_id: ctx,
            level: level.to_string(),
            message,
        });
    }

    /// The context hostcalls act on: the effective one if the SDK set it, else the callee.
    pub fn context(&self) -> u32 {
        if self.effective_ctx != 0 {
            self.effective_ctx
        } else {
            self.current_ctx
        }
    }

    /// The live stream, when the current context is that stream.
    pub fn stream_ctx(&mut self) -> Option<&mut StreamState> {
        let ctx = self.context();
        self.stream.as_mut().filter(|s| s.id == ctx)
    }

    /// Deterministic xorshift64* (seeded per VM) for `random_get` and request ids.
    pub fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
