//! Rate limits: named limits keyed by request attributes, plans per tenant, GCRA buckets
//! kept in shared data so every worker of a node draws from the same bucket.
//!
//! Storage and its bound: a limit's buckets live in `max_keys / 4` shared-data slots
//! (`tg:rl:<limit>:<quota-hash>:<slot>`), each holding up to 4 buckets as
//! `(64-bit key fingerprint, TAT)`. A new key takes an empty or idle (full) bucket in
//! its slot; when all four are busy it evicts the one nearest to full, whose caller then
//! starts again with a full bucket. Memory is therefore fixed per limit however many
//! distinct client IPs arrive; idle buckets are reused, which is how they expire.

mod compile;
pub(crate) use compile::parse_period;
pub mod gcra;
pub mod velocity;

use std::hash::{Hash, Hasher};

pub(crate) use compile::{compile_rate_limits, compile_route_limits};
use gcra::{Quota, Verdict};

use crate::auth::Identity;
use crate::request::RequestHead;
use crate::shared::{SetError, SharedData, StoreUnavailable};

pub(crate) const WAYS: usize = 4;
const ENTRY_BYTES: usize = 24;
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Tenant,
    User,
    ClientIp,
    KeyId,
    Route,
    Header(String),
    Claim(String),
}

#[derive(Debug, Clone)]
pub enum RateSource {
    Fixed(Quota),
    Plan,
}

#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub key: Vec<KeyPart>,
    pub rate: RateSource,
    pub shadow: bool,
    /// Held across the fleet through the sidecar (see `crate::fleet::admit`).
    pub global: bool,
    pub slots: u32,
}

/// How global limits are enforced on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetSettings {
    pub limits: crate::fleet::FleetLimits,
    pub stale_after_ms: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    pub limits: Vec<Limit>,
    pub plans: Vec<(String, Quota)>,
    pub default_plan: Option<String>,
    /// tenant → (plan override, shadow)
    pub tenant_overrides: Vec<(String, Option<String>, bool)>,
    pub headers_on_allowed: bool,
    pub legacy_headers: bool,
    pub xff_trusted_hops: u32,
    /// Spike detectors, applied to every request that has their key.
    pub velocity: Vec<velocity::VelocityRule>,
    /// Set when the policy has a `sidecar`: global limits then also count other nodes.
    pub fleet: Option<FleetSettings>,
}

/// A limit a route applies, with its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    pub limit: usize,
    pub cost: u64,
}

/// How one limit stood after this request. Names borrow from the policy: the allowed
/// path allocates nothing per limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus<'p> {
    pub name: &'p str,
    pub quota: Quota,
    pub remaining: u64,
    pub reset_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOutcome<'p> {
    pub statuses: Vec<LimitStatus<'p>>,
    /// The enforcing limit that refused, with the wait.
    pub denied: Option<(&'p str, u64)>,
    /// Shadow limits that would have refused.
    pub shadow_denied: Vec<&'p str>,
    /// Limits skipped because shared data failed (fail open).
    pub store_errors: u64,
    pub evictions: u64,
}

/// What the limiter needs to know about a request.
pub struct LimitInput<'a> {
    pub request: &'a RequestHead,
    pub identity: Option<&'a Identity>,
    pub route_name: &'a str,
    pub client_ip: Option<&'a str>,
}

impl RateLimits {
    /// The plan's quota: the sidecar's override for the tenant (when it names a plan of
    /// the policy), else the policy's tenant override, the identity's plan, the default.
    fn plan_quota(
        &self,
        identity: Option<&Identity>,
        live: Option<&crate::fleet::TenantOverride>,
    ) -> Option<Quota> {
        let live_plan = live
            .map(|o| o.plan.as_str())
            .filter(|p| self.plans.iter().any(|(n, _)| n == p));
        if let Some(plan) = live_plan {
            return self.plans.iter().find(|(n, _)| n == plan).map(|(_, q)| *q);
        }
        let tenant = identity.and_then(|i| i.tenant.as_deref());
        let override_plan = tenant.and_then(|t| {
            self.tenant_overrides
                .iter()
                .find(|(name, _, _)| name == t)
                .and_then(|(_, plan, _)| plan.clone())
        });
        let plan = override_plan
            .or_else(|| identity.and_then(|i| i.plan.clone()))
            .or_else(|| self.default_plan.clone())?;
        self.plans.iter().find(|(n, _)| *n == plan).map(|(_, q)| *q)
    }

