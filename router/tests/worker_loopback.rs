//! The io_uring worker on real sockets: loopback only (127.0.0.1, [::1]).
//! Every wait is on a condition, bounded by `TIMEOUT`.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use xorlay::core::topology::Topology;
use xorlay::core::{NextHopTable, NodeId};
use xorlay::io::stats::{WorkerCounters, WorkerStats};
use xorlay::io::topology::{Hop, SharedTable, hop_for};
#[path = "common/mod.rs"]
mod common;
use common::xdp::test_run;
use common::{frames, wait_until};
use xorlay::config::Dataplane;
use xorlay::core::shed::{CreditConfig, Credits};
use xorlay::io::backlog::{BacklogMap, CreditState, WorkerCredits};
use xorlay::io::worker::{Upcall, UpcallSender, Worker, WorkerConfig, WorkerError, WorkerLinks};
use xorlay::wire::overlay::{HEADER_LEN, golden};
use xorlay::wire::{OverlayError, OverlayPacket, OverlayRepr, PacketType};

/// Upper bound of every wait in these tests.
const TIMEOUT: Duration = Duration::from_secs(10);
/// This node's ID starts with 0x80; neighbor 0x40 is closer to 0x41.
const LOCAL: u8 = 0x80;
const NEIGHBOR: u8 = 0x40;
const TOWARD_NEIGHBOR: u8 = 0x41;
/// A destination no neighbor is closer to than this node (0x40 vs 0x80).
const NO_ROUTE: u8 = 0xc0;

fn id(first: u8) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[0] = first;
    NodeId::from_bytes(bytes)
}

/// An overlay data packet.
fn packet(dst: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let repr = OverlayRepr {
        packet_type: PacketType::Data,
        hop_limit,
        flags: 0,
        payload_len: u16::try_from(payload.len()).expect("small payload"),
        dst: id(dst),
        src: id(0x22),
        via: None,
    };
    let mut bytes = vec![0xa5; HEADER_LEN + payload.len()];
    let mut view = OverlayPacket::new_unchecked(&mut bytes);
    repr.emit(&mut view);
    view.payload_mut().copy_from_slice(payload);
    bytes
}

/// `bytes` as a relay sends it on: hop limit one less.
fn relayed(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut view = OverlayPacket::new_unchecked(&mut out);
    let hop_limit = view.hop_limit();
    view.set_hop_limit(hop_limit - 1);
    out
}

fn table(listen: SocketAddr, neighbors: &[(u8, SocketAddr)]) -> NextHopTable<Hop> {
    NextHopTable::new(
        id(LOCAL),
        neighbors
            .iter()
            .map(|(n, addr)| (id(*n), hop_for(&listen, *addr))),
    )
    .expect("valid table")
}

/// A plain UDP socket standing in for a neighbor or the local application.
fn sink(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind sink {addr}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    socket
}

/// The next datagram on `socket`, or a panic after `TIMEOUT`.
fn recv_within(socket: &UdpSocket, what: &str) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let mut got = None;
    wait_until(TIMEOUT, || match socket.recv(&mut buf) {
        Ok(n) => {
            got = Some(buf[..n].to_vec());
            true
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(e) => panic!("{what}: recv failed: {e}"),
    });
    got.unwrap_or_else(|| panic!("{what}: nothing arrived within {TIMEOUT:?}"))
}

/// Asserts that nothing is queued on `socket` right now.
fn assert_empty(socket: &UdpSocket, what: &str) {
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => panic!(
            "{what}: unexpected datagram of {n} bytes: {:02x?}",
            &buf[..n.min(16)]
        ),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("{what}: recv failed: {e}"),
    }
    socket.set_nonblocking(false).expect("blocking");
}

/// Every outcome a received datagram can have; a published snapshot always
/// has `rx_packets == outcomes(c)`.
fn outcomes(c: &WorkerCounters) -> u64 {
    c.outcomes()
}

/// A worker under test; stopped and joined on drop.
struct Harness {
    worker: Option<Worker>,
    stop: Arc<AtomicBool>,
    stats: Arc<WorkerStats>,
    table: SharedTable,
    sender: UdpSocket,
}

impl Harness {
    fn start(config: WorkerConfig, table: NextHopTable<Hop>) -> Harness {
        Harness::start_indexed(0, config, table)
    }

    /// Starts worker `index` (its thread is named `xorlay-worker-{index}`).
    fn start_indexed(index: usize, config: WorkerConfig, table: NextHopTable<Hop>) -> Harness {
        Harness::start_with(index, config, Topology::open(table), None)
    }

    /// Starts a worker on `topology`, handing upcalls to `upcalls`.
    fn start_with(
        index: usize,
        config: WorkerConfig,
        topology: Topology<Hop>,
        upcalls: Option<UpcallSender>,
    ) -> Harness {
        Harness::start_full(index, config, topology, upcalls, None)
    }

