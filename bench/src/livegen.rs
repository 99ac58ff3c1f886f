//! A traffic generator in the kernel: the XDP program `bench/ebpf/livegen.bpf.c`
//! run with `BPF_PROG_TEST_RUN` in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`). Each run of the program writes one frame
//! (the header from a template, then the payload's sequence number and
//! CLOCK_MONOTONIC send time, the layout of [`crate::loadgen`]) and returns
//! `XDP_TX`, which the kernel turns into a transmit out of the generator's
//! interface. No socket, no skb on the sending side: it reaches rates a
//! `sendmmsg` generator cannot.
//!
//! How it runs:
//! - The test run executes on a thread inside the generator's namespace (the
//!   kernel looks up `ctx_in`'s ingress ifindex in the calling thread's
//!   namespace), pinned to a CPU when asked.
//! - Each `BPF_PROG_TEST_RUN` call sets up and tears down a page pool; the
//!   teardown waits for an RCU grace period (~20 ms on the lab VM), during
//!   which that call sends nothing. Calls are therefore long: `repeat` is
//!   sized from the kernel's measured time per run so that a call runs for
//!   about [`CALL_TARGET`] (less at the end of the run), between
//!   [`REPEAT_MIN`] and [`REPEAT_MAX`] runs. When pinned to a CPU, two
//!   threads on that CPU call in turn, so one runs while the other tears
//!   down (see `OVERLAPPED_WORKERS`); unpinned, one thread, with the gaps.
//! - Pacing is done by the program: before a packet is due, a run drops its
//!   frame and counts itself idle. The generator therefore spins on its CPU
//!   for the whole run, paced or not (size the CPU budget accordingly). Runs
//!   falling more than 1 ms behind schedule (between calls, say) resync
//!   instead of bursting; the rate is `1e9 / rate_pps` ns rounded.
//! - `GenReport::sent` counts the program's `XDP_TX` verdicts. A frame the
//!   veth could not take (peer ring full, no NAPI on the peer) is dropped by
//!   the kernel after that verdict and still counts as sent; the sink's
//!   count is the truth about delivery.
//!
//! The receiving veth needs NAPI for XDP-transmitted frames: GRO on, or an
//! XDP program attached.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aya::maps::{Array, MapData};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
use xorlay::core::NodeId;
use xorlay::wire::overlay::{DEFAULT_HOP_LIMIT, HEADER_LEN};
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};

use crate::loadgen::{GenReport, GenSpec};
use crate::traffic::STAMP_LEN;

/// The compiled generator program.
static LIVEGEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/livegen.bpf.o"));

/// The program's name in the object.
const PROGRAM: &str = "xl_livegen";

/// Bytes of the Ethernet header.
const ETH_LEN: usize = 14;
/// Bytes of the IPv4 header (no options).
const IPV4_LEN: usize = 20;
/// Bytes of the UDP header.
const UDP_LEN: usize = 8;
/// Bytes the program rewrites on every run before the stamp: Ethernet,
/// IPv4, UDP and overlay headers (`LG_HDR_LEN` in the C program).
pub const LIVE_HEADER_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + HEADER_LEN;
/// Bytes of the template map's value (the header in whole 8-byte words).
const TEMPLATE_LEN: usize = 120;
/// Largest overlay payload a frame can carry (IPv4 total length is a u16).
pub const PAYLOAD_MAX: usize = u16::MAX as usize - IPV4_LEN - UDP_LEN - HEADER_LEN;
/// Largest frame the kernel takes in live mode: one page minus XDP headroom
/// (256) and `skb_shared_info` (320).
pub const LIVE_FRAME_MAX: usize = 4096 - 256 - 320;

