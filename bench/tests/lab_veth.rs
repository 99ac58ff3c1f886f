//! The fast path on veth as containers and VMs use it, with real `xorlay
//! run` routers in namespaces of their own:
//!
//! - TX checksum offload on (veth's default): a sender's UDP leaves its
//!   socket with an unfinished (CHECKSUM_PARTIAL) checksum; the relay's XDP
//!   fast path forwards it, and the receiver must find every checksum valid
//!   (`UdpInCsumErrors` in its namespace stays 0) and get every packet.
//! - A hairpin burst: thousands of frames the relay's fast path sends back
//!   out of the interface they came in on (XDP_TX into a veth whose peer is
//!   a bridge port). Afterwards the link must still carry the fast path's
//!   XDP_TX frames (every one of a paced batch is delivered) and the relay's
//!   own traffic (a datagram from its namespace reaches the sender's, the
//!   sessions stay up).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay::core::NodeId;
use xorlay::wire::OverlayPacket;
use xorlay::wire::overlay::{HEADER_LEN, golden};
use xorlay_bench::lab::{Lab, LabOptions, Topology};
use xorlay_bench::traffic::{self, Sink};
use xorlay_bench::{netns, wait_until};

mod common;

use common::{counter, udp_counter};

const PACKETS: u64 = 2_000;
/// Frames of the hairpin burst.
const BURST: usize = 5_000;

