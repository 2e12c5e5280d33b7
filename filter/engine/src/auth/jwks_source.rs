//! Remote JWKS: a key source the adapter drives, with no proxy-wasm types.
//!
//! The adapter's root context calls [`KeySources::tick`] on a timer and hands back each
//! fetch's answer with [`KeySources::fetch_done`]. Everything else happens here:
//!
//! - **One fetch per node.** Each provider has a small control record in shared data
//!   (`tollgate/jwks/<provider>/<fingerprint>/ctl`). A VM that finds a fetch due takes a
//!   lease in it with CAS; the others see the lease and wait. A lease outlives the fetch
//!   timeout by a second, so a VM that dies mid-fetch only delays the next attempt.
//! - **One copy per node.** The fetcher stores the raw JWKS with its generation and times
//!   in `.../keys`; every VM compiles it once per generation (an unchanged document keeps
//!   its generation, so a refresh that changes nothing costs no recompilation).
//! - **Refresh** at `Cache-Control: max-age` (minus `Age`), clamped to the provider's
//!   bounds, else the configured interval. Failed fetches retry with exponential backoff
//!   from 1 s, capped at the lower bound.
//! - **Unknown `kid`.** The request that meets it is refused 401 (the token cannot be
//!   verified now) and asks for one refetch, granted at most once per
//!   `unknown_kid_refetch_seconds` per provider per node; requests after the new set
//!   arrives (at most a tick later) verify.
//! - **Stale and unavailable.** A set stays usable for `max_stale` past its refresh time
//!   while fetches fail; after that, or before any set was fetched, the provider's keys
//!   are unavailable — a distinct outcome from an invalid token.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{Algorithm, KeyEntry, compile_jwks};
use crate::metrics::Counter;
use crate::shared::{SetError, SharedData};

/// Largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// How long a lease outlives the fetch timeout.
const LEASE_GRACE_MS: u64 = 1_000;
/// A VM rereads the shared control record on the request path at most this often.
const REQUEST_SYNC_INTERVAL_MS: u64 = 200;
/// Timer period while some provider has no keys on this VM, and once all have.
pub const TICK_WAITING_MS: u64 = 200;
pub const TICK_STEADY_MS: u64 = 1_000;
const CAS_ATTEMPTS: usize = 8;

/// What to answer when a provider's keys are unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnavailableAnswer {
    pub status: u16,
    pub retry_after_seconds: u32,
}

/// A provider's `jwks.remote` settings, compiled.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    /// The JWKS path; `None` with discovery (the path comes from `jwks_uri`).
    pub path: Option<String>,
    pub authority: String,
    /// The discovery document's path (`<issuer path>/.well-known/openid-configuration`).
    pub discovery_path: Option<String>,
    pub timeout_ms: u64,
    pub refresh_ms: u64,
    pub min_refresh_ms: u64,
    pub max_refresh_ms: u64,
    pub max_stale_ms: u64,
    pub unknown_kid_interval_ms: u64,
    pub unavailable: UnavailableAnswer,
    /// Shared-data key prefix: provider name and a fingerprint of these settings.
    pub key_prefix: String,
}

/// Which document a fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    Discovery,
    Jwks,
}

/// A GET the adapter should send now through `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetch {
    pub provider: usize,
    pub kind: FetchKind,
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
}

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// An HTTP response (any status). Header names lower-case.
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// No response: dispatch refused, reset, or the like.
    Failed(String),
}

/// What the adapter should do after a tick or a fetch answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyWork {
    pub fetches: Vec<KeyFetch>,
    pub counters: Vec<(Counter, u64)>,
    /// Lines for the log (fetch failures, new key sets).
    pub log: Vec<String>,
    /// The timer period the adapter should run (ms); `None`: no timer needed.
    pub tick_ms: Option<u64>,
}

