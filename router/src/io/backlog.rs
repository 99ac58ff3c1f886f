//! The workers' credits: map `xorlay_backlog` of `ebpf/maps.h`, mapped
//! into the router's memory (`BPF_F_MMAPABLE`), so a worker returns credits
//! with one store, no system call.
//!
//! XDP passes a data packet to a worker only while fewer than the worker's
//! window of the packets it passed are unread (`admitted - consumed`);
//! beyond, it drops the packet (counted as `drop_shed`) instead of letting
//! the kernel build an skb for it only to drop it at the full socket queue.
//! The worker keeps its side with [`crate::core::shed::Credits`];
//! docs/xdp.md, "Load shedding".

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::Ebpf;
use aya::maps::{Map, MapData};

use crate::io::bpf::abi::{Backlog, Credit};
use crate::wire::consts;

/// The map's name in the object.
pub const BACKLOG_MAP_NAME: &str = "xorlay_backlog";

/// Workers the map has credits for (`XORLAY_WORKERS_MAX`, the router's
/// workers limit).
pub const BACKLOG_WORKERS_MAX: usize = consts::WORKERS_MAX;

// Byte offsets in the map's value, `struct xorlay_backlog` (generated from
// ebpf/maps.h: io::bpf::abi::Backlog).
const VALUE_LEN: usize = size_of::<Backlog>();
const OFF_WORKERS: usize = std::mem::offset_of!(Backlog, workers);
const OFF_WORKER: usize = std::mem::offset_of!(Backlog, worker);
const CREDIT_LEN: usize = size_of::<Credit>();
const OFF_ADMITTED: usize = std::mem::offset_of!(Credit, admitted);
const OFF_CONSUMED: usize = std::mem::offset_of!(Credit, consumed);
const OFF_WINDOW: usize = std::mem::offset_of!(Credit, window);
const _: () = assert!(OFF_WORKER + CREDIT_LEN * BACKLOG_WORKERS_MAX == VALUE_LEN);
// One cache line per worker.
const _: () = assert!(OFF_WORKER.is_multiple_of(64) && CREDIT_LEN.is_multiple_of(64));
// The atomics below need aligned words.
const _: () = assert!(
    OFF_WORKERS.is_multiple_of(4)
        && OFF_ADMITTED.is_multiple_of(8)
        && OFF_CONSUMED.is_multiple_of(8)
        && OFF_WINDOW.is_multiple_of(4)
);

/// The shared mapping of the map's one value. Every access is an atomic
/// load or store of an aligned word inside it.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Keeps the map (and so the mapped memory's owner) open.
    _map: MapData,
}

