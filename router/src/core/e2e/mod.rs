//! End-to-end sessions between endpoints, sans-IO.
//!
//! [`Endpoints`] protects the payload of overlay data packets between two
//! node IDs across any number of relays: relays forward the ciphertext by
//! destination ID and never decrypt. It performs no I/O, reads no clock and
//! draws no OS randomness: time comes in as [`Instant`]s, randomness from
//! the seed given to [`Endpoints::new`], received overlay payloads through
//! [`Endpoints::handle_packet`]; overlay payloads to send come out of
//! [`Endpoints::poll_transmit`], happenings out of
//! [`Endpoints::poll_event`]. Nothing here panics on any received bytes.
//! docs/endpoint.md is the overview; this is the reference.
//!
//! # Driving it
//!
//! Hand every plaintext for a remote endpoint to `send`, the payload of
//! every data overlay packet addressed to this node to `handle_packet`
//! (with the overlay source ID), call `handle_timeout(now)` when the
//! instant from `poll_timeout` has passed, and after any call drain
//! `poll_transmit` (send each payload in a data overlay packet to its
//! destination ID) and `poll_event`.
//!
//! # Protocol (v1)
//!
//! **Keys.** The Noise static key is the ed25519 identity key converted to
//! X25519, as in `core::session`. The network secret (32 bytes, all zero
//! when none is configured) is the Noise PSK (`psk0`): only nodes with the
//! same secret complete a handshake.
//!
//! **Handshake.** When this node knows the responder's static key (it
//! cached the ed25519 key from an earlier handshake, or was given it with
//! [`Endpoints::add_peer_key`]), `Noise_IKpsk0_25519_ChaChaPoly_BLAKE2s`,
//! two messages; otherwise `Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s`, three
//! messages. Prologue `"xorlay e2e v1"`. Layouts: [`crate::wire::e2e`].
//!
//! ```text
//! XX: XX_INIT     [i, 0] psk, e, {80 zero bytes}, mac1, mac2 ->
//!                        <- XX_RESPONSE [r, i] e, ee, s, es, {ed25519 key}
//!     XX_FINISH   [i, r] s, se, {ed25519 key}                ->
//!                        <- TRANSPORT   [r, i] (data or a keepalive: confirms)
//! IK: IK_INIT     [i, 0] psk, e, es, s, ss, {ed25519 key}, mac1, mac2 ->
//!                        <- IK_RESPONSE [r, i] e, ee, se, {}
//!     TRANSPORT   [i, r] (data or a keepalive: confirms)     ->
//! ```
//!
//! `[sender index, receiver index]`, random nonzero `u32`s; `{..}` is
//! encrypted. Identity check (both roles, as `core::session` does it): the
//! ed25519 key must not be of small order, its Montgomery form must equal
//! the Noise static key the peer proved it holds, and `node_id_of(key)`
//! must equal the overlay source of the message and, at an initiator, the
//! destination it meant. The side that receives the last handshake message
//! has its keys at once; the other side's keys become current when the
//! first authenticated TRANSPORT arrives with them (a keepalive if there
//! is no data), so neither side sends on keys the other does not have.
//!
//! **Transport.** ChaCha20-Poly1305 under the session's keys with an
//! explicit big-endian `u64` counter as the nonce (snow's stateless
//! transport). The receiver finds the keys by its index; the overlay
//! source must be the keys' peer (else counted `rejected_spoofed`) and the
//! sender index theirs. A sliding window of 2048 counters (RFC 6479
//! bitmap, `core::session`'s) rejects repeats and older counters before
//! decryption and is updated only after the tag verifies.
//!
//! **Rekey.** The initiator of the current keys starts a new handshake
//! (IK) when they are `rekey_after` old (120 s) and data flowed since they
//! were made, or after `rekey_after_messages` messages (2^60 at the
//! latest); the responder does the same [`REKEY_RESPONDER_DELAY`] later if
//! no rekey came. The new keys take over for sending at once (the
//! initiator) or when the first packet under them arrives (the
//! responder); the old keys stay for receiving for `previous_grace`
//! (WireGuard's current and previous keypairs; up to
//! [`PREVIOUS_KEYS_MAX`] earlier sets, as rekeys from both sides in quick
//! succession make several), so no packet in flight is lost. Keys older than `reject_after` (180 s) or past
//! [`SEND_COUNTER_MAX`] messages are never used. A failed rekey is retried
//! [`REKEY_RETRY_AFTER`] later while the keys last.
//!
//! **Idle expiry.** A session without data either way for `idle_timeout`
//! (180 s) is closed (`Closed { reason: Idle }`).
//!
//! **Load and cookies.** An initiation's mac1 (keyed by the responder's
//! node ID) is checked first; garbage costs one MAC. A responder is under
//! load when fewer than half the tokens of its total handshake bucket are
//! left or half its handshake slots hold strangers' handshakes. Under
//! load, an initiation needs a valid mac2, a MAC keyed by the cookie of
//! its overlay source; without one it gets a COOKIE_REPLY and no
//! Diffie-Hellman work. The cookie is `MAC(secret, source node ID)`, the
//! secret rotating every 120 s (the previous one still accepted), sealed
//! with the initiation's mac1 as associated data. The source is the
//! overlay source ID only: the underlay address a packet arrives from is
//! the last relay's, shared by every endpoint behind it and changed by any
//! route change, so it proves nothing about the sender; what the cookie
//! proves is that the sender receives what the overlay routes to the ID it
//! claims. After the cookie: a per-source token bucket
//! (`handshakes_per_source_per_sec`, at most `rate_sources_max` sources
//! tracked; a new source beyond that is refused) and the total bucket
//! (`handshakes_per_sec`); each refusal is counted as rate-limited.
//!
//! **Membership.** Besides the network secret, an optional allowlist of
//! node IDs that may open sessions with this node; other initiations are
//! refused before any Diffie-Hellman work (`rejected_not_allowed`).
//!
//! **Bounds.** At most `sessions_max` peers with keys, `handshakes_max`
//! handshakes in flight (a stranger's initiation evicts the oldest
//! stranger's handshake, never an own one), `queue_per_peer_max` packets
//! per destination and `queue_total_max` packets or `queue_bytes_max`
//! bytes in total waiting for handshakes (beyond: dropped, counted and
//! reported as `Undeliverable`), [`TRANSMIT_QUEUE_MAX`] transmits and
//! [`EVENT_QUEUE_MAX`] events (an event beyond it pushes out the oldest).
//!
//! **Simultaneous handshakes.** An initiation from a peer this node is
//! itself initiating to is dropped when this node has the lower ID (its
//! own wins); the higher node answers, and abandons its own handshake when
//! the other one's keys take over. Keys completed either way decrypt, so
//! traffic continues whichever wins.
//!
//! **Replays of handshakes.** The digest of every initiation answered is
//! remembered (the last 4096); a repeat of one whose handshake is still
//! pending, from the same source, is answered again with the same
//! response (its answer was lost), others are rejected as replays. A
//! replayed initiation older than that memory costs one rate-limited
//! handshake slot and never yields keys the replayer can use.
//!
//! **Counters, not logs.** This core never logs; every rejection is counted
//! in [`E2eCounters`].

