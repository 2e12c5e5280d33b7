//! Cache storage in proxy-wasm shared data (shared by every worker of a node).
//!
//! Layout (all keys under `tg:cache:`):
//! - `index`: every stored entry in insertion order, with its size, tenant, URL and
//!   surrogate keys, plus the next generation number; updated with compare-and-swap.
//! - `h:<digest>`: the entry head (status, headers, times, Vary selection, generation,
//!   body length).
//! - `b:<digest>:<gen>:<n>`: the body in chunks of at most [`CHUNK`] bytes.
//!
//! Memory bound and eviction: the index sums the bytes of every entry (head + body); when
//! a new entry would take the total over `max_bytes`, the oldest-stored entries are
//! evicted first (FIFO by store time: cheap, no write on the hit path, and hot entries
//! come back on their next miss). From 16 MiB on, the index is split in 16 by the key
//! digest's first hex digit, each part with a sixteenth of the bound and its own FIFO,
//! so a store rewrites a sixteenth of the index. Shared data cannot delete keys, so removed values are
//! overwritten with an empty value, which reads as absent.

use super::{EntryMeta, Headers};
use crate::shared::{SetError, SharedData, StoreUnavailable};

pub const CHUNK: usize = 64 * 1024;
const INDEX: &str = "tg:cache:index";
/// Bounds from this size on are split over [`SHARDS`] index parts.
const SHARDED_FROM_BYTES: u64 = 16 * 1024 * 1024;
const SHARDS: u64 = 16;
const CAS_RETRIES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    digest: String,
    tenant: String,
    url: String,
    bytes: u64,
    gen_: u64,
    chunks: u32,
    surrogate: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    next_gen: u64,
    rows: Vec<Row>,
}

/// A stored entry found for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub meta: EntryMeta,
    pub body: Vec<u8>,
}

/// What to purge; always within one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One entry by its key digest.
    Key(String),
    /// Every entry whose `authority|path?query` starts with this, or, for a value that
    /// starts with `/`, whose `path?query` does.
    Prefix(String),
    /// Every entry whose `Surrogate-Key` response header named this key.
    Surrogate(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("shared data unavailable")]
    Unavailable,
    #[error("index kept changing under us")]
    Contended,
}

impl From<StoreUnavailable> for StoreError {
    fn from(_: StoreUnavailable) -> Self {
        StoreError::Unavailable
    }
}

pub struct CacheStore<'a, S: SharedData + ?Sized> {
    data: &'a S,
    max_bytes: u64,
}

impl<'a, S: SharedData + ?Sized> CacheStore<'a, S> {
    pub fn new(data: &'a S, max_bytes: u64) -> Self {
        CacheStore { data, max_bytes }
    }

    fn shards(&self) -> u64 {
        if self.max_bytes >= SHARDED_FROM_BYTES {
            SHARDS
        } else {
            1
        }
    }

