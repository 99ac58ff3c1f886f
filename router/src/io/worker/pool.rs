//! Memory the kernel reads and writes on a worker's behalf, allocated once at
//! start-up: the provided-buffer ring with its receive buffers, the send
//! slots (msghdr, iovec, destination address) that single sends point at,
//! and the GSO slots (msghdr, up to 64 iovecs, address, `UDP_SEGMENT`
//! message) of grouped sends.
//!
//! Ownership of receive buffer `bid` moves between three places, and is in
//! exactly one at any time:
//! 1. the provided-buffer ring (the kernel may write into it at any moment);
//! 2. the worker, from the receive completion that names `bid` until the
//!    worker either gives it back or hands it to a send;
//! 3. send slot `bid`, or one GSO slot among the buffers of its group (the
//!    kernel reads from it), until that send completes, when the worker
//!    gives it back to the ring (or, for a GSO send the kernel refused,
//!    hands it to send slot `bid` instead).
//!
//! Send slot `bid` is only ever used for buffer `bid`, so a slot is always
//! free when its buffer arrives: the number of single sends in flight is
//! bounded by the number of buffers, with no free list to manage. GSO slots
//! are fewer and kept on a free list; a group that finds none goes out one
//! datagram per send slot.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use socket2::SockAddr;

// `struct io_uring_buf { __u64 addr; __u32 len; __u16 bid; __u16 resv; }`;
// `resv` of entry 0 is the ring tail.
const ENTRY_ADDR: usize = 0;
const ENTRY_LEN: usize = 8;
const ENTRY_BID: usize = 12;
const _: () = assert!(std::mem::size_of::<BufRingEntry>() == 16);

/// Anonymous, page-aligned memory, unmapped on drop.
pub(super) struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// Maps `len` bytes of zeroed, prefaulted memory.
    pub(super) fn map(len: usize) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing touches no existing memory; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        match NonNull::new(ptr.cast::<u8>()) {
            Some(ptr) => Ok(Region { ptr, len }),
            None => Err(io::Error::from_raw_os_error(libc::ENOMEM)),
        }
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping made by `map`, unmapped
        // only here. Whoever owns a `Region` the kernel may still use must
        // leak it (`mem::forget`) instead of dropping it: see
        // `BufRing::leak` and the worker's teardown.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`) and its buffers.
pub(super) struct BufRing {
    /// `count` entries of `struct io_uring_buf`; the kernel reads it.
    entries: Region,
    /// `count` buffers of `size` bytes each; the kernel writes into those
    /// that are in the ring.
    data: Region,
    count: u16,
    size: u32,
    /// Our tail, published to the kernel by `publish`.
    tail: u16,
    /// Buffers currently in the ring (given back minus taken).
    in_ring: u32,
}

impl BufRing {
    /// Maps the ring and `count` buffers of `size` bytes. `count` must be a
    /// power of two of at most 32768 (checked by the worker's config).
    pub(super) fn new(count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || size == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries_len = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let data_len = usize::from(count)
            .checked_mul(size as usize)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(BufRing {
            entries: Region::map(entries_len)?,
            data: Region::map(data_len)?,
            count,
            size,
            tail: 0,
            in_ring: 0,
        })
    }

    /// Bytes of memory mapped for `count` buffers of `size` bytes.
    pub(super) fn bytes(count: u16, size: u32) -> usize {
        usize::from(count) * (size as usize + std::mem::size_of::<BufRingEntry>())
    }

