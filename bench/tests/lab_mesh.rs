//! A random mesh of 20 routers with random keys: every node reaches every
//! other, and after 30% of the routers are killed (SIGKILL, chosen at
//! random) every pair still connected in what is left of the graph reaches
//! each other again within 10 s.
//!
//! The lab's mesh topology: a random connected graph (degree 2 to 4, drawn
//! per run and printed), one veth per link, link peers configured as known
//! peers, every node with a local application that both sends and receives.
//! Each ordered pair exchanges `PACKETS` packets, and the receiving
//! application counts them per source.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use xorlay_bench::lab::{Lab, LabOptions, MESH_DEGREE_DEFAULT, Topology};
use xorlay_bench::traffic::AppSocket;

/// Routers besides gen and sink: 20 nodes.
const ROUTERS: usize = 18;
/// Packets per ordered pair and round.
const PACKETS: u64 = 5;
/// Rounds at most (sequence numbers are round * PACKETS + k).
const ROUNDS_MAX: u64 = 100;
/// Share of the nodes killed, percent.
const KILLED_PERCENT: usize = 30;
/// Bound on the first convergence.
const CONVERGE: Duration = Duration::from_secs(60);
/// The first convergence's usual time (with room): past it, the test says
/// what is still missing.
const CONVERGE_USUAL: Duration = Duration::from_secs(5);
/// Every pair must deliver its first round (no retry) within this long.
const DELIVER: Duration = Duration::from_secs(10);
/// Every still-connected pair must deliver again within this long of the kill.
const REROUTE: Duration = Duration::from_secs(10);
/// How long a round waits for its packets before the next round.
const ROUND_WAIT: Duration = Duration::from_millis(500);
/// Overlay payload bytes per packet.
const PAYLOAD: usize = 64;

