//! A real `tollgate-sidecar` process for the fleet tests: started on a fixed loopback
//! port (so the gateways' `sidecar` cluster stays valid across a restart) with its own
//! embedded store; `kill -9`ed on [`SidecarProcess::kill9`] and on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{KillOnDrop, target_dir};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The sidecar binary of this workspace, built once per test process: `cargo test -p
/// tollgate-envoy-tests` alone would not build another package's binary.
pub fn sidecar_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "tollgate-sidecar", "--bin"])
                .arg("tollgate-sidecar")
                .current_dir(crate::repo_root())
                .status()
                .map_err(|e| format!("run cargo build for tollgate-sidecar: {e}"))?;
            let path = target_dir().join("debug/tollgate-sidecar");
            if status.success() && path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "building tollgate-sidecar failed ({status}); expected {}",
                    path.display()
                ))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

pub struct SidecarProcess {
    process: KillOnDrop,
    port: u16,
}

impl SidecarProcess {
    /// Starts the sidecar on `127.0.0.1:port` with its embedded store in `data`.
    pub fn start(port: u16, data: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(sidecar_binary()?)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn tollgate-sidecar")?;
        let stdout = child.stdout.take().context("sidecar stdout")?;
        let process = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the sidecar never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) if line.starts_with("listening on http://") => {
                Ok(Self { process, port })
            }
            other => bail!("tollgate-sidecar did not start on port {port}: {other:?}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `kill -9`: no graceful shutdown; only what the sidecar acknowledged is on disk.
    pub fn kill9(self) {
        drop(self.process);
    }

    /// `GET /v1/usage` for `tenant` over `[from_ms, to_ms)`: the parsed answer.
    pub fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> anyhow::Result<serde_json::Value> {
        let url = self.url(&format!(
            "/v1/usage?tenant={tenant}&from={from_ms}&to={to_ms}"
        ));
        let resp = crate::request("GET", &url, &[], None)?;
        if resp.status != 200 {
            bail!("GET {url}: {} {}", resp.status, resp.body);
        }
        resp.json()
    }
}

/// A fresh directory for a sidecar's store under `target/envoy-tests/`.
pub fn sidecar_data_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("envoy-tests").join(format!(
        "sidecar-{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