    /// Registers the ring as buffer group `bgid` and puts every buffer in it.
    pub(super) fn register(
        &mut self,
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
    ) -> io::Result<()> {
        // SAFETY: `entries` is page aligned (mmap) and holds `count` entries;
        // it stays mapped until the group is unregistered (the worker's
        // teardown unregisters before dropping this, or leaks it).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                bgid,
                0,
            )?;
        }
        for bid in 0..self.count {
            self.give_back(bid);
        }
        self.publish();
        Ok(())
    }

    /// Number of buffers.
    pub(super) fn count(&self) -> u16 {
        self.count
    }

    /// Buffers currently available to the kernel (after `publish`).
    pub(super) fn in_ring(&self) -> u32 {
        self.in_ring
    }

    /// Notes that a receive completion took a buffer out of the ring.
    pub(super) fn taken(&mut self) {
        debug_assert!(self.in_ring > 0);
        self.in_ring = self.in_ring.saturating_sub(1);
    }

    /// Appends buffer `bid` to the ring; visible to the kernel after
    /// `publish`. The caller owns `bid` (it came from a completion and is
    /// in no send), which is what keeps the ring from overfilling.
    pub(super) fn give_back(&mut self, bid: u16) {
        if bid >= self.count {
            debug_assert!(false, "buffer id {bid} out of range");
            return;
        }
        debug_assert!(self.in_ring < u32::from(self.count));
        let index = usize::from(self.tail & (self.count - 1));
        let entry = self
            .entries
            .as_ptr()
            .wrapping_add(index * std::mem::size_of::<BufRingEntry>());
        // SAFETY: index < count, so the 16-byte entry lies inside `entries`
        // (page aligned, so every field is naturally aligned). The kernel
        // reads entries only between its head and our published tail, and
        // this one is past the published tail (`bid` is not in the ring, and
        // at most `count` buffers exist), so nobody reads it now. Only addr,
        // len and bid are written, never `resv`, which for entry 0 is the
        // tail the kernel may be reading concurrently; no Rust reference to
        // the entry is formed for the same reason.
        unsafe {
            entry
                .add(ENTRY_ADDR)
                .cast::<u64>()
                .write(self.buffer_ptr(bid) as u64);
            entry.add(ENTRY_LEN).cast::<u32>().write(self.size);
            entry.add(ENTRY_BID).cast::<u16>().write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.in_ring += 1;
    }

    /// Makes every buffer given back so far visible to the kernel.
    pub(super) fn publish(&self) {
        let entries = self.entries.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `entries` points at entry 0 of the initialized ring, whose
        // `resv` field is the ring tail (u16, naturally aligned). The kernel
        // reads it atomically; we are its only writer. The release store
        // orders the entry writes before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        // In bounds for bid < count: data holds count * size bytes.
        self.data
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.size as usize)
    }

    /// Address of byte `offset` of buffer `bid`, for a send's iovec.
    pub(super) fn addr(&self, bid: u16, offset: usize) -> *mut u8 {
        self.buffer_ptr(bid).wrapping_add(offset)
    }

    /// The first `len` bytes of buffer `bid`, which a receive completion has
    /// just handed to the worker. `None` if `bid` or `len` is out of range.
    pub(super) fn received(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if bid >= self.count || len > self.size as usize {
            return None;
        }
        // SAFETY: bid < count and len <= size, so the slice lies inside
        // `data` and inside buffer `bid` only. The completion naming `bid`
        // transferred it from the kernel to the worker: it is not in the ring
        // and not in a send, so the kernel neither writes nor reads it until
        // the worker gives it back or sends it. `&mut self` excludes any
        // other Rust reference into the buffers.
        Some(unsafe { std::slice::from_raw_parts_mut(self.buffer_ptr(bid), len) })
    }

    /// Gives up the memory without unmapping it: for when the kernel might
    /// still use it (operations that did not drain, or a ring that did not
    /// unregister).
    pub(super) fn leak(self) {
        std::mem::forget(self);
    }
}

/// One send: the msghdr the kernel reads, its iovec (pointing into a
/// receive buffer) and the destination address.
struct SendSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    busy: bool,
}

/// One send slot per receive buffer; slot `i` only ever sends buffer `i`.
pub(super) struct SendSlots {
    /// Boxed so the slots never move: each `msg` points at its own `iov`
    /// and `addr`.
    slots: Box<[SendSlot]>,
}

impl SendSlots {
    /// `count` free slots.
    pub(super) fn new(count: u16) -> SendSlots {
        let mut slots: Box<[SendSlot]> = (0..count)
            .map(|_| SendSlot {
                // SAFETY: msghdr, iovec and sockaddr_storage are plain C
                // structs of integers and raw pointers; all-zero is valid
                // (null pointers, zero lengths, AF_UNSPEC).
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                // SAFETY: as above.
                addr: unsafe { std::mem::zeroed() },
                busy: false,
            })
            .collect();
        for slot in slots.iter_mut() {
            slot.msg.msg_name = (&raw mut slot.addr).cast();
            slot.msg.msg_iov = &raw mut slot.iov;
            slot.msg.msg_iovlen = 1;
        }
        SendSlots { slots }
    }

