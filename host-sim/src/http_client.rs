//! A small blocking HTTP/1.1 client for callouts and upstream requests. Blocking keeps the
//! VM-driving code synchronous, which is what makes replay deterministic; serve runs it on
//! blocking threads. Requests without a body reuse idle keep-alive connections (as Envoy's
//! connection pools do); requests with a body get a fresh connection and `connection: close`,
//! so a stale pooled connection never costs a body that cannot be sent again. An exchange streams: the head
//! goes out at [`open`], the body as it is written, and the response body is read chunk by chunk.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::abi::pairs::Pairs;

/// Larger responses are treated as a reset (Envoy: over the buffer limit) when read whole.
const MAX_BODY: usize = 64 << 20;
/// Largest piece handed on from a streamed response body.
const READ_CHUNK: usize = 64 << 10;
/// Idle keep-alive connections kept per upstream address.
const IDLE_PER_ADDRESS: usize = 64;

/// Idle keep-alive connections by `host:port`.
static IDLE: LazyLock<Mutex<HashMap<String, Vec<TcpStream>>>> = LazyLock::new(Default::default);

fn take_idle(addr: &str) -> Option<TcpStream> {
    crate::shared::lock(&IDLE).get_mut(addr)?.pop()
}

fn put_idle(addr: &str, stream: TcpStream) {
    let mut idle = crate::shared::lock(&IDLE);
    let list = idle.entry(addr.to_string()).or_default();
    if list.len() < IDLE_PER_ADDRESS {
        list.push(stream);
    }
}

fn connect(addr: &str, connect_timeout: Duration) -> Result<TcpStream, HttpError> {
    let sock = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(HttpError::ConnectFailure)?;
    let stream =
        TcpStream::connect_timeout(&sock, connect_timeout).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => HttpError::Timeout,
            _ => HttpError::ConnectFailure,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    ConnectFailure,
    Timeout,
    /// Connected, but the exchange broke (reset, malformed response).
    Reset,
}

#[derive(Clone, Debug, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Pairs,
    pub body: Vec<u8>,
}

/// One outgoing request. `headers` must not contain pseudo-headers.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub headers: &'a Pairs,
    pub body: &'a [u8],
}

/// How a streamed request body is framed when the headers carry no `content-length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `content-length: N` (the whole body is known).
    Length(usize),
    /// `transfer-encoding: chunked` (the body is still arriving).
    Chunked,
}

/// Sends one whole request to `addr` (`host:port`) and reads the whole response.
pub fn send(
    addr: &str,
    req: Request<'_>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<HttpResponse, HttpError> {
    let mut exchange = open(
        addr,
        req,
        Framing::Length(req.body.len()),
        connect_timeout,
        timeout,
    )?;
    exchange.write(req.body)?;
    let mut response = exchange.finish()?;
    let was_chunked = response.is_chunked();
    let mut body = Vec::new();
    while let Some(chunk) = response.read_chunk()? {
        if body.len().saturating_add(chunk.len()) > MAX_BODY {
            return Err(HttpError::Reset);
        }
        body.extend_from_slice(&chunk);
    }
    let mut headers = response.headers;
    if was_chunked {
        headers.push((
            b"content-length".to_vec(),
            body.len().to_string().into_bytes(),
        ));
    }
    Ok(HttpResponse {
        status: response.status,
        headers,
        body,
    })
}

/// An upstream request whose head has been sent; the body follows with [`Exchange::write`].
pub struct Exchange {
    stream: TcpStream,
    chunked: bool,
    head_request: bool,
    deadline: Deadline,
    /// The address to return the connection to after a complete keep-alive response.
    pool: Option<String>,
    /// Set when the head went out on a pooled connection: the head, to send again on a fresh
    /// connection if the pooled one was closed by the origin meanwhile.
    retry: Option<(Vec<u8>, Duration)>,
}

#[derive(Clone, Copy)]
struct Deadline {
    start: Instant,
    timeout: Option<Duration>,
}

impl Deadline {
    fn remaining(self) -> Result<Option<Duration>, HttpError> {
        match self.timeout {
            None => Ok(None),
            Some(t) => t
                .checked_sub(self.start.elapsed())
                .filter(|d| !d.is_zero())
                .map(Some)
                .ok_or(HttpError::Timeout),
        }
    }
}

fn io_error(e: std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Reset,
    }
}

