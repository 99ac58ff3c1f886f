//! The cryptography of end-to-end sessions beyond the Noise library: the
//! protocol parameters, mac1 and mac2, cookies and their sealing. The
//! seeded generator, the resolver and the identity check are
//! `core::session`'s.

use snow::params::{
    BaseChoice, CipherChoice, DHChoice, HandshakeChoice, HandshakeModifier, HandshakeModifierList,
    HandshakePattern, HashChoice, NoiseParams,
};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::Hash;
use snow::{Builder, HandshakeState};

use crate::core::session::noise::SeededResolver;
use crate::id::NodeId;
use crate::wire::e2e::{COOKIE_LEN, MAC_LEN, Pattern, SEALED_COOKIE_LEN};

/// The Noise protocol name of the XX handshake.
pub(super) const XX_NAME: &str = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s";
/// The Noise protocol name of the IK handshake.
pub(super) const IK_NAME: &str = "Noise_IKpsk0_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue; differs from the neighbor sessions', so a message of
/// one can never complete a handshake of the other.
pub(super) const PROLOGUE: &[u8] = b"xorlay e2e v1";
/// Key label of mac1 (hashed with the responder's node ID).
const MAC1_LABEL: &[u8] = b"xorlay e2e mac1 v1";
/// Key label of the cookie reply's sealing key (hashed with the responder's
/// node ID).
const COOKIE_LABEL: &[u8] = b"xorlay e2e cookie v1";

/// The parameters of `pattern`, built without parsing.
pub(super) fn params(pattern: Pattern) -> NoiseParams {
    let (name, handshake) = match pattern {
        Pattern::Xx => (XX_NAME, HandshakePattern::XX),
        Pattern::Ik => (IK_NAME, HandshakePattern::IK),
    };
    NoiseParams::new(
        name.to_string(),
        BaseChoice::Noise,
        HandshakeChoice {
            pattern: handshake,
            modifiers: HandshakeModifierList {
                list: vec![HandshakeModifier::Psk(0)],
            },
        },
        DHChoice::Curve25519,
        CipherChoice::ChaChaPoly,
        HashChoice::Blake2s,
    )
}

/// A handshake state of `pattern` with `static_secret` as the local static
/// key, `psk` as the network secret, `remote_static` as the responder's
/// static key (IK initiators only), and an ephemeral key drawn from a
/// generator seeded with `rng_seed`.
pub(super) fn handshake(
    pattern: Pattern,
    initiator: bool,
    static_secret: &[u8; 32],
    remote_static: Option<&[u8; 32]>,
    psk: &[u8; 32],
    rng_seed: [u8; 32],
) -> Result<HandshakeState, snow::Error> {
    let mut builder =
        Builder::with_resolver(params(pattern), Box::new(SeededResolver::new(rng_seed)))
            .local_private_key(static_secret)?
            .psk(0, psk)?
            .prologue(PROLOGUE)?;
    if let Some(remote) = remote_static {
        builder = builder.remote_public_key(remote)?;
    }
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
}

/// HMAC-BLAKE2s of `data` under `key` (at most 64 bytes).
pub(super) fn hmac(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    let mut hash = blake2s();
    // snow's hmac takes one slice; join the parts (all small).
    let joined: Vec<u8> = data.concat();
    let mut out = [0u8; 32];
    hash.hmac(key, &joined, &mut out);
    out
}

/// snow's BLAKE2s.
fn blake2s() -> Box<dyn Hash> {
    // Invariant: snow's default resolver has BLAKE2s with this crate's
    // features (snow defaults); `tests::mac_is_keyed` exercises it.
    DefaultResolver
        .resolve_hash(&HashChoice::Blake2s)
        .expect("snow provides BLAKE2s")
}

/// The mac1 key of messages to `responder`: anyone who knows its node ID
/// can compute it, so a valid mac1 shows only that the message is meant
/// for that node.
pub(super) fn mac1_key(responder: &NodeId) -> [u8; 32] {
    hmac(MAC1_LABEL, &[responder.as_bytes()])
}

