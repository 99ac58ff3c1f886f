//! Routing messages (docs/routing.md), carried as plaintext inside an
//! authenticated neighbor session like the Kademlia messages ([`super::kad`]),
//! whose type byte they share: Kademlia uses 1 to 4, routing 16 to 19.
//!
//! ```text
//! UPDATES (16): type, count (u8, 1 to UPDATES_MAX), then `count` records:
//! +--------------------+--------+--------+--------+-------+-------+
//! | origin (32 bytes)  | seqno  | metric | radius | flags | level |
//! |                    | u16    | u32    | u32    | u8    | u8    |
//! +--------------------+--------+--------+--------+-------+-------+
//! REQUEST (17): type, origin (32 bytes), seqno (u16), hops left (u8)
//! HELLO (18): type, stamp (u32): the sender's clock in microseconds,
//!   echoed by the ACK (the link's round-trip time); cost (u32): the
//!   link's cost as the sender sets it (the lower ID of the two sets it
//!   for both ends; 0: not set)
//! HELLO_ACK (19): type, stamp (u32): the HELLO's stamp
//! LOCATE (20): type, kind (u8), hops left (u8), flags (u8), nonce (u64),
//!   then six node IDs: target, target's via, asker, asker's via, subject,
//!   subject's via (204 bytes in all). Relayed hop by hop toward `target`
//!   (or its via) by the location service of docs/routing.md.
//! ```
//!
//! LOCATE `flags`: bit 0 target's via present, bit 1 asker's via, bit 2
//! subject's via; an absent via is sent as 32 zero bytes. Other bits, and
//! a kind other than 1 to 5, are refused.
//!
//! `flags` bit 0: the origin is a beacon; the other bits are 0 (a record
//! with another bit set is refused: a later version says what they mean).
//! A metric or radius of `0xffffffff` is infinite (a retraction, no beacon
//! known). All integers are big endian; the length must match exactly.

use core::fmt;

use crate::id::{NODE_ID_LEN, NodeId};

/// Type byte of an UPDATES message.
pub const TYPE_UPDATES: u8 = 16;
/// Type byte of a REQUEST message.
pub const TYPE_REQUEST: u8 = 17;
/// Type byte of a HELLO message.
pub const TYPE_HELLO: u8 = 18;
/// Type byte of a HELLO_ACK message.
pub const TYPE_HELLO_ACK: u8 = 19;
/// Type byte of a LOCATE message.
pub const TYPE_LOCATE: u8 = 20;
/// Bytes of a LOCATE message.
pub const LOCATE_LEN: usize = 4 + 8 + 6 * NODE_ID_LEN;
const LOCATE_HAS_TARGET_VIA: u8 = 0x01;
const LOCATE_HAS_ASKER_VIA: u8 = 0x02;
const LOCATE_HAS_SUBJECT_VIA: u8 = 0x04;
/// Bytes of a HELLO message.
pub const HELLO_LEN: usize = 9;
/// Bytes of a HELLO_ACK message.
pub const HELLO_ACK_LEN: usize = 5;
/// Bytes of one update record.
pub const UPDATE_LEN: usize = NODE_ID_LEN + 2 + 4 + 4 + 1 + 1;
/// Most records in one UPDATES message (fits a 1,280-byte IPv6 MTU with the
/// overlay and session headers).
pub const UPDATES_MAX: usize = 24;
/// Bytes of an UPDATES message before its records.
pub const UPDATES_HEADER_LEN: usize = 2;
/// Bytes of a REQUEST message.
pub const REQUEST_LEN: usize = 1 + NODE_ID_LEN + 2 + 1;
/// Flag: the origin is a beacon.
pub const FLAG_BEACON: u8 = 0x01;

const _: () = assert!(UPDATE_LEN == 44);
const _: () = assert!(UPDATES_HEADER_LEN + UPDATES_MAX * UPDATE_LEN <= super::kad::MESSAGE_LEN_MAX);

