//! The bpf(2) commands aya 0.14 does not wrap: batched lookups, the full prog info
//! (`recursion_misses`, `run_time_ns`), and an update through a shared map reference.

use std::{io, mem::size_of};

use aya_obj::generated::bpf_prog_info;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Sets slot `key` of an array map of u64 values (through a shared reference to the map:
/// aya's `Array::set` wants exclusive access).
pub fn set_u64(map_fd: i32, key: u32, value: u64) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map_fd as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u64 as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a live, properly sized #[repr(C)] bpf_attr prefix for `cmd`; every
    // pointer inside it refers to buffers the caller keeps alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `bpf_prog_info` of a program fd.
pub fn prog_info(fd: i32) -> io::Result<bpf_prog_info> {
    // SAFETY: bpf_prog_info is a plain C struct of integers; all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// True when the kernel or map type does not support batched lookups.
pub fn batch_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524)
    )
}

/// Every (key, value) of a hash map with `BPF_MAP_LOOKUP_BATCH`.
pub fn lookup_batch<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: i32,
    batch: u32,
) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys = vec![K::default(); batch as usize];
    let mut values = vec![V::default(); batch as usize];
    // Hash maps use a bucket index as the batch token; 8 bytes is enough for it.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match res {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // A bucket holds more entries than fit: retry with a larger buffer.
                let bigger = batch.saturating_mul(4);
                return if bigger == batch {
                    Err(e)
                } else {
                    lookup_batch(fd, bigger)
                };
            }
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