    /// The index part that holds `digest` (hex: its first digit picks the part).
    fn shard_of(&self, digest: &str) -> u64 {
        let first = digest.bytes().next().map_or(0, |b| match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            b'a'..=b'f' => u64::from(b - b'a' + 10),
            _ => u64::from(b),
        });
        first % self.shards()
    }

    fn index_key(&self, shard: u64) -> String {
        if self.shards() == 1 {
            INDEX.to_string()
        } else {
            format!("{INDEX}:{shard}")
        }
    }

    fn read(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.data.get(key)?.filter(|(v, _)| !v.is_empty()))
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.data
            .set(key, value, None)
            .map_err(|_| StoreError::Unavailable)
    }

    /// The entry under `digest` if its Vary selection matches the request.
    pub fn get(&self, digest: &str, request: &Headers) -> Result<Option<Hit>, StoreError> {
        let Some((head, _)) = self.read(&head_key(digest))? else {
            return Ok(None);
        };
        let Some((meta, gen_, body_len, chunks)) = decode_head(&head) else {
            return Ok(None);
        };
        if !meta.vary_matches(request) {
            return Ok(None);
        }
        let mut body = Vec::with_capacity(usize::try_from(body_len).unwrap_or(0));
        for n in 0..chunks {
            match self.read(&chunk_key(digest, gen_, n))? {
                Some((chunk, _)) => body.extend_from_slice(&chunk),
                // Evicted or overwritten mid-read: a miss, never a torn body.
                None => return Ok(None),
            }
        }
        if body.len() as u64 != body_len {
            return Ok(None);
        }
        Ok(Some(Hit { meta, body }))
    }

    /// Stores an entry, evicting the oldest entries past the byte bound.
    pub fn put(
        &self,
        digest: &str,
        tenant: &str,
        url: &str,
        meta: &EntryMeta,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let chunks = u32::try_from(body.len().div_ceil(CHUNK)).unwrap_or(u32::MAX);
        let surrogate = surrogate_keys(&meta.headers);
        let head_len = encode_head(meta, 0, 0, 0).len() as u64;
        let bytes = head_len + body.len() as u64;
        let budget = self.max_bytes / self.shards();
        if bytes > budget {
            return Ok(());
        }
        let index_key = self.index_key(self.shard_of(digest));
        let mut evicted = Vec::new();
        let gen_ = self.update_index(&index_key, |index| {
            evicted.clear();
            if let Some(pos) = index.rows.iter().position(|r| r.digest == digest) {
                evicted.push(index.rows.remove(pos));
            }
            let gen_ = index.next_gen;
            index.next_gen += 1;
            let mut total: u64 = index.rows.iter().map(|r| r.bytes).sum();
            while total + bytes > budget && !index.rows.is_empty() {
                let row = index.rows.remove(0);
                total -= row.bytes;
                evicted.push(row);
            }
            index.rows.push(Row {
                digest: digest.to_string(),
                tenant: tenant.to_string(),
                url: url.to_string(),
                bytes,
                gen_,
                chunks,
                surrogate: surrogate.clone(),
            });
            gen_
        })?;
        for row in &evicted {
            self.blank(row, row.digest != digest)?;
        }
        for (n, chunk) in body.chunks(CHUNK).enumerate() {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.write(&chunk_key(digest, gen_, n), chunk)?;
        }
        self.write(
            &head_key(digest),
            &encode_head(meta, gen_, body.len() as u64, chunks),
        )
    }

    /// Rewrites an entry's head (after a 304 freshened it), keeping its body.
    pub fn update_meta(&self, digest: &str, meta: &EntryMeta) -> Result<(), StoreError> {
        let Some((head, _)) = self.read(&head_key(digest))? else {
            return Ok(());
        };
        let Some((_, gen_, body_len, chunks)) = decode_head(&head) else {
            return Ok(());
        };
        self.write(
            &head_key(digest),
            &encode_head(meta, gen_, body_len, chunks),
        )
    }

    /// Hard purge removes entries; soft purge marks them stale (served again only after a
    /// successful revalidation). Returns how many entries matched.
    pub fn purge(
        &self,
        tenant: &str,
        target: &PurgeTarget,
        soft: bool,
    ) -> Result<usize, StoreError> {
        let matches = |r: &Row| {
            r.tenant == tenant
                && match target {
                    PurgeTarget::Key(d) => &r.digest == d,
                    PurgeTarget::Prefix(p) => {
                        r.url.starts_with(p.as_str())
                            || (p.starts_with('/')
                                && r.url
                                    .split_once('|')
                                    .is_some_and(|(_, path)| path.starts_with(p.as_str())))
                    }
                    PurgeTarget::Surrogate(s) => r.surrogate.iter().any(|k| k == s),
                }
        };
        let mut n = 0;
        for shard in 0..self.shards() {
            n += self.purge_shard(&self.index_key(shard), &matches, soft)?;
        }
        Ok(n)
    }

    fn purge_shard(
        &self,
        index_key: &str,
        matches: &dyn Fn(&Row) -> bool,
        soft: bool,
    ) -> Result<usize, StoreError> {
        if soft {
            let index = self.load_index(index_key)?.0;
            let mut n = 0;
            for row in index.rows.iter().filter(|r| matches(r)) {
                if let Some((head, _)) = self.read(&head_key(&row.digest))?
                    && let Some((mut meta, gen_, len, chunks)) = decode_head(&head)
                {
                    meta.invalidated = true;
                    self.write(
                        &head_key(&row.digest),
                        &encode_head(&meta, gen_, len, chunks),
                    )?;
                    n += 1;
                }
            }
            return Ok(n);
        }
        let mut removed = Vec::new();
        self.update_index(index_key, |index| {
            removed.clear();
            let (gone, kept): (Vec<Row>, Vec<Row>) = std::mem::take(&mut index.rows)
                .into_iter()
                .partition(|r| matches(r));
            index.rows = kept;
            removed = gone;
        })?;
        for row in &removed {
            self.blank(row, true)?;
        }
        Ok(removed.len())
    }

    /// Total bytes the index accounts for.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for shard in 0..self.shards() {
            total += self
                .load_index(&self.index_key(shard))?
                .0
                .rows
                .iter()
                .map(|r| r.bytes)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Request collapsing: the first caller for `digest` gets the lock (until `now + hold`);
    /// the others go to the origin uncached and do not store. Shared data has no atomic
    /// create, so two callers racing on a never-used key can both win; after that the
    /// compare-and-swap makes it exclusive.
    pub fn try_lock(&self, digest: &str, now: u64, hold: u64) -> Result<bool, StoreError> {
        let key = lock_key(digest);
        let current = match self.data.get(&key)? {
            Some(found) => found,
            None => {
                self.write(&key, b"0")?;
                match self.data.get(&key)? {
                    Some(found) => found,
                    None => return Ok(false),
                }
            }
        };
        let until = std::str::from_utf8(&current.0)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if until > now {
            return Ok(false);
        }
        match self
            .data
            .set(&key, (now + hold).to_string().as_bytes(), Some(current.1))
        {
            Ok(()) => Ok(true),
            Err(SetError::CasMismatch) => Ok(false),
            Err(SetError::Host) => Err(StoreError::Unavailable),
        }
    }

    pub fn unlock(&self, digest: &str) -> Result<(), StoreError> {
        self.write(&lock_key(digest), b"0")
    }

    fn blank(&self, row: &Row, head_too: bool) -> Result<(), StoreError> {
        for n in 0..row.chunks {
            self.write(&chunk_key(&row.digest, row.gen_, n), b"")?;
        }
        if head_too {
            self.write(&head_key(&row.digest), b"")?;
        }
        Ok(())
    }

    fn load_index(&self, key: &str) -> Result<(Index, Option<u32>), StoreError> {
        Ok(match self.data.get(key)? {
            Some((bytes, cas)) => (decode_index(&bytes).unwrap_or_default(), Some(cas)),
            None => (Index::default(), None),
        })
    }

    fn update_index<T>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Index) -> T,
    ) -> Result<T, StoreError> {
        for _ in 0..CAS_RETRIES {
            let (mut index, cas) = self.load_index(key)?;
            let out = change(&mut index);
            match self.data.set(key, &encode_index(&index), cas) {
                Ok(()) => return Ok(out),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return Err(StoreError::Unavailable),
            }
        }
        Err(StoreError::Contended)
    }
}

