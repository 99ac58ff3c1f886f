//! Kademlia control messages, carried as plaintext inside an authenticated
//! session (the session layer encrypts, authenticates and rejects replays).
//!
//! Every message starts with the same 9-byte header:
//!
//! ```text
//!  0               1                                               9
//! +---------------+-----------------------------------------------+
//! |     type      |            request ID (u64, big endian)       |
//! +---------------+-----------------------------------------------+
//! ```
//!
//! | type | name      | body after the header                        | total      |
//! | ---- | --------- | -------------------------------------------- | ---------- |
//! | 1    | PING      | none                                         | 9 bytes    |
//! | 2    | PONG      | none (request ID echoes the PING's)          | 9 bytes    |
//! | 3    | FIND_NODE | target node ID (32 bytes)                    | 41 bytes   |
//! | 4    | NODES     | count (u8, at most [`CONTACTS_MAX`]), then `count` contact records | 10 + records |
//!
//! A contact record:
//!
//! ```text
//! +--------------------+--------+---------------------------+-----------+
//! | node ID (32 bytes) | family | address (4 or 16 bytes)   | port (u16)|
//! +--------------------+--------+---------------------------+-----------+
//! ```
//! `family` is 4 (IPv4: 39-byte record) or 6 (IPv6: 51-byte record). IPv6
//! flow info and scope ID are not carried (parsed as 0).
//!
//! The length must match exactly: trailing bytes are an error. All integers
//! are big endian. A NODES message with [`CONTACTS_MAX`] IPv6 contacts is
//! [`NODES_LEN_MAX`] bytes, below [`MESSAGE_LEN_MAX`].

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::id::NODE_ID_LEN;
use crate::id::NodeId;

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const REQUEST_ID: Field = 1..9;
    /// FIND_NODE only.
    pub const TARGET: Field = 9..41;
    /// NODES only.
    pub const COUNT: usize = 9;
    /// NODES only: the first contact record starts here.
    pub const CONTACTS: usize = 10;

    /// Offsets inside a contact record.
    pub const CONTACT_ID: Field = 0..32;
    pub const CONTACT_FAMILY: usize = 32;
    pub const CONTACT_ADDR: usize = 33;
}

/// Length of the common header (type and request ID).
pub const HEADER_LEN: usize = field::REQUEST_ID.end;
/// Length of a PING or PONG message.
pub const PING_LEN: usize = HEADER_LEN;
/// Length of a FIND_NODE message.
pub const FIND_NODE_LEN: usize = field::TARGET.end;
/// Length of a NODES message without contacts.
pub const NODES_HEADER_LEN: usize = field::CONTACTS;
/// Length of a contact record holding an IPv4 address.
pub const CONTACT_V4_LEN: usize = field::CONTACT_ADDR + 4 + 2;
/// Length of a contact record holding an IPv6 address.
pub const CONTACT_V6_LEN: usize = field::CONTACT_ADDR + 16 + 2;
/// Most contacts one NODES message may carry; more is rejected on parse.
pub const CONTACTS_MAX: usize = 20;
/// Longest possible NODES message (all contacts IPv6).
pub const NODES_LEN_MAX: usize = NODES_HEADER_LEN + CONTACTS_MAX * CONTACT_V6_LEN;
/// Every Kademlia message fits in this many bytes.
pub const MESSAGE_LEN_MAX: usize = 1200;

/// Address family byte for IPv4.
pub const FAMILY_V4: u8 = 4;
/// Address family byte for IPv6.
pub const FAMILY_V6: u8 = 6;

const _: () = assert!(field::CONTACT_ID.end - field::CONTACT_ID.start == NODE_ID_LEN);
const _: () = assert!(field::TARGET.end - field::TARGET.start == NODE_ID_LEN);
const _: () = assert!(CONTACT_V4_LEN == 39);
const _: () = assert!(CONTACT_V6_LEN == 51);
const _: () = assert!(NODES_LEN_MAX <= MESSAGE_LEN_MAX);
const _: () = assert!(CONTACTS_MAX <= u8::MAX as usize);