// SAFETY: the mapping is only read and written through `AtomicU32`s, which
// are safe to share between threads; the pointer stays valid until `Drop`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= VALUE_LEN);
        // SAFETY: in bounds of the mapping (`VALUE_LEN <= len`, checked at
        // map time) and 4-aligned in a page-aligned mapping; the memory lives
        // as long as `self`; the kernel program uses it atomically or with
        // single loads.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= VALUE_LEN);
        // SAFETY: as in `word`, 8-aligned.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The credits of the worker whose slot starts at `base`.
    fn credit_state(&self, base: usize) -> CreditState {
        let admitted = self.word64(base + OFF_ADMITTED).load(Ordering::Acquire);
        let consumed = self.word64(base + OFF_CONSUMED).load(Ordering::Acquire);
        CreditState {
            window: self.word(base + OFF_WINDOW).load(Ordering::Acquire),
            admitted,
            consumed,
            unread: admitted.wrapping_sub(consumed) as i64,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from the mmap in `BacklogMap::take`, and
        // nothing borrows the memory any more (borrows are tied to `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A socket's `SO_MEMINFO` (`SK_MEMINFO_*` words), `None` if the kernel
/// does not give it.
pub fn socket_meminfo(socket: &socket2::Socket) -> Option<[u32; 9]> {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let needed = (libc::SK_MEMINFO_DROPS as usize + 1) * std::mem::size_of::<u32>();
    (rc == 0 && len as usize >= needed).then_some(info)
}

/// The bytes a socket's receive queue holds and its capacity
/// (`SK_MEMINFO_RMEM_ALLOC`, `SK_MEMINFO_RCVBUF`).
pub fn socket_queue(socket: &socket2::Socket) -> Option<(u32, u32)> {
    let info = socket_meminfo(socket)?;
    Some((
        info[libc::SK_MEMINFO_RMEM_ALLOC as usize],
        info[libc::SK_MEMINFO_RCVBUF as usize],
    ))
}

/// The workers' credits, owned by the router (see the module
/// documentation).
pub struct BacklogMap {
    mapping: Arc<Mapping>,
}

impl BacklogMap {
    /// Takes `xorlay_backlog` out of a loaded object and maps it. `None`
    /// if the object has no such map (an older object).
    pub fn take(ebpf: &mut Ebpf) -> io::Result<Option<BacklogMap>> {
        let Some(map) = ebpf.take_map(BACKLOG_MAP_NAME) else {
            return Ok(None);
        };
        let Map::Array(data) = map else {
            return Err(io::Error::other(format!(
                "map `{BACKLOG_MAP_NAME}` is not an array"
            )));
        };
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let len = VALUE_LEN.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd at offset 0; the
        // kernel refuses (MAP_FAILED) a map without BPF_F_MMAPABLE or a
        // length beyond the array's pages.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let error = io::Error::last_os_error();
            return Err(io::Error::new(
                error.kind(),
                format!("mapping `{BACKLOG_MAP_NAME}` into memory: {error}"),
            ));
        }
        let Some(ptr) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(io::Error::other("mmap returned a null mapping"));
        };
        Ok(Some(BacklogMap {
            mapping: Arc::new(Mapping {
                ptr,
                len,
                _map: data,
            }),
        }))
    }

    /// Turns shedding by queue on for `workers` workers (0: off). The
    /// program picks a packet's worker as the steering program does, so
    /// this must be the size of the steered group (or 1).
    pub fn set_workers(&self, workers: usize) -> io::Result<()> {
        let count = u32::try_from(workers)
            .ok()
            .filter(|_| workers <= BACKLOG_WORKERS_MAX)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{workers} workers, but `{BACKLOG_MAP_NAME}` has credits for {BACKLOG_WORKERS_MAX}"
                ))
            })?;
        self.mapping
            .word(OFF_WORKERS)
            .store(count, Ordering::Release);
        Ok(())
    }

    /// The workers the program currently shares the credits among.
    pub fn workers(&self) -> u32 {
        self.mapping.word(OFF_WORKERS).load(Ordering::Acquire)
    }

    /// Worker `index`'s credits as they stand, without taking them.
    pub fn peek(&self, index: usize) -> Option<CreditState> {
        if index >= BACKLOG_WORKERS_MAX {
            return None;
        }
        Some(self.mapping.credit_state(OFF_WORKER + CREDIT_LEN * index))
    }

    /// Worker `index`'s credits (no limit until it sets a window); `None`
    /// past the map's workers.
    pub fn credits(&self, index: usize) -> Option<WorkerCredits> {
        if index >= BACKLOG_WORKERS_MAX {
            return None;
        }
        let credits = WorkerCredits {
            mapping: self.mapping.clone(),
            offset: OFF_WORKER + CREDIT_LEN * index,
        };
        credits.set_window(0);
        Some(credits)
    }
}

/// A worker's credits as `xorlay stats` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CreditState {
    /// Most unread data packets XDP lets wait for the worker (0: no limit).
    pub window: u32,
    /// Data packets XDP passed to the worker.
    pub admitted: u64,
    /// Of those, what the worker read (its count, caught up on an empty
    /// queue).
    pub consumed: u64,
    /// `admitted - consumed`: what XDP counts as waiting (negative: the
    /// worker's count is ahead).
    pub unread: i64,
}

impl std::fmt::Debug for BacklogMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacklogMap")
            .field("workers", &self.workers())
            .finish_non_exhaustive()
    }
}

/// One worker's credits in `xorlay_backlog`. The window is lifted when
/// dropped, so a worker that stops never leaves its packets shed.
pub struct WorkerCredits {
    mapping: Arc<Mapping>,
    offset: usize,
}

impl WorkerCredits {
    /// Most packets XDP lets wait for this worker (0: no limit).
    pub fn set_window(&self, window: u32) {
        self.mapping
            .word(self.offset + OFF_WINDOW)
            .store(window, Ordering::Release);
    }

    /// The window in force.
    pub fn window(&self) -> u32 {
        self.mapping
            .word(self.offset + OFF_WINDOW)
            .load(Ordering::Acquire)
    }

    /// Data packets XDP has passed to this worker.
    pub fn admitted(&self) -> u64 {
        self.mapping
            .word64(self.offset + OFF_ADMITTED)
            .load(Ordering::Acquire)
    }

    /// Of those, what the worker has read (its own count; see
    /// [`crate::core::shed::Credits`]).
    pub fn set_consumed(&self, consumed: u64) {
        self.mapping
            .word64(self.offset + OFF_CONSUMED)
            .store(consumed, Ordering::Release);
    }

    /// The credits as XDP sees them.
    pub fn state(&self) -> CreditState {
        self.mapping.credit_state(self.offset)
    }
}

impl Drop for WorkerCredits {
    fn drop(&mut self) {
        self.set_window(0);
    }
}

impl std::fmt::Debug for WorkerCredits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCredits")
            .field("index", &((self.offset - OFF_WORKER) / CREDIT_LEN))
            .field("state", &self.state())
            .finish()
    }
}
