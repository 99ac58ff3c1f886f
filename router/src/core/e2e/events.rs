//! What [`Endpoints`](super::Endpoints) hands its owner: events, refusals
//! and counters.

use crate::id::NodeId;
use crate::wire::e2e::PLAINTEXT_LEN_MAX;

/// Something the owner of [`Endpoints`](super::Endpoints) should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum E2eEvent {
    /// An authenticated packet from `src`.
    Received {
        /// The endpoint that sent it (proven by the session's keys).
        src: NodeId,
        /// The plaintext, 1 to [`PLAINTEXT_LEN_MAX`] bytes.
        plaintext: Vec<u8>,
    },
    /// The first session with `peer` is up (rekeys emit nothing).
    Established {
        /// The authenticated node ID.
        peer: NodeId,
    },
    /// A handshake with `peer` started by this node gave up while no
    /// session existed; its queued packets follow as `Undeliverable`.
    Failed {
        /// The destination.
        peer: NodeId,
        /// Why.
        reason: FailReason,
    },
    /// The session with `peer` is gone.
    Closed {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: CloseReason,
    },
    /// A packet [`send`](super::Endpoints::send) accepted was dropped; the
    /// shell may answer its source (e.g. ICMPv6 destination unreachable).
    Undeliverable {
        /// The destination it was for.
        dst: NodeId,
        /// Why.
        reason: UndeliverableReason,
        /// The first [`UNDELIVERABLE_HEAD_MAX`](super::UNDELIVERABLE_HEAD_MAX)
        /// bytes of the packet, to quote.
        head: Vec<u8>,
    },
}

/// Why a handshake this node started failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// No valid answer after every retry.
    Timeout,
    /// The responder's ed25519 key, Noise static key and node ID disagree.
    BadKey,
    /// The Noise library failed where it cannot (a bug; counted).
    Internal,
}

impl FailReason {
    /// A short snake_case name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::BadKey => "bad_key",
            FailReason::Internal => "internal",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// No data either way for `idle_timeout`.
    Idle,
    /// The keys reached `reject_after` (or their message limit) without a
    /// successful rekey.
    Expired,
}

impl CloseReason {
    /// A short snake_case name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Expired => "expired",
        }
    }
}

/// Why a packet accepted by `send` was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UndeliverableReason {
    /// The queue waiting for the handshake (per destination or in total)
    /// was full.
    QueueFull,
    /// The handshake failed (a `Failed` event precedes).
    HandshakeFailed,
    /// `sessions_max` sessions exist, or `handshakes_max` own handshakes
    /// are in flight.
    NoRoom,
    /// The transmit queue was full (call `poll_transmit` more often).
    TransmitQueueFull,
}

impl UndeliverableReason {
    /// A short snake_case name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            UndeliverableReason::QueueFull => "queue_full",
            UndeliverableReason::HandshakeFailed => "handshake_failed",
            UndeliverableReason::NoRoom => "no_room",
            UndeliverableReason::TransmitQueueFull => "transmit_queue_full",
        }
    }
}

/// Why [`Endpoints::send`](super::Endpoints::send) refused a packet (it
/// was not taken; no event follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// Empty packets are keepalives on the wire.
    #[error("empty packet; an empty TRANSPORT is a keepalive, send at least one byte")]
    Empty,
    /// Longer than [`PLAINTEXT_LEN_MAX`].
    #[error("packet of {len} bytes is longer than the end-to-end limit of {PLAINTEXT_LEN_MAX}")]
    TooLong {
        /// The packet's length.
        len: usize,
    },
    /// The destination is this node or the zero ID.
    #[error("destination {0} is this node or the zero ID; deliver locally instead")]
    BadDestination(NodeId),
}

/// What [`Endpoints`](super::Endpoints) did and refused, cumulative. Every
/// rejection of a received packet increments exactly one `rejected_*`
/// counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct E2eCounters {
    /// Own handshakes started (first sessions and rekeys).
    pub handshakes_initiated: u64,
    /// Handshakes that became a session's keys (either role).
    pub handshakes_completed: u64,
    /// Own handshakes that gave up (with or without a session left).
    pub handshakes_failed: u64,
    /// Initiations and XX_FINISH resent by the retry timer or after a
    /// cookie.
    pub handshake_retransmits: u64,
    /// Repeated initiations answered again with the stored response.
    pub handshake_duplicates_answered: u64,
    /// Initiations dropped for a simultaneous own one (the lower ID's
    /// wins).
    pub handshake_collisions: u64,
    /// Own handshakes dropped because the peer's completed first.
    pub handshakes_superseded: u64,
    /// Responder-side handshakes evicted for a newer one.
    pub handshakes_evicted: u64,
    /// Responder-side handshakes that expired unanswered.
    pub handshakes_expired: u64,
    /// Completed handshakes that replaced a session's keys.
    pub rekeys: u64,
    /// Responses to initiations the Diffie-Hellman work was spent on.
    pub responses_sent: u64,
    /// Cookie replies sent (under load, to initiations without a valid
    /// mac2).
    pub cookie_replies_sent: u64,
    /// Cookie replies received and accepted.
    pub cookie_replies_received: u64,
    /// Data packets sent.
    pub packets_sent: u64,
    /// Data packets received (authenticated, delivered as events).
    pub packets_received: u64,
    /// Keepalives sent (the confirmation after a handshake).
    pub keepalives_sent: u64,
    /// Keepalives received.
    pub keepalives_received: u64,
    /// Sessions closed for idleness.
    pub sessions_expired: u64,
    /// Sessions closed because their keys expired.
    pub keys_expired: u64,
    /// Not a valid end-to-end message, or a zero or own source ID.
    pub rejected_bad_packet: u64,
    /// An initiation whose mac1 is wrong (not meant for this node).
    pub rejected_bad_mac: u64,
    /// The overlay source is not the peer of the keys or handshake the
    /// receiver index names (a spoofed source ID).
    pub rejected_spoofed: u64,
    /// A TRANSPORT counter already received or older than the window, or
    /// an initiation seen before.
    pub rejected_replay: u64,
    /// A TRANSPORT or handshake answer that did not decrypt (tampered or
    /// forged).
    pub rejected_decrypt: u64,
    /// A receiver index this node does not have, or whose sender index
    /// does not match.
    pub rejected_unknown_index: u64,
    /// Keys older than `reject_after`.
    pub rejected_expired: u64,
    /// An initiation over the per-source or total handshake rate.
    pub rejected_rate_limited: u64,
    /// An initiation from a node not on the allowlist.
    pub rejected_not_allowed: u64,
    /// An initiation whose Noise message does not decrypt: another network
    /// secret (or a corrupted message).
    pub rejected_network_secret: u64,
    /// A peer's ed25519 key, Noise static key and node ID disagree.
    pub rejected_bad_key: u64,
    /// A handshake message the state of its index does not expect.
    pub rejected_stale_handshake: u64,
    /// A handshake refused because `sessions_max` sessions exist.
    pub rejected_sessions_full: u64,
    /// An initiation refused because every handshake slot holds an own
    /// handshake.
    pub rejected_handshakes_full: u64,
    /// Packets dropped because a queue waiting for a handshake was full.
    pub queue_dropped: u64,
    /// Queued packets dropped because their handshake failed or had no
    /// room.
    pub queue_dropped_failed: u64,
    /// Transmits dropped on a full queue.
    pub transmits_dropped: u64,
    /// Events pushed out of a full queue.
    pub events_dropped: u64,
    /// Failures of the Noise library that cannot happen (bugs).
    pub internal_errors: u64,
}
