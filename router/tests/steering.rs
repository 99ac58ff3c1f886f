//! Steering across workers: datagrams from one UDP 4-tuple (one neighbor)
//! spread over the workers by overlay flow, and one flow stays on one worker.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xorlay_bench::wait_until;

use arc_swap::ArcSwap;
use xorlay::config::Dataplane;
use xorlay::core::topology::Topology;
use xorlay::core::{NextHopTable, NodeId};
use xorlay::io::stats::WorkerStats;
use xorlay::io::steer::Steering;
use xorlay::io::worker::{Worker, WorkerConfig, WorkerLinks};
use xorlay::wire::overlay::HEADER_LEN;
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};

fn packet(dst: NodeId, src: NodeId) -> Vec<u8> {
    let repr = OverlayRepr {
        packet_type: PacketType::Data,
        hop_limit: 64,
        flags: 0,
        payload_len: 8,
        dst,
        src,
        via: None,
    };
    let mut bytes = vec![0u8; HEADER_LEN + 8];
    repr.emit(&mut OverlayPacket::new_unchecked(&mut bytes[..]));
    bytes
}

fn id(seed: u32) -> NodeId {
    // Spread-out IDs, like hashes.
    let mut b = [0u8; 32];
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_be_bytes());
    }
    NodeId::from_bytes(b)
}

struct Workers {
    workers: Vec<Worker>,
    stats: Vec<Arc<WorkerStats>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    fn start(count: usize) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        // Nobody to forward to: every data packet ends as no-route, counted
        // by the worker that received it.
        let table = Arc::new(ArcSwap::from_pointee(Topology::open(NextHopTable::empty(
            id(0),
        ))));
        let mut config = WorkerConfig::new(
            "127.0.0.1:0".parse().expect("literal"),
            Dataplane {
                ring_entries: 64,
                buffer_count: 256,
                buffer_size: 2048,
                recv_buffer_bytes: 1 << 20,
                app: None,
                installs_per_sec: 0,
                gso: true,
                worker_nice: 0,
                ..Dataplane::default()
            },
        );
        let mut workers = Vec::new();
        let mut stats = Vec::new();
        for index in 0..count {
            let s = Arc::new(WorkerStats::default());
            let links = WorkerLinks {
                table: table.clone(),
                stats: s.clone(),
                stop: stop.clone(),
                upcalls: None,
                credits: None,
            };
            let worker = Worker::spawn(index, &config, links)
                .unwrap_or_else(|e| panic!("worker {index}: {e}"));
            config.listen = worker.local_addr(); // the others share its port
            workers.push(worker);
            stats.push(s);
        }
        Workers {
            workers,
            stats,
            stop,
        }
    }

    fn received(&self) -> Vec<u64> {
        self.stats.iter().map(|s| s.snapshot().rx_packets).collect()
    }

    /// What each worker received once they took `total` together, or
    /// after 10 s (the caller's asserts say what was missing).
    fn wait_total(&self, total: u64) -> Vec<u64> {
        let mut got = self.received();
        wait_until(Duration::from_secs(10), || {
            got = self.received();
            got.iter().sum::<u64>() >= total
        });
        got
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[test]
fn flows_from_one_neighbor_spread_and_each_flow_stays_on_one_worker() {
    let workers = Workers::start(2);
    let sockets: Vec<&socket2::Socket> = workers.workers.iter().map(Worker::socket).collect();
    let _steering = Steering::attach(&sockets).unwrap_or_else(|e| panic!("{e}"));
    let to = workers.workers[0].local_addr();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");

    // 200 flows, one packet each, all from the same socket.
    for flow in 1..=200u32 {
        sender
            .send_to(&packet(id(flow), id(flow + 10_000)), to)
            .expect("send");
    }
    let spread = workers.wait_total(200);
    assert_eq!(spread.iter().sum::<u64>(), 200, "all received: {spread:?}");
    for (i, n) in spread.iter().enumerate() {
        assert!(*n >= 50, "worker {i} got {n} of 200 flows: {spread:?}");
    }

    // One flow, 100 packets with different payloads: one worker takes all.
    let before = workers.received();
    let flow = packet(id(7), id(8));
    for n in 0..100u64 {
        let mut p = flow.clone();
        p[HEADER_LEN..].copy_from_slice(&n.to_be_bytes());
        sender.send_to(&p, to).expect("send");
    }
    let after = workers.wait_total(300);
    let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        deltas.contains(&100) && deltas.contains(&0),
        "one flow split across workers: {deltas:?}"
    );
}

#[test]
fn too_many_sockets_is_an_error_not_a_panic() {
    let err = Steering::attach(&[]).expect_err("no sockets refused");
    assert!(err.to_string().contains("4-tuple"), "{err}");
}