/// The node-wide control record of one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Control {
    /// Generation of the stored key set; 0: none yet.
    generation: u64,
    fetched_at_ms: u64,
    /// When the set should be refreshed.
    expires_at_ms: u64,
    lease_owner: u64,
    lease_until_ms: u64,
    /// No fetch before this (backoff after failures).
    next_attempt_ms: u64,
    failures: u32,
    refetch_wanted: bool,
    last_kid_refetch_ms: Option<u64>,
    /// From discovery: where the JWKS lives.
    jwks_path: Option<String>,
    jwks_authority: Option<String>,
    discovered_at_ms: u64,
}

/// The shared key-set record: the raw document and its metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKeys {
    generation: u64,
    fetched_at_ms: u64,
    expires_at_ms: u64,
    jwks: String,
}

/// A compiled key set on this VM.
#[derive(Debug)]
struct Loaded {
    generation: u64,
    keys: Rc<Vec<KeyEntry>>,
    expires_at_ms: u64,
}

/// Per-VM state of one remote provider.
#[derive(Debug)]
pub struct RemoteKeys {
    pub config: RemoteJwks,
    pub algorithms: Vec<Algorithm>,
    loaded: RefCell<Option<Loaded>>,
    /// Set while this VM has a fetch out: (kind, started at).
    in_flight: Cell<Option<u64>>,
    last_request_sync_ms: Cell<Option<u64>>,
    last_kid_check_ms: Cell<Option<u64>>,
}

/// Why a provider's keys cannot be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUnavailable(pub UnavailableAnswer);

impl RemoteKeys {
    pub fn new(config: RemoteJwks, algorithms: Vec<Algorithm>) -> Self {
        Self {
            config,
            algorithms,
            loaded: RefCell::new(None),
            in_flight: Cell::new(None),
            last_request_sync_ms: Cell::new(None),
            last_kid_check_ms: Cell::new(None),
        }
    }

    fn ctl_key(&self) -> String {
        format!("{}/ctl", self.config.key_prefix)
    }

    fn keys_key(&self) -> String {
        format!("{}/keys", self.config.key_prefix)
    }

    fn read_control(&self, store: &dyn SharedData) -> Option<(Control, Option<u32>)> {
        match store.get(&self.ctl_key()) {
            Ok(Some((bytes, cas))) => {
                // An unreadable record (another build's format) is replaced, not trusted.
                Some((
                    serde_json::from_slice(&bytes).unwrap_or_default(),
                    Some(cas),
                ))
            }
            Ok(None) => Some((Control::default(), None)),
            Err(_) => None,
        }
    }

