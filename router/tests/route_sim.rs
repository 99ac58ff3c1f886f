//! Simulation of the routing core (`core::routing`) on random connected
//! graphs with random node IDs: sparse random graphs of degree 2 to 6, a
//! two-level "sites" graph and a scale-free graph, 1,000 routers each.
//!
//! An event queue in virtual time delivers each routing message after its
//! link's delay (1-20 ms); a message sent to several neighbors is one shared
//! copy in flight. A router that dies is noticed by its neighbors after
//! `DEATH_NOTICE` (the session layer's keepalive timeout). Once the network
//! has converged (nothing in flight, no route changed for `QUIET`, checked,
//! not assumed) and one dump interval later, packets between random pairs
//! (`SOURCES` random sources, `PAIRS / SOURCES` random destinations each)
//! are walked hop by hop through the routers' own tables (by the
//! destination's route where a router has one, else toward the beacon the
//! source learned from the location service, which runs in the simulation
//! like any routing message: each source asks for its destinations as its
//! traffic would, every 250 ms; a via without a route to the destination
//! asks too, and rewrites the via, as the router's workers do) and must
//! arrive; their stretch (hops over
//! the shortest path's hops) is reported and bounded. Then 20% of the
//! routers die at once; the share of the pairs still connected that deliver
//! is reported 2.5 s later, and 5.5 s later it must be at least 99%: the
//! routes come back, the nodes of dead beacons register with new ones and
//! the sources' lookups find them (at 1,000 routers that is done by 2.5 s;
//! at 10,000 the sites graph takes longer, docs/routing.md).
//!
//! Everything follows one seed, random per run and printed
//! (`ROUTE_SIM_SEED` replays one); `ROUTE_SIM_NODES` changes the size and
//! `ROUTE_SIM_GRAPHS` picks graphs (`random,sites,scale-free`).
//! `cargo test --release -p xorlay --test route_sim -- --nocapture` prints
//! the figures.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "common/sim.rs"]
mod sim;

use sim::{Rng, Scheduled};
use xorlay::core::NodeId;
use xorlay::core::routing::{Message, NextHop, Routing, RoutingConfig, level_for};

/// Routers per graph unless `ROUTE_SIM_NODES` says otherwise.
const NODES: usize = 1000;
/// Random pairs walked per measurement.
const PAIRS: usize = 10_000;
/// Random sources of those pairs, each with `PAIRS / SOURCES` random
/// destinations: one shortest-path search per source.
const SOURCES: usize = 1000;
/// The network has converged when nothing is in flight and no route has
/// changed for this long...
const QUIET: Duration = Duration::from_millis(500);
/// ... and the routers' startup wait is over (a router that knows no
/// beacon by then floods itself).
const CONVERGE_MIN: Duration = Duration::from_secs(2);
/// It must have converged by then.
const CONVERGE_MAX: Duration = Duration::from_secs(10);
/// Steady state over which control traffic is measured (one dump interval).
const STEADY: Duration = Duration::from_secs(4);
/// Sources ask for their destinations this often (as their packets
/// would).
const LOCATE_EVERY: Duration = Duration::from_millis(250);
/// Lookups get this long after convergence before the walks.
const LOCATE_TIME: Duration = Duration::from_secs(3);
/// A dead router's neighbors notice after this long.
const DEATH_NOTICE: Duration = Duration::from_millis(500);
/// Delivery is reported this long after a router's death was noticed.
const RECONVERGE: Duration = Duration::from_secs(2);
/// Delivery must be back this long after a router's death was noticed.
const LOCATED_AGAIN: Duration = Duration::from_secs(5);
/// Walks longer than this count as lost (the hop limit's role).
const HOPS_MAX: usize = 255;

/// An undirected graph as adjacency lists.
type Graph = Vec<Vec<usize>>;

fn add_edge(g: &mut Graph, a: usize, b: usize) -> bool {
    if a == b || g[a].contains(&b) {
        return false;
    }
    g[a].push(b);
    g[b].push(a);
    true
}

