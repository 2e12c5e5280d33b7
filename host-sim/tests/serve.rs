//! `serve`: real HTTP/1.1 with keep-alive through the filter to a real upstream socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use tollgate_sim::config::Bootstrap;
use tollgate_sim::{Sim, SimOptions};

fn origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line.starts_with("x-request-id") || line.starts_with("x-dup") {
                    seen.push_str(line.trim());
                    seen.push(';');
                }
            }
            let body = format!("origin saw {} {}", first.trim(), seen);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn read_response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (code, String::from_utf8(body).unwrap())
}

/// `tollgate-sim serve` with the probe in `scenario`, in front of the origin on `port`.
fn start_serve(scenario: &str, port: u16) -> (SocketAddr, Arc<Sim>, tokio::runtime::Runtime) {
    let text =
        bootstrap_text(scenario, "").replace("port_value: 18001", &format!("port_value: {port}"));
    let sim = Sim::new(
        Bootstrap::parse(&text).unwrap(),
        SimOptions {
            workers: 2,
            callouts_use_config_addresses: true,
            ..SimOptions::default()
        },
    )
    .unwrap();
    let sim = Arc::new(sim);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(tollgate_sim::serve::serve_on(listener, sim.clone()));
    (addr, sim, rt)
}

#[test]
fn serves_keep_alive_through_the_filter() {
    let port = origin();
    let (addr, sim, _rt) = start_serve("headers", port);

    let conn = TcpStream::connect(addr).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    for i in 0..2 {
        write!(
            w,
            "GET /k{i} HTTP/1.1\r\nhost: api.example.com\r\nx-dup: a\r\n\r\n"
        )
        .unwrap();
        let (code, body) = read_response(&mut r);
        assert_eq!(code, 200);
        // The filter replaced x-dup with "z" before the request left.
        assert!(
            body.contains(&format!("GET /k{i} HTTP/1.1")) && body.contains("x-dup: z"),
            "{body}"
        );
    }
    let (code, body) = {
        write!(w, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        read_response(&mut r)
    };
    assert_eq!((code, body.as_str()), (200, "ok"));
    // One connection → one worker: streams 2, 3, 4 on the same VM.
    assert!(
        sim.take_logs()
            .iter()
            .any(|l| l.message.starts_with("on_request_headers ctx=4"))
    );
}

/// Generous bound on each hand-off below: it only stops a broken build from hanging the test.
const HAND_OFF: Duration = Duration::from_secs(20);

fn read_chunk(r: &mut impl BufRead) -> Vec<u8> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let size = usize::from_str_radix(size.trim(), 16).unwrap();
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data).unwrap();
    data.truncate(size);
    data
}

fn read_head(r: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            return lines;
        }
        lines.push(line.trim_end().to_ascii_lowercase());
    }
}

/// Each side sends its second chunk only after the far side has seen the first, so the
/// exchange completes only if serve streams both bodies through the filter.
#[test]
fn streams_request_and_response_bodies_through_the_filter() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let (origin_got_first, got_first) = mpsc::channel::<Vec<u8>>();
    let (client_saw_first, saw_first) = mpsc::channel::<()>();
    let (origin_done, done) = mpsc::channel::<(Vec<String>, Vec<u8>, bool)>();
    std::thread::spawn(move || {
        let (s, _) = origin.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let head = read_head(&mut r);
        let mut body = read_chunk(&mut r);
        origin_got_first.send(body.clone()).unwrap();
        loop {
            let chunk = read_chunk(&mut r);
            if chunk.is_empty() {
                break;
            }
            body.extend(chunk);
        }
        write!(
            w,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\npart-one\r\n"
        )
        .unwrap();
        let in_time = saw_first.recv_timeout(HAND_OFF).is_ok();
        write!(w, "8\r\npart-two\r\n0\r\n\r\n").unwrap();
        origin_done.send((head, body, in_time)).unwrap();
    });
    let (addr, sim, _rt) = start_serve("noop", port);

    let conn = TcpStream::connect(addr).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    write!(
        w,
        "POST /upload HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    .unwrap();
    // The origin has the first chunk while the client still holds the rest.
    assert_eq!(got_first.recv_timeout(HAND_OFF).unwrap(), b"hello");
    write!(w, "6\r\n world\r\n0\r\n\r\n").unwrap();

    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let head = read_head(&mut r);
    assert!(
        head.contains(&"transfer-encoding: chunked".to_string()),
        "{head:?}"
    );
    assert_eq!(read_chunk(&mut r), b"part-one");
    // The client has the first response chunk while the origin still holds the rest.
    client_saw_first.send(()).unwrap();
    assert_eq!(read_chunk(&mut r), b"part-two");
    assert!(read_chunk(&mut r).is_empty());

    let (origin_head, origin_body, in_time) = done.recv_timeout(HAND_OFF).unwrap();
    assert!(in_time, "the response was not streamed");
    assert_eq!(origin_body, b"hello world");
    assert!(
        origin_head.contains(&"transfer-encoding: chunked".to_string()),
        "{origin_head:?}"
    );
    // The filter saw each piece as it came, each with end-of-stream false, then an empty
    // end-of-stream chunk (Envoy's HTTP/1 codec).
    let logs: Vec<String> = sim.take_logs().into_iter().map(|l| l.message).collect();
    let sizes = |what: &str| -> Vec<String> {
        logs.iter()
            .filter(|m| m.starts_with(what))
            .map(|m| m.split(' ').skip(2).take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        sizes("on_request_body"),
        ["size=5 eos=false", "size=6 eos=false", "size=0 eos=true"],
        "{logs:#?}"
    );
    assert_eq!(
        sizes("on_response_body"),
        ["size=8 eos=false", "size=8 eos=false", "size=0 eos=true"],
        "{logs:#?}"
    );
}

/// A client that breaks off mid-body must not leave the origin with a request that looks
/// complete.
#[test]
fn a_client_abort_mid_body_never_completes_the_upstream_request() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let (origin_result, result) = mpsc::channel::<(Vec<u8>, bool)>();
    std::thread::spawn(move || {
        let (s, _) = origin.accept().unwrap();
        let mut r = BufReader::new(s);
        read_head(&mut r);
        let first = read_chunk(&mut r);
        // The next read ends at the connection's close instead of a terminating chunk.
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        let completed = rest.ends_with(b"0\r\n\r\n");
        origin_result.send((first, completed)).unwrap();
    });
    let (addr, _sim, _rt) = start_serve("noop", port);
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST /upload HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    .unwrap();
    conn.flush().unwrap();
    drop(conn);
    let (first, completed) = result.recv_timeout(HAND_OFF).unwrap();
    assert_eq!(first, b"hello");
    assert!(!completed, "the origin saw a terminating chunk");
}
