//! Noise plumbing: the protocol parameters, a seeded random generator for
//! snow, and the check that binds a Noise static key to an ed25519 identity.

use ed25519_dalek::VerifyingKey;
use snow::params::{
    BaseChoice, CipherChoice, DHChoice, HandshakeChoice, HandshakeModifierList, HandshakePattern,
    HashChoice, NoiseParams,
};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use crate::core::NodeId;
use crate::core::identity::{node_id_of, x25519_public_of};
use crate::wire::session::{IDENTITY_PAYLOAD_LEN, TAG_LEN};

/// The Noise protocol name; also hashed into every handshake.
pub(super) const PROTOCOL_NAME: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue: both sides must agree on it, so a handshake of
/// another protocol or version fails.
pub(super) const PROLOGUE: &[u8] = b"xorlay session v1";

/// The parameters of [`PROTOCOL_NAME`], built without parsing.
pub(super) fn params() -> NoiseParams {
    NoiseParams::new(
        PROTOCOL_NAME.to_string(),
        BaseChoice::Noise,
        HandshakeChoice {
            pattern: HandshakePattern::XX,
            modifiers: HandshakeModifierList { list: Vec::new() },
        },
        DHChoice::Curve25519,
        CipherChoice::ChaChaPoly,
        HashChoice::Blake2s,
    )
}

/// A handshake state with `static_secret` as the local static key, whose
/// ephemeral key comes from a generator seeded with `rng_seed`.
pub(super) fn handshake(
    initiator: bool,
    static_secret: &[u8; 32],
    rng_seed: [u8; 32],
) -> Result<HandshakeState, snow::Error> {
    let builder = Builder::with_resolver(params(), Box::new(SeededResolver::new(rng_seed)))
        .local_private_key(static_secret)?
        .prologue(PROLOGUE)?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
}

/// The node ID proven by a handshake: `payload` must be an ed25519 public
/// key that is not of small order and whose Montgomery form is the Noise
/// static key the peer just proved it holds (`remote_static`).
pub(in crate::core) fn authenticate(
    payload: &[u8],
    remote_static: Option<&[u8]>,
) -> Option<NodeId> {
    let bytes: &[u8; IDENTITY_PAYLOAD_LEN] = payload.try_into().ok()?;
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    if key.is_weak() {
        return None;
    }
    if remote_static? != x25519_public_of(&key) {
        return None;
    }
    Some(node_id_of(&key))
}

/// A deterministic generator: the ChaCha20 keystream under a 32-byte seed,
/// one 64-byte block per nonce. It uses snow's own ChaCha20-Poly1305 (the
/// `chacha20poly1305` crate): encrypting 64 zero bytes under nonce `n`
/// yields keystream block 1 of nonce `n`, and nonces never repeat, so the
/// output is the ChaCha20 stream cipher's keystream, a standard CSPRNG
/// construction. The Poly1305 tag is discarded.
pub(in crate::core) struct KeystreamRng {
    cipher: Box<dyn Cipher>,
    nonce: u64,
    block: [u8; 64],
    used: usize,
}

impl KeystreamRng {
    /// A generator keyed by `seed`; `None` only if snow was built without
    /// ChaChaPoly (this crate uses snow's default features, which have it).
    pub(in crate::core) fn new(seed: &[u8; 32]) -> Option<KeystreamRng> {
        let mut cipher = DefaultResolver.resolve_cipher(&CipherChoice::ChaChaPoly)?;
        cipher.set(seed);
        Some(KeystreamRng {
            cipher,
            nonce: 0,
            block: [0; 64],
            used: 64,
        })
    }

    /// Fills `dest` with keystream bytes.
    pub(in crate::core) fn fill(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                self.refill();
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    /// The next 32 bytes.
    pub(in crate::core) fn next_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.fill(&mut seed);
        seed
    }

    /// The next `u32`.
    pub(in crate::core) fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn refill(&mut self) {
        let zeros = [0u8; 64];
        let mut out = [0u8; 64 + TAG_LEN];
        self.cipher.encrypt(self.nonce, &[], &zeros, &mut out);
        self.block.copy_from_slice(&out[..64]);
        // 2^64 blocks (2^70 bytes) are never drawn; wrapping would only
        // repeat the stream.
        self.nonce = self.nonce.wrapping_add(1);
        self.used = 0;
    }
}

