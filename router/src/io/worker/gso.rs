//! Grouping the forwards of one completion batch into UDP GSO sends.
//!
//! A worker forwards most datagrams of a batch to few neighbors. Instead of
//! one `sendmsg` per datagram, datagrams of the same length to the same
//! neighbor go out in one `sendmsg` with a `UDP_SEGMENT` control message:
//! the stack builds one buffer for the group and splits it into datagrams
//! at the bottom (in the NIC, or in software just before the driver), so
//! the per-datagram cost of the UDP/IP output path is paid once per group.
//!
//! The kernel's rules for one GSO send: every segment has the same length
//! except the last, which may be shorter; at most [`MAX_SEGMENTS`] segments
//! and [`MAX_BYTES`] bytes. [`Batcher`] keeps those rules and the order of
//! the datagrams to each neighbor (datagrams to different neighbors may
//! leave in another order than they came). Pure bookkeeping: the worker
//! owns the buffers and the sends.

use std::collections::VecDeque;

use socket2::SockAddr;

/// Most datagrams in one GSO send (the kernel allows 64 on every kernel
/// with `UDP_SEGMENT`, more on newer ones).
pub(super) const MAX_SEGMENTS: usize = 64;
/// Most bytes of payload in one GSO send (below IPv4's and IPv6's 65,535
/// minus headers).
pub(super) const MAX_BYTES: usize = 65_000;
/// Neighbors with a group open at once; a datagram to another neighbor
/// closes the oldest group.
pub(super) const OPEN_MAX: usize = 4;

/// One datagram waiting to be sent: its receive buffer and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Item {
    pub bid: u16,
    pub start: usize,
    pub len: usize,
}

/// Datagrams to one neighbor that can leave in one send.
#[derive(Debug)]
pub(super) struct Group {
    pub dst: SockAddr,
    /// The segment size: the first datagram's length.
    pub seg_len: usize,
    pub total: usize,
    pub items: Vec<Item>,
}

impl Group {
    /// Whether `item` may join: same length (or shorter, as the last one),
    /// within the segment and byte limits.
    fn admits(&self, item: &Item) -> bool {
        item.len <= self.seg_len
            && self.items.len() < MAX_SEGMENTS
            && self.total + item.len <= MAX_BYTES
    }

    /// Whether nothing more may join: full, or ended by a shorter datagram.
    fn sealed(&self) -> bool {
        self.items.len() >= MAX_SEGMENTS
            || self
                .items
                .last()
                .is_some_and(|last| last.len < self.seg_len)
    }
}

/// The groups of the current batch. Allocation-free once warm: groups
/// handed out by [`Batcher::ready`] come back through [`Batcher::recycle`].
#[derive(Debug, Default)]
pub(super) struct Batcher {
    open: Vec<Group>,
    ready: VecDeque<Group>,
    spare: Vec<Vec<Item>>,
}

