//! tollgate-probe: a proxy-wasm 0.2.5 filter used as a host-sim test fixture.
//!
//! One module; the plugin configuration string selects the scenario (`"<name> [arg]"`). Every
//! callback is logged through `proxy_log` as `"<callback> k=v ..."`, so tests can compare the
//! callback sequence and the statuses the host returned.

use std::time::Duration;

use proxy_wasm::hostcalls as hc;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

mod raw;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    // Checklist item: hostcalls other than proxy_log are restricted during _initialize.
    if std::env::var("PROBE_INIT").as_deref() == Ok("get_property") {
        let _ = hc::get_property(vec!["plugin_name"]);
    }
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(msg: &str) {
    let _ = hc::log(LogLevel::Info, msg);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn show(b: Option<&[u8]>) -> String {
    match b {
        None => "None".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
            _ => format!("0x{}", hex(b)),
        },
    }
}

fn header_names(map: MapType) -> String {
    hc::get_map_bytes(map)
        .map(|m| m.into_iter().map(|(k, _)| k).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|e| format!("Err({e:?})"))
}

fn prop(path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    match hc::get_property(parts) {
        Ok(v) => format!(
            "{path}={}",
            v.map_or("None".to_string(), |b| format!("0x{}", hex(&b)))
        ),
        Err(e) => format!("{path}=Err({e:?})"),
    }
}

const PROPS: &[&str] = &[
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    "xds.node.id",
    "xds.node.metadata.TENANT",
    "xds.cluster_name",
    "xds.route_name",
    "source.address",
    "source.port",
    "destination.address",
    "connection.mtls",
    "request.path",
    "request.url_path",
    "request.query",
    "request.host",
    "request.method",
    "request.scheme",
    "request.protocol",
    "request.id",
    "request.time",
    "request.headers.x-dup",
    "response.code",
    "node.id",
    "cluster_name",
];