    /// Read-modify-write of the control record; `change` returns `false` to leave it.
    fn update_control(
        &self,
        store: &dyn SharedData,
        mut change: impl FnMut(&mut Control) -> bool,
    ) -> Option<Control> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut control, cas) = self.read_control(store)?;
            if !change(&mut control) {
                return None;
            }
            let bytes = serde_json::to_vec(&control).ok()?;
            match store.set(&self.ctl_key(), &bytes, cas) {
                Ok(()) => return Some(control),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return None,
            }
        }
        None
    }

    /// Brings this VM's compiled set in line with shared data. Returns true when a new
    /// generation was compiled.
    fn sync(&self, store: &dyn SharedData) -> bool {
        let Some((control, _)) = self.read_control(store) else {
            return false;
        };
        if control.generation == 0 {
            return false;
        }
        let current = self.loaded.borrow().as_ref().map(|l| l.generation);
        if current == Some(control.generation) {
            if let Some(loaded) = self.loaded.borrow_mut().as_mut() {
                loaded.expires_at_ms = control.expires_at_ms;
            }
            return false;
        }
        let Ok(Some((bytes, _))) = store.get(&self.keys_key()) else {
            return false;
        };
        let Ok(stored) = serde_json::from_slice::<StoredKeys>(&bytes) else {
            return false;
        };
        if current.is_some_and(|g| g >= stored.generation) {
            return false;
        }
        let Ok(keys) = usable_keys(&stored.jwks, &self.algorithms) else {
            return false;
        };
        *self.loaded.borrow_mut() = Some(Loaded {
            generation: stored.generation,
            keys: Rc::new(keys),
            // The control record is the newer word on timing when generations agree.
            expires_at_ms: if control.generation == stored.generation {
                control.expires_at_ms
            } else {
                stored.expires_at_ms
            },
        });
        true
    }

    /// The keys to verify with at `now_ms`, or why there are none.
    pub fn keys(
        &self,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Result<Rc<Vec<KeyEntry>>, KeysUnavailable> {
        let usable = |loaded: &Option<Loaded>| {
            loaded
                .as_ref()
                .filter(|l| now_ms <= l.expires_at_ms.saturating_add(self.config.max_stale_ms))
                .map(|l| l.keys.clone())
        };
        if let Some(keys) = usable(&self.loaded.borrow()) {
            return Ok(keys);
        }
        // Nothing usable here: another VM may have fetched since this VM's last tick.
        if throttle(&self.last_request_sync_ms, now_ms) {
            self.sync(store);
        }
        usable(&self.loaded.borrow()).ok_or(KeysUnavailable(self.config.unavailable))
    }

    /// A token named a `kid` this VM does not know. Returns true when a newer set was
    /// found in shared data (verify again); otherwise asks for a rate-limited refetch.
    pub fn unknown_kid(
        &self,
        now_ms: u64,
        store: &dyn SharedData,
        counters: &mut Vec<(Counter, u64)>,
    ) -> bool {
        // Bounded per VM: a flood of made-up kids reads shared data a few times a second.
        if !throttle(&self.last_kid_check_ms, now_ms) {
            return false;
        }
        if self.sync(store) {
            return true;
        }
        let interval = self.config.unknown_kid_interval_ms;
        let granted = self.update_control(store, |c| {
            let allowed = c
                .last_kid_refetch_ms
                .is_none_or(|t| now_ms >= t.saturating_add(interval));
            if allowed {
                c.refetch_wanted = true;
                c.last_kid_refetch_ms = Some(now_ms);
            }
            allowed
        });
        if granted.is_some() {
            counters.push((Counter::JwksUnknownKidRefetches, 1));
        }
        false
    }

    fn has_keys(&self) -> bool {
        self.loaded.borrow().is_some()
    }

    /// Timer work for this provider: pick up new sets, and start a fetch if one is due
    /// and this VM wins the lease.
    fn tick(&self, index: usize, owner: u64, now_ms: u64, store: &dyn SharedData) -> KeyWork {
        let mut work = KeyWork::default();
        if self.sync(store) {
            work.log.push(format!(
                "jwks: provider #{index} now uses key set generation {}",
                self.loaded.borrow().as_ref().map_or(0, |l| l.generation)
            ));
        }
        if let Some(started) = self.in_flight.get() {
            if now_ms < started.saturating_add(self.lease_ms()) {
                return work; // our fetch is still out
            }
            self.in_flight.set(None);
        }
        let lease_ms = self.lease_ms();
        let Some(control) = self.update_control(store, |c| {
            let due = c.generation == 0 || now_ms >= c.expires_at_ms || c.refetch_wanted;
            let lease_free = now_ms >= c.lease_until_ms;
            if !(due && lease_free && now_ms >= c.next_attempt_ms) {
                return false;
            }
            c.lease_owner = owner;
            c.lease_until_ms = now_ms.saturating_add(lease_ms);
            true
        }) else {
            return work;
        };
        work.fetches.push(self.next_fetch(index, &control, now_ms));
        work.counters.push((Counter::JwksFetches, 1));
        self.in_flight.set(Some(now_ms));
        work
    }

    fn lease_ms(&self) -> u64 {
        self.config.timeout_ms.saturating_add(LEASE_GRACE_MS)
    }

    fn next_fetch(&self, index: usize, control: &Control, now_ms: u64) -> KeyFetch {
        let discover = self.config.discovery_path.as_ref().filter(|_| {
            control.jwks_path.is_none()
                || now_ms
                    >= control
                        .discovered_at_ms
                        .saturating_add(self.config.max_refresh_ms)
        });
        let (kind, path, authority) = match discover {
            Some(path) => (
                FetchKind::Discovery,
                path.clone(),
                self.config.authority.clone(),
            ),
            None => (
                FetchKind::Jwks,
                self.config
                    .path
                    .clone()
                    .or_else(|| control.jwks_path.clone())
                    .unwrap_or_else(|| "/".to_string()),
                control
                    .jwks_authority
                    .clone()
                    .unwrap_or_else(|| self.config.authority.clone()),
            ),
        };
        KeyFetch {
            provider: index,
            kind,
            cluster: self.config.cluster.clone(),
            path,
            authority,
            timeout_ms: self.config.timeout_ms,
        }
    }

    fn fetch_done(
        &self,
        fetch: &KeyFetch,
        outcome: FetchOutcome,
        issuer: &str,
        owner: u64,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> KeyWork {
        self.in_flight.set(None);
        let mut work = KeyWork::default();
        let result = match (&outcome, fetch.kind) {
            (FetchOutcome::Failed(reason), _) => Err(reason.clone()),
            (FetchOutcome::Response { status, .. }, _) if *status != 200 => {
                Err(format!("status {status}"))
            }
            (FetchOutcome::Response { body, .. }, _) if body.len() > MAX_DOCUMENT_BYTES => {
                Err(format!("document over {MAX_DOCUMENT_BYTES} bytes"))
            }
            (FetchOutcome::Response { body, .. }, FetchKind::Discovery) => {
                parse_discovery(body, issuer).map(Fetched::Discovery)
            }
            (FetchOutcome::Response { headers, body, .. }, FetchKind::Jwks) => {
                let text = String::from_utf8_lossy(body).into_owned();
                usable_keys(&text, &self.algorithms)
                    .map(|keys| Fetched::Jwks(text, keys, self.refresh_after(headers)))
            }
        };
        match result {
            Ok(Fetched::Discovery((path, authority))) => {
                let lease_ms = self.lease_ms();
                let updated = self.update_control(store, |c| {
                    c.jwks_path = Some(path.clone());
                    c.jwks_authority = authority.clone();
                    c.discovered_at_ms = now_ms;
                    // Still ours: the JWKS fetch follows at once.
                    c.lease_owner = owner;
                    c.lease_until_ms = now_ms.saturating_add(lease_ms);
                    true
                });
                if let Some(control) = updated {
                    let mut next = self.next_fetch(fetch.provider, &control, now_ms);
                    next.kind = FetchKind::Jwks;
                    work.fetches.push(next);
                    work.counters.push((Counter::JwksFetches, 1));
                    self.in_flight.set(Some(now_ms));
                }
            }
            Ok(Fetched::Jwks(text, keys, refresh_ms)) => {
                self.store_keys(
                    fetch.provider,
                    text,
                    keys,
                    refresh_ms,
                    now_ms,
                    store,
                    &mut work,
                );
            }
            Err(reason) => {
                work.counters.push((Counter::JwksFetchFailures, 1));
                let cap = self.config.min_refresh_ms.max(1_000);
                let updated = self.update_control(store, |c| {
                    c.failures = c.failures.saturating_add(1);
                    let backoff = 1_000u64
                        .checked_shl(c.failures.saturating_sub(1).min(20))
                        .unwrap_or(cap)
                        .min(cap);
                    c.next_attempt_ms = now_ms.saturating_add(backoff);
                    c.lease_until_ms = 0;
                    c.refetch_wanted = false;
                    if fetch.kind == FetchKind::Jwks && self.config.discovery_path.is_some() {
                        c.jwks_path = None; // rediscover: the JWKS may have moved
                    }
                    true
                });
                work.log.push(format!(
                    "jwks: fetching {:?} {} for provider #{} failed ({reason}); {}",
                    fetch.kind,
                    fetch.path,
                    fetch.provider,
                    match updated {
                        Some(c) => format!("failure {} in a row", c.failures),
                        None => "shared data unavailable".to_string(),
                    }
                ));
            }
        }
        work
    }

    #[allow(clippy::too_many_arguments)]
    fn store_keys(
        &self,
        provider: usize,
        text: String,
        keys: Vec<KeyEntry>,
        refresh_ms: u64,
        now_ms: u64,
        store: &dyn SharedData,
        work: &mut KeyWork,
    ) {
        let expires_at_ms = now_ms.saturating_add(refresh_ms);
        // The stored document decides whether this is a new generation.
        let previous = store
            .get(&self.keys_key())
            .ok()
            .flatten()
            .and_then(|(bytes, _)| serde_json::from_slice::<StoredKeys>(&bytes).ok());
        let (generation, changed) = match &previous {
            Some(p) if p.jwks == text => (p.generation, false),
            Some(p) => (p.generation.saturating_add(1), true),
            None => (1, true),
        };
        let stored = StoredKeys {
            generation,
            fetched_at_ms: now_ms,
            expires_at_ms,
            jwks: text,
        };
        let Ok(bytes) = serde_json::to_vec(&stored) else {
            return;
        };
        if store.set(&self.keys_key(), &bytes, None).is_err() {
            work.counters.push((Counter::JwksFetchFailures, 1));
            work.log
                .push("jwks: storing the key set in shared data failed".to_string());
            return;
        }
        self.update_control(store, |c| {
            c.generation = generation;
            c.fetched_at_ms = now_ms;
            c.expires_at_ms = expires_at_ms;
            c.lease_until_ms = 0;
            c.failures = 0;
            c.next_attempt_ms = 0;
            c.refetch_wanted = false;
            true
        });
        *self.loaded.borrow_mut() = Some(Loaded {
            generation,
            keys: Rc::new(keys),
            expires_at_ms,
        });
        if changed {
            work.counters.push((Counter::JwksUpdates, 1));
            work.log.push(format!(
                "jwks: provider #{provider} stored key set generation {generation} (refresh in {} s)",
                refresh_ms / 1000
            ));
        }
    }

    /// The refresh interval a JWKS response asks for, within the provider's bounds.
    fn refresh_after(&self, headers: &[(String, String)]) -> u64 {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let asked = header("cache-control").and_then(|cc| {
            let directives: Vec<String> = cc
                .split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .collect();
            if directives
                .iter()
                .any(|d| d == "no-cache" || d == "no-store")
            {
                return Some(0);
            }
            directives.iter().find_map(|d| {
                d.strip_prefix("max-age=")
                    .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
            })
        });
        let age = header("age")
            .and_then(|a| a.trim().parse::<u64>().ok())
            .unwrap_or(0);
        match asked {
            Some(seconds) => seconds
                .saturating_sub(age)
                .saturating_mul(1000)
                .clamp(self.config.min_refresh_ms, self.config.max_refresh_ms),
            None => self.config.refresh_ms,
        }
    }
}

/// True (and records `now_ms`) when the last time recorded in `last` is at least
/// `REQUEST_SYNC_INTERVAL_MS` ago.
fn throttle(last: &Cell<Option<u64>>, now_ms: u64) -> bool {
    let allowed = last
        .get()
        .is_none_or(|t| now_ms >= t.saturating_add(REQUEST_SYNC_INTERVAL_MS) || now_ms < t);
    if allowed {
        last.set(Some(now_ms));
    }
    allowed
}

enum Fetched {
    Discovery((String, Option<String>)),
    Jwks(String, Vec<KeyEntry>, u64),
}

/// `jwks_uri` from an OpenID discovery document whose `issuer` matches: the path (and
/// query) to fetch through the cluster, and the URI's host as the authority.
fn parse_discovery(body: &[u8], issuer: &str) -> Result<(String, Option<String>), String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("discovery is not JSON: {e}"))?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err("discovery names another issuer".to_string());
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("discovery has no jwks_uri")?;
    let (authority, path) = split_url(uri).ok_or("jwks_uri is not an http(s) URL")?;
    Ok((path, Some(authority)))
}

