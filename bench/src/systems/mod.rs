//! The systems under test, each set up on the same lab topology: a chain
//! gen - relay x N - sink of network namespaces and veth links (or, for
//! xorlay only, the two-site mesh). The generator and sink are the same for
//! every system (`loadgen`); only what relays between them changes.
//!
//! Every system gets the same veth tuning (docs/benchmarks.md, "Method"):
//! GRO on (NAPI on every receiving veth), threaded NAPI on
//! the relays' and the sink's interfaces, and the NAPI threads pinned with
//! the processes: relays on one CPU, generator and sink on the other.
//!
//! One file per system under test (`xorlay_routers`, `linux_forward`,
//! `udp_relay`, `xdp_redirect`, `yggdrasil`), the traffic side shared by all of them
//! (`traffic`: generator and sink modes, trials) and the CPU plumbing
//! (`pinning`).

mod linux_forward;
mod pinning;
mod traffic;
mod udp_relay;
mod xdp_redirect;
mod xorlay_routers;
mod yggdrasil;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use serde::Serialize;
use xorlay::core::NodeId;

use crate::endpoint::Endpoint;
use crate::lab::{Lab, LabOptions, Topology};
use crate::livegen::LiveFrame;
use crate::loadgen::SinkThread;
use crate::relay::RelayCounters;
use crate::xdpsink::XdpSink;

pub use self::pinning::{Pinning, tasks_run_ns};
pub(crate) use self::pinning::{SINK_NAPI_PRIORITY, set_fifo};
pub use self::traffic::{GenMode, SinkMode, SinkPoll, TrafficMode};
pub(crate) use self::xdp_redirect::attach_passthrough;
use self::xorlay_routers::BENCH_RELAY_CONFIG;
pub use self::yggdrasil::yggdrasil_skip_reason;

/// The port the sink listens on in the baselines (and xorlay's app port).
const SINK_PORT: u16 = crate::lab::APP_PORT;

/// A system to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    /// xorlay routers (`xorlay run`), XDP route cache on (the fast path).
    Xorlay,
    /// xorlay routers with `[xdp] route_cache = false` on the relays: every
    /// packet through the io_uring workers.
    XorlayUring,
    /// An XDP program that redirects every frame with fixed MACs: the ceiling.
    XdpRedirect,
    /// The kernel's IPv4 forwarding.
    LinuxForward,
    /// A recvmmsg/sendmmsg UDP relay in userspace.
    UdpRelay,
    /// yggdrasil relaying between two yggdrasil endpoints.
    Yggdrasil,
}

impl SystemKind {
    /// Every system, in report order.
    pub const ALL: [SystemKind; 6] = [
        SystemKind::Xorlay,
        SystemKind::XorlayUring,
        SystemKind::XdpRedirect,
        SystemKind::LinuxForward,
        SystemKind::UdpRelay,
        SystemKind::Yggdrasil,
    ];