/// Frames per batch inside one test run (the kernel's maximum is 256).
const BATCH_FRAMES: u32 = 64;
/// How long one `BPF_PROG_TEST_RUN` call should last.
pub const CALL_TARGET: Duration = Duration::from_millis(50);
/// Fewest runs per call.
pub const REPEAT_MIN: u32 = 4096;
/// Most runs per call.
pub const REPEAT_MAX: u32 = 1 << 26;
/// Guesses of a run's time for sizing the first call, before the kernel
/// has timed one (measured here: ~110 ns idle, ~1 us sending).
const FIRST_RUN_NS_PACED: u32 = 150;
const FIRST_RUN_NS_UNPACED: u32 = 1000;
/// Test-run workers when the generator is pinned. Each call ends with the
/// page pool's teardown (an RCU grace period, ~20 ms here) during which that
/// thread sends nothing; a second thread on the same CPU runs its call
/// meanwhile, so the program runs without gaps. Two runs never overlap:
/// both threads are on one CPU and each batch of runs executes with bottom
/// halves (hence preemption) disabled, so the state map needs no atomics.
/// Unpinned, the threads could run on two CPUs at once: one worker then.
const OVERLAPPED_WORKERS: usize = 2;
/// Consecutive failed calls after which the run is abandoned.
const FAILED_CALLS_MAX: u64 = 16;
/// Bits of the sequence number that count packets (see `loadgen`).
const SEQ_BITS: u32 = 40;

mod field {
    use core::ops::Range;

    pub const ETH_DST: Range<usize> = 0..6;
    pub const ETH_SRC: Range<usize> = 6..12;
    pub const ETH_TYPE: Range<usize> = 12..14;
    // Offsets below are relative to the IPv4 header.
    pub const IP_VER_IHL: usize = 0;
    pub const IP_TOTAL_LEN: Range<usize> = 2..4;
    pub const IP_FLAGS_FRAG: Range<usize> = 6..8;
    pub const IP_TTL: usize = 8;
    pub const IP_PROTOCOL: usize = 9;
    pub const IP_CHECKSUM: Range<usize> = 10..12;
    pub const IP_SRC: Range<usize> = 12..16;
    pub const IP_DST: Range<usize> = 16..20;
    // Relative to the UDP header.
    pub const UDP_SRC_PORT: Range<usize> = 0..2;
    pub const UDP_DST_PORT: Range<usize> = 2..4;
    pub const UDP_LEN: Range<usize> = 4..6;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
}

/// `struct lg_frame` of the C program.
#[repr(C)]
#[derive(Clone, Copy)]
struct LgFrame {
    bytes: [u8; TEMPLATE_LEN],
}

// SAFETY: plain bytes, no padding.
unsafe impl aya::Pod for LgFrame {}

/// `struct lg_state` of the C program: configuration, then what the program
/// counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct LgState {
    interval_ns: u64,
    limit: u64,
    seq_base: u64,
    next_due: u64,
    sent: u64,
    idle: u64,
    done: u64,
    short_frame: u64,
    flood_per_packet: u64,
    phase: u64,
    flood_sent: u64,
    first_ns: u64,
    last_ns: u64,
    flows: u64,
}

// SAFETY: fourteen u64, no padding.
unsafe impl aya::Pod for LgState {}

const _: () = assert!(LIVE_HEADER_LEN == 114);
const _: () = assert!(TEMPLATE_LEN.is_multiple_of(8));
const _: () = assert!(TEMPLATE_LEN >= LIVE_HEADER_LEN);
const _: () = assert!(std::mem::size_of::<LgFrame>() == 120);
const _: () = assert!(std::mem::size_of::<LgState>() == 112);
const _: () = assert!(std::mem::offset_of!(LgState, next_due) == 24);
const _: () = assert!(std::mem::offset_of!(LgState, short_frame) == 56);

