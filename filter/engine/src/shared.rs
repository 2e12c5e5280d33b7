//! Shared data as the engine sees it: proxy-wasm's key/value store with compare-and-swap,
//! shared by every VM (worker) of a node. The adapter implements it with host calls;
//! `MemorySharedData` follows Envoy's semantics for native tests and benches.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Someone else wrote the key since it was read: read again and retry.
    CasMismatch,
    /// The host refused or failed.
    Host,
}

/// Shared data could not be read (the host failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

pub trait SharedData {
    /// The value and its CAS token; `Ok(None)` when absent.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreUnavailable>;
    /// Writes `value`; with `cas`, only if the key is unchanged since that token.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// In-memory shared data with Envoy's rules (§9 of the ABI notes): one global CAS counter
/// starting at 1, bumped on every successful write; writing an absent key with a CAS
/// creates it.
#[derive(Debug, Default)]
pub struct MemorySharedData {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    /// When set, every call fails: for fail-open tests.
    pub broken: Cell<bool>,
}

impl MemorySharedData {
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// Total bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.entries
            .borrow()
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum()
    }
}

impl SharedData for MemorySharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreUnavailable> {
        if self.broken.get() {
            return Err(StoreUnavailable);
        }
        Ok(self.entries.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if self.broken.get() {
            return Err(SetError::Host);
        }
        let mut entries = self.entries.borrow_mut();
        if let (Some(cas), Some((_, stored))) = (cas, entries.get(key))
            && cas != *stored
        {
            return Err(SetError::CasMismatch);
        }
        let next = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(next);
        entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}
