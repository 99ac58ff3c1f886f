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

mod events;
pub(super) mod handshake;
pub(super) mod noise;
pub(super) mod replay;
#[cfg(test)]
mod tests;
mod transport;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use self::handshake::{HalfOpen, SeenDigests};
use self::noise::KeystreamRng;
use self::transport::Session;
use super::identity::Identity;
use crate::id::NodeId;
use crate::wire::overlay::HEADER_LEN as OVERLAY_HEADER_LEN;
use crate::wire::session as wire;
use crate::wire::{OverlayPacket, OverlayRepr, PacketType};

pub use self::events::{
    CloseReason, ConnectFailure, SessionCounters, SessionError, SessionEvent, Transmit,
};
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
            seen: SeenDigests::new(),
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
        // After the whole header: a control packet may carry a via (ignored).
        let payload = overlay.payload();
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
            wire::Repr::Handshake2 { noise, .. } => self.handle_h2(&rx, noise),
            wire::Repr::Handshake3 { noise, .. } => self.handle_h3(&rx, noise),
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
        self.half_open_timers(now);
        self.session_timers(now);
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

    // ----- helpers -----

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
        via: None,
    };
    let mut packet = OverlayPacket::new_unchecked(&mut bytes[..]);
    header.emit(&mut packet);
    message.emit(&mut wire::Packet::new_unchecked(packet.payload_mut()));
    bytes
}
/// `now + wait`, saturating far in the future instead of panicking
/// (durations are clamped to a day, so this never saturates in practice).
pub(in crate::core) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(CONFIG_DURATION_MAX))
        .unwrap_or(now)
}
