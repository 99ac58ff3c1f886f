//! Unit tests of the routing core on small hand-made graphs, driven in
//! virtual time by an in-memory exchange (every message arrives after 1 ms).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::route::{Locate, LocateKind};

/// Every link costs what it came up with (hops), unless a test measures
/// round trips.
fn hop_costs() -> RoutingConfig {
    RoutingConfig {
        rtt_costs: false,
        ..RoutingConfig::default()
    }
}

fn random_id() -> NodeId {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("getrandom");
    NodeId::from_bytes(b)
}

/// Routers joined by links, exchanging messages in virtual time.
struct Net {
    now: Instant,
    nodes: Vec<Routing>,
    links: Vec<(usize, usize)>,
    inflight: VecDeque<(Instant, usize, NodeId, Message)>,
    /// Links whose messages take 20 ms instead of 1 ms.
    slow: Vec<(usize, usize)>,
}

impl Net {
    fn new(n: usize, level: u8) -> Net {
        let now = Instant::now();
        Net {
            now,
            nodes: (0..n)
                .map(|_| Routing::new(random_id(), level, hop_costs()))
                .collect(),
            links: Vec::new(),
            inflight: VecDeque::new(),
            slow: Vec::new(),
        }
    }

    fn id(&self, i: usize) -> NodeId {
        *self.nodes[i].local()
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.local() == id)
    }

    fn link(&mut self, a: usize, b: usize) {
        let (ia, ib) = (self.id(a), self.id(b));
        let now = self.now;
        self.nodes[a].handle_link_up(now, ib, 1);
        self.nodes[b].handle_link_up(now, ia, 1);
        self.links.push((a, b));
    }

    fn cut(&mut self, a: usize, b: usize) {
        let (ia, ib) = (self.id(a), self.id(b));
        let now = self.now;
        self.nodes[a].handle_link_down(now, ib);
        self.nodes[b].handle_link_down(now, ia);
        self.links.retain(|l| *l != (a, b) && *l != (b, a));
    }

    /// Runs for `span` of virtual time, in 1 ms steps.
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            for i in 0..self.nodes.len() {
                let from = self.id(i);
                while let Some(t) = self.nodes[i].poll_transmit() {
                    if let Some(j) = self.index(&t.to) {
                        let linked = self.links.iter().any(|l| *l == (i, j) || *l == (j, i));
                        if linked {
                            let slow = self.slow.iter().any(|l| *l == (i, j) || *l == (j, i));
                            let delay = Duration::from_millis(if slow { 20 } else { 1 });
                            self.inflight
                                .push_back((self.now + delay, j, from, t.message));
                        }
                    }
                }
            }
            self.now += Duration::from_millis(1);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = self.inflight.drain(..).partition(|m| m.0 <= now);
            self.inflight.extend(later);
            for (_, j, from, message) in due {
                self.nodes[j].handle_message(now, from, &message);
            }
            for node in &mut self.nodes {
                if node.poll_timeout().is_some_and(|t| t <= self.now) {
                    node.handle_timeout(self.now);
                }
            }
        }
    }

    /// Walks a packet from `s` to `d` as the data plane would: by `d`'s
    /// route where known, else toward `d`'s nearest beacon. Hops, or `None`
    /// if it is dropped or loops past 64 hops.
    fn walk(&self, s: usize, d: usize) -> Option<usize> {
        let dst = self.id(d);
        let via = self.nodes[d].nearest_beacon();
        let mut at = s;
        for hops in 0..64 {
            if at == d {
                return Some(hops);
            }
            let node = &self.nodes[at];
            let next = match node.next_hop(&dst) {
                NextHop::Neighbor(n) => n,
                NextHop::Local => return Some(hops),
                NextHop::Unknown => match via.map(|v| node.next_hop(&v)) {
                    Some(NextHop::Neighbor(n)) => n,
                    _ => return None,
                },
            };
            at = self.index(&next)?;
        }
        None
    }
}

#[test]
fn chain_of_five_delivers_both_ways_at_every_level() {
    for level in [0, 1, 2, 8] {
        let mut net = Net::new(5, level);
        for i in 0..4 {
            net.link(i, i + 1);
        }
        // Long enough for a chain without a beacon to stop waiting for one.
        net.run(RoutingConfig::default().startup_wait + Duration::from_millis(200));
        for s in 0..5 {
            for d in 0..5 {
                assert_eq!(
                    net.walk(s, d),
                    Some(s.abs_diff(d)),
                    "level {level}: {s} -> {d} not on the shortest path"
                );
            }
        }
    }
}

