//! The control plane on the real path: ten routers (gen, r1..r8, sink) in
//! their own namespaces on two L2 segments, each configured with one seed
//! (r1) and nothing else. They must discover each other, carry data end to
//! end, route around a middle router that dies, and reject an impostor.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xorlay::core::NodeId;
use xorlay::core::identity::Identity;
use xorlay::core::session::{SessionConfig, Sessions};
use xorlay::wire::overlay::HEADER_LEN;
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};
use xorlay_bench::lab::{Lab, Topology};
use xorlay_bench::{netns, wait_until};

mod common;

use common::counter;

const ROUTERS: usize = 8;
/// Enough for the whole test at the rate below; the generator is stopped early.
const PACKETS_MAX: u64 = 200_000;
const RATE_PPS: u64 = 2_000;

/// Packets each router forwarded, by its workers and its XDP fast path.
fn forwarded_all(lab: &Lab) -> Vec<u64> {
    (0..lab.nodes.len())
        .map(|i| lab.stats(i).map(|s| common::forwarded(&s)).unwrap_or(0))
        .collect()
}

/// Sum of the session layer's rejection counters of node `i`.
fn rejected(lab: &Lab, i: usize) -> u64 {
    let stats = lab.stats(i).expect("stats");
    stats
        .pointer("/control/sessions")
        .and_then(|s| s.as_object())
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.starts_with("rejected"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn discovery_from_one_seed_failover_and_impostor() {
    let mut lab = common::started(Topology::Sites, ROUTERS);

    // Every router ends up with every router it shares a segment with as a
    // next hop, from one seed address in its config.
    let started = Instant::now();
    lab.wait_converged(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "discovery converged in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    for i in 0..lab.nodes.len() {
        let have = lab.neighbors(i).expect("neighbors");
        assert!(
            have.len() >= lab.expected_neighbors(i).len(),
            "{}: {have:?}",
            lab.nodes[i].role
        );
    }

    // Steady traffic from gen's application to the sink's node ID.
    let common::Steady {
        sink,
        stop,
        generator,
    } = common::steady_gen_to_sink(&lab, PACKETS_MAX, RATE_PPS, 1_000);

    // The middle router carrying the traffic dies without warning.
    let before = forwarded_all(&lab);
    wait_until(Duration::from_secs(2), || sink.valid() >= 2_000);
    let after = forwarded_all(&lab);
    let (victim, carried) = (1..lab.sink_index())
        .map(|i| (i, after[i].saturating_sub(before[i])))
        .max_by_key(|(_, n)| *n)
        .expect("routers exist");
    assert!(
        carried > 0,
        "no middle router forwarded: before {before:?} after {after:?}"
    );
    let victim_id = lab.nodes[victim].id();
    let victim_role = lab.nodes[victim].role.clone();
    lab.kill_node(victim).expect("kill the middle router");
    let killed = Instant::now();
    let at_kill = sink.valid();
    // Flowing again within 2 s: well more than what was in flight arrives.
    let resumed = wait_until(Duration::from_secs(2), || sink.valid() >= at_kill + 500);
    let recovery = killed.elapsed();
    println!(
        "{victim_role} carried {carried} packets; killed; {} more arrived within {:.2} s",
        sink.valid() - at_kill,
        recovery.as_secs_f64()
    );
    assert!(
        resumed,
        "traffic did not resume within 2 s of killing {victim_role}: {} then {}",
        at_kill,
        sink.valid()
    );
    let rerouted = forwarded_all(&lab);
    assert!(
        (1..lab.sink_index()).any(|i| i != victim && rerouted[i] > after[i]),
        "another router took over: {after:?} -> {rerouted:?}"
    );
    // Nobody keeps the dead router as a next hop.
    let forgotten = wait_until(Duration::from_secs(5), || {
        (0..lab.nodes.len())
            .filter(|i| *i != victim)
            .all(|i| lab.neighbors(i).is_ok_and(|n| !n.contains(&victim_id)))
    });
    assert!(
        forgotten,
        "a router still lists the dead {victim_role} as a next hop"
    );
    stop.store(true, Ordering::Relaxed);
    let sent = generator.join().expect("generator").expect("generator ran");
    let report = sink.finish().expect("sink report");
    println!(
        "sent {}, delivered {}, duplicates {}",
        sent.sent, report.valid, report.duplicates
    );
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.wrong_dst + report.malformed, 0, "{report:?}");

    // An impostor in gen's namespace claims a live router's node ID without
    // its key: it handshakes with its own key with another live router
    // (called r1 below; every middle router is on site A) while its packets
    // say they come from the claimed one. Either may be any middle router
    // but the killed one: which router carried the traffic depends on the
    // random IDs and link order.
    let mut live = (1..lab.sink_index()).filter(|i| *i != victim);
    let r1 = live.next().expect("a live middle router");
    let claimed = lab.nodes[live.next().expect("a second live middle router")].id();
    let target = lab.nodes[r1].addr_on(0).expect("r1 on site A");
    // An address of its own in gen's namespace: r1 admits data by the
    // sender's IP, and gen's address is the generator endpoint's, a neighbor.
    let impostor_addr = lab.add_stranger_addr().expect("the impostor's address");
    let bind = SocketAddr::from((impostor_addr, 0));
    let rejected_before = rejected(&lab, r1);
    let sessions_before = lab.stats(r1).expect("stats")["control"]["sessions"].clone();
    let neighbors_before = lab.neighbors(r1).expect("neighbors");
    // Dropped in XDP (the kernel allowlist) or, failing that, by the workers.
    let not_neighbor = |stats: &serde_json::Value| {
        counter(stats, "/xdp/drop_not_neighbor") + counter(stats, "/total/drop_not_neighbor")
    };
    let not_neighbor_before = not_neighbor(&lab.stats(r1).expect("stats"));
    let impostor = netns::in_netns(&lab.generator().netns, move || {
        impersonate(bind, target, claimed)
    })
    .expect("impostor thread")
    .join()
    .expect("impostor")
    .expect("impostor ran");
    assert!(impostor.handshakes_sent > 0);
    assert!(
        !impostor.established,
        "r1 established a session with an impostor claiming {claimed}"
    );
    let counted = wait_until(Duration::from_secs(5), || {
        rejected(&lab, r1) > rejected_before
    });
    assert!(
        counted,
        "r1 did not count the impostor's handshake as rejected (impostor sent {} handshake packets); r1 sessions before {sessions_before} after {}",
        impostor.handshakes_sent,
        lab.stats(r1).expect("stats")["control"]["sessions"]
    );
    let dropped = wait_until(Duration::from_secs(5), || {
        not_neighbor(&lab.stats(r1).expect("stats")) >= not_neighbor_before + impostor.data_sent
    });
    assert!(dropped, "r1 did not drop the impostor's data packets");
    let neighbors_after = lab.neighbors(r1).expect("neighbors");
    assert!(
        neighbors_after.is_subset(&neighbors_before),
        "r1 gained a next hop from the impostor"
    );

    // A router restarted with no seed in its config rejoins through the
    // peers it kept on disk.
    lab.restart_from_kept_peers(0)
        .unwrap_or_else(|e| panic!("restarting gen: {e:#}"));
    let config = std::fs::read_to_string(lab.config_path(0)).expect("gen config");
    assert!(
        !config.contains("seeds"),
        "gen restarted with seeds: {config}"
    );
    let rejoined = wait_until(Duration::from_secs(10), || {
        lab.neighbors(0).is_ok_and(|n| !n.is_empty())
    });
    assert!(
        rejoined,
        "gen did not rejoin from its kept peers:\n{}",
        lab.log_tail(0)
    );
    let log = std::fs::read_to_string(lab.log_path(0)).expect("gen log");
    assert!(
        log.contains("peer(s) kept in"),
        "gen did not read kept peers:\n{}",
        lab.log_tail(0)
    );

    common::stop_all_cleanly(&mut lab);
}

struct Impostor {
    handshakes_sent: u64,
    established: bool,
    data_sent: u64,
}

/// Runs the real session layer with a fresh key against `target`, rewriting
/// the source node ID of every packet it sends to `claimed` (and the
/// destination of every reply back to its own ID, as an attacker's patched
/// code would); then sends data packets as `claimed`. Bounded: at most 3 s.
fn impersonate(bind: SocketAddr, target: SocketAddr, claimed: NodeId) -> anyhow::Result<Impostor> {
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = Identity::from_seed(&seed);
    let own = identity.node_id();
    let mut sessions = Sessions::new(identity, SessionConfig::default(), seed);
    let start = Instant::now();
    sessions.connect(start, target, None);
    let mut result = Impostor {
        handshakes_sent: 0,
        established: false,
        data_sent: 0,
    };
    let mut buf = vec![0u8; 2048];
    while start.elapsed() < Duration::from_secs(3) {
        let now = Instant::now();
        sessions.handle_timeout(now);
        while let Some(transmit) = sessions.poll_transmit() {
            let mut bytes = transmit.bytes;
            if bytes.len() >= HEADER_LEN {
                OverlayPacket::new_unchecked(&mut bytes[..]).set_src(&claimed);
            }
            socket.send_to(&bytes, transmit.to)?;
            result.handshakes_sent += 1;
        }
        while let Some(event) = sessions.poll_event() {
            if matches!(
                event,
                xorlay::core::session::SessionEvent::Established { .. }
            ) {
                result.established = true;
            }
        }
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                // Replies are addressed to the claimed ID; an attacker
                // ignores that and carries on with its own key.
                if len >= HEADER_LEN {
                    OverlayPacket::new_unchecked(&mut buf[..len]).set_dst(&own);
                }
                sessions.handle_packet(Instant::now(), from, &buf[..len]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    // Data claiming to come from r2, to r2's own ID: only a neighbor's would be accepted.
    let repr = OverlayRepr {
        packet_type: PacketType::Data,
        hop_limit: 64,
        flags: 0,
        payload_len: 16,
        dst: claimed,
        src: claimed,
        via: None,
    };
    let mut packet = vec![0u8; HEADER_LEN + 16];
    repr.emit(&mut OverlayPacket::new_unchecked(&mut packet[..]));
    for _ in 0..20 {
        socket.send_to(&packet, target)?;
        result.data_sent += 1;
    }
    Ok(result)
}
