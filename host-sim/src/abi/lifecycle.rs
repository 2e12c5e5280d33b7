//! Logging, time, timers, stream control, local replies, effective context and the small
//! remaining imports (proxy-wasm-abi.md §3.1, §4.3, §5, §6, §15).

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, copy_out, read, read_string, restrict, write_u32, write_u64};
use super::pairs;
use super::types::*;
use crate::state::{HostState, LocalReply};

const ENV: &str = "env";

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            restrict(&c, "proxy_log")?;
            if !(0..=5).contains(&level) {
                return Ok(Status::BadArgument.code());
            }
            let msg = read_string(&mut c, ptr, len)?;
            c.data_mut().log(level as usize, msg);
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_log_level",
        |mut c: Ctx<'_>, ret: i32| -> Result<i32> {
            restrict(&c, "proxy_get_log_level")?;
            // Envoy run with `-l info` reports 2; the SDK filters on its own anyway.
            write_u32(&mut c, ret, 2)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| -> Result<i32> {
            restrict(&c, "proxy_get_current_time_nanoseconds")?;
            let now = c.data().clock.now_ns();
            write_u64(&mut c, ret, now)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, ms: i32| -> Result<i32> {
            restrict(&c, "proxy_set_tick_period_milliseconds")?;
            // Every context's root is context 1 in this host, so the period belongs to the VM's root.
            let st = c.data_mut();
            st.tick_period_ms = ms as u32;
            st.tick_changed = true;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_continue_stream",
        |mut c: Ctx<'_>, ty: i32| -> Result<i32> {
            restrict(&c, "proxy_continue_stream")?;
            let st = c.data_mut();
            Ok(match ty {
                STREAM_HTTP_REQUEST => {
                    if let Some(s) = st.stream_ctx() {
                        // Envoy forgets the request maps at once and resumes after the VM call.
                        s.continue_request = true;
                        s.req_held = false;
                    }
                    Status::Ok
                }
                STREAM_HTTP_RESPONSE => {
                    if let Some(s) = st.stream_ctx() {
                        s.continue_response = true;
                        s.resp_held = false;
                    }
                    Status::Ok
                }
                STREAM_DOWNSTREAM => Status::Ok,
                STREAM_UPSTREAM => Status::Unimplemented,
                _ => Status::BadArgument,
            }
            .code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_close_stream",
        |mut c: Ctx<'_>, ty: i32| -> Result<i32> {
            restrict(&c, "proxy_close_stream")?;
            let st = c.data_mut();
            Ok(match ty {
                STREAM_HTTP_REQUEST | STREAM_HTTP_RESPONSE => {
                    if let Some(s) = st.stream_ctx() {
                        s.close_requested = true;
                    }
                    Status::Ok
                }
                STREAM_DOWNSTREAM => Status::Ok,
                STREAM_UPSTREAM => Status::Unimplemented,
                _ => Status::BadArgument,
            }
            .code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         status: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32|
         -> Result<i32> {
            restrict(&c, "proxy_send_local_response")?;
            let details = read_string(&mut c, details_ptr, details_len)?.replace(' ', "_");
            let body = read(&mut c, body_ptr, body_len)?;
            let raw = read(&mut c, headers_ptr, headers_len)?;
            let Some(mut headers) = pairs::deserialize(&raw) else {
                return Ok(Status::BadArgument.code());
            };
            for (k, _) in &mut headers {
                k.make_ascii_lowercase();
            }
            let st = c.data_mut();
            match st.stream_ctx() {
                Some(s) => {
                    s.local_reply = Some(LocalReply {
                        status: status as u32,
                        details,
                        body,
                        headers,
                        grpc_status,
                    });
                }
                None => st.log(
                    3,
                    "host-sim: send_local_response outside a stream ignored".into(),
                ),
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, id: i32| -> Result<i32> {
            restrict(&c, "proxy_set_effective_context")?;
            let st = c.data_mut();
            let id = id as u32;
            let live =
                id == crate::vm::ROOT_CONTEXT_ID || st.stream.as_ref().is_some_and(|s| s.id == id);
            if !live {
                return Ok(Status::BadArgument.code());
            }
            st.effective_ctx = id;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(ENV, "proxy_done", |c: Ctx<'_>| -> Result<i32> {
        restrict(&c, "proxy_done")?;
        // Nothing is ever pending a deferred done in this host (roots are not shut down).
        Ok(Status::NotFound.code())
    })?;
    linker.func_wrap(
        ENV,
        "proxy_get_status",
        |mut c: Ctx<'_>, ret_code: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            restrict(&c, "proxy_get_status")?;
            let (code, msg) = c.data().last_status.clone();
            write_u32(&mut c, ret_code, code)?;
            if !copy_out(&mut c, &msg, ret_ptr, ret_size)? {
                return Ok(Status::InvalidMemoryAccess.code());
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        |c: Ctx<'_>, _np: i32, _nl: i32, _ap: i32, _al: i32, _rp: i32, _rs: i32| -> Result<i32> {
            restrict(&c, "proxy_call_foreign_function")?;
            // No foreign functions are registered, as in a plain Envoy build.
            Ok(Status::NotFound.code())
        },
    )?;
    // gRPC is not simulated: the SDK maps InternalFailure to Err, so filters see a clean error.
    linker.func_wrap(
        ENV,
        "proxy_grpc_call",
        |c: Ctx<'_>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _l: i32|
         -> Result<i32> {
            restrict(&c, "proxy_grpc_call")?;
            Ok(Status::InternalFailure.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_stream",
        |c: Ctx<'_>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32|
         -> Result<i32> {
            restrict(&c, "proxy_grpc_stream")?;
            Ok(Status::InternalFailure.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_send",
        |c: Ctx<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> Result<i32> {
            restrict(&c, "proxy_grpc_send")?;
            Ok(Status::NotFound.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_cancel",
        |c: Ctx<'_>, _t: i32| -> Result<i32> {
            restrict(&c, "proxy_grpc_cancel")?;
            Ok(Status::NotFound.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_close",
        |c: Ctx<'_>, _t: i32| -> Result<i32> {
            restrict(&c, "proxy_grpc_close")?;
            Ok(Status::NotFound.code())
        },
    )?;
    Ok(())
}
