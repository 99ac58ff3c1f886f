//! The location service: how a source learns a destination's nearest
//! beacon (its "via"), so that routers above level 0 reach destinations
//! outside their cluster (docs/routing.md, "Location service").
//!
//! - Every non-beacon router registers `(itself, its nearest beacon)` with
//!   its **homes**: the [`HOMES`] beacons XOR-closest to its ID. Every
//!   router has a route to every beacon, so every router can compute any
//!   node's homes and reach them.
//! - A home stores a registration only after a **probe** sent to the
//!   registrant by way of the claimed beacon came back with its nonce: the
//!   claimed path works, and only the registrant could answer. Nobody can
//!   register a false beacon for someone else.
//! - A source **looks up** a destination at its homes and caches the
//!   answer; an answer counts only with the nonce of the lookup it answers.
//!
//! The messages are [`Locate`] messages, relayed hop by hop over the
//! neighbor sessions toward their target: by the target's own route where a
//! relay has one, else toward the target's beacon. Every table here is
//! bounded, every message kind rate-limited per neighbor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Message, NextHop, Routing, Transmit, push_bounded};
use crate::id::NodeId;
use crate::wire::route::{Locate, LocateKind};

/// Beacons a node registers with (and a source asks, in turn).
pub const HOMES: usize = 2;
/// How often the registration state is looked at (changes of the nearest
/// beacon or of the homes go out at the next tick).
pub const TICK: Duration = Duration::from_millis(250);
/// A registration is repeated this often even if nothing changed.
pub const REGISTER_REFRESH: Duration = Duration::from_secs(20);
/// A registration whose probe has not come from every home by then is
/// sent again (a probe can be lost while routes settle).
pub const REGISTER_RETRY: Duration = Duration::from_millis(400);
/// A home forgets a registration not refreshed for this long.
pub const REGISTRY_TTL: Duration = Duration::from_secs(60);
/// Most registrations a home keeps; more are refused and counted.
pub const REGISTRY_MAX: usize = 1 << 16;
/// Most probes a home has outstanding; more registrations wait for the
/// registrant's next refresh.
pub const PROBES_MAX: usize = 4096;
/// A probe not answered within this is forgotten.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A source keeps an answer this long.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// An answer in use older than this is asked again (the old one serves
/// meanwhile): a destination that moved is found again within this.
pub const CACHE_REFRESH: Duration = Duration::from_secs(5);
/// Most answers cached; the one expiring first makes room.
pub const CACHE_MAX: usize = 8192;
/// "Not registered anywhere" is believed this long.
pub const NOT_FOUND_HOLD: Duration = Duration::from_millis(250);
/// Most lookups in flight; more are refused and counted.
pub const LOOKUPS_MAX: usize = 256;
/// A lookup asks every home at once, again after this if no home knew
/// the destination (messages are lost while routes change, and a home may
/// not have the destination's new registration yet).
pub const LOOKUP_RETRY: Duration = Duration::from_millis(300);
/// Rounds of asking before a lookup ends as not found.
pub const LOOKUP_ROUNDS: u32 = 5;
/// LOCATE messages taken from one neighbor per second; more are dropped
/// and counted.
pub const PER_NEIGHBOR_PER_SECOND: u32 = 4000;
/// Hops a LOCATE message may travel.
pub const HOPS_MAX: u8 = 64;

/// How a source can send to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// This node.
    Local,
    /// By its own route, through this neighbor.
    Route(NodeId),
    /// By way of its nearest beacon (put into the packet's via field).
    Via(NodeId),
    /// Not known yet: a lookup is under way.
    Pending,
    /// No home knows it (recently), or no lookup could be started.
    NotFound,
}

