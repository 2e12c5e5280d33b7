//! Shared data (proxy-wasm-abi.md §9): keyed by vm_id, one global CAS counter from 1.

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, copy_out, read, read_string, restrict, write_u32};
use super::types::*;
use crate::shared::SetOutcome;
use crate::state::HostState;

const ENV: &str = "env";

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_get_shared_data",
        |mut c: Ctx<'_>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> Result<i32> {
            restrict(&c, "proxy_get_shared_data")?;
            let key = read_string(&mut c, kp, kl)?;
            let st = c.data();
            let Some(v) = st.shared.get_data(&st.plugin.vm_id, &key) else {
                return Ok(Status::NotFound.code());
            };
            if !copy_out(&mut c, &v.value, ret_ptr, ret_size)? {
                return Ok(Status::InvalidMemoryAccess.code());
            }
            write_u32(&mut c, ret_cas, v.cas)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> Result<i32> {
            restrict(&c, "proxy_set_shared_data")?;
            let key = read_string(&mut c, kp, kl)?;
            let value = read(&mut c, vp, vl)?;
            let st = c.data();
            Ok(match st
                .shared
                .set_data(&st.plugin.vm_id, &key, value, cas as u32)
            {
                SetOutcome::Stored(_) => Status::Ok,
                SetOutcome::CasMismatch => Status::CasMismatch,
            }
            .code())
        },
    )?;
    Ok(())
}
