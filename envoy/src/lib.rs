//! Harness for running the Tollgate filter inside a real Envoy 1.40.
//!
//! A test renders `bootstrap/test.yaml.tmpl` with its own ports, the filter's `.wasm` and a
//! policy, starts Envoy on it ([`Envoy::start`]), starts demo origins in-process
//! ([`BackgroundOrigin`]) and talks to both over loopback with a small blocking client
//! ([`request`]). Every process started here is killed when its guard drops, also when the
//! test fails. Envoy's log (and the rendered bootstrap) stay under
//! `target/envoy-tests/` for debugging.
//!
//! Envoy is taken from `TOLLGATE_ENVOY`, else `<repo>/.venv/bin/envoy`
//! (`scripts/install-envoy.sh` installs it there). The filter is taken from `TOLLGATE_WASM`,
//! else `target/wasm32-wasip1/release/tollgate_filter.wasm`. A missing one is an error that
//! says how to get it, never a silent skip.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub use tollgate_examples::BackgroundOrigin;

pub mod sidecar;

/// How long Envoy may take to load the filter and open its listener.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-request deadline of [`request`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const TEMPLATE: &str = include_str!("../bootstrap/test.yaml.tmpl");

/// Attempts at starting Envoy when a picked port was taken by someone else meanwhile.
const START_ATTEMPTS: u32 = 3;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}

/// The Envoy binary to run.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    envoy_binary_from(std::env::var_os("TOLLGATE_ENVOY"))
}

fn envoy_binary_from(overridden: Option<std::ffi::OsString>) -> anyhow::Result<PathBuf> {
    let path = match overridden {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv/bin/envoy"),
    };
    if !path.is_file() {
        bail!(
            "no Envoy at {}: run scripts/install-envoy.sh (or set TOLLGATE_ENVOY)",
            path.display()
        );
    }
    Ok(path)
}

/// The filter module under test.
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("TOLLGATE_WASM") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("wasm32-wasip1/release/tollgate_filter.wasm"),
    };
    if !path.is_file() {
        bail!(
            "no filter at {}: run `cargo build -p tollgate-filter --target wasm32-wasip1 --release` \
             (or set TOLLGATE_WASM)",
            path.display()
        );
    }
    Ok(path)
}

/// Ports handed out by this process: the kernel may give the same free port to two callers
/// in a row before either binds it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that was free a moment ago and was not handed out before by this process.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..64 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut guard = HANDED_OUT
            .lock()
            .map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("no fresh loopback port after 64 tries")
}

/// Which way the filter fails when its VM fails (`PluginConfig.failure_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    FailClosed,
    FailOpen,
}

/// How Envoy's route table turns the filter's `x-tollgate-cluster` into an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// One route, `cluster_header: x-tollgate-cluster` (the plain-Envoy deployment).
    ClusterHeader,
    /// One route per cluster matching the header's exact value, then a 503 direct
    /// response (the shape an Istio VirtualService produces).
    HeaderMatch,
}

/// What to run: the plugin configuration (the policy) and the upstream clusters.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// Names the log and bootstrap files under `target/envoy-tests/`.
    pub label: String,
    pub wasm: PathBuf,
    /// The plugin configuration, passed verbatim as a `StringValue`.
    pub policy: String,
    /// `(name, port)` of static clusters on 127.0.0.1.
    pub clusters: Vec<(String, u16)>,
    pub failure_policy: FailurePolicy,
    pub route_mode: RouteMode,
    /// Envoy's `--concurrency` (worker threads, one VM each). Default 2.
    pub concurrency: u32,
    /// `PluginConfig.allow_on_headers_stop_iteration`. Default true.
    pub allow_on_headers_stop_iteration: bool,
}

impl EnvoyConfig {
    /// A config for the built filter with `policy`; `label` names the log files.
    pub fn new(label: &str, policy: &str) -> anyhow::Result<Self> {
        Ok(Self {
            label: label.to_owned(),
            wasm: filter_wasm()?,
            policy: policy.to_owned(),
            clusters: Vec::new(),
            failure_policy: FailurePolicy::FailClosed,
            route_mode: RouteMode::ClusterHeader,
            concurrency: 2,
            allow_on_headers_stop_iteration: true,
        })
    }

    /// A config for another module (e.g. the host-sim probe) with `plugin_config`.
    pub fn with_wasm(label: &str, wasm: PathBuf, plugin_config: &str) -> Self {
        Self {
            label: label.to_owned(),
            wasm,
            policy: plugin_config.to_owned(),
            clusters: Vec::new(),
            failure_policy: FailurePolicy::FailClosed,
            route_mode: RouteMode::ClusterHeader,
            concurrency: 2,
            allow_on_headers_stop_iteration: true,
        }
    }

