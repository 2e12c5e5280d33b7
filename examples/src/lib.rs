//! Demo origins for Tollgate.
//!
//! The demo origin answers every request with a JSON echo of what it received (method, path,
//! headers in order, body), so a test behind Envoy can see exactly what the gateway forwarded.
//! A few paths add behaviour that gateway features need to be shown against:
//!
//! | path | answer |
//! |---|---|
//! | `/v1/refunds/{user}` | a refund status for `user`, `cache-control: max-age=300` |
//! | `/v1/docs/{id}` | a document with `etag: "{id}-v1"`, `cache-control: max-age=1`; `304` (no body) to a matching `If-None-Match` |
//! | `/status/{code}` | the echo with that status code (100..=599) |
//! | `/delay/{ms}` | the echo after `ms` milliseconds (capped at [`MAX_DELAY`]) |
//! | anything else | the echo, 200 |
//!
//! The `demo-origin` binary wraps [`serve`]; the Envoy end-to-end tests run the same server
//! in-process with [`BackgroundOrigin`], so they need no prebuilt binary.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Request bodies above this are refused with 413: the echo is for tests, not for uploads.
pub const MAX_BODY: usize = 1024 * 1024;

/// Upper bound of `/delay/{ms}`, so a typo cannot hang a test for minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// What the origin received, as plain data (the input of [`respond`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path with the query string, as it arrived.
    pub path: String,
    /// Header names lower-case, in arrival order, repeated names kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the origin answers, before any I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoResponse {
    pub status: u16,
    /// Extra headers besides `content-type: application/json` and `x-demo-origin`.
    pub headers: Vec<(&'static str, String)>,
    pub json: Value,
    /// How long to wait before answering (`/delay/{ms}`).
    pub delay: Duration,
}

/// The JSON echo of `req` as seen by the origin called `name`.
pub fn echo(name: &str, req: &ReceivedRequest) -> Value {
    let headers: Vec<[&str; 2]> = req
        .headers
        .iter()
        .map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    json!({
        "origin": name,
        "method": req.method,
        "path": req.path,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
    })
}

/// Decides the answer to `req`. Pure, so the routing of the demo paths is unit-tested.
pub fn respond(name: &str, req: &ReceivedRequest) -> DemoResponse {
    let mut json = echo(name, req);
    let mut out = DemoResponse {
        status: 200,
        headers: Vec::new(),
        json: Value::Null,
        delay: Duration::ZERO,
    };
    let path = req.path.split('?').next().unwrap_or_default();

    if let Some(user) = path.strip_prefix("/v1/refunds/").filter(|u| is_segment(u)) {
        // A fixed record per user; the full PAN is deliberately unmasked so that the
        // gateway's response masking has something real to catch.
        json["user"] = json!(user);
        json["refund"] = json!({
            "status": "processed",
            "amount": "12500.00",
            "currency": "INR",
            "pan": "ABCDE1234F",
            "assessment_year": "2025-26",
        });
        out.headers
            .push(("cache-control", "max-age=300".to_owned()));
    } else if let Some(id) = path.strip_prefix("/v1/docs/").filter(|u| is_segment(u)) {
        let etag = format!("\"{id}-v1\"");
        let matches = req
            .headers
            .iter()
            .any(|(k, v)| k == "if-none-match" && v.split(',').any(|t| t.trim() == etag));
        if matches {
            out.status = 304;
        }
        json["doc"] = json!(id);
        out.headers.push(("etag", etag));
        out.headers.push(("cache-control", "max-age=1".to_owned()));
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => out.status = code,
            _ => {
                out.status = 400;
                json["error"] = json!("status must be 100..=599");
            }
        }
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        match ms.parse::<u64>() {
            Ok(ms) => out.delay = Duration::from_millis(ms).min(MAX_DELAY),
            Err(_) => {
                out.status = 400;
                json["error"] = json!("delay must be milliseconds");
            }
        }
    }
    out.json = json;
    out
}

fn is_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