fn head_key(digest: &str) -> String {
    format!("tg:cache:h:{digest}")
}

fn chunk_key(digest: &str, gen_: u64, n: u32) -> String {
    format!("tg:cache:b:{digest}:{gen_}:{n}")
}

fn lock_key(digest: &str) -> String {
    format!("tg:cache:l:{digest}")
}

fn surrogate_keys(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == "surrogate-key")
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

// A small length-prefixed binary codec: faster than JSON on the hit path and header
// values need not be UTF-8.

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
}

struct Reader<'b>(&'b [u8]);

impl<'b> Reader<'b> {
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }
    fn bytes(&mut self) -> Option<&'b [u8]> {
        let len = usize::try_from(self.u64()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn count(&mut self) -> Option<usize> {
        // A count can never exceed the bytes left: guards allocation on corrupt input.
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }
}

const HEAD_VERSION: u64 = 1;

fn encode_head(meta: &EntryMeta, gen_: u64, body_len: u64, chunks: u32) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.u64(HEAD_VERSION);
    w.u64(gen_);
    w.u64(body_len);
    w.u64(u64::from(chunks));
    w.u64(u64::from(meta.status));
    w.u64(meta.request_time);
    w.u64(meta.response_time);
    w.u64(meta.ttl.map_or(0, |t| t + 1));
    w.u64(u64::from(meta.invalidated));
    w.u64(meta.headers.len() as u64);
    for (n, v) in &meta.headers {
        w.bytes(n.as_bytes());
        w.bytes(v);
    }
    w.u64(meta.vary.len() as u64);
    for (n, v) in &meta.vary {
        w.bytes(n.as_bytes());
        match v {
            Some(v) => {
                w.u64(1);
                w.bytes(v);
            }
            None => w.u64(0),
        }
    }
    w.0
}

