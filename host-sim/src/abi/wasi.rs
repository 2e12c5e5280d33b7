//! WASI preview1 as cpp-host provides it (proxy-wasm-abi.md §1.2), defined here so that time
//! and randomness stay under the simulator's control: stdout/stderr → log, clocks → the
//! virtual clock, `random_get` → a seeded RNG, no environment beyond `environment_variables`,
//! no files. Unimplemented functions answer ENOSYS.

use wasmtime::Linker;
use wasmtime::{Result, bail};

use super::memory::{Ctx, read, restrict, write, write_u32, write_u64};
use crate::state::HostState;

const WASI: &str = "wasi_snapshot_preview1";
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
/// Largest single `fd_write` turned into a log line.
const MAX_WRITE: usize = 1 << 20;

/// Defines an import that only answers ENOSYS, with the given parameter types.
macro_rules! enosys {
    ($linker:expr, $name:literal, ($($t:ty),*)) => {
        $linker.func_wrap(WASI, $name, |c: Ctx<'_>, $(_: $t),*| -> Result<i32> {
            restrict(&c, $name)?;
            Ok(ENOSYS)
        })?;
    };
}

fn env_strings(st: &HostState) -> Vec<Vec<u8>> {
    st.plugin
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

pub fn add(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> Result<i32> {
            restrict(&c, "fd_write")?;
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let mut out = Vec::new();
            for i in 0..iovs_len.max(0) {
                let iov = read(&mut c, iovs.wrapping_add(i.wrapping_mul(8)), 8)?;
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                out.extend(read(&mut c, ptr, len)?);
                // A guest cannot make the host buffer unbounded output.
                if out.len() > MAX_WRITE {
                    return Ok(EINVAL);
                }
            }
            write_u32(&mut c, nwritten, out.len() as u32)?;
            let mut msg = String::from_utf8_lossy(&out).into_owned();
            if msg.ends_with('\n') {
                msg.pop();
            }
            c.data_mut().log(if fd == 1 { 2 } else { 4 }, msg);
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Ctx<'_>, count: i32, size: i32| -> Result<i32> {
            restrict(&c, "environ_sizes_get")?;
            let env = env_strings(c.data());
            write_u32(&mut c, count, env.len() as u32)?;
            write_u32(&mut c, size, env.iter().map(Vec::len).sum::<usize>() as u32)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |mut c: Ctx<'_>, ptrs: i32, buf: i32| -> Result<i32> {
            restrict(&c, "environ_get")?;
            let env = env_strings(c.data());
            let mut offset = 0i32;
            for (i, e) in env.iter().enumerate() {
                let at = buf.wrapping_add(offset);
                write(&mut c, at, e)?;
                write_u32(&mut c, ptrs.wrapping_add(i as i32 * 4), at as u32)?;
                offset = offset.wrapping_add(e.len() as i32);
            }
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Ctx<'_>, count: i32, size: i32| -> Result<i32> {
            restrict(&c, "args_sizes_get")?;
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |c: Ctx<'_>, _a: i32, _b: i32| -> Result<i32> {
            restrict(&c, "args_get")?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _prec: i64, ret: i32| -> Result<i32> {
            restrict(&c, "clock_time_get")?;
            let now = c.data().clock.now_ns();
            let v = match id {
                0 => now,
                1 => {
                    // Monotonic never goes back, even if replay input time does.
                    let st = c.data_mut();
                    st.monotonic_floor = st.monotonic_floor.max(now);
                    st.monotonic_floor
                }
                _ => return Ok(ENOTSUP),
            };
            write_u64(&mut c, ret, v)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Ctx<'_>, id: i32, ret: i32| -> Result<i32> {
            restrict(&c, "clock_res_get")?;
            if !(0..=1).contains(&id) {
                return Ok(ENOTSUP);
            }
            write_u64(&mut c, ret, 1)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Ctx<'_>, buf: i32, len: i32| -> Result<i32> {
            restrict(&c, "random_get")?;
            let len = len as u32 as usize;
            if len > 64 * 1024 {
                return Ok(EINVAL);
            }
            let mut bytes = Vec::with_capacity(len + 8);
            while bytes.len() < len {
                let r = c.data_mut().next_random();
                bytes.extend_from_slice(&r.to_le_bytes());
            }
            bytes.truncate(len);
            write(&mut c, buf, &bytes)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(WASI, "proc_exit", |c: Ctx<'_>, code: i32| -> Result<()> {
        restrict(&c, "proc_exit")?;
        bail!("wasi proc_exit({code})")
    })?;
    linker.func_wrap(WASI, "sched_yield", |c: Ctx<'_>| -> Result<i32> {
        restrict(&c, "sched_yield")?;
        Ok(ESUCCESS)
    })?;
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |mut c: Ctx<'_>, _in: i32, _out: i32, _n: i32, nevents: i32| -> Result<i32> {
            restrict(&c, "poll_oneoff")?;
            write_u32(&mut c, nevents, 0)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Ctx<'_>, fd: i32, ret: i32| -> Result<i32> {
            restrict(&c, "fd_fdstat_get")?;
            if !(0..=2).contains(&fd) {
                return Ok(EBADF);
            }
            // filetype = character device, no flags, no rights.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            write(&mut c, ret, &stat)?;
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |c: Ctx<'_>, _fd: i32, _ret: i32| -> Result<i32> {
            restrict(&c, "fd_prestat_get")?;
            // No preopened directories.
            Ok(EBADF)
        },
    )?;
    enosys!(linker, "fd_prestat_dir_name", (i32, i32, i32));
    enosys!(linker, "fd_advise", (i32, i64, i64, i32));
    enosys!(linker, "fd_allocate", (i32, i64, i64));
    enosys!(linker, "fd_close", (i32));
    enosys!(linker, "fd_datasync", (i32));
    enosys!(linker, "fd_fdstat_set_flags", (i32, i32));
    enosys!(linker, "fd_fdstat_set_rights", (i32, i64, i64));
    enosys!(linker, "fd_filestat_get", (i32, i32));
    enosys!(linker, "fd_filestat_set_size", (i32, i64));
    enosys!(linker, "fd_filestat_set_times", (i32, i64, i64, i32));
    enosys!(linker, "fd_pread", (i32, i32, i32, i64, i32));
    enosys!(linker, "fd_pwrite", (i32, i32, i32, i64, i32));
    enosys!(linker, "fd_read", (i32, i32, i32, i32));
    enosys!(linker, "fd_readdir", (i32, i32, i32, i64, i32));
    enosys!(linker, "fd_renumber", (i32, i32));
    enosys!(linker, "fd_seek", (i32, i64, i32, i32));
    enosys!(linker, "fd_sync", (i32));
    enosys!(linker, "fd_tell", (i32, i32));
    enosys!(linker, "path_create_directory", (i32, i32, i32));
    enosys!(linker, "path_filestat_get", (i32, i32, i32, i32, i32));
    enosys!(
        linker,
        "path_filestat_set_times",
        (i32, i32, i32, i32, i64, i64, i32)
    );
    enosys!(linker, "path_link", (i32, i32, i32, i32, i32, i32, i32));
    enosys!(
        linker,
        "path_open",
        (i32, i32, i32, i32, i32, i64, i64, i32, i32)
    );
    enosys!(linker, "path_readlink", (i32, i32, i32, i32, i32, i32));
    enosys!(linker, "path_remove_directory", (i32, i32, i32));
    enosys!(linker, "path_rename", (i32, i32, i32, i32, i32, i32));
    enosys!(linker, "path_symlink", (i32, i32, i32, i32, i32));
    enosys!(linker, "path_unlink_file", (i32, i32, i32));
    enosys!(linker, "proc_raise", (i32));
    enosys!(linker, "sock_accept", (i32, i32, i32));
    enosys!(linker, "sock_recv", (i32, i32, i32, i32, i32, i32));
    enosys!(linker, "sock_send", (i32, i32, i32, i32, i32));
    enosys!(linker, "sock_shutdown", (i32, i32));
    Ok(())
}
