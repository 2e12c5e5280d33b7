//! The request path, phase by phase. Each phase method says when the adapter calls it
//! and what it returns; the adapter only applies the result.

use crate::auth::jwks_source::{FetchOutcome, KeyFetch, KeyWork, UnavailableAnswer};
use crate::auth::{AuthInput, AuthOutcome, AuthReason, Identity, Removal};
use crate::decision::{BodyCheck, Decision, ForwardPlan, LocalReply};
use crate::headers::{CLUSTER, IDENTITY_PREFIX, REQUEST_ID, ROUTE};
use crate::metrics::Counter;
use crate::policy::Policy;
use crate::request::RequestHead;
use crate::request_id::{RequestIdGenerator, is_reusable};
use crate::shared::SharedData;

/// One engine per VM (per Envoy worker): the compiled policy plus per-VM state.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    request_ids: RequestIdGenerator,
}

impl Engine {
    /// `entropy` seeds request-id generation; the adapter takes it from the host once.
    pub fn new(policy: Policy, entropy: u64) -> Self {
        // The VM's identity when it leases a key fetch in shared data.
        policy
            .auth
            .key_sources
            .set_owner(entropy.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15);
        Self {
            policy,
            request_ids: RequestIdGenerator::new(entropy),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Root-context timer: picks up key sets other VMs fetched and says which fetches to
    /// start now (at most one per provider per node). Also called once at configure time.
    pub fn key_tick(&self, now_ms: u64, store: &dyn SharedData) -> KeyWork {
        self.policy.auth.key_sources.tick(now_ms, store)
    }

    /// A fetch from `key_tick` (or an earlier answer) ended. May ask for a follow-up fetch
    /// (OIDC discovery → JWKS).
    pub fn key_fetch_done(
        &self,
        fetch: &KeyFetch,
        outcome: FetchOutcome,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> KeyWork {
        self.policy
            .auth
            .key_sources
            .fetch_done(fetch, outcome, now_ms, store)
    }

    /// Request-header phase: runs once per request, before anything is forwarded.
    /// `now_ms` is the host's clock (Unix ms).
    ///
    /// Removes every client-sent `x-tollgate-*` header first (so identity headers are
    /// unspoofable and routing cannot be chosen by the client), picks the request id and
    /// the route, authenticates and authorises, and returns either the forwarding plan
    /// or the reply to send.
    pub fn on_request_headers(
        &self,
        mut request: RequestHead,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Decision {
        let spoofed = request.remove_headers_with_prefix(IDENTITY_PREFIX);
        let mut counters = vec![(Counter::Requests, 1)];
        if !spoofed.is_empty() {
            counters.push((Counter::SpoofedHeadersRemoved, spoofed.len() as u64));
        }
        let request_id = self.request_id_for(&request);

        let Some((route_id, route)) = self.policy.routes.find(&request) else {
            counters.push((Counter::NoRoute, 1));
            let message = format!(
                "no route matches {} {}",
                request.method(),
                request.path_without_query()
            );
            let mut reply = LocalReply::json_error(404, "no_route", &message, &request_id);
            reply.counters = counters;
            return Decision::Reply(reply);
        };

        let mut plan = ForwardPlan {
            route: route_id,
            set_headers: vec![
                (CLUSTER.to_string(), route.cluster.clone()),
                (ROUTE.to_string(), route.name.clone()),
                (REQUEST_ID.to_string(), request_id.clone()),
            ],
            request_id,
            remove_headers: spoofed,
            set_path: None,
            identity: None,
            counters,
            body_check: None,
            response_headers: Vec::new(),
        };

        if let Some(route_auth) = &route.auth {
            let client = crate::limits::client_ip(
                &request,
                request.peer(),
                self.policy.rate_limits.xff_trusted_hops,
            );
            let input = AuthInput {
                now_ms,
                client: client.as_deref(),
                store,
            };
            let outcome =
                self.policy
                    .auth
                    .authenticate(route_auth, &request, &input, &mut plan.counters);
            match outcome {
                AuthOutcome::Anonymous => {}
                AuthOutcome::Unauthenticated(reason) => {
                    plan.counters.push((Counter::Unauthenticated, 1));
                    return Decision::Reply(unauthorized(reason, plan));
                }
                AuthOutcome::KeysUnavailable(answer) => {
                    if answer.status == 401 {
                        plan.counters.push((Counter::Unauthenticated, 1));
                        return Decision::Reply(unauthorized(AuthReason::KeysUnavailable, plan));
                    }
                    return Decision::Reply(keys_unavailable(answer, plan));
                }
                AuthOutcome::Authenticated(identity, removals) => {
                    if let Err(reason) =
                        route_auth.authorize(&identity, request.path_without_query())
                    {
                        plan.counters.push((Counter::Forbidden, 1));
                        return Decision::Reply(forbidden(reason, plan));
                    }
                    plan.counters.push((Counter::Authenticated, 1));
                    apply_removals(&request, &removals, &mut plan);
                    set_identity_headers(&identity, &mut plan);
                    plan.identity = Some(identity);
                }
            }
        }
        if !route.limits.is_empty() {
            let limits = &self.policy.rate_limits;
            let client_ip =
                crate::limits::client_ip(&request, request.peer(), limits.xff_trusted_hops);
            let input = crate::limits::LimitInput {
                request: &request,
                identity: plan.identity.as_deref(),
                route_name: &route.name,
                client_ip: client_ip.as_deref(),
            };
            let outcome = limits.check(&route.limits, &input, now_ms, store);
            let headers = crate::limits::headers(&outcome, limits.legacy_headers);
            if outcome.store_errors > 0 {
                plan.counters
                    .push((Counter::LimiterFailOpen, outcome.store_errors));
            }
            if outcome.evictions > 0 {
                plan.counters
                    .push((Counter::LimiterEvictions, outcome.evictions));
            }
            if let Some((name, retry_after_ms)) = &outcome.denied {
                plan.counters.push((Counter::RateLimited, 1));
                let message = format!("rate limit {name:?} exceeded");
                let mut reply =
                    LocalReply::json_error(429, "rate_limited", &message, &plan.request_id);
                reply.headers.push((
                    "retry-after".to_string(),
                    retry_after_ms.div_ceil(1000).max(1).to_string(),
                ));
                reply.headers.extend(headers);
                reply.counters = plan.counters;
                reply.detail = Some("rate_limited");
                return Decision::Reply(reply);
            }
            if !outcome.shadow_denied.is_empty() {
                plan.counters.push((Counter::ShadowLimited, 1));
                plan.set_headers.push((
                    crate::headers::SHADOW_LIMITED.to_string(),
                    outcome.shadow_denied.join(","),
                ));
            }
            if limits.headers_on_allowed {
                plan.response_headers = headers;
            }
        }
        if let Some(verifier) = &route.webhook {
            match verifier.read_headers(&request, now_ms) {
                Ok(pending) => {
                    plan.body_check = Some(BodyCheck {
                        route: route_id,
                        max_body_bytes: verifier.max_body_bytes,
                        webhook: Some(pending),
                    });
                }
                Err(failure) => {
                    plan.counters.push((Counter::Unauthenticated, 1));
                    return Decision::Reply(webhook_refused(failure, plan));
                }
            }
        }
        plan.counters.push((Counter::Forwarded, 1));
        Decision::Forward(Box::new(plan))
    }

    /// Request-body phase, once the whole body is buffered (only for requests whose plan
    /// carried a `body_check`). `None`: forward it; `Some`: send this reply instead.
    pub fn on_request_body(
        &self,
        check: &BodyCheck,
        body: &[u8],
        request_id: &str,
    ) -> Option<LocalReply> {
        if body.len() > check.max_body_bytes {
            return Some(self.body_too_large(check, request_id));
        }
        let verifier = self.policy.routes.get(check.route)?.webhook.as_ref()?;
        let pending = check.webhook.as_ref()?;
        match verifier.verify_body(pending, body) {
            Ok(()) => None,
            Err(failure) => {
                let mut reply = LocalReply::json_error(
                    401,
                    "invalid_signature",
                    "the webhook signature is invalid",
                    request_id,
                );
                reply.counters = vec![(Counter::Unauthenticated, 1)];
                reply.detail = Some(failure.as_str());
                Some(reply)
            }
        }
    }

    /// 413 for a body over the route's inspection limit.
    pub fn body_too_large(&self, check: &BodyCheck, request_id: &str) -> LocalReply {
        let message = format!(
            "the request body is larger than {} bytes",
            check.max_body_bytes
        );
        let mut reply = LocalReply::json_error(413, "body_too_large", &message, request_id);
        reply.detail = Some("body_too_large");
        reply
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

/// 401 per RFC 6750: a challenge, an error code only when credentials were presented,
/// and nothing about which check failed.
fn unauthorized(reason: AuthReason, plan: ForwardPlan) -> LocalReply {
    let (challenge, code, message) = if reason == AuthReason::NoCredentials {
        (
            "Bearer realm=\"tollgate\"",
            "unauthorized",
            "authentication is required",
        )
    } else {
        (
            "Bearer realm=\"tollgate\", error=\"invalid_token\"",
            "invalid_token",
            "the credentials are invalid or expired",
        )
    };
    let mut reply = LocalReply::json_error(401, code, message, &plan.request_id);
    reply
        .headers
        .push(("www-authenticate".to_string(), challenge.to_string()));
    reply.counters = plan.counters;
    reply.detail = Some(reason.as_str());
    reply
}

/// The issuer's keys cannot be used: a retryable server-side failure, not the client's.
fn keys_unavailable(answer: UnavailableAnswer, plan: ForwardPlan) -> LocalReply {
    let mut reply = LocalReply::json_error(
        answer.status,
        "keys_unavailable",
        "the token cannot be checked right now; retry later",
        &plan.request_id,
    );
    if answer.retry_after_seconds > 0 {
        reply.headers.push((
            "retry-after".to_string(),
            answer.retry_after_seconds.to_string(),
        ));
    }
    reply.counters = plan.counters;
    reply.detail = Some(AuthReason::KeysUnavailable.as_str());
    reply
}

fn webhook_refused(failure: crate::webhook::WebhookFailure, plan: ForwardPlan) -> LocalReply {
    let mut reply = LocalReply::json_error(
        401,
        "invalid_signature",
        "the webhook signature is invalid",
        &plan.request_id,
    );
    reply.counters = plan.counters;
    reply.detail = Some(failure.as_str());
    reply
}

fn forbidden(reason: AuthReason, plan: ForwardPlan) -> LocalReply {
    let mut reply = LocalReply::json_error(
        403,
        "insufficient_scope",
        "the credentials do not allow this request",
        &plan.request_id,
    );
    reply.headers.push((
        "www-authenticate".to_string(),
        "Bearer realm=\"tollgate\", error=\"insufficient_scope\"".to_string(),
    ));
    reply.counters = plan.counters;
    reply.detail = Some(reason.as_str());
    reply
}

fn apply_removals(request: &RequestHead, removals: &[Removal], plan: &mut ForwardPlan) {
    for removal in removals {
        match removal {
            Removal::Header(name) => plan.remove_headers.push(name.clone()),
            Removal::QueryParam(param) => {
                let path = plan.set_path.as_deref().unwrap_or(request.path());
                if let Some((base, query)) = path.split_once('?') {
                    let kept: Vec<&str> = query
                        .split('&')
                        .filter(|pair| pair.split('=').next() != Some(param.as_str()))
                        .collect();
                    plan.set_path = Some(if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    });
                }
            }
            Removal::Cookie(name) => {
                if let Some(cookies) = request
                    .header("cookie")
                    .and_then(|c| std::str::from_utf8(c).ok())
                {
                    let kept: Vec<&str> = cookies
                        .split(';')
                        .map(str::trim)
                        .filter(|c| c.split('=').next() != Some(name.as_str()))
                        .collect();
                    if kept.is_empty() {
                        plan.remove_headers.push("cookie".to_string());
                    } else {
                        plan.set_headers
                            .push(("cookie".to_string(), kept.join("; ")));
                    }
                }
            }
        }
    }
}

fn set_identity_headers(identity: &Identity, plan: &mut ForwardPlan) {
    use crate::headers::{AUTH_METHOD, KEY_ID, PLAN, TENANT, USER};
    let mut set = |name: &str, value: &Option<String>| {
        if let Some(v) = value
            && crate::headers::is_valid_header_value(v.as_bytes())
        {
            plan.set_headers.push((name.to_string(), v.clone()));
        }
    };
    set(AUTH_METHOD, &Some(identity.method.clone()));
    set(TENANT, &identity.tenant);
    set(USER, &identity.user);
    set(PLAN, &identity.plan);
    set(KEY_ID, &identity.key_id);
    plan.set_headers
        .extend(identity.claim_headers.iter().cloned());
}
