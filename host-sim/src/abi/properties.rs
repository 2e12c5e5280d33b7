//! Properties (proxy-wasm-abi.md §13): Envoy's attribute names and value encodings.

use wasmtime::Linker;
use wasmtime::Result;

use super::memory::{Ctx, copy_out, read, restrict};
use super::pairs;
use super::types::*;
use crate::state::{Callback, HostState, StreamState};

const ENV: &str = "env";

/// A CEL value before serialization.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Double(f64),
    Map(Vec<(Vec<u8>, Value)>),
    List(Vec<Value>),
}

impl Value {
    fn str(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// Envoy's `serializeValue`.
    pub fn serialize(&self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b.clone(),
            Value::Int(i) => i.to_le_bytes().to_vec(),
            Value::Uint(u) => u.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(*b)],
            Value::Double(d) => d.to_le_bytes().to_vec(),
            Value::Map(m) => {
                let p: Vec<(Vec<u8>, Vec<u8>)> =
                    m.iter().map(|(k, v)| (k.clone(), v.serialize())).collect();
                pairs::serialize(&p)
            }
            Value::List(l) => {
                let p: Vec<(Vec<u8>, Vec<u8>)> =
                    l.iter().map(|v| (v.serialize(), Vec::new())).collect();
                pairs::serialize(&p)
            }
        }
    }

    /// Indexes a map by key or a list by decimal index.
    fn index(self, seg: &str) -> Option<Value> {
        match self {
            Value::Map(m) => m
                .into_iter()
                .find(|(k, _)| k.as_slice() == seg.as_bytes())
                .map(|(_, v)| v),
            Value::List(l) => seg.parse::<usize>().ok().and_then(|i| l.into_iter().nth(i)),
            _ => None,
        }
    }
}

fn json_value(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        // Struct numbers are doubles in protobuf.
        serde_json::Value::Number(n) => Value::Double(n.as_f64()?),
        serde_json::Value::String(s) => Value::str(s),
        serde_json::Value::Array(a) => Value::List(a.iter().filter_map(json_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .filter_map(|(k, v)| Some((k.as_bytes().to_vec(), json_value(v)?)))
                .collect(),
        ),
    })
}

/// Headers as a CEL map: repeated names joined with `,`.
fn header_map(h: &[(Vec<u8>, Vec<u8>)]) -> Value {
    let mut out: Vec<(Vec<u8>, Value)> = Vec::new();
    for (k, v) in h {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some((_, Value::Bytes(existing))) => {
                existing.push(b',');
                existing.extend_from_slice(v);
            }
            _ => out.push((k.clone(), Value::Bytes(v.clone()))),
        }
    }
    Value::Map(out)
}

fn header<'a>(s: &'a StreamState, name: &str) -> Option<&'a [u8]> {
    super::headers::first_value(&s.req_headers, name.as_bytes())
}

