//! The XDP program (ebpf/xorlay.bpf.c) run by the kernel on crafted frames.
//!
//! - A Katran-style fixture table `{description, frame, verdict, counter}`
//!   run with BPF_PROG_TEST_RUN against the real compiled object
//!   (`xorlay::io::bpf::load`, the neighbor filter on, the fixtures' sender
//!   in the allowlist): the verdict, exactly one counter up by one, and the
//!   output bytes equal to the input (the program writes only when it
//!   forwards, and the route cache is off here: no local ID is set).
//! - The neighbor allowlist: data from strangers dropped, control passed,
//!   validation first; `NeighborMap::sync` checked against the kernel map
//!   through a second handle, and by the verdicts it changes.
//! - A differential test: for the golden malformed packets and a few hundred
//!   seeded mutations of `golden::DATA_PING` and `DATA_PING_VIA`, the XDP verdict and counter
//!   equal what the Rust parser (`OverlayPacket::validate`) says, with the
//!   filter off and with it on (sender allowed).
//! - Attach tests on a veth pair inside a network namespace of their own,
//!   proving the program attaches in each mode, sees real traffic, and is
//!   gone after the `XdpRouter` is dropped.
//! - Error messages: missing interface, missing privileges.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN for namespaces) and
//! iproute2. Frames use addresses from 198.18.0.0/15 and fd00::/8 only; the
//! program is never attached outside the tests' own namespaces.

mod common;

use common::frames::{
    self, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_FRAGMENT,
    IPPROTO_TCP, IPPROTO_UDP, Ipv4, partial_checksum, udp_check, with_udp_check,
};
use common::xdp::{RawNeighbors, test_run};
use common::{Rng, TestNetns, if_index, wait_until};
use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::PerCpuValues;
use xorlay::io::bpf::{
    self, BpfError, LoadOptions, NEIGHBORS_MAX, NeighborMap, STAT_COUNT, SyncReport, XdpAttachMode,
    XdpCounters, XdpRouter, neighbor_key,
};
use xorlay::wire::overlay::{DEFAULT_PORT, FLAG_VIA, HEADER_LEN, VERSION, golden};
use xorlay::wire::{OverlayError, OverlayPacket, PacketType, consts};

/// The overlay port the program is loaded with: not the default, so a
/// program that ignored the configured port would fail the fixtures.
const PORT: u16 = 47990;
const OTHER_PORT: u16 = DEFAULT_PORT;

/// XDP actions (linux/bpf.h `enum xdp_action`).
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const PASS_OTHER: u32 = consts::XDP_PASS_OTHER;
const PASS_OVERLAY: u32 = consts::XDP_PASS_OVERLAY;
const DROP_TRUNCATED: u32 = consts::XDP_DROP_TRUNCATED;
const DROP_NOT_NEIGHBOR: u32 = consts::XDP_DROP_NOT_NEIGHBOR;

const MAC_DST: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const MAC_SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const IPV4_SRC: [u8; 4] = [198, 18, 0, 1];
const IPV4_DST: [u8; 4] = [198, 18, 0, 2];
const IPV6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const IPV6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// The flow-hash source port a sender would use.
const SRC_PORT: u16 = 51234;
/// Addresses of a stranger: not in the allowlist.
const STRANGER_IPV4: [u8; 4] = [198, 18, 0, 99];
const STRANGER_IPV6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];

/// The underlay address a datagram comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

/// The fixtures' sender, a neighbor (in the allowlist of `Harness::new`).
const NEIGHBOR4: Source = Source::V4(IPV4_SRC, SRC_PORT);
const NEIGHBOR6: Source = Source::V6(IPV6_SRC, SRC_PORT);
/// Strangers: another IP, the neighbor's port.
const STRANGER4: Source = Source::V4(STRANGER_IPV4, SRC_PORT);
const STRANGER6: Source = Source::V6(STRANGER_IPV6, SRC_PORT);
/// The neighbor's IP, another port: a flow port, as its fast path sends from
/// (`Packet::flow_port`).
const OTHER_PORT4: Source = Source::V4(IPV4_SRC, 0xc70c);
const OTHER_PORT6: Source = Source::V6(IPV6_SRC, 0xc70c);

impl Source {
    fn addr(self) -> SocketAddr {
        match self {
            Source::V4(ip, port) => SocketAddr::from((ip, port)),
            Source::V6(ip, port) => SocketAddr::from((ip, port)),
        }
    }

    /// Our address of its family, on `port`.
    fn to(self, port: u16) -> SocketAddr {
        match self {
            Source::V4(..) => SocketAddr::from((IPV4_DST, port)),
            Source::V6(..) => SocketAddr::from((IPV6_DST, port)),
        }
    }
}

/// The allowlist of `Harness::new`: the fixtures' sender over both families.
fn neighbors() -> HashSet<SocketAddr> {
    [NEIGHBOR4.addr(), NEIGHBOR6.addr()].into_iter().collect()
}

// ---------------------------------------------------------------------------
// Frame builders.

/// Ethernet from the fixtures' sender to us.
fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    frames::ethernet((MAC_DST, MAC_SRC), None, ethertype, payload)
}

/// Ethernet with one VLAN tag (`tpid` 802.1Q or 802.1AD), VLAN ID 42.
fn ethernet_vlan(tpid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    frames::ethernet((MAC_DST, MAC_SRC), Some(tpid), ethertype, payload)
}

/// An IPv4 packet from the fixtures' sender with a correct header checksum.
fn ipv4(fields: Ipv4, payload: &[u8]) -> Vec<u8> {
    frames::ipv4(fields, IPV4_SRC.into(), IPV4_DST.into(), payload)
}

/// An IPv6 packet from the fixtures' sender.
fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    frames::ipv6(next_header, 64, IPV6_SRC.into(), IPV6_DST.into(), payload)
}

/// The pseudo-header the UDP checksum covers, from the fixtures' sender.
#[derive(Clone, Copy)]
enum Pseudo {
    V4,
    V6,
}

/// A UDP datagram from the fixtures' sender whose length field says
/// `len_field` (None: the real length), with its checksum over the
/// pseudo-header.
fn udp_with_len(pseudo: Pseudo, dst_port: u16, payload: &[u8], len_field: Option<u16>) -> Vec<u8> {
    let source = match pseudo {
        Pseudo::V4 => NEIGHBOR4,
        Pseudo::V6 => NEIGHBOR6,
    };
    frames::udp(source.addr(), source.to(dst_port), payload, len_field, true)
}

fn udp(pseudo: Pseudo, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp_with_len(pseudo, dst_port, payload, None)
}

/// Ethernet + IPv4 + UDP to `dst_port` around `payload`.
fn udp4_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    frame_from(NEIGHBOR4, dst_port, payload)
}

