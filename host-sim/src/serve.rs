//! `tollgate-sim serve`: a real HTTP/1.1 (keep-alive) gateway on the bootstrap's listener.
//! Requests run on blocking threads (a VM is single-threaded and guarded by its slot mutex);
//! upstream requests and callouts use real sockets. Bodies stream both ways: the filter sees
//! each request chunk as the client sends it, the origin gets data as the filter releases it,
//! and response chunks reach the client as the filter releases them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::abi::pairs::Pairs;
use crate::http_client::{self, Exchange, Framing, HttpError, ResponseStream};
use crate::sim::{
    BodySource, ResponseSink, Sim, SimRequest, SimResponse, StreamedReply, Upstream,
    UpstreamExchange, UpstreamReply, UpstreamRequest,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Body chunks buffered between a socket and the filter, each way (back-pressure).
const CHUNKS_IN_FLIGHT: usize = 8;

/// Real sockets to the cluster's first endpoint.
pub struct RealUpstream {
    /// Whether the downstream request has a body (frames a streamed upstream request).
    pub request_has_body: bool,
}

fn client_request(req: &UpstreamRequest) -> http_client::Request<'_> {
    http_client::Request {
        method: &req.method,
        path: &req.path,
        authority: &req.authority,
        headers: &req.headers,
        body: &req.body,
    }
}

impl Upstream for RealUpstream {
    fn send(&mut self, req: &UpstreamRequest, address: Option<&str>) -> UpstreamReply {
        let Some(addr) = address else {
            return UpstreamReply::ConnectFailure;
        };
        let timeout = (!req.timeout.is_zero()).then_some(req.timeout);
        match http_client::send(addr, client_request(req), CONNECT_TIMEOUT, timeout) {
            Ok(resp) => UpstreamReply::Response {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
                trailers: Vec::new(),
            },
            Err(HttpError::Timeout) => UpstreamReply::Timeout,
            Err(HttpError::ConnectFailure | HttpError::Reset) => UpstreamReply::ConnectFailure,
        }
    }

    fn open<'a>(
        &'a mut self,
        req: UpstreamRequest,
        address: Option<String>,
    ) -> Box<dyn UpstreamExchange + 'a> {
        let framing = if self.request_has_body {
            Framing::Chunked
        } else {
            Framing::Length(0)
        };
        let timeout = (!req.timeout.is_zero()).then_some(req.timeout);
        let exchange = match address {
            None => Err(HttpError::ConnectFailure),
            Some(addr) => http_client::open(
                &addr,
                client_request(&req),
                framing,
                CONNECT_TIMEOUT,
                timeout,
            ),
        };
        Box::new(RealExchange(exchange))
    }
}

/// A streamed upstream request; the first failure is kept and reported at `finish`.
struct RealExchange(Result<Exchange, HttpError>);

impl UpstreamExchange for RealExchange {
    fn write(&mut self, data: &[u8]) {
        if let Ok(exchange) = &mut self.0
            && let Err(e) = exchange.write(data)
        {
            self.0 = Err(e);
        }
    }

    fn finish(self: Box<Self>, _trailers: Pairs) -> StreamedReply {
        match self.0.and_then(Exchange::finish) {
            Ok(response) => StreamedReply::Response {
                status: response.status,
                headers: response.headers.clone(),
                body: Box::new(UpstreamBody {
                    response: Some(response),
                }),
                trailers: Vec::new(),
            },
            Err(HttpError::Timeout) => StreamedReply::Timeout,
            Err(HttpError::ConnectFailure | HttpError::Reset) => StreamedReply::ConnectFailure,
        }
    }
}

/// The origin's body as it arrives, in the upstream codec's shape: data chunks, then an empty
/// end-of-stream chunk. A broken body ends early (the client sees it cut short).
struct UpstreamBody {
    response: Option<ResponseStream>,
}

impl BodySource for UpstreamBody {
    fn is_empty(&self) -> bool {
        self.response
            .as_ref()
            .is_none_or(ResponseStream::is_bodyless)
    }

    fn next_chunk(&mut self) -> Option<(Vec<u8>, bool)> {
        let response = self.response.as_mut()?;
        match response.read_chunk() {
            Ok(Some(data)) => Some((data, false)),
            Ok(None) | Err(_) => {
                self.response = None;
                Some((Vec::new(), true))
            }
        }
    }

