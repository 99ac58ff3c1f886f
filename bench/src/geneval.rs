//! Candidate replacements for the live-frames generator ([`crate::livegen`],
//! refused with EPERM where the capability bounding set lacks
//! CAP_SYS_RESOURCE), measured side by side by `xorlay-bench gen-eval`.
//!
//! Each candidate sends the same 134-byte frame (Ethernet with FCS, IPv4,
//! UDP, the 72-byte overlay header and the 16-byte stamp:
//! [`LiveFrame::build`]) unpaced out of one veth of a pair, the generator
//! thread pinned to one CPU; the XDP counting sink ([`XdpSink`]) counts and
//! drops on the other end, its NAPI thread pinned to another CPU.
//!
//! - [`Candidate::Afxdp`]: an AF_XDP socket bound in copy mode (`XDP_COPY`;
//!   veth has no zero-copy), transmit ring only, raw `libc` calls
//!   ([`generate_afxdp`]). Every frame is written into its UMEM chunk with
//!   its own sequence number and time.
//! - [`Candidate::TcClone`] and [`Candidate::TcCloneDistinct`]: seed frames
//!   from an AF_PACKET socket, each multiplied [`CLONES_PER_SEED`] times at
//!   the interface's tc egress with `bpf_clone_redirect`
//!   (`bench/ebpf/clonegen.bpf.c`, [`generate_tc_clone`]). Plain clones
//!   share the seed's data, hence its sequence number: the sink counts all
//!   but one of each seed's clones as duplicates. The distinct variant
//!   writes a fresh stamp before each clone, which unclones (copies) the
//!   seed's data every time.
//! - [`Candidate::Socket`]: the `sendmmsg` generator of
//!   [`crate::loadgen::generate_in`] on a UDP socket, the floor.
//!
//! A generator's `sent` counts the frames it handed to its interface:
//! AF_XDP completions, `bpf_clone_redirect` calls, datagrams `sendmmsg`
//! accepted. `errors` counts, for AF_XDP and tc, those the veth refused (its
//! peer's ring was full: one `EBUSY` per frame from the AF_XDP kick, a
//! nonzero return from `bpf_clone_redirect`); the UDP path hides a refusal
//! (its `errors` are failed calls). `sent - errors` is what the veth took,
//! and the sink's count is the truth about delivery.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aya::maps::{MapData, PerCpuArray};
use aya::programs::tc::{self, NlOptions, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use xorlay::core::NodeId;

use crate::livegen::{LIVE_HEADER_LEN, LiveFrame};
use crate::loadgen::{self, GenReport, GenSpec};
use crate::netns::{self, ip};
use crate::systems::SINK_NAPI_PRIORITY;
use crate::traffic::{STAMP_LEN, monotonic_ns};
use crate::xdpsink::XdpSink;

/// The compiled clone generator.
static CLONEGEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clonegen.bpf.o"));

/// Frame length the candidates send, Ethernet FCS included.
pub const FRAME_LEN: usize = 134;
/// Clones of each seed frame in the tc candidates.
pub const CLONES_PER_SEED: u32 = 64;
/// Most clones per seed the program makes (`CG_COPIES_MAX`).
const CLONES_MAX: u32 = 256;
/// SO_MARK of the seed frames (`CG_SEED_MARK`, "xlcs"): the program
/// multiplies only these.
const SEED_MARK: u32 = 0x786c_6373;
/// Seed frames per `sendmmsg` of the tc candidates.
const SEEDS_PER_CALL: usize = 16;
/// Bits of the sequence number that count packets (see `loadgen`).
const SEQ_BITS: u32 = 40;
/// Counter indexes of `struct cg_stats`.
const CG_SEEDS: usize = 0;
const CG_CLONED: usize = 1;
const CG_FAILED: usize = 2;
const CG_STORE_FAILED: usize = 3;
const CG_COUNTERS: usize = 4;

/// UMEM chunk size (one frame per chunk).
const XSK_CHUNK_LEN: usize = 2048;
/// UMEM chunks.
const XSK_CHUNKS: usize = 4096;
/// Entries of the transmit and completion rings.
const XSK_RING_LEN: u32 = 2048;
/// Entries of the fill ring (unused: transmit only, but the kernel wants one).
const XSK_FILL_LEN: u32 = 64;
/// Most descriptors queued per kick (the kernel transmits up to 32 per
/// kick in copy mode).
const XSK_BATCH: u32 = 64;
/// Kicks after the run to collect outstanding completions.
const XSK_DRAIN_KICKS: u32 = 10_000;

/// Addresses and names of the evaluation pair.
const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const SINK_PORT: u16 = 9000;
/// The generator's interface.
pub const GEN_DEV: &str = "ge0";
/// The sink's interface.
pub const SINK_DEV: &str = "ge1";
/// Packet numbers the sink checks for duplicates.
const SINK_CAPACITY: u64 = 1 << 26;
/// How long the sink may take to count what is still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The sink's count has settled when it stands still this long.
const DRAIN_STILL: Duration = Duration::from_millis(100);

/// `struct cg_cfg` of the C program.
#[repr(C)]
#[derive(Clone, Copy)]
struct CgConfig {
    ifindex: u32,
    copies: u32,
    distinct: u32,
    stamp_off: u32,
    seq_base: u64,
}

const _: () = assert!(size_of::<CgConfig>() == 24);

// SAFETY: repr(C), no implicit padding (pinned above), every bit pattern valid.
unsafe impl aya::Pod for CgConfig {}

/// `struct cg_stats` of the C program.
#[repr(C)]
#[derive(Clone, Copy)]
struct CgStats {
    counters: [u64; CG_COUNTERS],
}

const _: () = assert!(size_of::<CgStats>() == 32);

// SAFETY: repr(C), four u64, every bit pattern valid.
unsafe impl aya::Pod for CgStats {}

/// A generator under evaluation. Adding one is one variant here (its
/// command-line name is the variant's in kebab case) and one arm in
/// [`Candidate::generate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Candidate {
    /// AF_PACKET transmit ring, up to 64 frames a slot as one UDP GSO
    /// super-frame (`ringgen`, the benchmark's generator where live frames
    /// are refused).
    Ring,
    /// The same ring, one frame a slot, qdisc bypassed.
    RingSingle,
    /// AF_PACKET `sendmmsg` with qdisc bypass (`ringgen`'s other backend).
    PacketMmsg,
    /// AF_XDP in copy mode, transmit ring only.
    Afxdp,
    /// tc egress program cloning each seed frame (identical copies).
    TcClone,
    /// The same, with a fresh sequence number written before each clone.
    TcCloneDistinct,
    /// `sendmmsg` on a UDP socket.
    Socket,
}