/// Serves the demo origin on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    name: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let name: Arc<str> = Arc::from(name);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted.context("accept")?,
        };
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&name), req));
            // A client that goes away mid-request is normal here; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    name: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => {
            return Ok(json_response(
                &name,
                413,
                &[],
                &json!({"origin": &*name, "error": "body too large or broken"}),
            ));
        }
    };
    let received = ReceivedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let out = respond(&name, &received);
    if !out.delay.is_zero() {
        tokio::time::sleep(out.delay).await;
    }
    Ok(json_response(&name, out.status, &out.headers, &out.json))
}

fn json_response(
    name: &str,
    status: u16,
    headers: &[(&'static str, String)],
    json: &Value,
) -> Response<Full<Bytes>> {
    // A 304 carries no body (RFC 9110 §15.4.5).
    let body = if status == 304 {
        Bytes::new()
    } else {
        Bytes::from(json.to_string())
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert("x-demo-origin", v);
    }
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(*k, v);
        }
    }
    if status == 200 && !h.contains_key(CACHE_CONTROL) {
        // The echo reflects the request: nothing downstream may reuse it for another one.
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A demo origin running on its own thread and runtime; stopped and joined on drop.
///
/// Used by the Envoy end-to-end tests, which are plain blocking tests.
pub struct BackgroundOrigin {
    addr: SocketAddr,
    name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundOrigin {
    /// Starts an origin called `name` on a free loopback port.
    pub fn start(name: &str) -> anyhow::Result<Self> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("origin-{name}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("origin {thread_name}: {e}"),
                    };
                    let shutdown = async {
                        // Sender dropped or fired: either way, stop.
                        let _ = stopped.await;
                    };
                    if let Err(e) = serve(listener, &thread_name, shutdown).await {
                        eprintln!("origin {thread_name}: {e:#}");
                    }
                });
            })
            .context("spawn origin thread")?;
        Ok(Self {
            addr,
            name: name.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for BackgroundOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Dropping the runtime at the end of the thread cancels open connections, so
            // the join is bounded.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn get(path: &str) -> ReceivedRequest {
        ReceivedRequest {
            method: "GET".into(),
            path: path.into(),
            headers: vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())],
            body: b"hi".to_vec(),
        }
    }

    #[test]
    fn echo_keeps_order_and_repeats() {
        let out = respond("o1", &get("/anything?q=1"));
        assert_eq!(out.status, 200);
        assert_eq!(
            out.json,
            json!({"origin": "o1", "method": "GET", "path": "/anything?q=1",
                   "headers": [["x-a", "1"], ["x-a", "2"]], "body": "hi"})
        );
    }

    #[test]
    fn refunds_are_cacheable_and_name_the_user() {
        let out = respond("o1", &get("/v1/refunds/u42?x=1"));
        assert_eq!(out.json["user"], "u42");
        assert_eq!(out.json["refund"]["status"], "processed");
        assert_eq!(
            out.headers,
            vec![("cache-control", "max-age=300".to_owned())]
        );
        // Not a refund record: nested path or missing user.
        assert!(respond("o1", &get("/v1/refunds/")).headers.is_empty());
        assert!(respond("o1", &get("/v1/refunds/a/b")).headers.is_empty());
    }

    #[test]
    fn status_and_delay_are_validated_and_bounded() {
        assert_eq!(respond("o", &get("/status/503")).status, 503);
        assert_eq!(respond("o", &get("/status/99")).status, 400);
        assert_eq!(respond("o", &get("/status/x")).status, 400);
        assert_eq!(
            respond("o", &get("/delay/250")).delay,
            Duration::from_millis(250)
        );
        assert_eq!(respond("o", &get("/delay/99999999")).delay, MAX_DELAY);
        assert_eq!(respond("o", &get("/delay/-1")).status, 400);
    }

    #[test]
    fn background_origin_answers_and_stops() {
        use std::io::{Read as _, Write as _};
        let origin = BackgroundOrigin::start("bg").unwrap();
        let mut s = std::net::TcpStream::connect(origin.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("x-demo-origin: bg"), "{resp}");
        assert!(resp.contains(r#""body":"abc""#), "{resp}");
        let addr = origin.addr();
        drop(origin);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