    fn tenant_in_shadow(&self, identity: Option<&Identity>) -> bool {
        let Some(tenant) = identity.and_then(|i| i.tenant.as_deref()) else {
            return false;
        };
        self.tenant_overrides
            .iter()
            .any(|(name, _, shadow)| name == tenant && *shadow)
    }

    /// Applies `route_limits` in order. An enforcing limit that refuses stops the walk
    /// (limits before it have already taken their tokens).
    pub fn check(
        &self,
        route_limits: &[RouteLimit],
        input: &LimitInput<'_>,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> LimitOutcome<'_> {
        let mut outcome = LimitOutcome::default();
        let tenant_shadow = self.tenant_in_shadow(input.identity);
        // The node's fleet view, read at most once per request; a shared-data failure
        // reads as `None`, which global limits count as a store error.
        let mut fleet_state: Option<Option<crate::fleet::FleetState>> = None;
        let mut fleet_state_once =
            || *fleet_state.get_or_insert_with(|| crate::fleet::fleet_state(store).ok());
        // Plan overrides set at the sidecar reach every node with the sync.
        let live = match (self.fleet, input.identity.and_then(|i| i.tenant.as_deref())) {
            (Some(_), Some(tenant))
                if fleet_state_once().is_some_and(|state| state.live_overrides > 0) =>
            {
                crate::fleet::tenant_override(store, tenant).ok().flatten()
            }
            _ => None,
        };
        for route_limit in route_limits {
            let Some(limit) = self.limits.get(route_limit.limit) else {
                continue;
            };
            let quota = match &limit.rate {
                RateSource::Fixed(q) => *q,
                RateSource::Plan => match self.plan_quota(input.identity, live.as_ref()) {
                    Some(q) => q,
                    None => continue,
                },
            };
            let quota = match live.as_ref().and_then(|o| o.limits.get(&limit.name)) {
                Some(rate) => quota.with_rate(*rate),
                None => quota,
            };
            let Some(fp) = key_fingerprint(&limit.key, input) else {
                continue;
            };
            let taken = take(limit, &quota, fp, route_limit.cost, now_ms, store);
            let taken = match (taken, self.fleet) {
                (
                    Ok((
                        Verdict::Allow {
                            remaining: local, ..
                        },
                        evicted,
                    )),
                    Some(fleet),
                ) if limit.global => {
                    // Report the tighter of the local bucket and the fleet window.
                    let nodes = fleet_state_once().map(|state| state.nodes);
                    self.admit_global(
                        limit,
                        &quota,
                        fp,
                        route_limit.cost,
                        now_ms,
                        store,
                        fleet,
                        nodes,
                    )
                    .map(|v| match v {
                        Verdict::Allow {
                            remaining,
                            reset_ms,
                            new_tat,
                        } => Verdict::Allow {
                            remaining: remaining.min(local),
                            reset_ms,
                            new_tat,
                        },
                        deny => deny,
                    })
                    .map(|v| (v, evicted))
                }
                (other, _) => other,
            };
            match taken {
                Err(StoreUnavailable) => outcome.store_errors += 1,
                Ok((verdict, evicted)) => {
                    outcome.evictions += u64::from(evicted);
                    match verdict {
                        Verdict::Allow {
                            remaining,
                            reset_ms,
                            ..
                        } => outcome.statuses.push(LimitStatus {
                            name: &limit.name,
                            quota,
                            remaining,
                            reset_ms,
                        }),
                        Verdict::Deny {
                            retry_after_ms,
                            reset_ms,
                        } => {
                            outcome.statuses.push(LimitStatus {
                                name: &limit.name,
                                quota,
                                remaining: 0,
                                reset_ms,
                            });
                            if limit.shadow || tenant_shadow {
                                outcome.shadow_denied.push(&limit.name);
                            } else {
                                outcome.denied = Some((&limit.name, retry_after_ms));
                                return outcome;
                            }
                        }
                    }
                }
            }
        }
        outcome
    }
}

impl RateLimits {
    /// The fleet-wide check of a global limit after the local bucket admitted: a fixed
    /// window of the quota's period holding `rate` across all nodes.
    #[allow(clippy::too_many_arguments)]
    fn admit_global(
        &self,
        limit: &Limit,
        quota: &Quota,
        fp: u64,
        cost: u64,
        now_ms: u64,
        store: &dyn SharedData,
        fleet: FleetSettings,
        nodes: Option<u64>,
    ) -> Result<Verdict, StoreUnavailable> {
        let nodes = nodes.ok_or(StoreUnavailable)?;
        let window_ms = quota.period_ms.get();
        let fleet_key = format!("{}:{fp:016x}", limit.name);
        let admission = crate::fleet::admit(
            store,
            &fleet.limits,
            &fleet_key,
            quota.rate.get(),
            window_ms,
            cost,
            now_ms,
            fleet.stale_after_ms,
            nodes,
        )
        .map_err(|_| StoreUnavailable)?;
        let reset_ms = window_ms - now_ms % window_ms;
        Ok(match admission {
            crate::fleet::Admission::Allow { remaining } => Verdict::Allow {
                remaining,
                reset_ms,
                new_tat: 0,
            },
            crate::fleet::Admission::Deny { retry_after_ms } => Verdict::Deny {
                retry_after_ms,
                reset_ms,
            },
        })
    }
}

/// The bucket identity, hashed straight from the request's parts (no key string is
/// built): each part's bytes then a separator byte that cannot appear in header values.
/// `None` when a part is missing. SipHash with fixed keys gives the same value in every
/// VM of this build, which is all that shares the table.
fn key_fingerprint(parts: &[KeyPart], input: &LimitInput<'_>) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        match part {
            KeyPart::Tenant => h.write(input.identity?.tenant.as_deref()?.as_bytes()),
            KeyPart::User => h.write(input.identity?.user.as_deref()?.as_bytes()),
            KeyPart::KeyId => h.write(input.identity?.key_id.as_deref()?.as_bytes()),
            KeyPart::ClientIp => h.write(input.client_ip?.as_bytes()),
            KeyPart::Route => h.write(input.route_name.as_bytes()),
            KeyPart::Header(name) => h.write(input.request.header(name)?),
            KeyPart::Claim(path) => {
                let claims = &input.identity?.claims;
                let value = crate::auth::token::claim(claims, path)
                    .and_then(crate::auth::token::claim_as_header_value)?;
                h.write(value.as_bytes());
            }
        }
        h.write_u8(0x1f);
    }
    Some(h.finish())
}