    /// Starts a worker on `topology`, with upcalls and XDP credits if given.
    fn start_full(
        index: usize,
        config: WorkerConfig,
        topology: Topology<Hop>,
        upcalls: Option<UpcallSender>,
        credits: Option<WorkerCredits>,
    ) -> Harness {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WorkerStats::default());
        let shared: SharedTable = Arc::new(ArcSwap::from_pointee(topology));
        let links = WorkerLinks {
            table: Arc::clone(&shared),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            upcalls,
            credits,
        };
        let worker = Worker::spawn(index, &config, links)
            .unwrap_or_else(|e| panic!("spawn worker on {}: {e}", config.listen));
        let sender_addr = if config.listen.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let sender = UdpSocket::bind(sender_addr).expect("bind sender");
        Harness {
            worker: Some(worker),
            stop,
            stats,
            table: shared,
            sender,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.worker.as_ref().expect("running").local_addr()
    }

    fn send(&self, bytes: &[u8]) {
        self.sender
            .send_to(bytes, self.addr())
            .unwrap_or_else(|e| panic!("send to worker: {e}"));
    }

    fn counters(&self) -> WorkerCounters {
        self.stats.snapshot()
    }

    /// Waits until the published counters satisfy `done`; panics with them
    /// after `TIMEOUT`.
    fn wait_for(&self, what: &str, done: impl Fn(&WorkerCounters) -> bool) -> WorkerCounters {
        let mut c = self.counters();
        if !wait_until(TIMEOUT, || {
            c = self.counters();
            done(&c)
        }) {
            panic!("{what}: not reached within {TIMEOUT:?}; counters: {c:#?}");
        }
        c
    }

