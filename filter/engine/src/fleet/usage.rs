//! The node's usage-event queue in shared data: a ring of chunks, each written by one
//! worker's flush (its buffered events, serialised once), and one small meta record.
//! Requests never touch shared data for usage; a worker flushes every
//! [`super::FLUSH_EVENTS`] events and on its timer, so a flush costs one meta CAS and one
//! chunk write however many events it carries.

use super::{CAS_ATTEMPTS, FleetError, FleetLimits, UsageEvent};
use crate::shared::{SetError, SharedData};

const META_KEY: &str = "tg:fleet:qmeta";
const CHUNK_PREFIX: &str = "tg:fleet:q:";
/// A reserved chunk still unwritten after this long belongs to a writer that died: it
/// is skipped and its events counted as lost, so the queue behind it moves.
const STUCK_MS: u64 = 10_000;
/// Most chunks waiting at once (each holds at least one event).
const MAX_CHUNKS: u64 = 4_096;

/// `head..tail` are the chunks waiting; `counts[i]` is the number of events in chunk
/// `head + i` (known at reservation, before the chunk itself is written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Meta {
    head: u64,
    tail: u64,
    queued: u64,
    dropped: u64,
    /// When the head chunk was first found unwritten (0: it was not).
    stuck_since_ms: u64,
    counts: Vec<u32>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + 4 * self.counts.len());
        for v in [
            self.head,
            self.tail,
            self.queued,
            self.dropped,
            self.stuck_since_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for c in &self.counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (head, rest) = bytes.split_at_checked(40)?;
        let mut f = [0u64; 5];
        for (field, chunk) in f.iter_mut().zip(head.chunks_exact(8)) {
            *field = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        if rest.len() % 4 != 0 {
            return None;
        }
        let counts = rest
            .chunks_exact(4)
            .map(|c| c.try_into().map(u32::from_le_bytes))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let meta = Self {
            head: f[0],
            tail: f[1],
            queued: f[2],
            dropped: f[3],
            stuck_since_ms: f[4],
            counts,
        };
        (meta.tail.checked_sub(meta.head)? == meta.counts.len() as u64).then_some(meta)
    }
}

fn read_meta(store: &dyn SharedData) -> Result<(Meta, Option<u32>), FleetError> {
    match store.get(META_KEY).map_err(|_| FleetError::Store)? {
        // An unreadable record (older layout, corruption) restarts the queue.
        Some((bytes, cas)) => Ok((Meta::decode(&bytes).unwrap_or_default(), Some(cas))),
        None => Ok((Meta::default(), None)),
    }
}

fn chunk_key(seq: u64) -> String {
    format!("{CHUNK_PREFIX}{}", seq % MAX_CHUNKS)
}

/// What became of a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub queued: u64,
    /// Events refused because the queue was full: lost, and counted.
    pub dropped: u64,
}

/// Appends `events` to the node's queue as one chunk; what does not fit within
/// `max_queued_events` is dropped and counted.
pub fn push_usage(
    store: &dyn SharedData,
    limits: &FleetLimits,
    events: &[UsageEvent],
) -> Result<Flushed, FleetError> {
    if events.is_empty() {
        return Ok(Flushed {
            queued: 0,
            dropped: 0,
        });
    }
    let n = events.len() as u64;
    for _ in 0..CAS_ATTEMPTS {
        let (mut meta, cas) = read_meta(store)?;
        let room = (limits.max_queued_events as u64).saturating_sub(meta.queued);
        let take = if meta.tail - meta.head >= MAX_CHUNKS {
            0
        } else {
            n.min(room)
        };
        let seq = meta.tail;
        if take > 0 {
            meta.tail += 1;
            meta.queued += take;
            meta.counts.push(take as u32);
        }
        meta.dropped = meta.dropped.saturating_add(n - take);
        match store.set(META_KEY, &meta.encode(), Some(cas.unwrap_or(0))) {
            Ok(()) => {}
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
        if take > 0 {
            let mut value = seq.to_le_bytes().to_vec();
            serde_json::to_writer(&mut value, &events[..take as usize])
                .map_err(|_| FleetError::Store)?;
            // If this fails the reserved chunk is never written; the reader skips it
            // after `STUCK_MS` and counts its events as lost.
            store
                .set(&chunk_key(seq), &value, None)
                .map_err(|_| FleetError::Store)?;
        }
        return Ok(Flushed {
            queued: take,
            dropped: n - take,
        });
    }
    Err(FleetError::Contended)
}

/// Takes whole chunks from the head of the queue, up to about `max_events_per_batch`
/// events, in order. Chunks are taken for good: the caller keeps them in its batch until
/// the sidecar acknowledges it.
pub(super) fn take_usage(
    store: &dyn SharedData,
    limits: &FleetLimits,
    now_ms: u64,
) -> Result<Vec<UsageEvent>, FleetError> {
    for _ in 0..CAS_ATTEMPTS {
        let (mut meta, cas) = read_meta(store)?;
        if meta.head == meta.tail {
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        let mut taken = 0usize;
        let mut lost = 0u64;
        let mut stuck_since_ms = 0;
        while taken < meta.counts.len() && events.len() < limits.max_events_per_batch {
            let seq = meta.head + taken as u64;
            let chunk = store
                .get(&chunk_key(seq))
                .map_err(|_| FleetError::Store)?
                .and_then(|(bytes, _)| {
                    let (stamp, json) = bytes.split_at_checked(8)?;
                    (u64::from_le_bytes(stamp.try_into().ok()?) == seq)
                        .then(|| serde_json::from_slice::<Vec<UsageEvent>>(json).ok())?
                });
            // Only the head chunk can have been waited for before.
            let waited_since = if taken == 0 { meta.stuck_since_ms } else { 0 };
            match chunk {
                Some(chunk) => events.extend(chunk),
                None if waited_since != 0 && now_ms >= waited_since.saturating_add(STUCK_MS) => {
                    lost += u64::from(meta.counts[taken]);
                }
                None => {
                    // Reserved but not written yet (a flush in progress): wait for it.
                    stuck_since_ms = if waited_since == 0 {
                        now_ms
                    } else {
                        waited_since
                    };
                    break;
                }
            }
            taken += 1;
        }
        let removed: u64 = meta.counts.drain(..taken).map(u64::from).sum();
        meta.head += taken as u64;
        meta.queued = meta.queued.saturating_sub(removed);
        meta.dropped = meta.dropped.saturating_add(lost);
        meta.stuck_since_ms = stuck_since_ms;
        match store.set(META_KEY, &meta.encode(), cas) {
            Ok(()) => return Ok(events),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(FleetError::Store),
        }
    }
    Err(FleetError::Contended)
}

/// Events waiting in the node's queue (not counting the batch in flight) and events lost
/// to the queue's bound since the node started.
pub fn usage_queue(store: &dyn SharedData) -> Result<(u64, u64), FleetError> {
    let (meta, _) = read_meta(store)?;
    Ok((meta.queued, meta.dropped))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_inconsistent_records() {
        let meta = Meta {
            head: 3,
            tail: 5,
            queued: 9,
            dropped: 1,
            stuck_since_ms: 0,
            counts: vec![4, 5],
        };
        assert_eq!(Meta::decode(&meta.encode()), Some(meta.clone()));
        let mut bad = meta.encode();
        bad.truncate(44);
        assert_eq!(Meta::decode(&bad), None);
        assert_eq!(Meta::decode(b"short"), None);
    }
}
