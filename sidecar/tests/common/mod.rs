//! Shared harness and store-agnostic behaviour scenarios. `embedded.rs` and `redis.rs`
//! run every scenario against their store; each test starts its own sidecar process
//! (and Redis), all on loopback, all killed on Drop.

// Each test crate uses a different subset of the helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const MINUTE: u64 = 60_000;
const START_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A fresh directory under the system temp dir, removed on Drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "tollgate-sidecar-{label}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            now_ms()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `tollgate-sidecar` child process; killed (SIGKILL) and reaped on Drop.
pub struct Sidecar {
    child: Child,
    pub base: String,
}

impl Sidecar {
    pub fn start(args: &[&str]) -> Self {
        // TOLLGATE_SIDECAR_BIN: another build to measure side by side with this one.
        let bin = std::env::var_os("TOLLGATE_SIDECAR_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tollgate-sidecar").into());
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate-sidecar");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) if l.starts_with("listening on http://") => l,
            other => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                panic!("sidecar did not start ({other:?}); stderr:\n{err}");
            }
        };
        let base = line.trim().trim_start_matches("listening on ").to_owned();
        Self { child, base }
    }

    pub fn embedded(dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--data", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// `kill -9`: no graceful shutdown, no flush beyond what was committed.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway `redis-server` on a free loopback port, no persistence; killed on Drop.
pub struct Redis {
    child: Child,
    pub url: String,
}

impl Redis {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: run scripts/install-redis.sh (the --redis \
                 behaviour tests need a real Redis)"
            ),
            Err(e) => panic!("spawn redis-server: {e}"),
        };
        let mut redis = Self {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return redis;
                }
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Resp {
    pub status: u16,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts a JSON error answer with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let v = self.json();
        assert_eq!(v["error"], code, "{}", self.text);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

pub fn request(method: &str, url: &str, body: Option<Vec<u8>>) -> Resp {
    try_request(method, url, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`request`], but a transport failure (refused, reset) is an `Err`.
pub fn try_request(method: &str, url: &str, body: Option<Vec<u8>>) -> Result<Resp, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .proxy(None)
        .max_redirects(0)
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.unwrap_or_default())
        .unwrap();
    let mut resp = agent.run(req)?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    Ok(Resp { status, text })
}

pub fn send(method: &str, url: &str, body: &Value) -> Resp {
    request(method, url, Some(serde_json::to_vec(body).unwrap()))
}

/// Test access to a running sidecar (or, for Redis, a fleet of them).
pub struct Harness {
    pub sidecars: Vec<Sidecar>,
    // Kept for Drop order: sidecars first, then their store.
    _redis: Option<Redis>,
    _dir: Option<TempDir>,
}

impl Harness {
    pub fn embedded() -> Self {
        let dir = TempDir::new("embedded");
        let s = Sidecar::embedded(&dir.0, &[]);
        Self {
            sidecars: vec![s],
            _redis: None,
            _dir: Some(dir),
        }
    }