/// One route as announced to a neighbor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// The node the route leads to.
    pub origin: NodeId,
    /// The origin's sequence number the route was computed from.
    pub seqno: u16,
    /// The announcer's metric to the origin; `u32::MAX` retracts.
    pub metric: u32,
    /// The origin's metric to its nearest beacon (`u32::MAX`: none known):
    /// how far the route travels.
    pub radius: u32,
    /// The origin is a beacon: its route travels everywhere.
    pub beacon: bool,
    /// The beacon level the origin uses (its view of the network's size).
    pub level: u8,
}

/// A request to the origin for a new sequence number, forwarded toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqnoRequest {
    /// The node whose route is wanted.
    pub origin: NodeId,
    /// The lowest sequence number that helps the requester.
    pub seqno: u16,
    /// How many more times the request may be forwarded.
    pub hops_left: u8,
}

/// What a LOCATE message asks or says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LocateKind {
    /// `subject` (the asker) says its nearest beacon is `subject_via`;
    /// sent to a beacon XOR-close to the subject's ID (its home).
    Register = 1,
    /// The home checks a registration: sent to `subject` by way of the
    /// claimed `subject_via`; only the subject can answer it.
    Probe = 2,
    /// The subject's answer to a probe, with the probe's nonce.
    ProbeAck = 3,
    /// Where is `subject`? Sent to its home.
    Lookup = 4,
    /// The home's answer to a lookup, with its nonce: `subject_via`, or
    /// none if the subject is not registered there.
    Answer = 5,
}

impl LocateKind {
    fn from_u8(value: u8) -> Option<LocateKind> {
        Some(match value {
            1 => LocateKind::Register,
            2 => LocateKind::Probe,
            3 => LocateKind::ProbeAck,
            4 => LocateKind::Lookup,
            5 => LocateKind::Answer,
            _ => return None,
        })
    }
}

/// A location-service message, relayed hop by hop toward `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locate {
    /// What it is.
    pub kind: LocateKind,
    /// How many more times it may be relayed.
    pub hops_left: u8,
    /// Binds an answer to its question.
    pub nonce: u64,
    /// The router it is for.
    pub target: NodeId,
    /// The target's nearest beacon, for relays without a route to it.
    pub target_via: Option<NodeId>,
    /// The router that sent it.
    pub asker: NodeId,
    /// The asker's nearest beacon (where answers go).
    pub asker_via: Option<NodeId>,
    /// The router it is about.
    pub subject: NodeId,
    /// The subject's nearest beacon, when known.
    pub subject_via: Option<NodeId>,
}

/// A routing message between neighbors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    /// Route announcements (1 to [`UPDATES_MAX`]).
    Updates(Vec<Update>),
    /// A sequence-number request.
    Request(SeqnoRequest),
    /// A round-trip probe: the sender's clock, in microseconds.
    Hello {
        /// Echoed by the ACK.
        stamp: u32,
        /// The link's cost as the sender sets it (0: not set).
        cost: u32,
    },
    /// The answer to a HELLO, with its stamp.
    HelloAck {
        /// The HELLO's stamp.
        stamp: u32,
    },
    /// A location-service message.
    Locate(Locate),
}

/// Why bytes are not a valid routing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its type says.
    Truncated,
    /// Not a routing message type.
    BadType,
    /// Longer than its type says, or a record count of 0 or over the limit.
    BadLength,
    /// A flag bit this version does not know.
    BadFlags,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::BadType => "bad_type",
            Error::BadLength => "bad_length",
            Error::BadFlags => "bad_flags",
        })
    }
}

impl std::error::Error for Error {}