impl Candidate {
    /// Every candidate, in declaration order (the default list).
    pub fn all() -> Vec<Candidate> {
        <Candidate as clap::ValueEnum>::value_variants().to_vec()
    }

    /// The name on the command line (the variant's in kebab case).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }

    /// Runs this generator out of the pair's generator interface.
    pub fn generate(
        self,
        pair: &Pair,
        frame: &LiveFrame,
        spec: &GenSpec,
        cpu: Option<usize>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<GenReport> {
        let ns = &pair.gen_ns;
        match self {
            Candidate::Ring | Candidate::RingSingle | Candidate::PacketMmsg => {
                let backend = match self {
                    Candidate::RingSingle => crate::ringgen::Backend::RingSingle,
                    Candidate::PacketMmsg => crate::ringgen::Backend::Mmsg,
                    _ => crate::ringgen::Backend::Ring,
                };
                crate::ringgen::generate_packet(backend, ns, GEN_DEV, frame, spec, None, cpu, stop)
            }
            Candidate::Afxdp => generate_afxdp(ns, GEN_DEV, frame, spec, cpu, stop),
            Candidate::TcClone => {
                generate_tc_clone(ns, GEN_DEV, frame, spec, CloneMode::Plain, cpu, stop)
            }
            Candidate::TcCloneDistinct => {
                generate_tc_clone(ns, GEN_DEV, frame, spec, CloneMode::Distinct, cpu, stop)
            }
            Candidate::Socket => loadgen::generate_in(
                ns,
                SocketAddr::V4(frame.src),
                SocketAddr::V4(frame.dst),
                *spec,
                cpu,
                stop,
            ),
        }
    }
}

/// Two namespaces (`xl<pid>xevgen`, `xl<pid>xevsink`: `xorlay-bench clean`
/// removes them once this process is gone) joined by one veth pair,
/// [`GEN_DEV`] to [`SINK_DEV`]. Removed on drop; a failed [`Pair::new`]
/// removes what it made.
#[derive(Debug)]
pub struct Pair {
    /// The generator's namespace.
    pub gen_ns: String,
    /// The sink's namespace.
    pub sink_ns: String,
}

impl Pair {
    /// Creates the namespaces and the veth pair, addresses in 198.18.200.0/24,
    /// both ends up.
    pub fn new() -> anyhow::Result<Pair> {
        let pid = std::process::id();
        let pair = Pair {
            gen_ns: format!("xl{pid}xevgen"),
            sink_ns: format!("xl{pid}xevsink"),
        };
        for ns in [&pair.gen_ns, &pair.sink_ns] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Created inside the namespaces: the host never sees these links.
        ip(&[
            "-n",
            &pair.gen_ns,
            "link",
            "add",
            GEN_DEV,
            "type",
            "veth",
            "peer",
            "name",
            SINK_DEV,
            "netns",
            &pair.sink_ns,
        ])?;
        for (ns, dev, addr) in [
            (&pair.gen_ns, GEN_DEV, GEN_ADDR),
            (&pair.sink_ns, SINK_DEV, SINK_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        let up = crate::wait_until(Duration::from_secs(5), || {
            [(&pair.gen_ns, GEN_DEV), (&pair.sink_ns, SINK_DEV)]
                .iter()
                .all(|(ns, dev)| {
                    ip(&["-n", ns, "-br", "link", "show", "dev", dev])
                        .is_ok_and(|out| out.contains(" UP "))
                })
        });
        if !up {
            bail!("the veth pair did not come up within 5 s");
        }
        Ok(pair)
    }

    /// The frame every candidate sends: 134 bytes with FCS, generator to
    /// sink.
    pub fn frame(&self) -> anyhow::Result<LiveFrame> {
        let (payload_len, frame_len) = loadgen::payload_for_frame(0);
        debug_assert_eq!(frame_len, FRAME_LEN);
        self.frame_with(payload_len)
    }

    /// A frame from the generator's address to the sink's port with
    /// `payload_len` bytes of overlay payload, between two random node IDs.
    pub fn frame_with(&self, payload_len: usize) -> anyhow::Result<LiveFrame> {
        let random_id = || -> anyhow::Result<NodeId> {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes)
                .map_err(|e| anyhow::anyhow!("the OS gave no random bytes: {e}"))?;
            Ok(NodeId::from_bytes(bytes))
        };
        Ok(LiveFrame {
            src_mac: crate::livegen::mac_of(&self.gen_ns, GEN_DEV)?,
            dst_mac: crate::livegen::mac_of(&self.sink_ns, SINK_DEV)?,
            src: SocketAddrV4::new(GEN_ADDR, SINK_PORT + 1),
            dst: SocketAddrV4::new(SINK_ADDR, SINK_PORT),
            overlay_src: random_id()?,
            overlay_dst: random_id()?,
            payload_len,
            flows: 1,
        })
    }

    /// Turns on threaded NAPI on the sink's veth; returns the NAPI threads
    /// that appeared.
    pub fn threaded_sink_napi(&self) -> anyhow::Result<Vec<i32>> {
        let before = crate::netns::napi_threads();
        let script = format!("echo 1 > /sys/class/net/{SINK_DEV}/threaded");
        netns::run("ip", &["netns", "exec", &self.sink_ns, "sh", "-c", &script])
            .context("threaded NAPI on the sink's veth")?;
        Ok(crate::netns::napi_threads()
            .difference(&before)
            .map(|(tid, _)| *tid)
            .collect())
    }

    /// Threaded NAPI on the sink's veth, its thread pinned to `cpu` at
    /// real-time priority (SCHED_FIFO `SINK_NAPI_PRIORITY`, as `compare`
    /// gives the sink's), so that other work on that CPU does not make the
    /// veth refuse frames. Returns the threads pinned.
    pub fn pin_sink_napi(&self, cpu: usize) -> anyhow::Result<usize> {
        let mut pinned = 0;
        for tid in self.threaded_sink_napi()? {
            loadgen::pin_task(tid, cpu)
                .with_context(|| format!("pinning NAPI thread {tid} to CPU {cpu}"))?;
            crate::systems::set_fifo(tid, SINK_NAPI_PRIORITY)
                .with_context(|| format!("SCHED_FIFO for NAPI thread {tid}"))?;
            pinned += 1;
        }
        Ok(pinned)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.gen_ns, &self.sink_ns] {
            if netns::list().contains(ns)
                && let Err(e) = ip(&["netns", "del", ns])
            {
                eprintln!("removing namespace {ns}: {e:#}");
            }
        }
    }
}

/// The ifindex of `ifname` in the calling thread's namespace.
fn ifindex_here(ifname: &str) -> anyhow::Result<u32> {
    netns::ifindex_here(ifname).with_context(|| format!("interface {ifname} not found here"))
}

/// The stamp of packet `n` of trial `trial` sent at `now_ns`: sequence
/// number and time, big endian (the layout of [`crate::loadgen`]).
fn stamp(trial: u32, n: u64, now_ns: u64) -> [u8; STAMP_LEN] {
    let mut bytes = [0u8; STAMP_LEN];
    let seq = (u64::from(trial) << SEQ_BITS) | (n & ((1 << SEQ_BITS) - 1));
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    bytes[8..].copy_from_slice(&now_ns.to_be_bytes());
    bytes
}

/// Checks that `spec` describes `frame` and returns the frame's bytes.
fn frame_bytes(frame: &LiveFrame, spec: &GenSpec) -> anyhow::Result<Vec<u8>> {
    if spec.src != frame.overlay_src || spec.dst != frame.overlay_dst {
        bail!("the spec's overlay src/dst differ from the frame's");
    }
    if spec.payload_len.max(STAMP_LEN) != frame.effective_payload_len() {
        bail!("the spec's payload length differs from the frame's");
    }
    if spec.rate_pps != 0 {
        bail!("the candidate generators are unpaced (rate_pps 0)");
    }
    let bytes = frame.build();
    if bytes.len() > XSK_CHUNK_LEN || bytes.len() < LIVE_HEADER_LEN + STAMP_LEN {
        bail!("a {}-byte frame does not fit a chunk", bytes.len());
    }
    Ok(bytes)
}

/// An `mmap`ed region, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `len` bytes of `fd` at `offset` (shared), or anonymous memory when
    /// `fd` is None.
    fn new(len: usize, fd: Option<i32>, offset: u64) -> anyhow::Result<Mapping> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        let offset = libc::off_t::try_from(offset).context("mmap offset")?;
        // SAFETY: a fresh mapping; the kernel checks fd, length and offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap");
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One AF_XDP ring, mapped: producer, consumer, `len` descriptors of `T`.
struct XskRing<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    descs: *mut T,
    len: u32,
}

