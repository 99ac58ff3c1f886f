//! A traffic generator that needs no live frames: an `AF_PACKET` socket with
//! a memory-mapped transmit ring (`PACKET_TX_RING`, `TPACKET_V2`) sending
//! prepared Ethernet frames out of the generator's interface, up to
//! [`SEGMENTS_MAX`] of them per ring slot as one UDP GSO super-frame that
//! the kernel cuts into frames.
//!
//! It sends the same frames as [`crate::livegen`] (the header from
//! [`LiveFrame::build`], then the payload's sequence number and
//! CLOCK_MONOTONIC send time, big endian; flows and floods alike), so the
//! sinks and the reports cannot tell the two apart. Why this generator and
//! not AF_XDP or tc `bpf_clone_redirect`: docs/benchmarks.md, "Generators
//! without live frames".
//!
//! How it runs:
//! - A thread inside the generator's namespace, pinned to a CPU when asked,
//!   owns the socket and the ring (at most [`RING_SLOTS_MAX`] slots,
//!   [`RING_BYTES`] bytes).
//! - A slot holds a `virtio_net_hdr` (`PACKET_VNET_HDR`) and a frame. One
//!   overlay packet: an ordinary frame whose header says "copy all of it
//!   into the skb" (`hdr_len`), so the skb owns its bytes (without it the
//!   kernel lends the skb the ring's page and veth copies it out again).
//!   Several: one IPv4/UDP header and the overlay packets back to back,
//!   marked `VIRTIO_NET_HDR_GSO_UDP_L4` with the overlay packet's length as
//!   the segment size and the UDP checksum left to the kernel. The kernel
//!   segments it on the generator's CPU into frames that differ from the
//!   single-packet ones only in the UDP checksum (the kernel's, complete or
//!   left to the interface's TX checksum offload, where a single frame has
//!   none) and the IPv4 identification. The socket's path (ring walk, header
//!   parsing, accounting, the slot's completion) runs once per slot instead
//!   of per frame: about half the CPU per frame.
//! - Segmenting needs the interface's own UDP segmentation off
//!   (`ethtool -K IF tx-udp-segmentation off`, which [`generate_ring`] sets
//!   on the generator's interface; otherwise veth would hand the whole
//!   super-frame to its peer) and the qdisc path (`PACKET_QDISC_BYPASS`
//!   refuses an skb that needs segmenting). Where that setting fails, and
//!   with a flood (whose frames come from another address), each slot
//!   carries one frame and the socket bypasses the qdisc.
//! - [`generate_ring`] turns TSO off on that interface too: veth hands an
//!   skb to its peer's NAPI (the peer's CPU, in the lab the relay's) only
//!   when it deems the skb eligible for GRO, which an skb not sent by a
//!   socket is only from an interface without TSO; otherwise the peer's
//!   whole receive path (a relay's forwarding, for a relay without XDP)
//!   runs in the generator's softirq and is charged to the generator.
//! - A slot is the kernel's while its status is not `TP_STATUS_AVAILABLE`:
//!   from the moment this thread sets `TP_STATUS_SEND_REQUEST` until the
//!   kernel frees the slot's skb. Slots are filled in ring order, the order
//!   the kernel sends them; `send(MSG_DONTWAIT)` hands over what is pending
//!   once [`BATCH_FRAMES`] frames are, or before the thread waits.
//! - Unpaced, every slot carries [`SEGMENTS_MAX`] frames (fewer for large
//!   frames: an IPv4 packet ends at 64 KiB). Paced, frame n is due at
//!   `n * 1e9 / rate` ns (the schedule restarts at now when more than 1 ms
//!   behind: no catch-up bursts); a slot carries the frames due when it is
//!   written, so at rates the thread keeps up with each frame goes alone,
//!   at its time.
//! - `GenReport::sent` counts stream frames the kernel took (slot status
//!   back to available, not `TP_STATUS_WRONG_FORMAT`); frames the veth
//!   could not place in its peer's ring are among them and show as the
//!   interface's `tx_dropped`. `errors` counts frames in refused slots; a
//!   failed `send` (other than a full send buffer) ends the run with its
//!   error.
//!
//! Needs CAP_NET_RAW and CAP_NET_ADMIN in the generator's namespace.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xorlay::wire::consts::OFF_SRC;
use xorlay::wire::overlay::HEADER_LEN;