    /// Runs `n` worker threads.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets `allow_on_headers_stop_iteration`.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.allow_on_headers_stop_iteration = allow;
        self
    }

    /// Uses `mode` for the route table.
    pub fn route_mode(mut self, mode: RouteMode) -> Self {
        self.route_mode = mode;
        self
    }

    /// Adds a static cluster `name` → `127.0.0.1:port`.
    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.to_owned(), port));
        self
    }

    /// The bootstrap YAML for these ports.
    pub fn render(&self, listen_port: u16, admin_port: u16) -> anyhow::Result<String> {
        let mut clusters = String::new();
        for (name, port) in &self.clusters {
            // The name is quoted through JSON, which YAML reads as a double-quoted scalar.
            let name = serde_json::to_string(name)?;
            write!(
                clusters,
                "    - name: {name}\n      type: STATIC\n      connect_timeout: 1s\n      \
                 load_assignment:\n        cluster_name: {name}\n        endpoints:\n          \
                 - lb_endpoints:\n              - endpoint: {{ address: {{ socket_address: \
                 {{ address: 127.0.0.1, port_value: {port} }} }} }}\n"
            )?;
        }
        if clusters.is_empty() {
            clusters.push_str("    []\n");
        }
        let routes = self.render_routes()?;
        let failure_policy = match self.failure_policy {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
        };
        let rendered = TEMPLATE
            .replace("{{ADMIN_PORT}}", &admin_port.to_string())
            .replace("{{LISTEN_PORT}}", &listen_port.to_string())
            .replace("{{FAILURE_POLICY}}", failure_policy)
            .replace(
                "{{ALLOW_ON_HEADERS_STOP_ITERATION}}",
                if self.allow_on_headers_stop_iteration {
                    "true"
                } else {
                    "false"
                },
            )
            .replace(
                "{{WASM_PATH}}",
                &serde_json::to_string(&self.wasm.to_string_lossy())?,
            )
            // A JSON string literal is a valid YAML double-quoted scalar, so any policy text
            // (newlines, quotes, colons) survives unchanged.
            .replace("{{PLUGIN_CONFIG}}", &serde_json::to_string(&self.policy)?)
            .replace("{{ROUTES}}\n", &routes)
            .replace("{{CLUSTERS}}\n", &clusters);
        if let Some(at) = rendered.find("{{") {
            bail!(
                "unrendered placeholder in bootstrap at byte {at}: {}",
                &rendered[at..rendered.len().min(at + 40)]
            );
        }
        Ok(rendered)
    }

    fn render_routes(&self) -> anyhow::Result<String> {
        const INDENT: &str = "                        ";
        let mut routes = String::new();
        match self.route_mode {
            RouteMode::ClusterHeader => writeln!(
                routes,
                "{INDENT}- match: {{ prefix: \"/\" }}\n{INDENT}  route: \
                 {{ cluster_header: x-tollgate-cluster, timeout: 15s }}"
            )?,
            RouteMode::HeaderMatch => {
                for (name, _) in &self.clusters {
                    let name = serde_json::to_string(name)?;
                    writeln!(
                        routes,
                        "{INDENT}- match: {{ prefix: \"/\", headers: [{{ name: x-tollgate-cluster, \
                         string_match: {{ exact: {name} }} }}] }}\n{INDENT}  route: \
                         {{ cluster: {name}, timeout: 15s }}"
                    )?;
                }
                writeln!(
                    routes,
                    "{INDENT}- match: {{ prefix: \"/\" }}\n{INDENT}  direct_response: \
                     {{ status: 503, body: {{ inline_string: \"no_routing_decision\" }} }}"
                )?;
            }
        }
        Ok(routes)
    }
}

/// Run files older than this are deleted (once per test process), so the directory
/// does not grow without bound across runs.
const KEEP_RUN_FILES: Duration = Duration::from_secs(24 * 3600);

static PRUNE: std::sync::Once = std::sync::Once::new();

fn prune_old_run_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_RUN_FILES);
        if old {
            // Best effort: a file another process still writes is fine to keep.
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Files of one Envoy run under `target/envoy-tests/`.
fn run_files(label: &str, admin_port: u16) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = target_dir().join("envoy-tests");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    PRUNE.call_once(|| prune_old_run_files(&dir));
    let stem: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Ok((
        dir.join(format!("{stem}-{admin_port}.yaml")),
        dir.join(format!("{stem}-{admin_port}.log")),
    ))
}

