//! The systems under test, each set up on the same lab topology: a chain
//! gen - relay x N - sink of network namespaces and veth links (or, for
//! xorlay only, the two-site mesh). The generator and sink are the same for
//! every system (`loadgen`); only what relays between them changes.
//!
//! Every system gets the same veth tuning, per the lab pitfalls in
//! ARCHITECTURE.md: GRO on (NAPI on every receiving veth), threaded NAPI on
//! the relays' and the sink's interfaces, and the NAPI threads pinned with
//! the processes: relays on one CPU, generator and sink on the other.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use xorlay::core::NodeId;
use xorlay::wire::overlay::DEFAULT_PORT;

use crate::endpoint::Endpoint;
use crate::lab::{Lab, LabOptions, Topology};
use crate::livegen::LiveFrame;
use crate::loadgen::{self, GenReport, GenSpec, SinkResult, SinkThread, pin_process, pin_task};
use crate::netns::{self, ip, link_info};
use crate::relay::{self, RelayCounters};
use crate::xdpsink::XdpSink;

/// The port the sink listens on in the baselines (and xorlay's app port).
const SINK_PORT: u16 = crate::lab::APP_PORT;

/// The compiled "XDP redirect, no lookup" program.
static REDIRECT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

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

/// How the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GenMode {
    /// A UDP socket, `sendmmsg` batches of 64, paced by sleeping.
    Socket,
    /// The fastest frame generator this machine allows: `live` where
    /// BPF_PROG_TEST_RUN may run in live-frames mode, `ring` elsewhere
    /// ([`GenMode::resolve`] probes).
    Frames,
    /// BPF_PROG_TEST_RUN live frames: an XDP program transmits prepared
    /// frames out of gen's interface (`livegen`), paced in the program.
    Live,
    /// An AF_PACKET transmit ring sends prepared frames out of gen's
    /// interface, up to 64 a slot as one UDP GSO super-frame the kernel
    /// segments (`ringgen`), paced by the sending thread. Needs no live
    /// frames.
    Ring,
}

impl GenMode {
    /// Does this generator send prepared Ethernet frames (several flows,
    /// floods, rates beyond a socket)?
    pub fn sends_frames(self) -> bool {
        !matches!(self, GenMode::Socket)
    }

    /// The generator to use for this mode: [`GenMode::Frames`] becomes
    /// `live` when [`crate::livegen::probe_live_frames`] succeeds and
    /// `ring` otherwise, with a line that says why; the other modes stay.
    pub fn resolve(self) -> (GenMode, Option<String>) {
        if self != GenMode::Frames {
            return (self, None);
        }
        match crate::livegen::probe_live_frames() {
            Ok(()) => (GenMode::Live, None),
            Err(e) => (
                GenMode::Ring,
                Some(format!(
                    "generator: live frames refused on this machine ({:#}); using the AF_PACKET ring generator (ring) instead",
                    e
                )),
            ),
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            GenMode::Socket => "socket",
            GenMode::Frames => "frames",
            GenMode::Live => "live",
            GenMode::Ring => "ring",
        }
    }
}

/// How the sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SinkMode {
    /// A UDP socket with `recvmmsg` (for xorlay: the sink endpoint's).
    Socket,
    /// An XDP program on the sink's interface counts and drops the data
    /// packets (`xdpsink`); control packets still reach the endpoint.
    Xdp,
}

/// The traffic side of a run: generator and sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrafficMode {
    /// Generator.
    pub generator: GenMode,
    /// Sink.
    pub sink: SinkMode,
    /// Poll the sink's veth by timer instead of being woken per frame.
    pub sink_poll: Option<SinkPoll>,
    /// Overlay flows the live generator sends (sources cycled per packet,
    /// `LiveFrame::flows`); 1: one flow.
    pub flows: u32,
}

impl Default for TrafficMode {
    fn default() -> TrafficMode {
        TrafficMode {
            generator: GenMode::Socket,
            sink: SinkMode::Socket,
            sink_poll: None,
            flows: 1,
        }
    }
}

/// Timer-driven polling of the sink's veth (`napi_defer_hard_irqs` and
/// `gro_flush_timeout` of the sink's interface): while frames keep coming,
/// the sink's NAPI stays scheduled and polls every `timeout_ns`, so the
/// last relay's transmit does not wake the sink's NAPI thread (an IPI to
/// the other vCPU in these VMs) for every burst. A knob of the measuring
/// apparatus, recorded with the results; the relays are untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SinkPoll {
    /// Empty polls before falling back to wake-ups.
    pub defer: u32,
    /// Poll interval, nanoseconds.
    pub timeout_ns: u64,
}

