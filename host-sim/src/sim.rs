//! The simulator: N worker VMs + the main-thread VM of one plugin, a router over the bootstrap's
//! routes, and the HTTP stream state machine that drives a request through the filter the way
//! Envoy 1.40 does (proxy-wasm-abi.md §4–§6, §14, §15).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use wasmtime::Linker;

use crate::abi::pairs::Pairs;
use crate::clock::Clock;
use crate::config::{Bootstrap, Code, Listener};
use crate::routing::{RouteDecision, route};
use crate::shared::{Shared, lock};
use crate::state::{
    CallResponse, Callback, FailurePolicy, LogLine, PendingCallout, PluginInfo, StreamInfo,
    StreamState,
};
use crate::vm::{ROOT_CONTEXT_ID, Trap, Vm, VmEnv, VmLimits};

pub use body::{
    BodySource, Buffered, ChunkList, ResponseSink, StreamedReply, UpstreamExchange, collect,
};

/// How the simulator is set up.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Worker VMs (a main-thread VM is added, as in Envoy).
    pub workers: usize,
    pub limits: VmLimits,
    /// Seed of the guests' `random_get` and of generated request ids.
    pub seed: u64,
    /// Overrides `vm_config.code` (`--wasm`).
    pub wasm_override: Option<PathBuf>,
    /// Start of virtual time in ns since the epoch; `None`: real time.
    pub start_time_ns: Option<u64>,
    /// Cluster → `host:port` for callouts (`--cluster`); wins over the bootstrap.
    pub cluster_overrides: HashMap<String, String>,
    /// Use the bootstrap's cluster endpoints for callouts (serve) or only the overrides (replay:
    /// a cluster without an override answers callouts with a connect failure).
    pub callouts_use_config_addresses: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            limits: VmLimits::default(),
            seed: 0x5EED,
            wasm_override: None,
            start_time_ns: None,
            cluster_overrides: HashMap::new(),
            callouts_use_config_addresses: false,
        }
    }
}

/// Why a simulator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("config: {0:#}")]
    Config(anyhow::Error),
    #[error("the plugin rejected its configuration (on_vm_start/on_configure returned false)")]
    Rejected,
    #[error("the VM failed to start: {0}")]
    Trap(String),
}

/// One request as a downstream client sends it.
#[derive(Clone, Debug, Default)]
pub struct SimRequest {
    pub time_ns: Option<u64>,
    pub worker: usize,
    pub downstream_addr: Option<String>,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub scheme: String,
    pub headers: Pairs,
    /// Body as delivered by the codec: one entry per chunk.
    pub body_chunks: Vec<Vec<u8>>,
    pub trailers: Pairs,
}

/// What the router sends upstream, after the filter changed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Regular headers (no pseudo-headers), in order.
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
    pub timeout: Duration,
}

/// What the origin answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamReply {
    Response {
        status: u16,
        headers: Pairs,
        body: Vec<u8>,
        trailers: Pairs,
    },
    ConnectFailure,
    Timeout,
}

/// The origin: a replay stub or real sockets.
pub trait Upstream {
    /// The whole exchange at once. `address` is the cluster's first endpoint (`host:port`), if
    /// it has one.
    fn send(&mut self, req: &UpstreamRequest, address: Option<&str>) -> UpstreamReply;

    /// Starts a streamed exchange (`req` without its body). The default collects the body and
    /// calls [`send`](Upstream::send) when the request is complete.
    fn open<'a>(
        &'a mut self,
        req: UpstreamRequest,
        address: Option<String>,
    ) -> Box<dyn UpstreamExchange + 'a> {
        Box::new(Buffered {
            upstream: self,
            request: req,
            address,
        })
    }
}

/// How a callout ended.
#[derive(Clone, Debug)]
pub enum CalloutReply {
    Response(CallResponse),
    ConnectFailure,
    Timeout,
    /// Reset / over the buffer limit: the filter gets `(0,0,0)` and status 11 "reset".
    Reset,
}

/// Performs `proxy_http_call`s. `address` is the cluster's address, if it has one.
pub trait Callouts: Send + Sync {
    fn call(&self, callout: &PendingCallout, address: Option<&str>) -> CalloutReply;
}

