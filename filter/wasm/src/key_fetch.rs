//! Drives the engine's remote-JWKS key source from the root context: timer ticks,
//! callouts, and their answers. All decisions are the engine's; this only moves bytes.

use std::collections::HashMap;

use tollgate_engine::Engine;
use tollgate_engine::auth::jwks_source::{FetchOutcome, KeyFetch, KeyWork};

use crate::host::{self, HostSharedData, Metrics};

/// Fetches this VM has out, by callout token, and the timer period in force.
#[derive(Default)]
pub struct KeyFetcher {
    pending: HashMap<u32, KeyFetch>,
    tick_ms: Option<u64>,
    /// The longest period the shared root timer may have (the sidecar sync's tick).
    pub cap_ms: Option<u64>,
}

impl KeyFetcher {
    /// Arms the timer when the policy has remote key sets. No fetch starts here: Envoy
    /// also configures a short-lived canary VM, which must not take the fetch lease.
    pub fn configure(&mut self, engine: &Engine) {
        if !engine.policy().auth.key_sources.is_empty() {
            let period = self.capped(tollgate_engine::auth::jwks_source::TICK_WAITING_MS);
            host::set_tick_period(period);
            self.tick_ms = Some(period);
        }
    }

    fn capped(&self, ms: u64) -> u64 {
        self.cap_ms.map_or(ms, |cap| cap.min(ms))
    }

    pub fn tick(&mut self, engine: &Engine, metrics: &Metrics) {
        let work = engine.key_tick(host::now_ms(), &HostSharedData);
        self.apply(engine, metrics, work);
    }

    /// A callout answer; `false` when the token is not one of ours.
    pub fn response(
        &mut self,
        engine: &Engine,
        metrics: &Metrics,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        let Some(fetch) = self.pending.remove(&token) else {
            return false;
        };
        let outcome = host::call_response(num_headers, body_size);
        let work = engine.key_fetch_done(&fetch, outcome, host::now_ms(), &HostSharedData);
        self.apply(engine, metrics, work);
        true
    }

    fn apply(&mut self, engine: &Engine, metrics: &Metrics, first: KeyWork) {
        let mut queue = vec![first];
        // Bounded: a refused dispatch yields at most one follow-up per provider.
        for _ in 0..16 {
            let Some(work) = queue.pop() else { break };
            for (counter, delta) in &work.counters {
                metrics.add(*counter, *delta);
            }
            for line in &work.log {
                host::log(
                    proxy_wasm::types::LogLevel::Info,
                    &format!("tollgate: {line}"),
                );
            }
            if let Some(ms) = work.tick_ms.map(|ms| self.capped(ms))
                && self.tick_ms != Some(ms)
            {
                host::set_tick_period(ms);
                self.tick_ms = Some(ms);
            }
            for fetch in work.fetches {
                match host::dispatch_get(
                    &fetch.cluster,
                    &fetch.path,
                    &fetch.authority,
                    fetch.timeout_ms,
                ) {
                    Ok(token) => {
                        self.pending.insert(token, fetch);
                    }
                    Err(reason) => queue.push(engine.key_fetch_done(
                        &fetch,
                        FetchOutcome::Failed(reason),
                        host::now_ms(),
                        &HostSharedData,
                    )),
                }
            }
        }
    }
}