    /// Sets stop and joins; panics if the worker failed.
    fn stop(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let worker = self.worker.take().expect("running");
        worker
            .join()
            .unwrap_or_else(|e| panic!("worker ended with an error: {e}"));
        started.elapsed()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn config(listen: &str) -> WorkerConfig {
    WorkerConfig::new(
        listen.parse().expect("literal"),
        Dataplane {
            ring_entries: 256,
            buffer_count: 256,
            buffer_size: 2048,
            recv_buffer_bytes: 1 << 20,
            app: None,
            installs_per_sec: 0,
            gso: true,
            worker_nice: 0,
            ..Dataplane::default()
        },
    )
}

/// Sends `count` packets toward the neighbor and checks that they arrive at
/// `neighbor` byte-identical except for the hop limit.
fn forward_roundtrip(listen: &str, neighbor_addr: &str) {
    let neighbor = sink(neighbor_addr);
    let listen_addr: SocketAddr = listen.parse().expect("literal");
    let harness = Harness::start(
        config(listen),
        table(
            listen_addr,
            &[(NEIGHBOR, neighbor.local_addr().expect("addr"))],
        ),
    );
    let count = 100usize;
    let sent: Vec<Vec<u8>> = (0..count)
        .map(|i| packet(TOWARD_NEIGHBOR, 64, format!("payload {i}").as_bytes()))
        .collect();
    for bytes in &sent {
        harness.send(bytes);
    }
    let mut expected: Vec<Vec<u8>> = sent.iter().map(|b| relayed(b)).collect();
    let mut received: Vec<Vec<u8>> = (0..count)
        .map(|i| recv_within(&neighbor, &format!("forwarded packet {i}")))
        .collect();
    expected.sort();
    received.sort();
    assert_eq!(
        received, expected,
        "forwarded bytes differ from sent bytes with hop limit - 1"
    );
    let bytes: u64 = sent.iter().map(|b| b.len() as u64).sum();
    let c = harness.wait_for("all forwarded", |c| c.forwarded == count as u64);
    assert_eq!(c.rx_packets, count as u64, "{c:#?}");
    assert_eq!(c.rx_bytes, bytes, "{c:#?}");
    assert_eq!(c.tx_bytes, bytes, "{c:#?}");
    assert_eq!(c.tx_errors, 0, "{c:#?}");
    assert!(c.tx_batches >= 1 && c.tx_batches <= count as u64, "{c:#?}");
    assert_eq!(outcomes(&c), c.rx_packets, "{c:#?}");
    assert_empty(&neighbor, "neighbor after the forwarded packets");
    harness.stop();
}

#[test]
fn forwards_to_the_closer_neighbor_ipv4() {
    forward_roundtrip("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn forwards_to_the_closer_neighbor_ipv6() {
    forward_roundtrip("[::1]:0", "[::1]:0");
}

#[test]
fn delivers_to_the_local_address() {
    let app = sink("127.0.0.1:0");
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.app = Some(app.local_addr().expect("addr"));
    let neighbor = sink("127.0.0.1:0");
    let harness = Harness::start(
        cfg.clone(),
        table(
            cfg.listen,
            &[(NEIGHBOR, neighbor.local_addr().expect("addr"))],
        ),
    );
    let count = 20usize;
    let sent: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            packet(
                LOCAL,
                if i == 0 { 1 } else { 64 },
                format!("for me {i}").as_bytes(),
            )
        })
        .collect();
    for bytes in &sent {
        harness.send(bytes);
    }
    let mut received: Vec<Vec<u8>> = (0..count)
        .map(|i| recv_within(&app, &format!("delivered packet {i}")))
        .collect();
    let mut expected = sent.clone();
    expected.sort();
    received.sort();
    // Delivered whole and unchanged, even at hop limit 1.
    assert_eq!(received, expected);
    let c = harness.wait_for("all delivered", |c| c.delivered == count as u64);
    assert_eq!(
        (c.rx_packets, c.forwarded, c.tx_errors),
        (count as u64, 0, 0),
        "{c:#?}"
    );
    assert_eq!(outcomes(&c), c.rx_packets, "{c:#?}");
    assert_empty(&neighbor, "neighbor (nothing is forwarded)");
    harness.stop();
}

#[test]
fn delivers_without_a_local_address_by_counting() {
    let cfg = config("127.0.0.1:0");
    let harness = Harness::start(cfg.clone(), table(cfg.listen, &[]));
    for i in 0..5u8 {
        harness.send(&packet(LOCAL, 64, &[i]));
    }
    let c = harness.wait_for("delivered", |c| c.delivered == 5);
    assert_eq!((c.rx_packets, c.tx_batches), (5, 0), "{c:#?}");
    harness.stop();
}

#[test]
fn drops_are_counted_by_reason_and_nothing_is_sent() {
    let neighbor = sink("127.0.0.1:0");
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.buffer_size = 256; // so a 400-byte datagram is truncated
    let harness = Harness::start(
        cfg.clone(),
        table(
            cfg.listen,
            &[(NEIGHBOR, neighbor.local_addr().expect("addr"))],
        ),
    );
    let malformed = golden::malformed();
    for (_, bytes, _) in &malformed {
        harness.send(bytes);
    }
    harness.send(&packet(NO_ROUTE, 64, b"nowhere"));
    harness.send(&packet(TOWARD_NEIGHBOR, 1, b"last hop"));
    harness.send(&packet(TOWARD_NEIGHBOR, 64, &[0u8; 400 - HEADER_LEN]));
    let total = malformed.len() as u64 + 3;
    let c = harness.wait_for("every drop counted", |c| {
        c.rx_packets == total && outcomes(c) == total
    });

    let count =
        |reason: OverlayError| malformed.iter().filter(|(_, _, r)| *r == reason).count() as u64;
    let expected = WorkerCounters {
        rx_packets: total,
        rx_bytes: c.rx_bytes,
        drop_truncated: count(OverlayError::Truncated),
        drop_bad_magic: count(OverlayError::BadMagic),
        drop_bad_version: count(OverlayError::BadVersion),
        drop_bad_type: count(OverlayError::BadType),
        drop_bad_length: count(OverlayError::BadLength),
        drop_hop_limit_zero: count(OverlayError::HopLimitZero),
        drop_no_route: 1,
        drop_hop_limit_exceeded: 1,
        drop_rx_truncated: 1,
        ..WorkerCounters::default()
    };
    assert_eq!(c, expected);
    let rx_bytes: u64 = malformed
        .iter()
        .map(|(_, b, _)| b.len() as u64)
        .sum::<u64>()
        + (HEADER_LEN + 7 + HEADER_LEN + 8 + 400) as u64;
    assert_eq!(c.rx_bytes, rx_bytes);

    // A probe sent after the drops is the first thing the neighbor sees:
    // none of the dropped packets went out.
    let probe = packet(TOWARD_NEIGHBOR, 64, b"probe");
    harness.send(&probe);
    assert_eq!(recv_within(&neighbor, "probe"), relayed(&probe));
    let c = harness.wait_for("probe forwarded", |c| c.forwarded == 1);
    assert_eq!(c.tx_batches, 1, "{c:#?}");
    harness.stop();
}

/// Drops the kernel counted on the UDP socket bound to `port` on loopback
/// (the `drops` column of /proc/net/udp or udp6).
fn kernel_drops(addr: SocketAddr) -> u64 {
    let file = if addr.is_ipv4() {
        "/proc/net/udp"
    } else {
        "/proc/net/udp6"
    };
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let port = format!(":{:04X}", addr.port());
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            if !local.ends_with(&port) {
                return None;
            }
            fields.last()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn burst_is_fully_accounted_for_and_does_not_deadlock() {
    let neighbor = sink("127.0.0.1:0");
    let neighbor_addr = neighbor.local_addr().expect("addr");
    let mut cfg = config("127.0.0.1:0");
    // Few buffers and a small SQ: the buffer ring runs dry and batches
    // overflow the submission queue.
    cfg.dataplane.buffer_count = 64;
    cfg.dataplane.ring_entries = 16;
    cfg.dataplane.recv_buffer_bytes = 256 << 10;
    let harness = Harness::start(cfg.clone(), table(cfg.listen, &[(NEIGHBOR, neighbor_addr)]));

    // The neighbor counts what arrives and notes the probe.
    let done = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let probe_seen = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, arrived, probe_seen) = (
            Arc::clone(&done),
            Arc::clone(&arrived),
            Arc::clone(&probe_seen),
        );
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = neighbor.recv(&mut buf) {
                    arrived.fetch_add(1, Ordering::Relaxed);
                    if buf[..n].ends_with(b"probe") {
                        probe_seen.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let burst = 20_000u64;
    let started = Instant::now();
    let mut sent = 0u64;
    for i in 0..burst {
        harness.send(&packet(TOWARD_NEIGHBOR, 64, &i.to_be_bytes()));
        sent += 1;
        assert!(
            started.elapsed() < TIMEOUT,
            "sending the burst took over {TIMEOUT:?}"
        );
    }
    // The worker's socket queue is FIFO: once a probe sent after the burst
    // has been forwarded, the worker has taken every burst packet the
    // kernel kept. Probes repeat in case one is lost to a full queue.
    let probe = packet(TOWARD_NEIGHBOR, 64, b"probe");
    let seen = wait_until(TIMEOUT, || {
        harness.send(&probe);
        sent += 1;
        wait_until(Duration::from_millis(50), || {
            probe_seen.load(Ordering::Relaxed)
        })
    });
    assert!(
        seen,
        "no probe came through within {TIMEOUT:?} after the burst: {:#?}",
        harness.counters()
    );
    // Every datagram sent was either taken by the worker or dropped by the
    // kernel on the worker's socket, and every one taken has one outcome.
    let worker_addr = harness.addr();
    let c = harness.wait_for("every datagram accounted for", |c| {
        c.rx_packets + kernel_drops(worker_addr) == sent && outcomes(c) == c.rx_packets
    });
    let lost_in_kernel = kernel_drops(worker_addr);
    eprintln!(
        "burst: sent {sent} in {:?}, worker took {} (kernel dropped {lost_in_kernel}), forwarded {}, neighbor got {}, {c:#?}",
        started.elapsed(),
        c.rx_packets,
        c.forwarded,
        arrived.load(Ordering::Relaxed)
    );
    assert_eq!(
        c.drop_malformed() + c.drop_no_route + c.drop_hop_limit_exceeded + c.drop_rx_truncated,
        0,
        "{c:#?}"
    );
    assert_eq!(c.tx_errors, 0, "{c:#?}");
    assert!(
        c.forwarded > 0 && c.forwarded + c.drop_tx_full == c.rx_packets,
        "{c:#?}"
    );
    // What the worker sent reached the neighbor or was dropped there.
    let c = harness.wait_for("neighbor accounted for", |c| {
        arrived.load(Ordering::Relaxed) + kernel_drops(neighbor_addr) == c.forwarded
    });
    // Still alive after running dry: one more packet goes through.
    let before = c.forwarded;
    harness.send(&packet(TOWARD_NEIGHBOR, 64, b"after"));
    harness.wait_for("forwarding after the burst", |c| c.forwarded == before + 1);
    harness.stop();
    done.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");
}

/// Sends `rounds` rounds of `per_round` equal-length packets toward the
/// neighbor, each round received in full (byte-identical but for the hop
/// limit) before the next; `between` runs after each round. Returns the
/// number sent.
fn equal_length_rounds(
    harness: &Harness,
    neighbor: &UdpSocket,
    rounds: usize,
    per_round: usize,
    mut between: impl FnMut(usize) -> bool,
) -> u64 {
    let mut total = 0u64;
    for round in 0..rounds {
        let sent: Vec<Vec<u8>> = (0..per_round)
            .map(|i| {
                packet(
                    TOWARD_NEIGHBOR,
                    64,
                    format!("r{round:03} p{i:05}").as_bytes(),
                )
            })
            .collect();
        for bytes in &sent {
            harness.send(bytes);
        }
        let mut expected: Vec<Vec<u8>> = sent.iter().map(|b| relayed(b)).collect();
        let mut received: Vec<Vec<u8>> = (0..per_round)
            .map(|i| recv_within(neighbor, &format!("round {round} packet {i}")))
            .collect();
        expected.sort();
        received.sort();
        assert_eq!(
            received, expected,
            "round {round}: every packet once, hop limit - 1"
        );
        total += per_round as u64;
        if !between(round) {
            break;
        }
    }
    total
}

/// An IPv4 worker whose table has one neighbor: a loopback socket.
fn toward_one_neighbor() -> (Harness, UdpSocket) {
    let neighbor = sink("127.0.0.1:0");
    let cfg = config("127.0.0.1:0");
    let harness = Harness::start(
        cfg.clone(),
        table(
            cfg.listen,
            &[(NEIGHBOR, neighbor.local_addr().expect("addr"))],
        ),
    );
    (harness, neighbor)
}

#[test]
fn forwards_to_one_neighbor_leave_as_gso_sends() {
    let (harness, neighbor) = toward_one_neighbor();
    // Packets sent back to back reach the worker in batches of several, so
    // GSO sends happen; nothing else about batching is promised.
    let total = equal_length_rounds(&harness, &neighbor, 20, 200, |_| true);
    let c = harness.wait_for("all forwarded", |c| c.forwarded == total);
    assert!(c.tx_gso_sends > 0, "no GSO send in {total} packets: {c:#?}");
    assert!(c.tx_gso_segments >= 2 * c.tx_gso_sends, "{c:#?}");
    assert!(c.tx_gso_segments <= c.forwarded, "{c:#?}");
    assert_eq!((c.tx_gso_refused, c.tx_errors), (0, 0), "{c:#?}");
    assert_eq!(outcomes(&c), c.rx_packets, "{c:#?}");
    assert_empty(&neighbor, "neighbor after the rounds");
    harness.stop();
}

#[test]
fn a_refused_gso_send_goes_out_one_by_one_and_grouping_stops() {
    let (harness, neighbor) = toward_one_neighbor();
    // SO_NO_CHECK: the kernel refuses UDP GSO on this socket (EINVAL), as
    // it does on paths that cannot segment.
    let one: libc::c_int = 1;
    let fd = std::os::fd::AsRawFd::as_raw_fd(harness.worker.as_ref().expect("running").socket());
    // SAFETY: setsockopt on a valid socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
    // Rounds until a group was refused, then more rounds: all delivered.
    let mut refused_after = None;
    let total = equal_length_rounds(&harness, &neighbor, 40, 200, |round| {
        let c = harness.counters();
        if refused_after.is_none() && c.tx_gso_refused > 0 {
            refused_after = Some((round, c.tx_gso_sends));
        }
        refused_after.is_none_or(|(at, _)| round < at + 5)
    });
    let (_, sends_at_refusal) = refused_after.expect("no GSO send was refused in 40 rounds");
    let c = harness.wait_for("all forwarded", |c| c.forwarded == total);
    // Every GSO send on this socket is refused (several may have been in
    // flight before the first refusal came back), and once one came back
    // the worker made no more.
    assert!(c.tx_gso_refused >= 1, "{c:#?}");
    assert_eq!(c.tx_gso_refused, c.tx_gso_sends, "{c:#?}");
    assert_eq!(
        c.tx_gso_sends, sends_at_refusal,
        "no GSO sends after: {c:#?}"
    );
    assert_eq!(c.tx_errors, 0, "{c:#?}");
    assert_eq!(outcomes(&c), c.rx_packets, "{c:#?}");
    assert_empty(&neighbor, "neighbor after the rounds");
    harness.stop();
}

#[test]
fn a_new_table_changes_the_next_hop() {
    let first = sink("127.0.0.1:0");
    let second = sink("127.0.0.1:0");
    let cfg = config("127.0.0.1:0");
    let harness = Harness::start(
        cfg.clone(),
        table(cfg.listen, &[(NEIGHBOR, first.local_addr().expect("addr"))]),
    );
    let batch = |tag: &str| -> Vec<Vec<u8>> {
        (0..10)
            .map(|i| packet(TOWARD_NEIGHBOR, 64, format!("{tag} {i}").as_bytes()))
            .collect()
    };
    let before = batch("before");
    for bytes in &before {
        harness.send(bytes);
    }
    let got: HashSet<Vec<u8>> = (0..before.len())
        .map(|_| recv_within(&first, "before swap"))
        .collect();
    assert_eq!(
        got,
        before.iter().map(|b| relayed(b)).collect::<HashSet<_>>()
    );

    // 0x42 is also closer to 0x41 than this node, and now the only neighbor.
    harness.table.store(Arc::new(Topology::open(table(
        cfg.listen,
        &[(0x42, second.local_addr().expect("addr"))],
    ))));
    let after = batch("after");
    for bytes in &after {
        harness.send(bytes);
    }
    let got: HashSet<Vec<u8>> = (0..after.len())
        .map(|_| recv_within(&second, "after swap"))
        .collect();
    assert_eq!(
        got,
        after.iter().map(|b| relayed(b)).collect::<HashSet<_>>()
    );
    assert_empty(&first, "old next hop after the swap");
    let c = harness.wait_for("all forwarded", |c| c.forwarded == 20);
    assert_eq!(outcomes(&c), 20, "{c:#?}");
    harness.stop();
}

/// The /proc directory of this process's one thread named `name`.
fn thread_dir(name: &str) -> std::path::PathBuf {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let dir = entry.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            found.push(dir);
        }
    }
    assert_eq!(found.len(), 1, "expected exactly one thread named {name}");
    found.remove(0)
}

/// CPU time, in nanoseconds, of this process's thread named `name`.
fn thread_cpu_ns(name: &str) -> u64 {
    let schedstat = std::fs::read_to_string(thread_dir(name).join("schedstat")).expect("schedstat");
    schedstat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat starts with CPU nanoseconds")
}

/// The nice value of this process's thread named `name` (field 19 of its
/// stat; the fields after the command name start at field 3).
fn thread_nice(name: &str) -> i64 {
    let stat = std::fs::read_to_string(thread_dir(name).join("stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("(comm)") + 1..];
    let field = after.split_whitespace().nth(19 - 3).expect("field 19");
    field.parse().expect("nice is a number")
}

#[test]
fn the_worker_thread_runs_at_its_configured_nice() {
    // Indices 8 and 9: thread names no other test in this binary uses.
    for (index, nice) in [(8, -7), (9, 3)] {
        let mut cfg = config("127.0.0.1:0");
        cfg.dataplane.worker_nice = nice;
        let harness = Harness::start_indexed(index, cfg.clone(), table(cfg.listen, &[]));
        assert_eq!(
            thread_nice(&format!("xorlay-worker-{index}")),
            i64::from(nice),
            "worker {index}"
        );
        harness.stop();
    }
    // Out of range: refused before anything starts, naming the key.
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.worker_nice = -21;
    let message = cfg
        .validate()
        .map(|()| String::new())
        .unwrap_or_else(|e| e.to_string());
    assert!(
        message.contains("worker_nice") && message.contains("-21"),
        "{message}"
    );
}

#[test]
fn idle_worker_sleeps_and_stops_within_a_second() {
    let cfg = config("127.0.0.1:0");
    // Index 7: a thread name no other test in this binary uses.
    let harness = Harness::start_indexed(7, cfg.clone(), table(cfg.listen, &[]));
    let addr = harness.addr();
    let before = thread_cpu_ns("xorlay-worker-7");
    let idle = Duration::from_millis(500);
    thread::sleep(idle);
    let busy = Duration::from_nanos(thread_cpu_ns("xorlay-worker-7") - before);
    // A few wake-ups per WAIT_SLICE cost microseconds; spinning would cost
    // the whole interval.
    assert!(
        busy < idle / 10,
        "idle worker used {busy:?} of CPU in {idle:?}"
    );
    let took = harness.stop();
    assert!(took < Duration::from_secs(1), "join took {took:?}");
    // The socket is closed: the port can be bound again without SO_REUSEPORT.
    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("port {addr} still held after join: {e}"));
}

#[test]
fn stop_under_load_drains_and_joins_within_a_second() {
    let neighbor = sink("127.0.0.1:0");
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.buffer_count = 64;
    let harness = Harness::start(
        cfg.clone(),
        table(
            cfg.listen,
            &[(NEIGHBOR, neighbor.local_addr().expect("addr"))],
        ),
    );
    let worker_addr = harness.addr();
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = Arc::clone(&flooding);
        thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind flooder");
            let bytes = packet(TOWARD_NEIGHBOR, 64, b"flood");
            let started = Instant::now();
            while flooding.load(Ordering::Relaxed) && started.elapsed() < TIMEOUT {
                let _ = socket.send_to(&bytes, worker_addr);
            }
        })
    };
    harness.wait_for("traffic flowing", |c| c.forwarded > 1000);
    let took = harness.stop();
    flooding.store(false, Ordering::Relaxed);
    flood.join().expect("flood thread");
    assert!(
        took < Duration::from_secs(1),
        "join under load took {took:?}"
    );
}

