//! What the engine decides for a request, as plain values the adapter applies.

use crate::metrics::Counter;
use crate::routing::RouteId;

/// The outcome of the request-header phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the request on to the route's origin, after these header changes.
    Forward(ForwardPlan),
    /// Answer the client directly.
    Reply(LocalReply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardPlan {
    pub route: RouteId,
    pub request_id: String,
    /// Header names to remove from the request (client-sent identity headers).
    pub remove_headers: Vec<String>,
    /// Headers to set (replace) on the request.
    pub set_headers: Vec<(&'static str, String)>,
    /// Counters to add to.
    pub counters: Vec<(Counter, u64)>,
}

/// A response generated at the edge: a status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub request_id: String,
    pub counters: Vec<(Counter, u64)>,
}

impl LocalReply {
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
                ("content-type", "application/json".to_string()),
                (crate::headers::REQUEST_ID, request_id.to_string()),
            ],
            body: body.to_string().into_bytes(),
            request_id: request_id.to_string(),
            counters: Vec::new(),
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

    pub fn request_id(&self) -> &str {
        match self {
            Decision::Forward(plan) => &plan.request_id,
            Decision::Reply(reply) => &reply.request_id,
        }
    }
}