impl<T> XskRing<T> {
    /// Maps the ring of `len` entries at page offset `pgoff` of `fd`, laid
    /// out as `offsets` says.
    fn map(
        fd: i32,
        pgoff: u64,
        offsets: &libc::xdp_ring_offset,
        len: u32,
    ) -> anyhow::Result<XskRing<T>> {
        let desc = usize::try_from(offsets.desc).context("ring offset")?;
        let map = Mapping::new(desc + len as usize * size_of::<T>(), Some(fd), pgoff)?;
        let at = |offset: u64| -> anyhow::Result<*mut u8> {
            let offset = usize::try_from(offset).context("ring offset")?;
            if offset >= map.len {
                bail!("ring offset {offset} beyond the mapping");
            }
            // SAFETY: within the mapping (checked above).
            Ok(unsafe { map.ptr.add(offset) })
        };
        let producer = at(offsets.producer)?.cast::<AtomicU32>();
        let consumer = at(offsets.consumer)?.cast::<AtomicU32>();
        let descs = at(offsets.desc)?.cast::<T>();
        Ok(XskRing {
            _map: map,
            producer,
            consumer,
            descs,
            len,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a u32 the kernel placed 4-aligned in the live mapping.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in producer().
        unsafe { &*self.consumer }
    }

    /// Entry `index` (any counter value; wrapped to the ring).
    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: len is a power of two and the mapping holds len entries.
        unsafe { self.descs.add((index & (self.len - 1)) as usize) }
    }
}

/// Sets socket option `name` of level SOL_XDP to `value`.
fn xdp_setsockopt<T>(fd: i32, name: i32, value: &T) -> anyhow::Result<()> {
    // SAFETY: value points at size_of::<T>() readable bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setsockopt SOL_XDP {name}"));
    }
    Ok(())
}

