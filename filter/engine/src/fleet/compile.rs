//! Policy `sidecar` → sync settings.

use super::FleetLimits;
use crate::headers::is_valid_header_value;
use crate::policy::compile::Errors;
use crate::policy::document::SidecarDocument;

/// How a node syncs with the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub tick_ms: u64,
    pub timeout_ms: u64,
    pub failures_to_open: u32,
    pub open_for_ms: u64,
    pub node_id: Option<String>,
    pub limits: FleetLimits,
}

impl SidecarConfig {
    /// After this long without a successful sync the fleet view is stale and each node
    /// falls back to its share: three ticks, so one lost sync does not flip enforcement.
    pub fn stale_after_ms(&self) -> u64 {
        self.tick_ms.saturating_mul(3)
    }
}

fn period_ms(text: Option<&str>, default: u64, at: &str, errors: &mut Errors) -> u64 {
    let Some(text) = text else {
        return default;
    };
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "ms" => Some(1),
        "s" => Some(1000),
        "m" => Some(60_000),
        _ => None,
    };
    match (digits.parse::<u64>().ok(), scale) {
        (Some(n), Some(scale)) if n > 0 => n.saturating_mul(scale),
        _ => {
            errors.push(
                at,
                format!("{text:?} is not a duration like 200ms, 1s or 1m"),
            );
            default
        }
    }
}

fn bound(value: Option<u32>, default: u32, at: &str, errors: &mut Errors) -> usize {
    match value {
        Some(0) => {
            errors.push(at, "must be > 0");
            default as usize
        }
        Some(n) => n as usize,
        None => default as usize,
    }
}

pub(crate) fn compile_sidecar(doc: &SidecarDocument, errors: &mut Errors) -> SidecarConfig {
    let at = "sidecar";
    if doc.cluster.is_empty()
        || doc.cluster.contains(' ')
        || !is_valid_header_value(doc.cluster.as_bytes())
    {
        errors.push(
            format!("{at}.cluster"),
            format!("{:?} is not a valid cluster name", doc.cluster),
        );
    }
    let authority = doc.authority.clone().unwrap_or_else(|| doc.cluster.clone());
    if authority.is_empty() || !is_valid_header_value(authority.as_bytes()) {
        errors.push(
            format!("{at}.authority"),
            format!("{authority:?} is not a valid authority"),
        );
    }
    let path = doc.path.clone().unwrap_or_else(|| "/v1/sync".to_string());
    if !path.starts_with('/') || !is_valid_header_value(path.as_bytes()) {
        errors.push(
            format!("{at}.path"),
            format!("{path:?} must be a path starting with '/'"),
        );
    }
    let tick_ms = period_ms(doc.tick.as_deref(), 1_000, &format!("{at}.tick"), errors);
    let timeout_ms = period_ms(
        doc.timeout.as_deref(),
        200,
        &format!("{at}.timeout"),
        errors,
    );
    if timeout_ms >= tick_ms {
        errors.push(
            format!("{at}.timeout"),
            format!("{timeout_ms} ms must be shorter than the tick ({tick_ms} ms)"),
        );
    }
    let open_for_ms = period_ms(
        doc.open_for.as_deref(),
        10_000,
        &format!("{at}.open_for"),
        errors,
    );
    let failures_to_open = bound(
        doc.failures_to_open,
        3,
        &format!("{at}.failures_to_open"),
        errors,
    ) as u32;
    if let Some(id) = &doc.node_id
        && (id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        errors.push(
            format!("{at}.node_id"),
            format!("{id:?}: use 1 to 128 letters, digits, '-', '_' or '.'"),
        );
    }
    let max_queued_events = bound(
        doc.max_queued_events,
        10_000,
        &format!("{at}.max_queued_events"),
        errors,
    );
    let max_events_per_batch = bound(
        doc.max_events_per_batch,
        1_000,
        &format!("{at}.max_events_per_batch"),
        errors,
    );
    if max_events_per_batch > max_queued_events {
        errors.push(
            format!("{at}.max_events_per_batch"),
            format!("{max_events_per_batch} is more than max_queued_events ({max_queued_events})"),
        );
    }
    let max_keys = bound(doc.max_keys, 10_000, &format!("{at}.max_keys"), errors);
    SidecarConfig {
        cluster: doc.cluster.clone(),
        authority,
        path,
        tick_ms,
        timeout_ms,
        failures_to_open,
        open_for_ms,
        node_id: doc.node_id.clone(),
        limits: FleetLimits {
            max_keys,
            max_queued_events,
            max_events_per_batch,
        },
    }
}
