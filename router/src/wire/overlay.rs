//! The overlay header (wire format v2), carried first in a UDP payload.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |          magic "XO"           |    version    |     type      |
//! +---------------+---------------+---------------+---------------+
//! |   hop limit   |     flags     |         payload length        |
//! +---------------+---------------+---------------+---------------+
//! |                 destination node ID (32 bytes)                |
//! +---------------------------------------------------------------+
//! |                    source node ID (32 bytes)                  |
//! +---------------------------------------------------------------+
//! |         via node ID (32 bytes, only with flag VIA set)        |
//! +---------------------------------------------------------------+
//! |                         payload ...                           |
//! ```
//! All multi-byte integers are big endian. The header is 72 bytes, or 104
//! with the VIA flag (bit 0 of flags); the payload follows the whole
//! header. See docs/wire-format.md.

use core::fmt;

use super::consts;
use crate::id::NodeId;

mod field {
    use crate::wire::Field;

    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const HOP_LIMIT: usize = 4;
    pub const FLAGS: usize = 5;
    pub const PAYLOAD_LEN: Field = 6..8;
    pub const DST: Field = 8..40;
    pub const SRC: Field = 40..72;
    /// Only with [`super::FLAG_VIA`] set.
    pub const VIA: Field = 72..104;
}

/// Length of the fixed overlay header: the whole header of a packet
/// without via.
pub const HEADER_LEN: usize = field::SRC.end;
/// Length of the whole header of a packet with [`FLAG_VIA`] set.
pub const HEADER_VIA_LEN: usize = field::VIA.end;
/// Flag bit: a via node ID follows the source ID. The other bits are
/// reserved: senders write 0, receivers ignore them, relays keep them.
pub const FLAG_VIA: u8 = consts::FLAG_VIA;
/// The magic number, "XO".
pub const MAGIC: u16 = consts::MAGIC;
/// The only version this code speaks.
pub const VERSION: u8 = consts::VERSION;
/// The hop limit a sender puts into a new packet.
pub const DEFAULT_HOP_LIMIT: u8 = consts::DEFAULT_HOP_LIMIT;
/// Default UDP port of the overlay.
pub const DEFAULT_PORT: u16 = consts::DEFAULT_PORT;
/// The lowest outer UDP source port of a forwarded flow (see
/// [`Packet::flow_port`]).
pub const FLOW_PORT_BASE: u16 = consts::FLOW_PORT_BASE;
/// Largest payload the 16-bit length field can describe.
pub const PAYLOAD_LEN_MAX: usize = u16::MAX as usize;

// One source of truth: the Rust layout must equal ebpf/wire.h.
const _: () = assert!(HEADER_LEN == consts::HDR_LEN);
const _: () = assert!(field::MAGIC.start == consts::OFF_MAGIC);
const _: () = assert!(field::VERSION == consts::OFF_VERSION);
const _: () = assert!(field::TYPE == consts::OFF_TYPE);
const _: () = assert!(field::HOP_LIMIT == consts::OFF_HOP_LIMIT);
const _: () = assert!(field::FLAGS == consts::OFF_FLAGS);
const _: () = assert!(field::PAYLOAD_LEN.start == consts::OFF_PAYLOAD_LEN);
const _: () = assert!(field::DST.start == consts::OFF_DST);
const _: () = assert!(field::SRC.start == consts::OFF_SRC);
const _: () = assert!(field::DST.end - field::DST.start == consts::NODE_ID_LEN);
const _: () = assert!(field::SRC.end - field::SRC.start == consts::NODE_ID_LEN);
const _: () = assert!(field::VIA.start == consts::OFF_VIA);
const _: () = assert!(field::VIA.end - field::VIA.start == consts::NODE_ID_LEN);
const _: () = assert!(HEADER_VIA_LEN == consts::HDR_VIA_LEN);
const _: () = assert!(FLAG_VIA.count_ones() == 1);

/// Why a buffer is not a valid overlay packet. Each variant has an XDP
/// counter of the same meaning (see [`Error::xdp_stat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the fixed header, or, with the VIA flag set, than the
    /// whole header.
    Truncated,
    /// The magic is not "XO".
    BadMagic,
    /// A version this code does not speak.
    BadVersion,
    /// An unknown packet type.
    BadType,
    /// The payload length field disagrees with the buffer length.
    BadLength,
    /// Hop limit 0 on arrival: no sender may emit that.
    HopLimitZero,
}