#[derive(Default)]
struct Root {
    scenario: String,
    arg: String,
    ticks: u32,
    queue: Option<u32>,
    metrics: Vec<u32>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, nh: usize, nb: usize, nt: usize) {
        log(&format!(
            "root on_http_call_response token={token} headers={nh} body={nb} trailers={nt}"
        ));
    }

    fn on_done(&mut self) -> bool {
        log("root on_done");
        true
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let cfg = hc::get_buffer(BufferType::VmConfiguration, 0, usize::MAX)
            .ok()
            .flatten();
        log(&format!(
            "on_vm_start size={size} vm_config={}",
            show(cfg.as_deref())
        ));
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let cfg = hc::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&cfg).into_owned();
        let mut it = text.splitn(2, ' ');
        self.scenario = it.next().unwrap_or("").to_string();
        self.arg = it.next().unwrap_or("").to_string();
        log(&format!(
            "on_configure size={size} scenario={} arg={}",
            self.scenario, self.arg
        ));
        match self.scenario.as_str() {
            "reject" => return false,
            "tick" => {
                let ms = self.arg.parse().unwrap_or(1000);
                log(&format!(
                    "set_tick_period={:?}",
                    hc::set_tick_period(Duration::from_millis(ms))
                ));
            }
            "queue" => {
                let id = hc::register_shared_queue("q");
                log(&format!("register_queue={id:?}"));
                self.queue = id.ok();
            }
            // `multi` (differential tests): metrics are defined so that a `metrics` request works.
            "metrics" | "multi" => {
                for (t, n) in [
                    (MetricType::Counter, "c"),
                    (MetricType::Gauge, "g"),
                    (MetricType::Histogram, "h"),
                ] {
                    let id = hc::define_metric(t, n);
                    log(&format!("define_metric {n}={id:?}"));
                    self.metrics.push(id.unwrap_or(0));
                }
            }
            "props" => {
                for p in PROPS {
                    log(&format!("root prop {}", prop(p)));
                }
            }
            "callout_errors" => {
                let h = vec![(":method", "GET"), (":path", "/"), (":authority", "x")];
                log(&format!(
                    "unknown_cluster={:?}",
                    hc::dispatch_http_call(
                        "no_such_cluster",
                        h.clone(),
                        None,
                        vec![],
                        Duration::from_secs(1)
                    )
                ));
                let bad = vec![(":path", "/"), (":authority", "x")];
                log(&format!(
                    "missing_method={:?}",
                    hc::dispatch_http_call("sidecar", bad, None, vec![], Duration::from_secs(1))
                ));
                log(&format!(
                    "negative_timeout={:?}",
                    hc::dispatch_http_call(
                        "sidecar",
                        h.clone(),
                        None,
                        vec![],
                        Duration::from_millis(0x8000_0000)
                    )
                ));
                log(&format!(
                    "host_alias={:?}",
                    hc::dispatch_http_call(
                        "sidecar",
                        vec![(":method", "GET"), (":path", "/"), ("host", "x")],
                        None,
                        vec![],
                        Duration::from_secs(1)
                    )
                ));
                log(&format!(
                    "ok={:?}",
                    hc::dispatch_http_call("sidecar", h, None, vec![], Duration::from_secs(1))
                ));
            }
            _ => {}
        }
        let after = raw::get_buffer_status(BufferType::PluginConfiguration as u32);
        log(&format!("plugin_config_in_configure_status={after}"));
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let now = hc::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        log(&format!(
            "on_tick n={} now_ms={}",
            self.ticks,
            now.map_or(0, |d| d.as_millis())
        ));
        let cfg = raw::get_buffer_status(BufferType::PluginConfiguration as u32);
        log(&format!("plugin_config_after_configure_status={cfg}"));
        if self.ticks >= 3 {
            let _ = hc::set_tick_period(Duration::ZERO);
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        log(&format!("on_queue_ready id={queue_id}"));
        loop {
            match hc::dequeue_shared_queue(queue_id) {
                Ok(Some(v)) => log(&format!("dequeued {}", show(Some(&v)))),
                other => {
                    log(&format!("dequeue_end={:?}", other.map(|o| o.map(|_| ()))));
                    break;
                }
            }
        }
        log(&format!(
            "dequeue_unknown={:?}",
            hc::dequeue_shared_queue(9999).map(|_| ())
        ));
    }

    fn on_log(&mut self) {
        log("root on_log");
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            id,
            multi: false,
            scenario: self.scenario.clone(),
            arg: self.arg.clone(),
            metrics: self.metrics.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    id: u32,
    /// `multi` mode (the scenario came from the request): also log header names.
    multi: bool,
    scenario: String,
    arg: String,
    metrics: Vec<u32>,
}

impl Http {
    fn is(&self, s: &str) -> bool {
        self.scenario == s
    }

