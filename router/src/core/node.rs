//! A node's control plane, sans-IO: authenticated sessions ([`Sessions`])
//! carrying the Kademlia protocol ([`Kademlia`]), glued together.
//!
//! Kademlia asks for connections and sends messages to node IDs; the glue
//! opens sessions for it (queueing a bounded number of messages until the
//! session is up) and reports back what the sessions saw: established,
//! closed, failed, messages. The data plane's view comes out as
//! [`Node::neighbors`] (next hops: live Kademlia contacts with a session)
//! and [`Node::session_peers`] (whose data is accepted), and
//! [`Node::generation`] changes whenever either may have changed.
//!
//! Call order: `handle_*` as inputs arrive, then drain `poll_transmit`;
//! call `handle_timeout` when `poll_timeout` is due. Extra calls are harmless.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::address::IdPrefix;
use super::identity::Identity;
use super::kademlia::{KadAction, KadConfig, KadCounters, KadEvent, Kademlia};
use super::resolve::{Resolution, ResolveCounters, Resolver, Step, WAITING_MAX};
use super::routing::{Located, LocationCounters, Routing, RoutingConfig, RoutingCounters};
use super::session::{
    CloseReason, ConnectFailure, SessionConfig, SessionCounters, SessionEvent, Sessions, Transmit,
};
use crate::id::NodeId;
use crate::wire::route;

/// Messages queued per peer while its session is being set up.
pub const PENDING_PER_PEER_MAX: usize = 8;
/// Peers with queued messages at once.
pub const PENDING_PEERS_MAX: usize = 256;
/// Rounds of passing actions and events between the layers per input: each
/// round moves everything queued, so this only bounds pathological chains.
const PUMP_ROUNDS_MAX: usize = 64;
/// A session this node opened (for a lookup, say) to a peer that is not in
/// its routing table is closed after this long. Sessions others opened are
/// left alone: Kademlia is one-sided, and the peer may route through us.
pub const UNUSED_SESSION_GRACE: Duration = Duration::from_secs(15);

/// Settings of both layers.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Sessions.
    pub session: SessionConfig,
    /// Kademlia.
    pub kad: KadConfig,
    /// Routing over the neighbor sessions.
    pub routing: RoutingConfig,
    /// Routing's beacon level (0: every router is a beacon).
    pub routing_level: u8,
}

/// What the glue itself counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GlueCounters {
    /// Messages queued until a session came up.
    pub pending_queued: u64,
    /// Messages dropped: the queue for that peer or the peer list was full.
    pub pending_dropped: u64,
    /// Sessions closed because their peer stayed out of the routing table.
    pub unused_sessions_closed: u64,
    /// Messages Kademlia sent that the session layer refused.
    pub send_errors: u64,
    /// Routing messages that did not parse (a neighbor's bug or a newer
    /// version), dropped.
    pub route_parse_errors: u64,
}

/// Counters of every layer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NodeCounters {
    /// The session layer.
    pub sessions: SessionCounters,
    /// Kademlia.
    pub kademlia: KadCounters,
    /// The glue.
    pub glue: GlueCounters,
    /// Routing.
    pub routing: RoutingCounters,
    /// The location service (part of routing).
    pub location: LocationCounters,
    /// Overlay addresses resolved to node IDs.
    pub resolve: ResolveCounters,
}

/// What happened to sessions and dials, for the shell to log (drained with
/// [`Node::poll_event`]; at most [`NODE_EVENTS_MAX`] are kept, the oldest
/// dropped first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A session with `peer` ended.
    PeerDown {
        /// The peer.
        peer: NodeId,
        /// Where it was.
        addr: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// An overlay address was resolved (see [`Node::resolve`]): the node
    /// with that prefix, or `None` if the lookup found none.
    Resolved {
        /// The address's ID bits.
        prefix: IdPrefix,
        /// The node.
        id: Option<NodeId>,
    },
    /// A connect to `addr` gave up.
    DialFailed {
        /// The address dialed.
        addr: SocketAddr,
        /// The node expected there, if known.
        expect: Option<NodeId>,
        /// Why.
        reason: ConnectFailure,
    },
}

/// Most [`NodeEvent`]s kept until the shell drains them.
pub const NODE_EVENTS_MAX: usize = 1024;

