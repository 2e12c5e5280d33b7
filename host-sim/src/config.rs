//! The Envoy bootstrap subset host-sim understands. Parsing is strict: a field that is not
//! understood is an error naming its path, never silently ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Map, Value};

use crate::state::{FailurePolicy, NodeInfo};

#[derive(Clone, Debug, Default)]
pub struct Bootstrap {
    pub node: NodeInfo,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// Directory of the config file: relative wasm paths resolve against it first.
    pub base_dir: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    /// `ip:port`.
    pub address: String,
    pub route_config: RouteConfig,
    pub wasm: Option<WasmFilter>,
    pub generate_request_id: bool,
}

#[derive(Clone, Debug)]
pub enum Code {
    File(PathBuf),
    Inline(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct WasmFilter {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub code: Code,
    pub vm_configuration: Vec<u8>,
    pub configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub failure_policy: FailurePolicy,
    pub allow_on_headers_stop_iteration: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub request_headers_to_remove: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub request_headers_to_remove: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(regex::Regex),
}

#[derive(Clone, Debug)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
    Present(bool),
}

#[derive(Clone, Debug)]
pub struct HeaderMatcher {
    pub name: String,
    pub matcher: StringMatch,
    pub ignore_case: bool,
    pub invert: bool,
}

#[derive(Clone, Debug)]
pub enum RouteAction {
    Cluster { name: String, timeout: Duration },
    ClusterHeader { header: String, timeout: Duration },
    Direct { status: u32, body: Vec<u8> },
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub action: RouteAction,
    pub request_headers_to_remove: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub connect_timeout: Duration,
    /// `host:port` of each endpoint (the first is used).
    pub endpoints: Vec<String>,
}

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A JSON object whose fields must all be consumed.
struct Obj {
    map: Map<String, Value>,
    path: String,
    used: BTreeSet<String>,
}

impl Obj {
    fn new(v: &Value, path: &str) -> Result<Obj> {
        match v {
            Value::Object(m) => Ok(Obj {
                map: m.clone(),
                path: path.to_string(),
                used: BTreeSet::new(),
            }),
            _ => bail!("{}: expected an object", display(path)),
        }
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &str) -> Option<Value> {
        let v = self.map.get(key).cloned();
        if v.is_some() {
            self.used.insert(key.to_string());
        }
        v
    }

    fn str(&mut self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => bail!("{}: expected a string", self.child(key)),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => bail!("{}: expected a boolean", self.child(key)),
        }
    }

