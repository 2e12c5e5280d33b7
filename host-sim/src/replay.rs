//! `tollgate-sim replay`: JSON Lines in, one JSON line out per request, deterministic.

use std::io::{BufRead, Write};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::abi::pairs::Pairs;
use crate::config::Bootstrap;
use crate::sim::{
    Sim, SimOptions, SimRequest, SimResponse, Upstream, UpstreamReply, UpstreamRequest,
};

/// One input line (see host-sim-contract.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputLine {
    pub time_ms: Option<u64>,
    pub worker: Option<usize>,
    pub downstream_addr: Option<String>,
    pub request: InputRequest,
    pub upstream: Option<InputUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRequest {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub body_base64: Option<String>,
    /// Extension: the body as separate codec chunks (to exercise buffering).
    pub body_chunks: Option<Vec<String>>,
    #[serde(default)]
    pub trailers: Vec<(String, String)>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_authority() -> String {
    "localhost".into()
}
fn default_scheme() -> String {
    "http".into()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InputUpstream {
    Error {
        error: String,
    },
    Response {
        #[serde(default = "default_status")]
        status: u16,
        #[serde(default)]
        headers: Vec<(String, String)>,
        body: Option<String>,
        body_base64: Option<String>,
        #[serde(default)]
        trailers: Vec<(String, String)>,
    },
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Serialize)]
pub struct OutputUpstreamRequest {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// One output line. Field names are part of the public contract: add, never rename.
#[derive(Debug, Serialize)]
pub struct OutputLine {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub upstream_called: bool,
    pub upstream_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_request: Option<OutputUpstreamRequest>,
    pub local_reply: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trap: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn body_of(text: Option<&String>, b64_text: Option<&String>) -> Result<Vec<u8>> {
    if let Some(b) = b64_text {
        return base64::engine::general_purpose::STANDARD
            .decode(b)
            .context("body_base64");
    }
    Ok(text.map(|s| s.as_bytes().to_vec()).unwrap_or_default())
}

fn pairs(v: &[(String, String)]) -> Pairs {
    v.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn text_pairs(p: &Pairs) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

/// Body as text, plus base64 when it is not UTF-8.
fn text_body(b: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), Some(b64(b))),
    }
}

/// The replay origin: answers with the line's `upstream`.
pub struct StubUpstream(pub Option<UpstreamReply>);

impl Upstream for StubUpstream {
    fn send(&mut self, _req: &UpstreamRequest, _address: Option<&str>) -> UpstreamReply {
        self.0.clone().unwrap_or(UpstreamReply::Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        })
    }
}

impl InputLine {
    pub fn parse(line: &str) -> Result<InputLine> {
        serde_json::from_str(line).context("invalid input line")
    }

    /// Splits the line into the simulator's request and the origin's reply.
    pub fn into_parts(self) -> Result<(SimRequest, Option<UpstreamReply>)> {
        let r = self.request;
        let body_chunks = match (&r.body_chunks, r.body.is_some() || r.body_base64.is_some()) {
            (Some(chunks), _) => chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
            (None, true) => vec![body_of(r.body.as_ref(), r.body_base64.as_ref())?],
            (None, false) => Vec::new(),
        };
        let req = SimRequest {
            time_ns: self.time_ms.map(|t| t.saturating_mul(1_000_000)),
            worker: self.worker.unwrap_or(0),
            downstream_addr: self.downstream_addr,
            method: r.method,
            path: r.path,
            authority: r.authority,
            scheme: r.scheme,
            headers: pairs(&r.headers),
            body_chunks,
            trailers: pairs(&r.trailers),
        };
        let up = match self.upstream {
            None => None,
            Some(InputUpstream::Error { error }) => Some(match error.as_str() {
                "connect_failure" => UpstreamReply::ConnectFailure,
                "timeout" => UpstreamReply::Timeout,
                other => anyhow::bail!(
                    "upstream.error: unknown value {other:?} (connect_failure or timeout)"
                ),
            }),
            Some(InputUpstream::Response {
                status,
                headers,
                body,
                body_base64,
                trailers,
            }) => Some(UpstreamReply::Response {
                status,
                headers: pairs(&headers),
                body: body_of(body.as_ref(), body_base64.as_ref())?,
                trailers: pairs(&trailers),
            }),
        };
        Ok((req, up))
    }
}

impl OutputLine {
    pub fn from_response(r: SimResponse) -> OutputLine {
        let (body, body_base64) = text_body(&r.body);
        OutputLine {
            status: r.status,
            headers: text_pairs(&r.headers),
            body,
            body_base64,
            upstream_called: r.upstream_called,
            upstream_cluster: r.upstream_cluster,
            upstream_request: r.upstream_request.map(|u| {
                let (body, body_base64) = text_body(&u.body);
                OutputUpstreamRequest {
                    method: u.method,
                    path: u.path,
                    authority: u.authority,
                    headers: text_pairs(&u.headers),
                    body,
                    body_base64,
                }
            }),
            local_reply: r.local_reply,
            trap: r.trap,
            reset: r.reset,
            logs: None,
            error: None,
        }
    }

    fn error(msg: String) -> OutputLine {
        OutputLine {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
            body_base64: None,
            upstream_called: false,
            upstream_cluster: None,
            upstream_request: None,
            local_reply: false,
            trap: None,
            reset: false,
            logs: None,
            error: Some(msg),
        }
    }
}

/// Replay options beyond the simulator's.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    pub sim: SimOptions,
    /// Put each request's log lines into its output line (`"logs"`) instead of stderr.
    pub include_logs: bool,
}

fn format_log(l: &crate::LogLine) -> String {
    format!("vm{} ctx{} {}: {}", l.vm, l.context_id, l.level, l.message)
}

/// Runs every input line through a fresh simulator and writes one output line per input line.
/// Lines that fail to parse produce `{"error": ...}` so output stays aligned with input.
pub fn replay(
    bootstrap: Bootstrap,
    mut opts: ReplayOptions,
    input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> Result<()> {
    let lines: Vec<String> = input
        .lines()
        .collect::<std::io::Result<_>>()
        .context("reading input")?;
    let lines: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    // Virtual time starts at the first line's time so configure-time timers line up.
    if opts.sim.start_time_ns.is_none() {
        opts.sim.start_time_ns = lines
            .iter()
            .find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()?
                    .get("time_ms")?
                    .as_u64()
            })
            .map(|t| t.saturating_mul(1_000_000));
    }
    let sim = Sim::new(bootstrap, opts.sim.clone())?;
    for l in sim.take_logs() {
        writeln!(err, "{}", format_log(&l))?;
    }
    for (i, line) in lines.iter().enumerate() {
        let parsed = InputLine::parse(line).and_then(InputLine::into_parts);
        let mut o = match parsed {
            Err(e) => OutputLine::error(format!("line {}: {e:#}", i + 1)),
            Ok((req, up)) => OutputLine::from_response(sim.handle(req, &mut StubUpstream(up))),
        };
        let logs: Vec<String> = sim.take_logs().iter().map(format_log).collect();
        if opts.include_logs {
            o.logs = Some(logs);
        } else {
            for l in logs {
                writeln!(err, "{l}")?;
            }
        }
        serde_json::to_writer(&mut out, &o)?;
        out.write_all(b"\n")?;
    }
    sim.shutdown();
    for l in sim.take_logs() {
        writeln!(err, "{}", format_log(&l))?;
    }
    out.flush()?;
    Ok(())
}
