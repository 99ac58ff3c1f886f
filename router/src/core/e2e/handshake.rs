//! Handshakes: own initiations and their retries, the responder's checks
//! in cost order (mac1, allowlist, replays, collisions, cookie under load,
//! rate limits, room, then Diffie-Hellman), responses, XX_FINISH and
//! cookie replies.

use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use snow::{HandshakeState, StatelessTransportState};

use super::transport::NewKeys;
use super::{COOKIE_USE_MAX, Endpoints, FailReason, crypto, later};
use crate::core::identity::node_id_of;
use crate::core::session::handshake::MessageDigest;
use crate::core::session::noise::authenticate;
use crate::id::NodeId;
use crate::wire::e2e::{
    self as wire, COOKIE_LEN, IDENTITY_PAYLOAD_LEN, INIT_LEN, MAC_LEN, MAC1_OFFSET, MAC2_OFFSET,
    Pattern, TAG_LEN, XX_INIT_NOISE_LEN, XX_INIT_PADDING_LEN,
};

/// The retransmission schedule of an own handshake message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    /// Times the message was sent.
    pub(super) sends: u32,
    /// When to resend (or give up).
    pub(super) next: Instant,
}

/// A handshake in flight, keyed by this node's index.
pub(super) struct Handshake {
    /// The peer: the destination of an own handshake, the claimed source
    /// of a stranger's.
    pub(super) peer: NodeId,
    /// Local order of starts.
    pub(super) started_seq: u64,
    /// When a stranger's handshake is abandoned (own ones end by retries).
    pub(super) expires: Instant,
    pub(super) state: State,
}

pub(super) enum State {
    /// Own: sent an initiation, waiting for the response.
    Initiated {
        pattern: Pattern,
        hs: Box<HandshakeState>,
        /// The initiation, macs rewritten at every send.
        message: Box<[u8; INIT_LEN]>,
        /// The mac1 last sent (a cookie reply's associated data).
        mac1: [u8; MAC_LEN],
        /// Whether the last send carried a cookie's mac2.
        with_cookie: bool,
        retry: Retry,
    },
    /// Own XX: sent XX_FINISH, waiting for the first TRANSPORT.
    Confirming {
        keys: Box<StatelessTransportState>,
        remote_index: u32,
        finish: Vec<u8>,
        retry: Retry,
    },
    /// A stranger's XX: sent XX_RESPONSE, waiting for XX_FINISH.
    XxResponded {
        hs: Box<HandshakeState>,
        remote_index: u32,
        digest: MessageDigest,
        reply: Vec<u8>,
        /// The seed and initiation, to rebuild `hs` after an XX_FINISH that
        /// failed to decrypt (snow's failed read of message 3 can leave its
        /// cipher changed).
        seed: [u8; 32],
        init_noise: Box<[u8; XX_INIT_NOISE_LEN]>,
    },
    /// A stranger's IK: sent IK_RESPONSE, waiting for the first TRANSPORT.
    IkResponded {
        keys: Box<StatelessTransportState>,
        remote_index: u32,
        digest: MessageDigest,
        reply: Vec<u8>,
        peer_key: VerifyingKey,
    },
}

impl Handshake {
    /// Whether this node started it.
    pub(super) fn is_own(&self) -> bool {
        matches!(
            self.state,
            State::Initiated { .. } | State::Confirming { .. }
        )
    }

    /// The next instant this handshake needs attention.
    pub(super) fn deadline(&self) -> Instant {
        match &self.state {
            State::Initiated { retry, .. } | State::Confirming { retry, .. } => retry.next,
            State::XxResponded { .. } | State::IkResponded { .. } => self.expires,
        }
    }

    /// The digest of the initiation a stranger's handshake answered.
    fn answered(&self) -> Option<(&MessageDigest, &[u8])> {
        match &self.state {
            State::XxResponded { digest, reply, .. } | State::IkResponded { digest, reply, .. } => {
                Some((digest, reply))
            }
            _ => None,
        }
    }
}

