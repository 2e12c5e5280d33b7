//! `serve`: real HTTP/1.1 with keep-alive through the filter to a real upstream socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

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

#[test]
fn serves_keep_alive_through_the_filter() {
    let port = origin();
    let text =
        bootstrap_text("headers", "").replace("port_value: 18001", &format!("port_value: {port}"));
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