/// An AF_XDP socket with its UMEM, transmit and completion rings.
struct Xsk {
    // Field order is drop order: rings and UMEM are unmapped before the
    // socket closes.
    tx: XskRing<libc::xdp_desc>,
    completion: XskRing<u64>,
    _fill: XskRing<u64>,
    umem: Mapping,
    fd: OwnedFd,
}

impl Xsk {
    /// Binds to queue 0 of `ifindex` in copy mode, every chunk of the UMEM
    /// holding `frame`.
    fn bind(ifindex: u32, frame: &[u8]) -> anyhow::Result<Xsk> {
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_XDP)");
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Xsk::umem_of(frame)?;
        Xsk::register_umem(raw, &umem)?;
        let offsets = Xsk::mmap_offsets(raw)?;
        let tx = XskRing::map(
            raw,
            libc::XDP_PGOFF_TX_RING as u64,
            &offsets.tx,
            XSK_RING_LEN,
        )?;
        let completion = XskRing::map(
            raw,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            &offsets.cr,
            XSK_RING_LEN,
        )?;
        let fill = XskRing::map(
            raw,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            &offsets.fr,
            XSK_FILL_LEN,
        )?;
        Xsk::bind_queue0(raw, ifindex)?;
        Ok(Xsk {
            tx,
            completion,
            _fill: fill,
            umem,
            fd,
        })
    }

    /// The UMEM: [`XSK_CHUNKS`] chunks, each holding a copy of `frame`.
    fn umem_of(frame: &[u8]) -> anyhow::Result<Mapping> {
        let umem = Mapping::new(XSK_CHUNKS * XSK_CHUNK_LEN, None, 0).context("UMEM")?;
        for chunk in 0..XSK_CHUNKS {
            // SAFETY: chunk * XSK_CHUNK_LEN + frame.len() is within the
            // UMEM (frame_bytes checked frame.len() <= XSK_CHUNK_LEN).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    frame.as_ptr(),
                    umem.ptr.add(chunk * XSK_CHUNK_LEN),
                    frame.len(),
                )
            };
        }
        Ok(umem)
    }

    /// Registers `umem` with socket `raw` and sizes its fill, completion
    /// and transmit rings.
    fn register_umem(raw: i32, umem: &Mapping) -> anyhow::Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: XSK_CHUNK_LEN as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        xdp_setsockopt(raw, libc::XDP_UMEM_REG, &reg).context("XDP_UMEM_REG")?;
        xdp_setsockopt(raw, libc::XDP_UMEM_FILL_RING, &XSK_FILL_LEN)?;
        xdp_setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &XSK_RING_LEN)?;
        xdp_setsockopt(raw, libc::XDP_TX_RING, &XSK_RING_LEN)?;
        Ok(())
    }

    /// Where the kernel places each ring's producer, consumer and entries
    /// (`XDP_MMAP_OFFSETS`, with the ring flags).
    fn mmap_offsets(raw: i32) -> anyhow::Result<libc::xdp_mmap_offsets> {
        // SAFETY: xdp_mmap_offsets is plain data; all-zero is valid.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: offsets has len writable bytes.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("XDP_MMAP_OFFSETS");
        }
        if len as usize != size_of::<libc::xdp_mmap_offsets>() {
            bail!("XDP_MMAP_OFFSETS: {len} bytes (a kernel without ring flags)");
        }
        Ok(offsets)
    }

    /// Binds socket `raw` to queue 0 of `ifindex` in copy mode.
    fn bind_queue0(raw: i32, ifindex: u32) -> anyhow::Result<()> {
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: addr is a valid sockaddr_xdp of the size given.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind AF_XDP (XDP_COPY, queue 0)");
        }
        Ok(())
    }

    /// Moves every completed chunk to `free`; returns how many.
    fn reap(&self, free: &mut Vec<u64>) -> u64 {
        let producer = self.completion.producer().load(Ordering::Acquire);
        let mut consumer = self.completion.consumer().load(Ordering::Relaxed);
        let mut reaped = 0;
        while consumer != producer {
            // SAFETY: entries between consumer and producer are the
            // kernel's completed addresses.
            free.push(unsafe { self.completion.slot(consumer).read_volatile() });
            consumer = consumer.wrapping_add(1);
            reaped += 1;
        }
        self.completion
            .consumer()
            .store(consumer, Ordering::Release);
        reaped
    }

    /// Chunks queued on the transmit ring that the kernel has not taken.
    fn queued(&self) -> u32 {
        let producer = self.tx.producer().load(Ordering::Relaxed);
        producer.wrapping_sub(self.tx.consumer().load(Ordering::Acquire))
    }

    /// Queues up to `max` chunks from `free`, each stamped with the next
    /// packet number from `next`. Returns how many.
    fn queue(&self, free: &mut Vec<u64>, max: u32, len: u32, trial: u32, next: &mut u64) -> u32 {
        let room = self.tx.len - self.queued();
        let count = room
            .min(max)
            .min(u32::try_from(free.len()).unwrap_or(u32::MAX));
        let mut producer = self.tx.producer().load(Ordering::Relaxed);
        let now = monotonic_ns();
        for _ in 0..count {
            let Some(addr) = free.pop() else { break };
            let bytes = stamp(trial, *next, now);
            // SAFETY: addr is a chunk start the kernel handed back (or one
            // of ours); the stamp lies within the chunk.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.umem.ptr.add(addr as usize + LIVE_HEADER_LEN),
                    STAMP_LEN,
                );
                self.tx.slot(producer).write_volatile(libc::xdp_desc {
                    addr,
                    len,
                    options: 0,
                });
            }
            producer = producer.wrapping_add(1);
            *next += 1;
        }
        self.tx.producer().store(producer, Ordering::Release);
        count
    }

    /// Asks the kernel to transmit what is queued (copy mode transmits in
    /// the `sendto` call). Ok(true) when the veth dropped a frame.
    fn kick(&self) -> anyhow::Result<bool> {
        // SAFETY: a zero-length sendto with no address, as AF_XDP wants.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(false);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EBUSY) => Ok(true),
            Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(false),
            _ => Err(e).context("sendto (AF_XDP kick)"),
        }
    }
}

