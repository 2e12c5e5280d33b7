//! Stream context: applies the engine's decisions to one HTTP exchange.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use tollgate_engine::cache::flow::{CachePending, ResponseStep};
use tollgate_engine::fleet::UsageEvent;
use tollgate_engine::idempotency::{IdemClaim, IdemStep};
use tollgate_engine::pii::{MaskStream, PiiKinds};
use tollgate_engine::pipeline::FraudStep;
use tollgate_engine::{BodyCheck, BodyDecision, Decision, LocalReply, RequestHead};

use crate::host;
use crate::root::Shared;

pub struct TollgateHttp {
    shared: Option<Rc<Shared>>,
    request_id: Option<String>,
    /// Set while the body must be seen before the request may go on.
    body_check: Option<BodyCheck>,
    /// Added to the upstream response (e.g. `RateLimit` fields).
    response_headers: Vec<(String, String)>,
    /// Personal data to mask in the response body, and the masker's carry-over.
    pii: Option<(PiiKinds, MaskStream)>,
    /// The usage record, finished in `on_log`.
    usage: Option<Box<UsageEvent>>,
    /// What the client got (0: nothing yet).
    status: u16,
    /// A cached route's forwarded request: what to store once the body is complete.
    cache: Option<CacheFill>,
    /// A request holding an `Idempotency-Key`: its response, kept for retries.
    idempotency: Option<IdemFill>,
}

struct IdemFill {
    claim: Box<IdemClaim>,
    headers: Vec<(String, Vec<u8>)>,
    body: CappedBody,
}

struct CacheFill {
    pending: Box<CachePending>,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    /// The body so far, once the headers phase decided to store it.
    body: Option<CappedBody>,
}

/// A response body kept for later (a cache entry, an idempotent replay), up to a bound.
struct CappedBody {
    bytes: Vec<u8>,
    limit: usize,
}

impl CappedBody {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
        }
    }

    /// Appends `chunk`; `false` when the body would pass the bound (it is then not
    /// worth keeping, and the caller gives it up).
    fn push(&mut self, chunk: &[u8]) -> bool {
        if self.bytes.len() + chunk.len() > self.limit {
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }
}

impl TollgateHttp {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        Self {
            shared,
            request_id: None,
            body_check: None,
            response_headers: Vec::new(),
            pii: None,
            usage: None,
            status: 0,
            cache: None,
            idempotency: None,
        }
    }

    fn reply(&mut self, reply: &LocalReply) -> Action {
        self.response_headers.clear();
        self.status = reply.status;
        if let Some(usage) = self.usage.as_mut() {
            tollgate_engine::usage::note_reply(usage, reply);
        }
        self.request_id = Some(reply.request_id.clone());
        if let Some(detail) = reply.detail {
            let waf = reply
                .waf
                .as_ref()
                .map(|v| format!(" {}", v.log_line()))
                .unwrap_or_default();
            let line = format!(
                "tollgate: {} {} ({detail}){waf}",
                reply.status, reply.request_id
            );
            host::log(proxy_wasm::types::LogLevel::Info, &self.masked(&line));
        }
        if let Err(e) = host::send_reply(reply.status, &reply.headers, &reply.body) {
            host::error(&e);
        }
        Action::Pause
    }

    /// Log lines never carry personal data.
    fn masked(&self, line: &str) -> String {
        match &self.shared {
            Some(shared) => shared.engine.mask_log(line),
            None => line.to_string(),
        }
    }

    /// Fails closed with a JSON 500: an edge that cannot see the request must not
    /// forward it unchecked.
    fn internal_error(&mut self, detail: &str) -> Action {
        host::error(detail);
        let reply = LocalReply::json_error(
            500,
            "internal",
            "the gateway could not process the request",
            "",
        );
        self.reply(&reply)
    }
}