#[test]
fn ring_reroutes_after_a_cut_without_loops() {
    let mut net = Net::new(8, 0);
    for i in 0..8 {
        net.link(i, (i + 1) % 8);
    }
    net.run(Duration::from_millis(200));
    assert_eq!(net.walk(0, 1), Some(1));
    net.cut(0, 1);
    // Loop-free at every step of reconvergence: a walk either arrives or
    // is dropped, never runs out of hops.
    for _ in 0..50 {
        net.run(Duration::from_millis(1));
        for s in 0..8 {
            for d in 0..8 {
                if let Some(h) = net.walk(s, d) {
                    assert!(h < 8, "{s} -> {d} took {h} hops");
                }
            }
        }
    }
    net.run(Duration::from_millis(100));
    assert_eq!(net.walk(0, 1), Some(7));
    assert_eq!(net.walk(1, 0), Some(7));
}

#[test]
fn a_leaving_router_is_routed_around_before_its_links_go() {
    let mut net = Net::new(6, 0);
    for i in 0..6 {
        net.link(i, (i + 1) % 6);
    }
    net.run(Duration::from_millis(300));
    assert_eq!(net.walk(0, 2), Some(2), "0 -> 2 goes through 1");
    net.nodes[1].leave();
    // Its links stay up (the session layer has not noticed); 100 ms later
    // every pair not involving it is routed around it.
    net.run(Duration::from_millis(100));
    let one = net.id(1);
    for s in [0, 2, 3, 4, 5] {
        for d in [0, 2, 3, 4, 5] {
            let hops = net.walk(s, d).unwrap_or_else(|| panic!("{s} -> {d} lost"));
            assert!(hops < 6, "{s} -> {d}: {hops} hops");
        }
        assert_eq!(
            net.nodes[s].next_hop(&one),
            NextHop::Unknown,
            "{s} still routes to 1"
        );
    }
    assert_eq!(net.walk(0, 2), Some(4), "0 -> 2 goes the other way round");
}

#[test]
fn routes_expire_when_a_neighbor_stops_announcing() {
    let mut net = Net::new(2, 0);
    net.link(0, 1);
    net.run(Duration::from_millis(100));
    let one = net.id(1);
    assert!(matches!(net.nodes[0].next_hop(&one), NextHop::Neighbor(_)));
    // Node 1 goes silent without a link-down: the hold time expires it.
    net.links.clear();
    net.run(RoutingConfig::default().hold_time + Duration::from_millis(10));
    assert_eq!(net.nodes[0].next_hop(&one), NextHop::Unknown);
}

/// 0 - 1 - 3 is two hops with a slow first link (20 ms each way);
/// 0 - 2 - 4 - 3 is three fast hops (1 ms).
fn slow_square(rtt_costs: bool) -> Net {
    let mut net = Net::new(5, 0);
    if rtt_costs {
        for node in &mut net.nodes {
            *node = Routing::new(random_id(), 0, RoutingConfig::default());
        }
    }
    for (a, b) in [(0, 1), (1, 3), (0, 2), (2, 4), (4, 3)] {
        net.link(a, b);
    }
    net.slow.push((0, 1));
    net.run(Duration::from_millis(3000));
    net
}

#[test]
fn measured_round_trips_steer_routes_off_slow_links() {
    // By hops: the two-hop path over the slow link.
    let net = slow_square(false);
    assert_eq!(net.walk(0, 3), Some(2));
    assert_eq!(
        net.nodes[0].rtt(&net.id(1)),
        None,
        "no HELLOs without RTT costs"
    );
    // By measured round trips: the three fast hops.
    let net = slow_square(true);
    let (one, two) = (net.id(1), net.id(2));
    let rtt = net.nodes[0].rtt(&one).expect("RTT to 1 measured");
    assert!(rtt >= Duration::from_millis(40), "{rtt:?}");
    assert!(net.nodes[0].rtt(&two).expect("RTT to 2") < Duration::from_millis(5));
    assert_eq!(net.walk(0, 3), Some(3), "the fast three-hop path");
    // Both ends of every link use the same cost (the lower ID sets it).
    for &(a, b) in &net.links {
        let (ia, ib) = (net.id(a), net.id(b));
        assert_eq!(
            net.nodes[a].neighbors.get(&ib),
            net.nodes[b].neighbors.get(&ia),
            "link {a}-{b}"
        );
    }
    assert!(
        net.nodes[0].neighbors[&one] > net.nodes[0].neighbors[&two],
        "the slow link costs more"
    );
    assert_eq!(net.nodes[0].next_hop(&net.id(3)), NextHop::Neighbor(two));
}

#[test]
fn seqno_arithmetic_wraps() {
    assert!(seqno_newer(1, 0));
    assert!(seqno_newer(0, 0xffff));
    assert!(!seqno_newer(0, 1));
    assert!(!seqno_newer(5, 5));
}