/// Transmits `frame` unpaced out of `ifname` in `netns` through an AF_XDP
/// socket in copy mode (transmit ring only, no XDP program needed), for
/// `spec.duration` or until `stop`, pinned to `cpu` when given. `sent`
/// counts completions, `errors` the frames among them that the veth
/// refused.
pub fn generate_afxdp(
    netns: &str,
    ifname: &str,
    frame: &LiveFrame,
    spec: &GenSpec,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    let bytes = frame_bytes(frame, spec)?;
    let (ifname, trial, duration) = (ifname.to_string(), spec.trial, spec.duration);
    netns::in_netns(netns, move || {
        if let Some(cpu) = cpu {
            loadgen::pin_current_thread(cpu)
                .with_context(|| format!("pinning the generator to CPU {cpu}"))?;
        }
        let xsk = Xsk::bind(ifindex_here(&ifname)?, &bytes)
            .with_context(|| format!("AF_XDP socket on {ifname}"))?;
        let len = u32::try_from(bytes.len()).context("frame length")?;
        let mut free: Vec<u64> = (0..XSK_CHUNKS)
            .rev()
            .map(|c| (c * XSK_CHUNK_LEN) as u64)
            .collect();
        let (mut next, mut completed, mut dropped) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
            completed += xsk.reap(&mut free);
            xsk.queue(&mut free, XSK_BATCH, len, trial, &mut next);
            dropped += u64::from(xsk.kick()?);
        }
        // Collect what is still queued or in flight (bounded).
        for _ in 0..XSK_DRAIN_KICKS {
            completed += xsk.reap(&mut free);
            if completed == next {
                break;
            }
            dropped += u64::from(xsk.kick()?);
        }
        let elapsed_s = start.elapsed().as_secs_f64();
        completed += xsk.reap(&mut free);
        Ok(GenReport {
            sent: completed,
            errors: dropped,
            elapsed_s,
            flood_sent: 0,
        })
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("AF_XDP generator panicked"))?
}

/// What each clone of a seed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMode {
    /// The seed's bytes: one sequence number for all its clones.
    Plain,
    /// A fresh sequence number and time each (one data copy per clone).
    Distinct,
}