/// A random spanning tree plus random edges, each node's degree capped at a
/// random target in `degree`.
fn random_graph(n: usize, degree: (usize, usize), rng: &mut Rng) -> Graph {
    let mut g = vec![Vec::new(); n];
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for i in 1..n {
        let a = order[i];
        let b = order[rng.below(i)];
        add_edge(&mut g, a, b);
    }
    let target: Vec<usize> = (0..n)
        .map(|_| degree.0 + rng.below(degree.1 - degree.0 + 1))
        .collect();
    for _ in 0..n * 20 {
        let (a, b) = (rng.below(n), rng.below(n));
        if g[a].len() < target[a] && g[b].len() < target[b] {
            add_edge(&mut g, a, b);
        }
    }
    g
}

/// Sites of 50 routers (random graphs of degree 2-5 inside), each with two
/// gateways linked to random other sites, and a chain through the sites.
fn sites_graph(n: usize, rng: &mut Rng) -> Graph {
    let per = 50;
    let sites = n / per;
    let mut g = vec![Vec::new(); sites * per];
    for s in 0..sites {
        let inner = random_graph(per, (2, 5), rng);
        for (a, nbrs) in inner.iter().enumerate() {
            for &b in nbrs {
                add_edge(&mut g, s * per + a, s * per + b);
            }
        }
        for gw in 0..2 {
            let mut t = rng.below(sites);
            if t == s {
                t = (t + 1) % sites;
            }
            add_edge(&mut g, s * per + gw, t * per + rng.below(per));
        }
        if s + 1 < sites {
            add_edge(&mut g, s * per + 2, (s + 1) * per + 3);
        }
    }
    g
}

/// Barabási-Albert preferential attachment, two edges per new node.
fn scale_free_graph(n: usize, rng: &mut Rng) -> Graph {
    let mut g = vec![Vec::new(); n];
    let mut ends = vec![0, 1];
    add_edge(&mut g, 0, 1);
    for v in 2..n {
        let mut added = 0;
        while added < 2.min(v) {
            let u = ends[rng.below(ends.len())];
            if add_edge(&mut g, v, u) {
                ends.extend([u, v]);
                added += 1;
            }
        }
    }
    g
}

/// Hop distances from `src` over live nodes.
fn bfs(g: &Graph, alive: &[bool], src: usize) -> Vec<u32> {
    let mut dist = vec![u32::MAX; g.len()];
    dist[src] = 0;
    let mut queue = VecDeque::from([src]);
    while let Some(u) = queue.pop_front() {
        for &v in &g[u] {
            if alive[v] && dist[v] == u32::MAX {
                dist[v] = dist[u] + 1;
                queue.push_back(v);
            }
        }
    }
    dist
}

/// A message in flight; a message sent to several neighbors (a broadcast
/// of changes, a dump) is one copy.
struct Event {
    to: u32,
    from: u32,
    message: Rc<Message>,
}

/// What tells apart most messages of one router's burst: length, first and
/// last origin.
fn message_key(message: &Message) -> Option<(usize, NodeId, NodeId)> {
    match message {
        Message::Updates(u) => Some((u.len(), u.first()?.origin, u.last()?.origin)),
        _ => None,
    }
}

/// Routers on a graph in virtual time.
struct Sim {
    start: Instant,
    now: Duration,
    graph: Graph,
    delay_ms: HashMap<(u32, u32), u64>,
    routers: Vec<Routing>,
    alive: Vec<bool>,
    index: HashMap<NodeId, usize>,
    queue: BinaryHeap<Scheduled<Duration, Event>>,
    seq: u64,
    /// Link-down notices due: (when, router, dead neighbor).
    notices: Vec<(Duration, usize, usize)>,
}