impl Error {
    /// All variants, in counter order.
    pub const ALL: [Error; 6] = [
        Error::Truncated,
        Error::BadMagic,
        Error::BadVersion,
        Error::BadType,
        Error::BadLength,
        Error::HopLimitZero,
    ];

    /// Index of the XDP stats counter that counts this drop reason.
    pub const fn xdp_stat(self) -> u32 {
        match self {
            Error::Truncated => consts::XDP_DROP_TRUNCATED,
            Error::BadMagic => consts::XDP_DROP_BAD_MAGIC,
            Error::BadVersion => consts::XDP_DROP_BAD_VERSION,
            Error::BadType => consts::XDP_DROP_BAD_TYPE,
            Error::BadLength => consts::XDP_DROP_BAD_LENGTH,
            Error::HopLimitZero => consts::XDP_DROP_HOP_LIMIT_ZERO,
        }
    }

    /// A short snake_case name, used in counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadMagic => "bad_magic",
            Error::BadVersion => "bad_version",
            Error::BadType => "bad_type",
            Error::BadLength => "bad_length",
            Error::HopLimitZero => "hop_limit_zero",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Error {}

/// Overlay packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Application data, forwarded hop by hop.
    Data = consts::TYPE_DATA,
    /// Control-plane message between neighbors.
    Control = consts::TYPE_CONTROL,
}

impl PacketType {
    /// The type with this wire value, if any.
    pub const fn from_u8(value: u8) -> Option<PacketType> {
        match value {
            v if v == PacketType::Data as u8 => Some(PacketType::Data),
            v if v == PacketType::Control as u8 => Some(PacketType::Control),
            _ => None,
        }
    }
}

