//! Deterministic simulation of the Kademlia state machine: 1,000 nodes
//! join through one seed in virtual time over an in-memory network with
//! random delay and loss; 20% churn (200 killed, 200 new) over 60 s with
//! lookups between surviving nodes meanwhile; then 1,000 lookups of random
//! live IDs from random live nodes and 10,000 greedy routes over the
//! contacts (as `core::forward::decide` routes), each required to succeed
//! at least 99% of the time.
//!
//! No sockets, no sleeps, no threads: an event queue (a binary heap ordered
//! by virtual time, then by insertion) drives every node's `handle_*` calls,
//! and only nodes with something due are touched. Everything is seeded, so a
//! run is reproducible. Knobs, for experiments: `KAD_SIM_SEED`,
//! `KAD_SIM_LOSS_PER_MILLE` (default 20), `KAD_SIM_SESSION_GC` (`keep`, the
//! default; `unused`: close sessions to peers outside the own table after
//! 15 s; `initiated`: the same, but only sessions this node opened).
//!
//! The network model, standing in for the session layer:
//! - `Send` over an established session arrives after 1-50 ms, or is lost
//!   (LOSS_PER_MILLE). Without a session the sender first handshakes (one
//!   RTT), as the glue does.
//! - `Connect` to the address of a live node (with the expected ID, if one is
//!   given) establishes a session after one RTT and both sides get
//!   `handle_connected`; otherwise the initiator gets `handle_unreachable`
//!   after CONNECT_FAIL_MS.
//! - A dead node's session peers get `handle_disconnected` DEATH_NOTICE_MS
//!   after it died (keepalive timeout); `Disconnect` closes a session and the
//!   other side hears of it after a one-way delay.
//!
//! Run with `--nocapture` to see the measurements.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

#[path = "common/sim.rs"]
mod sim;

use sim::Rng;
use xorlay::core::kademlia::{KadAction, KadConfig, KadCounters, KadEvent, Kademlia, LookupId};
use xorlay::core::{NextHopTable, NodeId, Verdict, decide};

/// Nodes in the network before churn (node 0 is the seed).
const NODES: usize = 1000;
/// Milliseconds between two joins.
const JOIN_SPACING_MS: u64 = 50;
/// Quiet time after the last join.
const SETTLE_AFTER_JOIN_MS: u64 = 10_000;
/// Nodes killed, and as many started, during churn: 20%.
const CHURN: usize = NODES / 5;
/// The churn period.
const CHURN_PERIOD_MS: u64 = 60_000;
/// Quiet time after churn, before measuring.
const SETTLE_AFTER_CHURN_MS: u64 = 20_000;
/// Datagrams lost, per mille (`KAD_SIM_LOSS_PER_MILLE` overrides).
const LOSS_PER_MILLE: u64 = 20;
/// One-way delay range.
const DELAY_MS_MIN: u64 = 1;
const DELAY_MS_MAX: u64 = 50;
/// A failed handshake is reported after this long.
const CONNECT_FAIL_MS: u64 = 1000;
/// A dead node's sessions time out after this long.
const DEATH_NOTICE_MS: u64 = 1000;
/// Lookups measured after churn, and the pause between two starts.
const LOOKUPS: usize = 1000;
const LOOKUP_SPACING_MS: u64 = 10;
/// Lookups measured during churn (between nodes that survive it).
const CHURN_LOOKUPS: usize = 500;
/// Greedy routes measured.
const ROUTES: usize = 10_000;
/// Required success rates, per mille.
const SUCCESS_MIN_PER_MILLE: usize = 990;
/// Bound on simulated events (a runaway guard).
const EVENTS_MAX: u64 = 50_000_000;

#[derive(Debug)]
enum Ev {
    Join {
        node: usize,
    },
    Kill {
        node: usize,
    },
    Timer {
        node: usize,
    },
    /// A message over the session `from` -> `to`.
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    /// A handshake from `from` to `to` completes.
    Connected {
        from: usize,
        to: usize,
    },
    Unreachable {
        node: usize,
        addr: SocketAddr,
        expect: Option<NodeId>,
    },
    Disconnected {
        node: usize,
        peer: NodeId,
    },
    StartLookup {
        src: usize,
        target: usize,
        phase: Phase,
    },
    /// The glue's garbage collection of sessions (see `SessionGc`).
    Gc {
        node: usize,
    },
}