    /// Fills slot `index` for sending `len` bytes at `data` to `dst`, marks
    /// it busy and returns the msghdr for the SQE. `None` if the slot does
    /// not exist or is busy. The slot stays untouched until `release`.
    pub(super) fn prepare(
        &mut self,
        index: u16,
        dst: &SockAddr,
        data: *mut u8,
        len: usize,
    ) -> Option<*const libc::msghdr> {
        let slot = self.slots.get_mut(usize::from(index))?;
        if slot.busy {
            return None;
        }
        // A copy into the slot's own storage: the table the address came
        // from may be replaced before the send completes.
        slot.addr = dst.clone().as_storage();
        slot.msg.msg_namelen = dst.len();
        slot.iov.iov_base = data.cast();
        slot.iov.iov_len = len;
        slot.busy = true;
        Some(&raw const slot.msg)
    }

    /// Unmarks slot `index` when its send completes (or its SQE was never
    /// queued). Returns whether it was busy.
    pub(super) fn release(&mut self, index: u16) -> bool {
        match self.slots.get_mut(usize::from(index)) {
            Some(slot) if slot.busy => {
                slot.busy = false;
                true
            }
            _ => false,
        }
    }

    /// Gives up the memory without freeing it (the kernel might still read a
    /// msghdr of a send that did not drain).
    pub(super) fn leak(self) {
        std::mem::forget(self);
    }
}

/// `CMSG_SPACE(sizeof(u16))`: one `UDP_SEGMENT` control message.
const SEGMENT_CMSG_SPACE: usize = 24;

/// One GSO send: msghdr, an iovec per datagram (each pointing into its
/// receive buffer), the destination, the `UDP_SEGMENT` control message and
/// the buffers it pins.
struct GsoSlot {
    msg: libc::msghdr,
    iov: [libc::iovec; super::gso::MAX_SEGMENTS],
    addr: libc::sockaddr_storage,
    /// `u64`s: a cmsghdr needs 8-byte alignment.
    cmsg: [u64; SEGMENT_CMSG_SPACE / 8],
    bids: [u16; super::gso::MAX_SEGMENTS],
    count: usize,
    busy: bool,
}

/// What a released GSO slot held: the destination and each datagram's
/// buffer, address and length.
pub(super) struct GsoReleased {
    pub dst: SockAddr,
    parts: [(u16, *mut u8, usize); super::gso::MAX_SEGMENTS],
    count: usize,
}

impl GsoReleased {
    /// (buffer, address, length) of each datagram, in order.
    pub(super) fn parts(&self) -> &[(u16, *mut u8, usize)] {
        &self.parts[..self.count]
    }
}

/// Slots of GSO sends in flight, with a free list (a group pins several
/// buffers, so slots cannot be indexed by buffer).
pub(super) struct GsoSlots {
    /// Boxed so the slots never move: each `msg` points at its own fields.
    slots: Box<[GsoSlot]>,
    free: Vec<u16>,
}

