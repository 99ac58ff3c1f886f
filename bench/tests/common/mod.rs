//! Helpers shared by the lab tests.

#![allow(dead_code)] // each test binary uses a different subset

pub mod mesh;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use std::time::Duration;

use xorlay_bench::lab::{Lab, LabOptions, Topology};
use xorlay_bench::netns;
use xorlay_bench::traffic::{self, DataFlow, SendReport};

/// A counter from a router's stats; panics if the stats lack it (a renamed
/// counter must fail the test, not read as 0).
pub fn counter(stats: &serde_json::Value, pointer: &str) -> u64 {
    stats
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {pointer} in {stats}"))
}

/// Packets a router forwarded: by its workers and by the XDP fast path.
pub fn forwarded(stats: &serde_json::Value) -> u64 {
    counter(stats, "/total/forwarded")
        + counter(stats, "/xdp/fwd_tx")
        + counter(stats, "/xdp/fwd_redirect")
}

/// Datagrams the workers took on the data path (control packets excluded).
pub fn data_rx(stats: &serde_json::Value) -> u64 {
    counter(stats, "/total/rx_packets") - counter(stats, "/total/control_rx")
}

/// A flow from gen's application to the sink's node ID.
pub fn gen_to_sink(lab: &Lab, count: u64, rate_pps: u64) -> DataFlow {
    DataFlow {
        src: lab.generator().id(),
        dst: lab.sink().id(),
        to: Lab::router_local_addr(),
        count,
        payload_len: 64,
        rate_pps,
    }
}

/// Sends `flow` from gen's application (a thread inside gen's namespace)
/// until done or `stop` is set.
pub fn send_from_gen(
    lab: &Lab,
    flow: DataFlow,
    stop: Arc<AtomicBool>,
) -> JoinHandle<anyhow::Result<SendReport>> {
    send_from(lab, 0, flow, stop)
}

/// Sends `flow` from node `i`'s application (a thread inside its
/// namespace) until done or `stop` is set.
pub fn send_from(
    lab: &Lab,
    i: usize,
    flow: DataFlow,
    stop: Arc<AtomicBool>,
) -> JoinHandle<anyhow::Result<SendReport>> {
    netns::in_netns(&lab.nodes[i].netns, move || {
        let socket = UdpSocket::bind(Lab::app_addr())?;
        Ok(traffic::send_data(&socket, &flow, &stop))
    })
    .unwrap_or_else(|e| panic!("sender thread: {e:#}"))
}

/// Steady traffic from gen's application to the sink's node ID, running
/// until `stop` is set; returns once `first` packets arrived (panics after
/// 10 s without them).
pub struct Steady {
    pub sink: traffic::Sink,
    pub stop: Arc<AtomicBool>,
    pub generator: JoinHandle<anyhow::Result<SendReport>>,
}

pub fn steady_gen_to_sink(lab: &Lab, packets_max: u64, rate_pps: u64, first: u64) -> Steady {
    let sink = traffic::Sink::start(
        &lab.sink().netns,
        Lab::app_addr(),
        lab.sink().id(),
        packets_max,
    )
    .unwrap_or_else(|e| panic!("sink: {e:#}"));
    let stop = Arc::new(AtomicBool::new(false));
    let generator = send_from_gen(lab, gen_to_sink(lab, packets_max, rate_pps), stop.clone());
    let flowing = xorlay_bench::wait_until(Duration::from_secs(10), || sink.valid() >= first);
    if !flowing {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        panic!("no traffic end to end: sink has {}", sink.valid());
    }
    Steady {
        sink,
        stop,
        generator,
    }
}

/// Stops every router with SIGTERM and requires each to exit 0 (its log
/// tail in the message otherwise).
pub fn stop_all_cleanly(lab: &mut Lab) {
    for (i, status) in lab.stop_routers() {
        let status = status.unwrap_or_else(|e| panic!("{}: {e}", lab.nodes[i].role));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            lab.nodes[i].role,
            lab.log_tail(i)
        );
    }
}

/// A chain lab of `routers` relays with every router started and every
/// configured session up.
pub fn converged_chain(routers: usize) -> Lab {
    converged(Topology::Chain, routers, Duration::from_secs(10))
}

/// A lab of `topology` with `routers` relays, every router started, and
/// every expected session and route up within `timeout`.
pub fn converged(topology: Topology, routers: usize, timeout: Duration) -> Lab {
    let lab = started(topology, routers);
    lab.wait_converged(timeout)
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab
}

/// A lab of `topology` with `routers` relays and every router started.
pub fn started(topology: Topology, routers: usize) -> Lab {
    let mut lab = Lab::new(LabOptions {
        topology,
        routers,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.start_routers()
        .unwrap_or_else(|e| panic!("starting routers: {e:#}"));
    lab
}

/// The `Udp:`/`Udp6:` counter `name` summed from /proc/net/snmp and
/// /proc/net/snmp6 of namespace `ns`.
pub fn udp_counter(ns: &str, name: &str) -> u64 {
    let mut total = 0;
    for (file, prefix) in [("/proc/net/snmp", "Udp:"), ("/proc/net/snmp6", "Udp6")] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "cat", file])
            .output()
            .unwrap_or_else(|e| panic!("reading {file} in {ns}: {e}"));
        assert!(out.status.success(), "reading {file} in {ns}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if prefix == "Udp:" {
            // Two lines: the names, then the values.
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
            assert_eq!(lines.len(), 2, "{file}: {text}");
            let names: Vec<&str> = lines[0].split_whitespace().collect();
            let values: Vec<&str> = lines[1].split_whitespace().collect();
            let at = names
                .iter()
                .position(|n| *n == name)
                .unwrap_or_else(|| panic!("no {name} in {file}: {text}"));
            total += values[at]
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{name} in {file}: {e}"));
        } else {
            let key = format!("{prefix}{name}");
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(key.as_str()))
                .unwrap_or_else(|| panic!("no {key} in {file}: {text}"));
            total += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{key} in {file}: {line}"));
        }
    }
    total
}
