//! The HTTP stream state machine: one request through one VM, in Envoy's callback order.

use std::mem::take;

use super::*;
use crate::state::LocalReply;

/// One stream being driven through a VM slot.
struct Run<'a, 's, 'o> {
    sim: &'a Sim,
    slot: &'a mut Slot,
    id: u32,
    /// Serve: where the response goes as the filter releases it. Replay: `None`, the response
    /// is collected into the result.
    sink: Option<&'s mut (dyn ResponseSink + 'o)>,
}

/// Where the request stands with the router.
enum Upstreaming<'u> {
    /// The filter has not released the request headers yet.
    Pending,
    /// The upstream request is under way; `request` records what was sent.
    Open {
        exchange: Box<dyn UpstreamExchange + 'u>,
        request: UpstreamRequest,
        address: Option<String>,
    },
    /// The router answers itself.
    Router(RouterReply),
}

impl Upstreaming<'_> {
    /// Sends released body data on (nothing goes upstream when the router answers itself).
    fn write(&mut self, data: &[u8], record: bool) {
        if let Upstreaming::Open {
            exchange, request, ..
        } = self
            && !data.is_empty()
        {
            exchange.write(data);
            if record {
                request.body.extend_from_slice(data);
            }
        }
    }
}

fn internal(what: &str) -> Trap {
    Trap(format!("host-sim internal error: {what}"))
}