    /// Short name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Xorlay => "xorlay",
            SystemKind::XorlayUring => "xorlay-uring",
            SystemKind::XdpRedirect => "xdp-redirect",
            SystemKind::LinuxForward => "linux-forward",
            SystemKind::UdpRelay => "udp-relay",
            SystemKind::Yggdrasil => "yggdrasil",
        }
    }

    /// One line on what it is.
    pub fn describe(self) -> &'static str {
        match self {
            SystemKind::Xorlay => {
                "xorlay routers, fast path on: XDP validation and neighbor filter, cached destinations forwarded in XDP (route cache), the rest through io_uring workers and the XOR next-hop decision"
            }
            SystemKind::XorlayUring => {
                "xorlay routers, `[xdp] route_cache = false` on the relays: XDP validation and neighbor filter, every packet through the io_uring workers and the XOR next-hop decision"
            }
            SystemKind::XdpRedirect => {
                "XDP program rewriting MACs and redirecting to the other veth, no lookup: the topology's ceiling"
            }
            SystemKind::LinuxForward => "Linux IPv4 forwarding (ip_forward=1, static routes)",
            SystemKind::UdpRelay => {
                "hand-written userspace UDP relay, one thread, recvmmsg/sendmmsg batches of 64"
            }
            SystemKind::Yggdrasil => {
                "yggdrasil (Debian package) relaying between two yggdrasil endpoints"
            }
        }
    }

    /// Is this one of the xorlay variants?
    pub fn is_xorlay(self) -> bool {
        matches!(self, SystemKind::Xorlay | SystemKind::XorlayUring)
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<SystemKind> {
        SystemKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Where benchmark traffic enters and leaves the relays.
#[derive(Debug, Clone)]
struct TrafficPath {
    gen_iface: &'static str,
    first_relay: usize,
    first_relay_iface: &'static str,
    sink_iface: &'static str,
}

impl TrafficPath {
    /// The chain's: gen east -> r1 west ... -> sink west.
    const CHAIN: TrafficPath = TrafficPath {
        gen_iface: "east",
        first_relay: 1,
        first_relay_iface: "west",
        sink_iface: "west",
    };
}

/// One system set up and ready for traffic.
#[derive(Debug)]
pub struct Env {
    /// Which system.
    pub kind: SystemKind,
    /// Topology label ("chain-1", "mesh-3" ...).
    pub topology: String,
    /// Relays between gen and sink.
    pub relays: usize,
    /// The generator's namespace.
    pub gen_ns: String,
    /// The sink's namespace.
    pub sink_ns: String,
    /// Where the generator binds.
    pub gen_bind: SocketAddr,
    /// Where the generator sends.
    pub gen_to: SocketAddr,
    /// Where the sink binds.
    pub sink_bind: SocketAddr,
    /// Overlay source ID of the generated packets.
    pub src: NodeId,
    /// Overlay destination ID (the sink's).
    pub dst: NodeId,
    /// Pinning of this environment.
    pub pinning: Pinning,
    /// Facts about the set-up, for the report.
    pub notes: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
    /// Tasks whose CPU time is the relays' (relay processes' threads, relay
    /// threads, the relays' NAPI threads).
    pub relay_tasks: Vec<i32>,
    /// Relay counters (udp-relay).
    pub relay_counters: Vec<Arc<RelayCounters>>,
    /// Generator and sink.
    pub traffic: TrafficMode,
    /// xorlay's benchmark endpoints (gen, sink), when they are nodes.
    endpoints: Option<(Endpoint, Endpoint)>,
    /// The socket sink of the running trial (baselines).
    sink_thread: std::sync::Mutex<Option<SinkThread>>,
    /// The XDP sink, when the sink is XDP.
    xdp_sink: Option<std::sync::Mutex<XdpSink>>,
    /// gen's interface and the frame template, for a frame generator.
    live: Option<(String, LiveFrame)>,
    /// gen's interface, the first relay (node index) and its interface
    /// toward gen, the sink's interface.
    path: TrafficPath,
    xdp: Vec<aya::Ebpf>,
    // Last: dropped after the relays above are stopped.
    /// The lab (namespaces, routers).
    pub lab: Lab,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Ok(mut sink) = self.sink_thread.lock() {
            sink.take();
        }
        self.endpoints.take();
        self.xdp_sink.take();
        self.xdp.clear();
    }
}

impl Env {
    /// Are the chain's sessions all up: each benchmark endpoint (when they
    /// are nodes) with at least one session, each relay with two neighbors
    /// (the nodes before and after it)?
    pub fn sessions_up(&self) -> bool {
        if let Some((generator, sink)) = &self.endpoints
            && (generator.sessions().is_empty() || sink.sessions().is_empty())
        {
            return false;
        }
        self.relay_indices().all(|i| {
            self.lab.stats(i).is_ok_and(|stats| {
                stats["neighbors"]
                    .as_array()
                    .is_some_and(|neighbors| neighbors.len() >= 2)
            })
        })
    }

    /// Who holds a session with whom, and what each router dropped in XDP
    /// and in its workers: to explain a trial in which nothing arrived.
    pub fn session_summary(&self) -> String {
        let mut parts = Vec::new();
        let short = |id: &NodeId| id.to_string()[..8].to_string();
        if let Some((generator, sink)) = &self.endpoints {
            let list = |e: &Endpoint| {
                e.sessions()
                    .iter()
                    .map(|(id, _)| short(id))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            parts.push(format!(
                "gen {} sessions [{}]",
                short(&generator.id()),
                list(generator)
            ));
            parts.push(format!(
                "sink {} sessions [{}]",
                short(&sink.id()),
                list(sink)
            ));
        }
        for i in 1..self.lab.sink_index() {
            let node = &self.lab.nodes[i];
            match self.lab.stats(i) {
                Ok(stats) => {
                    let neighbors: Vec<String> = stats["neighbors"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(|p| p.get(0).and_then(|v| v.as_str()))
                                .map(|id| id.chars().take(8).collect())
                                .collect()
                        })
                        .unwrap_or_default();
                    let count =
                        |path: &str| stats.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0);
                    parts.push(format!(
                        "{} {}: {} session peers, next hops [{}], xdp drop_not_neighbor {}, drop_no_route {}, fwd {}, workers drop_not_neighbor {}, drop_no_route {}, forwarded {}, sessions timed out {}",
                        node.role,
                        short(&node.id()),
                        count("/session_peers"),
                        neighbors.join(","),
                        count("/xdp/drop_not_neighbor"),
                        count("/xdp/drop_no_route"),
                        count("/xdp/fwd_tx") + count("/xdp/fwd_redirect"),
                        count("/total/drop_not_neighbor"),
                        count("/total/drop_no_route"),
                        count("/total/forwarded"),
                        count("/control/sessions/sessions_timed_out"),
                    ));
                }
                Err(e) => parts.push(format!("{}: no stats ({e:#})", node.role)),
            }
        }
        parts.join("; ")
    }

    /// An environment on `lab` with nothing started yet; generator and sink
    /// addresses are the set-up's to fill in.
    fn new(
        lab: Lab,
        kind: SystemKind,
        topology: String,
        traffic: TrafficMode,
        path: TrafficPath,
    ) -> Env {
        Env {
            kind,
            topology,
            relays: lab.sink_index() - 1,
            gen_ns: lab.generator().netns.clone(),
            sink_ns: lab.sink().netns.clone(),
            gen_bind: Lab::app_addr(),
            gen_to: Lab::router_local_addr(),
            sink_bind: Lab::app_addr(),
            src: lab.generator().id(),
            dst: lab.sink().id(),
            pinning: Pinning::plan(),
            notes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            relay_tasks: Vec::new(),
            relay_counters: Vec::new(),
            traffic,
            endpoints: None,
            sink_thread: std::sync::Mutex::new(None),
            xdp_sink: None,
            live: None,
            path,
            xdp: Vec::new(),
            lab,
        }
    }

    /// Sets up `kind` on a chain of `relays` relays, with generator and
    /// sink as `traffic` says.
    /// `workers` is the relays' `dataplane.workers` (xorlay systems); with
    /// more than one, worker i is pinned to the i-th CPU counting down from
    /// the relay CPU (wrapping), see `Env::tune_and_pin`.
    pub fn chain(
        kind: SystemKind,
        relays: usize,
        workers: usize,
        xdp_mode: &str,
        traffic: TrafficMode,
    ) -> anyhow::Result<Env> {
        if workers == 0 {
            bail!("relay workers must be at least 1");
        }
        if traffic.flows > 1 && !traffic.generator.sends_frames() {
            bail!(
                "{} flows need a frame generator (--generator frames, live or ring); the socket generator sends one flow",
                traffic.flows
            );
        }
        let lab = Lab::new(LabOptions {
            topology: Topology::Chain,
            routers: relays,
            xdp_mode: xdp_mode.to_string(),
            workers,
            relay_route_cache: kind != SystemKind::XorlayUring,
            relay_config: BENCH_RELAY_CONFIG.to_string(),
            beacon_level: 0,
        })?;
        let sink_addr = lab
            .sink()
            .ifaces
            .first()
            .map(|f| f.addr)
            .context("sink has an interface")?;
        let mut env = Env::new(
            lab,
            kind,
            format!("chain-{relays}"),
            traffic,
            TrafficPath::CHAIN,
        );
        env.gen_bind = SocketAddr::from((env.lab.generator().ifaces[0].addr, SINK_PORT + 1));
        env.gen_to = SocketAddr::from((sink_addr, SINK_PORT));
        env.sink_bind = SocketAddr::from((sink_addr, SINK_PORT));
        match kind {
            SystemKind::Xorlay | SystemKind::XorlayUring => env.start_xorlay_endpoints()?,
            SystemKind::LinuxForward => env.start_linux_forward()?,
            SystemKind::UdpRelay => env.start_udp_relay()?,
            SystemKind::XdpRedirect => env.start_xdp_redirect()?,
            SystemKind::Yggdrasil => bail!("{}", yggdrasil_skip_reason()),
        }
        env.tune_and_pin()?;
        env.start_traffic_programs()?;
        Ok(env)
    }

    /// xorlay on the two-site mesh with `routers` dual-homed routers, with
    /// generator and sink as `traffic` says: the benchmark's endpoints join
    /// through the seed r1 like any node (the sink first, so the routers
    /// started after it learn it from r1), and the generator sends to the
    /// router it has a session with that is XOR-closest to the sink, which
    /// forwards to the sink over site B.
    pub fn mesh(routers: usize, xdp_mode: &str, traffic: TrafficMode) -> anyhow::Result<Env> {
        let lab = Lab::new(LabOptions {
            topology: Topology::Sites,
            routers,
            xdp_mode: xdp_mode.to_string(),
            workers: 1,
            relay_route_cache: true,
            relay_config: BENCH_RELAY_CONFIG.to_string(),
            beacon_level: 0,
        })?;
        let path = TrafficPath {
            gen_iface: "sitea",
            first_relay: 1,
            first_relay_iface: "sitea",
            sink_iface: "siteb",
        };
        let mut env = Env::new(
            lab,
            SystemKind::Xorlay,
            format!("mesh-{routers}"),
            traffic,
            path,
        );
        env.start_mesh_endpoints()?;
        env.tune_and_pin()?;
        env.start_traffic_programs()?;
        Ok(env)
    }

    fn relay_indices(&self) -> std::ops::Range<usize> {
        1..self.lab.sink_index()
    }

    /// Sum of xorlay router counters over the relays (empty for baselines).
    pub fn relay_stats(&self) -> Vec<serde_json::Value> {
        (1..self.lab.sink_index())
            .filter_map(|i| self.lab.stats(i).ok())
            .collect()
    }
}
