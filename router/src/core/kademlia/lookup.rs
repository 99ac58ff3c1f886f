//! One iterative lookup: the candidate list and its requests.
//!
//! Candidates are kept sorted by XOR distance to the target. The lookup
//! queries the closest not-yet-queried candidates among the `k` closest that
//! have not failed, at most `alpha` at a time, and is done when those `k`
//! have all answered (or nothing is left to ask). Both lists are bounded:
//! `candidates_max` candidates, `alpha` requests.

use std::net::SocketAddr;
use std::time::Instant;

use crate::core::NodeId;

/// Identifies a lookup started with `Kademlia::start_lookup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LookupId(pub(crate) u64);

impl LookupId {
    /// The number, unique per `Kademlia` instance.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The XOR distance of `a` and `b` as two big-endian halves: ordered like
/// [`crate::core::Distance`], cheaper to build and compare.
pub(crate) fn distance_key(a: &NodeId, b: &NodeId) -> (u128, u128) {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let half = |x: &[u8; 32], hi: bool| {
        let mut h = [0u8; 16];
        h.copy_from_slice(if hi { &x[..16] } else { &x[16..] });
        u128::from_be_bytes(h)
    };
    (
        half(a, true) ^ half(b, true),
        half(a, false) ^ half(b, false),
    )
}

/// Who asked for the lookup: only user lookups report `LookupDone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    User,
    Maintenance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Answered,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: NodeId,
    addr: SocketAddr,
    distance: (u128, u128),
    /// Round trips on the path that found it: 1 for table contacts, one
    /// more than the node that returned it otherwise.
    depth: u32,
    attempts: u32,
    state: State,
    /// Asked even if it is not among the k closest (a bootstrap peer).
    forced: bool,
}

/// A FIND_NODE awaiting its NODES.
#[derive(Debug, Clone, Copy)]
struct Request {
    peer: NodeId,
    addr: SocketAddr,
    request_id: u64,
    deadline: Instant,
}

#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub(crate) id: LookupId,
    pub(crate) target: NodeId,
    pub(crate) purpose: Purpose,
    /// Sorted by distance to `target`; at most `candidates_max`.
    candidates: Vec<Candidate>,
    candidates_max: usize,
    /// At most alpha.
    requests: Vec<Request>,
    /// Distinct nodes queried.
    pub(crate) queried: u32,
    queried_max: u32,
}

impl Lookup {
    pub(crate) fn new(
        id: LookupId,
        target: NodeId,
        purpose: Purpose,
        candidates_max: usize,
        queried_max: u32,
    ) -> Lookup {
        Lookup {
            id,
            target,
            purpose,
            candidates: Vec::with_capacity(candidates_max + 1),
            candidates_max,
            requests: Vec::new(),
            queried: 0,
            queried_max,
        }
    }

    /// Adds a candidate found at `depth`, unless known already or `local`.
    pub(crate) fn add(&mut self, local: &NodeId, id: NodeId, addr: SocketAddr, depth: u32) {
        self.insert(local, id, addr, depth, State::Waiting, false);
    }

    /// Adds a candidate that counts as answered without being asked (a
    /// table contact, live by definition, in a lookup that only wants what
    /// a bootstrap peer knows beyond the table).
    pub(crate) fn add_known(&mut self, local: &NodeId, id: NodeId, addr: SocketAddr) {
        self.insert(local, id, addr, 0, State::Answered, false);
    }

    /// Adds a candidate that is asked whatever its distance.
    pub(crate) fn add_forced(&mut self, local: &NodeId, id: NodeId, addr: SocketAddr) {
        self.insert(local, id, addr, 1, State::Waiting, true);
    }

    fn insert(
        &mut self,
        local: &NodeId,
        id: NodeId,
        addr: SocketAddr,
        depth: u32,
        state: State,
        forced: bool,
    ) {
        if id == *local {
            return;
        }
        let distance = distance_key(&id, &self.target);
        let at = self.candidates.partition_point(|c| c.distance < distance);
        // The same distance to the target means the same ID.
        if self.candidates.get(at).is_some_and(|c| c.id == id) {
            return;
        }
        if at >= self.candidates_max && !forced {
            return;
        }
        self.candidates.insert(
            at,
            Candidate {
                id,
                addr,
                distance,
                depth,
                attempts: 0,
                state,
                forced,
            },
        );
        if self.candidates.len() > self.candidates_max {
            // Drop the farthest one not awaiting an answer nor forced. With
            // candidates_max > alpha + 1 there always is one.
            if let Some(i) = self
                .candidates
                .iter()
                .rposition(|c| c.state != State::InFlight && !c.forced)
            {
                self.candidates.remove(i);
            }
        }
    }