/// The frame a live generator sends: addresses of every layer and the
/// overlay payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveFrame {
    /// Ethernet source: the generator interface's MAC.
    pub src_mac: [u8; 6],
    /// Ethernet destination: the receiving interface's MAC.
    pub dst_mac: [u8; 6],
    /// IPv4/UDP source.
    pub src: SocketAddrV4,
    /// IPv4/UDP destination.
    pub dst: SocketAddrV4,
    /// Overlay source node ID.
    pub overlay_src: NodeId,
    /// Overlay destination node ID (the sink's).
    pub overlay_dst: NodeId,
    /// Overlay payload bytes after the overlay header; raised to
    /// [`STAMP_LEN`], lowered to [`PAYLOAD_MAX`].
    pub payload_len: usize,
    /// Overlay sources to cycle through: stream packet n carries `n mod
    /// flows` XORed into the first four bytes of `overlay_src` (big endian),
    /// so a receiver that spreads by overlay flow sees `flows` flows. 0 and
    /// 1 both mean one source. [`LiveFrame::build`] writes flow 0.
    pub flows: u32,
}

impl LiveFrame {
    /// The overlay payload length actually used (see `payload_len`).
    pub fn effective_payload_len(&self) -> usize {
        self.payload_len.clamp(STAMP_LEN, PAYLOAD_MAX)
    }

