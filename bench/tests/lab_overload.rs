//! Load shedding end to end: a relay with the route cache off (every packet
//! for its io_uring workers) offered far more than its workers serve, by
//! the live-frames generator from an authenticated neighbor (the bench
//! endpoint). The workers' sockets overflow, so the router must set a
//! shedding budget in XDP and drop the excess there (`xdp.drop_shed`), keep
//! forwarding, and lift the budget once the load is gone. Behaviour only:
//! no throughput figure is asserted (that is the benchmark's job).

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::counter;
use xorlay_bench::loadgen::{GenSpec, payload_for_frame};
use xorlay_bench::systems::{Env, GenMode, SinkMode, SystemKind, TrafficMode};

#[test]
fn overloaded_workers_shed_in_xdp_and_recover() {
    let env = Env::chain(
        SystemKind::XorlayUring,
        1,
        1,
        "native",
        TrafficMode {
            generator: GenMode::Live,
            sink: SinkMode::Xdp,
            sink_poll: None,
            flows: 1,
        },
    )
    .unwrap_or_else(|e| panic!("setting up the chain: {e:#}"));
    let (payload_len, _) = payload_for_frame(64);
    env.begin_trial(1, 50_000_000).expect("trial");
    let sent = env
        .generate(
            GenSpec {
                src: env.src,
                dst: env.dst,
                payload_len,
                rate_pps: 0, // as fast as the generator goes: far beyond the workers
                duration: Duration::from_secs(2),
                trial: 1,
            },
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap_or_else(|e| panic!("generator: {e:#}"));
    let result = env.end_trial().expect("sink result");
    let stats = env
        .lab
        .stats(1)
        .unwrap_or_else(|e| panic!("r1 stats: {e:#}"));
    let shed = counter(&stats, "/xdp/drop_shed");
    let forwarded = counter(&stats, "/total/forwarded");
    let log = std::fs::read_to_string(env.lab.log_path(1)).unwrap_or_default();
    assert!(
        sent.sent > 10 * forwarded.max(1),
        "the generator did not overload the workers: sent {}, r1 forwarded {forwarded}",
        sent.sent
    );
    assert!(
        shed > 0,
        "no packet was shed in XDP while the workers were overloaded:\n{stats}\n{}",
        env.lab.log_tail(1)
    );
    assert!(
        log.contains("workers overloaded (their sockets drop): shedding in XDP beyond"),
        "r1 did not log the shedding:\n{}",
        env.lab.log_tail(1)
    );
    assert!(
        result.unique > 0 && forwarded > 0,
        "nothing forwarded under overload: {result:?}"
    );
    // The load is gone: the next window without shedding lifts the budget.
    let lifted = xorlay_bench::wait_until(Duration::from_secs(5), || {
        env.lab.stats(1).is_ok_and(|s| {
            s.get("shed_budget_pps")
                .is_some_and(serde_json::Value::is_null)
        })
    });
    assert!(
        lifted,
        "the shedding budget stayed after the load stopped:\n{}",
        env.lab.log_tail(1)
    );
    assert!(
        std::fs::read_to_string(env.lab.log_path(1))
            .unwrap_or_default()
            .contains("load fits the workers again: shedding lifted"),
        "{}",
        env.lab.log_tail(1)
    );
}
