//! The XDP counting sink on a veth pair between two namespaces (root
//! only): every counter exact for a generator run plus hand-made
//! duplicate, reordered, stale and malformed packets; CONTROL packets and
//! other traffic pass to sockets; a new trial starts from zero without
//! clearing the bitmap; dropping the sink detaches it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay::core::NodeId;
use xorlay::wire::overlay::{DEFAULT_HOP_LIMIT, HEADER_LEN};
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};
use xorlay_bench::loadgen::{self, GenSpec, SinkResult};
use xorlay_bench::netns;
use xorlay_bench::traffic::build_data;
use xorlay_bench::wait_until;
use xorlay_bench::xdpsink::XdpSink;

/// How long any one expected event may take.
const TIMEOUT: Duration = Duration::from_secs(5);
const SENDER: &str = "198.18.101.1";
const RECEIVER: &str = "198.18.101.2";
const SINK_PORT: u16 = 9000;
const OTHER_PORT: u16 = 9002;
const PAYLOAD_LEN: usize = 64;

/// Namespaces this test made; dropping (also on panic) deletes them.
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = netns::run("ip", &["netns", "del", name]);
        }
    }
}

fn sh(args: &[&str]) {
    netns::run(args[0], &args[1..]).unwrap_or_else(|e| panic!("{e:#}"));
}

/// A UDP socket inside `ns` bound to `bind`, connected to `to` if given.
fn socket_in(ns: &str, bind: &str, to: Option<SocketAddr>) -> UdpSocket {
    let bind: SocketAddr = bind.parse().expect("an address");
    netns::in_netns(ns, move || {
        let socket = loadgen::bind_udp(bind, 1 << 20)?;
        if let Some(to) = to {
            socket.connect(to)?;
        }
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(socket)
    })
    .and_then(|t| t.join().map_err(|_| anyhow::anyhow!("panicked"))?)
    .unwrap_or_else(|e| panic!("socket in {ns} on {bind}: {e:#}"))
}

/// A data packet of trial `trial`, packet number `n`, stamped now.
fn data(src: &NodeId, dst: &NodeId, trial: u32, n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + PAYLOAD_LEN];
    let len = build_data(
        &mut buf,
        src,
        dst,
        (u64::from(trial) << 40) | n,
        PAYLOAD_LEN,
    );
    buf.truncate(len);
    buf
}

/// An overlay packet of `packet_type` carrying `payload`.
fn overlay(packet_type: PacketType, src: &NodeId, dst: &NodeId, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload.len()];
    let repr = OverlayRepr {
        packet_type,
        hop_limit: DEFAULT_HOP_LIMIT,
        flags: 0,
        payload_len: u16::try_from(payload.len()).expect("a short payload"),
        dst: *dst,
        src: *src,
        via: None,
    };
    let mut packet = OverlayPacket::new_unchecked(&mut buf[..]);
    repr.emit(&mut packet);
    packet.payload_mut().copy_from_slice(payload);
    buf
}

/// The next datagram on `socket` (within TIMEOUT).
fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let len = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("nothing arrived within {TIMEOUT:?}: {e}"));
    buf[..len].to_vec()
}

/// The counters of `r`, for assertion messages (its histogram's Debug
/// output is thousands of zeros).
fn summary(r: &SinkResult) -> String {
    format!(
        "received {} valid {} unique {} duplicates {} reordered {} stale {} malformed {} latencies {}",
        r.received,
        r.valid,
        r.unique,
        r.duplicates,
        r.reordered,
        r.stale,
        r.malformed,
        r.latency.len()
    )
}

fn result(sink: &XdpSink) -> SinkResult {
    sink.result()
        .unwrap_or_else(|e| panic!("reading the sink: {e:#}"))
}

/// Waits until the sink has counted `received` packets of this trial.
fn wait_received(sink: &XdpSink, received: u64) -> SinkResult {
    let arrived = wait_until(TIMEOUT, || result(sink).received >= received);
    let r = result(sink);
    assert!(
        arrived,
        "{received} packets counted within {TIMEOUT:?}: {}",
        summary(&r)
    );
    r
}

fn assert_empty(r: &SinkResult) {
    assert_eq!(r.received, 0, "{}", summary(r));
    assert_eq!(r.valid, 0, "{}", summary(r));
    assert_eq!(r.unique, 0, "{}", summary(r));
    assert_eq!(r.duplicates, 0, "{}", summary(r));
    assert_eq!(r.reordered, 0, "{}", summary(r));
    assert_eq!(r.stale, 0, "{}", summary(r));
    assert_eq!(r.malformed, 0, "{}", summary(r));
    assert_eq!(r.latency.len(), 0, "{}", summary(r));
}