mod crypto;
mod events;
mod handshake;
mod limits;
#[cfg(test)]
mod tests;
mod transport;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;

use self::handshake::Handshake;
use self::limits::{Bucket, CookieSecrets, SourceLimiter};
use self::transport::{Keypair, Peer};
use super::identity::{Identity, node_id_of};
use super::session::handshake::SeenDigests;
use super::session::noise::KeystreamRng;
use crate::id::NodeId;
use crate::wire::e2e as wire;

pub use self::events::{
    CloseReason, E2eCounters, E2eError, E2eEvent, FailReason, UndeliverableReason,
};
pub use crate::wire::e2e::PLAINTEXT_LEN_MAX;

/// Transmits held before [`Endpoints::poll_transmit`] takes them.
pub const TRANSMIT_QUEUE_MAX: usize = 4096;
/// Events held before [`Endpoints::poll_event`] takes them.
pub const EVENT_QUEUE_MAX: usize = 4096;
/// Bytes of a dropped packet an `Undeliverable` event quotes (what an
/// ICMPv6 error may carry in a 1280-byte packet).
pub const UNDELIVERABLE_HEAD_MAX: usize = 1232;
/// Messages one set of keys may send; the counter never gets near 2^64.
pub const SEND_COUNTER_MAX: u64 = 1 << 61;
/// Earlier keys of a peer kept for receiving during their grace period
/// (rekeys from both sides in quick succession make more than one).
pub const PREVIOUS_KEYS_MAX: usize = 3;
/// Largest `rekey_after_messages`.
pub const REKEY_AFTER_MESSAGES_MAX: u64 = 1 << 60;
/// The responder of the current keys rekeys this long after the initiator
/// would have.
pub const REKEY_RESPONDER_DELAY: Duration = Duration::from_secs(10);
/// A failed rekey is tried again after this long.
pub const REKEY_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long an initiator uses a cookie (the responder accepts it for at
/// least 120 s).
pub const COOKIE_USE_MAX: Duration = Duration::from_secs(110);
/// Longest duration accepted in [`E2eConfig`]; longer is clamped.
pub const CONFIG_DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Shortest duration accepted in [`E2eConfig`]; shorter is clamped.
pub const CONFIG_DURATION_MIN: Duration = Duration::from_millis(1);

/// Tunables of [`Endpoints`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eConfig {
    /// The network secret: only nodes with the same one complete a
    /// handshake. `None` is the all-zero secret.
    pub network_secret: Option<[u8; 32]>,
    /// Only these nodes may open sessions with this node (`None`: any).
    /// This node may still open sessions with others.
    pub allowlist: Option<BTreeSet<NodeId>>,
    /// Rekey keys this old (data having flowed since they were made).
    pub rekey_after: Duration,
    /// Rekey after sending this many messages under one set of keys (1 to
    /// [`REKEY_AFTER_MESSAGES_MAX`]).
    pub rekey_after_messages: u64,
    /// Never use keys older than this (at least `rekey_after`).
    pub reject_after: Duration,
    /// Keep the previous keys for receiving this long after new ones took
    /// over.
    pub previous_grace: Duration,
    /// Close a session after this long without data either way.
    pub idle_timeout: Duration,
    /// Wait after the first initiation (or XX_FINISH) before resending;
    /// doubles with each send.
    pub handshake_retry_interval: Duration,
    /// Sends of an initiation (and of an XX_FINISH) before giving up (at
    /// least 1).
    pub handshake_retries: u32,
    /// A stranger's handshake is abandoned after this long.
    pub handshake_timeout: Duration,
    /// Peers with keys (sessions) at once (at least 1).
    pub sessions_max: usize,
    /// Handshakes in flight at once, both roles together (at least 2).
    pub handshakes_max: usize,
    /// Packets queued for one destination waiting for a handshake (at
    /// least 1).
    pub queue_per_peer_max: usize,
    /// Packets queued in total (at least 1).
    pub queue_total_max: usize,
    /// Bytes queued in total (at least one largest packet).
    pub queue_bytes_max: usize,
    /// Initiations given Diffie-Hellman work per second in total (also
    /// the burst; at least 1).
    pub handshakes_per_sec: u32,
    /// Initiations given work per second per source node ID (also the
    /// burst; at least 1).
    pub handshakes_per_source_per_sec: u32,
    /// Sources whose rate is tracked at once (at least 1).
    pub rate_sources_max: usize,
}