/// One node's control plane.
#[derive(Debug)]
pub struct Node {
    sessions: Sessions,
    /// Events for the shell's log, oldest first.
    events: VecDeque<NodeEvent>,
    kad: Kademlia,
    /// Routes over the neighbor sessions (every session is a link).
    routing: Routing,
    routing_generation: u64,
    location_generation: u64,
    /// Overlay addresses to node IDs.
    resolver: Resolver,
    /// Messages for peers whose session is not up yet.
    pending: HashMap<NodeId, VecDeque<Vec<u8>>>,
    /// When each established peer's session came up.
    established: HashMap<NodeId, Instant>,
    /// Peers this node asked to connect to by ID (bounded by the session
    /// layer's limits: entries leave when their session or attempt ends).
    initiated: HashSet<NodeId>,
    /// Changes whenever sessions or the Kademlia table may have changed.
    generation: u64,
    kad_generation: u64,
    /// The session layer's count of peer address changes, last seen.
    roamed: u64,
    next_gc: Option<Instant>,
    counters: GlueCounters,
}

/// The routing state of `local`, its location nonces keyed from `seed`.
fn routing(local: NodeId, level: u8, config: RoutingConfig, seed: [u8; 32]) -> Routing {
    let mut routing = Routing::new(local, level, config);
    let mut key = seed;
    key[1] ^= 0x3c; // a stream distinct from the other layers'
    routing.set_location_key(key);
    routing
}

impl Node {
    /// A node with `identity`; `seed` feeds the deterministic randomness of
    /// both layers (the shell passes OS randomness).
    pub fn new(identity: Identity, config: NodeConfig, seed: [u8; 32]) -> Node {
        let local = identity.node_id();
        let mut kad_seed = [0u8; 8];
        kad_seed.copy_from_slice(&seed[..8]);
        let mut session_seed = seed;
        session_seed[0] ^= 0x5a; // distinct streams from one seed
        Node {
            sessions: Sessions::new(identity, config.session, session_seed),
            events: VecDeque::new(),
            kad: Kademlia::new(local, config.kad, u64::from_le_bytes(kad_seed)),
            routing: routing(local, config.routing_level, config.routing, seed),
            routing_generation: 0,
            location_generation: 0,
            resolver: Resolver::default(),
            pending: HashMap::new(),
            established: HashMap::new(),
            initiated: HashSet::new(),
            generation: 0,
            kad_generation: 0,
            roamed: 0,
            next_gc: None,
            counters: GlueCounters::default(),
        }
    }

    /// This node's ID.
    pub fn local_id(&self) -> NodeId {
        self.sessions.local_id()
    }

    /// Bootstraps from a seed whose ID is not known.
    pub fn add_seed(&mut self, now: Instant, addr: SocketAddr) {
        self.kad.add_seed(now, addr);
        self.pump(now);
    }

    /// Adds a peer known by ID and address (config, or persisted).
    pub fn add_known(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        self.kad.add_known(now, id, addr);
        self.pump(now);
    }

