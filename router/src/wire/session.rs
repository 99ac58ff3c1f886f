//! Session-layer messages: the payload of a control overlay packet between
//! two neighbors (see `core::session` for the protocol that uses them).
//!
//! Every message starts with the same 12-byte header:
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |     kind      |                reserved (0)                   |
//! +---------------+---------------+---------------+---------------+
//! |                  sender index (u32, big endian)               |
//! +---------------------------------------------------------------+
//! |                 receiver index (u32, big endian)              |
//! +---------------------------------------------------------------+
//! |                            body ...                           |
//! ```
//!
//! A session index is a random nonzero `u32` each side picks for one
//! handshake and the session it becomes (as in WireGuard); the sender writes
//! its own index and the index the receiver picked, so a message is matched
//! to its state by the receiver index alone.
//!
//! | kind | name        | receiver index | body                                          | message length |
//! | ---- | ----------- | -------------- | --------------------------------------------- | -------------- |
//! | 1    | HANDSHAKE_1 | 0              | Noise XX message 1: `e` (32), zero padding (96) | exactly 140 |
//! | 2    | HANDSHAKE_2 | initiator's    | Noise XX message 2: `e` (32), encrypted `s` (48), encrypted ed25519 public key (48) | exactly 140 |
//! | 3    | HANDSHAKE_3 | responder's    | Noise XX message 3: encrypted `s` (48), encrypted ed25519 public key (48) | exactly 108 |
//! | 4    | TRANSPORT   | peer's         | counter (u64, big endian, 8), AEAD ciphertext (plaintext + 16-byte tag) | 36 to 1236 |
//!
//! Offsets in the message (add the 72-byte overlay header for offsets in the
//! UDP payload): kind 0, reserved 1..4, sender index 4..8, receiver index
//! 8..12, body 12.., TRANSPORT counter 12..20, TRANSPORT ciphertext 20...
//!
//! Rules checked by [`Repr::parse`], in this order: at least 12 bytes
//! (`truncated`); a known kind (`bad_kind`); reserved bytes zero
//! (`bad_reserved`); sender index nonzero, receiver index zero in
//! HANDSHAKE_1 and nonzero otherwise (`bad_index`); the length of the kind
//! (`bad_length`). HANDSHAKE_1 is padded so that it is never shorter than
//! HANDSHAKE_2: a responder never answers a stranger with more bytes than
//! it received. A TRANSPORT plaintext is at most [`MESSAGE_LEN_MAX`] bytes;
//! an empty plaintext is a keepalive.

use core::fmt;

mod field {
    use crate::wire::Field;

    pub const KIND: usize = 0;
    pub const RESERVED: Field = 1..4;
    pub const SENDER_INDEX: Field = 4..8;
    pub const RECEIVER_INDEX: Field = 8..12;
    /// TRANSPORT only.
    pub const COUNTER: Field = 12..20;
}

/// Length of the common header.
pub const HEADER_LEN: usize = field::RECEIVER_INDEX.end;
/// Length of a Curve25519 public key in a Noise message.
pub const DH_LEN: usize = 32;
/// Length of an AEAD tag (ChaCha20-Poly1305).
pub const TAG_LEN: usize = 16;
/// The handshake payload: the sender's ed25519 public key.
pub const IDENTITY_PAYLOAD_LEN: usize = 32;
/// Zero padding carried as HANDSHAKE_1's (plaintext) Noise payload.
pub const HANDSHAKE_1_PADDING_LEN: usize = 96;
/// Noise message 1 (`-> e`) with its padding payload.
pub const HANDSHAKE_1_NOISE_LEN: usize = DH_LEN + HANDSHAKE_1_PADDING_LEN;
/// Noise message 2 (`<- e, ee, s, es`) with the identity payload.
pub const HANDSHAKE_2_NOISE_LEN: usize =
    DH_LEN + (DH_LEN + TAG_LEN) + (IDENTITY_PAYLOAD_LEN + TAG_LEN);
