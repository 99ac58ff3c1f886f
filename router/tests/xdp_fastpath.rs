//! The XDP program's rate limits and route-cache fast path, run by the
//! kernel with BPF_PROG_TEST_RUN on crafted frames.
//!
//! - Rate limits: HANDSHAKE_1 per source and globally, data per neighbor:
//!   a burst passes, the next packet is dropped under its own counter; other
//!   control packets are never metered; a bucket refills.
//! - Route cache fixtures, each with its verdict, exactly one counter up by
//!   one, and the exact output frame: hits forwarded over IPv4 and IPv6
//!   (XDP_TX and XDP_REDIRECT, every byte of the Ethernet/IP/UDP/overlay
//!   output asserted, checksums verified here independently), misses,
//!   negative entries, stale generations, expired entries, hop-limit
//!   expiry, packets for this node, cross-family entries, unresolved
//!   neighbors, frames the fast path does not rewrite.
//! - A differential test: random next-hop tables and thousands of random
//!   destinations; the route userspace would install from
//!   `core::forward::decide` goes into the cache, and the XDP output equals
//!   what the worker would send (hop limit decremented, same payload, UDP
//!   from our address:port to the neighbor's); NoRoute destinations get a
//!   negative entry and XDP drops them.
//!
//! `bpf_fib_lookup` needs a real route and neighbor entry, so these tests
//! run on a thread inside a network namespace of their own (`xlt-fp-<pid>-
//! <tag>`, deleted on drop, also on panic) with three veth pairs, addresses
//! from 198.18.0.0/15 and fd00::/8 and permanent neighbor entries, and pass
//! the ingress interface to TEST_RUN. Nothing is attached to any interface
//! and nothing is pinned. Needs root (CAP_BPF, CAP_NET_ADMIN,
//! CAP_SYS_ADMIN) and iproute2.

mod common;

use common::frames::{
    PLAIN, Shape, partial_checksum, udp_check, udp_frame, verify_checksums, with_udp_check,
};
use common::xdp::{RawNeighbors, RawRoutes, test_run};
use common::{Rng, TestNetns, if_index, mac_text, run};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use aya::Ebpf;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use xorlay::core::shed::Budget;
use xorlay::core::{DropReason, NextHopTable, NodeId, Route, Verdict, decide, route};
use xorlay::io::backlog::{BACKLOG_WORKERS_MAX, BacklogMap};
use xorlay::io::bpf::{
    self, BpfError, LoadOptions, NeighborMap, RateLimit, RateLimits, RouteCache, RouteEntry,
    STAT_COUNT, XdpCounters,
};
use xorlay::wire::overlay::{HEADER_LEN, HEADER_VIA_LEN, golden};
use xorlay::wire::{OverlayPacket, PacketType, consts};

/// The overlay port the program is loaded with (and our UDP source port).
const PORT: u16 = 47991;
/// The flow-hash source port of the neighbor that sends to us.
const SRC_PORT: u16 = 51234;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const PASS_OTHER: u32 = consts::XDP_PASS_OTHER;
const PASS_OVERLAY: u32 = consts::XDP_PASS_OVERLAY;
const DROP_NOT_NEIGHBOR: u32 = consts::XDP_DROP_NOT_NEIGHBOR;
const DROP_HANDSHAKE_SOURCE_RATE: u32 = consts::XDP_DROP_HANDSHAKE_SOURCE_RATE;
const DROP_HANDSHAKE_GLOBAL_RATE: u32 = consts::XDP_DROP_HANDSHAKE_GLOBAL_RATE;
const DROP_NEIGHBOR_RATE: u32 = consts::XDP_DROP_NEIGHBOR_RATE;
const DROP_NO_ROUTE: u32 = consts::XDP_DROP_NO_ROUTE;
const DROP_HOP_LIMIT_EXCEEDED: u32 = consts::XDP_DROP_HOP_LIMIT_EXCEEDED;
const PASS_CACHE_MISS: u32 = consts::XDP_PASS_CACHE_MISS;
const DROP_SHED: u32 = consts::XDP_DROP_SHED;
const PASS_UNRESOLVED: u32 = consts::XDP_PASS_UNRESOLVED;
const FWD_TX: u32 = consts::XDP_FWD_TX;
const FWD_REDIRECT: u32 = consts::XDP_FWD_REDIRECT;

/// The session kind of a Noise initiation (router/src/wire/session.rs).
const HANDSHAKE_1: u8 = consts::SESSION_KIND_HANDSHAKE_1;

// ---------------------------------------------------------------------------
// The lab: one namespace, three veth pairs, each our end with a subnet.

/// One of our interfaces in the lab namespace.
#[derive(Clone, Copy, Debug)]
struct Port {
    name: &'static str,
    mac: [u8; 6],
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

/// Ingress of every test frame; XDP_TX goes back out of it.
const XF0: Port = Port {
    name: "xf0",
    mac: [0x02, 0, 0, 0, 0x01, 0x01],
    v4: Ipv4Addr::new(198, 18, 1, 1),
    v6: Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1),
};
/// Redirect target, in `xorlay_tx_ports`.
const XF1: Port = Port {
    name: "xf1",
    mac: [0x02, 0, 0, 0, 0x02, 0x01],
    v4: Ipv4Addr::new(198, 18, 2, 1),
    v6: Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1),
};
/// Routable, with neighbors, but not in `xorlay_tx_ports`.
const XF2: Port = Port {
    name: "xf2",
    mac: [0x02, 0, 0, 0, 0x03, 0x01],
    v4: Ipv4Addr::new(198, 18, 3, 1),
    v6: Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 1),
};
const PORTS: [Port; 3] = [XF0, XF1, XF2];

/// A host behind one of our ports: host number `n` of its subnets, with a
/// permanent neighbor entry (MAC 02:00:00:<port>:<n>:aa).
#[derive(Clone, Copy, Debug)]
struct Host {
    port: Port,
    n: u8,
}

impl Host {
    const fn new(port: Port, n: u8) -> Host {
        Host { port, n }
    }

    fn v4(self) -> Ipv4Addr {
        let o = self.port.v4.octets();
        Ipv4Addr::new(o[0], o[1], o[2], self.n)
    }

    fn v6(self) -> Ipv6Addr {
        let mut o = self.port.v6.octets();
        o[15] = self.n;
        Ipv6Addr::from(o)
    }

    fn mac(self) -> [u8; 6] {
        [0x02, 0, 0, self.port.mac[4], self.n, 0xaa]
    }

    fn ip(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6())
        } else {
            IpAddr::V4(self.v4())
        }
    }
}

/// The neighbor every test frame comes from (in the allowlist).
const SENDER: Host = Host::new(XF0, 2);
/// A second allowlisted neighbor, for per-neighbor fairness.
const SENDER2: Host = Host::new(XF0, 3);
/// Next hops.
const HOP_TX: Host = Host::new(XF0, 4);
const HOP_REDIRECT: Host = Host::new(XF1, 2);
const HOP_NOT_ATTACHED: Host = Host::new(XF2, 2);
/// In XF1's subnet, without a neighbor entry.
const HOP_UNRESOLVED: Host = Host::new(XF1, 77);
/// Hosts 10..10+DIFF_HOSTS on XF0 and XF1 have neighbor entries, for the
/// differential test.
const DIFF_HOSTS: u8 = 24;

/// A network namespace with the three veth pairs, deleted on drop.
struct Netns {
    ns: TestNetns,
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let ns = TestNetns::new(&format!("fp-{tag}"));
        let netns = Netns {
            name: ns.name.clone(),
            ns,
        };
        let mut batch = String::new();
        for port in PORTS {
            let mac = mac_text(port.mac);
            batch.push_str(&format!(
                "link add {0} address {mac} type veth peer name {0}p\n\
                 link set {0} up\nlink set {0}p up\n\
                 addr add {1}/24 dev {0}\naddr add {2}/64 dev {0} nodad\n",
                port.name, port.v4, port.v6
            ));
        }
        let mut hosts = vec![SENDER, SENDER2, HOP_TX, HOP_REDIRECT, HOP_NOT_ATTACHED];
        for n in 10..10 + DIFF_HOSTS {
            hosts.push(Host::new(XF0, n));
            hosts.push(Host::new(XF1, n));
        }
        for host in hosts {
            let mac = mac_text(host.mac());
            for ip in [host.ip(false), host.ip(true)] {
                batch.push_str(&format!(
                    "neigh add {ip} lladdr {mac} dev {} nud permanent\n",
                    host.port.name
                ));
            }
        }
        netns.ns.ip_batch(&batch);
        // bpf_fib_lookup answers only for an ingress interface with
        // forwarding on (else BPF_FIB_LKUP_RET_FWD_DISABLED).
        set_forwarding(&netns.name, XF0, true);
        netns
    }

    /// Runs `body` inside the namespace (`TestNetns::run`), pinned to the
    /// CPU it starts on (per-CPU buckets and counters stay on one CPU).
    fn run_inside<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.run(move || {
            pin_to_current_cpu();
            body()
        })
    }
}

fn set_forwarding(netns: &str, port: Port, on: bool) {
    let value = u8::from(on);
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{}.forwarding={value}", port.name),
            &format!("net.ipv6.conf.{}.forwarding={value}", port.name),
        ],
    );
}