/// Connects and sends the request head (`req.body` is not sent). `framing` applies when the
/// headers carry no `content-length`.
pub fn open(
    addr: &str,
    req: Request<'_>,
    framing: Framing,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<Exchange, HttpError> {
    let deadline = Deadline {
        start: Instant::now(),
        timeout,
    };
    let Request {
        method,
        path,
        authority,
        headers,
        ..
    } = req;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
    // Like Envoy's upstream codec, a `content-length` in the (filtered) headers frames the
    // request as it says, even when a filter changed the body's length without fixing it: the
    // origin then reads that many bytes (differential suite: `buffer edits`).
    let mut has_length = false;
    for (k, v) in headers {
        let lk = k.to_ascii_lowercase();
        if lk == b"host" || lk == b"connection" || lk == b"transfer-encoding" {
            continue;
        }
        if lk == b"content-length" {
            if has_length {
                continue;
            }
            has_length = true;
        }
        head.extend_from_slice(k);
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    let bodyless_method = matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS");
    let chunked = !has_length && framing == Framing::Chunked;
    match framing {
        _ if has_length => {}
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) if n > 0 || !bodyless_method => {
            head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        Framing::Length(_) => {}
    }
    // Only a request without a body may go out again on a fresh connection when a pooled one
    // turns out to be stale.
    let reusable = !has_length && framing == Framing::Length(0);
    if !reusable {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let (stream, retry) = match reusable.then(|| take_idle(addr)).flatten() {
        Some(mut pooled) => {
            let _ = pooled.set_write_timeout(deadline.remaining()?);
            match pooled.write_all(&head) {
                Ok(()) => (pooled, Some((head, connect_timeout))),
                Err(_) => (send_head(addr, &head, connect_timeout, deadline)?, None),
            }
        }
        None => (send_head(addr, &head, connect_timeout, deadline)?, None),
    };
    Ok(Exchange {
        stream,
        chunked,
        head_request: method == "HEAD",
        deadline,
        pool: reusable.then(|| addr.to_string()),
        retry,
    })
}

fn send_head(
    addr: &str,
    head: &[u8],
    connect_timeout: Duration,
    deadline: Deadline,
) -> Result<TcpStream, HttpError> {
    let mut stream = connect(addr, connect_timeout)?;
    let _ = stream.set_write_timeout(deadline.remaining()?);
    stream.write_all(head).map_err(|_| HttpError::Reset)?;
    Ok(stream)
}

/// Reads a status line; `Ok(None)` when the connection ended before any byte of it.
fn read_status_line(r: &mut BufReader<TcpStream>) -> Result<Option<String>, HttpError> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(line)),
        Err(e)
            if line.is_empty()
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_error(e)),
    }
}

impl Exchange {
    /// Sends body data.
    pub fn write(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if data.is_empty() {
            return Ok(());
        }
        let _ = self.stream.set_write_timeout(self.deadline.remaining()?);
        if self.chunked {
            let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            self.stream.write_all(&framed)
        } else {
            self.stream.write_all(data)
        }
        .map_err(|_| HttpError::Reset)
    }

    /// Ends the request body and reads the response head.
    pub fn finish(mut self) -> Result<ResponseStream, HttpError> {
        if self.chunked {
            self.stream
                .write_all(b"0\r\n\r\n")
                .map_err(|_| HttpError::Reset)?;
        }
        let _ = self.stream.set_read_timeout(self.deadline.remaining()?);
        let mut r = BufReader::with_capacity(READ_CHUNK, self.stream);
        let mut line = read_status_line(&mut r)?;
        if line.is_none()
            && let (Some((head, connect_timeout)), Some(addr)) = (self.retry.take(), &self.pool)
        {
            let stream = send_head(addr, &head, connect_timeout, self.deadline)?;
            let _ = stream.set_read_timeout(self.deadline.remaining()?);
            r = BufReader::with_capacity(READ_CHUNK, stream);
            line = read_status_line(&mut r)?;
        }
        let line = line.ok_or(HttpError::Reset)?;
        let keep_alive = line.starts_with("HTTP/1.1");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(HttpError::Reset)?;
        let mut headers = Pairs::new();
        let mut content_length = None;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).map_err(io_error)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                return Err(HttpError::Reset);
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            if k == "content-length" {
                content_length = v.parse::<u64>().ok();
            }
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
                continue;
            }
            if k == "connection" {
                if v.eq_ignore_ascii_case("close") {
                    self.pool = None;
                }
                continue;
            }
            headers.push((k.into_bytes(), v.into_bytes()));
        }
        if !keep_alive {
            self.pool = None;
        }
        let body = if self.head_request || status == 204 || status == 304 {
            BodyFraming::Done
        } else if chunked {
            BodyFraming::Chunked { left_in_chunk: 0 }
        } else if let Some(n) = content_length {
            if n == 0 {
                BodyFraming::Done
            } else {
                BodyFraming::Length(n)
            }
        } else {
            BodyFraming::UntilClose
        };
        if matches!(body, BodyFraming::UntilClose) {
            self.pool = None;
        }
        let mut response = ResponseStream {
            status,
            headers,
            reader: r,
            body,
            deadline: self.deadline,
            pool: self.pool,
        };
        response.release_if_done();
        Ok(response)
    }
}

