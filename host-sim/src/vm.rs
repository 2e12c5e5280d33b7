//! One VM instance: a wasmtime store + instance of the plugin module, its root context, and
//! checked calls into the module's exports (fuel per callback, memory limit).

use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow};
use wasmtime::{
    Engine, Instance, Linker, Module, Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults,
};

use crate::clock::Clock;
use crate::shared::Shared;
use crate::state::{CallResponse, Callback, HostState, LogLine, PluginInfo, StreamState};

/// Every VM's root context has id 1, as in Envoy.
pub const ROOT_CONTEXT_ID: u32 = 1;

/// Resource limits for one VM.
#[derive(Clone, Debug)]
pub struct VmLimits {
    /// Fuel per top-level callback: a guest that loops is stopped and reported as a trap.
    pub fuel_per_callback: u64,
    /// Linear memory cap in bytes (Envoy/cpp-host: 1 GiB).
    pub max_memory_bytes: usize,
}

impl Default for VmLimits {
    fn default() -> Self {
        Self {
            fuel_per_callback: 2_000_000_000,
            max_memory_bytes: 1 << 30,
        }
    }
}

/// Why a VM call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Trap(pub String);

/// Everything a VM needs from its simulator.
#[derive(Clone)]
pub struct VmEnv {
    pub engine: Engine,
    pub module: Module,
    pub linker: Arc<Linker<HostState>>,
    pub plugin: Arc<PluginInfo>,
    pub shared: Arc<Shared>,
    pub clock: Arc<Clock>,
    pub logs: Arc<Mutex<Vec<LogLine>>>,
    pub limits: VmLimits,
    pub seed: u64,
}

pub struct Vm {
    store: Store<HostState>,
    instance: Instance,
    fuel: u64,
    next_stream_id: u32,
    /// Set once the VM trapped: no more callbacks are made.
    pub failed: Option<String>,
}

impl Vm {
    /// Instantiates the module and runs `_initialize` (restricted, §1.4). No contexts yet.
    pub fn instantiate(env: &VmEnv, vm_index: usize) -> Result<Vm, Trap> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(env.limits.max_memory_bytes)
            .build();
        let state = HostState {
            limits,
            plugin: env.plugin.clone(),
            shared: env.shared.clone(),
            clock: env.clock.clone(),
            logs: env.logs.clone(),
            vm_index,
            callback: Callback::None,
            in_alloc: false,
            current_ctx: 0,
            effective_ctx: 0,
            tick_period_ms: 0,
            tick_changed: false,
            stream: None,
            call_response: None,
            pending_callouts: Vec::new(),
            next_callout_token: 0,
            last_status: (0, Vec::new()),
            metrics: Default::default(),
            next_metric: [0; 3],
            // Never zero (xorshift would stay at zero); distinct per VM.
            rng: (env.seed ^ (vm_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            monotonic_floor: 0,
            panic_message: None,
        };
        let mut store = Store::new(&env.engine, state);
        store.limiter(|s| &mut s.limits);
        let fuel = env.limits.fuel_per_callback;
        store.set_fuel(fuel).map_err(|e| Trap(format!("{e:#}")))?;
        let instance = env
            .linker
            .instantiate(&mut store, &env.module)
            .map_err(|e| Trap(format!("instantiate: {e:#}")))?;
        if instance
            .get_export(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
            && instance
                .get_export(&mut store, "proxy_abi_version_0_2_0")
                .is_none()
        {
            return Err(Trap("Missing or unknown Proxy-Wasm ABI version".into()));
        }
        let mut vm = Vm {
            store,
            instance,
            fuel,
            next_stream_id: ROOT_CONTEXT_ID + 1,
            failed: None,
        };
        if vm
            .instance
            .get_export(&mut vm.store, "_initialize")
            .is_some()
        {
            vm.call::<(), ()>(Callback::Initialize, "_initialize", 0, ())?;
        }
        Ok(vm)
    }

    /// Root start sequence: `on_context_create(1,0)`, `on_vm_start`, `on_configure`.
    /// `Ok(false)` when the plugin rejected its VM or plugin configuration.
    pub fn start(&mut self) -> Result<bool, Trap> {
        let root = ROOT_CONTEXT_ID as i32;
        self.call::<(i32, i32), ()>(
            Callback::ContextCreate,
            "proxy_on_context_create",
            ROOT_CONTEXT_ID,
            (root, 0),
        )?;
        let vm_cfg = self.store.data().plugin.vm_config.len() as i32;
        let ok = self.call::<(i32, i32), i32>(
            Callback::VmStart,
            "proxy_on_vm_start",
            ROOT_CONTEXT_ID,
            (root, vm_cfg),
        )?;
        if ok == 0 {
            return Ok(false);
        }
        let plugin_cfg = self.store.data().plugin.plugin_config.len() as i32;
        let ok = self.call::<(i32, i32), i32>(
            Callback::Configure,
            "proxy_on_configure",
            ROOT_CONTEXT_ID,
            (root, plugin_cfg),
        )?;
        Ok(ok != 0)
    }

    pub fn host(&self) -> &HostState {
        self.store.data()
    }

    pub fn host_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Next stream context id: 2, 3, … per VM.
    pub fn alloc_stream_id(&mut self) -> u32 {
        let id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1).max(ROOT_CONTEXT_ID + 1);
        id
    }

    pub fn stream(&mut self) -> Option<&mut StreamState> {
        self.store.data_mut().stream.as_mut()
    }

    /// Calls an export with fresh fuel; any trap marks the VM failed.
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        cb: Callback,
        export: &str,
        ctx: u32,
        args: P,
    ) -> Result<R, Trap> {
        if let Some(f) = &self.failed {
            return Err(Trap(f.clone()));
        }
        let func: TypedFunc<P, R> = self
            .instance
            .get_typed_func(&mut self.store, export)
            .map_err(|e| Trap(format!("{export}: {e:#}")))?;
        {
            let st = self.store.data_mut();
            st.callback = cb;
            st.current_ctx = ctx;
            // The effective context is reset at the start of every host-initiated call.
            st.effective_ctx = 0;
            st.panic_message = None;
        }
        if let Err(e) = self.store.set_fuel(self.fuel) {
            return Err(self.fail(cb, &e));
        }
        let result = func.call(&mut self.store, args);
        {
            let st = self.store.data_mut();
            st.callback = Callback::None;
            st.effective_ctx = 0;
        }
        result.map_err(|e| self.fail(cb, &e))
    }