#[test]
fn xdp_sink_counts_exactly_and_passes_the_rest() {
    let pid = std::process::id();
    let (a, b) = (format!("xls{pid}a"), format!("xls{pid}b"));
    let mut namespaces = Namespaces { names: Vec::new() };
    for name in [&a, &b] {
        sh(&["ip", "netns", "add", name]);
        namespaces.names.push(name.clone());
    }
    // Made inside a, its peer moved into b: no host interface is touched.
    sh(&[
        "ip", "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
    ]);
    sh(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        &format!("{SENDER}/24"),
        "dev",
        "va",
    ]);
    sh(&[
        "ip",
        "-n",
        &b,
        "addr",
        "add",
        &format!("{RECEIVER}/24"),
        "dev",
        "vb",
    ]);
    sh(&["ip", "-n", &a, "link", "set", "dev", "va", "up"]);
    sh(&["ip", "-n", &b, "link", "set", "dev", "vb", "up"]);

    let me = NodeId::from_bytes([0x5b; 32]);
    let other = NodeId::from_bytes([0x5c; 32]);
    let src = NodeId::from_bytes([0x11; 32]);
    let mut sink = XdpSink::attach(&b, "vb", me, SINK_PORT, 1 << 20)
        .unwrap_or_else(|e| panic!("attaching the sink: {e:#}"));
    sink.begin_trial(5).expect("trial 5");

    let sink_addr: SocketAddr = format!("{RECEIVER}:{SINK_PORT}").parse().expect("addr");
    let other_addr: SocketAddr = format!("{RECEIVER}:{OTHER_PORT}").parse().expect("addr");
    let rx_sink_port = socket_in(&b, &format!("{RECEIVER}:{SINK_PORT}"), None);
    let rx_other_port = socket_in(&b, &format!("{RECEIVER}:{OTHER_PORT}"), None);
    let tx = socket_in(&a, &format!("{SENDER}:9001"), Some(sink_addr));
    let tx_other = socket_in(&a, &format!("{SENDER}:9003"), Some(other_addr));

    // XDP_PASS: junk to another port (this also resolves ARP), an overlay
    // CONTROL packet and a junk datagram to the sink's port.
    let junk = b"not an overlay packet".to_vec();
    tx_other.send(&junk).expect("send junk");
    assert_eq!(recv(&rx_other_port), junk, "junk on another port passes");
    let control = overlay(PacketType::Control, &src, &me, b"handshake");
    tx.send(&control).expect("send control");
    assert_eq!(recv(&rx_sink_port), control, "CONTROL passes");
    tx.send(&junk).expect("send junk");
    assert_eq!(recv(&rx_sink_port), junk, "junk on the sink's port passes");
    assert_empty(&result(&sink));

    // The generator, trial 5.
    let spec = GenSpec {
        src,
        dst: me,
        payload_len: PAYLOAD_LEN,
        rate_pps: 20_000,
        duration: Duration::from_millis(100),
        trial: 5,
    };
    let report = loadgen::generate(&tx, &spec, &AtomicBool::new(false));
    let sent = report.sent;
    assert!(sent > 100, "the generator sent: {report:?}");

    // Hand-made packets after it (one queue: they arrive in this order).
    let duplicate = data(&src, &me, 5, sent + 10);
    tx.send(&duplicate).expect("send");
    tx.send(&duplicate).expect("send the same bytes again");
    tx.send(&data(&src, &me, 5, sent + 5))
        .expect("send a lower number");
    tx.send(&data(&src, &me, 4, 7))
        .expect("send a stale packet");
    tx.send(&data(&src, &other, 5, sent + 20))
        .expect("send to another node");
    let short = overlay(
        PacketType::Data,
        &src,
        &me,
        &((5u64 << 40) | 1).to_be_bytes(),
    );
    tx.send(&short).expect("send a packet without a stamp");
    // A marker that passes: had any data packet passed, it would have
    // reached the socket before the marker.
    let marker = b"marker".to_vec();
    tx.send(&marker).expect("send the marker");
    assert_eq!(recv(&rx_sink_port), marker, "no data packet passed");

    let r = wait_received(&sink, sent + 6);
    eprintln!(
        "sent {sent} ({:.0} pps); latency p50 {} ns, p99 {} ns, max {} ns",
        report.offered_pps(),
        r.latency.value_at_quantile(0.5),
        r.latency.value_at_quantile(0.99),
        r.latency.max()
    );
    assert_eq!(r.received, sent + 6, "{}", summary(&r));
    assert_eq!(r.valid, sent + 3, "{}", summary(&r));
    assert_eq!(r.unique, sent + 2, "{}", summary(&r));
    assert_eq!(r.duplicates, 1, "{}", summary(&r));
    assert_eq!(r.reordered, 1, "{}", summary(&r));
    assert_eq!(r.stale, 1, "{}", summary(&r));
    assert_eq!(r.malformed, 2, "{}", summary(&r));
    assert_eq!(r.latency.len(), r.valid, "one latency per valid packet");
    assert!(r.latency.min() >= 1, "{}", summary(&r));
    assert!(
        r.latency.max() < 1_000_000_000,
        "one-way latency over a veth is below a second: {}",
        summary(&r)
    );
    assert_eq!(sink.valid().expect("valid"), sent + 3);
    assert_eq!(sink.unchecked().expect("unchecked"), 0);

    // A new trial reads as empty, and its bitmap and highest number are
    // fresh: packet 0 (seen in trial 5) is unique and in order.
    sink.begin_trial(6).expect("trial 6");
    assert_empty(&result(&sink));
    tx.send(&data(&src, &me, 6, 0)).expect("send");
    tx.send(&data(&src, &me, 5, 0)).expect("send");
    let r = wait_received(&sink, 2);
    assert_eq!(r.received, 2, "{}", summary(&r));
    assert_eq!(r.valid, 1, "{}", summary(&r));
    assert_eq!(r.unique, 1, "{}", summary(&r));
    assert_eq!(r.duplicates, 0, "{}", summary(&r));
    assert_eq!(r.reordered, 0, "{}", summary(&r));
    assert_eq!(r.stale, 1, "{}", summary(&r));
    assert_eq!(r.malformed, 0, "{}", summary(&r));
    assert_eq!(r.latency.len(), 1, "{}", summary(&r));

    // Dropping the sink detaches it: data packets reach the socket again.
    drop(sink);
    let after = data(&src, &me, 6, 1);
    tx.send(&after).expect("send");
    assert_eq!(recv(&rx_sink_port), after, "detached on drop");
    drop(namespaces);
}