    /// The full Ethernet frame (no FCS): IPv4 with a valid header checksum,
    /// TTL 64, DF, ID 0; UDP checksum 0 ("none"); an overlay data header
    /// (hop limit 64) and a payload of zeros (sequence number 0, time 0).
    pub fn build(&self) -> Vec<u8> {
        let payload_len = self.effective_payload_len();
        let udp_len = UDP_LEN + HEADER_LEN + payload_len;
        let ip_len = IPV4_LEN + udp_len;
        let mut frame = vec![0u8; ETH_LEN + ip_len];

        frame[field::ETH_DST].copy_from_slice(&self.dst_mac);
        frame[field::ETH_SRC].copy_from_slice(&self.src_mac);
        frame[field::ETH_TYPE].copy_from_slice(&0x0800u16.to_be_bytes());

        let ip = &mut frame[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[field::IP_VER_IHL] = 0x45;
        // ip_len <= u16::MAX: payload_len is clamped to PAYLOAD_MAX.
        ip[field::IP_TOTAL_LEN].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[field::IP_FLAGS_FRAG].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[field::IP_TTL] = 64;
        ip[field::IP_PROTOCOL] = 17; // UDP
        ip[field::IP_SRC].copy_from_slice(&self.src.ip().octets());
        ip[field::IP_DST].copy_from_slice(&self.dst.ip().octets());
        let checksum = ipv4_checksum(ip);
        ip[field::IP_CHECKSUM].copy_from_slice(&checksum.to_be_bytes());

        let udp = &mut frame[ETH_LEN + IPV4_LEN..ETH_LEN + IPV4_LEN + UDP_LEN];
        udp[field::UDP_SRC_PORT].copy_from_slice(&self.src.port().to_be_bytes());
        udp[field::UDP_DST_PORT].copy_from_slice(&self.dst.port().to_be_bytes());
        udp[field::UDP_LEN].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[field::UDP_CHECKSUM].copy_from_slice(&0u16.to_be_bytes());

        let repr = OverlayRepr {
            packet_type: PacketType::Data,
            hop_limit: DEFAULT_HOP_LIMIT,
            flags: 0,
            // payload_len <= PAYLOAD_MAX < u16::MAX.
            payload_len: payload_len as u16,
            dst: self.overlay_dst,
            src: self.overlay_src,
            via: None,
        };
        repr.emit(&mut OverlayPacket::new_unchecked(
            &mut frame[ETH_LEN + IPV4_LEN + UDP_LEN..],
        ));
        frame
    }
}

/// The Internet checksum of an IPv4 header whose checksum field is zero
/// (or, over a finished header, 0 when it verifies).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The MAC address of interface `dev` in namespace `netns`.
pub fn mac_of(netns: &str, dev: &str) -> anyhow::Result<[u8; 6]> {
    crate::netns::link_info(netns, dev).map(|(_, mac)| mac)
}

/// The loaded program and its maps. Dropping it unloads the program.
struct Loaded {
    ebpf: aya::Ebpf,
    template: Array<MapData, LgFrame>,
    state: Array<MapData, LgState>,
}

impl Loaded {
    fn load() -> anyhow::Result<Loaded> {
        let mut ebpf = aya::Ebpf::load(LIVEGEN_OBJECT).context("loading the livegen object")?;
        let template = Array::try_from(ebpf.take_map("lg_frame").context("lg_frame map")?)
            .context("lg_frame is an array of lg_frame")?;
        let state = Array::try_from(ebpf.take_map("lg_state").context("lg_state map")?)
            .context("lg_state is an array of lg_state")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("{PROGRAM} in the object"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is XDP"))?;
        program.load().context("verifier")?;
        Ok(Loaded {
            ebpf,
            template,
            state,
        })
    }

    fn program(&self) -> anyhow::Result<&Xdp> {
        self.ebpf
            .program(PROGRAM)
            .with_context(|| format!("{PROGRAM} in the object"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is XDP"))
    }

    /// Writes the template of `frame` (and of `flood`, the flood frames;
    /// `frame` again when there is none) and a fresh state with `config`.
    fn configure(
        &mut self,
        frame: &[u8],
        flood: Option<&[u8]>,
        config: LgState,
    ) -> anyhow::Result<()> {
        for (index, bytes) in [(0, frame), (1, flood.unwrap_or(frame))] {
            let mut template = LgFrame {
                bytes: [0; TEMPLATE_LEN],
            };
            let header = bytes
                .get(..LIVE_HEADER_LEN)
                .context("frame shorter than its headers")?;
            template.bytes[..LIVE_HEADER_LEN].copy_from_slice(header);
            self.template
                .set(index, template, 0)
                .context("writing the frame template")?;
        }
        self.state
            .set(0, config, 0)
            .context("writing the generator state")?;
        Ok(())
    }

    fn state(&self) -> anyhow::Result<LgState> {
        self.state.get(&0, 0).context("reading the generator state")
    }
}

/// `struct xdp_md` for `ctx_in`: the frame spans `[0, len)`, no metadata,
/// arriving on queue 0 of interface `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> anyhow::Result<[u8; 24]> {
    let len = u32::try_from(len).context("frame length")?;
    let fields = [0, len, 0, ifindex, 0, 0]; // data, data_end, data_meta, ingress, rx queue, egress
    let mut bytes = [0u8; 24];
    for (chunk, value) in bytes.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    Ok(bytes)
}

/// Checks that `spec` asks for the frames `frame` makes: the same overlay
/// source and destination, the same payload length.
pub(crate) fn check_spec(frame: &LiveFrame, spec: &GenSpec) -> anyhow::Result<()> {
    if spec.src != frame.overlay_src || spec.dst != frame.overlay_dst {
        bail!("the spec's overlay src/dst differ from the frame's");
    }
    if spec.payload_len.clamp(STAMP_LEN, PAYLOAD_MAX) != frame.effective_payload_len() {
        bail!(
            "the spec's payload length {} differs from the frame's {}",
            spec.payload_len,
            frame.payload_len
        );
    }
    Ok(())
}

/// Runs `spec` in namespace `netns`, transmitting out of interface
/// `ifname`, the thread pinned to `cpu` when given; blocks until
/// `spec.duration` passes or `stop` is set.
///
/// `spec.src`, `spec.dst` and `spec.payload_len` must match `frame`'s overlay
/// fields; `spec.trial` goes into the sequence numbers, `spec.rate_pps` (0 =
/// unpaced) sets the pacing, which the program does by spinning on the
/// generator's CPU. `sent` in the report counts `XDP_TX` verdicts, `errors`
/// failed test-run calls, `elapsed_s` runs from the first transmitted frame
/// to one packet interval after the last (from the start of the first call
/// to the end of the last when nothing was sent).
pub fn generate_live(
    netns: &str,
    ifname: &str,
    frame: &LiveFrame,
    spec: &GenSpec,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    generate_live_flooded(netns, ifname, frame, spec, None, cpu, stop)
}

/// A flood mixed into a live stream: after each stream packet,
/// `per_packet` copies of it from underlay source `src` (an address the
/// receiver has no neighbor at), each in a slot of its own. At rate R the
/// wire carries R x (1 + per_packet) frames/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Flood frames per stream packet.
    pub per_packet: u32,
    /// Their underlay source.
    pub src: SocketAddrV4,
}

/// [`generate_live`] with a flood mixed in (`GenReport::flood_sent` counts
/// the flood frames; `sent` and the rate are the stream's).
pub fn generate_live_flooded(
    netns: &str,
    ifname: &str,
    frame: &LiveFrame,
    spec: &GenSpec,
    flood: Option<Flood>,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    check_spec(frame, spec)?;
    let bytes = frame.build();
    if bytes.len() > LIVE_FRAME_MAX {
        bail!(
            "a {}-byte frame does not fit a live-frames page (at most {LIVE_FRAME_MAX})",
            bytes.len()
        );
    }
    let flood_bytes = flood.map(|f| {
        LiveFrame {
            src: f.src,
            ..*frame
        }
        .build()
    });
    let slots = 1 + flood.map_or(0, |f| u64::from(f.per_packet));
    let config = LgState {
        interval_ns: match spec.rate_pps.saturating_mul(slots) {
            0 => 0,
            rate => ((1_000_000_000 + rate / 2) / rate).max(1),
        },
        flood_per_packet: slots - 1,
        limit: match spec.rate_pps {
            0 => u64::MAX,
            rate => (rate as f64 * spec.duration.as_secs_f64()).round() as u64,
        },
        seq_base: u64::from(spec.trial) << SEQ_BITS,
        flows: u64::from(frame.flows),
        ..LgState::default()
    };
    let (netns_owned, ifname_owned, duration) =
        (netns.to_string(), ifname.to_string(), spec.duration);
    crate::netns::in_netns(netns, move || {
        if let Some(cpu) = cpu {
            crate::loadgen::pin_current_thread(cpu)
                .with_context(|| format!("pinning the generator to CPU {cpu}"))?;
        }
        let ifindex = crate::netns::ifindex_here(&ifname_owned).with_context(|| {
            format!("interface {ifname_owned} not found in namespace {netns_owned}")
        })?;
        let mut loaded = Loaded::load()?;
        loaded.configure(&bytes, flood_bytes.as_deref(), config)?;
        // Two workers only when pinned: see OVERLAPPED_WORKERS.
        let workers = if cpu.is_some() { OVERLAPPED_WORKERS } else { 1 };
        run_workers(&loaded, &bytes, ifindex, duration, &stop, workers)
            .with_context(|| format!("live generator on {ifname_owned} in {netns_owned}"))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("live generator thread panicked"))?
}

/// Runs `workers` threads of test-run calls (this one and `workers - 1`
/// more, which inherit its namespace and CPU affinity) until `duration`
/// passes, `stop` is set or the limit is reached.
fn run_workers(
    loaded: &Loaded,
    frame: &[u8],
    ifindex: u32,
    duration: Duration,
    stop: &AtomicBool,
    workers: usize,
) -> anyhow::Result<GenReport> {
    let program = loaded.program()?;
    let ctx = xdp_md(frame.len(), ifindex)?;
    let config = loaded.state()?;
    // Set when a worker gives up: the others stop too.
    let halt = AtomicBool::new(false);
    let call = Caller {
        loaded,
        program,
        frame,
        ctx: &ctx,
        limit: config.limit,
        paced: config.interval_ns != 0,
        duration,
        stop,
        halt: &halt,
        start: Instant::now(),
    };
    let outcomes: Vec<anyhow::Result<CallStats>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..workers)
            .map(|k| {
                let call = &call;
                scope.spawn(move || call.calls(k))
            })
            .collect();
        let mut outcomes = vec![call.calls(0)];
        outcomes.extend(others.into_iter().map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("generator worker panicked")))
        }));
        outcomes
    });
    let elapsed_s = call.start.elapsed().as_secs_f64();
    let mut report = GenReport {
        elapsed_s,
        ..GenReport::default()
    };
    let mut calls = 0;
    for outcome in outcomes {
        let stats = outcome?;
        report.errors += stats.errors;
        calls += stats.calls;
    }
    let state = loaded.state()?;
    report.sent = state.sent;
    report.flood_sent = state.flood_sent;
    if state.last_ns > state.first_ns {
        // From the first frame to one slot after the last: what the wire
        // saw, without the calls' set-up and teardown.
        let slot_ns = if config.interval_ns != 0 {
            config.interval_ns
        } else {
            (state.last_ns - state.first_ns) / (state.sent + state.flood_sent).max(1)
        };
        report.elapsed_s = (state.last_ns - state.first_ns + slot_ns) as f64 / 1e9;
    }
    log::debug!(
        "livegen: {workers} worker(s), {calls} calls, {} sent, {} idle runs, {} runs past the limit",
        state.sent,
        state.idle,
        state.done,
    );
    if state.short_frame > 0 {
        bail!(
            "{} runs got a frame shorter than the header and stamp",
            state.short_frame
        );
    }
    Ok(report)
}