enum BodyFraming {
    Length(u64),
    Chunked { left_in_chunk: usize },
    UntilClose,
    Done,
}

/// A response whose head has been read; the body is read chunk by chunk.
pub struct ResponseStream {
    pub status: u16,
    /// Without `transfer-encoding` and `connection` (hop-by-hop).
    pub headers: Pairs,
    reader: BufReader<TcpStream>,
    body: BodyFraming,
    deadline: Deadline,
    pool: Option<String>,
}

impl ResponseStream {
    /// A keep-alive response read to its end gives its connection back for the next request
    /// (a duplicate handle: the socket stays open when this one is dropped).
    fn release_if_done(&mut self) {
        if matches!(self.body, BodyFraming::Done)
            && self.reader.buffer().is_empty()
            && let Some(addr) = self.pool.take()
            && let Ok(stream) = self.reader.get_ref().try_clone()
        {
            put_idle(&addr, stream);
        }
    }

    /// The response has no body at all.
    pub fn is_bodyless(&self) -> bool {
        matches!(self.body, BodyFraming::Done)
    }

    fn is_chunked(&self) -> bool {
        matches!(self.body, BodyFraming::Chunked { .. })
    }

    /// The next piece of the body as it arrives (at most 64 KiB); `None` at its end.
    pub fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(self.deadline.remaining()?);
        match &mut self.body {
            BodyFraming::Done => Ok(None),
            BodyFraming::Length(left) => {
                let want = (*left).min(READ_CHUNK as u64) as usize;
                let got = read_some(&mut self.reader, want)?;
                if got.is_empty() {
                    // The origin closed before the promised length: a reset.
                    return Err(HttpError::Reset);
                }
                *left -= got.len() as u64;
                if *left == 0 {
                    self.body = BodyFraming::Done;
                    self.release_if_done();
                }
                Ok(Some(got))
            }
            BodyFraming::UntilClose => {
                let got = read_some(&mut self.reader, READ_CHUNK)?;
                if got.is_empty() {
                    self.body = BodyFraming::Done;
                    return Ok(None);
                }
                Ok(Some(got))
            }
            BodyFraming::Chunked { left_in_chunk } => {
                if *left_in_chunk == 0 {
                    let mut size_line = String::new();
                    self.reader.read_line(&mut size_line).map_err(io_error)?;
                    let size =
                        usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                            .map_err(|_| HttpError::Reset)?;
                    if size == 0 {
                        // Trailers (ignored) up to the empty line.
                        loop {
                            let mut t = String::new();
                            let n = self.reader.read_line(&mut t).map_err(io_error)?;
                            if n == 0 || t.trim_end().is_empty() {
                                break;
                            }
                        }
                        self.body = BodyFraming::Done;
                        self.release_if_done();
                        return Ok(None);
                    }
                    *left_in_chunk = size;
                }
                let want = (*left_in_chunk).min(READ_CHUNK);
                let got = read_some(&mut self.reader, want)?;
                if got.is_empty() {
                    return Err(HttpError::Reset);
                }
                *left_in_chunk -= got.len();
                if *left_in_chunk == 0 {
                    let mut crlf = [0u8; 2];
                    self.reader.read_exact(&mut crlf).map_err(io_error)?;
                }
                Ok(Some(got))
            }
        }
    }
}

/// Reads what is available, up to `max` bytes (blocking until at least one byte or the end).
fn read_some(r: &mut BufReader<TcpStream>, max: usize) -> Result<Vec<u8>, HttpError> {
    let available = r.fill_buf().map_err(io_error)?;
    let n = available.len().min(max);
    let out = available[..n].to_vec();
    r.consume(n);
    Ok(out)
}
