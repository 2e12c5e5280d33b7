#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Differential suite: the host-sim probe (`host-sim/probes`) runs with the same bootstrap in a
//! real Envoy 1.40 and in host-sim (`tollgate_sim::serve::serve_on`, in-process, on its own
//! loopback port), both in front of the same in-process echo origin. Every scenario sends the
//! same HTTP requests to both and compares what a client, the origin and the filter observe:
//! status, response headers (Envoy-only ones dropped), body, the request the origin received,
//! and the probe's callback log (`proxy_log` lines; Envoy's `wasm log` lines vs host-sim's log
//! sink, context ids normalised). A mismatch fails with a line diff (`-envoy` / `+host-sim`).
//!
//! One Envoy + one host-sim serve a group of scenarios: the probe's `multi` configuration picks
//! the scenario per request from `x-probe-scenario`. Deliberate differences are listed in
//! `host-sim/README.md` ("Deliberate differences") and asserted here explicitly.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use regex::Regex;
use tollgate_envoy_tests::{
    BackgroundOrigin, Envoy, EnvoyConfig, HttpResponse, free_port, repo_root, request, target_dir,
};
use tollgate_sim::{Bootstrap, Sim, SimOptions};

// ---------------------------------------------------------------------------------------------
// The probe module
// ---------------------------------------------------------------------------------------------

/// Builds `tollgate-probe` for wasm32-wasip1 (release) once per test binary, unless the built
/// module is newer than every probe source (then no `cargo build` waits on the shared target
/// directory's lock while other builds run).
fn probe_wasm() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let wasm = target_dir().join("wasm32-wasip1/release/tollgate_probe.wasm");
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let probe = repo_root().join("host-sim/probes");
        let sources = ["Cargo.toml", "src/lib.rs", "src/raw.rs"].map(|f| probe.join(f));
        if let Some(built) = modified(&wasm)
            && sources
                .iter()
                .all(|s| modified(s).is_some_and(|t| t <= built))
        {
            return wasm;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "tollgate-probe", "--target", "wasm32-wasip1"])
            .args(["--release", "--quiet"])
            .current_dir(repo_root())
            .status()
            .expect("running cargo build for the probe");
        assert!(status.success(), "building tollgate-probe failed");
        target_dir().join("wasm32-wasip1/release/tollgate_probe.wasm")
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// host-sim, served in-process
// ---------------------------------------------------------------------------------------------

struct SimServer {
    sim: Arc<Sim>,
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    stop_ticker: Arc<AtomicBool>,
}

