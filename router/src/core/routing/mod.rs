//! Routing on any connected overlay graph, sans-IO: a distance-vector
//! protocol over the neighbor sessions that gives every router a route to
//! every *beacon* and to every node of its *cluster*, after Thorup and
//! Zwick's compact routing and S4 (docs/routing.md).
//!
//! - About one node in `2^level` is a beacon: the leading zero bits of a
//!   domain-separated hash of its ID ([`beacon_level_of`]) reach the level.
//!   Beacons' routes flood the whole connected graph.
//! - Every other node `d` announces itself with a *radius*: its metric to
//!   its nearest beacon. A router installs (and passes on) `d`'s route only
//!   while its own metric to `d` is at most that radius, so `d` is known in
//!   a neighborhood about as large as the graph divided by the beacons.
//!   Without any beacon the radius is infinite: a small overlay is a plain
//!   distance-vector network.
//! - A packet for `d` goes by `d`'s route where a router has one, else
//!   toward `d`'s nearest beacon, which has a route to `d` (its metric to `d`
//!   equals the radius).
//!
//! Loop freedom, also while routes change, comes from Babel's feasibility
//! condition (RFC 8966, section 3.5): a router accepts a route only if it is
//! newer (sequence number) or strictly better than anything it has itself
//! announced for that sequence number; when it has no feasible route it
//! asks the origin for a new sequence number.
//!
//! Inputs are `handle_*(now, ..)`; outputs are [`Routing::poll_transmit`]
//! and [`Routing::poll_timeout`] (quinn's shape). Nothing here reads a clock
//! or touches a socket. Every table is bounded ([`RoutingConfig`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::id::NodeId;

pub mod location;
#[cfg(test)]
mod tests;

pub use location::{Located, LocationCounters};

/// A route's cost: the sum of its links' costs. [`INFINITY`] is no route.
pub type Metric = u32;
/// The metric of a retraction.
pub const INFINITY: Metric = Metric::MAX;
/// Most sequence-number requests forwarded per origin: the hop budget of one
/// request.
pub const REQUEST_HOPS_MAX: u8 = 32;
/// Most route updates in one message (`wire::route::UPDATES_MAX`).
pub const UPDATES_PER_MESSAGE: usize = crate::wire::route::UPDATES_MAX;
/// The cost of a link with a round-trip time too small to matter; a
/// millisecond of RTT costs as much again ([`cost_of_rtt`]).
pub const LINK_COST_BASE: Metric = 16;
/// Round-trip samples above this are discarded (microseconds).
pub const RTT_SAMPLE_MAX_US: u32 = 10_000_000;

/// A link's cost from its smoothed round-trip time: [`LINK_COST_BASE`] plus
/// one per 64 us (16 per millisecond), capped at 10 s of RTT. A hop costs
/// as much as a millisecond of round trip, so a route takes an extra hop
/// when that saves more than a millisecond.
pub fn cost_of_rtt(rtt_us: u32) -> Metric {
    LINK_COST_BASE + rtt_us.min(RTT_SAMPLE_MAX_US) / 64
}

/// Most origins retried at once for want of a feasible route (the rest
/// wait for the next update or dump).
pub const STARVED_MAX: usize = 1024;
/// Highest beacon level: a level is a count of leading zero bits of a
/// 256-bit hash, but no overlay needs more than 2^64 nodes.
pub const LEVEL_MAX: u8 = 32;

/// Timers and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Every neighbor gets the whole table this often (changes go out at
    /// once; this heals whatever a lost message left behind).
    pub dump_interval: Duration,
    /// A neighbor's announcement is forgotten when not refreshed for this
    /// long (a few dump intervals).
    pub hold_time: Duration,
    /// Most routes kept (beacons and cluster); further origins are refused
    /// and counted.
    pub routes_max: usize,
    /// Most messages queued for sending; more are dropped and counted (the
    /// next dump repairs).
    pub queue_max: usize,
    /// A sequence-number request for the same origin is not sent again
    /// sooner.
    pub request_interval: Duration,
    /// How long a starting router that knows no beacon yet announces itself
    /// to its neighbors only; after that, knowing none, it concludes there
    /// is none and floods itself (a small overlay). Keeps a cold start of a
    /// large overlay from being a full distance-vector flood.
    pub startup_wait: Duration,
    /// Every neighbor gets a HELLO this often; its echo measures the link's
    /// round-trip time.
    pub hello_interval: Duration,
    /// Link costs follow the measured round-trip time ([`cost_of_rtt`]);
    /// off, links keep the cost they came up with.
    pub rtt_costs: bool,
    /// Route changes wait this long to go out together: changes that
    /// follow one another within it (a metric improving hop by hop while
    /// the network settles) cost one announcement.
    pub update_delay: Duration,
}

impl Default for RoutingConfig {
    fn default() -> RoutingConfig {
        RoutingConfig {
            dump_interval: Duration::from_secs(4),
            hold_time: Duration::from_secs(14),
            routes_max: 1 << 16,
            queue_max: 4096,
            request_interval: Duration::from_millis(500),
            startup_wait: Duration::from_secs(2),
            update_delay: Duration::from_millis(20),
            hello_interval: Duration::from_secs(1),
            rtt_costs: true,
        }
    }
}

pub use crate::wire::route::{Repr as Message, SeqnoRequest, Update};

/// A message for one neighbor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The neighbor.
    pub to: NodeId,
    /// What to send.
    pub message: Message,
}

/// Where a router sends a packet for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// This node.
    Local,
    /// This neighbor.
    Neighbor(NodeId),
    /// No route to it.
    Unknown,
}

