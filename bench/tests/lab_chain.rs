//! End to end on the real path: gen -> r1 -> r2 -> r3 -> sink, each a real
//! `xorlay run` in its own network namespace with XDP attached in native
//! mode on every interface; neighbors are configured as known peers and
//! authenticate each other before any data is accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay::wire::overlay::{DEFAULT_HOP_LIMIT, golden};
use xorlay_bench::lab::{Lab, LabOptions, Topology};
use xorlay_bench::traffic::{self, Sink};
use xorlay_bench::wait_until;

use common::{counter, data_rx, forwarded};

mod common;

const PACKETS: u64 = 2_000;
const ROUTERS: usize = 3;

#[test]
fn traffic_crosses_three_routers_and_xdp_drops_malformed() {
    let mut lab = Lab::new(LabOptions {
        topology: Topology::Chain,
        routers: ROUTERS,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));

    // XDP in native (driver) mode on every interface of every router.
    for (i, node) in lab.nodes.iter().enumerate() {
        let links = lab.links(i).expect("ip link");
        for iface in &node.ifaces {
            let line = links
                .lines()
                .find(|l| l.contains(&format!(": {}@", iface.name)))
                .unwrap_or_else(|| panic!("{} has no {}: {links}", node.role, iface.name));
            assert!(
                line.contains(" xdp "),
                "{} {} lacks native XDP: {line}",
                node.role,
                iface.name
            );
            assert!(
                !line.contains("xdpgeneric"),
                "{} {} is in generic mode: {line}",
                node.role,
                iface.name
            );
        }
    }
    // Sessions with the configured neighbors come up.
    lab.wait_converged(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Data from gen's application to the sink's node ID.
    let sink = Sink::start(&lab.sink().netns, Lab::app_addr(), lab.sink().id(), PACKETS)
        .unwrap_or_else(|e| panic!("sink: {e:#}"));
    let flow = common::gen_to_sink(&lab, PACKETS, 20_000);
    let sent = common::send_from_gen(&lab, flow, Arc::new(AtomicBool::new(false)))
        .join()
        .expect("generator")
        .expect("generator ran");
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
    // gen's router and the three in the middle each forward (and decrement)
    // once; the sink's router delivers.
    let expected_hop = DEFAULT_HOP_LIMIT - ROUTERS as u8 - 1;
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
    let gen_stats = lab.stats(0).expect("stats");
    assert_eq!(
        counter(&gen_stats, "/total/app_rx"),
        PACKETS,
        "gen: {gen_stats}"
    );
    for i in 0..=ROUTERS {
        let stats = lab.stats(i).expect("stats");
        assert_eq!(forwarded(&stats), PACKETS, "{}: {stats}", lab.nodes[i].role);
        assert_eq!(
            counter(&stats, "/total/drop_not_neighbor"),
            0,
            "{}: {stats}",
            lab.nodes[i].role
        );
    }
    // In the middle, after the first packets, the XDP route cache forwards:
    // the workers see a destination once, ask for an entry, and the kernel
    // takes the rest.
    for i in 1..=ROUTERS {
        let stats = lab.stats(i).expect("stats");
        let fast = counter(&stats, "/xdp/fwd_tx") + counter(&stats, "/xdp/fwd_redirect");
        assert!(
            fast >= PACKETS / 2,
            "r{i}: only {fast} of {PACKETS} on the XDP fast path: {stats}"
        );
        assert!(
            counter(&stats, "/control_io/routes_installed") >= 1,
            "r{i}: {stats}"
        );
    }
    let sink_stats = lab.stats(lab.sink_index()).expect("stats");
    assert_eq!(
        counter(&sink_stats, "/total/delivered"),
        PACKETS,
        "sink: {sink_stats}"
    );

    // Malformed overlay packets into r1: XDP drops each, counted by reason,
    // and r1's workers never see one.
    let before = lab.stats(1).expect("stats");
    let cases = golden::malformed();
    let repeat = 20u64;
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, bytes, _)| bytes.clone()).collect();
    let bind = SocketAddr::from((lab.generator().ifaces[0].addr, 0));
    let target = lab.nodes[1].addr_on(0).expect("r1 on link 0");
    let sent_bad = traffic::send_raw_in(&lab.generator().netns, bind, target, frames, repeat)
        .expect("send malformed");
    assert_eq!(sent_bad, cases.len() as u64 * repeat);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
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
        data_rx(&after),
        data_rx(&before),
        "malformed packets reached r1's workers"
    );

    // The other direction: the sink's application to gen's node ID. The IDs
    // are random, so one of the two directions goes "away" from the
    // destination in XOR distance at some hop; both arrive.
    let back = Sink::start(
        &lab.generator().netns,
        Lab::app_addr(),
        lab.generator().id(),
        PACKETS,
    )
    .unwrap_or_else(|e| panic!("reverse sink: {e:#}"));
    let reverse = traffic::DataFlow {
        src: lab.sink().id(),
        dst: lab.generator().id(),
        ..common::gen_to_sink(&lab, PACKETS, 20_000)
    };
    let sent = common::send_from(
        &lab,
        lab.sink_index(),
        reverse,
        Arc::new(AtomicBool::new(false)),
    )
    .join()
    .expect("reverse sender")
    .expect("reverse sender ran");
    assert_eq!(sent.sent, PACKETS, "reverse sender errors: {}", sent.errors);
    let arrived = wait_until(Duration::from_secs(10), || back.valid() >= PACKETS);
    let report = back.finish().expect("reverse sink report");
    assert!(
        arrived,
        "only {} of {PACKETS} packets from the sink reached gen: {report:?}",
        report.valid
    );
    assert_eq!(
        report.hop_limits.get(&expected_hop),
        Some(&PACKETS),
        "{report:?}"
    );

    // `xorlay route`, as an operator would run it, on gen: the sink is
    // reached through r1 on the routing protocol's route.
    let out = Command::new(xorlay_bench::lab::find_xorlay_bin().expect("xorlay binary"))
        .arg("route")
        .arg(lab.sink().id().to_string())
        .arg("--socket")
        .arg(lab.admin_socket(0))
        .output()
        .expect("running xorlay route");
    assert!(out.status.success(), "xorlay route: {out:?}");
    let route: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(route["decision"], "forward", "{route}");
    assert_eq!(route["next_hop"], lab.nodes[1].id().to_string(), "{route}");
    // Four links of at least the base cost each (more with their RTT).
    let metric = route["routing_state"]["metric"].as_u64().expect("a metric");
    let base = u64::from(xorlay::core::routing::LINK_COST_BASE);
    assert!(metric >= (ROUTERS as u64 + 1) * base, "{route}");
    assert!(route["next_hop_rtt_us"].as_u64().is_some(), "{route}");
    let bad = Command::new(xorlay_bench::lab::find_xorlay_bin().expect("xorlay binary"))
        .args(["route", "not-an-id", "--socket"])
        .arg(lab.admin_socket(0))
        .output()
        .expect("running xorlay route");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("64 hex digits"),
        "{bad:?}"
    );

    // SIGTERM: every router exits 0 and leaves no XDP program attached.
    for (i, status) in lab.stop_routers() {
        let status = status.unwrap_or_else(|e| panic!("{}: {e}", lab.nodes[i].role));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            lab.nodes[i].role,
            lab.log_tail(i)
        );
        let links = lab.links(i).expect("ip link");
        assert!(
            !links.contains(" xdp"),
            "{} left XDP attached: {links}",
            lab.nodes[i].role
        );
        assert!(
            !lab.admin_socket(i).exists(),
            "{} left its admin socket",
            lab.nodes[i].role
        );
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
