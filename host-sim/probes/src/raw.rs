//! Raw imports, to observe the exact status the host returns where the SDK would panic.

use std::ptr::null_mut;

// The SDK declares the same imports with pointer-size types; the ABI is identical on wasm32.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        kp: *const u8,
        kl: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        kp: *const u8,
        kl: usize,
        vp: *const u8,
        vl: usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(ty: u32, start: usize, size: usize, dp: *const u8, dl: usize) -> u32;
    fn proxy_get_buffer_bytes(
        ty: u32,
        start: usize,
        max: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
}

/// Frees a host-allocated result the way the SDK does (exact size).
fn reclaim(ptr: *mut u8, size: usize) {
    if !ptr.is_null() && size > 0 {
        // SAFETY: the host allocated exactly `size` bytes at `ptr` via proxy_on_memory_allocate.
        drop(unsafe { Vec::from_raw_parts(ptr, size, size) });
    }
}

pub fn get_header_status(map: u32, key: &str) -> u32 {
    let (mut p, mut s) = (null_mut(), 0usize);
    // SAFETY: valid key slice and out-pointers to locals.
    let st = unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut p, &mut s) };
    reclaim(p, s);
    st
}

pub fn replace_header(map: u32, key: &str, value: &str) -> u32 {
    // SAFETY: valid slices for the duration of the call.
    unsafe {
        proxy_replace_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len())
    }
}

pub fn set_buffer_status(ty: u32, start: u32, size: u32, data: &[u8]) -> u32 {
    // SAFETY: valid slice for the duration of the call.
    unsafe { proxy_set_buffer_bytes(ty, start as usize, size as usize, data.as_ptr(), data.len()) }
}

pub fn get_buffer_status(ty: u32) -> u32 {
    let (mut p, mut s) = (null_mut(), 0usize);
    // SAFETY: out-pointers to locals.
    let st = unsafe { proxy_get_buffer_bytes(ty, 0, u32::MAX as usize, &mut p, &mut s) };
    reclaim(p, s);
    st
}

pub fn increment_status(id: u32, delta: i64) -> u32 {
    // SAFETY: plain integers.
    unsafe { proxy_increment_metric(id, delta) }
}

/// Passes a pointer far outside linear memory: the host must trap this module, not crash.
pub fn wild_log() -> u32 {
    // SAFETY: deliberately invalid for the host to reject; this module never dereferences it.
    unsafe { proxy_log(2, 0xFFFF_FF00usize as *const u8, 4096) }
}
