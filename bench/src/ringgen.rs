//! A traffic generator that needs no live frames: an `AF_PACKET` socket with
//! a memory-mapped transmit ring (`PACKET_TX_RING`, `TPACKET_V2`) and
//! `PACKET_QDISC_BYPASS`, sending prepared Ethernet frames out of the
//! generator's interface.
//!
//! It sends the same frames as [`crate::livegen`] (the header from
//! [`LiveFrame::build`], then the payload's sequence number and
//! CLOCK_MONOTONIC send time, big endian; flows and floods alike), so the
//! sinks and the reports cannot tell the two apart. Where the live-frames
//! generator runs an XDP program in the kernel, this one writes each frame
//! into a ring slot shared with the kernel and hands a batch of slots over
//! with one `send` call; the kernel builds an skb per frame and gives it
//! straight to the driver (no qdisc). Why this candidate and not AF_XDP or
//! tc `bpf_clone_redirect`: docs/benchmarks.md, "Generators".
//!
//! How it runs:
//! - A thread inside the generator's namespace, pinned to a CPU when asked,
//!   owns the socket and the ring ([`RING_FRAMES`] slots).
//! - A slot is the kernel's while its status is not `TP_STATUS_AVAILABLE`:
//!   from the moment this thread sets `TP_STATUS_SEND_REQUEST` until the
//!   kernel frees the frame's skb (on veth: once the peer has consumed
//!   it). Slots are filled in ring order, the order the kernel sends them.
//! - Unpaced, the thread writes frames until [`BATCH_FRAMES`] are pending or
//!   the next slot is still the kernel's, then calls `send(MSG_DONTWAIT)`.
//!   Paced, a frame is written when it is due (`1e9 / rate` ns apart, reset
//!   to now when more than 1 ms behind: no catch-up bursts), and the pending
//!   frames are sent before the thread waits for the next one.
//! - `GenReport::sent` counts stream frames the kernel took (status back to
//!   available, not `TP_STATUS_WRONG_FORMAT`); what the peer did with them
//!   is the sink's to count. `errors` counts frames the kernel refused
//!   (`TP_STATUS_WRONG_FORMAT`); a failed `send` (other than a full send
//!   buffer) ends the run with its error.
//!
//! Needs CAP_NET_RAW in the generator's namespace. The receiving veth needs
//! nothing special: these are ordinary skbs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::livegen::{Flood, LIVE_HEADER_LEN, LiveFrame};
use crate::loadgen::{GenReport, GenSpec};
use crate::traffic::monotonic_ns;
use xorlay::wire::consts::OFF_SRC;

/// Slots in the transmit ring.
pub const RING_FRAMES: usize = 4096;
/// Most frames handed to the kernel per `send` call.
pub const BATCH_FRAMES: usize = 64;
/// Bytes of ring memory per block (a power of two of pages).
const BLOCK_BYTES: usize = 1 << 16;
/// Where a frame's bytes start in its slot: the `tpacket2_hdr`, aligned
/// (what the kernel expects without `PACKET_TX_HAS_OFF`).
const DATA_OFFSET: usize = (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT
    - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);
/// The socket's send buffer: room for every slot's skb in flight.
const SNDBUF_BYTES: libc::c_int = 64 << 20;
/// A pacing gap longer than this is slept (less a margin), shorter ones
/// are spun.
const SPIN_MAX: Duration = Duration::from_micros(200);
/// A schedule further behind than this restarts at now.
const LAG_MAX_NS: u64 = 1_000_000;
/// How long the end of a run waits for the kernel to release every slot.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bits of the sequence number that count packets (see `loadgen`).
const SEQ_BITS: u32 = 40;
/// Where the overlay source node ID starts in the frame.
const SRC_OFFSET: usize = 14 + 20 + 8 + OFF_SRC as usize;

/// Bytes of `struct virtio_net_hdr` before each frame in its slot: its
/// `hdr_len` tells the kernel to copy that many bytes into the skb's linear
/// part, which with the whole frame means no page of the ring is lent to
/// the skb (veth would copy it out again, page by page).
const VNET_HDR_LEN: usize = 10;
/// `PACKET_VNET_HDR` of linux/if_packet.h.
const PACKET_VNET_HDR: libc::c_int = 15;

