//! The request path, phase by phase. Each phase method says when the adapter calls it
//! and what it returns; the adapter only applies the result.

use crate::auth::jwks_source::{FetchOutcome, KeyFetch, KeyWork, UnavailableAnswer};
use crate::auth::{AuthInput, AuthOutcome, AuthReason, Identity, Removal};
use crate::decision::{BodyCheck, BodyDecision, Decision, ForwardPlan, LocalReply};
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
    /// Compiled once per VM; `None` only if the built-in patterns failed to compile, in
    /// which case masked routes fail closed.
    pii: Option<&'static crate::pii::PiiMasker>,
    /// Finished usage records not yet in shared data.
    usage: crate::usage::UsageBuffer,
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
            pii: crate::pii::PiiMasker::shared(),
            usage: crate::usage::UsageBuffer::default(),
        }
    }

    /// Masks one response-body chunk of a stream (`last`: the end of the body). The output
    /// of all calls has the length of all input; bytes near a chunk's end may come out
    /// with the next call.
    pub fn mask_response_body(
        &self,
        kinds: crate::pii::PiiKinds,
        stream: &mut crate::pii::MaskStream,
        chunk: &[u8],
        last: bool,
    ) -> Vec<u8> {
        match &self.pii {
            Some(masker) => stream.push(masker, kinds, chunk, last),
            None => chunk
                .iter()
                .map(|b| if b.is_ascii_alphanumeric() { b'*' } else { *b })
                .collect(),
        }
    }

    /// A log line with every kind of personal data masked.
    pub fn mask_log(&self, line: &str) -> String {
        match &self.pii {
            Some(masker) => masker.mask_all(crate::pii::PiiKinds::ALL, line),
            None => line.to_string(),
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
    ///
    /// With a `sidecar` in the policy, a request whose tenant is known carries its usage
    /// record in the decision (`ForwardPlan::usage` or `LocalReply::usage`).
    pub fn on_request_headers(
        &self,
        request: RequestHead,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Decision {
        if self.policy.sidecar.is_none() {
            return self.decide(request, now_ms, store, &mut None);
        }
        let method = request.method().to_string();
        let mut seen = None;
        let mut decision = self.decide(request, now_ms, store, &mut seen);
        if let Some((identity, route_id)) = seen
            && let Some(route) = self.policy.routes.get(route_id)
        {
            // A configured node id keeps ids unique across nodes even when their VMs'
            // entropy is not (replays seed it).
            let event_id = match self
                .policy
                .sidecar
                .as_ref()
                .and_then(|s| s.node_id.as_ref())
            {
                Some(node) => format!("{node}:{}", self.request_ids.generate()),
                None => self.request_ids.generate(),
            };
            let draft = crate::usage::draft(event_id, &identity, route, &method, now_ms, &decision);
            if draft.is_none() {
                decision.counters_mut().push((Counter::UsageDropped, 1));
            }
            match &mut decision {
                Decision::Forward(plan) => plan.usage = draft,
                Decision::Reply(reply) => reply.usage = draft,
            }
        }
        decision
    }

    /// Finishes a request's usage record (`status`: what the client got; 0 when nothing
    /// was sent) and buffers it; a full buffer goes to the node's queue.
    pub fn finish_usage(
        &self,
        mut event: crate::fleet::UsageEvent,
        status: u16,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> crate::usage::UsageFlush {
        let Some(sidecar) = &self.policy.sidecar else {
            return crate::usage::UsageFlush::default();
        };
        event.status = if (100..=599).contains(&status) {
            status
        } else {
            crate::usage::NO_RESPONSE_STATUS
        };
        event.latency_ms = now_ms.saturating_sub(event.timestamp_ms);
        let buffered = self.usage.push(event);
        if crate::usage::UsageBuffer::needs_flush(buffered) {
            return self.usage.flush(store, &sidecar.limits);
        }
        crate::usage::UsageFlush::default()
    }

    /// Hands this VM's buffered usage records to the node's queue (on the timer, so
    /// records of a quiet worker do not wait for more).
    pub fn flush_usage(&self, store: &dyn SharedData) -> crate::usage::UsageFlush {
        match &self.policy.sidecar {
            Some(sidecar) => self.usage.flush(store, &sidecar.limits),
            None => crate::usage::UsageFlush::default(),
        }
    }

    fn decide(
        &self,
        mut request: RequestHead,
        now_ms: u64,
        store: &dyn SharedData,
        seen: &mut Option<(std::rc::Rc<Identity>, crate::routing::RouteId)>,
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
            risk_score: 0,
            waf: None,
            pii: route.pii,
            usage: None,
            cache: None,
        };
        if route.pii.is_some() && request.header("accept-encoding").is_some() {
            // A compressed answer could not be masked.
            plan.remove_headers.push("accept-encoding".to_string());
        }

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
                    if self.policy.sidecar.is_some() {
                        *seen = Some((identity.clone(), route_id));
                    }
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
        let limits = &self.policy.rate_limits;
        if !route.limits.is_empty() || !limits.velocity.is_empty() {
            // Lent to the checks, which also add to the plan.
            let identity = plan.identity.take();
            let client_ip =
                crate::limits::client_ip(&request, request.peer(), limits.xff_trusted_hops);
            let input = crate::limits::LimitInput {
                request: &request,
                identity: identity.as_deref(),
                route_name: &route.name,
                client_ip: client_ip.as_deref(),
            };
            // Spikes are measured on demand, before limits refuse any of it; a blocked spike
            // takes no tokens from the limits.
            if !limits.velocity.is_empty()
                && let Some(reply) = self.check_velocity(&input, now_ms, store, &mut plan)
            {
                return Decision::Reply(reply);
            }
            if !route.limits.is_empty()
                && let Some(reply) =
                    self.check_limits(&route.limits, &input, now_ms, store, &mut plan)
            {
                return Decision::Reply(reply);
            }
            plan.identity = identity;
        }
        // The WAF screens after authentication (the tenant's WAF mode applies, and
        // credentials are stripped from nothing it reads) and after the limits: a flood
        // over its limit is refused by the cheaper check before any pattern runs, and a
        // client probing with attacks spends its own quota doing so.
        if let Some(route_waf) = &route.waf
            && let Some(reply) = self.screen_head(route_id, route_waf, &request, &mut plan)
        {
            return Decision::Reply(reply);
        }
        if let Some(verifier) = &route.webhook {
            match verifier.read_headers(&request, now_ms) {
                Ok(pending) => {
                    let check = plan.body_check.get_or_insert(BodyCheck {
                        route: route_id,
                        max_body_bytes: verifier.max_body_bytes,
                        inspect_prefix: false,
                        webhook: None,
                        waf: None,
                        idempotency: None,
                        fraud: None,
                    });
                    // The signature covers the whole body: its limit applies, and a longer
                    // body is refused even when the WAF alone would inspect a prefix.
                    check.max_body_bytes = verifier.max_body_bytes;
                    check.inspect_prefix = false;
                    check.webhook = Some(pending);
                }
                Err(failure) => {
                    plan.counters.push((Counter::Unauthenticated, 1));
                    return Decision::Reply(webhook_refused(failure, plan));
                }
            }
        }
        if let Some(route_idem) = &route.idempotency {
            match crate::idempotency::on_headers(
                route_idem,
                &request,
                plan.identity.as_deref(),
                &plan.request_id,
            ) {
                Err(reply) => {
                    let mut reply = *reply;
                    reply.counters = std::mem::take(&mut plan.counters);
                    return Decision::Reply(reply);
                }
                Ok(Some(pending)) => {
                    let check = plan.body_check.get_or_insert(BodyCheck {
                        route: route_id,
                        max_body_bytes: 0,
                        inspect_prefix: false,
                        webhook: None,
                        waf: None,
                        idempotency: None,
                        fraud: None,
                    });
                    // The fingerprint covers the whole body.
                    check.max_body_bytes = check.max_body_bytes.max(pending.max_body_bytes);
                    check.inspect_prefix = false;
                    check.idempotency = Some(Box::new(pending));
                }
                Ok(None) => {}
            }
        }
        if let Some(route_fraud) = &route.fraud {
            let client_ip = crate::limits::client_ip(
                &request,
                request.peer(),
                self.policy.rate_limits.xff_trusted_hops,
            );
            let pending = self.policy.fraud.pending(
                &request,
                plan.identity.as_deref(),
                client_ip.as_deref(),
                plan.risk_score,
            );
            let check = plan.body_check.get_or_insert(BodyCheck {
                route: route_id,
                max_body_bytes: 0,
                inspect_prefix: false,
                webhook: None,
                waf: None,
                idempotency: None,
                fraud: None,
            });
            check.max_body_bytes = check.max_body_bytes.max(route_fraud.max_body_bytes);
            check.fraud = Some(Box::new(pending));
        }
        if let Some(route_cache) = &route.cache
            && plan.body_check.is_none()
        {
            match crate::cache::flow::on_request(
                route_cache,
                self.policy.cache_max_bytes,
                &request,
                plan.identity.as_deref(),
                &plan.request_id,
                now_ms,
                store,
            ) {
                crate::cache::flow::RequestStep::Reply { mut reply, stale } => {
                    reply.counters = std::mem::take(&mut plan.counters);
                    if reply.status != 504 {
                        reply.counters.push((
                            if stale {
                                Counter::CacheStaleHits
                            } else {
                                Counter::CacheHits
                            },
                            1,
                        ));
                    }
                    return Decision::Reply(reply);
                }
                crate::cache::flow::RequestStep::Forward(pending) => {
                    plan.counters.push((Counter::CacheMisses, 1));
                    plan.set_headers.extend(pending.validators());
                    plan.cache = Some(pending);
                }
                crate::cache::flow::RequestStep::Bypass => {}
            }
        }
        plan.counters.push((Counter::Forwarded, 1));
        Decision::Forward(Box::new(plan))
    }

    /// After the body phase let a request with an `Idempotency-Key` through: claims the
    /// key, or answers for it (replay, 409, 422). `None`: the request carries no key.
    pub fn idempotency_on_body(
        &self,
        check: &BodyCheck,
        body: &[u8],
        now_ms: u64,
        store: &dyn SharedData,
        request_id: &str,
    ) -> Option<crate::idempotency::IdemStep> {
        let pending = check.idempotency.as_ref()?;
        // Unique per claim: a fresh value from this VM's generator (seeded per VM).
        let nonce = self.request_ids.next_u64();
        Some(crate::idempotency::on_body(
            pending, body, now_ms, nonce, store, request_id,
        ))
    }

    /// Body phase of a route with `fraud:` rules, after `on_request_body_decision` let the
    /// request through and before an idempotency key is claimed (a refused payment claims
    /// nothing). `None`: the route has no fraud rules.
    pub fn fraud_on_body(
        &self,
        check: &BodyCheck,
        body: &[u8],
        now_ms: u64,
        store: &dyn SharedData,
        request_id: &str,
    ) -> Option<FraudStep> {
        let pending = check.fraud.as_ref()?;
        let route = self.policy.routes.get(check.route)?.fraud.as_ref()?;
        let outcome = self
            .policy
            .fraud
            .evaluate(route, pending, body, now_ms, store);
        let mut counters = Vec::new();
        if outcome.store_errors > 0 {
            counters.push((Counter::FraudFailOpen, outcome.store_errors));
        }
        if outcome.evictions > 0 {
            counters.push((Counter::LimiterEvictions, outcome.evictions));
        }
        if outcome.blocked {
            counters.push((Counter::FraudBlocked, 1));
            let mut reply = LocalReply::json_error(
                403,
                "fraud_blocked",
                "the payment was refused by the gateway's fraud rules",
                request_id,
            );
            // No rule names to the client: they would tell a fraudster what to change.
            reply.body = serde_json::json!({
                "error": "fraud_blocked",
                "message": "the payment was refused by the gateway's fraud rules; quote the incident id if you contact support",
                "incident": request_id,
                "request_id": request_id,
            })
            .to_string()
            .into_bytes();
            reply.counters = counters;
            reply.detail = Some("fraud_blocked");
            return Some(FraudStep::Block { reply, outcome });
        }
        let mut set_headers = Vec::new();
        if !outcome.matched.is_empty() {
            counters.push((Counter::FraudFlagged, 1));
            set_headers.push((crate::headers::FRAUD.to_string(), outcome.matched.join(",")));
            set_headers.push((
                crate::headers::RISK_SCORE.to_string(),
                outcome.risk_score.to_string(),
            ));
        }
        Some(FraudStep::Forward {
            set_headers,
            counters,
            outcome,
        })
    }

    /// Keeps the response of a claimed key for retries (or releases the key).
    pub fn idempotency_complete(
        &self,
        claim: &crate::idempotency::IdemClaim,
        status: u16,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
        now_ms: u64,
        store: &dyn SharedData,
    ) -> bool {
        crate::idempotency::complete(claim, status, headers, body, now_ms, store)
    }

    /// Gives a claimed key up (the exchange ended without a complete response).
    pub fn idempotency_release(
        &self,
        claim: &crate::idempotency::IdemClaim,
        store: &dyn SharedData,
    ) {
        crate::idempotency::release(claim, store);
    }

    /// Response-header phase of a request that carried `ForwardPlan::cache`.
    pub fn cache_response_headers(
        &self,
        pending: &crate::cache::flow::CachePending,
        status: u16,
        headers: &crate::cache::Headers,
        request_id: &str,
        now_ms: u64,
        store: &dyn SharedData,
    ) -> crate::cache::flow::ResponseStep {
        crate::cache::flow::on_response_headers(
            pending,
            status,
            headers,
            request_id,
            now_ms,
            self.policy.cache_max_bytes,
            store,
        )
    }

    /// Stores a response whose headers phase said `store`; returns the counters to add.
    pub fn cache_store(
        &self,
        pending: &crate::cache::flow::CachePending,
        status: u16,
        headers: &crate::cache::Headers,
        body: &[u8],
        now_ms: u64,
        store: &dyn SharedData,
    ) -> Vec<(Counter, u64)> {
        match crate::cache::flow::store_response(
            pending,
            self.policy.cache_max_bytes,
            status,
            headers,
            body,
            now_ms,
            store,
        ) {
            Ok(()) => vec![(Counter::CacheStored, 1)],
            Err(_) => Vec::new(),
        }
    }

    /// Request-body phase, once the whole body is buffered (only for requests whose plan
    /// carried a `body_check`). `None`: forward it; `Some`: send this reply instead.
    /// Request headers the body phase wants set are dropped here; adapters that can
    /// still change the request use [`Engine::on_request_body_decision`].
    pub fn on_request_body(
        &self,
        check: &BodyCheck,
        body: &[u8],
        request_id: &str,
    ) -> Option<LocalReply> {
        match self.on_request_body_decision(check, body, body.len(), request_id) {
            BodyDecision::Reply(reply) => Some(reply),
            BodyDecision::Forward { .. } => None,
        }
    }

    /// Request-body phase. `body` is what was buffered: the whole body, or with
    /// `check.inspect_prefix` its first `check.max_body_bytes` when `total_length` is
    /// larger. Verifies a webhook signature, then runs the route's WAF body rules.
    pub fn on_request_body_decision(
        &self,
        check: &BodyCheck,
        body: &[u8],
        total_length: usize,
        request_id: &str,
    ) -> BodyDecision {
        let mut set_headers = Vec::new();
        let mut counters = Vec::new();
        let mut waf = None;
        if total_length.max(body.len()) > check.max_body_bytes && !check.inspect_prefix {
            return BodyDecision::Reply(self.body_too_large(check, request_id));
        }
        let Some(route) = self.policy.routes.get(check.route) else {
            return BodyDecision::Forward {
                set_headers,
                counters,
                waf,
            };
        };
        if let (Some(verifier), Some(pending)) = (&route.webhook, &check.webhook)
            && let Err(failure) = verifier.verify_body(pending, body)
        {
            let mut reply = LocalReply::json_error(
                401,
                "invalid_signature",
                "the webhook signature is invalid",
                request_id,
            );
            reply.counters = vec![(Counter::Unauthenticated, 1)];
            reply.detail = Some(failure.as_str());
            return BodyDecision::Reply(reply);
        }
        if let (Some(route_waf), Some(pending)) = (&route.waf, &check.waf) {
            let verdict = self
                .policy
                .waf
                .check_body(route_waf, pending, body, total_length);
            if verdict.body_truncated {
                counters.push((Counter::WafBodyTruncated, 1));
            }
            if verdict.blocked() {
                return BodyDecision::Reply(waf_blocked(verdict, counters, request_id));
            }
            finish_waf(verdict, &mut set_headers, &mut counters, &mut waf);
        }
        BodyDecision::Forward {
            set_headers,
            counters,
            waf,
        }
    }

    /// The WAF's header phase: blocks, or marks the plan, or defers to the body phase.
    fn screen_head(
        &self,
        route_id: crate::routing::RouteId,
        route_waf: &crate::waf::RouteWaf,
        request: &RequestHead,
        plan: &mut ForwardPlan,
    ) -> Option<LocalReply> {
        let tenant = plan.identity.as_ref().and_then(|i| i.tenant.as_deref());
        let mode = self.policy.waf.tenant_mode(tenant).or(route_waf.mode);
        let client_ip = crate::limits::client_ip(
            request,
            request.peer(),
            self.policy.rate_limits.xff_trusted_hops,
        )
        .and_then(|ip| ip.parse().ok());
        // `None`: the client is on the route's allow list.
        let verdict = self
            .policy
            .waf
            .check_head(route_waf, request, client_ip, mode)?;
        if verdict.blocked() {
            let counters = std::mem::take(&mut plan.counters);
            return Some(waf_blocked(verdict, counters, &plan.request_id));
        }
        if route_waf.inspects_body() {
            let content_type = request
                .header("content-type")
                .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
                .unwrap_or_default();
            plan.body_check = Some(BodyCheck {
                route: route_id,
                max_body_bytes: route_waf.max_body_bytes,
                inspect_prefix: route_waf.over_limit
                    == crate::waf::document::WafOverLimit::InspectPrefix,
                webhook: None,
                idempotency: None,
                fraud: None,
                waf: Some(crate::waf::WafPending {
                    verdict,
                    mode,
                    content_type,
                }),
            });
        } else {
            finish_waf(
                verdict,
                &mut plan.set_headers,
                &mut plan.counters,
                &mut plan.waf,
            );
        }
        None
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

    /// The route's limits; `Some` is the 429 to send.
    fn check_limits(
        &self,
        route_limits: &[crate::limits::RouteLimit],
        input: &crate::limits::LimitInput<'_>,
        now_ms: u64,
        store: &dyn SharedData,
        plan: &mut ForwardPlan,
    ) -> Option<LocalReply> {
        let limits = &self.policy.rate_limits;
        let outcome = limits.check(route_limits, input, now_ms, store);
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
            let mut reply = LocalReply::json_error(429, "rate_limited", &message, &plan.request_id);
            reply.headers.push((
                "retry-after".to_string(),
                retry_after_ms.div_ceil(1000).max(1).to_string(),
            ));
            reply
                .headers
                .extend(crate::limits::headers(&outcome, limits.legacy_headers));
            reply.counters = std::mem::take(&mut plan.counters);
            reply.detail = Some("rate_limited");
            return Some(reply);
        }
        if !outcome.shadow_denied.is_empty() {
            plan.counters.push((Counter::ShadowLimited, 1));
            plan.set_headers.push((
                crate::headers::SHADOW_LIMITED.to_string(),
                outcome.shadow_denied.join(","),
            ));
        }
        // Formatted only when they are sent: most allowed requests carry none.
        if limits.headers_on_allowed {
            plan.response_headers = crate::limits::headers(&outcome, limits.legacy_headers);
        }
        None
    }

    /// Velocity (spike) rules: flags go to the origin as headers and into the risk score;
    /// `Some` is the 429 for a blocking rule.
    fn check_velocity(
        &self,
        input: &crate::limits::LimitInput<'_>,
        now_ms: u64,
        store: &dyn SharedData,
        plan: &mut ForwardPlan,
    ) -> Option<LocalReply> {
        let rules = &self.policy.rate_limits.velocity;
        let outcome = crate::limits::velocity::check(rules, input, now_ms, store);
        if outcome.store_errors > 0 {
            plan.counters
                .push((Counter::LimiterFailOpen, outcome.store_errors));
        }
        if outcome.evictions > 0 {
            plan.counters
                .push((Counter::LimiterEvictions, outcome.evictions));
        }
        if outcome.flagged.is_empty() {
            return None;
        }
        plan.risk_score = plan.risk_score.saturating_add(outcome.risk_score).min(100);
        if let Some((name, retry_after_ms)) = &outcome.blocked {
            plan.counters.push((Counter::VelocityBlocked, 1));
            let message = format!("request rate spike {name:?}: slow down");
            let mut reply =
                LocalReply::json_error(429, "velocity_exceeded", &message, &plan.request_id);
            reply.headers.push((
                "retry-after".to_string(),
                retry_after_ms.div_ceil(1000).max(1).to_string(),
            ));
            reply.counters = std::mem::take(&mut plan.counters);
            reply.detail = Some("velocity_exceeded");
            return Some(reply);
        }
        plan.counters.push((Counter::VelocityFlagged, 1));
        plan.set_headers.push((
            crate::headers::VELOCITY.to_string(),
            outcome.flagged.join(","),
        ));
        plan.set_headers.push((
            crate::headers::RISK_SCORE.to_string(),
            plan.risk_score.to_string(),
        ));
        None
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

/// The fraud rules' answer in the body phase.
#[derive(Debug, Clone, PartialEq)]
pub enum FraudStep {
    /// Send this 403 (`outcome` says which rules, for the log).
    Block {
        reply: LocalReply,
        outcome: crate::fraud::FraudOutcome,
    },
    /// Forward, setting these request headers (empty when nothing matched).
    Forward {
        set_headers: Vec<(String, String)>,
        counters: Vec<(Counter, u64)>,
        outcome: crate::fraud::FraudOutcome,
    },
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

/// 403 with an incident id (the request id) the client can quote; which rules matched
/// goes to the log and the counters only.
fn waf_blocked(
    verdict: crate::waf::WafVerdict,
    mut counters: Vec<(Counter, u64)>,
    request_id: &str,
) -> LocalReply {
    let mut reply = LocalReply::json_error(
        403,
        "request_blocked",
        "the request was refused by the gateway's security rules",
        request_id,
    );
    reply.body = serde_json::json!({
        "error": "request_blocked",
        "message": "the request was refused by the gateway's security rules; quote the incident id if you contact support",
        "incident_id": request_id,
        "request_id": request_id,
    })
    .to_string()
    .into_bytes();
    counters.push((Counter::WafBlocked, 1));
    reply.counters = counters;
    reply.detail = Some("waf_blocked");
    reply.waf = Some(Box::new(verdict));
    reply
}

/// A verdict that did not block: mark the request for the origin when anything matched.
fn finish_waf(
    verdict: crate::waf::WafVerdict,
    set_headers: &mut Vec<(String, String)>,
    counters: &mut Vec<(Counter, u64)>,
    slot: &mut Option<Box<crate::waf::WafVerdict>>,
) {
    if !verdict.matched() {
        return;
    }
    counters.push(if verdict.would_block() {
        (Counter::WafDetected, 1)
    } else {
        (Counter::WafMatched, 1)
    });
    set_headers.push((crate::headers::WAF.to_string(), verdict.header_value()));
    *slot = Some(Box::new(verdict));
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