fn decode_head(bytes: &[u8]) -> Option<(EntryMeta, u64, u64, u32)> {
    let mut r = Reader(bytes);
    if r.u64()? != HEAD_VERSION {
        return None;
    }
    let gen_ = r.u64()?;
    let body_len = r.u64()?;
    let chunks = u32::try_from(r.u64()?).ok()?;
    let status = u16::try_from(r.u64()?).ok()?;
    let request_time = r.u64()?;
    let response_time = r.u64()?;
    let ttl = r.u64()?.checked_sub(1);
    let invalidated = r.u64()? != 0;
    let mut headers = Vec::new();
    for _ in 0..r.count()? {
        headers.push((r.string()?, r.bytes()?.to_vec()));
    }
    let mut vary = Vec::new();
    for _ in 0..r.count()? {
        let name = r.string()?;
        let value = match r.u64()? {
            0 => None,
            _ => Some(r.bytes()?.to_vec()),
        };
        vary.push((name, value));
    }
    let meta = EntryMeta {
        status,
        headers,
        request_time,
        response_time,
        vary,
        ttl,
        invalidated,
    };
    Some((meta, gen_, body_len, chunks))
}

fn encode_index(index: &Index) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.u64(index.next_gen);
    w.u64(index.rows.len() as u64);
    for r in &index.rows {
        w.bytes(r.digest.as_bytes());
        w.bytes(r.tenant.as_bytes());
        w.bytes(r.url.as_bytes());
        w.u64(r.bytes);
        w.u64(r.gen_);
        w.u64(u64::from(r.chunks));
        w.u64(r.surrogate.len() as u64);
        for s in &r.surrogate {
            w.bytes(s.as_bytes());
        }
    }
    w.0
}