impl TollgateHttp {
    /// A cached route's response headers: answer with a stale copy when the origin failed
    /// (`Some`: the action to return), else mark the response and start collecting it.
    fn cache_response_headers(&mut self, end_of_stream: bool) -> Option<Action> {
        let shared = self.shared.clone()?;
        let fill = self.cache.as_mut()?;
        let headers: Vec<(String, Vec<u8>)> = match host::response_headers() {
            Ok(pairs) => pairs,
            Err(e) => {
                host::error(&e);
                self.cache = None;
                return None;
            }
        };
        let request_id = self.request_id.clone().unwrap_or_default();
        match shared.engine.cache_response_headers(
            &fill.pending,
            self.status,
            &headers,
            &request_id,
            host::now_ms(),
            &host::HostSharedData,
        ) {
            ResponseStep::Revalidated(reply) => {
                self.cache = None;
                shared.metrics.add(tollgate_engine::Counter::CacheHits, 1);
                if let Some(usage) = self.usage.as_mut() {
                    usage.decisions.cache = Some("revalidated".into());
                }
                Some(self.reply(&reply))
            }
            ResponseStep::ServeStale(reply) => {
                self.cache = None;
                shared
                    .metrics
                    .add(tollgate_engine::Counter::CacheStaleHits, 1);
                if let Some(usage) = self.usage.as_mut() {
                    usage.decisions.cache = Some("stale_if_error".into());
                }
                Some(self.reply(&reply))
            }
            ResponseStep::Pass {
                cache_status,
                store,
            } => {
                if let Err(e) = host::set_response_header("cache-status", &cache_status) {
                    host::error(&e);
                }
                if !store {
                    self.cache = None;
                    return None;
                }
                fill.status = self.status;
                fill.headers = headers;
                fill.body = Some(CappedBody::new(
                    tollgate_engine::cache::flow::max_object_bytes(&fill.pending),
                ));
                if end_of_stream {
                    self.collect_for_cache(&shared, &[], true);
                }
                None
            }
        }
    }

    /// The response of a request holding an `Idempotency-Key` is complete: keep it.
    fn finish_idempotency(&mut self) {
        if let (Some(shared), Some(fill)) = (&self.shared, self.idempotency.take()) {
            shared.engine.idempotency_complete(
                &fill.claim,
                self.status,
                &fill.headers,
                &fill.body.bytes,
                host::now_ms(),
                &host::HostSharedData,
            );
        }
    }

    /// Adds a chunk of the response to what will be stored; stores it at the end.
    fn collect_for_cache(&mut self, shared: &Shared, chunk: &[u8], end_of_stream: bool) {
        let Some(fill) = self.cache.as_mut() else {
            return;
        };
        let Some(body) = fill.body.as_mut() else {
            return;
        };
        if !body.push(chunk) {
            self.cache = None; // too large to keep: it passes uncached
            return;
        }
        if end_of_stream {
            let counters = shared.engine.cache_store(
                &fill.pending,
                fill.status,
                &fill.headers,
                &body.bytes,
                host::now_ms(),
                &host::HostSharedData,
            );
            for (counter, delta) in &counters {
                shared.metrics.add(*counter, *delta);
            }
            self.cache = None;
        }
    }

    /// `body` is the buffered body, or its inspected prefix when `total_length` is larger.
    fn finish_body_check(
        &mut self,
        shared: &Shared,
        check: &BodyCheck,
        body: &[u8],
        total_length: usize,
    ) -> Action {
        self.body_check = None;
        let request_id = self.request_id.clone().unwrap_or_default();
        match shared
            .engine
            .on_request_body_decision(check, body, total_length, &request_id)
        {
            BodyDecision::Forward {
                set_headers,
                counters,
                waf,
            } => {
                for (counter, delta) in &counters {
                    shared.metrics.add(*counter, *delta);
                }
                log_waf(shared, &request_id, waf.as_deref());
                let mut set_headers = set_headers;
                match shared.engine.fraud_on_body(
                    check,
                    body,
                    host::now_ms(),
                    &host::HostSharedData,
                    &request_id,
                ) {
                    Some(FraudStep::Block { reply, outcome }) => {
                        for (counter, delta) in &reply.counters {
                            shared.metrics.add(*counter, *delta);
                        }
                        log_fraud(shared, &request_id, "blocked", &outcome);
                        if let Some(usage) = self.usage.as_mut() {
                            tollgate_engine::usage::note_fraud(usage, &outcome);
                        }
                        return self.reply(&reply);
                    }
                    Some(FraudStep::Forward {
                        set_headers: more,
                        counters,
                        outcome,
                    }) => {
                        for (counter, delta) in &counters {
                            shared.metrics.add(*counter, *delta);
                        }
                        if !outcome.matched.is_empty() || outcome.store_errors > 0 {
                            log_fraud(shared, &request_id, "flagged", &outcome);
                        }
                        if let Some(usage) = self.usage.as_mut() {
                            tollgate_engine::usage::note_fraud(usage, &outcome);
                        }
                        set_headers.extend(more);
                    }
                    None => {}
                }
                match shared.engine.idempotency_on_body(
                    check,
                    body,
                    host::now_ms(),
                    &host::HostSharedData,
                    &request_id,
                ) {
                    Some(IdemStep::Reply(reply)) => return self.reply(&reply),
                    Some(IdemStep::Proceed(claim)) => {
                        self.idempotency = Some(IdemFill {
                            body: CappedBody::new(claim.max_response_bytes),
                            claim,
                            headers: Vec::new(),
                        });
                    }
                    None => {}
                }
                // The headers are still held, so changes reach the origin.
                for (name, value) in &set_headers {
                    if let Err(e) = host::set_request_header(name, value) {
                        return self.internal_error(&e);
                    }
                }
                // Continue from a body or trailers callback releases the held headers too.
                Action::Continue
            }
            BodyDecision::Reply(reply) => {
                for (counter, delta) in &reply.counters {
                    shared.metrics.add(*counter, *delta);
                }
                self.reply(&reply)
            }
        }
    }
}