fn port_of(addr: &str) -> Option<i64> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Resolves a property path; `Err(status)` for the non-NotFound failures.
pub fn lookup(st: &mut HostState, path: &[String]) -> Result<Option<Value>, Status> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(None);
    };
    let cb = st.callback;
    let plugin = st.plugin.clone();
    let (base, consumed) = match first.as_str() {
        "plugin_name" => (Some(Value::str(&plugin.name)), 0),
        "plugin_root_id" => (Some(Value::str(&plugin.root_id)), 0),
        "plugin_vm_id" => (Some(Value::str(&plugin.vm_id)), 0),
        "filter_state" => return Err(Status::SerializationFailure),
        "xds" => {
            let Some(second) = rest.first() else {
                return Ok(None);
            };
            let stream = st.stream_ctx();
            let v = match second.as_str() {
                "node" => match rest.get(1).map(String::as_str) {
                    Some("id") => Some((Value::str(&plugin.node.id), 2)),
                    Some("cluster") => Some((Value::str(&plugin.node.cluster), 2)),
                    Some("metadata") => Some((
                        json_value(&serde_json::Value::Object(plugin.node.metadata.clone()))
                            .unwrap_or(Value::Map(vec![])),
                        2,
                    )),
                    // The whole Node proto is not modelled.
                    _ => None,
                },
                "cluster_name" => stream
                    .and_then(|s| s.info.cluster_name.clone())
                    .map(|c| (Value::str(&c), 1)),
                "route_name" => stream
                    .and_then(|s| s.info.route_name.clone())
                    .map(|c| (Value::str(&c), 1)),
                "listener_direction" => Some((Value::Int(0), 1)),
                _ => None,
            };
            match v {
                Some((v, n)) => (Some(v), n),
                None => return Ok(None),
            }
        }
        _ => {
            let req_headers_visible = !matches!(
                super::headers::access(st, super::types::MAP_REQUEST_HEADERS),
                super::headers::Access::Unavailable(_)
            );
            // Everything else needs a stream.
            let Some(s) = st.stream_ctx() else {
                return Ok(None);
            };
            let info = &s.info;
            let second = rest.first().map(String::as_str);
            // After continue_stream the request maps are gone (observed in callout responses),
            // and so is everything derived from the request headers once Envoy dropped its
            // pointer to them (headers continued: body and response callbacks; differential
            // suite `properties`); `on_log` sees them again.
            let req_gone =
                (s.continue_request && cb == Callback::HttpCallResponse) || !req_headers_visible;
            let v = match (first.as_str(), second) {
                ("source", Some("address")) => Some(Value::str(&info.downstream_addr)),
                ("source", Some("port")) => port_of(&info.downstream_addr).map(Value::Int),
                ("destination", Some("address")) => Some(Value::str(&info.destination_addr)),
                ("destination", Some("port")) => port_of(&info.destination_addr).map(Value::Int),
                ("connection", Some("mtls")) => Some(Value::Bool(false)),
                ("connection", Some("id")) => Some(Value::Uint(info.connection_id)),
                ("connection_id", None) => Some(Value::Uint(info.connection_id)),
                (
                    "request",
                    Some(
                        "path" | "url_path" | "query" | "host" | "scheme" | "method" | "headers"
                        | "id" | "useragent" | "referer",
                    ),
                ) if req_gone => None,
                ("request", Some("path")) => header(s, ":path").map(|v| Value::Bytes(v.to_vec())),
                ("request", Some("url_path")) => header(s, ":path")
                    .map(|p| Value::Bytes(p.split(|b| *b == b'?').next().unwrap_or(p).to_vec())),
                ("request", Some("query")) => header(s, ":path").and_then(|p| {
                    let pos = p.iter().position(|b| *b == b'?')?;
                    Some(Value::Bytes(p[pos + 1..].to_vec()))
                }),
                ("request", Some("host")) => {
                    header(s, ":authority").map(|v| Value::Bytes(v.to_vec()))
                }
                ("request", Some("scheme")) => {
                    header(s, ":scheme").map(|v| Value::Bytes(v.to_vec()))
                }
                ("request", Some("method")) => {
                    header(s, ":method").map(|v| Value::Bytes(v.to_vec()))
                }
                ("request", Some("protocol")) => Some(Value::str(&info.protocol)),
                ("request", Some("headers")) => Some(header_map(&s.req_headers)),
                ("request", Some("id")) => {
                    header(s, "x-request-id").map(|v| Value::Bytes(v.to_vec()))
                }
                ("request", Some("useragent")) => {
                    header(s, "user-agent").map(|v| Value::Bytes(v.to_vec()))
                }
                ("request", Some("referer")) => {
                    header(s, "referer").map(|v| Value::Bytes(v.to_vec()))
                }
                ("request", Some("time")) => Some(Value::Int(info.start_time_ns as i64)),
                ("request", Some("size")) => Some(Value::Int(info.request_size as i64)),
                ("request", Some("total_size")) if cb == Callback::Log => {
                    Some(Value::Int(info.request_size as i64))
                }
                // Virtual time does not advance inside one request: the duration is 0.
                ("request", Some("duration")) if cb == Callback::Log => Some(Value::Int(0)),
                ("response", Some("code")) => info.response_code.map(|c| Value::Int(c as i64)),
                ("response", Some("code_details")) => {
                    info.response_code_details.as_deref().map(Value::str)
                }
                ("response", Some("flags")) if info.response_code.is_some() => Some(Value::Int(0)),
                ("response", Some("headers")) if info.response_code.is_some() => {
                    Some(header_map(&s.resp_headers))
                }
                ("response", Some("size" | "total_size")) if cb == Callback::Log => {
                    Some(Value::Int(info.response_size as i64))
                }
                ("upstream", Some("address")) => info.upstream_address.as_deref().map(Value::str),
                ("upstream", Some("port")) => info
                    .upstream_address
                    .as_deref()
                    .and_then(port_of)
                    .map(Value::Int),
                (name, None) => info.filter_state.get(name).map(|v| Value::Bytes(v.clone())),
                _ => None,
            };
            let consumed = match (first.as_str(), second) {
                (_, None) => 0,
                _ => 1,
            };
            (v, consumed)
        }
    };
    let Some(mut v) = base else { return Ok(None) };
    for seg in &rest[consumed..] {
        match v.index(seg) {
            Some(next) => v = next,
            None => return Ok(None),
        }
    }
    Ok(Some(v))
}

fn split_path(raw: &[u8]) -> Vec<String> {
    let mut raw = raw;
    // Tolerate a trailing NUL (some SDKs add one).
    if raw.last() == Some(&0) {
        raw = &raw[..raw.len() - 1];
    }
    raw.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        ENV,
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            restrict(&c, "proxy_get_property")?;
            let path = split_path(&read(&mut c, pp, pl)?);
            let value = match lookup(c.data_mut(), &path) {
                Ok(Some(v)) => v.serialize(),
                Ok(None) => return Ok(Status::NotFound.code()),
                Err(s) => return Ok(s.code()),
            };
            if !copy_out(&mut c, &value, ret_ptr, ret_size)? {
                return Ok(Status::InvalidMemoryAccess.code());
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> Result<i32> {
            restrict(&c, "proxy_set_property")?;
            let path = split_path(&read(&mut c, pp, pl)?).join(".");
            let value = read(&mut c, vp, vl)?;
            // Filter state lives on the stream; a root context has none (Envoy: NotFound).
            match c.data_mut().stream_ctx() {
                Some(s) => {
                    s.info.filter_state.insert(path, value);
                    Ok(Status::Ok.code())
                }
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(Value::Int(1).serialize(), 1i64.to_le_bytes());
        assert_eq!(Value::Bool(false).serialize(), vec![0]);
        assert_eq!(Value::Double(3.0).serialize(), 3f64.to_le_bytes());
        let m = Value::Map(vec![(b"k".to_vec(), Value::str("v"))]);
        assert_eq!(m.serialize(), pairs::serialize(&[(b"k", b"v")]));
    }

    #[test]
    fn header_map_joins_duplicates() {
        let h = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"a".to_vec(), b"2".to_vec()),
        ];
        assert_eq!(header_map(&h).index("a"), Some(Value::str("1,2")));
    }
}
