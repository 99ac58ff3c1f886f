//! The next-hop table: neighbors sorted by node ID, searched for the one
//! XOR-closest to a destination.
//!
//! Sorted IDs form the leaves of a binary trie in order, so the search
//! descends the trie over index ranges: at each step the range's first and
//! last IDs share a prefix, and the first bit where they differ splits the
//! range in two; the half whose bit equals the destination's holds the
//! closer IDs. The cost is O(depth * log n), no allocation.

use std::collections::HashMap;

use crate::id::NodeId;

/// Neighbors and what the data plane needs to reach each (`A`: an address),
/// and the routes the routing protocol found (`core::routing`): destination
/// to neighbor.
#[derive(Debug, Clone)]
pub struct NextHopTable<A> {
    local: NodeId,
    ids: Vec<NodeId>,
    hops: Vec<A>,
    /// Destination to the index of its next hop in `ids`.
    routes: HashMap<NodeId, usize>,
    /// Destinations outside the cluster, to their nearest beacon (from
    /// the location service): what this node puts into the via field of
    /// the packets it originates for them.
    vias: HashMap<NodeId, NodeId>,
    /// The routing protocol runs above level 0: a destination without a
    /// route is looked up (location service), not forwarded greedily.
    compact: bool,
}

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The same neighbor ID appears twice.
    #[error("neighbor {0} is listed twice; remove the duplicate")]
    Duplicate(NodeId),
    /// A neighbor claims this node's own ID.
    #[error("neighbor {0} has this node's own ID; a node is not its own neighbor")]
    SelfNeighbor(NodeId),
}