/// Noise message 3 (`-> s, se`) with the identity payload.
pub const HANDSHAKE_3_NOISE_LEN: usize = (DH_LEN + TAG_LEN) + (IDENTITY_PAYLOAD_LEN + TAG_LEN);
/// Length of a HANDSHAKE_1 message.
pub const HANDSHAKE_1_LEN: usize = HEADER_LEN + HANDSHAKE_1_NOISE_LEN;
/// Length of a HANDSHAKE_2 message.
pub const HANDSHAKE_2_LEN: usize = HEADER_LEN + HANDSHAKE_2_NOISE_LEN;
/// Length of a HANDSHAKE_3 message.
pub const HANDSHAKE_3_LEN: usize = HEADER_LEN + HANDSHAKE_3_NOISE_LEN;
/// Offset of a TRANSPORT message's ciphertext.
pub const TRANSPORT_CIPHERTEXT_OFFSET: usize = field::COUNTER.end;
/// Bytes a TRANSPORT message adds to its plaintext.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_CIPHERTEXT_OFFSET + TAG_LEN;
/// Largest plaintext one TRANSPORT message carries.
pub const MESSAGE_LEN_MAX: usize = 1200;
/// Shortest TRANSPORT message (a keepalive).
pub const TRANSPORT_LEN_MIN: usize = TRANSPORT_OVERHEAD;
/// Longest TRANSPORT message.
pub const TRANSPORT_LEN_MAX: usize = TRANSPORT_OVERHEAD + MESSAGE_LEN_MAX;
/// Hop limit of the overlay packet carrying a session message: sessions are
/// between direct neighbors, so no router may relay one.
pub const HOP_LIMIT: u8 = 1;

// Anti-amplification: the answer to a stranger's HANDSHAKE_1 is never longer.
const _: () = assert!(HANDSHAKE_2_LEN <= HANDSHAKE_1_LEN);
const _: () = assert!(HANDSHAKE_1_LEN == 140);
const _: () = assert!(HANDSHAKE_2_LEN == 140);
const _: () = assert!(HANDSHAKE_3_LEN == 108);
const _: () = assert!(TRANSPORT_OVERHEAD == 36);
// The largest session message fits an overlay payload.
const _: () = assert!(TRANSPORT_LEN_MAX <= super::overlay::PAYLOAD_LEN_MAX);

/// Why bytes are not a valid session message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the header.
    Truncated,
    /// An unknown kind.
    BadKind,
    /// A reserved byte is not zero.
    BadReserved,
    /// A zero sender index, or a receiver index that is zero where one is
    /// required (or nonzero in HANDSHAKE_1).
    BadIndex,
    /// Not the length of the kind (a short HANDSHAKE_1 lands here).
    BadLength,
}

impl Error {
    /// A short snake_case name, used in counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadKind => "bad_kind",
            Error::BadReserved => "bad_reserved",
            Error::BadIndex => "bad_index",
            Error::BadLength => "bad_length",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Error {}

/// Session message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Noise XX message 1, initiator to responder (the kind XDP rate-limits:
    /// `XORLAY_SESSION_KIND_HANDSHAKE_1` of ebpf/consts.h).
    Handshake1 = HANDSHAKE_1,
    /// Noise XX message 2, responder to initiator.
    Handshake2 = 2,
    /// Noise XX message 3, initiator to responder.
    Handshake3 = 3,
    /// An encrypted message within an established session.
    Transport = 4,
}

/// The wire value of [`Kind::Handshake1`], from the C side.
const HANDSHAKE_1: u8 = super::consts::SESSION_KIND_HANDSHAKE_1;

impl Kind {
    /// The kind with this wire value, if any.
    pub const fn from_u8(value: u8) -> Option<Kind> {
        match value {
            HANDSHAKE_1 => Some(Kind::Handshake1),
            2 => Some(Kind::Handshake2),
            3 => Some(Kind::Handshake3),
            4 => Some(Kind::Transport),
            _ => None,
        }
    }
}

