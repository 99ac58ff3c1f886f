//! End-to-end session messages: the payload of a data overlay packet
//! between two endpoints, relayed unchanged by every router on the way
//! (see `core::e2e` for the protocol that uses them).
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
//! An index is a random nonzero `u32` each endpoint picks for one handshake
//! and the keys it yields; a message is matched to its state by the
//! receiver index alone.
//!
//! | kind | name         | sender | receiver | body | length |
//! | ---- | ------------ | ------ | -------- | ---- | ------ |
//! | 1    | XX_INIT      | nonzero | 0       | Noise XXpsk0 message 1 (128), mac1 (16), mac2 (16) | exactly 172 |
//! | 2    | XX_RESPONSE  | nonzero | nonzero | Noise XXpsk0 message 2 (128) | exactly 140 |
//! | 3    | XX_FINISH    | nonzero | nonzero | Noise XXpsk0 message 3 (96) | exactly 108 |
//! | 4    | IK_INIT      | nonzero | 0       | Noise IKpsk0 message 1 (128), mac1 (16), mac2 (16) | exactly 172 |
//! | 5    | IK_RESPONSE  | nonzero | nonzero | Noise IKpsk0 message 2 (48) | exactly 60 |
//! | 6    | COOKIE_REPLY | 0       | nonzero | nonce (u64, 8), sealed cookie (32) | exactly 52 |
//! | 7    | TRANSPORT    | nonzero | nonzero | counter (u64, 8), ciphertext (plaintext + 16) | 36 to 65535 |
//!
//! Offsets in the message (add the overlay header, 72 or 104 bytes, for
//! offsets in the UDP payload): kind 0, reserved 1..4, sender index 4..8,
//! receiver index 8..12, body 12..; in the initiations the Noise message
//! 12..140, mac1 140..156, mac2 156..172; in COOKIE_REPLY the nonce 12..20,
//! the sealed cookie 20..52; in TRANSPORT the counter 12..20, the
//! ciphertext 20...
//!
//! Rules checked by [`Repr::parse`], in this order: at least 12 bytes
//! (`truncated`); a known kind (`bad_kind`); reserved bytes zero
//! (`bad_reserved`); the indexes of the kind as in the table (`bad_index`);
//! the length of the kind (`bad_length`). The initiations are the longest
//! handshake messages: a responder's answer (a response or a cookie reply)
//! is never longer than what asked for it. A TRANSPORT plaintext is at most
//! [`PLAINTEXT_LEN_MAX`] bytes (the overlay payload length is a `u16`); an
//! empty plaintext is a keepalive.

use core::fmt;

mod field {
    use crate::wire::Field;

    pub const KIND: usize = 0;
    pub const RESERVED: Field = 1..4;
    pub const SENDER_INDEX: Field = 4..8;
    pub const RECEIVER_INDEX: Field = 8..12;
    /// Initiations: mac1 and mac2 after the Noise message.
    pub const MAC1: Field = 140..156;
    pub const MAC2: Field = 156..172;
    /// COOKIE_REPLY and TRANSPORT: a u64 after the header.
    pub const COUNTER: Field = 12..20;
}

/// Length of the common header.
pub const HEADER_LEN: usize = field::RECEIVER_INDEX.end;
/// Length of a Curve25519 public key in a Noise message.
pub const DH_LEN: usize = 32;
/// Length of an AEAD tag (ChaCha20-Poly1305).
pub const TAG_LEN: usize = 16;
/// Length of mac1 and of mac2.
pub const MAC_LEN: usize = 16;
/// The identity payload of a handshake: the sender's ed25519 public key.
pub const IDENTITY_PAYLOAD_LEN: usize = 32;
/// Zero padding carried (encrypted) as XX message 1's payload, so that an
/// XX initiation is as long as an IK one and longer than any answer.
pub const XX_INIT_PADDING_LEN: usize = 80;
/// Noise XXpsk0 message 1 (`-> psk, e`) with the padding payload.
pub const XX_INIT_NOISE_LEN: usize = DH_LEN + XX_INIT_PADDING_LEN + TAG_LEN;
/// Noise XXpsk0 message 2 (`<- e, ee, s, es`) with the identity payload.
pub const XX_RESPONSE_NOISE_LEN: usize =
    DH_LEN + (DH_LEN + TAG_LEN) + (IDENTITY_PAYLOAD_LEN + TAG_LEN);
