//! `tollgate-sim check`: load the plugin, run on_configure, report accepted/rejected.

use crate::config::Bootstrap;
use crate::sim::{Sim, SimError, SimOptions};
use crate::state::LogLine;

/// Outcome of a configuration check.
#[derive(Debug)]
pub struct CheckReport {
    pub accepted: bool,
    pub verdict: String,
    /// The filter's own log lines from the first VM.
    pub logs: Vec<LogLine>,
}

/// Starts one worker VM (plus the main-thread VM Envoy also starts) and reports whether the
/// plugin accepted its configuration.
pub fn check(bootstrap: Bootstrap, mut opts: SimOptions) -> CheckReport {
    opts.workers = 1;
    // Logs are collected through a sink that outlives a failed start.
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let result = Sim::with_log_sink(bootstrap, opts, sink.clone());
    let logs: Vec<LogLine> = crate::shared::lock(&sink)
        .iter()
        .filter(|l: &&LogLine| l.vm == 0)
        .cloned()
        .collect();
    match result {
        Ok(_) => CheckReport {
            accepted: true,
            verdict: "accepted: on_vm_start and on_configure returned true".into(),
            logs,
        },
        Err(e @ SimError::Rejected) => CheckReport {
            accepted: false,
            verdict: format!("rejected: {e}"),
            logs,
        },
        Err(e) => CheckReport {
            accepted: false,
            verdict: format!("rejected: {e}"),
            logs,
        },
    }
}
