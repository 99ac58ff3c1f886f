//! Authenticated neighbor sessions, sans-IO.
//!
//! [`Sessions`] runs the session protocol for one node: it performs no I/O,
//! reads no clock and draws no OS randomness. Time comes in as [`Instant`]s,
//! randomness from the seed given to [`Sessions::new`], packets through
//! [`Sessions::handle_packet`]; packets to send come out of
//! [`Sessions::poll_transmit`], happenings out of [`Sessions::poll_event`].
//!
//! # Driving it
//!
//! Feed every received control packet to `handle_packet`, call
//! `handle_timeout(now)` when the instant from `poll_timeout` has passed,
//! and after any call drain `poll_transmit` (send each [`Transmit`] as one
//! UDP payload) and `poll_event`. Extra calls are harmless: `handle_timeout`
//! acts only on timers that are due, and `poll_timeout` may be asked again at
//! any time. Nothing here panics on any received bytes.
//!
//! # Protocol (v1)
//!
//! **Keys.** A node's Noise static key is its ed25519 identity key
//! converted to X25519: secret = the ed25519 scalar bytes
//! (`SigningKey::to_scalar_bytes`, clamped by X25519 as by ed25519), public =
//! the Montgomery form of the ed25519 public key. No second key is stored or
//! announced.
//!
//! **Handshake.** `Noise_XX_25519_ChaChaPoly_BLAKE2s`, prologue
//! `"xorlay session v1"`, carried in control overlay packets (type 2, hop
//! limit 1: neighbors only, no router relays one; dst = the peer's node ID,
//! or all zero in a HANDSHAKE_1 whose initiator does not know it; src = the
//! sender's node ID). The overlay payload is a session message
//! ([`crate::wire::session`], which has the byte layout):
//!
//! ```text
//! initiator                                             responder
//!   HANDSHAKE_1  [i, 0]  e, 96 zero bytes of padding  ->
//!             <-  HANDSHAKE_2  [r, i]  e, ee, s, es, {ed25519 public key}
//!   HANDSHAKE_3  [i, r]  s, se, {ed25519 public key}  ->
//!             <-  TRANSPORT    [r, i]  counter, {}          (confirmation)
//!   ...          TRANSPORT in both directions
//! ```
//!
//! `[sender index, receiver index]`: each side picks a random nonzero `u32`
//! for the handshake and the session it becomes, and the receiver finds its
//! state by its own index. `{..}` is encrypted and authenticated.
//!
//! **Identity check.** Each side sends its ed25519 public key as the
//! encrypted payload (responder in HANDSHAKE_2, initiator in HANDSHAKE_3).
//! The receiver accepts the peer only if: the key is a valid, not
//! small-order ed25519 point; its Montgomery form equals the Noise remote
//! static key the peer has just proven it holds; the node ID
//! `node_id_of(key)` equals the overlay src of the message (and, at the
//! responder, the src the initiator claimed in HANDSHAKE_1); the ID solves
//! the puzzle at the configured difficulty; and, when the initiator called
//! `connect` with an expected ID, it is that ID. A responder also checks the
//! claimed src's puzzle on HANDSHAKE_1, before spending any Diffie-Hellman
//! work. Every failure is counted and discards the half-open handshake;
//! nothing else changes. A HANDSHAKE_2 or HANDSHAKE_3 that fails to decrypt
//! is counted and ignored, and the half-open handshake keeps waiting for the
//! real one, so an injected packet cannot abort a handshake.
//!
//! **Confirmation.** The responder has a session once HANDSHAKE_3 checks
//! out; it emits `Established` and immediately sends an empty TRANSPORT.
//! The initiator's session is established (and `Established` emitted) when
//! the first authenticated TRANSPORT from the responder arrives; until then
//! it retransmits HANDSHAKE_3. So each side has a session only when the
//! other has one too.
//!
//! **Transport.** A TRANSPORT carries a big-endian `u64` counter, used as
//! the ChaCha20-Poly1305 nonce (snow's stateless transport, so loss and
//! reordering are fine), and the ciphertext of at most [`MESSAGE_LEN_MAX`]
//! bytes. An empty plaintext is a keepalive; `send` refuses empty messages.
//! The overlay header and session header are not covered by the AEAD: the
//! receiver index selects the keys, the sender index and overlay src must
//! match the session, and the hop limit and flags are ignored.
//!
//! **Anti-amplification.** A node answers a stranger only with HANDSHAKE_2,
//! whose overlay packet (212 bytes) is never longer than the HANDSHAKE_1
//! that asked for it: HANDSHAKE_1 is padded to that fixed size, asserted at
//! compile time, and any other length is rejected.
//!
//! **Replays.** Each session has a sliding window of
//! 2048 counters (WireGuard style): a TRANSPORT counter that was
//! already accepted, or is more than 2047 below the highest accepted, is
//! rejected before decryption, and the window is updated only after the
//! AEAD tag verifies. Handshake messages: the SHA-256 of every accepted
//! handshake message is remembered (the last [`SEEN_DIGESTS_MAX`]); a
//! repeat is rejected as a replay, except that a repeat of a HANDSHAKE_1
//! whose half-open handshake is still pending, from the same address, is
//! answered with the same HANDSHAKE_2 again (the initiator retransmitted
//! because the answer was lost; no new state, no new Diffie-Hellman). A
//! HANDSHAKE_1 older than that memory costs at most one half-open slot and
//! never yields a session: finishing needs the initiator's keys. Handshake
//! messages whose receiver index is unknown, or whose state does not expect
//! that message, are rejected and counted (`rejected_unknown_session`,
//! `rejected_stale_handshake`).
//!
//! **Bounds.** At most `half_open_max` half-open handshakes (both roles
//! together): a new HANDSHAKE_1 evicts the oldest responder-side one; own
//! initiations are never evicted by strangers (if all slots are own
//! initiations, the HANDSHAKE_1 is dropped, and a `connect` beyond the limit
//! fails with `HalfOpenFull`). At most `sessions_max` sessions: beyond it a
//! HANDSHAKE_1 from a node without a session is dropped and `connect` fails
//! with `SessionsFull`. Half-open handshakes expire after
//! `handshake_timeout`. The initiator sends HANDSHAKE_1 (and later
//! HANDSHAKE_3) up to `handshake_retries` times, waiting
//! `handshake_retry_interval` after the first send and doubling each time,
//! then reports `ConnectFailed { reason: Timeout }` (defaults: sends at 0,
//! 250 and 750 ms, failure at 1.75 s). The transmit and event queues hold
//! [`TRANSMIT_QUEUE_MAX`] and [`EVENT_QUEUE_MAX`] entries: a transmit beyond
//! that is dropped (counted; `send` returns `QueueFull` instead), an event
//! beyond it pushes out the oldest event (counted).
//!
//! **Liveness.** A session sends an empty TRANSPORT when it has sent
//! nothing for `keepalive_interval`, and is closed with
//! `Closed { reason: Timeout }` when nothing authenticated arrived for
//! `dead_after`. An authenticated TRANSPORT from a new address moves the
//! session there (roaming: counted in `peer_addr_changes`; `peer_addr` and
//! `peers` report the new address).
//!
//! **One session per peer.** A completed handshake with a peer that
//! already has a session replaces it (`Closed { reason: Replaced }`, then
//! `Established`): a peer that restarted with the same key simply
//! reconnects. Simultaneous handshakes in both directions converge on the
//! one initiated by the lower node ID: (1) a node that is itself initiating
//! towards the claimed sender of a HANDSHAKE_1 and has the lower ID drops
//! that HANDSHAKE_1 (`handshake_collisions`); the higher node answers it and
//! abandons its own initiation once the other's completes. (2) When both
//! handshakes got past HANDSHAKE_2 anyway (the collision was not visible,
//! e.g. the initiator did not know the peer's ID and it answered from
//! another address), a completing handshake loses to a session or a pending
//! own initiation with the same peer that is concurrent with it (the other
//! one was established after this one started, by a local sequence count)
//! and was initiated by the lower ID. Both sides apply the same rule, so
//! they keep the same handshake.
//!
//! **Out of scope.** Rekeying: a session lives until it dies or is closed
//! (a counter limit of 2^60 messages makes `send` fail with `Exhausted`).
//! There is no close message: a closed peer notices by timeout. No
//! cookie/proof-of-address exchange before the responder's Diffie-Hellman
//! work: HANDSHAKE_1 floods are bounded by the half-open limit here and by
//! the data plane's per-source token buckets.
//!
//! **Counters, not logs.** This core never logs; every rejection is counted
//! in [`SessionCounters`], and the shell logs counter deltas.

