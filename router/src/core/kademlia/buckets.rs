//! The routing table: 256 k-buckets indexed by the common-prefix length with
//! the local ID, each with a replacement cache, under per-subnet limits.
//!
//! Pure data structure: no messages, no timers. The state machine in
//! `kademlia/mod.rs` decides when to ping and when to evict.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::lookup::distance_key;
use crate::core::NodeId;
use crate::id::NODE_ID_LEN;

/// Number of buckets: one per possible common-prefix length.
pub(crate) const BUCKETS: usize = NODE_ID_LEN * 8;

/// A verified contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contact {
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
    /// Last time the node proved to be alive (session up, message received).
    pub(crate) last_seen: Instant,
}

/// The subnet an address counts against: IPv4 /24 or IPv6 /64. An
/// IPv4-mapped IPv6 address counts as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Subnet {
    V4([u8; 3]),
    V6([u8; 8]),
}

impl Subnet {
    pub(crate) fn of(addr: &SocketAddr) -> Subnet {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Subnet::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Subnet::V6(prefix)
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Sorted by `last_seen`, least recently seen first; at most k.
    contacts: Vec<Contact>,
    /// Verified nodes waiting for a slot, most recently seen last; at most
    /// `replacements_max`.
    replacements: Vec<Contact>,
    /// Last lookup for an ID in this bucket's range (None: never).
    last_lookup: Option<Instant>,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// A new contact in the table.
    Added,
    /// Already a contact: marked seen (and its address updated if it moved
    /// and the new subnet has room; `addr_changed` then).
    Updated { addr_changed: bool },
    /// The bucket is full: the node waits in the replacement cache. The
    /// caller may check `lrs`, the least-recently-seen contact.
    Pending { lrs: Contact },
    /// Over a per-subnet limit.
    RejectedSubnet,
    /// The local ID.
    RejectedSelf,
}

/// What [`RoutingTable::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Removed {
    /// The node was a contact (and is no longer).
    pub(crate) contact: bool,
    /// A replacement promoted into the freed slot.
    pub(crate) promoted: Option<NodeId>,
}

/// 256 k-buckets with replacement caches and subnet limits.
#[derive(Debug, Clone)]
pub(crate) struct RoutingTable {
    local: NodeId,
    k: usize,
    replacements_max: usize,
    subnet_bucket_max: usize,
    subnet_table_max: usize,
    buckets: Vec<Bucket>,
    /// Contacts per subnet across the table (replacements not counted).
    subnet_counts: BTreeMap<Subnet, usize>,
    len: usize,
}

impl RoutingTable {
    pub(crate) fn new(
        local: NodeId,
        k: usize,
        replacements_max: usize,
        subnet_bucket_max: usize,
        subnet_table_max: usize,
    ) -> RoutingTable {
        RoutingTable {
            local,
            k,
            replacements_max,
            subnet_bucket_max,
            subnet_table_max,
            buckets: vec![Bucket::default(); BUCKETS],
            subnet_counts: BTreeMap::new(),
            len: 0,
        }
    }