/// Ethernet + IPv6 + UDP to `dst_port` around `payload`.
fn udp6_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    frame_from(NEIGHBOR6, dst_port, payload)
}

/// Ethernet + IPv4 or IPv6 + UDP from `source` to `dst_port` around
/// `payload`.
fn frame_from(source: Source, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let (ethertype, packet) = ip_from(source, dst_port, payload);
    ethernet(ethertype, &packet)
}

/// IPv4 or IPv6 + UDP from `source` to `dst_port` around `payload`, and its
/// ethertype.
fn ip_from(source: Source, dst_port: u16, payload: &[u8]) -> (u16, Vec<u8>) {
    let (src, dst) = (source.addr(), source.to(dst_port));
    let datagram = frames::udp(src, dst, payload, None, true);
    frames::ip(Ipv4::UDP, src.ip(), dst.ip(), &datagram)
}

/// A minimal TCP SYN header to `dst_port` (checksum not needed by XDP).
fn tcp_syn(dst_port: u16) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20);
    segment.extend_from_slice(&SRC_PORT.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&1u32.to_be_bytes()); // sequence
    segment.extend_from_slice(&0u32.to_be_bytes()); // acknowledgement
    segment.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
    segment.extend_from_slice(&65535u16.to_be_bytes()); // window
    segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    segment
}

/// An ARP request for 198.18.0.2 from 198.18.0.1.
fn arp_request() -> Vec<u8> {
    let mut arp = Vec::with_capacity(28);
    arp.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    arp.extend_from_slice(&MAC_SRC);
    arp.extend_from_slice(&IPV4_SRC);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&IPV4_DST);
    let mut frame = Vec::with_capacity(14 + arp.len());
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&MAC_SRC);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&arp);
    frame
}

/// `DATA_PING` turned into a control packet.
fn control_ping() -> Vec<u8> {
    let mut bytes = golden::DATA_PING.to_vec();
    OverlayPacket::new_unchecked(&mut bytes[..]).set_packet_type(PacketType::Control);
    assert_eq!(OverlayPacket::new_unchecked(&bytes[..]).validate(), Ok(()));
    bytes
}

/// `DATA_PING_VIA` turned into a control packet (a via is allowed there,
/// and ignored).
fn control_ping_via() -> Vec<u8> {
    let mut bytes = golden::DATA_PING_VIA.to_vec();
    OverlayPacket::new_unchecked(&mut bytes[..]).set_packet_type(PacketType::Control);
    assert_eq!(OverlayPacket::new_unchecked(&bytes[..]).validate(), Ok(()));
    bytes
}

// ---------------------------------------------------------------------------
// Running the program.

/// The loaded program, its counters and its allowlist.
struct Harness {
    ebpf: Ebpf,
    neighbors: NeighborMap,
}

impl Harness {
    /// The overlay port [`PORT`], the filter on, the fixtures' sender
    /// ([`NEIGHBOR4`], [`NEIGHBOR6`]) in the allowlist.
    fn new() -> Harness {
        Harness::load(PORT, LoadOptions::default(), &neighbors())
    }

    /// The filter off: validation alone (the allowlist empty and ignored).
    fn unfiltered() -> Harness {
        Harness::load(
            PORT,
            LoadOptions {
                filter_neighbors: false,
            },
            &HashSet::new(),
        )
    }

    fn load(port: u16, options: LoadOptions, allowed: &HashSet<SocketAddr>) -> Harness {
        let mut ebpf = match bpf::load_with(port, options) {
            Ok(ebpf) => ebpf,
            Err(e) => panic!("loading the XDP object ({options:?}) failed: {e}"),
        };
        let neighbors = match bpf::take_neighbor_map(&mut ebpf) {
            Ok(map) => map,
            Err(e) => panic!("taking the neighbor map: {e}"),
        };
        let mut harness = Harness { ebpf, neighbors };
        let report = harness.sync(allowed);
        assert_eq!(
            report,
            SyncReport {
                inserted: allowed.len(),
                removed: 0
            }
        );
        harness
    }

    fn sync(&mut self, wanted: &HashSet<SocketAddr>) -> SyncReport {
        match self.neighbors.sync(wanted) {
            Ok(report) => report,
            Err(e) => panic!("syncing the allowlist to {wanted:?}: {e}"),
        }
    }

    fn counters(&self) -> XdpCounters {
        match bpf::read_counters(&self.ebpf) {
            Ok(counters) => counters,
            Err(e) => panic!("reading the XDP counters failed: {e}"),
        }
    }

    /// Runs the program once on `frame` (`common::xdp::test_run`, no
    /// ingress interface); returns the action and the output frame.
    fn run(&self, description: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        test_run(&self.ebpf, description, frame, 0)
    }