/// Whether `bytes` is a routing message (by its type byte), not Kademlia.
pub fn is_route_message(bytes: &[u8]) -> bool {
    matches!(
        bytes.first(),
        Some(&(TYPE_UPDATES | TYPE_REQUEST | TYPE_HELLO | TYPE_HELLO_ACK | TYPE_LOCATE))
    )
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Repr {
    /// Parses a whole message.
    pub fn parse(bytes: &[u8]) -> Result<Repr, Error> {
        match bytes.first() {
            None => Err(Error::Truncated),
            Some(&TYPE_UPDATES) => {
                let count = usize::from(*bytes.get(1).ok_or(Error::Truncated)?);
                if count == 0 || count > UPDATES_MAX {
                    return Err(Error::BadLength);
                }
                let want = UPDATES_HEADER_LEN + count * UPDATE_LEN;
                if bytes.len() < want {
                    return Err(Error::Truncated);
                }
                if bytes.len() > want {
                    return Err(Error::BadLength);
                }
                bytes[UPDATES_HEADER_LEN..]
                    .chunks_exact(UPDATE_LEN)
                    .map(parse_update)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Repr::Updates)
            }
            Some(&TYPE_REQUEST) => {
                if bytes.len() < REQUEST_LEN {
                    return Err(Error::Truncated);
                }
                if bytes.len() > REQUEST_LEN {
                    return Err(Error::BadLength);
                }
                Ok(Repr::Request(SeqnoRequest {
                    origin: NodeId::from_slice(&bytes[1..1 + NODE_ID_LEN]),
                    seqno: be_u16(&bytes[33..35]),
                    hops_left: bytes[35],
                }))
            }
            Some(&kind @ (TYPE_HELLO | TYPE_HELLO_ACK)) => {
                let want = if kind == TYPE_HELLO {
                    HELLO_LEN
                } else {
                    HELLO_ACK_LEN
                };
                if bytes.len() < want {
                    return Err(Error::Truncated);
                }
                if bytes.len() > want {
                    return Err(Error::BadLength);
                }
                let stamp = be_u32(&bytes[1..5]);
                Ok(if kind == TYPE_HELLO {
                    Repr::Hello {
                        stamp,
                        cost: be_u32(&bytes[5..9]),
                    }
                } else {
                    Repr::HelloAck { stamp }
                })
            }
            Some(&TYPE_LOCATE) => parse_locate(bytes).map(Repr::Locate),
            Some(_) => Err(Error::BadType),
        }
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::Updates(u) => UPDATES_HEADER_LEN + u.len().min(UPDATES_MAX) * UPDATE_LEN,
            Repr::Request(_) => REQUEST_LEN,
            Repr::Hello { .. } => HELLO_LEN,
            Repr::HelloAck { .. } => HELLO_ACK_LEN,
            Repr::Locate(_) => LOCATE_LEN,
        }
    }

    /// Appends the message to `out` (at most [`UPDATES_MAX`] records; the
    /// caller splits longer lists).
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Repr::Updates(updates) => {
                let updates = &updates[..updates.len().min(UPDATES_MAX)];
                out.push(TYPE_UPDATES);
                // UPDATES_MAX fits a u8 (asserted by its value).
                out.push(updates.len() as u8);
                for u in updates {
                    out.extend_from_slice(u.origin.as_bytes());
                    out.extend_from_slice(&u.seqno.to_be_bytes());
                    out.extend_from_slice(&u.metric.to_be_bytes());
                    out.extend_from_slice(&u.radius.to_be_bytes());
                    out.push(if u.beacon { FLAG_BEACON } else { 0 });
                    out.push(u.level);
                }
            }
            Repr::Request(r) => {
                out.push(TYPE_REQUEST);
                out.extend_from_slice(r.origin.as_bytes());
                out.extend_from_slice(&r.seqno.to_be_bytes());
                out.push(r.hops_left);
            }
            Repr::Hello { stamp, cost } => {
                out.push(TYPE_HELLO);
                out.extend_from_slice(&stamp.to_be_bytes());
                out.extend_from_slice(&cost.to_be_bytes());
            }
            Repr::HelloAck { stamp } => {
                out.push(TYPE_HELLO_ACK);
                out.extend_from_slice(&stamp.to_be_bytes());
            }
            Repr::Locate(l) => emit_locate(l, out),
        }
    }
}