fn quota_tag(q: &Quota) -> u64 {
    // Buckets are in rate-scaled ticks: a changed quota must not reuse old state.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (q.rate.get(), q.period_ms.get(), q.burst.get()).hash(&mut h);
    h.finish()
}

/// One slot's buckets, on the stack: a decision allocates nothing for them.
#[derive(Default)]
struct Slot {
    entries: [(u64, u128); WAYS],
    len: usize,
}

impl Slot {
    fn decode(value: &[u8]) -> Self {
        let mut slot = Slot::default();
        for (c, entry) in value.chunks_exact(ENTRY_BYTES).zip(slot.entries.iter_mut()) {
            let (fp, tat) = c.split_at(8);
            let (Ok(fp), Ok(tat)) = (fp.try_into(), tat.try_into()) else {
                break;
            };
            *entry = (u64::from_le_bytes(fp), u128::from_le_bytes(tat));
            slot.len += 1;
        }
        slot
    }

    fn live(&mut self) -> &mut [(u64, u128)] {
        let len = self.len.min(WAYS);
        &mut self.entries[..len]
    }

    fn encode(&self, out: &mut [u8; WAYS * ENTRY_BYTES]) -> usize {
        let mut n = 0;
        for ((fp, tat), c) in self.entries[..self.len.min(WAYS)]
            .iter()
            .zip(out.chunks_exact_mut(ENTRY_BYTES))
        {
            let (a, b) = c.split_at_mut(8);
            a.copy_from_slice(&fp.to_le_bytes());
            b.copy_from_slice(&tat.to_le_bytes());
            n += ENTRY_BYTES;
        }
        n
    }
}

