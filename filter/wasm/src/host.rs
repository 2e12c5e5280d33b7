//! The only place that talks to the host. Failures become values or log lines.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, LogLevel, MapType, MetricType};
use tollgate_engine::auth::jwks_source::FetchOutcome;
use tollgate_engine::{Counter, SetError, SharedData, StoreUnavailable};

pub fn log(level: LogLevel, message: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = hostcalls::log(level, message);
}

pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

pub fn plugin_configuration() -> Option<Bytes> {
    hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .ok()
    .flatten()
}

/// The buffered request body (whole, when the previous body callback returned Pause).
pub fn request_body(size: usize) -> Result<Vec<u8>, String> {
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, size)
        .map(Option::unwrap_or_default)
        .map_err(|status| format!("reading the request body failed: {status:?}"))
}

pub fn response_body(size: usize) -> Result<Vec<u8>, String> {
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpResponseBody, 0, size)
        .map(Option::unwrap_or_default)
        .map_err(|status| format!("reading the response body failed: {status:?}"))
}

/// Replaces the whole current response-body chunk (Envoy allows no partial splice).
pub fn replace_response_body(size: usize, data: &[u8]) -> Result<(), String> {
    hostcalls::set_buffer(
        proxy_wasm::types::BufferType::HttpResponseBody,
        0,
        size,
        data,
    )
    .map_err(|status| format!("replacing the response body failed: {status:?}"))
}

pub fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

pub fn response_headers() -> Result<Vec<(String, Bytes)>, String> {
    hostcalls::get_map_bytes(MapType::HttpResponseHeaders)
        .map_err(|status| format!("reading response headers failed: {status:?}"))
}

pub fn request_headers() -> Result<Vec<(String, Bytes)>, String> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map_err(|status| format!("reading request headers failed: {status:?}"))
}

pub fn remove_request_header(name: &str) -> Result<(), String> {
    hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
        .map_err(|status| format!("removing request header {name} failed: {status:?}"))
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), String> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
        .map_err(|status| format!("setting request header {name} failed: {status:?}"))
}

pub fn set_response_header(name: &str, value: &str) -> Result<(), String> {
    hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value))
        .map_err(|status| format!("setting response header {name} failed: {status:?}"))
}

pub fn send_reply(status: u16, headers: &[(String, String)], body: &[u8]) -> Result<(), String> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::send_http_response(u32::from(status), headers, Some(body))
        .map_err(|status| format!("sending local reply failed: {status:?}"))
}

/// Host time in Unix milliseconds (Envoy's wall clock; host-sim's virtual clock).
pub fn now_ms() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn since_epoch() -> Option<std::time::Duration> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
}

/// Entropy for request ids: the host's random source, else the clock.
pub fn entropy() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    since_epoch().map_or(0, |d| d.as_nanos() as u64)
}

/// Host metric ids, one per engine counter.
#[derive(Debug, Clone)]
pub struct Metrics {
    ids: [Option<u32>; Counter::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ids: [None; Counter::ALL.len()],
        }
    }
}

impl Metrics {
    /// Defines every counter. A counter the host refuses is logged and skipped: metrics
    /// must never be the reason a request fails.
    pub fn define() -> Self {
        let mut metrics = Metrics::default();
        for counter in Counter::ALL {
            match hostcalls::define_metric(MetricType::Counter, counter.name()) {
                Ok(id) => metrics.ids[counter.index()] = Some(id),
                Err(status) => error(&format!(
                    "defining metric {} failed: {status:?}",
                    counter.name()
                )),
            }
        }
        metrics
    }

    pub fn add(&self, counter: Counter, delta: u64) {
        if let Some(id) = self.ids[counter.index()]
            && delta > 0
        {
            let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }
}

/// Proxy-wasm shared data: one store for every worker VM of the node.
pub struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreUnavailable> {
        match hostcalls::get_shared_data(key) {
            // An empty value is a present key (Envoy has no delete); treat it as empty state.
            Ok((value, Some(cas))) => Ok(Some((value.unwrap_or_default(), cas))),
            Ok((_, None)) => Ok(None),
            Err(_) => Err(StoreUnavailable),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(proxy_wasm::types::Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Host),
        }
    }
}

/// The downstream peer (`source.address`, `ip:port`), when the host knows it.
pub fn peer_address() -> Option<String> {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Sends a GET through `cluster`; the answer comes to the root's `on_http_call_response`.
pub fn dispatch_get(
    cluster: &str,
    path: &str,
    authority: &str,
    timeout_ms: u64,
) -> Result<u32, String> {
    dispatch(cluster, "GET", path, authority, timeout_ms, None)
}

/// Sends a JSON POST through `cluster`; the answer comes like a GET's.
pub fn dispatch_post_json(
    cluster: &str,
    path: &str,
    authority: &str,
    timeout_ms: u64,
    body: &[u8],
) -> Result<u32, String> {
    dispatch(cluster, "POST", path, authority, timeout_ms, Some(body))
}

fn dispatch(
    cluster: &str,
    method: &str,
    path: &str,
    authority: &str,
    timeout_ms: u64,
    body: Option<&[u8]>,
) -> Result<u32, String> {
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", authority),
        ("accept", "application/json"),
    ];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    hostcalls::dispatch_http_call(
        cluster,
        headers,
        body,
        vec![],
        std::time::Duration::from_millis(timeout_ms),
    )
    .map_err(|status| format!("dispatching to cluster {cluster} failed: {status:?}"))
}

/// The callout answer being delivered. No headers means the call failed without a
/// response (reset).
pub fn call_response(num_headers: usize, body_size: usize) -> FetchOutcome {
    if num_headers == 0 {
        return FetchOutcome::Failed("the connection was reset".to_string());
    }
    let headers = match hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders) {
        Ok(headers) => headers,
        Err(status) => return FetchOutcome::Failed(format!("reading headers: {status:?}")),
    };
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let status = headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = hostcalls::get_buffer(
        proxy_wasm::types::BufferType::HttpCallResponseBody,
        0,
        body_size,
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    FetchOutcome::Response {
        status,
        headers,
        body,
    }
}

pub fn set_tick_period(ms: u64) {
    if let Err(status) = hostcalls::set_tick_period(std::time::Duration::from_millis(ms)) {
        error(&format!("setting the tick period failed: {status:?}"));
    }
}
