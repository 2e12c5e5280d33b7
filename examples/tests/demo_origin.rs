//! The `demo-origin` binary's contract: port 0 picks a port and the first stdout line says
//! which; the server answers with the echo.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_zero_prints_the_address_and_serves_the_echo() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_demo-origin"))
            .args(["--listen", "127.0.0.1:0", "--name", "bin"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Read on a thread so a silent binary fails the test after a timeout, not hangs it.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"));
    assert!(!addr.ends_with(":0"), "{addr}");

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v1/refunds/u9 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("cache-control: max-age=300"), "{resp}");
    assert!(resp.contains(r#""origin":"bin""#), "{resp}");
    assert!(resp.contains(r#""user":"u9""#), "{resp}");
}
