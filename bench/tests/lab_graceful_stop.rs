//! A router stopped with SIGTERM tells its neighbors to route around it
//! before it leaves, so traffic through it moves to another router within
//! 0.5 s, well before the 1 s dead-peer timeout would have told them.
//!
//! The lab's two-site topology with random keys: gen on site A, the sink on
//! site B, four routers on both. Steady traffic from gen to the sink; the
//! router carrying it gets SIGTERM.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xorlay_bench::lab::{Lab, Topology};
use xorlay_bench::wait_until;

const ROUTERS: usize = 4;
const PACKETS_MAX: u64 = 100_000;
const RATE_PPS: u64 = 4_000;
/// Traffic must flow again within this long of the SIGTERM.
const REROUTE: Duration = Duration::from_millis(500);

#[test]
fn sigterm_reroutes_within_half_a_second() {
    let mut lab = common::converged(Topology::Sites, ROUTERS, Duration::from_secs(30));

    let common::Steady {
        sink,
        stop,
        generator,
    } = common::steady_gen_to_sink(&lab, PACKETS_MAX, RATE_PPS, 2_000);
    let forwarded = |lab: &Lab| -> Vec<u64> {
        (0..lab.nodes.len())
            .map(|i| lab.stats(i).map(|s| common::forwarded(&s)).unwrap_or(0))
            .collect()
    };
    let before = forwarded(&lab);
    wait_until(Duration::from_secs(2), || sink.valid() >= 4_000);
    let after = forwarded(&lab);
    let (carrier, carried) = (1..lab.sink_index())
        .map(|i| (i, after[i].saturating_sub(before[i])))
        .max_by_key(|(_, n)| *n)
        .expect("routers exist");
    assert!(
        carried > 0,
        "no middle router forwarded: {before:?} -> {after:?}"
    );
    let role = lab.nodes[carrier].role.clone();

    let at_stop = sink.valid();
    let stopped = Instant::now();
    let status = lab
        .stop_node(carrier)
        .unwrap_or_else(|e| panic!("stopping {role}: {e:#}"));
    assert!(status.success(), "{role} exited with {status}");
    // Flowing again: 100 more packets (25 ms of traffic) past what arrived
    // when the signal was sent.
    let resumed = wait_until(REROUTE.saturating_sub(stopped.elapsed()), || {
        sink.valid() >= at_stop + 100
    });
    let took = stopped.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = generator.join().expect("generator").expect("generator ran");
    let report = sink.finish().expect("sink report");
    println!(
        "{role} carried {carried}; SIGTERM; {} more arrived, check after {:.3} s; sent {} delivered {}",
        report.valid.saturating_sub(at_stop),
        took.as_secs_f64(),
        sent.sent,
        report.valid
    );
    assert!(
        resumed,
        "traffic did not resume within {REROUTE:?} of stopping {role} with SIGTERM: {at_stop} \
         arrived before, {} in all",
        report.valid
    );
    let log = std::fs::read_to_string(lab.log_path(carrier)).unwrap_or_default();
    assert!(!log.contains("panicked"), "{role} log:\n{log}");
    common::stop_all_cleanly(&mut lab);
}