    /// Runs `frame` and checks the action, that exactly counter `counter`
    /// went up by one, and that the frame left unchanged.
    fn check(&self, description: &str, frame: &[u8], verdict: u32, counter: u32) {
        let before = self.counters().to_array();
        let (action, output) = self.run(description, frame);
        let after = self.counters().to_array();
        assert_eq!(
            action,
            verdict,
            "{description}: action {} (counters before {before:?}, after {after:?})",
            action_name(action)
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
        assert_eq!(
            output, frame,
            "{description}: the program changed the frame"
        );
    }
}

fn action_name(action: u32) -> String {
    match action {
        0 => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        3 => "XDP_TX".into(),
        4 => "XDP_REDIRECT".into(),
        other => format!("unknown action {other}"),
    }
}

/// One row of the table.
struct Fixture {
    description: String,
    frame: Vec<u8>,
    verdict: u32,
    counter: u32,
}

fn fixture(description: impl Into<String>, frame: Vec<u8>, verdict: u32, counter: u32) -> Fixture {
    Fixture {
        description: description.into(),
        frame,
        verdict,
        counter,
    }
}

/// What the program must do with a UDP payload on the overlay port,
/// according to the Rust parser.
fn expected_for_payload(payload: &[u8]) -> (u32, u32) {
    match OverlayPacket::new_unchecked(payload).validate() {
        Ok(()) => (XDP_PASS, PASS_OVERLAY),
        Err(reason) => (XDP_DROP, reason.xdp_stat()),
    }
}

fn fixtures() -> Vec<Fixture> {
    let ping = golden::DATA_PING.to_vec();
    let control = control_ping();
    let ping_via = golden::DATA_PING_VIA.to_vec();
    let control_via = control_ping_via();
    // The UDP length field of a datagram carrying `ping`, plus `delta`.
    let udp_len = |delta: i32| u16::try_from(8 + ping.len() as i32 + delta).ok();
    let mut table = vec![
        // Valid overlay packets pass to the workers.
        fixture(
            "valid data over IPv4",
            udp4_frame(PORT, &ping),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid control over IPv4",
            udp4_frame(PORT, &control),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data over IPv6",
            udp6_frame(PORT, &ping),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid control over IPv6",
            udp6_frame(PORT, &control),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data with a via over IPv4",
            udp4_frame(PORT, &ping_via),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data with a via over IPv6",
            udp6_frame(PORT, &ping_via),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid control with a via over IPv4",
            udp4_frame(PORT, &control_via),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid control with a via over IPv6",
            udp6_frame(PORT, &control_via),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data with a via and reserved flag bits set",
            udp4_frame(PORT, &{
                let mut b = ping_via.clone();
                b[5] = 0xff;
                b
            }),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data without a via, reserved flag bits set",
            udp6_frame(PORT, &{
                let mut b = ping.clone();
                b[5] = 0xfe;
                b
            }),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "data with a via, UDP length 1 short of the whole header",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4::UDP,
                    &udp_with_len(Pseudo::V4, PORT, &ping_via, Some(8 + 103)),
                ),
            ),
            XDP_DROP,
            DROP_TRUNCATED,
        ),
        fixture(
            "valid data over IPv4 in an 802.1Q VLAN",
            ethernet_vlan(
                ETH_P_8021Q,
                ETH_P_IP,
                &ipv4(Ipv4::UDP, &udp(Pseudo::V4, PORT, &ping)),
            ),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data over IPv6 in an 802.1AD VLAN",
            ethernet_vlan(
                ETH_P_8021AD,
                ETH_P_IPV6,
                &ipv6(IPPROTO_UDP, &udp(Pseudo::V6, PORT, &ping)),
            ),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data over IPv4 with options (IHL 7)",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4 {
                        options: &[1, 1, 1, 1, 1, 1, 1, 0], // NOPs, end of list
                        ..Ipv4::UDP
                    },
                    &udp(Pseudo::V4, PORT, &ping),
                ),
            ),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data, frame padded beyond the UDP length",
            {
                let mut frame = udp4_frame(PORT, &ping);
                frame.extend_from_slice(&[0u8; 6]);
                frame
            },
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "valid data with a large payload",
            {
                let mut big = vec![0x5a; HEADER_LEN + 1400];
                big[..HEADER_LEN].copy_from_slice(&golden::DATA_PING[..HEADER_LEN]);
                OverlayPacket::new_unchecked(&mut big[..]).set_payload_len(1400);
                udp6_frame(PORT, &big)
            },
            XDP_PASS,
            PASS_OVERLAY,
        ),
        // The UDP length field decides the payload, bounded by the frame.
        fixture(
            "UDP length claims more than the frame holds (IPv4)",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4::UDP,
                    &udp_with_len(Pseudo::V4, PORT, &ping, udp_len(10)),
                ),
            ),
            XDP_DROP,
            DROP_TRUNCATED,
        ),
        fixture(
            "UDP length claims one byte more than the frame holds (IPv6)",
            ethernet(
                ETH_P_IPV6,
                &ipv6(
                    IPPROTO_UDP,
                    &udp_with_len(Pseudo::V6, PORT, &ping, udp_len(1)),
                ),
            ),
            XDP_DROP,
            DROP_TRUNCATED,
        ),
        fixture(
            "UDP length below the UDP header length",
            ethernet(
                ETH_P_IP,
                &ipv4(Ipv4::UDP, &udp_with_len(Pseudo::V4, PORT, &ping, Some(7))),
            ),
            XDP_DROP,
            DROP_TRUNCATED,
        ),
        fixture(
            "UDP length 2 bytes short: the payload ends early, payload_len disagrees",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4::UDP,
                    &udp_with_len(Pseudo::V4, PORT, &ping, udp_len(-2)),
                ),
            ),
            XDP_DROP,
            consts::XDP_DROP_BAD_LENGTH,
        ),
        // Not ours: passed untouched.
        fixture(
            "UDP to another port (IPv4)",
            udp4_frame(OTHER_PORT, &ping),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "UDP to another port (IPv6)",
            udp6_frame(OTHER_PORT, &ping),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "malformed overlay bytes to another port",
            udp4_frame(OTHER_PORT, &[0u8; 3]),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "UDP source port is the overlay port, destination is not",
            {
                let mut frame = udp4_frame(OTHER_PORT, &ping);
                frame[34..36].copy_from_slice(&PORT.to_be_bytes());
                frame
            },
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "TCP to the overlay port (IPv4)",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4 {
                        protocol: IPPROTO_TCP,
                        ..Ipv4::UDP
                    },
                    &tcp_syn(PORT),
                ),
            ),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "TCP to the overlay port (IPv6)",
            ethernet(ETH_P_IPV6, &ipv6(IPPROTO_TCP, &tcp_syn(PORT))),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture("ARP request", arp_request(), XDP_PASS, PASS_OTHER),
        fixture("runt frame: empty", Vec::new(), XDP_PASS, PASS_OTHER),
        fixture("runt frame: 1 byte", vec![0xff], XDP_PASS, PASS_OTHER),
        fixture(
            "runt frame: 13 bytes",
            udp4_frame(PORT, &ping)[..13].to_vec(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "Ethernet header only, IPv4 ethertype",
            ethernet(ETH_P_IP, &[]),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "VLAN tag cut off",
            udp4_frame(PORT, &ping)[..14]
                .iter()
                .copied()
                .chain([0, 42])
                .collect::<Vec<u8>>(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "two VLAN tags (QinQ) are not parsed",
            ethernet_vlan(
                ETH_P_8021AD,
                ETH_P_8021Q,
                &[
                    &[0u8, 7][..],
                    &ETH_P_IP.to_be_bytes(),
                    &ipv4(Ipv4::UDP, &udp(Pseudo::V4, PORT, &ping)),
                ]
                .concat(),
            ),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv4 header cut off",
            udp4_frame(PORT, &ping)[..14 + 19].to_vec(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv4 options cut off",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4 {
                        options: &[1; 40],
                        ..Ipv4::UDP
                    },
                    &[],
                ),
            )[..14 + 40]
                .to_vec(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv4 IHL below 5",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4 {
                        ihl: Some(4),
                        ..Ipv4::UDP
                    },
                    &udp(Pseudo::V4, PORT, &ping),
                ),
            ),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv4 ethertype with an IPv6 header",
            ethernet(ETH_P_IP, &ipv6(IPPROTO_UDP, &udp(Pseudo::V6, PORT, &ping))),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "UDP header cut off (IPv4)",
            udp4_frame(PORT, &ping)[..14 + 20 + 7].to_vec(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "UDP header cut off (IPv6)",
            udp6_frame(PORT, &ping)[..14 + 40 + 4].to_vec(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv6 header cut off",
            udp6_frame(PORT, &ping)[..14 + 39].to_vec(),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv4 non-first fragment whose bytes look like UDP to the overlay port",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4 {
                        frag_off: 185,
                        ..Ipv4::UDP
                    },
                    &udp(Pseudo::V4, PORT, &[0u8; 4]),
                ),
            ),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv4 first fragment (more fragments set): the stack reassembles",
            ethernet(
                ETH_P_IP,
                &ipv4(
                    Ipv4 {
                        frag_off: 0x2000,
                        ..Ipv4::UDP
                    },
                    &udp_with_len(Pseudo::V4, PORT, &ping, Some(8 + 1476)),
                ),
            ),
            XDP_PASS,
            PASS_OTHER,
        ),
        fixture(
            "IPv6 fragment header: extension headers are not walked",
            ethernet(
                ETH_P_IPV6,
                &ipv6(
                    IPPROTO_FRAGMENT,
                    &[
                        &[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7][..],
                        &udp(Pseudo::V6, PORT, &ping),
                    ]
                    .concat(),
                ),
            ),
            XDP_PASS,
            PASS_OTHER,
        ),
    ];
    // The allowlist: data only from neighbors, control from anyone.
    table.extend([
        fixture(
            "data from a non-neighbor (IPv4)",
            frame_from(STRANGER4, PORT, &ping),
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
        ),
        fixture(
            "data from a non-neighbor (IPv6)",
            frame_from(STRANGER6, PORT, &ping),
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
        ),
        fixture(
            "data from a non-neighbor in an 802.1Q VLAN",
            ethernet_vlan(ETH_P_8021Q, ETH_P_IP, &ip_from(STRANGER4, PORT, &ping).1),
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
        ),
        fixture(
            "data from a neighbor's IP and another UDP port (IPv4): admitted by IP",
            frame_from(OTHER_PORT4, PORT, &ping),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "data from a neighbor's IP and another UDP port (IPv6): admitted by IP",
            frame_from(OTHER_PORT6, PORT, &ping),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "data with a via from a non-neighbor",
            frame_from(STRANGER4, PORT, &ping_via),
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
        ),
        fixture(
            "control with a via from a non-neighbor",
            frame_from(STRANGER6, PORT, &control_via),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "data over IPv6 from the v4-mapped form of an IPv4 neighbor",
            {
                let mapped = std::net::Ipv4Addr::from(IPV4_SRC).to_ipv6_mapped().octets();
                frame_from(Source::V6(mapped, SRC_PORT), PORT, &ping)
            },
            XDP_DROP,
            DROP_NOT_NEIGHBOR,
        ),
        fixture(
            "control from a non-neighbor (IPv4): strangers can handshake",
            frame_from(STRANGER4, PORT, &control),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "control from a non-neighbor (IPv6): strangers can handshake",
            frame_from(STRANGER6, PORT, &control),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "control from a neighbor's IP but another UDP port",
            frame_from(OTHER_PORT4, PORT, &control),
            XDP_PASS,
            PASS_OVERLAY,
        ),
        fixture(
            "non-overlay UDP from a non-neighbor to another port",
            frame_from(STRANGER4, OTHER_PORT, &ping),
            XDP_PASS,
            PASS_OTHER,
        ),
    ]);
    // Every golden malformed packet, over IPv4 and IPv6, and once in a VLAN;
    // from a stranger too: validation comes before the filter.
    for (name, payload, reason) in golden::malformed() {
        let counter = reason.xdp_stat();
        table.push(fixture(
            format!("{name} over IPv4"),
            udp4_frame(PORT, &payload),
            XDP_DROP,
            counter,
        ));
        table.push(fixture(
            format!("{name} over IPv6"),
            udp6_frame(PORT, &payload),
            XDP_DROP,
            counter,
        ));
        table.push(fixture(
            format!("{name} from a non-neighbor (IPv4)"),
            frame_from(STRANGER4, PORT, &payload),
            XDP_DROP,
            counter,
        ));
        table.push(fixture(
            format!("{name} from a non-neighbor (IPv6)"),
            frame_from(STRANGER6, PORT, &payload),
            XDP_DROP,
            counter,
        ));
        table.push(fixture(
            format!("{name} over IPv4 in an 802.1Q VLAN"),
            ethernet_vlan(
                ETH_P_8021Q,
                ETH_P_IP,
                &ipv4(Ipv4::UDP, &udp(Pseudo::V4, PORT, &payload)),
            ),
            XDP_DROP,
            counter,
        ));
    }
    // UDP checksums: XDP passes a packet it does not forward untouched,
    // whatever its checksum says (the stack judges it). tests/xdp_fastpath.rs
    // has the forwarded cases: partial in, valid out; valid in, valid out;
    // IPv4 0 stays 0; neither valid nor partial left to the stack.
    for (fam, frame) in [
        ("IPv4", udp4_frame(PORT, &ping)),
        ("IPv6", udp6_frame(PORT, &ping)),
    ] {
        let partial = partial_checksum(&frame);
        table.push(fixture(
            format!("{fam}, partial UDP checksum (TX offload): passes untouched"),
            with_udp_check(&frame, partial),
            XDP_PASS,
            PASS_OVERLAY,
        ));
        let check = udp_check(&frame);
        table.push(fixture(
            format!("{fam}, wrong UDP checksum: passes untouched"),
            with_udp_check(&frame, check ^ 0x0100),
            XDP_PASS,
            PASS_OVERLAY,
        ));
    }
    table.push(fixture(
        "IPv4, UDP checksum 0 (none): passes untouched",
        with_udp_check(&udp4_frame(PORT, &ping), 0),
        XDP_PASS,
        PASS_OVERLAY,
    ));
    table
}

