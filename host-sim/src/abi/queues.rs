//! Shared queues (proxy-wasm-abi.md §10). `on_queue_ready` goes to the last registrant and is
//! delivered by the simulator after the current VM call (never inline).

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, copy_out, read, read_string, restrict, write_u32};
use super::types::*;
use crate::state::HostState;

const ENV: &str = "env";

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, np: i32, nl: i32, ret_id: i32| -> Result<i32> {
            restrict(&c, "proxy_register_shared_queue")?;
            let name = read_string(&mut c, np, nl)?;
            let st = c.data();
            let id = st
                .shared
                .register_queue(&st.plugin.vm_id, &name, st.vm_index);
            write_u32(&mut c, ret_id, id)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret_id: i32| -> Result<i32> {
            restrict(&c, "proxy_resolve_shared_queue")?;
            let mut vm_id = read_string(&mut c, vp, vl)?;
            let name = read_string(&mut c, np, nl)?;
            let st = c.data();
            if vm_id.is_empty() {
                vm_id = st.plugin.vm_id.clone();
            }
            match st.shared.resolve_queue(&vm_id, &name) {
                Some(id) => {
                    write_u32(&mut c, ret_id, id)?;
                    Ok(Status::Ok.code())
                }
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, vp: i32, vl: i32| -> Result<i32> {
            restrict(&c, "proxy_enqueue_shared_queue")?;
            let value = read(&mut c, vp, vl)?;
            Ok(if c.data().shared.enqueue(id as u32, value) {
                Status::Ok
            } else {
                Status::NotFound
            }
            .code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            restrict(&c, "proxy_dequeue_shared_queue")?;
            match c.data().shared.dequeue(id as u32) {
                None => Ok(Status::NotFound.code()),
                Some(None) => Ok(Status::Empty.code()),
                Some(Some(v)) => {
                    if !copy_out(&mut c, &v, ret_ptr, ret_size)? {
                        return Ok(Status::InvalidMemoryAccess.code());
                    }
                    Ok(Status::Ok.code())
                }
            }
        },
    )?;
    Ok(())
}
