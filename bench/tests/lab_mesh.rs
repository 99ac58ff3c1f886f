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

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::mesh::{
    Exchange, PACKETS, ROUNDS_MAX, all_pairs, bind_apps, check_clean, connected_pairs, names,
    shuffle,
};
use xorlay_bench::lab::Lab;
use xorlay_bench::lab::{LabOptions, MESH_DEGREE_DEFAULT, Topology};

/// Routers besides gen and sink: 20 nodes.
const ROUTERS: usize = 18;
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

    let mut apps = bind_apps(&lab);

    // Every ordered pair.
    let all: BTreeSet<usize> = (0..count).collect();
    let pairs = all_pairs(count, &edges);
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
