//! Buffers (proxy-wasm-abi.md §8), including Envoy's limited `set_buffer_bytes`.

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, copy_out, read, restrict};
use super::types::*;
use crate::state::{Callback, HostState};

const ENV: &str = "env";

/// What a get sees for `ty` right now: `Err(status)` when unavailable.
fn readable(st: &mut HostState, ty: i32) -> Result<Vec<u8>, Status> {
    let cb = st.callback;
    match ty {
        BUF_REQUEST_BODY | BUF_RESPONSE_BODY => {
            let want = if ty == BUF_REQUEST_BODY {
                Callback::RequestBody
            } else {
                Callback::ResponseBody
            };
            match st.stream_ctx() {
                Some(s) if cb == want => Ok(if ty == BUF_REQUEST_BODY {
                    s.req_body.clone()
                } else {
                    s.resp_body.clone()
                }),
                // Envoy answers Ok with no bytes outside the body callbacks.
                _ => Ok(Vec::new()),
            }
        }
        BUF_CALL_RESPONSE_BODY => match (&st.call_response, cb) {
            (Some(r), Callback::HttpCallResponse) => Ok(r.body.clone()),
            _ => Err(Status::NotFound),
        },
        BUF_VM_CONFIGURATION => Ok(st.plugin.vm_config.clone()),
        BUF_PLUGIN_CONFIGURATION if cb == Callback::Configure => {
            Ok(st.plugin.plugin_config.clone())
        }
        _ => Err(Status::NotFound),
    }
}

/// Envoy's `Buffer::copyFrom` for live bodies: prepend, replace-all or append; anything else
/// is BadArgument.
pub fn splice(buf: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> Status {
    let len = buf.len();
    if start == 0 && size == 0 {
        let mut v = data.to_vec();
        v.extend_from_slice(buf);
        *buf = v;
    } else if start == 0 && size >= len {
        *buf = data.to_vec();
    } else if start >= len {
        buf.extend_from_slice(data);
    } else {
        return Status::BadArgument;
    }
    Status::Ok
}

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>,
         ty: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            restrict(&c, "proxy_get_buffer_bytes")?;
            if !(0..=BUF_MAX).contains(&ty) {
                return Ok(Status::BadArgument.code());
            }
            let data = match readable(c.data_mut(), ty) {
                Ok(d) => d,
                Err(s) => return Ok(s.code()),
            };
            // u64 arithmetic: the SDK passes max = u32::MAX for config buffers.
            let (start, max) = (start as u32 as u64, max as u32 as u64);
            let size = data.len() as u64;
            let slice: &[u8] = if start > size {
                &[]
            } else {
                let end = size.min(start + max);
                &data[start as usize..end as usize]
            };
            if !copy_out(&mut c, slice, ret_ptr, ret_size)? {
                return Ok(Status::InvalidMemoryAccess.code());
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, ty: i32, start: i32, size: i32, ptr: i32, len: i32| -> Result<i32> {
            restrict(&c, "proxy_set_buffer_bytes")?;
            let data = read(&mut c, ptr, len)?;
            if !(0..=BUF_MAX).contains(&ty) {
                return Ok(Status::BadArgument.code());
            }
            let st = c.data_mut();
            let cb = st.callback;
            let status = match (ty, st.stream_ctx()) {
                (BUF_REQUEST_BODY, Some(s)) if cb == Callback::RequestBody => splice(
                    &mut s.req_body,
                    start as u32 as usize,
                    size as u32 as usize,
                    &data,
                ),
                (BUF_RESPONSE_BODY, Some(s)) if cb == Callback::ResponseBody => splice(
                    &mut s.resp_body,
                    start as u32 as usize,
                    size as u32 as usize,
                    &data,
                ),
                (BUF_REQUEST_BODY | BUF_RESPONSE_BODY, _) => Status::NotFound,
                // Call responses and configurations are immutable.
                _ => Status::BadArgument,
            };
            Ok(status.code())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_copy_from_rules() {
        let mut b = b"body".to_vec();
        assert_eq!(splice(&mut b, 0, 0, b">"), Status::Ok);
        assert_eq!(b, b">body");
        assert_eq!(splice(&mut b, 99, 0, b"<"), Status::Ok);
        assert_eq!(b, b">body<");
        assert_eq!(splice(&mut b, 1, 2, b"x"), Status::BadArgument);
        assert_eq!(splice(&mut b, 0, 6, b"new"), Status::Ok);
        assert_eq!(b, b"new");
    }
}