/// What the glue does with sessions Kademlia does not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionGc {
    /// Keeps them (the default here).
    Keep,
    /// Closes sessions to peers not in this node's table after
    /// `UNUSED_SESSION_GRACE_MS`, whoever opened them.
    Unused,
    /// Closes only sessions this node opened, to peers not in its table,
    /// after `UNUSED_SESSION_GRACE_MS`; inbound ones are the opener's call.
    Initiated,
}

/// Age before an unused session is closed, and the GC period.
const UNUSED_SESSION_GRACE_MS: u64 = 15_000;
const GC_PERIOD_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy)]
struct Session {
    since_ms: u64,
    /// This side opened it.
    initiated: bool,
}

type Scheduled = sim::Scheduled<u64, Ev>;

struct SimNode {
    id: NodeId,
    addr: SocketAddr,
    kad: Kademlia,
    alive: bool,
    /// Peers (node indices) with an established session.
    sessions: BTreeMap<usize, Session>,
    /// The earliest timer event queued for this node.
    timer_ms: Option<u64>,
}

/// When a lookup ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// During churn, between nodes that stay alive throughout.
    Churn,
    /// After churn has settled.
    Settled,
}

/// A lookup whose result is awaited.
struct PendingLookup {
    target: NodeId,
    phase: Phase,
}

struct LookupResult {
    phase: Phase,
    found: bool,
    rounds: u32,
}

struct Sim {
    rng: Rng,
    base: Instant,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<NodeId, usize>,
    lookups: HashMap<(usize, LookupId), PendingLookup>,
    results: Vec<LookupResult>,
    events: u64,
    delivered: u64,
    lost: u64,
    loss_per_mille: u64,
    gc: SessionGc,
}