impl Random for KeystreamRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.fill(dest);
        Ok(())
    }
}

/// snow's default primitives, with [`KeystreamRng`] instead of the OS
/// generator: the only randomness a handshake uses (its ephemeral key)
/// comes from the seed. Also used by `core::e2e`.
pub(in crate::core) struct SeededResolver {
    seed: [u8; 32],
}

impl SeededResolver {
    /// A resolver whose generator is seeded with `seed`.
    pub(in crate::core) fn new(seed: [u8; 32]) -> SeededResolver {
        SeededResolver { seed }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        KeystreamRng::new(&self.seed).map(|rng| Box::new(rng) as Box<dyn Random>)
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::Identity;

    #[test]
    fn params_match_the_protocol_name() {
        let parsed: NoiseParams = PROTOCOL_NAME.parse().expect("a valid Noise name");
        assert_eq!(params(), parsed);
    }

    #[test]
    fn keystream_is_chacha20() {
        // RFC 8439 section 2.4.2: key 00..1f, nonce 00:00:00:00 00:00:00:4a
        // 00:00:00:00, counter 1. Our nonce layout is 4 zero bytes then the
        // u64 little endian, so nonce 0x4a00_0000 gives that nonce.
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let mut rng = KeystreamRng::new(&key).expect("snow has ChaChaPoly");
        rng.nonce = 0x4a00_0000;
        let mut block = [0u8; 16];
        rng.fill(&mut block);
        // The RFC's keystream for block 1 starts 22 4f 51 f3 40 1b d9 e1.
        assert_eq!(block[..8], [0x22, 0x4f, 0x51, 0xf3, 0x40, 0x1b, 0xd9, 0xe1]);
    }

    #[test]
    fn keystream_is_deterministic_and_seed_dependent() {
        let draw = |seed: [u8; 32]| {
            let mut rng = KeystreamRng::new(&seed).expect("snow has ChaChaPoly");
            let mut out = [0u8; 200];
            rng.fill(&mut out[..3]);
            rng.fill(&mut out[3..]);
            out
        };
        assert_eq!(draw([1; 32]), draw([1; 32]));
        assert_ne!(draw([1; 32]), draw([2; 32]));
        let out = draw([1; 32]);
        assert_ne!(out[..64], out[64..128], "blocks differ");
    }

    #[test]
    fn identity_key_is_the_noise_static_key() {
        for seed in 0u8..8 {
            let identity = Identity::from_seed(&[seed; 32]);
            let hs = handshake(true, &identity.x25519_secret(), [0; 32]).expect("builds");
            drop(hs);
            // X25519 public of the secret, computed by snow's Dh.
            let mut dh = DefaultResolver
                .resolve_dh(&DHChoice::Curve25519)
                .expect("snow has 25519");
            dh.set(&identity.x25519_secret());
            assert_eq!(dh.pubkey(), x25519_public_of(&identity.public_key()));
        }
    }

    #[test]
    fn authenticate_checks_key_binding() {
        let alice = Identity::from_seed(&[1; 32]);
        let bob = Identity::from_seed(&[2; 32]);
        let alice_static = x25519_public_of(&alice.public_key());
        assert_eq!(
            authenticate(alice.public_key().as_bytes(), Some(&alice_static)),
            Some(alice.node_id())
        );
        assert_eq!(
            authenticate(bob.public_key().as_bytes(), Some(&alice_static)),
            None
        );
        assert_eq!(authenticate(alice.public_key().as_bytes(), None), None);
        assert_eq!(
            authenticate(&alice.public_key().as_bytes()[..31], Some(&alice_static)),
            None
        );
        // The identity point has small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity_point).expect("a valid point");
        assert!(weak.is_weak());
        assert_eq!(
            authenticate(&identity_point, Some(&x25519_public_of(&weak))),
            None
        );
    }
}