impl Sim {
    fn new(graph: Graph, rng: &mut Rng) -> Sim {
        let n = graph.len();
        let level = level_for(n);
        let routers: Vec<Routing> = (0..n)
            .map(|_| {
                // Hop counts as the metric: the stretch is measured in hops.
                let config = RoutingConfig {
                    rtt_costs: false,
                    ..RoutingConfig::default()
                };
                Routing::new(rng.id(), level, config)
            })
            .collect();
        let index = routers
            .iter()
            .enumerate()
            .map(|(i, r)| (*r.local(), i))
            .collect();
        let mut delay_ms = HashMap::new();
        for (a, nbrs) in graph.iter().enumerate() {
            for &b in nbrs {
                if a < b {
                    let d = 1 + rng.below(20) as u64;
                    delay_ms.insert((a as u32, b as u32), d);
                    delay_ms.insert((b as u32, a as u32), d);
                }
            }
        }
        let mut sim = Sim {
            start: Instant::now(),
            now: Duration::ZERO,
            graph,
            delay_ms,
            routers,
            alive: vec![true; n],
            index,
            queue: BinaryHeap::new(),
            seq: 0,
            notices: Vec::new(),
        };
        let at = sim.start;
        for a in 0..n {
            for b in sim.graph[a].clone() {
                let id = *sim.routers[b].local();
                sim.routers[a].handle_link_up(at, id, 1);
            }
        }
        for a in 0..n {
            sim.drain(a);
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.start + self.now
    }

    /// Sends whatever router `a` has to send; equal messages to several
    /// neighbors share one copy.
    fn drain(&mut self, a: usize) {
        let mut sent: HashMap<(usize, NodeId, NodeId), Vec<Rc<Message>>> = HashMap::new();
        while let Some(t) = self.routers[a].poll_transmit() {
            let Some(&b) = self.index.get(&t.to) else {
                continue;
            };
            let Some(&d) = self.delay_ms.get(&(a as u32, b as u32)) else {
                continue;
            };
            let message = match message_key(&t.message) {
                Some(key) => {
                    let same = sent.entry(key).or_default();
                    match same.iter().find(|m| ***m == t.message) {
                        Some(m) => Rc::clone(m),
                        None => {
                            let m = Rc::new(t.message);
                            same.push(Rc::clone(&m));
                            m
                        }
                    }
                }
                None => Rc::new(t.message),
            };
            let due = self.now + Duration::from_millis(d);
            self.seq += 1;
            self.queue.push(Scheduled {
                at: due,
                seq: self.seq,
                item: Event {
                    to: b as u32,
                    from: a as u32,
                    message,
                },
            });
        }
    }

    /// All routers' route changes so far.
    fn route_changes(&self) -> u64 {
        self.routers
            .iter()
            .map(|r| r.counters().route_changes)
            .sum()
    }

    /// Runs until the network has converged: at least [`CONVERGE_MIN`],
    /// then until nothing is in flight and no route has changed for
    /// [`QUIET`]. Panics if that takes longer than [`CONVERGE_MAX`].
    fn converge(&mut self) {
        self.run_until(CONVERGE_MIN);
        let mut changes = self.route_changes();
        let mut quiet_since = self.now;
        while self.now < quiet_since + QUIET || !self.queue.is_empty() {
            assert!(
                self.now < CONVERGE_MAX,
                "not converged after {CONVERGE_MAX:?}: {} messages in flight",
                self.queue.len()
            );
            self.run_until(self.now + Duration::from_millis(50));
            let now_changes = self.route_changes();
            if now_changes != changes || !self.queue.is_empty() {
                changes = now_changes;
                quiet_since = self.now;
            }
        }
    }

    /// Runs until `until` of virtual time, in steps of at most 10 ms for
    /// timers.
    fn run_until(&mut self, until: Duration) {
        while self.now < until {
            let step_end = (self.now + Duration::from_millis(10)).min(until);
            while self.queue.peek().is_some_and(|e| e.at <= step_end) {
                let Some(Scheduled { at, item: ev, .. }) = self.queue.pop() else {
                    break;
                };
                self.now = at;
                let (to, from) = (ev.to as usize, ev.from as usize);
                if !self.alive[to] {
                    continue;
                }
                let now = self.instant();
                let from = *self.routers[from].local();
                self.routers[to].handle_message(now, from, &ev.message);
                self.drain(to);
            }
            self.now = step_end;
            let now = self.instant();
            let due: Vec<(Duration, usize, usize)> = self
                .notices
                .iter()
                .copied()
                .filter(|n| n.0 <= self.now)
                .collect();
            self.notices.retain(|n| n.0 > self.now);
            for (_, a, dead) in due {
                if self.alive[a] {
                    let id = *self.routers[dead].local();
                    self.routers[a].handle_link_down(now, id);
                    self.drain(a);
                }
            }
            for a in 0..self.routers.len() {
                if self.alive[a] && self.routers[a].poll_timeout().is_some_and(|t| t <= now) {
                    self.routers[a].handle_timeout(now);
                    self.drain(a);
                }
            }
        }
    }

    fn kill(&mut self, a: usize) {
        self.alive[a] = false;
        for &b in &self.graph[a] {
            self.notices.push((self.now + DEATH_NOTICE, b, a));
        }
    }

    /// Every source of `pairs` asks the location service for its
    /// destinations without a route, as its traffic would (a cached answer
    /// costs nothing; a missing or old one starts a lookup).
    /// A packet that reaches its via without a route to its destination
    /// makes the via ask too (the workers' miss upcall), as in the router.
    fn locate(&mut self, pairs: &[(usize, usize, u32)]) {
        let now = self.instant();
        let mut askers: Vec<usize> = Vec::new();
        for &(s, d, _) in pairs {
            let dst = *self.routers[d].local();
            let _ = self.routers[s].locate(now, &dst);
            askers.push(s);
            let via = self.routers[s].location_of(&dst);
            if let Some(&v) = via.as_ref().and_then(|v| self.index.get(v))
                && self.alive[v]
                && self.routers[v].next_hop(&dst) == NextHop::Unknown
            {
                let _ = self.routers[v].locate(now, &dst);
                askers.push(v);
            }
        }
        let mut sources = askers;
        sources.sort_unstable();
        sources.dedup();
        for s in sources {
            self.drain(s);
        }
    }

    /// Runs `span` of virtual time with `pairs`' sources asking for their
    /// destinations every [`LOCATE_EVERY`].
    fn run_with_traffic(&mut self, span: Duration, pairs: &[(usize, usize, u32)]) {
        let end = self.now + span;
        while self.now < end {
            self.locate(pairs);
            self.run_until((self.now + LOCATE_EVERY).min(end));
        }
    }

    /// Walks a packet from `s` to `d` as the data plane sends it: by
    /// `d`'s route where a router has one, else toward the beacon the
    /// source's location service answered (carried in the packet). Hops,
    /// or `None` if dropped or looping.
    fn walk(&self, s: usize, d: usize) -> Option<usize> {
        let dst = *self.routers[d].local();
        let mut via = self.routers[s].location_of(&dst);
        let mut at = s;
        for hops in 0..HOPS_MAX {
            if at == d {
                return Some(hops);
            }
            if !self.alive[at] {
                return None;
            }
            let router = &self.routers[at];
            // At its via without a route: the via's own answer replaces it.
            if via == Some(*router.local()) && router.next_hop(&dst) == NextHop::Unknown {
                via = router.location_of(&dst).filter(|v| Some(*v) != via);
            }
            let next = match router.next_hop_via(&dst, via.as_ref()) {
                NextHop::Neighbor(n) => n,
                NextHop::Local => return Some(hops),
                NextHop::Unknown => return None,
            };
            let b = *self.index.get(&next)?;
            if !self.graph[at].contains(&b) {
                return None;
            }
            at = b;
        }
        None
    }
}

/// Delivery and stretch over random live, connected pairs.
struct Measure {
    pairs: usize,
    delivered: usize,
    stretch: Vec<f64>,
}

/// Random live, connected pairs: (source, destination, shortest path's
/// hops).
fn draw_pairs(sim: &Sim, rng: &mut Rng) -> Vec<(usize, usize, u32)> {
    let n = sim.routers.len();
    let live: Vec<usize> = (0..n).filter(|&i| sim.alive[i]).collect();
    let mut pairs = Vec::with_capacity(PAIRS);
    for _ in 0..SOURCES {
        let s = live[rng.below(live.len())];
        let dist = bfs(&sim.graph, &sim.alive, s);
        for _ in 0..PAIRS / SOURCES {
            let d = live[rng.below(live.len())];
            if s == d || dist[d] == u32::MAX {
                continue; // not connected any more
            }
            pairs.push((s, d, dist[d]));
        }
    }
    pairs
}

impl Measure {
    fn take(sim: &Sim, pairs: &[(usize, usize, u32)]) -> Measure {
        let mut m = Measure {
            pairs: pairs.len(),
            delivered: 0,
            stretch: Vec::new(),
        };
        for &(s, d, hops) in pairs {
            if let Some(h) = sim.walk(s, d) {
                m.delivered += 1;
                m.stretch.push(h as f64 / f64::from(hops));
            }
        }
        m.stretch.sort_by(f64::total_cmp);
        m
    }