#[test]
fn workers_share_a_port_and_a_taken_port_is_reported() {
    let cfg = config("127.0.0.1:0");
    let first = Harness::start(cfg.clone(), table(cfg.listen, &[]));
    let shared = WorkerConfig {
        listen: first.addr(),
        ..cfg.clone()
    };
    let second = Harness::start(shared.clone(), table(shared.listen, &[]));
    assert_eq!(second.addr(), first.addr());
    second.stop();
    first.stop();

    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken = WorkerConfig {
        listen: holder.local_addr().expect("addr"),
        ..cfg
    };
    let stop = Arc::new(AtomicBool::new(false));
    let shared_table: SharedTable = Arc::new(ArcSwap::from_pointee(Topology::open(table(
        taken.listen,
        &[],
    ))));
    let links = WorkerLinks {
        table: shared_table,
        stats: Arc::default(),
        stop: Arc::clone(&stop),
        upcalls: None,
        credits: None,
    };
    let err = match Worker::spawn(0, &taken, links) {
        Ok(worker) => {
            stop.store(true, Ordering::Relaxed);
            let _ = worker.join();
            panic!("bound {} although another socket holds it", taken.listen);
        }
        Err(e) => e,
    };
    assert!(matches!(err, WorkerError::AddressInUse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&taken.listen.port().to_string()) && message.contains("underlay.listen"),
        "{message}"
    );
}

