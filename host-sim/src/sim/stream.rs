//! The HTTP stream state machine: one request through one VM, in Envoy's callback order.

use std::mem::take;

use super::*;
use crate::state::LocalReply;

/// One stream being driven through a VM slot.
struct Run<'a> {
    sim: &'a Sim,
    slot: &'a mut Slot,
    id: u32,
}

fn internal(what: &str) -> Trap {
    Trap(format!("host-sim internal error: {what}"))
}

impl Run<'_> {
    fn vm(&mut self) -> Result<&mut Vm, Trap> {
        self.slot.vm.as_mut().ok_or_else(|| internal("VM missing"))
    }

    fn stream(&mut self) -> Result<&mut StreamState, Trap> {
        self.vm()?
            .stream()
            .ok_or_else(|| internal("stream missing"))
    }

    fn call3(&mut self, cb: Callback, a: i32, b: i32) -> Result<i32, Trap> {
        let id = self.id;
        let r =
            self.vm()?
                .call::<(i32, i32, i32), i32>(cb, cb.export_name(), id, (id as i32, a, b));
        self.sim.sync_tick(self.slot);
        r
    }

    fn call2(&mut self, cb: Callback, a: i32) -> Result<i32, Trap> {
        let id = self.id;
        let r = self
            .vm()?
            .call::<(i32, i32), i32>(cb, cb.export_name(), id, (id as i32, a));
        self.sim.sync_tick(self.slot);
        r
    }

    fn call1(&mut self, cb: Callback) -> Result<(), Trap> {
        let id = self.id;
        let r = self
            .vm()?
            .call::<i32, ()>(cb, cb.export_name(), id, id as i32);
        self.sim.sync_tick(self.slot);
        r
    }

    /// After a callback: applies a pending local reply or reset, and delivers callouts until the
    /// stream is resumed (when `stopped`) or none are left. `drain = false` leaves callouts pending.
    fn settle(&mut self, dir: Dir, mut stopped: bool, drain: bool) -> Result<Settle, Trap> {
        loop {
            let s = self.stream()?;
            if s.local_reply.is_some() {
                if !s.response_committed {
                    return Ok(Settle::LocalReply);
                }
                // Response headers already went downstream: Envoy cannot change the response.
                s.local_reply = None;
            }
            if s.close_requested {
                return Ok(Settle::Reset);
            }
            let resumed = match dir {
                Dir::Request => take(&mut s.continue_request),
                Dir::Response => take(&mut s.continue_response),
            };
            if resumed {
                stopped = false;
            }
            if !drain && !stopped {
                return Ok(Settle::Continue);
            }
            let sim = self.sim;
            let vm = self.vm()?;
            if vm.host().pending_callouts.is_empty() {
                return Ok(if stopped {
                    Settle::Stalled
                } else {
                    Settle::Continue
                });
            }
            let c = vm.host_mut().pending_callouts.remove(0);
            sim.deliver_callout(vm, &c)?;
            self.sim.sync_tick(self.slot);
        }
    }

    fn run(
        &mut self,
        req: &SimRequest,
        n: u64,
        upstream: &mut dyn Upstream,
        out: &mut SimResponse,
    ) -> Result<(), Trap> {
        let allow_stop_iteration = self
            .sim
            .env
            .as_ref()
            .is_some_and(|e| e.plugin.allow_on_headers_stop_iteration);
        let headers = self.sim.request_headers(req, n);
        let request_size = headers
            .iter()
            .find(|(k, _)| k == b"content-length")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        let info = StreamInfo {
            downstream_addr: req
                .downstream_addr
                .clone()
                .unwrap_or_else(|| "127.0.0.1:40000".into()),
            destination_addr: self.sim.listener.address.clone(),
            connection_id: n,
            start_time_ns: self.sim.now_ns(),
            protocol: "HTTP/1.1".into(),
            request_size,
            // Envoy's HCM resolves the route on the original headers before the filter chain
            // runs and records the upstream cluster (`xds.cluster_name` reads it in
            // `on_request_headers`); the filter's header changes re-route later (`forward`).
            cluster_name: match crate::routing::route(&self.sim.listener.route_config, &headers) {
                crate::routing::RouteDecision::Cluster { cluster, .. }
                    if self.sim.bootstrap.cluster(&cluster).is_some() =>
                {
                    Some(cluster)
                }
                _ => None,
            },
            ..Default::default()
        };
        let body_total: Vec<u8> = req.body_chunks.concat();
        let has_body = !body_total.is_empty();
        let has_trailers = !req.trailers.is_empty();
        let n_headers = headers.len() as i32;
        self.vm()?.host_mut().stream = Some(StreamState {
            id: self.id,
            req_headers: headers,
            info,
            ..Default::default()
        });
        out.stream_id = self.id;
        let id = self.id as i32;
        let ctx = self.id;
        let r = self.vm()?.call::<(i32, i32), ()>(
            Callback::ContextCreate,
            "proxy_on_context_create",
            ctx,
            (id, ROOT_CONTEXT_ID as i32),
        );
        r?;

        // Request headers.
        let act = self.call3(
            Callback::RequestHeaders,
            n_headers,
            i32::from(!has_body && !has_trailers),
        )?;
        let stop = act != 0 && act != 2;
        self.stream()?.req_held = stop;
        // With allow_on_headers_stop_iteration body chunks flow while the headers are held.
        let mut held_for_body = stop && allow_stop_iteration && has_body;
        let settled = self.settle(Dir::Request, stop && !held_for_body, !held_for_body)?;
        if let Some(done) = self.divert(settled, out)? {
            return done;
        }
        if !held_for_body {
            self.stream()?.req_held = false;
        }

        // Request body: all buffered data in one call if the headers were paused and resumed.
        let chunks: Vec<Vec<u8>> = if stop && !held_for_body {
            if has_body {
                vec![body_total]
            } else {
                Vec::new()
            }
        } else {
            // Empty chunks carry nothing, except a final one after data: Envoy's HTTP/1 codec
            // delivers a body as data (eos=false) and then an empty end-of-stream chunk.
            let n = req.body_chunks.len();
            req.body_chunks
                .iter()
                .enumerate()
                .filter(|(i, c)| !c.is_empty() || (i + 1 == n && has_body && !has_trailers))
                .map(|(_, c)| c.clone())
                .collect()
        };
        let mut forwarded = Vec::new();
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            let s = self.stream()?;
            s.req_body.extend_from_slice(&chunk);
            let size = s.req_body.len() as i32;
            let act = self.call3(
                Callback::RequestBody,
                size,
                i32::from(last && !has_trailers),
            )?;
            let pause = act != 0;
            if !pause {
                let s = self.stream()?;
                forwarded.extend(take(&mut s.req_body));
                if held_for_body {
                    // Envoy resumed the whole stream when a body callback continued.
                    s.req_held = false;
                    held_for_body = false;
                }
            }
            let settled = self.settle(Dir::Request, pause && last, !held_for_body || last)?;
            if let Some(done) = self.divert(settled, out)? {
                return done;
            }
            if pause && last {
                forwarded.extend(take(&mut self.stream()?.req_body));
            }
        }
        self.stream()?.req_held = false;

        // Request trailers.
        if has_trailers {
            self.stream()?.req_trailers = req.trailers.clone();
            let act = self.call2(Callback::RequestTrailers, req.trailers.len() as i32)?;
            let settled = self.settle(Dir::Request, act != 0, true)?;
            if let Some(done) = self.divert(settled, out)? {
                return done;
            }
        }

        // Route (after the filter: Envoy clears the route cache when headers change) and forward.
        let s = self.stream()?;
        let headers = s.req_headers.clone();
        let trailers = s.req_trailers.clone();
        let mut info = take(&mut s.info);
        let fwd = self.sim.forward(
            &headers,
            forwarded,
            trailers,
            upstream,
            out,
            Some(&mut info),
        );
        self.stream()?.info = info;
        let fin = match fwd {
            Forwarded::Response {
                headers,
                body,
                trailers,
            } => {
                self.stream()?.info.response_code_details = Some("via_upstream".into());
                // The unfiltered response, kept in case the filter traps under FAIL_OPEN.
                out.status = status_of(&headers);
                out.headers = finalize_headers(headers.clone(), &body);
                out.body = body.clone();
                self.response(headers, body, trailers, true, out)?
            }
            Forwarded::Local { status, body } => self.response(
                local_reply_headers(status, &body, &Vec::new()),
                body,
                Vec::new(),
                false,
                out,
            )?,
        };
        if fin == Settle::Reset {
            mark_reset(out);
        }
        self.finish(out)
    }

    /// Handles a non-continue settle outcome; `Some(result)` ends the request phase.
    fn divert(
        &mut self,
        settled: Settle,
        out: &mut SimResponse,
    ) -> Result<Option<Result<(), Trap>>, Trap> {
        match settled {
            Settle::Continue => Ok(None),
            Settle::LocalReply => {
                let lr = self
                    .stream()?
                    .local_reply
                    .take()
                    .ok_or_else(|| internal("local reply vanished"))?;
                self.local_reply(lr, out)?;
                Ok(Some(self.finish(out)))
            }
            Settle::Reset => {
                mark_reset(out);
                Ok(Some(self.finish(out)))
            }
            Settle::Stalled => {
                // Paused and never resumed: Envoy's stream idle timeout answers 408.
                let body = b"stream timeout".to_vec();
                self.stream()?.response_committed = true;
                self.response(
                    local_reply_headers(408, &body, &Vec::new()),
                    body,
                    Vec::new(),
                    false,
                    out,
                )?;
                Ok(Some(self.finish(out)))
            }
        }
    }

    /// A filter-sent local reply from the request path: passes once through this filter's
    /// response callbacks.
    fn local_reply(&mut self, lr: LocalReply, out: &mut SimResponse) -> Result<(), Trap> {
        out.local_reply = true;
        let mut extra = lr.headers.clone();
        if (0..=16).contains(&lr.grpc_status) {
            extra.push((
                b"grpc-status".to_vec(),
                lr.grpc_status.to_string().into_bytes(),
            ));
        }
        let headers = local_reply_headers(lr.status, &lr.body, &extra);
        let s = self.stream()?;
        s.req_held = false;
        s.info.response_code_details = Some(lr.details.clone());
        // A second local reply during this pass cannot replace it.
        s.response_committed = true;
        let fin = self.response(headers, lr.body, Vec::new(), false, out)?;
        if fin == Settle::Reset {
            mark_reset(out);
        }
        Ok(())
    }

    /// Response headers/body/trailers through the filter; fills `out`.
    fn response(
        &mut self,
        headers: Pairs,
        body: Vec<u8>,
        trailers: Pairs,
        split_eos: bool,
        out: &mut SimResponse,
    ) -> Result<Settle, Trap> {
        let status = status_of(&headers);
        let n_headers = headers.len() as i32;
        let has_trailers = !trailers.is_empty();
        {
            let s = self.stream()?;
            s.resp_headers = headers;
            s.info.response_code = Some(u32::from(status));
        }
        let act = self.call3(
            Callback::ResponseHeaders,
            n_headers,
            i32::from(body.is_empty() && !has_trailers),
        )?;
        let stop = act != 0 && act != 2;
        self.stream()?.resp_held = stop;
        match self.settle(Dir::Response, stop, true)? {
            Settle::Continue => {}
            Settle::LocalReply => {
                // Replaces the upstream response; it does not pass through the filter again.
                let s = self.stream()?;
                let lr = s
                    .local_reply
                    .take()
                    .ok_or_else(|| internal("local reply vanished"))?;
                out.local_reply = true;
                s.resp_headers = local_reply_headers(lr.status, &lr.body, &lr.headers);
                s.info.response_code = Some(lr.status);
                s.info.response_code_details = Some(lr.details);
                s.response_committed = true;
                s.resp_held = false;
                out.status = lr.status as u16;
                out.headers = finalize_headers(s.resp_headers.clone(), &lr.body);
                s.info.response_size = lr.body.len() as u64;
                out.body = lr.body;
                return Ok(Settle::Continue);
            }
            Settle::Reset => return Ok(Settle::Reset),
            Settle::Stalled => {
                let body = b"stream timeout".to_vec();
                out.status = 408;
                out.headers = finalize_headers(local_reply_headers(408, &body, &Vec::new()), &body);
                out.body = body;
                return Ok(Settle::Continue);
            }
        }
        {
            let s = self.stream()?;
            s.resp_held = false;
            s.response_committed = true;
        }
        let chunks: Vec<Vec<u8>> = match (body.is_empty(), split_eos && !has_trailers) {
            (true, _) => Vec::new(),
            // The upstream codec delivers the data, then an empty end-of-stream frame.
            (false, true) => vec![body, Vec::new()],
            (false, false) => vec![body],
        };
        let mut forwarded = Vec::new();
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            let s = self.stream()?;
            s.resp_body.extend_from_slice(&chunk);
            let size = s.resp_body.len() as i32;
            let act = self.call3(
                Callback::ResponseBody,
                size,
                i32::from(last && !has_trailers),
            )?;
            if act == 0 {
                forwarded.extend(take(&mut self.stream()?.resp_body));
            }
            match self.settle(Dir::Response, act != 0 && last, true)? {
                Settle::Reset | Settle::Stalled => return Ok(Settle::Reset),
                _ => {}
            }
            if act != 0 && last {
                forwarded.extend(take(&mut self.stream()?.resp_body));
            }
        }
        if has_trailers {
            self.stream()?.resp_trailers = trailers.clone();
            let act = self.call2(Callback::ResponseTrailers, trailers.len() as i32)?;
            if matches!(
                self.settle(Dir::Response, act != 0, true)?,
                Settle::Reset | Settle::Stalled
            ) {
                return Ok(Settle::Reset);
            }
        }
        let s = self.stream()?;
        s.info.response_size = forwarded.len() as u64;
        out.status = status_of(&s.resp_headers);
        out.headers = finalize_headers(s.resp_headers.clone(), &forwarded);
        out.body = forwarded;
        Ok(Settle::Continue)
    }

    /// `on_log` → `on_done` → `on_delete` (Envoy's order), then pending callouts complete.
    fn finish(&mut self, out: &mut SimResponse) -> Result<(), Trap> {
        {
            let s = self.stream()?;
            if !out.reset {
                s.info.response_code = Some(u32::from(out.status));
            }
            s.req_held = false;
            s.resp_held = false;
        }
        self.call1(Callback::Log)?;
        let id = self.id;
        // Envoy ignores a stream's on_done result.
        let r = self
            .vm()?
            .call::<i32, i32>(Callback::Done, "proxy_on_done", id, id as i32);
        r?;
        self.call1(Callback::Delete)?;
        self.vm()?.host_mut().stream = None;
        self.sim.drain_callouts(self.slot)
    }
}

fn mark_reset(out: &mut SimResponse) {
    out.reset = true;
    out.status = 0;
    out.headers.clear();
    out.body.clear();
}

impl Sim {
    pub(super) fn run_stream(
        &self,
        slot: &mut Slot,
        req: &SimRequest,
        n: u64,
        upstream: &mut dyn Upstream,
        out: &mut SimResponse,
    ) -> Result<(), Trap> {
        let id = slot
            .vm
            .as_mut()
            .ok_or_else(|| internal("VM missing"))?
            .alloc_stream_id();
        let mut run = Run {
            sim: self,
            slot,
            id,
        };
        run.run(req, n, upstream, out)
    }
}