impl SimServer {
    /// Serves `bootstrap` (the YAML Envoy got) with `workers` worker VMs on a free port. A ticker
    /// thread drives `on_tick` in real time, as `tollgate-sim serve` does; log lines stay in the
    /// simulator's sink for [`SimServer::take_messages`].
    fn start(bootstrap: &str, workers: usize) -> SimServer {
        let bootstrap = Bootstrap::parse(bootstrap).expect("host-sim accepts the bootstrap");
        let sim = Sim::new(
            bootstrap,
            SimOptions {
                workers,
                callouts_use_config_addresses: true,
                ..SimOptions::default()
            },
        )
        .expect("host-sim starts");
        let sim = Arc::new(sim);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let served = sim.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = tollgate_sim::serve::serve_on(listener, served).await;
        });
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (Arc::downgrade(&sim), stop_ticker.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match weak.upgrade() {
                    Some(sim) => sim.tick_real(),
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SimServer {
            sim,
            port,
            runtime: Some(runtime),
            stop_ticker,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The probe's log messages since the last call.
    fn take_messages(&self) -> Vec<String> {
        self.sim
            .take_logs()
            .into_iter()
            .map(|l| l.message)
            .collect()
    }

    /// Like Envoy, serve runs `on_log`/`on_done`/`on_delete` after the response went out:
    /// the probe's messages since the last call, waiting (bounded) until `until` has
    /// appeared `count` times among them.
    fn messages_until(&self, until: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut messages = self.take_messages();
        while messages.iter().filter(|m| m.starts_with(until)).count() < count
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
            messages.extend(self.take_messages());
        }
        messages
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy's side of the log
// ---------------------------------------------------------------------------------------------

/// The probe's messages in Envoy's log (`... wasm log <plugin> <root_id> <vm_id>: <message>`).
/// A message with newlines continues on the following lines (no `[timestamp]` prefix; the
/// bootstrap's access-log lines start with `ACCESS`).
fn envoy_messages(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_wasm = false;
    for l in log.lines() {
        if let Some((_, msg)) = l
            .split_once("wasm log ")
            .and_then(|(_, r)| r.split_once(": "))
        {
            out.push(msg.to_owned());
            in_wasm = true;
        } else if in_wasm && !l.starts_with('[') && !l.starts_with("ACCESS ") {
            if let Some(last) = out.last_mut() {
                last.push('\n');
                last.push_str(l);
            }
        } else {
            in_wasm = false;
        }
    }
    out
}

/// A slow cluster: accepts connections and never answers.
struct Silent {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Silent { port, stop }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// One Envoy + one host-sim with the same bootstrap
// ---------------------------------------------------------------------------------------------

struct Pair {
    envoy: Envoy,
    sim: SimServer,
    /// Envoy's wasm log lines already consumed.
    envoy_seen: usize,
    _origin: BackgroundOrigin,
    _silent: Silent,
}

/// Clusters every group gets: `origin` and `sidecar` (the echo origin), `dead` (nothing
/// listening) and `slow` (accepts, never answers).
fn pair(label: &str, plugin_config: &str, concurrency: u32) -> Pair {
    let origin = BackgroundOrigin::start(label).unwrap();
    let silent = Silent::start();
    let dead = free_port().unwrap();
    let config = EnvoyConfig::with_wasm(label, probe_wasm(), plugin_config)
        .concurrency(concurrency)
        .cluster("origin", origin.port())
        .cluster("sidecar", origin.port())
        .cluster("dead", dead)
        .cluster("slow", silent.port);
    let envoy = Envoy::start(&config).unwrap();
    // The same bootstrap; host-sim listens on its own port (it does not bind the listener's).
    let sim = SimServer::start(&config.render(0, 0).unwrap(), concurrency as usize);
    Pair {
        envoy,
        sim,
        envoy_seen: 0,
        _origin: origin,
        _silent: silent,
    }
}

/// A request both hosts get.
#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

fn get(scenario: &str) -> Req {
    Req {
        method: "GET",
        path: "/p?q=1",
        headers: vec![
            ("x-probe-scenario", scenario.to_owned()),
            ("x-tollgate-cluster", "origin".to_owned()),
        ],
        body: None,
    }
}

fn post(scenario: &str, body: &str) -> Req {
    Req {
        method: "POST",
        body: Some(body.as_bytes().to_vec()),
        ..get(scenario)
    }
}

impl Req {
    fn header(mut self, k: &'static str, v: &str) -> Req {
        self.headers.push((k, v.to_owned()));
        self
    }
}

/// What one side observed for one request, normalised to comparable text lines.
fn observe(resp: &anyhow::Result<HttpResponse>, messages: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    match resp {
        Err(e) => out.push(format!("error: {}", root_cause(e))),
        Ok(r) => {
            out.push(format!("status: {}", r.status));
            let mut headers: Vec<&(String, String)> = r
                .headers
                .iter()
                .filter(|(k, _)| !envoy_specific_header(k))
                .collect();
            headers.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in headers {
                let v = if k == "x-request-id" { "<id>" } else { v };
                out.push(format!("header: {k}: {v}"));
            }
            // An echo, possibly followed by bytes a filter appended (`+wasm`).
            let mut stream =
                serde_json::Deserializer::from_str(&r.body).into_iter::<serde_json::Value>();
            match stream.next() {
                Some(Ok(json)) if json.get("origin").is_some() => {
                    for line in echo_summary(&json) {
                        out.push(format!("origin saw: {line}"));
                    }
                    out.push(format!(
                        "after the echo: {:?}",
                        &r.body[stream.byte_offset()..]
                    ));
                }
                _ => out.push(format!("body: {:?}", r.body)),
            }
        }
    }
    for m in messages {
        out.push(format!("log: {}", normalise_message(m)));
    }
    out.into_iter().map(|l| mask_ports(&l)).collect()
}

fn mask_ports(s: &str) -> String {
    static PORT: OnceLock<Regex> = OnceLock::new();
    let re = PORT.get_or_init(|| Regex::new(r"127\.0\.0\.1:\d+").unwrap());
    re.replace_all(s, "127.0.0.1:<port>").into_owned()
}

/// Deliberate difference (host-sim README): Envoy's router adds `x-envoy-upstream-service-time`
/// to every upstream (and callout) response before the filter sees it; host-sim does not. The
/// probe logs the header names after each response-header callback (`resp_names=` /
/// `call_resp_names=`), so this asserts the header is there on Envoy's side, then removes it
/// from the names and from the header count of the callback line before.
fn without_service_time(messages: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(messages.len());
    for m in messages {
        let Some((prefix, names)) = m
            .split_once("resp_names=")
            .filter(|(p, _)| p.is_empty() || *p == "call_")
        else {
            out.push(m.clone());
            continue;
        };
        let list: Vec<&str> = names.split(',').collect();
        let kept: Vec<&str> = list
            .iter()
            .copied()
            .filter(|n| *n != "x-envoy-upstream-service-time")
            .collect();
        if kept.len() + 1 == list.len() {
            // Lower the count the callback reported (`n=` / `headers=`) by the removed header.
            let (callback, key) = if prefix == "call_" {
                ("on_http_call_response", "headers=")
            } else {
                ("on_response_headers", " n=")
            };
            if let Some(prev) = out.iter_mut().rev().find(|l| l.starts_with(callback)) {
                *prev = lower_count(prev, key);
            }
        }
        out.push(format!("{prefix}resp_names={}", kept.join(",")));
    }
    out
}

fn lower_count(line: &str, key: &str) -> String {
    let Some(at) = line.find(key) else {
        return line.to_owned();
    };
    let start = at + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let Ok(n) = digits.parse::<u64>() else {
        return line.to_owned();
    };
    format!(
        "{}{}{}",
        &line[..start],
        n.saturating_sub(1),
        &line[start + digits.len()..]
    )
}

fn root_cause(e: &anyhow::Error) -> String {
    // Only the kind of failure is comparable (ports differ).
    let s = format!("{:#}", e.root_cause());
    Regex::new(r"127\.0\.0\.1:\d+")
        .unwrap()
        .replace_all(&s, "127.0.0.1:<port>")
        .into_owned()
}

/// Headers only Envoy adds and the filter never sees differently (README "Deliberate
/// differences": host-sim does not add them), and framing headers (bodies are compared).
fn envoy_specific_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("x-envoy-")
        || matches!(
            name.as_str(),
            "date"
                | "server"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
        )
}

/// Context ids differ between hosts (Envoy numbers contexts per VM and creates some of its
/// own); everything else in a message is compared verbatim.
fn normalise_message(m: &str) -> String {
    static CTX: OnceLock<Regex> = OnceLock::new();
    let ctx = CTX.get_or_init(|| Regex::new(r"ctx=\d+").unwrap());
    let m = ctx.replace_all(m, "ctx=N").into_owned();
    let m = normalise_prop(&m);
    normalise_echo_body(&m)
}

/// `... prop <name>=0x<hex>` (probe `props`): decoded to text or a little-endian integer;
/// values that depend on the connection or the moment are masked.
fn normalise_prop(m: &str) -> String {
    static PROP: OnceLock<Regex> = OnceLock::new();
    let re = PROP.get_or_init(|| Regex::new(r"prop (\S+)=0x([0-9a-f]*)$").unwrap());
    let Some(c) = re.captures(m) else {
        return m.to_owned();
    };
    let (name, hex) = (&c[1], &c[2]);
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    let value = match name {
        "source.port" | "request.time" | "request.id" => "<varies>".to_owned(),
        _ => match std::str::from_utf8(&bytes) {
            Ok(t) if !t.chars().any(char::is_control) => format!("{t:?}"),
            _ if bytes.len() == 8 => {
                format!(
                    "int {}",
                    i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
                )
            }
            _ => format!("0x{hex}"),
        },
    };
    let at = c.get(0).map_or(0, |g| g.start());
    format!("{}prop {name}={value}", &m[..at])
}

/// A body the echo origin produced (`body="{...\"origin\":...}"` in a probe line) lists the
/// headers it received, Envoy-only ones included: it is replaced by the normalised echo, and
/// the byte counts of that line (`size=`, `body=<n>`) by `<echo>`.
fn normalise_echo_body(m: &str) -> String {
    let Some(at) = m.find(" body=\"{") else {
        return m.to_owned();
    };
    let Some(text) = unescape_debug(&m[at + 6..]) else {
        return m.to_owned();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return m.to_owned();
    };
    if json.get("origin").is_none() {
        return m.to_owned();
    }
    static SIZES: OnceLock<Regex> = OnceLock::new();
    let sizes = SIZES.get_or_init(|| Regex::new(r"\b(size|body)=\d+").unwrap());
    let head = sizes.replace_all(&m[..at], "$1=<echo>").into_owned();
    format!("{head} body=<{}>", echo_summary(&json).join("; "))
}

/// Reads a Rust `{:?}` string literal at the start of `s`.
fn unescape_debug(s: &str) -> Option<String> {
    let mut chars = s.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                'u' => {
                    let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// What the echo origin saw, without Envoy-only and framing headers, ids masked.
fn echo_summary(json: &serde_json::Value) -> Vec<String> {
    let mut out = vec![format!(
        "{} {}",
        json["method"].as_str().unwrap_or("?"),
        json["path"].as_str().unwrap_or("?")
    )];
    for pair in json["headers"].as_array().into_iter().flatten() {
        let (k, v) = (
            pair[0].as_str().unwrap_or(""),
            pair[1].as_str().unwrap_or(""),
        );
        if envoy_specific_header(k) {
            continue;
        }
        let v = if k == "x-request-id" { "<id>" } else { v };
        out.push(format!("{k}: {v}"));
    }
    out.push(format!("body {}", json["body"]));
    out
}

/// A line diff (LCS): `  ` same, `- ` Envoy only, `+ ` host-sim only.
fn diff(envoy: &[String], sim: &[String]) -> String {
    let (n, m) = (envoy.len(), sim.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if envoy[i] == sim[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && envoy[i] == sim[j] {
            let _ = writeln!(out, "    {}", envoy[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "  - {}", envoy[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  + {}", sim[j]);
            j += 1;
        }
    }
    out
}

/// Collects mismatches of a group so that one run reports all of them.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    checked: Vec<String>,
}

impl Report {
    fn compare(&mut self, scenario: &str, envoy: &[String], sim: &[String]) {
        self.checked.push(scenario.to_owned());
        if envoy != sim {
            self.failures.push(format!(
                "scenario `{scenario}` differs (- envoy, + host-sim):\n{}",
                diff(envoy, sim)
            ));
        }
    }

    fn check(&mut self, scenario: &str, ok: bool, detail: String) {
        self.checked.push(scenario.to_owned());
        if !ok {
            self.failures
                .push(format!("scenario `{scenario}`: {detail}"));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} differential checks failed:\n\n{}",
            self.failures.len(),
            self.checked.len(),
            self.failures.join("\n")
        );
    }
}

impl Pair {
    /// Envoy's new probe messages, waiting (bounded) until `until` has appeared `count` times
    /// among them: Envoy runs `on_log`/`on_done`/`on_delete` after the response is sent.
    fn envoy_new_messages(&mut self, until: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let all = envoy_messages(&self.envoy.log());
            let new = all[self.envoy_seen.min(all.len())..].to_vec();
            let seen = new.iter().filter(|m| m.starts_with(until)).count();
            if seen >= count || Instant::now() >= deadline {
                self.envoy_seen = all.len();
                return new;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Discards the probe messages so far (start-up) on both sides.
    fn drain(&mut self) -> (Vec<String>, Vec<String>) {
        std::thread::sleep(Duration::from_millis(100));
        let envoy = self.envoy_new_messages("", 0);
        (envoy, self.sim.take_messages())
    }

    /// A callout to a cluster that does not exist fails in `dispatch_http_call` and the probe
    /// stays paused. Envoy holds the stream until its stream idle timeout (5 min); host-sim
    /// answers 408 `stream timeout` at once (README: deliberate difference). Asserted as such.
    fn unknown_cluster_pauses_forever(&mut self, r: &mut Report) {
        let req = b"GET /p HTTP/1.1\r\nhost: h\r\nx-probe-scenario: callout\r\n\
            x-probe-cluster: nope\r\nx-tollgate-cluster: origin\r\nconnection: close\r\n\r\n";
        let e = raw_exchange(self.envoy.listen_port(), req, Duration::from_millis(800));
        let e_msgs = self.envoy_new_messages("on_delete ctx=", 1);
        let s = raw_exchange(self.sim.port, req, Duration::from_secs(10));
        let s_msgs = self.sim.messages_until("on_delete ctx=", 1);
        let dispatch = |m: &[String]| {
            m.iter()
                .find(|l| l.starts_with("dispatch="))
                .cloned()
                .unwrap_or_default()
        };
        r.compare(
            "callout to an unknown cluster: dispatch result",
            &[dispatch(&e_msgs)],
            &[dispatch(&s_msgs)],
        );
        r.check(
            "callout to an unknown cluster: Envoy holds the stream",
            matches!(&e, Err(err) if err.to_string().contains("timed out")
                || err.to_string().contains("WouldBlock")
                || err.to_string().contains("temporarily unavailable")),
            format!("expected no answer within 800 ms, got {e:?}"),
        );
        r.check(
            "callout to an unknown cluster: host-sim answers 408 at once",
            matches!(&s, Ok(resp) if resp.status == 408 && resp.body == "stream timeout"),
            format!("expected 408 stream timeout, got {s:?}"),
        );
    }

    /// The deliberate `x-envoy-upstream-service-time` difference, asserted on raw messages:
    /// Envoy's filter sees it among the upstream response headers, host-sim's does not.
    fn service_time_header_only_in_envoy(&mut self, r: &mut Report) {
        let req = get("noop");
        let _ = Self::send_to(&self.envoy.url(req.path), &req);
        let e_msgs = self.envoy_new_messages("on_delete ctx=", 1);
        let _ = Self::send_to(&self.sim.url(req.path), &req);
        let s_msgs = self.sim.messages_until("on_delete ctx=", 1);
        let seen = |m: &[String]| {
            m.iter().any(|l| {
                l.starts_with("resp_names=") && l.contains("x-envoy-upstream-service-time")
            })
        };
        r.check(
            "x-envoy-upstream-service-time: in Envoy's response map only",
            seen(&e_msgs) && !seen(&s_msgs),
            format!("envoy {e_msgs:?}\nhost-sim {s_msgs:?}"),
        );
    }

    fn send_to(url: &str, req: &Req) -> anyhow::Result<HttpResponse> {
        let headers: Vec<(&str, &str)> =
            req.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(req.method, url, &headers, req.body.as_deref())
    }

    /// Sends `req` to both and returns the two observations.
    fn both(&mut self, req: &Req) -> (Vec<String>, Vec<String>) {
        let e = Self::send_to(&self.envoy.url(req.path), req);
        let e_msgs = self.envoy_new_messages("on_delete ctx=", 1);
        let e_msgs = without_service_time(&e_msgs);
        let s = Self::send_to(&self.sim.url(req.path), req);
        let s_msgs = self.sim.messages_until("on_delete ctx=", 1);
        (observe(&e, &e_msgs), observe(&s, &s_msgs))
    }

    fn run(&mut self, report: &mut Report, scenario: &str, req: &Req) {
        let (e, s) = self.both(req);
        report.compare(scenario, &e, &s);
    }

    /// Sends raw HTTP/1.1 bytes (with `connection: close`) to both; the observation is the raw
    /// response parsed as far as needed.
    fn raw(&mut self, report: &mut Report, scenario: &str, bytes: &[u8]) {
        let e = raw_request(self.envoy.listen_port(), bytes);
        let e_msgs = self.envoy_new_messages("on_delete ctx=", 1);
        let e_msgs = without_service_time(&e_msgs);
        let s = raw_request(self.sim.port, bytes);
        let s_msgs = self.sim.messages_until("on_delete ctx=", 1);
        report.compare(scenario, &observe(&e, &e_msgs), &observe(&s, &s_msgs));
    }
}

/// One raw HTTP/1.1 exchange: writes `bytes`, reads to EOF (the request must say
/// `connection: close`), parses status, headers and a plain or chunked body.
fn raw_request(port: u16, bytes: &[u8]) -> anyhow::Result<HttpResponse> {
    raw_exchange(port, bytes, Duration::from_secs(10))
}

fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow::anyhow!("no response head in {:?}", String::from_utf8_lossy(&buf))
        })?;
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    let mut body = buf[at + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || size > data.len() {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// One worker, the `multi` probe: phases, pauses, local replies, bodies, header edge cases,
/// callouts (healthy, dead, slow), properties and metrics, all against one Envoy + one host-sim.
#[test]
fn single_worker_scenarios_match_envoy() {
    let mut p = pair("diff-single", "multi", 1);
    let mut r = Report::default();

    let (e_start, s_start) = p.drain();
    r.compare(
        "start-up (distinct messages)",
        &distinct(&e_start),
        &distinct(&s_start),
    );
    canary_configures_once_more(&mut r, &e_start, &s_start, 1);

    // Phases and their order.
    p.run(&mut r, "phases GET", &get("noop"));
    p.service_time_header_only_in_envoy(&mut r);
    p.run(&mut r, "phases POST", &post("noop", "hello body"));
    p.run(&mut r, "phases POST empty body", &post("noop", ""));

    // Local replies from each phase.
    p.run(
        &mut r,
        "local reply from request headers",
        &get("local_reply"),
    );
    p.run(
        &mut r,
        "local reply without body",
        &get("local_reply_nobody"),
    );
    p.run(
        &mut r,
        "local reply from request body",
        &post("local_reply_body", "abc"),
    );
    p.run(
        &mut r,
        "local reply from response headers",
        &get("local_reply_resp"),
    );

    // Pause on body (buffering) and buffer edits.
    p.run(
        &mut r,
        "pause on body",
        &post("pause_body", "buffered body"),
    );
    p.run(&mut r, "buffer edits", &post("buffers", "abcdef"));

    // Header maps: case-insensitive get, duplicates, add/replace/remove.
    let headers = |req: Req| {
        req.header("X-Probe", "P")
            .header("x-dup", "a")
            .header("x-dup", "b")
            .header("x-gone", "1")
    };
    p.run(&mut r, "header maps GET", &headers(get("headers")));
    p.run(&mut r, "header maps POST", &headers(post("headers", "x")));

    // Pause on request headers, callout, resume from the callout answer.
    p.run(&mut r, "callout to a healthy cluster", &get("callout"));
    p.run(
        &mut r,
        "callout to a dead cluster",
        &get("callout").header("x-probe-cluster", "dead"),
    );
    p.run(
        &mut r,
        "callout to a slow cluster (timeout)",
        &get("callout").header("x-probe-cluster", "slow"),
    );
    p.unknown_cluster_pauses_forever(&mut r);

    // Header edge cases on the wire: a non-UTF-8 value (obs-text), mixed-case names.
    p.raw(
        &mut r,
        "non-UTF-8 header value",
        b"GET /raw HTTP/1.1\r\nHost: h.example\r\nX-Probe-Scenario: headers\r\n\
          x-tollgate-cluster: origin\r\nX-Bin: a\xffb\r\nx-dup: 1\r\nX-DUP: 2\r\n\
          connection: close\r\n\r\n",
    );
    // A chunked body with request trailers: Envoy's HTTP/1 codec drops trailers unless
    // `enable_trailers` is set (the bootstrap does not), host-sim serve does not pass them.
    p.raw(
        &mut r,
        "chunked body with request trailers",
        b"POST /raw HTTP/1.1\r\nhost: h\r\nx-probe-scenario: pause_body\r\n\
          x-tollgate-cluster: origin\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          5\r\nhello\r\n3\r\n!!!\r\n0\r\nx-trailer: t\r\n\r\n",
    );

    // Properties the probe reads in every phase (addresses, ports and ids masked).
    p.run(&mut r, "properties", &get("props").header("x-dup", "d1"));

    // Shared data and queues (single worker: exact logs).
    p.run(&mut r, "shared data CAS", &get("shared"));
    p.run(&mut r, "set_property", &get("set_property"));

    // Metrics: three requests, then the counters.
    for i in 0..3 {
        p.run(&mut r, &format!("metrics request {i}"), &get("metrics"));
    }
    let envoy_stats = p.envoy.wasmcustom_stats().unwrap();
    let envoy_metrics: Vec<String> = envoy_stats
        .iter()
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("wasmcustom.")))
        .collect();
    // Histograms are left out on both sides: Envoy's admin prints quantiles, host-sim keeps
    // samples (and `get_metric` on a histogram is BadArgument in both, compared above).
    let sim_metrics: Vec<String> = {
        let mut m: Vec<String> = p
            .sim
            .sim
            .metrics()
            .into_iter()
            .filter(|(k, _)| k != "wasmcustom.h")
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("wasmcustom.")))
            .collect();
        m.sort();
        m
    };
    r.compare(
        "metrics (/stats?filter=wasmcustom vs Sim::metrics)",
        &envoy_metrics,
        &sim_metrics,
    );

    r.finish();
}

fn distinct(v: &[String]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|m| normalise_message(m)).collect();
    v.sort();
    v.dedup();
    v
}

/// Deliberate difference (README "No canary VM"): Envoy runs `on_vm_start`/`on_configure` once
/// more than host-sim, in the throw-away canary VM on the main thread. Per host: main + workers.
fn canary_configures_once_more(r: &mut Report, envoy: &[String], sim: &[String], workers: usize) {
    let count = |v: &[String]| v.iter().filter(|m| m.starts_with("on_configure ")).count();
    let (e, s) = (count(envoy), count(sim));
    r.check(
        "start-up: Envoy configures the canary VM too",
        e == workers + 2 && s == workers + 1,
        format!(
            "on_configure runs: envoy {e} (want {}), host-sim {s} (want {})",
            workers + 2,
            workers + 1
        ),
    );
}

/// Shared data under contention: `--concurrency 2` / two worker VMs, four client threads on
/// their own connections, 40 CAS increments of one key. Both hosts must end with every value
/// 1..=40 handed out exactly once (the order differs from run to run, so it is not compared).
#[test]
fn shared_data_contention_across_workers_counts_exactly() {
    const N: usize = 40;
    let mut p = pair("diff-shared", "multi", 2);
    let mut r = Report::default();
    let (e_start, s_start) = p.drain();
    r.compare(
        "start-up, 2 workers (distinct messages)",
        &distinct(&e_start),
        &distinct(&s_start),
    );
    canary_configures_once_more(&mut r, &e_start, &s_start, 2);

    let hammer = |base: String| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let base = base.clone();
                std::thread::spawn(move || {
                    (0..N / 4)
                        .map(|_| {
                            let resp = request(
                                "GET",
                                &format!("{base}/count"),
                                &[
                                    ("x-probe-scenario", "counter"),
                                    ("x-tollgate-cluster", "origin"),
                                ],
                                None,
                            );
                            resp.map(|r| r.status).unwrap_or(0)
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<u16>>()
    };
    let e_status = hammer(p.envoy.url(""));
    let e_msgs = p.envoy_new_messages("on_delete ctx=", N);
    let s_status = hammer(p.sim.url(""));
    let s_msgs = p.sim.messages_until("on_delete ctx=", N);
    let statuses = |v: &[u16]| vec![format!("{} x 200", v.iter().filter(|s| **s == 200).count())];
    r.compare(
        "counter: statuses",
        &statuses(&e_status),
        &statuses(&s_status),
    );
    let values = |m: &[String]| {
        let mut v: Vec<u64> = m
            .iter()
            .filter_map(|l| l.strip_prefix("counter=")?.parse().ok())
            .collect();
        v.sort_unstable();
        let errors: Vec<String> = m
            .iter()
            .filter(|l| l.starts_with("counter_err"))
            .cloned()
            .collect();
        (v, errors)
    };
    let want: Vec<u64> = (1..=N as u64).collect();
    for (side, msgs) in [("envoy", &e_msgs), ("host-sim", &s_msgs)] {
        let (v, errors) = values(msgs);
        r.check(
            &format!("counter: {side} hands out 1..={N} exactly once"),
            v == want && errors.is_empty(),
            format!("values {v:?}, errors {errors:?}"),
        );
    }
    // Every request ran the same callbacks on both hosts (compared as a multiset).
    let callbacks = |m: &[String]| {
        let mut v: Vec<String> = m
            .iter()
            .filter(|l| !l.starts_with("counter="))
            .map(|l| normalise_message(l))
            .filter(|l| !l.starts_with("on_response_body") && !l.contains("resp_names="))
            .map(|l| mask_ports(&l))
            // Concurrent streams interleave their log lines, so Envoy's service-time header
            // cannot be matched to its stream here: response header counts are compared
            // exactly in the single-worker scenarios instead.
            .map(|l| match l.strip_prefix("on_response_headers ") {
                Some(rest) => format!(
                    "on_response_headers {}",
                    rest.split(' ')
                        .map(|w| if w.starts_with("n=") { "n=*" } else { w })
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                None => l,
            })
            .collect();
        v.sort();
        v
    };
    let e_cb = callbacks(&without_service_time(&e_msgs));
    let s_cb = callbacks(&s_msgs);
    r.compare("counter: callback multiset", &e_cb, &s_cb);
    r.finish();
}

/// Ticks in real time: `tick 300` arms a 300 ms period in `on_configure`, and each VM's root
/// stops after 3 ticks. After ~1.5 s both hosts must have produced the same tick messages on
/// every VM (main + worker; the canary never ticks), `now_ms` masked.
#[test]
fn ticks_in_real_time_match_envoy() {
    let mut p = pair("diff-tick", "tick 300", 1);
    let mut r = Report::default();
    std::thread::sleep(Duration::from_millis(1500));
    let (e, s) = p.drain();
    let ticks = |m: &[String]| {
        static NOW: OnceLock<Regex> = OnceLock::new();
        let re = NOW.get_or_init(|| Regex::new(r"now_ms=\d+").unwrap());
        let mut v: Vec<String> = m
            .iter()
            .filter(|l| !l.starts_with("on_vm_start") && !l.starts_with("on_configure"))
            .filter(|l| !l.starts_with("set_tick_period") && !l.starts_with("plugin_config_in"))
            .map(|l| re.replace_all(l, "now_ms=<now>").into_owned())
            .collect();
        v.sort();
        v
    };
    r.compare("ticks (multiset, 1.5 s)", &ticks(&e), &ticks(&s));
    let now = |m: &[String]| {
        m.iter()
            .filter_map(|l| l.split("now_ms=").nth(1)?.parse::<u64>().ok())
            .collect::<Vec<u64>>()
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for (side, m) in [("envoy", &e), ("host-sim", &s)] {
        let stamps = now(m);
        r.check(
            &format!("ticks: {side} reads the real clock"),
            !stamps.is_empty() && stamps.iter().all(|t| wall.abs_diff(*t) < 10_000),
            format!("now_ms {stamps:?} vs wall {wall}"),
        );
    }
    r.finish();
}

/// A trap fails closed: `panic` panics in `on_request_headers`. With `FAIL_CLOSED` the trapping
/// request and every later one on that VM get 503 on both hosts, and the host stays up.
#[test]
fn trap_fails_closed_on_both() {
    let mut p = pair("diff-trap", "panic", 1);
    let mut r = Report::default();
    let _ = p.drain();
    for i in 0..3 {
        let req = get("panic");
        let e = Pair::send_to(&p.envoy.url(req.path), &req);
        std::thread::sleep(Duration::from_millis(300));
        let e_msgs = p.envoy_new_messages("", 0);
        let s = Pair::send_to(&p.sim.url(req.path), &req);
        let s_msgs = p.sim.messages_until("", 0);
        r.compare(
            &format!("trap, request {i}"),
            &observe(&e, &e_msgs),
            &observe(&s, &s_msgs),
        );
    }
    r.finish();
}