#[test]
fn fixture_table() {
    let harness = Harness::new();
    let table = fixtures();
    for row in &table {
        harness.check(&row.description, &row.frame, row.verdict, row.counter);
    }
    // The table exercises every counter of validation and the allowlist
    // (the rate limits and the route cache need state: tests/xdp_fastpath.rs
    // covers them, every counter included).
    let totals = harness.counters();
    for index in 0..=DROP_NOT_NEIGHBOR {
        assert!(
            totals.get(index) > 0,
            "no fixture hits counter {index}: {totals:?}"
        );
    }
    assert_eq!(
        totals.to_array().iter().sum::<u64>(),
        table.len() as u64,
        "one counter per frame"
    );
}

#[test]
fn golden_malformed_reasons_match_the_rust_parser() {
    // The table above hard-codes nothing about the reasons: both sides read
    // them from golden::malformed(); this checks the parser agrees too.
    for (name, payload, reason) in golden::malformed() {
        assert_eq!(
            expected_for_payload(&payload),
            (XDP_DROP, reason.xdp_stat()),
            "{name}"
        );
    }
    assert_eq!(
        expected_for_payload(&golden::DATA_PING),
        (XDP_PASS, PASS_OVERLAY)
    );
    assert_eq!(
        expected_for_payload(&golden::DATA_PING_VIA),
        (XDP_PASS, PASS_OVERLAY)
    );
}

