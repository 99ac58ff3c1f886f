//! Load shedding end to end: a relay with the route cache off (every packet
//! for its io_uring workers) offered far more than its workers serve, by
//! the live-frames generator from an authenticated neighbor (the bench
//! endpoint). XDP must pass the worker no more than its window of unread
//! packets and drop the excess itself (`xdp.drop_shed`), so the kernel
//! drops (almost) nothing at the socket queue; the relay keeps forwarding,
//! and once the load is gone the worker's credits are all back and a paced
//! stream crosses whole. Behaviour only: no throughput figure is asserted
//! (that is the benchmark's job).

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
    let send = |trial: u32, rate_pps: u64, duration: Duration| {
        env.begin_trial(trial, 50_000_000).expect("trial");
        let sent = env
            .generate(
                GenSpec {
                    src: env.src,
                    dst: env.dst,
                    payload_len,
                    rate_pps,
                    duration,
                    trial,
                },
                Arc::new(AtomicBool::new(false)),
            )
            .unwrap_or_else(|e| panic!("generator: {e:#}"));
        (sent, env.end_trial().expect("sink result"))
    };
    // As fast as the generator goes: far beyond the workers.
    let (sent, result) = send(1, 0, Duration::from_secs(2));
    let stats = env
        .lab
        .stats(1)
        .unwrap_or_else(|e| panic!("r1 stats: {e:#}"));
    let shed = counter(&stats, "/xdp/drop_shed");
    let forwarded = counter(&stats, "/total/forwarded");
    let passed = counter(&stats, "/xdp/pass_overlay")
        + counter(&stats, "/xdp/pass_cache_miss")
        + counter(&stats, "/xdp/pass_unresolved");
    let lost = passed.saturating_sub(counter(&stats, "/total/rx_packets"));
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
        lost * 100 <= passed,
        "the kernel dropped {lost} of the {passed} packets XDP passed (socket queue full): \
         the worker's window did not hold\n{stats}"
    );
    let window = counter(&stats, "/shed_credits/0/window");
    assert!(window > 0, "the worker set no window:\n{stats}");
    assert!(
        result.unique > 0 && forwarded > 0,
        "nothing forwarded under overload: {result:?}"
    );
    // The load is gone: the worker reads what it was given, its credits
    // come back, and a paced stream crosses whole.
    let settled = xorlay_bench::wait_until(Duration::from_secs(5), || {
        env.lab.stats(1).is_ok_and(|s| {
            s.pointer("/shed_credits/0/unread")
                .and_then(serde_json::Value::as_i64)
                .is_some_and(|unread| unread <= 0)
        })
    });
    assert!(
        settled,
        "the worker's credits did not come back after the load:\n{}",
        env.lab.stats(1).map(|s| s.to_string()).unwrap_or_default()
    );
    let (sent, result) = send(2, 20_000, Duration::from_millis(500));
    assert!(
        result.unique * 100 >= sent.sent * 99,
        "after the overload a paced stream did not cross whole: sent {}, {result:?}\n{}",
        sent.sent,
        env.lab.log_tail(1)
    );
}
