//! Overlay address to node ID (docs/endpoint.md, "Addresses"): an overlay
//! address names the first 119 (or 55) bits of a node ID
//! ([`crate::core::address`]); the full ID comes from a Kademlia lookup
//! of those bits followed by zeros, since a node with that prefix is
//! XOR-closer to the target than any node without. Every node a lookup
//! returns answered over an authenticated session, and the end-to-end
//! handshake checks the ID again: an address cannot be answered with an ID
//! that does not hash from its holder's key.
//!
//! Sans-IO, in [`crate::core::node::Node`]: answers are cached (found for
//! [`FOUND_TTL`], not found for [`NOT_FOUND_TTL`]); at most
//! [`WAITING_MAX`] addresses wait for a lookup slot (Kademlia runs at most
//! `USER_LOOKUPS_MAX` at once).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::address::IdPrefix;
use super::kademlia::LookupId;
use crate::id::NodeId;

/// A found node ID is believed this long.
pub const FOUND_TTL: Duration = Duration::from_secs(300);
/// "No such node" is believed this long.
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(5);
/// Most answers cached; the one expiring first makes room.
pub const CACHE_MAX: usize = 4096;
/// Most addresses waiting for a lookup slot; more fail at once (counted).
pub const WAITING_MAX: usize = 256;

/// What is known of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The node with that prefix.
    Known(NodeId),
    /// A lookup is running or waiting.
    Pending,
    /// No node has that prefix (recently), or no lookup could be queued.
    Failed,
}

/// Counters, in `xorlay stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResolveCounters {
    /// Lookups started.
    pub lookups: u64,
    /// Lookups that found the node.
    pub found: u64,
    /// Lookups that did not.
    pub not_found: u64,
    /// Addresses refused: too many waiting.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    id: Option<NodeId>,
    expires: Instant,
}

/// The resolver's state.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: HashMap<IdPrefix, Cached>,
    running: HashMap<LookupId, IdPrefix>,
    waiting: VecDeque<IdPrefix>,
    counters: ResolveCounters,
}

/// What the caller should do for a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Answer at once.
    Answer(Resolution),
    /// Start a lookup of `prefix.target()` and report it with
    /// [`Resolver::started`] (or [`Resolver::queue`] if none could start).
    Start,
}

impl Resolver {
    /// The counters.
    pub fn counters(&self) -> ResolveCounters {
        self.counters
    }

    /// What is known of `prefix` at `now`.
    pub fn step(&mut self, now: Instant, prefix: &IdPrefix) -> Step {
        match self.cache.get(prefix) {
            Some(c) if c.expires > now => {
                return Step::Answer(c.id.map_or(Resolution::Failed, Resolution::Known));
            }
            Some(_) => {
                self.cache.remove(prefix);
            }
            None => {}
        }
        if self.running.values().any(|p| p == prefix) || self.waiting.contains(prefix) {
            return Step::Answer(Resolution::Pending);
        }
        Step::Start
    }

    /// A lookup for `prefix` started.
    pub fn started(&mut self, id: LookupId, prefix: IdPrefix) {
        self.counters.lookups += 1;
        self.running.insert(id, prefix);
    }

    /// No lookup slot: `prefix` waits for one (or fails if too many wait).
    pub fn queue(&mut self, prefix: IdPrefix) -> Resolution {
        if self.waiting.len() >= WAITING_MAX {
            self.counters.refused += 1;
            return Resolution::Failed;
        }
        self.waiting.push_back(prefix);
        Resolution::Pending
    }

    /// The next waiting address, to start now that a slot is free.
    pub fn next_waiting(&mut self) -> Option<IdPrefix> {
        self.waiting.pop_front()
    }

    /// Puts back an address [`Resolver::next_waiting`] gave whose lookup
    /// could not start after all.
    pub fn requeue(&mut self, prefix: IdPrefix) {
        self.waiting.push_front(prefix);
    }

    /// A lookup ended with `closest`: the answer for its address, if it
    /// was one of ours.
    pub fn done(
        &mut self,
        now: Instant,
        id: LookupId,
        closest: impl IntoIterator<Item = NodeId>,
    ) -> Option<(IdPrefix, Option<NodeId>)> {
        let prefix = self.running.remove(&id)?;
        let found = closest.into_iter().find(|n| prefix.matches(n));
        if found.is_some() {
            self.counters.found += 1;
        } else {
            self.counters.not_found += 1;
        }
        self.remember(now, prefix, found);
        Some((prefix, found))
    }

    /// Caches what is known of `prefix` (a node seen otherwise, or a
    /// lookup's answer).
    pub fn remember(&mut self, now: Instant, prefix: IdPrefix, id: Option<NodeId>) {
        super::make_room(&mut self.cache, &prefix, CACHE_MAX, |c| c.expires);
        let ttl = if id.is_some() {
            FOUND_TTL
        } else {
            NOT_FOUND_TTL
        };
        self.cache.insert(
            prefix,
            Cached {
                id,
                expires: now + ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::address::{id_prefix, node_address};

    fn random_id() -> NodeId {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).expect("getrandom");
        NodeId::from_bytes(b)
    }

    fn prefix_of(id: &NodeId) -> IdPrefix {
        id_prefix(&node_address(id)).expect("an overlay address")
    }

    #[test]
    fn a_lookup_answers_with_the_node_holding_the_prefix() {
        let mut r = Resolver::default();
        let now = Instant::now();
        let target = random_id();
        let prefix = prefix_of(&target);
        assert_eq!(r.step(now, &prefix), Step::Start);
        r.started(LookupId(7), prefix);
        assert_eq!(r.step(now, &prefix), Step::Answer(Resolution::Pending));
        // Others first in the list: the one with the prefix is picked.
        let others = [random_id(), random_id()];
        let closest = others.iter().copied().chain([target]);
        assert_eq!(
            r.done(now, LookupId(7), closest),
            Some((prefix, Some(target)))
        );
        assert_eq!(r.done(now, LookupId(7), [target]), None, "only once");
        assert_eq!(
            r.step(now, &prefix),
            Step::Answer(Resolution::Known(target))
        );
        assert_eq!(r.step(now + FOUND_TTL, &prefix), Step::Start, "expired");
        // Nobody with the prefix: not found, believed for a while.
        let nobody = prefix_of(&random_id());
        r.started(LookupId(8), nobody);
        assert_eq!(r.done(now, LookupId(8), others), Some((nobody, None)));
        assert_eq!(r.step(now, &nobody), Step::Answer(Resolution::Failed));
        assert_eq!(r.step(now + NOT_FOUND_TTL, &nobody), Step::Start);
        let c = r.counters();
        assert_eq!((c.lookups, c.found, c.not_found), (2, 1, 1));
    }

    #[test]
    fn waiting_addresses_are_bounded() {
        let mut r = Resolver::default();
        for _ in 0..WAITING_MAX {
            assert_eq!(r.queue(prefix_of(&random_id())), Resolution::Pending);
        }
        assert_eq!(r.queue(prefix_of(&random_id())), Resolution::Failed);
        assert_eq!(r.counters().refused, 1);
        let first = r.next_waiting().expect("waiting");
        r.requeue(first);
        assert_eq!(r.next_waiting(), Some(first));
    }
}
