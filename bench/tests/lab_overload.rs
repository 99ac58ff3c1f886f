//! Load shedding end to end: a relay with the route cache off (every packet
//! for its io_uring workers) offered far more than its workers serve, by
//! the frame generator (live frames where the machine allows them, the
//! AF_PACKET ring elsewhere) from an authenticated neighbor (the bench
//! endpoint). XDP must pass the worker no more than its window of unread
//! packets and drop the excess itself (`xdp.drop_shed`), so the kernel
//! drops (almost) nothing at the socket queue; the relay keeps forwarding,
//! and once the load is gone the worker's credits are all back and a paced
//! stream crosses whole. Behaviour only: no throughput figure is asserted
//! (that is the benchmark's job).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::counter;
use xorlay_bench::loadgen::{GenSpec, payload_for_frame};
use xorlay_bench::systems::{Env, GenMode, SinkMode, SystemKind, TrafficMode};

#[test]
fn an_overloaded_worker_sheds_in_xdp_and_recovers() {
    overload(1, 1);
}

/// Two workers, 64 overlay flows spread over them by the steering program:
/// XDP charges each packet to the worker the steering program picks, so
/// neither socket overflows.
#[test]
fn two_steered_workers_each_shed_by_their_own_credits() {
    overload(2, 64);
}

/// One lab at a time: each trial needs both CPUs to itself.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn overload(workers: usize, flows: u32) {
    let _lab = ONE_LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let env = Env::chain(
        SystemKind::XorlayUring,
        1,
        workers,
        "native",
        TrafficMode {
            generator: GenMode::Frames,
            sink: SinkMode::Xdp,
            sink_poll: None,
            flows,
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
    eprintln!("after the overload: {}", env.session_summary());
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
        shed > 0,
        "no packet was shed in XDP (sent {}, r1 forwarded {forwarded}): the workers were not \
         overloaded, or XDP did not shed\n{stats}\n{}",
        sent.sent,
        env.lab.log_tail(1)
    );
    assert!(
        lost * 100 <= passed,
        "the kernel dropped {lost} of the {passed} packets XDP passed (socket queue full): \
         the worker's window did not hold\n{stats}"
    );
    for worker in 0..workers {
        let window = counter(&stats, &format!("/shed_credits/{worker}/window"));
        assert!(window > 0, "worker {worker} set no window:\n{stats}");
        let read = counter(&stats, &format!("/workers/{worker}/rx_packets"));
        assert!(read > 0, "worker {worker} read nothing:\n{stats}");
    }
    assert!(
        result.unique > 0 && forwarded > 0,
        "nothing forwarded under overload: {result:?}"
    );
    // The load is gone: the worker reads what it was given, its credits
    // come back, and a paced stream crosses whole.
    let settled = xorlay_bench::wait_until(Duration::from_secs(5), || {
        env.lab.stats(1).is_ok_and(|s| {
            (0..workers).all(|w| {
                s.pointer(&format!("/shed_credits/{w}/unread"))
                    .and_then(serde_json::Value::as_i64)
                    .is_some_and(|unread| unread <= 0)
            })
        })
    });
    assert!(
        settled,
        "the worker's credits did not come back after the load:\n{}",
        env.lab.stats(1).map(|s| s.to_string()).unwrap_or_default()
    );
    // Each worker was charged for what it read, and only that: XDP picked
    // every packet's worker as the steering program did.
    let stats = env
        .lab
        .stats(1)
        .unwrap_or_else(|e| panic!("r1 stats: {e:#}"));
    for w in 0..workers {
        let admitted = counter(&stats, &format!("/shed_credits/{w}/admitted"));
        let read = counter(&stats, &format!("/workers/{w}/rx_packets"))
            - counter(&stats, &format!("/workers/{w}/control_rx"))
            - counter(&stats, &format!("/workers/{w}/app_rx"));
        assert!(
            read > 0 && admitted.abs_diff(read) * 100 <= read,
            "worker {w}: XDP charged it {admitted} packets, it read {read}\n{stats}"
        );
    }
    // Sessions may have timed out during the overload: the saturated veth
    // rings of the lab drop control packets with the data, before any XDP
    // program sees them. The router must have them back within seconds.
    let sessions = xorlay_bench::wait_until(Duration::from_secs(5), || env.sessions_up());
    assert!(
        sessions,
        "the sessions did not come back after the overload: {}\n{}",
        env.session_summary(),
        env.lab.log_tail(1)
    );
    let (sent, result) = send(2, 20_000, Duration::from_millis(500));
    assert!(
        result.unique * 100 >= sent.sent * 99,
        "after the overload a paced stream did not cross whole: sent {}, {result:?}\n{}",
        sent.sent,
        env.lab.log_tail(1)
    );
}