/// An AF_PACKET socket bound to `ifindex` that sends whole frames through
/// the qdisc layer (so tc egress runs), marked [`SEED_MARK`], and receives
/// nothing.
fn packet_socket(ifindex: u32) -> anyhow::Result<OwnedFd> {
    // Protocol 0: no frame is delivered to this socket.
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: raw is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: setsockopt with a u32 value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&SEED_MARK as *const u32).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_MARK on the seed socket");
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = i32::try_from(ifindex).context("ifindex")?;
    // SAFETY: addr is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind AF_PACKET");
    }
    Ok(fd)
}

/// Transmits `frame` unpaced out of `ifname` in `netns`: seed frames from an
/// AF_PACKET socket, each cloned [`CLONES_PER_SEED`] times at the
/// interface's tc egress (`bench/ebpf/clonegen.bpf.c`), the seed itself
/// consumed; for `spec.duration` or until `stop`, pinned to `cpu` when
/// given. `sent` counts `bpf_clone_redirect` calls and failed stamp writes
/// (none expected), `errors` the failed calls (the veth refused the clone)
/// and writes.
pub fn generate_tc_clone(
    netns: &str,
    ifname: &str,
    frame: &LiveFrame,
    spec: &GenSpec,
    mode: CloneMode,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    let bytes = frame_bytes(frame, spec)?;
    const _: () = assert!(CLONES_PER_SEED <= CLONES_MAX);
    let (ifname, trial, duration) = (ifname.to_string(), spec.trial, spec.duration);
    netns::in_netns(netns, move || {
        if let Some(cpu) = cpu {
            loadgen::pin_current_thread(cpu)
                .with_context(|| format!("pinning the generator to CPU {cpu}"))?;
        }
        let ifindex = ifindex_here(&ifname)?;
        let config = CgConfig {
            ifindex,
            copies: CLONES_PER_SEED,
            distinct: u32::from(mode == CloneMode::Distinct),
            stamp_off: LIVE_HEADER_LEN as u32,
            seq_base: u64::from(trial) << SEQ_BITS,
        };
        // The object holds the attached program: kept until the counters
        // are read.
        let (_ebpf, stats) = load_clonegen(&ifname, &config)?;
        let socket = packet_socket(ifindex)?;
        let (seeds_sent, send_errors, elapsed_s) =
            send_seeds(&socket, bytes, mode, trial, duration, &stop);
        clone_report(&stats, mode, seeds_sent, send_errors, elapsed_s)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("tc clone generator panicked"))?
}

/// Loads the clone generator with `config`, attaches it to `ifname`'s
/// clsact egress and returns the object (which holds the attachment) with
/// its counters.
fn load_clonegen(
    ifname: &str,
    config: &CgConfig,
) -> anyhow::Result<(aya::Ebpf, PerCpuArray<MapData, CgStats>)> {
    let mut ebpf = aya::EbpfLoader::new()
        .override_global("cg_cfg", config, true)
        .load(CLONEGEN_OBJECT)
        .context("loading the clone generator object")?;
    let program: &mut SchedClassifier = ebpf
        .program_mut("xl_clonegen")
        .context("xl_clonegen in the object")?
        .try_into()
        .context("xl_clonegen is a tc program")?;
    program.load().context("verifier")?;
    // Through clsact (netlink), not a tcx link: tcx reads the seed's
    // TC_ACT_STOLEN as "next" and would send the seed too. The qdisc is
    // left from an earlier run on the same interface, or added here.
    if let Err(e) = tc::qdisc_add_clsact(ifname) {
        log::debug!("clsact on {ifname}: {e} (there from an earlier run?)");
    }
    program
        .attach_with_options(
            ifname,
            TcAttachType::Egress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .with_context(|| format!("attaching to {ifname}'s clsact egress"))?;
    let stats: PerCpuArray<MapData, CgStats> =
        PerCpuArray::try_from(ebpf.take_map("cg_stats").context("cg_stats map")?)
            .context("cg_stats")?;
    Ok((ebpf, stats))
}

/// Sends [`SEEDS_PER_CALL`] copies of `bytes` per `sendmmsg` on `socket`
/// for `duration` or until `stop`, stamping each with a fresh sequence
/// number and time in [`CloneMode::Plain`] (in `Distinct` the program does).
/// Returns the seeds sent, the failed calls and the seconds spent.
fn send_seeds(
    socket: &OwnedFd,
    bytes: Vec<u8>,
    mode: CloneMode,
    trial: u32,
    duration: Duration,
    stop: &AtomicBool,
) -> (u64, u64, f64) {
    let mut seeds = vec![bytes; SEEDS_PER_CALL];
    let mut iovs: Vec<libc::iovec> = seeds
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..SEEDS_PER_CALL)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let mut next = 0u64;
    let mut send_errors = 0u64;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
        if mode == CloneMode::Plain {
            let now = monotonic_ns();
            for (i, seed) in seeds.iter_mut().enumerate() {
                let at = LIVE_HEADER_LEN..LIVE_HEADER_LEN + STAMP_LEN;
                seed[at].copy_from_slice(&stamp(trial, next + i as u64, now));
            }
        }
        // SAFETY: msgs holds SEEDS_PER_CALL headers pointing at live
        // buffers (seeds, via iovs).
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                SEEDS_PER_CALL as u32,
                0,
            )
        };
        match u64::try_from(rc) {
            Ok(n) => next += n,
            Err(_) => send_errors += 1,
        }
    }
    (next, send_errors, start.elapsed().as_secs_f64())
}