/// The sender's address as the worker's socket sees it.
fn sender_addr(harness: &Harness) -> SocketAddr {
    harness.sender.local_addr().expect("sender bound")
}

#[test]
fn data_only_from_allowed_neighbors_and_the_local_application() {
    let neighbor = sink("127.0.0.1:0");
    let app = sink("127.0.0.1:0");
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.app = Some(app.local_addr().expect("addr"));
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let routes = || table(listen, &[(NEIGHBOR, neighbor.local_addr().expect("addr"))]);
    // Nobody is allowed yet.
    let harness = Harness::start_with(0, cfg, Topology::new(routes(), HashSet::new()), None);
    let bytes = packet(TOWARD_NEIGHBOR, 64, b"stranger");
    harness.send(&bytes);
    harness.wait_for("stranger dropped", |c| c.drop_not_neighbor == 1);
    assert_empty(&neighbor, "stranger's packet");
    // Once its address is an authenticated neighbor's, its data flows.
    let allowed: HashSet<SocketAddr> = [sender_addr(&harness)].into_iter().collect();
    harness
        .table
        .store(Arc::new(Topology::new(routes(), allowed)));
    harness.send(&bytes);
    assert_eq!(recv_within(&neighbor, "allowed sender"), relayed(&bytes));
    // The local application is never on the allowlist and always accepted.
    harness
        .table
        .store(Arc::new(Topology::new(routes(), HashSet::new())));
    let from_app = packet(TOWARD_NEIGHBOR, 64, b"from the app");
    app.send_to(&from_app, harness.addr())
        .expect("send from app");
    assert_eq!(recv_within(&neighbor, "app's packet"), relayed(&from_app));
    let c = harness.wait_for("app counted", |c| c.app_rx == 1 && c.forwarded == 2);
    assert_eq!(c.drop_not_neighbor, 1, "{c:#?}");
    assert_eq!(outcomes(&c), c.rx_packets, "{c:#?}");
}