    /// The k closest candidates that have not failed.
    fn top(&self, k: usize) -> impl Iterator<Item = (usize, &Candidate)> {
        self.candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != State::Failed)
            .take(k)
    }

    fn may_ask(&self, c: &Candidate) -> bool {
        c.state == State::Waiting && (c.attempts > 0 || self.queried < self.queried_max)
    }

    /// The candidate to query next, if `alpha` allows another request.
    fn next_query(&self, k: usize, alpha: usize) -> Option<usize> {
        if self.requests.len() >= alpha {
            return None;
        }
        if let Some(i) = self
            .candidates
            .iter()
            .position(|c| c.forced && self.may_ask(c))
        {
            return Some(i);
        }
        self.top(k).find(|(_, c)| self.may_ask(c)).map(|(i, _)| i)
    }

    /// The next request to send, if any: marks it in flight with
    /// `request_id` until `deadline` and returns whom to ask.
    pub(crate) fn poll_query(
        &mut self,
        k: usize,
        alpha: usize,
        request_id: u64,
        deadline: Instant,
    ) -> Option<(NodeId, SocketAddr)> {
        let i = self.next_query(k, alpha)?;
        let c = &mut self.candidates[i];
        if c.attempts == 0 {
            self.queried += 1;
        }
        c.attempts += 1;
        c.state = State::InFlight;
        self.requests.push(Request {
            peer: c.id,
            addr: c.addr,
            request_id,
            deadline,
        });
        Some((c.id, c.addr))
    }

    fn set_state(&mut self, peer: &NodeId, state: State) -> Option<&Candidate> {
        let distance = distance_key(peer, &self.target);
        let at = self.candidates.partition_point(|c| c.distance < distance);
        let c = self.candidates.get_mut(at).filter(|c| c.id == *peer)?;
        c.state = state;
        Some(c)
    }

    /// A NODES reply from `peer` to `request_id`: the depth of the answering
    /// candidate, or None if this lookup did not ask that.
    pub(crate) fn on_reply(&mut self, peer: &NodeId, request_id: u64) -> Option<u32> {
        let r = self
            .requests
            .iter()
            .position(|r| r.peer == *peer && r.request_id == request_id)?;
        self.requests.swap_remove(r);
        // A candidate dropped from the list answers at the lookup's edge.
        Some(self.set_state(peer, State::Answered).map_or(1, |c| c.depth))
    }

    /// Requests past their deadline go back to waiting (another attempt) or
    /// fail after `attempts_max`; the failed nodes are pushed to `failed`.
    /// Returns the number of requests that timed out.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        attempts_max: u32,
        failed: &mut Vec<NodeId>,
    ) -> u64 {
        let mut timed_out = 0;
        let mut i = 0;
        while i < self.requests.len() {
            if self.requests[i].deadline > now {
                i += 1;
                continue;
            }
            let r = self.requests.swap_remove(i);
            timed_out += 1;
            let again = self
                .set_state(&r.peer, State::Waiting)
                .is_some_and(|c| c.attempts < attempts_max);
            if !again {
                self.set_state(&r.peer, State::Failed);
                failed.push(r.peer);
            }
        }
        timed_out
    }

    /// `peer` is gone (session died, unreachable): never ask it again.
    pub(crate) fn fail_peer(&mut self, peer: &NodeId) -> bool {
        self.requests.retain(|r| r.peer != *peer);
        let distance = distance_key(peer, &self.target);
        let at = self.candidates.partition_point(|c| c.distance < distance);
        match self.candidates.get_mut(at) {
            Some(c) if c.id == *peer && matches!(c.state, State::Waiting | State::InFlight) => {
                c.state = State::Failed;
                true
            }
            _ => false,
        }
    }

    /// Whether a request to `peer` is awaiting an answer.
    pub(crate) fn awaits(&self, peer: &NodeId) -> bool {
        self.requests.iter().any(|r| r.peer == *peer)
    }

    /// The node an in-flight request to `addr` went to, if any.
    pub(crate) fn in_flight_to_addr(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.requests
            .iter()
            .find(|r| r.addr == *addr)
            .map(|r| r.peer)
    }

    /// Done when the k closest non-failed candidates have all answered (and
    /// no forced request is pending), or when nothing is in flight and
    /// nothing more may be asked.
    pub(crate) fn is_done(&self, k: usize, alpha: usize) -> bool {
        let forced_pending = self
            .candidates
            .iter()
            .any(|c| c.forced && matches!(c.state, State::Waiting | State::InFlight));
        if !forced_pending && self.top(k).all(|(_, c)| c.state == State::Answered) {
            return true;
        }
        self.requests.is_empty() && self.next_query(k, alpha).is_none()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.requests.iter().map(|r| r.deadline).min()
    }

    /// The k closest nodes that answered (not counting `add_known` ones),
    /// closest first.
    pub(crate) fn result(&self, k: usize) -> Vec<(NodeId, SocketAddr)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered && c.attempts > 0)
            .take(k)
            .map(|c| (c.id, c.addr))
            .collect()
    }

    /// The farthest of the k closest nodes known to be live (answered, or
    /// added with `add_known`): for a self-lookup, every bucket at least as
    /// deep as this node's has been explored.
    pub(crate) fn kth_live(&self, k: usize) -> Option<NodeId> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .take(k)
            .last()
            .map(|c| c.id)
    }

    /// The longest chain of round trips among the answers.
    pub(crate) fn rounds(&self) -> u32 {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .map(|c| c.depth)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn distance_key_orders_like_distance(a: [u8; 32], b: [u8; 32], t: [u8; 32]) {
            let (a, b, t) = (NodeId::from_bytes(a), NodeId::from_bytes(b), NodeId::from_bytes(t));
            prop_assert_eq!(
                distance_key(&a, &t).cmp(&distance_key(&b, &t)),
                a.distance(&t).cmp(&b.distance(&t))
            );
        }
    }
}
