//! A partition heals: the middle link of a chain of 5 routers (random keys)
//! goes down for 40 s (both sides declare each other dead and drop their
//! routes, and every ordinary redial has given up), then comes back; traffic
//! across it must flow again within 10 s of the link coming back.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xorlay_bench::wait_until;

const ROUTERS: usize = 3;
const PACKETS_MAX: u64 = 200_000;
const RATE_PPS: u64 = 2_000;
/// Traffic must flow again within this long of the link coming back.
const HEAL: Duration = Duration::from_secs(10);
/// How long the link stays cut: longer than the redials of an ordinary lost
/// contact last (the dead-peer timeout, then attempts 1, 2, 4, 8 and 16 s
/// apart, the last failing 1.75 s later: about 35 s), so the heal cannot ride
/// on one of those. A deliberate duration, not a wait for something to
/// happen.
const PARTITION: Duration = Duration::from_secs(40);

/// Sets the link between node `i` (its "east") and node `i + 1` (its
/// "west") up or down, on both ends.
fn set_link(lab: &xorlay_bench::lab::Lab, i: usize, up: bool) {
    let state = if up { "up" } else { "down" };
    for (node, iface) in [(i, "east"), (i + 1, "west")] {
        let out = Command::new("ip")
            .args(["-n", &lab.nodes[node].netns, "link", "set", iface, state])
            .output()
            .expect("running ip");
        assert!(out.status.success(), "ip link set {iface} {state}: {out:?}");
    }
}

#[test]
fn traffic_flows_again_within_10_s_of_a_partition_healing() {
    let lab = common::converged_chain(ROUTERS);
    let common::Steady {
        sink,
        stop,
        generator,
    } = common::steady_gen_to_sink(&lab, PACKETS_MAX, RATE_PPS, 1_000);

    // Cut r2 - r3 until gen has no route to the sink any more (the far side
    // was declared dead and its routes withdrawn), then a little longer.
    let middle = 2;
    set_link(&lab, middle, false);
    let cut = Instant::now();
    let sink_id = lab.sink().id();
    let withdrawn = wait_until(Duration::from_secs(10), || {
        lab.routes(0).is_ok_and(|r| !r.contains(&sink_id))
    });
    if !withdrawn {
        stop.store(true, Ordering::Relaxed);
        panic!(
            "gen kept a route to the sink across the cut:\n{}",
            lab.log_tail(0)
        );
    }
    // Both ends of the cut declare each other dead (sessions gone).
    let (left, right) = (lab.nodes[middle].id(), lab.nodes[middle + 1].id());
    let apart = wait_until(Duration::from_secs(10), || {
        lab.neighbors(middle).is_ok_and(|n| !n.contains(&right))
            && lab.neighbors(middle + 1).is_ok_and(|n| !n.contains(&left))
    });
    if !apart {
        stop.store(true, Ordering::Relaxed);
        panic!(
            "the cut did not end the r2 - r3 session:\n{}",
            lab.log_tail(middle)
        );
    }
    std::thread::sleep(PARTITION.saturating_sub(cut.elapsed()));
    let at_heal = sink.valid();
    set_link(&lab, middle, true);
    let healed = Instant::now();
    let resumed = wait_until(HEAL, || sink.valid() >= at_heal + 500);
    let took = healed.elapsed();
    stop.store(true, Ordering::Relaxed);
    generator.join().expect("generator").expect("generator ran");
    let report = sink.finish().expect("sink report");
    println!(
        "partition healed; traffic flowing again after {:.2} s ({} arrived in all)",
        took.as_secs_f64(),
        report.valid
    );
    assert!(
        resumed,
        "traffic did not flow again within {HEAL:?} of the link coming back: {at_heal} before, \
         {} in all\n{}",
        report.valid,
        lab.log_tail(middle)
    );
}