fn decode_index(bytes: &[u8]) -> Option<Index> {
    let mut r = Reader(bytes);
    let next_gen = r.u64()?;
    let mut rows = Vec::new();
    for _ in 0..r.count()? {
        let digest = r.string()?;
        let tenant = r.string()?;
        let url = r.string()?;
        let bytes = r.u64()?;
        let gen_ = r.u64()?;
        let chunks = u32::try_from(r.u64()?).ok()?;
        let mut surrogate = Vec::new();
        for _ in 0..r.count()? {
            surrogate.push(r.string()?);
        }
        rows.push(Row {
            digest,
            tenant,
            url,
            bytes,
            gen_,
            chunks,
            surrogate,
        });
    }
    Some(Index { next_gen, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{KeyInput, KeySpec, Lookup, RouteRules, build_key};
    use crate::shared::MemorySharedData;

    const T0: u64 = 1_700_000_000;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn meta(resp: &[(&str, &str)], req: &Headers) -> EntryMeta {
        EntryMeta::new(200, h(resp), req, T0, T0, &RouteRules::default())
    }

    #[test]
    fn round_trips_small_and_chunked_bodies() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 10 << 20);
        let m = meta(&[("cache-control", "max-age=60"), ("x-bin", "\u{7f}")], &[]);
        for size in [0, 10, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            store.put("d", "t", "a|/", &m, &body).unwrap();
            let hit = store.get("d", &[]).unwrap().unwrap();
            assert_eq!(hit.body, body, "size {size}");
            assert_eq!(hit.meta, m);
        }
        assert!(store.get("other", &[]).unwrap().is_none());
    }

    #[test]
    fn a_large_bound_splits_the_index_and_still_purges_and_counts_everything() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 16 << 20);
        let m = meta(&[("cache-control", "max-age=60")], &[]);
        let digests: Vec<String> = (0..64).map(|i| format!("{:x}{i:03}", i % 16)).collect();
        for d in &digests {
            store
                .put(d, "t", &format!("a|/news/{d}"), &m, &[7u8; 100])
                .unwrap();
        }
        // Every part holds its own entries.
        assert!((0..16).all(|shard| data.get(&format!("{INDEX}:{shard}")).unwrap().is_some()));
        let per_entry = store.used_bytes().unwrap() / 64;
        assert!(per_entry > 100, "{per_entry}");
        assert_eq!(
            store
                .purge("t", &PurgeTarget::Prefix("/news/".into()), false)
                .unwrap(),
            64
        );
        assert_eq!(store.used_bytes().unwrap(), 0);
        assert!(digests.iter().all(|d| store.get(d, &[]).unwrap().is_none()));
    }

    #[test]
    fn tenants_never_share_entries() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 1 << 20);
        let no_header = |_: &str| None::<Vec<u8>>;
        let no_claim = |_: &str| None::<String>;
        let key = |tenant: &str| {
            build_key(
                &KeySpec::default(),
                &KeyInput {
                    tenant,
                    user: None,
                    authority: "a",
                    path: "/p",
                    header: &no_header,
                    claim: &no_claim,
                },
            )
            .unwrap()
        };
        let (a, b) = (key("acme"), key("globex"));
        store
            .put(
                &a.digest,
                &a.tenant,
                &a.url,
                &meta(&[("cache-control", "max-age=60")], &[]),
                b"acme",
            )
            .unwrap();
        assert!(store.get(&b.digest, &[]).unwrap().is_none());
        assert_eq!(store.get(&a.digest, &[]).unwrap().unwrap().body, b"acme");
        // A purge in one tenant cannot touch another's entries.
        assert_eq!(
            store
                .purge("globex", &PurgeTarget::Prefix(String::new()), false)
                .unwrap(),
            0
        );
        assert!(store.get(&a.digest, &[]).unwrap().is_some());
    }

    #[test]
    fn vary_mismatch_is_a_miss() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 1 << 20);
        let req = h(&[("accept-language", "de")]);
        store
            .put(
                "d",
                "t",
                "u",
                &meta(&[("vary", "accept-language")], &req),
                b"de",
            )
            .unwrap();
        assert!(store.get("d", &req).unwrap().is_some());
        assert!(
            store
                .get("d", &h(&[("accept-language", "fr")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn byte_bound_evicts_oldest_first() {
        let data = MemorySharedData::default();
        let m = meta(&[("cache-control", "max-age=60")], &[]);
        let head = encode_head(&m, 0, 0, 0).len() as u64;
        let store = CacheStore::new(&data, 3 * (head + 1000));
        for d in ["a", "b", "c", "d"] {
            store.put(d, "t", d, &m, &[0; 1000]).unwrap();
        }
        assert!(store.get("a", &[]).unwrap().is_none());
        for d in ["b", "c", "d"] {
            assert!(store.get(d, &[]).unwrap().is_some(), "{d}");
        }
        assert!(store.used_bytes().unwrap() <= 3 * (head + 1000));
        // An object larger than the whole bound is not stored and evicts nothing.
        store.put("huge", "t", "h", &m, &vec![0; 10_000]).unwrap();
        assert!(store.get("huge", &[]).unwrap().is_none());
        assert!(store.get("d", &[]).unwrap().is_some());
        // Replacing an entry does not count it twice.
        store.put("d", "t", "d", &m, &[1; 1000]).unwrap();
        assert!(store.get("b", &[]).unwrap().is_some());
        assert_eq!(store.get("d", &[]).unwrap().unwrap().body, vec![1; 1000]);
    }

    #[test]
    fn purge_by_key_prefix_and_surrogate_hard_and_soft() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 1 << 20);
        let tagged = meta(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"1\""),
                ("surrogate-key", "refunds  user-7"),
            ],
            &[],
        );
        let plain = meta(&[("cache-control", "max-age=60")], &[]);
        store.put("k1", "t", "a|/refunds/1", &tagged, b"1").unwrap();
        store.put("k2", "t", "a|/refunds/2", &plain, b"2").unwrap();
        store.put("k3", "t", "a|/other", &plain, b"3").unwrap();

        assert_eq!(
            store
                .purge("t", &PurgeTarget::Surrogate("user-7".into()), true)
                .unwrap(),
            1
        );
        let soft = store.get("k1", &[]).unwrap().unwrap();
        assert_eq!(
            soft.meta.lookup(&[], T0 + 1, &RouteRules::default()),
            Lookup::Revalidate
        );

        assert_eq!(
            store
                .purge("t", &PurgeTarget::Prefix("a|/refunds/".into()), false)
                .unwrap(),
            2
        );
        assert!(store.get("k1", &[]).unwrap().is_none());
        assert!(store.get("k2", &[]).unwrap().is_none());
        assert_eq!(
            store
                .purge("t", &PurgeTarget::Key("k3".into()), false)
                .unwrap(),
            1
        );
        assert!(store.get("k3", &[]).unwrap().is_none());
        assert_eq!(store.used_bytes().unwrap(), 0);
    }

    #[test]
    fn freshened_meta_keeps_body() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 1 << 20);
        let mut m = meta(&[("cache-control", "max-age=1"), ("etag", "\"1\"")], &[]);
        store.put("d", "t", "u", &m, b"body").unwrap();
        m.freshen(&h(&[("cache-control", "max-age=100")]), T0 + 5, T0 + 5);
        store.update_meta("d", &m).unwrap();
        let hit = store.get("d", &[]).unwrap().unwrap();
        assert_eq!(hit.body, b"body");
        assert_eq!(hit.meta.freshness_lifetime(), 100);
    }

    #[test]
    fn collapse_lock_is_exclusive_until_released_or_expired() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 1 << 20);
        assert!(store.try_lock("d", T0, 10).unwrap());
        assert!(!store.try_lock("d", T0 + 1, 10).unwrap());
        assert!(store.try_lock("d", T0 + 11, 10).unwrap());
        store.unlock("d").unwrap();
        assert!(store.try_lock("d", T0 + 12, 10).unwrap());
    }

    #[test]
    fn corrupt_or_unavailable_data_is_a_miss_or_error_not_a_panic() {
        let data = MemorySharedData::default();
        let store = CacheStore::new(&data, 1 << 20);
        for junk in [
            &b"\x01"[..],
            &[0xff; 40],
            &[
                1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            data.set("tg:cache:h:d", junk, None).unwrap();
            assert!(store.get("d", &[]).unwrap().is_none());
            data.set(INDEX, junk, None).unwrap();
            assert_eq!(store.used_bytes().unwrap(), 0);
        }
        data.broken.set(true);
        assert_eq!(store.get("d", &[]), Err(StoreError::Unavailable));
        assert!(store.put("d", "t", "u", &meta(&[], &[]), b"x").is_err());
    }
}