#[test]
fn random_mesh_delivers_between_all_pairs_and_after_kills() {
    let mut lab = Lab::new(LabOptions {
        topology: Topology::Mesh {
            degree: MESH_DEGREE_DEFAULT,
        },
        routers: ROUTERS,
        // 20 routers share 2 CPUs: one worker each.
        workers: 1,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let count = lab.nodes.len();
    let edges = lab.mesh_edges().to_vec();
    println!(
        "mesh of {count} nodes, {} links: {}",
        edges.len(),
        lab.mesh_edges_text()
    );
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));
    let started = Instant::now();
    // Usually about 1 s; say what is still missing if it takes longer.
    if let Err(e) = lab.wait_converged(CONVERGE_USUAL) {
        println!("{e:#}; waiting up to {CONVERGE:?} in all");
    }
    lab.wait_converged(CONVERGE.saturating_sub(started.elapsed()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("converged in {:.2} s", started.elapsed().as_secs_f64());

    let mut apps: Vec<AppSocket> = lab
        .nodes
        .iter()
        .map(|n| {
            AppSocket::bind_in(&n.netns, Lab::app_addr(), n.id(), ROUNDS_MAX * PACKETS)
                .unwrap_or_else(|e| panic!("{} app: {e:#}", n.role))
        })
        .collect();

    // Every ordered pair.
    let all: BTreeSet<usize> = (0..count).collect();
    let pairs = connected_pairs(&all, &edges);
    assert_eq!(pairs.len(), count * (count - 1), "the mesh is connected");
    let mut exchange = Exchange::default();
    let took = exchange
        .until_delivered(&lab, &mut apps, &pairs, DELIVER, DELIVER, 1)
        .unwrap_or_else(|missing| {
            panic!(
                "{} of {} ordered pairs did not deliver {PACKETS} packets (one round, no retry) \
                 within {DELIVER:?}: {}",
                missing.len(),
                pairs.len(),
                names(&lab, &missing)
            )
        });
    println!(
        "all {} ordered pairs delivered {PACKETS} packets each in {:.2} s",
        pairs.len(),
        took.as_secs_f64()
    );
    // Exactly PACKETS from every other node: one round, nothing twice,
    // nothing from anyone else.
    for (dst, app) in apps.iter().enumerate() {
        for (src, node) in lab.nodes.iter().enumerate() {
            let got = app.seen.get(&node.id()).map_or(0, BTreeSet::len);
            let want = if src == dst { 0 } else { PACKETS as usize };
            assert_eq!(
                got, want,
                "{} received {got} packets from {}",
                lab.nodes[dst].role, node.role
            );
        }
        assert_eq!(app.seen.len(), count - 1, "{}", lab.nodes[dst].role);
    }
    check_clean(&lab, &apps);

    // Kill 30% of the routers at random.
    let mut order: Vec<usize> = (0..count).collect();
    shuffle(&mut order);
    let killed: BTreeSet<usize> = order[..count * KILLED_PERCENT / 100]
        .iter()
        .copied()
        .collect();
    let alive: BTreeSet<usize> = all.difference(&killed).copied().collect();
    let pairs = connected_pairs(&alive, &edges);
    println!(
        "killing {}; {} ordered pairs of the {} left are still connected",
        killed
            .iter()
            .map(|&i| lab.nodes[i].role.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        pairs.len(),
        alive.len()
    );
    let kill_at = Instant::now();
    for &i in &killed {
        lab.kill_node(i)
            .unwrap_or_else(|e| panic!("killing {}: {e:#}", lab.nodes[i].role));
    }
    let budget = REROUTE.saturating_sub(kill_at.elapsed());
    let result = exchange.until_delivered(&lab, &mut apps, &pairs, budget, ROUND_WAIT, ROUNDS_MAX);
    let took = kill_at.elapsed();
    match result {
        Ok(_) => println!(
            "all {} still-connected ordered pairs delivered again {:.2} s after the kill ({} rounds)",
            pairs.len(),
            took.as_secs_f64(),
            exchange.rounds
        ),
        Err(missing) => panic!(
            "{} of {} still-connected ordered pairs did not deliver {PACKETS} packets in one round \
             within {REROUTE:?} of the kill: {}",
            missing.len(),
            pairs.len(),
            names(&lab, &missing)
        ),
    }
    check_clean(&lab, &apps);

    common::stop_all_cleanly(&mut lab);
}

/// Rounds of sending: round r sends sequence numbers r * PACKETS .. (r +
/// 1) * PACKETS for each pair still waiting.
#[derive(Default)]
struct Exchange {
    rounds: u64,
}

impl Exchange {
    /// Sends rounds for `pairs` (source, destination), each waiting up to
    /// `round_wait` for its packets, until every pair has had all packets
    /// of one round arrive, or `timeout` passes, or `rounds` rounds were
    /// sent. Returns how long it took, or the pairs that did not deliver.
    fn until_delivered(
        &mut self,
        lab: &Lab,
        apps: &mut [AppSocket],
        pairs: &BTreeSet<(usize, usize)>,
        timeout: Duration,
        round_wait: Duration,
        rounds: u64,
    ) -> Result<Duration, BTreeSet<(usize, usize)>> {
        let start = Instant::now();
        let deadline = start + timeout;
        let last = (self.rounds + rounds).min(ROUNDS_MAX);
        let mut waiting = pairs.clone();
        while !waiting.is_empty() && Instant::now() < deadline && self.rounds < last {
            let seqs = self.rounds * PACKETS..(self.rounds + 1) * PACKETS;
            self.rounds += 1;
            // Each source's packets, one destination after another, with a
            // short pause per source: far below any queue's limit.
            let mut by_src: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &(src, dst) in &waiting {
                by_src.entry(src).or_default().push(dst);
            }
            for (&src, dsts) in &by_src {
                for &dst in dsts {
                    let sent = apps[src].send(
                        &lab.nodes[dst].id(),
                        Lab::router_local_addr(),
                        seqs.clone(),
                        PAYLOAD,
                    );
                    assert_eq!(
                        sent.sent, PACKETS,
                        "{} could not send to its router: {sent:?}",
                        lab.nodes[src].role
                    );
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            // Collect until this round's packets are in or the round's time
            // is up.
            let round_end = (Instant::now() + round_wait).min(deadline);
            loop {
                for app in apps.iter_mut() {
                    app.drain().unwrap_or_else(|e| panic!("{e:#}"));
                }
                waiting.retain(|&(src, dst)| {
                    apps[dst].received(&lab.nodes[src].id(), seqs.clone()) < PACKETS as usize
                });
                if waiting.is_empty() || Instant::now() >= round_end {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if waiting.is_empty() {
            Ok(start.elapsed())
        } else {
            Err(waiting)
        }
    }
}

/// Ordered pairs of distinct nodes of `alive` joined by a path through
/// `alive` over `edges`.
fn connected_pairs(alive: &BTreeSet<usize>, edges: &[(usize, usize)]) -> BTreeSet<(usize, usize)> {
    let mut pairs = BTreeSet::new();
    for &from in alive {
        let mut seen = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for &(a, b) in edges {
                let next = match (a == n, b == n) {
                    (true, _) => b,
                    (_, true) => a,
                    _ => continue,
                };
                if alive.contains(&next) && seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        pairs.extend(
            seen.into_iter()
                .filter(|&to| to != from)
                .map(|to| (from, to)),
        );
    }
    pairs
}

/// Nothing malformed, for someone else, or twice at any application.
fn check_clean(lab: &Lab, apps: &[AppSocket]) {
    for (i, app) in apps.iter().enumerate() {
        assert_eq!(
            (app.duplicates, app.wrong_dst, app.malformed, app.untracked),
            (0, 0, 0, 0),
            "{}: duplicates, wrong destination, malformed, untracked",
            lab.nodes[i].role
        );
    }
}

/// The first 40 of `pairs`, by role.
fn names(lab: &Lab, pairs: &BTreeSet<(usize, usize)>) -> String {
    const SHOWN: usize = 40;
    let mut text = pairs
        .iter()
        .take(SHOWN)
        .map(|&(a, b)| format!("{}->{}", lab.nodes[a].role, lab.nodes[b].role))
        .collect::<Vec<_>>()
        .join(" ");
    if pairs.len() > SHOWN {
        text.push_str(" ...");
    }
    text
}

/// Fisher-Yates with OS randomness.
fn shuffle(items: &mut [usize]) {
    for i in (1..items.len()).rev() {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("OS randomness");
        let j = (u64::from_le_bytes(bytes) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