use crate::livegen::{Flood, LiveFrame};
use crate::loadgen::{GenReport, GenSpec};
use crate::traffic::{clock_ns, monotonic_ns};

/// Most overlay packets (frames) per ring slot.
pub const SEGMENTS_MAX: usize = 64;
/// Most slots in the transmit ring.
pub const RING_SLOTS_MAX: usize = 4096;
/// Most bytes of ring memory.
pub const RING_BYTES: usize = 32 << 20;
/// Frames pending after which they are handed to the kernel.
pub const BATCH_FRAMES: usize = 64;
/// Smallest block of ring memory (a power of two of pages).
const BLOCK_BYTES_MIN: usize = 1 << 16;
/// Where a slot's bytes start: after the `tpacket2_hdr`, aligned (what the
/// kernel expects without `PACKET_TX_HAS_OFF`).
const DATA_OFFSET: usize = (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT
    - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);
/// Bytes of `struct virtio_net_hdr` before each frame in its slot.
const VNET_HDR_LEN: usize = 10;
/// `PACKET_VNET_HDR` of linux/if_packet.h.
const PACKET_VNET_HDR: libc::c_int = 15;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM` and `VIRTIO_NET_HDR_GSO_UDP_L4` of
/// linux/virtio_net.h.
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_UDP_L4: u8 = 5;
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
/// Bytes of Ethernet, IPv4 (no options) and UDP headers.
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const HEADERS_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// Offsets in the frame: IPv4 total length, checksum, addresses; UDP
/// length and checksum.
const IP_TOTAL_LEN: usize = ETH_LEN + 2;
const IP_CHECKSUM: usize = ETH_LEN + 10;
const IP_ADDRS: std::ops::Range<usize> = ETH_LEN + 12..ETH_LEN + 20;
const UDP_LEN_AT: usize = ETH_LEN + IPV4_LEN + 4;
const UDP_CHECKSUM: usize = ETH_LEN + IPV4_LEN + 6;
/// Offsets in an overlay packet: the source ID, the stamp.
const SRC_IN_PACKET: usize = OFF_SRC;
const SEQ_IN_PACKET: usize = HEADER_LEN;
const TIME_IN_PACKET: usize = HEADER_LEN + 8;
/// Largest IPv4 packet.
const IP_PACKET_MAX: usize = u16::MAX as usize;

const _: () = assert!(DATA_OFFSET == 32);
const _: () = assert!(SRC_IN_PACKET + 4 <= HEADER_LEN);

/// How an `AF_PACKET` generator hands frames to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The memory-mapped transmit ring, up to [`SEGMENTS_MAX`] frames per
    /// slot as a UDP GSO super-frame (the benchmark's generator).
    Ring,
    /// The same ring, one frame per slot, qdisc bypassed (kept as a
    /// candidate for `xorlay-bench gen-eval`).
    RingSingle,
    /// `sendmmsg` of up to [`BATCH_FRAMES`] frames from buffers of the
    /// thread, qdisc bypassed (a `gen-eval` candidate).
    Mmsg,
}

/// What a slot holds, to count it when the kernel gives it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    stream: u32,
    flood: u32,
}

/// The socket, its mapped ring and the ring's geometry. Dropping it unmaps
/// the ring and closes the socket.
struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    block_size: usize,
    frame_size: usize,
    slots: usize,
    slots_per_block: usize,
    /// Largest frame (or super-frame) a slot takes.
    data_max: usize,
}

impl Ring {
    /// Opens the socket on interface `ifindex` (in the calling thread's
    /// namespace) with a ring whose slots take `data_max` bytes of frame,
    /// bypassing the qdisc when `bypass`.
    fn open(ifindex: u32, data_max: usize, bypass: bool) -> anyhow::Result<Ring> {
        let frame_size =
            (DATA_OFFSET + VNET_HDR_LEN + data_max).next_multiple_of(libc::TPACKET_ALIGNMENT);
        let block_size = BLOCK_BYTES_MIN.max(frame_size.next_power_of_two());
        let slots_per_block = block_size / frame_size;
        let blocks = (RING_BYTES / block_size)
            .min(RING_SLOTS_MAX.div_ceil(slots_per_block))
            .max(1);
        let slots = blocks * slots_per_block;

        let fd = open_socket(bypass)?;
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
            tp_frame_nr: u32::try_from(slots).context("frame count")?,
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
            slots,
            slots_per_block,
            data_max,
        };
        bind(&ring.fd, ifindex)?;
        Ok(ring)
    }

    /// The slot's header.
    fn header(&self, slot: usize) -> *mut libc::tpacket2_hdr {
        debug_assert!(slot < self.slots);
        let offset = (slot / self.slots_per_block) * self.block_size
            + (slot % self.slots_per_block) * self.frame_size;
        debug_assert!(offset + self.frame_size <= self.map_len);
        // SAFETY: offset lies within the mapping (slot < slots).
        unsafe { self.base.add(offset).cast() }
    }

    /// The slot's status word, shared with the kernel.
    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the first field, a 4-byte aligned u32 inside
        // the mapping; the kernel reads and writes it concurrently, hence
        // the atomic view.
        unsafe { &*(std::ptr::addr_of_mut!((*self.header(slot)).tp_status) as *const AtomicU32) }
    }

    /// Is the slot the kernel's (requested or being sent)?
    fn busy(&self, slot: usize) -> bool {
        self.status(slot).load(Ordering::Acquire)
            & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING)
            != 0
    }

    /// Writes `len` bytes of frame into `slot` (which must be available)
    /// with `write`, then the virtio header it returns, and hands the slot
    /// to the kernel.
    fn fill(&self, slot: usize, len: usize, write: impl FnOnce(&mut [u8]) -> [u8; VNET_HDR_LEN]) {
        debug_assert!(len <= self.data_max);
        let header = self.header(slot);
        // SAFETY: the slot is this thread's (status available): the kernel
        // does not touch its bytes until the status says SEND_REQUEST; the
        // bytes lie within the slot (frame_size >= DATA_OFFSET +
        // VNET_HDR_LEN + data_max).
        unsafe {
            let bytes = std::slice::from_raw_parts_mut(
                header.cast::<u8>().add(DATA_OFFSET),
                VNET_HDR_LEN + len,
            );
            let (head, frame) = bytes.split_at_mut(VNET_HDR_LEN);
            let vnet = write(frame);
            head.copy_from_slice(&vnet);
            (*header).tp_len = (VNET_HDR_LEN + len) as u32;
            (*header).tp_snaplen = (VNET_HDR_LEN + len) as u32;
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
            // EAGAIN/ENOBUFS: the send buffer is full of skbs in flight, or
            // the device dropped one; the rest stay requested and go with
            // the next call.
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

/// A raw `AF_PACKET` socket with a send buffer for every frame in flight,
/// bypassing the qdisc when `bypass`. Needs CAP_NET_RAW (and CAP_NET_ADMIN
/// for the buffer).
fn open_socket(bypass: bool) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error())
            .context("socket(AF_PACKET) (needs CAP_NET_RAW)");
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if bypass {
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &(1 as libc::c_int),
        )
        .context("PACKET_QDISC_BYPASS")?;
    }
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

/// Turns the UDP segmentation offload of `ifname` in `netns` off, so that
/// the kernel cuts the generator's super-frames into frames before the
/// interface, and TSO, so that veth hands the frames to its peer's NAPI
/// (`ethtool -K`; see the module's doc); checks that USO is off.
fn segment_before(netns: &str, ifname: &str) -> anyhow::Result<()> {
    let ethtool = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", netns, "ethtool"];
        all.extend_from_slice(args);
        let out = crate::netns::run("ip", &all)?;
        if !out.status.success() {
            bail!(
                "ethtool {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ethtool(&["-K", ifname, "tx-udp-segmentation", "off", "tso", "off"])?;
    let features = ethtool(&["-k", ifname])?;
    if features
        .lines()
        .any(|l| l.trim().starts_with("tx-udp-segmentation: on"))
    {
        bail!("{ifname}: tx-udp-segmentation stays on");
    }
    Ok(())
}

/// Runs `spec` in namespace `netns`, sending out of interface `ifname` from
/// an `AF_PACKET` transmit ring, the thread pinned to `cpu` when given;
/// blocks until `spec.duration` passes, `stop` is set or the stream's
/// packets are all out. The arguments and the report mean what they mean
/// for [`crate::livegen::generate_live_flooded`]. Turns the interface's UDP
/// segmentation offload off (see the module's doc).
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
    let mut plan = Plan::new(frame, spec, flood);
    if backend == Backend::Ring && flood.is_none() {
        match segment_before(netns, ifname) {
            Ok(()) => plan.segments_max = plan.segments_fit(),
            Err(e) => log::warn!(
                "ring generator: one frame per slot ({e:#}): the interface cannot segment"
            ),
        }
    }
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
        if plan.stream.len() > mtu + ETH_LEN {
            bail!(
                "a {}-byte frame exceeds the interface's MTU ({mtu} + {ETH_LEN} bytes of Ethernet)",
                plan.stream.len()
            );
        }
        let cpu_before_ns = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        let report = match backend {
            Backend::Ring | Backend::RingSingle => {
                let ring = Ring::open(
                    ifindex,
                    plan.slot_len(plan.segments_max),
                    plan.segments_max == 1,
                )
                .with_context(|| format!("AF_PACKET ring on {ifname_owned} in {netns_owned}"))?;
                plan.run(&ring, &stop)
            }
            Backend::Mmsg => {
                let fd = open_socket(true)?;
                bind(&fd, ifindex)?;
                plan.run_mmsg(&fd, &stop)
            }
        }
        .with_context(|| format!("{backend:?} generator on {ifname_owned} in {netns_owned}"))?;
        let frames = (report.sent + report.flood_sent).max(1);
        log::debug!(
            "ringgen ({backend:?}, up to {} frames a slot): {:.0} ns of generator CPU per frame",
            plan.segments_max,
            (clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) - cpu_before_ns) as f64 / frames as f64
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
    /// Most frames in one slot (1: no segmentation).
    segments_max: usize,
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
    fn settle(&mut self, slot: Slot, status: u32) {
        if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
            self.refused += u64::from(slot.stream + slot.flood);
            return;
        }
        self.stream_sent += u64::from(slot.stream);
        self.flood_sent += u64::from(slot.flood);
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
            segments_max: 1,
        }
    }

    /// Bytes of one overlay packet (a segment of a super-frame).
    fn packet_len(&self) -> usize {
        self.stream.len() - HEADERS_LEN
    }

    /// Most frames one IPv4 packet carries as segments, up to
    /// [`SEGMENTS_MAX`].
    fn segments_fit(&self) -> usize {
        ((IP_PACKET_MAX - IPV4_LEN - UDP_LEN) / self.packet_len()).clamp(1, SEGMENTS_MAX)
    }

    /// Bytes of a slot's frame carrying `segments` overlay packets.
    fn slot_len(&self, segments: usize) -> usize {
        HEADERS_LEN + segments * self.packet_len()
    }

    /// Writes stream packet `n` (its flow, sequence number and send time
    /// `now_ns`) over `packet`, a copy of the stream frame's overlay packet.
    fn stamp(&self, packet: &mut [u8], n: u64, now_ns: u64) {
        if self.flows > 1 {
            let flow = (n % u64::from(self.flows)) as u32;
            for (byte, f) in packet[SRC_IN_PACKET..SRC_IN_PACKET + 4]
                .iter_mut()
                .zip(flow.to_be_bytes())
            {
                *byte ^= f;
            }
        }
        let seq = self.seq_base | (n & ((1 << SEQ_BITS) - 1));
        packet[SEQ_IN_PACKET..SEQ_IN_PACKET + 8].copy_from_slice(&seq.to_be_bytes());
        packet[TIME_IN_PACKET..TIME_IN_PACKET + 8].copy_from_slice(&now_ns.to_be_bytes());
    }

    /// Writes into `frame` stream packets `first ..` as one frame
    /// (`count` 1) or a super-frame of `count` segments, and returns the
    /// virtio header that goes with it.
    fn write_stream(
        &self,
        frame: &mut [u8],
        first: u64,
        count: usize,
        now_ns: u64,
    ) -> [u8; VNET_HDR_LEN] {
        let packet_len = self.packet_len();
        frame[..HEADERS_LEN].copy_from_slice(&self.stream[..HEADERS_LEN]);
        for (i, packet) in frame[HEADERS_LEN..]
            .chunks_exact_mut(packet_len)
            .take(count)
            .enumerate()
        {
            packet.copy_from_slice(&self.stream[HEADERS_LEN..]);
            self.stamp(packet, first + i as u64, now_ns);
        }
        if count == 1 {
            return single_vnet(frame.len());
        }
        super_frame_headers(frame, packet_len)
    }

    /// Sends until the duration passes, `stop` is set or the limit is
    /// reached (with the last packet's flood frames); then waits for the
    /// kernel to give every slot back.
    fn run(&self, ring: &Ring, stop: &AtomicBool) -> anyhow::Result<GenReport> {
        let start = Instant::now();
        let mut slots = vec![Slot::default(); ring.slots];
        let mut tally = Tally::default();
        let mut next = 0usize; // the next slot to fill
        let mut pending = 0usize; // frames filled since the last kick
        let mut n = 0u64; // stream packets written
        let mut phase = 0u64; // flood frames due before the next packet
        let mut next_due = 0u64;
        let mut checks = 0u32;
        let mut now = 0u64;
        loop {
            if n >= self.limit && phase == 0 {
                break;
            }
            // Stop flag and run time every 64 slots.
            checks = checks.wrapping_add(1);
            if checks.is_multiple_of(64)
                && (stop.load(Ordering::Relaxed) || start.elapsed() >= self.duration)
            {
                break;
            }
            // The next slot must be ours again.
            if ring.busy(next) {
                if pending > 0 {
                    ring.kick().context("send")?;
                    pending = 0;
                }
                if !self.wait_for_slot(ring, next, stop, start) {
                    break;
                }
                if self.interval_ns != 0 {
                    // The slot we waited for is not time we owe.
                    next_due = next_due.max(monotonic_ns());
                }
            }
            tally.settle(slots[next], ring.status(next).load(Ordering::Acquire));
            // Unpaced, one clock read per batch: its frames leave together.
            if self.interval_ns != 0 || pending == 0 || now == 0 {
                now = monotonic_ns();
            }
            let due = self.due_frames(ring, &mut pending, &mut now, &mut next_due)?;
            if tally.first_ns == 0 {
                tally.first_ns = now;
            }
            tally.last_ns = now;
            let filled = self.fill_slot(ring, next, due, now, &mut n, &mut phase);
            let frames = (filled.stream + filled.flood) as usize;
            if self.interval_ns != 0 {
                next_due += frames as u64 * self.interval_ns;
            }
            slots[next] = filled;
            next = (next + 1) % ring.slots;
            pending += frames;
            if pending >= BATCH_FRAMES {
                ring.kick().context("send")?;
                pending = 0;
            }
        }
        if pending > 0 {
            ring.kick().context("send")?;
        }
        self.drain(ring, &mut slots, &mut tally);
        Ok(self.report(&tally, start))
    }

    /// Frames due now, at most one slot's. Paced, it first restarts the
    /// schedule after a lag over [`LAG_MAX_NS`], and waits until `next_due`
    /// if that is still ahead (kicking the `pending` frames before it
    /// sleeps); `now` is then read again.
    fn due_frames(
        &self,
        ring: &Ring,
        pending: &mut usize,
        now: &mut u64,
        next_due: &mut u64,
    ) -> anyhow::Result<u64> {
        let mut due = self.segments_max as u64;
        if self.interval_ns != 0 {
            if *next_due == 0 || now.saturating_sub(*next_due) > LAG_MAX_NS {
                *next_due = *now;
            }
            if *now < *next_due {
                if *pending > 0 {
                    ring.kick().context("send")?;
                    *pending = 0;
                }
                wait_until_ns(*next_due);
                *now = monotonic_ns();
            }
            let behind = (*now - *next_due)
                .checked_div(self.interval_ns)
                .unwrap_or(0);
            due = due.min(1 + behind);
        }
        Ok(due)
    }

    /// Fills ring slot `next`: a flood frame while `phase` counts some due,
    /// else stream packets from number `n` on (up to `due`, as one
    /// super-frame), stamped `now`; advances `phase` and `n`. Returns what
    /// the slot holds.
    fn fill_slot(
        &self,
        ring: &Ring,
        next: usize,
        due: u64,
        now: u64,
        n: &mut u64,
        phase: &mut u64,
    ) -> Slot {
        if *phase > 0 {
            *phase -= 1;
            ring.fill(next, self.flood.len(), |f| {
                f.copy_from_slice(&self.flood);
                single_vnet(f.len())
            });
            Slot {
                stream: 0,
                flood: 1,
            }
        } else {
            *phase = self.flood_per_packet;
            let first = *n;
            let count = due.min(self.limit - first).max(1) as usize;
            let len = self.slot_len(count);
            ring.fill(next, len, |f| self.write_stream(f, first, count, now));
            *n += count as u64;
            Slot {
                stream: count as u32,
                flood: 0,
            }
        }
    }

    /// Like [`Plan::run`], from a plain `AF_PACKET` socket: batches of up
    /// to [`BATCH_FRAMES`] frames written into buffers of this thread and
    /// sent with one `sendmmsg` each (the kernel copies each frame into a
    /// linear skb).
    fn run_mmsg(&self, fd: &OwnedFd, stop: &AtomicBool) -> anyhow::Result<GenReport> {
        let start = Instant::now();
        let frame_len = self.stream.len();
        let mut bufs = vec![0u8; BATCH_FRAMES * frame_len];
        let mut kinds = [Slot::default(); BATCH_FRAMES];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_exact_mut(frame_len)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: frame_len,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is valid (no name, no control).
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
        loop {
            if stop.load(Ordering::Relaxed) || start.elapsed() >= self.duration {
                break;
            }
            let count = self.fill_batch(
                &mut bufs,
                &mut kinds,
                &mut tally,
                &mut n,
                &mut phase,
                &mut next_due,
            );
            if count == 0 {
                break;
            }
            if !send_batch(fd, &mut msgs[..count], &kinds[..count], &mut tally, stop)? {
                break;
            }
        }
        Ok(self.report(&tally, start))
    }

    /// Writes the next frames of [`Plan::run_mmsg`] into `bufs` (a frame
    /// each, up to [`BATCH_FRAMES`]) and what each is into `kinds`: flood
    /// frames while `phase` counts some due, else stream packet `n`. Paced,
    /// it waits for the first frame's time and ends the batch at a frame
    /// not yet due. Returns how many it wrote (0: the limit is reached).
    fn fill_batch(
        &self,
        bufs: &mut [u8],
        kinds: &mut [Slot; BATCH_FRAMES],
        tally: &mut Tally,
        n: &mut u64,
        phase: &mut u64,
        next_due: &mut u64,
    ) -> usize {
        let frame_len = self.stream.len();
        let mut count = 0;
        while count < BATCH_FRAMES {
            if *n >= self.limit && *phase == 0 {
                break;
            }
            let mut now = monotonic_ns();
            if self.interval_ns != 0 {
                if *next_due == 0 || now.saturating_sub(*next_due) > LAG_MAX_NS {
                    *next_due = now;
                }
                if now < *next_due {
                    if count > 0 {
                        break;
                    }
                    wait_until_ns(*next_due);
                    now = monotonic_ns();
                }
                *next_due += self.interval_ns;
            }
            if tally.first_ns == 0 {
                tally.first_ns = now;
            }
            tally.last_ns = now;
            let data = &mut bufs[count * frame_len..(count + 1) * frame_len];
            if *phase > 0 {
                *phase -= 1;
                data.copy_from_slice(&self.flood);
                kinds[count] = Slot {
                    stream: 0,
                    flood: 1,
                };
            } else {
                *phase = self.flood_per_packet;
                data.copy_from_slice(&self.stream);
                self.stamp(&mut data[HEADERS_LEN..], *n, now);
                kinds[count] = Slot {
                    stream: 1,
                    flood: 0,
                };
                *n += 1;
            }
            count += 1;
        }
        count
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
            if !ring.busy(slot) {
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
    fn drain(&self, ring: &Ring, slots: &mut [Slot], tally: &mut Tally) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut busy = 0;
            for (i, slot) in slots.iter_mut().enumerate() {
                if *slot == Slot::default() {
                    continue;
                }
                if ring.busy(i) {
                    busy += 1;
                    continue;
                }
                tally.settle(*slot, ring.status(i).load(Ordering::Acquire));
                *slot = Slot::default();
            }
            if busy == 0 || Instant::now() >= deadline {
                if busy > 0 {
                    log::warn!(
                        "ring generator: {busy} slots still with the kernel after {DRAIN_TIMEOUT:?}"
                    );
                }
                return;
            }
            let _ = ring.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The virtio header of a slot carrying one frame of `len` bytes: no
/// offload, the whole frame copied into the skb.
fn single_vnet(len: usize) -> [u8; VNET_HDR_LEN] {
    let mut vnet = [0; VNET_HDR_LEN];
    // hdr_len, little endian (virtio 1.0); len fits: frames are at most a
    // slot's length, checked against the MTU.
    vnet[2..4].copy_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_le_bytes());
    vnet
}

/// Completes the headers of a super-frame (Ethernet, IPv4 and UDP from a
/// single frame, then whole overlay packets of `packet_len` bytes): IPv4
/// total length and checksum, UDP length, and in the UDP checksum field the
/// pseudo-header sum the kernel completes per segment; returns its virtio
/// header (UDP GSO, segment size `packet_len`).
fn super_frame_headers(frame: &mut [u8], packet_len: usize) -> [u8; VNET_HDR_LEN] {
    debug_assert!(frame.len() - ETH_LEN <= IP_PACKET_MAX);
    let ip_len = (frame.len() - ETH_LEN) as u16;
    let udp_len = ip_len - IPV4_LEN as u16;
    frame[IP_TOTAL_LEN..IP_TOTAL_LEN + 2].copy_from_slice(&ip_len.to_be_bytes());
    frame[IP_CHECKSUM..IP_CHECKSUM + 2].fill(0);
    let ip_sum = !fold(sum_words(&frame[ETH_LEN..ETH_LEN + IPV4_LEN]));
    frame[IP_CHECKSUM..IP_CHECKSUM + 2].copy_from_slice(&ip_sum.to_be_bytes());
    frame[UDP_LEN_AT..UDP_LEN_AT + 2].copy_from_slice(&udp_len.to_be_bytes());
    let pseudo =
        sum_words(&frame[IP_ADDRS]) + u32::from(libc::IPPROTO_UDP as u16) + u32::from(udp_len);
    frame[UDP_CHECKSUM..UDP_CHECKSUM + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    let mut vnet = [0; VNET_HDR_LEN];
    vnet[0] = VNET_F_NEEDS_CSUM;
    vnet[1] = VNET_GSO_UDP_L4;
    let le = |v: usize| (v as u16).to_le_bytes();
    vnet[2..4].copy_from_slice(&le(HEADERS_LEN)); // hdr_len
    vnet[4..6].copy_from_slice(&le(packet_len)); // gso_size
    vnet[6..8].copy_from_slice(&le(ETH_LEN + IPV4_LEN)); // csum_start
    vnet[8..10].copy_from_slice(&le(6)); // csum_offset: UDP's checksum
    vnet
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words, unfolded.
fn sum_words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum()
}

/// Folds a one's-complement sum to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
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

/// Sends the batch of frames `msgs` (what each is in `kinds`) with
/// `sendmmsg` until every frame is sent or dropped by the device (counted
/// as an input drop); counts them in `tally`. Returns false when a send
/// failed because `stop` was set.
fn send_batch(
    fd: &OwnedFd,
    msgs: &mut [libc::mmsghdr],
    kinds: &[Slot],
    tally: &mut Tally,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    let count = msgs.len();
    let mut off = 0;
    while off < count {
        // SAFETY: msgs[off..] point (through their iovecs) into the
        // caller's frame buffers, alive and unaliased.
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
                    return Ok(false);
                }
                return Err(e).context("sendmmsg");
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use xorlay::core::NodeId;

    use super::*;

    fn plan(payload_len: usize, flows: u32) -> Plan {
        let frame = LiveFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 1), 9001),
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 2), 9000),
            overlay_src: NodeId::from_bytes([0x5a; 32]),
            overlay_dst: NodeId::from_bytes([0xa5; 32]),
            payload_len,
            flows,
        };
        let spec = GenSpec {
            src: frame.overlay_src,
            dst: frame.overlay_dst,
            payload_len,
            rate_pps: 0,
            duration: Duration::from_secs(1),
            trial: 3,
        };
        Plan::new(&frame, &spec, None)
    }

    /// What the kernel makes of a super-frame: segment i is the header with
    /// lengths and checksums of one packet, then packet i.
    fn segment(frame: &[u8], packet_len: usize, i: usize) -> Vec<u8> {
        let mut one = frame[..HEADERS_LEN].to_vec();
        one.extend_from_slice(&frame[HEADERS_LEN + i * packet_len..][..packet_len]);
        one
    }

    #[test]
    fn a_single_frame_is_the_template_stamped() {
        let p = plan(16, 1);
        let mut frame = vec![0xa5; p.slot_len(1)];
        let vnet = p.write_stream(&mut frame, 7, 1, 0x1122);
        assert_eq!(
            frame[..SEQ_IN_PACKET + HEADERS_LEN],
            p.stream[..SEQ_IN_PACKET + HEADERS_LEN]
        );
        let packet = &frame[HEADERS_LEN..];
        assert_eq!(
            packet[SEQ_IN_PACKET..SEQ_IN_PACKET + 8],
            ((3u64 << 40) | 7).to_be_bytes()
        );
        assert_eq!(
            packet[TIME_IN_PACKET..TIME_IN_PACKET + 8],
            0x1122u64.to_be_bytes()
        );
        assert_eq!(vnet[..2], [0, 0], "no checksum offload, no GSO");
        assert_eq!(
            usize::from(u16::from_le_bytes([vnet[2], vnet[3]])),
            frame.len()
        );
        assert_eq!(
            frame[UDP_CHECKSUM..UDP_CHECKSUM + 2],
            [0, 0],
            "no UDP checksum"
        );
    }

    #[test]
    fn a_super_frame_has_consistent_headers_and_packets_in_order() {
        let p = plan(16, 300);
        let count = 5;
        let mut frame = vec![0xa5; p.slot_len(count)];
        let vnet = p.write_stream(&mut frame, 298, count, 99);
        let packet_len = p.packet_len();
        assert_eq!((vnet[0], vnet[1]), (VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4));
        let le = |i: usize| usize::from(u16::from_le_bytes([vnet[i], vnet[i + 1]]));
        assert_eq!(
            (le(2), le(4), le(6), le(8)),
            (HEADERS_LEN, packet_len, 34, 6)
        );
        // IPv4: total length of the whole, checksum verifies.
        let ip = &frame[ETH_LEN..ETH_LEN + IPV4_LEN];
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            frame.len() - ETH_LEN
        );
        assert_eq!(fold(sum_words(ip)), 0xffff, "IPv4 header checksum verifies");
        // UDP: the pseudo-header sum over the whole datagram.
        let udp_len = frame.len() - ETH_LEN - IPV4_LEN;
        assert_eq!(
            usize::from(u16::from_be_bytes([
                frame[UDP_LEN_AT],
                frame[UDP_LEN_AT + 1]
            ])),
            udp_len
        );
        let pseudo = fold(sum_words(&frame[IP_ADDRS]) + 17 + udp_len as u32);
        assert_eq!(frame[UDP_CHECKSUM..UDP_CHECKSUM + 2], pseudo.to_be_bytes());
        // Each segment carries the next packet, its flow, and its stamp.
        for i in 0..count {
            let seg = segment(&frame, packet_len, i);
            let n = 298 + i as u64;
            let packet = &seg[HEADERS_LEN..];
            assert_eq!(
                packet[..SRC_IN_PACKET],
                p.stream[HEADERS_LEN..HEADERS_LEN + SRC_IN_PACKET]
            );
            let flow = (n % 300) as u32;
            let mut src = [0x5a; 4];
            for (b, f) in src.iter_mut().zip(flow.to_be_bytes()) {
                *b ^= f;
            }
            assert_eq!(
                packet[SRC_IN_PACKET..SRC_IN_PACKET + 4],
                src,
                "flow of packet {n}"
            );
            assert_eq!(
                packet[SEQ_IN_PACKET..SEQ_IN_PACKET + 8],
                ((3u64 << 40) | n).to_be_bytes()
            );
            assert_eq!(
                packet[TIME_IN_PACKET..TIME_IN_PACKET + 8],
                99u64.to_be_bytes()
            );
        }
    }

    #[test]
    fn segments_fit_one_ipv4_packet() {
        assert_eq!(plan(16, 1).segments_fit(), SEGMENTS_MAX);
        let big = plan(1400, 1);
        let fit = big.segments_fit();
        assert!(fit < SEGMENTS_MAX);
        assert!(big.slot_len(fit) - ETH_LEN <= IP_PACKET_MAX);
        assert!(big.slot_len(fit + 1) - ETH_LEN > IP_PACKET_MAX);
    }
}