const _: () = assert!(DATA_OFFSET == 32);
const _: () = assert!(SRC_OFFSET + 4 <= LIVE_HEADER_LEN);

/// What a slot holds, to count it when the kernel gives it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    Stream,
    Flood,
}

/// The socket, its mapped ring and the ring's geometry. Dropping it unmaps
/// the ring and closes the socket.
struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    block_size: usize,
    frame_size: usize,
    frames: usize,
    frames_per_block: usize,
    /// Largest frame the slots and the interface take.
    frame_max: usize,
}

impl Ring {
    /// Opens the socket on interface `ifindex` (in the calling thread's
    /// namespace) with a ring whose slots take `frame_len`-byte frames.
    fn open(ifindex: u32, frame_len: usize, mtu: usize) -> anyhow::Result<Ring> {
        let frame_max = mtu + 14;
        if frame_len > frame_max {
            bail!(
                "a {frame_len}-byte frame exceeds the interface's MTU ({mtu} + 14 bytes of Ethernet)"
            );
        }
        let frame_size =
            (DATA_OFFSET + VNET_HDR_LEN + frame_len).next_multiple_of(libc::TPACKET_ALIGNMENT);
        let block_size = BLOCK_BYTES.max(frame_size.next_power_of_two());
        let frames_per_block = block_size / frame_size;
        let blocks = RING_FRAMES.div_ceil(frames_per_block);
        let frames = blocks * frames_per_block;

        let fd = open_socket()?;
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )
        .context("PACKET_VERSION TPACKET_V2")?;
        setsockopt(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, &(1 as libc::c_int))
            .context("PACKET_VNET_HDR")?;
        let req = libc::tpacket_req {
            tp_block_size: u32::try_from(block_size).context("block size")?,
            tp_block_nr: u32::try_from(blocks).context("block count")?,
            tp_frame_size: u32::try_from(frame_size).context("frame size")?,
            tp_frame_nr: u32::try_from(frames).context("frame count")?,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_TX_RING, &req).context("PACKET_TX_RING")?;
        let map_len = block_size * blocks;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of the transmit ring");
        }
        let ring = Ring {
            fd,
            base: base.cast(),
            map_len,
            block_size,
            frame_size,
            frames,
            frames_per_block,
            frame_max,
        };
        bind(&ring.fd, ifindex)?;
        Ok(ring)
    }

    /// The slot's header.
    fn header(&self, slot: usize) -> *mut libc::tpacket2_hdr {
        let block = slot / self.frames_per_block;
        let within = slot % self.frames_per_block;
        let offset = block * self.block_size + within * self.frame_size;
        debug_assert!(offset + self.frame_size <= self.map_len);
        // SAFETY: offset lies within the mapping (slot < frames).
        unsafe { self.base.add(offset).cast() }
    }

    /// The slot's status word, shared with the kernel.
    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the first field, a 4-byte aligned u32 inside
        // the mapping; the kernel reads and writes it concurrently, hence
        // the atomic view.
        unsafe { &*(std::ptr::addr_of_mut!((*self.header(slot)).tp_status) as *const AtomicU32) }
    }

    /// Writes `frame` into `slot` (which must be available), lets `edit`
    /// change the copy, and hands the slot to the kernel.
    fn fill(&self, slot: usize, frame: &[u8], edit: impl FnOnce(&mut [u8])) {
        debug_assert!(frame.len() <= self.frame_max);
        let header = self.header(slot);
        // SAFETY: the slot is this thread's (status available): the kernel
        // does not touch its bytes until the status says SEND_REQUEST; the
        // data area lies within the slot (frame_size >= DATA_OFFSET + len).
        unsafe {
            let slot_bytes = std::slice::from_raw_parts_mut(
                header.cast::<u8>().add(DATA_OFFSET),
                VNET_HDR_LEN + frame.len(),
            );
            let (vnet, data) = slot_bytes.split_at_mut(VNET_HDR_LEN);
            // flags 0, gso_type NONE, hdr_len = the whole frame; gso_size,
            // csum_start, csum_offset 0 (little endian, virtio 1.0).
            vnet.fill(0);
            vnet[2..4].copy_from_slice(&(frame.len() as u16).to_le_bytes());
            data.copy_from_slice(frame);
            edit(data);
            (*header).tp_len = (VNET_HDR_LEN + frame.len()) as u32;
            (*header).tp_snaplen = (VNET_HDR_LEN + frame.len()) as u32;
        }
        // Release: the bytes above are visible before the status says so.
        self.status(slot)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
    }

    /// Asks the kernel to send every slot marked SEND_REQUEST.
    fn kick(&self) -> std::io::Result<()> {
        // SAFETY: a zero-length send on our socket: the kernel walks the ring.
        let rc =
            unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // EAGAIN/ENOBUFS: the send buffer is full of skbs in flight;
            // the slots stay requested and go with the next call.
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/map_len are the mapping made in open.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// A raw `AF_PACKET` socket that bypasses the qdisc, with a send buffer for
/// every frame in flight. Needs CAP_NET_RAW (and CAP_NET_ADMIN for the
/// buffer).
fn open_socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error())
            .context("socket(AF_PACKET) (needs CAP_NET_RAW)");
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(
        &fd,
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        &(1 as libc::c_int),
    )
    .context("PACKET_QDISC_BYPASS")?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &SNDBUF_BYTES)
        .context("SO_SNDBUFFORCE (needs CAP_NET_ADMIN)")?;
    Ok(fd)
}