    fn log_props(&self, phase: &str) {
        if self.is("props") {
            for p in PROPS {
                log(&format!("{phase} prop {}", prop(p)));
            }
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        log(&format!("on_done ctx={}", self.id));
        true
    }

    fn on_http_call_response(&mut self, token: u32, nh: usize, nb: usize, nt: usize) {
        let st = hc::get_grpc_status();
        // On a failed call Envoy has no response map: reading it would be BadArgument (SDK panic).
        let status = if nh > 0 {
            hc::get_map_value(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        } else {
            None
        };
        let body = hc::get_buffer(BufferType::HttpCallResponseBody, 0, usize::MAX)
            .ok()
            .flatten();
        log(&format!(
            "on_http_call_response ctx={} token={token} headers={nh} body={nb} trailers={nt} status={} get_status={st:?} body={}",
            self.id,
            show(status.as_deref().map(str::as_bytes)),
            show(body.as_deref())
        ));
        if self.multi && nh > 0 {
            log(&format!(
                "call_resp_names={}",
                header_names(MapType::HttpCallResponseHeaders)
            ));
        }
        if self.is("callout") {
            let before = raw::replace_header(
                MapType::HttpRequestHeaders as u32,
                "x-callout",
                status.as_deref().unwrap_or("none"),
            );
            let resumed = hc::resume_http_request();
            let after = raw::replace_header(MapType::HttpRequestHeaders as u32, "x-after", "1");
            log(&format!(
                "replace_before_resume={before} resume={resumed:?} replace_after_resume={after}"
            ));
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        // `multi`: each request picks its scenario with `x-probe-scenario: <name> [arg]`, so one
        // host (one Envoy) serves a whole group of scenarios.
        if self.is("multi") {
            self.multi = true;
            let picked = hc::get_map_value(MapType::HttpRequestHeaders, "x-probe-scenario")
                .ok()
                .flatten()
                .unwrap_or_else(|| "noop".into());
            let mut it = picked.splitn(2, ' ');
            self.scenario = it.next().unwrap_or("").to_string();
            self.arg = it.next().unwrap_or("").to_string();
        }
        log(&format!(
            "on_request_headers ctx={} n={n} eos={eos}",
            self.id
        ));
        self.log_props("req");
        match self.scenario.as_str() {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "panic" => {
                let v: Vec<u8> = Vec::new();
                let idx = std::hint::black_box(3usize);
                log(&format!("never {}", v[idx]));
            }
            "wild" => log(&format!("wild_log_status={}", raw::wild_log())),
            "local_reply" => {
                let r = hc::send_http_response(
                    403,
                    vec![("x-reason", "a"), ("X-Reason", "b")],
                    Some(b"denied!"),
                );
                log(&format!("send_http_response={r:?}"));
                // Envoy turns this Continue into Stop because a local reply was sent.
                return Action::Continue;
            }
            "local_reply_nobody" => {
                let _ = hc::send_http_response(401, vec![], None);
                return Action::Continue;
            }
            "callout" => {
                // The callout cluster is `sidecar` unless the request names one.
                let cluster = hc::get_map_value(MapType::HttpRequestHeaders, "x-probe-cluster")
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "sidecar".into());
                let token = hc::dispatch_http_call(
                    &cluster,
                    vec![
                        (":method", "GET"),
                        (":path", "/check"),
                        (":authority", "sidecar"),
                    ],
                    None,
                    vec![],
                    Duration::from_millis(500),
                );
                log(&format!("dispatch={token:?}"));
                return Action::Pause;
            }
            "pause_forever" => return Action::Pause,
            "close" => {
                log(&format!("reset={:?}", hc::reset_http_request()));
                return Action::Pause;
            }
            "route" => {
                log(&format!(
                    "set_cluster={:?}",
                    hc::set_map_value(
                        MapType::HttpRequestHeaders,
                        "x-tollgate-cluster",
                        Some(&self.arg)
                    )
                ));
            }
            "headers" => {
                let get = |k: &str| hc::get_map_value_bytes(MapType::HttpRequestHeaders, k);
                log(&format!(
                    "get X-PROBE={:?}",
                    get("X-PROBE").map(|v| v.map(|b| show(Some(&b))))
                ));
                log(&format!(
                    "get x-dup={:?}",
                    get("x-dup").map(|v| v.map(|b| show(Some(&b))))
                ));
                log(&format!(
                    "get x-bin={:?}",
                    get("x-bin").map(|v| v.map(|b| show(Some(&b))))
                ));
                log(&format!(
                    "get missing={:?}",
                    get("x-missing").map(|v| v.map(|_| ()))
                ));
                log(&format!(
                    "add={:?}",
                    hc::add_map_value(MapType::HttpRequestHeaders, "X-Added", "1")
                ));
                log(&format!(
                    "replace={:?}",
                    hc::set_map_value(MapType::HttpRequestHeaders, "x-dup", Some("z"))
                ));
                log(&format!(
                    "remove={:?}",
                    hc::set_map_value(MapType::HttpRequestHeaders, "x-gone", None)
                ));
                log(&format!(
                    "pairs={:?}",
                    hc::get_map_bytes(MapType::HttpRequestHeaders).map(|m| m.len())
                ));
                log(&format!(
                    "resp_map_status={}",
                    raw::get_header_status(MapType::HttpResponseHeaders as u32, ":status")
                ));
                log(&format!(
                    "resp_pairs={:?}",
                    hc::get_map_bytes(MapType::HttpResponseHeaders).map(|m| m.len())
                ));
                log(&format!(
                    "bad_map_status={}",
                    raw::get_header_status(9, "x")
                ));
            }
            "counter" => {
                // Shared-data contention: a CAS-increment of `n` that retries on a mismatch.
                let mut retries = 0u32;
                loop {
                    let (v, cas) = hc::get_shared_data("n").unwrap_or((None, None));
                    let cur: u64 = v
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let next = (cur + 1).to_string();
                    match hc::set_shared_data("n", Some(next.as_bytes()), cas) {
                        Ok(()) => {
                            log(&format!("counter={next}"));
                            break;
                        }
                        Err(proxy_wasm::types::Status::CasMismatch) if retries < 1000 => {
                            retries += 1;
                        }
                        Err(e) => {
                            log(&format!("counter_err={e:?}"));
                            break;
                        }
                    }
                }
            }
            "shared" => {
                log(&format!("get0={:?}", hc::get_shared_data("k")));
                log(&format!(
                    "set1={:?}",
                    hc::set_shared_data("k", Some(b"v1"), None)
                ));
                let (_, cas) = hc::get_shared_data("k").unwrap_or((None, None));
                log(&format!("get1_cas={cas:?}"));
                log(&format!(
                    "set_bad_cas={:?}",
                    hc::set_shared_data("k", Some(b"v2"), Some(cas.unwrap_or(0).wrapping_add(100)))
                ));
                log(&format!(
                    "set_good_cas={:?}",
                    hc::set_shared_data("k", Some(b"v2"), cas)
                ));
                log(&format!(
                    "set_new_with_cas={:?}",
                    hc::set_shared_data(&format!("new{}", self.id), Some(b"x"), Some(12345))
                ));
                log(&format!(
                    "remove={:?}",
                    hc::set_shared_data("k", None, None)
                ));
                log(&format!(
                    "get_removed={:?}",
                    hc::get_shared_data("k").map(|(v, c)| (v.map(|b| show(Some(&b))), c.is_some()))
                ));
            }
            "queue" => {
                let q = hc::resolve_shared_queue("", "q");
                log(&format!(
                    "resolve={q:?} resolve_missing={:?}",
                    hc::resolve_shared_queue("", "nope")
                ));
                if let Ok(Some(q)) = q {
                    log(&format!(
                        "enqueue={:?}",
                        hc::enqueue_shared_queue(q, Some(format!("item{}", self.id).as_bytes()))
                    ));
                    log(&format!(
                        "dequeue_now={:?}",
                        hc::dequeue_shared_queue(q).map(|v| v.map(|b| show(Some(&b))))
                    ));
                }
                log(&format!(
                    "enqueue_unknown={:?}",
                    hc::enqueue_shared_queue(9999, Some(b"x"))
                ));
            }
            "metrics" => {
                let (c, g, h) = (self.metrics[0], self.metrics[1], self.metrics[2]);
                log(&format!("inc_c={:?}", hc::increment_metric(c, 3)));
                log(&format!("record_c={:?}", hc::record_metric(c, 10)));
                log(&format!("get_c={:?}", hc::get_metric(c)));
                log(&format!("inc_c_zero={}", raw::increment_status(c, 0)));
                log(&format!(
                    "record_g={:?} inc_g={:?} get_g={:?}",
                    hc::record_metric(g, 5),
                    hc::increment_metric(g, -2),
                    hc::get_metric(g)
                ));
                log(&format!(
                    "record_h={:?} get_h={:?}",
                    hc::record_metric(h, 7),
                    hc::get_metric(h)
                ));
                log(&format!("get_unknown={:?}", hc::get_metric(999)));
            }
            "oom" => {
                // Far beyond the test memory cap: the allocator fails and the module aborts.
                let v = vec![7u8; 512 << 20];
                log(&format!("allocated {}", std::hint::black_box(v).len()));
            }
            "time" => {
                // WASI stdout becomes an info log line.
                println!("stdout line from ctx {}", self.id);
                let host = hc::get_current_time()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                let wasi = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok();
                log(&format!(
                    "host_ms={} wasi_ms={}",
                    host.map_or(0, |d| d.as_millis()),
                    wasi.map_or(0, |d| d.as_millis())
                ));
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&self.id, &mut h);
                // RandomState seeds from WASI random_get: deterministic in host-sim.
                let rs = std::collections::hash_map::RandomState::new();
                log(&format!(
                    "random_state={}",
                    std::hash::BuildHasher::hash_one(&rs, 1u8)
                ));
            }
            "set_property" => {
                log(&format!(
                    "set_property={:?}",
                    hc::set_property(vec!["my_key"], Some(b"v-http"))
                ));
                log(&format!("read_back={}", prop("my_key")));
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        let body = hc::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX)
            .ok()
            .flatten();
        log(&format!(
            "on_request_body ctx={} size={size} eos={eos} body={}",
            self.id,
            show(body.as_deref())
        ));
        if self.is("headers") {
            log(&format!(
                "req_map_in_body_status={}",
                raw::get_header_status(MapType::HttpRequestHeaders as u32, ":path")
            ));
        }
        if self.is("pause_body") && !eos {
            return Action::Pause;
        }
        if self.is("local_reply_body") && eos {
            let r = hc::send_http_response(413, vec![("x-reason", "body")], Some(b"too big"));
            log(&format!("send_http_response={r:?}"));
            return Action::Pause;
        }
        if self.is("buffers") && eos {
            let t = BufferType::HttpRequestBody as u32;
            log(&format!(
                "prepend={} append={} partial={} replace={}",
                raw::set_buffer_status(t, 0, 0, b"<"),
                raw::set_buffer_status(t, 1_000_000, 0, b">"),
                raw::set_buffer_status(t, 1, 1, b"x"),
                raw::set_buffer_status(t, 0, 1_000_000, b"[new]"),
            ));
            log(&format!(
                "beyond_end={:?}",
                hc::get_buffer(BufferType::HttpRequestBody, 1000, 10)
            ));
            log(&format!(
                "call_body_outside={:?}",
                hc::get_buffer(BufferType::HttpCallResponseBody, 0, 10)
            ));
            log(&format!(
                "immutable={}",
                raw::set_buffer_status(BufferType::VmConfiguration as u32, 0, 0, b"x")
            ));
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, n: usize) -> Action {
        log(&format!("on_request_trailers ctx={} n={n}", self.id));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, n: usize, eos: bool) -> Action {
        let st = hc::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten();
        log(&format!(
            "on_response_headers ctx={} n={n} eos={eos} status={}",
            self.id,
            st.unwrap_or_default()
        ));
        self.log_props("resp");
        if self.multi {
            log(&format!(
                "resp_names={}",
                header_names(MapType::HttpResponseHeaders)
            ));
        }
        if self.is("panic_resp") {
            let v: Vec<u8> = Vec::new();
            log(&format!("never {}", v[std::hint::black_box(5usize)]));
        }
        if self.is("local_reply_resp") {
            let _ = hc::send_http_response(418, vec![("x-replaced", "1")], Some(b"teapot"));
        }
        if self.is("headers") {
            let _ = hc::add_map_value(MapType::HttpResponseHeaders, "x-probe-resp", "1");
            log(&format!(
                "req_map_in_resp_status={}",
                raw::get_header_status(MapType::HttpRequestHeaders as u32, ":path")
            ));
        }
        if self.is("buffers") {
            let _ = hc::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        let body = hc::get_buffer(BufferType::HttpResponseBody, 0, usize::MAX)
            .ok()
            .flatten();
        log(&format!(
            "on_response_body ctx={} size={size} eos={eos} body={}",
            self.id,
            show(body.as_deref())
        ));
        if self.is("pause_body") && !eos {
            return Action::Pause;
        }
        if self.is("buffers") && eos {
            log(&format!(
                "append_resp={}",
                raw::set_buffer_status(
                    BufferType::HttpResponseBody as u32,
                    size as u32,
                    0,
                    b"+wasm"
                )
            ));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, n: usize) -> Action {
        log(&format!("on_response_trailers ctx={} n={n}", self.id));
        Action::Continue
    }

    fn on_log(&mut self) {
        let path = hc::get_map_value(MapType::HttpRequestHeaders, ":path")
            .ok()
            .flatten();
        let code = hc::get_property(vec!["response", "code"]).ok().flatten();
        let code = code
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_le_bytes);
        log(&format!(
            "on_log ctx={} path={} response.code={code:?}",
            self.id,
            path.unwrap_or_default()
        ));
        self.log_props("log");
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        log(&format!("on_delete ctx={}", self.id));
    }
}
