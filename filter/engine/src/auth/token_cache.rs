//! Node-wide token memory in shared data: verified tokens (so each distinct token costs
//! one signature check per node, not per worker), recently failed tokens, and a per-client
//! budget of failed signature checks.
//!
//! Envoy's shared data has no delete and no listing, so every table is a fixed number of
//! buckets (one shared-data key each) holding a few entries: the number of keys and the
//! size of each value are bounded whatever the traffic. Eviction inside a full bucket:
//! expired entries first, then the entry closest to expiry (verified and failed tokens)
//! or the oldest window (client budgets). Every write is a CAS; a write that keeps losing
//! the race is dropped (these tables are caches: losing an entry costs one more check).
//!
//! Entries are fixed binary records, so a lookup is one host read and a scan of a few
//! dozen bytes.

use sha2::{Digest, Sha256};

use crate::shared::{SetError, SharedData};

/// Bytes of the token's SHA-256 used as its identity in shared tables.
pub const TOKEN_HASH_BYTES: usize = 16;
/// Entries per bucket of the verified-token table.
const VERIFIED_WAYS: usize = 4;
/// Entries per bucket of the failed-token and client tables.
const SMALL_WAYS: usize = 8;
const CAS_ATTEMPTS: usize = 4;

/// Sizes of the node-wide tables (0 disables one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheConfig {
    pub verified_entries: u32,
    pub failed_entries: u32,
    pub failed_ttl_ms: u64,
    /// Failed signature checks per client IP per minute before crypto is refused (0: off).
    pub budget_per_minute: u32,
    pub budget_clients: u32,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            verified_entries: 8192,
            failed_entries: 4096,
            failed_ttl_ms: 300_000,
            budget_per_minute: 20,
            budget_clients: 8192,
        }
    }
}

/// A verified token as stored node-wide. The identity is rebuilt from the token's own
/// claims: the hash binds them, so "this token verified for this provider until then" is
/// all a worker needs to skip the signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedVerified {
    /// The provider's fingerprint (name + settings), so a policy change never reuses
    /// entries verified under other rules.
    pub provider_tag: String,
    /// Unix seconds; the entry is ignored from then on.
    pub valid_until_s: u64,
}

fn bucket_of(hash: &[u8], buckets: u32) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in hash.iter().take(4).enumerate() {
        b[i] = *byte;
    }
    u32::from_le_bytes(b) % buckets.max(1)
}

fn buckets_for(entries: u32, ways: usize) -> u32 {
    entries.div_ceil(ways as u32).max(1)
}

/// The token's identity in the shared tables: a SHA-256 prefix.
pub fn token_hash(digest: &[u8; 32]) -> [u8; TOKEN_HASH_BYTES] {
    let mut out = [0u8; TOKEN_HASH_BYTES];
    out.copy_from_slice(&digest[..TOKEN_HASH_BYTES]);
    out
}

/// Read-modify-write of one key with CAS retries. `update` gets the current value and
/// returns the new one, or `None` to leave the key as it is.
fn update_key(
    store: &dyn SharedData,
    key: &str,
    mut update: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let Ok(current) = store.get(key) else {
            return false;
        };
        let (value, cas) = match current {
            Some((v, cas)) => (v, Some(cas)),
            // Envoy creates an absent key when a CAS is given; 0 means "unconditional".
            None => (Vec::new(), None),
        };
        let Some(next) = update(&value) else {
            return true;
        };
        match store.set(key, &next, cas) {
            Ok(()) => return true,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return false,
        }
    }
    false
}

// --- verified tokens: [hash 16][valid_until_s 8][tag_len 1][tag] ---

struct VerifiedRecord<'a> {
    hash: &'a [u8],
    valid_until_s: u64,
    tag: &'a [u8],
    raw: &'a [u8],
}