fn emit_locate(l: &Locate, out: &mut Vec<u8>) {
    let flag = |via: &Option<NodeId>, bit: u8| if via.is_some() { bit } else { 0 };
    out.push(TYPE_LOCATE);
    out.push(l.kind as u8);
    out.push(l.hops_left);
    out.push(
        flag(&l.target_via, LOCATE_HAS_TARGET_VIA)
            | flag(&l.asker_via, LOCATE_HAS_ASKER_VIA)
            | flag(&l.subject_via, LOCATE_HAS_SUBJECT_VIA),
    );
    out.extend_from_slice(&l.nonce.to_be_bytes());
    let zero = [0u8; NODE_ID_LEN];
    for (id, via) in [
        (&l.target, &l.target_via),
        (&l.asker, &l.asker_via),
        (&l.subject, &l.subject_via),
    ] {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(via.as_ref().map_or(&zero, |v| v.as_bytes()));
    }
}

fn parse_locate(bytes: &[u8]) -> Result<Locate, Error> {
    if bytes.len() < LOCATE_LEN {
        return Err(Error::Truncated);
    }
    if bytes.len() > LOCATE_LEN {
        return Err(Error::BadLength);
    }
    let kind = LocateKind::from_u8(bytes[1]).ok_or(Error::BadType)?;
    let flags = bytes[3];
    let known = LOCATE_HAS_TARGET_VIA | LOCATE_HAS_ASKER_VIA | LOCATE_HAS_SUBJECT_VIA;
    if flags & !known != 0 {
        return Err(Error::BadFlags);
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&bytes[4..12]);
    let id =
        |i: usize| NodeId::from_slice(&bytes[12 + i * NODE_ID_LEN..12 + (i + 1) * NODE_ID_LEN]);
    let via = |i: usize, bit: u8| (flags & bit != 0).then(|| id(i));
    Ok(Locate {
        kind,
        hops_left: bytes[2],
        nonce: u64::from_be_bytes(nonce),
        target: id(0),
        target_via: via(1, LOCATE_HAS_TARGET_VIA),
        asker: id(2),
        asker_via: via(3, LOCATE_HAS_ASKER_VIA),
        subject: id(4),
        subject_via: via(5, LOCATE_HAS_SUBJECT_VIA),
    })
}

const _: () = assert!(UPDATES_MAX <= u8::MAX as usize);