fn node_addr(i: usize) -> SocketAddr {
    // A distinct /24 or /64 per node, so subnet limits do not bite; one node
    // in four on IPv6.
    if i % 4 == 3 {
        let segment = u16::try_from(i).expect("few nodes");
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, segment, 0, 0, 0, 1)),
            4789,
        )
    } else {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1)),
            4789,
        )
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            rng: Rng(seed),
            base: Instant::now(),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            lookups: HashMap::new(),
            results: Vec::new(),
            events: 0,
            delivered: 0,
            lost: 0,
            loss_per_mille: std::env::var("KAD_SIM_LOSS_PER_MILLE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(LOSS_PER_MILLE),
            gc: match std::env::var("KAD_SIM_SESSION_GC").as_deref() {
                Ok("unused") => SessionGc::Unused,
                Ok("initiated") => SessionGc::Initiated,
                _ => SessionGc::Keep,
            },
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn schedule(&mut self, at_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at_ms,
            seq: self.seq,
            item: ev,
        });
    }

    fn delay(&mut self) -> u64 {
        self.rng.range(DELAY_MS_MIN, DELAY_MS_MAX)
    }

    fn lost(&mut self) -> bool {
        self.rng.next_u64() % 1000 < self.loss_per_mille
    }

    /// Creates a node (not yet started).
    fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let id = self.rng.id();
        let addr = node_addr(i);
        let kad = Kademlia::new(id, KadConfig::default(), self.rng.next_u64());
        self.nodes.push(SimNode {
            id,
            addr,
            kad,
            alive: false,
            sessions: BTreeMap::new(),
            timer_ms: None,
        });
        self.by_addr.insert(addr, i);
        self.by_id.insert(id, i);
        i
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive)
            .collect()
    }

    /// Runs events until virtual time `until_ms` (inclusive).
    fn run_until(&mut self, until_ms: u64) {
        while let Some(next) = self.queue.peek() {
            if next.at > until_ms {
                break;
            }
            let Some(Scheduled {
                at: at_ms,
                item: ev,
                ..
            }) = self.queue.pop()
            else {
                break;
            };
            self.now_ms = at_ms;
            self.events += 1;
            assert!(self.events < EVENTS_MAX, "runaway simulation");
            self.dispatch(ev);
        }
        self.now_ms = until_ms;
    }

    fn dispatch(&mut self, ev: Ev) {
        let now = self.now();
        match ev {
            Ev::Join { node } => {
                self.nodes[node].alive = true;
                if self.gc != SessionGc::Keep {
                    let at = self.now_ms + GC_PERIOD_MS;
                    self.schedule(at, Ev::Gc { node });
                }
                if node != 0 {
                    let seed = self.nodes[0].addr;
                    self.nodes[node].kad.add_seed(now, seed);
                } else {
                    // The seed just starts its clock.
                    self.nodes[node].kad.handle_timeout(now);
                }
                self.after(node);
            }
            Ev::Kill { node } => {
                self.nodes[node].alive = false;
                let dead = self.nodes[node].id;
                let peers = std::mem::take(&mut self.nodes[node].sessions);
                for p in peers.into_keys() {
                    self.nodes[p].sessions.remove(&node);
                    let at = self.now_ms + DEATH_NOTICE_MS;
                    self.schedule(
                        at,
                        Ev::Disconnected {
                            node: p,
                            peer: dead,
                        },
                    );
                }
            }
            Ev::Timer { node } => {
                let n = &mut self.nodes[node];
                if n.alive && n.timer_ms == Some(self.now_ms) {
                    n.timer_ms = None;
                    n.kad.handle_timeout(now);
                    self.after(node);
                }
            }
            Ev::Deliver { from, to, bytes } => {
                if self.nodes[to].alive && self.nodes[to].sessions.contains_key(&from) {
                    self.delivered += 1;
                    let (id, addr) = (self.nodes[from].id, self.nodes[from].addr);
                    self.nodes[to].kad.handle_message(now, id, addr, &bytes);
                    self.after(to);
                }
            }
            Ev::Connected { from, to } => {
                if !self.nodes[from].alive {
                    return;
                }
                if !self.nodes[to].alive {
                    let (addr, id) = (self.nodes[to].addr, self.nodes[to].id);
                    let at = self.now_ms + CONNECT_FAIL_MS;
                    self.schedule(
                        at,
                        Ev::Unreachable {
                            node: from,
                            addr,
                            expect: Some(id),
                        },
                    );
                    return;
                }
                let since_ms = self.now_ms;
                self.nodes[from].sessions.entry(to).or_insert(Session {
                    since_ms,
                    initiated: true,
                });
                self.nodes[to].sessions.entry(from).or_insert(Session {
                    since_ms,
                    initiated: false,
                });
                let (to_id, to_addr) = (self.nodes[to].id, self.nodes[to].addr);
                let (from_id, from_addr) = (self.nodes[from].id, self.nodes[from].addr);
                self.nodes[from].kad.handle_connected(now, to_id, to_addr);
                self.after(from);
                self.nodes[to].kad.handle_connected(now, from_id, from_addr);
                self.after(to);
            }
            Ev::Unreachable { node, addr, expect } => {
                if self.nodes[node].alive {
                    self.nodes[node].kad.handle_unreachable(now, addr, expect);
                    self.after(node);
                }
            }
            Ev::Disconnected { node, peer } => {
                if self.nodes[node].alive {
                    self.nodes[node].kad.handle_disconnected(now, peer);
                    self.after(node);
                }
            }
            Ev::Gc { node } => {
                if !self.nodes[node].alive {
                    return;
                }
                let contacts: BTreeSet<NodeId> =
                    self.nodes[node].kad.contacts().map(|(id, _)| id).collect();
                let unused: Vec<usize> = self.nodes[node]
                    .sessions
                    .iter()
                    .filter(|(peer, s)| {
                        self.now_ms >= s.since_ms + UNUSED_SESSION_GRACE_MS
                            && !contacts.contains(&self.nodes[**peer].id)
                            && (self.gc == SessionGc::Unused || s.initiated)
                    })
                    .map(|(peer, _)| *peer)
                    .collect();
                for peer in unused {
                    self.close_session(node, peer);
                    let peer_id = self.nodes[peer].id;
                    self.nodes[node].kad.handle_disconnected(now, peer_id);
                }
                self.after(node);
                let at = self.now_ms + GC_PERIOD_MS;
                self.schedule(at, Ev::Gc { node });
            }
            Ev::StartLookup { src, target, phase } => {
                let target_id = self.nodes[target].id;
                if let Some(id) = self.nodes[src].kad.start_lookup(now, target_id) {
                    let pending = PendingLookup {
                        target: target_id,
                        phase,
                    };
                    self.lookups.insert((src, id), pending);
                } else {
                    // At the concurrency bound: try again shortly.
                    let at = self.now_ms + 100;
                    self.schedule(at, Ev::StartLookup { src, target, phase });
                }
                self.after(src);
            }
        }
    }

    /// `node` closes its session with `to`; `to` hears of it after a one-way
    /// delay.
    fn close_session(&mut self, node: usize, to: usize) {
        if self.nodes[node].sessions.remove(&to).is_some() {
            self.nodes[to].sessions.remove(&node);
            let at = self.now_ms + self.delay();
            let me = self.nodes[node].id;
            self.schedule(at, Ev::Disconnected { node: to, peer: me });
        }
    }

    /// The live node at `addr` matching `expect`, if any.
    fn resolve(&self, addr: &SocketAddr, expect: Option<NodeId>) -> Option<usize> {
        let i = *self.by_addr.get(addr)?;
        let n = &self.nodes[i];
        (n.alive && expect.is_none_or(|id| id == n.id)).then_some(i)
    }

    /// Carries out `node`'s actions, collects its events, re-arms its timer.
    fn after(&mut self, node: usize) {
        while let Some(action) = self.nodes[node].kad.poll_action() {
            match action {
                KadAction::Connect { addr, expect } => match self.resolve(&addr, expect) {
                    Some(to) => {
                        let at = self.now_ms + self.delay() + self.delay();
                        self.schedule(at, Ev::Connected { from: node, to });
                    }
                    None => {
                        let at = self.now_ms + CONNECT_FAIL_MS;
                        self.schedule(at, Ev::Unreachable { node, addr, expect });
                    }
                },
                KadAction::Send { peer, addr, bytes } => {
                    let session = self
                        .by_id
                        .get(&peer)
                        .copied()
                        .filter(|to| self.nodes[node].sessions.contains_key(to));
                    let (to, handshake_ms) = match session {
                        Some(to) => (to, 0),
                        None => match self.resolve(&addr, Some(peer)) {
                            Some(to) => {
                                let rtt = self.delay() + self.delay();
                                let at = self.now_ms + rtt;
                                self.schedule(at, Ev::Connected { from: node, to });
                                (to, rtt)
                            }
                            None => {
                                let at = self.now_ms + CONNECT_FAIL_MS;
                                self.schedule(
                                    at,
                                    Ev::Unreachable {
                                        node,
                                        addr,
                                        expect: Some(peer),
                                    },
                                );
                                continue;
                            }
                        },
                    };
                    if self.lost() {
                        self.lost += 1;
                        continue;
                    }
                    let at = self.now_ms + handshake_ms + self.delay();
                    self.schedule(
                        at,
                        Ev::Deliver {
                            from: node,
                            to,
                            bytes,
                        },
                    );
                }
                KadAction::Disconnect { peer } => {
                    if let Some(&to) = self.by_id.get(&peer) {
                        self.close_session(node, to);
                    }
                }
            }
        }
        while let Some(event) = self.nodes[node].kad.poll_event() {
            if let KadEvent::LookupDone {
                id,
                target,
                closest,
                rounds,
                ..
            } = event
                && let Some(pending) = self.lookups.remove(&(node, id))
            {
                assert_eq!(pending.target, target);
                self.results.push(LookupResult {
                    phase: pending.phase,
                    found: closest.iter().any(|(c, _)| *c == target),
                    rounds,
                });
            }
        }
        if let Some(deadline) = self.nodes[node].kad.poll_timeout() {
            let after_base = deadline.saturating_duration_since(self.base);
            // Round up to the next millisecond; never in the past.
            let ms = after_base.as_millis() as u64
                + u64::from(after_base.subsec_nanos() % 1_000_000 != 0);
            let ms = ms.max(self.now_ms);
            if self.nodes[node].timer_ms.is_none_or(|t| ms < t) {
                self.nodes[node].timer_ms = Some(ms);
                self.schedule(ms, Ev::Timer { node });
            }
        }
    }

    /// Greedy routing over every live node's contacts, as the data plane
    /// does it: hop counts of the routes that arrived, and the failures.
    fn greedy(&mut self, routes: usize) -> (Vec<u32>, usize) {
        let alive = self.alive();
        let mut tables: HashMap<usize, NextHopTable<usize>> = HashMap::new();
        for &i in &alive {
            let n = &self.nodes[i];
            let neighbors = n
                .kad
                .contacts()
                .filter_map(|(id, _)| self.by_id.get(&id).map(|j| (id, *j)));
            tables.insert(
                i,
                NextHopTable::new(n.id, neighbors).expect("unique contacts"),
            );
        }
        let mut hops = Vec::with_capacity(routes);
        let mut failed = 0;
        for _ in 0..routes {
            let src = alive[self.rng.below(alive.len())];
            let mut dst = alive[self.rng.below(alive.len())];
            while dst == src {
                dst = alive[self.rng.below(alive.len())];
            }
            let dst_id = self.nodes[dst].id;
            let mut at = src;
            let mut hop_limit = 64u8;
            let mut count = 0;
            let arrived = loop {
                match decide(&tables[&at], &dst_id, hop_limit) {
                    Verdict::Deliver => break true,
                    Verdict::Forward { hop, .. } => {
                        if !self.nodes[*hop].alive {
                            break false;
                        }
                        at = *hop;
                        hop_limit -= 1;
                        count += 1;
                    }
                    Verdict::Drop(_) => break false,
                }
            };
            if arrived {
                hops.push(count);
            } else {
                failed += 1;
            }
        }
        (hops, failed)
    }

    fn totals(&self) -> KadCounters {
        let mut t = KadCounters::default();
        for n in &self.nodes {
            let c = n.kad.counters();
            t.messages_out += c.messages_out;
            t.messages_bad += c.messages_bad;
            t.evictions += c.evictions;
            t.contacts_lost += c.contacts_lost;
            t.lookups_started += c.lookups_started;
            t.refreshes += c.refreshes;
            t.rebootstraps += c.rebootstraps;
            t.requests_timed_out += c.requests_timed_out;
            t.actions_dropped += c.actions_dropped;
            t.events_dropped += c.events_dropped;
            t.connects_started += c.connects_started;
            t.subnet_rejected += c.subnet_rejected;
        }
        t
    }
}

