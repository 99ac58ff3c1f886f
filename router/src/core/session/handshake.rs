//! Handshakes: initiation and response, the identity check, simultaneous
//! open, retries and the half-open table's bounds.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snow::{HandshakeState, StatelessTransportState};

use super::noise;
use super::replay::ReplayWindow;
use super::transport::Session;
use super::{
    CONFIG_DURATION_MAX, CloseReason, ConnectFailure, Received, SEEN_DIGESTS_MAX, SessionEvent,
    Sessions, later,
};
use crate::core::identity::solves_puzzle;
use crate::id::NodeId;
use crate::wire::session::{
    self as wire, HANDSHAKE_1_NOISE_LEN, HANDSHAKE_1_PADDING_LEN, HANDSHAKE_2_NOISE_LEN,
    HANDSHAKE_3_NOISE_LEN, IDENTITY_PAYLOAD_LEN, TAG_LEN,
};

/// SHA-256 of a handshake message.
pub(in crate::core) type MessageDigest = [u8; 32];

/// The retransmission schedule of an own handshake message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    /// Times the message was sent.
    sends: u32,
    /// When to resend (or give up).
    next: Instant,
}

/// A handshake in progress.
pub(super) struct HalfOpen {
    /// The peer's address (the `connect` address, or where the last
    /// authenticated handshake message came from).
    pub(super) addr: SocketAddr,
    /// Local order of starts, for the simultaneous-open rule.
    pub(super) started_seq: u64,
    /// When it is abandoned.
    pub(super) expires: Instant,
    pub(super) state: HalfOpenState,
}

pub(super) enum HalfOpenState {
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
    pub(super) fn connect_args(&self) -> Option<(SocketAddr, Option<NodeId>)> {
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
    pub(super) fn deadline(&self) -> Instant {
        match &self.state {
            HalfOpenState::AwaitH2 { retry, .. } | HalfOpenState::AwaitConfirm { retry, .. } => {
                retry.next.min(self.expires)
            }
            HalfOpenState::AwaitH3 { .. } => self.expires,
        }
    }
}
/// Digests of accepted handshake messages, oldest forgotten first (at
/// most [`SEEN_DIGESTS_MAX`]). Also used by `core::e2e`.
pub(in crate::core) struct SeenDigests {
    pub(super) set: BTreeSet<MessageDigest>,
    pub(super) order: VecDeque<MessageDigest>,
}

impl SeenDigests {
    /// An empty memory.
    pub(in crate::core) fn new() -> SeenDigests {
        SeenDigests {
            set: BTreeSet::new(),
            order: VecDeque::new(),
        }
    }

    pub(in crate::core) fn contains(&self, digest: &MessageDigest) -> bool {
        self.set.contains(digest)
    }