/// What happened, for `xorlay stats` and the simulation's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoutingCounters {
    /// Updates received.
    pub updates_rx: u64,
    /// Updates sent.
    pub updates_tx: u64,
    /// Sequence-number requests received.
    pub requests_rx: u64,
    /// Sequence-number requests sent (own and forwarded).
    pub requests_tx: u64,
    /// Updates about new origins refused: the table was full.
    pub refused_full: u64,
    /// Messages not queued: the send queue was full.
    pub dropped_queue: u64,
    /// Times a route's next hop changed (or a route appeared or went).
    pub route_changes: u64,
    /// A neighbor's own announcements carrying another beacon level than
    /// this router's (`control.beacon_level` must be the same everywhere).
    pub level_mismatch: u64,
}

/// A neighbor's place in [`Routing::links`]: what announcements and routes
/// name instead of its 32-byte ID (a table holds one announcement per
/// neighbor per origin, so their size is most of a router's memory).
type Slot = u32;

/// A point in time as nanoseconds since the router's first input
/// ([`Routing::base`]), negative before it: 8 bytes where an `Instant`
/// takes 16, and exact.
type Tick = i64;

/// "Not set" for a [`Tick`] field.
const NEVER: Tick = Tick::MIN;

/// A neighbor session, by slot.
#[derive(Debug, Clone, Copy)]
struct Link {
    id: NodeId,
    cost: Metric,
}

/// A neighbor's latest announcement of one origin.
#[derive(Debug, Clone, Copy, Default)]
struct Advert {
    /// The neighbor that announced it.
    slot: Slot,
    seqno: u16,
    beacon: bool,
    level: u8,
    metric: Metric,
    radius: Metric,
    expires: Tick,
}

/// The route in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Selected {
    /// The next hop's slot.
    slot: Slot,
    seqno: u16,
    beacon: bool,
    level: u8,
    metric: Metric,
    radius: Metric,
}

/// Send-queue capacity kept once it is drained.
const QUEUE_KEPT: usize = 64;
/// Most announcement lists waiting in the outbox (one per neighbor and
/// flush); beyond, the oldest are dropped and counted (the next dump
/// repairs).
pub const OUTBOX_MAX: usize = 1 << 16;

/// Adverts kept inline: most origins are announced by one or two neighbors.
const ADVERTS_INLINE: usize = 2;

/// A route's announcements, at most one per neighbor: up to
/// [`ADVERTS_INLINE`] in the route itself, more on the heap.
#[derive(Debug)]
enum Adverts {
    Inline(u8, [Advert; ADVERTS_INLINE]),
    Heap(Vec<Advert>),
}

impl Adverts {
    fn new() -> Adverts {
        Adverts::Inline(0, [Advert::default(); ADVERTS_INLINE])
    }

