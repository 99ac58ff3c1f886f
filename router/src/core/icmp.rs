//! ICMPv6 errors the endpoint writes back into its TUN interface
//! (RFC 4443): Packet Too Big for a packet over the overlay's MTU,
//! Destination Unreachable for an overlay address that did not resolve.
//! Pure functions over packet bytes.

use std::net::Ipv6Addr;

/// Bytes of an IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Bytes of an ICMPv6 error header (type, code, checksum, 4-byte field).
pub const ICMP_HEADER_LEN: usize = 8;
/// An ICMPv6 error packet is at most this long (IPv6's minimum MTU): as
/// much of the offending packet as fits follows the header (RFC 4443 2.4).
pub const ERROR_LEN_MAX: usize = 1280;
/// IPv6 next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// Hop limit of the errors written.
pub const HOP_LIMIT: u8 = 64;

/// An ICMPv6 error to send about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 2: the packet is larger than `mtu`.
    PacketTooBig {
        /// The largest packet that fits.
        mtu: u32,
    },
    /// Type 1, code 3: the destination address is unreachable (it did not
    /// resolve to a node).
    AddressUnreachable,
    /// Type 1, code 0: no route to the destination.
    NoRoute,
}

impl IcmpError {
    fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::PacketTooBig { .. } => (2, 0),
            IcmpError::AddressUnreachable => (1, 3),
            IcmpError::NoRoute => (1, 0),
        }
    }

    fn field(self) -> u32 {
        match self {
            IcmpError::PacketTooBig { mtu } => mtu,
            _ => 0,
        }
    }
}

/// The source and destination of an IPv6 packet, if it is one.
pub fn ipv6_addresses(packet: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    if packet.len() < IPV6_HEADER_LEN || packet[0] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&packet[at..at + 16]);
        Ipv6Addr::from(b)
    };
    Some((addr(8), addr(24)))
}

/// Whether an ICMPv6 error may be sent about `packet` (RFC 4443 2.4 (e)):
/// not about an ICMPv6 error itself, nor about a packet from an
/// unspecified or multicast source or to a multicast destination.
fn may_answer(packet: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
    let icmp_error =
        packet[6] == NEXT_HEADER_ICMPV6 && packet.get(IPV6_HEADER_LEN).is_some_and(|&t| t < 128);
    !icmp_error && !src.is_unspecified() && !src.is_multicast() && !dst.is_multicast()
}

/// The ICMPv6 error `error` about `packet` (an IPv6 packet an application
/// sent), from `from` back to the packet's source: an IPv6 packet to write
/// into the TUN interface. `None` if `packet` is not IPv6 or must not be
/// answered (RFC 4443 2.4 (e)).
pub fn error_for(packet: &[u8], from: Ipv6Addr, error: IcmpError) -> Option<Vec<u8>> {
    let (src, dst) = ipv6_addresses(packet)?;
    if !may_answer(packet, &src, &dst) {
        return None;
    }
    let quoted = packet
        .len()
        .min(ERROR_LEN_MAX - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quoted;
    let mut out = Vec::with_capacity(IPV6_HEADER_LEN + icmp_len);
    out.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no class or flow
    // At most 1,240 bytes: fits a u16.
    out.extend_from_slice(&(icmp_len as u16).to_be_bytes());
    out.push(NEXT_HEADER_ICMPV6);
    out.push(HOP_LIMIT);
    out.extend_from_slice(&from.octets());
    out.extend_from_slice(&src.octets());
    let (kind, code) = error.type_code();
    out.extend_from_slice(&[kind, code, 0, 0]);
    out.extend_from_slice(&error.field().to_be_bytes());
    out.extend_from_slice(&packet[..quoted]);
    let sum = checksum(&from, &src, &out[IPV6_HEADER_LEN..]);
    out[IPV6_HEADER_LEN + 2..IPV6_HEADER_LEN + 4].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}

/// The ICMPv6 checksum of `icmp` (checksum field zero or not: a packet
/// with the right checksum sums to 0) between `src` and `dst`.
pub fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u64::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_packet(src: Ipv6Addr, dst: Ipv6Addr, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
        p.push(17);
        p.push(64);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0x30, 0x39, 0x0f, 0xa0]);
        p.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend(std::iter::repeat_n(0xab, payload_len));
        p
    }

    fn addr(text: &str) -> Ipv6Addr {
        text.parse().expect("valid")
    }

    #[test]
    fn packet_too_big_quotes_what_fits_and_checks_out() {
        let (app, peer, me) = (addr("fd12::1"), addr("fd34::2"), addr("fd12::1"));
        let big = udp_packet(app, peer, 1452);
        let out = error_for(&big, me, IcmpError::PacketTooBig { mtu: 1400 }).expect("answered");
        assert_eq!(out.len(), ERROR_LEN_MAX);
        assert_eq!(ipv6_addresses(&out), Some((me, app)));
        assert_eq!(out[6], NEXT_HEADER_ICMPV6);
        assert_eq!(&out[40..44], &[2, 0, out[42], out[43]]);
        assert_eq!(
            u32::from_be_bytes([out[44], out[45], out[46], out[47]]),
            1400
        );
        assert_eq!(&out[48..], &big[..ERROR_LEN_MAX - 48]);
        assert_eq!(checksum(&me, &app, &out[40..]), 0, "valid checksum");
        let len = u16::from_be_bytes([out[4], out[5]]) as usize;
        assert_eq!(len, out.len() - 40);
    }

    #[test]
    fn unreachable_quotes_a_small_packet_whole() {
        let (app, peer) = (addr("fd12::1"), addr("fd34::2"));
        let small = udp_packet(app, peer, 10);
        let out = error_for(&small, app, IcmpError::AddressUnreachable).expect("answered");
        assert_eq!((out[40], out[41]), (1, 3));
        assert_eq!(&out[48..], &small[..]);
        assert_eq!(checksum(&app, &app, &out[40..]), 0);
        let out = error_for(&small, app, IcmpError::NoRoute).expect("answered");
        assert_eq!((out[40], out[41]), (1, 0));
    }

    #[test]
    fn errors_are_not_answered_nor_garbage() {
        let (app, peer) = (addr("fd12::1"), addr("fd34::2"));
        let small = udp_packet(app, peer, 10);
        let error = error_for(&small, app, IcmpError::NoRoute).expect("answered");
        // An error about an error: never.
        let mut about = error.clone();
        about[8..24].copy_from_slice(&peer.octets());
        assert_eq!(error_for(&about, app, IcmpError::NoRoute), None);
        // Multicast destination, unspecified source, not IPv6, too short.
        let multicast = udp_packet(app, addr("ff02::1"), 10);
        assert_eq!(error_for(&multicast, app, IcmpError::NoRoute), None);
        let unspecified = udp_packet(Ipv6Addr::UNSPECIFIED, peer, 10);
        assert_eq!(error_for(&unspecified, app, IcmpError::NoRoute), None);
        let mut v4 = small.clone();
        v4[0] = 0x45;
        assert_eq!(error_for(&v4, app, IcmpError::NoRoute), None);
        assert_eq!(error_for(&small[..39], app, IcmpError::NoRoute), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1600)) {
            let _ = error_for(&bytes, Ipv6Addr::LOCALHOST, IcmpError::PacketTooBig { mtu: 1280 });
        }
    }
}
