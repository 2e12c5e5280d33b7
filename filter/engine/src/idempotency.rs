//! `Idempotency-Key` (IETF httpapi idempotency-key draft) on configured routes: a POST
//! or PATCH carrying the header is scoped by tenant and key and fingerprinted by a hash
//! of method, path and body. The first completed response is kept (`ttl`, 24 h by
//! default) and replayed to retries, marked `idempotent-replayed: true`; a retry while
//! the first is still in flight gets 409; the same key with another fingerprint gets
//! 422.
//!
//! Records live in the node's shared data. Shared data has no atomic create, so a claim
//! is written and read back: two workers racing within the same microseconds on a brand
//! new key could both proceed (documented in docs/policy.md).

use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::Identity;
use crate::decision::LocalReply;
use crate::policy::compile::Errors;
use crate::request::RequestHead;
use crate::shared::SharedData;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const RECORD_PREFIX: &str = "tg:idem:";
const MAX_KEY_LEN: usize = 255;
/// How long an in-flight claim holds before a retry may take over (the first request
/// died without an answer).
const IN_FLIGHT_MS: u64 = 60_000;

/// A route's `idempotency` section.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyDocument {
    /// How long a completed response is replayed (default `24h`).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Methods the header applies to (default POST and PATCH).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Largest request body fingerprinted (default 65536); a longer one gets 413.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Largest response kept for replay (default 1048576); a longer one is not kept and
    /// its key is released.
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteIdempotency {
    pub ttl_ms: u64,
    pub methods: Vec<String>,
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
}

pub(crate) fn compile(
    doc: &IdempotencyDocument,
    at: &str,
    errors: &mut Errors,
) -> RouteIdempotency {
    let ttl_ms = match doc.ttl.as_deref() {
        None => 86_400_000,
        Some(text) => match crate::limits::parse_period(text) {
            Some(ms) => ms.get(),
            None => {
                errors.push(
                    format!("{at}.ttl"),
                    format!("{text:?} is not a duration like 1h or 24h"),
                );
                86_400_000
            }
        },
    };
    let methods = doc
        .methods
        .clone()
        .unwrap_or_else(|| vec!["POST".to_string(), "PATCH".to_string()]);
    for (i, m) in methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.push(
                format!("{at}.methods[{i}]"),
                format!("{m:?} is not an upper-case HTTP method"),
            );
        }
    }
    let bound = |value: Option<u64>, default: u64, field: &str, errors: &mut Errors| match value {
        Some(0) => {
            errors.push(format!("{at}.{field}"), "must be > 0");
            default as usize
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => default as usize,
    };
    RouteIdempotency {
        ttl_ms,
        methods,
        max_body_bytes: bound(doc.max_body_bytes, 65_536, "max_body_bytes", errors),
        max_response_bytes: bound(
            doc.max_response_bytes,
            1_048_576,
            "max_response_bytes",
            errors,
        ),
    }
}

/// A request that carries a key, until its body is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemPending {
    record_key: String,
    method: String,
    path: String,
    ttl_ms: u64,
    pub max_body_bytes: usize,
    max_response_bytes: usize,
}

/// A request that holds its key: its response is kept for retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemClaim {
    record_key: String,
    fingerprint: [u8; 32],
    nonce: u64,
    ttl_ms: u64,
    pub max_response_bytes: usize,
}

/// Header phase: `Ok(None)` when the route or method does not take keys or the request
/// has none; `Err` is the 400 for a malformed key.
pub fn on_headers(
    route: &RouteIdempotency,
    request: &RequestHead,
    identity: Option<&Identity>,
    request_id: &str,
) -> Result<Option<IdemPending>, Box<LocalReply>> {
    if !route.methods.iter().any(|m| m == request.method()) {
        return Ok(None);
    }
    let Some(key) = request.header(HEADER) else {
        return Ok(None);
    };
    // Structured-field string per the draft: quoted; bare tokens are accepted too.
    let key = key
        .strip_prefix(b"\"")
        .and_then(|k| k.strip_suffix(b"\""))
        .unwrap_or(key);
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(Box::new(LocalReply::json_error(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            request_id,
        )));
    }
    let tenant = identity.and_then(|i| i.tenant.as_deref()).unwrap_or("-");
    let mut h = Sha256::new();
    for part in [tenant.as_bytes(), key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(IdemPending {
        record_key: format!("{RECORD_PREFIX}{digest}"),
        method: request.method().to_string(),
        path: request.path().to_string(),
        ttl_ms: route.ttl_ms,
        max_body_bytes: route.max_body_bytes,
        max_response_bytes: route.max_response_bytes,
    }))
}

