//! What the virtual-time simulations (kad_sim, route_sim) share: a seeded
//! random generator and an event queue entry ordered by time.

#![allow(dead_code)] // each simulation uses a different subset

use std::cmp::Ordering;

use xorlay::core::NodeId;

/// SplitMix64: a simulation's own randomness, seedable and reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random node ID.
    pub fn id(&mut self) -> NodeId {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_be_bytes());
        }
        NodeId::from_bytes(bytes)
    }
}

/// An event due at `at`, queued `seq`-th: in a `BinaryHeap` the earliest
/// pops first, and events due together pop in the order they were queued.
pub struct Scheduled<K, T> {
    /// When it is due.
    pub at: K,
    /// Its place among events due at the same time.
    pub seq: u64,
    /// The event.
    pub item: T,
}

impl<K: Ord, T> PartialEq for Scheduled<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord, T> Eq for Scheduled<K, T> {}

impl<K: Ord, T> PartialOrd for Scheduled<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, T> Ord for Scheduled<K, T> {
    /// Reversed: the heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (&other.at, other.seq).cmp(&(&self.at, self.seq))
    }
}