impl Batcher {
    /// Adds a datagram for `dst`. Groups it closes become [`Batcher::ready`].
    pub(super) fn push(&mut self, dst: &SockAddr, item: Item) {
        if let Some(i) = self.open.iter().position(|g| g.dst == *dst) {
            if self.open[i].admits(&item) {
                let group = &mut self.open[i];
                group.total += item.len;
                group.items.push(item);
                if group.sealed() {
                    let group = self.open.remove(i);
                    self.ready.push_back(group);
                }
                return;
            }
            let group = self.open.remove(i);
            self.ready.push_back(group);
        } else if self.open.len() >= OPEN_MAX {
            let oldest = self.open.remove(0);
            self.ready.push_back(oldest);
        }
        let mut items = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(MAX_SEGMENTS));
        items.clear();
        items.push(item);
        self.open.push(Group {
            dst: dst.clone(),
            seg_len: item.len,
            total: item.len,
            items,
        });
    }

    /// Closes every open group (end of the batch).
    pub(super) fn finish(&mut self) {
        self.ready.extend(self.open.drain(..));
    }

    /// The next closed group, oldest first.
    pub(super) fn ready(&mut self) -> Option<Group> {
        self.ready.pop_front()
    }

    /// Takes back a group's storage once its items were sent or dropped.
    pub(super) fn recycle(&mut self, group: Group) {
        if self.spare.len() < 2 * OPEN_MAX {
            self.spare.push(group.items);
        }
    }

    /// Whether datagrams are waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty() && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SockAddr {
        SockAddr::from(std::net::SocketAddr::from(([198, 18, 0, 1], port)))
    }

    fn item(bid: u16, len: usize) -> Item {
        Item {
            bid,
            start: 64,
            len,
        }
    }

    fn drain(b: &mut Batcher) -> Vec<(u16, Vec<u16>)> {
        b.finish();
        let mut out = Vec::new();
        while let Some(g) = b.ready() {
            let port = g.dst.as_socket().map_or(0, |a| a.port());
            out.push((port, g.items.iter().map(|i| i.bid).collect()));
            b.recycle(g);
        }
        assert!(b.is_empty());
        out
    }

    #[test]
    fn same_length_same_neighbor_is_one_group() {
        let mut b = Batcher::default();
        for bid in 0..10 {
            b.push(&addr(1), item(bid, 100));
        }
        assert_eq!(drain(&mut b), vec![(1, (0..10).collect())]);
    }

    #[test]
    fn neighbors_get_their_own_groups_in_order() {
        let mut b = Batcher::default();
        for bid in 0..6 {
            b.push(&addr(1 + bid % 2), item(bid, 100));
        }
        assert_eq!(drain(&mut b), vec![(1, vec![0, 2, 4]), (2, vec![1, 3, 5])]);
    }

    #[test]
    fn a_shorter_datagram_ends_a_group_and_a_longer_one_starts_one() {
        let mut b = Batcher::default();
        b.push(&addr(1), item(0, 100));
        b.push(&addr(1), item(1, 100));
        b.push(&addr(1), item(2, 60)); // last, shorter: joins and seals
        b.push(&addr(1), item(3, 100));
        b.push(&addr(1), item(4, 200)); // longer: a new group
        b.push(&addr(1), item(5, 200));
        assert_eq!(
            drain(&mut b),
            vec![(1, vec![0, 1, 2]), (1, vec![3]), (1, vec![4, 5])]
        );
    }

    #[test]
    fn segment_and_byte_limits_hold() {
        let mut b = Batcher::default();
        let n = MAX_SEGMENTS as u16 * 2 + 1;
        for bid in 0..n {
            b.push(&addr(1), item(bid, 100));
        }
        let groups = drain(&mut b);
        assert_eq!(
            groups.iter().map(|(_, g)| g.len()).collect::<Vec<_>>(),
            vec![MAX_SEGMENTS, MAX_SEGMENTS, 1]
        );
        let mut b = Batcher::default();
        for bid in 0..60 {
            b.push(&addr(1), item(bid, 1400));
        }
        for (_, g) in drain(&mut b) {
            assert!(g.len() * 1400 <= MAX_BYTES, "{} segments", g.len());
        }
    }

    #[test]
    fn too_many_neighbors_close_the_oldest_group() {
        let mut b = Batcher::default();
        for port in 0..(OPEN_MAX as u16 + 1) {
            b.push(&addr(port), item(port, 100));
        }
        let first = b.ready().expect("oldest closed");
        assert_eq!(first.dst.as_socket().map(|a| a.port()), Some(0));
        b.recycle(first);
        b.push(&addr(1), item(99, 100));
        let groups = drain(&mut b);
        assert_eq!(groups.len(), OPEN_MAX);
        assert!(groups.contains(&(1, vec![1, 99])));
    }

    /// Every datagram comes out exactly once, per-neighbor order kept, each
    /// group within the kernel's rules: over pseudo-random batches.
    #[test]
    fn random_batches_keep_every_rule() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut b = Batcher::default();
        for _ in 0..200 {
            let n = (next() % 300) as u16;
            let mut sent: Vec<(u16, u16)> = Vec::new();
            for bid in 0..n {
                let port = (next() % 7) as u16;
                let len = [60, 100, 100, 100, 1400][(next() % 5) as usize];
                b.push(&addr(port), item(bid, len));
                sent.push((port, bid));
            }
            b.finish();
            let mut got: Vec<(u16, u16)> = Vec::new();
            while let Some(g) = b.ready() {
                assert!(!g.items.is_empty() && g.items.len() <= MAX_SEGMENTS);
                assert!(g.total <= MAX_BYTES);
                assert_eq!(g.total, g.items.iter().map(|i| i.len).sum::<usize>());
                let (last, body) = g.items.split_last().expect("non-empty");
                assert!(body.iter().all(|i| i.len == g.seg_len));
                assert!(last.len <= g.seg_len);
                let port = g.dst.as_socket().map_or(0, |a| a.port());
                got.extend(g.items.iter().map(|i| (port, i.bid)));
                b.recycle(g);
            }
            for port in 0..7 {
                let want: Vec<u16> = sent.iter().filter(|s| s.0 == port).map(|s| s.1).collect();
                let have: Vec<u16> = got.iter().filter(|s| s.0 == port).map(|s| s.1).collect();
                assert_eq!(want, have, "port {port}: every datagram once, in order");
            }
        }
    }
}