fn parse_verified(mut bytes: &[u8]) -> Vec<VerifiedRecord<'_>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let Some((hash, rest)) = bytes.split_at_checked(TOKEN_HASH_BYTES) else {
            break;
        };
        let Some((until, rest)) = rest.split_at_checked(8) else {
            break;
        };
        let Some((&tag_len, rest)) = rest.split_first() else {
            break;
        };
        let Some((tag, rest)) = rest.split_at_checked(usize::from(tag_len)) else {
            break;
        };
        let used = start.len() - rest.len();
        out.push(VerifiedRecord {
            hash,
            valid_until_s: u64::from_le_bytes(until.try_into().unwrap_or([0; 8])),
            tag,
            raw: &start[..used],
        });
        bytes = rest;
    }
    out
}

fn encode_verified(hash: &[u8], entry: &SharedVerified) -> Option<Vec<u8>> {
    let tag = entry.provider_tag.as_bytes();
    let tag_len = u8::try_from(tag.len()).ok()?;
    let mut out = Vec::with_capacity(TOKEN_HASH_BYTES + 9 + tag.len());
    out.extend_from_slice(hash);
    out.extend_from_slice(&entry.valid_until_s.to_le_bytes());
    out.push(tag_len);
    out.extend_from_slice(tag);
    Some(out)
}

fn verified_key(config: &TokenCacheConfig, hash: &[u8]) -> String {
    let buckets = buckets_for(config.verified_entries, VERIFIED_WAYS);
    format!("tollgate/auth/vt/{}", bucket_of(hash, buckets))
}

/// Looks a token up in the node-wide verified cache.
pub fn get_verified(
    store: &dyn SharedData,
    config: &TokenCacheConfig,
    hash: &[u8; TOKEN_HASH_BYTES],
    now_s: u64,
) -> Option<SharedVerified> {
    if config.verified_entries == 0 {
        return None;
    }
    let (value, _) = store.get(&verified_key(config, hash)).ok()??;
    parse_verified(&value)
        .into_iter()
        .find(|r| r.hash == hash && now_s < r.valid_until_s)
        .map(|r| SharedVerified {
            provider_tag: String::from_utf8_lossy(r.tag).into_owned(),
            valid_until_s: r.valid_until_s,
        })
}

/// Stores a verified token node-wide (best effort).
pub fn put_verified(
    store: &dyn SharedData,
    config: &TokenCacheConfig,
    hash: &[u8; TOKEN_HASH_BYTES],
    entry: &SharedVerified,
    now_s: u64,
) {
    if config.verified_entries == 0 {
        return;
    }
    let Some(encoded) = encode_verified(hash, entry) else {
        return;
    };
    update_key(store, &verified_key(config, hash), |current| {
        let mut kept: Vec<VerifiedRecord> = parse_verified(current)
            .into_iter()
            .filter(|r| r.hash != hash && now_s < r.valid_until_s)
            .collect();
        // Full: the entry closest to expiry goes.
        while kept.len() >= VERIFIED_WAYS {
            let (index, _) = kept
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.valid_until_s)?;
            kept.remove(index);
        }
        let mut next: Vec<u8> = kept.iter().flat_map(|r| r.raw.iter().copied()).collect();
        next.extend_from_slice(&encoded);
        Some(next)
    });
}

// --- failed tokens: [hash 16][until_ms 8] ---

const FAILED_RECORD: usize = TOKEN_HASH_BYTES + 8;

fn failed_key(config: &TokenCacheConfig, hash: &[u8]) -> String {
    let buckets = buckets_for(config.failed_entries, SMALL_WAYS);
    format!("tollgate/auth/ft/{}", bucket_of(hash, buckets))
}

fn failed_records(bytes: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    bytes.chunks_exact(FAILED_RECORD).map(|r| {
        let (hash, until) = r.split_at(TOKEN_HASH_BYTES);
        (hash, u64::from_le_bytes(until.try_into().unwrap_or([0; 8])))
    })
}

/// True when this token failed its signature check recently on any worker.
pub fn recently_failed(
    store: &dyn SharedData,
    config: &TokenCacheConfig,
    hash: &[u8; TOKEN_HASH_BYTES],
    now_ms: u64,
) -> bool {
    if config.failed_entries == 0 {
        return false;
    }
    let Ok(Some((value, _))) = store.get(&failed_key(config, hash)) else {
        return false;
    };
    failed_records(&value).any(|(h, until)| h == hash && now_ms < until)
}