impl Default for E2eConfig {
    fn default() -> E2eConfig {
        E2eConfig {
            network_secret: None,
            allowlist: None,
            rekey_after: Duration::from_secs(120),
            rekey_after_messages: REKEY_AFTER_MESSAGES_MAX,
            reject_after: Duration::from_secs(180),
            previous_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
            handshake_retry_interval: Duration::from_millis(500),
            handshake_retries: 5,
            handshake_timeout: Duration::from_secs(20),
            sessions_max: 4096,
            handshakes_max: 1024,
            queue_per_peer_max: 64,
            queue_total_max: 4096,
            queue_bytes_max: 4 << 20,
            handshakes_per_sec: 200,
            handshakes_per_source_per_sec: 5,
            rate_sources_max: 4096,
        }
    }
}

impl E2eConfig {
    /// The configuration with every value brought into its valid range.
    fn clamped(self) -> E2eConfig {
        let clamp = |d: Duration| d.clamp(CONFIG_DURATION_MIN, CONFIG_DURATION_MAX);
        let rekey_after = clamp(self.rekey_after);
        E2eConfig {
            network_secret: self.network_secret,
            allowlist: self.allowlist,
            rekey_after,
            rekey_after_messages: self.rekey_after_messages.clamp(1, REKEY_AFTER_MESSAGES_MAX),
            reject_after: clamp(self.reject_after).max(rekey_after),
            previous_grace: clamp(self.previous_grace),
            idle_timeout: clamp(self.idle_timeout),
            handshake_retry_interval: clamp(self.handshake_retry_interval),
            handshake_retries: self.handshake_retries.clamp(1, 16),
            handshake_timeout: clamp(self.handshake_timeout),
            sessions_max: self.sessions_max.max(1),
            handshakes_max: self.handshakes_max.max(2),
            queue_per_peer_max: self.queue_per_peer_max.max(1),
            queue_total_max: self.queue_total_max.max(1),
            queue_bytes_max: self.queue_bytes_max.max(PLAINTEXT_LEN_MAX),
            handshakes_per_sec: self.handshakes_per_sec.max(1),
            handshakes_per_source_per_sec: self.handshakes_per_source_per_sec.max(1),
            rate_sources_max: self.rate_sources_max.max(1),
        }
    }
}