/// A zero-copy view of an overlay packet (header and payload).
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

    /// Wraps a buffer after [`Packet::check_len`]: every accessor is safe.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the whole fixed header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Checks every rule of wire format v2, in the same order as the XDP
    /// program, so both report the same reason for the same bytes: the
    /// fixed header's length, magic, version, type, the whole header's
    /// length (with via), payload length, hop limit.
    pub fn validate(&self) -> Result<(), Error> {
        self.check_len()?;
        if self.magic() != MAGIC {
            return Err(Error::BadMagic);
        }
        if self.version() != VERSION {
            return Err(Error::BadVersion);
        }
        if PacketType::from_u8(self.packet_type_raw()).is_none() {
            return Err(Error::BadType);
        }
        let len = self.buffer.as_ref().len();
        let header_len = self.header_len();
        if len < header_len {
            return Err(Error::Truncated);
        }
        if usize::from(self.payload_len()) != len - header_len {
            return Err(Error::BadLength);
        }
        if self.hop_limit() == 0 {
            return Err(Error::HopLimitZero);
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic field.
    pub fn magic(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::MAGIC.start], b[field::MAGIC.start + 1]])
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The type field as on the wire.
    pub fn packet_type_raw(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The flags field: [`FLAG_VIA`] and the reserved bits.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The length of the whole header: [`HEADER_VIA_LEN`] with the VIA
    /// flag set, else [`HEADER_LEN`]. The payload starts here.
    pub fn header_len(&self) -> usize {
        if self.flags() & FLAG_VIA != 0 {
            HEADER_VIA_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::PAYLOAD_LEN.start], b[field::PAYLOAD_LEN.start + 1]])
    }

    /// The destination node ID.
    pub fn dst(&self) -> NodeId {
        NodeId::from_slice(&self.buffer.as_ref()[field::DST])
    }

    /// The destination node ID bytes, without a copy.
    pub fn dst_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DST]
    }

    /// The source node ID.
    pub fn src(&self) -> NodeId {
        NodeId::from_slice(&self.buffer.as_ref()[field::SRC])
    }

    /// The via node ID (the destination's nearest beacon), if the VIA flag
    /// is set and the buffer holds it (`validate` refuses a packet whose
    /// flag is set without the field as `Truncated`).
    pub fn via(&self) -> Option<NodeId> {
        if self.flags() & FLAG_VIA == 0 {
            return None;
        }
        self.buffer.as_ref().get(field::VIA).map(NodeId::from_slice)
    }

    /// The outer UDP source port the XDP fast path gives this packet when
    /// it forwards it: a hash of the two node IDs in 49152..=65535, the same
    /// for both directions of a flow and on every hop, so that receive-side
    /// scaling and ECMP spread flows and keep each on one path. The twin of
    /// `xorlay_flow_port` in ebpf/wire.h.
    pub fn flow_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        let word = |range: crate::wire::Field| {
            u32::from_be_bytes([
                b[range.start],
                b[range.start + 1],
                b[range.start + 2],
                b[range.start + 3],
            ])
        };
        let w = word(field::DST) ^ word(field::SRC);
        FLOW_PORT_BASE | ((w ^ (w >> 14) ^ (w >> 28)) as u16 & consts::FLOW_PORT_MASK)
    }

    /// The worker (of `workers`, at least 1) this packet belongs to: the
    /// steering program picks its socket by this, and XDP charges the
    /// packet to that worker's credits. A hash of the first 8 bytes of both
    /// IDs, read in native byte order as the kernel programs do. The twin of
    /// `xorlay_worker_of` in ebpf/wire.h.
    pub fn worker_of(&self, workers: u32) -> u32 {
        let b = self.buffer.as_ref();
        let word = |start: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&b[start..start + 8]);
            u64::from_ne_bytes(bytes)
        };
        let mut h =
            word(field::DST.start) ^ word(field::SRC.start).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
        (h as u32) % workers.max(1)
    }

    /// Everything after the whole header ([`Packet::header_len`]); empty if
    /// the buffer ends inside the header.
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        self.buffer.as_ref().get(start..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the magic field.
    pub fn set_magic(&mut self, value: u16) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }

    /// Sets the type field.
    pub fn set_packet_type(&mut self, value: PacketType) {
        self.buffer.as_mut()[field::TYPE] = value as u8;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the flags field.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the destination node ID.
    pub fn set_dst(&mut self, id: &NodeId) {
        self.buffer.as_mut()[field::DST].copy_from_slice(id.as_bytes());
    }

    /// Sets the source node ID.
    pub fn set_src(&mut self, id: &NodeId) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(id.as_bytes());
    }

    /// Sets the via node ID and the VIA flag (`Some`), or clears the flag
    /// (`None`; the bytes after src are then payload). Other flag bits are
    /// kept. The header length, and so where the payload starts, follows
    /// the flag. `Err(Truncated)`, with nothing written, if the buffer is
    /// too short for the via field.
    pub fn set_via(&mut self, via: Option<&NodeId>) -> Result<(), Error> {
        let flags = self.flags();
        match via {
            Some(id) => {
                let Some(bytes) = self.buffer.as_mut().get_mut(field::VIA) else {
                    return Err(Error::Truncated);
                };
                bytes.copy_from_slice(id.as_bytes());
                self.set_flags(flags | FLAG_VIA);
            }
            None => self.set_flags(flags & !FLAG_VIA),
        }
        Ok(())
    }

    /// The payload, writable: everything after the whole header; empty if
    /// the buffer ends inside the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or_default()
    }
}

/// A validated overlay header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Data or control.
    pub packet_type: PacketType,
    /// Hops left; never 0 in a valid packet.
    pub hop_limit: u8,
    /// The reserved flag bits, kept so a relay passes them on. The VIA bit
    /// is not here: it is `via` (`parse` clears it, `emit` ignores it).
    pub flags: u8,
    /// Length of the payload that follows the whole header.
    pub payload_len: u16,
    /// Destination node.
    pub dst: NodeId,
    /// Source node.
    pub src: NodeId,
    /// The destination's nearest beacon, toward which a router without a
    /// route to `dst` forwards; on the wire iff the VIA flag is set.
    pub via: Option<NodeId>,
}