/// Remembers a token whose signature check failed, for `failed_ttl_ms`.
pub fn remember_failed(
    store: &dyn SharedData,
    config: &TokenCacheConfig,
    hash: &[u8; TOKEN_HASH_BYTES],
    now_ms: u64,
) {
    if config.failed_entries == 0 {
        return;
    }
    let until = now_ms.saturating_add(config.failed_ttl_ms);
    update_key(store, &failed_key(config, hash), |current| {
        let mut kept: Vec<(&[u8], u64)> = failed_records(current)
            .filter(|(h, u)| *h != hash && now_ms < *u)
            .collect();
        while kept.len() >= SMALL_WAYS {
            let (index, _) = kept.iter().enumerate().min_by_key(|(_, (_, u))| *u)?;
            kept.remove(index);
        }
        let mut next = Vec::with_capacity((kept.len() + 1) * FAILED_RECORD);
        for (h, u) in kept {
            next.extend_from_slice(h);
            next.extend_from_slice(&u.to_le_bytes());
        }
        next.extend_from_slice(hash);
        next.extend_from_slice(&until.to_le_bytes());
        Some(next)
    });
}

// --- client budgets: [client hash 8][minute 8][count 4], fixed one-minute windows ---

const CLIENT_RECORD: usize = 20;

fn client_hash(client: &str) -> [u8; 8] {
    let digest = Sha256::digest(client.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn client_key(config: &TokenCacheConfig, hash: &[u8]) -> String {
    let buckets = buckets_for(config.budget_clients, SMALL_WAYS);
    format!("tollgate/auth/cb/{}", bucket_of(hash, buckets))
}

fn client_records(bytes: &[u8]) -> impl Iterator<Item = ([u8; 8], u64, u32)> + '_ {
    bytes.chunks_exact(CLIENT_RECORD).map(|r| {
        let mut h = [0u8; 8];
        h.copy_from_slice(&r[..8]);
        let minute = u64::from_le_bytes(r[8..16].try_into().unwrap_or([0; 8]));
        let count = u32::from_le_bytes(r[16..20].try_into().unwrap_or([0; 4]));
        (h, minute, count)
    })
}

/// True when the client has used up its failed-verification budget this minute.
pub fn budget_spent(
    store: &dyn SharedData,
    config: &TokenCacheConfig,
    client: &str,
    now_ms: u64,
) -> bool {
    if config.budget_per_minute == 0 {
        return false;
    }
    let hash = client_hash(client);
    let minute = now_ms / 60_000;
    let Ok(Some((value, _))) = store.get(&client_key(config, &hash)) else {
        return false;
    };
    client_records(&value)
        .any(|(h, m, count)| h == hash && m == minute && count >= config.budget_per_minute)
}

/// Counts one failed signature check against the client's budget.
pub fn spend_budget(store: &dyn SharedData, config: &TokenCacheConfig, client: &str, now_ms: u64) {
    if config.budget_per_minute == 0 {
        return;
    }
    let hash = client_hash(client);
    let minute = now_ms / 60_000;
    update_key(store, &client_key(config, &hash), |current| {
        let mut records: Vec<([u8; 8], u64, u32)> = client_records(current)
            .filter(|(_, m, _)| *m == minute) // older windows are over: drop them
            .collect();
        match records.iter_mut().find(|(h, _, _)| *h == hash) {
            Some(record) => record.2 = record.2.saturating_add(1),
            None => {
                if records.len() >= SMALL_WAYS {
                    // Full of clients in this window: the one with the fewest failures goes.
                    let (index, _) = records.iter().enumerate().min_by_key(|(_, r)| r.2)?;
                    records.remove(index);
                }
                records.push((hash, minute, 1));
            }
        }
        let mut next = Vec::with_capacity(records.len() * CLIENT_RECORD);
        for (h, m, c) in records {
            next.extend_from_slice(&h);
            next.extend_from_slice(&m.to_le_bytes());
            next.extend_from_slice(&c.to_le_bytes());
        }
        Some(next)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySharedData;

    fn hash(n: u8) -> [u8; TOKEN_HASH_BYTES] {
        let mut h = [n; TOKEN_HASH_BYTES];
        // Same bucket for every test hash: the first four bytes pick it.
        h[..4].copy_from_slice(&[0, 0, 0, 0]);
        h
    }

    fn entry(until: u64) -> SharedVerified {
        SharedVerified {
            provider_tag: "p:abc".into(),
            valid_until_s: until,
        }
    }

    #[test]
    fn verified_entries_round_trip_and_expire() {
        let store = MemorySharedData::default();
        let config = TokenCacheConfig::default();
        put_verified(&store, &config, &hash(1), &entry(100), 10);
        assert_eq!(
            get_verified(&store, &config, &hash(1), 99),
            Some(entry(100))
        );
        assert_eq!(get_verified(&store, &config, &hash(1), 100), None);
        assert_eq!(get_verified(&store, &config, &hash(2), 10), None);
    }

    #[test]
    fn a_full_bucket_evicts_expired_then_closest_to_expiry() {
        let store = MemorySharedData::default();
        let config = TokenCacheConfig::default();
        put_verified(&store, &config, &hash(1), &entry(50), 10);
        put_verified(&store, &config, &hash(2), &entry(500), 10);
        put_verified(&store, &config, &hash(3), &entry(300), 10);
        put_verified(&store, &config, &hash(4), &entry(400), 10);
        // Full; at t=60 entry 1 has expired and goes first.
        put_verified(&store, &config, &hash(5), &entry(600), 60);
        assert!(get_verified(&store, &config, &hash(3), 60).is_some());
        // Full again, nothing expired: entry 3 (until 300) is closest to expiry.
        put_verified(&store, &config, &hash(6), &entry(700), 60);
        assert_eq!(get_verified(&store, &config, &hash(3), 60), None);
        for n in [2, 4, 5, 6] {
            assert!(get_verified(&store, &config, &hash(n), 60).is_some(), "{n}");
        }
        assert_eq!(store.len(), 1, "one bucket, one key");
    }

    #[test]
    fn tables_are_bounded_in_keys() {
        let store = MemorySharedData::default();
        let config = TokenCacheConfig {
            verified_entries: 16,
            failed_entries: 16,
            ..TokenCacheConfig::default()
        };
        for n in 0..2000u32 {
            let digest: [u8; 32] = Sha256::digest(n.to_le_bytes()).into();
            let h = token_hash(&digest);
            put_verified(&store, &config, &h, &entry(1000), 10);
            remember_failed(&store, &config, &h, 10_000);
        }
        // 16 / 4 verified buckets + 16 / 8 failed buckets.
        assert_eq!(store.len(), 4 + 2);
    }

    #[test]
    fn failed_tokens_are_remembered_until_their_ttl() {
        let store = MemorySharedData::default();
        let config = TokenCacheConfig::default();
        remember_failed(&store, &config, &hash(9), 1_000);
        assert!(recently_failed(&store, &config, &hash(9), 1_000));
        assert!(!recently_failed(&store, &config, &hash(8), 1_000));
        assert!(!recently_failed(
            &store,
            &config,
            &hash(9),
            1_000 + config.failed_ttl_ms
        ));
    }

    #[test]
    fn client_budget_counts_per_minute() {
        let store = MemorySharedData::default();
        let config = TokenCacheConfig {
            budget_per_minute: 3,
            ..TokenCacheConfig::default()
        };
        let t = 120_000;
        for _ in 0..3 {
            assert!(!budget_spent(&store, &config, "198.51.100.1", t));
            spend_budget(&store, &config, "198.51.100.1", t);
        }
        assert!(budget_spent(&store, &config, "198.51.100.1", t + 59_999));
        assert!(!budget_spent(&store, &config, "198.51.100.2", t));
        assert!(
            !budget_spent(&store, &config, "198.51.100.1", t + 60_000),
            "a new minute, a new budget"
        );
    }

    #[test]
    fn store_failures_are_harmless() {
        let store = MemorySharedData::default();
        store.broken.set(true);
        let config = TokenCacheConfig::default();
        put_verified(&store, &config, &hash(1), &entry(100), 10);
        assert_eq!(get_verified(&store, &config, &hash(1), 10), None);
        assert!(!recently_failed(&store, &config, &hash(1), 10));
        assert!(!budget_spent(&store, &config, "c", 10));
    }
}