/// A worker with an upcall channel and install requests on.
fn start_with_upcalls(neighbor: &UdpSocket) -> (Harness, crossbeam_channel::Receiver<Upcall>) {
    let (tx, rx) = crossbeam_channel::bounded(64);
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.installs_per_sec = 1000;
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let routes = table(listen, &[(NEIGHBOR, neighbor.local_addr().expect("addr"))]);
    (
        Harness::start_with(0, cfg, Topology::open(routes), Some(tx)),
        rx,
    )
}

fn next_upcall(rx: &crossbeam_channel::Receiver<Upcall>) -> Upcall {
    rx.recv_timeout(TIMEOUT)
        .expect("an upcall within the timeout")
}

#[test]
fn control_packets_go_up_and_are_never_forwarded() {
    let neighbor = sink("127.0.0.1:0");
    let (harness, rx) = start_with_upcalls(&neighbor);
    let mut control = packet(TOWARD_NEIGHBOR, 1, b"handshake");
    OverlayPacket::new_unchecked(&mut control[..]).set_packet_type(PacketType::Control);
    harness.send(&control);
    match next_upcall(&rx) {
        Upcall::Control(p) => {
            assert_eq!(p.bytes, control);
            assert_eq!(p.from, sender_addr(&harness));
        }
        other => panic!("expected the control packet, got {other:?}"),
    }
    let c = harness.wait_for("control counted", |c| c.control_rx == 1);
    assert_eq!(c.forwarded, 0);
    assert_empty(&neighbor, "control packet");
}