#[test]
fn the_port_is_configurable() {
    let harness = Harness::load(OTHER_PORT, LoadOptions::default(), &neighbors());
    let ping = golden::DATA_PING;
    harness.check(
        "port 4799: overlay",
        &udp4_frame(OTHER_PORT, &ping),
        XDP_PASS,
        PASS_OVERLAY,
    );
    harness.check(
        "port 4799: 47990 is other",
        &udp4_frame(PORT, &ping),
        XDP_PASS,
        PASS_OTHER,
    );
    harness.check(
        "port 4799: byte-swapped port is other",
        &udp4_frame(OTHER_PORT.swap_bytes(), &ping),
        XDP_PASS,
        PASS_OTHER,
    );
}

// ---------------------------------------------------------------------------
// The neighbor allowlist.

#[test]
fn filter_off_passes_data_from_anyone() {
    let harness = Harness::unfiltered();
    let ping = golden::DATA_PING;
    for source in [STRANGER4, STRANGER6, OTHER_PORT4, NEIGHBOR4, NEIGHBOR6] {
        harness.check(
            &format!("filter off: data from {source:?}"),
            &frame_from(source, PORT, &ping),
            XDP_PASS,
            PASS_OVERLAY,
        );
    }
    let mut bad_magic = ping;
    bad_magic[0] = 0;
    harness.check(
        "filter off: malformed from a stranger",
        &frame_from(STRANGER4, PORT, &bad_magic),
        XDP_DROP,
        consts::XDP_DROP_BAD_MAGIC,
    );
    assert_eq!(harness.counters().drop_not_neighbor, 0);
}

#[test]
fn sync_changes_the_verdicts() {
    let mut harness = Harness::new();
    let ping = golden::DATA_PING;
    let data4 = frame_from(NEIGHBOR4, PORT, &ping);
    let data6 = frame_from(NEIGHBOR6, PORT, &ping);
    let control4 = frame_from(NEIGHBOR4, PORT, &control_ping());
    harness.check("allowed: IPv4 data", &data4, XDP_PASS, PASS_OVERLAY);
    harness.check("allowed: IPv6 data", &data6, XDP_PASS, PASS_OVERLAY);

    let only6: HashSet<SocketAddr> = [NEIGHBOR6.addr()].into_iter().collect();
    assert_eq!(
        harness.sync(&only6),
        SyncReport {
            inserted: 0,
            removed: 1
        }
    );
    harness.check(
        "IPv4 neighbor removed: its data",
        &data4,
        XDP_DROP,
        DROP_NOT_NEIGHBOR,
    );
    harness.check(
        "IPv4 neighbor removed: its control",
        &control4,
        XDP_PASS,
        PASS_OVERLAY,
    );
    harness.check("IPv6 neighbor kept", &data6, XDP_PASS, PASS_OVERLAY);

    assert_eq!(
        harness.sync(&HashSet::new()),
        SyncReport {
            inserted: 0,
            removed: 1
        }
    );
    harness.check(
        "all removed: IPv6 data",
        &data6,
        XDP_DROP,
        DROP_NOT_NEIGHBOR,
    );

    // The workers see IPv4 neighbors as v4-mapped IPv6: the same key.
    let mapped4 = match NEIGHBOR4.addr() {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    };
    let back: HashSet<SocketAddr> = [mapped4, NEIGHBOR6.addr()].into_iter().collect();
    assert_eq!(
        harness.sync(&back),
        SyncReport {
            inserted: 2,
            removed: 0
        }
    );
    harness.check(
        "re-added as v4-mapped: IPv4 data",
        &data4,
        XDP_PASS,
        PASS_OVERLAY,
    );
    harness.check("re-added: IPv6 data", &data6, XDP_PASS, PASS_OVERLAY);
    assert_eq!(
        harness.sync(&neighbors()),
        SyncReport::default(),
        "IPv4 and v4-mapped are one key"
    );
}

fn addrs(list: &[&str]) -> HashSet<SocketAddr> {
    list.iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect()
}

/// The canonical form of a set: IPv4 for v4-mapped addresses.
fn canonical(set: &HashSet<SocketAddr>) -> HashSet<SocketAddr> {
    set.iter().map(|a| neighbor_key(a).socket_addr()).collect()
}

fn sync_ok(map: &mut NeighborMap, wanted: &HashSet<SocketAddr>) -> SyncReport {
    match map.sync(wanted) {
        Ok(report) => report,
        Err(e) => panic!("sync to {wanted:?}: {e}"),
    }
}

/// A loaded program, a second handle on its allowlist, and the allowlist
/// taken out of it.
fn load_with_raw_neighbors() -> (Ebpf, RawNeighbors, NeighborMap) {
    let mut ebpf = match bpf::load(PORT) {
        Ok(ebpf) => ebpf,
        Err(e) => panic!("loading the XDP object failed: {e}"),
    };
    let raw = RawNeighbors::open(&ebpf);
    let map = match bpf::take_neighbor_map(&mut ebpf) {
        Ok(map) => map,
        Err(e) => panic!("taking the neighbor map: {e}"),
    };
    (ebpf, raw, map)
}