/// What one worker of [`run_workers`] needs.
struct Caller<'a> {
    loaded: &'a Loaded,
    program: &'a Xdp,
    frame: &'a [u8],
    ctx: &'a [u8],
    limit: u64,
    paced: bool,
    duration: Duration,
    stop: &'a AtomicBool,
    halt: &'a AtomicBool,
    start: Instant,
}

/// Calls made and failed by one worker.
struct CallStats {
    calls: u64,
    errors: u64,
}

impl Caller<'_> {
    /// Calls the test run until the end, as worker `k`; fails when the
    /// first call fails or [`FAILED_CALLS_MAX`] fail in a row. Worker k's
    /// first call is 1/(k+1) of a full one so that the workers' teardowns
    /// fall at different times (all tearing down = nothing sent).
    fn calls(&self, k: usize) -> anyhow::Result<CallStats> {
        let mut stats = CallStats {
            calls: 0,
            errors: 0,
        };
        let first_run_ns = if self.paced {
            FIRST_RUN_NS_PACED
        } else {
            FIRST_RUN_NS_UNPACED
        };
        let first = CALL_TARGET.as_nanos() / (k as u128 + 1) / u128::from(first_run_ns);
        let mut repeat = u32::try_from(first)
            .unwrap_or(REPEAT_MAX)
            .clamp(REPEAT_MIN, REPEAT_MAX);
        let mut failed_in_a_row = 0u64;
        while !self.stop.load(Ordering::Relaxed) && !self.halt.load(Ordering::Relaxed) {
            let remaining = self.duration.saturating_sub(self.start.elapsed());
            if remaining.is_zero() {
                break;
            }
            let result = self.program.test_run(TestRunOptions {
                data_in: Some(self.frame),
                ctx_in: Some(self.ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH_FRAMES),
                ..TestRunOptions::default()
            });
            stats.calls += 1;
            match result {
                Ok(result) => {
                    failed_in_a_row = 0;
                    // duration is the kernel's time per run: size the next
                    // call to CALL_TARGET, or to what is left of the run.
                    let run_ns = result.duration.as_nanos().max(1);
                    let remaining = self.duration.saturating_sub(self.start.elapsed());
                    let next = CALL_TARGET.min(remaining).as_nanos() / run_ns;
                    repeat = u32::try_from(next)
                        .unwrap_or(REPEAT_MAX)
                        .clamp(REPEAT_MIN, REPEAT_MAX);
                }
                Err(e) => {
                    stats.errors += 1;
                    failed_in_a_row += 1;
                    if stats.calls == 1 || failed_in_a_row >= FAILED_CALLS_MAX {
                        self.halt.store(true, Ordering::Relaxed);
                        return Err(anyhow::Error::new(e)).context(format!(
                            "BPF_PROG_TEST_RUN (live frames) failed {failed_in_a_row} time(s) in a row"
                        ));
                    }
                }
            }
            // Done once the limit is reached and the last packet's flood
            // frames are out.
            let state = self.loaded.state()?;
            if state.sent >= self.limit && state.phase == 0 {
                break;
            }
        }
        Ok(stats)
    }
}

