//! Header maps (proxy-wasm-abi.md §7): lower-case keys, first-value get, and Envoy's
//! availability rules of §7.3 (NotFound vs BadArgument).

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, copy_out, read, restrict, write_u32};
use super::pairs::{self, Pairs};
use super::types::*;
use crate::state::{Callback, HostState};

const ENV: &str = "env";

/// How the current callback may use a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    /// Not available: the status a get returns (a write always gets BadArgument).
    Unavailable(Status),
}

/// Envoy's availability of `map_type` for the current context and callback.
pub fn access(st: &mut HostState, map_type: i32) -> Access {
    let cb = st.callback;
    if matches!(
        map_type,
        MAP_CALL_RESPONSE_HEADERS | MAP_CALL_RESPONSE_TRAILERS
    ) {
        return if cb == Callback::HttpCallResponse && st.call_response.is_some() {
            Access::ReadOnly
        } else {
            Access::Unavailable(Status::BadArgument)
        };
    }
    if matches!(map_type, MAP_GRPC_INITIAL | MAP_GRPC_TRAILING) {
        return Access::Unavailable(Status::NotFound);
    }
    if !(0..=7).contains(&map_type) {
        return Access::Unavailable(Status::BadArgument);
    }
    let Some(s) = st.stream_ctx() else {
        return Access::Unavailable(Status::BadArgument);
    };
    match map_type {
        MAP_REQUEST_HEADERS => {
            if cb == Callback::Log {
                Access::ReadOnly
            } else if (cb == Callback::RequestHeaders && !s.continue_request) || s.req_held {
                Access::ReadWrite
            } else {
                Access::Unavailable(Status::BadArgument)
            }
        }
        MAP_REQUEST_TRAILERS => match cb {
            Callback::RequestTrailers if !s.continue_request => Access::ReadWrite,
            Callback::Log => Access::Unavailable(Status::NotFound),
            _ => Access::Unavailable(Status::BadArgument),
        },
        MAP_RESPONSE_HEADERS => {
            if cb == Callback::Log {
                Access::ReadOnly
            } else if (cb == Callback::ResponseHeaders && !s.continue_response) || s.resp_held {
                Access::ReadWrite
            } else {
                Access::Unavailable(Status::BadArgument)
            }
        }
        MAP_RESPONSE_TRAILERS => match cb {
            Callback::ResponseTrailers if !s.continue_response => Access::ReadWrite,
            Callback::Log => Access::ReadOnly,
            _ => Access::Unavailable(Status::BadArgument),
        },
        _ => Access::Unavailable(Status::BadArgument),
    }
}

/// The map itself (only call after `access` said it is available).
fn map_mut(st: &mut HostState, map_type: i32) -> Option<&mut Pairs> {
    if matches!(
        map_type,
        MAP_CALL_RESPONSE_HEADERS | MAP_CALL_RESPONSE_TRAILERS
    ) {
        let r = st.call_response.as_mut()?;
        return Some(if map_type == MAP_CALL_RESPONSE_HEADERS {
            &mut r.headers
        } else {
            &mut r.trailers
        });
    }
    let s = st.stream_ctx()?;
    Some(match map_type {
        MAP_REQUEST_HEADERS => &mut s.req_headers,
        MAP_REQUEST_TRAILERS => &mut s.req_trailers,
        MAP_RESPONSE_HEADERS => &mut s.resp_headers,
        MAP_RESPONSE_TRAILERS => &mut s.resp_trailers,
        _ => return None,
    })
}

/// First value of `key` (already lower-cased).
pub fn first_value<'a>(map: &'a Pairs, key: &[u8]) -> Option<&'a [u8]> {
    map.iter()
        .find(|(k, _)| k.as_slice() == key)
        .map(|(_, v)| v.as_slice())
}

fn lower(mut key: Vec<u8>) -> Vec<u8> {
    key.make_ascii_lowercase();
    key
}