/// The downstream response, plus what happened on the way.
#[derive(Clone, Debug, Default)]
pub struct SimResponse {
    pub status: u16,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub upstream_called: bool,
    pub upstream_cluster: Option<String>,
    pub upstream_request: Option<UpstreamRequest>,
    /// The filter answered itself (`send_local_response`).
    pub local_reply: bool,
    /// The stream was reset (`close_stream`): no response reached the client.
    pub reset: bool,
    pub trap: Option<String>,
    pub stream_id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Healthy,
    FailedClosed,
    FailedOpen,
    NeedsReload,
}

struct Slot {
    vm: Option<Vm>,
    state: SlotState,
    next_tick_ns: Option<u64>,
    tick_period_ms: u32,
}

/// The simulated Envoy process.
pub struct Sim {
    pub bootstrap: Bootstrap,
    listener: Listener,
    env: Option<VmEnv>,
    slots: Vec<Mutex<Slot>>,
    workers: usize,
    pub clock: Arc<Clock>,
    pub shared: Arc<Shared>,
    logs: Arc<Mutex<Vec<LogLine>>>,
    callouts: Arc<dyn Callouts>,
    callout_addresses: HashMap<String, String>,
    counter: AtomicU64,
    seed: u64,
}

/// The default callout backend: real HTTP to the cluster's address; no address → connect failure.
pub struct HttpCallouts;

impl Callouts for HttpCallouts {
    fn call(&self, c: &PendingCallout, address: Option<&str>) -> CalloutReply {
        let Some(addr) = address else {
            return CalloutReply::ConnectFailure;
        };
        let get = |name: &[u8]| {
            c.headers
                .iter()
                .find(|(k, _)| k.as_slice() == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let method = get(b":method").unwrap_or_else(|| "GET".into());
        let path = get(b":path").unwrap_or_else(|| "/".into());
        let authority = get(b":authority")
            .or_else(|| get(b"host"))
            .unwrap_or_default();
        let headers: Pairs = c
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(b":") && k.as_slice() != b"host")
            .cloned()
            .collect();
        let timeout = (c.timeout_ms > 0).then(|| Duration::from_millis(u64::from(c.timeout_ms)));
        let req = crate::http_client::Request {
            method: &method,
            path: &path,
            authority: &authority,
            headers: &headers,
            body: &c.body,
        };
        match crate::http_client::send(addr, req, Duration::from_secs(5), timeout) {
            Ok(r) => {
                let mut headers = vec![(b":status".to_vec(), r.status.to_string().into_bytes())];
                headers.extend(r.headers);
                CalloutReply::Response(CallResponse {
                    headers,
                    body: r.body,
                    trailers: Vec::new(),
                })
            }
            Err(crate::http_client::HttpError::ConnectFailure) => CalloutReply::ConnectFailure,
            Err(crate::http_client::HttpError::Timeout) => CalloutReply::Timeout,
            Err(crate::http_client::HttpError::Reset) => CalloutReply::Reset,
        }
    }
}

const CONNECT_FAILURE_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
const TIMEOUT_BODY: &str = "upstream request timeout";

fn synthesized(status: u16, body: &str) -> CallResponse {
    CallResponse {
        headers: vec![
            (b":status".to_vec(), status.to_string().into_bytes()),
            (
                b"content-length".to_vec(),
                body.len().to_string().into_bytes(),
            ),
            (b"content-type".to_vec(), b"text/plain".to_vec()),
        ],
        body: body.as_bytes().to_vec(),
        trailers: Vec::new(),
    }
}

/// Headers Envoy puts on a local reply: `:status`, the filter's headers, then content-length/-type
/// when there is a body (order observed in Envoy 1.40, differential suite `local reply ...`).
fn local_reply_headers(status: u32, body: &[u8], extra: &Pairs) -> Pairs {
    let mut h = vec![(b":status".to_vec(), status.to_string().into_bytes())];
    h.extend(extra.iter().cloned());
    if !body.is_empty() {
        h.push((
            b"content-length".to_vec(),
            body.len().to_string().into_bytes(),
        ));
        // Envoy sets text/plain only when the filter gave no content-type (observed:
        // a JSON local reply reaches the client with its own content-type alone).
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"content-type"))
        {
            h.push((b"content-type".to_vec(), b"text/plain".to_vec()));
        }
    }
    h
}

