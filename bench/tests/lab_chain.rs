//! End to end on the real path: gen -> r1 -> r2 -> r3 -> sink, each a real
//! `xorlay run` in its own network namespace with XDP attached in native
//! mode on both of its veths.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay::wire::overlay::{DEFAULT_HOP_LIMIT, golden};
use xorlay_bench::lab::{ChainOptions, Lab, Node};
use xorlay_bench::traffic::{self, DataFlow, Sink};
use xorlay_bench::{netns, wait_until};

const PACKETS: u64 = 2_000;
const ROUTERS: usize = 3;

fn counter(stats: &serde_json::Value, pointer: &str) -> u64 {
    stats
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {pointer} in {stats}"))
}

#[test]
fn traffic_crosses_three_routers_and_xdp_drops_malformed() {
    let mut lab = Lab::chain(ChainOptions {
        routers: ROUTERS,
        ..ChainOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));

    // XDP in native (driver) mode on every router interface.
    for i in 1..=ROUTERS {
        let links = lab.links(i).expect("ip link");
        for dev in ["west", "east"] {
            let line = links
                .lines()
                .find(|l| l.contains(&format!(": {dev}@")))
                .unwrap_or_else(|| panic!("r{i} has no {dev}: {links}"));
            assert!(
                line.contains(" xdp "),
                "r{i} {dev} lacks native XDP: {line}"
            );
            assert!(
                !line.contains("xdpgeneric"),
                "r{i} {dev} is in generic mode: {line}"
            );
        }
        let stats = lab.stats(i).expect("stats");
        assert_eq!(
            stats["xdp_attached"].as_array().map(Vec::len),
            Some(2),
            "r{i}: {stats}"
        );
    }

    // Data from gen to the sink's node ID.
    let generator = lab.generator().clone();
    let sink_node = lab.sink().clone();
    let first_hop = Node::addr(lab.routers()[0].west).expect("r1 west");
    let gen_bind = SocketAddr::from((generator.east.expect("gen east"), 0));
    let sink = Sink::start(
        &sink_node.netns,
        Node::addr(sink_node.west).expect("sink west"),
        sink_node.id(),
        PACKETS,
    )
    .unwrap_or_else(|e| panic!("sink: {e:#}"));
    let sender = {
        let flow = DataFlow {
            src: generator.id(),
            dst: sink_node.id(),
            to: first_hop,
            count: PACKETS,
            payload_len: 64,
            rate_pps: 20_000,
        };
        netns::in_netns(&generator.netns, move || {
            let socket = std::net::UdpSocket::bind(gen_bind)?;
            Ok(traffic::send_data(&socket, &flow, &AtomicBool::new(false)))
        })
        .expect("generator thread")
    };
    let sent = sender.join().expect("generator").expect("generator ran");
    assert_eq!(sent.sent, PACKETS, "generator errors: {}", sent.errors);
    let arrived = wait_until(Duration::from_secs(10), || sink.valid() >= PACKETS);
    let report = sink.finish().expect("sink report");
    assert!(
        arrived,
        "only {} of {PACKETS} packets reached the sink: {report:?}",
        report.valid
    );
    assert_eq!(report.valid, PACKETS);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.wrong_dst + report.malformed, 0, "{report:?}");
    let expected_hop = DEFAULT_HOP_LIMIT - ROUTERS as u8;
    assert_eq!(
        report.hop_limits.len(),
        1,
        "hop limits {:?}",
        report.hop_limits
    );
    assert_eq!(
        report.hop_limits.get(&expected_hop),
        Some(&PACKETS),
        "hop limits {:?}",
        report.hop_limits
    );
    for i in 1..=ROUTERS {
        let stats = lab.stats(i).expect("stats");
        assert_eq!(
            counter(&stats, "/total/forwarded"),
            PACKETS,
            "r{i}: {stats}"
        );
        assert_eq!(
            counter(&stats, "/xdp/pass_overlay"),
            PACKETS,
            "r{i}: {stats}"
        );
    }

    // Malformed overlay packets into r1: XDP drops each, counted by reason,
    // and r1's workers never see one.
    let before = lab.stats(1).expect("stats");
    let cases = golden::malformed();
    let repeat = 20u64;
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, bytes, _)| bytes.clone()).collect();
    let sent_bad = traffic::send_raw_in(&generator.netns, gen_bind, first_hop, frames, repeat)
        .expect("send malformed");
    assert_eq!(sent_bad, cases.len() as u64 * repeat);
    let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, _, reason) in &cases {
        *expected
            .entry(format!("/xdp/drop_{}", reason.name()))
            .or_default() += repeat;
    }
    let dropped_all = wait_until(Duration::from_secs(10), || {
        let now = lab.stats(1).expect("stats");
        expected
            .iter()
            .all(|(p, n)| counter(&now, p) >= counter(&before, p) + n)
    });
    let after = lab.stats(1).expect("stats");
    assert!(
        dropped_all,
        "XDP drops did not reach {expected:?}: before {before} after {after}"
    );
    for (pointer, n) in &expected {
        assert_eq!(
            counter(&after, pointer) - counter(&before, pointer),
            *n,
            "{pointer}"
        );
    }
    assert_eq!(
        counter(&after, "/total/rx_packets"),
        counter(&before, "/total/rx_packets"),
        "malformed packets reached r1's workers"
    );
    assert_eq!(
        counter(&after, "/xdp/pass_overlay"),
        counter(&before, "/xdp/pass_overlay")
    );

    // SIGTERM: every router exits 0 and leaves no XDP program attached.
    for (i, status) in lab.stop_routers() {
        let status = status.unwrap_or_else(|e| panic!("r{i}: {e}"));
        assert!(
            status.success(),
            "r{i} exited with {status}:\n{}",
            lab.log_tail(i)
        );
        let links = lab.links(i).expect("ip link");
        assert!(!links.contains(" xdp"), "r{i} left XDP attached: {links}");
        assert!(!lab.admin_socket(i).exists(), "r{i} left its admin socket");
    }
    let namespaces: Vec<String> = lab.nodes.iter().map(|n| n.netns.clone()).collect();
    drop(lab);
    let listed = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .into_owned();
    for ns in namespaces {
        assert!(!listed.contains(&ns), "namespace {ns} left behind");
    }
}
