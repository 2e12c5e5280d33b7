//! `tollgate-sim`: run the Tollgate `.wasm` in a simulated Envoy (see host-sim/README.md).

use std::collections::HashMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tollgate_sim::config::Bootstrap;
use tollgate_sim::replay::{ReplayOptions, replay};
use tollgate_sim::{Sim, SimOptions};

#[derive(Parser)]
#[command(
    name = "tollgate-sim",
    about = "A proxy-wasm host that runs the same .wasm Envoy loads"
)]
struct Cli {
    /// Envoy bootstrap (YAML or JSON).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Overrides vm_config.code.local.filename.
    #[arg(long, global = true)]
    wasm: Option<PathBuf>,
    /// Worker VMs (a main-thread VM is added, as in Envoy).
    #[arg(long, global = true, default_value_t = 2)]
    workers: usize,
    /// Seed for the guests' random_get and generated request ids.
    #[arg(long, global = true, default_value_t = 0x5EED)]
    seed: u64,
    /// Fuel per callback: a guest that runs longer is stopped and reported as a trap.
    #[arg(long, global = true, default_value_t = tollgate_sim::VmLimits::default().fuel_per_callback)]
    fuel: u64,
    /// Linear memory cap per VM, in MiB (Envoy: 1024).
    #[arg(long, global = true, default_value_t = 1024)]
    max_memory_mib: usize,
    /// Points a cluster at a real server: NAME=http://127.0.0.1:PORT (repeatable).
    #[arg(long = "cluster", global = true)]
    clusters: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// JSON Lines in (stdin or --input), one JSON line out per request.
    Replay {
        #[arg(long)]
        input: Option<PathBuf>,
        /// Include each request's filter log lines in its output line.
        #[arg(long)]
        logs: bool,
    },
    /// Load the plugin, run on_configure, print its logs and a verdict.
    Check,
    /// Serve real HTTP/1.1 on the bootstrap's listener.
    Serve,
}

/// `NAME=http://host:port[/...]` → (`NAME`, `host:port`).
fn parse_cluster(s: &str) -> Result<(String, String)> {
    let (name, url) = s
        .split_once('=')
        .with_context(|| format!("--cluster {s:?}: expected NAME=http://HOST:PORT"))?;
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if !hostport.contains(':') {
        bail!("--cluster {s:?}: the URL needs a port");
    }
    Ok((name.to_string(), hostport.to_string()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = cli.config.as_ref().context("--config FILE is required")?;
    let bootstrap = Bootstrap::from_file(config)?;
    let overrides: HashMap<String, String> = cli
        .clusters
        .iter()
        .map(|c| parse_cluster(c))
        .collect::<Result<_>>()?;
    let mut opts = SimOptions {
        workers: cli.workers,
        seed: cli.seed,
        wasm_override: cli.wasm.clone(),
        cluster_overrides: overrides,
        limits: tollgate_sim::VmLimits {
            fuel_per_callback: cli.fuel,
            max_memory_bytes: cli.max_memory_mib.saturating_mul(1 << 20),
        },
        ..SimOptions::default()
    };
    match cli.cmd {
        Cmd::Replay { input, logs } => {
            let ropts = ReplayOptions {
                sim: opts,
                include_logs: logs,
            };
            let stdout = std::io::stdout().lock();
            let stderr = std::io::stderr().lock();
            match input {
                Some(p) => {
                    let f = std::fs::File::open(&p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    replay(bootstrap, ropts, BufReader::new(f), stdout, stderr)?;
                }
                None => replay(bootstrap, ropts, std::io::stdin().lock(), stdout, stderr)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check => {
            let report = tollgate_sim::check::check(bootstrap, opts);
            for l in &report.logs {
                println!("[{}] {}", l.level, l.message);
            }
            println!("{}", report.verdict);
            Ok(if report.accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Serve => {
            opts.callouts_use_config_addresses = true;
            let sim = Sim::new(bootstrap, opts)?;
            for l in sim.take_logs() {
                eprintln!("vm{} [{}] {}", l.vm, l.level, l.message);
            }
            tollgate_sim::serve::run(sim)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}