    pub fn redis(instances: usize) -> Self {
        let redis = Redis::start();
        let sidecars = (0..instances)
            .map(|_| Sidecar::start(&["--redis", &redis.url]))
            .collect();
        Self {
            sidecars,
            _redis: Some(redis),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.sidecars[0].url(path)
    }

    /// Kills the Redis under the sidecars (outage test).
    pub fn stop_redis(&mut self) {
        self._redis = None;
    }
}

pub fn counter(key: &str, window_start_ms: u64, delta: u64) -> Value {
    json!({"key": key, "window_start_ms": window_start_ms, "window_ms": MINUTE, "delta": delta})
}

pub fn event(id: &str, tenant: &str, ts: u64, route: &str, status: u16, latency: u64) -> Value {
    json!({
        "event_id": id, "tenant": tenant, "timestamp_ms": ts, "route": route,
        "method": "GET", "status": status, "plan": "free", "key_id": "k1",
        "risk_score": 10,
        "decisions": {"auth": "allow", "limit": "allow", "waf": "pass", "cache": "miss"},
        "latency_ms": latency
    })
}

pub fn batch(node: &str, batch_id: &str, counters: Vec<Value>, usage: Vec<Value>) -> Value {
    json!({
        "node_id": node, "batch_id": batch_id, "sent_at_ms": now_ms(),
        "counters": counters, "usage": usage
    })
}

pub fn sync(url: &str, body: &Value) -> Value {
    let r = send("POST", url, body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

pub fn current_minute() -> u64 {
    let now = now_ms();
    now - now % MINUTE
}

pub fn usage(base_url: &str, tenant: &str, from: u64, to: u64) -> Value {
    let r = request(
        "GET",
        &format!("{base_url}/v1/usage?tenant={tenant}&from={from}&to={to}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

// ---------------------------------------------------------------- scenarios

/// Two nodes add to one window; each learns the fleet total and the others' share.
pub fn scenario_fleet_totals(h: &Harness) {
    let w = current_minute();
    let a = sync(
        &h.url("/v1/sync"),
        &batch("node-a", "a1", vec![counter("acme:rpm", w, 5)], vec![]),
    );
    assert_eq!(a["duplicate"], false);
    assert_eq!(a["counters"][0]["fleet_total"], 5);
    assert_eq!(a["counters"][0]["others"], 0);
    let b = sync(
        &h.url("/v1/sync"),
        &batch("node-b", "b1", vec![counter("acme:rpm", w, 3)], vec![]),
    );
    assert_eq!(b["counters"][0]["key"], "acme:rpm");
    assert_eq!(b["counters"][0]["window_start_ms"], w);
    assert_eq!(b["counters"][0]["fleet_total"], 8);
    assert_eq!(b["counters"][0]["others"], 5);
    assert_eq!(b["nodes"], 2);
    // A zero delta asks for the totals without consuming.
    let a2 = sync(
        &h.url("/v1/sync"),
        &batch("node-a", "a2", vec![counter("acme:rpm", w, 0)], vec![]),
    );
    assert_eq!(a2["counters"][0]["fleet_total"], 8);
    assert_eq!(a2["counters"][0]["others"], 3);
    // Another window and another tenant's key are separate.
    let c = sync(
        &h.url("/v1/sync"),
        &batch(
            "node-a",
            "a3",
            vec![
                counter("acme:rpm", w + MINUTE, 1),
                counter("other:rpm", w, 2),
            ],
            vec![],
        ),
    );
    let totals: Vec<u64> = c["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["fleet_total"].as_u64().unwrap())
        .collect();
    assert_eq!(totals, vec![1, 2]);
}

/// A retried batch counts once: counters and usage alike.
pub fn scenario_batch_idempotent(h: &Harness) {
    let w = current_minute();
    let ts = now_ms();
    let body = batch(
        "node-a",
        "retry-1",
        vec![counter("acme:rpm", w, 4)],
        vec![event("e1", "acme", ts, "/v1/pay", 200, 10)],
    );
    let first = sync(&h.url("/v1/sync"), &body);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["events"]["accepted"], 1);
    let again = sync(&h.url("/v1/sync"), &body);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["batch_id"], "retry-1");
    assert_eq!(again["counters"][0]["fleet_total"], 4);
    assert_eq!(again["events"]["accepted"], 0);
    let u = usage(&h.url(""), "acme", w, w + MINUTE);
    assert_eq!(u["total"]["count"], 1);
    // The same batch id from another node is a different batch.
    let other = sync(
        &h.url("/v1/sync"),
        &batch("node-b", "retry-1", vec![counter("acme:rpm", w, 1)], vec![]),
    );
    assert_eq!(other["duplicate"], false);
    assert_eq!(other["counters"][0]["fleet_total"], 5);
}

/// Events are de-duplicated by (tenant, event_id) across batches and within one,
/// rolled up per minute; a late event lands in its own minute.
pub fn scenario_usage_rollups(h: &Harness) {
    let m = current_minute();
    let late = m - 3 * MINUTE + 5_000;
    let r1 = sync(
        &h.url("/v1/sync"),
        &batch(
            "node-a",
            "u1",
            vec![],
            vec![
                event("e1", "acme", m + 1, "/v1/a", 200, 10),
                event("e2", "acme", m + 2, "/v1/a", 404, 20),
                event("e3", "acme", m + 3, "/v1/b", 503, 30),
                event("e3", "acme", m + 3, "/v1/b", 503, 30),
                event("e1", "globex", m + 1, "/v1/a", 200, 7),
            ],
        ),
    );
    assert_eq!(
        r1["events"],
        json!({"accepted": 4, "duplicate": 1, "dropped": 0})
    );
    // At-least-once redelivery in a new batch, plus a late event for an older minute.
    let r2 = sync(
        &h.url("/v1/sync"),
        &batch(
            "node-b",
            "u2",
            vec![],
            vec![
                event("e2", "acme", m + 2, "/v1/a", 404, 20),
                event("late-1", "acme", late, "/v1/a", 201, 5),
            ],
        ),
    );
    assert_eq!(
        r2["events"],
        json!({"accepted": 1, "duplicate": 1, "dropped": 0})
    );

    let u = usage(&h.url(""), "acme", m - 10 * MINUTE, m + MINUTE);
    assert_eq!(u["tenant"], "acme");
    let minutes = u["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 2, "{u}");
    assert_eq!(minutes[0]["minute_ms"], m - 3 * MINUTE);
    assert_eq!(minutes[0]["count"], 1);
    assert_eq!(minutes[1]["minute_ms"], m);
    assert_eq!(minutes[1]["count"], 3);
    assert_eq!(minutes[1]["latency_ms_sum"], 60);
    assert_eq!(minutes[1]["status"], json!({"2xx": 1, "4xx": 1, "5xx": 1}));
    assert_eq!(minutes[1]["routes"], json!({"/v1/a": 2, "/v1/b": 1}));
    assert_eq!(u["total"]["count"], 4);
    assert_eq!(u["total"]["status"]["2xx"], 2);
    // Tenants are isolated.
    let g = usage(&h.url(""), "globex", m - MINUTE, m + MINUTE);
    assert_eq!(g["total"]["count"], 1);
    assert_eq!(g["total"]["latency_ms_sum"], 7);
    // `to` is exclusive: the current minute is left out.
    assert_eq!(
        usage(&h.url(""), "acme", m - 10 * MINUTE, m)["total"]["count"],
        1
    );
    // RFC 3339 bounds work too (an encoded `+` offset included).
    let r = request(
        "GET",
        &h.url("/v1/usage?tenant=acme&from=2020-01-01T00:00:00Z&to=2020-01-01T06:30:00%2B05:30"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["from_ms"], 1_577_836_800_000u64);
    assert_eq!(r.json()["to_ms"], 1_577_840_400_000u64);
}

/// Events older than the retention horizon, or from too far in the future, are
/// dropped and counted, without failing the batch.
pub fn scenario_retention_drop(h: &Harness) {
    let now = now_ms();
    let r = sync(
        &h.url("/v1/sync"),
        &batch(
            "node-a",
            "old",
            vec![],
            vec![
                event("ancient", "acme", now - 31 * 24 * 60 * MINUTE, "/a", 200, 1),
                event("future", "acme", now + 60 * MINUTE, "/a", 200, 1),
                event("fine", "acme", now, "/a", 200, 1),
            ],
        ),
    );
    assert_eq!(
        r["events"],
        json!({"accepted": 1, "duplicate": 0, "dropped": 2})
    );
}

/// Malformed syncs get a 4xx JSON error and change nothing.
pub fn scenario_sync_rejects(h: &Harness) {
    let url = h.url("/v1/sync");
    let w = current_minute();
    request("POST", &url, Some(b"{not json".to_vec())).assert_error(400, "bad_json");
    let r = send("POST", &url, &json!({"node_id": "n", "batch_id": "x"}));
    r.assert_error(400, "bad_json");
    assert!(
        r.json()["message"].as_str().unwrap().contains("sent_at_ms"),
        "{}",
        r.text
    );
    // One bad event rejects the whole batch, its counters included.
    let mut bad = batch(
        "node-a",
        "bad1",
        vec![counter("acme:rpm", w, 50)],
        vec![event("x", "acme", now_ms(), "/a", 200, 1)],
    );
    bad["usage"][0]["status"] = json!(999);
    let r = send("POST", &url, &bad);
    r.assert_error(422, "invalid");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("usage[0].status"),
        "{}",
        r.text
    );
    send("POST", &url, &batch("bad node", "b", vec![], vec![])).assert_error(422, "invalid");
    send("POST", &url, &batch("node-a", "", vec![], vec![])).assert_error(422, "invalid");
    let mut zero = batch("node-a", "bad2", vec![counter("acme:rpm", w, 1)], vec![]);
    zero["counters"][0]["window_ms"] = json!(0);
    send("POST", &url, &zero).assert_error(422, "invalid");
    let mut neg = batch("node-a", "bad3", vec![counter("acme:rpm", w, 1)], vec![]);
    neg["counters"][0]["delta"] = json!(-1);
    send("POST", &url, &neg).assert_error(400, "bad_json");
    // The server answers 413 and closes before reading it all, so the client may see
    // the answer or a broken pipe while still writing; either way nothing is applied.
    let huge = vec![b' '; 9 << 20];
    if let Ok(r) = try_request("POST", &url, Some(huge)) {
        r.assert_error(413, "too_large");
    }
    // An admin body over 64 KiB fits in the socket buffer: the 413 always arrives.
    let big_plan = json!({"plan": "x".repeat(100 << 10)});
    send("PUT", &h.url("/v1/tenants/acme/plan"), &big_plan).assert_error(413, "too_large");
    // Nothing of the above was counted, and the rejected batch ids are still free.
    let probe = sync(
        &url,
        &batch("node-a", "bad1", vec![counter("acme:rpm", w, 0)], vec![]),
    );
    assert_eq!(probe["duplicate"], false);
    assert_eq!(probe["counters"][0]["fleet_total"], 0);
    assert_eq!(
        usage(&h.url(""), "acme", w - MINUTE, w + MINUTE)["total"]["count"],
        0
    );
}

pub fn scenario_usage_rejects(h: &Harness) {
    let get = |q: &str| request("GET", &h.url(&format!("/v1/usage{q}")), None);
    get("?from=0&to=1000").assert_error(400, "bad_query");
    get("?tenant=acme&from=yesterday").assert_error(400, "bad_query");
    get("?tenant=acme&from=2000&to=1000").assert_error(400, "bad_query");
    get("?tenant=acme&from=0&to=9999999999999").assert_error(400, "bad_query");
    get("?tenant=acme&tennant=x").assert_error(400, "bad_query");
    get("?tenant=acme&from=18446744073709551615").assert_error(400, "bad_query");
    get("?tenant=acme&from=99999999999999999999").assert_error(400, "bad_query");
    get("?tenant=ac%3Ame").assert_error(422, "invalid");
    // Defaults: the last hour.
    let r = get("?tenant=acme");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["minutes"], json!([]));
}

/// Plan overrides: put, get, feed to nodes by sequence, delete as a tombstone.
pub fn scenario_plan_overrides(h: &Harness) {
    let url = h.url("/v1/tenants/acme/plan");
    request("GET", &url, None).assert_error(404, "not_found");
    request("DELETE", &url, None).assert_error(404, "not_found");
    let put = send(
        "PUT",
        &url,
        &json!({"plan": "pro", "limits": {"requests_per_minute": 1500}}),
    );
    assert_eq!(put.status, 200, "{}", put.text);
    let rec = put.json();
    assert_eq!(rec["tenant"], "acme");
    assert_eq!(rec["plan"], "pro");
    assert_eq!(rec["limits"]["requests_per_minute"], 1500);
    assert_eq!(rec["deleted"], false);
    let seq1 = rec["seq"].as_u64().unwrap();
    let got = request("GET", &url, None);
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), rec);
    send(
        "PUT",
        &h.url("/v1/tenants/globex/plan"),
        &json!({"plan": "free"}),
    );

    let s = sync(&h.url("/v1/sync"), &batch("node-a", "p1", vec![], vec![]));
    let tenants: Vec<&str> = s["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, vec!["acme", "globex"]);
    let seen = s["override_seq"].as_u64().unwrap();
    assert!(seen > seq1);

    // Nothing new since `seen`; then an update and a delete show up, in order.
    let mut b = batch("node-a", "p2", vec![], vec![]);
    b["override_seq"] = json!(seen);
    assert_eq!(sync(&h.url("/v1/sync"), &b)["overrides"], json!([]));
    send(
        "PUT",
        &url,
        &json!({"plan": "enterprise", "limits": {"requests_per_minute": 5000}}),
    );
    let del = request("DELETE", &h.url("/v1/tenants/globex/plan"), None);
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(del.json()["deleted"], true);
    assert_eq!(del.json()["plan"], "");
    let mut b = batch("node-a", "p3", vec![], vec![]);
    b["override_seq"] = json!(seen);
    let s = sync(&h.url("/v1/sync"), &b);
    let o = s["overrides"].as_array().unwrap();
    assert_eq!(o.len(), 2, "{s}");
    assert_eq!(o[0]["tenant"], "acme");
    assert_eq!(o[0]["plan"], "enterprise");
    assert_eq!(o[1]["tenant"], "globex");
    assert_eq!(o[1]["deleted"], true);
    request("GET", &h.url("/v1/tenants/globex/plan"), None).assert_error(404, "not_found");

    // Bad requests change nothing.
    send("PUT", &url, &json!({"plan": "pro", "limit": {"rpm": 1}})).assert_error(400, "bad_json");
    send("PUT", &url, &json!({"plan": ""})).assert_error(422, "invalid");
    send(
        "PUT",
        &url,
        &json!({"plan": "pro", "limits": {"Bad Name": 1}}),
    )
    .assert_error(422, "invalid");
    send("PUT", &url, &json!({"plan": "pro", "limits": {"rpm": -1}})).assert_error(400, "bad_json");
    send(
        "PUT",
        &h.url("/v1/tenants/bad%3Atenant/plan"),
        &json!({"plan": "pro"}),
    )
    .assert_error(422, "invalid");
    assert_eq!(request("GET", &url, None).json()["plan"], "enterprise");
}

/// Purges get increasing sequence numbers; a node receives those after its own.
pub fn scenario_purges(h: &Harness) {
    let url = h.url("/v1/purge");
    let p1 = send(
        "POST",
        &url,
        &json!({"by": "key", "value": "acme:/v1/a", "mode": "hard"}),
    );
    assert_eq!(p1.status, 201, "{}", p1.text);
    let p2 = send(
        "POST",
        &url,
        &json!({"by": "surrogate_key", "value": "acme:refunds"}),
    );
    let p3 = send(
        "POST",
        &url,
        &json!({"by": "prefix", "value": "acme:/v1/", "mode": "soft"}),
    );
    let (s1, s2, s3) = (
        p1.json()["seq"].as_u64().unwrap(),
        p2.json()["seq"].as_u64().unwrap(),
        p3.json()["seq"].as_u64().unwrap(),
    );
    assert!(s1 < s2 && s2 < s3);
    assert_eq!(p2.json()["mode"], "hard");

    let all = sync(&h.url("/v1/sync"), &batch("node-a", "q1", vec![], vec![]));
    let got: Vec<u64> = all["purges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![s1, s2, s3]);
    assert_eq!(all["purge_seq"], s3);
    assert_eq!(all["purges"][2]["by"], "prefix");
    assert_eq!(all["purges"][2]["mode"], "soft");
    let mut b = batch("node-a", "q2", vec![], vec![]);
    b["purge_seq"] = json!(s1);
    let newer = sync(&h.url("/v1/sync"), &b);
    assert_eq!(newer["purges"].as_array().unwrap().len(), 2);
    b["batch_id"] = json!("q3");
    b["purge_seq"] = json!(s3);
    let none = sync(&h.url("/v1/sync"), &b);
    assert_eq!(none["purges"], json!([]));
    assert_eq!(none["purge_seq"], s3);

    send("POST", &url, &json!({"by": "everything", "value": "x"})).assert_error(400, "bad_json");
    send("POST", &url, &json!({"by": "key", "value": ""})).assert_error(422, "invalid");
    send(
        "POST",
        &url,
        &json!({"by": "key", "value": "x", "mode": "gentle"}),
    )
    .assert_error(400, "bad_json");
    send(
        "POST",
        &url,
        &json!({"by": "key", "value": "x", "tenant": "acme"}),
    )
    .assert_error(400, "bad_json");
    b["batch_id"] = json!("q4");
    assert_eq!(sync(&h.url("/v1/sync"), &b)["purges"], json!([]));
}

pub fn scenario_health_metrics_and_routing(h: &Harness) {
    let r = request("GET", &h.url("/healthz"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "ok");
    request("GET", &h.url("/nope"), None).assert_error(404, "not_found");
    request("GET", &h.url("/v1/sync"), None).assert_error(405, "method_not_allowed");
    let body = batch(
        "node-a",
        "m1",
        vec![],
        vec![event("e1", "acme", now_ms(), "/a", 200, 1)],
    );
    sync(&h.url("/v1/sync"), &body);
    sync(&h.url("/v1/sync"), &body);
    let m = request("GET", &h.url("/metrics"), None);
    assert_eq!(m.status, 200);
    for line in [
        "tollgate_sidecar_syncs_total 2",
        "tollgate_sidecar_batches_total 1",
        "tollgate_sidecar_duplicate_batches_total 1",
        "tollgate_sidecar_events_ingested_total 1",
        "tollgate_sidecar_duplicate_events_total 0",
        "tollgate_sidecar_store_errors_total 0",
        "tollgate_sidecar_bad_requests_total 2",
        "tollgate_sidecar_nodes 1",
        "# TYPE tollgate_sidecar_syncs_total counter",
    ] {
        assert!(
            m.text.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            m.text
        );
    }
}