/// Binds `fd` to interface `ifindex` for IPv4 frames.
fn bind(fd: &OwnedFd, ifindex: u32) -> anyhow::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    addr.sll_ifindex = i32::try_from(ifindex).context("ifindex")?;
    // SAFETY: addr is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind to the interface");
    }
    Ok(())
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: value points to a T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The MTU of interface `ifname` in the calling thread's namespace (asked
/// of a socket: /sys shows the namespace the process was started in).
fn mtu_here(ifname: &str) -> anyhow::Result<usize> {
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        bail!("interface name {ifname:?} is too long");
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("a socket to ask the MTU");
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: SIOCGIFMTU reads the name and writes ifr_mtu within req.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("interface {ifname}: SIOCGIFMTU"));
    }
    // SAFETY: SIOCGIFMTU filled the union's mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).with_context(|| format!("interface {ifname}: MTU {mtu}"))
}

/// Runs `spec` in namespace `netns`, sending out of interface `ifname` from
/// an `AF_PACKET` transmit ring, the thread pinned to `cpu` when given;
/// blocks until `spec.duration` passes, `stop` is set or the stream's
/// packets are all out. The arguments and the report mean what they mean
/// for [`crate::livegen::generate_live_flooded`].
pub fn generate_ring(
    netns: &str,
    ifname: &str,
    frame: &LiveFrame,
    spec: &GenSpec,
    flood: Option<Flood>,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    generate_packet(Backend::Ring, netns, ifname, frame, spec, flood, cpu, stop)
}

/// How an `AF_PACKET` generator hands frames to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The memory-mapped transmit ring, one `send` per batch (the
    /// benchmark's generator).
    Ring,
    /// `sendmmsg` from buffers of the thread, one call per batch (kept as a
    /// candidate for `xorlay-bench gen-eval`: slower, see
    /// docs/benchmarks.md).
    Mmsg,
}

