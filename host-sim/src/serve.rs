//! `tollgate-sim serve`: a real HTTP/1.1 (keep-alive) gateway on the bootstrap's listener.
//! Requests run on blocking threads (a VM is single-threaded and guarded by its slot mutex);
//! upstream requests and callouts use real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::http_client::{self, HttpError};
use crate::sim::{Sim, SimRequest, Upstream, UpstreamReply, UpstreamRequest};

/// Real sockets to the cluster's first endpoint.
pub struct RealUpstream;

impl Upstream for RealUpstream {
    fn send(&mut self, req: &UpstreamRequest, address: Option<&str>) -> UpstreamReply {
        let Some(addr) = address else {
            return UpstreamReply::ConnectFailure;
        };
        let r = http_client::Request {
            method: &req.method,
            path: &req.path,
            authority: &req.authority,
            headers: &req.headers,
            body: &req.body,
        };
        let timeout = (!req.timeout.is_zero()).then_some(req.timeout);
        match http_client::send(addr, r, Duration::from_secs(5), timeout) {
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
}

type Body = Full<Bytes>;

async fn handle(
    sim: Arc<Sim>,
    req: Request<Incoming>,
    worker: usize,
    peer: SocketAddr,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
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
    let sreq = SimRequest {
        time_ns: None,
        worker,
        downstream_addr: Some(peer.to_string()),
        method: parts.method.as_str().to_string(),
        path,
        authority,
        scheme: "http".into(),
        headers,
        // As Envoy's HTTP/1 codec: the data (eos=false), then an empty end-of-stream chunk.
        body_chunks: if body.is_empty() {
            Vec::new()
        } else {
            vec![body.to_vec(), Vec::new()]
        },
        trailers: Vec::new(),
    };
    let resp = tokio::task::spawn_blocking(move || sim.handle(sreq, &mut RealUpstream))
        .await
        .map_err(std::io::Error::other)?;
    if resp.reset {
        // Closing the connection is how a reset looks to an HTTP/1.1 client.
        return Err(std::io::Error::other("stream reset by the filter"));
    }
    let mut builder = Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        // hyper frames the body itself; a stale length from a body-rewriting filter must not leak.
        if matches!(
            k.as_slice(),
            b"content-length" | b"transfer-encoding" | b"connection"
        ) {
            continue;
        }
        builder = builder.header(k.as_slice(), v.as_slice());
    }
    builder
        .body(Full::new(Bytes::from(resp.body)))
        .map_err(std::io::Error::other)
}

/// Serves `listener` until the task is dropped.
pub async fn serve_on(listener: TcpListener, sim: Arc<Sim>) -> Result<()> {
    let conns = AtomicUsize::new(0);
    loop {
        let (stream, peer) = listener.accept().await?;
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