/// The value at quantile `q` of sorted `values`.
fn quantile(values: &[u32], q: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i]
}

/// Table sizes (or any per-node count): min, median, max.
fn spread(mut values: Vec<u32>) -> String {
    values.sort_unstable();
    format!(
        "min {} median {} max {}",
        values.first().copied().unwrap_or(0),
        quantile(&values, 0.5),
        values.last().copied().unwrap_or(0)
    )
}

/// Lookup success and rounds of one phase: (found, total, summary).
fn lookup_stats(results: &[LookupResult], phase: Phase) -> (usize, usize, String) {
    let of_phase: Vec<&LookupResult> = results.iter().filter(|r| r.phase == phase).collect();
    let found = of_phase.iter().filter(|r| r.found).count();
    let mut rounds: Vec<u32> = of_phase.iter().map(|r| r.rounds).collect();
    rounds.sort_unstable();
    let total = of_phase.len();
    let summary = format!(
        "lookups {found}/{total} found ({:.1}%), rounds median {} p99 {}",
        found as f64 * 100.0 / total.max(1) as f64,
        quantile(&rounds, 0.5),
        quantile(&rounds, 0.99),
    );
    (found, total, summary)
}

#[test]
fn thousand_nodes_with_churn_find_and_route() {
    let wall = Instant::now();
    let seed = std::env::var("KAD_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001_u64);
    let mut sim = Sim::new(seed);

    // Phase 1: staggered joins, all through node 0.
    for i in 0..NODES {
        let node = sim.add_node();
        sim.schedule(i as u64 * JOIN_SPACING_MS, Ev::Join { node });
    }
    let joined_ms = NODES as u64 * JOIN_SPACING_MS + SETTLE_AFTER_JOIN_MS;
    sim.run_until(joined_ms);
    let sizes = sim
        .alive()
        .iter()
        .map(|i| sim.nodes[*i].kad.len() as u32)
        .collect();
    println!(
        "after joins ({:.0} s virtual): {} nodes, contacts per node {}",
        joined_ms as f64 / 1000.0,
        NODES,
        spread(sizes)
    );

    // Phase 2: 20% churn, a kill and a join every CHURN_PERIOD_MS / CHURN.
    // Meanwhile, lookups between nodes that stay alive throughout.
    let spacing = CHURN_PERIOD_MS / CHURN as u64;
    let mut candidates: Vec<usize> = (1..NODES).collect();
    for c in 0..CHURN {
        let at = joined_ms + c as u64 * spacing;
        let victim = candidates.swap_remove(sim.rng.below(candidates.len()));
        sim.schedule(at, Ev::Kill { node: victim });
        let fresh = sim.add_node();
        sim.schedule(at + spacing / 2, Ev::Join { node: fresh });
    }
    // `candidates` now holds the survivors (and node 0 survives too).
    for l in 0..CHURN_LOOKUPS {
        let src = candidates[sim.rng.below(candidates.len())];
        let mut target = candidates[sim.rng.below(candidates.len())];
        while target == src {
            target = candidates[sim.rng.below(candidates.len())];
        }
        let at = joined_ms + l as u64 * CHURN_PERIOD_MS / CHURN_LOOKUPS as u64;
        let phase = Phase::Churn;
        sim.schedule(at, Ev::StartLookup { src, target, phase });
    }
    let churned_ms = joined_ms + CHURN_PERIOD_MS + SETTLE_AFTER_CHURN_MS;
    sim.run_until(churned_ms);
    let alive = sim.alive();
    assert_eq!(alive.len(), NODES);

    // Phase 3: lookups of random live IDs from random live nodes.
    for l in 0..LOOKUPS {
        let src = alive[sim.rng.below(alive.len())];
        let mut target = alive[sim.rng.below(alive.len())];
        while target == src {
            target = alive[sim.rng.below(alive.len())];
        }
        let at = churned_ms + l as u64 * LOOKUP_SPACING_MS;
        let phase = Phase::Settled;
        sim.schedule(at, Ev::StartLookup { src, target, phase });
    }
    let lookups_end_ms = churned_ms + LOOKUPS as u64 * LOOKUP_SPACING_MS + 30_000;
    sim.run_until(lookups_end_ms);

    // Phase 4: greedy routing over the contacts.
    let (mut hops, route_failures) = sim.greedy(ROUTES);
    hops.sort_unstable();

    let (found, total, lookups) = lookup_stats(&sim.results, Phase::Settled);
    let (churn_found, churn_total, churn_lookups) = lookup_stats(&sim.results, Phase::Churn);
    let summary = format!(
        "seed {seed:#x}, loss {}\u{2030}, session GC {:?}: after churn: {lookups}; \
         greedy routes {}/{ROUTES} arrived ({:.1}%), hops median {} p99 {}; \
         during churn: {churn_lookups}",
        sim.loss_per_mille,
        sim.gc,
        hops.len(),
        hops.len() as f64 * 100.0 / ROUTES as f64,
        quantile(&hops, 0.5),
        quantile(&hops, 0.99),
    );
    let totals = sim.totals();
    let alive = sim.alive();
    println!(
        "at the end: contacts per node {}, sessions per node {}",
        spread(
            alive
                .iter()
                .map(|i| sim.nodes[*i].kad.len() as u32)
                .collect()
        ),
        spread(
            alive
                .iter()
                .map(|i| sim.nodes[*i].sessions.len() as u32)
                .collect()
        ),
    );
    println!(
        "virtual {:.0} s, {} events, {} messages delivered, {} lost; all nodes: {} lookups \
         ({} refreshes), {} re-bootstraps, {} connects, {} request timeouts, {} evictions, \
         {} contacts lost, {} bad messages, {} actions dropped",
        sim.now_ms as f64 / 1000.0,
        sim.events,
        sim.delivered,
        sim.lost,
        totals.lookups_started,
        totals.refreshes,
        totals.rebootstraps,
        totals.connects_started,
        totals.requests_timed_out,
        totals.evictions,
        totals.contacts_lost,
        totals.messages_bad,
        totals.actions_dropped,
    );
    println!("{summary}");
    println!("wall time {:.1} s", wall.elapsed().as_secs_f64());

    assert_eq!(total, LOOKUPS, "every lookup finishes; {summary}");
    assert_eq!(
        churn_total, CHURN_LOOKUPS,
        "every lookup finishes; {summary}"
    );
    assert_eq!(totals.messages_bad, 0, "{summary}");
    assert_eq!(totals.actions_dropped, 0, "{summary}");
    assert_eq!(totals.events_dropped, 0, "{summary}");
    assert!(
        found * 1000 >= total * SUCCESS_MIN_PER_MILLE,
        "lookup success below 99%: {summary}"
    );
    assert!(
        hops.len() * 1000 >= ROUTES * SUCCESS_MIN_PER_MILLE,
        "greedy routing success below 99%: {summary}"
    );
    assert!(
        churn_found * 1000 >= churn_total * SUCCESS_MIN_PER_MILLE,
        "lookup success during churn below 99%: {summary}"
    );
    assert_eq!(route_failures + hops.len(), ROUTES);
}