impl<A> NextHopTable<A> {
    /// A table of `neighbors` as seen from `local`.
    pub fn new(
        local: NodeId,
        neighbors: impl IntoIterator<Item = (NodeId, A)>,
    ) -> Result<NextHopTable<A>, TableError> {
        let mut entries: Vec<(NodeId, A)> = neighbors.into_iter().collect();
        entries.sort_by_key(|entry| entry.0);
        for pair in entries.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(TableError::Duplicate(pair[0].0));
            }
        }
        if let Some((id, _)) = entries.iter().find(|(id, _)| *id == local) {
            return Err(TableError::SelfNeighbor(*id));
        }
        let (ids, hops) = entries.into_iter().unzip();
        let table = NextHopTable {
            local,
            ids,
            hops,
            routes: HashMap::new(),
            vias: HashMap::new(),
            compact: false,
        };
        table.debug_check();
        Ok(table)
    }

    /// What `closest` relies on: IDs sorted, unique, one hop each, and
    /// never this node's own (debug builds only).
    fn debug_check(&self) {
        debug_assert!(
            self.ids.windows(2).all(|pair| pair[0] < pair[1]),
            "next-hop IDs not sorted and unique"
        );
        debug_assert_eq!(self.ids.len(), self.hops.len());
        debug_assert!(
            self.ids.binary_search(&self.local).is_err(),
            "this node is its own next hop"
        );
    }

    /// A table without neighbors.
    pub fn empty(local: NodeId) -> NextHopTable<A> {
        NextHopTable {
            local,
            ids: Vec::new(),
            hops: Vec::new(),
            routes: HashMap::new(),
            vias: HashMap::new(),
            compact: false,
        }
    }

    /// Adds the routing protocol's routes: (destination, next hop). A route
    /// whose next hop is not a neighbor of the table, or to this node, is
    /// left out; returns how many were.
    pub fn add_routes(&mut self, routes: impl IntoIterator<Item = (NodeId, NodeId)>) -> usize {
        let mut skipped = 0;
        for (dst, next_hop) in routes {
            match self.ids.binary_search(&next_hop) {
                Ok(index) if dst != self.local => {
                    self.routes.insert(dst, index);
                }
                _ => skipped += 1,
            }
        }
        skipped
    }

    /// Adds the location service's answers: (destination, its nearest
    /// beacon).
    pub fn add_vias(&mut self, vias: impl IntoIterator<Item = (NodeId, NodeId)>) {
        self.vias.extend(vias);
    }

    /// The beacon to put into a packet this node originates for `dst`.
    pub fn via_of(&self, dst: &NodeId) -> Option<&NodeId> {
        self.vias.get(dst)
    }

    /// Marks the table as compact routing (level above 0): see
    /// [`NextHopTable::compact`].
    pub fn set_compact(&mut self, compact: bool) {
        self.compact = compact;
    }

    /// Whether destinations without a route are looked up instead of
    /// forwarded greedily.
    pub fn compact(&self) -> bool {
        self.compact
    }

    /// Routes added with [`NextHopTable::add_routes`].
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// The routes: (destination, next hop), in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = (&NodeId, &NodeId)> {
        self.routes
            .iter()
            .filter_map(|(dst, &index)| self.ids.get(index).map(|next| (dst, next)))
    }

    /// The next hop the routing protocol chose for `dst`, if it has one.
    pub fn exact(&self, dst: &NodeId) -> Option<(&NodeId, &A)> {
        let &index = self.routes.get(dst)?;
        Some((self.ids.get(index)?, self.hops.get(index)?))
    }

    /// This node's ID.
    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// Number of neighbors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True without neighbors.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Neighbors in ID order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &A)> {
        self.ids.iter().zip(self.hops.iter())
    }

    /// The neighbor XOR-closest to `target`, if any.
    pub fn closest(&self, target: &NodeId) -> Option<(&NodeId, &A)> {
        if self.ids.is_empty() {
            return None;
        }
        let (mut lo, mut hi) = (0usize, self.ids.len());
        // Each step shrinks the range by at least one; bounded by len.
        while hi - lo > 1 {
            let first = &self.ids[lo];
            let last = &self.ids[hi - 1];
            let Some(bit) = first.first_differing_bit(last) else {
                break; // unreachable: IDs are unique
            };
            // ids[lo..hi] share bits 0..bit and are sorted, so bit `bit` is
            // 0 for a prefix of the range and 1 for the rest.
            let split = lo + self.ids[lo..hi].partition_point(|id| !id.bit(bit));
            if target.bit(bit) {
                lo = split;
            } else {
                hi = split;
            }
        }
        Some((&self.ids[lo], &self.hops[lo]))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(bytes: [u8; 32]) -> NodeId {
        NodeId::from_bytes(bytes)
    }

    #[test]
    fn routes_take_precedence_and_need_a_neighbor_as_next_hop() {
        let (local, near, far, dst, stranger) = (
            id([0; 32]),
            id([1; 32]),
            id([0xf0; 32]),
            id([0xf1; 32]),
            id([7; 32]),
        );
        let mut table = NextHopTable::new(local, [(near, 'n'), (far, 'f')]).expect("valid");
        // Greedy alone: `far` is XOR-closest to `dst`.
        assert_eq!(table.closest(&dst), Some((&far, &'f')));
        let skipped = table.add_routes([(dst, near), (stranger, stranger), (local, near)]);
        assert_eq!(skipped, 2, "a next hop that is no neighbor, and this node");
        assert_eq!(table.route_count(), 1);
        assert_eq!(table.exact(&dst), Some((&near, &'n')));
        assert_eq!(table.exact(&stranger), None);
        assert_eq!(table.routes().collect::<Vec<_>>(), vec![(&dst, &near)]);
        assert_eq!(
            crate::core::forward::route(&table, &dst),
            crate::core::forward::Route::Next {
                next_hop: &near,
                hop: &'n'
            }
        );
    }

    #[test]
    fn rejects_duplicates_and_self() {
        let a = id([1; 32]);
        let b = id([2; 32]);
        assert_eq!(
            NextHopTable::new(a, [(b, ()), (b, ())]).err(),
            Some(TableError::Duplicate(b))
        );
        assert_eq!(
            NextHopTable::new(a, [(a, ())]).err(),
            Some(TableError::SelfNeighbor(a))
        );
    }

    #[test]
    fn empty_table_has_no_closest() {
        let t: NextHopTable<()> = NextHopTable::new(id([0; 32]), []).expect("empty is valid");
        assert!(t.closest(&id([5; 32])).is_none());
    }

    proptest! {
        #[test]
        fn closest_matches_linear_scan(
            ids in proptest::collection::hash_set(any::<[u8; 32]>(), 1..64),
            target: [u8; 32],
        ) {
            let local = id([0xee; 32]);
            let ids: Vec<NodeId> = ids.into_iter().map(id).filter(|n| *n != local).collect();
            prop_assume!(!ids.is_empty());
            let table = NextHopTable::new(local, ids.iter().map(|n| (*n, *n))).expect("unique");
            let target = id(target);
            let expected = ids.iter().min_by_key(|n| n.distance(&target)).copied();
            prop_assert_eq!(table.closest(&target).map(|(n, _)| *n), expected);
        }

        #[test]
        fn closest_with_shared_prefixes(
            suffixes in proptest::collection::hash_set(any::<u8>(), 1..40),
            target_suffix: u8,
        ) {
            // IDs that differ only in the last byte stress deep descents.
            let make = |s: u8| { let mut b = [0x5a; 32]; b[31] = s; id(b) };
            let local = id([0; 32]);
            let ids: Vec<NodeId> = suffixes.into_iter().map(make).collect();
            let table = NextHopTable::new(local, ids.iter().map(|n| (*n, ()))).expect("unique");
            let target = make(target_suffix);
            let expected = ids.iter().min_by_key(|n| n.distance(&target)).copied();
            prop_assert_eq!(table.closest(&target).map(|(n, _)| *n), expected);
        }
    }
}