/// What the location service did, in `xorlay stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LocationCounters {
    /// Registrations sent (one per home).
    pub registers_tx: u64,
    /// Registrations stored after their probe came back (as a home).
    pub registered: u64,
    /// Registrations refused: the registry was full.
    pub registry_full: u64,
    /// Probes sent (as a home).
    pub probes_tx: u64,
    /// Probes answered (as a registrant).
    pub probes_answered: u64,
    /// Lookups answered (as a home), found or not.
    pub lookups_answered: u64,
    /// Lookups sent.
    pub lookups_tx: u64,
    /// Lookups answered with a beacon (as a source).
    pub found: u64,
    /// Lookups that ended without a beacon (every home asked).
    pub not_found: u64,
    /// Answers to a lookup another home had answered already.
    pub answers_late: u64,
    /// Lookups not started: too many in flight.
    pub lookups_refused: u64,
    /// Messages relayed toward their target.
    pub relayed: u64,
    /// Messages dropped: no route toward the target, hop limit, or an
    /// answer or probe nobody asked for.
    pub dropped: u64,
    /// Messages dropped over a neighbor's rate limit.
    pub rate_limited: u64,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    /// `None`: not found.
    via: Option<NodeId>,
    fetched: Instant,
    expires: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Lookup {
    nonce: u64,
    /// Rounds of asking so far.
    rounds: u32,
    /// When the next round is due.
    deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    via: NodeId,
    nonce: u64,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Registration {
    homes: Vec<NodeId>,
    via: NodeId,
    at: Instant,
    /// Homes whose probe this node answered.
    probed: Vec<NodeId>,
}

/// The location state of one router (part of [`Routing`]).
#[derive(Debug, Default)]
pub(super) struct Location {
    key: [u8; 32],
    nonces: u64,
    next_tick: Option<Instant>,
    registration: Option<Registration>,
    registry: HashMap<NodeId, (NodeId, Instant)>,
    probes: HashMap<NodeId, Probe>,
    cache: HashMap<NodeId, Cached>,
    lookups: HashMap<NodeId, Lookup>,
    /// (window start, messages taken) per neighbor.
    budget: HashMap<NodeId, (Instant, u32)>,
    generation: u64,
    counters: LocationCounters,
}

impl Location {
    fn nonce(&mut self) -> u64 {
        self.nonces += 1;
        let mut hasher = Sha256::new();
        hasher.update(b"xorlay location nonce v1");
        hasher.update(self.key);
        hasher.update(self.nonces.to_be_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(word)
    }

    /// Takes one message from `from` out of its budget.
    fn take_budget(&mut self, now: Instant, from: NodeId) -> bool {
        let entry = self.budget.entry(from).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= PER_NEIGHBOR_PER_SECOND
    }

    fn cache_insert(&mut self, now: Instant, dst: NodeId, via: Option<NodeId>) {
        crate::core::make_room(&mut self.cache, &dst, CACHE_MAX, |c| c.expires);
        let ttl = if via.is_some() {
            CACHE_TTL
        } else {
            NOT_FOUND_HOLD
        };
        let before = self.cache.get(&dst).and_then(|c| c.via);
        self.cache.insert(
            dst,
            Cached {
                via,
                fetched: now,
                expires: now + ttl,
            },
        );
        if before != via {
            self.generation += 1;
        }
    }
}

/// The `count` beacons of `beacons` XOR-closest to `id`.
fn closest(beacons: impl Iterator<Item = NodeId>, id: &NodeId, count: usize) -> Vec<NodeId> {
    let mut all: Vec<NodeId> = beacons.collect();
    all.sort_unstable_by_key(|b| b.distance(id));
    all.truncate(count);
    all
}

impl Routing {
    /// Keys the nonces of the location service: call once with secret
    /// random bytes before the first input (the nonces must not be
    /// guessable, or anyone could answer a probe).
    pub fn set_location_key(&mut self, key: [u8; 32]) {
        self.location.key = key;
    }

    /// The location service's counters.
    pub fn location_counters(&self) -> LocationCounters {
        self.location.counters
    }

    /// Changes whenever a cached beacon appears, changes or goes.
    pub fn location_generation(&self) -> u64 {
        self.location.generation
    }

    /// Registrations this node holds as a home.
    pub fn registry_len(&self) -> usize {
        self.location.registry.len()
    }

    /// The beacon `id` registered here (as its home), if any.
    pub fn registered_via(&self, id: &NodeId) -> Option<NodeId> {
        self.location.registry.get(id).map(|(via, _)| *via)
    }

    /// Every cached destination with its beacon (not an answer naming this
    /// node: it is out of date, this node has no route to the destination,
    /// and it is being asked again).
    pub fn locations(&self) -> impl Iterator<Item = (&NodeId, NodeId)> {
        self.location
            .cache
            .iter()
            .filter_map(|(dst, c)| c.via.filter(|v| *v != self.local).map(|v| (dst, v)))
    }

    /// The cached beacon of `dst`, if any (no lookup started).
    pub fn location_of(&self, dst: &NodeId) -> Option<NodeId> {
        self.location.cache.get(dst).and_then(|c| c.via)
    }

    /// The beacons a node registers with: the [`HOMES`] beacons known here
    /// XOR-closest to `id` (this node included if it is a beacon).
    pub fn homes_of(&self, id: &NodeId) -> Vec<NodeId> {
        let own = self.is_beacon().then_some(self.local);
        let beacons = self
            .routes()
            .filter(|(_, _, _, beacon)| *beacon)
            .map(|(id, ..)| *id)
            .chain(own);
        closest(beacons, id, HOMES)
    }

    /// Where a packet for `dst` (that carries `via`, if any) goes next:
    /// by the destination's own route, else by the via's.
    pub fn next_hop_via(&self, dst: &NodeId, via: Option<&NodeId>) -> NextHop {
        match self.next_hop(dst) {
            NextHop::Unknown => match via {
                Some(v) if v != &self.local => self.next_hop(v),
                _ => NextHop::Unknown,
            },
            known => known,
        }
    }

    /// How this node can send to `dst`; starts (or refreshes) a lookup
    /// when it has no route and its cached answer is missing or old.
    pub fn locate(&mut self, now: Instant, dst: &NodeId) -> Located {
        match self.next_hop(dst) {
            NextHop::Local => return Located::Local,
            NextHop::Neighbor(n) => return Located::Route(n),
            NextHop::Unknown => {}
        }
        let cached = self.location.cache.get(dst).copied();
        if let Some(c) = cached.filter(|c| c.expires > now) {
            // An answer naming this node, which has no route to `dst`, is
            // out of date (the destination's beacon changed): ask now.
            let stale = c.via == Some(self.local);
            if stale || (c.via.is_some() && now >= c.fetched + CACHE_REFRESH) {
                self.start_lookup(now, dst);
            }
            if stale {
                return Located::Pending;
            }
            return c.via.map_or(Located::NotFound, Located::Via);
        }
        if self.start_lookup(now, dst) {
            Located::Pending
        } else {
            Located::NotFound
        }
    }

    /// Asks `dst`'s first home; false if no lookup could be started.
    fn start_lookup(&mut self, now: Instant, dst: &NodeId) -> bool {
        if self.location.lookups.contains_key(dst) {
            return true;
        }
        if self.location.lookups.len() >= LOOKUPS_MAX {
            self.location.counters.lookups_refused += 1;
            return false;
        }
        let nonce = self.location.nonce();
        self.location.lookups.insert(
            *dst,
            Lookup {
                nonce,
                rounds: 0,
                deadline: now,
            },
        );
        self.ask_homes(now, dst)
    }

    /// Sends the lookup for `dst` to all its homes (a round); after
    /// [`LOOKUP_ROUNDS`] rounds without an answer naming a beacon, the
    /// lookup ends as not found. False if it ended.
    fn ask_homes(&mut self, now: Instant, dst: &NodeId) -> bool {
        let homes = self.homes_of(dst);
        let Some(lookup) = self.location.lookups.get_mut(dst) else {
            return false;
        };
        if lookup.rounds >= LOOKUP_ROUNDS || homes.is_empty() {
            self.location.lookups.remove(dst);
            self.location.counters.not_found += 1;
            self.location.cache_insert(now, *dst, None);
            return false;
        }
        lookup.rounds += 1;
        lookup.deadline = now + LOOKUP_RETRY;
        let nonce = lookup.nonce;
        // This node may be a home itself: its own registry answers.
        if homes.contains(&self.local)
            && let Some(&(via, _)) = self.location.registry.get(dst)
        {
            self.location.lookups.remove(dst);
            self.location.counters.found += 1;
            self.location.cache_insert(now, *dst, Some(via));
            return true;
        }
        self.schedule_location_tick(now + LOOKUP_RETRY);
        let asker_via = self.own_via();
        let local = self.local;
        for home in homes.into_iter().filter(|h| *h != local) {
            self.location.counters.lookups_tx += 1;
            let message = Locate {
                kind: LocateKind::Lookup,
                hops_left: HOPS_MAX,
                nonce,
                target: home,
                target_via: None,
                asker: self.local,
                asker_via,
                subject: *dst,
                subject_via: None,
            };
            self.send_locate(message, None);
        }
        true
    }

    /// This node's nearest beacon, or `None` if it is one (or knows none):
    /// what others put into packets for it.
    ///
    /// Sticky: the registered beacon stays while its metric is within an
    /// eighth of the nearest one's (well inside the cluster margin of
    /// [`super::cluster_scope`]), so that round-trip noise between two
    /// beacons at about the same distance does not re-register every time.
    fn own_via(&self) -> Option<NodeId> {
        let nearest = self.nearest_beacon().filter(|b| *b != self.local)?;
        let radius = self.radius();
        let registered = self.location.registration.as_ref().map(|r| r.via);
        match registered.and_then(|v| self.route(&v).map(|route| (v, route))) {
            Some((via, (_, metric, true))) if metric <= radius.saturating_add(radius / 8) => {
                Some(via)
            }
            _ => Some(nearest),
        }
    }

    fn schedule_location_tick(&mut self, at: Instant) {
        if self.location.next_tick.is_none_or(|t| at < t) {
            self.location.next_tick = Some(at);
        }
    }

    /// When the location service wants a timeout.
    pub(super) fn location_timeout(&self) -> Option<Instant> {
        self.location.next_tick
    }

    /// Expires entries, retries lookups, (re)registers.
    pub(super) fn location_handle_timeout(&mut self, now: Instant) {
        if self.location.next_tick.is_none_or(|t| t > now) {
            return;
        }
        self.location.next_tick = None;
        if self.left {
            return;
        }
        self.location
            .registry
            .retain(|_, (_, expires)| *expires > now);
        self.location.probes.retain(|_, p| p.expires > now);
        // An answer whose beacon this router has no route to any more (it
        // died, or the network split) is of no use: asked again at the
        // next packet, the home knows the destination's new beacon.
        let unrouted: Vec<NodeId> = self
            .location
            .cache
            .iter()
            .filter(|(_, c)| c.via.is_some_and(|v| self.next_hop(&v) == NextHop::Unknown))
            .map(|(dst, _)| *dst)
            .collect();
        let loc = &mut self.location;
        let before = loc.cache.len();
        let mut lost = !unrouted.is_empty();
        for dst in unrouted {
            loc.cache.remove(&dst);
        }
        loc.cache.retain(|_, c| {
            let keep = c.expires > now;
            lost |= !keep && c.via.is_some();
            keep
        });
        if lost || before != loc.cache.len() {
            loc.generation += 1;
        }
        loc.budget
            .retain(|_, (start, _)| now.saturating_duration_since(*start) < Duration::from_secs(1));
        let overdue: Vec<NodeId> = loc
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for dst in overdue {
            self.ask_homes(now, &dst);
        }
        self.register(now);
        let busy = !self.location.registry.is_empty()
            || !self.location.probes.is_empty()
            || !self.location.cache.is_empty()
            || !self.location.lookups.is_empty()
            || self.wants_registration();
        if busy && !self.left {
            self.schedule_location_tick(now + TICK);
        }
    }

    /// Whether this node should be registered: above level 0, not a
    /// beacon itself.
    fn wants_registration(&self) -> bool {
        self.level > 0 && !self.is_beacon() && !self.neighbors.is_empty()
    }

    /// Starts the location ticks once there is a link (from the routing
    /// core's link handling).
    pub(super) fn location_link_up(&mut self, now: Instant) {
        if self.wants_registration() {
            self.schedule_location_tick(now + TICK);
        }
    }

    /// Registers with the homes when the nearest beacon or the homes
    /// changed, or the last registration is old.
    fn register(&mut self, now: Instant) {
        if !self.wants_registration() || !self.started_or_has_beacon() {
            return;
        }
        let Some(via) = self.own_via() else {
            return;
        };
        let homes = self.homes_of(&self.local);
        let fresh = self.location.registration.as_ref().is_some_and(|r| {
            let confirmed = r.homes.iter().all(|h| r.probed.contains(h));
            let age = if confirmed {
                REGISTER_REFRESH
            } else {
                REGISTER_RETRY
            };
            r.via == via && r.homes == homes && now < r.at + age
        });
        if fresh || homes.is_empty() {
            return;
        }
        for home in &homes {
            let nonce = self.location.nonce();
            self.location.counters.registers_tx += 1;
            let message = Locate {
                kind: LocateKind::Register,
                hops_left: HOPS_MAX,
                nonce,
                target: *home,
                target_via: None,
                asker: self.local,
                asker_via: Some(via),
                subject: self.local,
                subject_via: Some(via),
            };
            self.send_locate(message, None);
        }
        self.location.registration = Some(Registration {
            homes,
            via,
            at: now,
            probed: Vec::new(),
        });
    }

    fn started_or_has_beacon(&self) -> bool {
        self.radius() != super::INFINITY
    }

    /// A LOCATE message from neighbor `from`.
    pub(super) fn handle_locate(&mut self, now: Instant, from: NodeId, message: &Locate) {
        if !self.location.take_budget(now, from) {
            self.location.counters.rate_limited += 1;
            return;
        }
        if message.target != self.local {
            self.send_locate(*message, Some(from));
            return;
        }
        match message.kind {
            LocateKind::Register => self.handle_register(now, message),
            LocateKind::Probe => self.handle_probe(message),
            LocateKind::ProbeAck => self.handle_probe_ack(now, message),
            LocateKind::Lookup => self.handle_lookup(message),
            LocateKind::Answer => self.handle_answer(now, message),
        }
        self.schedule_location_tick(now + TICK);
    }

    /// As a home: probe the registrant by way of the beacon it claims.
    fn handle_register(&mut self, now: Instant, m: &Locate) {
        let Some(via) = m.subject_via else {
            self.location.counters.dropped += 1;
            return;
        };
        let pending = self
            .location
            .probes
            .get(&m.subject)
            .filter(|p| p.via == via && p.expires > now)
            .map(|p| p.nonce);
        let full = pending.is_none()
            && !self.location.probes.contains_key(&m.subject)
            && self.location.probes.len() >= PROBES_MAX;
        if m.subject != m.asker || full {
            self.location.counters.dropped += 1;
            return;
        }
        // The same registration again (a retry) keeps its probe's nonce:
        // an answer to the first probe still counts, however long the
        // round trip.
        let nonce = match pending {
            Some(nonce) => nonce,
            None => {
                let nonce = self.location.nonce();
                self.location.probes.insert(
                    m.subject,
                    Probe {
                        via,
                        nonce,
                        expires: now + PROBE_TIMEOUT,
                    },
                );
                nonce
            }
        };
        self.location.counters.probes_tx += 1;
        let probe = Locate {
            kind: LocateKind::Probe,
            hops_left: HOPS_MAX,
            nonce,
            target: m.subject,
            target_via: Some(via),
            asker: self.local,
            asker_via: self.own_via(),
            subject: m.subject,
            subject_via: Some(via),
        };
        self.send_locate(probe, None);
    }

    /// As a registrant: answer a probe for a registration this node made.
    fn handle_probe(&mut self, m: &Locate) {
        let local = self.local;
        let ours = self.location.registration.as_mut().filter(|r| {
            m.subject == local && m.subject_via == Some(r.via) && r.homes.contains(&m.asker)
        });
        let Some(registration) = ours else {
            self.location.counters.dropped += 1;
            return;
        };
        if !registration.probed.contains(&m.asker) {
            registration.probed.push(m.asker);
        }
        self.location.counters.probes_answered += 1;
        self.reply(m, LocateKind::ProbeAck, m.subject_via);
    }

    /// Answers `m` back to its asker (by the asker's beacon where needed)
    /// with its nonce: `kind` about `m`'s subject, naming `subject_via`.
    fn reply(&mut self, m: &Locate, kind: LocateKind, subject_via: Option<NodeId>) {
        let reply = Locate {
            kind,
            hops_left: HOPS_MAX,
            nonce: m.nonce,
            target: m.asker,
            target_via: m.asker_via,
            asker: self.local,
            asker_via: self.own_via(),
            subject: m.subject,
            subject_via,
        };
        self.send_locate(reply, None);
    }

    /// As a home: the probe came back; the registration holds.
    fn handle_probe_ack(&mut self, now: Instant, m: &Locate) {
        let matches = self
            .location
            .probes
            .get(&m.subject)
            .is_some_and(|p| p.nonce == m.nonce && Some(p.via) == m.subject_via);
        let Some(probe) = matches
            .then(|| self.location.probes.remove(&m.subject))
            .flatten()
        else {
            self.location.counters.dropped += 1;
            return;
        };
        let loc = &mut self.location;
        if !loc.registry.contains_key(&m.subject) && loc.registry.len() >= REGISTRY_MAX {
            loc.counters.registry_full += 1;
            return;
        }
        loc.registry
            .insert(m.subject, (probe.via, now + REGISTRY_TTL));
        loc.counters.registered += 1;
    }

    /// As a home: answer with the registered beacon, or with none.
    fn handle_lookup(&mut self, m: &Locate) {
        let found = self.location.registry.get(&m.subject).map(|(via, _)| *via);
        self.location.counters.lookups_answered += 1;
        self.reply(m, LocateKind::Answer, found);
    }

    /// As a source: an answer to one of our lookups.
    fn handle_answer(&mut self, now: Instant, m: &Locate) {
        let ours = self
            .location
            .lookups
            .get(&m.subject)
            .is_some_and(|l| l.nonce == m.nonce);
        if !ours {
            // The other home's answer came first (every home is asked).
            if self.location.cache.contains_key(&m.subject) {
                self.location.counters.answers_late += 1;
            } else {
                self.location.counters.dropped += 1;
            }
            return;
        }
        // A home that does not know it (yet) is no answer: the other may,
        // and the next round asks again.
        if let Some(via) = m.subject_via {
            self.location.lookups.remove(&m.subject);
            self.location.counters.found += 1;
            self.location.cache_insert(now, m.subject, Some(via));
        }
    }

    /// Sends `message` one hop toward its target (not back to `from`,
    /// where it came from), or drops it, counted.
    pub(super) fn send_locate(&mut self, mut message: Locate, from: Option<NodeId>) {
        let next = match self.next_hop_via(&message.target, message.target_via.as_ref()) {
            NextHop::Neighbor(n) if Some(n) != from && message.hops_left > 1 => n,
            _ => {
                self.location.counters.dropped += 1;
                return;
            }
        };
        if from.is_some() {
            message.hops_left -= 1;
            self.location.counters.relayed += 1;
        }
        let transmit = Transmit {
            to: next,
            message: Message::Locate(message),
        };
        push_bounded(
            &mut self.queue,
            transmit,
            self.config.queue_max,
            &mut self.counters,
        );
    }
}
