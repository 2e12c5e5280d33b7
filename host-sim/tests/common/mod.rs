//! Shared helpers for host-sim integration tests: builds the probe `.wasm` once and drives it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use tollgate_sim::config::Bootstrap;
use tollgate_sim::state::PendingCallout;
use tollgate_sim::{
    CalloutReply, Callouts, Sim, SimOptions, SimRequest, SimResponse, Upstream, UpstreamReply,
    UpstreamRequest, VmLimits,
};

pub const T0_MS: u64 = 1_767_225_600_000;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds `tollgate-probe` for wasm32-wasip1 (release) once per test binary.
pub fn probe_wasm() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "tollgate-probe",
                "--target",
                "wasm32-wasip1",
                "--release",
                "--quiet",
            ])
            .current_dir(&root)
            .status()
            .expect("running cargo build for the probe");
        assert!(status.success(), "building tollgate-probe failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let target = if target.is_absolute() {
            target
        } else {
            root.join(target)
        };
        target.join("wasm32-wasip1/release/tollgate_probe.wasm")
    })
    .clone()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The probe bootstrap with `scenario` as plugin configuration; `extra` is inserted into the
/// wasm plugin config (YAML lines at the `config:` indentation).
pub fn bootstrap_text(scenario: &str, extra: &str) -> String {
    let text = std::fs::read_to_string(fixture("probe.yaml")).unwrap();
    let text = text.replace(
        "                  value: noop",
        &format!("                  value: {scenario:?}"),
    );
    let wasm = probe_wasm();
    let text = text.replace(
        "code: {local: {filename: probe.wasm}}",
        &format!(
            "code: {{local: {{filename: {:?}}}}}",
            wasm.display().to_string()
        ),
    );
    if extra.is_empty() {
        text
    } else {
        let indented: String = extra
            .lines()
            .map(|l| format!("                {l}\n"))
            .collect();
        text.replace(
            "                root_id: probe_root\n",
            &format!("                root_id: probe_root\n{indented}"),
        )
    }
}

pub fn bootstrap(scenario: &str, extra: &str) -> Bootstrap {
    Bootstrap::parse(&bootstrap_text(scenario, extra)).unwrap()
}

pub fn options(workers: usize) -> SimOptions {
    SimOptions {
        workers,
        // Small enough that a looping guest is stopped quickly.
        limits: VmLimits {
            fuel_per_callback: 50_000_000,
            max_memory_bytes: 64 << 20,
        },
        start_time_ns: Some(T0_MS * 1_000_000),
        ..SimOptions::default()
    }
}

/// A sidecar that answers every callout with a fixed reply.
pub struct FixedCallouts(pub CalloutReply);

impl Callouts for FixedCallouts {
    fn call(&self, _c: &PendingCallout, _address: Option<&str>) -> CalloutReply {
        self.0.clone()
    }
}

pub fn sim(scenario: &str, workers: usize) -> Sim {
    Sim::new(bootstrap(scenario, ""), options(workers)).unwrap()
}

pub fn sim_with(scenario: &str, extra: &str, workers: usize, callouts: CalloutReply) -> Sim {
    Sim::with_callouts(
        bootstrap(scenario, extra),
        options(workers),
        Arc::new(FixedCallouts(callouts)),
    )
    .unwrap()
}

pub fn get(path: &str) -> SimRequest {
    SimRequest {
        time_ns: Some(T0_MS * 1_000_000),
        method: "GET".into(),
        path: path.into(),
        authority: "api.example.com".into(),
        scheme: "http".into(),
        downstream_addr: Some("203.0.113.7:51234".into()),
        ..Default::default()
    }
}

pub fn h(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Origin stub that records what it got.
pub struct Stub {
    pub reply: UpstreamReply,
    pub seen: Vec<UpstreamRequest>,
}

impl Stub {
    pub fn ok(body: &str) -> Stub {
        Stub {
            reply: UpstreamReply::Response {
                status: 200,
                headers: h(&[("content-length", &body.len().to_string())]),
                body: body.as_bytes().to_vec(),
                trailers: vec![],
            },
            seen: vec![],
        }
    }
}

impl Upstream for Stub {
    fn send(&mut self, req: &UpstreamRequest, _address: Option<&str>) -> UpstreamReply {
        self.seen.push(req.clone());
        self.reply.clone()
    }
}

pub fn run(sim: &Sim, req: SimRequest, body: &str) -> SimResponse {
    sim.handle(req, &mut Stub::ok(body))
}

/// Log messages of one VM (all contexts), in order.
pub fn messages(sim: &Sim, vm: usize) -> Vec<String> {
    sim.take_logs()
        .into_iter()
        .filter(|l| l.vm == vm)
        .map(|l| l.message)
        .collect()
}

/// Only the callback lines (`on_*`) of the stream contexts.
pub fn callbacks(msgs: &[String]) -> Vec<String> {
    msgs.iter()
        .filter(|m| {
            m.starts_with("on_") && !m.starts_with("on_vm_start") && !m.starts_with("on_configure")
        })
        .cloned()
        .collect()
}

pub fn header<'a>(r: &'a SimResponse, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
        .collect()
}

pub fn has(msgs: &[String], needle: &str) -> bool {
    msgs.iter().any(|m| m.contains(needle))
}