/// An Ethernet frame: broadcast destination, `ethertype`, `payload`.
fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend([0x02, 0, 0, 0, 0, 1]);
    frame.extend(ethertype.to_be_bytes());
    frame.extend(payload);
    frame
}

/// A UDP header (no checksum: the program does not look at it) and
/// `payload`; `len_extra` is added to the length field.
fn udp(dst_port: u16, payload: &[u8], len_extra: u16) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("short") + len_extra;
    let mut datagram = Vec::new();
    datagram.extend(9001u16.to_be_bytes());
    datagram.extend(dst_port.to_be_bytes());
    datagram.extend(len.to_be_bytes());
    datagram.extend([0, 0]);
    datagram.extend(payload);
    datagram
}

/// An IPv4 packet with `options_words` 4-byte words of options and the
/// fragment field `frag_off`.
fn ipv4(options_words: u8, frag_off: u16, l4: &[u8]) -> Vec<u8> {
    let header_len = 20 + 4 * usize::from(options_words);
    let total = u16::try_from(header_len + l4.len()).expect("short");
    let mut packet = vec![0x40 | (5 + options_words), 0];
    packet.extend(total.to_be_bytes());
    packet.extend([0, 0]);
    packet.extend(frag_off.to_be_bytes());
    packet.extend([64, 17, 0, 0]); // TTL, UDP, checksum
    packet.extend([198, 18, 101, 1, 198, 18, 101, 2]);
    packet.extend(std::iter::repeat_n(1u8, 4 * usize::from(options_words))); // NOPs
    packet.extend(l4);
    packet
}