/// [`generate_ring`] with the backend chosen.
#[allow(clippy::too_many_arguments)]
pub fn generate_packet(
    backend: Backend,
    netns: &str,
    ifname: &str,
    frame: &LiveFrame,
    spec: &GenSpec,
    flood: Option<Flood>,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    crate::livegen::check_spec(frame, spec)?;
    let plan = Plan::new(frame, spec, flood);
    let (netns_owned, ifname_owned) = (netns.to_string(), ifname.to_string());
    crate::netns::in_netns(netns, move || {
        if let Some(cpu) = cpu {
            crate::loadgen::pin_current_thread(cpu)
                .with_context(|| format!("pinning the generator to CPU {cpu}"))?;
        }
        let ifindex = crate::netns::ifindex_here(&ifname_owned).with_context(|| {
            format!("interface {ifname_owned} not found in namespace {netns_owned}")
        })?;
        let mtu = mtu_here(&ifname_owned)?;
        let cpu_before_ns = thread_cpu_ns();
        let report = match backend {
            Backend::Ring => {
                let ring = Ring::open(ifindex, plan.stream.len(), mtu)
                    .with_context(|| format!("AF_PACKET ring on {ifname_owned} in {netns_owned}"))?;
                plan.run(&ring, &stop)
            }
            Backend::Mmsg => {
                if plan.stream.len() > mtu + 14 {
                    bail!(
                        "a {}-byte frame exceeds the interface's MTU ({mtu} + 14 bytes of Ethernet)",
                        plan.stream.len()
                    );
                }
                let fd = open_socket()?;
                bind(&fd, ifindex)?;
                plan.run_mmsg(&fd, &stop)
            }
        }
        .with_context(|| format!("{backend:?} generator on {ifname_owned} in {netns_owned}"))?;
        let frames = (report.sent + report.flood_sent).max(1);
        log::debug!(
            "ringgen ({backend:?}): {:.0} ns of generator CPU per frame",
            (thread_cpu_ns() - cpu_before_ns) as f64 / frames as f64
        );
        Ok(report)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("ring generator thread panicked"))?
}

/// What to send: the frames, the schedule, the limit.
struct Plan {
    stream: Vec<u8>,
    flood: Vec<u8>,
    /// Flood frames after each stream packet.
    flood_per_packet: u64,
    /// Between two frames (stream or flood); 0 = unpaced.
    interval_ns: u64,
    /// Stream packets to send.
    limit: u64,
    seq_base: u64,
    flows: u32,
    duration: Duration,
}

/// Counts of one run.
#[derive(Debug, Default)]
struct Tally {
    stream_sent: u64,
    flood_sent: u64,
    refused: u64,
    input_drops: u64,
    first_ns: u64,
    last_ns: u64,
}

impl Tally {
    /// Counts what the kernel left in a slot it gave back.
    fn settle(&mut self, kind: Slot, status: u32) {
        if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
            self.refused += 1;
            return;
        }
        match kind {
            Slot::Stream => self.stream_sent += 1,
            Slot::Flood => self.flood_sent += 1,
            Slot::Free => {}
        }
    }
}

impl Plan {
    fn new(frame: &LiveFrame, spec: &GenSpec, flood: Option<Flood>) -> Plan {
        let stream = frame.build();
        let flood_frame = flood.map_or_else(
            || stream.clone(),
            |f| {
                LiveFrame {
                    src: f.src,
                    ..*frame
                }
                .build()
            },
        );
        let slots = 1 + flood.map_or(0, |f| u64::from(f.per_packet));
        Plan {
            stream,
            flood: flood_frame,
            flood_per_packet: slots - 1,
            interval_ns: match spec.rate_pps.saturating_mul(slots) {
                0 => 0,
                rate => ((1_000_000_000 + rate / 2) / rate).max(1),
            },
            limit: match spec.rate_pps {
                0 => u64::MAX,
                rate => (rate as f64 * spec.duration.as_secs_f64()).round() as u64,
            },
            seq_base: u64::from(spec.trial) << SEQ_BITS,
            flows: frame.flows,
            duration: spec.duration,
        }
    }