/// A received initiation.
pub(super) struct Init<'a> {
    pub(super) pattern: Pattern,
    pub(super) sender_index: u32,
    pub(super) noise: &'a [u8],
    pub(super) mac1: [u8; MAC_LEN],
    pub(super) mac2: [u8; MAC_LEN],
    /// The whole message.
    pub(super) message: &'a [u8],
}

/// What a received message decided about a handshake that was taken out of
/// the table.
enum Outcome {
    /// Put it back.
    Keep(Box<Handshake>),
    /// It is gone (completed, failed or superseded).
    Done,
}

impl Endpoints {
    /// Starts an own handshake with `peer` (IK if its key is known) and
    /// sends the initiation; its index, or `None` on an internal failure.
    pub(super) fn start_handshake(&mut self, now: Instant, peer: NodeId) -> Option<u32> {
        let index = self.fresh_index()?;
        let remote = self
            .peer_keys
            .get(&peer)
            .map(crate::core::identity::x25519_public_of);
        let pattern = if remote.is_some() {
            Pattern::Ik
        } else {
            Pattern::Xx
        };
        let mut hs = crypto::handshake(
            pattern,
            true,
            &self.static_secret,
            remote.as_ref(),
            &self.psk,
            self.rng.next_seed(),
        )
        .ok()?;
        let padding = [0u8; XX_INIT_PADDING_LEN];
        let payload: &[u8] = match pattern {
            Pattern::Xx => &padding,
            Pattern::Ik => &self.public_key,
        };
        let mut noise = [0u8; XX_INIT_NOISE_LEN + TAG_LEN];
        let written = hs.write_message(payload, &mut noise).ok()?;
        if written != pattern.init_noise_len() {
            return None;
        }
        let mut message = Box::new([0u8; INIT_LEN]);
        wire::Repr::Init {
            pattern,
            sender_index: index,
            noise: &noise[..written],
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        }
        .emit(&mut wire::Packet::new_unchecked(&mut message[..]));
        let handshake = Handshake {
            peer,
            started_seq: self.next_seq(),
            expires: now,
            state: State::Initiated {
                pattern,
                hs: Box::new(hs),
                message,
                mac1: [0; MAC_LEN],
                with_cookie: false,
                retry: Retry {
                    sends: 0,
                    next: now,
                },
            },
        };
        self.handshakes.insert(index, handshake);
        self.counters.handshakes_initiated += 1;
        self.send_init(now, index);
        Some(index)
    }

