//! The frame generators (root): the live-frames program run once on a dirty
//! page (plain BPF_PROG_TEST_RUN), and two namespaces joined by a veth pair,
//! generator in one, the batched sink in the other, paced and unpaced: the
//! AF_PACKET ring on every machine, live frames where the machine allows
//! them (and the probe that decides).

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay::core::NodeId;
use xorlay_bench::geneval::{self, GEN_DEV, SINK_DEV};
use xorlay_bench::livegen::{self, LIVE_HEADER_LEN, LiveFrame};
use xorlay_bench::loadgen::{GenReport, GenSpec, SinkResult, SinkThread};
use xorlay_bench::netns;
use xorlay_bench::ringgen;
use xorlay_bench::systems::{GenMode, tasks_run_ns};

use common::udp_counter;
use xorlay_bench::traffic::monotonic_ns;
use xorlay_bench::wait_until;

/// Addresses of the frames the plain test runs render (no namespace).
const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
const PACED_PPS: u64 = 20_000;
const RUN: Duration = Duration::from_millis(200);
/// How long the sink may take to receive what was sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `gen-eval`'s two namespaces joined by a veth pair ([`GEN_DEV`] to
/// [`SINK_DEV`]), GRO on at the sink's end (frames XDP transmits into a veth
/// need NAPI on its peer); removed on drop, also on panic.
struct Pair {
    pair: geneval::Pair,
    /// One pair at a time (the namespaces' names are the process's), and
    /// the generators spin on CPU 0: paced runs and CPU readings must not
    /// share it with another test's generator. Released after `pair`.
    _one: std::sync::MutexGuard<'static, ()>,
}

/// Held by the live [`Pair`].
static ONE_PAIR: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Pair {
    fn new() -> Pair {
        let one = ONE_PAIR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pair = geneval::Pair::new().unwrap_or_else(|e| panic!("{e:#}"));
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &pair.sink_ns,
                "ethtool",
                "-K",
                SINK_DEV,
                "gro",
                "on",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        Pair { pair, _one: one }
    }

    /// A frame with `payload_len` bytes of payload between random node IDs.
    fn frame(&self, payload_len: usize) -> LiveFrame {
        self.pair
            .frame_with(payload_len)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

impl std::ops::Deref for Pair {
    type Target = geneval::Pair;

    fn deref(&self) -> &geneval::Pair {
        &self.pair
    }
}

/// The generator's CPU: pinned (gap-free, two workers) when the machine has
/// a second CPU for the sink.
fn gen_cpu() -> Option<usize> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus >= 2).then_some(0)
}

fn spec(frame: &LiveFrame, rate_pps: u64, trial: u32) -> GenSpec {
    GenSpec {
        src: frame.overlay_src,
        dst: frame.overlay_dst,
        payload_len: frame.payload_len,
        rate_pps,
        duration: RUN,
        trial,
    }
}

fn sink(pair: &Pair, frame: &LiveFrame, trial: u32, capacity: u64) -> SinkThread {
    SinkThread::start(
        &pair.sink_ns,
        SocketAddr::V4(frame.dst),
        frame.overlay_dst,
        trial,
        capacity,
        None,
    )
    .unwrap_or_else(|e| panic!("sink: {e:#}"))
}

