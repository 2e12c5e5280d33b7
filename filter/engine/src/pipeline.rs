//! The request path, phase by phase. Each phase method says when the adapter calls it
//! and what it returns; the adapter only applies the result.

use crate::decision::{Decision, ForwardPlan, LocalReply};
use crate::headers::{CLUSTER, IDENTITY_PREFIX, REQUEST_ID, ROUTE};
use crate::metrics::Counter;
use crate::policy::Policy;
use crate::request::RequestHead;
use crate::request_id::{RequestIdGenerator, is_reusable};

/// One engine per VM (per Envoy worker): the compiled policy plus per-VM state.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    request_ids: RequestIdGenerator,
}

impl Engine {
    /// `entropy` seeds request-id generation; the adapter takes it from the host once.
    pub fn new(policy: Policy, entropy: u64) -> Self {
        Self {
            policy,
            request_ids: RequestIdGenerator::new(entropy),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Request-header phase: runs once per request, before anything is forwarded.
    ///
    /// Removes every client-sent `x-tollgate-*` header first (so identity headers are
    /// unspoofable and routing cannot be chosen by the client), picks the request id and
    /// the route, and returns either the forwarding plan or the reply to send.
    pub fn on_request_headers(&self, mut request: RequestHead) -> Decision {
        let spoofed = request.remove_headers_with_prefix(IDENTITY_PREFIX);
        let mut counters = vec![(Counter::Requests, 1)];
        if !spoofed.is_empty() {
            counters.push((Counter::SpoofedHeadersRemoved, spoofed.len() as u64));
        }
        let request_id = self.request_id_for(&request);

        match self.policy.routes.find(&request) {
            Some((route_id, route)) => {
                counters.push((Counter::Forwarded, 1));
                Decision::Forward(ForwardPlan {
                    route: route_id,
                    set_headers: vec![
                        (CLUSTER, route.cluster.clone()),
                        (ROUTE, route.name.clone()),
                        (REQUEST_ID, request_id.clone()),
                    ],
                    request_id,
                    remove_headers: spoofed,
                    counters,
                })
            }
            None => {
                counters.push((Counter::NoRoute, 1));
                let message = format!(
                    "no route matches {} {}",
                    request.method(),
                    request.path_without_query()
                );
                let mut reply = LocalReply::json_error(404, "no_route", &message, &request_id);
                reply.counters = counters;
                Decision::Reply(reply)
            }
        }
    }

    /// Response-header phase: headers to set on every response, local replies included.
    pub fn response_headers(&self, request_id: &str) -> [(&'static str, String); 1] {
        [(REQUEST_ID, request_id.to_string())]
    }

    fn request_id_for(&self, request: &RequestHead) -> String {
        if let Some(name) = &self.policy.request_id_header
            && let Some(value) = request.header(name)
            && is_reusable(value)
            && let Ok(text) = std::str::from_utf8(value)
        {
            return text.to_string();
        }
        self.request_ids.generate()
    }
}
