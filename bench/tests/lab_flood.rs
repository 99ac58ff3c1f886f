//! A flood of malformed and non-neighbor packets at many times the
//! legitimate rate, into a real router with XDP: the flood is dropped in
//! the kernel (counted by reason, never reaching the workers) while the
//! legitimate traffic keeps flowing through it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xorlay::core::NodeId;
use xorlay::wire::overlay::{HEADER_LEN, golden};
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};
use xorlay_bench::lab::Lab;
use xorlay_bench::traffic::Sink;
use xorlay_bench::{netns, wait_until};

mod common;

use common::counter;

const LEGIT_PPS: u64 = 5_000;
const LEGIT_PACKETS: u64 = 10_000;
/// The flood stops after this long or this many packets, whichever first.
const FLOOD_SECS: u64 = 3;
const FLOOD_MAX: u64 = 3_000_000;

fn xdp_sum(stats: &serde_json::Value, prefix: &str) -> u64 {
    stats
        .pointer("/xdp")
        .and_then(|x| x.as_object())
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Well-formed data packets from an address that is nobody's neighbor, and
/// every kind of malformed packet, in turn.
fn flood_frames(dst: NodeId) -> Vec<Vec<u8>> {
    let repr = OverlayRepr {
        packet_type: PacketType::Data,
        hop_limit: 64,
        flags: 0,
        payload_len: 16,
        dst,
        src: NodeId::from_bytes([0x66; 32]),
        via: None,
    };
    let mut stranger = vec![0u8; HEADER_LEN + 16];
    repr.emit(&mut OverlayPacket::new_unchecked(&mut stranger[..]));
    let mut frames = vec![stranger];
    frames.extend(golden::malformed().into_iter().map(|(_, bytes, _)| bytes));
    frames
}

#[test]
fn flood_is_dropped_in_xdp_while_legitimate_traffic_flows() {
    let mut lab = common::converged_chain(1);
    let before = lab.stats(1).expect("stats");

    let sink = Sink::start(
        &lab.sink().netns,
        Lab::app_addr(),
        lab.sink().id(),
        LEGIT_PACKETS,
    )
    .unwrap_or_else(|e| panic!("sink: {e:#}"));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let flood = {
        let frames = flood_frames(lab.sink().id());
        let target = lab.nodes[1].addr_on(0).expect("r1 on link 0");
        // An address of gen's namespace that is no authenticated neighbor
        // (routers admit data by IP).
        let stranger = lab.add_stranger_addr().expect("the flood's address");
        let bind = SocketAddr::from((stranger, 0));
        let stop = stop_flood.clone();
        netns::in_netns(&lab.generator().netns, move || {
            let socket = UdpSocket::bind(bind)?;
            let started = Instant::now();
            let mut sent = 0u64;
            while sent < FLOOD_MAX
                && !stop.load(Ordering::Relaxed)
                && started.elapsed().as_secs() < FLOOD_SECS
            {
                for frame in &frames {
                    if socket.send_to(frame, target).is_ok() {
                        sent += 1;
                    }
                }
            }
            Ok((sent, started.elapsed()))
        })
        .expect("flood thread")
    };
    // Legitimate traffic, paced, from gen's application, during the flood.
    let sent = common::send_from_gen(
        &lab,
        common::gen_to_sink(&lab, LEGIT_PACKETS, LEGIT_PPS),
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .expect("generator")
    .expect("generator ran");
    stop_flood.store(true, Ordering::Relaxed);
    let (flooded, flood_time) = flood.join().expect("flood").expect("flood ran");
    wait_until(Duration::from_secs(5), || sink.valid() >= sent.sent);
    let report = sink.finish().expect("sink report");
    let after = lab.stats(1).expect("stats");

    let legit_time = sent.elapsed.as_secs_f64();
    let flood_pps = flooded as f64 / flood_time.as_secs_f64();
    let legit_pps = sent.sent as f64 / legit_time;
    let dropped_in_xdp = xdp_sum(&after, "drop_") - xdp_sum(&before, "drop_");
    println!(
        "flood: {flooded} packets at {flood_pps:.0} pps ({:.1}x the legitimate {legit_pps:.0} pps); XDP dropped {dropped_in_xdp}; legitimate delivered {} of {}",
        flood_pps / legit_pps,
        report.valid,
        sent.sent
    );
    assert!(
        flood_pps >= 5.0 * legit_pps,
        "the flood was not several times the legitimate rate"
    );
    // The router's XDP dropped the flood (a few may still be on the wire).
    assert!(
        dropped_in_xdp * 100 >= flooded * 95,
        "XDP dropped {dropped_in_xdp} of {flooded}: before {before} after {after}"
    );
    // None of it reached userspace.
    let worker_drops = |s: &serde_json::Value| {
        counter(s, "/total/drop_not_neighbor")
            + [
                "truncated",
                "bad_magic",
                "bad_version",
                "bad_type",
                "bad_length",
                "hop_limit_zero",
            ]
            .iter()
            .map(|r| counter(s, &format!("/total/drop_{r}")))
            .sum::<u64>()
    };
    assert_eq!(
        worker_drops(&after),
        worker_drops(&before),
        "flood packets reached r1's workers: {after}"
    );
    // The legitimate traffic kept flowing: at most 1% lost.
    assert!(
        report.valid * 100 >= sent.sent * 99,
        "only {} of {} legitimate packets arrived during the flood: {report:?}",
        report.valid,
        sent.sent
    );
    assert_eq!(report.duplicates, 0);
    common::stop_all_cleanly(&mut lab);
}