/// Noise XXpsk0 message 3 (`-> s, se`) with the identity payload.
pub const XX_FINISH_NOISE_LEN: usize = (DH_LEN + TAG_LEN) + (IDENTITY_PAYLOAD_LEN + TAG_LEN);
/// Noise IKpsk0 message 1 (`-> psk, e, es, s, ss`) with the identity
/// payload.
pub const IK_INIT_NOISE_LEN: usize = DH_LEN + (DH_LEN + TAG_LEN) + (IDENTITY_PAYLOAD_LEN + TAG_LEN);
/// Noise IKpsk0 message 2 (`<- e, ee, se`) with an empty payload.
pub const IK_RESPONSE_NOISE_LEN: usize = DH_LEN + TAG_LEN;
/// Length of either initiation.
pub const INIT_LEN: usize = field::MAC2.end;
/// Length of an XX_RESPONSE.
pub const XX_RESPONSE_LEN: usize = HEADER_LEN + XX_RESPONSE_NOISE_LEN;
/// Length of an XX_FINISH.
pub const XX_FINISH_LEN: usize = HEADER_LEN + XX_FINISH_NOISE_LEN;
/// Length of an IK_RESPONSE.
pub const IK_RESPONSE_LEN: usize = HEADER_LEN + IK_RESPONSE_NOISE_LEN;
/// Length of a cookie (the plaintext a COOKIE_REPLY seals).
pub const COOKIE_LEN: usize = 16;
/// Length of a sealed cookie.
pub const SEALED_COOKIE_LEN: usize = COOKIE_LEN + TAG_LEN;
/// Length of a COOKIE_REPLY.
pub const COOKIE_REPLY_LEN: usize = field::COUNTER.end + SEALED_COOKIE_LEN;
/// Offset of mac1 in an initiation (everything before it is covered).
pub const MAC1_OFFSET: usize = field::MAC1.start;
/// Offset of mac2 in an initiation (everything before it is covered).
pub const MAC2_OFFSET: usize = field::MAC2.start;
/// Offset of a TRANSPORT's ciphertext.
pub const TRANSPORT_CIPHERTEXT_OFFSET: usize = field::COUNTER.end;
/// Bytes a TRANSPORT adds to its plaintext.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_CIPHERTEXT_OFFSET + TAG_LEN;
/// Longest TRANSPORT: the longest overlay payload.
pub const TRANSPORT_LEN_MAX: usize = super::overlay::PAYLOAD_LEN_MAX;
/// Largest plaintext one TRANSPORT carries.
pub const PLAINTEXT_LEN_MAX: usize = TRANSPORT_LEN_MAX - TRANSPORT_OVERHEAD;
/// Shortest TRANSPORT (a keepalive).
pub const TRANSPORT_LEN_MIN: usize = TRANSPORT_OVERHEAD;

const _: () = assert!(HEADER_LEN + XX_INIT_NOISE_LEN == MAC1_OFFSET);
const _: () = assert!(HEADER_LEN + IK_INIT_NOISE_LEN == MAC1_OFFSET);
const _: () = assert!(INIT_LEN == 172);
const _: () = assert!(XX_RESPONSE_LEN == 140);
const _: () = assert!(XX_FINISH_LEN == 108);
const _: () = assert!(IK_RESPONSE_LEN == 60);
const _: () = assert!(COOKIE_REPLY_LEN == 52);
const _: () = assert!(TRANSPORT_OVERHEAD == 36);
// Anti-amplification: no answer to an initiation is longer than it.
const _: () = assert!(XX_RESPONSE_LEN <= INIT_LEN);
const _: () = assert!(IK_RESPONSE_LEN <= INIT_LEN);
const _: () = assert!(COOKIE_REPLY_LEN <= INIT_LEN);

/// Why bytes are not a valid end-to-end message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the header.
    Truncated,
    /// An unknown kind.
    BadKind,
    /// A reserved byte is not zero.
    BadReserved,
    /// An index is zero where the kind needs one, or nonzero where it
    /// needs zero.
    BadIndex,
    /// Not a length of the kind.
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

