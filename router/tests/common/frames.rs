//! Frames for the XDP tests, built layer by layer (Ethernet, IPv4 or IPv6,
//! UDP), every checksum correct unless a test asks for a wrong one, and the
//! checks that read them back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::inet_checksum;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_FRAGMENT: u8 = 44;

/// The VLAN ID of every tagged test frame.
pub const VLAN_ID: u16 = 42;

/// Ethernet from `macs.1` to `macs.0` around `payload`; with `vlan`, one
/// tag of that TPID (802.1Q or 802.1AD) and ID [`VLAN_ID`] first.
pub fn ethernet(
    macs: ([u8; 6], [u8; 6]),
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(18 + payload.len());
    frame.extend_from_slice(&macs.0);
    frame.extend_from_slice(&macs.1);
    if let Some(tpid) = vlan {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&VLAN_ID.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The IPv4 header fields a test varies.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4 {
    pub protocol: u8,
    pub ttl: u8,
    /// Flags and fragment offset, host order (0x2000 = more fragments).
    pub frag_off: u16,
    /// Options (a multiple of 4 bytes, at most 40).
    pub options: &'static [u8],
    /// Overrides the IHL field if set.
    pub ihl: Option<u8>,
}

impl Ipv4 {
    /// UDP, TTL 64, don't fragment, no options.
    pub const UDP: Ipv4 = Ipv4 {
        protocol: IPPROTO_UDP,
        ttl: 64,
        frag_off: 0x4000,
        options: &[],
        ihl: None,
    };
}

/// Up to 40 bytes of IPv4 NOP options.
pub const NOPS: [u8; 40] = [1; 40];

/// An IPv4 packet from `src` to `dst` around `payload`, identification
/// 0x1234, its header checksum correct (asserted).
pub fn ipv4(fields: Ipv4, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let header_len = 20 + fields.options.len();
    assert!(
        header_len.is_multiple_of(4) && header_len <= 60,
        "bad options length"
    );
    let ihl = fields.ihl.unwrap_or((header_len / 4) as u8);
    let total_len = u16::try_from(header_len + payload.len()).expect("IPv4 packet fits 64 KiB");
    let mut packet = Vec::with_capacity(header_len + payload.len());
    packet.push(0x40 | ihl);
    packet.push(0); // DSCP/ECN
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
    packet.extend_from_slice(&fields.frag_off.to_be_bytes());
    packet.push(fields.ttl);
    packet.push(fields.protocol);
    packet.extend_from_slice(&[0, 0]); // checksum, below
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(fields.options);
    let checksum = inet_checksum(&[&packet]);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    assert_eq!(
        inet_checksum(&[&packet]),
        0,
        "IPv4 header checksum verifies"
    );
    packet.extend_from_slice(payload);
    packet
}

/// An IPv6 packet from `src` to `dst` around `payload` (no traffic class,
/// no flow label).
pub fn ipv6(
    next_header: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload: &[u8],
) -> Vec<u8> {
    let payload_len = u16::try_from(payload.len()).expect("IPv6 payload fits 64 KiB");
    let mut packet = Vec::with_capacity(40 + payload.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]);
    packet.extend_from_slice(&payload_len.to_be_bytes());
    packet.push(next_header);
    packet.push(hop_limit);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}

/// The UDP pseudo-header of a datagram of `udp_len` bytes.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, udp_len: usize) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
            pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
        }
        _ => panic!("mixed families {src} -> {dst}"),
    }
    pseudo
}

/// A UDP datagram from `src` to `dst` around `payload` whose length field
/// says `len_field` (None: the real length). With `checksum`, its checksum
/// over the pseudo-header (of the real length); else 0 (none).
pub fn udp(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    len_field: Option<u16>,
    checksum: bool,
) -> Vec<u8> {
    let real_len = u16::try_from(8 + payload.len()).expect("UDP datagram fits 64 KiB");
    let mut datagram = Vec::with_capacity(usize::from(real_len));
    datagram.extend_from_slice(&src.port().to_be_bytes());
    datagram.extend_from_slice(&dst.port().to_be_bytes());
    datagram.extend_from_slice(&len_field.unwrap_or(real_len).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    if checksum {
        let pseudo = pseudo_header(src.ip(), dst.ip(), usize::from(real_len));
        let check = match inet_checksum(&[&pseudo, &datagram]) {
            0 => 0xffff,
            sum => sum,
        };
        datagram[6..8].copy_from_slice(&check.to_be_bytes());
    }
    datagram
}

/// IP around `l4` from `src` to `dst` (one family): IPv4 with `fields`, or
/// IPv6 with their protocol and TTL. Returns the ethertype and the packet.
pub fn ip(fields: Ipv4, src: IpAddr, dst: IpAddr, l4: &[u8]) -> (u16, Vec<u8>) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (ETH_P_IP, ipv4(fields, s, d, l4)),
        (IpAddr::V6(s), IpAddr::V6(d)) => (ETH_P_IPV6, ipv6(fields.protocol, fields.ttl, s, d, l4)),
        _ => panic!("mixed families {src} -> {dst}"),
    }
}