impl Repr {
    /// Parses and validates a whole overlay packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.validate()?;
        Ok(Repr {
            packet_type: PacketType::from_u8(packet.packet_type_raw()).ok_or(Error::BadType)?,
            hop_limit: packet.hop_limit(),
            flags: packet.flags() & !FLAG_VIA,
            payload_len: packet.payload_len(),
            dst: packet.dst(),
            src: packet.src(),
            via: packet.via(),
        })
    }

    /// Length of the header this emits: [`HEADER_VIA_LEN`] with a via,
    /// else [`HEADER_LEN`]. The payload follows it.
    pub const fn buffer_len(&self) -> usize {
        if self.via.is_some() {
            HEADER_VIA_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header into the first [`Repr::buffer_len`] bytes of
    /// `packet`, which must hold at least that many (it panics otherwise,
    /// as it always has on a buffer shorter than the header): the VIA flag
    /// set exactly when `via` is `Some`, the other flag bits from `flags`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_magic(MAGIC);
        packet.set_version(VERSION);
        packet.set_packet_type(self.packet_type);
        packet.set_hop_limit(self.hop_limit);
        packet.set_payload_len(self.payload_len);
        packet.set_dst(&self.dst);
        packet.set_src(&self.src);
        match &self.via {
            Some(via) => {
                packet.buffer.as_mut()[field::VIA].copy_from_slice(via.as_bytes());
                packet.set_flags(self.flags | FLAG_VIA);
            }
            None => packet.set_flags(self.flags & !FLAG_VIA),
        }
    }
}

/// Golden packets shared by the Rust tests and the XDP fixture tests.
pub mod golden {
    use super::{HEADER_LEN, HEADER_VIA_LEN};

    /// A data packet: hop limit 64, payload "ping", dst 0x11.., src 0x22...
    pub const DATA_PING: [u8; HEADER_LEN + 4] = {
        let mut b = [0u8; HEADER_LEN + 4];
        b[0] = 0x58;
        b[1] = 0x4f;
        b[2] = 0x02; // version
        b[3] = 0x01; // data
        b[4] = 0x40; // hop limit 64
        b[5] = 0x00; // flags
        b[6] = 0x00;
        b[7] = 0x04; // payload length 4
        let mut i = 8;
        while i < 40 {
            b[i] = 0x11;
            i += 1;
        }
        while i < 72 {
            b[i] = 0x22;
            i += 1;
        }
        b[72] = b'p';
        b[73] = b'i';
        b[74] = b'n';
        b[75] = b'g';
        b
    };

    /// `DATA_PING` with a via: flag VIA, via 0x33.. after src, then the
    /// same payload "ping" (payload length 4).
    pub const DATA_PING_VIA: [u8; HEADER_VIA_LEN + 4] = {
        let mut b = [0u8; HEADER_VIA_LEN + 4];
        let mut i = 0;
        while i < HEADER_LEN {
            b[i] = DATA_PING[i];
            i += 1;
        }
        b[5] = 0x01; // flags: VIA
        while i < HEADER_VIA_LEN {
            b[i] = 0x33;
            i += 1;
        }
        b[104] = b'p';
        b[105] = b'i';
        b[106] = b'n';
        b[107] = b'g';
        b
    };