    pub(in crate::core) fn insert(&mut self, digest: MessageDigest) {
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
/// Why a completed handshake did not become a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
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
    /// Builds and sends HANDSHAKE_1; returns the new half-open handshake
    /// and its index, or `None` on an internal failure.
    pub(super) fn start_initiator(
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

    /// A HANDSHAKE_1: answered again if it repeats a pending one, else
    /// admitted (or refused and counted) and answered with HANDSHAKE_2.
    pub(super) fn handle_h1(&mut self, rx: &Received<'_>, noise: &[u8], request_len: usize) {
        let digest = digest(rx.message);
        if self.repeated_h1(&digest, rx.from) || !self.admits_h1(rx.now, &rx.src, rx.from) {
            return;
        }
        self.answer_h1(rx, noise, request_len, digest);
    }

    /// Whether the HANDSHAKE_1 with `digest` was seen before: a repeat of a
    /// pending one from the same address is answered again (our
    /// HANDSHAKE_2 was lost), any other repeat is counted as a replay.
    fn repeated_h1(&mut self, digest: &MessageDigest, from: SocketAddr) -> bool {
        let pending = self.half_open.values().find_map(|h| match &h.state {
            HalfOpenState::AwaitH3 {
                h1_digest, reply, ..
            } if h1_digest == digest => Some((h.addr, reply.clone())),
            _ => None,
        });
        if let Some((addr, reply)) = pending {
            if addr == from {
                self.counters.handshake_duplicates_answered += 1;
                self.push_transmit(from, reply);
            } else {
                self.counters.rejected_replay += 1;
            }
            return true;
        }
        if self.seen.contains(digest) {
            self.counters.rejected_replay += 1;
            return true;
        }
        false
    }

    /// Whether a new HANDSHAKE_1 claiming `claimed` may take a half-open
    /// slot: the puzzle, the simultaneous-open rule and the bounds, checked
    /// before any Diffie-Hellman work (each refusal counted).
    fn admits_h1(&mut self, now: Instant, claimed: &NodeId, from: SocketAddr) -> bool {
        if !solves_puzzle(claimed, self.config.difficulty) {
            self.counters.rejected_puzzle += 1;
            return false;
        }
        // Simultaneous open: the lower ID's initiation wins. The peer is
        // evidently up now, while our HANDSHAKE_1s may all have gone out
        // before it was: our next retransmission is due at once (it still
        // counts against the retries, so a spoofed collision can only make
        // them come sooner), or both sides would wait out their timeouts.
        if self.local_id < *claimed {
            let own = self
                .half_open
                .values_mut()
                .find(|h| h.initiates_to(claimed, from));
            if let Some(own) = own {
                if let HalfOpenState::AwaitH2 { retry, .. } = &mut own.state {
                    retry.next = retry.next.min(now);
                }
                self.counters.handshake_collisions += 1;
                return false;
            }
        }
        if self.sessions.len() >= self.config.sessions_max && !self.by_peer.contains_key(claimed) {
            self.counters.rejected_sessions_full += 1;
            return false;
        }
        if !self.make_half_open_room() {
            self.counters.rejected_half_open_full += 1;
            return false;
        }
        true
    }

    /// Sends HANDSHAKE_2 for an admitted HANDSHAKE_1 and holds the
    /// responder's half-open handshake.
    fn answer_h1(
        &mut self,
        rx: &Received<'_>,
        noise: &[u8],
        request_len: usize,
        digest: MessageDigest,
    ) {
        let Received {
            now,
            from,
            src: claimed,
            remote_index,
            ..
        } = *rx;
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

    /// A HANDSHAKE_2: the answer to an own HANDSHAKE_1.
    pub(super) fn handle_h2(&mut self, rx: &Received<'_>, noise: &[u8]) {
        self.handle_handshake_reply(rx, noise, Sessions::h2_for);
    }

    /// A HANDSHAKE_3: the initiator's answer to our HANDSHAKE_2.
    pub(super) fn handle_h3(&mut self, rx: &Received<'_>, noise: &[u8]) {
        self.handle_handshake_reply(rx, noise, Sessions::h3_for);
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
        let Received { src, index, .. } = *rx;
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
        self.send_h3(rx, digest, half_open, peer, expect)
    }

    /// Writes and sends HANDSHAKE_3 for a HANDSHAKE_2 that checked out; the
    /// handshake then waits for the responder's confirmation.
    fn send_h3(
        &mut self,
        rx: &Received<'_>,
        digest: MessageDigest,
        half_open: HalfOpen,
        peer: NodeId,
        expect: Option<NodeId>,
    ) -> Outcome {
        let Received {
            now,
            from,
            remote_index,
            index,
            ..
        } = *rx;
        let addr = half_open.addr;
        let HalfOpenState::AwaitH2 { hs, .. } = half_open.state else {
            // h2_for matched it; the state has not changed since.
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
            src, remote_index, ..
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
            return self.restore_responder(half_open);
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
        self.accept_h3(rx, digest, half_open, peer)
    }

    /// A HANDSHAKE_3 that did not decrypt: not from the initiator. Rebuilds
    /// the handshake state the failed read damaged and keeps waiting for
    /// the real HANDSHAKE_3.
    fn restore_responder(&mut self, mut half_open: HalfOpen) -> Outcome {
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
        match self.respond(*seed, h1_noise) {
            Some((fresh, reply_noise)) if reply.ends_with(&reply_noise) => {
                **hs = fresh;
                Outcome::Keep(half_open)
            }
            _ => {
                self.counters.internal_errors += 1;
                Outcome::Done
            }
        }
    }

    /// Installs the session of a HANDSHAKE_3 that checked out and confirms
    /// it to the initiator.
    fn accept_h3(
        &mut self,
        rx: &Received<'_>,
        digest: MessageDigest,
        half_open: HalfOpen,
        peer: NodeId,
    ) -> Outcome {
        let Received {
            now,
            from,
            remote_index,
            index,
            ..
        } = *rx;
        let HalfOpenState::AwaitH3 { hs, .. } = half_open.state else {
            // h3_for matched it; the state has not changed since.
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
    pub(super) fn complete(
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
    // ----- timers -----

    /// Runs the timers of the half-open handshakes due at `now`.
    pub(super) fn half_open_timers(&mut self, now: Instant) {
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
    }

    /// Runs a due half-open handshake's timers; returns it if it lives on.
    pub(super) fn half_open_timer(
        &mut self,
        now: Instant,
        mut half_open: HalfOpen,
    ) -> Option<HalfOpen> {
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
    pub(super) fn make_half_open_room(&mut self) -> bool {
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
}

fn digest(message: &[u8]) -> MessageDigest {
    Sha256::digest(message).into()
}
/// The wait after the `sends`-th send: `interval * 2^(sends - 1)`, capped.
fn backoff(interval: Duration, sends: u32) -> Duration {
    let factor = 1u32 << sends.saturating_sub(1).min(16);
    interval.saturating_mul(factor).min(CONFIG_DURATION_MAX)
}