#[test]
fn level_gives_about_sqrt_n_beacons() {
    assert_eq!(level_for(1), 0);
    assert_eq!(level_for(4), 1);
    assert_eq!(level_for(1000), 4);
    assert_eq!(level_for(100_000), 8);
    let beacons = (0..4096)
        .filter(|_| beacon_level_of(&random_id()) >= level_for(4096))
        .count();
    // 4096 / 2^6 = 64 expected; 6 sigma either side.
    assert!((16..=112).contains(&beacons), "{beacons} beacons");
}

/// A random connected graph of `n` nodes: a random tree plus random
/// edges, no node above degree 4.
fn random_graph(net: &mut Net, n: usize) {
    let mut bytes = vec![0u8; n * 8];
    getrandom::getrandom(&mut bytes).expect("getrandom");
    let mut words = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
    let mut degree = vec![0usize; n];
    for i in 1..n {
        // Attach to a random earlier node with room (node 0 always has).
        let mut j = (words.next().unwrap_or(0) % i as u64) as usize;
        while degree[j] >= 4 {
            j = (j + 1) % i;
        }
        net.link(i, j);
        degree[i] += 1;
        degree[j] += 1;
    }
    for w in words.take(n / 2) {
        let (a, b) = ((w % n as u64) as usize, ((w >> 32) % n as u64) as usize);
        let linked = net.links.iter().any(|l| *l == (a, b) || *l == (b, a));
        if a != b && !linked && degree[a] < 4 && degree[b] < 4 {
            net.link(a, b);
            degree[a] += 1;
            degree[b] += 1;
        }
    }
}

impl Net {
    /// Walks a packet from `s` to `d` as a source would send it: by `d`'s
    /// route, else with the beacon `s` learned from the location service
    /// in the packet. Hops, or `None`.
    fn walk_located(&self, s: usize, d: usize) -> Option<usize> {
        let dst = self.id(d);
        let via = self.nodes[s].location_of(&dst);
        let mut at = s;
        for hops in 0..64 {
            if at == d {
                return Some(hops);
            }
            match self.nodes[at].next_hop_via(&dst, via.as_ref()) {
                NextHop::Neighbor(n) => at = self.index(&n)?,
                NextHop::Local => return Some(hops),
                NextHop::Unknown => return None,
            }
        }
        None
    }
}

#[test]
fn sources_find_destinations_outside_their_cluster_through_the_location_service() {
    let n = 60;
    let mut net = Net::new(n, 2);
    random_graph(&mut net, n);
    // Converge, then let every node register with its homes.
    net.run(Duration::from_secs(5));
    let mut via_pairs = 0;
    let mut snaps = std::collections::HashMap::new();
    for s in 0..n {
        for d in 0..n {
            let now = net.now;
            let dst = net.id(d);
            let snap: Vec<_> = net.nodes[s]
                .homes_of(&dst)
                .iter()
                .map(|h| net.index(h).map(|i| net.nodes[i].registered_via(&dst)))
                .collect();
            if net.nodes[s].locate(now, &dst) != Located::Pending {
                continue;
            }
            snaps.insert((s, d), snap);
            via_pairs += 1;
        }
        // Bounded batches: the lookups in flight stay under the limit.
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(1));
    for s in 0..n {
        for d in 0..n {
            let dst = net.id(d);
            assert!(
                net.walk_located(s, d).is_some(),
                "{s} -> {d} lost: route {:?}, cached beacon {:?}, its nearest beacon {:?}, \
                 at lookup its homes held {:?}",
                net.nodes[s].next_hop(&dst),
                net.nodes[s].location_of(&dst),
                net.nodes[d].nearest_beacon(),
                snaps.get(&(s, d)),
            );
        }
    }
    let found: u64 = net.nodes.iter().map(|r| r.location_counters().found).sum();
    let registered: u64 = net
        .nodes
        .iter()
        .map(|r| r.location_counters().registered)
        .sum();
    // Every pair that had no route was looked up and found.
    assert_eq!(found, via_pairs, "lookups found");
    if via_pairs > 0 {
        assert!(registered > 0);
    }
    let beacons = net.nodes.iter().filter(|r| r.is_beacon()).count();
    println!(
        "{beacons} beacons, {via_pairs} of {} pairs by via, {registered} registrations",
        n * n
    );
}

