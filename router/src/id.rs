//! 256-bit node IDs and the XOR metric.

use core::fmt;
use core::str::FromStr;

/// Length of a node ID in bytes.
pub const NODE_ID_LEN: usize = 32;

/// A node's 256-bit identifier: the hash of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId([u8; NODE_ID_LEN]);

/// The XOR distance between two IDs, ordered as a 256-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance([u8; NODE_ID_LEN]);

impl NodeId {
    /// The first 8 bytes in hex (16 digits): enough to tell nodes apart in
    /// a log line.
    pub fn short(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An ID from its bytes.
    pub const fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> NodeId {
        NodeId(bytes)
    }

    /// An ID from a slice of exactly [`NODE_ID_LEN`] bytes.
    ///
    /// # Panics
    /// If `bytes` is not [`NODE_ID_LEN`] long. Callers pass fixed-width wire
    /// fields whose length was checked.
    pub fn from_slice(bytes: &[u8]) -> NodeId {
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(bytes);
        NodeId(id)
    }

    /// The bytes, big endian.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; NODE_ID_LEN];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// Bit `index` counted from the most significant bit (0..256).
    pub fn bit(&self, index: usize) -> bool {
        debug_assert!(index < NODE_ID_LEN * 8);
        self.0[index / 8] & (0x80 >> (index % 8)) != 0
    }

    /// Index of the first bit where `self` and `other` differ, or `None` if equal.
    pub fn first_differing_bit(&self, other: &NodeId) -> Option<usize> {
        for i in 0..NODE_ID_LEN {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return Some(i * 8 + x.leading_zeros() as usize);
            }
        }
        None
    }
}

impl Distance {
    /// The bytes, big endian.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 bytes identify a node well enough in logs.
        write!(f, "NodeId(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// Why a string is not a node ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a node ID is 64 hexadecimal digits (32 bytes), as printed by `xorlay keygen`; got {got:?}"
)]
pub struct ParseNodeIdError {
    got: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<NodeId, ParseNodeIdError> {
        let err = || ParseNodeIdError {
            got: s.chars().take(80).collect(),
        };
        let mut id = [0u8; NODE_ID_LEN];
        hex::decode_to_slice(s.trim(), &mut id).map_err(|_| err())?;
        Ok(NodeId(id))
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let id = NodeId::from_bytes(core::array::from_fn(|i| i as u8));
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn bad_hex_is_an_error_that_says_what_is_expected() {
        let err = "abc".parse::<NodeId>().expect_err("too short");
        assert!(err.to_string().contains("64 hexadecimal digits"));
        assert!("zz".repeat(32).parse::<NodeId>().is_err());
    }

    #[test]
    fn distance_is_xor_ordered_big_endian() {
        let zero = NodeId::from_bytes([0; 32]);
        let mut near = [0u8; 32];
        near[31] = 0xff;
        let mut far = [0u8; 32];
        far[0] = 0x01;
        assert!(zero.distance(&NodeId::from_bytes(near)) < zero.distance(&NodeId::from_bytes(far)));
        assert_eq!(zero.distance(&zero), Distance([0; 32]));
    }

    #[test]
    fn first_differing_bit() {
        let a = NodeId::from_bytes([0; 32]);
        let mut b = [0u8; 32];
        b[1] = 0x20;
        assert_eq!(a.first_differing_bit(&NodeId::from_bytes(b)), Some(10));
        assert_eq!(a.first_differing_bit(&a), None);
        assert!(NodeId::from_bytes(b).bit(10));
        assert!(!NodeId::from_bytes(b).bit(9));
    }
}
