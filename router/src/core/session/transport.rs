//! Established sessions: sealing and opening TRANSPORT messages, the
//! initiator's confirmation, keepalives and expiry.

use std::net::SocketAddr;
use std::time::Instant;

use snow::StatelessTransportState;

use super::handshake::{HalfOpenState, Refused};
use super::replay::ReplayWindow;
use super::{
    CloseReason, ConnectFailure, Received, SEND_COUNTER_MAX, SessionError, SessionEvent, Sessions,
    later,
};
use crate::id::NodeId;
use crate::wire::session::{self as wire, TAG_LEN};

/// An established session.
pub(super) struct Session {
    pub(super) peer: NodeId,
    pub(super) addr: SocketAddr,
    pub(super) remote_index: u32,
    pub(super) transport: Box<StatelessTransportState>,
    pub(super) send_counter: u64,
    pub(super) replay: ReplayWindow,
    pub(super) last_sent: Instant,
    pub(super) last_received: Instant,
    /// Who sent HANDSHAKE_1.
    pub(super) initiator: NodeId,
    /// Local order of establishment, for the simultaneous-open rule.
    pub(super) established_seq: u64,
}

impl Sessions {
    pub(super) fn handle_transport(&mut self, rx: &Received<'_>, counter: u64, ciphertext: &[u8]) {
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
    pub(super) fn seal(
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

    pub(super) fn send_keepalive(&mut self, now: Instant, index: u32) {
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

    /// Closes the sessions that have been silent for `dead_after` and sends
    /// keepalives on those that have sent nothing for `keepalive_interval`.
    pub(super) fn session_timers(&mut self, now: Instant) {
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
}