#[test]
fn sync_makes_the_map_equal_to_the_wanted_set() {
    let (mut ebpf, mut raw, mut map) = load_with_raw_neighbors();
    assert!(
        matches!(
            bpf::take_neighbor_map(&mut ebpf),
            Err(BpfError::MissingObject { .. })
        ),
        "taken twice"
    );
    let mut sync = |wanted: &HashSet<SocketAddr>| sync_ok(&mut map, wanted);
    assert!(raw.addrs().is_empty());

    let a = addrs(&[
        "198.18.0.1:1",
        "198.18.0.2:2",
        "[fd00::1]:3",
        "[::ffff:198.18.0.3]:4",
    ]);
    assert_eq!(
        sync(&a),
        SyncReport {
            inserted: 4,
            removed: 0
        }
    );
    assert_eq!(raw.addrs(), canonical(&a));

    // B keeps three of A (two of them in the other IPv4 spelling), drops
    // one, adds one.
    let b = addrs(&[
        "[::ffff:198.18.0.2]:2",
        "[fd00::1]:3",
        "198.18.0.3:4",
        "[fd00::2]:5",
    ]);
    assert_eq!(
        sync(&b),
        SyncReport {
            inserted: 1,
            removed: 1
        }
    );
    assert_eq!(raw.addrs(), canonical(&b));
    assert_eq!(sync(&b), SyncReport::default(), "already in sync");

    // Both spellings of one address in the wanted set are one key.
    let mut b_twice = b.clone();
    b_twice.extend(addrs(&["198.18.0.2:2", "[::ffff:198.18.0.3]:4"]));
    assert_eq!(sync(&b_twice), SyncReport::default());

    // The map changed behind the handle's back (a previous run's leftovers,
    // an entry lost): sync reads the map, not a cache of its own.
    let stray = neighbor_key(&"[fd00::dead]:9".parse().expect("literal"));
    let zeros = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .and_then(|cpus| PerCpuValues::try_from(vec![0u64; cpus]))
        .unwrap_or_else(|e| panic!("per-CPU values: {e}"));
    if let Err(e) = raw.map.insert(stray, zeros, 0) {
        panic!("inserting a stray key: {e}");
    }
    let lost = neighbor_key(&"[fd00::1]:3".parse().expect("literal"));
    if let Err(e) = raw.map.remove(&lost) {
        panic!("removing a key: {e}");
    }
    assert_eq!(
        sync(&b),
        SyncReport {
            inserted: 1,
            removed: 1
        }
    );
    assert_eq!(raw.addrs(), canonical(&b));

    let keys = match map.keys() {
        Ok(keys) => keys,
        Err(e) => panic!("reading the keys: {e}"),
    };
    assert_eq!(keys, b.iter().map(neighbor_key).collect::<HashSet<_>>());
    for (addr, expected) in [
        ("198.18.0.2:2", true),
        ("[::ffff:198.18.0.2]:2", true),
        ("198.18.0.2:3", true), // admitted by IP: any port
        ("198.18.0.1:1", false),
        ("[fd00::2]:5", true),
    ] {
        let addr: SocketAddr = addr.parse().expect("literal");
        match map.contains(&addr) {
            Ok(found) => assert_eq!(found, expected, "{addr}"),
            Err(e) => panic!("contains {addr}: {e}"),
        }
    }
}

#[test]
fn sync_over_the_limit_fails_and_changes_nothing() {
    let mut ebpf = match bpf::load(PORT) {
        Ok(ebpf) => ebpf,
        Err(e) => panic!("loading the XDP object failed: {e}"),
    };
    let raw = RawNeighbors::open(&ebpf);
    let mut map = match bpf::take_neighbor_map(&mut ebpf) {
        Ok(map) => map,
        Err(e) => panic!("taking the neighbor map: {e}"),
    };
    // 198.18.0.0/15 holds them all.
    let nth = |i: usize| SocketAddr::from(([198, 18, (i / 256) as u8, (i % 256) as u8], 4799));
    let full: HashSet<SocketAddr> = (0..NEIGHBORS_MAX).map(nth).collect();
    match map.sync(&full) {
        Ok(report) => assert_eq!(
            report,
            SyncReport {
                inserted: NEIGHBORS_MAX,
                removed: 0
            }
        ),
        Err(e) => panic!("sync to exactly the limit: {e}"),
    }
    assert_eq!(raw.entries().len(), NEIGHBORS_MAX);

    // Twice the addresses, but each also in its v4-mapped spelling: still
    // NEIGHBORS_MAX keys, within the limit.
    let mut spelled_twice = full.clone();
    spelled_twice.extend(full.iter().map(|a| match a {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => *v6,
    }));
    assert_eq!(spelled_twice.len(), 2 * NEIGHBORS_MAX);
    match map.sync(&spelled_twice) {
        Ok(report) => assert_eq!(report, SyncReport::default()),
        Err(e) => panic!("sync to two spellings of the limit: {e}"),
    }

    let mut over: HashSet<SocketAddr> = (1..=NEIGHBORS_MAX).map(nth).collect();
    over.insert(SocketAddr::from((Ipv6Addr::from(IPV6_SRC), 1)));
    assert_eq!(over.len(), NEIGHBORS_MAX + 1);
    match map.sync(&over) {
        Ok(report) => panic!("sync beyond the limit succeeded: {report:?}"),
        Err(error) => {
            assert!(
                matches!(
                    error,
                    BpfError::TooManyNeighbors { count, limit }
                        if count == NEIGHBORS_MAX + 1 && limit == NEIGHBORS_MAX
                ),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("4097 neighbors"), "{message}");
            assert!(message.contains("capacity of 4096"), "{message}");
            assert!(message.contains("XORLAY_NEIGHBORS_MAX"), "{message}");
        }
    }
    assert_eq!(
        raw.addrs(),
        canonical(&full),
        "a failed sync changes nothing"
    );

    let small = addrs(&["198.18.0.1:4799", "[fd00::1]:4799"]);
    match map.sync(&small) {
        Ok(report) => assert_eq!(
            report,
            SyncReport {
                inserted: 1,
                removed: NEIGHBORS_MAX - 1
            }
        ),
        Err(e) => panic!("sync back to two: {e}"),
    }
    assert_eq!(raw.addrs(), canonical(&small));
}

// ---------------------------------------------------------------------------
// Differential: XDP against the Rust parser.

