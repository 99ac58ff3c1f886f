//! Keys and peers: sealing and opening TRANSPORT messages, the current and
//! previous keys of a peer, the queue waiting for a handshake, rekeying,
//! key expiry and idle sessions.

use std::collections::VecDeque;
use std::time::Instant;

use snow::StatelessTransportState;

use super::handshake::State;
use super::{
    CloseReason, E2eEvent, Endpoints, PREVIOUS_KEYS_MAX, REKEY_RESPONDER_DELAY, REKEY_RETRY_AFTER,
    SEND_COUNTER_MAX, UndeliverableReason, later,
};
use crate::core::session::replay::ReplayWindow;
use crate::id::NodeId;
use crate::wire::e2e::{self as wire, COOKIE_LEN, TAG_LEN, TRANSPORT_CIPHERTEXT_OFFSET};

/// One set of session keys, keyed by this node's index.
pub(super) struct Keypair {
    pub(super) peer: NodeId,
    pub(super) remote_index: u32,
    pub(super) keys: Box<StatelessTransportState>,
    pub(super) send_counter: u64,
    pub(super) replay: ReplayWindow,
    pub(super) created: Instant,
    /// Whether this node initiated the handshake that made them.
    pub(super) initiator: bool,
}

/// What this node holds for one remote endpoint.
pub(super) struct Peer {
    /// The keys to send with.
    pub(super) current: Option<u32>,
    /// Earlier keys, oldest first, each kept for receiving until its
    /// instant (at most [`PREVIOUS_KEYS_MAX`]).
    pub(super) previous: Vec<(u32, Instant)>,
    /// An own handshake in flight.
    pub(super) handshake: Option<u32>,
    /// Plaintexts waiting for the handshake.
    pub(super) queue: VecDeque<Vec<u8>>,
    /// Last data sent or received (or the first keys made).
    pub(super) last_active: Instant,
    /// Whether data flowed since the current keys were made.
    pub(super) active_since_keys: bool,
    /// No rekey before this (after a failed one).
    pub(super) next_rekey_try: Instant,
    /// The responder's last cookie and when it came.
    pub(super) cookie: Option<([u8; COOKIE_LEN], Instant)>,
}

impl Peer {
    fn new(now: Instant) -> Peer {
        Peer {
            current: None,
            previous: Vec::new(),
            handshake: None,
            queue: VecDeque::new(),
            last_active: now,
            active_since_keys: false,
            next_rekey_try: now,
            cookie: None,
        }
    }
}

/// Keys a completed handshake yields.
pub(super) struct NewKeys {
    pub(super) peer: NodeId,
    pub(super) index: u32,
    pub(super) remote_index: u32,
    pub(super) keys: Box<StatelessTransportState>,
    pub(super) initiator: bool,
    /// Send a keepalive if no queued packet goes out under them (the peer
    /// waits for a first packet to take them up).
    pub(super) confirm: bool,
}

impl Endpoints {
    /// Makes `new` the peer's current keys (the current ones become the
    /// previous), abandons an own handshake still in flight, and sends
    /// the queue. False (counted) if `sessions_max` peers exist.
    pub(super) fn install(&mut self, now: Instant, new: NewKeys) -> bool {
        let NewKeys {
            peer,
            index,
            remote_index,
            keys,
            initiator,
            confirm,
        } = new;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.sessions_max {
            self.counters.rejected_sessions_full += 1;
            return false;
        }
        let grace = self.config.previous_grace;
        let entry = self.peers.entry(peer).or_insert_with(|| Peer::new(now));
        if let Some(own) = entry.handshake.take()
            && own != index
            && self.handshakes.remove(&own).is_some()
        {
            self.counters.handshakes_superseded += 1;
        }
        let first = match entry.current.replace(index) {
            Some(old) => {
                entry.previous.push((old, later(now, grace)));
                while entry.previous.len() > PREVIOUS_KEYS_MAX {
                    let (stale, _) = entry.previous.remove(0);
                    self.keypairs.remove(&stale);
                }
                self.counters.rekeys += 1;
                false
            }
            None => {
                entry.last_active = now;
                true
            }
        };
        entry.active_since_keys = false;
        entry.next_rekey_try = now;
        let queue = std::mem::take(&mut entry.queue);
        self.keypairs.insert(
            index,
            Keypair {
                peer,
                remote_index,
                keys,
                send_counter: 0,
                replay: ReplayWindow::new(),
                created: now,
                initiator,
            },
        );
        self.counters.handshakes_completed += 1;
        if first {
            self.push_event(E2eEvent::Established { peer });
        }
        let flushed = queue.len();
        for packet in queue {
            self.queued_packets -= 1;
            self.queued_bytes -= packet.len();
            self.send_data(now, index, &packet);
        }
        if flushed == 0 && confirm {
            self.send_data(now, index, &[]);
        }
        true
    }