/// Why bytes are not a valid Kademlia message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than the header or than the type's fixed part.
    Truncated,
    /// An unknown message type.
    BadType,
    /// Bytes left over after the message, or a contact record cut short.
    BadLength,
    /// A NODES count above [`CONTACTS_MAX`].
    TooManyContacts,
    /// A contact's family byte is neither 4 nor 6.
    BadFamily,
}

impl Error {
    /// A short snake_case name, used in counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadType => "bad_type",
            Error::BadLength => "bad_length",
            Error::TooManyContacts => "too_many_contacts",
            Error::BadFamily => "bad_family",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Error {}

/// Kademlia message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Liveness probe.
    Ping = 1,
    /// Answer to a PING.
    Pong = 2,
    /// Asks for the contacts closest to a target.
    FindNode = 3,
    /// Answer to a FIND_NODE.
    Nodes = 4,
}

impl MessageType {
    /// The type with this wire value, if any.
    pub const fn from_u8(value: u8) -> Option<MessageType> {
        match value {
            1 => Some(MessageType::Ping),
            2 => Some(MessageType::Pong),
            3 => Some(MessageType::FindNode),
            4 => Some(MessageType::Nodes),
            _ => None,
        }
    }
}

/// A zero-copy view of a Kademlia message.
///
/// After [`Packet::check_len`] the header accessors never panic; the
/// type-specific accessors return `None` when the buffer is too short for
/// the field (a FIND_NODE target on a PING, say), so no accessor panics at
/// all on a checked buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and, for a known type, the
    /// type's fixed part (FIND_NODE's target, NODES' count).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let fixed = match MessageType::from_u8(self.msg_type_raw()) {
            Some(MessageType::FindNode) => FIND_NODE_LEN,
            Some(MessageType::Nodes) => NODES_HEADER_LEN,
            Some(MessageType::Ping | MessageType::Pong) | None => HEADER_LEN,
        };
        if len < fixed {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The type field as on the wire.
    pub fn msg_type_raw(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The request ID.
    pub fn request_id(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::REQUEST_ID]);
        u64::from_be_bytes(b)
    }

    /// FIND_NODE's target, if the buffer is long enough to hold one.
    pub fn target(&self) -> Option<NodeId> {
        self.buffer
            .as_ref()
            .get(field::TARGET)
            .map(NodeId::from_slice)
    }

    /// NODES' contact count, if the buffer is long enough to hold one.
    pub fn count(&self) -> Option<u8> {
        self.buffer.as_ref().get(field::COUNT).copied()
    }

    /// NODES' contact records (everything after the count).
    pub fn contacts_bytes(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::CONTACTS..)
            .unwrap_or_default()
    }

    /// The contact record starting at `offset` in [`Packet::contacts_bytes`],
    /// and the offset of the next one.
    pub fn contact_at(&self, offset: usize) -> Result<(Contact, usize), Error> {
        let bytes = self.contacts_bytes();
        let record = bytes.get(offset..).ok_or(Error::BadLength)?;
        let family = *record.get(field::CONTACT_FAMILY).ok_or(Error::BadLength)?;
        let len = match family {
            FAMILY_V4 => CONTACT_V4_LEN,
            FAMILY_V6 => CONTACT_V6_LEN,
            _ => return Err(Error::BadFamily),
        };
        let record = record.get(..len).ok_or(Error::BadLength)?;
        let id = NodeId::from_slice(&record[field::CONTACT_ID]);
        let addr_bytes = &record[field::CONTACT_ADDR..len - 2];
        let ip = if family == FAMILY_V4 {
            let mut a = [0u8; 4];
            a.copy_from_slice(addr_bytes);
            IpAddr::V4(Ipv4Addr::from(a))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(addr_bytes);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        let port = u16::from_be_bytes([record[len - 2], record[len - 1]]);
        Ok((
            Contact {
                id,
                addr: SocketAddr::new(ip, port),
            },
            offset + len,
        ))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type field.
    pub fn set_msg_type(&mut self, value: MessageType) {
        self.buffer.as_mut()[field::TYPE] = value as u8;
    }

    /// Sets the request ID.
    pub fn set_request_id(&mut self, value: u64) {
        self.buffer.as_mut()[field::REQUEST_ID].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets FIND_NODE's target. The buffer must be [`FIND_NODE_LEN`] long.
    pub fn set_target(&mut self, id: &NodeId) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(id.as_bytes());
    }

    /// Sets NODES' contact count.
    pub fn set_count(&mut self, value: u8) {
        self.buffer.as_mut()[field::COUNT] = value;
    }

    /// Writes a contact record at `offset` in the contacts area, returning
    /// the offset of the next record. The buffer must be long enough.
    pub fn set_contact_at(&mut self, offset: usize, contact: &Contact) -> usize {
        let record = &mut self.buffer.as_mut()[field::CONTACTS + offset..];
        record[field::CONTACT_ID].copy_from_slice(contact.id.as_bytes());
        let len = contact.record_len();
        match contact.addr.ip() {
            IpAddr::V4(ip) => {
                record[field::CONTACT_FAMILY] = FAMILY_V4;
                record[field::CONTACT_ADDR..field::CONTACT_ADDR + 4].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                record[field::CONTACT_FAMILY] = FAMILY_V6;
                record[field::CONTACT_ADDR..field::CONTACT_ADDR + 16].copy_from_slice(&ip.octets());
            }
        }
        record[len - 2..len].copy_from_slice(&contact.addr.port().to_be_bytes());
        offset + len
    }
}

/// A node and where to reach it, as carried in NODES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The node's ID.
    pub id: NodeId,
    /// Its underlay address (IPv6 flow info and scope ID are not carried).
    pub addr: SocketAddr,
}