fn pin_to_current_cpu() {
    // SAFETY: plain syscalls on the calling thread; the set is initialized
    // by CPU_ZERO before use.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

// ---------------------------------------------------------------------------
// Frames.

/// The sender's address over IPv4 or IPv6.
fn sender(host: Host, v6: bool) -> SocketAddr {
    SocketAddr::new(host.ip(v6), SRC_PORT)
}

/// Our address on `port`: the overlay port.
fn ours(port: Port, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(port.v6)
    } else {
        IpAddr::V4(port.v4)
    };
    SocketAddr::new(ip, PORT)
}

/// A neighbor's overlay address.
fn overlay_addr(host: Host, v6: bool) -> SocketAddr {
    SocketAddr::new(host.ip(v6), PORT)
}

/// A frame from `from` to us on XF0 carrying `payload`.
fn inbound(from: Host, v6: bool, shape: Shape, payload: &[u8]) -> Vec<u8> {
    udp_frame(
        (XF0.mac, from.mac()),
        sender(from, v6),
        ours(XF0, v6),
        shape,
        payload,
    )
}

fn id(fill: u8) -> NodeId {
    NodeId::from_bytes([fill; 32])
}

/// A data packet to `dst` with `hop_limit`, payload `body`.
fn data(dst: &NodeId, hop_limit: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = golden::DATA_PING[..HEADER_LEN].to_vec();
    bytes.extend_from_slice(body);
    let mut packet = OverlayPacket::new_unchecked(&mut bytes[..]);
    packet.set_dst(dst);
    packet.set_hop_limit(hop_limit);
    packet.set_payload_len(body.len() as u16);
    assert_eq!(OverlayPacket::new_unchecked(&bytes[..]).validate(), Ok(()));
    bytes
}

/// A data packet to `dst` with a via (flag VIA set), `hop_limit`, payload
/// `body`.
fn data_via(dst: &NodeId, via: &NodeId, hop_limit: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = golden::DATA_PING_VIA[..HEADER_VIA_LEN].to_vec();
    bytes.extend_from_slice(body);
    let mut packet = OverlayPacket::new_unchecked(&mut bytes[..]);
    packet.set_dst(dst);
    assert_eq!(packet.set_via(Some(via)), Ok(()));
    packet.set_hop_limit(hop_limit);
    packet.set_payload_len(body.len() as u16);
    let packet = OverlayPacket::new_unchecked(&bytes[..]);
    assert_eq!(packet.validate(), Ok(()));
    assert_eq!((packet.via(), packet.payload()), (Some(*via), body));
    bytes
}

/// A control packet whose session message starts with `kind`.
fn control(kind: u8) -> Vec<u8> {
    let mut bytes = data(&id(0x33), 64, &[kind, 0, 0, 0, 0, 0, 0, 0]);
    OverlayPacket::new_unchecked(&mut bytes[..]).set_packet_type(PacketType::Control);
    bytes
}

/// The same with a via whose bytes are all `via_fill`: the session message
/// starts after it.
fn control_via(kind: u8, via_fill: u8) -> Vec<u8> {
    let mut bytes = data_via(&id(0x33), &id(via_fill), 64, &[kind, 0, 0, 0, 0, 0, 0, 0]);
    OverlayPacket::new_unchecked(&mut bytes[..]).set_packet_type(PacketType::Control);
    bytes
}

/// What the worker sends on forward: the same overlay packet, hop limit
/// decremented (worker.rs: `set_hop_limit(hop_limit() - 1)`).
fn worker_forward(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    let mut packet = OverlayPacket::new_unchecked(&mut out[..]);
    packet.set_hop_limit(packet.hop_limit() - 1);
    out
}

/// What a fast-path forward to `hop` must look like: the worker's datagram
/// from our address on `hop.port` and the packet's flow port
/// (`Packet::flow_port`) to the neighbor, in a fresh IP header (TTL 64, the
/// input's ID, flags and traffic class kept) and Ethernet addressed from our
/// port's MAC to the neighbor's.
fn forwarded(hop: Host, v6: bool, input_shape: Shape, payload: &[u8]) -> Vec<u8> {
    let flow_port = OverlayPacket::new_unchecked(payload).flow_port();
    udp_frame(
        (hop.mac(), hop.port.mac),
        SocketAddr::new(ours(hop.port, v6).ip(), flow_port),
        overlay_addr(hop, v6),
        Shape {
            ttl: 64,
            ..input_shape
        },
        &worker_forward(payload),
    )
}

// ---------------------------------------------------------------------------
// Running the program.

/// A loaded program, its allowlist and its route cache, run with a given
/// ingress interface.
struct Harness {
    ebpf: Ebpf,
    neighbors: NeighborMap,
    cache: RouteCache,
    /// A second handle on the route cache, to age entries.
    raw_routes: RawRoutes,
    /// A second handle on the allowlist, to age the neighbors' buckets.
    raw_neighbors: RawNeighbors,
    ingress: u32,
}

impl Harness {
    /// Loaded in the calling thread's namespace (the lab's): ingress XF0,
    /// XF0 and XF1 in `xorlay_tx_ports` (XF2 not), SENDER and SENDER2
    /// allowlisted over both families, the default limits.
    fn new() -> Harness {
        let mut ebpf = match bpf::load_with(PORT, LoadOptions::default()) {
            Ok(ebpf) => ebpf,
            Err(e) => panic!("loading the XDP object failed: {e}"),
        };
        for port in [XF0, XF1] {
            if let Err(e) = bpf::add_tx_port(&mut ebpf, if_index(port.name)) {
                panic!("adding {} to the tx ports: {e}", port.name);
            }
        }
        let raw_routes = RawRoutes::open(&ebpf);
        let raw_neighbors = RawNeighbors::open(&ebpf);
        let mut neighbors = match bpf::take_neighbor_map(&mut ebpf) {
            Ok(map) => map,
            Err(e) => panic!("taking the neighbor map: {e}"),
        };
        let allowed: HashSet<SocketAddr> = [
            sender(SENDER, false),
            sender(SENDER, true),
            sender(SENDER2, false),
            sender(SENDER2, true),
        ]
        .into_iter()
        .collect();
        if let Err(e) = neighbors.sync(&allowed) {
            panic!("syncing the allowlist: {e}");
        }
        let cache = match bpf::take_route_cache(&mut ebpf) {
            Ok(cache) => cache,
            Err(e) => panic!("taking the route cache: {e}"),
        };
        Harness {
            ebpf,
            neighbors,
            cache,
            raw_routes,
            raw_neighbors,
            ingress: if_index(XF0.name),
        }
    }

    /// With the route cache on for local ID `local`.
    fn with_local_id(local: &NodeId) -> Harness {
        let mut harness = Harness::new();
        ok(harness.cache.set_local_id(local), "set_local_id");
        harness
    }

    fn counters(&self) -> XdpCounters {
        match bpf::read_counters(&self.ebpf) {
            Ok(counters) => counters,
            Err(e) => panic!("reading the XDP counters failed: {e}"),
        }
    }

    /// Runs the program once on `frame` arriving on the ingress interface;
    /// returns the action and the output frame.
    fn run(&self, description: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        test_run(&self.ebpf, description, frame, self.ingress)
    }

    /// Runs `frame`, checks the action, that exactly counter `counter` went
    /// up by one, and that the output is `expected` (None: the input,
    /// untouched). Returns the output.
    fn check(
        &self,
        description: &str,
        frame: &[u8],
        verdict: u32,
        counter: u32,
        expected: Option<&[u8]>,
    ) -> Vec<u8> {
        let before = self.counters().to_array();
        let (action, output) = self.run(description, frame);
        let after = self.counters().to_array();
        assert_eq!(
            action, verdict,
            "{description}: action {action} (counters before {before:?}, after {after:?})"
        );
        for index in 0..STAT_COUNT {
            let expected = before[index] + u64::from(index == counter as usize);
            assert_eq!(
                after[index], expected,
                "{description}: counter {index} went from {} to {} (expected counter {counter} \
                 up by one, all others unchanged)",
                before[index], after[index]
            );
        }
        let expected = expected.unwrap_or(frame);
        if output != expected {
            let first = output
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(output.len().min(expected.len()));
            panic!(
                "{description}: output differs from byte {first} on\n out: {:02x?}\nwant: {:02x?}",
                &output[first.min(output.len())..],
                &expected[first.min(expected.len())..]
            );
        }
        output
    }

    fn install(&mut self, dst: &NodeId, hop: Host, v6: bool) {
        self.install_by(dst, hop, v6, None);
    }

    /// `install`, for packets with `via` only if it is `Some`.
    fn install_by(&mut self, dst: &NodeId, hop: Host, v6: bool, via: Option<NodeId>) {
        let route = RouteEntry {
            next_hop: overlay_addr(hop, v6),
            source: ours(hop.port, v6),
            via,
        };
        ok(self.cache.install(dst, &route), "install");
    }
}