mod noise;
mod replay;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snow::{HandshakeState, StatelessTransportState};

use self::noise::KeystreamRng;
use self::replay::ReplayWindow;
use super::identity::{Identity, solves_puzzle};
use crate::id::NodeId;
use crate::wire::overlay::HEADER_LEN as OVERLAY_HEADER_LEN;
use crate::wire::session::{
    self as wire, HANDSHAKE_1_NOISE_LEN, HANDSHAKE_1_PADDING_LEN, HANDSHAKE_2_NOISE_LEN,
    HANDSHAKE_3_NOISE_LEN, IDENTITY_PAYLOAD_LEN, TAG_LEN,
};
use crate::wire::{OverlayPacket, OverlayRepr, PacketType};

pub use crate::wire::session::MESSAGE_LEN_MAX;

/// Transmits held before [`Sessions::poll_transmit`] takes them.
pub const TRANSMIT_QUEUE_MAX: usize = 1024;
/// Events held before [`Sessions::poll_event`] takes them.
pub const EVENT_QUEUE_MAX: usize = 1024;
/// Digests of accepted handshake messages remembered to reject replays.
pub const SEEN_DIGESTS_MAX: usize = 4096;
/// Messages one session may send (rekeying is out of scope).
pub const SEND_COUNTER_MAX: u64 = 1 << 60;
/// Longest duration accepted in [`SessionConfig`]; longer is clamped.
pub const CONFIG_DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Shortest timer interval accepted in [`SessionConfig`]; shorter is
/// clamped (a zero interval would spin).
pub const CONFIG_DURATION_MIN: Duration = Duration::from_millis(1);

/// Tunables of [`Sessions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Puzzle bits a peer's node ID must have (`identity::solves_puzzle`).
    pub difficulty: u32,
    /// Send a keepalive after this long without sending.
    pub keepalive_interval: Duration,
    /// Close a session after this long without receiving anything
    /// authenticated; several keepalive intervals, so that a lost keepalive
    /// or two does not close it.
    pub dead_after: Duration,
    /// A half-open handshake is abandoned after this long.
    pub handshake_timeout: Duration,
    /// Wait after the first HANDSHAKE_1 (or HANDSHAKE_3) before resending;
    /// doubles with each send.
    pub handshake_retry_interval: Duration,
    /// Sends of HANDSHAKE_1 (and of HANDSHAKE_3) before giving up (at least
    /// 1).
    pub handshake_retries: u32,
    /// Half-open handshakes held at once, both roles together (at least 1).
    pub half_open_max: usize,
    /// Sessions held at once (at least 1).
    pub sessions_max: usize,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            difficulty: 0,
            keepalive_interval: Duration::from_millis(250),
            dead_after: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            handshake_retry_interval: Duration::from_millis(250),
            handshake_retries: 3,
            half_open_max: 256,
            sessions_max: 1024,
        }
    }
}

impl SessionConfig {
    /// The configuration with every value brought into its valid range.
    fn clamped(self) -> SessionConfig {
        let clamp = |d: Duration| d.clamp(CONFIG_DURATION_MIN, CONFIG_DURATION_MAX);
        SessionConfig {
            difficulty: self.difficulty,
            keepalive_interval: clamp(self.keepalive_interval),
            dead_after: clamp(self.dead_after),
            handshake_timeout: clamp(self.handshake_timeout),
            handshake_retry_interval: clamp(self.handshake_retry_interval),
            handshake_retries: self.handshake_retries.max(1),
            half_open_max: self.half_open_max.max(1),
            sessions_max: self.sessions_max.max(1),
        }
    }
}

/// A packet to send: one whole overlay packet (header and payload), to be
/// sent as one UDP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The underlay address to send to.
    pub to: SocketAddr,
    /// The overlay packet.
    pub bytes: Vec<u8>,
}

/// Something the owner of [`Sessions`] should know.
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
    /// [`Sessions::close`] was called.
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

/// Why [`Sessions::send`] refused a message.
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
    /// The session sent [`SEND_COUNTER_MAX`] messages (rekeying is not
    /// implemented): close it and connect again.
    #[error("session counter exhausted; close the session and connect again")]
    Exhausted,
}

/// What [`Sessions`] did and refused, cumulative. Every rejection of a
/// received packet increments exactly one `rejected_*` counter.
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

/// SHA-256 of a handshake message.
type MessageDigest = [u8; 32];