    /// A control packet arrived from `from`.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        self.sessions.handle_packet(now, from, packet);
        self.pump(now);
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sessions.handle_timeout(now);
        self.kad.handle_timeout(now);
        if self.routing.poll_timeout().is_some_and(|at| at <= now) {
            self.routing.handle_timeout(now);
        }
        if self.next_gc.is_none_or(|at| now >= at) {
            self.close_unused_sessions(now);
            self.next_gc = Some(now + UNUSED_SESSION_GRACE / 3);
        }
        self.pump(now);
    }

    /// When `handle_timeout` should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.sessions.poll_timeout(),
            self.kad.poll_timeout(),
            self.routing.poll_timeout(),
            self.next_gc,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.sessions.poll_transmit()
    }

    /// Next hops for the data plane: routing-table contacts with a live
    /// session, at the address the session currently uses.
    pub fn neighbors(&self) -> Vec<(NodeId, SocketAddr)> {
        self.kad
            .contacts()
            .filter_map(|(id, _)| self.sessions.peer_addr(&id).map(|addr| (id, addr)))
            .collect()
    }

    /// This node is leaving: its neighbors are told to route around it now
    /// (`Routing::leave`); the messages are ready for `poll_transmit`.
    pub fn leave(&mut self, now: Instant) {
        self.routing.leave();
        self.pump(now);
    }

    /// The routing protocol's routes: (destination, next hop).
    pub fn routes(&self) -> Vec<(NodeId, NodeId)> {
        self.routing
            .routes()
            .map(|(dst, next, _, _)| (*dst, next))
            .collect()
    }

    /// How to send to `dst`: by its route, by its beacon, or not yet (a
    /// lookup is under way; its messages are ready for `poll_transmit`).
    pub fn locate(&mut self, now: Instant, dst: &NodeId) -> Located {
        let located = self.routing.locate(now, dst);
        self.pump(now);
        located
    }

    /// The location service's answers: (destination, its beacon).
    pub fn locations(&self) -> Vec<(NodeId, NodeId)> {
        self.routing
            .locations()
            .map(|(dst, via)| (*dst, via))
            .collect()
    }

    /// The node whose ID begins with `prefix` (an overlay address's bits):
    /// known at once if cached or among this node's peers and routes, else
    /// looked up; the answer comes as [`NodeEvent::Resolved`].
    pub fn resolve(&mut self, now: Instant, prefix: &IdPrefix) -> Resolution {
        if prefix.matches(&self.local_id()) {
            return Resolution::Known(self.local_id());
        }
        match self.resolver.step(now, prefix) {
            Step::Answer(answer) => answer,
            Step::Start => {
                let known = self
                    .routing
                    .routes()
                    .map(|(dst, ..)| *dst)
                    .chain(self.kad.contacts().map(|(id, _)| id))
                    .find(|id| prefix.matches(id));
                if let Some(id) = known {
                    self.resolver.remember(now, *prefix, Some(id));
                    return Resolution::Known(id);
                }
                let answer = match self.kad.start_lookup(now, prefix.target()) {
                    Some(lookup) => {
                        self.resolver.started(lookup, *prefix);
                        Resolution::Pending
                    }
                    None => self.resolver.queue(*prefix),
                };
                self.pump(now);
                answer
            }
        }
    }

    /// Takes Kademlia's finished lookups: the resolver's answers become
    /// events, and waiting addresses get the free lookup slots. Whether a
    /// lookup finished.
    fn take_lookups(&mut self, now: Instant) -> bool {
        let mut finished = false;
        while let Some(event) = self.kad.poll_event() {
            let KadEvent::LookupDone { id, closest, .. } = event else {
                continue;
            };
            finished = true;
            let ids = closest.into_iter().map(|(id, _)| id);
            if let Some((prefix, id)) = self.resolver.done(now, id, ids) {
                self.push_event(NodeEvent::Resolved { prefix, id });
            }
        }
        for _ in 0..if finished { WAITING_MAX } else { 0 } {
            let Some(prefix) = self.resolver.next_waiting() else {
                break;
            };
            match self.kad.start_lookup(now, prefix.target()) {
                Some(lookup) => self.resolver.started(lookup, prefix),
                None => {
                    self.resolver.requeue(prefix);
                    break;
                }
            }
        }
        finished
    }

    /// The routing state, for `xorlay route` and the tests.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Every peer with an authenticated session: whose data is accepted.
    pub fn session_peers(&self) -> Vec<(NodeId, SocketAddr)> {
        self.sessions.peers().collect()
    }

    /// The next event for the log (sessions that ended, dials that failed).
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    fn push_event(&mut self, event: NodeEvent) {
        if self.events.len() >= NODE_EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Changes whenever [`Node::neighbors`] or [`Node::session_peers`] may have.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts a lookup of `target` (for tests and the admin interface).
    pub fn start_lookup(&mut self, now: Instant, target: NodeId) -> bool {
        let started = self.kad.start_lookup(now, target).is_some();
        self.pump(now);
        started
    }

    /// The routing table's contacts closest to `target`.
    pub fn closest(&self, target: &NodeId, count: usize) -> Vec<(NodeId, SocketAddr)> {
        self.kad.closest(target, count)
    }

    /// Counters of every layer.
    pub fn counters(&self) -> NodeCounters {
        NodeCounters {
            sessions: self.sessions.counters(),
            kademlia: self.kad.counters(),
            glue: self.counters,
            routing: self.routing.counters(),
            location: self.routing.location_counters(),
            resolve: self.resolver.counters(),
        }
    }

    fn close_unused_sessions(&mut self, now: Instant) {
        let in_table: HashSet<NodeId> = self.kad.contacts().map(|(id, _)| id).collect();
        let unused: Vec<NodeId> = self
            .established
            .iter()
            .filter(|(id, since)| {
                self.initiated.contains(id)
                    && !in_table.contains(id)
                    && now.duration_since(**since) >= UNUSED_SESSION_GRACE
            })
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            self.sessions.close(&id);
            self.established.remove(&id);
            self.initiated.remove(&id);
            self.counters.unused_sessions_closed += 1;
            self.generation += 1;
        }
    }

    /// Moves Kademlia's actions into the session layer and the session
    /// layer's events into Kademlia until neither has anything left.
    fn pump(&mut self, now: Instant) {
        for _ in 0..PUMP_ROUNDS_MAX {
            let mut progressed = self.take_lookups(now);
            while let Some(action) = self.kad.poll_action() {
                progressed = true;
                self.act(now, action);
            }
            while let Some(event) = self.sessions.poll_event() {
                progressed = true;
                self.on_session_event(now, event);
            }
            while let Some(transmit) = self.routing.poll_transmit() {
                progressed = true;
                let mut bytes = Vec::with_capacity(transmit.message.buffer_len());
                transmit.message.emit(&mut bytes);
                if self.sessions.send(now, &transmit.to, &bytes).is_err() {
                    self.counters.send_errors += 1;
                }
            }
            if !progressed {
                break;
            }
        }
        let routing_generation = self.routing.generation();
        if routing_generation != self.routing_generation {
            self.routing_generation = routing_generation;
            self.generation += 1;
        }
        let location_generation = self.routing.location_generation();
        if location_generation != self.location_generation {
            self.location_generation = location_generation;
            self.generation += 1;
        }
        let kad_generation = self.kad.generation();
        if kad_generation != self.kad_generation {
            self.kad_generation = kad_generation;
            self.generation += 1;
        }
        // A peer that roamed keeps its session at a new address: the
        // allowlist and next hops must follow.
        let roamed = self.sessions.counters().peer_addr_changes;
        if roamed != self.roamed {
            self.roamed = roamed;
            self.generation += 1;
        }
    }

    fn act(&mut self, now: Instant, action: KadAction) {
        match action {
            KadAction::Connect { addr, expect } => {
                // Already connected: say so now, or Kademlia waits for an
                // event the session layer will not send.
                if let Some((peer, current)) =
                    expect.and_then(|id| self.sessions.peer_addr(&id).map(|a| (id, a)))
                {
                    self.kad.handle_connected(now, peer, current);
                    return;
                }
                if let Some(peer) = expect {
                    self.initiated.insert(peer);
                }
                self.sessions.connect(now, addr, expect);
            }
            KadAction::Send { peer, addr, bytes } => {
                if self.sessions.peer_addr(&peer).is_some() {
                    if self.sessions.send(now, &peer, &bytes).is_err() {
                        self.counters.send_errors += 1;
                    }
                    return;
                }
                let room =
                    self.pending.len() < PENDING_PEERS_MAX || self.pending.contains_key(&peer);
                let queue = self.pending.entry(peer);
                let first = matches!(queue, std::collections::hash_map::Entry::Vacant(_));
                if !room {
                    self.counters.pending_dropped += 1;
                    return;
                }
                let queue = queue.or_default();
                if queue.len() >= PENDING_PER_PEER_MAX {
                    self.counters.pending_dropped += 1;
                    return;
                }
                queue.push_back(bytes);
                self.counters.pending_queued += 1;
                if first {
                    self.initiated.insert(peer);
                    self.sessions.connect(now, addr, Some(peer));
                }
            }
            KadAction::Disconnect { peer } => {
                self.sessions.close(&peer);
                self.pending.remove(&peer);
                self.initiated.remove(&peer);
                if self.established.remove(&peer).is_some() {
                    self.generation += 1;
                }
            }
        }
    }

    fn on_session_event(&mut self, now: Instant, event: SessionEvent) {
        match event {
            SessionEvent::Established { peer, addr } => {
                self.established.insert(peer, now);
                self.generation += 1;
                self.kad.handle_connected(now, peer, addr);
                // Until the first HELLO comes back: a link of no measurable
                // round trip.
                self.routing
                    .handle_link_up(now, peer, super::routing::LINK_COST_BASE);
                for bytes in self.pending.remove(&peer).unwrap_or_default() {
                    if self.sessions.send(now, &peer, &bytes).is_err() {
                        self.counters.send_errors += 1;
                    }
                }
            }
            SessionEvent::Message { peer, addr, bytes } => {
                if route::is_route_message(&bytes) {
                    match route::Repr::parse(&bytes) {
                        Ok(message) => self.routing.handle_message(now, peer, &message),
                        Err(_) => self.counters.route_parse_errors += 1,
                    }
                } else {
                    self.kad.handle_message(now, peer, addr, &bytes);
                }
            }
            SessionEvent::Closed { peer, addr, reason } => {
                self.established.remove(&peer);
                if reason != CloseReason::Replaced {
                    self.push_event(NodeEvent::PeerDown { peer, addr, reason });
                }
                self.pending.remove(&peer);
                self.initiated.remove(&peer);
                self.generation += 1;
                self.kad.handle_disconnected(now, peer);
                if self.sessions.peer_addr(&peer).is_none() {
                    self.routing.handle_link_down(now, peer);
                }
            }
            SessionEvent::ConnectFailed {
                addr,
                expect,
                reason,
            } => {
                self.push_event(NodeEvent::DialFailed {
                    addr,
                    expect,
                    reason,
                });
                if let Some(peer) = expect {
                    self.pending.remove(&peer);
                    self.initiated.remove(&peer);
                }
                self.kad.handle_unreachable(now, addr, expect);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Nodes on an in-memory network, driven in virtual time.
    struct Net {
        now: Instant,
        nodes: BTreeMap<SocketAddr, Node>,
        /// Packets in flight: (deliver at, from, to, bytes).
        wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    }

    const DELAY: Duration = Duration::from_millis(2);

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, i, 1], 4799))
    }

    fn identity(i: u8) -> Identity {
        Identity::from_seed(&[i; 32])
    }

    impl Net {
        fn new() -> Net {
            Net {
                now: Instant::now(),
                nodes: BTreeMap::new(),
                wire: Vec::new(),
            }
        }

        /// Starts node `i`; `boot` tells restarts apart (a real start draws
        /// fresh randomness, so a restarted node's handshakes differ).
        fn add_boot(&mut self, i: u8, seed: Option<SocketAddr>, boot: u8) {
            let mut randomness = [i; 32];
            randomness[31] = boot;
            let mut node = Node::new(identity(i), NodeConfig::default(), randomness);
            if let Some(seed) = seed {
                node.add_seed(self.now, seed);
            }
            self.nodes.insert(addr(i), node);
        }

        fn add(&mut self, i: u8, seed: Option<SocketAddr>) {
            self.add_boot(i, seed, 0);
        }

        fn node(&self, i: u8) -> &Node {
            &self.nodes[&addr(i)]
        }

        /// Runs until `until`, delivering packets and timers in order. Bounded.
        fn run_for(&mut self, duration: Duration) {
            let until = self.now + duration;
            for _ in 0..200_000 {
                for (from, node) in &mut self.nodes {
                    while let Some(t) = node.poll_transmit() {
                        self.wire.push((self.now + DELAY, *from, t.to, t.bytes));
                    }
                }
                let next_packet = self.wire.iter().map(|w| w.0).min();
                let next_timer = self.nodes.values().filter_map(Node::poll_timeout).min();
                let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                    break;
                };
                if next > until {
                    break;
                }
                self.now = self.now.max(next);
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= now);
                self.wire = later;
                for (_, from, to, bytes) in due {
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.handle_packet(now, from, &bytes);
                    }
                }
                for node in self.nodes.values_mut() {
                    if node.poll_timeout().is_some_and(|at| at <= now) {
                        node.handle_timeout(now);
                    }
                }
            }
            self.now = until;
        }

        fn neighbor_ids(&self, i: u8) -> Vec<NodeId> {
            let mut ids: Vec<NodeId> = self
                .node(i)
                .neighbors()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            ids
        }
    }

    #[test]
    fn bootstrap_from_one_seed_reaches_a_full_mesh() {
        let mut net = Net::new();
        net.add(1, None);
        for i in 2..=6 {
            net.add(i, Some(addr(1)));
        }
        net.run_for(Duration::from_secs(5));
        for i in 1..=6u8 {
            let mut expected: Vec<NodeId> = (1..=6u8)
                .filter(|j| *j != i)
                .map(|j| identity(j).node_id())
                .collect();
            expected.sort();
            assert_eq!(net.neighbor_ids(i), expected, "node {i}");
            // Every next hop is an authenticated peer, at its real address.
            let peers = net.node(i).session_peers();
            for (id, at) in net.node(i).neighbors() {
                assert!(
                    peers.contains(&(id, at)),
                    "node {i}: {id:?} at {at} has no session"
                );
            }
        }
    }

    #[test]
    fn a_dead_node_is_dropped_within_the_timeout_and_a_restart_rejoins() {
        let mut net = Net::new();
        net.add(1, None);
        for i in 2..=4 {
            net.add(i, Some(addr(1)));
        }
        net.run_for(Duration::from_secs(5));
        let dead = identity(4).node_id();
        assert!(net.neighbor_ids(2).contains(&dead));
        let generation = net.node(2).generation();
        net.nodes.remove(&addr(4));
        // dead_after (1 s) plus a keepalive interval of slack.
        net.run_for(Duration::from_millis(1300));
        for i in 1..=3 {
            assert!(
                !net.neighbor_ids(i).contains(&dead),
                "node {i} still routes via the dead node"
            );
        }
        assert_ne!(
            net.node(2).generation(),
            generation,
            "the change was not published"
        );
        // The same key comes back: it rejoins through the seed.
        net.add_boot(4, Some(addr(1)), 1);
        net.run_for(Duration::from_secs(5));
        for i in 1..=3 {
            assert!(
                net.neighbor_ids(i).contains(&dead),
                "node {i} did not see the restart"
            );
        }
    }

    #[test]
    fn overlay_addresses_resolve_to_their_nodes_or_fail() {
        use crate::core::address::{id_prefix, node_address, node_subnet};
        let mut net = Net::new();
        // Random keys: the addresses' bits follow them.
        let mut ids = Vec::new();
        for i in 1..=5u8 {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).expect("getrandom");
            let identity = Identity::from_seed(&seed);
            ids.push(identity.node_id());
            let mut node = Node::new(identity, NodeConfig::default(), seed);
            if i > 1 {
                node.add_seed(net.now, addr(1));
            }
            net.nodes.insert(addr(i), node);
        }
        net.run_for(Duration::from_secs(5));
        let now = net.now;
        let asker = net.nodes.get_mut(&addr(1)).expect("node 1");
        // Every node's address and subnet name it.
        for id in &ids {
            for address in [node_address(id), node_subnet(id)] {
                let prefix = id_prefix(&address).expect("an overlay address");
                assert_eq!(asker.resolve(now, &prefix), Resolution::Known(*id));
            }
        }
        // An address nobody holds: looked up, then reported as not found.
        let mut bits = [0u8; 32];
        getrandom::getrandom(&mut bits).expect("getrandom");
        let nobody = id_prefix(&node_address(&NodeId::from_bytes(bits))).expect("overlay");
        assert_eq!(asker.resolve(now, &nobody), Resolution::Pending);
        assert_eq!(
            asker.resolve(now, &nobody),
            Resolution::Pending,
            "one lookup"
        );
        net.run_for(Duration::from_secs(5));
        let asker = net.nodes.get_mut(&addr(1)).expect("node 1");
        let mut events = Vec::new();
        while let Some(event) = asker.poll_event() {
            events.push(event);
        }
        assert!(
            events.contains(&NodeEvent::Resolved {
                prefix: nobody,
                id: None
            }),
            "{events:?}"
        );
        assert_eq!(asker.resolve(net.now, &nobody), Resolution::Failed);
        let counters = asker.counters().resolve;
        assert_eq!((counters.lookups, counters.not_found), (1, 1));
    }

    #[test]
    fn a_quiet_network_keeps_its_generation() {
        let mut net = Net::new();
        net.add(1, None);
        net.add(2, Some(addr(1)));
        net.run_for(Duration::from_secs(5));
        let generation = net.node(2).generation();
        net.run_for(Duration::from_secs(10));
        assert_eq!(
            net.node(2).generation(),
            generation,
            "keepalives alone must not republish"
        );
        assert_eq!(net.neighbor_ids(2), vec![identity(1).node_id()]);
    }
}