    /// (Re)sends the initiation of own handshake `index`, with a fresh mac1
    /// and the peer's cookie as mac2 if there is one, and schedules the
    /// next send.
    fn send_init(&mut self, now: Instant, index: u32) {
        let interval = self.config.handshake_retry_interval;
        let Some(handshake) = self.handshakes.get_mut(&index) else {
            return;
        };
        let peer = handshake.peer;
        let cookie = self
            .peers
            .get(&peer)
            .and_then(|p| p.cookie)
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_USE_MAX)
            .map(|(cookie, _)| cookie);
        let State::Initiated {
            message,
            mac1,
            with_cookie,
            retry,
            ..
        } = &mut handshake.state
        else {
            return;
        };
        let new_mac1 = crypto::mac(&crypto::mac1_key(&peer), &message[..MAC1_OFFSET]);
        wire::Packet::new_unchecked(&mut message[..]).set_mac1(&new_mac1);
        let mac2 = match cookie {
            Some(c) => crypto::mac(&c, &message[..MAC2_OFFSET]),
            None => [0; MAC_LEN],
        };
        wire::Packet::new_unchecked(&mut message[..]).set_mac2(&mac2);
        *mac1 = new_mac1;
        *with_cookie = cookie.is_some();
        schedule(retry, now, interval);
        let bytes = message.to_vec();
        self.push_transmit(peer, bytes);
    }

    /// An initiation from `src`: checked in cost order, then answered.
    pub(super) fn handle_init(&mut self, now: Instant, src: NodeId, init: &Init<'_>) {
        let covered = init.message.get(..MAC1_OFFSET).unwrap_or_default();
        if !crypto::ct_eq(&init.mac1, &crypto::mac(&self.mac1_key, covered)) {
            self.counters.rejected_bad_mac += 1;
            return;
        }
        if let Some(allowlist) = &self.config.allowlist
            && !allowlist.contains(&src)
        {
            self.counters.rejected_not_allowed += 1;
            return;
        }
        let digest: MessageDigest = Sha256::digest(covered).into();
        if self.repeated_init(&digest, &src) {
            return;
        }
        if self.collides(now, &src) {
            return;
        }
        if self.under_load(now) && !self.valid_mac2(now, &src, init) {
            self.send_cookie_reply(now, src, init);
            return;
        }
        let c = &self.config;
        let (rate, burst, sources_max) = (
            c.handshakes_per_source_per_sec,
            c.handshakes_per_source_per_sec,
            c.rate_sources_max,
        );
        if !self.sources.take(now, &src, rate, burst, sources_max) {
            self.counters.rejected_rate_limited += 1;
            return;
        }
        let total = self.config.handshakes_per_sec;
        if !self.total_bucket.take(now, total, total) {
            self.counters.rejected_rate_limited += 1;
            return;
        }
        if !self.peers.contains_key(&src) && self.peers.len() >= self.config.sessions_max {
            self.counters.rejected_sessions_full += 1;
            return;
        }
        if !self.make_handshake_room() {
            self.counters.rejected_handshakes_full += 1;
            return;
        }
        self.answer_init(now, src, init, digest);
    }

    /// Whether the initiation with `digest` was answered before: a repeat
    /// from the same source while its handshake is pending is answered
    /// again (the response was lost), any other repeat is a replay.
    fn repeated_init(&mut self, digest: &MessageDigest, src: &NodeId) -> bool {
        let pending = self.handshakes.values().find_map(|h| match h.answered() {
            Some((d, reply)) if d == digest => Some((h.peer, reply.to_vec())),
            _ => None,
        });
        if let Some((peer, reply)) = pending {
            if peer == *src {
                self.counters.handshake_duplicates_answered += 1;
                self.push_transmit(peer, reply);
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

    /// Simultaneous handshakes: an initiation from a peer this node is
    /// initiating to is dropped when this node's ID is lower (its own
    /// wins, and is resent at once: the peer is evidently up).
    fn collides(&mut self, now: Instant, src: &NodeId) -> bool {
        if self.local_id >= *src {
            return false;
        }
        let own = self
            .handshakes
            .values_mut()
            .find(|h| h.peer == *src && matches!(h.state, State::Initiated { .. }));
        let Some(own) = own else {
            return false;
        };
        if let State::Initiated { retry, .. } = &mut own.state {
            retry.next = retry.next.min(now);
        }
        self.counters.handshake_collisions += 1;
        true
    }

    /// Under load: the total bucket is below half, or half the handshake
    /// slots hold strangers' handshakes.
    fn under_load(&mut self, now: Instant) -> bool {
        let total = self.config.handshakes_per_sec;
        let strangers = self.handshakes.values().filter(|h| !h.is_own()).count();
        self.total_bucket.below_half(now, total, total)
            || strangers >= self.config.handshakes_max / 2
    }

    /// Whether the initiation's mac2 is keyed by `src`'s cookie under the
    /// current or the previous secret.
    fn valid_mac2(&mut self, now: Instant, src: &NodeId, init: &Init<'_>) -> bool {
        self.rotate_cookie_secret(now);
        let covered = init.message.get(..MAC2_OFFSET).unwrap_or_default();
        let secrets = [
            Some(self.cookie_secrets.current),
            self.cookie_secrets.previous,
        ];
        secrets.into_iter().flatten().any(|secret| {
            let cookie = crypto::cookie(&secret, src);
            crypto::ct_eq(&init.mac2, &crypto::mac(&cookie, covered))
        })
    }

    fn rotate_cookie_secret(&mut self, now: Instant) {
        let Endpoints {
            cookie_secrets,
            rng,
            ..
        } = self;
        cookie_secrets.rotate(now, || rng.next_seed());
    }

    /// Answers an initiation under load with the cookie of its source.
    fn send_cookie_reply(&mut self, now: Instant, src: NodeId, init: &Init<'_>) {
        self.rotate_cookie_secret(now);
        let cookie = crypto::cookie(&self.cookie_secrets.current, &src);
        let nonce = u64::from(self.rng.next_u32()) << 32 | u64::from(self.rng.next_u32());
        let sealed = crypto::seal_cookie(&self.local_id, nonce, &init.mac1, &cookie);
        let reply = wire::Repr::CookieReply {
            receiver_index: init.sender_index,
            nonce,
            sealed_cookie: &sealed,
        }
        .to_bytes();
        if self.push_transmit(src, reply) {
            self.counters.cookie_replies_sent += 1;
        }
    }

    /// Room for a stranger's handshake: evicts the oldest stranger's if
    /// every slot is taken; false if all slots hold own handshakes.
    pub(super) fn make_handshake_room(&mut self) -> bool {
        if self.handshakes.len() < self.config.handshakes_max {
            return true;
        }
        let oldest = self
            .handshakes
            .iter()
            .filter(|(_, h)| !h.is_own())
            .min_by_key(|(_, h)| h.started_seq)
            .map(|(index, _)| *index);
        match oldest {
            Some(index) => {
                self.handshakes.remove(&index);
                self.counters.handshakes_evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Reads an admitted initiation, answers it and holds the handshake.
    fn answer_init(&mut self, now: Instant, src: NodeId, init: &Init<'_>, digest: MessageDigest) {
        let Some(index) = self.fresh_index() else {
            self.counters.internal_errors += 1;
            return;
        };
        let seed = self.rng.next_seed();
        let state = match init.pattern {
            Pattern::Xx => {
                let Ok(init_noise) = <[u8; XX_INIT_NOISE_LEN]>::try_from(init.noise) else {
                    // The parser fixed the length.
                    self.counters.internal_errors += 1;
                    return;
                };
                let Some((hs, reply_noise)) = self.respond_xx(seed, &init_noise) else {
                    return;
                };
                let reply = wire::Repr::Response {
                    pattern: Pattern::Xx,
                    sender_index: index,
                    receiver_index: init.sender_index,
                    noise: &reply_noise,
                }
                .to_bytes();
                State::XxResponded {
                    hs: Box::new(hs),
                    remote_index: init.sender_index,
                    digest,
                    reply,
                    seed,
                    init_noise: Box::new(init_noise),
                }
            }
            Pattern::Ik => {
                let Some((keys, reply_noise, peer_key)) = self.respond_ik(seed, &src, init.noise)
                else {
                    return;
                };
                let reply = wire::Repr::Response {
                    pattern: Pattern::Ik,
                    sender_index: index,
                    receiver_index: init.sender_index,
                    noise: &reply_noise,
                }
                .to_bytes();
                State::IkResponded {
                    keys: Box::new(keys),
                    remote_index: init.sender_index,
                    digest,
                    reply,
                    peer_key,
                }
            }
        };
        let reply = match &state {
            State::XxResponded { reply, .. } | State::IkResponded { reply, .. } => reply.clone(),
            _ => return,
        };
        self.seen.insert(digest);
        self.counters.responses_sent += 1;
        self.push_transmit(src, reply);
        let handshake = Handshake {
            peer: src,
            started_seq: self.next_seq(),
            expires: later(now, self.config.handshake_timeout),
            state,
        };
        self.handshakes.insert(index, handshake);
    }

    /// The responder's XX state after reading message 1 and writing message
    /// 2, and the latter; `None` (counted) if message 1 does not decrypt:
    /// another network secret. Deterministic in `seed`.
    fn respond_xx(
        &mut self,
        seed: [u8; 32],
        init_noise: &[u8; XX_INIT_NOISE_LEN],
    ) -> Option<(HandshakeState, Vec<u8>)> {
        let Ok(mut hs) = crypto::handshake(
            Pattern::Xx,
            false,
            &self.static_secret,
            None,
            &self.psk,
            seed,
        ) else {
            self.counters.internal_errors += 1;
            return None;
        };
        let mut padding = [0u8; XX_INIT_NOISE_LEN];
        if hs.read_message(init_noise, &mut padding).is_err() {
            self.counters.rejected_network_secret += 1;
            return None;
        }
        let mut reply = vec![0u8; Pattern::Xx.response_noise_len()];
        match hs.write_message(&self.public_key, &mut reply) {
            Ok(n) if n == reply.len() => Some((hs, reply)),
            _ => {
                self.counters.internal_errors += 1;
                None
            }
        }
    }

    /// The responder's IK keys after reading message 1 (and checking the
    /// initiator's identity against `src`) and writing message 2.
    fn respond_ik(
        &mut self,
        seed: [u8; 32],
        src: &NodeId,
        noise: &[u8],
    ) -> Option<(StatelessTransportState, Vec<u8>, VerifyingKey)> {
        let Ok(mut hs) = crypto::handshake(
            Pattern::Ik,
            false,
            &self.static_secret,
            None,
            &self.psk,
            seed,
        ) else {
            self.counters.internal_errors += 1;
            return None;
        };
        let mut payload = [0u8; IDENTITY_PAYLOAD_LEN + TAG_LEN];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            self.counters.rejected_network_secret += 1;
            return None;
        };
        let payload = &payload[..len];
        if authenticate(payload, hs.get_remote_static()) != Some(*src) {
            self.counters.rejected_bad_key += 1;
            return None;
        }
        let peer_key = <[u8; 32]>::try_from(payload)
            .ok()
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())?;
        let mut reply = vec![0u8; Pattern::Ik.response_noise_len()];
        let written = hs.write_message(&[], &mut reply);
        let keys = hs.into_stateless_transport_mode();
        match (written, keys) {
            (Ok(n), Ok(keys)) if n == reply.len() => Some((keys, reply, peer_key)),
            _ => {
                self.counters.internal_errors += 1;
                None
            }
        }
    }

    /// Takes handshake `index` out of the table for a message answering it.
    fn take_handshake(&mut self, index: u32) -> Option<Handshake> {
        let handshake = self.handshakes.remove(&index);
        if handshake.is_none() {
            self.counters.rejected_unknown_index += 1;
        }
        handshake
    }

    /// A response to own handshake `index`.
    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        src: NodeId,
        pattern: Pattern,
        sender_index: u32,
        index: u32,
        noise: &[u8],
    ) {
        let Some(handshake) = self.take_handshake(index) else {
            return;
        };
        if let Outcome::Keep(handshake) =
            self.response_for(now, src, pattern, sender_index, index, noise, handshake)
        {
            self.handshakes.insert(index, *handshake);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn response_for(
        &mut self,
        now: Instant,
        src: NodeId,
        pattern: Pattern,
        sender_index: u32,
        index: u32,
        noise: &[u8],
        mut handshake: Handshake,
    ) -> Outcome {
        let State::Initiated {
            pattern: sent, hs, ..
        } = &mut handshake.state
        else {
            self.counters.rejected_stale_handshake += 1;
            return Outcome::Keep(Box::new(handshake));
        };
        if *sent != pattern {
            self.counters.rejected_stale_handshake += 1;
            return Outcome::Keep(Box::new(handshake));
        }
        if handshake.peer != src {
            self.counters.rejected_spoofed += 1;
            return Outcome::Keep(Box::new(handshake));
        }
        let peer = handshake.peer;
        let mut payload = [0u8; IDENTITY_PAYLOAD_LEN + TAG_LEN];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            // Forged or tampered: keep waiting. snow restores its hash
            // state, and both responses re-key (`e` with psk) before their
            // first decrypt, so the real response still reads.
            self.counters.rejected_decrypt += 1;
            return Outcome::Keep(Box::new(handshake));
        };
        let peer_key = match pattern {
            Pattern::Ik => None,
            Pattern::Xx => {
                let payload = &payload[..len];
                let key = <[u8; 32]>::try_from(payload)
                    .ok()
                    .and_then(|b| VerifyingKey::from_bytes(&b).ok());
                match key {
                    Some(key)
                        if authenticate(payload, hs.get_remote_static()) == Some(peer)
                            && node_id_of(&key) == peer =>
                    {
                        Some(key)
                    }
                    _ => {
                        self.counters.rejected_bad_key += 1;
                        self.own_failed(now, peer, FailReason::BadKey);
                        return Outcome::Done;
                    }
                }
            }
        };
        let finish = match pattern {
            Pattern::Ik => None,
            Pattern::Xx => {
                let mut noise = vec![0u8; wire::XX_FINISH_NOISE_LEN];
                match hs.write_message(&self.public_key, &mut noise) {
                    Ok(n) if n == noise.len() => Some(
                        wire::Repr::Finish {
                            sender_index: index,
                            receiver_index: sender_index,
                            noise: &noise,
                        }
                        .to_bytes(),
                    ),
                    _ => {
                        self.counters.internal_errors += 1;
                        self.own_failed(now, peer, FailReason::Internal);
                        return Outcome::Done;
                    }
                }
            }
        };
        let State::Initiated { hs, .. } = handshake.state else {
            return Outcome::Done;
        };
        let Ok(keys) = hs.into_stateless_transport_mode() else {
            self.counters.internal_errors += 1;
            self.own_failed(now, peer, FailReason::Internal);
            return Outcome::Done;
        };
        if let Some(key) = peer_key {
            self.add_peer_key(&key);
        }
        match finish {
            None => {
                // IK: the responder is proven; the keys are current now,
                // and the first packet under them confirms them.
                self.install(
                    now,
                    NewKeys {
                        peer,
                        index,
                        remote_index: sender_index,
                        keys: Box::new(keys),
                        initiator: true,
                        confirm: true,
                    },
                );
                Outcome::Done
            }
            Some(finish) => {
                self.push_transmit(peer, finish.clone());
                let mut retry = Retry {
                    sends: 1,
                    next: now,
                };
                schedule_after(&mut retry, now, self.config.handshake_retry_interval);
                Outcome::Keep(Box::new(Handshake {
                    state: State::Confirming {
                        keys: Box::new(keys),
                        remote_index: sender_index,
                        finish,
                        retry,
                    },
                    ..handshake
                }))
            }
        }
    }

    /// An XX_FINISH for the stranger's handshake `index`.
    pub(super) fn handle_finish(
        &mut self,
        now: Instant,
        src: NodeId,
        sender_index: u32,
        index: u32,
        noise: &[u8],
    ) {
        let Some(mut handshake) = self.take_handshake(index) else {
            return;
        };
        let State::XxResponded {
            hs,
            remote_index,
            seed,
            init_noise,
            ..
        } = &mut handshake.state
        else {
            self.counters.rejected_stale_handshake += 1;
            self.handshakes.insert(index, handshake);
            return;
        };
        if handshake.peer != src {
            self.counters.rejected_spoofed += 1;
            self.handshakes.insert(index, handshake);
            return;
        }
        if *remote_index != sender_index {
            self.counters.rejected_unknown_index += 1;
            self.handshakes.insert(index, handshake);
            return;
        }
        let mut payload = [0u8; IDENTITY_PAYLOAD_LEN + TAG_LEN];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            self.counters.rejected_decrypt += 1;
            let (seed, init_noise) = (*seed, **init_noise);
            // Rebuild the state for the real XX_FINISH (deterministic).
            match self.respond_xx(seed, &init_noise) {
                Some((fresh, _)) => {
                    if let State::XxResponded { hs, .. } = &mut handshake.state {
                        **hs = fresh;
                    }
                    self.handshakes.insert(index, handshake);
                }
                None => self.counters.internal_errors += 1,
            }
            return;
        };
        let payload = &payload[..len];
        let key = <[u8; 32]>::try_from(payload)
            .ok()
            .and_then(|b| VerifyingKey::from_bytes(&b).ok());
        let key = match key {
            Some(key) if authenticate(payload, hs.get_remote_static()) == Some(src) => key,
            _ => {
                self.counters.rejected_bad_key += 1;
                return;
            }
        };
        let remote_index = *remote_index;
        let State::XxResponded { hs, .. } = handshake.state else {
            return;
        };
        let Ok(keys) = hs.into_stateless_transport_mode() else {
            self.counters.internal_errors += 1;
            return;
        };
        self.add_peer_key(&key);
        self.install(
            now,
            NewKeys {
                peer: src,
                index,
                remote_index,
                keys: Box::new(keys),
                initiator: false,
                confirm: true,
            },
        );
    }

    /// A cookie reply to own handshake `index`: the cookie is kept for the
    /// peer and, if the last initiation had none, it is resent at once
    /// with the cookie's mac2.
    pub(super) fn handle_cookie_reply(
        &mut self,
        now: Instant,
        src: NodeId,
        index: u32,
        nonce: u64,
        sealed: &[u8],
    ) {
        let Some(handshake) = self.handshakes.get(&index) else {
            self.counters.rejected_unknown_index += 1;
            return;
        };
        let State::Initiated {
            mac1,
            with_cookie,
            retry,
            ..
        } = &handshake.state
        else {
            self.counters.rejected_stale_handshake += 1;
            return;
        };
        if handshake.peer != src {
            self.counters.rejected_spoofed += 1;
            return;
        }
        let Some(cookie) = crypto::open_cookie(&src, nonce, mac1, sealed) else {
            self.counters.rejected_decrypt += 1;
            return;
        };
        let resend = !*with_cookie && retry.sends < self.config.handshake_retries;
        self.counters.cookie_replies_received += 1;
        if let Some(peer) = self.peers.get_mut(&src) {
            peer.cookie = Some((cookie, now));
        } else {
            // No peer entry (a rekey races its removal): nothing waits.
            return;
        }
        debug_assert_eq!(cookie.len(), COOKIE_LEN);
        if resend {
            self.counters.handshake_retransmits += 1;
            self.send_init(now, index);
        }
    }

    /// Retries and expiry of handshakes due at `now`.
    pub(super) fn handshake_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline() <= now)
            .map(|(index, _)| *index)
            .collect();
        let (retries, interval) = (
            self.config.handshake_retries,
            self.config.handshake_retry_interval,
        );
        for index in due {
            let Some(handshake) = self.handshakes.get_mut(&index) else {
                continue;
            };
            let peer = handshake.peer;
            match &mut handshake.state {
                State::Initiated { retry, .. } => {
                    if retry.sends >= retries {
                        self.handshakes.remove(&index);
                        self.own_failed(now, peer, FailReason::Timeout);
                    } else {
                        self.counters.handshake_retransmits += 1;
                        self.send_init(now, index);
                    }
                }
                State::Confirming { retry, finish, .. } => {
                    if retry.sends >= retries {
                        self.handshakes.remove(&index);
                        self.own_failed(now, peer, FailReason::Timeout);
                    } else {
                        schedule(retry, now, interval);
                        let finish = finish.clone();
                        self.counters.handshake_retransmits += 1;
                        self.push_transmit(peer, finish);
                    }
                }
                State::XxResponded { .. } | State::IkResponded { .. } => {
                    self.handshakes.remove(&index);
                    self.counters.handshakes_expired += 1;
                }
            }
        }
    }

    /// An own handshake with `peer` ended without keys (it is already out
    /// of the table). Without a session this fails the peer's queue; with
    /// one, the rekey is tried again later.
    pub(super) fn own_failed(&mut self, now: Instant, peer: NodeId, reason: FailReason) {
        self.counters.handshakes_failed += 1;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        entry.handshake = None;
        entry.next_rekey_try = later(now, super::REKEY_RETRY_AFTER);
        if entry.current.is_some() {
            return;
        }
        self.push_event(super::E2eEvent::Failed { peer, reason });
        self.fail_queue(peer, super::UndeliverableReason::HandshakeFailed);
        self.forget_if_empty(&peer);
    }
}

/// Counts a send and schedules the next: the interval doubles with each.
fn schedule(retry: &mut Retry, now: Instant, interval: Duration) {
    retry.sends = retry.sends.saturating_add(1);
    schedule_after(retry, now, interval);
}

/// The next send after `retry.sends` sends.
fn schedule_after(retry: &mut Retry, now: Instant, interval: Duration) {
    let shift = retry.sends.saturating_sub(1).min(16);
    retry.next = later(now, interval.saturating_mul(1 << shift));
}