impl std::str::FromStr for SinkPoll {
    type Err = String;

    fn from_str(text: &str) -> Result<SinkPoll, String> {
        let usage = || format!("\"{text}\": expected DEFER:NANOSECONDS, e.g. 100:50000");
        let (defer, timeout) = text.split_once(':').ok_or_else(usage)?;
        let defer: u32 = defer.trim().parse().map_err(|_| usage())?;
        let timeout_ns: u64 = timeout.trim().parse().map_err(|_| usage())?;
        if defer == 0 || !(1_000..=10_000_000).contains(&timeout_ns) {
            return Err(format!(
                "\"{text}\": DEFER must be at least 1 and NANOSECONDS from 1000 to 10000000 (e.g. 100:50000)"
            ));
        }
        Ok(SinkPoll { defer, timeout_ns })
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

/// The per-neighbor data budget in the relays' XDP filter during the
/// benchmark: the generator is one neighbor, and the default budget (1 M
/// packets/s per CPU, see `RateLimits::default`) would cap the fast path.
const BENCH_RELAY_CONFIG: &str =
    "[xdp.limits]\nneighbor_data = { pps = 100000000, burst = 10000000 }";

/// Underlay source of the flood frames: on gen's link (198.18.0.0/24), no
/// node's address, so never on a router's allowlist.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

/// Where the processes and NAPI threads of a run are pinned.
#[derive(Debug, Clone, Serialize)]
pub struct Pinning {
    /// CPUs the machine offers to this process.
    pub cpus: usize,
    /// CPU of the generator and the sink (threads, their routers and NAPI
    /// threads); None when not pinned.
    pub endpoints_cpu: Option<usize>,
    /// CPU of the relays (processes, threads, NAPI threads).
    pub relay_cpu: Option<usize>,
    /// What was pinned, for the record.
    pub pinned: Vec<String>,
}

impl Pinning {
    /// Relays on the last CPU, endpoints on CPU 0, when there are two or more.
    pub fn plan() -> Pinning {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (endpoints_cpu, relay_cpu) = if cpus >= 2 {
            (Some(0), Some(cpus - 1))
        } else {
            (None, None)
        };
        Pinning {
            cpus,
            endpoints_cpu,
            relay_cpu,
            pinned: Vec::new(),
        }
    }
}

/// One system set up and ready for traffic.
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

    fn start_mesh_endpoints(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        let cpu = self.pinning.endpoints_cpu;
        let r1 = self.lab.nodes[1].clone();
        let r1_b = r1.addr_on(1).context("r1's site-B address")?;
        let gen_addr = self.lab.nodes[0].addr_on(0).context("gen's address")?;
        let sink_addr = self.lab.nodes[sink]
            .addr_on(1)
            .context("the sink's address")?;
        self.lab.start_node(1)?;
        self.lab.wait_up(1)?;
        let sink_endpoint = Endpoint::start(
            &self.sink_ns,
            sink_addr,
            self.lab.nodes[sink].identity.clone(),
            vec![(r1.id(), r1_b)],
            cpu,
        )?;
        sink_endpoint.wait_session(&r1.id(), Duration::from_secs(10))?;
        for i in 2..sink {
            self.lab.start_node(i)?;
        }
        for i in 2..sink {
            self.lab.wait_up(i)?;
        }
        // The generator knows every router of its site by ID and address
        // (as a router's [[neighbor]] entries would): its join lookup
        // through r1 alone does not reach the routers that joined before it.
        let routers_on_a: Vec<(NodeId, SocketAddr)> = (1..sink)
            .filter_map(|i| {
                let node = &self.lab.nodes[i];
                node.addr_on(0).map(|addr| (node.id(), addr))
            })
            .collect();
        let gen_endpoint = Endpoint::start(
            &self.gen_ns,
            gen_addr,
            self.lab.nodes[0].identity.clone(),
            routers_on_a,
            cpu,
        )?;
        // Every router must have both endpoints as next hops (on its
        // allowlist) before traffic: discovery through r1.
        let (gen_id, sink_id) = (gen_endpoint.id(), sink_endpoint.id());
        let converged = crate::wait_until(Duration::from_secs(20), || {
            (1..sink).all(|i| {
                self.lab
                    .neighbors(i)
                    .is_ok_and(|n| n.contains(&gen_id) && n.contains(&sink_id))
            })
        });
        if !converged {
            let lacking: Vec<String> = (1..sink)
                .map(|i| {
                    let n = self.lab.neighbors(i).unwrap_or_default();
                    format!(
                        "{}: gen {}, sink {}",
                        self.lab.nodes[i].role,
                        if n.contains(&gen_id) { "yes" } else { "no" },
                        if n.contains(&sink_id) { "yes" } else { "no" }
                    )
                })
                .collect();
            bail!(
                "the mesh's routers did not all take both benchmark endpoints as neighbors within 20 s ({}; gen's sessions: {}, the sink's: {})",
                lacking.join("; "),
                gen_endpoint.sessions().len(),
                sink_endpoint.sessions().len()
            );
        }
        // The first hop: the router gen has a session with that is
        // XOR-closest to the sink, as a router would choose.
        let (hop_id, hop_addr) = gen_endpoint
            .sessions()
            .into_iter()
            .filter(|(id, _)| *id != sink_id)
            .min_by_key(|(id, _)| id.distance(&sink_id))
            .context("gen's endpoint has no session with a router")?;
        let first_relay = self
            .lab
            .nodes
            .iter()
            .position(|n| n.id() == hop_id)
            .context("gen's closest peer is no lab router")?;
        self.path.first_relay = first_relay;
        self.adopt_endpoints(gen_endpoint, sink_endpoint, hop_addr);
        self.notes.push(format!(
            "generator and sink are overlay nodes of their own: the sink joined through the seed r1, the generator knows the routers of site A; the generator sends from {gen_addr} to {} at {hop_addr} (its XOR-closest peer to the sink), which forwards to the sink at {sink_addr} over site B",
            self.lab.nodes[first_relay].role
        ));
        Ok(())
    }

    /// Generator and sink are these endpoints; the generator sends to `to`.
    fn adopt_endpoints(&mut self, generator: Endpoint, sink: Endpoint, to: SocketAddr) {
        self.gen_bind = generator.addr();
        self.gen_to = to;
        self.sink_bind = sink.addr();
        self.endpoints = Some((generator, sink));
    }

    fn start_xorlay_endpoints(&mut self) -> anyhow::Result<()> {
        self.lab.start_relays()?;
        self.lab.wait_converged(Duration::from_secs(20))?;
        let (gen_endpoint, sink_endpoint) =
            crate::endpoint::start_endpoints(&self.lab, self.pinning.endpoints_cpu)?;
        let sink = self.lab.sink_index();
        let gen_addr = gen_endpoint.addr();
        let sink_addr = sink_endpoint.addr();
        let r1_addr = self.lab.nodes[1]
            .addr_on(0)
            .context("r1's address on gen's link")?;
        self.adopt_endpoints(gen_endpoint, sink_endpoint, r1_addr);
        self.notes.push(format!(
            "generator and sink are overlay nodes of their own (xorlay-bench endpoints: the router's control plane, Noise sessions and Kademlia, over one UDP socket), authenticated neighbors of r1 and r{}; the generator sends from {gen_addr} straight to r1 at {r1_addr}, the sink receives at {sink_addr}",
            sink - 1
        ));
        self.notes.push(if self.lab.options.relay_route_cache {
            "relays' XDP route cache on (default config): cached destinations are forwarded in XDP (counters xdp.fwd_tx / xdp.fwd_redirect); IP forwarding is on on the relays' interfaces (bpf_fib_lookup needs it), GRO on every receiving veth, a pass-through XDP program on the endpoints' veths (NAPI for the relays' XDP_TX and XDP_REDIRECT frames; the XDP sink takes its place where used), TX checksum offload on (the fast path completes partial checksums)".to_string()
        } else {
            "relays' config has `[xdp] route_cache = false`: XDP only validates and filters, every packet goes through the io_uring workers".to_string()
        });
        self.notes.push(format!(
            "relays' per-neighbor data budget raised for the benchmark (`{}`): the generator is a single neighbor",
            BENCH_RELAY_CONFIG.replace('\n', " ")
        ));
        let worker_defaults = xorlay::config::Dataplane::default();
        self.notes.push(format!(
            "relays' io_uring workers: {} per relay, at nice {} (`dataplane.worker_nice`), UDP GSO sends {} (`dataplane.gso`); both the router's defaults",
            self.lab.options.workers,
            worker_defaults.worker_nice,
            if worker_defaults.gso { "on" } else { "off" }
        ));
        Ok(())
    }

    /// The live-frames generator's frame and the XDP sink, when asked for.
    fn start_traffic_programs(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        if self.traffic.generator.sends_frames() {
            let (generator, fallback) = self.traffic.generator.resolve();
            self.traffic.generator = generator;
            self.notes.extend(fallback);
            let path = self.path.clone();
            let (_, src_mac) = link_info(&self.gen_ns, path.gen_iface)?;
            let (_, dst_mac) = link_info(
                &self.lab.nodes[path.first_relay].netns,
                path.first_relay_iface,
            )?;
            let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (self.gen_bind, self.gen_to) else {
                bail!("live frames need IPv4 generator addresses");
            };
            let (payload_len, _) = loadgen::payload_for_frame(0);
            self.live = Some((
                path.gen_iface.to_string(),
                LiveFrame {
                    src_mac,
                    dst_mac,
                    src,
                    dst,
                    overlay_src: self.src,
                    overlay_dst: self.dst,
                    payload_len,
                    flows: self.traffic.flows,
                },
            ));
            self.notes.push(if generator == GenMode::Live {
                format!(
                    "generator: BPF_PROG_TEST_RUN live frames out of gen's interface from {src} to {dst} (an XDP program rewrites each frame's headers, sequence number and timestamp; pacing by the program on the generator CPU)"
                )
            } else {
                format!(
                    "generator: an AF_PACKET transmit ring (TPACKET_V2) out of gen's interface from {src} to {dst} (one thread writes up to {} overlay packets a slot, each with its own sequence number and timestamp, as one UDP GSO super-frame that the kernel segments on the generator CPU, tx-udp-segmentation off on gen's interface; pacing by that thread, frames that are due alone go alone)",
                    crate::ringgen::SEGMENTS_MAX
                )
            });
        }
        if self.traffic.sink == SinkMode::Xdp {
            if self.kind == SystemKind::XdpRedirect {
                // The XDP_PASS program that gives the sink's veth NAPI goes:
                // the XDP sink takes its place.
                self.xdp.pop();
            }
            // So does the lab's pass-through program (start_relays).
            self.lab.remove_passthrough(sink);
            let xdp_sink = XdpSink::attach(
                &self.sink_ns,
                self.path.sink_iface,
                self.dst,
                self.sink_bind.port(),
                100_000_000,
            )?;
            self.xdp_sink = Some(std::sync::Mutex::new(xdp_sink));
            self.notes.push(
                "sink: an XDP program on the sink's interface counts (loss, duplicates, reordering, one-way latency) and drops the data packets; control packets pass to the sink endpoint".to_string(),
            );
        }
        let _ = sink;
        Ok(())
    }

    /// Starts counting trial `trial` at the sink (`capacity` bounds
    /// duplicate tracking).
    pub fn begin_trial(&self, trial: u32, capacity: u64) -> anyhow::Result<()> {
        if let Some(sink) = &self.xdp_sink {
            let mut sink = sink
                .lock()
                .map_err(|_| anyhow::anyhow!("xdp sink lock poisoned"))?;
            return sink.begin_trial(trial);
        }
        if let Some((_, sink)) = &self.endpoints {
            return sink.begin_trial(trial, capacity);
        }
        let thread = SinkThread::start(
            &self.sink_ns,
            self.sink_bind,
            self.dst,
            trial,
            capacity,
            self.pinning.endpoints_cpu,
        )?;
        let mut slot = self
            .sink_thread
            .lock()
            .map_err(|_| anyhow::anyhow!("sink lock poisoned"))?;
        *slot = Some(thread);
        Ok(())
    }

    /// Valid packets of the current trial at the sink so far.
    pub fn sink_valid(&self) -> u64 {
        if let Some(sink) = &self.xdp_sink {
            return sink.lock().ok().and_then(|s| s.valid().ok()).unwrap_or(0);
        }
        if let Some((_, sink)) = &self.endpoints {
            return sink.valid();
        }
        self.sink_thread
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(SinkThread::valid))
            .unwrap_or(0)
    }