/// A zero-copy view of a session message.
///
/// After [`Packet::check_len`] no accessor panics: the TRANSPORT-only
/// accessors return `None` when the buffer is too short for their field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything. Accessors may panic until
    /// [`Packet::check_len`] has succeeded.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the common header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The kind field as on the wire.
    pub fn kind_raw(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// The reserved bytes (zero in a valid message).
    pub fn reserved(&self) -> [u8; 3] {
        let b = &self.buffer.as_ref()[field::RESERVED];
        [b[0], b[1], b[2]]
    }

    /// The sender's session index.
    pub fn sender_index(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SENDER_INDEX];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The receiver's session index (0 in HANDSHAKE_1).
    pub fn receiver_index(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::RECEIVER_INDEX];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Everything after the header: the Noise message of a handshake, the
    /// counter and ciphertext of a TRANSPORT.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// A TRANSPORT's counter, if the buffer is long enough to hold one.
    pub fn counter(&self) -> Option<u64> {
        let b = self.buffer.as_ref().get(field::COUNTER)?;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(b);
        Some(u64::from_be_bytes(bytes))
    }

    /// A TRANSPORT's ciphertext, if the buffer is long enough to hold a
    /// counter.
    pub fn ciphertext(&self) -> Option<&[u8]> {
        self.buffer.as_ref().get(TRANSPORT_CIPHERTEXT_OFFSET..)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the kind field.
    pub fn set_kind(&mut self, value: Kind) {
        self.buffer.as_mut()[field::KIND] = value as u8;
    }

    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }

    /// Sets the sender's session index.
    pub fn set_sender_index(&mut self, value: u32) {
        self.buffer.as_mut()[field::SENDER_INDEX].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the receiver's session index.
    pub fn set_receiver_index(&mut self, value: u32) {
        self.buffer.as_mut()[field::RECEIVER_INDEX].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets a TRANSPORT's counter. The buffer must hold the field.
    pub fn set_counter(&mut self, value: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&value.to_be_bytes());
    }

    /// The body, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// A TRANSPORT's ciphertext, writable. The buffer must hold the counter.
    pub fn ciphertext_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[TRANSPORT_CIPHERTEXT_OFFSET..]
    }
}

/// A validated session message, borrowing its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Noise message 1 (`-> e`, padded).
    Handshake1 {
        /// The initiator's index.
        sender_index: u32,
        /// [`HANDSHAKE_1_NOISE_LEN`] bytes.
        noise: &'a [u8],
    },
    /// Noise message 2 (`<- e, ee, s, es`).
    Handshake2 {
        /// The responder's index.
        sender_index: u32,
        /// The initiator's index.
        receiver_index: u32,
        /// [`HANDSHAKE_2_NOISE_LEN`] bytes.
        noise: &'a [u8],
    },
    /// Noise message 3 (`-> s, se`).
    Handshake3 {
        /// The initiator's index.
        sender_index: u32,
        /// The responder's index.
        receiver_index: u32,
        /// [`HANDSHAKE_3_NOISE_LEN`] bytes.
        noise: &'a [u8],
    },
    /// An encrypted message.
    Transport {
        /// The sender's index.
        sender_index: u32,
        /// The receiver's index.
        receiver_index: u32,
        /// The AEAD nonce; never repeats within a session.
        counter: u64,
        /// Plaintext (at most [`MESSAGE_LEN_MAX`]) plus [`TAG_LEN`].
        ciphertext: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Parses and validates a session message.
    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<Repr<'a>, Error> {
        packet.check_len()?;
        let bytes: &'a [u8] = packet.buffer;
        let kind = Kind::from_u8(packet.kind_raw()).ok_or(Error::BadKind)?;
        if packet.reserved() != [0; 3] {
            return Err(Error::BadReserved);
        }
        let sender_index = packet.sender_index();
        let receiver_index = packet.receiver_index();
        let receiver_ok = match kind {
            Kind::Handshake1 => receiver_index == 0,
            Kind::Handshake2 | Kind::Handshake3 | Kind::Transport => receiver_index != 0,
        };
        if sender_index == 0 || !receiver_ok {
            return Err(Error::BadIndex);
        }
        let exact = |len: usize| {
            if bytes.len() == len {
                Ok(&bytes[HEADER_LEN..])
            } else {
                Err(Error::BadLength)
            }
        };
        match kind {
            Kind::Handshake1 => Ok(Repr::Handshake1 {
                sender_index,
                noise: exact(HANDSHAKE_1_LEN)?,
            }),
            Kind::Handshake2 => Ok(Repr::Handshake2 {
                sender_index,
                receiver_index,
                noise: exact(HANDSHAKE_2_LEN)?,
            }),
            Kind::Handshake3 => Ok(Repr::Handshake3 {
                sender_index,
                receiver_index,
                noise: exact(HANDSHAKE_3_LEN)?,
            }),
            Kind::Transport => {
                if !(TRANSPORT_LEN_MIN..=TRANSPORT_LEN_MAX).contains(&bytes.len()) {
                    return Err(Error::BadLength);
                }
                Ok(Repr::Transport {
                    sender_index,
                    receiver_index,
                    counter: packet.counter().ok_or(Error::BadLength)?,
                    ciphertext: &bytes[TRANSPORT_CIPHERTEXT_OFFSET..],
                })
            }
        }
    }

    /// Parses a session message from a byte slice.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Repr<'a>, Error> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    /// The message's kind.
    pub const fn kind(&self) -> Kind {
        match self {
            Repr::Handshake1 { .. } => Kind::Handshake1,
            Repr::Handshake2 { .. } => Kind::Handshake2,
            Repr::Handshake3 { .. } => Kind::Handshake3,
            Repr::Transport { .. } => Kind::Transport,
        }
    }

    /// The sender's index.
    pub const fn sender_index(&self) -> u32 {
        match self {
            Repr::Handshake1 { sender_index, .. }
            | Repr::Handshake2 { sender_index, .. }
            | Repr::Handshake3 { sender_index, .. }
            | Repr::Transport { sender_index, .. } => *sender_index,
        }
    }

    /// The receiver's index (0 in HANDSHAKE_1).
    pub const fn receiver_index(&self) -> u32 {
        match self {
            Repr::Handshake1 { .. } => 0,
            Repr::Handshake2 { receiver_index, .. }
            | Repr::Handshake3 { receiver_index, .. }
            | Repr::Transport { receiver_index, .. } => *receiver_index,
        }
    }

    /// Length of the message `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Repr::Handshake1 { noise, .. }
            | Repr::Handshake2 { noise, .. }
            | Repr::Handshake3 { noise, .. } => HEADER_LEN + noise.len(),
            Repr::Transport { ciphertext, .. } => TRANSPORT_CIPHERTEXT_OFFSET + ciphertext.len(),
        }
    }

    /// Writes the message into the first [`Repr::buffer_len`] bytes of
    /// `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_kind(self.kind());
        packet.clear_reserved();
        packet.set_sender_index(self.sender_index());
        packet.set_receiver_index(self.receiver_index());
        match self {
            Repr::Handshake1 { noise, .. }
            | Repr::Handshake2 { noise, .. }
            | Repr::Handshake3 { noise, .. } => {
                packet.body_mut()[..noise.len()].copy_from_slice(noise);
            }
            Repr::Transport {
                counter,
                ciphertext,
                ..
            } => {
                packet.set_counter(*counter);
                packet.ciphertext_mut()[..ciphertext.len()].copy_from_slice(ciphertext);
            }
        }
    }

    /// The message as a new buffer of exactly [`Repr::buffer_len`] bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut bytes));
        bytes
    }
}