    fn take_arrived(&mut self) -> Option<(Vec<u8>, bool)> {
        None
    }
}

/// The client's request body, fed from hyper by an async task.
struct ClientBody {
    chunks: mpsc::Receiver<Result<Bytes, ()>>,
    empty: bool,
    /// The end (or an abort) has been received but not yet delivered.
    end_seen: bool,
    ended: bool,
    aborted: bool,
}

impl ClientBody {
    /// Appends what has already arrived (never blocks), stopping at the end.
    fn drain_into(&mut self, data: &mut Vec<u8>) {
        while !self.end_seen {
            match self.chunks.try_recv() {
                Ok(item) => self.take(item, data),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.end_seen = true,
            }
        }
    }

    fn take(&mut self, item: Result<Bytes, ()>, data: &mut Vec<u8>) {
        match item {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(()) => {
                self.end_seen = true;
                self.aborted = true;
            }
        }
    }
}

impl BodySource for ClientBody {
    fn is_empty(&self) -> bool {
        self.empty
    }

    /// Like Envoy's HTTP/1 codec, one callback carries everything that has arrived (not one
    /// per HTTP chunk), and the end comes as a separate empty end-of-stream chunk.
    fn next_chunk(&mut self) -> Option<(Vec<u8>, bool)> {
        if self.ended {
            return None;
        }
        let mut data = Vec::new();
        if !self.end_seen {
            match self.chunks.blocking_recv() {
                Some(item) => self.take(item, &mut data),
                None => self.end_seen = true,
            }
            self.drain_into(&mut data);
        }
        if data.is_empty() && self.end_seen {
            self.ended = true;
            return Some((Vec::new(), true));
        }
        Some((data, false))
    }

    fn take_arrived(&mut self) -> Option<(Vec<u8>, bool)> {
        if self.ended {
            return None;
        }
        let mut data = Vec::new();
        self.drain_into(&mut data);
        if data.is_empty() {
            if !self.end_seen {
                return None;
            }
            self.ended = true;
            return Some((Vec::new(), true));
        }
        Some((data, false))
    }

    fn aborted(&self) -> bool {
        self.aborted
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(body: Vec<u8>) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

/// Sends the response head to the waiting hyper service as soon as the filter releases it,
/// then the body through a channel.
struct HyperSink {
    runtime: Handle,
    head: Option<oneshot::Sender<Result<Response<Body>, std::io::Error>>>,
    body: Option<Sender<Bytes, std::io::Error>>,
}

impl ResponseSink for HyperSink {
    fn head(&mut self, status: u16, headers: &Pairs, end_of_stream: bool) {
        let Some(head) = self.head.take() else {
            return;
        };
        let body = if end_of_stream {
            full(Vec::new())
        } else {
            let (sender, channel) = Channel::new(CHUNKS_IN_FLIGHT);
            self.body = Some(sender);
            channel.boxed()
        };
        // The filter's `content-length` frames the body, as in Envoy; hyper checks it.
        let _ = head.send(response(
            status,
            headers,
            &["transfer-encoding", "connection"],
            body,
        ));
    }

    fn data(&mut self, chunk: Vec<u8>) {
        if let Some(sender) = self.body.as_mut() {
            let sent = self.runtime.block_on(sender.send_data(Bytes::from(chunk)));
            if sent.is_err() {
                // The client went away; the filter still sees the rest of the stream.
                self.body = None;
            }
        }
    }
}

fn response(
    status: u16,
    headers: &Pairs,
    skip: &[&str],
    body: Body,
) -> Result<Response<Body>, std::io::Error> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        if skip.iter().any(|s| s.as_bytes() == k.as_slice()) {
            continue;
        }
        builder = builder.header(k.as_slice(), v.as_slice());
    }
    builder.body(body).map_err(std::io::Error::other)
}