/// Whether this machine lets `BPF_PROG_TEST_RUN` run in live-frames mode:
/// runs the generator once, live, on the loopback interface of the calling
/// thread's namespace with a limit of 0 packets (the run drops its frame:
/// nothing is transmitted). `Err` carries the kernel's answer, e.g. EPERM
/// where CAP_SYS_RESOURCE is outside the capability bounding set.
pub fn probe_live_frames() -> anyhow::Result<()> {
    let frame = LiveFrame {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9),
        dst: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9),
        overlay_src: NodeId::from_bytes([0; 32]),
        overlay_dst: NodeId::from_bytes([0; 32]),
        payload_len: STAMP_LEN,
        flows: 1,
    };
    let bytes = frame.build();
    let mut loaded = Loaded::load()?;
    loaded.configure(
        &bytes,
        None,
        LgState {
            limit: 0,
            ..LgState::default()
        },
    )?;
    let lo = crate::netns::ifindex_here("lo").context("no loopback interface here")?;
    let ctx = xdp_md(bytes.len(), lo)?;
    loaded
        .program()?
        .test_run(TestRunOptions {
            data_in: Some(&bytes),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN in live-frames mode")?;
    let state = loaded.state()?;
    if state.sent != 0 || state.done != 1 {
        bail!(
            "the live-frames probe sent {} frame(s) and dropped {} (expected 0 and 1)",
            state.sent,
            state.done
        );
    }
    Ok(())
}

/// Runs the program once, not live, on `page` (as if a recycled page held
/// those bytes; it must be as long as `frame.build()`), as the first, unpaced
/// run of trial `trial`. Returns the verdict and the bytes the program left.
/// Needs CAP_BPF; for fixture tests of the program.
pub fn render_once(frame: &LiveFrame, trial: u32, page: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    render_nth(frame, trial, page, 0)
}

/// [`render_once`] as the run of stream packet number `n` (what the
/// sequence number and the flow of that packet are).
pub fn render_nth(
    frame: &LiveFrame,
    trial: u32,
    page: &[u8],
    n: u64,
) -> anyhow::Result<(u32, Vec<u8>)> {
    let bytes = frame.build();
    if page.len() != bytes.len() {
        bail!(
            "page of {} bytes for a {}-byte frame",
            page.len(),
            bytes.len()
        );
    }
    let mut loaded = Loaded::load()?;
    loaded.configure(
        &bytes,
        None,
        LgState {
            limit: u64::MAX,
            seq_base: u64::from(trial) << SEQ_BITS,
            sent: n,
            flows: u64::from(frame.flows),
            ..LgState::default()
        },
    )?;
    let mut out = vec![0u8; page.len()];
    let result = loaded
        .program()?
        .test_run(TestRunOptions {
            data_in: Some(page),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn frame(payload_len: usize) -> LiveFrame {
        LiveFrame {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 1), 9001),
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 2), 9000),
            overlay_src: NodeId::from_bytes([0x11; 32]),
            overlay_dst: NodeId::from_bytes([0x22; 32]),
            payload_len,
            flows: 1,
        }
    }

    #[test]
    fn build_lays_out_every_header() {
        let f = frame(100);
        let bytes = f.build();
        assert_eq!(bytes.len(), LIVE_HEADER_LEN + 100);
        assert_eq!(&bytes[0..6], &f.dst_mac);
        assert_eq!(&bytes[6..12], &f.src_mac);
        assert_eq!(&bytes[12..14], &[0x08, 0x00]);
        let ip = &bytes[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]) as usize,
            bytes.len() - 14
        );
        assert_eq!(&ip[6..8], &[0x40, 0x00], "DF, no fragment offset");
        assert_eq!(ip[8], 64, "TTL");
        assert_eq!(ip[9], 17, "UDP");
        assert_eq!(&ip[12..16], &[198, 18, 100, 1]);
        assert_eq!(&ip[16..20], &[198, 18, 100, 2]);
        let udp = &bytes[34..42];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 9001);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 9000);
        assert_eq!(
            u16::from_be_bytes([udp[4], udp[5]]) as usize,
            bytes.len() - 34
        );
        assert_eq!(&udp[6..8], &[0, 0], "no UDP checksum");
    }

    #[test]
    fn build_ipv4_checksum_verifies() {
        for payload_len in [0, 16, 17, 1000] {
            let bytes = frame(payload_len).build();
            let ip = &bytes[14..34];
            assert_ne!(&ip[10..12], &[0, 0]);
            assert_eq!(ipv4_checksum(ip), 0, "payload {payload_len}");
        }
    }

    #[test]
    fn build_checksum_matches_a_known_header() {
        // The classic example header (Wikipedia, "IPv4 header checksum").
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
    }

    #[test]
    fn build_overlay_parses_as_data() {
        let f = frame(64);
        let bytes = f.build();
        let packet = OverlayPacket::new_checked(&bytes[42..]).expect("long enough");
        let repr = OverlayRepr::parse(&packet).expect("valid overlay header");
        assert_eq!(repr.packet_type, PacketType::Data);
        assert_eq!(repr.dst, f.overlay_dst);
        assert_eq!(repr.src, f.overlay_src);
        assert_eq!(repr.payload_len, 64);
        assert_eq!(repr.hop_limit, DEFAULT_HOP_LIMIT);
        assert_eq!(packet.payload().len(), 64);
    }

    #[test]
    fn build_raises_short_payloads_to_the_stamp() {
        let bytes = frame(3).build();
        assert_eq!(bytes.len(), LIVE_HEADER_LEN + STAMP_LEN);
        let packet = OverlayPacket::new_checked(&bytes[42..]).expect("long enough");
        let repr = OverlayRepr::parse(&packet).expect("valid overlay header");
        assert_eq!(usize::from(repr.payload_len), STAMP_LEN);
    }

    #[test]
    fn build_caps_the_payload_at_the_ipv4_limit() {
        let bytes = frame(usize::MAX).build();
        assert_eq!(bytes.len(), 14 + u16::MAX as usize);
        assert_eq!(ipv4_checksum(&bytes[14..34]), 0);
    }

    #[test]
    fn xdp_md_spans_the_frame() {
        let md = xdp_md(130, 7).expect("fits");
        let word = |i: usize| u32::from_ne_bytes(md[i * 4..i * 4 + 4].try_into().expect("4"));
        assert_eq!((word(0), word(1), word(2)), (0, 130, 0));
        assert_eq!((word(3), word(4), word(5)), (7, 0, 0));
    }

    #[test]
    fn parse_mac_accepts_only_six_bytes() {
        assert_eq!(
            crate::netns::parse_mac("02:0a:ff:00:10:9b").expect("valid"),
            [0x02, 0x0a, 0xff, 0x00, 0x10, 0x9b]
        );
        assert!(crate::netns::parse_mac("02:0a:ff:00:10").is_err());
        assert!(crate::netns::parse_mac("02:0a:ff:00:10:9b:00").is_err());
        assert!(crate::netns::parse_mac("02:0a:ff:00:10:zz").is_err());
    }
}