/// A process killed (and reaped) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited is fine; wait() reaps it either way so no zombie is left.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_envoy(
    config_path: &Path,
    log_path: &Path,
    base_id: u16,
    concurrency: u32,
) -> anyhow::Result<KillOnDrop> {
    let envoy = envoy_binary()?;
    let log = File::create(log_path).with_context(|| format!("create {}", log_path.display()))?;
    let child = Command::new(&envoy)
        .arg("-c")
        .arg(config_path)
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .args(["-l", "info"])
        // Access-log lines reach the file within 100 ms instead of Envoy's default 10 s.
        .args(["--file-flush-interval-msec", "100"])
        .arg("--base-id")
        .arg(base_id.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawn {}", envoy.display()))?;
    Ok(KillOnDrop(child))
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    process: KillOnDrop,
    listen_port: u16,
    admin_port: u16,
    log_path: PathBuf,
}

/// How an Envoy run ended that was expected to fail.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
    pub log_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `config` and waits until its admin says `/ready` and the listener
    /// accepts connections.
    pub fn start(config: &EnvoyConfig) -> anyhow::Result<Self> {
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(config) {
                Ok(envoy) => return Ok(envoy),
                Err(StartError::PortTaken(e)) => last_err = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("envoy did not start")))
    }

    fn try_start(config: &EnvoyConfig) -> Result<Self, StartError> {
        let listen_port = free_port()?;
        let admin_port = free_port()?;
        let (config_path, log_path) = run_files(&config.label, admin_port)?;
        fs::write(&config_path, config.render(listen_port, admin_port)?)
            .with_context(|| format!("write {}", config_path.display()))?;
        // The admin port is unique among live Envoys of this machine, so it makes a base id
        // that no concurrent test shares (hot-restart shared memory is keyed by it).
        let process = spawn_envoy(&config_path, &log_path, admin_port, config.concurrency)?;
        let mut envoy = Envoy {
            process,
            listen_port,
            admin_port,
            log_path,
        };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.process.0.try_wait().context("poll envoy")? {
                let log = self.log();
                let err = anyhow::anyhow!(
                    "envoy exited during startup ({status}); log {}:\n{}",
                    self.log_path.display(),
                    tail(&log, 40)
                );
                return Err(if log.contains("Address already in use") {
                    StartError::PortTaken(err)
                } else {
                    StartError::Other(err)
                });
            }
            let ready =
                request("GET", &self.admin_url("/ready"), &[], None).is_ok_and(|r| r.status == 200);
            if ready && connect(self.listen_port).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StartError::Other(anyhow::anyhow!(
            "envoy not ready within {START_TIMEOUT:?}; log {}:\n{}",
            self.log_path.display(),
            tail(&self.log(), 40)
        )))
    }

    /// Starts Envoy on `config`, expecting it to refuse the configuration and exit within
    /// `within`. Fails if it is still running then (it is killed).
    pub fn start_expect_exit(config: &EnvoyConfig, within: Duration) -> anyhow::Result<Exited> {
        let listen_port = free_port()?;
        let admin_port = free_port()?;
        let (config_path, log_path) = run_files(&config.label, admin_port)?;
        fs::write(&config_path, config.render(listen_port, admin_port)?)?;
        let mut process = spawn_envoy(&config_path, &log_path, admin_port, config.concurrency)?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = process.0.try_wait()? {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Ok(Exited {
                    status,
                    log,
                    log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(process);
        bail!(
            "envoy still running after {within:?}; log {}:\n{}",
            log_path.display(),
            tail(&fs::read_to_string(&log_path).unwrap_or_default(), 40)
        )
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// `http://127.0.0.1:<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// `http://127.0.0.1:<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Envoy's log so far (stdout and stderr, including the access log lines).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded by `within`) until Envoy's log contains `needle`. Access-log lines are
    /// flushed to the file every 100 ms, not per request.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a request to the listener.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<HttpResponse> {
        request(method, &self.url(path), headers, body)
    }

    /// GET `path` on the listener.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
        self.request("GET", path, headers, None)
    }

    /// The filter's custom metrics (`/stats?filter=wasmcustom`), by full stat name.
    pub fn wasmcustom_stats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let resp = request(
            "GET",
            &self.admin_url("/stats?filter=wasmcustom"),
            &[],
            None,
        )?;
        if resp.status != 200 {
            bail!("admin /stats answered {}: {}", resp.status, resp.body);
        }
        Ok(parse_stats(&resp.body))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // KillOnDrop does the work; this only makes the log easy to find after a failure.
        if std::thread::panicking() {
            eprintln!("envoy log: {}", self.log_path.display());
        }
    }
}

enum StartError {
    /// A picked port was taken before Envoy bound it: worth another try with new ports.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for StartError {
    fn from(e: E) -> Self {
        StartError::Other(e.into())
    }
}