/// The end-to-end sessions of one node: handshakes, keys, queues, timers.
///
/// Call order: any `handle_*` or `send` call, then drain
/// [`Endpoints::poll_transmit`] and [`Endpoints::poll_event`], then wait
/// until [`Endpoints::poll_timeout`] (or the next packet) and call
/// [`Endpoints::handle_timeout`].
pub struct Endpoints {
    local_id: NodeId,
    /// The ed25519 public key, the identity payload of handshakes.
    public_key: [u8; 32],
    /// The X25519 form of the identity secret: the Noise static key.
    static_secret: [u8; 32],
    psk: [u8; 32],
    /// This node's mac1 key.
    mac1_key: [u8; 32],
    config: E2eConfig,
    rng: KeystreamRng,
    /// Local order of handshake starts (the oldest stranger's is evicted).
    seq: u64,
    handshakes: BTreeMap<u32, Handshake>,
    keypairs: BTreeMap<u32, Keypair>,
    peers: BTreeMap<NodeId, Peer>,
    /// ed25519 keys of peers, for IK; at most `2 * sessions_max`.
    peer_keys: BTreeMap<NodeId, VerifyingKey>,
    peer_key_order: VecDeque<NodeId>,
    /// Packets and bytes in all queues.
    queued_packets: usize,
    queued_bytes: usize,
    seen: SeenDigests,
    total_bucket: Bucket,
    sources: SourceLimiter,
    cookie_secrets: CookieSecrets,
    transmits: VecDeque<(NodeId, Vec<u8>)>,
    events: VecDeque<E2eEvent>,
    counters: E2eCounters,
}

