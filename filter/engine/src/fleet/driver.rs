//! The sync loop of one worker, minus the I/O: the adapter calls [`SyncDriver::tick`] on
//! its timer, posts the returned call, and hands the answer to [`SyncDriver::done`].

use super::{CircuitBreaker, SidecarConfig, apply_response, take_batch, try_lead};
use crate::shared::SharedData;

const NODE_ID_KEY: &str = "tg:fleet:node_id";

/// A sync call to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCall {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub body: Vec<u8>,
}

/// How a sync call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The sidecar answered with this status and body.
    Answered { status: u16, body: Vec<u8> },
    /// No answer: timeout, connection refused, dispatch refused.
    Failed(String),
}

/// Per-worker sync state: its identity, its batch numbering and its circuit breaker.
#[derive(Debug, Clone)]
pub struct SyncDriver {
    config: SidecarConfig,
    node_id: String,
    worker_id: String,
    /// Batch ids are `<node>-<boot nonce>-<n>`: unique across restarts, as the sidecar's
    /// de-duplication requires.
    boot_nonce: u64,
    next_batch: u64,
    breaker: CircuitBreaker,
    in_flight: bool,
    /// No call before this: the timer may tick faster (it is shared with key fetching).
    next_due_ms: u64,
}

impl SyncDriver {
    /// `random` seeds the node id (when the policy names none) and the boot nonce;
    /// `worker_id` must differ between the workers of a node.
    pub fn new(config: SidecarConfig, worker_id: String, random: u64) -> Self {
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{random:016x}"));
        let breaker = CircuitBreaker::new(config.failures_to_open, config.open_for_ms);
        Self {
            config,
            node_id,
            worker_id,
            boot_nonce: random,
            next_batch: 0,
            breaker,
            in_flight: false,
            next_due_ms: 0,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Without a `node_id` in the policy, the workers of a node agree on the first random
    /// id written to shared data: the node must be one member of the fleet, not one per VM.
    fn settle_node_id(&mut self, store: &dyn SharedData) -> Result<(), String> {
        if self.config.node_id.is_some() {
            return Ok(());
        }
        match store
            .get(NODE_ID_KEY)
            .map_err(|_| "shared data unavailable".to_string())?
        {
            Some((id, _)) if !id.is_empty() => {
                self.node_id = String::from_utf8_lossy(&id).into_owned();
            }
            _ => {
                store
                    .set(NODE_ID_KEY, self.node_id.as_bytes(), None)
                    .map_err(|_| "shared data unavailable".to_string())?;
            }
        }
        self.config.node_id = Some(self.node_id.clone());
        Ok(())
    }

    /// The call to make now, if this worker leads, no call is out and the circuit is
    /// closed. The lease lasts three ticks, so a dead leader is replaced within them.
    pub fn tick(
        &mut self,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Result<Option<SyncCall>, String> {
        if self.in_flight || now_ms < self.next_due_ms || !self.breaker.allows(now_ms) {
            return Ok(None);
        }
        let lease_ms = self.config.tick_ms.saturating_mul(3);
        if !try_lead(store, &self.worker_id, now_ms, lease_ms).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        self.settle_node_id(store)?;
        self.next_batch += 1;
        let batch_id = format!("{}-{:x}-{}", self.node_id, self.boot_nonce, self.next_batch);
        let body = take_batch(store, &self.config.limits, &self.node_id, &batch_id, now_ms)
            .map_err(|e| e.to_string())?;
        self.in_flight = true;
        self.next_due_ms = now_ms.saturating_add(self.config.tick_ms);
        Ok(Some(SyncCall {
            cluster: self.config.cluster.clone(),
            authority: self.config.authority.clone(),
            path: self.config.path.clone(),
            timeout_ms: self.config.timeout_ms,
            body,
        }))
    }

    /// Applies an answer. `Err` carries a line to log; the batch then stays queued and is
    /// re-sent with the same id, except after a 4xx (the sidecar will never take it).
    pub fn done(
        &mut self,
        outcome: SyncOutcome,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Result<(), String> {
        self.in_flight = false;
        let failure = match outcome {
            SyncOutcome::Answered { status: 200, body } => {
                match apply_response(store, &self.config.limits, &body, now_ms) {
                    Ok(_) => {
                        self.breaker.success();
                        return Ok(());
                    }
                    Err(e) => e.to_string(),
                }
            }
            SyncOutcome::Answered { status, body } if (400..500).contains(&status) => {
                // Malformed for good: drop it so the queue behind it moves.
                self.breaker.success();
                super::abandon_batch(store).map_err(|e| e.to_string())?;
                return Err(format!(
                    "sidecar refused the sync batch ({status}): {}; batch dropped",
                    String::from_utf8_lossy(body.get(..200).unwrap_or(&body))
                ));
            }
            SyncOutcome::Answered { status, .. } => format!("sidecar answered {status}"),
            SyncOutcome::Failed(reason) => reason,
        };
        let opened = self.breaker.failure(now_ms);
        Err(if opened {
            format!(
                "sidecar sync failed: {failure}; circuit open for {} ms",
                self.config.open_for_ms
            )
        } else {
            format!("sidecar sync failed: {failure}; batch kept for retry")
        })
    }
}