    /// `DATA_PING` broken in one way per drop reason, with the reason.
    pub fn malformed() -> Vec<(&'static str, Vec<u8>, super::Error)> {
        use super::Error;
        let base = DATA_PING.to_vec();
        let with = |i: usize, v: u8| {
            let mut b = base.clone();
            b[i] = v;
            b
        };
        let via_with = |i: usize, v: u8| {
            let mut b = DATA_PING_VIA.to_vec();
            b[i] = v;
            b
        };
        vec![
            (
                "truncated header",
                base[..HEADER_LEN - 1].to_vec(),
                Error::Truncated,
            ),
            ("empty payload", Vec::new(), Error::Truncated),
            ("bad magic", with(0, 0x00), Error::BadMagic),
            ("bad version", with(2, 0x03), Error::BadVersion),
            ("version 1", with(2, 0x01), Error::BadVersion),
            ("version 1 with via", via_with(2, 0x01), Error::BadVersion),
            ("type zero", with(3, 0x00), Error::BadType),
            ("type unknown", with(3, 0x7f), Error::BadType),
            ("length too long", with(7, 0x05), Error::BadLength),
            ("length too short", with(7, 0x03), Error::BadLength),
            ("hop limit zero", with(4, 0x00), Error::HopLimitZero),
            (
                "via flag, header cut short",
                DATA_PING_VIA[..HEADER_VIA_LEN - 1].to_vec(),
                Error::Truncated,
            ),
            (
                "via flag without the via field",
                with(5, 0x01),
                Error::Truncated,
            ),
            ("via: length too long", via_with(7, 0x05), Error::BadLength),
            ("via: length too short", via_with(7, 0x03), Error::BadLength),
            (
                "via flag cleared: the via bytes are payload",
                via_with(5, 0x00),
                Error::BadLength,
            ),
            (
                "via: hop limit zero",
                via_with(4, 0x00),
                Error::HopLimitZero,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst() -> NodeId {
        NodeId::from_bytes([0x11; 32])
    }
    fn src() -> NodeId {
        NodeId::from_bytes([0x22; 32])
    }

    #[test]
    fn worker_of_spreads_flows_and_keeps_each_on_one_worker() {
        let mut bytes = golden::DATA_PING.to_vec();
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&[1, 2, 3, 4]);
        let mut s = [0u8; 32];
        s[0] = 1;
        packet.set_dst(&NodeId::from_bytes(d));
        packet.set_src(&NodeId::from_bytes(s));
        // x86-64: dst8 = 0x04030201, src8 = 1; h = dst8 ^ 0x9e3779b97f4a7c15
        // = 0x9e3779b97b497e14; h ^ h >> 32 keeps 0xe57e07ad below; % 7 = 3.
        #[cfg(target_endian = "little")]
        assert_eq!(packet.worker_of(7), 3);
        assert_eq!(packet.worker_of(1), 0);
        assert_eq!(
            packet.worker_of(0),
            0,
            "no workers: 0, never a division by zero"
        );
        // Spread: 4,000 flows over 4 workers, each within 20% of a quarter.
        let mut counts = [0u32; 4];
        for n in 0u32..4000 {
            d[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
            packet.set_dst(&NodeId::from_bytes(d));
            counts[packet.worker_of(4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn flow_port_hashes_both_ids_into_the_dynamic_range() {
        let mut bytes = golden::DATA_PING.to_vec();
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&[1, 2, 3, 4]);
        packet.set_dst(&NodeId::from_bytes(d));
        packet.set_src(&NodeId::from_bytes([0; 32]));
        // w = 0x01020304; w ^ (w >> 14) ^ (w >> 28) = 0x0102070c; 14 bits
        // 0x070c; 0xc000 | 0x070c.
        assert_eq!(packet.flow_port(), 0xc70c);
        // Symmetric: the reverse direction of a flow takes the same port.
        packet.set_dst(&NodeId::from_bytes([0; 32]));
        packet.set_src(&NodeId::from_bytes(d));
        assert_eq!(packet.flow_port(), 0xc70c);
        // Bytes past the first four do not matter.
        let mut far = d;
        far[10] = 0xff;
        packet.set_src(&NodeId::from_bytes(far));
        assert_eq!(packet.flow_port(), 0xc70c);
        // Any first four bytes land in 49152..=65535.
        for n in 0u32..5000 {
            let mut s = [0xa5u8; 32];
            s[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
            packet.set_src(&NodeId::from_bytes(s));
            assert!(packet.flow_port() >= FLOW_PORT_BASE);
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&golden::DATA_PING[..]).expect("golden is long enough");
        assert_eq!(packet.magic(), 0x584f);
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.packet_type_raw(), PacketType::Data as u8);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.flags(), 0);
        assert_eq!(packet.payload_len(), 4);
        assert_eq!(packet.dst(), dst());
        assert_eq!(packet.src(), src());
        assert_eq!(packet.header_len(), HEADER_LEN);
        assert_eq!(packet.via(), None);
        assert_eq!(packet.payload(), b"ping");
        assert_eq!(packet.validate(), Ok(()));
    }

    fn via() -> NodeId {
        NodeId::from_bytes([0x33; 32])
    }

    #[test]
    fn deconstruct_via() {
        let packet = Packet::new_checked(&golden::DATA_PING_VIA[..]).expect("long enough");
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.flags(), FLAG_VIA);
        assert_eq!(packet.payload_len(), 4);
        assert_eq!(packet.dst(), dst());
        assert_eq!(packet.src(), src());
        assert_eq!(packet.header_len(), HEADER_VIA_LEN);
        assert_eq!(packet.via(), Some(via()));
        assert_eq!(packet.payload(), b"ping");
        assert_eq!(packet.validate(), Ok(()));
        // The flag set, the field cut off: no panic, no via, no payload.
        let short = Packet::new_checked(&golden::DATA_PING_VIA[..HEADER_VIA_LEN - 1])
            .expect("the fixed header is there");
        assert_eq!(short.via(), None);
        assert_eq!(short.payload(), b"");
        assert_eq!(short.validate(), Err(Error::Truncated));
    }

    #[test]
    fn construct_via() {
        let mut bytes = vec![0xa5u8; HEADER_VIA_LEN + 4];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_magic(MAGIC);
        packet.set_version(VERSION);
        packet.set_packet_type(PacketType::Data);
        packet.set_hop_limit(64);
        packet.set_flags(0);
        packet.set_payload_len(4);
        packet.set_dst(&dst());
        packet.set_src(&src());
        assert_eq!(packet.set_via(Some(&via())), Ok(()));
        packet.payload_mut().copy_from_slice(b"ping");
        assert_eq!(&bytes[..], &golden::DATA_PING_VIA[..]);

        // Cleared again: the flag goes, the payload starts after src.
        let mut packet = Packet::new_unchecked(&mut bytes);
        assert_eq!(packet.set_via(None), Ok(()));
        assert_eq!(packet.flags(), 0);
        assert_eq!(packet.header_len(), HEADER_LEN);
        assert_eq!(packet.payload_mut().len(), 36);

        // No room for the field: refused, nothing written.
        let mut short = golden::DATA_PING;
        let mut packet = Packet::new_unchecked(&mut short[..]);
        assert_eq!(packet.set_via(Some(&via())), Err(Error::Truncated));
        assert_eq!(short, golden::DATA_PING);
    }

    #[test]
    fn parse_via() {
        let packet = Packet::new_checked(&golden::DATA_PING_VIA[..]).expect("long enough");
        assert_eq!(
            Repr::parse(&packet),
            Ok(Repr {
                via: Some(via()),
                ..repr()
            })
        );
    }

    #[test]
    fn emit_via() {
        let repr = Repr {
            via: Some(via()),
            ..repr()
        };
        assert_eq!(repr.buffer_len(), HEADER_VIA_LEN);
        let mut bytes = vec![0xa5u8; repr.buffer_len() + 4];
        let mut packet = Packet::new_unchecked(&mut bytes);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(b"ping");
        assert_eq!(&bytes[..], &golden::DATA_PING_VIA[..]);
    }

    #[test]
    fn emit_sets_the_via_flag_exactly_when_via_is_some() {
        for (flags, via_id) in [
            (0x80 | FLAG_VIA, None),
            (0x80, None),
            (0x80, Some(via())),
            (0x80 | FLAG_VIA, Some(via())),
        ] {
            let repr = Repr {
                flags,
                via: via_id,
                ..repr()
            };
            let mut bytes = vec![0xa5u8; repr.buffer_len() + 4];
            repr.emit(&mut Packet::new_unchecked(&mut bytes));
            let packet = Packet::new_checked(&bytes[..]).expect("long enough");
            assert_eq!(
                packet.flags() & FLAG_VIA != 0,
                via_id.is_some(),
                "{flags:#x}"
            );
            assert_eq!(packet.flags() & 0x80, 0x80, "reserved bits kept");
            assert_eq!(packet.via(), via_id);
            assert_eq!(packet.payload(), &[0xa5; 4]);
            assert_eq!(
                Repr::parse(&packet).map(|r| r.flags),
                Ok(0x80),
                "parse keeps the reserved bits, not VIA"
            );
        }
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; HEADER_LEN + 4];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_magic(MAGIC);
        packet.set_version(VERSION);
        packet.set_packet_type(PacketType::Data);
        packet.set_hop_limit(64);
        packet.set_flags(0);
        packet.set_payload_len(4);
        packet.set_dst(&dst());
        packet.set_src(&src());
        packet.payload_mut().copy_from_slice(b"ping");
        assert_eq!(&bytes[..], &golden::DATA_PING[..]);
    }

    fn repr() -> Repr {
        Repr {
            packet_type: PacketType::Data,
            hop_limit: 64,
            flags: 0,
            payload_len: 4,
            dst: dst(),
            src: src(),
            via: None,
        }
    }

    #[test]
    fn parse() {
        let packet = Packet::new_checked(&golden::DATA_PING[..]).expect("long enough");
        assert_eq!(Repr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn emit() {
        let mut bytes = vec![0xa5u8; HEADER_LEN + 4];
        let mut packet = Packet::new_unchecked(&mut bytes);
        repr().emit(&mut packet);
        packet.payload_mut().copy_from_slice(b"ping");
        assert_eq!(&bytes[..], &golden::DATA_PING[..]);
    }

    #[test]
    fn impossible_length() {
        assert_eq!(
            Packet::new_checked(&golden::DATA_PING[..HEADER_LEN - 1]),
            Err(Error::Truncated)
        );
        assert_eq!(Packet::new_checked(&[][..]), Err(Error::Truncated));
    }

    #[test]
    fn malformed_reasons() {
        for (name, bytes, reason) in golden::malformed() {
            let packet = Packet::new_unchecked(&bytes[..]);
            assert_eq!(packet.validate(), Err(reason), "{name}");
            assert_eq!(Repr::parse(&packet), Err(reason), "{name}");
        }
    }

    #[test]
    fn flags_are_ignored_and_kept() {
        let mut bytes = golden::DATA_PING;
        bytes[5] = 0x80;
        let packet = Packet::new_checked(&bytes[..]).expect("long enough");
        assert_eq!(Repr::parse(&packet).map(|r| r.flags), Ok(0x80));
        // With via: the reserved bits likewise.
        let mut bytes = golden::DATA_PING_VIA;
        bytes[5] = 0xff;
        let packet = Packet::new_checked(&bytes[..]).expect("long enough");
        let parsed = Repr::parse(&packet);
        assert_eq!(parsed.map(|r| r.flags), Ok(0xfe));
        assert_eq!(parsed.map(|r| r.via), Ok(Some(via())));
    }

    #[test]
    fn version_1_is_refused() {
        let mut bytes = golden::DATA_PING;
        bytes[2] = 1;
        let packet = Packet::new_checked(&bytes[..]).expect("long enough");
        assert_eq!(packet.validate(), Err(Error::BadVersion));
        assert_eq!(Repr::parse(&packet), Err(Error::BadVersion));
    }

    #[test]
    fn xdp_stat_indices_are_distinct_drop_counters() {
        let mut seen = std::collections::HashSet::new();
        for reason in Error::ALL {
            let index = reason.xdp_stat();
            assert_eq!(
                consts::XdpStat::from_index(index).map(consts::XdpStat::verdict),
                Some(consts::XdpVerdict::Drop),
                "{reason}"
            );
            assert_ne!(index, consts::XDP_PASS_OTHER, "{reason}");
            assert_ne!(index, consts::XDP_PASS_OVERLAY, "{reason}");
            assert!(seen.insert(index), "{reason} shares a counter");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_emit_roundtrip(
            hop_limit in 1u8..=255,
            flags: u8,
            control: bool,
            dst: [u8; 32],
            src: [u8; 32],
            via: Option<[u8; 32]>,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let repr = Repr {
                packet_type: if control { PacketType::Control } else { PacketType::Data },
                hop_limit,
                flags,
                payload_len: payload.len() as u16,
                dst: NodeId::from_bytes(dst),
                src: NodeId::from_bytes(src),
                via: via.map(NodeId::from_bytes),
            };
            let mut bytes = vec![0xa5u8; repr.buffer_len() + payload.len()];
            let mut packet = Packet::new_unchecked(&mut bytes);
            repr.emit(&mut packet);
            packet.payload_mut().copy_from_slice(&payload);
            let packet = Packet::new_checked(&bytes[..]).expect("long enough");
            proptest::prop_assert_eq!(packet.payload(), &payload[..]);
            // The VIA bit comes back as `via`, the other bits as `flags`.
            let parsed = Repr::parse(&packet);
            proptest::prop_assert_eq!(parsed, Ok(Repr { flags: flags & !FLAG_VIA, ..repr }));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let packet = Packet::new_unchecked(&bytes[..]);
            let _ = Repr::parse(&packet);
        }
    }
}