#[test]
fn install_requests_once_per_destination_and_outcome() {
    let neighbor = sink("127.0.0.1:0");
    let (harness, rx) = start_with_upcalls(&neighbor);
    for _ in 0..5 {
        harness.send(&packet(TOWARD_NEIGHBOR, 64, b"routed"));
        harness.send(&packet(NO_ROUTE, 64, b"unroutable"));
    }
    let c = harness.wait_for("all handled", |c| c.forwarded == 5 && c.drop_no_route == 5);
    assert_eq!(
        c.install_requests, 2,
        "one per destination and outcome: {c:#?}"
    );
    let mut got = vec![next_upcall(&rx), next_upcall(&rx)];
    got.sort_by_key(|u| format!("{u:?}"));
    assert!(
        got.contains(&Upcall::Route {
            dst: id(TOWARD_NEIGHBOR),
            next_hop: id(NEIGHBOR),
            via: None,
        }),
        "{got:?}"
    );
    assert!(
        got.contains(&Upcall::NoRoute { dst: id(NO_ROUTE) }),
        "{got:?}"
    );
    assert!(
        rx.try_recv().is_err(),
        "repeats within a second are not sent"
    );
}

#[test]
fn no_install_requests_when_the_rate_is_zero() {
    let neighbor = sink("127.0.0.1:0");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let routes = table(listen, &[(NEIGHBOR, neighbor.local_addr().expect("addr"))]);
    let harness = Harness::start_with(0, config("127.0.0.1:0"), Topology::open(routes), Some(tx));
    harness.send(&packet(TOWARD_NEIGHBOR, 64, b"routed"));
    let c = harness.wait_for("forwarded", |c| c.forwarded == 1);
    assert_eq!(c.install_requests + c.install_limited, 0);
    assert!(rx.try_recv().is_err());
}