/// The generator's report from the program's counters (summed over CPUs):
/// `sent` counts clone calls and failed stamp writes, `errors` the failures
/// among them; logs the seeds and any failed writes.
fn clone_report(
    stats: &PerCpuArray<MapData, CgStats>,
    mode: CloneMode,
    next: u64,
    send_errors: u64,
    elapsed_s: f64,
) -> anyhow::Result<GenReport> {
    let mut counters = [0u64; CG_COUNTERS];
    for cpu_stats in stats.get(&0, 0).context("reading cg_stats")?.iter() {
        for (sum, n) in counters.iter_mut().zip(cpu_stats.counters) {
            *sum += n;
        }
    }
    log::debug!(
        "tc-clone {mode:?}: {} seeds sent ({send_errors} failed calls), {} seen by the program",
        next,
        counters[CG_SEEDS]
    );
    if counters[CG_STORE_FAILED] > 0 {
        log::warn!(
            "tc-clone: bpf_skb_store_bytes failed {} times",
            counters[CG_STORE_FAILED]
        );
    }
    let failed = counters[CG_FAILED] + counters[CG_STORE_FAILED];
    Ok(GenReport {
        sent: counters[CG_CLONED] + failed,
        errors: failed,
        elapsed_s,
        flood_sent: 0,
    })
}

/// CPU time (user and system) this process has used, in seconds.
fn process_cpu_s() -> f64 {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a valid rusage to write.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// One run of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct RunFigures {
    /// What the generator reported.
    pub generator: GenReport,
    /// Overlay data frames the sink counted (duplicates included).
    pub received: u64,
    /// Distinct sequence numbers among them.
    pub unique: u64,
    /// Frames whose sequence number the sink had seen.
    pub duplicates: u64,
    /// CPU seconds the generator used (this process's CPU time over the
    /// run: the other threads wait meanwhile; the sink runs in the kernel).
    pub gen_cpu_s: f64,
}

impl RunFigures {
    /// Frames per second the generator handed to its interface.
    pub fn gen_pps(&self) -> f64 {
        self.generator.offered_pps()
    }

    /// Frames per second the interface took (less what the veth refused,
    /// where the generator can tell).
    pub fn taken_pps(&self) -> f64 {
        if self.generator.elapsed_s > 0.0 {
            self.generator.sent.saturating_sub(self.generator.errors) as f64
                / self.generator.elapsed_s
        } else {
            0.0
        }
    }

    /// The share of a CPU the generator got (below 1: other tasks on its
    /// CPU took the rest).
    pub fn gen_cpu_share(&self) -> f64 {
        if self.generator.elapsed_s > 0.0 {
            self.gen_cpu_s / self.generator.elapsed_s
        } else {
            0.0
        }
    }

    /// Nanoseconds of the generator's CPU per frame handed to the
    /// interface: its cost, less sensitive than the rate to the CPU share
    /// it got.
    pub fn gen_ns_per_frame(&self) -> f64 {
        self.gen_cpu_s * 1e9 / self.generator.sent.max(1) as f64
    }

    /// Frames per second the sink counted, over the generator's time.
    pub fn sink_pps(&self) -> f64 {
        if self.generator.elapsed_s > 0.0 {
            self.received as f64 / self.generator.elapsed_s
        } else {
            0.0
        }
    }
}

/// What `gen-eval` measures.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Candidates, in order.
    pub candidates: Vec<Candidate>,
    /// How long each run sends.
    pub duration: Duration,
    /// Runs per candidate.
    pub runs: usize,
    /// The generator's CPU (None: unpinned).
    pub gen_cpu: Option<usize>,
    /// The sink NAPI thread's CPU (None: left where the kernel puts it).
    pub sink_cpu: Option<usize>,
}