    /// The index of `dst`'s current keys if they may still send.
    pub(super) fn sending_keys(&self, now: Instant, dst: &NodeId) -> Option<u32> {
        let index = self.peers.get(dst)?.current?;
        let keypair = self.keypairs.get(&index)?;
        let fresh = later(keypair.created, self.config.reject_after) > now;
        (fresh && keypair.send_counter < SEND_COUNTER_MAX).then_some(index)
    }

    /// Seals `plaintext` (empty: a keepalive) under keys `index` and queues
    /// it; a data packet that cannot go is reported `Undeliverable`.
    pub(super) fn send_data(&mut self, now: Instant, index: u32, plaintext: &[u8]) {
        let Some((peer, bytes)) = self.seal(index, plaintext) else {
            self.counters.internal_errors += 1;
            return;
        };
        let sent = self.push_transmit(peer, bytes);
        if plaintext.is_empty() {
            self.counters.keepalives_sent += u64::from(sent);
            return;
        }
        if !sent {
            self.undeliverable(peer, UndeliverableReason::TransmitQueueFull, plaintext);
            return;
        }
        self.counters.packets_sent += 1;
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.last_active = now;
            entry.active_since_keys = true;
        }
    }

    /// A TRANSPORT of `plaintext` under keys `index`, and its destination.
    fn seal(&mut self, index: u32, plaintext: &[u8]) -> Option<(NodeId, Vec<u8>)> {
        let keypair = self.keypairs.get_mut(&index)?;
        if keypair.send_counter >= SEND_COUNTER_MAX {
            return None;
        }
        let counter = keypair.send_counter;
        let mut bytes = vec![0u8; TRANSPORT_CIPHERTEXT_OFFSET + plaintext.len() + TAG_LEN];
        let mut packet = wire::Packet::new_unchecked(&mut bytes[..]);
        packet.set_kind(wire::Kind::Transport);
        packet.clear_reserved();
        packet.set_sender_index(index);
        packet.set_receiver_index(keypair.remote_index);
        packet.set_counter(counter);
        let len = keypair
            .keys
            .write_message(counter, plaintext, packet.ciphertext_mut())
            .ok()?;
        if len != plaintext.len() + TAG_LEN {
            return None;
        }
        keypair.send_counter += 1;
        Some((keypair.peer, bytes))
    }

    /// Queues `plaintext` for `dst` until a handshake completes, starting
    /// one if none is in flight.
    pub(super) fn enqueue(&mut self, now: Instant, dst: NodeId, plaintext: &[u8]) {
        if !self.peers.contains_key(&dst) && self.peers.len() >= self.config.sessions_max {
            self.counters.queue_dropped_failed += 1;
            self.undeliverable(dst, UndeliverableReason::NoRoom, plaintext);
            return;
        }
        let c = &self.config;
        let (per_peer, total, bytes_max) =
            (c.queue_per_peer_max, c.queue_total_max, c.queue_bytes_max);
        let fits_total =
            self.queued_packets < total && self.queued_bytes + plaintext.len() <= bytes_max;
        let entry = self.peers.entry(dst).or_insert_with(|| Peer::new(now));
        if entry.queue.len() < per_peer && fits_total {
            entry.queue.push_back(plaintext.to_vec());
            self.queued_packets += 1;
            self.queued_bytes += plaintext.len();
        } else {
            self.counters.queue_dropped += 1;
            self.undeliverable(dst, UndeliverableReason::QueueFull, plaintext);
        }
        let busy = self.peers.get(&dst).is_some_and(|p| p.handshake.is_some());
        if !busy {
            self.start_own(now, dst);
        }
    }

    /// Starts an own handshake with `dst` (which has a peer entry). On no
    /// room or an internal failure, its queue is failed (without a
    /// session) or the rekey is retried later.
    fn start_own(&mut self, now: Instant, dst: NodeId) {
        let index =
            if self.handshakes.len() < self.config.handshakes_max || self.make_handshake_room() {
                let index = self.start_handshake(now, dst);
                if index.is_none() {
                    self.counters.internal_errors += 1;
                }
                index
            } else {
                None
            };
        let Some(entry) = self.peers.get_mut(&dst) else {
            return;
        };
        match index {
            Some(index) => entry.handshake = Some(index),
            None => {
                entry.next_rekey_try = later(now, REKEY_RETRY_AFTER);
                if entry.current.is_none() {
                    self.fail_queue(dst, UndeliverableReason::NoRoom);
                    self.forget_if_empty(&dst);
                }
            }
        }
    }

    /// Drops `peer`'s queue, each packet reported `Undeliverable`.
    pub(super) fn fail_queue(&mut self, peer: NodeId, reason: UndeliverableReason) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let queue = std::mem::take(&mut entry.queue);
        for packet in queue {
            self.queued_packets -= 1;
            self.queued_bytes -= packet.len();
            self.counters.queue_dropped_failed += 1;
            self.undeliverable(peer, reason, &packet);
        }
    }

    /// Removes `peer`'s entry if it holds nothing.
    pub(super) fn forget_if_empty(&mut self, peer: &NodeId) {
        let empty = self.peers.get(peer).is_some_and(|p| {
            p.current.is_none()
                && p.previous.is_empty()
                && p.handshake.is_none()
                && p.queue.is_empty()
        });
        if empty {
            self.peers.remove(peer);
        }
    }

    /// When `peer` should rekey, if it should.
    fn rekey_at(&self, peer: &Peer) -> Option<Instant> {
        if peer.handshake.is_some() {
            return None;
        }
        let keypair = self.keypairs.get(&peer.current?)?;
        if keypair.send_counter >= self.config.rekey_after_messages {
            return Some(peer.next_rekey_try);
        }
        if !peer.active_since_keys {
            return None;
        }
        let mut after = self.config.rekey_after;
        if !keypair.initiator {
            after = after.saturating_add(REKEY_RESPONDER_DELAY);
        }
        Some(later(keypair.created, after).max(peer.next_rekey_try))
    }

    /// Starts a rekey with `dst` if one is due.
    pub(super) fn maybe_rekey(&mut self, now: Instant, dst: &NodeId) {
        let due = self
            .peers
            .get(dst)
            .and_then(|p| self.rekey_at(p))
            .is_some_and(|at| at <= now);
        if due {
            self.start_own(now, *dst);
        }
    }

    /// A TRANSPORT for keys `index`.
    pub(super) fn handle_transport(
        &mut self,
        now: Instant,
        src: NodeId,
        sender_index: u32,
        index: u32,
        counter: u64,
        ciphertext: &[u8],
    ) {
        let reject_after = self.config.reject_after;
        let Some(keypair) = self.keypairs.get_mut(&index) else {
            self.confirm(now, src, sender_index, index, counter, ciphertext);
            return;
        };
        if keypair.peer != src {
            self.counters.rejected_spoofed += 1;
            return;
        }
        if keypair.remote_index != sender_index {
            self.counters.rejected_unknown_index += 1;
            return;
        }
        if later(keypair.created, reject_after) <= now {
            self.counters.rejected_expired += 1;
            return;
        }
        if !keypair.replay.check(counter) {
            self.counters.rejected_replay += 1;
            return;
        }
        let mut plaintext = vec![0u8; ciphertext.len()];
        let Ok(len) = keypair
            .keys
            .read_message(counter, ciphertext, &mut plaintext)
        else {
            self.counters.rejected_decrypt += 1;
            return;
        };
        keypair.replay.accept(counter);
        plaintext.truncate(len);
        self.deliver(now, src, plaintext);
    }

    /// A TRANSPORT for keys still held by a handshake: the first packet
    /// under them makes them current.
    fn confirm(
        &mut self,
        now: Instant,
        src: NodeId,
        sender_index: u32,
        index: u32,
        counter: u64,
        ciphertext: &[u8],
    ) {
        let Some(handshake) = self.handshakes.get(&index) else {
            self.counters.rejected_unknown_index += 1;
            return;
        };
        let (keys, remote_index) = match &handshake.state {
            State::Confirming {
                keys, remote_index, ..
            }
            | State::IkResponded {
                keys, remote_index, ..
            } => (keys, *remote_index),
            _ => {
                self.counters.rejected_stale_handshake += 1;
                return;
            }
        };
        if handshake.peer != src {
            self.counters.rejected_spoofed += 1;
            return;
        }
        if remote_index != sender_index {
            self.counters.rejected_unknown_index += 1;
            return;
        }
        let mut plaintext = vec![0u8; ciphertext.len()];
        let Ok(len) = keys.read_message(counter, ciphertext, &mut plaintext) else {
            self.counters.rejected_decrypt += 1;
            return;
        };
        plaintext.truncate(len);
        let Some(handshake) = self.handshakes.remove(&index) else {
            return;
        };
        let (keys, initiator, peer_key) = match handshake.state {
            State::Confirming { keys, .. } => (keys, true, None),
            State::IkResponded { keys, peer_key, .. } => (keys, false, Some(peer_key)),
            _ => return,
        };
        if let Some(key) = peer_key {
            self.add_peer_key(&key);
        }
        let installed = self.install(
            now,
            NewKeys {
                peer: src,
                index,
                remote_index,
                keys,
                initiator,
                confirm: false,
            },
        );
        if !installed {
            return;
        }
        if let Some(keypair) = self.keypairs.get_mut(&index) {
            keypair.replay.accept(counter);
        }
        self.deliver(now, src, plaintext);
    }

    /// An authenticated plaintext from `src` (a keepalive if empty).
    fn deliver(&mut self, now: Instant, src: NodeId, plaintext: Vec<u8>) {
        if plaintext.is_empty() {
            self.counters.keepalives_received += 1;
            return;
        }
        if let Some(entry) = self.peers.get_mut(&src) {
            entry.last_active = now;
            entry.active_since_keys = true;
        }
        self.counters.packets_received += 1;
        self.push_event(E2eEvent::Received { src, plaintext });
        self.maybe_rekey(now, &src);
    }

    /// Whether keys `index` may no longer be used at `now`.
    fn expired(&self, now: Instant, index: u32) -> bool {
        self.keypairs.get(&index).is_none_or(|k| {
            later(k.created, self.config.reject_after) <= now || k.send_counter >= SEND_COUNTER_MAX
        })
    }

    /// Previous keys past their grace, expired keys, idle sessions and due
    /// rekeys.
    pub(super) fn peer_timers(&mut self, now: Instant) {
        let due: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, peer)| self.peer_deadline(id, peer).is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.peer_timer(now, id);
        }
    }

    fn peer_timer(&mut self, now: Instant, id: NodeId) {
        let idle_timeout = self.config.idle_timeout;
        let Some(entry) = self.peers.get(&id) else {
            return;
        };
        let (current, last_active) = (entry.current, entry.last_active);
        let (keep, gone): (Vec<_>, Vec<_>) = entry
            .previous
            .iter()
            .partition(|(index, until)| *until > now && !self.expired(now, *index));
        for (index, _) in gone {
            self.keypairs.remove(&index);
        }
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.previous = keep;
        }
        if let Some(current) = current {
            if later(last_active, idle_timeout) <= now {
                self.close(id, CloseReason::Idle);
                self.counters.sessions_expired += 1;
            } else if self.expired(now, current) {
                self.keypairs.remove(&current);
                if let Some(entry) = self.peers.get_mut(&id) {
                    entry.current = None;
                }
                self.counters.keys_expired += 1;
                self.push_event(E2eEvent::Closed {
                    peer: id,
                    reason: CloseReason::Expired,
                });
            }
        }
        self.maybe_rekey(now, &id);
        self.forget_if_empty(&id);
    }

    /// Drops every key of `peer` and its own handshake, and reports it.
    fn close(&mut self, peer: NodeId, reason: CloseReason) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let previous = std::mem::take(&mut entry.previous);
        let indexes = entry
            .current
            .take()
            .into_iter()
            .chain(previous.into_iter().map(|(index, _)| index));
        let own = entry.handshake.take();
        for index in indexes {
            self.keypairs.remove(&index);
        }
        if let Some(own) = own {
            self.handshakes.remove(&own);
        }
        self.push_event(E2eEvent::Closed { peer, reason });
    }

    /// The next instant `peer` needs a timer, if any.
    pub(super) fn peer_deadline(&self, _id: &NodeId, peer: &Peer) -> Option<Instant> {
        let reject_after = self.config.reject_after;
        let expiry = |index: Option<u32>| {
            index
                .and_then(|i| self.keypairs.get(&i))
                .map(|k| later(k.created, reject_after))
        };
        let previous = peer
            .previous
            .iter()
            .flat_map(|(index, until)| [Some(*until), expiry(Some(*index))])
            .flatten();
        let current = expiry(peer.current).into_iter().chain(
            peer.current
                .map(|_| later(peer.last_active, self.config.idle_timeout)),
        );
        previous.chain(current).chain(self.rekey_at(peer)).min()
    }
}