impl Endpoints {
    /// The end-to-end sessions of `identity`. `config` values outside their
    /// range are clamped (see the field docs); `seed` is the only source of
    /// randomness (indexes, ephemeral keys, cookie secrets): give each
    /// instance a fresh secret seed from the OS.
    pub fn new(identity: &Identity, config: E2eConfig, seed: [u8; 32]) -> Endpoints {
        // Invariant: snow's default resolver has ChaChaPoly with this
        // crate's features (snow defaults); `session::noise::tests` check
        // it.
        let mut rng = KeystreamRng::new(&seed).expect("snow provides ChaChaPoly");
        let config = config.clamped();
        let local_id = identity.node_id();
        let cookie_secrets = CookieSecrets {
            current: rng.next_seed(),
            previous: None,
            rotated_at: None,
        };
        Endpoints {
            local_id,
            public_key: identity.public_key().to_bytes(),
            static_secret: identity.x25519_secret(),
            psk: config.network_secret.unwrap_or([0; 32]),
            mac1_key: crypto::mac1_key(&local_id),
            total_bucket: Bucket::full(config.handshakes_per_sec),
            config,
            rng,
            seq: 0,
            handshakes: BTreeMap::new(),
            keypairs: BTreeMap::new(),
            peers: BTreeMap::new(),
            peer_keys: BTreeMap::new(),
            peer_key_order: VecDeque::new(),
            queued_packets: 0,
            queued_bytes: 0,
            seen: SeenDigests::new(),
            sources: SourceLimiter::new(),
            cookie_secrets,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: E2eCounters::default(),
        }
    }

    /// This node's ID.
    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    /// The configuration in use (after clamping).
    pub fn config(&self) -> &E2eConfig {
        &self.config
    }

    /// Remembers `key` as the identity key of `node_id_of(key)`, so that a
    /// handshake with it uses IK (one round trip, the responder's identity
    /// hidden from passive observers). Keys proven in handshakes are
    /// remembered the same way.
    pub fn add_peer_key(&mut self, key: &VerifyingKey) {
        let id = node_id_of(key);
        if id == self.local_id {
            return;
        }
        if self.peer_keys.insert(id, *key).is_none() {
            self.peer_key_order.push_back(id);
        }
        let max = self.config.sessions_max.saturating_mul(2);
        while self.peer_keys.len() > max {
            let Some(old) = self.peer_key_order.pop_front() else {
                break;
            };
            self.peer_keys.remove(&old);
        }
    }

    /// Whether the identity key of `peer` is known (the next handshake with
    /// it is IK).
    pub fn knows_peer_key(&self, peer: &NodeId) -> bool {
        self.peer_keys.contains_key(peer)
    }

    /// The payload of a data overlay packet addressed to this node, from
    /// the overlay source `src`. Never panics; every rejection is counted.
    pub fn handle_packet(&mut self, now: Instant, src: NodeId, payload: &[u8]) {
        let Ok(message) = wire::Repr::parse_bytes(payload) else {
            self.counters.rejected_bad_packet += 1;
            return;
        };
        if src == NodeId::default() || src == self.local_id {
            self.counters.rejected_bad_packet += 1;
            return;
        }
        match message {
            wire::Repr::Init {
                pattern,
                sender_index,
                noise,
                mac1,
                mac2,
            } => {
                let init = handshake::Init {
                    pattern,
                    sender_index,
                    noise,
                    mac1,
                    mac2,
                    message: payload,
                };
                self.handle_init(now, src, &init);
            }
            wire::Repr::Response {
                pattern,
                sender_index,
                receiver_index,
                noise,
            } => self.handle_response(now, src, pattern, sender_index, receiver_index, noise),
            wire::Repr::Finish {
                sender_index,
                receiver_index,
                noise,
            } => self.handle_finish(now, src, sender_index, receiver_index, noise),
            wire::Repr::CookieReply {
                receiver_index,
                nonce,
                sealed_cookie,
            } => self.handle_cookie_reply(now, src, receiver_index, nonce, sealed_cookie),
            wire::Repr::Transport {
                sender_index,
                receiver_index,
                counter,
                ciphertext,
            } => self.handle_transport(now, src, sender_index, receiver_index, counter, ciphertext),
        }
    }