/// End-to-end message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Noise XX message 1, with mac1 and mac2.
    XxInit = 1,
    /// Noise XX message 2.
    XxResponse = 2,
    /// Noise XX message 3.
    XxFinish = 3,
    /// Noise IK message 1, with mac1 and mac2.
    IkInit = 4,
    /// Noise IK message 2.
    IkResponse = 5,
    /// A responder under load answers an initiation with a cookie.
    CookieReply = 6,
    /// An encrypted packet.
    Transport = 7,
}

impl Kind {
    /// The kind with this wire value, if any.
    pub const fn from_u8(value: u8) -> Option<Kind> {
        match value {
            1 => Some(Kind::XxInit),
            2 => Some(Kind::XxResponse),
            3 => Some(Kind::XxFinish),
            4 => Some(Kind::IkInit),
            5 => Some(Kind::IkResponse),
            6 => Some(Kind::CookieReply),
            7 => Some(Kind::Transport),
            _ => None,
        }
    }
}

/// The Noise pattern of a handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `XXpsk0`: the initiator knows only the responder's node ID.
    Xx,
    /// `IKpsk0`: the initiator knows the responder's static key.
    Ik,
}

impl Pattern {
    /// The length of this pattern's message 1 (without the macs).
    pub const fn init_noise_len(self) -> usize {
        match self {
            Pattern::Xx => XX_INIT_NOISE_LEN,
            Pattern::Ik => IK_INIT_NOISE_LEN,
        }
    }

    /// The length of this pattern's message 2.
    pub const fn response_noise_len(self) -> usize {
        match self {
            Pattern::Xx => XX_RESPONSE_NOISE_LEN,
            Pattern::Ik => IK_RESPONSE_NOISE_LEN,
        }
    }
}

/// A zero-copy view of an end-to-end message.
///
/// After [`Packet::check_len`] no accessor panics: the accessors of fields
/// beyond the header return `None` when the buffer is too short.
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

    /// The sender's index (0 in COOKIE_REPLY).
    pub fn sender_index(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SENDER_INDEX];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The receiver's index (0 in the initiations).
    pub fn receiver_index(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::RECEIVER_INDEX];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Everything after the header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// An initiation's mac1, if the buffer holds one.
    pub fn mac1(&self) -> Option<[u8; MAC_LEN]> {
        self.buffer.as_ref().get(field::MAC1)?.try_into().ok()
    }

    /// An initiation's mac2, if the buffer holds one.
    pub fn mac2(&self) -> Option<[u8; MAC_LEN]> {
        self.buffer.as_ref().get(field::MAC2)?.try_into().ok()
    }

    /// The u64 after the header (TRANSPORT counter, COOKIE_REPLY nonce), if
    /// the buffer holds one.
    pub fn counter(&self) -> Option<u64> {
        let b: [u8; 8] = self.buffer.as_ref().get(field::COUNTER)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    /// What follows the u64 (TRANSPORT ciphertext, sealed cookie), if the
    /// buffer holds the u64.
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

    /// Sets the sender's index.
    pub fn set_sender_index(&mut self, value: u32) {
        self.buffer.as_mut()[field::SENDER_INDEX].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the receiver's index.
    pub fn set_receiver_index(&mut self, value: u32) {
        self.buffer.as_mut()[field::RECEIVER_INDEX].copy_from_slice(&value.to_be_bytes());
    }

    /// The body, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Sets an initiation's mac1. The buffer must hold the field.
    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        self.buffer.as_mut()[field::MAC1].copy_from_slice(mac);
    }

    /// Sets an initiation's mac2. The buffer must hold the field.
    pub fn set_mac2(&mut self, mac: &[u8; MAC_LEN]) {
        self.buffer.as_mut()[field::MAC2].copy_from_slice(mac);
    }

    /// Sets the u64 after the header. The buffer must hold the field.
    pub fn set_counter(&mut self, value: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&value.to_be_bytes());
    }

    /// What follows the u64, writable. The buffer must hold the u64.
    pub fn ciphertext_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[TRANSPORT_CIPHERTEXT_OFFSET..]
    }
}