/// How a UDP frame is built beyond its addresses.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// A VLAN tag (802.1Q, ID [`VLAN_ID`]) after the MAC addresses.
    pub vlan: bool,
    /// IPv4 NOP options of this many bytes (a multiple of 4, at most 40).
    pub options: usize,
    /// UDP checksum 0 (none).
    pub no_udp_checksum: bool,
}

/// TTL 61, untagged, no options, UDP checksum set.
pub const PLAIN: Shape = Shape {
    ttl: 61,
    vlan: false,
    options: 0,
    no_udp_checksum: false,
};

/// Ethernet + IP + UDP from `src` to `dst` (one family) around `payload`,
/// every checksum correct; IPv4 with don't-fragment set.
pub fn udp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: SocketAddr,
    dst: SocketAddr,
    shape: Shape,
    payload: &[u8],
) -> Vec<u8> {
    let datagram = udp(src, dst, payload, None, !shape.no_udp_checksum);
    let fields = Ipv4 {
        ttl: shape.ttl,
        options: &NOPS[..shape.options],
        ..Ipv4::UDP
    };
    let (ethertype, packet) = ip(fields, src.ip(), dst.ip(), &datagram);
    ethernet(macs, shape.vlan.then_some(ETH_P_8021Q), ethertype, &packet)
}

/// Where the UDP checksum of an untagged IPv4 (no options) or IPv6 frame
/// is.
pub fn udp_check_at(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => 14 + 20 + 6,
        ETH_P_IPV6 => 14 + 40 + 6,
        other => panic!("ethertype {other:#06x}"),
    }
}

/// The UDP checksum field of an untagged frame without IPv4 options.
pub fn udp_check(frame: &[u8]) -> u16 {
    let at = udp_check_at(frame);
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// `frame` (untagged, no IPv4 options) with its UDP checksum field set to
/// `check`.
pub fn with_udp_check(frame: &[u8], check: u16) -> Vec<u8> {
    let at = udp_check_at(frame);
    let mut out = frame.to_vec();
    out[at..at + 2].copy_from_slice(&check.to_be_bytes());
    out
}

/// The UDP checksum field a sender with TX checksum offload leaves in a
/// CHECKSUM_PARTIAL frame (Linux `udp4_hwcsum`, `udp6_hwcsum_outgoing`):
/// the pseudo-header sum, folded, not complemented. For an untagged frame
/// without IPv4 options.
pub fn partial_checksum(frame: &[u8]) -> u16 {
    let at = udp_check_at(frame);
    let udp_len = usize::from(u16::from_be_bytes([frame[at - 2], frame[at - 1]]));
    let (src, dst) = if at == 14 + 20 + 6 {
        let src: [u8; 4] = frame[26..30].try_into().expect("4 bytes");
        let dst: [u8; 4] = frame[30..34].try_into().expect("4 bytes");
        (IpAddr::from(src), IpAddr::from(dst))
    } else {
        let src: [u8; 16] = frame[22..38].try_into().expect("16 bytes");
        let dst: [u8; 16] = frame[38..54].try_into().expect("16 bytes");
        (IpAddr::from(src), IpAddr::from(dst))
    };
    !inet_checksum(&[&pseudo_header(src, dst, udp_len)])
}

/// Checks, independently of the builder, that an untagged output frame's
/// IPv4 header checksum and UDP checksum verify (a UDP checksum 0 only over
/// IPv4); returns its UDP payload.
pub fn verify_checksums(description: &str, out: &[u8]) -> Vec<u8> {
    let ethertype = u16::from_be_bytes([out[12], out[13]]);
    let (src, dst, udp) = match ethertype {
        ETH_P_IP => {
            let ihl = usize::from(out[14] & 0x0f) * 4;
            let header = &out[14..14 + ihl];
            assert_eq!(
                inet_checksum(&[header]),
                0,
                "{description}: IPv4 header checksum"
            );
            let src = IpAddr::from(<[u8; 4]>::try_from(&header[12..16]).expect("4 bytes"));
            let dst = IpAddr::from(<[u8; 4]>::try_from(&header[16..20]).expect("4 bytes"));
            (src, dst, &out[14 + ihl..])
        }
        ETH_P_IPV6 => {
            let src = IpAddr::from(<[u8; 16]>::try_from(&out[22..38]).expect("16 bytes"));
            let dst = IpAddr::from(<[u8; 16]>::try_from(&out[38..54]).expect("16 bytes"));
            (src, dst, &out[54..])
        }
        other => panic!("{description}: ethertype {other:#06x}"),
    };
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let udp = &udp[..udp_len];
    let check = u16::from_be_bytes([udp[6], udp[7]]);
    if check != 0 || ethertype == ETH_P_IPV6 {
        assert_ne!(check, 0, "{description}: UDP checksum 0 over IPv6");
        assert_eq!(
            inet_checksum(&[&pseudo_header(src, dst, udp_len), udp]),
            0,
            "{description}: UDP checksum"
        );
    }
    udp[8..].to_vec()
}
