//! Metrics (proxy-wasm-abi.md §12): ids 4n+type per VM, one stat per name process-wide.

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, read_string, restrict, write_u32, write_u64};
use super::types::*;
use crate::shared::MetricKind;
use crate::state::HostState;

const ENV: &str = "env";

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_define_metric",
        |mut c: Ctx<'_>, ty: i32, np: i32, nl: i32, ret_id: i32| -> Result<i32> {
            restrict(&c, "proxy_define_metric")?;
            let kind = match ty {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(Status::BadArgument.code()),
            };
            let name = read_string(&mut c, np, nl)?;
            let st = c.data_mut();
            let slot = &mut st.next_metric[ty as usize];
            *slot = slot.wrapping_add(1);
            let id = (*slot << 2) | ty as u32;
            st.shared.metric_define(&name, kind);
            st.metrics.insert(id, (kind, name));
            write_u32(&mut c, ret_id, id)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_increment_metric",
        |c: Ctx<'_>, id: i32, delta: i64| -> Result<i32> {
            restrict(&c, "proxy_increment_metric")?;
            let st = c.data();
            let Some((kind, name)) = st.metrics.get(&(id as u32)) else {
                return Ok(unknown_id(id).code());
            };
            Ok(match kind {
                MetricKind::Counter if delta > 0 => {
                    st.shared
                        .metric_update(name, |m| m.value = m.value.saturating_add(delta));
                    Status::Ok
                }
                MetricKind::Gauge => {
                    st.shared
                        .metric_update(name, |m| m.value = m.value.saturating_add(delta));
                    Status::Ok
                }
                _ => Status::BadArgument,
            }
            .code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_record_metric",
        |c: Ctx<'_>, id: i32, value: i64| -> Result<i32> {
            restrict(&c, "proxy_record_metric")?;
            let st = c.data();
            let Some((kind, name)) = st.metrics.get(&(id as u32)) else {
                return Ok(Status::NotFound.code());
            };
            match kind {
                // Envoy adds on record for counters (it does not set).
                MetricKind::Counter => st
                    .shared
                    .metric_update(name, |m| m.value = m.value.saturating_add(value)),
                MetricKind::Gauge => st.shared.metric_update(name, |m| m.value = value),
                MetricKind::Histogram => st
                    .shared
                    .metric_update(name, |m| m.samples.push(value as u64)),
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, ret: i32| -> Result<i32> {
            restrict(&c, "proxy_get_metric")?;
            let st = c.data();
            let Some((kind, name)) = st.metrics.get(&(id as u32)) else {
                return Ok(unknown_id(id).code());
            };
            if *kind == MetricKind::Histogram {
                return Ok(Status::BadArgument.code());
            }
            let v = st.shared.metric_get(name);
            write_u64(&mut c, ret, v as u64)?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}

/// Envoy's answer to `get`/`increment` of an id it does not know: it dispatches on the type bits
/// first, so only a counter or gauge id is NotFound; histogram ids and type 3 are BadArgument
/// (differential suite: `get_metric(999)` → BadArgument in Envoy 1.40).
fn unknown_id(id: i32) -> Status {
    match id & 3 {
        0 | 1 => Status::NotFound,
        _ => Status::BadArgument,
    }
}
