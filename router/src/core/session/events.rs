//! What [`Sessions`](super::Sessions) hands its owner: packets to send,
//! events, refusals and counters.

use std::net::SocketAddr;

use super::{MESSAGE_LEN_MAX, TRANSMIT_QUEUE_MAX};
use crate::id::NodeId;

/// A packet to send: one whole overlay packet (header and payload), to be
/// sent as one UDP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The underlay address to send to.
    pub to: SocketAddr,
    /// The overlay packet.
    pub bytes: Vec<u8>,
}

/// Something the owner of [`Sessions`](super::Sessions) should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session with `peer` is up; `send` to it works.
    Established {
        /// The authenticated node ID.
        peer: NodeId,
        /// Where it is.
        addr: SocketAddr,
    },
    /// An authenticated message from `peer`.
    Message {
        /// The sender.
        peer: NodeId,
        /// The address it came from.
        addr: SocketAddr,
        /// The plaintext, 1 to [`MESSAGE_LEN_MAX`] bytes.
        bytes: Vec<u8>,
    },
    /// The session with `peer` is gone.
    Closed {
        /// The peer.
        peer: NodeId,
        /// Where the session had it.
        addr: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// A `connect` gave up.
    ConnectFailed {
        /// The address given to `connect`.
        addr: SocketAddr,
        /// The ID given to `connect`.
        expect: Option<NodeId>,
        /// Why.
        reason: ConnectFailure,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Nothing authenticated arrived for `dead_after`.
    Timeout,
    /// A new handshake with the same peer took its place; an `Established`
    /// follows.
    Replaced,
    /// [`Sessions::close`](super::Sessions::close) was called.
    Local,
}

impl CloseReason {
    /// A short snake_case name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::Timeout => "timeout",
            CloseReason::Replaced => "replaced",
            CloseReason::Local => "local",
        }
    }
}

/// Why a `connect` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectFailure {
    /// No (valid) answer after all retries, or within `handshake_timeout`.
    Timeout,
    /// The responder's ed25519 key, Noise static key and node ID disagree.
    BadKey,
    /// The responder's ID does not solve the puzzle.
    Puzzle,
    /// The responder is not the node `connect` expected.
    UnexpectedPeer,
    /// `connect` was asked to reach this node itself.
    SelfConnect,
    /// `sessions_max` sessions exist already.
    SessionsFull,
    /// `half_open_max` of this node's own handshakes are pending already.
    HalfOpenFull,
    /// The Noise library failed where it cannot (a bug; counted).
    Internal,
}

impl ConnectFailure {
    /// A short snake_case name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::BadKey => "bad_key",
            ConnectFailure::Puzzle => "puzzle",
            ConnectFailure::UnexpectedPeer => "unexpected_peer",
            ConnectFailure::SelfConnect => "self_connect",
            ConnectFailure::SessionsFull => "sessions_full",
            ConnectFailure::HalfOpenFull => "half_open_full",
            ConnectFailure::Internal => "internal",
        }
    }
}

/// Why [`Sessions::send`](super::Sessions::send) refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No established session with the peer.
    #[error("no session with {0}; wait for SessionEvent::Established before sending")]
    NotEstablished(NodeId),
    /// The message is longer than [`MESSAGE_LEN_MAX`].
    #[error("message of {len} bytes is longer than the session limit of {MESSAGE_LEN_MAX}")]
    TooLong {
        /// The message's length.
        len: usize,
    },
    /// Empty messages are keepalives on the wire.
    #[error("empty message; an empty TRANSPORT is a keepalive, send at least one byte")]
    Empty,
    /// The transmit queue is full.
    #[error(
        "transmit queue full ({TRANSMIT_QUEUE_MAX} packets); call poll_transmit before sending more"
    )]
    QueueFull,
    /// The session sent [`SEND_COUNTER_MAX`](super::SEND_COUNTER_MAX)
    /// messages (rekeying is not implemented): close it and connect again.
    #[error("session counter exhausted; close the session and connect again")]
    Exhausted,
}

/// What [`Sessions`](super::Sessions) did and refused, cumulative. Every
/// rejection of a received packet increments exactly one `rejected_*`
/// counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionCounters {
    /// `connect` calls that sent a HANDSHAKE_1.
    pub handshakes_initiated: u64,
    /// Handshakes that became sessions (either role).
    pub handshakes_completed: u64,
    /// `ConnectFailed` events.
    pub handshakes_failed: u64,
    /// HANDSHAKE_1 and HANDSHAKE_3 resent by the retry timer.
    pub handshake_retransmits: u64,
    /// Repeated HANDSHAKE_1 answered again with the pending HANDSHAKE_2.
    pub handshake_duplicates_answered: u64,
    /// Handshakes dropped for a simultaneous one with the same peer.
    pub handshake_collisions: u64,
    /// Own pending handshakes dropped because a session with their peer
    /// came up another way.
    pub handshakes_superseded: u64,
    /// Not a valid control overlay packet or session message (garbage,
    /// truncated, wrong length, zero or own source ID).
    pub rejected_bad_packet: u64,
    /// Overlay destination neither this node nor (in HANDSHAKE_1) zero.
    pub rejected_wrong_destination: u64,
    /// A handshake or TRANSPORT message that did not decrypt.
    pub rejected_decrypt: u64,
    /// A peer's ed25519 key, Noise static key and node ID disagree.
    pub rejected_bad_key: u64,
    /// A peer's node ID does not solve the puzzle.
    pub rejected_puzzle: u64,
    /// The responder is not the node `connect` expected.
    pub rejected_unexpected_peer: u64,
    /// A repeated handshake message or TRANSPORT counter.
    pub rejected_replay: u64,
    /// A message for a session index this node does not have, or whose
    /// sender index or source does not match.
    pub rejected_unknown_session: u64,
    /// A handshake message the state of its index does not expect.
    pub rejected_stale_handshake: u64,
    /// A handshake refused because `sessions_max` sessions exist.
    pub rejected_sessions_full: u64,
    /// A HANDSHAKE_1 refused because all half-open slots hold own
    /// handshakes.
    pub rejected_half_open_full: u64,
    /// Responder-side half-open handshakes evicted for a newer one.
    pub half_open_evicted: u64,
    /// Responder-side half-open handshakes that expired.
    pub half_open_expired: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Keepalives received (authenticated).
    pub keepalives_received: u64,
    /// Messages sent with `send`.
    pub messages_sent: u64,
    /// Messages received (authenticated, delivered as events).
    pub messages_received: u64,
    /// Sessions closed because nothing arrived for `dead_after`.
    pub sessions_timed_out: u64,
    /// Sessions replaced by a new handshake with the same peer.
    pub sessions_replaced: u64,
    /// Sessions closed with `close`.
    pub sessions_closed: u64,
    /// Sessions whose peer's address changed.
    pub peer_addr_changes: u64,
    /// Transmits dropped on a full queue.
    pub transmits_dropped: u64,
    /// Events pushed out of a full queue.
    pub events_dropped: u64,
    /// Failures of the Noise library that cannot happen (bugs).
    pub internal_errors: u64,
}