fn status_of(h: &Pairs) -> u16 {
    h.iter()
        .find(|(k, _)| k.as_slice() == b":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Result of waiting after a callback.
#[derive(Debug, PartialEq, Eq)]
enum Settle {
    Continue,
    LocalReply,
    Reset,
    Stalled,
}

/// Which direction a resume applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

impl Sim {
    /// Builds the simulator: compiles the module and starts every VM (workers + main).
    pub fn new(bootstrap: Bootstrap, opts: SimOptions) -> Result<Sim, SimError> {
        Self::with_callouts(bootstrap, opts, Arc::new(HttpCallouts))
    }

    /// Like [`Sim::new`], with log lines going to `sink` (readable even if start fails).
    pub fn with_log_sink(
        bootstrap: Bootstrap,
        opts: SimOptions,
        sink: Arc<Mutex<Vec<LogLine>>>,
    ) -> Result<Sim, SimError> {
        Self::build(bootstrap, opts, Arc::new(HttpCallouts), sink)
    }

    /// Like [`Sim::new`], with a custom callout backend (tests stub the sidecar with it).
    pub fn with_callouts(
        bootstrap: Bootstrap,
        opts: SimOptions,
        callouts: Arc<dyn Callouts>,
    ) -> Result<Sim, SimError> {
        Self::build(bootstrap, opts, callouts, Arc::new(Mutex::new(Vec::new())))
    }

    fn build(
        bootstrap: Bootstrap,
        opts: SimOptions,
        callouts: Arc<dyn Callouts>,
        logs: Arc<Mutex<Vec<LogLine>>>,
    ) -> Result<Sim, SimError> {
        let listener = bootstrap.listeners.first().cloned().ok_or_else(|| {
            SimError::Config(anyhow!(
                "static_resources.listeners: at least one listener is required"
            ))
        })?;
        let clock = Arc::new(match opts.start_time_ns {
            Some(t) => Clock::virtual_at(t),
            None => Clock::real(),
        });
        let shared = Arc::new(Shared::new());
        let mut callout_addresses = HashMap::new();
        if opts.callouts_use_config_addresses {
            for c in &bootstrap.clusters {
                if let Some(e) = c.endpoints.first() {
                    callout_addresses.insert(c.name.clone(), e.clone());
                }
            }
        }
        for (k, v) in &opts.cluster_overrides {
            // Envoy only calls out to configured clusters; a typo here would silently fail open.
            if bootstrap.cluster(k).is_none() {
                return Err(SimError::Config(anyhow!(
                    "--cluster {k}: no cluster named {k:?} in static_resources.clusters"
                )));
            }
            callout_addresses.insert(k.clone(), v.clone());
        }
        let env = match listener.wasm.clone() {
            None => None,
            Some(w) => {
                let bytes = match (&opts.wasm_override, &w.code) {
                    (Some(p), _) => {
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
                    }
                    (None, Code::Inline(b)) => Ok(b.clone()),
                    (None, Code::File(p)) => {
                        let candidates = [
                            bootstrap.base_dir.as_ref().map(|d| d.join(p)),
                            Some(p.clone()),
                        ];
                        candidates
                            .iter()
                            .flatten()
                            .find_map(|c| std::fs::read(c).ok())
                            .ok_or_else(|| {
                                anyhow!(
                                    "vm_config.code.local.filename: cannot read {}",
                                    p.display()
                                )
                            })
                    }
                }
                .map_err(SimError::Config)?;
                let engine = crate::vm::new_engine().map_err(SimError::Config)?;
                let module = crate::vm::compile(&engine, &bytes).map_err(SimError::Config)?;
                let mut linker = Linker::new(&engine);
                crate::abi::add_to_linker(&mut linker).map_err(SimError::Config)?;
                let plugin = PluginInfo {
                    name: w.name.clone(),
                    root_id: w.root_id.clone(),
                    vm_id: w.vm_id.clone(),
                    vm_config: w.vm_configuration.clone(),
                    plugin_config: w.configuration.clone(),
                    env: w.env.clone(),
                    failure_policy: w.failure_policy,
                    allow_on_headers_stop_iteration: w.allow_on_headers_stop_iteration,
                    node: bootstrap.node.clone(),
                    clusters: bootstrap.clusters.iter().map(|c| c.name.clone()).collect(),
                };
                Some(VmEnv {
                    engine,
                    module,
                    linker: Arc::new(linker),
                    plugin: Arc::new(plugin),
                    shared: shared.clone(),
                    clock: clock.clone(),
                    logs: logs.clone(),
                    limits: opts.limits.clone(),
                    seed: opts.seed,
                })
            }
        };
        let workers = opts.workers.max(1);
        let mut sim = Sim {
            bootstrap,
            listener,
            env,
            slots: Vec::new(),
            workers,
            clock,
            shared,
            logs,
            callouts,
            callout_addresses,
            counter: AtomicU64::new(0),
            seed: opts.seed,
        };
        for i in 0..=workers {
            let slot = sim.start_slot(i)?;
            sim.slots.push(Mutex::new(slot));
        }
        // Callouts and queue posts made while configuring are delivered now.
        for i in 0..=workers {
            let mut slot = lock(&sim.slots[i]);
            sim.after_call(&mut slot);
        }
        sim.deliver_queue_notifications();
        Ok(sim)
    }

    fn start_slot(&self, index: usize) -> Result<Slot, SimError> {
        let mut slot = Slot {
            vm: None,
            state: SlotState::Healthy,
            next_tick_ns: None,
            tick_period_ms: 0,
        };
        let Some(env) = &self.env else {
            return Ok(slot);
        };
        let mut vm = Vm::instantiate(env, index).map_err(|t| SimError::Trap(t.0))?;
        match vm.start() {
            Ok(true) => {}
            Ok(false) => return Err(SimError::Rejected),
            Err(t) => return Err(SimError::Trap(t.0)),
        }
        slot.vm = Some(vm);
        self.sync_tick(&mut slot);
        Ok(slot)
    }

    /// The listener's `ip:port` from the bootstrap.
    pub fn listener_address(&self) -> &str {
        &self.listener.address
    }

    /// Metrics as `(stat name, value)`, e.g. `("wasmcustom.c", 13)`.
    pub fn metrics(&self) -> Vec<(String, i64)> {
        self.shared.metrics_snapshot()
    }

    /// Envoy's shutdown of every live VM: root `on_done` then `on_delete` (a `false` from
    /// `on_done` is not waited on). VMs stay unusable for streams afterwards only by convention.
    pub fn shutdown(&self) {
        for slot in &self.slots {
            let mut slot = lock(slot);
            if slot.state != SlotState::Healthy {
                continue;
            }
            let Some(vm) = slot.vm.as_mut() else { continue };
            let root = ROOT_CONTEXT_ID as i32;
            let done = vm.call::<i32, i32>(Callback::Done, "proxy_on_done", ROOT_CONTEXT_ID, root);
            let deleted = done.and_then(|_| {
                vm.call::<i32, ()>(Callback::Delete, "proxy_on_delete", ROOT_CONTEXT_ID, root)
            });
            if deleted.is_err() {
                self.apply_failure(&mut slot);
            }
            slot.next_tick_ns = None;
        }
    }

    /// Number of worker VMs (the main-thread VM is extra).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Takes the log lines emitted so far (proxy_log and WASI stdout/stderr).
    pub fn take_logs(&self) -> Vec<LogLine> {
        std::mem::take(&mut *lock(&self.logs))
    }

    /// The failure report of a worker's VM, if it trapped.
    pub fn vm_failure(&self, worker: usize) -> Option<String> {
        let slot = lock(self.slots.get(worker)?);
        slot.vm.as_ref().and_then(|v| v.failed.clone())
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn sync_tick(&self, slot: &mut Slot) {
        let now = self.now_ns();
        if let Some(vm) = slot.vm.as_mut()
            && let Some(p) = vm.take_tick_change()
        {
            slot.tick_period_ms = p;
            // Changing the period re-arms the timer one new period from now; 0 disables.
            slot.next_tick_ns = (p > 0).then(|| now.saturating_add(u64::from(p) * 1_000_000));
        }
    }

    /// Moves virtual time to `t_ns`, firing every due tick in time order on every VM.
    pub fn advance_to(&self, t_ns: u64) {
        self.fire_ticks(t_ns, true);
        self.clock.set_ns(t_ns);
    }

    /// Fires ticks due by the real clock (serve mode).
    pub fn tick_real(&self) {
        self.fire_ticks(crate::clock::real_now_ns(), false);
    }

    fn fire_ticks(&self, until: u64, set_clock: bool) {
        // Bounded so a 1 ms period over a long virtual gap cannot hang the host.
        for _ in 0..1_000_000 {
            let mut due: Option<(usize, u64)> = None;
            for (i, s) in self.slots.iter().enumerate() {
                let s = lock(s);
                if s.state == SlotState::Healthy
                    && let Some(t) = s.next_tick_ns
                    && t <= until
                    && due.is_none_or(|(_, d)| t < d)
                {
                    due = Some((i, t));
                }
            }
            let Some((i, t)) = due else { break };
            if set_clock {
                self.clock.set_ns(t);
            }
            let mut slot = lock(&self.slots[i]);
            let Some(vm) = slot.vm.as_mut() else { break };
            let result = vm.on_tick();
            match result {
                Ok(()) => {
                    // Fixed delay: re-armed after each tick unless the tick changed the period.
                    slot.next_tick_ns = (slot.tick_period_ms > 0)
                        .then(|| t.saturating_add(u64::from(slot.tick_period_ms) * 1_000_000));
                    self.after_call(&mut slot);
                }
                Err(_) => self.apply_failure(&mut slot),
            }
            drop(slot);
            self.deliver_queue_notifications();
        }
    }

    fn apply_failure(&self, slot: &mut Slot) {
        let policy = self
            .env
            .as_ref()
            .map(|e| e.plugin.failure_policy)
            .unwrap_or_default();
        slot.state = match policy {
            FailurePolicy::FailClosed => SlotState::FailedClosed,
            FailurePolicy::FailOpen => SlotState::FailedOpen,
            FailurePolicy::FailReload => SlotState::NeedsReload,
        };
        slot.next_tick_ns = None;
    }

    /// Tick changes and callouts issued by the last call on a root context.
    fn after_call(&self, slot: &mut Slot) {
        self.sync_tick(slot);
        if slot.vm.is_some() && self.drain_callouts(slot).is_err() {
            self.apply_failure(slot);
        }
    }

    fn drain_callouts(&self, slot: &mut Slot) -> Result<(), Trap> {
        for _ in 0..10_000 {
            let Some(vm) = slot.vm.as_mut() else {
                return Ok(());
            };
            if vm.host().pending_callouts.is_empty() {
                break;
            }
            let c = vm.host_mut().pending_callouts.remove(0);
            self.deliver_callout(vm, &c)?;
            self.sync_tick(slot);
        }
        Ok(())
    }

    fn deliver_callout(&self, vm: &mut Vm, c: &PendingCallout) -> Result<(), Trap> {
        let addr = self.callout_addresses.get(&c.cluster).map(String::as_str);
        let resp = match self.callouts.call(c, addr) {
            CalloutReply::Response(r) => Some(r),
            CalloutReply::ConnectFailure => Some(synthesized(503, CONNECT_FAILURE_BODY)),
            CalloutReply::Timeout => Some(synthesized(504, TIMEOUT_BODY)),
            CalloutReply::Reset => None,
        };
        vm.deliver_call_response(c.token, resp)
    }

    /// Delivers posted `on_queue_ready` notifications to their VMs.
    fn deliver_queue_notifications(&self) {
        for _ in 0..1000 {
            let notes = self.shared.take_queue_notifications();
            if notes.is_empty() {
                return;
            }
            for (vm_index, queue) in notes {
                let Some(slot) = self.slots.get(vm_index) else {
                    continue;
                };
                let mut slot = lock(slot);
                if slot.state != SlotState::Healthy {
                    continue;
                }
                let Some(vm) = slot.vm.as_mut() else { continue };
                match vm.on_queue_ready(queue) {
                    Ok(()) => self.after_call(&mut slot),
                    Err(_) => self.apply_failure(&mut slot),
                }
            }
        }
    }

    fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A deterministic UUID-shaped request id.
    fn request_id(&self, n: u64) -> String {
        let mut x =
            (self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x632B_E59B_D9B4_E019);
        let mut next = || {
            x ^= x >> 30;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 27;
            x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            x
        };
        let (a, b) = (next(), next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// Runs one request through the filter and the router, with its body from
    /// `req.body_chunks` and the whole response collected in the result.
    pub fn handle(&self, req: SimRequest, upstream: &mut dyn Upstream) -> SimResponse {
        let mut body = ChunkList::new(&req.body_chunks, !req.trailers.is_empty());
        self.handle_streaming(req, &mut body, upstream, None)
    }

    /// Runs one request with its body streamed from `body` (`req.body_chunks` is ignored); with a
    /// `sink`, the filtered response head and body go there as the filter releases them and
    /// only what was not sent there is left in the result (see [`ResponseSink`]).
    pub fn handle_streaming(
        &self,
        req: SimRequest,
        body: &mut dyn BodySource,
        upstream: &mut dyn Upstream,
        sink: Option<&mut dyn ResponseSink>,
    ) -> SimResponse {
        match req.time_ns {
            Some(t) => self.advance_to(t),
            None => {
                if self.clock.is_virtual() {
                    self.clock.set_real();
                    // Timers armed on virtual time would all be overdue: re-arm them from now
                    // rather than firing months of ticks in a burst.
                    let now = crate::clock::real_now_ns();
                    for slot in &self.slots {
                        let mut slot = lock(slot);
                        if let Some(t) = slot.next_tick_ns {
                            slot.next_tick_ns = Some(t.max(now));
                        }
                    }
                }
                self.tick_real();
            }
        }
        let worker = req.worker % self.workers;
        let n = self.next_counter();
        let mut slot = lock(&self.slots[worker]);
        if slot.state == SlotState::NeedsReload {
            match self.start_slot(worker) {
                Ok(fresh) => *slot = fresh,
                Err(_) => slot.state = SlotState::FailedClosed,
            }
        }
        let out = match (slot.state, slot.vm.is_some()) {
            (SlotState::FailedClosed | SlotState::NeedsReload, _) => fail_closed(None),
            (SlotState::FailedOpen, _) | (SlotState::Healthy, false) => {
                self.passthrough(&req, body, n, upstream, None)
            }
            (SlotState::Healthy, true) => {
                let mut rec = SimResponse::default();
                match self.run_stream(&mut slot, &req, body, n, upstream, sink, &mut rec) {
                    Ok(()) => rec,
                    Err(trap) => {
                        if let Some(vm) = slot.vm.as_mut() {
                            vm.host_mut().stream = None;
                        }
                        self.apply_failure(&mut slot);
                        match slot.state {
                            // Already sent upstream: pass the origin's response on unfiltered
                            // instead of sending the request twice.
                            SlotState::FailedOpen if rec.upstream_called => SimResponse {
                                trap: Some(trap.0),
                                local_reply: false,
                                ..rec
                            },
                            SlotState::FailedOpen => {
                                self.passthrough(&req, body, n, upstream, Some(trap.0))
                            }
                            _ => fail_closed(Some(trap.0)),
                        }
                    }
                }
            }
        };
        drop(slot);
        self.deliver_queue_notifications();
        out
    }

    fn request_headers(&self, req: &SimRequest, n: u64) -> Pairs {
        let mut h: Pairs = vec![
            (b":authority".to_vec(), req.authority.as_bytes().to_vec()),
            (b":path".to_vec(), req.path.as_bytes().to_vec()),
            (b":method".to_vec(), req.method.as_bytes().to_vec()),
            (b":scheme".to_vec(), req.scheme.as_bytes().to_vec()),
        ];
        for (k, v) in &req.headers {
            h.push((k.to_ascii_lowercase(), v.clone()));
        }
        // Envoy's HCM adds these before any filter runs.
        if !h.iter().any(|(k, _)| k == b"x-forwarded-proto") {
            h.push((
                b"x-forwarded-proto".to_vec(),
                req.scheme.as_bytes().to_vec(),
            ));
        }
        if self.listener.generate_request_id && !h.iter().any(|(k, _)| k == b"x-request-id") {
            h.push((b"x-request-id".to_vec(), self.request_id(n).into_bytes()));
        }
        h
    }

    /// Routes and forwards without the filter (no VM, or fail-open after a trap).
    fn passthrough(
        &self,
        req: &SimRequest,
        body: &mut dyn BodySource,
        n: u64,
        upstream: &mut dyn Upstream,
        trap: Option<String>,
    ) -> SimResponse {
        let headers = self.request_headers(req, n);
        let body_source = body;
        let body = collect(body_source);
        let mut out = SimResponse {
            trap,
            ..Default::default()
        };
        if body_source.aborted() {
            out.reset = true;
            return out;
        }
        let (status, headers, body) = match self.route_upstream(&headers, None) {
            Err(RouterReply { status, body }) => (
                status as u16,
                local_reply_headers(status, &body, &Vec::new()),
                body,
            ),
            Ok((mut request, address)) => {
                request.body = body;
                request.trailers = req.trailers.clone();
                out.upstream_called = true;
                out.upstream_cluster = Some(request.cluster.clone());
                let reply = upstream.send(&request, address.as_deref());
                out.upstream_request = Some(request);
                match upstream_reply(reply) {
                    Forwarded::Response { headers, body } => (status_of(&headers), headers, body),
                    Forwarded::Local { status, body } => (
                        status as u16,
                        local_reply_headers(status, &body, &Vec::new()),
                        body,
                    ),
                }
            }
        };
        out.status = status;
        out.headers = finalize_headers(headers, &body);
        out.body = body;
        out
    }

    /// Routes the (filtered) request headers: the upstream request to open (without its body)
    /// and the cluster's address, or the router's own reply (no route, direct response,
    /// unknown cluster).
    fn route_upstream(
        &self,
        headers: &Pairs,
        mut info: Option<&mut StreamInfo>,
    ) -> Result<(UpstreamRequest, Option<String>), RouterReply> {
        let decision = route(&self.listener.route_config, headers);
        let (cluster, timeout, remove, route_name) = match decision {
            RouteDecision::NoRoute => {
                return Err(RouterReply {
                    status: 404,
                    body: Vec::new(),
                });
            }
            RouteDecision::Direct {
                status,
                body,
                route_name,
            } => {
                if let Some(i) = info.as_deref_mut() {
                    i.route_name = Some(route_name);
                }
                return Err(RouterReply { status, body });
            }
            RouteDecision::Cluster {
                cluster,
                timeout,
                remove,
                route_name,
            } => (cluster, timeout, remove, route_name),
        };
        if let Some(i) = info {
            i.route_name = Some(route_name);
            i.cluster_name = Some(cluster.clone());
        }
        let Some(c) = self.bootstrap.cluster(&cluster) else {
            // Envoy: cluster not found → 503 (NC).
            return Err(RouterReply {
                status: 503,
                body: Vec::new(),
            });
        };
        let get = |name: &[u8]| {
            headers
                .iter()
                .find(|(k, _)| k.as_slice() == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let request = UpstreamRequest {
            cluster,
            method: get(b":method"),
            path: get(b":path"),
            authority: get(b":authority"),
            headers: headers
                .iter()
                .filter(|(k, _)| {
                    !k.starts_with(b":") && !remove.iter().any(|r| r.as_bytes() == k.as_slice())
                })
                .cloned()
                .collect(),
            body: Vec::new(),
            trailers: Vec::new(),
            timeout,
        };
        Ok((request, c.endpoints.first().cloned()))
    }
}

/// The origin's whole answer as the router passes it on (`:status` first, names lower-cased),
/// or the router's reply to an upstream failure.
fn upstream_reply(reply: UpstreamReply) -> Forwarded {
    match reply {
        UpstreamReply::Response {
            status,
            headers,
            body,
            ..
        } => Forwarded::Response {
            headers: response_head(status, headers),
            body,
        },
        UpstreamReply::ConnectFailure => Forwarded::Local {
            status: 503,
            body: CONNECT_FAILURE_BODY.as_bytes().to_vec(),
        },
        UpstreamReply::Timeout => Forwarded::Local {
            status: 504,
            body: TIMEOUT_BODY.as_bytes().to_vec(),
        },
    }
}

fn response_head(status: u16, headers: Pairs) -> Pairs {
    let mut h = vec![(b":status".to_vec(), status.to_string().into_bytes())];
    h.extend(
        headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v)),
    );
    h
}

/// A reply the router makes itself (no route, direct response, unknown cluster).
struct RouterReply {
    status: u32,
    body: Vec<u8>,
}

enum Forwarded {
    Response {
        headers: Pairs,
        body: Vec<u8>,
    },
    /// A router-generated reply (no route, direct response, upstream failure).
    Local {
        status: u32,
        body: Vec<u8>,
    },
}

fn fail_closed(trap: Option<String>) -> SimResponse {
    // Envoy's wasm_fail_stream: 503 with no body.
    SimResponse {
        status: 503,
        headers: vec![(b"content-length".to_vec(), b"0".to_vec())],
        trap,
        ..Default::default()
    }
}

/// The response as the client sees it: pseudo-headers dropped; a body-less reply gets the
/// codec's `content-length: 0`.
fn finalize_headers(h: Pairs, body: &[u8]) -> Pairs {
    let mut out: Pairs = h
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b":"))
        .collect();
    if body.is_empty()
        && !out
            .iter()
            .any(|(k, _)| k == b"content-length" || k == b"transfer-encoding")
    {
        out.push((b"content-length".to_vec(), b"0".to_vec()));
    }
    out
}

mod body;
mod stream;
