//! The simulator's clock: virtual (driven by replay's `time_ms`) or real.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Shared by all VMs of a simulator, so every VM reads the same "now".
#[derive(Debug, Default)]
pub struct Clock {
    virtual_ns: Mutex<Option<u64>>,
}

impl Clock {
    pub fn real() -> Self {
        Self {
            virtual_ns: Mutex::new(None),
        }
    }

    pub fn virtual_at(ns: u64) -> Self {
        Self {
            virtual_ns: Mutex::new(Some(ns)),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        match *crate::shared::lock(&self.virtual_ns) {
            Some(ns) => ns,
            None => real_now_ns(),
        }
    }

    /// Moves virtual time (no-op semantics for a real clock: it switches to virtual).
    pub fn set_ns(&self, ns: u64) {
        *crate::shared::lock(&self.virtual_ns) = Some(ns);
    }

    pub fn set_real(&self) {
        *crate::shared::lock(&self.virtual_ns) = None;
    }

    pub fn is_virtual(&self) -> bool {
        crate::shared::lock(&self.virtual_ns).is_some()
    }
}

pub fn real_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