impl Contact {
    /// Length of this contact's record on the wire.
    pub const fn record_len(&self) -> usize {
        match self.addr {
            SocketAddr::V4(_) => CONTACT_V4_LEN,
            SocketAddr::V6(_) => CONTACT_V6_LEN,
        }
    }
}

/// A validated Kademlia message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    /// Liveness probe.
    Ping {
        /// Echoed in the PONG.
        request_id: u64,
    },
    /// Answer to a PING.
    Pong {
        /// The PING's request ID.
        request_id: u64,
    },
    /// Asks for the contacts closest to `target`.
    FindNode {
        /// Echoed in the NODES reply.
        request_id: u64,
        /// The ID being looked up.
        target: NodeId,
    },
    /// Answer to a FIND_NODE: at most [`CONTACTS_MAX`] contacts. `emit` and
    /// `buffer_len` write only the first [`CONTACTS_MAX`].
    Nodes {
        /// The FIND_NODE's request ID.
        request_id: u64,
        /// Closest first, as the sender sorted them.
        contacts: Vec<Contact>,
    },
}

impl Repr {
    /// Parses and validates a whole message; the buffer must end exactly
    /// where the message does.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        let len = packet.buffer.as_ref().len();
        let request_id = packet.request_id();
        let exact = |want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(Error::BadLength)
            }
        };
        match MessageType::from_u8(packet.msg_type_raw()).ok_or(Error::BadType)? {
            MessageType::Ping => exact(PING_LEN).map(|()| Repr::Ping { request_id }),
            MessageType::Pong => exact(PING_LEN).map(|()| Repr::Pong { request_id }),
            MessageType::FindNode => {
                exact(FIND_NODE_LEN)?;
                let target = packet.target().ok_or(Error::Truncated)?;
                Ok(Repr::FindNode { request_id, target })
            }
            MessageType::Nodes => {
                let count = usize::from(packet.count().ok_or(Error::Truncated)?);
                if count > CONTACTS_MAX {
                    return Err(Error::TooManyContacts);
                }
                let mut contacts = Vec::with_capacity(count);
                let mut offset = 0;
                for _ in 0..count {
                    let (contact, next) = packet.contact_at(offset)?;
                    contacts.push(contact);
                    offset = next;
                }
                if offset != packet.contacts_bytes().len() {
                    return Err(Error::BadLength);
                }
                Ok(Repr::Nodes {
                    request_id,
                    contacts,
                })
            }
        }
    }

    /// Parses a message from a byte slice.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Repr, Error> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    /// The request ID, whatever the type.
    pub const fn request_id(&self) -> u64 {
        match self {
            Repr::Ping { request_id }
            | Repr::Pong { request_id }
            | Repr::FindNode { request_id, .. }
            | Repr::Nodes { request_id, .. } => *request_id,
        }
    }

    /// The message's type.
    pub const fn msg_type(&self) -> MessageType {
        match self {
            Repr::Ping { .. } => MessageType::Ping,
            Repr::Pong { .. } => MessageType::Pong,
            Repr::FindNode { .. } => MessageType::FindNode,
            Repr::Nodes { .. } => MessageType::Nodes,
        }
    }

    fn emitted_contacts(contacts: &[Contact]) -> &[Contact] {
        &contacts[..contacts.len().min(CONTACTS_MAX)]
    }

    /// Length of the message `emit` writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::Ping { .. } | Repr::Pong { .. } => PING_LEN,
            Repr::FindNode { .. } => FIND_NODE_LEN,
            Repr::Nodes { contacts, .. } => {
                NODES_HEADER_LEN
                    + Repr::emitted_contacts(contacts)
                        .iter()
                        .map(Contact::record_len)
                        .sum::<usize>()
            }
        }
    }

    /// Writes the message into the first [`Repr::buffer_len`] bytes of
    /// `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_msg_type(self.msg_type());
        packet.set_request_id(self.request_id());
        match self {
            Repr::Ping { .. } | Repr::Pong { .. } => {}
            Repr::FindNode { target, .. } => packet.set_target(target),
            Repr::Nodes { contacts, .. } => {
                let contacts = Repr::emitted_contacts(contacts);
                // At most CONTACTS_MAX (20), asserted to fit a u8 above.
                packet.set_count(contacts.len() as u8);
                let mut offset = 0;
                for contact in contacts {
                    offset = packet.set_contact_at(offset, contact);
                }
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

/// Golden messages for the tests (and for other implementations).
pub mod golden {
    /// PING, request ID 0x0102030405060708.
    pub const PING: [u8; 9] = [0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];

    /// PONG, request ID 0x0102030405060708.
    pub const PONG: [u8; 9] = [0x02, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];

    /// FIND_NODE, request ID 7, target 0xab repeated.
    pub const FIND_NODE: [u8; 41] = {
        let mut b = [0xabu8; 41];
        b[0] = 0x03;
        let mut i = 1;
        while i < 9 {
            b[i] = 0;
            i += 1;
        }
        b[8] = 0x07;
        b
    };

    /// NODES, request ID 9, two contacts: ID 0x11.. at `192.0.2.1:4789` and
    /// ID 0x22.. at `[2001:db8::1]:4790`.
    pub const NODES: [u8; 10 + 39 + 51] = {
        let mut b = [0u8; 100];
        b[0] = 0x04;
        b[8] = 0x09; // request ID 9
        b[9] = 0x02; // two contacts
        let mut i = 10;
        while i < 42 {
            b[i] = 0x11;
            i += 1;
        }
        b[42] = 4; // family
        b[43] = 192;
        b[44] = 0;
        b[45] = 2;
        b[46] = 1;
        b[47] = 0x12; // port 4789 = 0x12b5
        b[48] = 0xb5;
        let mut i = 49;
        while i < 81 {
            b[i] = 0x22;
            i += 1;
        }
        b[81] = 6; // family
        b[82] = 0x20;
        b[83] = 0x01;
        b[84] = 0x0d;
        b[85] = 0xb8;
        // b[86..97] stay 0
        b[97] = 0x01;
        b[98] = 0x12; // port 4790 = 0x12b6
        b[99] = 0xb6;
        b
    };
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn nodes_repr() -> Repr {
        Repr::Nodes {
            request_id: 9,
            contacts: vec![
                Contact {
                    id: NodeId::from_bytes([0x11; 32]),
                    addr: "192.0.2.1:4789".parse().expect("valid"),
                },
                Contact {
                    id: NodeId::from_bytes([0x22; 32]),
                    addr: "[2001:db8::1]:4790".parse().expect("valid"),
                },
            ],
        }
    }

    #[test]
    fn deconstruct() {
        let ping = Packet::new_checked(&golden::PING[..]).expect("long enough");
        assert_eq!(ping.msg_type_raw(), MessageType::Ping as u8);
        assert_eq!(ping.request_id(), 0x0102_0304_0506_0708);
        assert_eq!(ping.target(), None);
        assert_eq!(ping.count(), None);

        let find = Packet::new_checked(&golden::FIND_NODE[..]).expect("long enough");
        assert_eq!(find.msg_type_raw(), MessageType::FindNode as u8);
        assert_eq!(find.request_id(), 7);
        assert_eq!(find.target(), Some(NodeId::from_bytes([0xab; 32])));

        let nodes = Packet::new_checked(&golden::NODES[..]).expect("long enough");
        assert_eq!(nodes.msg_type_raw(), MessageType::Nodes as u8);
        assert_eq!(nodes.request_id(), 9);
        assert_eq!(nodes.count(), Some(2));
        let (first, next) = nodes.contact_at(0).expect("valid record");
        assert_eq!(next, CONTACT_V4_LEN);
        assert_eq!(first.addr, "192.0.2.1:4789".parse().expect("valid"));
        let (second, end) = nodes.contact_at(next).expect("valid record");
        assert_eq!(end, CONTACT_V4_LEN + CONTACT_V6_LEN);
        assert_eq!(second.id, NodeId::from_bytes([0x22; 32]));
        assert_eq!(nodes.contact_at(end), Err(Error::BadLength));
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; golden::NODES.len()];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_msg_type(MessageType::Nodes);
        packet.set_request_id(9);
        packet.set_count(2);
        let Repr::Nodes { contacts, .. } = nodes_repr() else {
            unreachable!()
        };
        let next = packet.set_contact_at(0, &contacts[0]);
        let end = packet.set_contact_at(next, &contacts[1]);
        assert_eq!(end + NODES_HEADER_LEN, golden::NODES.len());
        assert_eq!(&bytes[..], &golden::NODES[..]);

        let mut bytes = vec![0xa5u8; FIND_NODE_LEN];
        let mut packet = Packet::new_unchecked(&mut bytes);
        packet.set_msg_type(MessageType::FindNode);
        packet.set_request_id(7);
        packet.set_target(&NodeId::from_bytes([0xab; 32]));
        assert_eq!(&bytes[..], &golden::FIND_NODE[..]);
    }

    fn goldens() -> Vec<(&'static [u8], Repr)> {
        vec![
            (
                &golden::PING[..],
                Repr::Ping {
                    request_id: 0x0102_0304_0506_0708,
                },
            ),
            (
                &golden::PONG[..],
                Repr::Pong {
                    request_id: 0x0102_0304_0506_0708,
                },
            ),
            (
                &golden::FIND_NODE[..],
                Repr::FindNode {
                    request_id: 7,
                    target: NodeId::from_bytes([0xab; 32]),
                },
            ),
            (&golden::NODES[..], nodes_repr()),
        ]
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
            Packet::new_checked(&golden::PING[..HEADER_LEN - 1]),
            Err(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&golden::FIND_NODE[..FIND_NODE_LEN - 1]),
            Err(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&golden::NODES[..NODES_HEADER_LEN - 1]),
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
        let mut long_ping = golden::PING.to_vec();
        long_ping.push(0);
        let mut long_nodes = golden::NODES.to_vec();
        long_nodes.push(0);
        let cases: Vec<(&str, Vec<u8>, Error)> = vec![
            ("type zero", with(&golden::PING, 0, 0), Error::BadType),
            ("type unknown", with(&golden::PING, 0, 0x7f), Error::BadType),
            ("ping trailing byte", long_ping, Error::BadLength),
            ("nodes trailing byte", long_nodes, Error::BadLength),
            (
                "nodes count too high",
                with(&golden::NODES, 9, 3),
                Error::BadLength,
            ),
            (
                "nodes count too low",
                with(&golden::NODES, 9, 1),
                Error::BadLength,
            ),
            (
                "nodes count over max",
                with(&golden::NODES, 9, CONTACTS_MAX as u8 + 1),
                Error::TooManyContacts,
            ),
            ("bad family", with(&golden::NODES, 42, 5), Error::BadFamily),
            (
                "v4 record claims v6",
                with(&golden::NODES, 42, FAMILY_V6),
                Error::BadFamily,
            ),
            (
                "cut record",
                golden::NODES[..golden::NODES.len() - 1].to_vec(),
                Error::BadLength,
            ),
        ];
        for (name, bytes, error) in cases {
            assert_eq!(Repr::parse_bytes(&bytes), Err(error), "{name}");
        }
    }

    #[test]
    fn largest_nodes_fits_a_message() {
        let contacts = (0..CONTACTS_MAX + 5)
            .map(|i| Contact {
                id: NodeId::from_bytes([i as u8; 32]),
                addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1),
            })
            .collect::<Vec<_>>();
        let repr = Repr::Nodes {
            request_id: 1,
            contacts,
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes.len(), NODES_LEN_MAX);
        assert!(bytes.len() <= MESSAGE_LEN_MAX);
        match Repr::parse_bytes(&bytes) {
            Ok(Repr::Nodes { contacts, .. }) => assert_eq!(contacts.len(), CONTACTS_MAX),
            other => panic!("expected NODES, got {other:?}"),
        }
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
        ]
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        let contact = (any::<[u8; 32]>(), arb_addr()).prop_map(|(id, addr)| Contact {
            id: NodeId::from_bytes(id),
            addr,
        });
        prop_oneof![
            any::<u64>().prop_map(|request_id| Repr::Ping { request_id }),
            any::<u64>().prop_map(|request_id| Repr::Pong { request_id }),
            (any::<u64>(), any::<[u8; 32]>()).prop_map(|(request_id, t)| Repr::FindNode {
                request_id,
                target: NodeId::from_bytes(t),
            }),
            (
                any::<u64>(),
                proptest::collection::vec(contact, 0..=CONTACTS_MAX)
            )
                .prop_map(|(request_id, contacts)| Repr::Nodes {
                    request_id,
                    contacts
                }),
        ]
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr()) {
            let bytes = repr.to_bytes();
            prop_assert!(bytes.len() <= MESSAGE_LEN_MAX);
            prop_assert_eq!(Repr::parse_bytes(&bytes), Ok(repr));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = Repr::parse_bytes(&bytes);
            let packet = Packet::new_unchecked(&bytes[..]);
            if packet.check_len().is_ok() {
                let _ = (packet.request_id(), packet.target(), packet.count());
                let _ = packet.contact_at(0);
                let _ = packet.contact_at(usize::MAX);
            }
        }

        #[test]
        fn parse_never_panics_on_mutated_nodes(
            index in 0..golden::NODES.len(),
            value: u8,
            cut in 0..=golden::NODES.len(),
        ) {
            let mut bytes = golden::NODES.to_vec();
            bytes[index] = value;
            bytes.truncate(cut);
            let _ = Repr::parse_bytes(&bytes);
        }
    }
}