fn ok<T>(result: Result<T, BpfError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Rate limits.

#[test]
fn handshakes_are_limited_per_source_then_globally() {
    let netns = Netns::create("hs");
    netns.run_inside(|| {
        let mut h = Harness::new();
        let hs1 = control(HANDSHAKE_1);
        let other_control = control(HANDSHAKE_1 + 1);
        let stranger = |n: u8, v6: bool| inbound(Host::new(XF0, 100 + n), v6, PLAIN, &hs1);

        // Per source: burst 3, a rate too slow to refill during the test.
        ok(
            h.cache.set_limits(&RateLimits {
                handshake_per_source: RateLimit::new(1, 3),
                handshake_global: RateLimit::UNLIMITED,
                neighbor_data: RateLimit::UNLIMITED,
            }),
            "set_limits",
        );
        for i in 0..3 {
            h.check(
                &format!("HANDSHAKE_1 {i} of source A's burst of 3"),
                &stranger(0, false),
                XDP_PASS,
                PASS_OVERLAY,
                None,
            );
        }
        h.check(
            "HANDSHAKE_1 4 from source A: over its bucket",
            &stranger(0, false),
            XDP_DROP,
            DROP_HANDSHAKE_SOURCE_RATE,
            None,
        );
        h.check(
            "source A over IPv6 is another source",
            &stranger(0, true),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        h.check(
            "source B has its own bucket",
            &stranger(1, false),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        for i in 0..5 {
            h.check(
                &format!("other control packet {i} from source A: never metered"),
                &inbound(Host::new(XF0, 100), false, PLAIN, &other_control),
                XDP_PASS,
                PASS_OVERLAY,
                None,
            );
        }
        h.check(
            "a neighbor's HANDSHAKE_1 is metered too (a new session)",
            &inbound(SENDER, false, PLAIN, &hs1),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        // With a via, the session kind is read after it.
        h.check(
            "HANDSHAKE_1 with a via from source A: over its bucket",
            &inbound(
                Host::new(XF0, 100),
                false,
                PLAIN,
                &control_via(HANDSHAKE_1, HANDSHAKE_1 + 1),
            ),
            XDP_DROP,
            DROP_HANDSHAKE_SOURCE_RATE,
            None,
        );
        h.check(
            "other control packet with a via of HANDSHAKE_1 bytes from source A: not metered",
            &inbound(
                Host::new(XF0, 100),
                false,
                PLAIN,
                &control_via(HANDSHAKE_1 + 1, HANDSHAKE_1),
            ),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );

        // Global: burst 4 over all sources; the per-source limit checked
        // first, and a packet it drops takes no global token.
        ok(
            h.cache.set_limits(&RateLimits {
                handshake_per_source: RateLimit::new(1, 2),
                handshake_global: RateLimit::new(1, 4),
                neighbor_data: RateLimit::UNLIMITED,
            }),
            "set_limits",
        );
        for (n, verdict, counter, what) in [
            (10, XDP_PASS, PASS_OVERLAY, "C 1: global 1 of 4"),
            (10, XDP_PASS, PASS_OVERLAY, "C 2: global 2 of 4"),
            (
                10,
                XDP_DROP,
                DROP_HANDSHAKE_SOURCE_RATE,
                "C 3: over C's bucket",
            ),
            (11, XDP_PASS, PASS_OVERLAY, "D: global 3 of 4"),
            (12, XDP_PASS, PASS_OVERLAY, "E: global 4 of 4"),
            (
                13,
                XDP_DROP,
                DROP_HANDSHAKE_GLOBAL_RATE,
                "F: over the global bucket",
            ),
            (
                14,
                XDP_DROP,
                DROP_HANDSHAKE_GLOBAL_RATE,
                "G: over the global bucket",
            ),
        ] {
            h.check(what, &stranger(n, n % 2 == 1), verdict, counter, None);
        }
        h.check(
            "other control packets pass the empty global bucket",
            &inbound(Host::new(XF0, 113), false, PLAIN, &other_control),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );

        // 0 = unlimited.
        ok(h.cache.set_limits(&RateLimits::UNLIMITED), "set_limits");
        for i in 0..20 {
            h.check(
                &format!("unlimited: HANDSHAKE_1 {i} from F"),
                &stranger(13, false),
                XDP_PASS,
                PASS_OVERLAY,
                None,
            );
        }
        let counters = h.counters();
        assert_eq!(counters.drop_handshake_source_rate, 3, "{counters:?}");
        assert_eq!(counters.drop_handshake_global_rate, 2, "{counters:?}");
    });
}

#[test]
fn data_is_limited_per_neighbor_and_refills() {
    let netns = Netns::create("nbr");
    netns.run_inside(|| {
        let mut h = Harness::new();
        let ping = golden::DATA_PING;
        ok(
            h.cache.set_limits(&RateLimits {
                handshake_per_source: RateLimit::UNLIMITED,
                handshake_global: RateLimit::UNLIMITED,
                neighbor_data: RateLimit::new(2, 5),
            }),
            "set_limits",
        );
        for i in 0..5 {
            h.check(
                &format!("data {i} of the neighbor's burst of 5"),
                &inbound(SENDER, false, PLAIN, &ping),
                XDP_PASS,
                PASS_OVERLAY,
                None,
            );
        }
        h.check(
            "data 6: over the neighbor's bucket",
            &inbound(SENDER, false, PLAIN, &ping),
            XDP_DROP,
            DROP_NEIGHBOR_RATE,
            None,
        );
        h.check(
            "the same neighbor over IPv6 is another neighbor key",
            &inbound(SENDER, true, PLAIN, &ping),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        for i in 0..5 {
            h.check(
                &format!("another neighbor is not starved: data {i}"),
                &inbound(SENDER2, false, PLAIN, &ping),
                XDP_PASS,
                PASS_OVERLAY,
                None,
            );
        }
        h.check(
            "a stranger is dropped by the allowlist before any bucket",
            &inbound(Host::new(XF0, 200), false, PLAIN, &ping),
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
            None,
        );
        h.check(
            "control from the limited neighbor is not data: passes",
            &inbound(SENDER, false, PLAIN, &control(4)),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        // 2 per second: one token back after 500 ms, as if 500 ms passed.
        h.raw_neighbors.backdate_bucket(
            &bpf::neighbor_key(&sender(SENDER, false)),
            Duration::from_millis(500),
        );
        h.check(
            "refilled: one more",
            &inbound(SENDER, false, PLAIN, &ping),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        h.check(
            "and empty again",
            &inbound(SENDER, false, PLAIN, &ping),
            XDP_DROP,
            DROP_NEIGHBOR_RATE,
            None,
        );
        let bad = RateLimits {
            neighbor_data: RateLimit::new(5, 0),
            ..RateLimits::default()
        };
        assert!(matches!(
            h.cache.set_limits(&bad),
            Err(BpfError::InvalidRateLimit { .. })
        ));
        assert_eq!(h.cache.limits().neighbor_data, RateLimit::new(2, 5));
        assert_eq!(h.counters().drop_neighbor_rate, 2);
        // A burst below one step of the program's coarse clock is written
        // as a step's worth (1 M/s over a 1-10 ms tick: 1,000-10,000).
        let step = xorlay::io::bpf::clock_step_ns();
        let fast = RateLimits {
            neighbor_data: RateLimit::new(1_000_000, 1),
            ..RateLimits::default()
        };
        ok(h.cache.set_limits(&fast), "set_limits with a burst of 1");
        let burst = h.cache.limits().neighbor_data.burst;
        assert_eq!(u64::from(burst), step.div_ceil(1_000), "step {step} ns");
        assert!((1_000..=10_000).contains(&burst), "{burst}");
    });
}

#[test]
fn workers_budget_sheds_data_for_the_workers_only() {
    let netns = Netns::create("shed");
    netns.run_inside(|| {
        let local = id(0x01);
        let mut h = Harness::with_local_id(&local);
        let mut budget = ok(bpf::take_shed_budget(&mut h.ebpf), "take_shed_budget");
        let body = b"shed";
        let dst_miss = id(0xb1);
        let dst_hit = id(0xb2);
        h.install(&dst_hit, HOP_REDIRECT, false);
        ok(
            budget.set(Some(Budget { pps: 2, burst: 3 })),
            "setting the budget",
        );
        for i in 0..3 {
            h.check(
                &format!("miss {i} within the budget's burst of 3"),
                &inbound(SENDER, false, PLAIN, &data(&dst_miss, 64, body)),
                XDP_PASS,
                PASS_CACHE_MISS,
                None,
            );
        }
        h.check(
            "miss 4: over the budget, shed",
            &inbound(SENDER, false, PLAIN, &data(&dst_miss, 64, body)),
            XDP_DROP,
            DROP_SHED,
            None,
        );
        h.check(
            "data for this node goes to the workers too: shed",
            &inbound(SENDER, false, PLAIN, &data(&local, 64, body)),
            XDP_DROP,
            DROP_SHED,
            None,
        );
        h.check(
            "control packets are never shed",
            &inbound(SENDER, false, PLAIN, &control(4)),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        let payload = data(&dst_hit, 64, body);
        let expected = forwarded(HOP_REDIRECT, false, PLAIN, &payload);
        h.check(
            "a cached destination never reaches the workers: forwarded",
            &inbound(SENDER, false, PLAIN, &payload),
            XDP_REDIRECT,
            FWD_REDIRECT,
            Some(&expected),
        );
        ok(budget.set(None), "lifting the budget");
        assert_eq!(budget.current(), None);
        h.check(
            "no budget: the miss passes",
            &inbound(SENDER, false, PLAIN, &data(&dst_miss, 64, body)),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
        assert_eq!(h.counters().drop_shed, 2);
    });
}

#[test]
fn worker_credits_shed_data_beyond_the_window() {
    let netns = Netns::create("credit");
    netns.run_inside(|| {
        let local = id(0x01);
        let mut h = Harness::with_local_id(&local);
        let backlog = BacklogMap::take(&mut h.ebpf)
            .unwrap_or_else(|e| panic!("mapping xorlay_backlog: {e}"))
            .expect("the object has xorlay_backlog");
        let body = b"credit";
        let worker_of = |dst: &NodeId| {
            OverlayPacket::new_checked(&data(dst, 64, body)[..])
                .expect("valid")
                .worker_of(2)
        };
        // A destination on each of two workers (as the steering program
        // would spread them).
        let on = |w: u32| {
            (0u8..=0xff)
                .map(|n| {
                    let mut bytes = [0xb0; 32];
                    bytes[0] = n;
                    NodeId::from_bytes(bytes)
                })
                .find(|dst| worker_of(dst) == w)
                .expect("some destination lands on each worker")
        };
        let (a, b) = (on(0), on(1));
        let miss = |h: &mut Harness, what: &str, dst: &NodeId, shed: bool| {
            let (action, stat) = if shed {
                (XDP_DROP, DROP_SHED)
            } else {
                (XDP_PASS, PASS_CACHE_MISS)
            };
            h.check(
                what,
                &inbound(SENDER, false, PLAIN, &data(dst, 64, body)),
                action,
                stat,
                None,
            );
        };
        let w0 = backlog.credits(0).expect("worker 0");
        let w1 = backlog.credits(1).expect("worker 1");
        assert!(backlog.credits(BACKLOG_WORKERS_MAX).is_none());
        w0.set_window(2);
        miss(&mut h, "no workers set (off): passes, uncounted", &a, false);
        assert_eq!(w0.admitted(), 0);
        backlog
            .set_workers(2)
            .unwrap_or_else(|e| panic!("set_workers(2): {e}"));
        assert!(backlog.set_workers(BACKLOG_WORKERS_MAX + 1).is_err());
        assert_eq!(backlog.workers(), 2);
        miss(&mut h, "worker 0, 1 of its window of 2", &a, false);
        miss(&mut h, "worker 0, 2 of 2", &a, false);
        miss(&mut h, "worker 0 has 2 unread: shed", &a, true);
        assert_eq!(w0.admitted(), 2);
        for i in 0..3 {
            miss(
                &mut h,
                &format!("worker 1 has no window ({i}): passes"),
                &b,
                false,
            );
        }
        assert_eq!(w1.admitted(), 0, "no window, nothing counted");
        h.check(
            "control packets are never shed",
            &inbound(SENDER, false, PLAIN, &control(4)),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        let to_local_shed = worker_of(&local) == 0;
        h.check(
            "data for this node is charged to its worker too",
            &inbound(SENDER, false, PLAIN, &data(&local, 64, body)),
            if to_local_shed { XDP_DROP } else { XDP_PASS },
            if to_local_shed {
                DROP_SHED
            } else {
                PASS_OVERLAY
            },
            None,
        );
        // The worker read one: one more passes.
        w0.set_consumed(1);
        miss(&mut h, "worker 0 read 1: passes", &a, false);
        miss(&mut h, "worker 0 has 2 unread again: shed", &a, true);
        // A worker ahead of XDP's count (it caught up on an empty queue
        // while a packet was in flight) admits: the difference is signed.
        w0.set_consumed(w0.admitted() + 5);
        for i in 0..7 {
            miss(&mut h, &format!("worker 0 ahead ({i}): passes"), &a, false);
        }
        miss(&mut h, "worker 0 back at its window: shed", &a, true);
        // A worker that stops lifts its window.
        drop(w0);
        miss(&mut h, "worker 0 gone: no window, passes", &a, false);
        assert_eq!(h.counters().drop_shed, 3 + u64::from(to_local_shed));
    });
}

// ---------------------------------------------------------------------------
// Route cache fixtures.

#[test]
fn route_cache_fixtures() {
    let netns = Netns::create("rc");
    netns.run_inside(route_cache_fixtures_inside);
}

fn route_cache_fixtures_inside() {
    let local = id(0x01);
    let mut h = Harness::new();
    let body = b"fast path payload";
    let dst_tx = id(0xa1);
    let dst_redirect = id(0xa2);
    let dst_unresolved = id(0xa3);
    let dst_not_attached = id(0xa4);
    let dst_none = id(0xa5);
    let dst_miss = id(0xa6);
    let via = id(0xb1);

    // Before the local ID is set, the cache is off.
    h.install(&dst_redirect, HOP_REDIRECT, false);
    h.check(
        "no local ID yet: the cache is off",
        &inbound(SENDER, false, PLAIN, &data(&dst_redirect, 64, body)),
        XDP_PASS,
        PASS_OVERLAY,
        None,
    );
    ok(h.cache.set_local_id(&local), "set_local_id");

    for v6 in [false, true] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        h.install(&dst_tx, HOP_TX, v6);
        h.install(&dst_redirect, HOP_REDIRECT, v6);
        h.install(&dst_unresolved, HOP_UNRESOLVED, v6);
        h.install(&dst_not_attached, HOP_NOT_ATTACHED, v6);
        ok(h.cache.install_no_route(&dst_none), "install_no_route");
        // An entry for the local ID must never be used.
        h.install(&local, HOP_REDIRECT, v6);

        for hop_limit in [64, 2] {
            let payload = data(&dst_redirect, hop_limit, body);
            let expected = forwarded(HOP_REDIRECT, v6, PLAIN, &payload);
            let out = h.check(
                &format!("{fam} hit, hop limit {hop_limit}: redirected to xf1"),
                &inbound(SENDER, v6, PLAIN, &payload),
                XDP_REDIRECT,
                FWD_REDIRECT,
                Some(&expected),
            );
            let udp_payload = verify_checksums(fam, &out);
            assert_eq!(udp_payload, worker_forward(&payload));
            assert_eq!(udp_payload[4], hop_limit - 1, "hop limit decremented");
            assert_eq!(
                &out[..6],
                &HOP_REDIRECT.mac(),
                "dst MAC from the neighbor entry"
            );
            assert_eq!(&out[6..12], &XF1.mac, "src MAC of the egress interface");
        }
        let payload = data(&dst_tx, 64, body);
        let out = h.check(
            &format!("{fam} hit, next hop behind the ingress interface: XDP_TX"),
            &inbound(SENDER, v6, PLAIN, &payload),
            XDP_TX,
            FWD_TX,
            Some(&forwarded(HOP_TX, v6, PLAIN, &payload)),
        );
        verify_checksums(fam, &out);
        assert_eq!(&out[..12], &[HOP_TX.mac(), XF0.mac].concat());

        let payload = data(&dst_redirect, 1, body);
        h.check(
            &format!("{fam} hit with hop limit 1: expired"),
            &inbound(SENDER, v6, PLAIN, &payload),
            XDP_DROP,
            DROP_HOP_LIMIT_EXCEEDED,
            None,
        );
        h.check(
            &format!("{fam} negative entry: no route"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_none, 64, body)),
            XDP_DROP,
            DROP_NO_ROUTE,
            None,
        );
        h.check(
            &format!("{fam} negative entry with hop limit 1: hop limit first, as decide()"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_none, 1, body)),
            XDP_DROP,
            DROP_HOP_LIMIT_EXCEEDED,
            None,
        );
        // A packet with a via: a negative entry does not drop it (the
        // workers may route it toward its via); a positive one forwards it
        // with the via untouched.
        for hop_limit in [64, 1] {
            h.check(
                &format!("{fam} negative entry, via, hop limit {hop_limit}: to the workers"),
                &inbound(
                    SENDER,
                    v6,
                    PLAIN,
                    &data_via(&dst_none, &via, hop_limit, body),
                ),
                XDP_PASS,
                PASS_CACHE_MISS,
                None,
            );
        }
        h.check(
            &format!("{fam} negative entry, no via, after via packets: still dropped"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_none, 64, body)),
            XDP_DROP,
            DROP_NO_ROUTE,
            None,
        );
        let payload = data_via(&dst_redirect, &via, 64, body);
        let out = h.check(
            &format!("{fam} hit with a via: redirected, via kept"),
            &inbound(SENDER, v6, PLAIN, &payload),
            XDP_REDIRECT,
            FWD_REDIRECT,
            Some(&forwarded(HOP_REDIRECT, v6, PLAIN, &payload)),
        );
        let udp_payload = verify_checksums(fam, &out);
        let packet = OverlayPacket::new_unchecked(&udp_payload[..]);
        assert_eq!(packet.validate(), Ok(()), "{fam}");
        assert_eq!(packet.hop_limit(), 63, "{fam}");
        assert_eq!(packet.via(), Some(via), "{fam}");
        assert_eq!(packet.payload(), body, "{fam}");
        h.check(
            &format!("{fam} hit with a via and hop limit 1: expired"),
            &inbound(SENDER, v6, PLAIN, &data_via(&dst_redirect, &via, 1, body)),
            XDP_DROP,
            DROP_HOP_LIMIT_EXCEEDED,
            None,
        );
        h.check(
            &format!("{fam} miss with a via"),
            &inbound(SENDER, v6, PLAIN, &data_via(&dst_miss, &via, 64, body)),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
        h.check(
            &format!("{fam} miss"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_miss, 64, body)),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
        h.check(
            &format!("{fam} miss with hop limit 1: the workers decide"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_miss, 1, body)),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
        for hop_limit in [64, 1] {
            h.check(
                &format!("{fam} for this node (hop limit {hop_limit}): passes, never forwarded"),
                &inbound(SENDER, v6, PLAIN, &data(&local, hop_limit, body)),
                XDP_PASS,
                PASS_OVERLAY,
                None,
            );
        }
        h.check(
            &format!("{fam} control packet to a cached destination: not forwarded"),
            &inbound(SENDER, v6, PLAIN, &{
                let mut c = data(&dst_redirect, 64, body);
                OverlayPacket::new_unchecked(&mut c[..]).set_packet_type(PacketType::Control);
                c
            }),
            XDP_PASS,
            PASS_OVERLAY,
            None,
        );
        h.check(
            &format!("{fam} cross-family entry: a miss"),
            &inbound(SENDER, !v6, PLAIN, &data(&dst_redirect, 64, body)),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
        h.check(
            &format!("{fam} cross-family entry with hop limit 1: still a miss"),
            &inbound(SENDER, !v6, PLAIN, &data(&dst_redirect, 1, body)),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
        h.check(
            &format!("{fam} next hop without a neighbor entry: the kernel resolves it"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_unresolved, 64, body)),
            XDP_PASS,
            PASS_UNRESOLVED,
            None,
        );
        h.check(
            &format!("{fam} egress interface not in xorlay_tx_ports"),
            &inbound(SENDER, v6, PLAIN, &data(&dst_not_attached, 64, body)),
            XDP_PASS,
            PASS_UNRESOLVED,
            None,
        );
        h.check(
            &format!("{fam} hit in a VLAN-tagged frame: not rewritten"),
            &inbound(
                SENDER,
                v6,
                Shape {
                    vlan: true,
                    ..PLAIN
                },
                &data(&dst_redirect, 64, body),
            ),
            XDP_PASS,
            PASS_UNRESOLVED,
            None,
        );
        h.check(
            &format!("{fam} data from a stranger: the filter comes first"),
            &inbound(
                Host::new(XF0, 201),
                v6,
                PLAIN,
                &data(&dst_redirect, 64, body),
            ),
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
            None,
        );
        h.check(
            &format!("{fam} non-overlay UDP: untouched"),
            &udp_frame(
                (XF0.mac, SENDER.mac()),
                sender(SENDER, v6),
                SocketAddr::new(ours(XF0, v6).ip(), PORT + 1),
                PLAIN,
                &data(&dst_redirect, 64, body),
            ),
            XDP_PASS,
            PASS_OTHER,
            None,
        );
    }

    // IPv4 only: options and a missing UDP checksum.
    h.install(&dst_redirect, HOP_REDIRECT, false);
    h.check(
        "IPv4 with options: not rewritten",
        &inbound(
            SENDER,
            false,
            Shape {
                options: 8,
                ..PLAIN
            },
            &data(&dst_redirect, 64, body),
        ),
        XDP_PASS,
        PASS_UNRESOLVED,
        None,
    );
    let no_check = Shape {
        no_udp_checksum: true,
        ..PLAIN
    };
    let payload = data(&dst_redirect, 64, body);
    h.check(
        "IPv4 without UDP checksum: forwarded without one",
        &inbound(SENDER, false, no_check, &payload),
        XDP_REDIRECT,
        FWD_REDIRECT,
        Some(&forwarded(HOP_REDIRECT, false, no_check, &payload)),
    );
    let mut bad_header = inbound(SENDER, false, PLAIN, &payload);
    bad_header[14 + 10] ^= 0xff;
    h.check(
        "IPv4 header checksum wrong: left to the stack",
        &bad_header,
        XDP_PASS,
        PASS_UNRESOLVED,
        None,
    );
    h.install(&dst_redirect, HOP_REDIRECT, true);
    h.check(
        "IPv6 with UDP checksum 0 (invalid): left to the stack",
        &inbound(SENDER, true, no_check, &payload),
        XDP_PASS,
        PASS_UNRESOLVED,
        None,
    );

    // Generations: invalidate_all makes every entry a miss at once.
    h.install(&dst_redirect, HOP_REDIRECT, false);
    ok(h.cache.install_no_route(&dst_none), "install_no_route");
    let generation = h.cache.generation();
    assert_eq!(
        ok(h.cache.invalidate_all(), "invalidate_all"),
        generation + 1
    );
    h.check(
        "stale generation: a miss",
        &inbound(SENDER, false, PLAIN, &data(&dst_redirect, 64, body)),
        XDP_PASS,
        PASS_CACHE_MISS,
        None,
    );
    h.check(
        "stale negative entry: a miss",
        &inbound(SENDER, false, PLAIN, &data(&dst_none, 64, body)),
        XDP_PASS,
        PASS_CACHE_MISS,
        None,
    );
    h.check(
        "stale entry with hop limit 1: a miss",
        &inbound(SENDER, false, PLAIN, &data(&dst_redirect, 1, body)),
        XDP_PASS,
        PASS_CACHE_MISS,
        None,
    );
    h.install(&dst_redirect, HOP_REDIRECT, false);
    let payload = data(&dst_redirect, 64, body);
    h.check(
        "re-installed in the new generation: a hit",
        &inbound(SENDER, false, PLAIN, &payload),
        XDP_REDIRECT,
        FWD_REDIRECT,
        Some(&forwarded(HOP_REDIRECT, false, PLAIN, &payload)),
    );

    // Idle timeout: entries are aged by writing them older (RawRoutes),
    // not by waiting.
    let idle = Duration::from_secs(1);
    ok(h.cache.set_idle_timeout(idle), "set_idle_timeout");
    h.install(&dst_redirect, HOP_REDIRECT, false);
    let fresh = ok(h.cache.get(&dst_redirect), "get").unwrap_or_else(|| panic!("no entry"));
    h.raw_routes.backdate(&dst_redirect, idle * 3 / 10);
    let installed = ok(h.cache.get(&dst_redirect), "get").unwrap_or_else(|| panic!("no entry"));
    assert_eq!(
        fresh.last_used_ns - installed.last_used_ns,
        (idle * 3 / 10).as_nanos() as u64,
        "backdated: {fresh:?} -> {installed:?}"
    );
    h.check(
        "used 0.3 idle timeouts after install: a hit",
        &inbound(SENDER, false, PLAIN, &payload),
        XDP_REDIRECT,
        FWD_REDIRECT,
        Some(&forwarded(HOP_REDIRECT, false, PLAIN, &payload)),
    );
    let used = ok(h.cache.get(&dst_redirect), "get").unwrap_or_else(|| panic!("no entry"));
    assert!(
        used.last_used_ns > installed.last_used_ns,
        "a hit refreshes last_used_ns: {installed:?} -> {used:?}"
    );
    assert_eq!(used.installed_ns, installed.installed_ns);
    h.raw_routes.backdate(&dst_redirect, idle * 5 / 2);
    h.check(
        "unused for longer than the idle timeout: a miss",
        &inbound(SENDER, false, PLAIN, &payload),
        XDP_PASS,
        PASS_CACHE_MISS,
        None,
    );
    ok(h.cache.install_no_route(&dst_none), "install_no_route");
    h.raw_routes.backdate(&dst_none, idle * 5 / 2);
    h.check(
        "expired negative entry: a miss",
        &inbound(SENDER, false, PLAIN, &data(&dst_none, 64, body)),
        XDP_PASS,
        PASS_CACHE_MISS,
        None,
    );
    ok(h.cache.set_idle_timeout(Duration::ZERO), "set_idle_timeout");
    h.check(
        "idle timeout 0: never expires",
        &inbound(SENDER, false, PLAIN, &data(&dst_none, 64, body)),
        XDP_DROP,
        DROP_NO_ROUTE,
        None,
    );

    // Every counter of the program has been hit by now, or by the rate
    // limit tests; the fast path ones all here.
    let totals = h.counters();
    for (name, value) in [
        ("drop_no_route", totals.drop_no_route),
        ("drop_hop_limit_exceeded", totals.drop_hop_limit_exceeded),
        ("pass_cache_miss", totals.pass_cache_miss),
        ("pass_unresolved", totals.pass_unresolved),
        ("fwd_tx", totals.fwd_tx),
        ("fwd_redirect", totals.fwd_redirect),
        ("pass_overlay", totals.pass_overlay),
        ("pass_other", totals.pass_other),
    ] {
        assert!(value > 0, "{name} never hit: {totals:?}");
    }
}

/// A node ID drawn at random.
fn random_id() -> NodeId {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("getrandom");
    NodeId::from_bytes(bytes)
}

/// `id` with byte `index` changed.
fn with_byte_changed(id: &NodeId, index: usize) -> NodeId {
    let mut bytes = *id.as_bytes();
    bytes[index] ^= 0x5a;
    NodeId::from_bytes(bytes)
}

/// An entry made by a packet's via (a relay without a route of its own to
/// the destination, compact routing) applies only to packets carrying that
/// via, compared by its first bytes (the tag): every other packet for the
/// destination goes to the workers as a miss, before the hop limit, and
/// does not refresh the entry. An entry without a via applies to all.
#[test]
fn route_cache_via_tags() {
    let netns = Netns::create("vt");
    netns.run_inside(route_cache_via_tags_inside);
}

fn route_cache_via_tags_inside() {
    let mut h = Harness::new();
    ok(h.cache.set_local_id(&random_id()), "set_local_id");
    let body = b"via-tagged payload";
    let dst_by_via = random_id();
    let dst_own = random_id();
    let via = random_id();
    // Another via, differing in the tag's first byte and in its last.
    let others = [
        with_byte_changed(&via, 0),
        with_byte_changed(&via, bpf::VIA_TAG_LEN - 1),
    ];
    // Differing only after the tag: the entry cannot tell it apart.
    let same_tag = with_byte_changed(&via, bpf::VIA_TAG_LEN);

    for v6 in [false, true] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        h.install_by(&dst_by_via, HOP_REDIRECT, v6, Some(via));
        h.install_by(&dst_own, HOP_REDIRECT, v6, None);
        let cached = ok(h.cache.get(&dst_by_via), "get").unwrap_or_else(|| panic!("no entry"));
        assert_eq!(cached.via_tag, Some(bpf::via_tag(&via)), "{fam}");
        assert_eq!(
            cached.route.map(|r| r.next_hop),
            Some(overlay_addr(HOP_REDIRECT, v6))
        );
        let own = ok(h.cache.get(&dst_own), "get").unwrap_or_else(|| panic!("no entry"));
        assert_eq!(own.via_tag, None, "{fam}");

        // The via it was made for: forwarded, the via kept.
        for (what, carried) in [("its via", via), ("a via with its tag", same_tag)] {
            for hop_limit in [64, 2] {
                let payload = data_via(&dst_by_via, &carried, hop_limit, body);
                let out = h.check(
                    &format!("{fam} entry by a via, packet with {what}, hop limit {hop_limit}: redirected"),
                    &inbound(SENDER, v6, PLAIN, &payload),
                    XDP_REDIRECT,
                    FWD_REDIRECT,
                    Some(&forwarded(HOP_REDIRECT, v6, PLAIN, &payload)),
                );
                let udp_payload = verify_checksums(fam, &out);
                let packet = OverlayPacket::new_unchecked(&udp_payload[..]);
                assert_eq!(packet.validate(), Ok(()), "{fam}");
                assert_eq!(packet.via(), Some(carried), "{fam}");
                assert_eq!(packet.hop_limit(), hop_limit - 1, "{fam}");
            }
        }
        h.check(
            &format!("{fam} entry by a via, packet with its via, hop limit 1: expired"),
            &inbound(SENDER, v6, PLAIN, &data_via(&dst_by_via, &via, 1, body)),
            XDP_DROP,
            DROP_HOP_LIMIT_EXCEEDED,
            None,
        );

        // Any other packet for dst: to the workers, whatever its hop limit.
        for hop_limit in [64, 1] {
            for (n, other) in others.iter().enumerate() {
                h.check(
                    &format!("{fam} entry by a via, packet with another via ({n}), hop limit {hop_limit}: a miss"),
                    &inbound(SENDER, v6, PLAIN, &data_via(&dst_by_via, other, hop_limit, body)),
                    XDP_PASS,
                    PASS_CACHE_MISS,
                    None,
                );
            }
            h.check(
                &format!(
                    "{fam} entry by a via, packet without a via, hop limit {hop_limit}: a miss"
                ),
                &inbound(SENDER, v6, PLAIN, &data(&dst_by_via, hop_limit, body)),
                XDP_PASS,
                PASS_CACHE_MISS,
                None,
            );
        }

        // An entry from the destination's own route: every packet.
        let payloads = [
            ("without a via", data(&dst_own, 64, body)),
            ("with a via", data_via(&dst_own, &via, 64, body)),
            ("with another via", data_via(&dst_own, &others[0], 64, body)),
        ];
        for (what, payload) in &payloads {
            h.check(
                &format!("{fam} entry without a via, packet {what}: redirected"),
                &inbound(SENDER, v6, PLAIN, payload),
                XDP_REDIRECT,
                FWD_REDIRECT,
                Some(&forwarded(HOP_REDIRECT, v6, PLAIN, payload)),
            );
        }
    }

    // A miss for another via leaves the entry's last use alone; a hit
    // refreshes it (past an eighth of the idle timeout).
    let idle = bpf::DEFAULT_IDLE_TIMEOUT;
    assert_eq!(h.cache.idle_timeout(), idle);
    h.install_by(&dst_by_via, HOP_REDIRECT, false, Some(via));
    h.raw_routes.backdate(&dst_by_via, idle / 2);
    let before = ok(h.cache.get(&dst_by_via), "get").unwrap_or_else(|| panic!("no entry"));
    for packet in [
        data_via(&dst_by_via, &others[1], 64, body),
        data(&dst_by_via, 64, body),
    ] {
        h.check(
            "entry by a via, half an idle timeout old, another packet: a miss",
            &inbound(SENDER, false, PLAIN, &packet),
            XDP_PASS,
            PASS_CACHE_MISS,
            None,
        );
    }
    let after = ok(h.cache.get(&dst_by_via), "get").unwrap_or_else(|| panic!("no entry"));
    assert_eq!(
        after.last_used_ns, before.last_used_ns,
        "a miss refreshed the entry"
    );
    let payload = data_via(&dst_by_via, &via, 64, body);
    h.check(
        "entry by a via, half an idle timeout old, its via: a hit",
        &inbound(SENDER, false, PLAIN, &payload),
        XDP_REDIRECT,
        FWD_REDIRECT,
        Some(&forwarded(HOP_REDIRECT, false, PLAIN, &payload)),
    );
    let hit = ok(h.cache.get(&dst_by_via), "get").unwrap_or_else(|| panic!("no entry"));
    assert!(
        hit.last_used_ns > before.last_used_ns,
        "a hit refreshes last_used_ns: {before:?} -> {hit:?}"
    );
}

/// The frame a sender with TX checksum offload hands to its veth: `inbound`
/// with the partial checksum in place of the full one.
fn inbound_partial(from: Host, v6: bool, payload: &[u8]) -> Vec<u8> {
    let frame = inbound(from, v6, PLAIN, payload);
    with_udp_check(&frame, partial_checksum(&frame))
}

/// The fast path's UDP checksum on input: a partial checksum (TX offload on
/// a veth sender) is completed, a valid one and IPv4's 0 ("none") are
/// carried over incrementally, one that is neither is left to the stack.
/// Every output's checksum is verified independently (`verify_checksums`)
/// and equal to the frame the worker would send; sizes cover every step of
/// the summing (512-byte chunks, each power of two below, an odd byte).
#[test]
fn udp_checksum_fixtures() {
    let netns = Netns::create("ck");
    netns.run_inside(udp_checksum_fixtures_inside);
}

fn udp_checksum_fixtures_inside() {
    let mut h = Harness::with_local_id(&id(0x01));
    let dst_tx = id(0xb1);
    let dst_redirect = id(0xb2);
    let mut rng = Rng(0x0c5e_c4ec_4a11_0001);
    for v6 in [false, true] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        h.install(&dst_tx, HOP_TX, v6);
        h.install(&dst_redirect, HOP_REDIRECT, v6);
        // UDP lengths from the overlay header alone to near the MTU.
        for body_len in [0usize, 1, 2, 3, 5, 63, 200, 467, 468, 469, 511, 1024, 1380] {
            let body: Vec<u8> = (0..body_len).map(|_| rng.next() as u8).collect();
            for (dst, hop, verdict, counter, how) in [
                (
                    &dst_redirect,
                    HOP_REDIRECT,
                    XDP_REDIRECT,
                    FWD_REDIRECT,
                    "redirect",
                ),
                (&dst_tx, HOP_TX, XDP_TX, FWD_TX, "XDP_TX"),
            ] {
                let payload = data(dst, 64, &body);
                let expected = forwarded(hop, v6, PLAIN, &payload);
                let what = format!("{fam} {how}, {body_len}-byte body");
                let out = h.check(
                    &format!("{what}: partial checksum in, valid out"),
                    &inbound_partial(SENDER, v6, &payload),
                    verdict,
                    counter,
                    Some(&expected),
                );
                verify_checksums(&what, &out);
                let out = h.check(
                    &format!("{what}: valid checksum in, valid out"),
                    &inbound(SENDER, v6, PLAIN, &payload),
                    verdict,
                    counter,
                    Some(&expected),
                );
                verify_checksums(&what, &out);
                let good = inbound(SENDER, v6, PLAIN, &payload);
                h.check(
                    &format!("{what}: checksum neither valid nor partial: the stack's"),
                    &with_udp_check(&good, udp_check(&good) ^ 0x0100),
                    XDP_PASS,
                    PASS_UNRESOLVED,
                    None,
                );
                let mut damaged = good.clone();
                let last = damaged.len() - 1;
                damaged[last] ^= 0x40;
                h.check(
                    &format!("{what}: payload damaged in transit: the stack's"),
                    &damaged,
                    XDP_PASS,
                    PASS_UNRESOLVED,
                    None,
                );
            }
        }
    }
    // IPv4 only: 0 is "no checksum", valid, and stays 0 (no sum is taken).
    h.install(&dst_redirect, HOP_REDIRECT, false);
    let no_check = Shape {
        no_udp_checksum: true,
        ..PLAIN
    };
    for body_len in [0usize, 1, 700] {
        let payload = data(&dst_redirect, 64, &vec![0x5a; body_len]);
        let out = h.check(
            &format!("IPv4 {body_len}-byte body, UDP checksum 0 in: 0 out"),
            &inbound(SENDER, false, no_check, &payload),
            XDP_REDIRECT,
            FWD_REDIRECT,
            Some(&forwarded(HOP_REDIRECT, false, no_check, &payload)),
        );
        assert_eq!(&out[40..42], &[0, 0], "UDP checksum stays 0");
        verify_checksums("IPv4 no checksum", &out);
    }
    // A partial checksum whose completed value is 0 is sent as 0xffff (0
    // would mean "none" over IPv4). Two body bytes equal to the output
    // checksum of a zero body make the output's sum 0xffff, its checksum 0.
    let zero_body = forwarded(
        HOP_REDIRECT,
        false,
        PLAIN,
        &data(&dst_redirect, 64, &[0, 0]),
    );
    let c = [zero_body[40], zero_body[41]];
    let mut found = false;
    for body in [c, [c[1], c[0]]] {
        let payload = data(&dst_redirect, 64, &body);
        let expected = forwarded(HOP_REDIRECT, false, PLAIN, &payload);
        if expected[40..42] != [0xff, 0xff] {
            continue;
        }
        let out = h.check(
            "IPv4 partial checksum completing to 0: 0xffff",
            &inbound_partial(SENDER, false, &payload),
            XDP_REDIRECT,
            FWD_REDIRECT,
            Some(&expected),
        );
        verify_checksums("IPv4 0xffff", &out);
        found = true;
    }
    assert!(found, "no body makes the output checksum 0xffff");
}

/// The cost of summing the datagram, for docs/xdp.md: BPF_PROG_TEST_RUN
/// with `repeat` on IPv4 frames forwarded by XDP_REDIRECT, with a UDP
/// checksum (summed) and without one (0: not summed), by frame size; the
/// kernel's mean ns per run. Prints the table (`--nocapture`); asserts
/// only that every run was a forward. Run it alone:
/// `cargo test --locked -p xorlay --test xdp_fastpath -- udp_checksum_cost --nocapture`
/// (the kernel times the JIT-compiled program: the build profile does not
/// matter).
#[test]
fn udp_checksum_cost() {
    let netns = Netns::create("cc");
    netns.run_inside(udp_checksum_cost_inside);
}

fn udp_checksum_cost_inside() {
    // Each run decrements the hop limit of the same buffer: 250 forwards.
    const REPEAT: u32 = 250;
    const CALLS: u32 = 20;
    let mut h = Harness::with_local_id(&id(0x01));
    // The neighbor's bucket would meter a tight loop of test runs.
    ok(
        h.cache.set_limits(&RateLimits {
            neighbor_data: RateLimit::UNLIMITED,
            ..RateLimits::default()
        }),
        "set_limits",
    );
    // After the first run the frame comes from our own XF1 address (the
    // program rewrote it in place): allow that source too.
    let allowed: HashSet<SocketAddr> = [sender(SENDER, false), ours(XF1, false)]
        .into_iter()
        .collect();
    ok(h.neighbors.sync(&allowed), "sync");
    let dst = id(0xb3);
    h.install(&dst, HOP_REDIRECT, false);
    let program: &Xdp = match h.ebpf.program(bpf::PROGRAM_NAME) {
        Some(program) => match program.try_into() {
            Ok(xdp) => xdp,
            Err(e) => panic!("{} is not an XDP program: {e}", bpf::PROGRAM_NAME),
        },
        None => panic!("no program {}", bpf::PROGRAM_NAME),
    };
    println!("frame bytes | ns/run, checksum 0 (no sum) | ns/run, checksum summed");
    for frame_len in [14 + 20 + 8 + HEADER_LEN, 512, 1514] {
        let body_len = frame_len - 14 - 20 - 8 - HEADER_LEN;
        let payload = data(&dst, 255, &vec![0x77; body_len]);
        let mut ns = [0f64; 2];
        for (slot, shape) in [
            Shape {
                no_udp_checksum: true,
                ..PLAIN
            },
            PLAIN,
        ]
        .into_iter()
        .enumerate()
        {
            let frame = inbound(SENDER, false, shape, &payload);
            assert_eq!(frame.len(), frame_len);
            let len = u32::try_from(frame.len()).expect("frame fits u32");
            let ctx: Vec<u8> = [0, len, 0, h.ingress, 0, 0]
                .iter()
                .flat_map(|v: &u32| v.to_ne_bytes())
                .collect();
            let mut total = Duration::ZERO;
            for _ in 0..CALLS {
                let before = h.counters().fwd_redirect;
                let options = TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    repeat: REPEAT,
                    ..TestRunOptions::default()
                };
                let result = match program.test_run(options) {
                    Ok(result) => result,
                    Err(e) => panic!("BPF_PROG_TEST_RUN failed: {e:?}"),
                };
                assert_eq!(result.return_value, XDP_REDIRECT, "{:?}", h.counters());
                assert_eq!(
                    h.counters().fwd_redirect - before,
                    u64::from(REPEAT),
                    "every run forwarded"
                );
                total += result.duration;
            }
            ns[slot] = total.as_nanos() as f64 / f64::from(CALLS);
        }
        println!("{frame_len:>11} | {:>26.0} | {:>23.0}", ns[0], ns[1]);
    }
}

#[test]
fn fast_path_needs_forwarding_on_the_ingress_interface() {
    let netns = Netns::create("fwd");
    let name = netns.name.clone();
    netns.run_inside(move || {
        let local = id(0x01);
        let dst = id(0xb1);
        let mut h = Harness::with_local_id(&local);
        for v6 in [false, true] {
            h.install(&dst, HOP_REDIRECT, v6);
            let payload = data(&dst, 64, b"x");
            set_forwarding(&name, XF0, false);
            h.check(
                "forwarding off on the ingress: the FIB refuses, the workers forward",
                &inbound(SENDER, v6, PLAIN, &payload),
                XDP_PASS,
                PASS_UNRESOLVED,
                None,
            );
            set_forwarding(&name, XF0, true);
            h.check(
                "forwarding on again: the fast path forwards",
                &inbound(SENDER, v6, PLAIN, &payload),
                XDP_REDIRECT,
                FWD_REDIRECT,
                Some(&forwarded(HOP_REDIRECT, v6, PLAIN, &payload)),
            );
        }
    });
}

/// The fast path reuses a next hop's FIB/neighbor resolution for
/// `XORLAY_L2_TTL_NS`, resolves it again after that, never reuses it for a
/// packet longer than one the FIB accepted (the MTU check holds), and an
/// install always resolves afresh.
#[test]
fn the_next_hop_resolution_is_cached_briefly() {
    let netns = Netns::create("l2");
    let name = netns.name.clone();
    netns.run_inside(move || {
        let local = id(0x01);
        let dst = id(0xb2);
        let ttl = Duration::from_nanos(consts::L2_TTL_NS);
        let moved_mac = [0x02, 0, 0, 0x02, 0x02, 0xbb];
        let set_mac = |v6: bool, mac: [u8; 6]| {
            let ip = HOP_REDIRECT.ip(v6).to_string();
            let mac = mac_text(mac);
            run(
                "ip",
                &[
                    "-n",
                    &name,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &mac,
                    "dev",
                    XF1.name,
                    "nud",
                    "permanent",
                ],
            );
        };
        let set_mtu = |mtu: u32| {
            run(
                "ip",
                &[
                    "-n",
                    &name,
                    "link",
                    "set",
                    XF1.name,
                    "mtu",
                    &mtu.to_string(),
                ],
            );
        };
        let mut h = Harness::with_local_id(&local);
        for v6 in [false, true] {
            let payload = data(&dst, 64, b"small");
            let small = inbound(SENDER, v6, PLAIN, &payload);
            let to_old = forwarded(HOP_REDIRECT, v6, PLAIN, &payload);
            let mut to_moved = to_old.clone();
            to_moved[..6].copy_from_slice(&moved_mac);
            let redirect = |h: &Harness, what: &str, want: &[u8]| {
                h.check(what, &small, XDP_REDIRECT, FWD_REDIRECT, Some(want));
            };

            // Within the TTL a changed neighbor is not seen yet. A stall
            // longer than half the TTL between the two runs makes the
            // attempt inconclusive: up to three attempts.
            let mut cached_seen = false;
            for _ in 0..3 {
                set_mac(v6, HOP_REDIRECT.mac());
                h.install(&dst, HOP_REDIRECT, v6);
                let resolved = std::time::Instant::now();
                redirect(&h, "first packet: resolved by the FIB", &to_old);
                set_mac(v6, moved_mac);
                let (action, out) = h.run("right after the neighbor moved", &small);
                if resolved.elapsed() < ttl / 2 {
                    assert_eq!(action, XDP_REDIRECT);
                    assert_eq!(out, to_old, "within the TTL the cached MAC is used");
                    cached_seen = true;
                    break;
                }
            }
            assert!(
                cached_seen,
                "three attempts each stalled past half of {ttl:?}"
            );
            // After the TTL the FIB is asked again and the new MAC is used:
            // the resolution made a TTL older, as if that long had passed.
            h.raw_routes.backdate(&dst, ttl);
            redirect(
                &h,
                "a TTL after the neighbor moved: resolved again",
                &to_moved,
            );
            // An install resolves afresh, at once.
            set_mac(v6, HOP_REDIRECT.mac());
            h.install(&dst, HOP_REDIRECT, v6);
            redirect(&h, "after a reinstall: the current neighbor", &to_old);

            // The cached resolution covers only lengths the FIB accepted: a
            // longer packet is checked against the (now smaller) MTU.
            let big_payload = data(&dst, 64, &[0x5a; 1300]);
            let big = inbound(SENDER, v6, PLAIN, &big_payload);
            set_mtu(1280);
            redirect(&h, "small packet, cached, fits", &to_old);
            h.check(
                "a packet over the egress MTU: the kernel's to handle",
                &big,
                XDP_PASS,
                PASS_UNRESOLVED,
                None,
            );
            set_mtu(1500);
            h.check(
                "the same packet with the MTU back at 1500",
                &big,
                XDP_REDIRECT,
                FWD_REDIRECT,
                Some(&forwarded(HOP_REDIRECT, v6, PLAIN, &big_payload)),
            );
        }
    });
}

#[test]
fn route_cache_api() {
    let netns = Netns::create("api");
    netns.run_inside(|| {
        let mut h = Harness::new();
        assert!(ok(h.cache.is_empty(), "is_empty"));
        let v4 = RouteEntry {
            next_hop: "198.18.2.2:4799".parse().expect("literal"),
            source: "198.18.2.1:4799".parse().expect("literal"),
            via: None,
        };
        ok(h.cache.install(&id(1), &v4), "install v4");
        // The v4-mapped spelling (a dual-stack socket's) is the same route.
        let mapped = RouteEntry {
            next_hop: "[::ffff:198.18.2.2]:4799".parse().expect("literal"),
            source: "[::ffff:198.18.2.1]:4799".parse().expect("literal"),
            via: None,
        };
        ok(h.cache.install(&id(2), &mapped), "install mapped");
        ok(h.cache.install_no_route(&id(3)), "install_no_route");
        assert_eq!(ok(h.cache.len(), "len"), 3);
        let one = ok(h.cache.get(&id(1)), "get").unwrap_or_else(|| panic!("no entry 1"));
        let two = ok(h.cache.get(&id(2)), "get").unwrap_or_else(|| panic!("no entry 2"));
        assert_eq!(one.route, Some(v4));
        assert_eq!(two.route, Some(v4), "stored as IPv4");
        assert_eq!(one.generation, h.cache.generation());
        assert_eq!(one.installed_ns, one.last_used_ns);
        let three = ok(h.cache.get(&id(3)), "get").unwrap_or_else(|| panic!("no entry 3"));
        assert_eq!(three.route, None, "negative");
        assert_eq!(ok(h.cache.get(&id(4)), "get"), None);
        assert!(ok(h.cache.remove(&id(3)), "remove"));
        assert!(!ok(h.cache.remove(&id(3)), "remove again"));
        assert_eq!(ok(h.cache.len(), "len"), 2);

        for (next_hop, source, reason) in [
            (
                "198.18.2.2:4799",
                "[fd00:2::1]:4799",
                "different address families",
            ),
            (
                "[fd00:2::2]:4799",
                "198.18.2.1:4799",
                "different address families",
            ),
            ("0.0.0.0:4799", "198.18.2.1:4799", "unspecified"),
            ("[fd00:2::2]:4799", "[::]:4799", "unspecified"),
            ("198.18.2.2:0", "198.18.2.1:4799", "port is 0"),
        ] {
            let route = RouteEntry {
                next_hop: next_hop.parse().expect("literal"),
                source: source.parse().expect("literal"),
                via: None,
            };
            match h.cache.install(&id(9), &route) {
                Ok(()) => panic!("installed {route:?}"),
                Err(error) => {
                    assert!(matches!(error, BpfError::InvalidRoute { .. }), "{error:?}");
                    let message = error.to_string();
                    assert!(message.contains(reason), "{message}");
                }
            }
        }
        assert_eq!(ok(h.cache.get(&id(9)), "get"), None);

        assert_eq!(h.cache.limits(), RateLimits::default(), "loader defaults");
        assert_eq!(h.cache.idle_timeout(), bpf::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(h.cache.generation(), 1);
        assert!(matches!(
            bpf::take_route_cache(&mut h.ebpf),
            Err(BpfError::MissingObject { .. })
        ));
        // The neighbor map is still usable alongside.
        assert!(ok(h.neighbors.contains(&sender(SENDER, false)), "contains"));
    });
}

// ---------------------------------------------------------------------------
// Differential: the fast path against core::forward::decide + the worker.

/// A neighbor as the workers know it: its host in the lab and the family
/// of its underlay address.
#[derive(Clone, Copy, Debug)]
struct Neighbor {
    host: Host,
    v6: bool,
}

impl Neighbor {
    fn addr(self) -> SocketAddr {
        overlay_addr(self.host, self.v6)
    }
}

#[test]
fn differential_against_decide_and_the_worker() {
    let netns = Netns::create("diff");
    netns.run_inside(|| {
        let mut rng = Rng(0x786f_726c_6179_0004);
        let mut seen = [0usize; STAT_COUNT];
        for round in 0..3 {
            differential_round(round, &mut rng, &mut seen);
        }
        for (name, counter, at_least) in [
            ("redirect", FWD_REDIRECT, 100),
            ("tx", FWD_TX, 100),
            ("no route", DROP_NO_ROUTE, 100),
            ("hop limit", DROP_HOP_LIMIT_EXCEEDED, 20),
            ("cross-family miss", PASS_CACHE_MISS, 20),
        ] {
            assert!(
                seen[counter as usize] >= at_least,
                "too few {name} cases: {seen:?}"
            );
        }
    });
}

fn differential_round(round: usize, rng: &mut Rng, seen: &mut [usize; STAT_COUNT]) {
    let local = rng.id();
    // Neighbors: hosts behind xf0 (XDP_TX) and xf1 (redirect), each over
    // IPv4 or IPv6.
    let count = 4 + rng.below(usize::from(DIFF_HOSTS) - 4);
    let neighbors: Vec<(NodeId, Neighbor)> = (0..count)
        .map(|i| {
            let port = if rng.below(2) == 0 { XF0 } else { XF1 };
            let neighbor = Neighbor {
                host: Host::new(port, 10 + i as u8),
                v6: rng.below(2) == 0,
            };
            (rng.id(), neighbor)
        })
        .collect();
    let table = match NextHopTable::new(local, neighbors) {
        Ok(table) => table,
        Err(e) => panic!("round {round}: {e}"),
    };
    let mut h = Harness::with_local_id(&local);
    ok(h.cache.set_limits(&RateLimits::UNLIMITED), "set_limits");

    let destinations: Vec<(NodeId, u8)> = (0..1500)
        .map(|_| {
            let dst = rng.id();
            // Mostly well above 1; some at the limit.
            let hop_limit = match rng.below(10) {
                0 => 1,
                1 => 2,
                _ => 3 + rng.below(62) as u8,
            };
            (dst, hop_limit)
        })
        .collect();
    // What userspace installs: the route, without a hop limit (the entry
    // is per destination, not per packet).
    for (dst, _) in &destinations {
        match route(&table, dst) {
            Route::Next { hop, .. } => {
                let route = RouteEntry {
                    next_hop: hop.addr(),
                    source: ours(hop.host.port, hop.v6),
                    via: None,
                };
                ok(h.cache.install(dst, &route), "install");
            }
            Route::Miss => ok(h.cache.install_no_route(dst), "install_no_route"),
            other => panic!("round {round}: route says {other:?} for {dst}"),
        }
    }
    assert_eq!(ok(h.cache.len(), "len"), destinations.len());

    for (i, (dst, hop_limit)) in destinations.iter().enumerate() {
        let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        let payload = data(dst, *hop_limit, &body);
        let verdict = decide(&table, dst, *hop_limit);
        let description = format!("round {round} dst {i} {dst} hop limit {hop_limit}: {verdict:?}");
        match verdict {
            Verdict::Forward { hop, .. } => {
                let expected = forwarded(hop.host, hop.v6, PLAIN, &payload);
                let (action, counter) = if hop.host.port.name == XF0.name {
                    (XDP_TX, FWD_TX)
                } else {
                    (XDP_REDIRECT, FWD_REDIRECT)
                };
                let out = h.check(
                    &description,
                    &inbound(SENDER, hop.v6, PLAIN, &payload),
                    action,
                    counter,
                    Some(&expected),
                );
                // The worker's datagram, field by field.
                let udp_payload = verify_checksums(&description, &out);
                assert_eq!(udp_payload, worker_forward(&payload), "{description}");
                seen[counter as usize] += 1;
                if i % 8 == 0 {
                    h.check(
                        &format!("{description}, arriving over the other family"),
                        &inbound(SENDER, !hop.v6, PLAIN, &payload),
                        XDP_PASS,
                        PASS_CACHE_MISS,
                        None,
                    );
                    seen[PASS_CACHE_MISS as usize] += 1;
                }
            }
            Verdict::Drop(DropReason::NoRoute) => {
                h.check(
                    &description,
                    &inbound(SENDER, i % 2 == 0, PLAIN, &payload),
                    XDP_DROP,
                    DROP_NO_ROUTE,
                    None,
                );
                seen[DROP_NO_ROUTE as usize] += 1;
            }
            Verdict::Drop(DropReason::HopLimitExceeded) => {
                // The entry is positive or negative; either way a hit with
                // hop limit 1 is dropped like decide() does. (A positive
                // entry seen over the other family would be a miss: send
                // over the entry's family.)
                let v6 = match route(&table, dst) {
                    Route::Next { hop, .. } => hop.v6,
                    _ => i % 2 == 0,
                };
                h.check(
                    &description,
                    &inbound(SENDER, v6, PLAIN, &payload),
                    XDP_DROP,
                    DROP_HOP_LIMIT_EXCEEDED,
                    None,
                );
                seen[DROP_HOP_LIMIT_EXCEEDED as usize] += 1;
            }
            other => panic!("{description}: unexpected {other:?}"),
        }
    }
}