    /// What the sink saw in the current trial.
    pub fn end_trial(&self) -> anyhow::Result<SinkResult> {
        if let Some(sink) = &self.xdp_sink {
            let sink = sink
                .lock()
                .map_err(|_| anyhow::anyhow!("xdp sink lock poisoned"))?;
            return sink.result();
        }
        if let Some((_, sink)) = &self.endpoints {
            return sink.end_trial();
        }
        let thread = self
            .sink_thread
            .lock()
            .map_err(|_| anyhow::anyhow!("sink lock poisoned"))?
            .take()
            .context("no trial was counting")?;
        thread.finish()
    }

    /// Frames the frame generator handed to gen's veth that the veth could
    /// not put into the first relay's receive ring (it was full): for live
    /// frames the `xdp_xmit_errors` of gen's interface, summed over queues;
    /// for the ring the interface's `tx_dropped` (veth counts an skb it
    /// could not place there). `None` without a frame generator or when
    /// the counters do not say.
    pub fn relay_input_drops(&self) -> Option<u64> {
        let (iface, _) = self.live.as_ref()?;
        if self.traffic.generator == GenMode::Ring {
            let out = ip(&["-n", &self.gen_ns, "-j", "-s", "link", "show", "dev", iface]).ok()?;
            let json: serde_json::Value = serde_json::from_str(&out).ok()?;
            return json.pointer("/0/stats64/tx/dropped")?.as_u64();
        }
        let out = netns::run(
            "ip",
            &["netns", "exec", &self.gen_ns, "ethtool", "-S", iface],
        )
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut total = None;
        for line in text.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            if name.trim().ends_with("xdp_xmit_errors")
                && let Ok(v) = value.trim().parse::<u64>()
            {
                total = Some(total.unwrap_or(0) + v);
            }
        }
        total
    }

    /// Can the generator mix in a flood ([`Env::generate_flooded`])?
    pub fn can_flood(&self) -> bool {
        self.live.is_some()
    }

    /// Runs the generator for `spec`; blocks until it is done.
    pub fn generate(&self, spec: GenSpec, stop: Arc<AtomicBool>) -> anyhow::Result<GenReport> {
        self.generate_flooded(spec, 0, stop)
    }

    /// [`Env::generate`] with `flood` frames after each packet from an
    /// address on gen's link that is no neighbor of r1 (frame generators
    /// only).
    pub fn generate_flooded(
        &self,
        spec: GenSpec,
        flood: u32,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<GenReport> {
        let cpu = self.pinning.endpoints_cpu;
        if let Some((iface, frame)) = &self.live {
            let frame = LiveFrame {
                payload_len: spec.payload_len,
                ..*frame
            };
            let flood = (flood > 0).then(|| crate::livegen::Flood {
                per_packet: flood,
                src: std::net::SocketAddrV4::new(FLOOD_SOURCE, frame.src.port()),
            });
            return if self.traffic.generator == GenMode::Live {
                crate::livegen::generate_live_flooded(
                    &self.gen_ns,
                    iface,
                    &frame,
                    &spec,
                    flood,
                    cpu,
                    stop,
                )
            } else {
                crate::ringgen::generate_ring(&self.gen_ns, iface, &frame, &spec, flood, cpu, stop)
            };
        }
        if flood > 0 {
            bail!("a flood needs a frame generator (--generator frames, live or ring)");
        }
        if let Some((generator, _)) = &self.endpoints {
            return generator.generate(self.gen_to, spec, cpu, stop);
        }
        loadgen::generate_in(&self.gen_ns, self.gen_bind, self.gen_to, spec, cpu, stop)
    }

    fn relay_indices(&self) -> std::ops::Range<usize> {
        1..self.lab.sink_index()
    }

    fn start_linux_forward(&mut self) -> anyhow::Result<()> {
        for i in self.relay_indices() {
            let ns = self.lab.nodes[i].netns.clone();
            netns::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
            // Toward the sink: the next node's address on link i.
            let next = Ipv4Addr::new(198, 18, i as u8, 2).to_string();
            ip(&["-n", &ns, "route", "add", "198.18.0.0/15", "via", &next])?;
        }
        self.route_endpoints_across_the_chain()
    }

    /// Routes for IP-level baselines: gen reaches the sink through r1, and
    /// the sink has a route back to gen's source address (or reverse path
    /// filtering, inherited from the host, drops the frames).
    fn route_endpoints_across_the_chain(&self) -> anyhow::Result<()> {
        let n = self.lab.sink_index();
        ip(&[
            "-n",
            &self.gen_ns,
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            "198.18.0.2",
        ])?;
        let back = Ipv4Addr::new(198, 18, (n - 1) as u8, 1).to_string();
        ip(&[
            "-n",
            &self.sink_ns,
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            &back,
        ])?;
        Ok(())
    }

    fn start_udp_relay(&mut self) -> anyhow::Result<()> {
        let n = self.lab.sink_index();
        self.gen_to = SocketAddr::from(([198, 18, 0, 2], DEFAULT_PORT));
        for i in self.relay_indices() {
            let listen = SocketAddr::from(([198, 18, (i - 1) as u8, 2], DEFAULT_PORT));
            let to = if i + 1 == n {
                self.sink_bind
            } else {
                SocketAddr::from(([198, 18, i as u8, 2], DEFAULT_PORT))
            };
            let counters = Arc::new(RelayCounters::default());
            self.relay_counters.push(counters.clone());
            let stop = self.stop.clone();
            let cpu = self.pinning.relay_cpu;
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let thread = netns::in_netns(&self.lab.nodes[i].netns, move || {
                if let Some(cpu) = cpu {
                    let _ = loadgen::pin_current_thread(cpu);
                }
                let socket = match loadgen::bind_udp(listen, 8 << 20) {
                    Ok(s) => {
                        // SAFETY: gettid has no preconditions.
                        let _ = ready_tx.send(Ok(unsafe { libc::gettid() }));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                relay::run(&socket, to, &counters, &stop)
            })?;
            self.threads.push(thread);
            match ready_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(tid)) => self.relay_tasks.push(tid),
                Ok(Err(e)) => bail!("udp relay: {e}"),
                Err(_) => bail!("udp relay did not start within 5 s"),
            }
        }
        self.notes.push(
            "the relay is a thread of xorlay-bench inside each relay namespace, pinned to the relay CPU"
                .into(),
        );
        Ok(())
    }

    fn start_xdp_redirect(&mut self) -> anyhow::Result<()> {
        // Same routes as Linux forwarding at gen and the sink (frames go to
        // r1's MAC); the relays never look at them: XDP redirects first.
        self.route_endpoints_across_the_chain()?;
        // This baseline is the cheapest relay XDP can be: it never touches a
        // checksum. A socket sender with TX checksum offload (veth's
        // default) leaves UDP checksums unfinished, and a frame redirected
        // in XDP loses the metadata that would finish them, so the sink's
        // stack would drop every datagram (UdpInCsumErrors). Offload off on
        // gen's interface, for this baseline only: its sender then finishes
        // each checksum itself (xorlay's fast path completes them instead,
        // docs/xdp.md).
        let gen_ns = self.lab.nodes[0].netns.clone();
        netns::run(
            "ip",
            &[
                "netns", "exec", &gen_ns, "ethtool", "-K", "east", "tx", "off",
            ],
        )?;
        let n = self.lab.sink_index();
        for i in self.relay_indices() {
            let ns = self.lab.nodes[i].netns.clone();
            let (out_ifindex, smac) = link_info(&ns, "east")?;
            let (_, dmac) = link_info(&self.lab.nodes[i + 1].netns, "west")?;
            let (in_ifindex, _) = link_info(&ns, "west")?;
            let mut cfg = [0u8; 20];
            cfg[..4].copy_from_slice(&out_ifindex.to_ne_bytes());
            cfg[4..6].copy_from_slice(&SINK_PORT.to_ne_bytes());
            cfg[6..12].copy_from_slice(&dmac);
            cfg[12..18].copy_from_slice(&smac);
            self.xdp.push(load_redirect(&ns, cfg, in_ifindex)?);
        }
        // The last relay redirects into the sink's veth, which needs NAPI:
        // an XDP program on it (this one with port 0 passes every frame).
        let sink_ns = self.lab.nodes[n].netns.clone();
        let (sink_ifindex, _) = link_info(&sink_ns, "west")?;
        self.xdp
            .push(load_redirect(&sink_ns, [0u8; 20], sink_ifindex)?);
        self.notes.push(
            "the XDP program rewrites both MACs and bpf_redirect()s to the other veth; the sink's veth has an XDP_PASS program (NAPI for redirected frames)"
                .into(),
        );
        Ok(())
    }

    /// GRO on every receiving interface, threaded NAPI on the relays' and
    /// the sink's, every NAPI thread and process pinned.
    fn tune_and_pin(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        let mut plan: Vec<(usize, Option<usize>)> = Vec::new();
        for i in 1..=sink {
            let cpu = if i == sink {
                self.pinning.endpoints_cpu
            } else {
                self.pinning.relay_cpu
            };
            plan.push((i, cpu));
        }
        for (i, cpu) in plan {
            let node = self.lab.nodes[i].clone();
            for iface in &node.ifaces {
                let _ = netns::run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &node.netns,
                        "ethtool",
                        "-K",
                        &iface.name,
                        "gro",
                        "on",
                    ],
                );
                let before = crate::netns::napi_threads();
                let path = format!("/sys/class/net/{}/threaded", iface.name);
                netns::run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &node.netns,
                        "sh",
                        "-c",
                        &format!("echo 1 > {path}"),
                    ],
                )
                .with_context(|| format!("threaded NAPI on {} {}", node.role, iface.name))?;
                if i == sink
                    && let Some(poll) = self.traffic.sink_poll
                {
                    let script = format!(
                        "echo {} > /sys/class/net/{name}/napi_defer_hard_irqs && echo {} > /sys/class/net/{name}/gro_flush_timeout",
                        poll.defer,
                        poll.timeout_ns,
                        name = iface.name
                    );
                    netns::run("ip", &["netns", "exec", &node.netns, "sh", "-c", &script])
                        .with_context(|| format!("timer polling on the sink's {}", iface.name))?;
                    self.pinning.pinned.push(format!(
                        "sink {} polled by timer: napi_defer_hard_irqs {}, gro_flush_timeout {} ns",
                        iface.name, poll.defer, poll.timeout_ns
                    ));
                }
                let new: Vec<(i32, String)> = crate::netns::napi_threads()
                    .into_iter()
                    .filter(|t| !before.contains(t))
                    .collect();
                if i != sink {
                    self.relay_tasks.extend(new.iter().map(|(tid, _)| *tid));
                }
                if let Some(cpu) = cpu {
                    for (tid, comm) in &new {
                        if pin_task(*tid, cpu).is_ok() {
                            self.pinning.pinned.push(format!(
                                "{} {} NAPI thread {comm} -> CPU {cpu}",
                                node.role, iface.name
                            ));
                        }
                    }
                }
                // The sink's receive path shares its CPU with a generator
                // that spins (live frames, pacing): at normal priority the
                // NAPI thread waits for a scheduler slice while its veth
                // ring (256 frames) overflows, and that loss would be
                // charged to the system under test. Real-time priority lets
                // it run as soon as frames arrive.
                if i == sink {
                    for (tid, comm) in &new {
                        if set_fifo(*tid, SINK_NAPI_PRIORITY).is_ok() {
                            self.pinning.pinned.push(format!(
                                "{} {} NAPI thread {comm}: SCHED_FIFO {SINK_NAPI_PRIORITY}",
                                node.role, iface.name
                            ));
                        }
                    }
                }
            }
        }
        // Processes: routers (xorlay), pinned by role.
        for i in 0..=sink {
            let Some(pid) = self.lab.pid(i) else { continue };
            let cpu = if i == 0 || i == sink {
                self.pinning.endpoints_cpu
            } else {
                self.pinning.relay_cpu
            };
            if i != 0 && i != sink {
                self.relay_tasks.extend(process_tasks(pid));
            }
            if let Some(cpu) = cpu {
                let n = pin_process(pid, cpu)
                    .with_context(|| format!("pinning {}", self.lab.nodes[i].role))?;
                self.pinning.pinned.push(format!(
                    "{} router (pid {pid}, {n} threads) -> CPU {cpu}",
                    self.lab.nodes[i].role
                ));
                if i != 0 && i != sink && self.lab.options.workers > 1 {
                    self.spread_workers(i, pid, cpu)?;
                }
            }
        }
        if let Some(cpu) = self.pinning.relay_cpu
            && self.kind == SystemKind::UdpRelay
        {
            self.pinning
                .pinned
                .push(format!("udp relay threads -> CPU {cpu}"));
        }
        if let Some(cpu) = self.pinning.endpoints_cpu {
            self.pinning
                .pinned
                .push(format!("generator and sink threads -> CPU {cpu}"));
        }
        Ok(())
    }

    /// Pins worker k of relay `node` (pid `pid`, all of it on `relay_cpu`
    /// so far) to CPU `relay_cpu - k` (wrapping): with two CPUs, worker 0
    /// stays on the relay CPU and worker 1 goes to the endpoints' CPU,
    /// which it shares with the generator and the sink.
    fn spread_workers(&mut self, node: usize, pid: u32, relay_cpu: usize) -> anyhow::Result<()> {
        let cpus = self.pinning.cpus.max(1);
        let mut found = 0;
        for tid in process_tasks(pid) {
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
                continue;
            };
            let Some(k) = comm
                .trim()
                .strip_prefix("xorlay-worker-")
                .and_then(|k| k.parse::<usize>().ok())
            else {
                continue;
            };
            let cpu = (relay_cpu + cpus - k % cpus) % cpus;
            pin_task(tid, cpu)
                .with_context(|| format!("pinning worker {k} of {}", self.lab.nodes[node].role))?;
            self.pinning.pinned.push(format!(
                "{} worker {k} (tid {tid}) -> CPU {cpu}",
                self.lab.nodes[node].role
            ));
            found += 1;
        }
        if found != self.lab.options.workers {
            bail!(
                "{}: found {found} worker threads, expected {}",
                self.lab.nodes[node].role,
                self.lab.options.workers
            );
        }
        Ok(())
    }

    /// Sum of xorlay router counters over the relays (empty for baselines).
    pub fn relay_stats(&self) -> Vec<serde_json::Value> {
        (1..self.lab.sink_index())
            .filter_map(|i| self.lab.stats(i).ok())
            .collect()
    }
}