/// An Ethernet/IPv4/UDP frame to the overlay port carrying `overlay`
/// (no UDP checksum).
fn xdp_frame(overlay: &[u8]) -> Vec<u8> {
    frames::udp_frame(
        ([0; 6], [0; 6]),
        "198.18.0.1:4799".parse().expect("literal"),
        "198.18.0.2:4799".parse().expect("literal"),
        frames::Shape {
            ttl: 64,
            no_udp_checksum: true,
            ..frames::PLAIN
        },
        overlay,
    )
}

#[test]
fn a_worker_takes_back_xdp_credits_lost_before_its_socket_and_lifts_its_window_at_exit() {
    // The real object (loaded, attached nowhere), its filter off: every
    // valid data frame run through it passes to the workers and is charged
    // to worker 0's credits.
    let mut ebpf = xorlay::io::bpf::load_with(
        4799,
        xorlay::io::bpf::LoadOptions {
            filter_neighbors: false,
        },
    )
    .unwrap_or_else(|e| panic!("loading XDP: {e}"));
    let backlog = BacklogMap::take(&mut ebpf)
        .unwrap_or_else(|e| panic!("mapping xorlay_backlog: {e}"))
        .expect("the object has xorlay_backlog");
    backlog.set_workers(1).expect("one worker");
    let neighbor = sink("127.0.0.1:0");
    // A small receive buffer: the smallest window, 16.
    let mut cfg = config("127.0.0.1:0");
    cfg.dataplane.recv_buffer_bytes = 64 * 1024;
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let routes = table(listen, &[(NEIGHBOR, neighbor.local_addr().expect("addr"))]);
    let harness = Harness::start_full(
        0,
        cfg.clone(),
        Topology::open(routes),
        None,
        backlog.credits(0),
    );
    // The window: the receive buffer half full, in CreditConfig's truesize.
    let expected = Credits::new(CreditConfig::default())
        .window(u32::try_from(cfg.dataplane.recv_buffer_bytes).expect("fits"));
    assert_eq!(expected, 16);
    let state = || backlog.peek(0).expect("worker 0");
    let settle = |what: &str, done: &dyn Fn(CreditState) -> bool| {
        assert!(
            wait_until(TIMEOUT, || done(state())),
            "{what}: not within {TIMEOUT:?}: {:?}",
            state()
        );
    };
    settle("window set", &|c| c.window == expected);
    // XDP passes 16 data packets that never reach the socket (run through
    // BPF_PROG_TEST_RUN, whose XDP_PASS goes nowhere): lost credits, the
    // whole window. XDP now sheds everything for this worker.
    let frame = xdp_frame(&packet(TOWARD_NEIGHBOR, 64, b"lost"));
    let run = || test_run(&ebpf, "a data frame", &frame, 0).0;
    for _ in 0..16 {
        assert_eq!(run(), 2, "XDP_PASS");
    }
    assert_eq!(state().admitted, 16);
    assert_eq!(run(), 1, "XDP_DROP: the window is full");
    // The idle worker (woken every WAIT_SLICE_CLOSED while its window is
    // closed) finds its queue empty and takes them back.
    settle("lost credits taken back", &|c| {
        c.consumed == 16 && c.unread == 0
    });
    assert_eq!(
        harness.counters().credit_resyncs,
        1,
        "{:#?}",
        harness.counters()
    );
    // Reading goes on as usual.
    harness.send(&packet(TOWARD_NEIGHBOR, 64, b"read"));
    assert_eq!(
        recv_within(&neighbor, "forwarded"),
        relayed(&packet(TOWARD_NEIGHBOR, 64, b"read"))
    );
    harness.stop();
    assert_eq!(
        state().window,
        0,
        "a stopped worker leaves no window behind"
    );
}