/// The retransmission schedule of an own handshake message.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// Times the message was sent.
    sends: u32,
    /// When to resend (or give up).
    next: Instant,
}

/// A handshake in progress.
struct HalfOpen {
    /// The peer's address (the `connect` address, or where the last
    /// authenticated handshake message came from).
    addr: SocketAddr,
    /// Local order of starts, for the simultaneous-open rule.
    started_seq: u64,
    /// When it is abandoned.
    expires: Instant,
    state: HalfOpenState,
}

enum HalfOpenState {
    /// Initiator: sent HANDSHAKE_1, waiting for HANDSHAKE_2.
    AwaitH2 {
        hs: Box<HandshakeState>,
        expect: Option<NodeId>,
        packet: Vec<u8>,
        retry: Retry,
    },
    /// Initiator: sent HANDSHAKE_3, waiting for the first TRANSPORT.
    AwaitConfirm {
        transport: Box<StatelessTransportState>,
        expect: Option<NodeId>,
        peer: NodeId,
        remote_index: u32,
        packet: Vec<u8>,
        retry: Retry,
    },
    /// Responder: sent HANDSHAKE_2, waiting for HANDSHAKE_3.
    AwaitH3 {
        hs: Box<HandshakeState>,
        claimed: NodeId,
        remote_index: u32,
        h1_digest: MessageDigest,
        reply: Vec<u8>,
        /// The handshake's seed and HANDSHAKE_1, to rebuild `hs` after a
        /// HANDSHAKE_3 that failed to decrypt: snow's failed read leaves
        /// its cipher state changed, and message 3 starts with a decrypt.
        seed: [u8; 32],
        h1_noise: Box<[u8; HANDSHAKE_1_NOISE_LEN]>,
    },
}

impl HalfOpen {
    fn is_responder(&self) -> bool {
        matches!(self.state, HalfOpenState::AwaitH3 { .. })
    }

    /// The `connect` arguments of an own handshake.
    fn connect_args(&self) -> Option<(SocketAddr, Option<NodeId>)> {
        match &self.state {
            HalfOpenState::AwaitH2 { expect, .. } | HalfOpenState::AwaitConfirm { expect, .. } => {
                Some((self.addr, *expect))
            }
            HalfOpenState::AwaitH3 { .. } => None,
        }
    }

    /// Whether this is an own handshake towards `peer` (known or expected),
    /// or towards `addr` without an expected ID.
    fn initiates_to(&self, peer: &NodeId, addr: SocketAddr) -> bool {
        match &self.state {
            HalfOpenState::AwaitH2 { expect, .. } => match expect {
                Some(id) => id == peer,
                None => self.addr == addr,
            },
            HalfOpenState::AwaitConfirm { peer: p, .. } => p == peer,
            HalfOpenState::AwaitH3 { .. } => false,
        }
    }

    /// The next instant this handshake needs attention.
    fn deadline(&self) -> Instant {
        match &self.state {
            HalfOpenState::AwaitH2 { retry, .. } | HalfOpenState::AwaitConfirm { retry, .. } => {
                retry.next.min(self.expires)
            }
            HalfOpenState::AwaitH3 { .. } => self.expires,
        }
    }
}

/// An established session.
struct Session {
    peer: NodeId,
    addr: SocketAddr,
    remote_index: u32,
    transport: Box<StatelessTransportState>,
    send_counter: u64,
    replay: ReplayWindow,
    last_sent: Instant,
    last_received: Instant,
    /// Who sent HANDSHAKE_1.
    initiator: NodeId,
    /// Local order of establishment, for the simultaneous-open rule.
    established_seq: u64,
}

/// Digests of accepted handshake messages, oldest forgotten first.
struct SeenDigests {
    set: BTreeSet<MessageDigest>,
    order: VecDeque<MessageDigest>,
}

impl SeenDigests {
    fn contains(&self, digest: &MessageDigest) -> bool {
        self.set.contains(digest)
    }

    fn insert(&mut self, digest: MessageDigest) {
        if !self.set.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > SEEN_DIGESTS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// The session layer of one node: handshakes, sessions, timers, queues.
///
/// Call order: any `handle_*`, `connect`, `send` or `close` call, then
/// drain [`Sessions::poll_transmit`] and [`Sessions::poll_event`], then
/// wait until [`Sessions::poll_timeout`] (or the next packet) and call
/// [`Sessions::handle_timeout`].
pub struct Sessions {
    identity: Identity,
    local_id: NodeId,
    config: SessionConfig,
    rng: KeystreamRng,
    /// Local order of starts and establishments.
    seq: u64,
    half_open: BTreeMap<u32, HalfOpen>,
    sessions: BTreeMap<u32, Session>,
    by_peer: BTreeMap<NodeId, u32>,
    seen: SeenDigests,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    counters: SessionCounters,
}

/// The common facts of a received session message.
#[derive(Clone, Copy)]
struct Received<'a> {
    now: Instant,
    /// The underlay address it came from.
    from: SocketAddr,
    /// The overlay source (unauthenticated until checked).
    src: NodeId,
    /// The sender's session index.
    remote_index: u32,
    /// The receiver index (ours; 0 in HANDSHAKE_1).
    index: u32,
    /// The whole session message, for replay digests.
    message: &'a [u8],
}

/// Why a completed handshake did not become a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// A simultaneous handshake with the same peer wins.
    Collision,
    /// `sessions_max` sessions exist.
    SessionsFull,
}

/// What a received message decided about a half-open handshake that was
/// taken out of the table.
enum Outcome {
    /// Put it back unchanged.
    Keep(HalfOpen),
    /// It is gone (completed, failed or superseded).
    Done,
}