/// `https://host[:port]/path?q` → (`host[:port]`, `/path?q`).
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let rest = rest.split('#').next()?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let valid = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        && path.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| (authority.to_string(), path))
}

/// Compiles a fetched JWKS leniently: keys Tollgate cannot use (other curves, encryption
/// keys, malformed entries) are skipped, as identity providers publish such keys too.
/// At least one key must fit the provider's algorithms.
pub fn usable_keys(text: &str, algorithms: &[Algorithm]) -> Result<Vec<KeyEntry>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no `keys` array")?;
    let mut keys = Vec::new();
    for jwk in list.iter().take(256) {
        if let Ok(mut compiled) = compile_jwks(&serde_json::json!({ "keys": [jwk] }), algorithms) {
            keys.append(&mut compiled);
        }
    }
    if keys.is_empty() {
        return Err("no key in the JWKS fits the provider's algorithms".to_string());
    }
    Ok(keys)
}

/// Every remote provider of a policy, with the VM's identity as a lease owner.
#[derive(Debug, Default)]
pub struct KeySources {
    /// (provider index, issuer, keys).
    pub remotes: Vec<(usize, String, Rc<RemoteKeys>)>,
    owner: Cell<u64>,
}

impl KeySources {
    pub fn new(remotes: Vec<(usize, String, Rc<RemoteKeys>)>) -> Self {
        Self {
            remotes,
            owner: Cell::new(0),
        }
    }

