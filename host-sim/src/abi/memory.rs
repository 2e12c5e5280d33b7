//! Checked access to guest memory. The guest is hostile: every pointer/length pair is checked,
//! and a bad one traps the guest (a wasmtime error), never the host.

use wasmtime::{Caller, Extern, Memory};
use wasmtime::{Result, bail, format_err as anyhow};

use crate::state::HostState;

pub type Ctx<'a> = Caller<'a, HostState>;

fn memory(caller: &mut Ctx<'_>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => bail!("module exports no memory"),
    }
}

fn range(ptr: i32, len: i32, mem_len: usize) -> Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    let end = start
        .checked_add(len)
        .filter(|e| *e <= mem_len)
        .ok_or_else(|| anyhow!("guest memory access out of bounds: ptr={start:#x} len={len}"))?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    let r = range(ptr, len, data.len())?;
    Ok(data[r].to_vec())
}

pub fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

pub fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let r = range(ptr, bytes.len() as i32, data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

pub fn write_u32(caller: &mut Ctx<'_>, ptr: i32, v: u32) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

pub fn write_u64(caller: &mut Ctx<'_>, ptr: i32, v: u64) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the guest the way cpp-host does: empty → `(0, 0)` without allocating;
/// else `proxy_on_memory_allocate(exact len)` (the SDK frees with that exact size).
/// Returns `false` when the allocator returned null (the caller answers InvalidMemoryAccess).
pub fn copy_out(caller: &mut Ctx<'_>, bytes: &[u8], ret_ptr: i32, ret_size: i32) -> Result<bool> {
    if bytes.is_empty() {
        write_u32(caller, ret_ptr, 0)?;
        write_u32(caller, ret_size, 0)?;
        return Ok(true);
    }
    let ptr = allocate(caller, bytes.len())?;
    if ptr == 0 {
        return Ok(false);
    }
    write(caller, ptr, bytes)?;
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, bytes.len() as u32)?;
    Ok(true)
}

/// Calls the guest allocator (`malloc` first, like cpp-host, then `proxy_on_memory_allocate`).
pub fn allocate(caller: &mut Ctx<'_>, size: usize) -> Result<i32> {
    let size = i32::try_from(size).map_err(|_| anyhow!("value too large for guest memory"))?;
    let func = ["malloc", "proxy_on_memory_allocate"]
        .iter()
        .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
        .ok_or_else(|| anyhow!("Wasm module is missing malloc function"))?;
    let typed = func.typed::<i32, i32>(&*caller)?;
    let was = caller.data().in_alloc;
    caller.data_mut().in_alloc = true;
    let result = typed.call(&mut *caller, size);
    caller.data_mut().in_alloc = was;
    result
}

/// Imports allowed while `_initialize` runs (cpp-host restricts the start phase, §1.4).
const INIT_ALLOWED: &[&str] = &[
    "proxy_log",
    "fd_write",
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "poll_oneoff",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_close",
    "fd_seek",
    "fd_read",
    "path_open",
    "proc_exit",
    "sched_yield",
];

/// Imports allowed while the host is inside the guest allocator (§1.5).
const ALLOC_ALLOWED: &[&str] = &["proxy_log", "fd_write", "clock_time_get", "poll_oneoff"];

/// Traps the guest when `name` is not allowed in the current phase.
pub fn restrict(caller: &Ctx<'_>, name: &str) -> Result<()> {
    let st = caller.data();
    if st.callback == crate::state::Callback::Initialize && !INIT_ALLOWED.contains(&name) {
        bail!("restricted_callback: {name} called during _initialize");
    }
    if st.in_alloc && !ALLOC_ALLOWED.contains(&name) {
        bail!("restricted_callback: {name} called during memory allocation");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges_are_checked() {
        assert!(range(0, 10, 10).is_ok());
        assert!(range(1, 10, 10).is_err());
        assert!(range(-1, 2, 100).is_err());
        assert!(range(0x7fff_ffff, 0x7fff_ffff, 100).is_err());
        assert!(range(5, -1, 100).is_err());
    }
}