impl Sessions {
    /// The session layer of `identity`. `config` values outside their range
    /// are clamped (see the field docs); `rng_seed` is the only source of
    /// randomness (session indexes, ephemeral keys): give each instance a
    /// fresh secret seed from the OS.
    pub fn new(identity: Identity, config: SessionConfig, rng_seed: [u8; 32]) -> Sessions {
        // Invariant: snow's default resolver has ChaChaPoly with this
        // crate's features (snow defaults); `noise::tests` check it.
        let rng = KeystreamRng::new(&rng_seed).expect("snow provides ChaChaPoly");
        Sessions {
            local_id: identity.node_id(),
            identity,
            config: config.clamped(),
            rng,
            seq: 0,
            half_open: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            seen: SeenDigests {
                set: BTreeSet::new(),
                order: VecDeque::new(),
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: SessionCounters::default(),
        }
    }

    /// This node's ID.
    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    /// The configuration in use (after clamping).
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Starts a handshake with whoever is at `addr`; with `Some(id)`, only
    /// a node proving that ID is accepted. The outcome is an `Established`
    /// or a `ConnectFailed` event. Nothing happens if a session with the
    /// expected ID exists or the same handshake is already in progress.
    pub fn connect(&mut self, now: Instant, addr: SocketAddr, expect: Option<NodeId>) {
        if expect == Some(self.local_id) {
            self.connect_failed(addr, expect, ConnectFailure::SelfConnect);
            return;
        }
        if let Some(id) = expect
            && self.by_peer.contains_key(&id)
        {
            return;
        }
        let pending = self.half_open.values().any(|h| match h.connect_args() {
            Some((a, e)) => e == expect && (expect.is_some() || a == addr),
            None => false,
        });
        if pending {
            return;
        }
        if self.sessions.len() >= self.config.sessions_max {
            self.connect_failed(addr, expect, ConnectFailure::SessionsFull);
            return;
        }
        if !self.make_half_open_room() {
            self.connect_failed(addr, expect, ConnectFailure::HalfOpenFull);
            return;
        }
        match self.start_initiator(now, addr, expect) {
            Some(half_open) => {
                let index = half_open.0;
                self.half_open.insert(index, half_open.1);
                self.counters.handshakes_initiated += 1;
            }
            None => {
                self.counters.internal_errors += 1;
                self.connect_failed(addr, expect, ConnectFailure::Internal);
            }
        }
    }

    /// A received control overlay packet (the whole UDP payload, overlay
    /// header included) from `from`. Never panics; every rejection is
    /// counted.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        let Ok(overlay) = OverlayPacket::new_checked(packet) else {
            self.counters.rejected_bad_packet += 1;
            return;
        };
        let Ok(header) = OverlayRepr::parse(&overlay) else {
            self.counters.rejected_bad_packet += 1;
            return;
        };
        let payload = packet.get(OVERLAY_HEADER_LEN..).unwrap_or_default();
        let Ok(message) = wire::Repr::parse_bytes(payload) else {
            self.counters.rejected_bad_packet += 1;
            return;
        };
        let zero = NodeId::default();
        if header.packet_type != PacketType::Control
            || header.src == zero
            || header.src == self.local_id
        {
            self.counters.rejected_bad_packet += 1;
            return;
        }
        let for_us = header.dst == self.local_id
            || (header.dst == zero && matches!(message, wire::Repr::Handshake1 { .. }));
        if !for_us {
            self.counters.rejected_wrong_destination += 1;
            return;
        }
        let rx = Received {
            now,
            from,
            src: header.src,
            remote_index: message.sender_index(),
            index: message.receiver_index(),
            message: payload,
        };
        match message {
            wire::Repr::Handshake1 { noise, .. } => self.handle_h1(&rx, noise, packet.len()),
            wire::Repr::Handshake2 { noise, .. } => {
                self.handle_handshake_reply(&rx, noise, Sessions::h2_for)
            }
            wire::Repr::Handshake3 { noise, .. } => {
                self.handle_handshake_reply(&rx, noise, Sessions::h3_for)
            }
            wire::Repr::Transport {
                counter,
                ciphertext,
                ..
            } => self.handle_transport(&rx, counter, ciphertext),
        }
    }

    /// Encrypts `message` (1 to [`MESSAGE_LEN_MAX`] bytes) to the
    /// established `peer` and queues it.
    pub fn send(
        &mut self,
        now: Instant,
        peer: &NodeId,
        message: &[u8],
    ) -> Result<(), SessionError> {
        if message.is_empty() {
            return Err(SessionError::Empty);
        }
        if message.len() > MESSAGE_LEN_MAX {
            return Err(SessionError::TooLong { len: message.len() });
        }
        let index = *self
            .by_peer
            .get(peer)
            .ok_or(SessionError::NotEstablished(*peer))?;
        if self.transmits.len() >= TRANSMIT_QUEUE_MAX {
            return Err(SessionError::QueueFull);
        }
        let (to, bytes) = self.seal(now, index, message)?;
        self.push_transmit(to, bytes);
        self.counters.messages_sent += 1;
        Ok(())
    }

    /// Drops the session with `peer` (if any) and emits
    /// `Closed { reason: Local }`. The peer is not told; it times out.
    pub fn close(&mut self, peer: &NodeId) {
        if let Some(index) = self.by_peer.remove(peer)
            && let Some(session) = self.sessions.remove(&index)
        {
            self.counters.sessions_closed += 1;
            self.push_event(SessionEvent::Closed {
                peer: *peer,
                addr: session.addr,
                reason: CloseReason::Local,
            });
        }
    }

    /// Runs the timers due at `now`: retransmissions, handshake expiry,
    /// keepalives, dead sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .half_open
            .iter()
            .filter(|(_, h)| h.deadline() <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in due {
            if let Some(half_open) = self.half_open.remove(&index)
                && let Some(kept) = self.half_open_timer(now, half_open)
            {
                self.half_open.insert(index, kept);
            }
        }

        let due: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                later(s.last_received, self.config.dead_after) <= now
                    || later(s.last_sent, self.config.keepalive_interval) <= now
            })
            .map(|(index, _)| *index)
            .collect();
        for index in due {
            let Some(session) = self.sessions.get(&index) else {
                continue;
            };
            if later(session.last_received, self.config.dead_after) <= now {
                let (peer, addr) = (session.peer, session.addr);
                self.sessions.remove(&index);
                self.by_peer.remove(&peer);
                self.counters.sessions_timed_out += 1;
                self.push_event(SessionEvent::Closed {
                    peer,
                    addr,
                    reason: CloseReason::Timeout,
                });
            } else {
                self.send_keepalive(now, index);
            }
        }
    }

    /// When [`Sessions::handle_timeout`] should next be called, if any
    /// timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let half_open = self.half_open.values().map(HalfOpen::deadline);
        let sessions = self.sessions.values().map(|s| {
            let dead = later(s.last_received, self.config.dead_after);
            let keepalive = later(s.last_sent, self.config.keepalive_interval);
            dead.min(keepalive)
        });
        half_open.chain(sessions).min()
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Established peers and their addresses, in node ID order.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.by_peer
            .iter()
            .filter_map(|(peer, index)| self.sessions.get(index).map(|s| (*peer, s.addr)))
    }

    /// The address of an established peer.
    pub fn peer_addr(&self, peer: &NodeId) -> Option<SocketAddr> {
        self.by_peer
            .get(peer)
            .and_then(|index| self.sessions.get(index))
            .map(|s| s.addr)
    }

    /// Number of established sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of half-open handshakes (both roles).
    pub fn half_open_count(&self) -> usize {
        self.half_open.len()
    }

    /// The counters so far.
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    // ----- handshake messages -----

    /// Builds and sends HANDSHAKE_1; returns the new half-open handshake
    /// and its index, or `None` on an internal failure.
    fn start_initiator(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expect: Option<NodeId>,
    ) -> Option<(u32, HalfOpen)> {
        let index = self.fresh_index()?;
        let mut hs =
            noise::handshake(true, &self.identity.x25519_secret(), self.rng.next_seed()).ok()?;
        // snow wants room for a tag even where message 1 has none.
        let mut noise = [0u8; HANDSHAKE_1_NOISE_LEN + TAG_LEN];
        let written = hs
            .write_message(&[0u8; HANDSHAKE_1_PADDING_LEN], &mut noise)
            .ok()?;
        if written != HANDSHAKE_1_NOISE_LEN {
            return None;
        }
        let message = wire::Repr::Handshake1 {
            sender_index: index,
            noise: &noise[..written],
        };
        let packet = self.frame(&expect.unwrap_or_default(), &message);
        self.push_transmit(addr, packet.clone());
        let half_open = HalfOpen {
            addr,
            started_seq: self.next_seq(),
            expires: later(now, self.config.handshake_timeout),
            state: HalfOpenState::AwaitH2 {
                hs: Box::new(hs),
                expect,
                packet,
                retry: Retry {
                    sends: 1,
                    next: later(now, self.config.handshake_retry_interval),
                },
            },
        };
        Some((index, half_open))
    }

    fn handle_h1(&mut self, rx: &Received<'_>, noise: &[u8], request_len: usize) {
        let Received {
            now,
            from,
            src: claimed,
            remote_index,
            ..
        } = *rx;
        let digest = digest(rx.message);
        // A repeat of a pending HANDSHAKE_1: our HANDSHAKE_2 was lost.
        let pending = self.half_open.values().find_map(|h| match &h.state {
            HalfOpenState::AwaitH3 {
                h1_digest, reply, ..
            } if *h1_digest == digest => Some((h.addr, reply.clone())),
            _ => None,
        });
        if let Some((addr, reply)) = pending {
            if addr == from {
                self.counters.handshake_duplicates_answered += 1;
                self.push_transmit(from, reply);
            } else {
                self.counters.rejected_replay += 1;
            }
            return;
        }
        if self.seen.contains(&digest) {
            self.counters.rejected_replay += 1;
            return;
        }
        if !solves_puzzle(&claimed, self.config.difficulty) {
            self.counters.rejected_puzzle += 1;
            return;
        }
        // Simultaneous open: the lower ID's initiation wins.
        if self.local_id < claimed
            && self
                .half_open
                .values()
                .any(|h| h.initiates_to(&claimed, from))
        {
            self.counters.handshake_collisions += 1;
            return;
        }
        if self.sessions.len() >= self.config.sessions_max && !self.by_peer.contains_key(&claimed) {
            self.counters.rejected_sessions_full += 1;
            return;
        }
        if !self.make_half_open_room() {
            self.counters.rejected_half_open_full += 1;
            return;
        }
        let Some(index) = self.fresh_index() else {
            self.counters.internal_errors += 1;
            return;
        };
        let Ok(h1_noise) = <[u8; HANDSHAKE_1_NOISE_LEN]>::try_from(noise) else {
            // The parser fixed the length.
            self.counters.internal_errors += 1;
            return;
        };
        let seed = self.rng.next_seed();
        let Some((hs, reply_noise)) = self.respond(seed, &h1_noise) else {
            self.counters.internal_errors += 1;
            return;
        };
        let reply = self.frame(
            &claimed,
            &wire::Repr::Handshake2 {
                sender_index: index,
                receiver_index: remote_index,
                noise: &reply_noise,
            },
        );
        // Anti-amplification; holds by construction (wire::session asserts
        // HANDSHAKE_2_LEN <= HANDSHAKE_1_LEN and parsing fixes the length).
        if reply.len() > request_len {
            self.counters.internal_errors += 1;
            return;
        }
        self.seen.insert(digest);
        self.push_transmit(from, reply.clone());
        let half_open = HalfOpen {
            addr: from,
            started_seq: self.next_seq(),
            expires: later(now, self.config.handshake_timeout),
            state: HalfOpenState::AwaitH3 {
                hs: Box::new(hs),
                claimed,
                remote_index,
                h1_digest: digest,
                reply,
                seed,
                h1_noise: Box::new(h1_noise),
            },
        };
        self.half_open.insert(index, half_open);
    }

    /// The responder's handshake state after reading HANDSHAKE_1's Noise
    /// message and writing HANDSHAKE_2's, and the latter. Deterministic:
    /// the same seed and message give the same state and reply.
    fn respond(
        &self,
        seed: [u8; 32],
        h1_noise: &[u8; HANDSHAKE_1_NOISE_LEN],
    ) -> Option<(HandshakeState, [u8; HANDSHAKE_2_NOISE_LEN])> {
        let mut hs = noise::handshake(false, &self.identity.x25519_secret(), seed).ok()?;
        let mut padding = [0u8; HANDSHAKE_1_PADDING_LEN];
        // Message 1 is plaintext: reading it only fails on a wrong length.
        hs.read_message(h1_noise, &mut padding).ok()?;
        let mut reply_noise = [0u8; HANDSHAKE_2_NOISE_LEN];
        let payload = self.identity.public_key().to_bytes();
        let written = hs.write_message(&payload, &mut reply_noise).ok()?;
        (written == reply_noise.len()).then_some((hs, reply_noise))
    }

    /// A HANDSHAKE_2 or HANDSHAKE_3 for the half-open handshake `rx.index`:
    /// replays are rejected, then `step` decides whether the handshake
    /// stays half-open.
    fn handle_handshake_reply(
        &mut self,
        rx: &Received<'_>,
        noise: &[u8],
        step: fn(&mut Sessions, &Received<'_>, &[u8], MessageDigest, HalfOpen) -> Outcome,
    ) {
        let digest = digest(rx.message);
        if self.seen.contains(&digest) {
            self.counters.rejected_replay += 1;
            return;
        }
        let Some(half_open) = self.take_half_open(rx.index) else {
            return;
        };
        if let Outcome::Keep(half_open) = step(self, rx, noise, digest, half_open) {
            self.half_open.insert(rx.index, half_open);
        }
    }

    fn h2_for(
        &mut self,
        rx: &Received<'_>,
        noise: &[u8],
        digest: MessageDigest,
        mut half_open: HalfOpen,
    ) -> Outcome {
        let Received {
            now,
            from,
            src,
            remote_index,
            index,
            ..
        } = *rx;
        let HalfOpenState::AwaitH2 { hs, expect, .. } = &mut half_open.state else {
            self.counters.rejected_stale_handshake += 1;
            return Outcome::Keep(half_open);
        };
        let expect = *expect;
        let mut payload = [0u8; IDENTITY_PAYLOAD_LEN];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            // Not from the responder: keep waiting. snow restores its hash
            // state, and message 2 re-keys from it (`ee`) before its first
            // decrypt, so the real HANDSHAKE_2 still reads (tested).
            self.counters.rejected_decrypt += 1;
            return Outcome::Keep(half_open);
        };
        let addr = half_open.addr;
        let peer = match self.check_peer(&payload[..len], hs.get_remote_static(), src) {
            Ok(peer) => peer,
            Err(reason) => {
                self.connect_failed(addr, expect, reason);
                return Outcome::Done;
            }
        };
        if expect.is_some_and(|id| id != peer) {
            self.counters.rejected_unexpected_peer += 1;
            self.connect_failed(addr, expect, ConnectFailure::UnexpectedPeer);
            return Outcome::Done;
        }
        if !self.wins(&peer, &self.local_id, half_open.started_seq, index) {
            self.counters.handshake_collisions += 1;
            return Outcome::Done;
        }
        let HalfOpenState::AwaitH2 { hs, .. } = half_open.state else {
            // Matched above; the state has not changed since.
            return Outcome::Done;
        };
        let mut hs = *hs;
        let mut reply_noise = [0u8; HANDSHAKE_3_NOISE_LEN];
        let payload = self.identity.public_key().to_bytes();
        let written = hs.write_message(&payload, &mut reply_noise);
        let transport = hs.into_stateless_transport_mode();
        let (Ok(written), Ok(transport)) = (written, transport) else {
            self.counters.internal_errors += 1;
            self.connect_failed(addr, expect, ConnectFailure::Internal);
            return Outcome::Done;
        };
        if written != reply_noise.len() {
            self.counters.internal_errors += 1;
            self.connect_failed(addr, expect, ConnectFailure::Internal);
            return Outcome::Done;
        }
        let packet = self.frame(
            &peer,
            &wire::Repr::Handshake3 {
                sender_index: index,
                receiver_index: remote_index,
                noise: &reply_noise,
            },
        );
        self.seen.insert(digest);
        self.push_transmit(from, packet.clone());
        Outcome::Keep(HalfOpen {
            addr: from,
            started_seq: half_open.started_seq,
            expires: half_open.expires,
            state: HalfOpenState::AwaitConfirm {
                transport: Box::new(transport),
                expect,
                peer,
                remote_index,
                packet,
                retry: Retry {
                    sends: 1,
                    next: later(now, self.config.handshake_retry_interval),
                },
            },
        })
    }

    fn h3_for(
        &mut self,
        rx: &Received<'_>,
        noise: &[u8],
        digest: MessageDigest,
        mut half_open: HalfOpen,
    ) -> Outcome {
        let Received {
            now,
            from,
            src,
            remote_index,
            index,
            ..
        } = *rx;
        let HalfOpenState::AwaitH3 {
            hs,
            claimed,
            remote_index: expected_remote,
            ..
        } = &mut half_open.state
        else {
            self.counters.rejected_stale_handshake += 1;
            return Outcome::Keep(half_open);
        };
        if *expected_remote != remote_index {
            self.counters.rejected_unknown_session += 1;
            return Outcome::Keep(half_open);
        }
        let claimed = *claimed;
        let mut payload = [0u8; IDENTITY_PAYLOAD_LEN];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            self.counters.rejected_decrypt += 1;
            // Not from the initiator: rebuild the state it damaged and keep
            // waiting for the real HANDSHAKE_3.
            let HalfOpenState::AwaitH3 {
                hs,
                seed,
                h1_noise,
                reply,
                ..
            } = &mut half_open.state
            else {
                return Outcome::Keep(half_open);
            };
            return match self.respond(*seed, h1_noise) {
                Some((fresh, reply_noise)) if reply.ends_with(&reply_noise) => {
                    **hs = fresh;
                    Outcome::Keep(half_open)
                }
                _ => {
                    self.counters.internal_errors += 1;
                    Outcome::Done
                }
            };
        };
        let peer = match self.check_peer(&payload[..len], hs.get_remote_static(), src) {
            Ok(peer) => peer,
            Err(_) => return Outcome::Done,
        };
        if peer != claimed {
            // Authenticated as someone else than HANDSHAKE_1 claimed.
            self.counters.rejected_bad_key += 1;
            return Outcome::Done;
        }
        let HalfOpenState::AwaitH3 { hs, .. } = half_open.state else {
            // Matched above; the state has not changed since.
            return Outcome::Done;
        };
        let Ok(transport) = hs.into_stateless_transport_mode() else {
            self.counters.internal_errors += 1;
            return Outcome::Done;
        };
        self.seen.insert(digest);
        let session = Session {
            peer,
            addr: from,
            remote_index,
            transport: Box::new(transport),
            send_counter: 0,
            replay: ReplayWindow::new(),
            last_sent: now,
            last_received: now,
            initiator: peer,
            established_seq: 0,
        };
        if self.complete(index, session, half_open.started_seq).is_ok() {
            // Confirm to the initiator, which waits for a TRANSPORT.
            self.send_keepalive(now, index);
        }
        Outcome::Done
    }

    /// Checks a handshake's identity payload (see the module docs) against
    /// the proven Noise static key and the overlay source; counts failures.
    fn check_peer(
        &mut self,
        payload: &[u8],
        remote_static: Option<&[u8]>,
        src: NodeId,
    ) -> Result<NodeId, ConnectFailure> {
        let Some(peer) = noise::authenticate(payload, remote_static) else {
            self.counters.rejected_bad_key += 1;
            return Err(ConnectFailure::BadKey);
        };
        if peer != src {
            self.counters.rejected_bad_key += 1;
            return Err(ConnectFailure::BadKey);
        }
        if peer == self.local_id {
            self.counters.rejected_bad_key += 1;
            return Err(ConnectFailure::SelfConnect);
        }
        if !solves_puzzle(&peer, self.config.difficulty) {
            self.counters.rejected_puzzle += 1;
            return Err(ConnectFailure::Puzzle);
        }
        Ok(peer)
    }

    /// Whether a handshake with `peer` initiated by `initiator` and started
    /// at `started_seq` may complete, given the session and own pending
    /// handshakes with the same peer (simultaneous-open rule, module docs).
    fn wins(&self, peer: &NodeId, initiator: &NodeId, started_seq: u64, index: u32) -> bool {
        if let Some(old) = self.by_peer.get(peer).and_then(|i| self.sessions.get(i)) {
            let concurrent = old.established_seq > started_seq;
            if concurrent && old.initiator != *initiator && old.initiator < *initiator {
                return false;
            }
        }
        let own_pending = self.half_open.iter().any(|(i, h)| {
            *i != index
                && matches!(&h.state, HalfOpenState::AwaitConfirm { peer: p, .. } if p == peer)
        });
        !(own_pending && *initiator != self.local_id && self.local_id < *initiator)
    }

    /// Installs a completed handshake as the session with its peer, unless
    /// it loses to a simultaneous one or there is no room.
    fn complete(
        &mut self,
        index: u32,
        mut session: Session,
        started_seq: u64,
    ) -> Result<(), Refused> {
        let peer = session.peer;
        if !self.wins(&peer, &session.initiator, started_seq, index) {
            self.counters.handshake_collisions += 1;
            return Err(Refused::Collision);
        }
        if !self.by_peer.contains_key(&peer) && self.sessions.len() >= self.config.sessions_max {
            self.counters.rejected_sessions_full += 1;
            return Err(Refused::SessionsFull);
        }
        if let Some(old) = self.by_peer.remove(&peer)
            && let Some(replaced) = self.sessions.remove(&old)
        {
            self.counters.sessions_replaced += 1;
            self.push_event(SessionEvent::Closed {
                peer,
                addr: replaced.addr,
                reason: CloseReason::Replaced,
            });
        }
        // Own handshakes towards this peer are satisfied.
        let addr = session.addr;
        let superseded: Vec<u32> = self
            .half_open
            .iter()
            .filter(|(i, h)| **i != index && h.initiates_to(&peer, addr))
            .map(|(i, _)| *i)
            .collect();
        for i in superseded {
            self.half_open.remove(&i);
            self.counters.handshakes_superseded += 1;
        }
        session.established_seq = self.next_seq();
        self.sessions.insert(index, session);
        self.by_peer.insert(peer, index);
        self.counters.handshakes_completed += 1;
        self.push_event(SessionEvent::Established { peer, addr });
        Ok(())
    }

    /// Removes the half-open handshake at `index`, counting a miss.
    fn take_half_open(&mut self, index: u32) -> Option<HalfOpen> {
        let half_open = self.half_open.remove(&index);
        if half_open.is_none() {
            if self.sessions.contains_key(&index) {
                self.counters.rejected_stale_handshake += 1;
            } else {
                self.counters.rejected_unknown_session += 1;
            }
        }
        half_open
    }

    // ----- transport -----

    fn handle_transport(&mut self, rx: &Received<'_>, counter: u64, ciphertext: &[u8]) {
        let Some(session) = self.sessions.get_mut(&rx.index) else {
            self.confirm(rx, counter, ciphertext);
            return;
        };
        if session.remote_index != rx.remote_index || session.peer != rx.src {
            self.counters.rejected_unknown_session += 1;
            return;
        }
        if !session.replay.check(counter) {
            self.counters.rejected_replay += 1;
            return;
        }
        let mut plaintext = vec![0u8; ciphertext.len()];
        let Ok(len) = session
            .transport
            .read_message(counter, ciphertext, &mut plaintext)
        else {
            self.counters.rejected_decrypt += 1;
            return;
        };
        session.replay.accept(counter);
        session.last_received = rx.now;
        let peer = session.peer;
        if session.addr != rx.from {
            // Roaming: the peer proved itself from a new address.
            session.addr = rx.from;
            self.counters.peer_addr_changes += 1;
        }
        self.deliver(peer, rx.from, plaintext, len);
    }

    /// A TRANSPORT for an index without a session: the confirmation an own
    /// handshake waits for, or a reject.
    fn confirm(&mut self, rx: &Received<'_>, counter: u64, ciphertext: &[u8]) {
        let Some(half_open) = self.half_open.remove(&rx.index) else {
            self.counters.rejected_unknown_session += 1;
            return;
        };
        let mut plaintext = vec![0u8; ciphertext.len()];
        // None: not a handshake waiting for this peer's confirmation;
        // Some(None): it is, but the message does not decrypt.
        let decrypted = match &half_open.state {
            HalfOpenState::AwaitConfirm {
                transport,
                peer,
                remote_index,
                ..
            } if *peer == rx.src && *remote_index == rx.remote_index => Some(
                transport
                    .read_message(counter, ciphertext, &mut plaintext)
                    .ok(),
            ),
            _ => None,
        };
        let len = match decrypted {
            Some(Some(len)) => len,
            Some(None) => {
                self.counters.rejected_decrypt += 1;
                self.half_open.insert(rx.index, half_open);
                return;
            }
            None => {
                self.counters.rejected_unknown_session += 1;
                self.half_open.insert(rx.index, half_open);
                return;
            }
        };
        let HalfOpenState::AwaitConfirm {
            transport,
            peer,
            expect,
            ..
        } = half_open.state
        else {
            // Matched above.
            return;
        };
        let mut replay = ReplayWindow::new();
        replay.accept(counter);
        let session = Session {
            peer,
            addr: rx.from,
            remote_index: rx.remote_index,
            transport,
            send_counter: 0,
            replay,
            last_sent: rx.now,
            last_received: rx.now,
            initiator: self.local_id,
            established_seq: 0,
        };
        match self.complete(rx.index, session, half_open.started_seq) {
            Ok(()) => self.deliver(peer, rx.from, plaintext, len),
            // A session with the peer exists: the connect is satisfied.
            Err(Refused::Collision) => {}
            Err(Refused::SessionsFull) => {
                self.connect_failed(half_open.addr, expect, ConnectFailure::SessionsFull);
            }
        }
    }

    /// Emits an authenticated plaintext of `len` bytes (a keepalive if 0).
    fn deliver(&mut self, peer: NodeId, addr: SocketAddr, mut plaintext: Vec<u8>, len: usize) {
        if len == 0 {
            self.counters.keepalives_received += 1;
            return;
        }
        plaintext.truncate(len);
        self.counters.messages_received += 1;
        self.push_event(SessionEvent::Message {
            peer,
            addr,
            bytes: plaintext,
        });
    }

    /// Encrypts `plaintext` in session `index`: the destination and the
    /// whole overlay packet.
    fn seal(
        &mut self,
        now: Instant,
        index: u32,
        plaintext: &[u8],
    ) -> Result<(SocketAddr, Vec<u8>), SessionError> {
        let session = self
            .sessions
            .get_mut(&index)
            // Callers pass the index of a session; the ID is not known here.
            .ok_or(SessionError::NotEstablished(NodeId::default()))?;
        if session.send_counter >= SEND_COUNTER_MAX {
            return Err(SessionError::Exhausted);
        }
        let counter = session.send_counter;
        let mut ciphertext = vec![0u8; plaintext.len() + TAG_LEN];
        let len = session
            .transport
            .write_message(counter, plaintext, &mut ciphertext)
            .map_err(|_| SessionError::Exhausted)?;
        ciphertext.truncate(len);
        session.send_counter += 1;
        session.last_sent = now;
        let (peer, addr, remote_index) = (session.peer, session.addr, session.remote_index);
        let bytes = self.frame(
            &peer,
            &wire::Repr::Transport {
                sender_index: index,
                receiver_index: remote_index,
                counter,
                ciphertext: &ciphertext,
            },
        );
        Ok((addr, bytes))
    }

    fn send_keepalive(&mut self, now: Instant, index: u32) {
        match self.seal(now, index, &[]) {
            Ok((to, bytes)) => {
                self.counters.keepalives_sent += 1;
                self.push_transmit(to, bytes);
            }
            Err(_) => {
                // Exhausted: the session cannot send; it will time out. Do
                // not retry at every timer.
                if let Some(session) = self.sessions.get_mut(&index) {
                    session.last_sent = now;
                }
            }
        }
    }

    // ----- timers -----

    /// Runs a due half-open handshake's timers; returns it if it lives on.
    fn half_open_timer(&mut self, now: Instant, mut half_open: HalfOpen) -> Option<HalfOpen> {
        let connect = half_open.connect_args();
        if half_open.expires <= now {
            match connect {
                Some((addr, expect)) => {
                    self.connect_failed(addr, expect, ConnectFailure::Timeout);
                }
                None => self.counters.half_open_expired += 1,
            }
            return None;
        }
        let (HalfOpenState::AwaitH2 { packet, retry, .. }
        | HalfOpenState::AwaitConfirm { packet, retry, .. }) = &mut half_open.state
        else {
            return Some(half_open);
        };
        if retry.next > now {
            return Some(half_open);
        }
        if retry.sends >= self.config.handshake_retries {
            if let Some((addr, expect)) = connect {
                self.connect_failed(addr, expect, ConnectFailure::Timeout);
            }
            return None;
        }
        retry.sends += 1;
        let wait = backoff(self.config.handshake_retry_interval, retry.sends);
        retry.next = later(now, wait).min(half_open.expires);
        let packet = packet.clone();
        self.counters.handshake_retransmits += 1;
        self.push_transmit(half_open.addr, packet);
        Some(half_open)
    }

    // ----- helpers -----

    /// Frees a half-open slot if none is free, evicting the oldest
    /// responder-side handshake; false if every slot is an own handshake.
    fn make_half_open_room(&mut self) -> bool {
        while self.half_open.len() >= self.config.half_open_max {
            let oldest = self
                .half_open
                .iter()
                .filter(|(_, h)| h.is_responder())
                .min_by_key(|(_, h)| h.started_seq)
                .map(|(index, _)| *index);
            let Some(index) = oldest else {
                return false;
            };
            self.half_open.remove(&index);
            self.counters.half_open_evicted += 1;
        }
        true
    }

    /// A random nonzero index not in use; `None` only if 64 draws collide,
    /// which needs a broken generator.
    fn fresh_index(&mut self) -> Option<u32> {
        (0..64).map(|_| self.rng.next_u32()).find(|index| {
            *index != 0 && !self.half_open.contains_key(index) && !self.sessions.contains_key(index)
        })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// An overlay control packet from this node to `dst` carrying `message`.
    fn frame(&self, dst: &NodeId, message: &wire::Repr<'_>) -> Vec<u8> {
        frame_packet(&self.local_id, dst, message)
    }

    fn connect_failed(&mut self, addr: SocketAddr, expect: Option<NodeId>, reason: ConnectFailure) {
        self.counters.handshakes_failed += 1;
        self.push_event(SessionEvent::ConnectFailed {
            addr,
            expect,
            reason,
        });
    }

    fn push_transmit(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if self.transmits.len() >= TRANSMIT_QUEUE_MAX {
            self.counters.transmits_dropped += 1;
            return;
        }
        self.transmits.push_back(Transmit { to, bytes });
    }

    fn push_event(&mut self, event: SessionEvent) {
        if self.events.len() >= EVENT_QUEUE_MAX {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Sessions")
            .field("local_id", &self.local_id)
            .field("sessions", &self.sessions.len())
            .field("half_open", &self.half_open.len())
            .finish_non_exhaustive()
    }
}

/// An overlay control packet from `src` to `dst` carrying `message`.
fn frame_packet(src: &NodeId, dst: &NodeId, message: &wire::Repr<'_>) -> Vec<u8> {
    let len = message.buffer_len();
    let mut bytes = vec![0u8; OVERLAY_HEADER_LEN + len];
    let header = OverlayRepr {
        packet_type: PacketType::Control,
        hop_limit: wire::HOP_LIMIT,
        flags: 0,
        // Every session message is at most TRANSPORT_LEN_MAX bytes, which
        // wire::session asserts fits the u16 payload length.
        payload_len: len as u16,
        dst: *dst,
        src: *src,
    };
    let mut packet = OverlayPacket::new_unchecked(&mut bytes[..]);
    header.emit(&mut packet);
    message.emit(&mut wire::Packet::new_unchecked(packet.payload_mut()));
    bytes
}

fn digest(message: &[u8]) -> MessageDigest {
    Sha256::digest(message).into()
}

/// `now + wait`, saturating far in the future instead of panicking
/// (durations are clamped to a day, so this never saturates in practice).
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(CONFIG_DURATION_MAX))
        .unwrap_or(now)
}

/// The wait after the `sends`-th send: `interval * 2^(sends - 1)`, capped.
fn backoff(interval: Duration, sends: u32) -> Duration {
    let factor = 1u32 << sends.saturating_sub(1).min(16);
    interval.saturating_mul(factor).min(CONFIG_DURATION_MAX)
}