#[test]
fn program_rewrites_a_dirty_page_and_stamps_it() {
    let frame = LiveFrame {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: SocketAddrV4::new(GEN_ADDR, 9001),
        dst: SocketAddrV4::new(SINK_ADDR, 9000),
        overlay_src: NodeId::from_bytes([1; 32]),
        overlay_dst: NodeId::from_bytes([2; 32]),
        payload_len: 40,
        flows: 1,
    };
    let clean = frame.build();
    let page = vec![0xa5u8; clean.len()];
    let before = monotonic_ns();
    let (verdict, out) = livegen::render_once(&frame, 9, &page).unwrap_or_else(|e| panic!("{e:#}"));
    let after = monotonic_ns();
    assert_eq!(verdict, 3, "XDP_TX");
    assert_eq!(out.len(), clean.len());
    assert_eq!(&out[..LIVE_HEADER_LEN], &clean[..LIVE_HEADER_LEN]);
    let word = |at: usize| u64::from_be_bytes(out[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(word(LIVE_HEADER_LEN), 9u64 << 40, "trial 9, packet 0");
    let stamp = word(LIVE_HEADER_LEN + 8);
    assert!(
        (before..=after).contains(&stamp),
        "stamp {stamp} outside [{before}, {after}]"
    );
    assert!(
        out[LIVE_HEADER_LEN + 16..].iter().all(|&b| b == 0xa5),
        "bytes past the stamp are left alone"
    );
}

#[test]
fn flows_cycle_the_overlay_source_and_touch_nothing_else() {
    const FLOWS: u32 = 300; // > 255: the XOR reaches past the last byte
    const SRC_AT: usize = 14 + 20 + 8 + 40; // Ethernet, IPv4, UDP, overlay src
    let frame = LiveFrame {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: SocketAddrV4::new(GEN_ADDR, 9001),
        dst: SocketAddrV4::new(SINK_ADDR, 9000),
        overlay_src: NodeId::from_bytes([0x5a; 32]),
        overlay_dst: NodeId::from_bytes([2; 32]),
        payload_len: 40,
        flows: FLOWS,
    };
    let clean = frame.build();
    let mut sources = std::collections::HashSet::new();
    for n in [0u64, 1, 2, 255, 256, 299, 300, 301, 1_000_003] {
        let (verdict, out) = livegen::render_nth(&frame, 4, &clean, n)
            .unwrap_or_else(|e| panic!("packet {n}: {e:#}"));
        assert_eq!(verdict, 3, "XDP_TX");
        let flow = u32::try_from(n % u64::from(FLOWS)).expect("small");
        let mut expected = clean[..LIVE_HEADER_LEN].to_vec();
        for (byte, x) in expected[SRC_AT..SRC_AT + 4]
            .iter_mut()
            .zip(flow.to_be_bytes())
        {
            *byte ^= x;
        }
        assert_eq!(&out[..LIVE_HEADER_LEN], &expected[..], "packet {n}");
        let seq = u64::from_be_bytes(
            out[LIVE_HEADER_LEN..LIVE_HEADER_LEN + 8]
                .try_into()
                .expect("8 bytes"),
        );
        assert_eq!(seq, (4u64 << 40) | n, "sequence number of packet {n}");
        sources.insert(out[SRC_AT..SRC_AT + 32].to_vec());
    }
    // Packets 0 and 300 share flow 0, 1 and 301 flow 1; 2, 255, 256, 299
    // and 1_000_003 (flow 103) are flows of their own.
    assert_eq!(sources.len(), 7, "distinct sources");
    // One flow: the source is the frame's own for every packet.
    let one = LiveFrame { flows: 1, ..frame };
    let (_, out) = livegen::render_nth(&one, 4, &clean, 77).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(&out[SRC_AT..SRC_AT + 32], &[0x5a; 32][..]);
}

/// Waits until `sink` has all `sent` frames or its count has stood still
/// for 100 ms (the veth may drop some: it may never have them all).
fn settle(sink: &SinkThread, sent: u64) {
    let (mut last, mut still_polls) = (u64::MAX, 0);
    wait_until(DRAIN_TIMEOUT, || {
        let valid = sink.valid();
        still_polls = if valid == last { still_polls + 1 } else { 0 };
        last = valid;
        valid >= sent || still_polls >= 10
    });
}

/// Sends with `generator` (live or ring), paced then unpaced, and checks
/// what the sink got.
fn frames_reach_the_sink_paced_and_unpaced(generator: GenMode) {
    let pair = Pair::new();
    let frame = pair.frame(64);
    let run = |spec: &GenSpec| {
        let stop = Arc::new(AtomicBool::new(false));
        match generator {
            GenMode::Live => {
                livegen::generate_live(&pair.gen_ns, GEN_DEV, &frame, spec, gen_cpu(), stop)
            }
            GenMode::Ring => {
                ringgen::generate_ring(&pair.gen_ns, GEN_DEV, &frame, spec, None, gen_cpu(), stop)
            }
            other => panic!("{other:?} is no frame generator"),
        }
    };

    // Paced: every packet the generator sent arrives, once.
    let trial = 11;
    let sink_paced = sink(&pair, &frame, trial, 1 << 20);
    let report = run(&spec(&frame, PACED_PPS, trial))
        .unwrap_or_else(|e| panic!("{generator:?} paced run: {e:#}"));
    eprintln!(
        "{generator:?} paced: sent {} in {:.3} s ({:.0} pps), {} errors",
        report.sent,
        report.elapsed_s,
        report.offered_pps(),
        report.errors
    );
    let expected = PACED_PPS as f64 * RUN.as_secs_f64();
    assert!(
        report.sent as f64 >= 0.5 * expected && report.sent as f64 <= 1.1 * expected,
        "sent {} for {expected} expected",
        report.sent
    );
    wait_until(DRAIN_TIMEOUT, || sink_paced.valid() >= report.sent);
    let seen = sink_paced
        .finish()
        .unwrap_or_else(|e| panic!("paced sink: {e:#}"));
    assert_eq!(seen.valid, report.sent, "valid: {seen:?}");
    assert_eq!(seen.unique, report.sent, "unique");
    assert_eq!(seen.duplicates, 0, "duplicates");
    assert_eq!(seen.malformed, 0, "malformed");
    assert_eq!(seen.stale, 0, "stale");
    assert_eq!(seen.latency.len(), report.sent, "one latency sample each");

    // Unpaced: as fast as the generator goes; the veth drops what it cannot
    // take, so the sink sees some of it.
    let trial = 12;
    let sink_unpaced = sink(&pair, &frame, trial, 1 << 26);
    let report =
        run(&spec(&frame, 0, trial)).unwrap_or_else(|e| panic!("{generator:?} unpaced run: {e:#}"));
    eprintln!(
        "{generator:?} unpaced: sent {} in {:.3} s ({:.0} pps), {} errors",
        report.sent,
        report.elapsed_s,
        report.offered_pps(),
        report.errors
    );
    assert!(report.sent > 0, "unpaced sent nothing");
    settle(&sink_unpaced, report.sent);
    let seen = sink_unpaced
        .finish()
        .unwrap_or_else(|e| panic!("unpaced sink: {e:#}"));
    eprintln!(
        "{generator:?} unpaced: sink got {} valid ({:.1}% of sent)",
        seen.valid,
        100.0 * seen.valid as f64 / report.sent as f64
    );
    assert!(seen.valid > 0, "the sink got nothing: {seen:?}");
    assert!(seen.valid <= report.sent, "more than sent: {seen:?}");
    assert_eq!(seen.duplicates, 0, "duplicates");
    assert_eq!(seen.malformed, 0, "malformed");
}

/// The ring generator needs no live frames: it runs on every machine.
#[test]
fn ring_frames_reach_the_sink_paced_and_unpaced() {
    frames_reach_the_sink_paced_and_unpaced(GenMode::Ring);
}

/// `--generator frames`: live frames where the machine allows them, the
/// ring elsewhere; either way the frames arrive.
#[test]
fn the_probed_generator_reaches_the_sink_paced_and_unpaced() {
    let (generator, fallback) = GenMode::Frames.resolve();
    eprintln!("probed: {generator:?} ({fallback:?})");
    assert!(matches!(generator, GenMode::Live | GenMode::Ring));
    assert_eq!(
        fallback.is_some(),
        generator == GenMode::Ring,
        "a fallback says why, and only a fallback"
    );
    frames_reach_the_sink_paced_and_unpaced(generator);
}

/// The probe tells the truth: where it says live frames are refused, a live
/// run is refused too; where it allows them, a live run sends.
#[test]
fn the_live_frames_probe_agrees_with_a_live_run() {
    let pair = Pair::new();
    let frame = pair.frame(64);
    let probe = livegen::probe_live_frames();
    let run = livegen::generate_live(
        &pair.gen_ns,
        GEN_DEV,
        &frame,
        &GenSpec {
            duration: Duration::from_millis(50),
            ..spec(&frame, PACED_PPS, 3)
        },
        None,
        Arc::new(AtomicBool::new(false)),
    );
    match (&probe, &run) {
        (Ok(()), Ok(report)) => assert!(report.sent > 0, "allowed, yet nothing sent"),
        (Err(_), Err(_)) => {}
        _ => panic!("the probe said {probe:?}, a live run gave {run:?}"),
    }
}

/// Runs the ring generator unpaced for [`RUN`] as trial `trial` into a
/// sink; returns its report and, once the sink has settled, what the sink
/// saw.
fn ring_unpaced(pair: &Pair, frame: &LiveFrame, trial: u32) -> (GenReport, SinkResult) {
    let sink = sink(pair, frame, trial, 1 << 26);
    let report = ringgen::generate_ring(
        &pair.gen_ns,
        GEN_DEV,
        frame,
        &spec(frame, 0, trial),
        None,
        gen_cpu(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap_or_else(|e| panic!("ring: {e:#}"));
    assert!(report.sent > 0, "nothing sent");
    settle(&sink, report.sent);
    let seen = sink.finish().unwrap_or_else(|e| panic!("sink: {e:#}"));
    (report, seen)
}

/// Unpaced, every ring slot is a UDP GSO super-frame that the kernel cuts
/// into frames. With the generator's TX checksum offload off the kernel
/// completes each frame's UDP checksum from the pseudo-header sum the
/// generator wrote, and the sink's socket verifies it: frames arrive, none
/// with a bad checksum.
#[test]
fn ring_super_frames_carry_valid_udp_checksums() {
    let pair = Pair::new();
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.gen_ns,
            "ethtool",
            "-K",
            GEN_DEV,
            "tx",
            "off",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let frame = pair.frame(64);
    let before = udp_counter(&pair.sink_ns, "InCsumErrors");
    let (report, seen) = ring_unpaced(&pair, &frame, 21);
    let bad = udp_counter(&pair.sink_ns, "InCsumErrors") - before;
    eprintln!(
        "ring, checksums by the kernel: sent {}, sink got {} valid, {bad} checksum errors",
        report.sent, seen.valid
    );
    assert_eq!(bad, 0, "frames with a bad UDP checksum");
    assert!(seen.valid > 0, "the sink got nothing: {seen:?}");
    assert!(seen.valid <= report.sent, "more than sent: {seen:?}");
    assert_eq!(seen.duplicates, 0, "duplicates");
    assert_eq!(seen.malformed, 0, "malformed");
}

/// The receiving veth processes the ring's frames in its own NAPI thread
/// (veth takes that path only for skbs it deems eligible for GRO, which
/// the ring's are with TSO off on the sending interface), not in the
/// generator's softirq: in the lab, a relay's receive work is charged to
/// the relay's CPU, not the generator's.
#[test]
fn ring_frames_are_received_in_the_peers_napi_thread() {
    let pair = Pair::new();
    let napi = pair
        .threaded_sink_napi()
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!napi.is_empty(), "no NAPI thread appeared for {SINK_DEV}");
    let cpu = || tasks_run_ns(&napi).expect("schedstat of the NAPI threads");
    let frame = pair.frame(64);
    let napi_before = cpu();
    let (report, seen) = ring_unpaced(&pair, &frame, 31);
    let napi_ns = cpu() - napi_before;
    eprintln!(
        "ring: sent {}, sink got {}, the sink's NAPI thread ran {:.1} ms ({:.0} ns a frame)",
        report.sent,
        seen.valid,
        napi_ns as f64 / 1e6,
        napi_ns as f64 / seen.valid.max(1) as f64
    );
    assert!(seen.valid > 0, "the sink got nothing: {seen:?}");
    // Receiving costs at least tens of ns a frame wherever it runs; in
    // the generator's softirq the NAPI thread would not run at all.
    assert!(
        napi_ns >= 20 * seen.valid,
        "the sink's NAPI thread ran {napi_ns} ns for {} frames: the frames were received elsewhere",
        seen.valid
    );
}
