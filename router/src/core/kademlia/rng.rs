//! A small seeded PRNG (SplitMix64) for refresh targets and request IDs.
//! Not for cryptography: the session layer authenticates everything.

use crate::core::NodeId;
use crate::id::NODE_ID_LEN;

/// SplitMix64 (Steele, Lea, Flood 2014): one u64 of state, full period.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random ID whose common prefix with `local` is exactly `cpl` bits:
    /// an ID in the range of bucket `cpl`.
    pub(crate) fn id_in_bucket(&mut self, local: &NodeId, cpl: usize) -> NodeId {
        debug_assert!(cpl < NODE_ID_LEN * 8);
        let mut bytes = [0u8; NODE_ID_LEN];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_be_bytes());
        }
        let local = local.as_bytes();
        let byte = cpl / 8;
        let bit = cpl % 8;
        bytes[..byte].copy_from_slice(&local[..byte]);
        // Bits above `bit` in this byte from local, bit `bit` flipped,
        // the rest random.
        let high_mask: u8 = !(0xffu8 >> bit);
        let flip: u8 = 0x80 >> bit;
        bytes[byte] =
            (local[byte] & high_mask) | (!local[byte] & flip) | (bytes[byte] & !high_mask & !flip);
        NodeId::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn deterministic() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    proptest! {
        #[test]
        fn id_in_bucket_has_that_prefix(local: [u8; 32], cpl in 0usize..256, seed: u64) {
            let local = NodeId::from_bytes(local);
            let id = SplitMix64::new(seed).id_in_bucket(&local, cpl);
            prop_assert_eq!(local.first_differing_bit(&id), Some(cpl));
        }
    }
}