/// Why yggdrasil is not measured here, or None when it could be.
pub fn yggdrasil_skip_reason() -> String {
    let installed = std::process::Command::new("sh")
        .args(["-c", "command -v yggdrasil"])
        .output()
        .is_ok_and(|o| o.status.success());
    let package = if installed {
        "the yggdrasil package is installed, but"
    } else {
        "the yggdrasil package is not installed (`apt-get install yggdrasil`), and in any case"
    };
    format!(
        "yggdrasil skipped: {package} yggdrasil 0.4 puts its TUN addresses in 200::/7, derived from its key and not configurable; this lab may only use 198.18.0.0/15 and fd00::/8, so traffic through yggdrasil's TUN addresses cannot be measured here"
    )
}

/// Attaches a pass-through XDP program (native mode) to interface `dev` of
/// namespace `ns`: the redirect program with a zero config, which passes
/// every frame (its port is 0, which no UDP traffic of the lab uses). A veth
/// that receives XDP_TX or XDP_REDIRECT frames from its peer needs NAPI, and
/// GRO alone is not enough for XDP_TX (docs/xdp.md). Detached when the
/// returned object is dropped.
pub(crate) fn attach_passthrough(ns: &str, dev: &str) -> anyhow::Result<aya::Ebpf> {
    let (ifindex, _) = link_info(ns, dev)?;
    load_redirect(ns, [0u8; 20], ifindex)
        .with_context(|| format!("pass-through XDP on {dev} in namespace {ns}"))
}