#[test]
fn a_registration_for_someone_else_and_an_unasked_answer_are_not_believed() {
    let n = 40;
    let mut net = Net::new(n, 2);
    random_graph(&mut net, n);
    net.run(Duration::from_secs(5));
    // A victim that is not a beacon, and a beacon that is not its nearest.
    let Some(v) = (0..n).find(|&i| !net.nodes[i].is_beacon()) else {
        return; // every node a beacon: nothing to locate (full DV)
    };
    let victim = net.id(v);
    let true_via = net.nodes[v].nearest_beacon().expect("a beacon exists");
    let Some(wrong) = (0..n)
        .map(|i| net.id(i))
        .find(|id| *id != true_via && net.nodes[v].route(id).is_some_and(|r| r.2))
    else {
        return; // a single beacon: no false one to claim
    };
    // An attacker elsewhere claims the victim sits behind `wrong`.
    let attacker = (0..n).find(|&i| i != v).expect("n > 1");
    let homes = net.nodes[attacker].homes_of(&victim);
    for home in homes {
        net.nodes[attacker].send_locate(
            Locate {
                kind: LocateKind::Register,
                hops_left: 64,
                nonce: 7,
                target: home,
                target_via: None,
                asker: victim,
                asker_via: Some(wrong),
                subject: victim,
                subject_via: Some(wrong),
            },
            None,
        );
    }
    net.run(Duration::from_secs(1));
    // A source without a route asks, and hears the truth.
    let Some(s) = (0..n).find(|&i| net.nodes[i].next_hop(&victim) == NextHop::Unknown) else {
        return; // everyone has a route: nothing to look up
    };
    let now = net.now;
    assert_eq!(net.nodes[s].locate(now, &victim), Located::Pending);
    net.run(Duration::from_secs(1));
    assert_eq!(net.nodes[s].location_of(&victim), Some(true_via));
    // An answer nobody asked for is dropped.
    let stranger = random_id();
    let before = net.nodes[s].location_counters().dropped;
    let now = net.now;
    let from = net.nodes[s]
        .neighbors
        .keys()
        .next()
        .copied()
        .expect("linked");
    let me = net.id(s);
    net.nodes[s].handle_message(
        now,
        from,
        &Message::Locate(Locate {
            kind: LocateKind::Answer,
            hops_left: 64,
            nonce: 1,
            target: me,
            target_via: None,
            asker: from,
            asker_via: None,
            subject: stranger,
            subject_via: Some(wrong),
        }),
    );
    assert_eq!(net.nodes[s].location_of(&stranger), None);
    assert_eq!(net.nodes[s].location_counters().dropped, before + 1);
}

#[test]
fn a_dead_beacon_is_forgotten_and_the_destination_found_again() {
    let n = 60;
    let mut net = Net::new(n, 2);
    random_graph(&mut net, n);
    net.run(Duration::from_secs(5));
    // A pair without a route whose answer is a beacon other than the two.
    let mut found = None;
    'pairs: for s in 0..n {
        for d in 0..n {
            let now = net.now;
            let dst = net.id(d);
            if s == d || net.nodes[s].locate(now, &dst) != Located::Pending {
                continue;
            }
            net.run(Duration::from_millis(300));
            if let Some(via) = net.nodes[s].location_of(&dst) {
                let v = net.index(&via).expect("a node");
                if v != s && v != d {
                    found = Some((s, d, v));
                    break 'pairs;
                }
            }
        }
    }
    let Some((s, d, v)) = found else {
        return; // no such pair in this draw (rare): nothing to kill
    };
    // The beacon dies: every link of it goes.
    let links: Vec<(usize, usize)> = net
        .links
        .iter()
        .copied()
        .filter(|&(a, b)| a == v || b == v)
        .collect();
    for (a, b) in links {
        net.cut(a, b);
    }
    net.run(Duration::from_secs(2));
    let dst = net.id(d);
    assert_eq!(
        net.nodes[s].location_of(&dst),
        None,
        "the answer naming the dead beacon is dropped"
    );
    if net.nodes[s].next_hop(&dst) != NextHop::Unknown || net.nodes[d].nearest_beacon().is_none() {
        return; // now in the cluster, or no beacon left on its side
    }
    let now = net.now;
    let located = net.nodes[s].locate(now, &dst);
    net.run(Duration::from_secs(1));
    let via = net.nodes[s].location_of(&dst);
    if net.walk(s, d).is_none() {
        return; // the death cut them apart
    }
    assert_eq!(located, Located::Pending);
    assert!(via.is_some_and(|b| b != net.id(v)), "a new beacon: {via:?}");
    assert!(
        net.walk_located(s, d).is_some(),
        "{s} -> {d} delivers again"
    );
}

#[test]
fn a_neighbor_at_another_level_is_reported() {
    let mut net = Net::new(3, 2);
    net.nodes[2] = Routing::new(random_id(), 3, hop_costs());
    net.link(0, 1);
    net.link(1, 2);
    net.run(Duration::from_millis(200));
    assert_eq!(net.nodes[0].counters().level_mismatch, 0, "same level");
    assert_eq!(net.nodes[0].level_mismatch(), None);
    assert!(net.nodes[1].counters().level_mismatch > 0);
    assert_eq!(net.nodes[1].level_mismatch(), Some((net.id(2), 3)));
    assert_eq!(net.nodes[2].level_mismatch(), Some((net.id(1), 2)));
}