    fn u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| anyhow!("{}: expected an unsigned integer", self.child(key))),
            // proto3 JSON allows integers as strings.
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| anyhow!("{}: expected an unsigned integer", self.child(key))),
            Some(_) => bail!("{}: expected an unsigned integer", self.child(key)),
        }
    }

    fn obj(&mut self, key: &str) -> Result<Option<Obj>> {
        let path = self.child(key);
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Obj::new(&v, &path).map(Some),
        }
    }

    fn list(&mut self, key: &str) -> Result<Vec<(String, Value)>> {
        let path = self.child(key);
        match self.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect()),
            Some(_) => bail!("{path}: expected a list"),
        }
    }

    fn strings(&mut self, key: &str) -> Result<Vec<String>> {
        self.list(key)?
            .into_iter()
            .map(|(p, v)| match v {
                Value::String(s) => Ok(s),
                _ => bail!("{p}: expected a string"),
            })
            .collect()
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>> {
        let path = self.child(key);
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_duration(&s)
                .map(Some)
                .ok_or_else(|| anyhow!("{path}: invalid duration {s:?}")),
            Some(v @ Value::Object(_)) => {
                let mut o = Obj::new(&v, &path)?;
                let secs = o.u64("seconds")?.unwrap_or(0);
                let nanos = o.u64("nanos")?.unwrap_or(0);
                o.finish()?;
                Ok(Some(
                    Duration::from_secs(secs) + Duration::from_nanos(nanos),
                ))
            }
            Some(_) => bail!("{path}: expected a duration like \"5s\""),
        }
    }

    /// Marks keys that are understood but deliberately have no effect in host-sim.
    fn accept(&mut self, keys: &[&str]) {
        for k in keys {
            let _ = self.get(k);
        }
    }

    fn finish(self) -> Result<()> {
        if let Some(k) = self.map.keys().find(|k| !self.used.contains(*k)) {
            bail!("{}: unknown field", self.child(k));
        }
        Ok(())
    }

    /// Checks `@type` ends with `expected` (with or without the type URL prefix).
    fn expect_type(&mut self, expected: &str) -> Result<()> {
        let t = self
            .str("@type")?
            .ok_or_else(|| anyhow!("{}: missing field", self.child("@type")))?;
        let name = t.rsplit('/').next().unwrap_or(&t);
        if name != expected {
            bail!(
                "{}: unsupported type {t:?} (expected {expected})",
                self.child("@type")
            );
        }
        Ok(())
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

/// `"5s"`, `"0.25s"`, `"1.5s"` (proto3 JSON duration).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let n = s.strip_suffix('s')?;
    let secs: f64 = n.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

impl Bootstrap {
    /// Reads a bootstrap file (YAML or JSON by content: JSON is valid YAML).
    pub fn from_file(path: &Path) -> Result<Bootstrap> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut b = Self::parse(&text).with_context(|| format!("{}", path.display()))?;
        b.base_dir = path.parent().map(Path::to_path_buf);
        Ok(b)
    }

    pub fn parse(text: &str) -> Result<Bootstrap> {
        let yaml: serde_yaml::Value = serde_yaml::from_str(text).context("parsing YAML/JSON")?;
        let json: Value = serde_json::to_value(yaml).context("converting YAML to JSON")?;
        parse_bootstrap(&json)
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The (single) wasm filter of the first listener that has one.
    pub fn wasm(&self) -> Option<&WasmFilter> {
        self.listeners.iter().find_map(|l| l.wasm.as_ref())
    }
}

fn parse_bootstrap(v: &Value) -> Result<Bootstrap> {
    let mut root = Obj::new(v, "")?;
    let mut b = Bootstrap::default();
    // The admin interface is not simulated.
    let _ = root.get("admin");
    if let Some(mut node) = root.obj("node")? {
        b.node.id = node.str("id")?.unwrap_or_default();
        b.node.cluster = node.str("cluster")?.unwrap_or_default();
        if let Some(m) = node.get("metadata") {
            match m {
                Value::Object(m) => b.node.metadata = m,
                _ => bail!("node.metadata: expected an object"),
            }
        }
        node.finish()?;
    }
    if let Some(mut sr) = root.obj("static_resources")? {
        for (p, l) in sr.list("listeners")? {
            b.listeners.push(parse_listener(&l, &p)?);
        }
        for (p, c) in sr.list("clusters")? {
            b.clusters.push(parse_cluster(&c, &p)?);
        }
        sr.finish()?;
    }
    root.finish()?;
    Ok(b)
}

fn socket_address(o: &mut Obj) -> Result<String> {
    let mut addr = o
        .obj("address")?
        .ok_or_else(|| anyhow!("{}: missing field", o.child("address")))?;
    let mut sa = addr
        .obj("socket_address")?
        .ok_or_else(|| anyhow!("{}: missing field", addr.child("socket_address")))?;
    let host = sa
        .str("address")?
        .ok_or_else(|| anyhow!("{}: missing field", sa.child("address")))?;
    let port = sa
        .u64("port_value")?
        .ok_or_else(|| anyhow!("{}: missing field", sa.child("port_value")))?;
    if let Some(proto) = sa.str("protocol")?
        && proto != "TCP"
    {
        bail!("{}: only TCP is supported", sa.child("protocol"));
    }
    sa.finish()?;
    addr.finish()?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

fn parse_listener(v: &Value, path: &str) -> Result<Listener> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("name")?.unwrap_or_default();
    let address = socket_address(&mut o)?;
    let chains = o.list("filter_chains")?;
    if chains.len() != 1 {
        bail!(
            "{}: exactly one filter chain is supported",
            o.child("filter_chains")
        );
    }
    let (cp, chain) = &chains[0];
    let mut chain = Obj::new(chain, cp)?;
    let filters = chain.list("filters")?;
    if filters.len() != 1 {
        bail!(
            "{}: exactly one network filter (http_connection_manager) is supported",
            chain.child("filters")
        );
    }
    let (fp, f) = &filters[0];
    let mut f = Obj::new(f, fp)?;
    let fname = f.str("name")?.unwrap_or_default();
    if fname != "envoy.filters.network.http_connection_manager" {
        bail!("{}: unsupported network filter {fname:?}", f.child("name"));
    }
    let mut hcm = f
        .obj("typed_config")?
        .ok_or_else(|| anyhow!("{}: missing field", f.child("typed_config")))?;
    hcm.expect_type(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    )?;
    // Understood, no effect in host-sim (HTTP/1.1 only; addresses come from replay/serve;
    // access logs are Envoy's own output, invisible to the filter).
    hcm.accept(&[
        "access_log",
        "stat_prefix",
        "codec_type",
        "use_remote_address",
        "server_name",
    ]);
    let generate_request_id = hcm.bool("generate_request_id")?.unwrap_or(true);
    let rc = hcm.obj("route_config")?.ok_or_else(|| {
        anyhow!(
            "{}: missing field (only inline route_config is supported)",
            hcm.child("route_config")
        )
    })?;
    let route_config = parse_route_config(rc)?;
    let mut wasm = None;
    let mut router = false;
    for (p, hf) in hcm.list("http_filters")? {
        let mut hf = Obj::new(&hf, &p)?;
        let name = hf.str("name")?.unwrap_or_default();
        let tc = hf.obj("typed_config")?;
        match (name.as_str(), tc) {
            ("envoy.filters.http.router", tc) => {
                if let Some(mut tc) = tc {
                    tc.expect_type("envoy.extensions.filters.http.router.v3.Router")?;
                    tc.finish()?;
                }
                router = true;
            }
            (_, Some(mut tc))
                if name == "envoy.filters.http.wasm"
                    || tc
                        .map
                        .get("@type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.ends_with(".wasm.v3.Wasm")) =>
            {
                if wasm.is_some() {
                    bail!("{p}: only one wasm filter per listener is supported");
                }
                if router {
                    bail!("{p}: the wasm filter must come before the router");
                }
                tc.expect_type("envoy.extensions.filters.http.wasm.v3.Wasm")?;
                let cfg = tc
                    .obj("config")?
                    .ok_or_else(|| anyhow!("{}: missing field", tc.child("config")))?;
                wasm = Some(parse_plugin(cfg)?);
                tc.finish()?;
            }
            _ => bail!("{}: unsupported http filter {name:?}", hf.child("name")),
        }
        hf.finish()?;
    }
    if !router {
        bail!(
            "{}: the envoy.filters.http.router filter is required",
            hcm.child("http_filters")
        );
    }
    hcm.finish()?;
    f.finish()?;
    chain.finish()?;
    o.finish()?;
    Ok(Listener {
        name,
        address,
        route_config,
        wasm,
        generate_request_id,
    })
}

fn config_string(o: &mut Obj, key: &str) -> Result<Vec<u8>> {
    let Some(mut c) = o.obj(key)? else {
        return Ok(Vec::new());
    };
    c.expect_type("google.protobuf.StringValue")?;
    let v = c.str("value")?.unwrap_or_default();
    c.finish()?;
    Ok(v.into_bytes())
}

fn parse_plugin(mut o: Obj) -> Result<WasmFilter> {
    let name = o.str("name")?.unwrap_or_default();
    let root_id = o.str("root_id")?.unwrap_or_default();
    let configuration = config_string(&mut o, "configuration")?;
    let fail_open = o.bool("fail_open")?.unwrap_or(false);
    let failure_policy = match o.str("failure_policy")?.as_deref() {
        None | Some("UNSPECIFIED") | Some("FAIL_UNSPECIFIED") => {
            if fail_open {
                FailurePolicy::FailOpen
            } else {
                FailurePolicy::FailClosed
            }
        }
        Some("FAIL_CLOSED") => FailurePolicy::FailClosed,
        Some("FAIL_OPEN") => FailurePolicy::FailOpen,
        Some("FAIL_RELOAD") => FailurePolicy::FailReload,
        Some(other) => bail!(
            "{}: unknown failure policy {other:?}",
            o.child("failure_policy")
        ),
    };
    let allow_on_headers_stop_iteration =
        o.bool("allow_on_headers_stop_iteration")?.unwrap_or(false);
    let mut vm = o
        .obj("vm_config")?
        .ok_or_else(|| anyhow!("{}: missing field", o.child("vm_config")))?;
    let vm_id = vm.str("vm_id")?.unwrap_or_default();
    if let Some(rt) = vm.str("runtime")?
        && !rt.starts_with("envoy.wasm.runtime.")
    {
        bail!("{}: unknown runtime {rt:?}", vm.child("runtime"));
    }
    // Precompiled code is irrelevant: host-sim always compiles with wasmtime.
    vm.accept(&["allow_precompiled", "nack_on_code_cache_miss"]);
    let vm_configuration = config_string(&mut vm, "configuration")?;
    let mut env = Vec::new();
    if let Some(mut ev) = vm.obj("environment_variables")? {
        for k in ev.strings("host_env_keys")? {
            if let Ok(v) = std::env::var(&k) {
                env.push((k, v));
            }
        }
        if let Some(kv) = ev.get("key_values") {
            let Value::Object(kv) = kv else {
                bail!("{}: expected an object", ev.child("key_values"))
            };
            for (k, v) in kv {
                match v {
                    Value::String(s) => env.push((k, s)),
                    _ => bail!("{}.{k}: expected a string", ev.child("key_values")),
                }
            }
        }
        ev.finish()?;
    }
    let mut code = vm
        .obj("code")?
        .ok_or_else(|| anyhow!("{}: missing field", vm.child("code")))?;
    let mut local = code.obj("local")?.ok_or_else(|| {
        anyhow!(
            "{}: missing field (only local code is supported)",
            code.child("local")
        )
    })?;
    let code_v = if let Some(f) = local.str("filename")? {
        Code::File(PathBuf::from(f))
    } else if let Some(s) = local.str("inline_string")? {
        Code::Inline(s.into_bytes())
    } else if let Some(b) = local.str("inline_bytes")? {
        use base64::Engine as _;
        Code::Inline(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| anyhow!("{}: {e}", local.child("inline_bytes")))?,
        )
    } else {
        bail!(
            "{}: one of filename, inline_string, inline_bytes is required",
            local.path
        )
    };
    local.finish()?;
    code.finish()?;
    vm.finish()?;
    o.finish()?;
    Ok(WasmFilter {
        name,
        root_id,
        vm_id,
        code: code_v,
        vm_configuration,
        configuration,
        env,
        failure_policy,
        allow_on_headers_stop_iteration,
    })
}

fn parse_route_config(mut o: Obj) -> Result<RouteConfig> {
    let name = o.str("name")?.unwrap_or_default();
    let request_headers_to_remove = lower_all(o.strings("request_headers_to_remove")?);
    let mut vhs = Vec::new();
    for (p, v) in o.list("virtual_hosts")? {
        let mut vh = Obj::new(&v, &p)?;
        let vname = vh.str("name")?.unwrap_or_default();
        let domains = vh.strings("domains")?;
        let rhr = lower_all(vh.strings("request_headers_to_remove")?);
        let mut routes = Vec::new();
        for (rp, r) in vh.list("routes")? {
            routes.push(parse_route(&r, &rp)?);
        }
        vh.finish()?;
        vhs.push(VirtualHost {
            name: vname,
            domains,
            routes,
            request_headers_to_remove: rhr,
        });
    }
    o.finish()?;
    Ok(RouteConfig {
        name,
        virtual_hosts: vhs,
        request_headers_to_remove,
    })
}

fn lower_all(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

fn regex_of(o: &mut Obj, key: &str) -> Result<Option<regex::Regex>> {
    let Some(mut r) = o.obj(key)? else {
        return Ok(None);
    };
    let re = r
        .str("regex")?
        .ok_or_else(|| anyhow!("{}: missing field", r.child("regex")))?;
    r.accept(&["google_re2"]);
    r.finish()?;
    // Envoy matches the full string.
    regex::Regex::new(&format!("^(?:{re})$"))
        .map(Some)
        .map_err(|e| anyhow!("{}.regex: {e}", r_path(o, key)))
}

fn r_path(o: &Obj, key: &str) -> String {
    o.child(key)
}

fn parse_route(v: &Value, path: &str) -> Result<Route> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("name")?.unwrap_or_default();
    let mut m = o
        .obj("match")?
        .ok_or_else(|| anyhow!("{}: missing field", o.child("match")))?;
    let path_match = if let Some(p) = m.str("prefix")? {
        PathMatch::Prefix(p)
    } else if let Some(p) = m.str("path")? {
        PathMatch::Exact(p)
    } else if let Some(r) = regex_of(&mut m, "safe_regex")? {
        PathMatch::Regex(r)
    } else {
        bail!("{}: one of prefix, path, safe_regex is required", m.path)
    };
    let case_sensitive = m.bool("case_sensitive")?.unwrap_or(true);
    let mut headers = Vec::new();
    for (hp, h) in m.list("headers")? {
        let mut h = Obj::new(&h, &hp)?;
        let hname = h
            .str("name")?
            .ok_or_else(|| anyhow!("{}: missing field", h.child("name")))?
            .to_ascii_lowercase();
        let invert = h.bool("invert_match")?.unwrap_or(false);
        let mut ignore_case = false;
        let matcher = if let Some(s) = h.str("exact_match")? {
            StringMatch::Exact(s)
        } else if let Some(s) = h.str("prefix_match")? {
            StringMatch::Prefix(s)
        } else if let Some(s) = h.str("suffix_match")? {
            StringMatch::Suffix(s)
        } else if let Some(s) = h.str("contains_match")? {
            StringMatch::Contains(s)
        } else if let Some(b) = h.bool("present_match")? {
            StringMatch::Present(b)
        } else if let Some(r) = regex_of(&mut h, "safe_regex_match")? {
            StringMatch::Regex(r)
        } else if let Some(mut sm) = h.obj("string_match")? {
            ignore_case = sm.bool("ignore_case")?.unwrap_or(false);
            let s = if let Some(s) = sm.str("exact")? {
                StringMatch::Exact(s)
            } else if let Some(s) = sm.str("prefix")? {
                StringMatch::Prefix(s)
            } else if let Some(s) = sm.str("suffix")? {
                StringMatch::Suffix(s)
            } else if let Some(s) = sm.str("contains")? {
                StringMatch::Contains(s)
            } else if let Some(r) = regex_of(&mut sm, "safe_regex")? {
                StringMatch::Regex(r)
            } else {
                bail!("{}: no matcher given", sm.path)
            };
            sm.finish()?;
            s
        } else {
            // No matcher: the header must be present.
            StringMatch::Present(true)
        };
        h.finish()?;
        headers.push(HeaderMatcher {
            name: hname,
            matcher,
            ignore_case,
            invert,
        });
    }
    m.finish()?;
    let action = if let Some(mut r) = o.obj("route")? {
        let timeout = r.duration("timeout")?.unwrap_or(DEFAULT_ROUTE_TIMEOUT);
        let a = if let Some(c) = r.str("cluster")? {
            RouteAction::Cluster { name: c, timeout }
        } else if let Some(h) = r.str("cluster_header")? {
            RouteAction::ClusterHeader {
                header: h.to_ascii_lowercase(),
                timeout,
            }
        } else {
            bail!("{}: one of cluster, cluster_header is required", r.path)
        };
        r.finish()?;
        a
    } else if let Some(mut d) = o.obj("direct_response")? {
        let status =
            d.u64("status")?
                .ok_or_else(|| anyhow!("{}: missing field", d.child("status")))? as u32;
        let mut body = Vec::new();
        if let Some(mut b) = d.obj("body")? {
            body = b.str("inline_string")?.unwrap_or_default().into_bytes();
            b.finish()?;
        }
        d.finish()?;
        RouteAction::Direct { status, body }
    } else {
        bail!("{}: one of route, direct_response is required", o.path)
    };
    let request_headers_to_remove = lower_all(o.strings("request_headers_to_remove")?);
    o.finish()?;
    Ok(Route {
        name,
        path: path_match,
        case_sensitive,
        headers,
        action,
        request_headers_to_remove,
    })
}

fn parse_cluster(v: &Value, path: &str) -> Result<Cluster> {
    let mut o = Obj::new(v, path)?;
    let name = o
        .str("name")?
        .ok_or_else(|| anyhow!("{}: missing field", o.child("name")))?;
    let connect_timeout = o
        .duration("connect_timeout")?
        .unwrap_or(Duration::from_secs(5));
    if let Some(t) = o.str("type")?
        && !matches!(t.as_str(), "STATIC" | "STRICT_DNS" | "LOGICAL_DNS")
    {
        bail!("{}: unsupported cluster type {t:?}", o.child("type"));
    }
    // Single-endpoint clusters: balancing and DNS family choices have no effect.
    o.accept(&["lb_policy", "dns_lookup_family"]);
    let mut endpoints = Vec::new();
    if let Some(mut la) = o.obj("load_assignment")? {
        la.accept(&["cluster_name"]);
        for (ep, e) in la.list("endpoints")? {
            let mut e = Obj::new(&e, &ep)?;
            for (lp, lb) in e.list("lb_endpoints")? {
                let mut lb = Obj::new(&lb, &lp)?;
                let mut endpoint = lb
                    .obj("endpoint")?
                    .ok_or_else(|| anyhow!("{}: missing field", lb.child("endpoint")))?;
                endpoints.push(socket_address(&mut endpoint)?);
                endpoint.finish()?;
                lb.finish()?;
            }
            e.finish()?;
        }
        la.finish()?;
    }
    o.finish()?;
    Ok(Cluster {
        name,
        connect_timeout,
        endpoints,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub const MINIMAL: &str = r#"
node: {id: n1, cluster: c1, metadata: {TENANT: acme}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster_header: x-tollgate-cluster, timeout: 2s}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: p
                root_id: r
                failure_policy: FAIL_OPEN
                configuration: {"@type": type.googleapis.com/google.protobuf.StringValue, value: noop}
                vm_config: {vm_id: v, runtime: envoy.wasm.runtime.v8, code: {local: {filename: x.wasm}}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: origin
    connect_timeout: 0.25s
    type: STATIC
    load_assignment:
      cluster_name: origin
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]
"#;

    #[test]
    fn parses_minimal() {
        let b = Bootstrap::parse(MINIMAL).unwrap();
        let w = b.wasm().unwrap();
        assert_eq!(w.configuration, b"noop");
        assert_eq!(w.failure_policy, FailurePolicy::FailOpen);
        assert_eq!(b.clusters[0].endpoints, vec!["127.0.0.1:8080"]);
        assert_eq!(b.clusters[0].connect_timeout, Duration::from_millis(250));
        assert_eq!(b.node.id, "n1");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = MINIMAL.replace("  - name: main\n", "  - name: main\n    foo: 1\n");
        let e = Bootstrap::parse(&text).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "static_resources.listeners[0].foo: unknown field"
        );
        let text = MINIMAL.replace(
            "stat_prefix: ingress",
            "stat_prefix: ingress\n          bogus: 1",
        );
        let e = Bootstrap::parse(&text).unwrap_err();
        assert!(
            format!("{e:#}")
                .contains("filter_chains[0].filters[0].typed_config.bogus: unknown field"),
            "{e:#}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), None);
    }
}