/// An IPv6 packet carrying UDP.
fn ipv6(l4: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend(u16::try_from(l4.len()).expect("short").to_be_bytes());
    packet.extend([17, 64]); // next header UDP, hop limit
    packet.extend(
        [0x20, 0x01, 0x0d, 0xb8]
            .iter()
            .chain(&[0u8; 11])
            .chain(&[1]),
    );
    packet.extend(
        [0x20, 0x01, 0x0d, 0xb8]
            .iter()
            .chain(&[0u8; 11])
            .chain(&[2]),
    );
    packet.extend(l4);
    packet
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[test]
fn xdp_sink_fixtures() {
    let ns = format!("xls{}f", std::process::id());
    let _namespaces = {
        sh(&["ip", "netns", "add", &ns]);
        Namespaces {
            names: vec![ns.clone()],
        }
    };
    sh(&[
        "ip", "-n", &ns, "link", "add", "fa", "type", "veth", "peer", "name", "fb",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "dev", "fa", "up"]);
    sh(&["ip", "-n", &ns, "link", "set", "dev", "fb", "up"]);
    let me = NodeId::from_bytes([0x5b; 32]);
    let src = NodeId::from_bytes([0x11; 32]);
    let mut sink = XdpSink::attach(&ns, "fb", me, SINK_PORT, 1024)
        .unwrap_or_else(|e| panic!("attaching the sink: {e:#}"));
    sink.begin_trial(7).expect("trial 7");

    let v4 = |overlay: &[u8]| ethernet(0x0800, &ipv4(0, 0, &udp(SINK_PORT, overlay, 0)));
    let mut hop_zero = data(&src, &me, 7, 10);
    hop_zero[4] = 0;
    let mut long_field = data(&src, &me, 7, 11);
    long_field[6..8].copy_from_slice(&100u16.to_be_bytes());
    let mut bad_version = data(&src, &me, 7, 12);
    bad_version[2] = 1; // wire format v1: not ours
    let mut bad_magic = data(&src, &me, 7, 13);
    bad_magic[0] = 0;
    let mut vlan = vec![0x00, 0x05, 0x08, 0x00]; // TCI, then IPv4
    vlan.extend(ipv4(0, 0, &udp(SINK_PORT, &data(&src, &me, 7, 2), 0)));
    let arp = ethernet(0x0806, &[0u8; 28]);
    let fixtures: Vec<(&str, Vec<u8>, u32)> = vec![
        ("IPv4 data", v4(&data(&src, &me, 7, 0)), XDP_DROP),
        (
            "IPv4 with options",
            ethernet(
                0x0800,
                &ipv4(2, 0, &udp(SINK_PORT, &data(&src, &me, 7, 1), 0)),
            ),
            XDP_DROP,
        ),
        ("802.1Q IPv4 data", ethernet(0x8100, &vlan), XDP_DROP),
        (
            "IPv6 data",
            ethernet(0x86dd, &ipv6(&udp(SINK_PORT, &data(&src, &me, 7, 3), 0))),
            XDP_DROP,
        ),
        (
            "IPv6 control",
            ethernet(
                0x86dd,
                &ipv6(&udp(
                    SINK_PORT,
                    &overlay(PacketType::Control, &src, &me, b"hello"),
                    0,
                )),
            ),
            XDP_PASS,
        ),
        (
            "another port",
            ethernet(0x0800, &ipv4(0, 0, &udp(9002, &data(&src, &me, 7, 20), 0))),
            XDP_PASS,
        ),
        (
            "first fragment",
            ethernet(
                0x0800,
                &ipv4(0, 0x2000, &udp(SINK_PORT, &data(&src, &me, 7, 21), 0)),
            ),
            XDP_PASS,
        ),
        ("overlay version 1", v4(&bad_version), XDP_PASS),
        ("bad magic", v4(&bad_magic), XDP_PASS),
        (
            "truncated header",
            v4(&data(&src, &me, 7, 22)[..40]),
            XDP_PASS,
        ),
        (
            "UDP length past the frame",
            ethernet(
                0x0800,
                &ipv4(0, 0, &udp(SINK_PORT, &data(&src, &me, 7, 23), 8)),
            ),
            XDP_PASS,
        ),
        ("ARP", arp, XDP_PASS),
        ("hop limit 0: malformed", v4(&hop_zero), XDP_DROP),
        ("payload_len too long: malformed", v4(&long_field), XDP_DROP),
        ("trial 6: stale", v4(&data(&src, &me, 6, 4)), XDP_DROP),
        (
            "duplicate of the highest",
            v4(&data(&src, &me, 7, 3)),
            XDP_DROP,
        ),
        ("duplicate, reordered", v4(&data(&src, &me, 7, 1)), XDP_DROP),
    ];
    for (description, frame, verdict) in &fixtures {
        let got = sink
            .run_frame(frame)
            .unwrap_or_else(|e| panic!("{description}: {e:#}"));
        assert_eq!(got, *verdict, "{description}");
    }
    // Counted: 4 unique, 2 duplicates, 2 malformed, 1 stale.
    let r = result(&sink);
    assert_eq!(r.received, 9, "{}", summary(&r));
    assert_eq!(r.valid, 6, "{}", summary(&r));
    assert_eq!(r.unique, 4, "{}", summary(&r));
    assert_eq!(r.duplicates, 2, "{}", summary(&r));
    assert_eq!(r.reordered, 1, "{}", summary(&r));
    assert_eq!(r.stale, 1, "{}", summary(&r));
    assert_eq!(r.malformed, 2, "{}", summary(&r));
    assert_eq!(r.latency.len(), r.valid, "{}", summary(&r));
}
