//! Overlay IPv6 addresses derived from node IDs, inside fd00::/8 (unique
//! local addresses, RFC 4193), split in two by the ninth bit:
//!
//! ```text
//! node address   fd00::/9   0xfd | 0 | the first 119 bits of the node ID
//! node subnet    fd80::/9   0xfd | 1 | the first 55 bits of the node ID | 64 host bits
//! ```
//!
//! A router's TUN interface carries its node address (/128 of its own; the
//! overlay routes fd00::/8). The subnet is a /64 it may route to a LAN
//! behind it, as Yggdrasil's 300::/8 subnets.
//!
//! An address names an ID prefix, not the ID: a source resolves the full
//! ID through the overlay and the end-to-end handshake checks that the
//! peer's key hashes to an ID with that prefix. Taking over a node address
//! means finding a key whose ID matches 119 given bits: about 2^119 key
//! generations and hashes, out of reach. A subnet verifies 55 bits: about
//! 2^55 tries, within reach of a determined attacker with much hardware, as
//! with Yggdrasil's subnets (the S/Kademlia puzzle, `control.difficulty`,
//! adds its bits of work to every try).

use std::net::Ipv6Addr;

use crate::id::NodeId;

/// The first byte of every overlay address.
pub const PREFIX_BYTE: u8 = 0xfd;
/// ID bits a node address carries.
pub const NODE_BITS: u32 = 119;
/// ID bits a subnet carries.
pub const SUBNET_BITS: u32 = 55;

/// The node ID bits an overlay address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdPrefix {
    /// The bits, left-aligned; bits past `len` are zero.
    bits: [u8; 15],
    /// How many leading ID bits must match.
    len: u32,
}

impl IdPrefix {
    /// How many leading bits of the node ID it fixes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Always false: a prefix fixes 55 or 119 bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ID these bits begin, with zeros after: the target of the
    /// Kademlia lookup that finds the node (a node with the prefix is
    /// XOR-closer to it than any node without).
    pub fn target(&self) -> NodeId {
        let mut id = [0u8; 32];
        id[..15].copy_from_slice(&self.bits);
        NodeId::from_bytes(id)
    }

    /// Whether `id` starts with these bits.
    pub fn matches(&self, id: &NodeId) -> bool {
        let id = id.as_bytes();
        let whole = (self.len / 8) as usize;
        if id[..whole] != self.bits[..whole] {
            return false;
        }
        let rest = self.len % 8;
        rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            id[whole] & mask == self.bits[whole] & mask
        }
    }
}

/// Writes `bits` leading bits of `id` after the first 9 bits of `out`.
fn put_id_bits(out: &mut [u8; 16], id: &NodeId, bits: u32) {
    let id = id.as_bytes();
    for i in 0..bits as usize {
        let bit = id[i / 8] >> (7 - i % 8) & 1;
        let at = 9 + i;
        out[at / 8] |= bit << (7 - at % 8);
    }
}

/// The node address of `id`: fd00::/9 and the first 119 bits of the ID.
pub fn node_address(id: &NodeId) -> Ipv6Addr {
    let mut out = [0u8; 16];
    out[0] = PREFIX_BYTE;
    put_id_bits(&mut out, id, NODE_BITS);
    Ipv6Addr::from(out)
}

/// The /64 subnet of `id` (its network address): fd80::/9 and the first 55
/// bits of the ID.
pub fn node_subnet(id: &NodeId) -> Ipv6Addr {
    let mut out = [0u8; 16];
    out[0] = PREFIX_BYTE;
    out[1] = 0x80;
    put_id_bits(&mut out, id, SUBNET_BITS);
    Ipv6Addr::from(out)
}

/// The ID bits `addr` names, if it is an overlay address (a node address,
/// or any address in a node's subnet).
pub fn id_prefix(addr: &Ipv6Addr) -> Option<IdPrefix> {
    let b = addr.octets();
    if b[0] != PREFIX_BYTE {
        return None;
    }
    let len = if b[1] & 0x80 == 0 {
        NODE_BITS
    } else {
        SUBNET_BITS
    };
    let mut bits = [0u8; 15];
    for i in 0..len as usize {
        let at = 9 + i;
        let bit = b[at / 8] >> (7 - at % 8) & 1;
        bits[i / 8] |= bit << (7 - i % 8);
    }
    Some(IdPrefix { bits, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_id() -> NodeId {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).expect("getrandom");
        NodeId::from_bytes(b)
    }

    #[test]
    fn golden_addresses() {
        let id = NodeId::from_bytes([0xff; 32]);
        assert_eq!(
            node_address(&id),
            "fd7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<Ipv6Addr>()
                .expect("valid")
        );
        assert_eq!(
            node_subnet(&id),
            "fdff:ffff:ffff:ffff::".parse::<Ipv6Addr>().expect("valid")
        );
        let mut b = [0u8; 32];
        b[0] = 0x80; // only the first ID bit set
        let id = NodeId::from_bytes(b);
        assert_eq!(
            node_address(&id),
            "fd40::".parse::<Ipv6Addr>().expect("valid")
        );
        assert_eq!(
            node_subnet(&id),
            "fdc0::".parse::<Ipv6Addr>().expect("valid")
        );
    }

    #[test]
    fn an_address_names_its_node_and_hardly_any_other() {
        for _ in 0..1000 {
            let id = random_id();
            let node = id_prefix(&node_address(&id)).expect("an overlay address");
            assert_eq!(node.len(), NODE_BITS);
            assert!(node.matches(&id));
            let mut host = node_subnet(&id).octets();
            host[8..].copy_from_slice(&random_id().as_bytes()[..8]);
            let subnet = id_prefix(&Ipv6Addr::from(host)).expect("in the subnet");
            assert_eq!(subnet.len(), SUBNET_BITS);
            assert!(subnet.matches(&id));
            // Flipping any one of the named bits makes another node's.
            let bit = (id.as_bytes()[0] as usize) % NODE_BITS as usize;
            let mut other = *id.as_bytes();
            other[bit / 8] ^= 0x80 >> (bit % 8);
            assert!(!node.matches(&NodeId::from_bytes(other)), "bit {bit}");
            // Bits past the prefix do not matter.
            let mut tail = *id.as_bytes();
            tail[31] ^= 0xff;
            assert!(node.matches(&NodeId::from_bytes(tail)));
            assert!(!node.matches(&random_id()));
        }
    }

    #[test]
    fn other_addresses_are_not_overlay_addresses() {
        for text in ["fe80::1", "fc00::1", "2001:db8::1", "::1"] {
            let addr: Ipv6Addr = text.parse().expect("valid");
            assert_eq!(id_prefix(&addr), None, "{text}");
        }
    }
}
