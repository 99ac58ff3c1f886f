//! A link that loses everything for a few seconds (an overloaded NIC drops
//! keepalives like any other packet) kills the sessions across it; once it
//! carries packets again the routers redial their lost contacts and traffic
//! flows again within seconds, not at the next 30-second re-bootstrap.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay_bench::lab::Lab;
use xorlay_bench::traffic::Sink;
use xorlay_bench::{netns, wait_until};

mod common;

use common::counter;

const PACKETS: u64 = 1_000;

#[test]
fn sessions_lost_to_a_dead_link_come_back_when_it_does() {
    let lab = common::converged_chain(3);
    // The link r1 - r2 in the middle of gen - r1 - r2 - r3 - sink: neither
    // router's table empties when it dies (r1 keeps gen, r2 keeps r3), so
    // the re-bootstrap an empty table triggers at once does not apply.
    let (r1, r2) = (1, 2);
    let (r1_id, r2_id) = (lab.nodes[r1].id(), lab.nodes[r2].id());
    let r1_ns = lab.nodes[r1].netns.clone();
    let link = |state: &str| {
        netns::ip(&["-n", &r1_ns, "link", "set", "east", state])
            .unwrap_or_else(|e| panic!("ip link set east {state} in r1: {e:#}"));
    };

    // The link goes dead: both ends declare the session dead
    // (`control.dead_after_ms`, 1 s) and drop each other as next hops.
    link("down");
    let lost = wait_until(Duration::from_secs(5), || {
        lab.neighbors(r1).is_ok_and(|n| !n.contains(&r2_id))
            && lab.neighbors(r2).is_ok_and(|n| !n.contains(&r1_id))
    });
    link("up");
    assert!(lost, "the sessions across the dead link did not time out");

    // Back within a few redials (1 s, then 2 s, ...); the periodic
    // re-bootstrap alone would take up to 30 s.
    let back = wait_until(Duration::from_secs(8), || {
        lab.neighbors(r1).is_ok_and(|n| n.contains(&r2_id))
            && lab.neighbors(r2).is_ok_and(|n| n.contains(&r1_id))
    });
    let redials = |i: usize| {
        let stats = lab.stats(i).expect("stats");
        (
            counter(&stats, "/control/kademlia/redials"),
            counter(&stats, "/control/kademlia/redials_recovered"),
        )
    };
    let (r1_redials, r2_redials) = (redials(r1), redials(r2));
    assert!(
        back,
        "r1 and r2 did not take each other back as next hops within 8 s of the link coming up (redials, recovered: r1 {r1_redials:?}, r2 {r2_redials:?})"
    );
    assert!(
        r1_redials.1 + r2_redials.1 >= 1,
        "no lost contact was counted as recovered: r1 {r1_redials:?}, r2 {r2_redials:?}"
    );

    // And data crosses the chain again, once the routes are back too (the
    // next hops come first; the routes follow within milliseconds).
    lab.wait_converged(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("routes after the recovery: {e:#}"));
    let sink = Sink::start(&lab.sink().netns, Lab::app_addr(), lab.sink().id(), PACKETS)
        .unwrap_or_else(|e| panic!("sink: {e:#}"));
    let sent = common::send_from_gen(
        &lab,
        common::gen_to_sink(&lab, PACKETS, 5_000),
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .expect("generator")
    .expect("generator ran");
    let delivered = wait_until(Duration::from_secs(5), || sink.valid() >= sent.sent);
    let report = sink.finish().expect("sink report");
    assert!(
        delivered,
        "after the recovery {} of {} packets arrived",
        report.valid, sent.sent
    );
}