/// Whether `ethtool -k` reports TX checksumming on for `dev` in `ns`.
fn tx_checksum_on(ns: &str, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-k", dev])
        .output()
        .unwrap_or_else(|e| panic!("ethtool -k {dev} in {ns}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "tx-checksumming: on")
}

/// gen -> r1 -> sink with TX checksum offload left on: every packet that r1
/// forwards in XDP reaches the sink with a valid UDP checksum.
#[test]
fn offloaded_checksums_arrive_valid_through_the_fast_path() {
    let mut lab = Lab::new(LabOptions {
        topology: Topology::Chain,
        routers: 1,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));
    lab.wait_converged(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    for node in &lab.nodes {
        for iface in &node.ifaces {
            assert!(
                tx_checksum_on(&node.netns, &iface.name),
                "{} {}: TX checksum offload is off; the test needs it on",
                node.role,
                iface.name
            );
        }
    }
    let sink_ns = lab.sink().netns.clone();
    let r1_ns = lab.nodes[1].netns.clone();
    let errors_before = [
        udp_counter(&sink_ns, "InCsumErrors"),
        udp_counter(&r1_ns, "InCsumErrors"),
    ];

    let sink = Sink::start(&sink_ns, Lab::app_addr(), lab.sink().id(), PACKETS)
        .unwrap_or_else(|e| panic!("sink: {e:#}"));
    // Paced well below what the workers take, so that only a checksum
    // could lose a packet (the machine may be busy with other work).
    let flow = common::gen_to_sink(&lab, PACKETS, 5_000);
    let sent = common::send_from_gen(&lab, flow, Arc::new(AtomicBool::new(false)))
        .join()
        .expect("generator")
        .expect("generator ran");
    assert_eq!(sent.sent, PACKETS, "generator errors: {}", sent.errors);
    let arrived = wait_until(Duration::from_secs(10), || sink.valid() >= PACKETS);
    let report = sink.finish().expect("sink report");
    let r1 = lab.stats(1).expect("stats");
    let errors_after = [
        udp_counter(&sink_ns, "InCsumErrors"),
        udp_counter(&r1_ns, "InCsumErrors"),
    ];
    assert_eq!(
        errors_after, errors_before,
        "UDP checksum errors (sink, r1) went from {errors_before:?} to {errors_after:?}; r1: {r1}"
    );
    if !arrived {
        let sink_stats = lab.stats(lab.sink_index()).expect("stats");
        panic!(
            "only {} of {PACKETS} packets reached the sink: {report:?}; UDP receive buffer \
             errors at the sink {}, at r1 {}; r1: {r1}; sink: {sink_stats}",
            report.valid,
            udp_counter(&sink_ns, "RcvbufErrors"),
            udp_counter(&r1_ns, "RcvbufErrors"),
        );
    }
    assert_eq!(report.valid, PACKETS);
    // The fast path carried them: the cache fills after the first packets.
    let fast = counter(&r1, "/xdp/fwd_tx") + counter(&r1, "/xdp/fwd_redirect");
    assert!(
        fast >= PACKETS / 2,
        "r1: only {fast} of {PACKETS} on the XDP fast path: {r1}"
    );
    assert_eq!(counter(&r1, "/xdp/pass_unresolved"), 0, "r1: {r1}");
}

/// An overlay data packet from `src` to `dst`, hop limit 64.
fn data_to(src: &NodeId, dst: &NodeId, body: &[u8]) -> Vec<u8> {
    let mut bytes = golden::DATA_PING[..HEADER_LEN].to_vec();
    bytes.extend_from_slice(body);
    let mut packet = OverlayPacket::new_unchecked(&mut bytes[..]);
    packet.set_src(src);
    packet.set_dst(dst);
    packet.set_hop_limit(64);
    packet.set_payload_len(body.len() as u16);
    assert_eq!(OverlayPacket::new_unchecked(&bytes[..]).validate(), Ok(()));
    bytes
}

/// A datagram from namespace `from_ns` (bound to `from`) reaches `to` in
/// namespace `to_ns`: one probe every 100 ms until one arrives or
/// `timeout` passes. Returns the probes sent, or None if none arrived.
fn probe(
    from_ns: &str,
    from: SocketAddr,
    to_ns: &str,
    to: SocketAddr,
    timeout: Duration,
) -> Option<u32> {
    let receiver = netns::in_netns(to_ns, move || {
        let socket = UdpSocket::bind(to)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut buf = [0u8; 64];
        Ok(wait_until(
            timeout + Duration::from_millis(200),
            || matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"probe"),
        ))
    })
    .unwrap_or_else(|e| panic!("receiver thread: {e:#}"));
    // The receiver binds first: give it a moment (bounded, and a probe
    // lost to the race is resent).
    let sender = netns::in_netns(from_ns, move || {
        let socket = UdpSocket::bind(from)?;
        let mut sent = 0u32;
        // A probe, then up to 100 ms for the receiver to have it; the
        // receiver's answer (joined below) says whether one arrived.
        wait_until(timeout, || {
            // Errors count as lost probes (a wedged link may refuse sends).
            if socket.send_to(b"probe", to).is_ok() {
                sent += 1;
            }
            wait_until(Duration::from_millis(100), || receiver.is_finished())
        });
        Ok((sent, receiver))
    })
    .unwrap_or_else(|e| panic!("sender thread: {e:#}"));
    let (sent, receiver) = sender.join().expect("sender").expect("sender ran");
    let got = receiver.join().expect("receiver").expect("receiver ran");
    got.then_some(sent)
}

/// Sites lab: gen on site A, r1 and r2 on both sites. gen sends r1 a burst
/// of data packets addressed to gen itself: r1's route goes back out of its
/// site-A interface, so its fast path answers each with XDP_TX into the
/// bridge port. The relay's own traffic must still get through afterwards.
#[test]
fn hairpin_burst_leaves_the_link_usable() {
    let mut lab = Lab::new(LabOptions {
        topology: Topology::Sites,
        routers: 2,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));
    lab.wait_converged(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let gen_ns = lab.generator().netns.clone();
    let r1_ns = lab.nodes[1].netns.clone();
    let gen_a = lab.generator().ifaces[0].addr;
    let r1_a = lab.nodes[1]
        .addr_on(0)
        .unwrap_or_else(|| panic!("r1 has no site-A address"));
    let r1_a_ip = match r1_a {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => panic!("the lab is IPv4"),
    };

    // Before: the relay's stack reaches gen over site A.
    let probe_port = 9301;
    assert!(
        probe(
            &r1_ns,
            SocketAddr::from((r1_a_ip, probe_port)),
            &gen_ns,
            SocketAddr::from((gen_a, probe_port)),
            Duration::from_secs(5),
        )
        .is_some(),
        "r1 cannot reach gen over site A even before the burst"
    );

    let gen_id = lab.generator().id();
    // Any source will do: a random one.
    let mut src = [0u8; 32];
    getrandom::getrandom(&mut src).expect("random bytes");
    let src = NodeId::from_bytes(src);
    let frames: Vec<Vec<u8>> = (0..BURST)
        .map(|i| data_to(&src, &gen_id, &(i as u32).to_be_bytes()))
        .collect();
    // Warm the route cache: the first packets miss and r1's workers install
    // the route to gen; then the burst is all fast path.
    let bind = SocketAddr::V4(SocketAddrV4::new(gen_a, 0));
    let warm = frames[..10].to_vec();
    traffic::send_raw_in(&gen_ns, bind, r1_a, warm, 1).expect("warm-up");
    let installed = wait_until(Duration::from_secs(5), || {
        lab.stats(1)
            .is_ok_and(|s| counter(&s, "/control_io/routes_installed") >= 1)
    });
    assert!(installed, "r1 installed no route: {:?}", lab.stats(1));
    let before = lab.stats(1).expect("stats");
    let sent = traffic::send_raw_in(&gen_ns, bind, r1_a, frames, 1).expect("burst");
    assert_eq!(sent, BURST as u64);
    let hairpinned = wait_until(Duration::from_secs(5), || {
        lab.stats(1).is_ok_and(|s| {
            counter(&s, "/xdp/fwd_tx") >= counter(&before, "/xdp/fwd_tx") + BURST as u64 / 2
        })
    });
    let after = lab.stats(1).expect("stats");
    assert!(
        hairpinned,
        "r1 sent fewer than {} of the burst back with XDP_TX: before {before} after {after}",
        BURST / 2
    );

    // After: the fast path's XDP_TX still reaches gen. A peer with NAPI
    // only through GRO takes 256 XDP_TX frames into its ring and never
    // drains it; every later XDP_TX frame is lost (xdp_tx_errors), and
    // stack sends that take the peer's NAPI path are dropped (tx_dropped).
    let gen_before = lab.stats(0).expect("gen stats");
    let paced = 200u64;
    let one = vec![data_to(&src, &gen_id, b"after")];
    traffic::send_raw_in(&gen_ns, bind, r1_a, one, paced).expect("paced");
    let delivered = wait_until(Duration::from_secs(10), || {
        lab.stats(0).is_ok_and(|s| {
            counter(&s, "/total/delivered") >= counter(&gen_before, "/total/delivered") + paced
        })
    });
    assert!(
        delivered,
        "after an XDP_TX burst of {BURST}, r1's XDP_TX frames no longer reach gen: \
         gen before {gen_before}, after {:?}; r1 {:?}",
        lab.stats(0),
        lab.stats(1)
    );

    // And the relay's own sends on that veth still get through, both a
    // plain datagram and its overlay sessions.
    let probes = probe(
        &r1_ns,
        SocketAddr::from((r1_a_ip, probe_port + 1)),
        &gen_ns,
        SocketAddr::from((gen_a, probe_port + 1)),
        Duration::from_secs(5),
    );
    let stats = lab.stats(1).expect("stats");
    assert!(
        probes.is_some(),
        "after an XDP_TX burst of {BURST}, r1's own datagrams no longer reach gen over site A \
         (the veth is wedged?): r1 {stats}"
    );
    lab.wait_converged(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("after the burst: {e:#}"));
    // The router reports both loss counters of each XDP interface; veth
    // has XDP transmit error counters, so both are read.
    let tx_loss = stats
        .pointer("/tx_loss")
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("no tx_loss in r1's stats: {stats}"));
    assert_eq!(
        tx_loss.len(),
        lab.nodes[1].ifaces.len(),
        "one tx_loss entry per XDP interface: {stats}"
    );
    for entry in tx_loss {
        for figure in ["/tx_dropped/value", "/xdp_tx_errors/value"] {
            assert!(
                entry.pointer(figure).is_some_and(|v| v.is_u64()),
                "{figure} unread: {entry}"
            );
        }
    }
}