/// What the body phase decided.
#[derive(Debug)]
pub enum IdemStep {
    /// First with this key (or the first died): forward, then [`complete`].
    Proceed(Box<IdemClaim>),
    Reply(LocalReply),
}

enum Record {
    InFlight {
        until_ms: u64,
        fingerprint: [u8; 32],
        nonce: u64,
    },
    Done {
        until_ms: u64,
        fingerprint: [u8; 32],
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = input.split_at_checked(n)?;
    *input = rest;
    Some(head)
}

fn take_u64(input: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(input, 8)?.try_into().ok()?))
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
    take(input, n)
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::InFlight {
                until_ms,
                fingerprint,
                nonce,
            } => {
                out.push(1);
                out.extend_from_slice(&until_ms.to_le_bytes());
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            Record::Done {
                until_ms,
                fingerprint,
                status,
                headers,
                body,
            } => {
                out.push(2);
                out.extend_from_slice(&until_ms.to_le_bytes());
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(&u64::from(*status).to_le_bytes());
                out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
                for (n, v) in headers {
                    put_bytes(&mut out, n.as_bytes());
                    put_bytes(&mut out, v);
                }
                put_bytes(&mut out, body);
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (kind, mut rest) = bytes.split_first()?;
        let until_ms = take_u64(&mut rest)?;
        let fingerprint: [u8; 32] = take(&mut rest, 32)?.try_into().ok()?;
        match kind {
            1 => Some(Record::InFlight {
                until_ms,
                fingerprint,
                nonce: take_u64(&mut rest)?,
            }),
            2 => {
                let status = u16::try_from(take_u64(&mut rest)?).ok()?;
                let n = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
                let mut headers = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let name = String::from_utf8(take_bytes(&mut rest)?.to_vec()).ok()?;
                    headers.push((name, take_bytes(&mut rest)?.to_vec()));
                }
                let body = take_bytes(&mut rest)?.to_vec();
                Some(Record::Done {
                    until_ms,
                    fingerprint,
                    status,
                    headers,
                    body,
                })
            }
            _ => None,
        }
    }
}

