//! The endpoint's TUN interface in a network namespace of its own: created
//! with its queues, MTU and node address (random ID), up, and carrying the
//! route to every overlay address: a datagram an application sends to
//! another node's overlay address comes out of one of its queues as an
//! IPv6 packet.

mod common;

use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use common::TestNetns;
use xorlay::core::NodeId;
use xorlay::core::address::node_address;
use xorlay::io::tun::{Tun, TunConfig};

fn random_id() -> NodeId {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("getrandom");
    NodeId::from_bytes(b)
}

#[test]
fn tun_carries_the_node_address_and_the_overlay_route() {
    let ns = TestNetns::new("tun");
    let local = node_address(&random_id());
    let peer = node_address(&random_id());
    let queues = 2;
    let (tun, packet) = ns.run(move || {
        let tun = Tun::create(&TunConfig {
            name: "xorlay0".into(),
            queues,
            mtu: 1400,
            address: local,
            prefix_len: 8,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        // An application sends to another node's overlay address.
        let socket = UdpSocket::bind(SocketAddrV6::new(local, 0, 0, 0)).expect("bind");
        socket
            .send_to(b"xorlay tun test", SocketAddrV6::new(peer, 4000, 0, 0))
            .expect("send to the overlay");
        // It comes out of one of the queues (whichever the kernel picks).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        let packet = 'read: loop {
            for mut queue in tun.queues() {
                match queue.read(&mut buf) {
                    Ok(n) => {
                        // Router solicitations and the like may come first.
                        if n >= 40 && buf[6] == 17 {
                            break 'read buf[..n].to_vec();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("reading a queue: {e}"),
                }
            }
            assert!(Instant::now() < deadline, "no packet on any queue");
            std::thread::sleep(Duration::from_millis(10));
        };
        (tun, packet)
    });
    assert_eq!(tun.name(), "xorlay0");
    assert_eq!(tun.queues().len(), queues);
    assert_eq!(
        packet[0] >> 4,
        6,
        "an IPv6 packet, no packet-information header"
    );
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).expect("16 bytes"));
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).expect("16 bytes"));
    assert_eq!((src, dst), (local, peer));
    assert!(
        packet.windows(15).any(|w| w == b"xorlay tun test"),
        "the payload"
    );
    // Up, with its MTU and the address, the prefix routing fd00::/8.
    let link = ns.ip(&["link", "show", "xorlay0"]);
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    let addr = ns.ip(&["-6", "addr", "show", "dev", "xorlay0"]);
    assert!(addr.contains(&format!("{local}/8")), "{addr}");
    let route = ns.ip(&["-6", "route", "get", &peer.to_string()]);
    assert!(route.contains("dev xorlay0"), "{route}");
}

#[test]
fn a_name_held_by_another_interface_is_refused_with_the_fix() {
    let ns = TestNetns::new("tun2");
    // Loopback exists in every namespace and is not a TUN.
    let err = ns.run(|| {
        Tun::create(&TunConfig {
            name: "lo".into(),
            queues: 1,
            mtu: 1280,
            address: node_address(&random_id()),
            prefix_len: 8,
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    let err = err.expect_err("refused");
    assert!(err.contains("pick another name"), "{err}");
}

#[test]
fn a_packet_too_big_written_into_the_tun_lowers_the_path_mtu() {
    use std::io::Write;
    use xorlay::core::icmp::{IcmpError, error_for};
    let ns = TestNetns::new("tunptb");
    let local = node_address(&random_id());
    let peer = node_address(&random_id());
    let (tun, route) = ns.run(move || {
        let tun = Tun::create(&TunConfig {
            name: "xorlay0".into(),
            queues: 1,
            mtu: 1500,
            address: local,
            prefix_len: 8,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let socket = UdpSocket::bind(SocketAddrV6::new(local, 0, 0, 0)).expect("bind");
        socket
            .send_to(&[0x5a; 1452], SocketAddrV6::new(peer, 4000, 0, 0))
            .expect("send");
        let mut queue = &tun.queues()[0];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        let big = loop {
            match queue.read(&mut buf) {
                Ok(n) if n == 1500 && buf[6] == 17 => break buf[..n].to_vec(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("reading: {e}"),
            }
            assert!(Instant::now() < deadline, "the 1500-byte packet never came");
        };
        let ptb = error_for(&big, local, IcmpError::PacketTooBig { mtu: 1400 }).expect("PTB");
        queue.write_all(&ptb).expect("writing the PTB into the TUN");
        // The kernel takes it: the path MTU to the peer drops to 1400.
        let deadline = Instant::now() + Duration::from_secs(5);
        let route = loop {
            let out = std::process::Command::new("ip")
                .args(["-6", "route", "get", &peer.to_string()])
                .output()
                .expect("ip");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("mtu 1400") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (tun, route)
    });
    assert!(route.contains("mtu 1400"), "{route}");
    drop(tun);
}