/// Parses the admin's plain-text stats (`name: value` lines); histograms are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Lower-case names, in order, repeated names kept.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON (status {}): {}", self.status, self.body))
    }

    /// The headers the demo origin reports it received (the `headers` of its echo).
    pub fn origin_saw_headers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let json = self.json()?;
        let list = json["headers"]
            .as_array()
            .with_context(|| format!("no `headers` in origin echo: {}", self.body))?;
        list.iter()
            .map(|pair| match (pair[0].as_str(), pair[1].as_str()) {
                (Some(k), Some(v)) => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("bad header pair in echo: {pair}"),
            })
            .collect()
    }
}

/// One blocking HTTP/1.1 request over loopback, bounded by [`REQUEST_TIMEOUT`]. Every
/// status is a response, not an error; `host` in `headers` overrides the URL's authority.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpResponse> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        // Loopback only: never route through a proxy from the environment.
        .proxy(None)
        .max_redirects(0)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .context("build request")?;
    let mut resp = agent.run(req).with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("read body of {method} {url}"))?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn config() -> EnvoyConfig {
        EnvoyConfig {
            label: "t".into(),
            wasm: PathBuf::from("/x/f.wasm"),
            policy: "version: 1\nroutes: [{name: \"a\", cluster: b}] # 'q'\n".into(),
            clusters: vec![("origin".into(), 8081), ("origin_eu".into(), 8082)],
            failure_policy: FailurePolicy::FailClosed,
            route_mode: RouteMode::ClusterHeader,
            concurrency: 2,
            allow_on_headers_stop_iteration: true,
        }
    }

    #[test]
    fn render_fills_every_placeholder() {
        let yaml = config().render(10000, 9901).unwrap();
        assert!(!yaml.contains("{{"), "{yaml}");
        assert!(yaml.contains("port_value: 10000"));
        assert!(yaml.contains("port_value: 9901"));
        assert!(yaml.contains("filename: \"/x/f.wasm\""));
        assert!(yaml.contains("failure_policy: FAIL_CLOSED"));
        assert!(
            yaml.contains(r#"value: "version: 1\nroutes: [{name: \"a\", cluster: b}] # 'q'\n""#)
        );
        assert!(yaml.contains("cluster_name: \"origin_eu\""));
        assert!(yaml.contains("port_value: 8082"));
        assert!(yaml.contains("cluster_header: x-tollgate-cluster"));
    }

    #[test]
    fn render_header_match_routes_end_in_a_refusal() {
        let mut c = config();
        c.route_mode = RouteMode::HeaderMatch;
        let yaml = c.render(1, 2).unwrap();
        assert!(!yaml.contains("cluster_header"), "{yaml}");
        let a = yaml.find("exact: \"origin\"").unwrap();
        let b = yaml.find("exact: \"origin_eu\"").unwrap();
        let refusal = yaml.find("direct_response").unwrap();
        assert!(a < b && b < refusal, "{yaml}");
    }

    #[test]
    fn render_without_clusters_is_an_empty_list() {
        let mut c = config();
        c.clusters.clear();
        assert!(c.render(1, 2).unwrap().contains("  clusters:\n    []\n"));
    }

    #[test]
    fn stats_parse_counters_and_skip_histograms() {
        let stats = parse_stats(
            "wasmcustom.tollgate_requests_total: 3\nwasmcustom.h: P0(nan,1) P25(nan,2)\n",
        );
        assert_eq!(stats.len(), 1);
        assert_eq!(stats["wasmcustom.tollgate_requests_total"], 3);
    }

    #[test]
    fn free_ports_are_not_repeated() {
        let a: HashSet<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn missing_envoy_names_the_install_script() {
        let err = envoy_binary_from(Some("/nonexistent/envoy".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("run scripts/install-envoy.sh"), "{err}");
    }

    #[test]
    fn client_sends_headers_body_and_host_override() {
        let origin = BackgroundOrigin::start("c").unwrap();
        let url = format!("http://{}/p?q=1", origin.addr());
        let resp = request(
            "PUT",
            &url,
            &[("host", "api.example.com"), ("x-a", "1"), ("x-a", "2")],
            Some(b"body"),
        )
        .unwrap();
        assert_eq!(resp.status, 200);
        let saw = resp.origin_saw_headers().unwrap();
        let host: Vec<_> = saw.iter().filter(|(k, _)| k == "host").collect();
        assert_eq!(host, [&("host".to_owned(), "api.example.com".to_owned())]);
        let xa: Vec<_> = saw
            .iter()
            .filter(|(k, _)| k == "x-a")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(xa, ["1", "2"]);
        let echo = resp.json().unwrap();
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["path"], "/p?q=1");
        assert_eq!(echo["body"], "body");
        // Error statuses are responses, not errors.
        let resp = request(
            "GET",
            &format!("http://{}/status/503", origin.addr()),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(resp.status, 503);
    }
}