/// Golden messages for the tests (and for other implementations). The
/// Noise bytes are placeholders: these pin the framing, not the crypto.
pub mod golden {
    use super::{HANDSHAKE_1_LEN, HANDSHAKE_3_LEN, TRANSPORT_LEN_MIN};

    /// HANDSHAKE_1, sender index 0x01020304, Noise bytes 0x11.
    pub const HANDSHAKE_1: [u8; HANDSHAKE_1_LEN] = {
        let mut b = [0x11u8; HANDSHAKE_1_LEN];
        b[0] = 0x01; // kind
        b[1] = 0;
        b[2] = 0;
        b[3] = 0; // reserved
        b[4] = 0x01;
        b[5] = 0x02;
        b[6] = 0x03;
        b[7] = 0x04; // sender index
        b[8] = 0;
        b[9] = 0;
        b[10] = 0;
        b[11] = 0; // receiver index
        b
    };

    /// HANDSHAKE_3, sender index 0x01020304, receiver index 0xa0b0c0d0,
    /// Noise bytes 0x33.
    pub const HANDSHAKE_3: [u8; HANDSHAKE_3_LEN] = {
        let mut b = [0x33u8; HANDSHAKE_3_LEN];
        b[0] = 0x03;
        b[1] = 0;
        b[2] = 0;
        b[3] = 0;
        b[4] = 0x01;
        b[5] = 0x02;
        b[6] = 0x03;
        b[7] = 0x04;
        b[8] = 0xa0;
        b[9] = 0xb0;
        b[10] = 0xc0;
        b[11] = 0xd0;
        b
    };