    fn fail(&mut self, cb: Callback, e: &wasmtime::Error) -> Trap {
        let reason = match e.downcast_ref::<wasmtime::Trap>() {
            Some(t) => t.to_string(),
            None => format!("{}", e.root_cause()),
        };
        let mut msg = format!("{}: {reason}", cb.export_name());
        if let Some(p) = &self.store.data().panic_message {
            msg.push_str(&format!(" (after guest log: {p})"));
        }
        self.failed = Some(msg.clone());
        Trap(msg)
    }

    /// Delivers one callout response (or failure: `None`) to the root context, as Envoy does.
    pub fn deliver_call_response(
        &mut self,
        token: u32,
        resp: Option<CallResponse>,
    ) -> Result<(), Trap> {
        let (nh, nb, nt) = match &resp {
            Some(r) => (
                r.headers.len() as i32,
                r.body.len() as i32,
                r.trailers.len() as i32,
            ),
            None => (0, 0, 0),
        };
        {
            let st = self.store.data_mut();
            st.last_status = match resp {
                Some(_) => (0, Vec::new()),
                None => (
                    crate::abi::types::Status::BrokenConnection as u32,
                    b"reset".to_vec(),
                ),
            };
            st.call_response = resp;
        }
        let r = self.call::<(i32, i32, i32, i32, i32), ()>(
            Callback::HttpCallResponse,
            "proxy_on_http_call_response",
            ROOT_CONTEXT_ID,
            (ROOT_CONTEXT_ID as i32, token as i32, nh, nb, nt),
        );
        let st = self.store.data_mut();
        st.call_response = None;
        st.last_status = (0, Vec::new());
        r
    }

    pub fn on_tick(&mut self) -> Result<(), Trap> {
        self.call::<i32, ()>(
            Callback::Tick,
            "proxy_on_tick",
            ROOT_CONTEXT_ID,
            ROOT_CONTEXT_ID as i32,
        )
    }

    pub fn on_queue_ready(&mut self, queue: u32) -> Result<(), Trap> {
        self.call::<(i32, i32), ()>(
            Callback::QueueReady,
            "proxy_on_queue_ready",
            ROOT_CONTEXT_ID,
            (ROOT_CONTEXT_ID as i32, queue as i32),
        )
    }

    /// Takes the tick period if the filter changed it in the last call.
    pub fn take_tick_change(&mut self) -> Option<u32> {
        let st = self.store.data_mut();
        if std::mem::take(&mut st.tick_changed) {
            Some(st.tick_period_ms)
        } else {
            None
        }
    }
}

/// The process-wide engine (fuel metering on). Shared so compiled modules can be reused.
pub fn new_engine() -> Result<Engine> {
    static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);
    let mut slot = crate::shared::lock(&ENGINE);
    if let Some(e) = slot.as_ref() {
        return Ok(e.clone());
    }
    let mut cfg = wasmtime::Config::new();
    cfg.consume_fuel(true);
    let engine = Engine::new(&cfg).map_err(|e| anyhow!("wasmtime engine: {e:#}"))?;
    *slot = Some(engine.clone());
    Ok(engine)
}

/// Compiles `bytes`, reusing an earlier compilation of the same bytes in this process:
/// compiling dominates start-up (tests and `FAIL_RELOAD` create many VMs of one module).
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module> {
    static CACHE: Mutex<Vec<(Vec<u8>, Module)>> = Mutex::new(Vec::new());
    let mut cache = crate::shared::lock(&CACHE);
    if let Some((_, m)) = cache
        .iter()
        .find(|(b, m)| b.as_slice() == bytes && Engine::same(m.engine(), engine))
    {
        return Ok(m.clone());
    }
    let module =
        Module::new(engine, bytes).map_err(|e| anyhow!("compiling the wasm module: {e:#}"))?;
    // A handful of distinct modules per process at most; keep the newest few.
    if cache.len() >= 8 {
        cache.remove(0);
    }
    cache.push((bytes.to_vec(), module.clone()));
    Ok(module)
}
