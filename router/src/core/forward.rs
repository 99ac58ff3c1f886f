//! The forwarding decision, a pure function of the table and the header.

use super::table::NextHopTable;
use crate::id::NodeId;
use crate::wire::OverlayError;

/// What to do with a valid overlay packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a, A> {
    /// The destination is this node.
    Deliver,
    /// Send to this next hop, with the hop limit decremented.
    Forward {
        /// The neighbor's ID.
        next_hop: &'a NodeId,
        /// How to reach it.
        hop: &'a A,
    },
    /// Discard, counted under this reason.
    Drop(DropReason),
}

/// Why a packet was discarded. `Copy`, so it feeds counters directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The bytes are not a valid overlay packet.
    Malformed(OverlayError),
    /// Forwarding would bring the hop limit to zero.
    HopLimitExceeded,
    /// No neighbor is strictly closer to the destination than this node.
    NoRoute,
    /// A data packet from an underlay address without an authenticated
    /// session (decided by the shells, not by [`decide`]).
    NotNeighbor,
}

/// Decides the fate of a packet for `dst` arriving with `hop_limit`.
///
/// Delivered when `dst` is this node. Otherwise forwarded to the neighbor
/// XOR-closest to `dst`, provided that neighbor is strictly closer than this
/// node (greedy routing makes progress on every hop, so no loop is possible)
/// and the decremented hop limit stays above zero.
pub fn decide<'a, A>(table: &'a NextHopTable<A>, dst: &NodeId, hop_limit: u8) -> Verdict<'a, A> {
    if dst == table.local() {
        return Verdict::Deliver;
    }
    if hop_limit <= 1 {
        return Verdict::Drop(DropReason::HopLimitExceeded);
    }
    match table.closest(dst) {
        Some((next_hop, hop)) if next_hop.distance(dst) < table.local().distance(dst) => {
            Verdict::Forward { next_hop, hop }
        }
        _ => Verdict::Drop(DropReason::NoRoute),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(first: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = first;
        NodeId::from_bytes(b)
    }

    fn table(local: u8, neighbors: &[u8]) -> NextHopTable<u8> {
        NextHopTable::new(id(local), neighbors.iter().map(|n| (id(*n), *n))).expect("valid")
    }

    #[test]
    fn delivers_to_self_even_at_hop_limit_one() {
        let t = table(0x10, &[0x20]);
        assert_eq!(decide(&t, &id(0x10), 1), Verdict::Deliver);
    }

    #[test]
    fn forwards_to_strictly_closer_neighbor() {
        let t = table(0x80, &[0x01, 0x40, 0x70]);
        // dst 0x41: distances 0x40, 0x01, 0x31 from neighbors; 0xc1 from local.
        match decide(&t, &id(0x41), 64) {
            Verdict::Forward { next_hop, hop } => {
                assert_eq!(*next_hop, id(0x40));
                assert_eq!(*hop, 0x40);
            }
            other => panic!("expected forward, got {other:?}"),
        }
    }

    #[test]
    fn no_route_when_no_neighbor_is_closer() {
        let t = table(0x40, &[0x80, 0xc0]);
        assert_eq!(
            decide(&t, &id(0x41), 64),
            Verdict::Drop(DropReason::NoRoute)
        );
        let empty = table(0x40, &[]);
        assert_eq!(
            decide(&empty, &id(0x41), 64),
            Verdict::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn hop_limit_exceeded_before_forwarding() {
        let t = table(0x80, &[0x40]);
        assert_eq!(
            decide(&t, &id(0x41), 1),
            Verdict::Drop(DropReason::HopLimitExceeded)
        );
        assert!(matches!(decide(&t, &id(0x41), 2), Verdict::Forward { .. }));
    }

    proptest! {
        /// Every forward makes strict progress, so greedy routing cannot loop.
        #[test]
        fn forward_is_strictly_closer(
            local: [u8; 32],
            neighbors in proptest::collection::hash_set(any::<[u8; 32]>(), 0..32),
            dst: [u8; 32],
        ) {
            let local = NodeId::from_bytes(local);
            let dst = NodeId::from_bytes(dst);
            let t = NextHopTable::new(
                local,
                neighbors.into_iter().map(NodeId::from_bytes).filter(|n| *n != local).map(|n| (n, ())),
            ).expect("unique");
            match decide(&t, &dst, 64) {
                Verdict::Forward { next_hop, .. } => {
                    prop_assert!(next_hop.distance(&dst) < local.distance(&dst));
                    for (n, _) in t.iter() {
                        prop_assert!(next_hop.distance(&dst) <= n.distance(&dst));
                    }
                }
                Verdict::Deliver => prop_assert_eq!(dst, local),
                Verdict::Drop(reason) => {
                    prop_assert_eq!(reason, DropReason::NoRoute);
                    for (n, _) in t.iter() {
                        prop_assert!(n.distance(&dst) >= local.distance(&dst));
                    }
                }
            }
        }
    }
}