/// Runs every candidate `options.runs` times, round robin, on a fresh [`Pair`] (removed
/// before returning, also on error) with the XDP sink on its far end.
pub fn evaluate(
    options: &EvalOptions,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<(Candidate, Vec<RunFigures>)>> {
    let pair = Pair::new().context("the evaluation pair")?;
    let frame = pair.frame()?;
    let mut sink = XdpSink::attach(
        &pair.sink_ns,
        SINK_DEV,
        frame.overlay_dst,
        SINK_PORT,
        SINK_CAPACITY,
    )?;
    if let Some(cpu) = options.sink_cpu {
        pair.pin_sink_napi(cpu)?;
    }
    let mut trial = 0u32;
    let mut results: Vec<(Candidate, Vec<RunFigures>)> = options
        .candidates
        .iter()
        .map(|&c| (c, Vec::new()))
        .collect();
    // Round robin (run 1 of every candidate, then run 2, ...): load from
    // other tasks that comes and goes then spreads over all candidates.
    for _ in 0..options.runs {
        for (candidate, runs) in &mut results {
            let candidate = *candidate;
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            trial += 1;
            sink.begin_trial(trial)?;
            let spec = GenSpec {
                src: frame.overlay_src,
                dst: frame.overlay_dst,
                payload_len: frame.payload_len,
                rate_pps: 0,
                duration: options.duration,
                trial,
            };
            let cpu_before = process_cpu_s();
            let generator = candidate
                .generate(&pair, &frame, &spec, options.gen_cpu, stop.clone())
                .with_context(|| format!("candidate {}", candidate.name()))?;
            let gen_cpu_s = process_cpu_s() - cpu_before;
            // Let the sink count what is in flight: until its count stands
            // still for DRAIN_STILL (bounded by DRAIN_TIMEOUT).
            let (mut last, mut since) = (u64::MAX, Instant::now());
            crate::wait_until(DRAIN_TIMEOUT, || {
                let now = sink.result().map_or(0, |r| r.received);
                if now != last {
                    (last, since) = (now, Instant::now());
                }
                since.elapsed() >= DRAIN_STILL
            });
            let seen = sink.result()?;
            runs.push(RunFigures {
                generator,
                received: seen.received,
                unique: seen.unique,
                duplicates: seen.duplicates,
                gen_cpu_s,
            });
        }
    }
    drop(sink);
    drop(pair);
    Ok(results)
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Prints every run and a Markdown table of the medians.
pub fn print(results: &[(Candidate, Vec<RunFigures>)]) {
    let m = |v: f64| format!("{:.3} M", v / 1e6);
    for (candidate, runs) in results {
        for (i, run) in runs.iter().enumerate() {
            println!(
                "{:<18} run {}: gen {} frames in {:.2} s ({}/s, {} refused/errors), {:.0}% of a CPU, {:.0} ns/frame; sink {} ({}/s, {} unique, {} duplicates)",
                candidate.name(),
                i + 1,
                run.generator.sent,
                run.generator.elapsed_s,
                m(run.gen_pps()),
                run.generator.errors,
                100.0 * run.gen_cpu_share(),
                run.gen_ns_per_frame(),
                run.received,
                m(run.sink_pps()),
                run.unique,
                run.duplicates,
            );
        }
    }
    println!();
    println!(
        "| candidate | offered frames/s (median) | offered runs | taken by veth (median) | sink frames/s (median) | sink runs | sink unique share | gen CPU share | gen ns/frame |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (candidate, runs) in results {
        let generator: Vec<f64> = runs.iter().map(RunFigures::gen_pps).collect();
        let taken: Vec<f64> = runs.iter().map(RunFigures::taken_pps).collect();
        let sink: Vec<f64> = runs.iter().map(RunFigures::sink_pps).collect();
        let unique: Vec<f64> = runs
            .iter()
            .map(|r| r.unique as f64 / r.received.max(1) as f64)
            .collect();
        let share: Vec<f64> = runs.iter().map(RunFigures::gen_cpu_share).collect();
        let cost: Vec<f64> = runs.iter().map(RunFigures::gen_ns_per_frame).collect();
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{:.2}", x / 1e6))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1}% | {:.0}% | {:.0} |",
            candidate.name(),
            m(median(&generator)),
            list(&generator),
            m(median(&taken)),
            m(median(&sink)),
            list(&sink),
            100.0 * median(&unique),
            100.0 * median(&share),
            median(&cost),
        );
    }
}

/// `xorlay-bench gen-eval`: every candidate (all when none are given) `runs` times for `seconds`
/// each, the generator on CPU 0 and the sink's NAPI thread on CPU 1 (when
/// there is one, at real-time priority); prints the runs and a table of
/// medians.
pub fn gen_eval(
    candidates: Vec<Candidate>,
    seconds: f64,
    runs: usize,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    if !(seconds > 0.0 && seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = EvalOptions {
        candidates: if candidates.is_empty() {
            Candidate::all()
        } else {
            candidates
        },
        duration: Duration::from_secs_f64(seconds),
        runs: runs.clamp(1, 100),
        gen_cpu: Some(0),
        sink_cpu: (cpus >= 2).then_some(1),
    };
    println!(
        "gen-eval: {FRAME_LEN}-byte frames, unpaced, {seconds} s x {} run(s) per candidate; generator on CPU 0, sink NAPI on {}",
        options.runs,
        options
            .sink_cpu
            .map_or("any CPU".to_string(), |c| format!("CPU {c}"))
    );
    let results = evaluate(&options, stop)?;
    print(&results);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn stamp_carries_trial_number_and_time() {
        let bytes = stamp(7, 5, 0x1122);
        assert_eq!(&bytes[..8], &((7u64 << 40) | 5).to_be_bytes());
        assert_eq!(&bytes[8..], &0x1122u64.to_be_bytes());
    }

    #[test]
    fn every_candidate_has_its_command_line_name() {
        use clap::ValueEnum;
        let names: Vec<String> = Candidate::all().into_iter().map(Candidate::name).collect();
        assert_eq!(
            names,
            [
                "ring",
                "ring-single",
                "packet-mmsg",
                "afxdp",
                "tc-clone",
                "tc-clone-distinct",
                "socket"
            ],
            "the names docs/benchmarks.md uses"
        );
        for candidate in Candidate::all() {
            let parsed = Candidate::from_str(&candidate.name(), false).expect("a known name");
            assert_eq!(parsed, candidate);
        }
    }

    #[test]
    fn process_cpu_time_advances() {
        let before = process_cpu_s();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu_s() > before);
    }
}