/// A validated end-to-end message, borrowing its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Noise message 1 of `pattern`, with the macs.
    Init {
        /// XX or IK.
        pattern: Pattern,
        /// The initiator's index.
        sender_index: u32,
        /// [`Pattern::init_noise_len`] bytes.
        noise: &'a [u8],
        /// Over the bytes before it, keyed by the responder's node ID.
        mac1: [u8; MAC_LEN],
        /// Over the bytes before it, keyed by a cookie; zero without one.
        mac2: [u8; MAC_LEN],
    },
    /// Noise message 2 of `pattern`.
    Response {
        /// XX or IK.
        pattern: Pattern,
        /// The responder's index.
        sender_index: u32,
        /// The initiator's index.
        receiver_index: u32,
        /// [`Pattern::response_noise_len`] bytes.
        noise: &'a [u8],
    },
    /// Noise XX message 3.
    Finish {
        /// The initiator's index.
        sender_index: u32,
        /// The responder's index.
        receiver_index: u32,
        /// [`XX_FINISH_NOISE_LEN`] bytes.
        noise: &'a [u8],
    },
    /// A cookie for the initiator to echo (as mac2).
    CookieReply {
        /// The initiator's index.
        receiver_index: u32,
        /// The AEAD nonce.
        nonce: u64,
        /// [`SEALED_COOKIE_LEN`] bytes.
        sealed_cookie: &'a [u8],
    },
    /// An encrypted packet.
    Transport {
        /// The sender's index.
        sender_index: u32,
        /// The receiver's index.
        receiver_index: u32,
        /// The AEAD nonce; never repeats under one key.
        counter: u64,
        /// Plaintext (at most [`PLAINTEXT_LEN_MAX`]) plus [`TAG_LEN`].
        ciphertext: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Parses and validates an end-to-end message.
    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<Repr<'a>, Error> {
        packet.check_len()?;
        let bytes: &'a [u8] = packet.buffer;
        let kind = Kind::from_u8(packet.kind_raw()).ok_or(Error::BadKind)?;
        if packet.reserved() != [0; 3] {
            return Err(Error::BadReserved);
        }
        let sender_index = packet.sender_index();
        let receiver_index = packet.receiver_index();
        let (sender_ok, receiver_ok) = match kind {
            Kind::XxInit | Kind::IkInit => (sender_index != 0, receiver_index == 0),
            Kind::CookieReply => (sender_index == 0, receiver_index != 0),
            Kind::XxResponse | Kind::XxFinish | Kind::IkResponse | Kind::Transport => {
                (sender_index != 0, receiver_index != 0)
            }
        };
        if !sender_ok || !receiver_ok {
            return Err(Error::BadIndex);
        }
        let exact = |len: usize| {
            if bytes.len() == len {
                Ok(())
            } else {
                Err(Error::BadLength)
            }
        };
        let body = &bytes[HEADER_LEN..];
        match kind {
            Kind::XxInit | Kind::IkInit => {
                exact(INIT_LEN)?;
                let pattern = if kind == Kind::XxInit {
                    Pattern::Xx
                } else {
                    Pattern::Ik
                };
                Ok(Repr::Init {
                    pattern,
                    sender_index,
                    noise: &bytes[HEADER_LEN..MAC1_OFFSET],
                    mac1: packet.mac1().ok_or(Error::BadLength)?,
                    mac2: packet.mac2().ok_or(Error::BadLength)?,
                })
            }
            Kind::XxResponse | Kind::IkResponse => {
                let pattern = if kind == Kind::XxResponse {
                    Pattern::Xx
                } else {
                    Pattern::Ik
                };
                exact(HEADER_LEN + pattern.response_noise_len())?;
                Ok(Repr::Response {
                    pattern,
                    sender_index,
                    receiver_index,
                    noise: body,
                })
            }
            Kind::XxFinish => {
                exact(XX_FINISH_LEN)?;
                Ok(Repr::Finish {
                    sender_index,
                    receiver_index,
                    noise: body,
                })
            }
            Kind::CookieReply => {
                exact(COOKIE_REPLY_LEN)?;
                Ok(Repr::CookieReply {
                    receiver_index,
                    nonce: packet.counter().ok_or(Error::BadLength)?,
                    sealed_cookie: &bytes[TRANSPORT_CIPHERTEXT_OFFSET..],
                })
            }
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

    /// Parses an end-to-end message from a byte slice.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Repr<'a>, Error> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    /// The message's kind.
    pub const fn kind(&self) -> Kind {
        match self {
            Repr::Init {
                pattern: Pattern::Xx,
                ..
            } => Kind::XxInit,
            Repr::Init {
                pattern: Pattern::Ik,
                ..
            } => Kind::IkInit,
            Repr::Response {
                pattern: Pattern::Xx,
                ..
            } => Kind::XxResponse,
            Repr::Response {
                pattern: Pattern::Ik,
                ..
            } => Kind::IkResponse,
            Repr::Finish { .. } => Kind::XxFinish,
            Repr::CookieReply { .. } => Kind::CookieReply,
            Repr::Transport { .. } => Kind::Transport,
        }
    }

    /// The sender's index (0 in COOKIE_REPLY).
    pub const fn sender_index(&self) -> u32 {
        match self {
            Repr::Init { sender_index, .. }
            | Repr::Response { sender_index, .. }
            | Repr::Finish { sender_index, .. }
            | Repr::Transport { sender_index, .. } => *sender_index,
            Repr::CookieReply { .. } => 0,
        }
    }

    /// The receiver's index (0 in the initiations).
    pub const fn receiver_index(&self) -> u32 {
        match self {
            Repr::Init { .. } => 0,
            Repr::Response { receiver_index, .. }
            | Repr::Finish { receiver_index, .. }
            | Repr::CookieReply { receiver_index, .. }
            | Repr::Transport { receiver_index, .. } => *receiver_index,
        }
    }

    /// Length of the message `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Repr::Init { .. } => INIT_LEN,
            Repr::Response { noise, .. } | Repr::Finish { noise, .. } => HEADER_LEN + noise.len(),
            Repr::CookieReply { sealed_cookie, .. } => {
                TRANSPORT_CIPHERTEXT_OFFSET + sealed_cookie.len()
            }
            Repr::Transport { ciphertext, .. } => TRANSPORT_CIPHERTEXT_OFFSET + ciphertext.len(),
        }
    }

    /// Writes the message into the first [`Repr::buffer_len`] bytes of
    /// `packet`, which must be that long; an initiation's `noise` must be
    /// [`Pattern::init_noise_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_kind(self.kind());
        packet.clear_reserved();
        packet.set_sender_index(self.sender_index());
        packet.set_receiver_index(self.receiver_index());
        match self {
            Repr::Init {
                noise, mac1, mac2, ..
            } => {
                packet.body_mut()[..noise.len()].copy_from_slice(noise);
                packet.set_mac1(mac1);
                packet.set_mac2(mac2);
            }
            Repr::Response { noise, .. } | Repr::Finish { noise, .. } => {
                packet.body_mut()[..noise.len()].copy_from_slice(noise);
            }
            Repr::CookieReply {
                nonce,
                sealed_cookie: bytes,
                ..
            }
            | Repr::Transport {
                counter: nonce,
                ciphertext: bytes,
                ..
            } => {
                packet.set_counter(*nonce);
                packet.ciphertext_mut()[..bytes.len()].copy_from_slice(bytes);
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
/// Noise, mac and ciphertext bytes are placeholders: these pin the framing,
/// not the crypto.
pub mod golden {
    use super::{COOKIE_REPLY_LEN, INIT_LEN, TRANSPORT_LEN_MIN};

    /// IK_INIT, sender index 0x01020304, Noise bytes 0x11, mac1 0x22, mac2
    /// 0x33.
    pub const IK_INIT: [u8; INIT_LEN] = {
        let mut b = [0x11u8; INIT_LEN];
        b[0] = 0x04; // kind
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
        let mut i = 140;
        while i < 156 {
            b[i] = 0x22; // mac1
            b[i + 16] = 0x33; // mac2
            i += 1;
        }
        b
    };

    /// COOKIE_REPLY, receiver index 0xa0b0c0d0, nonce 0x0102030405060708,
    /// sealed cookie bytes 0x44.
    pub const COOKIE_REPLY: [u8; COOKIE_REPLY_LEN] = {
        let mut b = [0x44u8; COOKIE_REPLY_LEN];
        b[0] = 0x06;
        b[1] = 0;
        b[2] = 0;
        b[3] = 0;
        b[4] = 0;
        b[5] = 0;
        b[6] = 0;
        b[7] = 0;
        b[8] = 0xa0;
        b[9] = 0xb0;
        b[10] = 0xc0;
        b[11] = 0xd0;
        let mut i = 0;
        while i < 8 {
            b[12 + i] = i as u8 + 1;
            i += 1;
        }
        b
    };

    /// TRANSPORT (a keepalive), sender index 5, receiver index 6, counter
    /// 0x0102030405060708, tag bytes 0xee.
    pub const TRANSPORT: [u8; TRANSPORT_LEN_MIN] = {
        let mut b = [0xeeu8; TRANSPORT_LEN_MIN];
        b[0] = 0x07;
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
                &golden::IK_INIT[..],
                Repr::Init {
                    pattern: Pattern::Ik,
                    sender_index: 0x0102_0304,
                    noise: &[0x11; IK_INIT_NOISE_LEN],
                    mac1: [0x22; MAC_LEN],
                    mac2: [0x33; MAC_LEN],
                },
            ),
            (
                &golden::COOKIE_REPLY[..],
                Repr::CookieReply {
                    receiver_index: 0xa0b0_c0d0,
                    nonce: 0x0102_0304_0506_0708,
                    sealed_cookie: &[0x44; SEALED_COOKIE_LEN],
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
        let init = Packet::new_checked(&golden::IK_INIT[..]).expect("long enough");
        assert_eq!(init.kind_raw(), Kind::IkInit as u8);
        assert_eq!(init.reserved(), [0; 3]);
        assert_eq!(init.sender_index(), 0x0102_0304);
        assert_eq!(init.receiver_index(), 0);
        assert_eq!(init.mac1(), Some([0x22; MAC_LEN]));
        assert_eq!(init.mac2(), Some([0x33; MAC_LEN]));
        assert_eq!(
            &init.body()[..IK_INIT_NOISE_LEN],
            &[0x11; IK_INIT_NOISE_LEN]
        );

        let t = Packet::new_checked(&golden::TRANSPORT[..]).expect("long enough");
        assert_eq!(t.kind_raw(), Kind::Transport as u8);
        assert_eq!(t.sender_index(), 5);
        assert_eq!(t.receiver_index(), 6);
        assert_eq!(t.counter(), Some(0x0102_0304_0506_0708));
        assert_eq!(t.ciphertext(), Some(&[0xee; TAG_LEN][..]));

        let short = Packet::new_checked(&golden::TRANSPORT[..HEADER_LEN + 7]).expect("header");
        assert_eq!(short.counter(), None);
        assert_eq!(short.ciphertext(), None);
        assert_eq!(short.mac1(), None);
        assert_eq!(short.mac2(), None);
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

        let mut bytes = vec![0xa5u8; INIT_LEN];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_kind(Kind::IkInit);
        packet.clear_reserved();
        packet.set_sender_index(0x0102_0304);
        packet.set_receiver_index(0);
        packet.body_mut().fill(0x11);
        packet.set_mac1(&[0x22; MAC_LEN]);
        packet.set_mac2(&[0x33; MAC_LEN]);
        assert_eq!(&bytes[..], &golden::IK_INIT[..]);
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
            Packet::new_checked(&golden::IK_INIT[..HEADER_LEN - 1]),
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
        let zeroed = |base: &[u8], range: core::ops::Range<usize>| {
            let mut b = base.to_vec();
            b[range].fill(0);
            b
        };
        let mut long_init = golden::IK_INIT.to_vec();
        long_init.push(0);
        let cases: Vec<(&str, Vec<u8>, Error)> = vec![
            ("kind zero", with(&golden::IK_INIT, 0, 0), Error::BadKind),
            ("kind 8", with(&golden::IK_INIT, 0, 8), Error::BadKind),
            ("reserved", with(&golden::IK_INIT, 3, 1), Error::BadReserved),
            (
                "init sender zero",
                zeroed(&golden::IK_INIT, 4..8),
                Error::BadIndex,
            ),
            (
                "init with receiver",
                with(&golden::IK_INIT, 11, 1),
                Error::BadIndex,
            ),
            (
                "cookie reply with sender",
                with(&golden::COOKIE_REPLY, 7, 1),
                Error::BadIndex,
            ),
            (
                "cookie reply without receiver",
                zeroed(&golden::COOKIE_REPLY, 8..12),
                Error::BadIndex,
            ),
            (
                "transport without receiver",
                zeroed(&golden::TRANSPORT, 8..12),
                Error::BadIndex,
            ),
            (
                "short init",
                golden::IK_INIT[..INIT_LEN - 1].to_vec(),
                Error::BadLength,
            ),
            ("long init", long_init, Error::BadLength),
            (
                "init bytes as an xx response",
                with(&golden::IK_INIT, 0, Kind::XxResponse as u8)
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i == 11 { 1 } else { b })
                    .collect(),
                Error::BadLength,
            ),
            (
                "short cookie reply",
                golden::COOKIE_REPLY[..COOKIE_REPLY_LEN - 1].to_vec(),
                Error::BadLength,
            ),
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
        let ciphertext = vec![7u8; PLAINTEXT_LEN_MAX + TAG_LEN];
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

    proptest! {
        #[test]
        fn parse_emit_roundtrip(
            kind in 1u8..=7,
            sender_index in 1u32..,
            receiver_index in 1u32..,
            counter: u64,
            fill: u8,
            mac1: [u8; MAC_LEN],
            mac2: [u8; MAC_LEN],
            body in proptest::collection::vec(any::<u8>(), TAG_LEN..=2000),
        ) {
            let init = [fill; XX_INIT_NOISE_LEN];
            let xx_response = [fill; XX_RESPONSE_NOISE_LEN];
            let ik_response = [fill; IK_RESPONSE_NOISE_LEN];
            let finish = [fill; XX_FINISH_NOISE_LEN];
            let cookie = [fill; SEALED_COOKIE_LEN];
            let repr = match Kind::from_u8(kind) {
                Some(Kind::XxInit) => Repr::Init { pattern: Pattern::Xx, sender_index, noise: &init, mac1, mac2 },
                Some(Kind::IkInit) => Repr::Init { pattern: Pattern::Ik, sender_index, noise: &init, mac1, mac2 },
                Some(Kind::XxResponse) => Repr::Response { pattern: Pattern::Xx, sender_index, receiver_index, noise: &xx_response },
                Some(Kind::IkResponse) => Repr::Response { pattern: Pattern::Ik, sender_index, receiver_index, noise: &ik_response },
                Some(Kind::XxFinish) => Repr::Finish { sender_index, receiver_index, noise: &finish },
                Some(Kind::CookieReply) => Repr::CookieReply { receiver_index, nonce: counter, sealed_cookie: &cookie },
                _ => Repr::Transport { sender_index, receiver_index, counter, ciphertext: &body },
            };
            let bytes = repr.to_bytes();
            prop_assert_eq!(Repr::parse_bytes(&bytes), Ok(repr));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Repr::parse_bytes(&bytes);
            let packet = Packet::new_unchecked(&bytes[..]);
            if packet.check_len().is_ok() {
                let _ = (packet.kind_raw(), packet.reserved(), packet.sender_index());
                let _ = (packet.receiver_index(), packet.body(), packet.counter(), packet.ciphertext());
                let _ = (packet.mac1(), packet.mac2());
            }
        }

        /// Valid headers with every length up to a little past the longest
        /// handshake message: the length rules, not the header, decide.
        #[test]
        fn parse_never_panics_on_valid_headers(
            kind in 1u8..=7,
            len in HEADER_LEN..200usize,
            fill: u8,
        ) {
            let mut bytes = vec![fill; len];
            bytes[0] = kind;
            bytes[1..4].fill(0);
            bytes[4..8].copy_from_slice(&if kind == 6 { 0u32 } else { 9 }.to_be_bytes());
            bytes[8..12].copy_from_slice(&if kind == 1 || kind == 4 { 0u32 } else { 3 }.to_be_bytes());
            let parsed = Repr::parse_bytes(&bytes);
            let expected_len = match kind {
                1 | 4 => Some(INIT_LEN),
                2 => Some(XX_RESPONSE_LEN),
                3 => Some(XX_FINISH_LEN),
                5 => Some(IK_RESPONSE_LEN),
                6 => Some(COOKIE_REPLY_LEN),
                _ => None,
            };
            match expected_len {
                Some(l) => prop_assert_eq!(parsed.is_ok(), len == l),
                None => prop_assert_eq!(parsed.is_ok(), len >= TRANSPORT_LEN_MIN),
            }
        }
    }
}