/// Read–decide–CAS-write with bounded retries. `Err` when shared data fails (the caller
/// fails open). Returns whether another key's bucket was evicted.
fn take(
    limit: &Limit,
    quota: &Quota,
    fp: u64,
    cost: u64,
    now_ms: u64,
    store: &dyn SharedData,
) -> Result<(Verdict, bool), StoreUnavailable> {
    use std::fmt::Write;
    let slot = fp % u64::from(limit.slots.max(1));
    let mut slot_key = String::with_capacity(limit.name.len() + 48);
    // Writing to a String cannot fail.
    let _ = write!(
        slot_key,
        "tg:rl:{}:{:016x}:{slot}",
        limit.name,
        quota_tag(quota)
    );
    let mut buf = [0u8; WAYS * ENTRY_BYTES];
    for _ in 0..CAS_ATTEMPTS {
        let (mut slot, cas) = match store.get(&slot_key)? {
            Some((value, cas)) => (Slot::decode(&value), Some(cas)),
            None => (Slot::default(), None),
        };
        let mut evicted = false;
        let index = match slot.live().iter().position(|(f, _)| *f == fp) {
            Some(i) => i,
            None => {
                if let Some(i) = slot
                    .live()
                    .iter()
                    .position(|(_, tat)| quota.is_idle(*tat, now_ms))
                {
                    i
                } else if slot.len < WAYS {
                    slot.len += 1;
                    slot.len - 1
                } else {
                    evicted = true;
                    slot.live()
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, tat))| *tat)
                        .map_or(0, |(i, _)| i)
                }
            }
        };
        let entries = slot.live();
        let Some(entry) = entries.get_mut(index) else {
            return Err(StoreUnavailable);
        };
        if entry.0 != fp {
            *entry = (fp, 0);
        }
        let verdict = quota.check(entry.1, now_ms, cost);
        let Verdict::Allow { new_tat, .. } = verdict else {
            return Ok((verdict, false));
        };
        entry.1 = new_tat;
        let n = slot.encode(&mut buf);
        match store.set(&slot_key, &buf[..n], cas) {
            Ok(()) => return Ok((verdict, evicted)),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(StoreUnavailable),
        }
    }
    Err(StoreUnavailable)
}

/// `RateLimit-Policy` / `RateLimit` (IETF httpapi draft) and, optionally, the legacy
/// `X-RateLimit-*` fields, for the most constrained limit.
pub fn headers(outcome: &LimitOutcome, legacy: bool) -> Vec<(String, String)> {
    let Some(tightest) = outcome.statuses.iter().min_by_key(|s| s.remaining) else {
        return Vec::new();
    };
    let window_s = |s: &LimitStatus| s.quota.period_ms.get().div_ceil(1000);
    let policy = outcome
        .statuses
        .iter()
        .map(|s| format!("\"{}\";q={};w={}", s.name, s.quota.rate, window_s(s)))
        .collect::<Vec<_>>()
        .join(", ");
    let reset_s = tightest.reset_ms.div_ceil(1000);
    let mut out = vec![
        ("ratelimit-policy".to_string(), policy),
        (
            "ratelimit".to_string(),
            format!("\"{}\";r={};t={reset_s}", tightest.name, tightest.remaining),
        ),
    ];
    if legacy {
        out.push((
            "x-ratelimit-limit".to_string(),
            tightest.quota.rate.to_string(),
        ));
        out.push((
            "x-ratelimit-remaining".to_string(),
            tightest.remaining.to_string(),
        ));
        out.push(("x-ratelimit-reset".to_string(), reset_s.to_string()));
    }
    out
}

/// The client IP: the peer address, or the entry `hops` from the right of
/// `x-forwarded-for` when that many trusted proxies stand in front.
pub fn client_ip(request: &RequestHead, peer: Option<&str>, hops: u32) -> Option<String> {
    if hops > 0 {
        let xff = std::str::from_utf8(request.header("x-forwarded-for")?).ok()?;
        let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
        let index = entries.len().checked_sub(hops as usize)?;
        return entries.get(index).map(|s| s.to_string());
    }
    let peer = peer?;
    // Strip the port from `ip:port` and `[v6]:port`.
    Some(match peer.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty() => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => peer.to_string(),
    })
}