/// Runs `f` on a writable map, or answers BadArgument.
fn with_writable(c: &mut Ctx<'_>, map_type: i32, f: impl FnOnce(&mut Pairs)) -> i32 {
    let st = c.data_mut();
    if access(st, map_type) != Access::ReadWrite {
        return Status::BadArgument.code();
    }
    match map_mut(st, map_type) {
        Some(m) => {
            f(m);
            Status::Ok.code()
        }
        None => Status::BadArgument.code(),
    }
}

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map_type: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            restrict(&c, "proxy_get_header_map_pairs")?;
            if !(0..=7).contains(&map_type) {
                return Ok(Status::BadArgument.code());
            }
            let st = c.data_mut();
            // Always Ok: an unavailable map reads as empty (§7.2).
            let bytes = match access(st, map_type) {
                Access::Unavailable(_) => Vec::new(),
                _ => match map_mut(st, map_type) {
                    Some(m) if !m.is_empty() => pairs::serialize(m),
                    _ => Vec::new(),
                },
            };
            if !copy_out(&mut c, &bytes, ret_ptr, ret_size)? {
                return Ok(Status::InvalidMemoryAccess.code());
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map_type: i32, ptr: i32, len: i32| -> Result<i32> {
            restrict(&c, "proxy_set_header_map_pairs")?;
            let raw = read(&mut c, ptr, len)?;
            let Some(new) = pairs::deserialize(&raw) else {
                return Ok(Status::BadArgument.code());
            };
            Ok(with_writable(&mut c, map_type, |m| {
                *m = new.into_iter().map(|(k, v)| (lower(k), v)).collect();
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>,
         map_type: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            restrict(&c, "proxy_get_header_map_value")?;
            let key = lower(read(&mut c, kp, kl)?);
            let st = c.data_mut();
            if let Access::Unavailable(status) = access(st, map_type) {
                return Ok(status.code());
            }
            let value =
                map_mut(st, map_type).and_then(|m| first_value(m, &key).map(<[u8]>::to_vec));
            let Some(value) = value else {
                return Ok(Status::NotFound.code());
            };
            if !copy_out(&mut c, &value, ret_ptr, ret_size)? {
                return Ok(Status::InvalidMemoryAccess.code());
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map_type: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            restrict(&c, "proxy_replace_header_map_value")?;
            let key = lower(read(&mut c, kp, kl)?);
            let value = read(&mut c, vp, vl)?;
            // Envoy's `HeaderMap::setCopy`: remove every entry of the key, then add it anew, so
            // a replaced header moves to the end (differential suite: `header maps`).
            Ok(with_writable(&mut c, map_type, |m| {
                m.retain(|(k, _)| *k != key);
                insert_header(m, key, value);
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map_type: i32, kp: i32, kl: i32| -> Result<i32> {
            restrict(&c, "proxy_remove_header_map_value")?;
            let key = lower(read(&mut c, kp, kl)?);
            Ok(with_writable(&mut c, map_type, |m| {
                m.retain(|(k, _)| *k != key)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map_type: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            restrict(&c, "proxy_add_header_map_value")?;
            let key = lower(read(&mut c, kp, kl)?);
            let value = read(&mut c, vp, vl)?;
            Ok(with_writable(&mut c, map_type, |m| {
                insert_header(m, key, value)
            }))
        },
    )?;
    let _ = write_u32;
    Ok(())
}

/// Adds an entry the way Envoy's header map does: pseudo-headers (`:name`) stay in front of the
/// regular ones, everything else goes to the end.
fn insert_header(m: &mut Vec<(Vec<u8>, Vec<u8>)>, key: Vec<u8>, value: Vec<u8>) {
    if key.starts_with(b":") {
        let at = m.iter().take_while(|(k, _)| k.starts_with(b":")).count();
        m.insert(at, (key, value));
    } else {
        m.push((key, value));
    }
}
