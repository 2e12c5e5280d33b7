//! `proxy_http_call` (proxy-wasm-abi.md §11). The call is validated here and performed by the
//! simulator after the VM call returns; the response is delivered to the root context.

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, read, read_string, restrict, write_u32};
use super::pairs;
use super::types::*;
use crate::state::{HostState, PendingCallout};

const ENV: &str = "env";

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up_ptr: i32,
         up_len: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         ret_token: i32|
         -> Result<i32> {
            restrict(&c, "proxy_http_call")?;
            let cluster = read_string(&mut c, up_ptr, up_len)?;
            let raw_headers = read(&mut c, hp, hl)?;
            let body = read(&mut c, bp, bl)?;
            let raw_trailers = read(&mut c, tp, tl)?;
            let (Some(mut headers), Some(trailers)) = (
                pairs::deserialize(&raw_headers),
                pairs::deserialize(&raw_trailers),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            for (k, _) in &mut headers {
                k.make_ascii_lowercase();
            }
            let has = |name: &[u8]| headers.iter().any(|(k, _)| k.as_slice() == name);
            let valid_headers =
                has(b":path") && has(b":method") && (has(b":authority") || has(b"host"));
            let st = c.data_mut();
            // A negative timeout is a u32 ≥ 2^31 read as signed by Envoy.
            if !st.plugin.clusters.contains(&cluster) || !valid_headers || timeout < 0 {
                return Ok(Status::BadArgument.code());
            }
            st.next_callout_token = st.next_callout_token.wrapping_add(4);
            let token = st.next_callout_token;
            st.pending_callouts.push(PendingCallout {
                token,
                cluster,
                headers,
                body,
                trailers,
                timeout_ms: timeout as u32,
            });
            write_u32(&mut c, ret_token, token)?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