fn fingerprint(pending: &IdemPending, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [pending.method.as_bytes(), pending.path.as_bytes(), body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn conflict(status: u16, code: &str, message: &str, request_id: &str) -> IdemStep {
    IdemStep::Reply(LocalReply::json_error(status, code, message, request_id))
}

fn reused(request_id: &str) -> IdemStep {
    conflict(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different request",
        request_id,
    )
}

/// Body phase: claims the key, or answers from / about the record already there.
pub fn on_body(
    pending: &IdemPending,
    body: &[u8],
    now_ms: u64,
    nonce: u64,
    store: &dyn SharedData,
    request_id: &str,
) -> IdemStep {
    let fp = fingerprint(pending, body);
    let existing = match store.get(&pending.record_key) {
        Ok(found) => found.and_then(|(bytes, _)| Record::decode(&bytes)),
        Err(_) => {
            // Without shared data the key cannot be honoured: refuse rather than risk a
            // second charge.
            return conflict(
                503,
                "idempotency_unavailable",
                "the request cannot be checked for duplicates right now; retry later",
                request_id,
            );
        }
    };
    match existing {
        Some(Record::Done {
            until_ms,
            fingerprint,
            status,
            headers,
            body,
        }) if until_ms > now_ms => {
            if fingerprint != fp {
                return reused(request_id);
            }
            let mut reply_headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            reply_headers.push((REPLAYED_HEADER.to_string(), "true".to_string()));
            reply_headers.push((
                crate::headers::REQUEST_ID.to_string(),
                request_id.to_string(),
            ));
            return IdemStep::Reply(LocalReply::new(status, reply_headers, body, request_id));
        }
        Some(Record::InFlight {
            until_ms,
            fingerprint,
            ..
        }) if until_ms > now_ms => {
            return if fingerprint == fp {
                conflict(
                    409,
                    "request_in_progress",
                    "a request with this Idempotency-Key is still being processed",
                    request_id,
                )
            } else {
                reused(request_id)
            };
        }
        _ => {}
    }
    let claim = Record::InFlight {
        until_ms: now_ms.saturating_add(IN_FLIGHT_MS),
        fingerprint: fp,
        nonce,
    };
    let ours = store
        .set(&pending.record_key, &claim.encode(), None)
        .is_ok()
        && matches!(
            store.get(&pending.record_key),
            Ok(Some((bytes, _))) if matches!(Record::decode(&bytes), Some(Record::InFlight { nonce: n, .. }) if n == nonce)
        );
    if !ours {
        return conflict(
            409,
            "request_in_progress",
            "a request with this Idempotency-Key is still being processed",
            request_id,
        );
    }
    IdemStep::Proceed(Box::new(IdemClaim {
        record_key: pending.record_key.clone(),
        fingerprint: fp,
        nonce,
        ttl_ms: pending.ttl_ms,
        max_response_bytes: pending.max_response_bytes,
    }))
}

/// The response to keep for retries (a 5xx is not kept: the key is released so the
/// client may retry).
pub fn complete(
    claim: &IdemClaim,
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    now_ms: u64,
    store: &dyn SharedData,
) -> bool {
    if status >= 500 || body.len() > claim.max_response_bytes {
        release(claim, store);
        return false;
    }
    let kept = headers
        .iter()
        .filter(|(n, _)| {
            !n.starts_with(':')
                && !matches!(
                    n.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "keep-alive"
                )
                && !n.starts_with("x-envoy-")
                && !n.starts_with(crate::headers::IDENTITY_PREFIX)
        })
        .cloned()
        .collect();
    let record = Record::Done {
        until_ms: now_ms.saturating_add(claim.ttl_ms),
        fingerprint: claim.fingerprint,
        status,
        headers: kept,
        body: body.to_vec(),
    };
    store.set(&claim.record_key, &record.encode(), None).is_ok()
}

/// Gives the key up (no usable response): the next retry is processed afresh.
pub fn release(claim: &IdemClaim, store: &dyn SharedData) {
    if let Ok(Some((bytes, cas))) = store.get(&claim.record_key)
        && matches!(Record::decode(&bytes), Some(Record::InFlight { nonce, .. }) if nonce == claim.nonce)
    {
        let _ = store.set(&claim.record_key, b"", Some(cas));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemorySharedData;

    fn pending() -> IdemPending {
        IdemPending {
            record_key: "tg:idem:k".into(),
            method: "POST".into(),
            path: "/pay".into(),
            ttl_ms: 1_000,
            max_body_bytes: 100,
            max_response_bytes: 100,
        }
    }

    #[test]
    fn a_retry_in_flight_gets_409_and_a_dead_claim_expires() {
        let store = MemorySharedData::default();
        let IdemStep::Proceed(claim) = on_body(&pending(), b"{}", 0, 1, &store, "r1") else {
            panic!("the first request claims the key");
        };
        let IdemStep::Reply(reply) = on_body(&pending(), b"{}", 10, 2, &store, "r2") else {
            panic!("a retry in flight is refused");
        };
        assert_eq!(reply.status, 409);
        // The first died without an answer: after the in-flight hold, a retry proceeds.
        assert!(matches!(
            on_body(&pending(), b"{}", IN_FLIGHT_MS + 1, 3, &store, "r3"),
            IdemStep::Proceed(_)
        ));
        // The dead claim's late release does not free the new holder's key.
        release(&claim, &store);
        assert!(matches!(
            on_body(&pending(), b"{}", IN_FLIGHT_MS + 2, 4, &store, "r4"),
            IdemStep::Reply(LocalReply { status: 409, .. })
        ));
    }

    #[test]
    fn a_kept_response_expires_after_its_ttl() {
        let store = MemorySharedData::default();
        let IdemStep::Proceed(claim) = on_body(&pending(), b"{}", 0, 1, &store, "r1") else {
            panic!("claims");
        };
        assert!(complete(&claim, 201, &[], b"ok", 0, &store));
        assert!(matches!(
            on_body(&pending(), b"{}", 500, 2, &store, "r2"),
            IdemStep::Reply(LocalReply { status: 201, .. })
        ));
        assert!(matches!(
            on_body(&pending(), b"{}", 1_001, 3, &store, "r3"),
            IdemStep::Proceed(_)
        ));
    }

    #[test]
    fn records_round_trip_and_garbage_reads_as_absent() {
        let done = Record::Done {
            until_ms: 5,
            fingerprint: [7; 32],
            status: 201,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: b"{}".to_vec(),
        };
        assert!(matches!(
            Record::decode(&done.encode()),
            Some(Record::Done { status: 201, .. })
        ));
        assert!(Record::decode(b"").is_none());
        assert!(Record::decode(&[2, 0, 1]).is_none());
    }
}