impl GsoSlots {
    /// `count` free slots.
    pub(super) fn new(count: u16) -> GsoSlots {
        let mut slots: Box<[GsoSlot]> = (0..count)
            .map(|_| GsoSlot {
                // SAFETY: plain C structs of integers and raw pointers;
                // all-zero is valid (null pointers, zero lengths).
                msg: unsafe { std::mem::zeroed() },
                // SAFETY: as above.
                iov: unsafe { std::mem::zeroed() },
                // SAFETY: as above (AF_UNSPEC).
                addr: unsafe { std::mem::zeroed() },
                cmsg: [0; SEGMENT_CMSG_SPACE / 8],
                bids: [0; super::gso::MAX_SEGMENTS],
                count: 0,
                busy: false,
            })
            .collect();
        for slot in slots.iter_mut() {
            slot.msg.msg_name = (&raw mut slot.addr).cast();
            slot.msg.msg_iov = slot.iov.as_mut_ptr();
            slot.msg.msg_control = slot.cmsg.as_mut_ptr().cast();
            slot.msg.msg_controllen = SEGMENT_CMSG_SPACE;
            // SAFETY: `cmsg` is SEGMENT_CMSG_SPACE bytes, 8-byte aligned,
            // room for a cmsghdr and its u16 of data.
            unsafe {
                let hdr = slot.cmsg.as_mut_ptr().cast::<libc::cmsghdr>();
                (*hdr).cmsg_level = libc::SOL_UDP;
                (*hdr).cmsg_type = libc::UDP_SEGMENT;
                (*hdr).cmsg_len = libc::CMSG_LEN(2) as usize;
            }
        }
        let free = (0..count).rev().collect();
        GsoSlots { slots, free }
    }

    /// Fills a free slot for sending `parts` (buffer, address, length) to
    /// `dst` as segments of `seg_len` bytes. Returns the slot and the
    /// msghdr for the SQE, or `None` if every slot is busy or `parts` is
    /// empty or too long. The slot stays untouched until `release`.
    pub(super) fn prepare(
        &mut self,
        dst: &SockAddr,
        seg_len: u16,
        parts: impl ExactSizeIterator<Item = (u16, *mut u8, usize)>,
    ) -> Option<(u16, *const libc::msghdr)> {
        if parts.len() == 0 || parts.len() > super::gso::MAX_SEGMENTS {
            return None;
        }
        let index = self.free.pop()?;
        let slot = &mut self.slots[usize::from(index)];
        slot.addr = dst.clone().as_storage();
        slot.msg.msg_namelen = dst.len();
        let mut count = 0;
        for (i, (bid, data, len)) in parts.enumerate() {
            slot.iov[i] = libc::iovec {
                iov_base: data.cast(),
                iov_len: len,
            };
            slot.bids[i] = bid;
            count += 1;
        }
        slot.count = count;
        slot.msg.msg_iovlen = count;
        // SAFETY: the cmsghdr written in `new`; its data follows it.
        unsafe {
            let hdr = slot.cmsg.as_mut_ptr().cast::<libc::cmsghdr>();
            libc::CMSG_DATA(hdr).cast::<u16>().write_unaligned(seg_len);
        }
        slot.busy = true;
        Some((index, &raw const slot.msg))
    }

    /// Frees slot `index` when its send completes (or its SQE was never
    /// queued) and returns what it held, so the buffers can be given back or
    /// sent one by one. `None` if it was not busy.
    pub(super) fn release(&mut self, index: u16) -> Option<GsoReleased> {
        let slot = self.slots.get_mut(usize::from(index))?;
        if !slot.busy {
            return None;
        }
        slot.busy = false;
        self.free.push(index);
        let mut parts = [(0u16, std::ptr::null_mut::<u8>(), 0usize); super::gso::MAX_SEGMENTS];
        for (i, part) in parts.iter_mut().enumerate().take(slot.count) {
            *part = (
                slot.bids[i],
                slot.iov[i].iov_base.cast(),
                slot.iov[i].iov_len,
            );
        }
        // SAFETY: `addr` and `msg_namelen` were copied from a valid SockAddr
        // by `prepare`.
        let dst = unsafe { SockAddr::new(slot.addr, slot.msg.msg_namelen) };
        Some(GsoReleased {
            dst,
            parts,
            count: slot.count,
        })
    }