    /// TRANSPORT (a keepalive), sender index 5, receiver index 6, counter
    /// 0x0102030405060708, tag bytes 0xee.
    pub const TRANSPORT: [u8; TRANSPORT_LEN_MIN] = {
        let mut b = [0xeeu8; TRANSPORT_LEN_MIN];
        b[0] = 0x04;
        b[1] = 0;
        b[2] = 0;
        b[3] = 0;
        b[4] = 0;
        b[5] = 0;
        b[6] = 0;
        b[7] = 5;
        b[8] = 0;
        b[9] = 0;
        b[10] = 0;
        b[11] = 6;
        let mut i = 0;
        while i < 8 {
            b[12 + i] = i as u8 + 1;
            i += 1;
        }
        b
    };
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn goldens() -> Vec<(&'static [u8], Repr<'static>)> {
        vec![
            (
                &golden::HANDSHAKE_1[..],
                Repr::Handshake1 {
                    sender_index: 0x0102_0304,
                    noise: &[0x11; HANDSHAKE_1_NOISE_LEN],
                },
            ),
            (
                &golden::HANDSHAKE_3[..],
                Repr::Handshake3 {
                    sender_index: 0x0102_0304,
                    receiver_index: 0xa0b0_c0d0,
                    noise: &[0x33; HANDSHAKE_3_NOISE_LEN],
                },
            ),
            (
                &golden::TRANSPORT[..],
                Repr::Transport {
                    sender_index: 5,
                    receiver_index: 6,
                    counter: 0x0102_0304_0506_0708,
                    ciphertext: &[0xee; TAG_LEN],
                },
            ),
        ]
    }

    #[test]
    fn deconstruct() {
        let h1 = Packet::new_checked(&golden::HANDSHAKE_1[..]).expect("long enough");
        assert_eq!(h1.kind_raw(), Kind::Handshake1 as u8);
        assert_eq!(h1.reserved(), [0; 3]);
        assert_eq!(h1.sender_index(), 0x0102_0304);
        assert_eq!(h1.receiver_index(), 0);
        assert_eq!(h1.body(), &[0x11; HANDSHAKE_1_NOISE_LEN][..]);

        let t = Packet::new_checked(&golden::TRANSPORT[..]).expect("long enough");
        assert_eq!(t.kind_raw(), Kind::Transport as u8);
        assert_eq!(t.sender_index(), 5);
        assert_eq!(t.receiver_index(), 6);
        assert_eq!(t.counter(), Some(0x0102_0304_0506_0708));
        assert_eq!(t.ciphertext(), Some(&[0xee; TAG_LEN][..]));

        let short = Packet::new_checked(&golden::TRANSPORT[..HEADER_LEN + 7]).expect("header");
        assert_eq!(short.counter(), None);
        assert_eq!(short.ciphertext(), None);
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; TRANSPORT_LEN_MIN];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_kind(Kind::Transport);
        packet.clear_reserved();
        packet.set_sender_index(5);
        packet.set_receiver_index(6);
        packet.set_counter(0x0102_0304_0506_0708);
        packet.ciphertext_mut().fill(0xee);
        assert_eq!(&bytes[..], &golden::TRANSPORT[..]);