    fn ratio(&self) -> f64 {
        self.delivered as f64 / self.pairs.max(1) as f64
    }

    fn quantile(&self, q: f64) -> f64 {
        if self.stretch.is_empty() {
            return f64::NAN;
        }
        self.stretch[((self.stretch.len() - 1) as f64 * q) as usize]
    }
}

fn seed() -> u64 {
    match std::env::var("ROUTE_SIM_SEED") {
        Ok(s) => s.parse().expect("ROUTE_SIM_SEED is a u64"),
        Err(_) => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).expect("getrandom");
            u64::from_le_bytes(b)
        }
    }
}

fn nodes() -> usize {
    std::env::var("ROUTE_SIM_NODES")
        .ok()
        .map(|s| s.parse().expect("ROUTE_SIM_NODES is a count"))
        .unwrap_or(NODES)
}

/// This process's peak resident memory so far (Linux), for the figures.
fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map_or_else(|| "?".into(), |v| v.trim().to_string())
}

fn run_graph(name: &str, graph: Graph, rng: &mut Rng) {
    let n = graph.len();
    let t0 = Instant::now();
    let mut sim = Sim::new(graph, rng);
    sim.converge();
    let converged = sim.now;
    let settled_tx: u64 = sim.routers.iter().map(|r| r.counters().updates_tx).sum();
    let settled_changes = sim.route_changes();
    let converge_wall = t0.elapsed();
    sim.run_until(converged + STEADY);
    let steady_changes = sim.route_changes() - settled_changes;
    let steady_wall = t0.elapsed();
    let steady_tx: u64 = sim
        .routers
        .iter()
        .map(|r| r.counters().updates_tx)
        .sum::<u64>()
        - settled_tx;
    let pairs = draw_pairs(&sim, rng);
    sim.run_with_traffic(LOCATE_TIME, &pairs);
    let m = Measure::take(&sim, &pairs);
    let found: u64 = sim
        .routers
        .iter()
        .map(|r| r.location_counters().found)
        .sum();
    let routes: Vec<usize> = sim.routers.iter().map(Routing::route_count).collect();
    // Messages a full send queue refused (a hub's dump to hundreds of
    // neighbors): what the deliveries below lack.
    let dropped: u64 = sim.routers.iter().map(|r| r.counters().dropped_queue).sum();
    let beacons = sim.routers.iter().filter(|r| r.is_beacon()).count();
    println!(
        "{name}: {n} routers, {beacons} beacons (level {}); converged at {:.2} s (then {steady_changes} \
         route changes in {:.0} s); routes per router mean {:.0} max {}; updates per router per second {:.1}; \
         messages dropped by full send queues {dropped}; lookups answered {found}; delivered {}/{} ({:.4}); \
         stretch median {:.2} p99 {:.2} max {:.2}",
        level_for(n),
        converged.as_secs_f64(),
        STEADY.as_secs_f64(),
        routes.iter().sum::<usize>() as f64 / n as f64,
        routes.iter().max().copied().unwrap_or(0),
        steady_tx as f64 / n as f64 / STEADY.as_secs_f64(),
        m.delivered,
        m.pairs,
        m.ratio(),
        m.quantile(0.5),
        m.quantile(0.99),
        m.quantile(1.0),
    );
    assert!(
        m.ratio() >= 0.999,
        "{name}: delivered {:.4} after convergence",
        m.ratio()
    );
    assert!(
        m.quantile(0.5) <= 1.3,
        "{name}: median stretch {:.2}",
        m.quantile(0.5)
    );
    assert!(
        m.quantile(0.99) <= 3.0,
        "{name}: p99 stretch {:.2}",
        m.quantile(0.99)
    );

    // 20% of the routers die at once.
    let mut killed = 0;
    while killed < n / 5 {
        let a = rng.below(n);
        if sim.alive[a] {
            sim.kill(a);
            killed += 1;
        }
    }
    let at = sim.now;
    let measure_wall = t0.elapsed();
    // The pairs still connected keep sending (and asking) meanwhile.
    let pairs = draw_pairs(&sim, rng);
    sim.run_with_traffic(DEATH_NOTICE + RECONVERGE, &pairs);
    let early = Measure::take(&sim, &pairs);
    sim.run_with_traffic(at + DEATH_NOTICE + LOCATED_AGAIN - sim.now, &pairs);
    let churn_wall = t0.elapsed();
    let after = Measure::take(&sim, &pairs);
    println!(
        "{name}: 20% killed; {:.1} s later delivered {}/{} ({:.4}), {:.1} s later {}/{} ({:.4}); \
         stretch median {:.2} p99 {:.2}; \
         wall time {:.0} s (converging {:.0} s, steady {:.0} s, measuring {:.0} s, deaths {:.0} s), \
         peak resident memory so far {}",
        (DEATH_NOTICE + RECONVERGE).as_secs_f64(),
        early.delivered,
        early.pairs,
        early.ratio(),
        (DEATH_NOTICE + LOCATED_AGAIN).as_secs_f64(),
        after.delivered,
        after.pairs,
        after.ratio(),
        after.quantile(0.5),
        after.quantile(0.99),
        t0.elapsed().as_secs_f64(),
        converge_wall.as_secs_f64(),
        (steady_wall - converge_wall).as_secs_f64(),
        (measure_wall - steady_wall + (t0.elapsed() - churn_wall)).as_secs_f64(),
        (churn_wall - measure_wall).as_secs_f64(),
        peak_rss(),
    );
    assert!(
        after.ratio() >= 0.99,
        "{name}: delivered {:.4} {:.1} s after the deaths ({:.4} at {:.1} s)",
        after.ratio(),
        (DEATH_NOTICE + LOCATED_AGAIN).as_secs_f64(),
        early.ratio(),
        (DEATH_NOTICE + RECONVERGE).as_secs_f64(),
    );
}

