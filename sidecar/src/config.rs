//! Configuration: flags, optionally layered over a TOML or YAML file (`--config`).
//! A flag wins over the file, the file over the defaults. Unknown file keys are an
//! error that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_DATA: &str = ".tollgate/sidecar";
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-sidecar",
    about = "Aggregates rate-limit counters and usage across Tollgate gateway nodes"
)]
pub struct Cli {
    /// TOML (.toml) or YAML (.yaml/.yml) file with the same settings as the flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve on; port 0 picks a free port (printed on the first stdout line).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store (ignored with --redis).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Shared Redis store, e.g. redis://127.0.0.1:6379/0, for several sidecar instances.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Days of usage rollups, event ids and batch ids kept.
    #[arg(long, value_name = "N")]
    pub retention_days: Option<u32>,
    /// Allow a non-loopback --listen address. The API has no authentication: expose
    /// it only on a network the gateway nodes alone can reach.
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    redis: Option<String>,
    retention_days: Option<u32>,
    allow_remote: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Embedded(PathBuf),
    Redis(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub retention_days: u32,
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "toml" => toml::from_str(&text).with_context(|| format!("config {}", path.display())),
        "yaml" | "yml" => {
            serde_yaml::from_str(&text).with_context(|| format!("config {}", path.display()))
        }
        _ => bail!(
            "config {}: extension must be .toml, .yaml or .yml",
            path.display()
        ),
    }
}

impl Config {
    pub fn from_cli(cli: Cli) -> anyhow::Result<Self> {
        let file = match &cli.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let listen = match cli.listen.or(file.listen) {
            Some(a) => a,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let allow_remote = cli.allow_remote || file.allow_remote == Some(true);
        if !listen.ip().is_loopback() && !allow_remote {
            bail!(
                "--listen {listen} is not a loopback address; the API is unauthenticated, \
                 pass --allow-remote to expose it on purpose"
            );
        }
        let retention_days = cli
            .retention_days
            .or(file.retention_days)
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        if !(1..=3650).contains(&retention_days) {
            bail!("retention_days must be 1..=3650, got {retention_days}");
        }
        let store = match cli.redis.or(file.redis) {
            Some(url) => StoreConfig::Redis(url),
            None => StoreConfig::Embedded(
                cli.data
                    .or(file.data)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
            ),
        };
        Ok(Self {
            listen,
            store,
            retention_days,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tollgate-sidecar").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults() {
        let c = Config::from_cli(cli(&[])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, StoreConfig::Embedded(PathBuf::from(DEFAULT_DATA)));
        assert_eq!(c.retention_days, 30);
    }

    #[test]
    fn flags_override_file_and_unknown_keys_fail() {
        let dir = std::env::temp_dir().join(format!("tg-sidecar-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("c.toml");
        std::fs::write(
            &toml_path,
            "retention_days = 7\nredis = \"redis://127.0.0.1:1\"\n",
        )
        .unwrap();
        let c = Config::from_cli(cli(&[
            "--config",
            toml_path.to_str().unwrap(),
            "--retention-days",
            "9",
        ]))
        .unwrap();
        assert_eq!(c.retention_days, 9);
        assert_eq!(c.store, StoreConfig::Redis("redis://127.0.0.1:1".into()));
        let yaml_path = dir.join("c.yaml");
        std::fs::write(&yaml_path, "retention_dayz: 7\n").unwrap();
        let err = Config::from_cli(cli(&["--config", yaml_path.to_str().unwrap()])).unwrap_err();
        assert!(format!("{err:#}").contains("retention_dayz"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_remote_listen_unless_allowed() {
        assert!(Config::from_cli(cli(&["--listen", "0.0.0.0:9090"])).is_err());
        assert!(Config::from_cli(cli(&["--listen", "0.0.0.0:9090", "--allow-remote"])).is_ok());
        assert!(Config::from_cli(cli(&["--retention-days", "0"])).is_err());
    }
}