    /// Sends until the duration passes, `stop` is set or the limit is
    /// reached (with the last packet's flood frames); then waits for the
    /// kernel to give every slot back.
    fn run(&self, ring: &Ring, stop: &AtomicBool) -> anyhow::Result<GenReport> {
        let start = Instant::now();
        let mut kinds = vec![Slot::Free; ring.frames];
        let mut tally = Tally::default();
        let mut next = 0usize; // the next slot to fill
        let mut pending = 0usize; // filled since the last kick
        let mut n = 0u64; // stream packets written
        let mut phase = 0u64; // flood frames due before the next packet
        let mut next_due = 0u64;
        let mut checks = 0u32;
        let mut now = 0u64;
        loop {
            if n >= self.limit && phase == 0 {
                break;
            }
            // Stop flag and run time every 64 frames; unpaced, the clock
            // too (its frames leave together, with the next kick).
            checks = checks.wrapping_add(1);
            if checks.is_multiple_of(64)
                && (stop.load(Ordering::Relaxed) || start.elapsed() >= self.duration)
            {
                break;
            }
            if self.interval_ns == 0 && (pending == 0 || now == 0) {
                now = monotonic_ns();
            }
            if self.interval_ns != 0 {
                now = monotonic_ns();
                if next_due == 0 || now.saturating_sub(next_due) > LAG_MAX_NS {
                    next_due = now;
                }
                if now < next_due {
                    if pending > 0 {
                        ring.kick().context("send")?;
                        pending = 0;
                    }
                    wait_until_ns(next_due);
                    now = monotonic_ns();
                }
                next_due += self.interval_ns;
            }
            // The next slot must be ours again.
            let status = ring.status(next).load(Ordering::Acquire);
            if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
                if pending > 0 {
                    ring.kick().context("send")?;
                    pending = 0;
                }
                if !self.wait_for_slot(ring, next, stop, start) {
                    break;
                }
                if self.interval_ns != 0 {
                    // The slot we waited for is not time we owe.
                    next_due = monotonic_ns() + self.interval_ns;
                }
            }
            let status = ring.status(next).load(Ordering::Acquire);
            tally.settle(kinds[next], status);
            if tally.first_ns == 0 {
                tally.first_ns = now;
            }
            tally.last_ns = now;
            if phase > 0 {
                phase -= 1;
                ring.fill(next, &self.flood, |_| {});
                kinds[next] = Slot::Flood;
            } else {
                phase = self.flood_per_packet;
                ring.fill(next, &self.stream, |data| self.stamp(data, n, now));
                kinds[next] = Slot::Stream;
                n += 1;
            }
            next = (next + 1) % ring.frames;
            pending += 1;
            if pending >= BATCH_FRAMES {
                ring.kick().context("send")?;
                pending = 0;
            }
        }
        if pending > 0 {
            ring.kick().context("send")?;
        }
        self.drain(ring, &mut kinds, &mut tally);
        Ok(self.report(&tally, start))
    }

    /// Like [`Plan::run`], from a plain `AF_PACKET` socket: batches of up
    /// to [`BATCH_FRAMES`] frames written into buffers of this thread and
    /// sent with one `sendmmsg` each (the kernel copies each frame into a
    /// linear skb).
    fn run_mmsg(&self, fd: &OwnedFd, stop: &AtomicBool) -> anyhow::Result<GenReport> {
        let start = Instant::now();
        let frame_len = self.stream.len();
        let mut bufs = vec![0u8; BATCH_FRAMES * frame_len];
        let mut kinds = [Slot::Free; BATCH_FRAMES];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_exact_mut(frame_len)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: frame_len,
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid (no name, no control).
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut tally = Tally::default();
        let mut n = 0u64;
        let mut phase = 0u64;
        let mut next_due = 0u64;
        'run: loop {
            if stop.load(Ordering::Relaxed) || start.elapsed() >= self.duration {
                break;
            }
            let mut count = 0;
            while count < BATCH_FRAMES {
                if n >= self.limit && phase == 0 {
                    break;
                }
                let mut now = monotonic_ns();
                if self.interval_ns != 0 {
                    if next_due == 0 || now.saturating_sub(next_due) > LAG_MAX_NS {
                        next_due = now;
                    }
                    if now < next_due {
                        if count > 0 {
                            break;
                        }
                        wait_until_ns(next_due);
                        now = monotonic_ns();
                    }
                    next_due += self.interval_ns;
                }
                if tally.first_ns == 0 {
                    tally.first_ns = now;
                }
                tally.last_ns = now;
                let data = &mut bufs[count * frame_len..(count + 1) * frame_len];
                if phase > 0 {
                    phase -= 1;
                    data.copy_from_slice(&self.flood);
                    kinds[count] = Slot::Flood;
                } else {
                    phase = self.flood_per_packet;
                    self.stamp(data, n, now);
                    kinds[count] = Slot::Stream;
                    n += 1;
                }
                count += 1;
            }
            if count == 0 {
                break;
            }
            let mut off = 0;
            while off < count {
                // SAFETY: msgs[off..count] point into bufs, alive and unaliased.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd.as_raw_fd(),
                        msgs[off..].as_mut_ptr(),
                        (count - off) as libc::c_uint,
                        0,
                    )
                };
                if rc > 0 {
                    for kind in &kinds[off..off + rc as usize] {
                        tally.settle(*kind, 0);
                    }
                    off += rc as usize;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // The device dropped the frame at `off` (its peer's
                    // ring was full): sent, and lost at the input, as a
                    // frame the live generator's XDP_TX could not place.
                    Some(libc::ENOBUFS) => {
                        tally.settle(kinds[off], 0);
                        tally.input_drops += 1;
                        off += 1;
                    }
                    Some(libc::EINTR) => {}
                    _ => {
                        if stop.load(Ordering::Relaxed) {
                            break 'run;
                        }
                        return Err(e).context("sendmmsg");
                    }
                }
            }
        }
        Ok(self.report(&tally, start))
    }

    /// Copies the stream frame into `data` with packet `n`'s flow, sequence
    /// number and send time `now_ns`.
    fn stamp(&self, data: &mut [u8], n: u64, now_ns: u64) {
        data.copy_from_slice(&self.stream);
        let seq = self.seq_base | (n & ((1 << SEQ_BITS) - 1));
        if self.flows > 1 {
            let flow = (n % u64::from(self.flows)) as u32;
            for (byte, f) in data[SRC_OFFSET..SRC_OFFSET + 4]
                .iter_mut()
                .zip(flow.to_be_bytes())
            {
                *byte ^= f;
            }
        }
        data[LIVE_HEADER_LEN..LIVE_HEADER_LEN + 8].copy_from_slice(&seq.to_be_bytes());
        data[LIVE_HEADER_LEN + 8..LIVE_HEADER_LEN + 16].copy_from_slice(&now_ns.to_be_bytes());
    }

    /// The report of a run that started at `start`.
    fn report(&self, tally: &Tally, start: Instant) -> GenReport {
        let slot_ns = if self.interval_ns != 0 {
            self.interval_ns
        } else {
            (tally.last_ns - tally.first_ns) / (tally.stream_sent + tally.flood_sent).max(1)
        };
        let elapsed_s = if tally.last_ns > tally.first_ns {
            (tally.last_ns - tally.first_ns + slot_ns) as f64 / 1e9
        } else {
            start.elapsed().as_secs_f64()
        };
        log::debug!(
            "ringgen: {} stream + {} flood frames, {} refused, {} dropped by the device",
            tally.stream_sent,
            tally.flood_sent,
            tally.refused,
            tally.input_drops,
        );
        GenReport {
            sent: tally.stream_sent,
            errors: tally.refused,
            elapsed_s,
            flood_sent: tally.flood_sent,
        }
    }

    /// Waits (kicking the kernel now and then) until `slot` is available;
    /// false when the run ended meanwhile.
    fn wait_for_slot(&self, ring: &Ring, slot: usize, stop: &AtomicBool, start: Instant) -> bool {
        let mut spins = 0u32;
        loop {
            let status = ring.status(slot).load(Ordering::Acquire);
            if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) == 0 {
                return true;
            }
            if stop.load(Ordering::Relaxed) || start.elapsed() >= self.duration {
                return false;
            }
            spins += 1;
            if spins.is_multiple_of(256) {
                // Requested slots left by a full send buffer go now.
                let _ = ring.kick();
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Kicks until the kernel has given back every slot (or
    /// [`DRAIN_TIMEOUT`] passes), counting each.
    fn drain(&self, ring: &Ring, kinds: &mut [Slot], tally: &mut Tally) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut busy = 0;
            for (slot, kind) in kinds.iter_mut().enumerate() {
                if *kind == Slot::Free {
                    continue;
                }
                let status = ring.status(slot).load(Ordering::Acquire);
                if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
                    busy += 1;
                    continue;
                }
                tally.settle(*kind, status);
                *kind = Slot::Free;
            }
            if busy == 0 || Instant::now() >= deadline {
                if busy > 0 {
                    log::warn!(
                        "ring generator: {busy} frames still with the kernel after {DRAIN_TIMEOUT:?}"
                    );
                }
                return;
            }
            let _ = ring.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Waits until CLOCK_MONOTONIC reaches `due_ns`: sleeps the long part,
/// spins the last [`SPIN_MAX`].
fn wait_until_ns(due_ns: u64) {
    loop {
        let now = monotonic_ns();
        if now >= due_ns {
            return;
        }
        let left = Duration::from_nanos(due_ns - now);
        if left > SPIN_MAX {
            std::thread::sleep(left - SPIN_MAX);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// CPU time of the calling thread, nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
