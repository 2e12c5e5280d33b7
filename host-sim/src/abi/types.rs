//! Wire enums and status codes of proxy-wasm ABI 0.2.1 (see proxy-wasm-abi.md §2).

/// `proxy_status_t`. Only the values Envoy really returns from each call are used, because the
/// Rust SDK panics on anything else (§16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }
}

pub const MAP_REQUEST_HEADERS: i32 = 0;
pub const MAP_REQUEST_TRAILERS: i32 = 1;
pub const MAP_RESPONSE_HEADERS: i32 = 2;
pub const MAP_RESPONSE_TRAILERS: i32 = 3;
pub const MAP_GRPC_INITIAL: i32 = 4;
pub const MAP_GRPC_TRAILING: i32 = 5;
pub const MAP_CALL_RESPONSE_HEADERS: i32 = 6;
pub const MAP_CALL_RESPONSE_TRAILERS: i32 = 7;

pub const BUF_REQUEST_BODY: i32 = 0;
pub const BUF_RESPONSE_BODY: i32 = 1;
pub const BUF_CALL_RESPONSE_BODY: i32 = 4;
pub const BUF_VM_CONFIGURATION: i32 = 6;
pub const BUF_PLUGIN_CONFIGURATION: i32 = 7;
pub const BUF_MAX: i32 = 8;

pub const STREAM_HTTP_REQUEST: i32 = 0;
pub const STREAM_HTTP_RESPONSE: i32 = 1;
pub const STREAM_DOWNSTREAM: i32 = 2;
pub const STREAM_UPSTREAM: i32 = 3;

/// Log levels as names, index = `proxy_log` level.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "critical"];