/// A 16-byte MAC of `data` under `key`.
pub(super) fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let full = hmac(key, &[data]);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// The cookie of `source` under a responder's secret.
pub(super) fn cookie(secret: &[u8; 32], source: &NodeId) -> [u8; COOKIE_LEN] {
    let full = hmac(secret, &[source.as_bytes()]);
    let mut out = [0u8; COOKIE_LEN];
    out.copy_from_slice(&full[..COOKIE_LEN]);
    out
}

/// Equality in time independent of where the inputs differ.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seals `cookie` from `responder` with `nonce`, bound to the mac1 of the
/// initiation it answers (`aad`): only who saw that initiation can use the
/// reply.
pub(super) fn seal_cookie(
    responder: &NodeId,
    nonce: u64,
    aad: &[u8],
    cookie: &[u8; COOKIE_LEN],
) -> [u8; SEALED_COOKIE_LEN] {
    let mut out = [0u8; SEALED_COOKIE_LEN];
    let cipher = cookie_cipher(responder);
    cipher.encrypt(nonce, aad, cookie, &mut out);
    out
}

/// Opens a sealed cookie from `responder`; `None` if it does not
/// authenticate.
pub(super) fn open_cookie(
    responder: &NodeId,
    nonce: u64,
    aad: &[u8],
    sealed: &[u8],
) -> Option<[u8; COOKIE_LEN]> {
    let mut out = [0u8; SEALED_COOKIE_LEN];
    let cipher = cookie_cipher(responder);
    let len = cipher.decrypt(nonce, aad, sealed, &mut out).ok()?;
    (len == COOKIE_LEN).then(|| {
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&out[..COOKIE_LEN]);
        cookie
    })
}

fn cookie_cipher(responder: &NodeId) -> Box<dyn snow::types::Cipher> {
    // Invariant: as in `blake2s`, snow's defaults have ChaChaPoly.
    let mut cipher = DefaultResolver
        .resolve_cipher(&CipherChoice::ChaChaPoly)
        .expect("snow provides ChaChaPoly");
    cipher.set(&hmac(COOKIE_LABEL, &[responder.as_bytes()]));
    cipher
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_protocol_names() {
        let xx: NoiseParams = XX_NAME.parse().expect("a valid Noise name");
        let ik: NoiseParams = IK_NAME.parse().expect("a valid Noise name");
        assert_eq!(params(Pattern::Xx), xx);
        assert_eq!(params(Pattern::Ik), ik);
    }

    #[test]
    fn mac_is_keyed() {
        let a = NodeId::from_bytes([1; 32]);
        let b = NodeId::from_bytes([2; 32]);
        assert_ne!(mac1_key(&a), mac1_key(&b));
        assert_eq!(mac(&mac1_key(&a), b"m"), mac(&mac1_key(&a), b"m"));
        assert_ne!(mac(&mac1_key(&a), b"m"), mac(&mac1_key(&a), b"n"));
        assert_ne!(cookie(&[1; 32], &a), cookie(&[2; 32], &a));
        assert_ne!(cookie(&[1; 32], &a), cookie(&[1; 32], &b));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn cookie_seal_roundtrip_and_binding() {
        let responder = NodeId::from_bytes([7; 32]);
        let other = NodeId::from_bytes([8; 32]);
        let sealed = seal_cookie(&responder, 5, b"mac1", &[9; COOKIE_LEN]);
        assert_eq!(
            open_cookie(&responder, 5, b"mac1", &sealed),
            Some([9; COOKIE_LEN])
        );
        assert_eq!(open_cookie(&responder, 6, b"mac1", &sealed), None);
        assert_eq!(open_cookie(&responder, 5, b"mac2", &sealed), None);
        assert_eq!(open_cookie(&other, 5, b"mac1", &sealed), None);
        assert_eq!(open_cookie(&responder, 5, b"mac1", &sealed[..20]), None);
    }
}