fn parse_update(b: &[u8]) -> Result<Update, Error> {
    let flags = b[42];
    if flags & !FLAG_BEACON != 0 {
        return Err(Error::BadFlags);
    }
    Ok(Update {
        origin: NodeId::from_slice(&b[0..32]),
        seqno: be_u16(&b[32..34]),
        metric: be_u32(&b[34..38]),
        radius: be_u32(&b[38..42]),
        beacon: flags & FLAG_BEACON != 0,
        level: b[43],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(fill: u8) -> NodeId {
        NodeId::from_bytes([fill; 32])
    }

    #[test]
    fn updates_golden_bytes() {
        let repr = Repr::Updates(vec![Update {
            origin: id(0xab),
            seqno: 0x0102,
            metric: 0x0304_0506,
            radius: u32::MAX,
            beacon: true,
            level: 7,
        }]);
        let mut out = vec![0xa5];
        repr.emit(&mut out);
        let mut want = vec![0xa5, 16, 1];
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 0xff, 0xff, 0xff, 0xff, 1, 7]);
        assert_eq!(out, want);
        assert_eq!(out.len() - 1, repr.buffer_len());
        assert_eq!(Repr::parse(&out[1..]), Ok(repr));
    }

    #[test]
    fn request_golden_bytes() {
        let repr = Repr::Request(SeqnoRequest {
            origin: id(0x11),
            seqno: 0xfffe,
            hops_left: 32,
        });
        let mut out = Vec::new();
        repr.emit(&mut out);
        let mut want = vec![17];
        want.extend_from_slice(&[0x11; 32]);
        want.extend_from_slice(&[0xff, 0xfe, 32]);
        assert_eq!(out, want);
        assert_eq!(Repr::parse(&out), Ok(repr));
    }

    #[test]
    fn hello_golden_bytes() {
        for (repr, want) in [
            (
                Repr::Hello {
                    stamp: 0x0102_0304,
                    cost: 0x0506_0708,
                },
                vec![18, 1, 2, 3, 4, 5, 6, 7, 8],
            ),
            (Repr::HelloAck { stamp: 0x0102_0304 }, vec![19, 1, 2, 3, 4]),
        ] {
            let mut out = Vec::new();
            repr.emit(&mut out);
            assert_eq!(out, want);
            assert_eq!(out.len(), repr.buffer_len());
            assert_eq!(Repr::parse(&out), Ok(repr));
            assert_eq!(Repr::parse(&out[..out.len() - 1]), Err(Error::Truncated));
            out.push(0);
            assert_eq!(Repr::parse(&out), Err(Error::BadLength));
        }
    }

    #[test]
    fn impossible_lengths_and_values_are_refused() {
        assert_eq!(Repr::parse(&[]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&[16]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&[16, 0]), Err(Error::BadLength));
        assert_eq!(Repr::parse(&[16, 25]), Err(Error::BadLength));
        assert_eq!(Repr::parse(&[16, 1, 0]), Err(Error::Truncated));
        let mut two = vec![16, 1];
        two.extend_from_slice(&[0; UPDATE_LEN + 1]);
        assert_eq!(Repr::parse(&two), Err(Error::BadLength));
        let mut flagged = vec![16, 1];
        flagged.extend_from_slice(&[0; UPDATE_LEN]);
        flagged[2 + 42] = 0x02;
        assert_eq!(Repr::parse(&flagged), Err(Error::BadFlags));
        assert_eq!(Repr::parse(&[17; 35]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&[17; 37]), Err(Error::BadLength));
        assert_eq!(Repr::parse(&[1; 9]), Err(Error::BadType));
        assert!(is_route_message(&[16]) && is_route_message(&[17]));
        assert!(!is_route_message(&[1]) && !is_route_message(&[]));
    }

    #[test]
    fn locate_golden_bytes_and_refusals() {
        let repr = Repr::Locate(Locate {
            kind: LocateKind::Answer,
            hops_left: 30,
            nonce: 0x0102_0304_0506_0708,
            target: id(1),
            target_via: Some(id(2)),
            asker: id(3),
            asker_via: None,
            subject: id(5),
            subject_via: Some(id(6)),
        });
        let mut out = Vec::new();
        repr.emit(&mut out);
        let mut want = vec![20, 5, 30, 0b101, 1, 2, 3, 4, 5, 6, 7, 8];
        for fill in [1, 2, 3, 0, 5, 6] {
            want.extend_from_slice(&[fill; 32]);
        }
        assert_eq!(out, want);
        assert_eq!(out.len(), repr.buffer_len());
        assert_eq!(Repr::parse(&out), Ok(repr));
        assert!(is_route_message(&out));
        assert_eq!(Repr::parse(&out[..LOCATE_LEN - 1]), Err(Error::Truncated));
        let mut long = out.clone();
        long.push(0);
        assert_eq!(Repr::parse(&long), Err(Error::BadLength));
        let mut kind = out.clone();
        kind[1] = 6;
        assert_eq!(Repr::parse(&kind), Err(Error::BadType));
        let mut flags = out.clone();
        flags[3] = 0x08;
        assert_eq!(Repr::parse(&flags), Err(Error::BadFlags));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Repr::parse(&bytes);
        }
    }

    #[test]
    fn full_message_round_trips() {
        let updates: Vec<Update> = (0..UPDATES_MAX as u8)
            .map(|i| Update {
                origin: id(i),
                seqno: u16::from(i),
                metric: u32::from(i) * 3,
                radius: u32::from(i) * 5,
                beacon: i % 2 == 0,
                level: i,
            })
            .collect();
        let repr = Repr::Updates(updates);
        let mut out = Vec::new();
        repr.emit(&mut out);
        assert_eq!(out.len(), repr.buffer_len());
        assert_eq!(Repr::parse(&out), Ok(repr));
    }
}