    /// Encrypts `plaintext` (1 to [`PLAINTEXT_LEN_MAX`] bytes) to `dst`, or
    /// queues it while a handshake with `dst` runs (starting one if
    /// needed). A packet taken here and dropped later is reported by an
    /// `Undeliverable` event.
    pub fn send(&mut self, now: Instant, dst: NodeId, plaintext: &[u8]) -> Result<(), E2eError> {
        if plaintext.is_empty() {
            return Err(E2eError::Empty);
        }
        if plaintext.len() > PLAINTEXT_LEN_MAX {
            return Err(E2eError::TooLong {
                len: plaintext.len(),
            });
        }
        if dst == self.local_id || dst == NodeId::default() {
            return Err(E2eError::BadDestination(dst));
        }
        if let Some(index) = self.sending_keys(now, &dst) {
            self.send_data(now, index, plaintext);
            self.maybe_rekey(now, &dst);
            return Ok(());
        }
        self.enqueue(now, dst, plaintext);
        Ok(())
    }

    /// Runs the timers due at `now`: handshake retries and expiry, rekeys,
    /// key expiry, idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handshake_timers(now);
        self.peer_timers(now);
    }

    /// When [`Endpoints::handle_timeout`] should next be called, if any
    /// timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshakes = self.handshakes.values().map(Handshake::deadline);
        let peers = self
            .peers
            .iter()
            .filter_map(|(id, peer)| self.peer_deadline(id, peer));
        handshakes.chain(peers).min()
    }

    /// The next overlay payload to send, and the destination ID of its data
    /// overlay packet.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<E2eEvent> {
        self.events.pop_front()
    }

    /// The counters so far.
    pub fn counters(&self) -> E2eCounters {
        self.counters
    }

    /// Peers with current keys, in node ID order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.current.is_some())
            .map(|(id, _)| *id)
    }

    /// Number of peers with keys (current or previous).
    pub fn session_count(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.current.is_some() || !p.previous.is_empty())
            .count()
    }

    /// Number of handshakes in flight (both roles).
    pub fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    /// Number of key sets held (current, previous).
    pub fn keypair_count(&self) -> usize {
        self.keypairs.len()
    }

    /// Packets and bytes waiting for handshakes.
    pub fn queued(&self) -> (usize, usize) {
        (self.queued_packets, self.queued_bytes)
    }

    /// Sources whose handshake rate is tracked.
    pub fn rate_sources(&self) -> usize {
        self.sources.len()
    }

    // ----- helpers -----

    /// A random nonzero index not in use; `None` only if 64 draws collide,
    /// which needs a broken generator.
    fn fresh_index(&mut self) -> Option<u32> {
        (0..64).map(|_| self.rng.next_u32()).find(|index| {
            *index != 0
                && !self.handshakes.contains_key(index)
                && !self.keypairs.contains_key(index)
        })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Queues `bytes` for `dst`; false (counted) if the queue is full.
    fn push_transmit(&mut self, dst: NodeId, bytes: Vec<u8>) -> bool {
        if self.transmits.len() >= TRANSMIT_QUEUE_MAX {
            self.counters.transmits_dropped += 1;
            return false;
        }
        self.transmits.push_back((dst, bytes));
        true
    }

    fn push_event(&mut self, event: E2eEvent) {
        if self.events.len() >= EVENT_QUEUE_MAX {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Reports a packet taken by `send` as dropped.
    fn undeliverable(&mut self, dst: NodeId, reason: UndeliverableReason, packet: &[u8]) {
        let head = packet[..packet.len().min(UNDELIVERABLE_HEAD_MAX)].to_vec();
        self.push_event(E2eEvent::Undeliverable { dst, reason, head });
    }
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Endpoints")
            .field("local_id", &self.local_id)
            .field("peers", &self.peers.len())
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

/// `now + wait`, saturating instead of panicking.
fn later(now: Instant, wait: Duration) -> Instant {
    super::session::later(now, wait)
}