    /// Gives up the memory without freeing it (see `SendSlots::leak`).
    pub(super) fn leak(self) {
        std::mem::forget(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_accounting_without_kernel() {
        let mut ring = BufRing::new(8, 256).expect("mmap");
        for bid in 0..8 {
            ring.give_back(bid);
        }
        ring.publish();
        assert_eq!(ring.in_ring(), 8);
        ring.taken();
        let buf = ring.received(3, 100).expect("in range");
        assert_eq!(buf.len(), 100);
        buf[99] = 7;
        assert!(ring.received(8, 1).is_none());
        assert!(ring.received(0, 257).is_none());
        ring.give_back(3);
        assert_eq!(ring.in_ring(), 8);
        let entries = ring.entries.as_ptr().cast::<BufRingEntry>();
        // SAFETY: test-only reads of an initialized ring of 8 entries.
        let tail = || unsafe { *BufRingEntry::tail(entries) };
        assert_eq!(tail(), 8, "not visible before publish");
        ring.publish();
        assert_eq!(tail(), 9);
        // Buffer 3 went into slot 8 & 7 = 0, after buffers 0..8.
        // SAFETY: as above.
        unsafe {
            assert_eq!((*entries.add(1)).bid(), 1);
            assert_eq!((*entries.add(0)).bid(), 3);
            assert_eq!((*entries.add(0)).len(), 256);
        }
        assert_eq!(ring.addr(2, 0) as usize - ring.addr(1, 0) as usize, 256);
    }

    #[test]
    fn gso_slots_carry_the_segment_size_and_pin_their_buffers() {
        let mut slots = GsoSlots::new(2);
        let dst = SockAddr::from(
            "127.0.0.1:9"
                .parse::<std::net::SocketAddr>()
                .expect("literal"),
        );
        let mut bytes = [0u8; 300];
        let base = bytes.as_mut_ptr();
        // SAFETY: test-only pointers inside `bytes`.
        let parts = [
            (5u16, base, 100usize),
            (9, unsafe { base.add(100) }, 100),
            (2, unsafe { base.add(200) }, 40),
        ];
        let (index, msg) = slots.prepare(&dst, 100, parts.into_iter()).expect("free");
        // SAFETY: test-only reads of the msghdr the slot just filled.
        let msg = unsafe { &*msg };
        assert_eq!(msg.msg_iovlen, 3);
        assert_eq!(msg.msg_namelen, dst.len());
        // SAFETY: as above; the control message was built by `new`.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(msg);
            assert!(!hdr.is_null());
            assert_eq!((*hdr).cmsg_level, libc::SOL_UDP);
            assert_eq!((*hdr).cmsg_type, libc::UDP_SEGMENT);
            assert_eq!(libc::CMSG_DATA(hdr).cast::<u16>().read_unaligned(), 100);
            assert_eq!((*msg.msg_iov.add(2)).iov_len, 40);
        }
        assert!(
            slots
                .prepare(&dst, 100, [(1u16, base, 1usize)].into_iter())
                .is_some()
        );
        assert!(
            slots
                .prepare(&dst, 100, [(1u16, base, 1usize)].into_iter())
                .is_none(),
            "all busy"
        );
        assert!(slots.prepare(&dst, 100, std::iter::empty()).is_none());
        let released = slots.release(index).expect("busy");
        assert_eq!(released.dst, dst);
        assert_eq!(
            released
                .parts()
                .iter()
                .map(|p| (p.0, p.2))
                .collect::<Vec<_>>(),
            vec![(5, 100), (9, 100), (2, 40)]
        );
        assert!(slots.release(index).is_none(), "released twice");
        assert!(
            slots
                .prepare(&dst, 100, [(1u16, base, 1usize)].into_iter())
                .is_some()
        );
    }

    #[test]
    fn slots_are_single_use_until_released() {
        let mut slots = SendSlots::new(4);
        let dst = SockAddr::from(
            "127.0.0.1:9"
                .parse::<std::net::SocketAddr>()
                .expect("literal"),
        );
        let mut byte = 0u8;
        let msg = slots.prepare(2, &dst, &raw mut byte, 1).expect("free");
        // SAFETY: test-only read of the msghdr the slot just filled.
        let msg = unsafe { &*msg };
        assert_eq!(msg.msg_namelen, dst.len());
        assert_eq!(msg.msg_iovlen, 1);
        assert!(slots.prepare(2, &dst, &raw mut byte, 1).is_none(), "busy");
        assert!(
            slots.prepare(4, &dst, &raw mut byte, 1).is_none(),
            "out of range"
        );
        assert!(slots.release(2));
        assert!(!slots.release(2));
        assert!(slots.prepare(2, &dst, &raw mut byte, 1).is_some());
    }
}
