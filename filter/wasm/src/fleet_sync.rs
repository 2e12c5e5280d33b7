//! Drives the engine's sidecar sync from the root context: on the timer, the leading
//! worker posts the batch the engine built; the answer goes back to the engine. Requests
//! never wait for any of it.

use tollgate_engine::Engine;
use tollgate_engine::auth::jwks_source::FetchOutcome;
use tollgate_engine::fleet::{SyncDriver, SyncOutcome};

use crate::host::{self, HostSharedData};

#[derive(Default)]
pub struct FleetSync {
    driver: Option<SyncDriver>,
    pending: Option<u32>,
}

impl FleetSync {
    /// Arms the timer when the policy has a `sidecar`; returns its period. Nothing is
    /// sent here (Envoy's short-lived canary VM configures too).
    pub fn configure(&mut self, engine: &Engine) -> Option<u64> {
        let config = engine.policy().sidecar.clone()?;
        let tick_ms = config.tick_ms;
        // Each VM gets its own worker id, so the lease tells the workers apart.
        let worker = format!("{:016x}", host::entropy());
        self.driver = Some(SyncDriver::new(config, worker, host::entropy()));
        host::set_tick_period(tick_ms);
        Some(tick_ms)
    }

    pub fn tick(&mut self) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let call = match driver.tick(host::now_ms(), &HostSharedData) {
            Ok(Some(call)) => call,
            Ok(None) => return,
            Err(e) => {
                host::error(&format!("tollgate: sidecar sync: {e}"));
                return;
            }
        };
        match host::dispatch_post_json(
            &call.cluster,
            &call.path,
            &call.authority,
            call.timeout_ms,
            &call.body,
        ) {
            Ok(token) => self.pending = Some(token),
            Err(reason) => self.finish(SyncOutcome::Failed(reason)),
        }
    }

    /// A callout answer; `false` when the token is not ours.
    pub fn response(&mut self, token: u32, num_headers: usize, body_size: usize) -> bool {
        if self.pending != Some(token) {
            return false;
        }
        self.pending = None;
        let outcome = match host::call_response(num_headers, body_size) {
            FetchOutcome::Response { status, body, .. } => SyncOutcome::Answered { status, body },
            FetchOutcome::Failed(reason) => SyncOutcome::Failed(reason),
        };
        self.finish(outcome);
        true
    }

    fn finish(&mut self, outcome: SyncOutcome) {
        if let Some(driver) = self.driver.as_mut()
            && let Err(line) = driver.done(outcome, host::now_ms(), &HostSharedData)
        {
            host::log(
                proxy_wasm::types::LogLevel::Warn,
                &format!("tollgate: {line}"),
            );
        }
    }
}