/// WAF matches that did not block: one log line with the rule ids (never sent to clients).
fn log_waf(shared: &Shared, request_id: &str, verdict: Option<&tollgate_engine::waf::WafVerdict>) {
    if let Some(verdict) = verdict {
        let line = format!("tollgate: {request_id} {}", verdict.log_line());
        host::log(
            proxy_wasm::types::LogLevel::Info,
            &shared.engine.mask_log(&line),
        );
    }
}

/// Fraud rules that matched, and velocity rules skipped because shared data failed
/// (fail open): one log line, never sent to clients.
fn log_fraud(
    shared: &Shared,
    request_id: &str,
    verdict: &str,
    outcome: &tollgate_engine::fraud::FraudOutcome,
) {
    let line = format!(
        "tollgate: {request_id} fraud {verdict} rules={} score={} risk_score={} store_errors={}",
        outcome.matched.join(","),
        outcome.score,
        outcome.risk_score,
        outcome.store_errors
    );
    let level = if outcome.store_errors > 0 {
        proxy_wasm::types::LogLevel::Warn
    } else {
        proxy_wasm::types::LogLevel::Info
    };
    host::log(level, &shared.engine.mask_log(&line));
}

impl Context for TollgateHttp {}

impl HttpContext for TollgateHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.internal_error("tollgate: stream without a loaded policy");
        };
        let pairs = match host::request_headers() {
            Ok(pairs) => pairs,
            Err(e) => return self.internal_error(&e),
        };
        let decision = shared.engine.on_request_headers(
            RequestHead::from_pairs(pairs).with_peer(host::peer_address()),
            host::now_ms(),
            &host::HostSharedData,
        );
        for (counter, delta) in decision.counters() {
            shared.metrics.add(*counter, *delta);
        }
        match decision {
            Decision::Forward(plan) => {
                let mut plan = *plan;
                self.usage = plan.usage.take();
                self.cache = plan.cache.take().map(|pending| CacheFill {
                    pending,
                    status: 0,
                    headers: Vec::new(),
                    body: None,
                });
                for name in &plan.remove_headers {
                    if let Err(e) = host::remove_request_header(name) {
                        return self.internal_error(&e);
                    }
                }
                for (name, value) in &plan.set_headers {
                    if let Err(e) = host::set_request_header(name, value) {
                        return self.internal_error(&e);
                    }
                }
                if let Some(path) = &plan.set_path
                    && let Err(e) = host::set_request_header(":path", path)
                {
                    return self.internal_error(&e);
                }
                log_waf(&shared, &plan.request_id, plan.waf.as_deref());
                self.request_id = Some(plan.request_id);
                self.response_headers = plan.response_headers;
                self.pii = plan.pii.map(|kinds| (kinds, MaskStream::default()));
                match plan.body_check {
                    None => Action::Continue,
                    Some(check) if end_of_stream => self.finish_body_check(&shared, &check, &[], 0),
                    Some(check) => {
                        // Headers are held until the body is verified; this needs
                        // `allow_on_headers_stop_iteration: true` in Envoy (see docs).
                        self.body_check = Some(check);
                        Action::Pause
                    }
                }
            }
            Decision::Reply(mut reply) => {
                self.usage = reply.usage.take();
                self.reply(&reply)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some(check)) = (self.shared.clone(), self.body_check.clone()) else {
            return Action::Continue;
        };
        if body_size > check.max_body_bytes {
            if !check.inspect_prefix {
                self.body_check = None;
                let reply = shared
                    .engine
                    .body_too_large(&check, self.request_id.as_deref().unwrap_or(""));
                return self.reply(&reply);
            }
            // Inspect what the limit allows, then let the whole body go on.
            return match host::request_body(check.max_body_bytes) {
                Ok(prefix) => self.finish_body_check(&shared, &check, &prefix, body_size),
                Err(e) => self.internal_error(&e),
            };
        }
        if !end_of_stream {
            return Action::Pause; // keep buffering
        }
        match host::request_body(body_size) {
            Ok(body) => self.finish_body_check(&shared, &check, &body, body_size),
            Err(e) => self.internal_error(&e),
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // With trailers there is no end-of-stream body callback: finish here.
        let (Some(shared), Some(check)) = (self.shared.clone(), self.body_check.clone()) else {
            return Action::Continue;
        };
        match host::request_body(check.max_body_bytes.saturating_add(1)) {
            Ok(body) => {
                let total = body.len();
                let inspected = body.get(..check.max_body_bytes).unwrap_or(&body);
                self.finish_body_check(&shared, &check, inspected, total)
            }
            Err(e) => self.internal_error(&e),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.status == 0 {
            self.status = host::response_header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        if let Some(action) = self.cache_response_headers(end_of_stream) {
            return action;
        }
        if let Some(fill) = self.idempotency.as_mut() {
            match host::response_headers() {
                Ok(headers) => fill.headers = headers,
                Err(e) => host::error(&e),
            }
            if end_of_stream {
                self.finish_idempotency();
            }
        }
        if let (Some(shared), Some(request_id)) = (&self.shared, &self.request_id) {
            for (name, value) in shared.engine.response_headers(request_id) {
                if let Err(e) = host::set_response_header(name, &value) {
                    host::error(&e);
                }
            }
        }
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if let Err(e) = host::set_response_header(&name, &value) {
                host::error(&e);
            }
        }
        if self.pii.is_some()
            && let Some(encoding) = host::response_header("content-encoding")
            && !encoding.eq_ignore_ascii_case("identity")
        {
            // The origin compressed anyway: its bytes cannot be masked, only passed on.
            host::log(
                proxy_wasm::types::LogLevel::Warn,
                &format!(
                    "tollgate: {} response is {encoding}-encoded; PII masking skipped",
                    self.request_id.as_deref().unwrap_or("-")
                ),
            );
            self.pii = None;
        }
        if self.pii.is_some()
            && host::response_header("content-type")
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/grpc"))
        {
            // gRPC ends with trailers, after the last body callback: a held window could
            // never be released. Its messages are length-prefixed binary anyway.
            self.pii = None;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let collecting = self.cache.as_ref().is_some_and(|c| c.body.is_some());
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        if self.pii.is_none() && !collecting && self.idempotency.is_none() {
            return Action::Continue;
        }
        let chunk = match host::response_body(body_size) {
            Ok(chunk) => chunk,
            Err(e) => {
                host::error(&e);
                self.cache = None;
                return Action::Continue;
            }
        };
        // What the client gets: masked when the route masks, and that is what is cached.
        let out = match &mut self.pii {
            Some((kinds, stream)) => {
                let out = shared
                    .engine
                    .mask_response_body(*kinds, stream, &chunk, end_of_stream);
                if let Err(e) = host::replace_response_body(body_size, &out) {
                    host::error(&e);
                }
                out
            }
            None => chunk,
        };
        if collecting {
            self.collect_for_cache(&shared, &out, end_of_stream);
        }
        if let Some(fill) = self.idempotency.as_mut() {
            if !fill.body.push(&out) {
                // Too large to keep: the key is released so a retry is processed afresh.
                if let Some(fill) = self.idempotency.take() {
                    shared
                        .engine
                        .idempotency_release(&fill.claim, &host::HostSharedData);
                }
            } else if end_of_stream {
                self.finish_idempotency();
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // The exchange ended without a complete response: give the key up.
        if let (Some(shared), Some(fill)) = (&self.shared, self.idempotency.take()) {
            shared
                .engine
                .idempotency_release(&fill.claim, &host::HostSharedData);
        }
        if let (Some(shared), Some(usage)) = (&self.shared, self.usage.take()) {
            let flush = shared.engine.finish_usage(
                *usage,
                self.status,
                host::now_ms(),
                &host::HostSharedData,
            );
            report_usage_flush(shared, &flush);
        }
    }
}

/// Metrics and, when records were lost, a warning.
pub fn report_usage_flush(shared: &Shared, flush: &tollgate_engine::usage::UsageFlush) {
    for (counter, delta) in &flush.counters {
        shared.metrics.add(*counter, *delta);
    }
    if let Some(line) = &flush.warning {
        host::log(
            proxy_wasm::types::LogLevel::Warn,
            &format!("tollgate: {line}"),
        );
    }
}