/// Copies the client's body into `tx`, one item per batch of frames hyper already has (Envoy's
/// HTTP/1 codec hands the filter what one socket read brought, not one callback per HTTP
/// chunk). Trailers are dropped, as Envoy's HTTP/1 codec does without `enable_trailers`.
async fn feed_request_body(mut body: Incoming, tx: mpsc::Sender<Result<Bytes, ()>>) {
    let mut ended = false;
    while !ended {
        let mut batch = Vec::new();
        let mut failed = false;
        let Some(first) = body.frame().await else {
            return;
        };
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        batch.extend_from_slice(&data);
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            // A zero timeout polls once: frames already parsed are ready, nothing else waits.
            match tokio::time::timeout(Duration::ZERO, body.frame()).await {
                Ok(Some(frame)) => next = Some(frame),
                Ok(None) => ended = true,
                Err(_) => {}
            }
        }
        if !batch.is_empty() && tx.send(Ok(Bytes::from(batch))).await.is_err() {
            return;
        }
        if failed {
            let _ = tx.send(Err(())).await;
            return;
        }
    }
}

async fn handle(
    sim: Arc<Sim>,
    req: Request<Incoming>,
    worker: usize,
    peer: SocketAddr,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        // Envoy's HTTP/1 codec and HCM strip hop-by-hop headers before any filter runs.
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "host"
                    | "connection"
                    | "keep-alive"
                    | "proxy-connection"
                    | "transfer-encoding"
                    | "upgrade"
            )
        })
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let empty = body.is_end_stream();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    if !empty {
        tokio::spawn(feed_request_body(body, tx));
    }
    let mut client_body = ClientBody {
        chunks: rx,
        empty,
        end_seen: empty,
        ended: empty,
        aborted: false,
    };
    let sreq = SimRequest {
        time_ns: None,
        worker,
        downstream_addr: Some(peer.to_string()),
        method: parts.method.as_str().to_string(),
        path,
        authority,
        scheme: "http".into(),
        headers,
        body_chunks: Vec::new(),
        trailers: Vec::new(),
    };
    let (head_tx, head_rx) = oneshot::channel();
    let runtime = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut sink = HyperSink {
            runtime,
            head: Some(head_tx),
            body: None,
        };
        let mut upstream = RealUpstream {
            request_has_body: !empty,
        };
        let resp = sim.handle_streaming(sreq, &mut client_body, &mut upstream, Some(&mut sink));
        finish_response(sink, resp);
    });
    head_rx
        .await
        .map_err(|_| std::io::Error::other("the stream ended without a response"))?
}

/// After the stream: the response if none was streamed, or the end (or abort) of the body.
fn finish_response(mut sink: HyperSink, resp: SimResponse) {
    if let Some(head) = sink.head.take() {
        let reply = if resp.reset {
            // Closing the connection is how a reset looks to an HTTP/1.1 client.
            Err(std::io::Error::other("stream reset by the filter"))
        } else {
            // hyper frames a whole body itself; a stale length from a body-rewriting filter
            // must not leak.
            response(
                resp.status,
                &resp.headers,
                &["content-length", "transfer-encoding", "connection"],
                full(resp.body),
            )
        };
        let _ = head.send(reply);
    } else if (resp.reset || resp.trap.is_some())
        && let Some(sender) = sink.body.take()
    {
        sender.abort(std::io::Error::other(
            "stream reset after the response started",
        ));
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve_on(listener: TcpListener, sim: Arc<Sim>) -> Result<()> {
    let conns = AtomicUsize::new(0);
    loop {
        let (stream, peer) = listener.accept().await?;
        // As Envoy does: a response head and its body must not wait on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        // Like Envoy, a connection is owned by one worker for its lifetime.
        let worker = conns.fetch_add(1, Ordering::Relaxed) % sim.workers();
        let sim = sim.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let sim = sim.clone();
                async move { handle(sim, req, worker, peer).await }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Starts the real-time tick driver for `sim` (stops when the simulator is dropped).
pub fn spawn_ticker(sim: &Arc<Sim>) {
    let weak = Arc::downgrade(sim);
    std::thread::spawn(move || {
        while let Some(sim) = weak.upgrade() {
            sim.tick_real();
            // Filter logs go to stderr as they come (and do not accumulate in memory).
            for l in sim.take_logs() {
                eprintln!("vm{} ctx{} {}: {}", l.vm, l.context_id, l.level, l.message);
            }
            drop(sim);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Binds the listener address from the bootstrap and serves forever.
pub fn run(sim: Sim) -> Result<()> {
    let addr = sim.listener_address().to_string();
    let sim = Arc::new(sim);
    spawn_ticker(&sim);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!(
            "tollgate-sim listening on http://{}",
            listener.local_addr()?
        );
        serve_on(listener, sim).await
    })
}
