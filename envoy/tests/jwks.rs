//! Remote JWKS in real Envoy: a small JWKS server on loopback (a static cluster in the
//! bootstrap) is fetched by the filter's root context, once for the node; it rotates its
//! keys (a token with the new `kid` triggers a refetch) and then goes down (the last good
//! set is used while it is stale, then the answer is 503 `keys_unavailable`).
//! Short refresh and stale bounds keep the wall time to seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate_envoy_tests::{BackgroundOrigin, Envoy, EnvoyConfig, HttpResponse};

const ISSUER: &str = "https://idp.e2e";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secret(kid: &str) -> Vec<u8> {
    format!("{kid}-e2e-secret-0123456789abcdef0123").into_bytes()
}

fn jwks(kids: &[&str]) -> String {
    let keys: Vec<String> = kids
        .iter()
        .map(|k| {
            format!(
                r#"{{"kty":"oct","kid":"{k}","alg":"HS256","k":"{}"}}"#,
                B64.encode(secret(k))
            )
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn token(kid: &str, sub: &str) -> String {
    let n = now();
    let input = format!(
        "{}.{}",
        B64.encode(format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#)),
        B64.encode(format!(
            r#"{{"iss":"{ISSUER}","sub":"{sub}","iat":{},"exp":{}}}"#,
            n - 5,
            n + 600
        ))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret(kid)).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// A one-document JWKS server: answers every GET with the current document and
/// `Cache-Control`, counts requests, and can be stopped (its port then refuses).
struct JwksServer {
    port: u16,
    document: Arc<Mutex<(String, String)>>,
    requests: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    fn start(body: String, cache_control: &str) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let document = Arc::new(Mutex::new((body, cache_control.to_string())));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (doc, reqs, stop) = (document.clone(), requests.clone(), down.clone());
        let thread = std::thread::spawn(move || {
            // Dropping the listener when stopped closes the port: connections are refused.
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &doc, &reqs),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        JwksServer {
            port,
            document,
            requests,
            down,
            thread: Some(thread),
        }
    }

    fn set(&self, body: String, cache_control: &str) {
        *self.document.lock().unwrap() = (body, cache_control.to_string());
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn go_down(&mut self) {
        self.down.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.go_down();
    }
}

fn serve(mut stream: TcpStream, doc: &Mutex<(String, String)>, reqs: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or("").to_string();
    let host = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("host: ")
                .or_else(|| l.strip_prefix("Host: "))
        })
        .unwrap_or("")
        .to_string();
    reqs.lock().unwrap().push(format!("{line} host={host}"));
    let (body, cache_control) = doc.lock().unwrap().clone();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache_control}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

fn get(envoy: &Envoy, bearer: &str) -> HttpResponse {
    envoy
        .get("/v1/x", &[("authorization", &format!("Bearer {bearer}"))])
        .unwrap()
}

/// Polls with fresh tokens (never cached) until `status` comes back; bounded.
fn wait_for_status(envoy: &Envoy, kid: &str, status: u16, within: Duration) -> HttpResponse {
    let deadline = Instant::now() + within;
    let mut n = 0;
    loop {
        n += 1;
        let resp = get(envoy, &token(kid, &format!("poll-{kid}-{status}-{n}")));
        if resp.status == status || Instant::now() >= deadline {
            return resp;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .wasmcustom_stats()
        .unwrap()
        .get(&format!("wasmcustom.{name}"))
        .copied()
        .unwrap_or(0)
}

#[test]
fn keys_are_fetched_once_rotate_by_kid_and_go_stale_when_the_idp_is_down() {
    let mut idp = JwksServer::start(jwks(&["k1"]), "max-age=300");
    let origin = BackgroundOrigin::start("origin").unwrap();
    let policy = format!(
        r#"
version: 1
auth:
  jwt_providers:
    - name: idp
      issuer: {ISSUER}
      algorithms: [HS256]
      jwks:
        remote:
          cluster: jwks
          path: /.well-known/jwks.json
          timeout_ms: 1000
          min_refresh_seconds: 1
          max_stale_seconds: 8
          unknown_kid_refetch_seconds: 1
routes:
  - {{ name: api, cluster: origin, auth: {{ accept: [idp] }} }}
"#
    );
    let config = EnvoyConfig::new("auth-jwks", &policy)
        .unwrap()
        .concurrency(2)
        .cluster("origin", origin.port())
        .cluster("jwks", idp.port);
    let envoy = Envoy::start(&config).unwrap();

    // Keys arrive shortly after start (the first timer tick); until then: 503.
    let first = wait_for_status(&envoy, "k1", 200, Duration::from_secs(15));
    assert_eq!(first.status, 200, "{}", first.body);
    // The same token on many connections (both workers): verified once for the node.
    let t1 = token("k1", "u1");
    let checks = stat(&envoy, "tollgate_auth_signature_checks_total");
    for _ in 0..8 {
        assert_eq!(get(&envoy, &t1).status, 200);
    }
    assert_eq!(
        stat(&envoy, "tollgate_auth_signature_checks_total") - checks,
        1
    );
    // Two workers and the main-thread VM all tick; one fetched for all of them.
    assert_eq!(
        idp.requests(),
        vec!["GET /.well-known/jwks.json HTTP/1.1 host=idp.e2e".to_string()],
    );
    assert_eq!(stat(&envoy, "tollgate_jwks_fetches_total"), 1);

    // Rotation: the IdP adds k2 and signs with it. The first k2 token is refused (401)
    // and triggers one refetch; k2 tokens verify once the new set is in.
    idp.set(jwks(&["k1", "k2"]), "max-age=1");
    let refused = get(&envoy, &token("k2", "u2"));
    assert_eq!(refused.status, 401, "{}", refused.body);
    let rotated = wait_for_status(&envoy, "k2", 200, Duration::from_secs(10));
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(stat(&envoy, "tollgate_jwks_unknown_kid_refetches_total") >= 1);
    assert!(idp.requests().len() >= 2);

    // The IdP goes down. Refreshes (every second now) fail; the last good set is used
    // until 8 s past its refresh time, then keys are unavailable: 503, not 401.
    idp.go_down();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&envoy, "tollgate_jwks_fetch_failures_total") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stat(&envoy, "tollgate_jwks_fetch_failures_total") >= 1);
    let stale = get(&envoy, &token("k2", "u-stale"));
    assert_eq!(stale.status, 200, "stale keys still verify: {}", stale.body);
    let gone = wait_for_status(&envoy, "k2", 503, Duration::from_secs(20));
    assert_eq!(gone.status, 503, "{}", gone.body);
    assert_eq!(gone.json().unwrap()["error"], "keys_unavailable");
    assert_eq!(gone.header("retry-after"), Some("5"));
    // A token verified earlier stays valid until it expires (node-wide cache).
    assert_eq!(get(&envoy, &t1).status, 200);
    // A forged token is still "invalid", not "unavailable".
    assert_eq!(get(&envoy, "e30.e30.c2ln").status, 401);
    assert!(stat(&envoy, "tollgate_auth_keys_unavailable_total") >= 1);
}