impl Run<'_, '_, '_> {
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

    /// The filter released the request headers: Envoy's router picks the route now (after the
    /// filter's header changes) and starts the upstream request.
    fn open_upstream<'u>(
        &mut self,
        upstream: &'u mut dyn Upstream,
    ) -> Result<Upstreaming<'u>, Trap> {
        let s = self.stream()?;
        let headers = s.req_headers.clone();
        let mut info = take(&mut s.info);
        let routed = self.sim.route_upstream(&headers, Some(&mut info));
        self.stream()?.info = info;
        Ok(match routed {
            Ok((request, address)) => Upstreaming::Open {
                exchange: upstream.open(request.clone(), address.clone()),
                request,
                address,
            },
            Err(reply) => Upstreaming::Router(reply),
        })
    }

    fn run(
        &mut self,
        req: &SimRequest,
        body: &mut dyn BodySource,
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
            // `on_request_headers`); the filter's header changes re-route later.
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
        let has_body = !body.is_empty();
        let has_trailers = !req.trailers.is_empty();
        // Replay reports what the origin received; serve does not keep a copy of the body.
        let record = self.sink.is_none();
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
        let mut upstream = Some(upstream);
        let mut up = Upstreaming::Pending;
        if !held_for_body {
            self.stream()?.req_held = false;
            if let Some(u) = upstream.take() {
                up = self.open_upstream(u)?;
            }
        }

        // Request body. Data that arrived while the headers were paused and resumed comes in
        // one callback; after that, chunk by chunk as the codec delivers them.
        let mut coalesce = stop && !held_for_body;
        loop {
            let next = if take(&mut coalesce) {
                body.take_arrived().or_else(|| body.next_chunk())
            } else {
                body.next_chunk()
            };
            let Some((chunk, last)) = next else { break };
            let s = self.stream()?;
            s.req_body.extend_from_slice(&chunk);
            let size = s.req_body.len() as i32;
            let act = self.call3(
                Callback::RequestBody,
                size,
                i32::from(last && !has_trailers),
            )?;
            let pause = act != 0;
            let mut released = Vec::new();
            let mut release_headers = false;
            if !pause {
                let s = self.stream()?;
                released = take(&mut s.req_body);
                if held_for_body {
                    // Envoy resumed the whole stream when a body callback continued.
                    s.req_held = false;
                    held_for_body = false;
                    release_headers = true;
                }
            }
            let settled = self.settle(Dir::Request, pause && last, !held_for_body || last)?;
            if let Some(done) = self.divert(settled, out)? {
                return done;
            }
            if pause && last {
                // Resumed after buffering the whole body: headers (if held) and data go on.
                released.extend(take(&mut self.stream()?.req_body));
                release_headers = true;
            }
            if release_headers && let Some(u) = upstream.take() {
                up = self.open_upstream(u)?;
            }
            up.write(&released, record);
            if last {
                break;
            }
        }
        self.stream()?.req_held = false;
        if body.aborted() {
            // The client broke off mid-body: Envoy resets the stream, and the origin must not
            // receive a request that looks complete (dropping `up` closes its connection).
            mark_reset(out);
            return self.finish(out);
        }

        // Request trailers.
        if has_trailers {
            self.stream()?.req_trailers = req.trailers.clone();
            let act = self.call2(Callback::RequestTrailers, req.trailers.len() as i32)?;
            let settled = self.settle(Dir::Request, act != 0, true)?;
            if let Some(done) = self.divert(settled, out)? {
                return done;
            }
        }
        if let Some(u) = upstream.take() {
            up = self.open_upstream(u)?;
        }

        // The request is complete: the origin (or the router) answers.
        let trailers = self.stream()?.req_trailers.clone();
        let fin = match up {
            Upstreaming::Pending => return Err(internal("the upstream request was never opened")),
            Upstreaming::Router(reply) => self.router_reply(reply.status, reply.body, out)?,
            Upstreaming::Open {
                exchange,
                mut request,
                address,
            } => {
                request.trailers = trailers.clone();
                out.upstream_called = true;
                out.upstream_cluster = Some(request.cluster.clone());
                out.upstream_request = Some(request);
                match exchange.finish(trailers) {
                    StreamedReply::Response {
                        status,
                        headers,
                        body,
                        trailers,
                    } => {
                        let s = self.stream()?;
                        s.info.upstream_address =
                            Some(address.unwrap_or_else(|| "127.0.0.1:0".into()));
                        s.info.response_code_details = Some("via_upstream".into());
                        let headers = response_head(status, headers);
                        let mut body = body;
                        if record {
                            // The unfiltered response, kept in case the filter traps under
                            // FAIL_OPEN.
                            let whole = collect(body.as_mut());
                            out.status = status_of(&headers);
                            out.headers = finalize_headers(headers.clone(), &whole);
                            out.body = whole.clone();
                            body = Box::new(ChunkList::upstream(whole, !trailers.is_empty()));
                        }
                        self.response(headers, body.as_mut(), trailers, out)?
                    }
                    StreamedReply::ConnectFailure => {
                        self.router_reply(503, CONNECT_FAILURE_BODY.as_bytes().to_vec(), out)?
                    }
                    StreamedReply::Timeout => {
                        self.router_reply(504, TIMEOUT_BODY.as_bytes().to_vec(), out)?
                    }
                }
            }
        };
        if fin == Settle::Reset {
            mark_reset(out);
        }
        self.finish(out)
    }

    /// A reply the router makes (no route, upstream failure): through the filter's response
    /// callbacks like an upstream response.
    fn router_reply(
        &mut self,
        status: u32,
        body: Vec<u8>,
        out: &mut SimResponse,
    ) -> Result<Settle, Trap> {
        let headers = local_reply_headers(status, &body, &Vec::new());
        self.response(headers, &mut ChunkList::whole(body), Vec::new(), out)
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
                self.stream()?.response_committed = true;
                self.router_reply(408, b"stream timeout".to_vec(), out)?;
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
        let fin = self.response(headers, &mut ChunkList::whole(lr.body), Vec::new(), out)?;
        if fin == Settle::Reset {
            mark_reset(out);
        }
        Ok(())
    }

    /// Response headers/body/trailers through the filter; fills `out`.
    fn response(
        &mut self,
        headers: Pairs,
        body: &mut dyn BodySource,
        trailers: Pairs,
        out: &mut SimResponse,
    ) -> Result<Settle, Trap> {
        let status = status_of(&headers);
        let n_headers = headers.len() as i32;
        let has_trailers = !trailers.is_empty();
        let has_body = !body.is_empty();
        {
            let s = self.stream()?;
            s.resp_headers = headers;
            s.info.response_code = Some(u32::from(status));
        }
        let act = self.call3(
            Callback::ResponseHeaders,
            n_headers,
            i32::from(!has_body && !has_trailers),
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
        let head = {
            let s = self.stream()?;
            s.resp_held = false;
            s.response_committed = true;
            let head: Pairs = s
                .resp_headers
                .iter()
                .filter(|(k, _)| !k.starts_with(b":"))
                .cloned()
                .collect();
            (status_of(&s.resp_headers), head)
        };
        if let Some(sink) = self.sink.as_mut() {
            sink.head(head.0, &head.1, !has_body && !has_trailers);
        }
        let mut forwarded = Vec::new();
        let mut forwarded_len = 0u64;
        while let Some((chunk, last)) = body.next_chunk() {
            let s = self.stream()?;
            s.resp_body.extend_from_slice(&chunk);
            let size = s.resp_body.len() as i32;
            let act = self.call3(
                Callback::ResponseBody,
                size,
                i32::from(last && !has_trailers),
            )?;
            if act == 0 {
                let data = take(&mut self.stream()?.resp_body);
                self.emit(data, &mut forwarded, &mut forwarded_len);
            }
            match self.settle(Dir::Response, act != 0 && last, true)? {
                Settle::Reset | Settle::Stalled => return Ok(Settle::Reset),
                _ => {}
            }
            if act != 0 && last {
                let data = take(&mut self.stream()?.resp_body);
                self.emit(data, &mut forwarded, &mut forwarded_len);
            }
            if last {
                break;
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
        s.info.response_size = forwarded_len;
        out.status = status_of(&s.resp_headers);
        out.headers = finalize_headers(s.resp_headers.clone(), &forwarded);
        out.body = forwarded;
        Ok(Settle::Continue)
    }

    /// Released response data: to the sink (serve) or into the collected response (replay).
    fn emit(&mut self, data: Vec<u8>, collected: &mut Vec<u8>, len: &mut u64) {
        *len += data.len() as u64;
        match self.sink.as_mut() {
            Some(sink) if !data.is_empty() => sink.data(data),
            Some(_) => {}
            None => collected.extend(data),
        }
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_stream<'s, 'o>(
        &self,
        slot: &mut Slot,
        req: &SimRequest,
        body: &mut dyn BodySource,
        n: u64,
        upstream: &mut dyn Upstream,
        sink: Option<&'s mut (dyn ResponseSink + 'o)>,
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
            sink,
        };
        run.run(req, body, n, upstream, out)
    }
}
