//! Compact routing in namespaces: a random mesh of 20 routers with random
//! keys at beacon level 2 (about one router in four a beacon), where a
//! router has routes only to the beacons and its cluster. Every ordered
//! pair must exchange packets; the pairs without a route go by the
//! destination's beacon, which the source learned from the location
//! service (docs/routing.md), and `xorlay route` says so.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::counter;
use common::mesh::{Exchange, PACKETS, ROUNDS_MAX, all_pairs, bind_apps, check_clean, names};
use xorlay::core::routing::beacon_level_of;
use xorlay_bench::lab::{Lab, LabOptions, MESH_DEGREE_DEFAULT, Topology};

/// Routers besides gen and sink: 20 nodes.
const ROUTERS: usize = 18;
/// About one router in 2^LEVEL is a beacon.
const LEVEL: u8 = 2;
/// Bound on the convergence (routes to every beacon and the cluster).
const CONVERGE: Duration = Duration::from_secs(60);
/// Every pair must deliver within this long; the first packets of a pair
/// without a route are dropped while its lookup runs, so rounds repeat.
const DELIVER: Duration = Duration::from_secs(25);
/// How long a round waits for its packets before the next round.
const ROUND_WAIT: Duration = Duration::from_millis(500);

#[test]
fn compact_mesh_delivers_between_all_pairs_through_the_location_service() {
    let mut lab = Lab::new(LabOptions {
        topology: Topology::Mesh {
            degree: MESH_DEGREE_DEFAULT,
        },
        routers: ROUTERS,
        workers: 1,
        beacon_level: LEVEL,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let count = lab.nodes.len();
    let edges = lab.mesh_edges().to_vec();
    let beacons: Vec<&str> = lab
        .nodes
        .iter()
        .filter(|n| beacon_level_of(&n.id()) >= LEVEL)
        .map(|n| n.role.as_str())
        .collect();
    println!(
        "mesh of {count} nodes, {} links: {}; beacons at level {LEVEL}: {}",
        edges.len(),
        lab.mesh_edges_text(),
        beacons.join(" ")
    );
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));
    let started = Instant::now();
    lab.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("converged in {:.2} s", started.elapsed().as_secs_f64());

    let mut apps = bind_apps(&lab);
    let pairs = all_pairs(count, &edges);
    let mut exchange = Exchange::default();
    let took = exchange
        .until_delivered(&lab, &mut apps, &pairs, DELIVER, ROUND_WAIT, ROUNDS_MAX)
        .unwrap_or_else(|missing| {
            for &(s, d) in missing.iter().take(4) {
                walk(&lab, s, d);
            }
            panic!(
                "{} of {} ordered pairs did not deliver {PACKETS} packets in one round \
                 within {DELIVER:?}: {}",
                missing.len(),
                pairs.len(),
                names(&lab, &missing)
            )
        });
    println!(
        "all {} ordered pairs delivered {PACKETS} packets each in {:.2} s ({} rounds)",
        pairs.len(),
        took.as_secs_f64(),
        exchange.rounds
    );
    check_clean(&lab, &apps);

    // The pairs without a route: each source went by the destination's
    // beacon, as `xorlay route` (run as an operator would) tells.
    let bin = xorlay_bench::lab::find_xorlay_bin().expect("xorlay binary");
    let mut by_beacon = 0;
    let mut routes_total = 0;
    for s in 0..count {
        let routes = lab.routes(s).unwrap_or_else(|e| panic!("{e:#}"));
        routes_total += routes.len();
        for (d, node) in lab.nodes.iter().enumerate() {
            if d == s || routes.contains(&node.id()) {
                continue;
            }
            let out = Command::new(&bin)
                .arg("route")
                .arg(node.id().to_string())
                .arg("--socket")
                .arg(lab.admin_socket(s))
                .output()
                .expect("running xorlay route");
            assert!(out.status.success(), "xorlay route: {out:?}");
            let route: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            // Routes move as link costs do: a pair delivered on a route
            // may have lost it since, and its beacon was never asked.
            let Some(beacon) = route["destination_beacon"].as_str() else {
                continue;
            };
            if route["decision"] == "forward" {
                continue; // it gained a route of its own since
            }
            assert!(
                beacon_level_of(&beacon.parse().expect("a node ID")) >= LEVEL,
                "{route}"
            );
            assert_eq!(route["decision"], "forward_via", "{route}");
            by_beacon += 1;
        }
    }
    let found: u64 = (0..count)
        .map(|i| {
            let stats = lab.stats(i).unwrap_or_else(|e| panic!("{e:#}"));
            counter(&stats, "/control/location/found")
        })
        .sum();
    println!(
        "routes per router: mean {:.1} of {}; {by_beacon} ordered pairs went by the \
         destination's beacon; {found} lookups answered",
        routes_total as f64 / count as f64,
        count - 1
    );
    assert!(
        found as usize >= by_beacon.min(1),
        "pairs went by beacon without any lookup answered"
    );
    let unrouted = count * (count - 1) - routes_total;
    assert!(
        unrouted == 0 || by_beacon > 0,
        "{unrouted} ordered pairs have no route, and none goes by a beacon"
    );
    common::stop_all_cleanly(&mut lab);
}

/// Follows `xorlay route` hop by hop from `s` toward `d` (by the beacon
/// the source knows where a relay has no route), printing each step.
fn walk(lab: &Lab, s: usize, d: usize) {
    let bin = xorlay_bench::lab::find_xorlay_bin().expect("xorlay binary");
    let ask = |at: usize, id: &str| -> serde_json::Value {
        let out = Command::new(&bin)
            .args(["route", id, "--socket"])
            .arg(lab.admin_socket(at))
            .output()
            .expect("xorlay route");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let dst = lab.nodes[d].id().to_string();
    let first = ask(s, &dst);
    let via = first["destination_beacon"].as_str().map(str::to_string);
    let mut line = format!(
        "{} -> {} (via {:?}):",
        lab.nodes[s].role,
        lab.nodes[d].role,
        via.as_deref().map(|v| &v[..8])
    );
    let mut at = s;
    for _ in 0..20 {
        let mut r = ask(at, &dst);
        if r["decision"] == "no_route"
            && let Some(v) = &via
        {
            r = ask(at, v);
            line += " [by via]";
        }
        line += &format!(" {}:{}", lab.nodes[at].role, r["decision"]);
        let Some(next) = r["next_hop"].as_str() else {
            break;
        };
        match lab.nodes.iter().position(|n| n.id().to_string() == next) {
            Some(n) if n != d => at = n,
            Some(_) => {
                line += " -> arrives";
                break;
            }
            None => break,
        }
    }
    println!("{line}");
    // The destination's view: its nearest beacon and its route to the via.
    let me = ask(d, &dst);
    if let Some(v) = &via {
        let to_via = ask(d, v);
        let via_index = lab.nodes.iter().position(|n| n.id().to_string() == *v);
        let back = via_index.map(|i| ask(i, &dst));
        let stats = lab.stats(d).unwrap_or_default();
        println!(
            "  {}: nearest beacon {}, radius-ish metric to via {}, location {}; via's route back: {}",
            lab.nodes[d].role,
            &me["nearest_beacon"].as_str().unwrap_or("-")[..8],
            to_via["routing_state"],
            stats["control"]["location"],
            back.map(|b| b["routing_state"].to_string())
                .unwrap_or_default()
        );
    }
}