    /// This VM's lease-owner id (random per VM).
    pub fn set_owner(&self, owner: u64) {
        self.owner.set(owner.max(1));
    }

    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    fn tick_ms(&self) -> Option<u64> {
        if self.remotes.is_empty() {
            None
        } else if self.remotes.iter().all(|(_, _, r)| r.has_keys()) {
            Some(TICK_STEADY_MS)
        } else {
            Some(TICK_WAITING_MS)
        }
    }

    /// Timer work: new sets from other VMs, and fetches that are due and leased to us.
    pub fn tick(&self, now_ms: u64, store: &dyn SharedData) -> KeyWork {
        let mut work = KeyWork::default();
        for (index, _, remote) in &self.remotes {
            let w = remote.tick(*index, self.owner.get(), now_ms, store);
            work.fetches.extend(w.fetches);
            work.counters.extend(w.counters);
            work.log.extend(w.log);
        }
        work.tick_ms = self.tick_ms();
        work
    }

    /// A fetch ended; may return a follow-up fetch (discovery → JWKS).
    pub fn fetch_done(
        &self,
        fetch: &KeyFetch,
        outcome: FetchOutcome,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> KeyWork {
        let mut work = match self.remotes.iter().find(|(i, _, _)| *i == fetch.provider) {
            Some((_, issuer, remote)) => {
                remote.fetch_done(fetch, outcome, issuer, self.owner.get(), now_ms, store)
            }
            None => KeyWork::default(),
        };
        work.tick_ms = self.tick_ms();
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("https://idp.example/.well-known/jwks.json"),
            Some(("idp.example".into(), "/.well-known/jwks.json".into()))
        );
        assert_eq!(
            split_url("http://127.0.0.1:8080?x=1"),
            Some(("127.0.0.1:8080".into(), "/?x=1".into()))
        );
        assert_eq!(
            split_url("https://idp.example"),
            Some(("idp.example".into(), "/".into()))
        );
        assert_eq!(split_url("ftp://idp.example/x"), None);
        assert_eq!(split_url("https://user@idp.example/x"), None);
        assert_eq!(split_url("https:///x"), None);
    }
}
