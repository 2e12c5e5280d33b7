//! Process-global state that Envoy shares between VMs: shared data, shared queues and metrics
//! (proxy-wasm-abi.md §9, §10, §12, §14). Everything else is per VM.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// One stored shared-data value and its CAS stamp.
#[derive(Clone, Debug)]
pub struct SharedValue {
    pub value: Vec<u8>,
    pub cas: u32,
}

#[derive(Debug, Default)]
struct DataInner {
    /// vm_id → key → value.
    by_vm: HashMap<String, HashMap<String, SharedValue>>,
    /// Process-global CAS counter; the first successful set gets 1.
    last_cas: u32,
}

/// Outcome of a shared-data set.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOutcome {
    Stored(u32),
    CasMismatch,
}

#[derive(Debug)]
pub struct Queue {
    pub vm_id: String,
    pub name: String,
    pub items: VecDeque<Vec<u8>>,
    /// VM slot index of the last registrant: it receives `on_queue_ready`.
    pub target_vm: usize,
}

#[derive(Debug, Default)]
struct QueueInner {
    queues: HashMap<u32, Queue>,
    next_id: u32,
    /// Notifications posted by enqueue, delivered asynchronously by the simulator.
    pending: Vec<(usize, u32)>,
}

/// Metric kinds (low 2 bits of a metric id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Default, Clone)]
pub struct MetricValue {
    pub kind: Option<MetricKind>,
    pub value: i64,
    /// Histogram samples (only counted and summed: enough for tests).
    pub samples: Vec<u64>,
}

/// State shared by every VM of one simulated Envoy process.
#[derive(Debug, Default)]
pub struct Shared {
    data: Mutex<DataInner>,
    queues: Mutex<QueueInner>,
    metrics: Mutex<HashMap<String, MetricValue>>,
}

impl Shared {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shared-data entries and the bytes of their keys and values, over every VM id (what a
    /// filter stores on the host; map overhead not included).
    pub fn data_footprint(&self) -> (usize, usize) {
        let inner = lock(&self.data);
        inner
            .by_vm
            .values()
            .flat_map(|m| m.iter())
            .fold((0, 0), |(n, bytes), (k, v)| {
                (n + 1, bytes + k.len() + v.value.len())
            })
    }

    pub fn get_data(&self, vm_id: &str, key: &str) -> Option<SharedValue> {
        let inner = lock(&self.data);
        inner.by_vm.get(vm_id).and_then(|m| m.get(key)).cloned()
    }

    /// `cas == 0`: unconditional. A missing key is created whatever `cas` says (Envoy does so).
    pub fn set_data(&self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> SetOutcome {
        let mut inner = lock(&self.data);
        let stored = inner
            .by_vm
            .get(vm_id)
            .and_then(|m| m.get(key))
            .map(|v| v.cas);
        if let Some(current) = stored
            && cas != 0
            && cas != current
        {
            return SetOutcome::CasMismatch;
        }
        inner.last_cas = inner.last_cas.wrapping_add(1);
        if inner.last_cas == 0 {
            inner.last_cas = 1;
        }
        let new_cas = inner.last_cas;
        inner.by_vm.entry(vm_id.to_string()).or_default().insert(
            key.to_string(),
            SharedValue {
                value,
                cas: new_cas,
            },
        );
        SetOutcome::Stored(new_cas)
    }

    /// Creates or re-opens a queue; the caller becomes the notification target.
    pub fn register_queue(&self, vm_id: &str, name: &str, target_vm: usize) -> u32 {
        let mut inner = lock(&self.queues);
        if let Some((id, q)) = inner
            .queues
            .iter_mut()
            .find(|(_, q)| q.vm_id == vm_id && q.name == name)
        {
            q.target_vm = target_vm;
            return *id;
        }
        inner.next_id = inner.next_id.wrapping_add(1).max(1);
        let id = inner.next_id;
        inner.queues.insert(
            id,
            Queue {
                vm_id: vm_id.to_string(),
                name: name.to_string(),
                items: VecDeque::new(),
                target_vm,
            },
        );
        id
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let inner = lock(&self.queues);
        inner
            .queues
            .iter()
            .find(|(_, q)| q.vm_id == vm_id && q.name == name)
            .map(|(id, _)| *id)
    }

    /// `false` when the queue does not exist.
    pub fn enqueue(&self, id: u32, value: Vec<u8>) -> bool {
        let mut inner = lock(&self.queues);
        let Some(q) = inner.queues.get_mut(&id) else {
            return false;
        };
        q.items.push_back(value);
        let target = q.target_vm;
        inner.pending.push((target, id));
        true
    }

    /// `None` when the queue does not exist, `Some(None)` when it is empty.
    pub fn dequeue(&self, id: u32) -> Option<Option<Vec<u8>>> {
        let mut inner = lock(&self.queues);
        inner.queues.get_mut(&id).map(|q| q.items.pop_front())
    }

    /// Takes the posted `(vm slot, queue id)` notifications.
    pub fn take_queue_notifications(&self) -> Vec<(usize, u32)> {
        std::mem::take(&mut lock(&self.queues).pending)
    }

    pub fn metric_define(&self, name: &str, kind: MetricKind) {
        let mut m = lock(&self.metrics);
        let e = m.entry(name.to_string()).or_default();
        e.kind.get_or_insert(kind);
    }

    pub fn metric_update(&self, name: &str, f: impl FnOnce(&mut MetricValue)) {
        let mut m = lock(&self.metrics);
        f(m.entry(name.to_string()).or_default());
    }

    pub fn metric_get(&self, name: &str) -> i64 {
        lock(&self.metrics).get(name).map(|v| v.value).unwrap_or(0)
    }

    /// All metrics as `(stat name, value)`, sorted by name (stat names carry `wasmcustom.`).
    pub fn metrics_snapshot(&self) -> Vec<(String, i64)> {
        let m = lock(&self.metrics);
        let mut v: Vec<_> = m
            .iter()
            .map(|(k, v)| (format!("wasmcustom.{k}"), v.value))
            .collect();
        v.sort();
        v
    }
}

/// A poisoned lock means a host thread panicked mid-update; the data are still usable for a
/// simulator, so recover instead of propagating the panic.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cas_counter_is_global_and_starts_at_one() {
        let s = Shared::new();
        assert_eq!(
            s.set_data("vm", "a", b"1".to_vec(), 0),
            SetOutcome::Stored(1)
        );
        assert_eq!(
            s.set_data("other", "b", b"1".to_vec(), 0),
            SetOutcome::Stored(2)
        );
        assert_eq!(
            s.set_data("vm", "a", b"2".to_vec(), 7),
            SetOutcome::CasMismatch
        );
        assert_eq!(
            s.set_data("vm", "a", b"2".to_vec(), 1),
            SetOutcome::Stored(3)
        );
        assert_eq!(
            s.set_data("vm", "new", b"x".to_vec(), 99),
            SetOutcome::Stored(4)
        );
        assert!(s.get_data("other", "a").is_none());
    }

    #[test]
    fn queues_fifo_and_last_registrant() {
        let s = Shared::new();
        let id = s.register_queue("vm", "q", 0);
        assert_eq!(s.register_queue("vm", "q", 1), id);
        assert!(s.enqueue(id, b"a".to_vec()));
        assert!(!s.enqueue(id + 1, b"a".to_vec()));
        assert_eq!(s.take_queue_notifications(), vec![(1, id)]);
        assert_eq!(s.dequeue(id).unwrap(), Some(b"a".to_vec()));
        assert_eq!(s.dequeue(id).unwrap(), None);
        assert!(s.dequeue(99).is_none());
    }
}
