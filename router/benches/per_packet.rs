//! Per-packet cost of the userspace data path (what an io_uring worker does
//! for every data packet that misses the XDP fast path): parse and validate
//! the overlay header, the whole per-packet step (`Forwarder::handle`),
//! rewrite the hop limit; and the
//! next-hop lookup alone at 10, 1,000 and 100,000 neighbors.
//!
//! `cargo bench -p xorlay --bench per_packet`

use std::hint::black_box;
use std::net::{SocketAddr, SocketAddrV4};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Instant;

use xorlay::core::forward::{Action, Forwarder, Header, Origin};
use xorlay::core::{NextHopTable, NodeId};
use xorlay::wire::overlay::{DEFAULT_HOP_LIMIT, HEADER_LEN};
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// A deterministic pseudo-random node ID (splitmix64 over the index).
fn node_id(seed: u64) -> NodeId {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    NodeId::from_bytes(bytes)
}

fn table(neighbors: usize) -> NextHopTable<SocketAddr> {
    let hops = (0..neighbors as u64).map(|i| {
        let addr = SocketAddrV4::new([198, 18, (i >> 8) as u8, i as u8].into(), 4799);
        (node_id(i + 1), SocketAddr::V4(addr))
    });
    // The local node: a fixed ID, not among the neighbors.
    NextHopTable::new(node_id(u64::MAX), hops).expect("distinct IDs")
}

fn packet(dst: &NodeId, payload: usize) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload];
    let repr = OverlayRepr {
        packet_type: PacketType::Data,
        hop_limit: DEFAULT_HOP_LIMIT,
        flags: 0,
        payload_len: payload as u16,
        dst: *dst,
        src: node_id(7),
        via: None,
    };
    repr.emit(&mut OverlayPacket::new_unchecked(&mut buf[..]));
    buf
}

/// Parse + validate, the whole per-packet step ([`Forwarder::handle`], as a
/// worker calls it for a neighbor's data packet), rewrite: the worker's
/// per-packet work. Returns whether it was forwarded.
fn per_packet(
    forwarder: &mut Forwarder,
    now: Instant,
    table: &NextHopTable<SocketAddr>,
    buf: &mut [u8],
) -> bool {
    let Ok(mut packet) = OverlayPacket::new_checked(buf) else {
        return false;
    };
    if packet.validate().is_err() {
        return false;
    }
    let Some(packet_type) = PacketType::from_u8(packet.packet_type_raw()) else {
        return false;
    };
    let header = Header {
        packet_type,
        dst: packet.dst(),
        hop_limit: packet.hop_limit(),
        via: packet.via(),
    };
    match forwarder.handle(now, &header, Origin::Neighbor, table) {
        Action::Forward { hop, hop_limit, .. } => {
            black_box(hop);
            packet.set_hop_limit(hop_limit);
            true
        }
        _ => false,
    }
}

fn bench_parse(c: &mut Criterion) {
    let buf = packet(&node_id(3), 64);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("validate_and_read_header", |b| {
        b.iter(|| {
            let packet = OverlayPacket::new_checked(black_box(&buf[..])).expect("long enough");
            let ok = packet.validate().is_ok();
            black_box((ok, packet.dst(), packet.hop_limit()))
        })
    });
    group.bench_function("full_repr_parse", |b| {
        b.iter(|| {
            let packet = OverlayPacket::new_unchecked(black_box(&buf[..]));
            black_box(OverlayRepr::parse(&packet).is_ok())
        })
    });
    group.finish();
}

fn bench_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_decide_rewrite");
    group.throughput(Throughput::Elements(1));
    for &n in &SIZES {
        let table = table(n);
        // Install requests off, as in a worker without a route cache.
        let mut forwarder = Forwarder::new(0);
        let now = Instant::now();
        // Destinations that are forwarded (a neighbor is closer than us).
        let mut bufs: Vec<Vec<u8>> = (0..256u64)
            .map(|i| packet(&node_id(1_000_000 + i), 64))
            .collect();
        let forwarded = bufs
            .iter_mut()
            .filter(|b| per_packet(&mut forwarder, now, &table, &mut b[..].to_vec()))
            .count();
        assert!(
            forwarded > 0,
            "no destination is forwarded with {n} neighbors"
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let buf = &mut bufs[i & 255];
                i = i.wrapping_add(1);
                // Keep the hop limit from running down across iterations.
                OverlayPacket::new_unchecked(&mut buf[..]).set_hop_limit(DEFAULT_HOP_LIMIT);
                black_box(per_packet(
                    &mut forwarder,
                    now,
                    &table,
                    black_box(&mut buf[..]),
                ))
            })
        });
    }
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("next_hop_lookup");
    group.throughput(Throughput::Elements(1));
    for &n in &SIZES {
        let table = table(n);
        let targets: Vec<NodeId> = (0..1024u64).map(|i| node_id(2_000_000 + i)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let target = &targets[i & 1023];
                i = i.wrapping_add(1);
                black_box(table.closest(black_box(target)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse, bench_path, bench_lookup);
criterion_main!(benches);