/// DATA_PING or DATA_PING_VIA broken in 1 to 3 random ways, biased to the
/// checked fields.
fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = if rng.below(2) == 0 {
        golden::DATA_PING.to_vec()
    } else {
        golden::DATA_PING_VIA.to_vec()
    };
    for _ in 0..1 + rng.below(3) {
        match rng.below(9) {
            // A checked header field (magic, version, type, flags, hop
            // limit, length).
            0..=2 => {
                let index = [0, 1, 2, 3, 4, 5, 6, 7][rng.below(8)];
                if let Some(b) = bytes.get_mut(index) {
                    *b = rng.byte();
                }
            }
            // A plausible value in a checked field.
            3 => {
                let (index, value) = match rng.below(6) {
                    0 => (2, VERSION - rng.below(2) as u8),
                    1 => (3, 1 + rng.below(2) as u8),
                    2 => (4, rng.below(2) as u8),
                    3 => (7, (bytes.len().saturating_sub(HEADER_LEN)) as u8),
                    4 => (5, bytes.get(5).map_or(0, |f| f ^ FLAG_VIA)),
                    _ => (6, 0),
                };
                if let Some(b) = bytes.get_mut(index) {
                    *b = value;
                }
            }
            // Anywhere.
            4 => {
                if !bytes.is_empty() {
                    let index = rng.below(bytes.len());
                    bytes[index] = rng.byte();
                }
            }
            // Truncate.
            5 => {
                let len = rng.below(bytes.len() + 1);
                bytes.truncate(len);
            }
            // Extend.
            6 => {
                for _ in 0..1 + rng.below(40) {
                    bytes.push(rng.byte());
                }
            }
            // Toggle the VIA flag.
            7 => {
                if let Some(flags) = bytes.get_mut(5) {
                    *flags ^= FLAG_VIA;
                }
            }
            // Make the length field agree with the buffer.
            _ => {
                if bytes.len() >= HEADER_LEN {
                    let header_len = OverlayPacket::new_unchecked(&bytes[..]).header_len();
                    let len =
                        u16::try_from(bytes.len().saturating_sub(header_len)).unwrap_or(u16::MAX);
                    bytes[6..8].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
    }
    bytes
}

#[test]
fn differential_against_the_rust_parser() {
    // Validation alone, and with the filter on for an allowed sender: the
    // same verdicts.
    for (filter, harness) in [("off", Harness::unfiltered()), ("on", Harness::new())] {
        differential(filter, &harness);
    }
}

fn differential(filter: &str, harness: &Harness) {
    let mut payloads: Vec<(String, Vec<u8>)> = golden::malformed()
        .into_iter()
        .map(|(name, bytes, _)| (format!("golden {name}"), bytes))
        .collect();
    payloads.push(("golden DATA_PING".into(), golden::DATA_PING.to_vec()));
    payloads.push((
        "golden DATA_PING_VIA".into(),
        golden::DATA_PING_VIA.to_vec(),
    ));
    let mut rng = Rng(0x786f_726c_6179_0001);
    for case in 0..600 {
        payloads.push((format!("mutation {case}"), mutate(&mut rng)));
    }

    let mut seen = [0u32; STAT_COUNT];
    let mut valid_via = 0;
    for (index, (name, payload)) in payloads.iter().enumerate() {
        let (verdict, counter) = expected_for_payload(payload);
        seen[counter as usize] += 1;
        let packet = OverlayPacket::new_unchecked(&payload[..]);
        if counter == PASS_OVERLAY && packet.via().is_some() {
            valid_via += 1;
        }
        let frame = if index % 2 == 0 {
            udp4_frame(PORT, payload)
        } else {
            udp6_frame(PORT, payload)
        };
        let description =
            format!("filter {filter}: {name}: payload {payload:02x?}, parser says {counter}");
        harness.check(&description, &frame, verdict, counter);
    }
    // The mutations reach every outcome, or the test proves little.
    for reason in OverlayError::ALL {
        assert!(
            seen[reason.xdp_stat() as usize] >= 3,
            "too few mutations end in {reason}: {seen:?}"
        );
    }
    assert!(
        seen[PASS_OVERLAY as usize] >= 3,
        "too few valid mutations: {seen:?}"
    );
    assert!(
        valid_via >= 3,
        "too few valid mutations with a via: {seen:?}"
    );
}

// ---------------------------------------------------------------------------
// Errors.

#[test]
fn missing_interface_error_names_it_and_the_fix() {
    let interfaces = vec!["xlt-missing0".to_string()];
    match XdpRouter::attach(&interfaces, PORT, XdpAttachMode::Native) {
        Ok(router) => panic!("attached to a missing interface: {:?}", router.attached()),
        Err(error) => {
            assert!(
                matches!(&error, BpfError::NoSuchInterface { interface } if interface == "xlt-missing0"),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "interface xlt-missing0 does not exist in this network namespace; check \
                 `interfaces` in the config (`ip link` lists them)"
            );
        }
    }
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Drops capabilities from the calling thread's effective set (capabilities
/// are per thread: the other test threads keep theirs).
fn drop_thread_capabilities(caps: &[u32]) {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are the structs capget expects, alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    for &cap in caps {
        data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
    }
    // SAFETY: as above; capset only changes this thread's credentials.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn missing_privileges_error_names_the_capabilities() {
    let outcome = std::thread::spawn(|| {
        drop_thread_capabilities(&[CAP_BPF, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_PERFMON]);
        bpf::load(PORT).map(|_| ())
    })
    .join();
    let result = match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    match result {
        Ok(()) => panic!("loaded the XDP program without CAP_BPF/CAP_SYS_ADMIN/CAP_NET_ADMIN"),
        Err(error) => {
            assert!(
                matches!(error, BpfError::PermissionDenied { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains("needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"),
                "{message}"
            );
            assert!(
                message.contains("os error 1"),
                "the kernel's error is kept: {message}"
            );
        }
    }
}

/// Without CAP_PERFMON (and CAP_SYS_ADMIN, which stands in for it) the
/// verifier refuses the program with EACCES; the check before loading
/// names the capability instead, read from this thread's effective set.
#[test]
fn missing_perfmon_is_named_before_loading() {
    let outcome = std::thread::spawn(|| {
        drop_thread_capabilities(&[CAP_SYS_ADMIN, CAP_PERFMON]);
        bpf::check_capabilities()
    })
    .join();
    let result = match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    match result {
        Ok(()) => panic!("the check passed without CAP_PERFMON"),
        Err(error) => {
            assert!(
                matches!(error, BpfError::MissingCapabilities { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("lacks CAP_PERFMON ("), "{message}");
            assert!(!message.contains("verifier"), "{message}");
        }
    }
    bpf::check_capabilities().expect("this thread kept its capabilities");
}

// ---------------------------------------------------------------------------
// Attaching, in a network namespace of our own.

/// A network namespace with a veth pair `xlt0` <-> `xlt1`, both up (no
/// addresses: traffic is injected as raw frames), deleted on drop, even when
/// the test fails.
struct Netns {
    ns: TestNetns,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let ns = TestNetns::new(&format!("bpf-{tag}"));
        ns.ip_batch(
            "link add xlt0 type veth peer name xlt1\n\
             link set xlt0 up\n\
             link set xlt1 up\n",
        );
        Netns { ns }
    }

    /// `ip link show dev <interface>` in the namespace.
    fn link_show(&self, interface: &str) -> String {
        self.ns.ip(&["link", "show", "dev", interface])
    }

    /// `link_show` once the interface has no XDP program, or after two
    /// seconds. Detaching closes the XDP link's fd, but a process another
    /// test thread is spawning at that moment holds a copy of the fd table
    /// until its exec closes it (every BPF fd is close-on-exec), so the
    /// kernel may drop the link a moment after the router is gone.
    fn link_show_after_detach(&self, interface: &str) -> String {
        let mut link = self.link_show(interface);
        wait_until(Duration::from_secs(2), || {
            link = self.link_show(interface);
            !has_any_xdp(&link)
        });
        link
    }

    /// Runs `body` inside the namespace (`TestNetns::run`), given its name.
    fn run_inside<T: Send + 'static>(&self, body: impl FnOnce(&str) -> T + Send + 'static) -> T {
        let name = self.ns.name.clone();
        self.ns.run(move || body(&name))
    }
}

/// `ip -n <netns> ARGS...`.
fn ip_in(netns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    common::ip(&all)
}

/// Sends `frame` as is out of `interface` (an AF_PACKET socket in the
/// calling thread's namespace).
fn send_raw(interface: &str, frame: &[u8]) {
    let if_index = if_index(interface);
    // SAFETY: plain socket(2); the fd is owned by `socket` below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = if_index as i32;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const address).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(
        sent,
        frame.len() as isize,
        "send on {interface}: {}",
        std::io::Error::last_os_error()
    );
}

fn has_native_xdp(link: &str) -> bool {
    link.contains(" xdp ") || link.contains("prog/xdp ")
}

fn has_any_xdp(link: &str) -> bool {
    link.contains("xdp")
}

fn attach(interfaces: &[&str], mode: XdpAttachMode) -> XdpRouter {
    let interfaces: Vec<String> = interfaces.iter().map(|s| s.to_string()).collect();
    match XdpRouter::attach(&interfaces, PORT, mode) {
        Ok(router) => router,
        Err(e) => panic!("attaching XDP ({mode}) to {interfaces:?}: {e}"),
    }
}

fn router_counters(router: &XdpRouter) -> XdpCounters {
    match router.counters() {
        Ok(counters) => counters,
        Err(e) => panic!("reading the counters: {e}"),
    }
}

/// Reads the counters until `done` holds, for at most two seconds.
fn wait_for(router: &XdpRouter, done: impl Fn(&XdpCounters) -> bool) -> XdpCounters {
    let mut counters = router_counters(router);
    wait_until(Duration::from_secs(2), || {
        counters = router_counters(router);
        done(&counters)
    });
    counters
}

#[test]
fn native_attach_sees_traffic_and_detaches_on_drop() {
    let netns = Netns::create("native");
    let (shown, attached, counters) = netns.run_inside(|netns| {
        let mut router = attach(&["xlt1"], XdpAttachMode::Native);
        let shown = ip_in(netns, &["link", "show", "dev", "xlt1"]);
        let attached = router.attached();
        // The control thread's part: take the allowlist, fill it.
        let mut allowlist = router
            .take_neighbor_map()
            .unwrap_or_else(|| panic!("no neighbor map in a fresh router"));
        assert!(router.take_neighbor_map().is_none(), "taken twice");
        if let Err(e) = allowlist.sync(&neighbors()) {
            panic!("syncing the allowlist: {e}");
        }

        // Real frames through the veth: sent on xlt0, XDP on xlt1 sees them.
        let before = router_counters(&router);
        let mut bad_magic = golden::DATA_PING;
        bad_magic[0] = 0;
        send_raw("xlt0", &udp4_frame(PORT, &golden::DATA_PING));
        send_raw("xlt0", &udp6_frame(PORT, &golden::DATA_PING));
        send_raw("xlt0", &udp4_frame(PORT, &bad_magic));
        send_raw("xlt0", &frame_from(STRANGER4, PORT, &golden::DATA_PING));
        let counters = wait_for(&router, |c| {
            c.pass_overlay >= before.pass_overlay + 2 && c.dropped() >= before.dropped() + 2
        });
        let delta = (
            counters.pass_overlay - before.pass_overlay,
            counters.drop_bad_magic - before.drop_bad_magic,
            counters.drop_not_neighbor - before.drop_not_neighbor,
            counters.dropped() - before.dropped(),
        );
        drop(router);
        // The allowlist outlives the router; dropping it closes the map.
        drop(allowlist);
        (shown, attached, delta)
    });
    assert!(
        has_native_xdp(&shown),
        "no native XDP on xlt1 after attach:\n{shown}"
    );
    assert!(
        !shown.contains("xdpgeneric"),
        "generic instead of native:\n{shown}"
    );
    assert_eq!(attached, vec![("xlt1".to_string(), "native")]);
    assert_eq!(
        counters,
        (2, 1, 1, 2),
        "(pass_overlay, drop_bad_magic, drop_not_neighbor, dropped) deltas after 2 valid \
         frames from a neighbor, 1 bad frame and 1 valid data frame from a stranger"
    );

    let after = netns.link_show_after_detach("xlt1");
    assert!(
        !has_any_xdp(&after),
        "XDP still attached after the router was dropped:\n{after}"
    );
}

#[test]
fn generic_and_auto_attach_then_detach() {
    let netns = Netns::create("modes");
    let (generic_shown, auto_shown, attached) = netns.run_inside(|netns| {
        let router = attach(&["xlt0", "lo"], XdpAttachMode::Generic);
        let generic_shown = ip_in(netns, &["link", "show", "dev", "xlt0"]);
        router.detach();
        // veth has native XDP: auto picks it; lo has none: auto falls back.
        let router = attach(&["xlt0", "lo", "xlt0"], XdpAttachMode::Auto);
        let auto_shown = ip_in(netns, &["link", "show"]);
        let attached = router.attached();
        drop(router);
        (generic_shown, auto_shown, attached)
    });
    assert!(
        generic_shown.contains("xdpgeneric"),
        "no generic XDP on xlt0 after attach:\n{generic_shown}"
    );
    assert_eq!(
        attached,
        vec![
            ("xlt0".to_string(), "native"),
            ("lo".to_string(), "generic")
        ],
        "auto mode, duplicates removed:\n{auto_shown}"
    );
    for interface in ["xlt0", "xlt1", "lo"] {
        let after = netns.link_show_after_detach(interface);
        assert!(!has_any_xdp(&after), "XDP left on {interface}:\n{after}");
    }
}

#[test]
fn attach_checks_every_interface_before_attaching_any() {
    let netns = Netns::create("partial");
    let error = netns.run_inside(|_| {
        let interfaces = vec!["xlt0".to_string(), "xlt-missing0".to_string()];
        XdpRouter::attach(&interfaces, PORT, XdpAttachMode::Native)
            .err()
            .map(|e| e.to_string())
    });
    let message = error.unwrap_or_else(|| panic!("attach to a missing interface succeeded"));
    assert!(
        message.contains("interface xlt-missing0 does not exist"),
        "{message}"
    );
    let link = netns.link_show("xlt0");
    assert!(!has_any_xdp(&link), "XDP left on xlt0:\n{link}");
}

#[test]
fn native_attach_failure_suggests_generic_or_auto() {
    let netns = Netns::create("nonative");
    let error = netns.run_inside(|_| {
        // The loopback device has no native XDP support.
        XdpRouter::attach(&["lo".to_string()], PORT, XdpAttachMode::Native)
            .err()
            .map(|e| (e.to_string(), matches!(e, BpfError::NativeAttach { .. })))
    });
    let (message, native) = error.unwrap_or_else(|| panic!("native XDP on lo succeeded"));
    assert!(native, "{message}");
    assert!(
        message.contains("cannot attach XDP in native mode to lo"),
        "{message}"
    );
    assert!(
        message.contains("xdp_mode = \"generic\" or \"auto\""),
        "{message}"
    );
    assert!(
        message.contains("os error"),
        "the kernel's error is kept: {message}"
    );
    let link = netns.link_show("lo");
    assert!(!has_any_xdp(&link), "XDP left on lo:\n{link}");
}
