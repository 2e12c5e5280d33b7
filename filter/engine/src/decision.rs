//! What the engine decides for a request, as plain values the adapter applies.

use crate::auth::Identity;
use crate::metrics::Counter;
use crate::routing::RouteId;

/// The outcome of the request-header phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send the request on to the route's origin, after these changes.
    Forward(Box<ForwardPlan>),
    /// Answer the client directly.
    Reply(LocalReply),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardPlan {
    pub route: RouteId,
    pub request_id: String,
    /// Header names to remove from the request (client-sent identity headers, credentials).
    pub remove_headers: Vec<String>,
    /// Headers to set (replace) on the request.
    pub set_headers: Vec<(String, String)>,
    /// A new `:path`, when a credential was removed from the query string.
    pub set_path: Option<String>,
    /// Who the caller is, when the route authenticates.
    pub identity: Option<std::rc::Rc<Identity>>,
    /// Counters to add to.
    pub counters: Vec<(Counter, u64)>,
    /// When set, the request body must be seen (whole) before the request goes on:
    /// hold the headers, buffer the body, then call `Engine::on_request_body`.
    pub body_check: Option<BodyCheck>,
    /// Headers to add to the response (e.g. `RateLimit`), local replies excluded.
    pub response_headers: Vec<(String, String)>,
    /// 0–100, from velocity rules (and later screens); goes into the usage record.
    pub risk_score: u32,
    /// WAF matches that did not block (for the log line); `None` when nothing matched.
    pub waf: Option<Box<crate::waf::WafVerdict>>,
    /// Personal data to mask in the response body (`Engine::mask_response_body`).
    pub pii: Option<crate::pii::PiiKinds>,
    /// The usage record to finish when the exchange ends (`Engine::finish_usage`); only
    /// with a `sidecar` and a known tenant.
    pub usage: Option<Box<crate::fleet::UsageEvent>>,
    /// A cached route's request that went to the origin: its response may be stored
    /// (`Engine::cache_response_headers`, then `Engine::cache_store`).
    pub cache: Option<Box<crate::cache::flow::CachePending>>,
}

/// What the body phase has to check, carried from the headers phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCheck {
    pub route: RouteId,
    /// Largest body the check reads; beyond it the request gets 413, unless
    /// `inspect_prefix`.
    pub max_body_bytes: usize,
    /// A longer body is not refused: its first `max_body_bytes` are checked and the whole
    /// body is forwarded (WAF `over_limit: inspect_prefix`, never with a webhook).
    pub inspect_prefix: bool,
    pub webhook: Option<crate::webhook::PendingSignature>,
    /// The WAF's header-phase verdict, completed by the route's body rules.
    pub waf: Option<crate::waf::WafPending>,
    /// An `Idempotency-Key` to claim once the body is known
    /// (`Engine::idempotency_on_body`).
    pub idempotency: Option<Box<crate::idempotency::IdemPending>>,
    /// Fraud rules to run once the body is known (`Engine::fraud_on_body`).
    pub fraud: Option<Box<crate::fraud::FraudPending>>,
}

/// The outcome of the request-body phase.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyDecision {
    /// Let the request go on, after setting these request headers.
    Forward {
        set_headers: Vec<(String, String)>,
        counters: Vec<(Counter, u64)>,
        /// WAF matches that did not block (for the log line).
        waf: Option<Box<crate::waf::WafVerdict>>,
    },
    /// Answer the client directly.
    Reply(LocalReply),
}

/// A response generated at the edge: a status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub request_id: String,
    pub counters: Vec<(Counter, u64)>,
    /// Why, for logs and metrics; never sent to the client.
    pub detail: Option<&'static str>,
    /// The WAF's verdict when it blocked, for the log line; never sent to the client.
    pub waf: Option<Box<crate::waf::WafVerdict>>,
    /// The usage record, status filled in (`Engine::finish_usage` once the reply is sent).
    pub usage: Option<Box<crate::fleet::UsageEvent>>,
}

impl LocalReply {
    /// A reply with these parts and nothing else (no counters, no log detail).
    pub fn new(
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        request_id: &str,
    ) -> Self {
        LocalReply {
            status,
            headers,
            body,
            request_id: request_id.to_string(),
            counters: Vec::new(),
            detail: None,
            waf: None,
            usage: None,
        }
    }

    /// A JSON error reply: `{"error": code, "message": ..., "request_id": ...}`.
    pub fn json_error(status: u16, code: &str, message: &str, request_id: &str) -> Self {
        let body = serde_json::json!({
            "error": code,
            "message": message,
            "request_id": request_id,
        });
        LocalReply {
            status,
            headers: vec![
                ("content-type".to_string(), "application/json".to_string()),
                (
                    crate::headers::REQUEST_ID.to_string(),
                    request_id.to_string(),
                ),
            ],
            body: body.to_string().into_bytes(),
            request_id: request_id.to_string(),
            counters: Vec::new(),
            detail: None,
            waf: None,
            usage: None,
        }
    }
}

impl Decision {
    pub fn counters(&self) -> &[(Counter, u64)] {
        match self {
            Decision::Forward(plan) => &plan.counters,
            Decision::Reply(reply) => &reply.counters,
        }
    }

    pub fn counters_mut(&mut self) -> &mut Vec<(Counter, u64)> {
        match self {
            Decision::Forward(plan) => &mut plan.counters,
            Decision::Reply(reply) => &mut reply.counters,
        }
    }

    pub fn request_id(&self) -> &str {
        match self {
            Decision::Forward(plan) => &plan.request_id,
            Decision::Reply(reply) => &reply.request_id,
        }
    }
}