/// Loads the redirect program with `cfg` and attaches it (native mode) to
/// interface `ifindex` of namespace `ns`.
fn load_redirect(ns: &str, cfg: [u8; 20], ifindex: u32) -> anyhow::Result<aya::Ebpf> {
    netns::in_netns(ns, move || {
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("xl_cfg", &cfg, true)
            .load(REDIRECT_OBJECT)
            .context("loading the redirect object")?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut("xl_redirect")
            .context("xl_redirect in the object")?
            .try_into()
            .context("xl_redirect is XDP")?;
        program.load().context("verifier")?;
        program
            .attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)
            .context("attach in native mode")?;
        Ok(ebpf)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("XDP loader panicked"))?
}

/// Real-time priority of the sink's NAPI threads.
pub(crate) const SINK_NAPI_PRIORITY: i32 = 50;

/// Gives task `tid` SCHED_FIFO at `priority`.
pub(crate) fn set_fifo(tid: i32, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler with a valid sched_param.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Thread IDs of process `pid`.
fn process_tasks(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Nanoseconds `tasks` have run on a CPU, from `/proc/<tid>/schedstat` (the
/// scheduler's own accounting; tick-based figures are wrong in these VMs).
/// None when the kernel does not provide it.
pub fn tasks_run_ns(tasks: &[i32]) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for tid in tasks {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::SinkPoll;

    #[test]
    fn sink_poll_parses_and_names_the_form_on_errors() {
        assert_eq!(
            "100:50000".parse::<SinkPoll>(),
            Ok(SinkPoll {
                defer: 100,
                timeout_ns: 50_000
            })
        );
        for bad in [
            "",
            "100",
            "x:50000",
            "100:",
            "0:50000",
            "100:10",
            "100:99999999",
        ] {
            let e = bad.parse::<SinkPoll>().expect_err(bad);
            assert!(e.contains("e.g. 100:50000"), "{bad}: {e}");
        }
    }
}