    /// The bucket `id` belongs in (its common-prefix length with the local
    /// ID), or None for the local ID itself.
    pub(crate) fn bucket_index(&self, id: &NodeId) -> Option<usize> {
        self.local.first_differing_bit(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Contact> {
        let b = self.bucket_index(id)?;
        self.buckets[b].contacts.iter().find(|c| c.id == *id)
    }

    pub(crate) fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    #[cfg(test)]
    pub(crate) fn is_replacement(&self, id: &NodeId) -> bool {
        self.bucket_index(id)
            .is_some_and(|b| self.buckets[b].replacements.iter().any(|c| c.id == *id))
    }

    /// All contacts, bucket by bucket.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.buckets.iter().flat_map(|b| b.contacts.iter())
    }

    fn subnet_count(&self, subnet: &Subnet) -> usize {
        self.subnet_counts.get(subnet).copied().unwrap_or(0)
    }

    fn subnet_add(&mut self, subnet: Subnet) {
        *self.subnet_counts.entry(subnet).or_insert(0) += 1;
    }

    fn subnet_sub(&mut self, subnet: Subnet) {
        if let Some(n) = self.subnet_counts.get_mut(&subnet) {
            *n -= 1;
            if *n == 0 {
                self.subnet_counts.remove(&subnet);
            }
        }
    }

    /// Whether a node at `addr` fits bucket `b`'s and the table's subnet
    /// limits (not counting `except`, a node about to move).
    fn subnet_allows(&self, b: usize, addr: &SocketAddr, except: Option<&NodeId>) -> bool {
        let subnet = Subnet::of(addr);
        let in_bucket = self.buckets[b]
            .contacts
            .iter()
            .filter(|c| Some(&c.id) != except && Subnet::of(&c.addr) == subnet)
            .count();
        let mut in_table = self.subnet_count(&subnet);
        if let Some(id) = except
            && self.get(id).is_some_and(|c| Subnet::of(&c.addr) == subnet)
        {
            in_table -= 1;
        }
        in_bucket < self.subnet_bucket_max && in_table < self.subnet_table_max
    }

    /// Whether a new node `id` at `addr` would enter the table right away
    /// (its bucket has room and the subnet limits allow it).
    pub(crate) fn has_room_for(&self, id: &NodeId, addr: &SocketAddr) -> bool {
        match self.bucket_index(id) {
            Some(b) => {
                self.buckets[b].contacts.len() < self.k
                    && !self.contains(id)
                    && self.subnet_allows(b, addr, None)
            }
            None => false,
        }
    }

    /// Places `contact` into `contacts` keeping the `last_seen` order.
    fn place(contacts: &mut Vec<Contact>, contact: Contact) {
        let at = contacts.partition_point(|c| c.last_seen <= contact.last_seen);
        contacts.insert(at, contact);
    }

    /// A node proved to be alive at `now` (a session is up or it answered):
    /// add it, refresh it, or queue it as a replacement.
    pub(crate) fn insert(&mut self, id: NodeId, addr: SocketAddr, now: Instant) -> Insert {
        let Some(b) = self.bucket_index(&id) else {
            return Insert::RejectedSelf;
        };
        if let Some(i) = self.buckets[b].contacts.iter().position(|c| c.id == id) {
            let mut contact = self.buckets[b].contacts.remove(i);
            let mut addr_changed = false;
            if contact.addr != addr && self.subnet_allows(b, &addr, Some(&id)) {
                self.subnet_sub(Subnet::of(&contact.addr));
                self.subnet_add(Subnet::of(&addr));
                contact.addr = addr;
                addr_changed = true;
            }
            contact.last_seen = contact.last_seen.max(now);
            Self::place(&mut self.buckets[b].contacts, contact);
            return Insert::Updated { addr_changed };
        }
        let contact = Contact {
            id,
            addr,
            last_seen: now,
        };
        if self.buckets[b].contacts.len() < self.k {
            if !self.subnet_allows(b, &addr, None) {
                return Insert::RejectedSubnet;
            }
            // A node that gets a slot leaves the replacement cache.
            self.buckets[b].replacements.retain(|c| c.id != id);
            self.subnet_add(Subnet::of(&addr));
            Self::place(&mut self.buckets[b].contacts, contact);
            self.len += 1;
            return Insert::Added;
        }
        // Full bucket: the long-lived contacts stay; the newcomer waits.
        let subnet = Subnet::of(&addr);
        let bucket = &mut self.buckets[b];
        bucket.replacements.retain(|c| c.id != id);
        let same_subnet = bucket
            .replacements
            .iter()
            .filter(|c| Subnet::of(&c.addr) == subnet)
            .count();
        if same_subnet >= self.subnet_bucket_max
            || self.subnet_counts.get(&subnet).copied().unwrap_or(0) >= self.subnet_table_max
        {
            return Insert::RejectedSubnet;
        }
        if self.replacements_max > 0 {
            if bucket.replacements.len() >= self.replacements_max {
                // Bounded: the stalest replacement goes.
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(contact);
        }
        // The bucket is full (k >= 1), so it has a first element.
        let lrs = bucket.contacts[0];
        Insert::Pending { lrs }
    }

    /// Marks a contact (or a replacement) seen at `now`. False if unknown.
    #[cfg(test)]
    pub(crate) fn seen(&mut self, id: &NodeId, now: Instant) -> bool {
        let Some(b) = self.bucket_index(id) else {
            return false;
        };
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket.contacts.iter().position(|c| c.id == *id) {
            let mut contact = bucket.contacts.remove(i);
            contact.last_seen = contact.last_seen.max(now);
            Self::place(&mut bucket.contacts, contact);
            return true;
        }
        if let Some(i) = bucket.replacements.iter().position(|c| c.id == *id) {
            let mut contact = bucket.replacements.remove(i);
            contact.last_seen = contact.last_seen.max(now);
            bucket.replacements.push(contact);
            return true;
        }
        false
    }

    /// Removes `id` from its bucket (promoting the most recently seen
    /// replacement that fits the subnet limits) or from the replacement cache.
    pub(crate) fn remove(&mut self, id: &NodeId) -> Removed {
        let Some(b) = self.bucket_index(id) else {
            return Removed::default();
        };
        if let Some(i) = self.buckets[b]
            .replacements
            .iter()
            .position(|c| c.id == *id)
        {
            self.buckets[b].replacements.remove(i);
        }
        let Some(i) = self.buckets[b].contacts.iter().position(|c| c.id == *id) else {
            return Removed::default();
        };
        let gone = self.buckets[b].contacts.remove(i);
        self.subnet_sub(Subnet::of(&gone.addr));
        self.len -= 1;
        let mut promoted = None;
        // Most recently seen first; bounded by replacements_max.
        for j in (0..self.buckets[b].replacements.len()).rev() {
            let candidate = self.buckets[b].replacements[j];
            if self.subnet_allows(b, &candidate.addr, None) {
                self.buckets[b].replacements.remove(j);
                self.subnet_add(Subnet::of(&candidate.addr));
                Self::place(&mut self.buckets[b].contacts, candidate);
                self.len += 1;
                promoted = Some(candidate.id);
                break;
            }
        }
        Removed {
            contact: true,
            promoted,
        }
    }

    /// Up to `count` contacts closest to `target` by XOR distance, closest
    /// first.
    ///
    /// Buckets partition the ID space by distance to the target: with
    /// `c` = the common-prefix length of the local ID and the target, bucket
    /// `c` holds the closest contacts, then buckets `c+1..` (all at the same
    /// top distance bit), then buckets `c-1, c-2, .., 0`, each farther than
    /// the last. So only the buckets needed are sorted.
    pub(crate) fn closest<'a>(&'a self, target: &NodeId, count: usize) -> Vec<&'a Contact> {
        type Group<'a> = Vec<((u128, u128), &'a Contact)>;
        fn take<'a>(group: &mut Group<'a>, out: &mut Vec<&'a Contact>, count: usize) {
            group.sort_unstable_by_key(|(d, _)| *d);
            let room = count - out.len();
            out.extend(group.drain(..).take(room).map(|(_, c)| c));
        }
        let mut out: Vec<&Contact> = Vec::with_capacity(count.min(self.len));
        let mut group: Group<'_> = Vec::new();
        let keyed = |c: &'a Contact| (distance_key(&c.id, target), c);
        match self.bucket_index(target) {
            Some(c) => {
                group.extend(self.buckets[c].contacts.iter().map(keyed));
                take(&mut group, &mut out, count);
                if out.len() < count {
                    group.extend(
                        self.buckets[c + 1..]
                            .iter()
                            .flat_map(|b| b.contacts.iter())
                            .map(keyed),
                    );
                    take(&mut group, &mut out, count);
                }
                for b in (0..c).rev() {
                    if out.len() >= count {
                        break;
                    }
                    group.extend(self.buckets[b].contacts.iter().map(keyed));
                    take(&mut group, &mut out, count);
                }
            }
            None => {
                for b in (0..BUCKETS).rev() {
                    if out.len() >= count {
                        break;
                    }
                    group.extend(self.buckets[b].contacts.iter().map(keyed));
                    take(&mut group, &mut out, count);
                }
            }
        }
        out
    }

    /// The index of the deepest non-empty bucket.
    pub(crate) fn deepest(&self) -> Option<usize> {
        self.buckets.iter().rposition(|b| !b.contacts.is_empty())
    }

    pub(crate) fn last_lookup(&self, b: usize) -> Option<Instant> {
        self.buckets[b].last_lookup
    }

    /// Records a lookup of an ID in bucket `b`'s range.
    pub(crate) fn touch(&mut self, b: usize, now: Instant) {
        self.buckets[b].last_lookup = Some(now);
    }

    /// Checks every structural invariant; the first broken one as text.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut subnets: BTreeMap<Subnet, usize> = BTreeMap::new();
        let mut len = 0;
        for (b, bucket) in self.buckets.iter().enumerate() {
            if bucket.contacts.len() > self.k {
                return Err(format!("bucket {b} holds {} > k", bucket.contacts.len()));
            }
            if bucket.replacements.len() > self.replacements_max {
                return Err(format!(
                    "bucket {b} has {} replacements",
                    bucket.replacements.len()
                ));
            }
            for pair in bucket.contacts.windows(2) {
                if pair[0].last_seen > pair[1].last_seen {
                    return Err(format!("bucket {b} not in last-seen order"));
                }
            }
            let mut bucket_subnets: BTreeMap<Subnet, usize> = BTreeMap::new();
            for c in &bucket.contacts {
                if self.bucket_index(&c.id) != Some(b) {
                    return Err(format!("{:?} in bucket {b}, wrong prefix length", c.id));
                }
                if !seen.insert(c.id) {
                    return Err(format!("{:?} twice", c.id));
                }
                *bucket_subnets.entry(Subnet::of(&c.addr)).or_insert(0) += 1;
                *subnets.entry(Subnet::of(&c.addr)).or_insert(0) += 1;
                len += 1;
            }
            if bucket_subnets.values().any(|n| *n > self.subnet_bucket_max) {
                return Err(format!("bucket {b} over its subnet limit"));
            }
            for r in &bucket.replacements {
                if self.bucket_index(&r.id) != Some(b) {
                    return Err(format!("replacement {:?} in bucket {b}", r.id));
                }
                if bucket.contacts.iter().any(|c| c.id == r.id) {
                    return Err(format!("{:?} both contact and replacement", r.id));
                }
            }
            let mut ids: Vec<NodeId> = bucket.replacements.iter().map(|r| r.id).collect();
            ids.sort();
            ids.dedup();
            if ids.len() != bucket.replacements.len() {
                return Err(format!("bucket {b} has a duplicate replacement"));
            }
        }
        if subnets.values().any(|n| *n > self.subnet_table_max) {
            return Err("table over a subnet limit".to_string());
        }
        if subnets != self.subnet_counts {
            return Err("subnet counts out of date".to_string());
        }
        if len != self.len {
            return Err(format!("len {} but {len} contacts", self.len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn t0() -> Instant {
        // Any fixed origin; tests only use offsets from it.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    fn at(ms: u64) -> Instant {
        t0() + Duration::from_millis(ms)
    }

    /// An ID in bucket `cpl` of the all-zero local ID, told apart by `n`.
    fn id_in(cpl: usize, n: u16) -> NodeId {
        let mut b = [0u8; 32];
        b[cpl / 8] |= 0x80 >> (cpl % 8);
        b[30] |= (n >> 8) as u8;
        b[31] |= n as u8;
        NodeId::from_bytes(b)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), 4789)
    }

    fn table(k: usize) -> RoutingTable {
        RoutingTable::new(NodeId::from_bytes([0; 32]), k, k, 2, 10)
    }

    #[test]
    fn subnets() {
        assert_eq!(Subnet::of(&v4(10, 1, 2, 3)), Subnet::of(&v4(10, 1, 2, 200)));
        assert_ne!(Subnet::of(&v4(10, 1, 2, 3)), Subnet::of(&v4(10, 1, 3, 3)));
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 9).to_ipv6_mapped()), 1);
        assert_eq!(Subnet::of(&mapped), Subnet::of(&v4(10, 1, 2, 3)));
        let a: SocketAddr = "[2001:db8:1:2::1]:1".parse().expect("valid");
        let b: SocketAddr = "[2001:db8:1:2:ffff::1]:1".parse().expect("valid");
        let c: SocketAddr = "[2001:db8:1:3::1]:1".parse().expect("valid");
        assert_eq!(Subnet::of(&a), Subnet::of(&b));
        assert_ne!(Subnet::of(&a), Subnet::of(&c));
        let _ = Ipv6Addr::LOCALHOST;
    }

    #[test]
    fn full_bucket_keeps_old_contacts_and_queues_newcomer() {
        let mut t = table(2);
        assert_eq!(t.insert(id_in(0, 1), v4(10, 0, 1, 1), at(0)), Insert::Added);
        assert_eq!(t.insert(id_in(0, 2), v4(10, 0, 2, 1), at(1)), Insert::Added);
        match t.insert(id_in(0, 3), v4(10, 0, 3, 1), at(2)) {
            Insert::Pending { lrs } => assert_eq!(lrs.id, id_in(0, 1)),
            other => panic!("expected pending, got {other:?}"),
        }
        assert!(t.contains(&id_in(0, 1)) && t.contains(&id_in(0, 2)));
        assert!(t.is_replacement(&id_in(0, 3)));
        // Seeing the LRS moves it to the tail: the other becomes LRS.
        assert!(t.seen(&id_in(0, 1), at(3)));
        match t.insert(id_in(0, 4), v4(10, 0, 4, 1), at(4)) {
            Insert::Pending { lrs } => assert_eq!(lrs.id, id_in(0, 2)),
            other => panic!("expected pending, got {other:?}"),
        }
        // Removing a contact promotes the most recently seen replacement.
        let removed = t.remove(&id_in(0, 2));
        assert_eq!(
            removed,
            Removed {
                contact: true,
                promoted: Some(id_in(0, 4))
            }
        );
        assert!(t.contains(&id_in(0, 4)));
        t.check_invariants().expect("invariants");
    }

    #[test]
    fn subnet_limits_per_bucket_and_table() {
        let mut t = table(16);
        assert_eq!(t.insert(id_in(0, 1), v4(10, 0, 0, 1), at(0)), Insert::Added);
        assert_eq!(t.insert(id_in(0, 2), v4(10, 0, 0, 2), at(0)), Insert::Added);
        assert_eq!(
            t.insert(id_in(0, 3), v4(10, 0, 0, 3), at(0)),
            Insert::RejectedSubnet
        );
        // Other buckets still take the subnet, up to 10 in the table.
        let mut added = 2;
        for cpl in 1..20 {
            for n in 0..2 {
                if t.insert(id_in(cpl, n), v4(10, 0, 0, 10 + n as u8), at(0)) == Insert::Added {
                    added += 1;
                }
            }
        }
        assert_eq!(added, 10);
        t.check_invariants().expect("invariants");
    }

    #[test]
    fn closest_orders_buckets_by_distance() {
        let mut t = table(16);
        for cpl in 0..20 {
            for n in 0..3 {
                t.insert(id_in(cpl, n), v4(10, cpl as u8, n as u8, 1), at(0));
            }
        }
        let target = id_in(5, 77);
        let all: Vec<NodeId> = {
            let mut v: Vec<NodeId> = t.iter().map(|c| c.id).collect();
            v.sort_by_key(|id| id.distance(&target));
            v
        };
        let got: Vec<NodeId> = t.closest(&target, 100).iter().map(|c| c.id).collect();
        assert_eq!(got, all);
        let got: Vec<NodeId> = t.closest(&target, 7).iter().map(|c| c.id).collect();
        assert_eq!(got, all[..7]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            id: [u8; 2],
            cpl: u8,
            net: u8,
            host: u8,
        },
        Seen {
            id: [u8; 2],
            cpl: u8,
        },
        Remove {
            id: [u8; 2],
            cpl: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few prefix lengths and few subnets, so buckets fill and limits bite.
        prop_oneof![
            6 => (any::<[u8; 2]>(), 0u8..6, 0u8..8, any::<u8>())
                .prop_map(|(id, cpl, net, host)| Op::Insert { id, cpl, net, host }),
            2 => (any::<[u8; 2]>(), 0u8..6).prop_map(|(id, cpl)| Op::Seen { id, cpl }),
            2 => (any::<[u8; 2]>(), 0u8..6).prop_map(|(id, cpl)| Op::Remove { id, cpl }),
        ]
    }

    fn op_id(id: [u8; 2], cpl: u8) -> NodeId {
        id_in(usize::from(cpl), u16::from_be_bytes(id))
    }

    proptest! {
        #[test]
        fn invariants_hold_under_random_operations(
            ops in proptest::collection::vec(op(), 1..300),
            k in 1usize..6,
        ) {
            let mut t = RoutingTable::new(NodeId::from_bytes([0; 32]), k, k, 2, 5);
            for (step, op) in ops.into_iter().enumerate() {
                let now = at(step as u64);
                match op {
                    Op::Insert { id, cpl, net, host } => {
                        let id = op_id(id, cpl);
                        let was = t.contains(&id);
                        let before: Vec<NodeId> = t.iter().map(|c| c.id).collect();
                        let result = t.insert(id, v4(10, 0, net, host), now);
                        if !was {
                            // A newcomer never displaces a contact.
                            for old in before {
                                prop_assert!(t.contains(&old));
                            }
                            let expected = matches!(
                                result,
                                Insert::Added | Insert::Pending { .. } | Insert::RejectedSubnet
                            );
                            prop_assert!(expected, "newcomer: {:?}", result);
                        }
                    }
                    Op::Seen { id, cpl } => {
                        t.seen(&op_id(id, cpl), now);
                    }
                    Op::Remove { id, cpl } => {
                        let id = op_id(id, cpl);
                        let removed = t.remove(&id);
                        prop_assert!(!t.contains(&id));
                        prop_assert!(!t.is_replacement(&id));
                        if let Some(p) = removed.promoted {
                            prop_assert!(t.contains(&p));
                        }
                    }
                }
                if let Err(e) = t.check_invariants() {
                    prop_assert!(false, "{}", e);
                }
            }
        }

        #[test]
        fn closest_equals_brute_force(
            ids in proptest::collection::hash_set(any::<[u8; 32]>(), 0..200),
            target: [u8; 32],
            local: [u8; 32],
            count in 0usize..40,
        ) {
            let local = NodeId::from_bytes(local);
            let mut t = RoutingTable::new(local, 16, 16, 1000, 1000);
            for (i, id) in ids.iter().enumerate() {
                let addr = v4(10, (i >> 8) as u8, i as u8, 1);
                t.insert(NodeId::from_bytes(*id), addr, at(0));
            }
            for target in [NodeId::from_bytes(target), local] {
                let mut all: Vec<NodeId> = t.iter().map(|c| c.id).collect();
                all.sort_by_key(|id| id.distance(&target));
                all.truncate(count);
                let got: Vec<NodeId> = t.closest(&target, count).iter().map(|c| c.id).collect();
                prop_assert_eq!(got, all);
            }
        }
    }
}