/// Whether `ROUTE_SIM_GRAPHS` (a comma-separated list of `random`, `sites`,
/// `scale-free`; all when unset) names `graph`. The graphs not run still
/// draw their randomness, so a seed builds the same graphs either way.
fn wanted(graph: &str) -> bool {
    std::env::var("ROUTE_SIM_GRAPHS").map_or(true, |g| g.split(',').any(|w| w.trim() == graph))
}

#[test]
fn random_graphs_deliver_with_low_stretch() {
    let seed = seed();
    println!("ROUTE_SIM_SEED={seed}");
    let mut rng = Rng(seed);
    let n = nodes();
    // Each graph and its run draw from their own generator.
    let graph_rng = |rng: &mut Rng| Rng(rng.next_u64());
    let mut r = graph_rng(&mut rng);
    if wanted("random") {
        let g = random_graph(n, (2, 6), &mut r);
        run_graph("random degree 2-6", g, &mut r);
    }
    let mut r = graph_rng(&mut rng);
    if wanted("sites") {
        let g = sites_graph(n, &mut r);
        run_graph("sites", g, &mut r);
    }
    let mut r = graph_rng(&mut rng);
    if wanted("scale-free") {
        let g = scale_free_graph(n, &mut r);
        run_graph("scale-free", g, &mut r);
    }
}
