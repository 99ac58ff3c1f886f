//! Node identity: an ed25519 key pair whose public key hashes to the node ID.
//! Pure: generating the secret needs randomness, which the caller supplies.

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::id::NodeId;

/// First word of a key file, naming its format.
pub const KEY_FILE_TAG: &str = "xorlay-ed25519-secret-v1";

/// Domain separator hashed before the public key, so a node ID cannot be
/// confused with any other SHA-256 of the same key.
const NODE_ID_DOMAIN: &[u8] = b"xorlay node id v1\0";

/// A node's key pair.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    id: NodeId,
}

/// Why a key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Not a key file of this format.
    #[error(
        "not an xorlay key file: expected `{KEY_FILE_TAG} <64 hex digits>`; create one with `xorlay keygen --out FILE`"
    )]
    Format,
}

impl Identity {
    /// The identity of a 32-byte ed25519 secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Identity {
        let signing = SigningKey::from_bytes(seed);
        let id = node_id_of(&signing.verifying_key());
        Identity { signing, id }
    }

    /// This node's ID.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The key file text for this identity.
    pub fn to_key_file(&self) -> String {
        format!("{KEY_FILE_TAG} {}\n", hex::encode(self.signing.to_bytes()))
    }

    /// Parses key file text.
    pub fn from_key_file(text: &str) -> Result<Identity, KeyFileError> {
        let mut words = text.split_whitespace();
        if words.next() != Some(KEY_FILE_TAG) {
            return Err(KeyFileError::Format);
        }
        let mut seed = [0u8; 32];
        let hex = words.next().ok_or(KeyFileError::Format)?;
        hex::decode_to_slice(hex, &mut seed).map_err(|_| KeyFileError::Format)?;
        if words.next().is_some() {
            return Err(KeyFileError::Format);
        }
        Ok(Identity::from_seed(&seed))
    }
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Largest puzzle difficulty accepted (expected work doubles per bit; 24
/// bits is about 16 million key generations).
pub const DIFFICULTY_MAX: u32 = 32;

/// The S/Kademlia static puzzle: the number of leading zero bits of
/// SHA-256(node ID), where the node ID is itself a hash of the public key,
/// so this is H(H(public key)). Making an identity with `d` bits costs about
/// 2^d key generations; checking one costs one hash.
pub fn puzzle_bits(id: &NodeId) -> u32 {
    let digest: [u8; 32] = Sha256::digest(id.as_bytes()).into();
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

/// Whether `id` solves the puzzle at `difficulty` bits.
pub fn solves_puzzle(id: &NodeId, difficulty: u32) -> bool {
    puzzle_bits(id) >= difficulty
}

/// Searches for an identity solving the puzzle at `difficulty`, drawing
/// seeds from `next_seed`; gives up after `attempts_max` seeds.
pub fn search_puzzle(
    difficulty: u32,
    attempts_max: u64,
    mut next_seed: impl FnMut() -> [u8; 32],
) -> Option<Identity> {
    (0..attempts_max)
        .map(|_| Identity::from_seed(&next_seed()))
        .find(|identity| solves_puzzle(&identity.node_id(), difficulty))
}

/// The node ID of a public key: SHA-256 over a domain tag and the key.
pub fn node_id_of(public: &VerifyingKey) -> NodeId {
    let mut hasher = Sha256::new();
    hasher.update(NODE_ID_DOMAIN);
    hasher.update(public.as_bytes());
    NodeId::from_bytes(hasher.finalize().into())
}

/// Key conversion for the Noise handshake of `core::session`, which uses
/// the identity's own key as its static Diffie-Hellman key.
impl Identity {
    /// The X25519 secret of this identity: the scalar bytes of the ed25519
    /// secret (the first half of SHA-512 of the seed, RFC 8032), which X25519
    /// clamps exactly as ed25519 does. Its public key is therefore
    /// [`x25519_public_of`] of [`Identity::public_key`].
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.signing.to_scalar_bytes()
    }
}

/// The X25519 public key of an ed25519 public key (its Montgomery form).
/// Two ed25519 keys, `A` and `-A`, share one Montgomery form: a node that
/// knows the secret of one knows the secret of the other, so this gives it
/// no identity it could not make with one more key generation.
pub fn x25519_public_of(public: &VerifyingKey) -> [u8; 32] {
    public.to_montgomery().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_roundtrip() {
        let identity = Identity::from_seed(&[7; 32]);
        let text = identity.to_key_file();
        assert!(text.starts_with(KEY_FILE_TAG));
        let back = Identity::from_key_file(&text).expect("own output parses");
        assert_eq!(back.node_id(), identity.node_id());
    }

    #[test]
    fn id_is_hash_of_public_key_and_differs_per_key() {
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        assert_ne!(a.node_id(), b.node_id());
        assert_eq!(a.node_id(), node_id_of(&a.public_key()));
    }

    #[test]
    fn bad_key_files_are_errors() {
        for text in [
            "",
            "hello",
            "xorlay-ed25519-secret-v1",
            "xorlay-ed25519-secret-v1 abcd",
            &format!("{KEY_FILE_TAG} {} extra", "00".repeat(32)),
        ] {
            assert_eq!(
                Identity::from_key_file(text).err(),
                Some(KeyFileError::Format),
                "{text:?}"
            );
        }
    }

    #[test]
    fn puzzle_search_finds_and_verifies() {
        let mut counter = 0u64;
        let found = search_puzzle(8, 1 << 16, || {
            counter += 1;
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&counter.to_le_bytes());
            seed
        })
        .expect("8 bits take about 256 tries");
        assert!(puzzle_bits(&found.node_id()) >= 8);
        assert!(solves_puzzle(&found.node_id(), 8));
        assert!(solves_puzzle(&found.node_id(), 0));
        // A puzzle nobody solves in a handful of tries.
        assert!(search_puzzle(DIFFICULTY_MAX, 4, || [1; 32]).is_none());
    }

    #[test]
    fn puzzle_bits_counts_leading_zeros_of_the_second_hash() {
        let id = NodeId::from_bytes([0x42; 32]);
        let digest: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let expected =
            u128::from_be_bytes(digest[..16].try_into().expect("16 bytes")).leading_zeros();
        assert_eq!(puzzle_bits(&id), expected.min(128));
    }

    #[test]
    fn debug_hides_the_secret() {
        let identity = Identity::from_seed(&[9; 32]);
        let shown = format!("{identity:?}");
        assert!(!shown.contains(&hex::encode([9u8; 32])));
    }
}
