//! Root context: loads the policy in `on_configure` and hands each stream the engine.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use tollgate_engine::{Engine, Policy};

use crate::fleet_sync::FleetSync;
use crate::host::{self, Metrics};
use crate::http::TollgateHttp;
use crate::key_fetch::KeyFetcher;

/// What every stream of this VM shares: the engine and the metric ids.
pub struct Shared {
    pub engine: Engine,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct TollgateRoot {
    shared: Option<Rc<Shared>>,
    /// Remote JWKS fetching (root context only: callouts outlive streams here).
    keys: KeyFetcher,
    /// Sidecar sync (root context only, like key fetching).
    fleet: FleetSync,
}

impl Context for TollgateRoot {
    /// A VM being replaced (new config) hands its buffered usage records to the node.
    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared {
            let flush = shared.engine.flush_usage(&host::HostSharedData);
            crate::http::report_usage_flush(shared, &flush);
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.fleet.response(token_id, num_headers, body_size) {
            return;
        }
        if let Some(shared) = self.shared.clone()
            && !self.keys.response(
                &shared.engine,
                &shared.metrics,
                token_id,
                num_headers,
                body_size,
            )
        {
            host::error(&format!("tollgate: unexpected callout answer {token_id}"));
        }
    }
}

impl RootContext for TollgateRoot {
    /// Parses and compiles the policy. Returning `false` makes Envoy reject the filter
    /// config (a static bootstrap then fails to start), so a bad policy never serves.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(bytes) = host::plugin_configuration() else {
            host::error("policy error: policy: no plugin configuration was given");
            return false;
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            host::error("policy error: policy: the configuration is not UTF-8 text");
            return false;
        };
        match Policy::load(text) {
            Ok(policy) => {
                host::log(
                    proxy_wasm::types::LogLevel::Info,
                    &format!("tollgate: policy loaded ({} routes)", policy.routes.len()),
                );
                let shared = Rc::new(Shared {
                    engine: Engine::new(policy, host::entropy()),
                    metrics: Metrics::define(),
                });
                // One root timer: key fetching may tick faster, never slower than sync.
                self.keys.cap_ms = self.fleet.configure(&shared.engine);
                self.keys.configure(&shared.engine);
                self.shared = Some(shared);
                true
            }
            Err(errors) => {
                for error in &errors.0 {
                    host::error(&format!("policy error: {error}"));
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.shared.clone() {
            self.keys.tick(&shared.engine, &shared.metrics);
            // Every worker flushes its own usage records; only the leader syncs.
            let flush = shared.engine.flush_usage(&host::HostSharedData);
            crate::http::report_usage_flush(&shared, &flush);
        }
        self.fleet.tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TollgateHttp::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