        let mut bytes = vec![0xa5u8; HANDSHAKE_1_LEN];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_kind(Kind::Handshake1);
        packet.clear_reserved();
        packet.set_sender_index(0x0102_0304);
        packet.set_receiver_index(0);
        packet.body_mut().fill(0x11);
        assert_eq!(&bytes[..], &golden::HANDSHAKE_1[..]);
    }

    #[test]
    fn parse() {
        for (bytes, repr) in goldens() {
            assert_eq!(Repr::parse_bytes(bytes), Ok(repr));
        }
    }

    #[test]
    fn emit() {
        for (bytes, repr) in goldens() {
            assert_eq!(repr.buffer_len(), bytes.len(), "{repr:?}");
            let mut buffer = vec![0xa5u8; bytes.len()];
            repr.emit(&mut Packet::new_unchecked(&mut buffer));
            assert_eq!(&buffer[..], bytes, "{repr:?}");
            assert_eq!(repr.to_bytes(), bytes, "{repr:?}");
        }
    }

    #[test]
    fn impossible_length() {
        assert_eq!(Packet::new_checked(&[][..]), Err(Error::Truncated));
        assert_eq!(
            Packet::new_checked(&golden::HANDSHAKE_1[..HEADER_LEN - 1]),
            Err(Error::Truncated)
        );
        assert_eq!(
            Repr::parse_bytes(&golden::TRANSPORT[..HEADER_LEN - 1]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn malformed() {
        let with = |base: &[u8], i: usize, v: u8| {
            let mut b = base.to_vec();
            b[i] = v;
            b
        };
        let mut long_h1 = golden::HANDSHAKE_1.to_vec();
        long_h1.push(0);
        let mut h2 = golden::HANDSHAKE_3.to_vec();
        h2[0] = Kind::Handshake2 as u8;
        let cases: Vec<(&str, Vec<u8>, Error)> = vec![
            (
                "kind zero",
                with(&golden::HANDSHAKE_1, 0, 0),
                Error::BadKind,
            ),
            ("kind 5", with(&golden::HANDSHAKE_1, 0, 5), Error::BadKind),
            (
                "reserved",
                with(&golden::HANDSHAKE_1, 2, 1),
                Error::BadReserved,
            ),
            (
                "h1 sender zero",
                golden::HANDSHAKE_1
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if (4..8).contains(&i) { 0 } else { *b })
                    .collect(),
                Error::BadIndex,
            ),
            (
                "h1 with receiver",
                with(&golden::HANDSHAKE_1, 11, 1),
                Error::BadIndex,
            ),
            (
                "h3 without receiver",
                golden::HANDSHAKE_3
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if (8..12).contains(&i) { 0 } else { *b })
                    .collect(),
                Error::BadIndex,
            ),
            (
                "short h1",
                golden::HANDSHAKE_1[..HANDSHAKE_1_LEN - 1].to_vec(),
                Error::BadLength,
            ),
            ("long h1", long_h1, Error::BadLength),
            ("h3 bytes as h2", h2, Error::BadLength),
            (
                "transport without tag",
                golden::TRANSPORT[..TRANSPORT_LEN_MIN - 1].to_vec(),
                Error::BadLength,
            ),
            (
                "transport without counter",
                golden::TRANSPORT[..HEADER_LEN + 4].to_vec(),
                Error::BadLength,
            ),
            (
                "transport too long",
                {
                    let mut b = golden::TRANSPORT.to_vec();
                    b.resize(TRANSPORT_LEN_MAX + 1, 0);
                    b
                },
                Error::BadLength,
            ),
        ];
        for (name, bytes, error) in cases {
            assert_eq!(Repr::parse_bytes(&bytes), Err(error), "{name}");
        }
    }

    #[test]
    fn largest_transport_parses() {
        let ciphertext = vec![7u8; MESSAGE_LEN_MAX + TAG_LEN];
        let repr = Repr::Transport {
            sender_index: 1,
            receiver_index: 2,
            counter: u64::MAX,
            ciphertext: &ciphertext,
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes.len(), TRANSPORT_LEN_MAX);
        assert_eq!(Repr::parse_bytes(&bytes), Ok(repr));
    }

    #[test]
    fn kademlia_messages_fit_a_transport() {
        const { assert!(super::super::kad::MESSAGE_LEN_MAX <= MESSAGE_LEN_MAX) };
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(
            kind in 1u8..=4,
            sender_index in 1u32..,
            receiver_index in 1u32..,
            counter: u64,
            fill: u8,
            body in proptest::collection::vec(any::<u8>(), TAG_LEN..=MESSAGE_LEN_MAX + TAG_LEN),
        ) {
            let h1 = [fill; HANDSHAKE_1_NOISE_LEN];
            let h2 = [fill; HANDSHAKE_2_NOISE_LEN];
            let h3 = [fill; HANDSHAKE_3_NOISE_LEN];
            let repr = match Kind::from_u8(kind) {
                Some(Kind::Handshake1) => Repr::Handshake1 { sender_index, noise: &h1 },
                Some(Kind::Handshake2) => Repr::Handshake2 { sender_index, receiver_index, noise: &h2 },
                Some(Kind::Handshake3) => Repr::Handshake3 { sender_index, receiver_index, noise: &h3 },
                _ => Repr::Transport { sender_index, receiver_index, counter, ciphertext: &body },
            };
            let bytes = repr.to_bytes();
            prop_assert_eq!(Repr::parse_bytes(&bytes), Ok(repr));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = Repr::parse_bytes(&bytes);
            let packet = Packet::new_unchecked(&bytes[..]);
            if packet.check_len().is_ok() {
                let _ = (packet.kind_raw(), packet.reserved(), packet.sender_index());
                let _ = (packet.receiver_index(), packet.body(), packet.counter(), packet.ciphertext());
            }
        }
    }
}
