//! A small blocking HTTP/1.1 client for callouts and upstream requests (one connection per
//! request, `connection: close`). Blocking keeps the VM-driving code synchronous, which is what
//! makes replay deterministic; serve runs it on blocking threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::abi::pairs::Pairs;

/// Larger responses are treated as a reset (Envoy: over the buffer limit).
const MAX_BODY: usize = 64 << 20;

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

/// Sends one request to `addr` (`host:port`).
pub fn send(
    addr: &str,
    req: Request<'_>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<HttpResponse, HttpError> {
    let Request {
        method,
        path,
        authority,
        headers,
        body,
    } = req;
    let start = Instant::now();
    let sock = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(HttpError::ConnectFailure)?;
    let mut stream =
        TcpStream::connect_timeout(&sock, connect_timeout).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => HttpError::Timeout,
            _ => HttpError::ConnectFailure,
        })?;
    let remaining = |start: Instant| -> Result<Option<Duration>, HttpError> {
        match timeout {
            None => Ok(None),
            Some(t) => t
                .checked_sub(start.elapsed())
                .filter(|d| !d.is_zero())
                .map(Some)
                .ok_or(HttpError::Timeout),
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(remaining(start)?);
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
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
        req.extend_from_slice(k);
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    if !has_length && (!body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS"))
    {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"connection: close\r\n\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req).map_err(|_| HttpError::Reset)?;
    let io_err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Reset,
    };
    let _ = stream.set_read_timeout(remaining(start)?);
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io_err)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Reset)?;
    let mut resp = HttpResponse {
        status,
        ..Default::default()
    };
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(io_err)?;
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
            content_length = v.parse::<usize>().ok();
        }
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
            continue;
        }
        if k == "connection" {
            continue;
        }
        resp.headers.push((k.into_bytes(), v.into_bytes()));
    }
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(resp);
    }
    if chunked {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line).map_err(io_err)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| HttpError::Reset)?;
            if size == 0 {
                break;
            }
            if resp.body.len().saturating_add(size) > MAX_BODY {
                return Err(HttpError::Reset);
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk).map_err(io_err)?;
            resp.body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).map_err(io_err)?;
        }
        resp.headers.push((
            b"content-length".to_vec(),
            resp.body.len().to_string().into_bytes(),
        ));
    } else if let Some(n) = content_length {
        if n > MAX_BODY {
            return Err(HttpError::Reset);
        }
        resp.body = vec![0u8; n];
        r.read_exact(&mut resp.body).map_err(io_err)?;
    } else {
        r.take(MAX_BODY as u64 + 1)
            .read_to_end(&mut resp.body)
            .map_err(io_err)?;
        if resp.body.len() > MAX_BODY {
            return Err(HttpError::Reset);
        }
    }
    Ok(resp)
}