    fn as_slice(&self) -> &[Advert] {
        match self {
            Adverts::Inline(len, items) => &items[..usize::from(*len)],
            Adverts::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Advert] {
        match self {
            Adverts::Inline(len, items) => &mut items[..usize::from(*len)],
            Adverts::Heap(v) => v,
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, Advert> {
        self.as_slice().iter()
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, advert: Advert) {
        match self {
            Adverts::Inline(len, items) if usize::from(*len) < ADVERTS_INLINE => {
                items[usize::from(*len)] = advert;
                *len += 1;
            }
            Adverts::Inline(_, items) => {
                let mut v = Vec::with_capacity(ADVERTS_INLINE * 2);
                v.extend_from_slice(items);
                v.push(advert);
                *self = Adverts::Heap(v);
            }
            Adverts::Heap(v) => v.push(advert),
        }
    }

    /// Keeps the adverts `keep` says yes to (in order).
    fn retain(&mut self, mut keep: impl FnMut(&Advert) -> bool) {
        match self {
            Adverts::Inline(len, items) => {
                let mut kept = 0;
                for i in 0..usize::from(*len) {
                    if keep(&items[i]) {
                        items[kept] = items[i];
                        kept += 1;
                    }
                }
                *len = kept as u8; // at most ADVERTS_INLINE
            }
            Adverts::Heap(v) => {
                v.retain(|a| keep(a));
                if v.len() <= ADVERTS_INLINE {
                    let mut items = [Advert::default(); ADVERTS_INLINE];
                    items[..v.len()].copy_from_slice(v);
                    *self = Adverts::Inline(v.len() as u8, items);
                }
            }
        }
    }
}

/// Everything known about one origin.
#[derive(Debug)]
struct Route {
    /// The neighbors' announcements (at most one per neighbor).
    adverts: Adverts,
    selected: Option<Selected>,
    /// Feasibility distance: the best (sequence number, metric) this node
    /// has announced; kept after the route goes, until `forget_at`.
    feasibility: Option<(u16, Metric)>,
    /// When the route may be dropped from the table (no adverts,
    /// retracted); [`NEVER`]: not while announced.
    forget_at: Tick,
    /// When a sequence-number request for it was last sent ([`NEVER`]).
    last_request: Tick,
    /// In [`Routing::dirty`].
    dirty: bool,
}

impl Route {
    fn new() -> Route {
        Route {
            adverts: Adverts::new(),
            selected: None,
            feasibility: None,
            forget_at: NEVER,
            last_request: NEVER,
            dirty: false,
        }
    }
}

/// `t` as a [`Tick`] since `base` (saturating at about 292 years).
fn tick_of(base: Instant, t: Instant) -> Tick {
    match t.checked_duration_since(base) {
        Some(d) => Tick::try_from(d.as_nanos()).unwrap_or(Tick::MAX),
        None => Tick::try_from(base.duration_since(t).as_nanos()).map_or(NEVER + 1, |n| -n),
    }
}

/// The `Instant` of a [`Tick`] since `base`.
fn instant_of(base: Instant, t: Tick) -> Instant {
    let d = Duration::from_nanos(t.unsigned_abs());
    if t >= 0 { base + d } else { base - d }
}

/// One router's routing state.
#[derive(Debug)]
pub struct Routing {
    local: NodeId,
    config: RoutingConfig,
    seqno: u16,
    level: u8,
    local_level: u8,
    /// Link cost to each neighbor.
    neighbors: HashMap<NodeId, Metric>,
    /// Each neighbor's slot in `links`.
    slots: HashMap<NodeId, Slot>,
    /// The neighbors by slot (`None`: free).
    links: Vec<Option<Link>>,
    /// Where the [`Tick`]s of the tables count from: the first input.
    base: Option<Instant>,
    /// Smoothed round-trip time to each neighbor that answered a HELLO.
    rtt_us: HashMap<NodeId, u32>,
    /// The zero of HELLO stamps.
    epoch: Option<Instant>,
    next_hello: Option<Instant>,
    routes: HashMap<NodeId, Route>,
    /// Origins whose selected route changed since the last announcement.
    dirty: Vec<NodeId>,
    dirty_self: bool,
    /// Neighbors that get the whole table at the next poll.
    dump_to: Vec<NodeId>,
    /// Announcements made but not yet cut into messages: (neighbor, list),
    /// in order. Each goes into the send queue only when the queue is
    /// empty, so that a hub's dump to hundreds of neighbors never needs
    /// more room than one neighbor's share ([`Routing::poll_transmit`]).
    outbox: VecDeque<(NodeId, Arc<[Update]>)>,
    next_dump: Option<Instant>,
    next_expiry: Option<Instant>,
    queue: VecDeque<Transmit>,
    radius: Metric,
    /// Until when a radius not known yet is announced as 0 (neighbors
    /// only); `None` before the first link and after the wait.
    startup_until: Option<Instant>,
    /// When pending changes and dumps go out.
    flush_at: Option<Instant>,
    /// Origins with only unfeasible routes: their sequence-number request
    /// is repeated every `request_interval` until a feasible route comes
    /// (or none is announced any more).
    starved: Vec<NodeId>,
    next_retry: Option<Instant>,
    /// The wait is over (or never needed): an unknown radius is infinite.
    started: bool,
    /// [`Routing::leave`] was called: no more input is taken, nothing more
    /// is announced.
    left: bool,
    generation: u64,
    counters: RoutingCounters,
    /// The location service (beacons of destinations outside the cluster).
    location: location::Location,
    /// The last neighbor that announced itself at another level, and that
    /// level.
    mismatch: Option<(NodeId, u8)>,
}

/// How far a route with `radius` travels: a quarter beyond the radius.
/// Link costs follow round-trip times each side measures for itself, so
/// the origin's metric to its nearest beacon (the radius) and the beacon's
/// metric back to it differ a little; the margin makes sure the beacon,
/// and the routers on its way to the origin, hold the origin's route.
pub fn cluster_scope(radius: Metric) -> Metric {
    radius.saturating_add(radius / 4)
}

/// `a` is newer than `b` in sequence-number space (RFC 8966, 3.2.1).
pub fn seqno_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// The beacon level of `id`: leading zero bits of SHA-256 over a domain tag
/// and the ID, at most [`LEVEL_MAX`]. Independent of the ID's place in XOR
/// space and of the identity puzzle (which hashes the ID alone).
pub fn beacon_level_of(id: &NodeId) -> u8 {
    let mut hasher = Sha256::new();
    hasher.update(b"xorlay beacon level v1");
    hasher.update(id.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let mut zeros = 0u32;
    for byte in digest {
        zeros += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    zeros.min(u32::from(LEVEL_MAX)) as u8
}

/// The beacon level for a network of about `nodes` routers: about
/// `sqrt(nodes)` beacons, so that beacons and a cluster cost about
/// `sqrt(nodes)` routes each.
pub fn level_for(nodes: usize) -> u8 {
    let bits = usize::BITS - nodes.max(1).leading_zeros(); // floor(log2) + 1
    (((bits - 1) / 2) as u8).min(LEVEL_MAX)
}

impl Routing {
    /// The routing state of `local`, with beacon level `level`
    /// ([`level_for`] of the expected network size; 0 makes every node a
    /// beacon, which is plain distance vector).
    pub fn new(local: NodeId, level: u8, config: RoutingConfig) -> Routing {
        Routing {
            local,
            config,
            seqno: 0,
            level: level.min(LEVEL_MAX),
            local_level: beacon_level_of(&local),
            neighbors: HashMap::new(),
            slots: HashMap::new(),
            links: Vec::new(),
            base: None,
            rtt_us: HashMap::new(),
            epoch: None,
            next_hello: None,
            routes: HashMap::new(),
            dirty: Vec::new(),
            dirty_self: true,
            dump_to: Vec::new(),
            outbox: VecDeque::new(),
            next_dump: None,
            next_expiry: None,
            queue: VecDeque::new(),
            radius: INFINITY,
            startup_until: None,
            flush_at: None,
            starved: Vec::new(),
            next_retry: None,
            started: false,
            left: false,
            generation: 0,
            counters: RoutingCounters::default(),
            location: location::Location::default(),
            mismatch: None,
        }
    }

    /// This node's ID.
    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// Whether this node is a beacon at the current level.
    pub fn is_beacon(&self) -> bool {
        self.local_level >= self.level
    }

    /// The beacon level in use.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Changes the beacon level (the shell's estimate of the network size
    /// changed); this node's announcement follows at the next poll.
    pub fn set_level(&mut self, now: Instant, level: u8) {
        let level = level.min(LEVEL_MAX);
        if level != self.level {
            self.level = level;
            self.dirty_self = true;
            self.recompute_radius();
            self.schedule_flush(now);
            self.location_link_up(now);
        }
    }

    /// Sends what is pending `update_delay` from now (if not already due).
    fn schedule_flush(&mut self, now: Instant) {
        let pending = self.dirty_self || !self.dirty.is_empty() || !self.dump_to.is_empty();
        if pending && self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.update_delay);
        }
    }

    /// This node's metric to its nearest beacon ([`INFINITY`]: none known;
    /// 0 for a beacon).
    pub fn radius(&self) -> Metric {
        if self.is_beacon() { 0 } else { self.radius }
    }

    /// Changes whenever a next hop appears, changes or goes: the data plane
    /// republishes its snapshot when it sees a new value.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The last neighbor that announced itself at another beacon level
    /// than this router's, with its level.
    pub fn level_mismatch(&self) -> Option<(NodeId, u8)> {
        self.mismatch
    }

    /// The counters.
    pub fn counters(&self) -> RoutingCounters {
        self.counters
    }

    /// Routes installed (beacons and cluster), this node not counted.
    pub fn route_count(&self) -> usize {
        self.routes
            .values()
            .filter(|r| r.selected.is_some())
            .count()
    }

    /// Beacons with a route.
    pub fn beacon_count(&self) -> usize {
        self.routes
            .values()
            .filter(|r| r.selected.is_some_and(|s| s.beacon))
            .count()
    }

    /// The next hop toward `dst` by its own route only.
    pub fn next_hop(&self, dst: &NodeId) -> NextHop {
        if *dst == self.local {
            return NextHop::Local;
        }
        match self
            .routes
            .get(dst)
            .and_then(|r| r.selected)
            .and_then(|s| self.neighbor_id(s.slot))
        {
            Some(n) => NextHop::Neighbor(n),
            None => NextHop::Unknown,
        }
    }

    /// The route to `dst`: (next hop, metric, whether `dst` is a beacon).
    pub fn route(&self, dst: &NodeId) -> Option<(NodeId, Metric, bool)> {
        let s = self.routes.get(dst)?.selected?;
        Some((self.neighbor_id(s.slot)?, s.metric, s.beacon))
    }

    /// Every installed route: (destination, next hop, metric, beacon).
    pub fn routes(&self) -> impl Iterator<Item = (&NodeId, NodeId, Metric, bool)> {
        self.routes.iter().filter_map(|(dst, r)| {
            let s = r.selected?;
            Some((dst, self.neighbor_id(s.slot)?, s.metric, s.beacon))
        })
    }

    /// The beacon nearest to this node (by metric, then ID), if any: where
    /// packets for this node are sent by routers that do not know it. This
    /// node itself if it is a beacon.
    pub fn nearest_beacon(&self) -> Option<NodeId> {
        if self.is_beacon() {
            return Some(self.local);
        }
        self.routes
            .iter()
            .filter_map(|(id, r)| r.selected.filter(|s| s.beacon).map(|s| (s.metric, *id)))
            .min()
            .map(|(_, id)| id)
    }

    /// This router is leaving (stopped by the operator): every neighbor is
    /// told at once that nothing is reachable through it any more, itself
    /// included, so they reroute now instead of after the session layer's
    /// dead-peer timeout. The retractions go out at the next poll.
    pub fn leave(&mut self) {
        self.seqno = self.seqno.wrapping_add(1);
        let mut retractions = vec![Update {
            origin: self.local,
            seqno: self.seqno,
            metric: INFINITY,
            radius: INFINITY,
            beacon: false,
            level: self.level,
        }];
        retractions.extend(
            self.routes
                .iter()
                .filter(|(_, r)| r.selected.is_some())
                .map(|(origin, r)| Update {
                    origin: *origin,
                    seqno: r.selected.map_or(0, |s| s.seqno),
                    metric: INFINITY,
                    radius: INFINITY,
                    beacon: false,
                    level: 0,
                }),
        );
        let neighbors: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for neighbor in neighbors {
            self.queue_updates(neighbor, &retractions);
        }
        for origin in std::mem::take(&mut self.dirty) {
            if let Some(route) = self.routes.get_mut(&origin) {
                route.dirty = false;
            }
        }
        self.dirty_self = false;
        self.dump_to.clear();
        self.outbox.clear();
        self.next_dump = None;
        self.flush_at = None;
        self.next_retry = None;
        self.startup_until = None;
        self.left = true;
    }

    /// A session with `neighbor` came up, with link cost `cost` (at least
    /// 1). It gets the whole table at the next poll.
    pub fn handle_link_up(&mut self, now: Instant, neighbor: NodeId, cost: Metric) {
        if neighbor == self.local || self.left {
            return;
        }
        let cost = cost.clamp(1, INFINITY - 1);
        self.neighbors.insert(neighbor, cost);
        let slot = match self.slots.get(&neighbor) {
            Some(&slot) => slot,
            None => {
                let free = self.links.iter().position(Option::is_none);
                let slot = free.unwrap_or_else(|| {
                    self.links.push(None);
                    self.links.len() - 1
                });
                // At most one slot per neighbor: far below 2^32.
                let slot = slot as Slot;
                self.slots.insert(neighbor, slot);
                slot
            }
        };
        self.links[slot as usize] = Some(Link { id: neighbor, cost });
        if !self.started && self.startup_until.is_none() {
            self.startup_until = Some(now + self.config.startup_wait);
        }
        if self.config.rtt_costs && self.next_hello.is_none() {
            self.next_hello = Some(now);
        }
        if !self.dump_to.contains(&neighbor) {
            self.dump_to.push(neighbor);
        }
        if self.next_dump.is_none() {
            self.next_dump = Some(now + self.config.dump_interval);
        }
        self.reselect_via(now, &neighbor);
        self.schedule_flush(now);
        self.location_link_up(now);
    }

    /// The link cost to `neighbor` changed (a new RTT measurement).
    pub fn handle_link_cost(&mut self, now: Instant, neighbor: NodeId, cost: Metric) {
        if let Some(c) = self.neighbors.get_mut(&neighbor) {
            let cost = cost.clamp(1, INFINITY - 1);
            if *c != cost {
                *c = cost;
                if let Some(Some(link)) = self
                    .slots
                    .get(&neighbor)
                    .and_then(|&slot| self.links.get_mut(slot as usize))
                {
                    link.cost = cost;
                }
                self.reselect_via(now, &neighbor);
                self.schedule_flush(now);
            }
        }
    }

    /// The session with `neighbor` went: its announcements go with it.
    pub fn handle_link_down(&mut self, now: Instant, neighbor: NodeId) {
        if self.neighbors.remove(&neighbor).is_none() {
            return;
        }
        self.rtt_us.remove(&neighbor);
        self.dump_to.retain(|n| *n != neighbor);
        self.outbox.retain(|(n, _)| *n != neighbor);
        let Some(slot) = self.slots.remove(&neighbor) else {
            return;
        };
        if let Some(link) = self.links.get_mut(slot as usize) {
            *link = None;
        }
        let affected: Vec<NodeId> = self
            .routes
            .iter_mut()
            .filter_map(|(origin, route)| {
                let before = route.adverts.len();
                route.adverts.retain(|a| a.slot != slot);
                (route.adverts.len() != before).then_some(*origin)
            })
            .collect();
        for origin in affected {
            self.reselect(now, &origin);
        }
        self.schedule_flush(now);
    }

    /// A routing message from `from` (a neighbor with a session).
    pub fn handle_message(&mut self, now: Instant, from: NodeId, message: &Message) {
        if self.left {
            return;
        }
        let Some(&slot) = self.slots.get(&from) else {
            return;
        };
        match message {
            Message::Updates(updates) => {
                for update in updates.iter().take(UPDATES_PER_MESSAGE) {
                    self.handle_update(now, slot, update);
                }
            }
            Message::Request(request) => self.handle_request(now, from, slot, request),
            Message::Hello { stamp, cost } => {
                let ack = Transmit {
                    to: from,
                    message: Message::HelloAck { stamp: *stamp },
                };
                push_bounded(
                    &mut self.queue,
                    ack,
                    self.config.queue_max,
                    &mut self.counters,
                );
                // The lower ID of a link sets its cost for both ends.
                let theirs = from < self.local;
                let changed = self.neighbors.get(&from).is_some_and(|c| c != cost);
                if self.config.rtt_costs && theirs && *cost != 0 && changed {
                    self.handle_link_cost(now, from, *cost);
                }
            }
            Message::HelloAck { stamp } => self.handle_hello_ack(now, from, *stamp),
            Message::Locate(locate) => self.handle_locate(now, from, locate),
        }
        self.schedule_flush(now);
    }

    /// Microseconds since this router's first input, wrapping at 2^32 (a
    /// HELLO's stamp).
    fn stamp(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        // Truncation is the wrap the stamp is defined with.
        now.saturating_duration_since(epoch).as_micros() as u32
    }

    /// A HELLO came back: one round-trip sample of the link to `from`. The
    /// smoothed RTT (1/8 per sample, as TCP's) sets the link's cost when it
    /// moves the cost by more than 1/8, if this end sets it: the end with
    /// the lower ID does, and tells the other in its HELLOs, so that both
    /// ends use the same cost (the cluster argument of docs/routing.md
    /// needs symmetric links: an origin's beacon is as far from it as it
    /// is from the beacon).
    fn handle_hello_ack(&mut self, now: Instant, from: NodeId, stamp: u32) {
        if !self.config.rtt_costs {
            return;
        }
        let rtt_us = self.stamp(now).wrapping_sub(stamp);
        if rtt_us > RTT_SAMPLE_MAX_US {
            return; // from before a wrap, or a stale echo
        }
        let smoothed = match self.rtt_us.get(&from) {
            Some(&old) => (old * 7 + rtt_us) / 8,
            None => rtt_us,
        };
        self.rtt_us.insert(from, smoothed);
        if from < self.local {
            return; // the other end sets this link's cost
        }
        let cost = cost_of_rtt(smoothed);
        let Some(&current) = self.neighbors.get(&from) else {
            return;
        };
        if current.abs_diff(cost) * 8 > current {
            self.handle_link_cost(now, from, cost);
        }
    }

    /// The smoothed round-trip time to `neighbor`, once measured.
    pub fn rtt(&self, neighbor: &NodeId) -> Option<Duration> {
        self.rtt_us
            .get(neighbor)
            .map(|&us| Duration::from_micros(u64::from(us)))
    }

    /// An update from the neighbor in `slot`.
    fn handle_update(&mut self, now: Instant, slot: Slot, update: &Update) {
        self.counters.updates_rx += 1;
        if update.origin == self.local {
            // Our own route coming back: if someone holds a newer sequence
            // number than ours (we restarted), jump past it.
            if seqno_newer(update.seqno, self.seqno) {
                self.seqno = update.seqno.wrapping_add(1);
                self.dirty_self = true;
            }
            return;
        }
        let own = self
            .links
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.id == update.origin);
        if own && update.metric != INFINITY && update.level != self.level {
            self.counters.level_mismatch += 1;
            self.mismatch = Some((update.origin, update.level));
        }
        if !self.routes.contains_key(&update.origin) {
            if update.metric == INFINITY {
                return; // a retraction of something we never knew
            }
            if self.routes.len() >= self.config.routes_max {
                self.counters.refused_full += 1;
                return;
            }
        }
        let expires = now + self.config.hold_time;
        let advert = Advert {
            slot,
            seqno: update.seqno,
            metric: update.metric,
            radius: update.radius,
            beacon: update.beacon,
            level: update.level.min(LEVEL_MAX),
            expires: self.tick(expires),
        };
        let route = self.routes.entry(update.origin).or_insert_with(Route::new);
        match route
            .adverts
            .as_mut_slice()
            .iter_mut()
            .find(|a| a.slot == slot)
        {
            Some(a) => *a = advert,
            None => route.adverts.push(advert),
        }
        self.schedule_expiry(expires);
        self.reselect(now, &update.origin);
    }

    /// A request from `from`, the neighbor in `slot`.
    fn handle_request(&mut self, now: Instant, from: NodeId, slot: Slot, request: &SeqnoRequest) {
        self.counters.requests_rx += 1;
        if request.origin == self.local {
            // Jump to (at least) the wanted sequence number, once per
            // request interval however many copies arrive.
            if seqno_newer(request.seqno, self.seqno) || request.seqno == self.seqno {
                self.seqno = request.seqno.wrapping_add(1);
                self.dirty_self = true;
            }
            return;
        }
        let now_t = self.tick(now);
        let interval = nanos(self.config.request_interval);
        let links = &self.links;
        let Some(route) = self.routes.get_mut(&request.origin) else {
            return;
        };
        let transmit = match route.selected {
            // We can satisfy it: tell the requester what we have.
            Some(s) if !seqno_newer(request.seqno, s.seqno) => Transmit {
                to: from,
                message: Message::Updates(vec![Update {
                    origin: request.origin,
                    seqno: s.seqno,
                    metric: s.metric,
                    radius: s.radius,
                    beacon: s.beacon,
                    level: s.level,
                }]),
            },
            // Pass it on toward the origin: to our next hop, or, if that is
            // the asker itself, to the best other neighbor announcing the
            // origin; at most once per interval per origin.
            _ if request.hops_left > 1 => {
                let id = |slot: Slot| links.get(slot as usize).copied().flatten().map(|l| l.id);
                let toward = route
                    .selected
                    .map(|s| s.slot)
                    .filter(|n| *n != slot)
                    .and_then(id)
                    .or_else(|| {
                        route
                            .adverts
                            .iter()
                            .filter(|a| a.slot != slot && a.metric != INFINITY)
                            .filter_map(|a| Some((a.metric, id(a.slot)?)))
                            .min()
                            .map(|(_, n)| n)
                    });
                let Some(to) = toward else { return };
                if route.last_request != NEVER
                    && now_t < route.last_request.saturating_add(interval)
                {
                    return;
                }
                route.last_request = now_t;
                self.counters.requests_tx += 1;
                Transmit {
                    to,
                    message: Message::Request(SeqnoRequest {
                        hops_left: request.hops_left - 1,
                        ..*request
                    }),
                }
            }
            _ => return,
        };
        if let Message::Updates(u) = &transmit.message {
            self.counters.updates_tx += u.len() as u64;
        }
        push_bounded(
            &mut self.queue,
            transmit,
            self.config.queue_max,
            &mut self.counters,
        );
    }

    /// Reselects every origin `neighbor` announced.
    fn reselect_via(&mut self, now: Instant, neighbor: &NodeId) {
        let Some(&slot) = self.slots.get(neighbor) else {
            return;
        };
        let affected: Vec<NodeId> = self
            .routes
            .iter()
            .filter(|(_, r)| r.adverts.iter().any(|a| a.slot == slot))
            .map(|(o, _)| *o)
            .collect();
        for origin in affected {
            self.reselect(now, &origin);
        }
    }

    /// Chooses the route to `origin` among the feasible, unexpired, in-scope
    /// announcements; asks for a new sequence number when none is feasible.
    fn reselect(&mut self, now: Instant, origin: &NodeId) {
        let level = self.level;
        let now_t = self.tick(now);
        let Some(route) = self.routes.get_mut(origin) else {
            return;
        };
        let mut best: Option<Selected> = None;
        let mut best_id: Option<NodeId> = None;
        // The best route refused as unfeasible: (slot, seqno, metric).
        let mut unfeasible: Option<(Slot, u16, Metric)> = None;
        let current = route.selected.map(|s| s.slot);
        for a in route.adverts.iter() {
            if a.metric == INFINITY || a.expires <= now_t {
                continue;
            }
            let Some(Some(link)) = self.links.get(a.slot as usize) else {
                continue;
            };
            let (neighbor, cost) = (&link.id, link.cost);
            let metric = a.metric.saturating_add(cost).min(INFINITY - 1);
            let beacon = a.beacon && a.level.saturating_add(1) >= level;
            if !beacon && metric > cluster_scope(a.radius) && neighbor != origin {
                continue; // out of the origin's cluster (a neighbor is always in)
            }
            let feasible = match route.feasibility {
                None => true,
                Some((seqno, fd)) => {
                    seqno_newer(a.seqno, seqno) || (a.seqno == seqno && a.metric < fd)
                }
            };
            if !feasible {
                if unfeasible.is_none_or(|(_, _, m)| metric < m) {
                    unfeasible = Some((a.slot, a.seqno, metric));
                }
                continue;
            }
            let candidate = Selected {
                slot: a.slot,
                seqno: a.seqno,
                metric,
                radius: a.radius,
                beacon,
                level: a.level,
            };
            // Lowest metric; on a tie the current next hop stays (no
            // flapping), then the lowest ID.
            let rank = |slot: Slot, n: &NodeId, m: Metric| (m, Some(slot) != current, *n);
            let better = match (best, &best_id) {
                (Some(b), Some(b_id)) => {
                    rank(a.slot, neighbor, metric) < rank(b.slot, b_id, b.metric)
                }
                _ => true,
            };
            if better {
                best = Some(candidate);
                best_id = Some(*neighbor);
            }
        }
        // No feasible route, or only one much worse than an unfeasible
        // one (a link's cost rose after this node announced a shorter
        // route): ask the origin for a new sequence number, which makes
        // every route to it feasible again (RFC 8966, 3.8.2.2).
        let much_better = |b: &Selected, m: Metric| m.saturating_add(m / 8) < b.metric;
        if let Some((slot, seqno, metric)) = unfeasible
            && best.is_none_or(|b| much_better(&b, metric))
            && let Some(Some(link)) = self.links.get(slot as usize)
        {
            let neighbor = link.id;
            let recent = route.last_request != NEVER
                && now_t
                    < route
                        .last_request
                        .saturating_add(nanos(self.config.request_interval));
            let starving = best.is_none();
            if starving && !self.starved.contains(origin) && self.starved.len() < STARVED_MAX {
                self.starved.push(*origin);
                let retry = now + self.config.request_interval;
                self.next_retry.get_or_insert(retry);
            }
            if !recent {
                route.last_request = now_t;
                let wanted = route.feasibility.map_or(seqno, |(s, _)| s.wrapping_add(1));
                let request = Transmit {
                    to: neighbor,
                    message: Message::Request(SeqnoRequest {
                        origin: *origin,
                        seqno: wanted,
                        hops_left: REQUEST_HOPS_MAX,
                    }),
                };
                self.counters.requests_tx += 1;
                push_bounded(
                    &mut self.queue,
                    request,
                    self.config.queue_max,
                    &mut self.counters,
                );
            }
        }
        let before = route.selected;
        route.selected = best;
        if route.selected.is_none() && route.adverts.iter().all(|a| a.metric == INFINITY) {
            if route.forget_at == NEVER {
                route.forget_at = now_t.saturating_add(nanos(self.config.hold_time));
            }
        } else {
            route.forget_at = NEVER;
        }
        if before != route.selected {
            let newly_dirty = !std::mem::replace(&mut route.dirty, true);
            if before.map(|s| s.slot) != route.selected.map(|s| s.slot) {
                self.generation += 1;
                self.counters.route_changes += 1;
            }
            if before.is_some_and(|s| s.beacon) || best.is_some_and(|s| s.beacon) {
                self.update_radius(before, best);
            }
            if newly_dirty {
                self.dirty.push(*origin);
            }
        }
    }

    /// Keeps the radius the least metric of the beacon routes after one
    /// route changed from `before` to `after`; scans the table only when
    /// the route that set it got worse or went.
    fn update_radius(&mut self, before: Option<Selected>, after: Option<Selected>) {
        let before = before.filter(|s| s.beacon).map(|s| s.metric);
        let after = after.filter(|s| s.beacon).map(|s| s.metric);
        if before.is_some_and(|b| b <= self.radius && after.is_none_or(|a| a > b)) {
            self.recompute_radius();
        } else if let Some(a) = after
            && a < self.radius
        {
            self.radius = a;
            self.dirty_self = true;
        }
    }

    /// The ID of the neighbor in `slot`.
    fn neighbor_id(&self, slot: Slot) -> Option<NodeId> {
        self.links
            .get(slot as usize)
            .copied()
            .flatten()
            .map(|l| l.id)
    }

    /// `now` as a [`Tick`]; the first input sets where ticks count from.
    fn tick(&mut self, now: Instant) -> Tick {
        tick_of(*self.base.get_or_insert(now), now)
    }

    /// This node's radius: its metric to the nearest beacon.
    fn recompute_radius(&mut self) {
        let radius = self
            .routes
            .values()
            .filter_map(|r| r.selected.filter(|s| s.beacon).map(|s| s.metric))
            .min()
            .unwrap_or(INFINITY);
        if radius != self.radius {
            self.radius = radius;
            self.dirty_self = true;
        }
    }

    fn schedule_expiry(&mut self, at: Instant) {
        if self.next_expiry.is_none_or(|t| at < t) {
            self.next_expiry = Some(at);
        }
    }

    /// When [`Routing::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_dump,
            self.next_expiry,
            self.startup_until,
            self.flush_at,
            self.next_retry,
            self.next_hello,
            self.location_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Expires announcements and forgotten routes; starts the periodic dump.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.startup_until.is_some_and(|t| t <= now) {
            self.startup_until = None;
            self.started = true;
            if self.radius == INFINITY {
                self.dirty_self = true; // no beacon after all: flood
            }
        }
        if self.next_expiry.is_some_and(|t| t <= now) {
            self.next_expiry = None;
            let now_t = self.tick(now);
            let mut expired = Vec::new();
            let mut forget = Vec::new();
            let mut next: Option<Tick> = None;
            for (origin, route) in &mut self.routes {
                if route.adverts.iter().any(|a| a.expires <= now_t) {
                    route.adverts.retain(|a| a.expires > now_t);
                    expired.push(*origin);
                }
                if route.forget_at != NEVER && route.forget_at <= now_t && route.adverts.is_empty()
                {
                    forget.push(*origin);
                }
                let forget_at = (route.forget_at != NEVER).then_some(route.forget_at);
                for t in route.adverts.iter().map(|a| a.expires).chain(forget_at) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            for origin in expired {
                self.reselect(now, &origin);
            }
            for origin in forget {
                if self
                    .routes
                    .get(&origin)
                    .is_some_and(|r| r.selected.is_none())
                    && self.routes.remove(&origin).is_some_and(|r| r.dirty)
                {
                    self.dirty.retain(|o| *o != origin);
                }
            }
            if let (Some(t), Some(base)) = (next, self.base) {
                self.schedule_expiry(instant_of(base, t).max(now + Duration::from_millis(1)));
            }
        }
        if self.next_dump.is_some_and(|t| t <= now) {
            self.next_dump = if self.neighbors.is_empty() {
                None
            } else {
                Some(now + self.config.dump_interval)
            };
            self.dump_to = self.neighbors.keys().copied().collect();
        }
        if self.next_hello.is_some_and(|t| t <= now) {
            self.send_hellos(now);
        }
        if self.next_retry.is_some_and(|t| t <= now) {
            self.next_retry = None;
            for origin in std::mem::take(&mut self.starved) {
                let starving = self.routes.get(&origin).is_some_and(|r| {
                    r.selected.is_none() && r.adverts.iter().any(|a| a.metric != INFINITY)
                });
                if starving {
                    self.reselect(now, &origin); // requests again, re-queues
                }
            }
        }
        self.location_handle_timeout(now);
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_at = None;
            self.flush();
        } else {
            self.schedule_flush(now);
        }
    }

    /// The next message to send, if any. Call until `None` after every
    /// `handle_*`. Route changes go out from [`Routing::handle_timeout`],
    /// `update_delay` after the first of them; replies to requests at once.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while self.queue.is_empty() {
            let Some((neighbor, updates)) = self.outbox.pop_front() else {
                break;
            };
            if self.neighbors.contains_key(&neighbor) {
                self.queue_updates(neighbor, &updates);
            }
        }
        let transmit = self.queue.pop_front();
        if transmit.is_none() && self.queue.capacity() > QUEUE_KEPT {
            self.queue.shrink_to(QUEUE_KEPT); // a dump's burst is not kept
        }
        transmit
    }

    /// Turns pending changes and dumps into queued messages.
    fn flush(&mut self) {
        if self.left {
            return;
        }
        if !self.dump_to.is_empty() {
            let all: Arc<[Update]> = self.all_updates().into();
            for neighbor in std::mem::take(&mut self.dump_to) {
                self.post(neighbor, Arc::clone(&all));
            }
            self.note_announced(&all);
        }
        if self.dirty.is_empty() && !self.dirty_self {
            return;
        }
        let mut updates = Vec::new();
        if std::mem::take(&mut self.dirty_self) {
            updates.push(self.own_update());
        }
        for origin in std::mem::take(&mut self.dirty) {
            if let Some(route) = self.routes.get_mut(&origin) {
                route.dirty = false;
                updates.push(update_of(&origin, route));
            }
        }
        let updates: Arc<[Update]> = updates.into();
        let neighbors: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for neighbor in neighbors {
            self.post(neighbor, Arc::clone(&updates));
        }
        self.note_announced(&updates);
    }

    /// Puts `updates` for `neighbor` into the outbox (bounded).
    fn post(&mut self, neighbor: NodeId, updates: Arc<[Update]>) {
        if self.outbox.len() >= OUTBOX_MAX {
            self.outbox.pop_front();
            self.counters.dropped_queue += 1;
        }
        self.outbox.push_back((neighbor, updates));
    }

    /// A HELLO to every neighbor; the next round one interval later.
    fn send_hellos(&mut self, now: Instant) {
        if self.neighbors.is_empty() || self.left {
            self.next_hello = None;
            return;
        }
        self.next_hello = Some(now + self.config.hello_interval);
        let stamp = self.stamp(now);
        let neighbors: Vec<(NodeId, Metric)> =
            self.neighbors.iter().map(|(n, c)| (*n, *c)).collect();
        for (to, cost) in neighbors {
            // This end sets the cost of links to higher IDs, once measured.
            let measured = self.local < to && self.rtt_us.contains_key(&to);
            let hello = Transmit {
                to,
                message: Message::Hello {
                    stamp,
                    cost: if measured { cost } else { 0 },
                },
            };
            push_bounded(
                &mut self.queue,
                hello,
                self.config.queue_max,
                &mut self.counters,
            );
        }
    }

    /// Queues `updates` for `neighbor`, [`UPDATES_PER_MESSAGE`] a message.
    fn queue_updates(&mut self, neighbor: NodeId, updates: &[Update]) {
        for chunk in updates.chunks(UPDATES_PER_MESSAGE) {
            self.counters.updates_tx += chunk.len() as u64;
            let transmit = Transmit {
                to: neighbor,
                message: Message::Updates(chunk.to_vec()),
            };
            push_bounded(
                &mut self.queue,
                transmit,
                self.config.queue_max,
                &mut self.counters,
            );
        }
    }

    fn own_update(&self) -> Update {
        Update {
            origin: self.local,
            seqno: self.seqno,
            metric: 0,
            // A beacon sends its radius too: routers that do not take it
            // for a beacon (another level) scope it like any node.
            radius: if self.radius != INFINITY || self.started {
                self.radius
            } else {
                0 // starting, no beacon known yet: neighbors only
            },
            beacon: self.is_beacon(),
            level: self.level,
        }
    }

    /// This node's whole table (itself first), as a dump sends it.
    fn all_updates(&self) -> Vec<Update> {
        let mut all = vec![self.own_update()];
        all.extend(
            self.routes
                .iter()
                .filter(|(_, r)| r.selected.is_some())
                .map(|(o, r)| update_of(o, r)),
        );
        all
    }

    /// Records what was announced in the feasibility distances.
    fn note_announced(&mut self, updates: &[Update]) {
        for u in updates {
            if u.metric == INFINITY || u.origin == self.local {
                continue;
            }
            if let Some(route) = self.routes.get_mut(&u.origin) {
                route.feasibility = Some(match route.feasibility {
                    Some((seqno, fd)) if seqno == u.seqno => (seqno, fd.min(u.metric)),
                    Some((seqno, fd)) if seqno_newer(seqno, u.seqno) => (seqno, fd),
                    _ => (u.seqno, u.metric),
                });
            }
        }
    }
}

/// The announcement of `origin` by `route`: the selected route, or a
/// retraction.
fn update_of(origin: &NodeId, route: &Route) -> Update {
    match route.selected {
        Some(s) => Update {
            origin: *origin,
            seqno: s.seqno,
            metric: s.metric,
            radius: s.radius,
            beacon: s.beacon,
            level: s.level,
        },
        None => Update {
            origin: *origin,
            seqno: route.feasibility.map_or(0, |(s, _)| s),
            metric: INFINITY,
            radius: INFINITY,
            beacon: false,
            level: 0,
        },
    }
}

/// `d` in [`Tick`]s (nanoseconds), saturating.
fn nanos(d: Duration) -> Tick {
    Tick::try_from(d.as_nanos()).unwrap_or(Tick::MAX)
}

fn push_bounded(
    queue: &mut VecDeque<Transmit>,
    transmit: Transmit,
    max: usize,
    counters: &mut RoutingCounters,
) {
    if queue.len() >= max {
        counters.dropped_queue += 1;
    } else {
        queue.push_back(transmit);
    }
}
